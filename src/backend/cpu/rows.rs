//! Row-wise kernels: FISTA's fused update (shrinkage, momentum, convergence test) and the column
//! statistics of the variance hinge.

use super::simd::{has_avx2, lane_sums};
use crate::backend::{FistaStep, RowConvergence};
use crate::scalar::Scalar;

/// The per-part `(rows flagged, any non-finite)` of a FISTA update, summed.
pub(super) fn row_convergence(parts: &[(usize, bool)]) -> RowConvergence {
    RowConvergence {
        converged: parts.iter().map(|r| r.0).sum(),
        non_finite: parts.iter().any(|r| r.1),
        active_nonzeros: None,
        restarts: 0,
    }
}

/// [`Backend::fista_update`] on a block of whole rows (row-major slices, `flags` one per row);
/// returns the number of rows flagged converged and whether any was non-finite.
#[inline(always)]
pub(super) fn fista_update_rows<F: Scalar>(
    gs: &[F],
    step: FistaStep<F>,
    xs: &mut [F],
    zs: &mut [F],
    zos: &mut [F],
    fs: &mut [F],
    l: usize,
) -> (usize, bool) {
    let (mut converged, mut non_finite) = (0, false);
    let rows = gs
        .chunks_exact(l)
        .zip(xs.chunks_exact_mut(l))
        .zip(zs.chunks_exact_mut(l))
        .zip(zos.chunks_exact_mut(l))
        .zip(fs.iter_mut());
    for ((((gr, xr), zr), zor), f) in rows {
        let (ok, bad) = fista_update_row(gr, step, xr, zr, zor, f);
        converged += usize::from(ok);
        non_finite |= bad;
    }
    (converged, non_finite)
}

/// [`fista_update_rows`] compiled with AVX2 enabled (no FMA: the same operations, so the same
/// result, in wider registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn fista_update_rows_avx2<F: Scalar>(
    gs: &[F],
    step: FistaStep<F>,
    xs: &mut [F],
    zs: &mut [F],
    zos: &mut [F],
    fs: &mut [F],
    l: usize,
) -> (usize, bool) {
    fista_update_rows(gs, step, xs, zs, zos, fs, l)
}

/// One row of [`Backend::fista_update`]: `z_old <- z`; the new `z` by the previous flag `f`
/// (the proximal step for an active row, the projection or a copy of `x` for a flagged one);
/// `x <- z + coef (z - z_old)`; the convergence test into `f`. Returns whether the row is now
/// flagged, and whether its change is non-finite.
#[inline(always)]
pub(super) fn fista_update_row<F: Scalar>(
    g: &[F],
    s: FistaStep<F>,
    x: &mut [F],
    z: &mut [F],
    z_old: &mut [F],
    f: &mut F,
) -> (bool, bool) {
    let zero = F::zero();
    // one branch-free element pass per case
    let (diff, old) = match (*f == zero, s.nonneg) {
        (true, true) => update_pass::<F, ACTIVE_NONNEG>(g, s, x, z, z_old),
        (true, false) => update_pass::<F, ACTIVE_SIGNED>(g, s, x, z, z_old),
        (false, true) => update_pass::<F, FLAGGED_NONNEG>(g, s, x, z, z_old),
        (false, false) => update_pass::<F, FLAGGED_SIGNED>(g, s, x, z, z_old),
    };
    flag_row(diff, old, s.tol, f)
}

/// The convergence test of a row from `(||z_old - z||^2, ||z_old||^2)` into its flag `f`:
/// returns whether the row is now flagged, and whether its change is non-finite.
#[inline(always)]
fn flag_row<F: Scalar>(diff: F, old: F, tol: F, f: &mut F) -> (bool, bool) {
    let zero = F::zero();
    // NaN compares false, and 0/0 is NaN: a zero previous row never counts as converged
    let ok = old > zero && diff.sqrt() / old.sqrt() < tol;
    *f = if ok { F::one() } else { zero };
    (ok, !diff.is_finite())
}

/// `(||z_old - z||^2, ||z_old||^2)` of a row, in [`LANES`] interleaved partial sums (element
/// `i` goes to lane `i mod LANES`), added pairwise at the end: a fixed order, so the result is
/// deterministic.
#[inline(always)]
fn row_change<F: Scalar>(z_old: &[F], z: &[F]) -> (F, F) {
    let diff = lane_sums(z_old, z, |o, n| {
        let d = o - n;
        d * d
    });
    let old = lane_sums(z_old, z_old, |o, _| o * o);
    (diff, old)
}

/// [`Backend::fista_update_restart`] on a block of whole rows (row-major slices; `flags` and
/// `ages` one per row). Returns the rows flagged converged, whether any was non-finite, and the
/// rows that restarted their momentum.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn fista_restart_rows<F: Scalar>(
    gs: &[F],
    step: FistaStep<F>,
    coefs: &[F],
    xs: &mut [F],
    zs: &mut [F],
    zos: &mut [F],
    fs: &mut [F],
    ages: &mut [F],
    l: usize,
) -> (usize, bool, usize) {
    let (mut converged, mut non_finite, mut restarts) = (0, false, 0);
    let rows = gs
        .chunks_exact(l)
        .zip(xs.chunks_exact_mut(l))
        .zip(zs.chunks_exact_mut(l))
        .zip(zos.chunks_exact_mut(l))
        .zip(fs.iter_mut().zip(ages.iter_mut()));
    for ((((gr, xr), zr), zor), (f, age)) in rows {
        let (ok, bad, restarted) = fista_restart_row(gr, step, coefs, xr, zr, zor, f, age);
        converged += usize::from(ok);
        non_finite |= bad;
        restarts += usize::from(restarted);
    }
    (converged, non_finite, restarts)
}

/// [`fista_restart_rows`] compiled with AVX2 enabled (no FMA: the same operations, so the same
/// result, in wider registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(super) fn fista_restart_rows_avx2<F: Scalar>(
    gs: &[F],
    step: FistaStep<F>,
    coefs: &[F],
    xs: &mut [F],
    zs: &mut [F],
    zos: &mut [F],
    fs: &mut [F],
    ages: &mut [F],
    l: usize,
) -> (usize, bool, usize) {
    fista_restart_rows(gs, step, coefs, xs, zs, zos, fs, ages, l)
}

/// One row of [`Backend::fista_update_restart`]: [`fista_update_row`] with the momentum
/// coefficient `coefs[age]` (the last entry past the table's end), or none when the new
/// step points against the momentum, `<x - z_new, z_new - z_old> > 0` (then `x <- z_new` and
/// the age restarts at 1; otherwise it grows by one). Returns whether the row is now flagged,
/// whether its change is non-finite, and whether it restarted.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn fista_restart_row<F: Scalar>(
    g: &[F],
    s: FistaStep<F>,
    coefs: &[F],
    x: &mut [F],
    z: &mut [F],
    z_old: &mut [F],
    f: &mut F,
    age: &mut F,
) -> (bool, bool, bool) {
    let zero = F::zero();
    let along = match (*f == zero, s.nonneg) {
        (true, true) => restart_pass::<F, ACTIVE_NONNEG>(g, s, x, z, z_old),
        (true, false) => restart_pass::<F, ACTIVE_SIGNED>(g, s, x, z, z_old),
        (false, true) => restart_pass::<F, FLAGGED_NONNEG>(g, s, x, z, z_old),
        (false, false) => restart_pass::<F, FLAGGED_SIGNED>(g, s, x, z, z_old),
    };
    // NaN compares false: a non-finite row does not restart (the caller reports it)
    let restart = along > zero;
    let k = age
        .to_usize()
        .unwrap_or(0)
        .min(coefs.len().saturating_sub(1));
    if restart {
        x.copy_from_slice(z);
        *age = F::one();
    } else {
        let coef = coefs.get(k).copied().unwrap_or(zero);
        for ((xv, &zn), &zo) in x.iter_mut().zip(z.iter()).zip(z_old.iter()) {
            *xv = zn + coef * (zn - zo);
        }
        *age = F::c((k + 1) as f64);
    }
    let (diff, old) = row_change(z_old, z);
    let (ok, bad) = flag_row(diff, old, s.tol, f);
    (ok, bad, restart)
}

/// The proximal step of [`fista_restart_row`]: for each element `z_old <- z`,
/// `z <- new_code::<MODE>(x, g)`, leaving `x` for the extrapolation; returns
/// `<x - z, z - z_old>` of the new `z` (in element order).
#[inline(always)]
fn restart_pass<F: Scalar, const MODE: u8>(
    g: &[F],
    s: FistaStep<F>,
    x: &[F],
    z: &mut [F],
    z_old: &mut [F],
) -> F {
    let mut along = F::zero();
    let elems = g
        .iter()
        .zip(x.iter())
        .zip(z.iter_mut())
        .zip(z_old.iter_mut());
    for (((&gv, &xv), zv), ov) in elems {
        let zo = *zv;
        let zn = new_code::<F, MODE>(xv, gv, s);
        along = along + (xv - zn) * (zn - zo);
        *zv = zn;
        *ov = zo;
    }
    along
}

/// [`new_code`]'s cases: an active row's proximal step, non-negative or soft-thresholded ...
pub(super) const ACTIVE_NONNEG: u8 = 0;
/// ... (the soft threshold) ...
pub(super) const ACTIVE_SIGNED: u8 = 1;
/// ... a flagged row's projection onto the non-negative orthant ...
pub(super) const FLAGGED_NONNEG: u8 = 2;
/// ... or its copy of `x`.
pub(super) const FLAGGED_SIGNED: u8 = 3;

/// The new code of one element from `x` and the gradient `g`, by the case `MODE`.
#[inline(always)]
pub(super) fn new_code<F: Scalar, const MODE: u8>(x: F, g: F, s: FistaStep<F>) -> F {
    let zero = F::zero();
    match MODE {
        ACTIVE_NONNEG => {
            let u = x - s.eta * g - s.thr;
            if u > zero { u } else { zero }
        }
        ACTIVE_SIGNED => {
            let u = x - s.eta * g;
            let m = u.abs() - s.thr;
            if m > zero { m.copysign(u) } else { zero }
        }
        FLAGGED_NONNEG => {
            if x > zero {
                x
            } else {
                zero
            }
        }
        _ => x,
    }
}

/// The element pass of [`fista_update_row`], [`new_code`]`::<MODE>` giving the new code: for
/// each element, `z_old <- z`, `z <- new`, `x <- z + coef (z - z_old)`. Returns
/// `(||z_old - z||^2, ||z_old||^2)` of the old and new `z` ([`row_change`]).
#[inline(always)]
pub(super) fn update_pass<F: Scalar, const MODE: u8>(
    g: &[F],
    s: FistaStep<F>,
    x: &mut [F],
    z: &mut [F],
    z_old: &mut [F],
) -> (F, F) {
    // the element updates, then the two sums, each a loop of its own over the row (in L1 by
    // then): simple loops, which the compiler turns into vector code
    let elems = g
        .iter()
        .zip(x.iter_mut())
        .zip(z.iter_mut())
        .zip(z_old.iter_mut());
    for (((&gv, xv), zv), ov) in elems {
        let zo = *zv;
        let zn = new_code::<F, MODE>(*xv, gv, s);
        *xv = zn + s.coef * (zn - zo);
        *zv = zn;
        *ov = zo;
    }
    row_change(z_old, z)
}

/// [`Backend::col_mean_std`] of the columns `j0..j0 + mean.len()` of the row-major `(n, l)`
/// matrix `xs`, `n >= 2`: in blocks of [`STATS_BLOCK`] columns, through the AVX2 instantiation
/// where the CPU has it (no FMA: the same operations, so the same result).
pub(super) fn col_mean_std_cols<F: Scalar>(
    xs: &[F],
    l: usize,
    j0: usize,
    m: &mut [F],
    sd: &mut [F],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 (`has_avx2`).
        unsafe { col_mean_std_cols_avx2(xs, l, j0, m, sd) };
        return;
    }
    col_mean_std_blocks(xs, l, j0, m, sd);
}

/// [`col_mean_std_blocks`] compiled with AVX2 enabled.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn col_mean_std_cols_avx2<F: Scalar>(
    xs: &[F],
    l: usize,
    j0: usize,
    m: &mut [F],
    sd: &mut [F],
) {
    col_mean_std_blocks(xs, l, j0, m, sd);
}

/// Columns per block of [`col_mean_std_blocks`]: its running sums stay in registers (eight AVX2
/// registers of `f64`) while the rows pass, instead of a load and a store per row.
pub(super) const STATS_BLOCK: usize = 32;

/// The loop of [`col_mean_std_cols`]: [`col_mean_std_block`] on each whole block of
/// [`STATS_BLOCK`] columns, then on the shorter rest.
#[inline(always)]
pub(super) fn col_mean_std_blocks<F: Scalar>(
    xs: &[F],
    l: usize,
    j0: usize,
    m: &mut [F],
    sd: &mut [F],
) {
    let (mb, mt) = m.as_chunks_mut::<STATS_BLOCK>();
    let (sb, st) = sd.as_chunks_mut::<STATS_BLOCK>();
    let mut c0 = j0;
    for (m, sd) in mb.iter_mut().zip(sb) {
        col_mean_std_block(xs, l, c0, m, sd);
        c0 += STATS_BLOCK;
    }
    if !mt.is_empty() {
        col_mean_std_block(xs, l, c0, mt, st);
    }
}

/// [`Backend::col_mean_std`] of the columns `c0..c0 + W` of the row-major `(n, l)` matrix `xs`,
/// `n >= 2`, with `W` known to the compiler where it is a whole block (`&mut [F; W]` coerced to
/// a slice of that length).
#[inline(always)]
pub(super) fn col_mean_std_block<F: Scalar>(
    xs: &[F],
    l: usize,
    c0: usize,
    m: &mut [F],
    sd: &mut [F],
) {
    let w = m.len();
    let n = xs.len() / l;
    if F::EPS < f64::from(f32::EPSILON) {
        col_mean_std_block_shifted(xs, l, c0, m, sd);
        return;
    }
    // f32: two passes, the mean, then the centred sum of squares (as torch.norm(x - mean)), both
    // accumulated over the rows in order in f64, and rounded to F once at the end. This is the
    // arithmetic of `model::energy::hinge_on`, whose ranks each sum their rows in f64 and add
    // the partial sums: a batch split between ranks then gets the statistics of one process
    // (docs/SCALING.md). A constant column has a mean equal to its value (`n < 2^29` copies of
    // an `f32` add exactly in f64) and a std of exactly 0, where the hinge's gradient must
    // vanish.
    let mut acc = [0.0f64; STATS_BLOCK];
    let mut mu = [0.0f64; STATS_BLOCK];
    let (acc, mu) = (&mut acc[..w], &mut mu[..w]);
    for row in xs.chunks_exact(l) {
        for (a, &v) in acc.iter_mut().zip(&row[c0..c0 + w]) {
            *a += v.f();
        }
    }
    let nf = n as f64;
    for ((mo, mi), &a) in m.iter_mut().zip(mu.iter_mut()).zip(acc.iter()) {
        *mi = a / nf;
        *mo = F::c(*mi);
    }
    acc.fill(0.0);
    for row in xs.chunks_exact(l) {
        for ((a, &v), &mu) in acc.iter_mut().zip(&row[c0..c0 + w]).zip(mu.iter()) {
            let d = v.f() - mu;
            *a += d * d;
        }
    }
    let nm1 = (n - 1) as f64;
    for (s, &a) in sd.iter_mut().zip(acc.iter()) {
        *s = F::c((a / nm1).sqrt());
    }
}

/// [`col_mean_std_block`] for `f64`, whose sums in `f64` are not exact: shifted by the first
/// row, so that a constant column has a mean equal to its value and a std of exactly 0.
#[inline(always)]
fn col_mean_std_block_shifted<F: Scalar>(xs: &[F], l: usize, c0: usize, m: &mut [F], sd: &mut [F]) {
    let w = m.len();
    let n = xs.len() / l;
    let mut acc = [F::zero(); STATS_BLOCK];
    let mut first = [F::zero(); STATS_BLOCK];
    let (acc, first) = (&mut acc[..w], &mut first[..w]);
    first.copy_from_slice(&xs[c0..c0 + w]);
    for row in xs.chunks_exact(l).skip(1) {
        for ((a, &v), &v0) in acc.iter_mut().zip(&row[c0..c0 + w]).zip(first.iter()) {
            *a = *a + (v - v0);
        }
    }
    let inv_n = F::one() / F::c(n as f64);
    for ((mu, &a), &v0) in m.iter_mut().zip(acc.iter()).zip(first.iter()) {
        *mu = v0 + a * inv_n;
    }
    acc.fill(F::zero());
    for row in xs.chunks_exact(l) {
        for ((a, &v), &mu) in acc.iter_mut().zip(&row[c0..c0 + w]).zip(m.iter()) {
            let d = v - mu;
            *a = *a + d * d;
        }
    }
    let inv = F::one() / F::c((n - 1) as f64);
    for (s, &a) in sd.iter_mut().zip(acc.iter()) {
        *s = (a * inv).sqrt();
    }
}
