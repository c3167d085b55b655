//! The floating-point element type.

use std::fmt::{Debug, Display};

use ndarray::{LinalgScalar, ScalarOperand};
use num_traits::Float;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The element type of every array: `f32` in production, `f64` for gradient tests.
///
/// Sealed: implemented for `f32` and `f64` only.
pub trait Scalar:
    Float
    + LinalgScalar
    + ScalarOperand
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + serde::Serialize
    + sealed::Sealed
    + 'static
{
    /// Machine epsilon of the type.
    const EPS: f64;
    /// A short name, `"f32"` or `"f64"`.
    const NAME: &'static str;
    /// Converts from `f64` (rounding to nearest for `f32`).
    fn c(x: f64) -> Self;
    /// Widens to `f64`.
    fn f(self) -> f64;
}

impl Scalar for f32 {
    const EPS: f64 = f32::EPSILON as f64;
    const NAME: &'static str = "f32";
    #[inline(always)]
    fn c(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn f(self) -> f64 {
        self as f64
    }
}

impl Scalar for f64 {
    const EPS: f64 = f64::EPSILON;
    const NAME: &'static str = "f64";
    #[inline(always)]
    fn c(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn f(self) -> f64 {
        self
    }
}

/// Whether every element is finite, in one pass that vectorises: `v - v` is `0` for a finite `v`
/// and NaN for an infinity or NaN, and 8 running sums of those keep the NaN.
#[allow(clippy::eq_op)] // `v - v` is the test, not a mistake
pub(crate) fn all_finite<F: Scalar>(s: &[F]) -> bool {
    let mut acc = [F::zero(); 8];
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = *a + (v - v);
        }
    }
    acc.iter().all(|a| *a == F::zero()) && chunks.remainder().iter().all(|v| v.is_finite())
}

/// Returns [`Error::NonFiniteInput`] naming the first NaN or infinite element of `a`.
pub(crate) fn check_finite<F: Scalar, S: ndarray::Data<Elem = F>>(
    what: &str,
    a: &ndarray::ArrayBase<S, ndarray::Ix2>,
) -> crate::error::Result<()> {
    if let Some(s) = a.as_slice_memory_order()
        && all_finite(s)
    {
        return Ok(());
    }
    match a.indexed_iter().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some((index, v)) => Err(crate::error::Error::NonFiniteInput {
            what: what.to_string(),
            index,
            value: v.f(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::all_finite;

    #[test]
    fn all_finite_finds_every_kind_of_non_finite_anywhere() {
        for len in [0usize, 1, 7, 8, 9, 31] {
            let v = vec![1.5f32; len];
            assert!(all_finite(&v), "len {len}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for at in 0..len {
                    let mut w = v.clone();
                    w[at] = bad;
                    assert!(!all_finite(&w), "len {len}, {bad} at {at}");
                }
            }
        }
        assert!(all_finite(&[f64::MAX, f64::MIN, 0.0, -0.0, 1e-310]));
    }
}
