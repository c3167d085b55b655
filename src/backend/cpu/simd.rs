//! What the vectorised loops share: the run-time AVX2 check and sums over interleaved lanes in a
//! fixed order (so results are deterministic).

use crate::scalar::Scalar;

/// Whether the CPU supports AVX2 (checked at run time; false off x86-64).
pub(super) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Lanes of the split accumulators in [`lane_sums`]: a single running sum is a chain of
/// dependent additions that cannot vectorise; eight independent partial sums can.
pub(super) const LANES: usize = 8;

/// `sum_i term(a[i], b[i])`, accumulated in [`LANES`] interleaved partial sums (element `i`
/// goes to lane `i mod LANES`) added pairwise at the end: a fixed order, so the result is
/// deterministic. (The compiler vectorises the lanes only in part, in groups of 2, 1, 4 and 1.)
#[inline(always)]
pub(super) fn lane_sums<F: Scalar>(a: &[F], b: &[F], term: impl Fn(F, F) -> F) -> F {
    let mut acc = [F::zero(); LANES];
    let (ac, at) = a.as_chunks::<LANES>();
    let (bc, bt) = b.as_chunks::<LANES>();
    for (ca, cb) in ac.iter().zip(bc) {
        for i in 0..LANES {
            acc[i] = acc[i] + term(ca[i], cb[i]);
        }
    }
    for (i, (&va, &vb)) in at.iter().zip(bt).enumerate() {
        acc[i] = acc[i] + term(va, vb);
    }
    sum_lanes(acc)
}

/// Pairwise sum of the lanes of a split accumulator.
pub(super) fn sum_lanes<F: Scalar>(mut v: [F; LANES]) -> F {
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            v[i] = v[i] + v[i + w];
        }
    }
    v[0]
}
