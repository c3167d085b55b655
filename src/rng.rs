//! Seeded initialisation: PyTorch's default for linear layers, from an explicit ChaCha stream.

use ndarray::Array2;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::scalar::Scalar;

/// A seeded random stream (ChaCha8). Every random draw in varsparse goes through one of these,
/// passed explicitly; there is no global generator.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A uniform draw in `[0, 1)` with 53 random bits, independent of any `rand` version's
/// distribution code (so streams stay stable across dependency upgrades).
pub fn unit_f64(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A `(rows, cols)` matrix uniform in `[-1/sqrt(fan_in), 1/sqrt(fan_in))`, filled in row-major
/// order: PyTorch's default initialisation of `nn.Linear`'s weight (kaiming-uniform with
/// `a = sqrt(5)` reduces to this bound).
pub fn linear_uniform<F: Scalar>(
    rng: &mut ChaCha8Rng,
    rows: usize,
    cols: usize,
    fan_in: usize,
) -> Array2<F> {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Array2::from_shape_simple_fn((rows, cols), || F::c(bound * (2.0 * unit_f64(rng) - 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_seeded_and_bounded() {
        let a: Array2<f32> = linear_uniform(&mut rng(7), 16, 9, 9);
        let b: Array2<f32> = linear_uniform(&mut rng(7), 16, 9, 9);
        let c: Array2<f32> = linear_uniform(&mut rng(8), 16, 9, 9);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|&v| v.abs() <= 1.0 / 3.0));
    }
}
