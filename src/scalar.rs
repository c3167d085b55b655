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
