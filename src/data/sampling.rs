//! Seeded random draws written out in full, so that data splits and patch sets depend only on
//! the seed and on `rand_chacha`'s output stream, never on `rand`'s (version-dependent)
//! distribution algorithms.
//!
//! Both functions consume whole `u64` words from the generator (`Rng::next_u64`).

use rand::Rng;

/// A uniform integer in `0..n`, without bias (Lemire's multiply-and-reject method).
///
/// Returns 0 when `n` is 0 or 1, without drawing from `rng`.
pub fn uniform_below<R: Rng + ?Sized>(rng: &mut R, n: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    let mut m = u128::from(rng.next_u64()) * u128::from(n);
    // The low word falls below 2^64 mod n for exactly the draws that would bias the result.
    if (m as u64) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(n);
        }
    }
    (m >> 64) as u64
}

/// Shuffles `items` in place with the Fisher–Yates (Durstenfeld) algorithm: for `i` from the
/// last index down to 1, swap `items[i]` with `items[j]`, `j` uniform in `0..=i`.
pub fn shuffle<T, R: Rng + ?Sized>(items: &mut [T], rng: &mut R) {
    for i in (1..items.len()).rev() {
        // `i + 1` fits in u64 and the draw is at most `i`, so both casts are lossless.
        let j = uniform_below(rng, (i + 1) as u64) as usize;
        items.swap(i, j);
    }
}

/// The permutation of `0..n` produced by [`shuffle`] applied to the identity.
pub fn permutation<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    shuffle(&mut p, rng);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn uniform_below_stays_in_range_and_covers_it() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            let v = uniform_below(&mut rng, 7);
            seen[v as usize] += 1;
        }
        // Each bin expects 1000; 5 standard deviations is about 150.
        assert!(seen.iter().all(|&c| (850..1150).contains(&c)), "{seen:?}");
        assert_eq!(uniform_below(&mut rng, 0), 0);
        assert_eq!(uniform_below(&mut rng, 1), 0);
    }

    #[test]
    fn permutation_is_a_permutation_and_seeded() {
        let p = permutation(1000, &mut ChaCha8Rng::seed_from_u64(1));
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(p, permutation(1000, &mut ChaCha8Rng::seed_from_u64(1)));
        assert_ne!(p, permutation(1000, &mut ChaCha8Rng::seed_from_u64(2)));
    }
}
