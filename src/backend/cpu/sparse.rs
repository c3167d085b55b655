//! The sparse row kernels: products whose left operand is mostly zeros (the codes), FISTA's
//! Gram-path gradient of the active rows, and the fused Gram step, all through one dispatcher
//! ([`SparseJob`], [`run_sparse_job`]).

use super::rows::{fista_restart_row, fista_update_row};
use super::simd::has_avx2;
use crate::backend::FistaStep;
use crate::scalar::Scalar;

/// The fraction of non-zero entries of the left operand below which [`Cpu`](crate::backend::cpu::Cpu)'s GEMMs take the
/// sparse path: each row of the result is the sum of the rows of the right operand that the
/// row's non-zeros select, scaled by them, and zeros cost nothing.
///
/// The sparse path does about twice the work per multiply-add of a dense GEMM kernel (no FMA
/// blocking, one pass over a row of `b` per non-zero), so it wins well below half density. The
/// codes it is for are 80-95% zeros.
pub const SPARSE_DENSITY: f64 = 0.25;

thread_local! {
    /// Per-thread scratch of the sparse product: one row's non-zero columns.
    static NONZEROS: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Columns of `c` accumulated at once by the sparse path (a block that lives in registers).
pub(super) const SPARSE_BLOCK: usize = 64;

/// Whether at most [`SPARSE_DENSITY`] of `a` is non-zero. Counts in blocks of 4096 and stops
/// once the limit is passed, so a dense operand costs a sliver of a pass over it.
pub(crate) fn mostly_zero<F: Scalar>(a: &[F]) -> bool {
    let limit = (SPARSE_DENSITY * a.len() as f64) as usize;
    let mut nnz = 0usize;
    for block in a.chunks(4096) {
        nnz += block
            .iter()
            .map(|&v| usize::from(v != F::zero()))
            .sum::<usize>();
        if nnz > limit {
            return false;
        }
    }
    true
}

/// [`mostly_zero`] over the rows of `a` (`l` columns) whose flag in `fs` is zero, as if they were
/// gathered into one matrix.
pub(super) fn active_mostly_zero<F: Scalar>(a: &[F], fs: &[F], l: usize) -> bool {
    let (mut nnz, mut rows) = (0usize, 0usize);
    for (row, &f) in a.chunks_exact(l).zip(fs) {
        if f == F::zero() {
            nnz += count_nonzero(row);
            rows += 1;
        }
    }
    sparse_enough(nnz, rows, l)
}

/// Whether `nnz` non-zeros in `rows` rows of `l` entries are few enough for the sparse path.
pub(super) fn sparse_enough(nnz: usize, rows: usize, l: usize) -> bool {
    nnz <= (SPARSE_DENSITY * (rows * l) as f64) as usize
}

/// The number of non-zeros of `row`.
#[inline(always)]
pub(super) fn count_nonzero<F: Scalar>(row: &[F]) -> usize {
    row.iter().map(|&v| u32::from(v != F::zero())).sum::<u32>() as usize
}

/// A job for the sparse row kernels, on row-major slices.
pub(super) enum SparseJob<'a, F> {
    /// The sparse path of [`mat_mul`]: `c <- alpha a b + beta c`, `a` `(m, k)`, `b` `(k, n)`,
    /// `c` `(m, n)`.
    Product {
        alpha: F,
        a: &'a [F],
        b: &'a [F],
        beta: F,
        c: &'a mut [F],
        k: usize,
        n: usize,
    },
    /// [`Backend::gram_grad_active`]'s one pass: rows with a zero flag in `flags` get
    /// `alpha (x G) - alpha c`, the others zero; `x`, `c`, `out` `(m, l)`, `g` `(l, l)`.
    GramGrad {
        alpha: F,
        x: &'a [F],
        g: &'a [F],
        c: &'a [F],
        flags: &'a [F],
        out: &'a mut [F],
        l: usize,
    },
    /// [`Backend::gram_fista_step`]'s one pass: each row's gradient as in `GramGrad`, plus
    /// the proximity term's `prox (x - target)` unless `prox` is zero, written to `grad`; then
    /// that row's [`fista_update_row`] (with a `momentum`, the coefficient table and the rows'
    /// ages, [`fista_restart_row`]). To `out`: the count of rows flagged, whether any was
    /// non-finite, the non-zeros of the new `x` in the rows not flagged, and the rows that
    /// restarted. All slices `(m, l)` (`target` empty when there is none) but `g` `(l, l)`,
    /// `flags` and the ages `(m)`.
    GramStep {
        alpha: F,
        g: &'a [F],
        c: &'a [F],
        prox: F,
        target: &'a [F],
        step: FistaStep<F>,
        momentum: Option<(&'a [F], &'a mut [F])>,
        x: &'a mut [F],
        z: &'a mut [F],
        z_old: &'a mut [F],
        flags: &'a mut [F],
        grad: &'a mut [F],
        l: usize,
        out: &'a mut (usize, bool, usize, usize),
    },
}

/// Runs a [`SparseJob`] with per-thread scratch for a row's non-zero columns, through the AVX2
/// instantiation of [`sparse_job_rows`] where the CPU has AVX2 (the same operations in the same
/// order, so the same result, only wider registers).
pub(super) fn run_sparse_job<F: Scalar>(job: SparseJob<'_, F>) {
    let width = match &job {
        SparseJob::Product { k, .. } => *k,
        SparseJob::GramGrad { l, .. } | SparseJob::GramStep { l, .. } => *l,
    };
    NONZEROS.with(|nz| {
        let mut nz = nz.borrow_mut();
        nz.resize(width, 0);
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 (`has_avx2`).
            unsafe { sparse_job_rows_avx2(job, &mut nz) };
            return;
        }
        sparse_job_rows(job, &mut nz);
    });
}

/// [`sparse_job_rows`] compiled with AVX2 enabled.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn sparse_job_rows_avx2<F: Scalar>(job: SparseJob<'_, F>, nz: &mut [usize]) {
    sparse_job_rows(job, nz);
}

/// The loops of a [`SparseJob`]; `nz` is scratch of one row's width.
#[inline(always)]
pub(super) fn sparse_job_rows<F: Scalar>(job: SparseJob<'_, F>, nz: &mut [usize]) {
    match job {
        SparseJob::Product {
            alpha,
            a,
            b,
            beta,
            c,
            k,
            n,
        } => {
            for (arow, crow) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)) {
                sparse_row(alpha, arow, b, beta, None, crow, n, nz);
            }
        }
        SparseJob::GramGrad {
            alpha,
            x,
            g,
            c,
            flags,
            out,
            l,
        } => {
            let rows = x
                .chunks_exact(l)
                .zip(c.chunks_exact(l))
                .zip(out.chunks_exact_mut(l))
                .zip(flags);
            for (((xrow, crow), orow), &f) in rows {
                if f == F::zero() {
                    sparse_row(alpha, xrow, g, -alpha, Some(crow), orow, l, nz);
                } else {
                    orow.fill(F::zero());
                }
            }
        }
        SparseJob::GramStep {
            alpha,
            g,
            c,
            prox,
            target,
            step,
            momentum,
            x,
            z,
            z_old,
            flags,
            grad,
            l,
            out,
        } => {
            let (mut converged, mut non_finite, mut nonzeros, mut restarts) = (0, false, 0, 0);
            let (coefs, mut ages) = match momentum {
                Some((c, a)) => (c, Some(a.iter_mut())),
                None => (&[][..], None),
            };
            let rows = x
                .chunks_exact_mut(l)
                .zip(z.chunks_exact_mut(l))
                .zip(z_old.chunks_exact_mut(l))
                .zip(c.chunks_exact(l))
                .zip(grad.chunks_exact_mut(l))
                .zip(flags.iter_mut());
            let mut targets = target.chunks_exact(l);
            for (((((xrow, zrow), zorow), crow), grow), f) in rows {
                if *f == F::zero() {
                    sparse_row(alpha, xrow, g, -alpha, Some(crow), grow, l, nz);
                } else {
                    grow.fill(F::zero());
                }
                if prox != F::zero() {
                    // as add_scaled_diff, or axpby with beta = 1 (1 * g is g)
                    match targets.next() {
                        Some(erow) => {
                            for ((gv, &xv), &ev) in grow.iter_mut().zip(xrow.iter()).zip(erow) {
                                *gv = *gv + prox * (xv - ev);
                            }
                        }
                        None => {
                            for (gv, &xv) in grow.iter_mut().zip(xrow.iter()) {
                                *gv = prox * xv + *gv;
                            }
                        }
                    }
                }
                let (ok, bad) = match ages.as_mut().and_then(Iterator::next) {
                    Some(age) => {
                        let (ok, bad, restarted) =
                            fista_restart_row(grow, step, coefs, xrow, zrow, zorow, f, age);
                        restarts += usize::from(restarted);
                        (ok, bad)
                    }
                    None => fista_update_row(grow, step, xrow, zrow, zorow, f),
                };
                converged += usize::from(ok);
                non_finite |= bad;
                if !ok {
                    // the row is still in L1: the next step's density test, counted here
                    nonzeros += count_nonzero(xrow);
                }
            }
            *out = (converged, non_finite, nonzeros, restarts);
        }
    }
}

/// Writes the columns of the non-zeros of `row` (NaN included), in ascending order, to the
/// front of `nz` (at least `row.len()` long) and returns their number.
///
/// Each 32 entries become a bit mask (a vector compare where the compiler has one), whose set
/// bits are then read off one by one: the work follows the non-zeros, not the entries, where a
/// plain loop over the entries is a chain of one dependent step per entry.
#[inline(always)]
pub(super) fn nonzero_columns<F: Scalar>(row: &[F], nz: &mut [usize]) -> usize {
    const W: usize = 32;
    let mut cnt = 0;
    let (chunks, tail) = row.as_chunks::<W>();
    for (c, chunk) in chunks.iter().enumerate() {
        let mut mask = 0u32;
        for (i, &v) in chunk.iter().enumerate() {
            mask |= u32::from(v != F::zero()) << i;
        }
        while mask != 0 {
            nz[cnt] = c * W + mask.trailing_zeros() as usize;
            cnt += 1;
            mask &= mask - 1;
        }
    }
    for (j, &v) in tail.iter().enumerate() {
        nz[cnt] = chunks.len() * W + j;
        cnt += usize::from(v != F::zero());
    }
    cnt
}

/// One row of the sparse path: `out <- alpha sum_j arow[j] b[j, ..] + beta base`, the sum over
/// the non-zeros `j` of `arow` in ascending order, `base` the old `out` when `None` (and
/// ignored when `beta = 0`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn sparse_row<F: Scalar>(
    alpha: F,
    arow: &[F],
    b: &[F],
    beta: F,
    base: Option<&[F]>,
    out: &mut [F],
    n: usize,
    nz: &mut [usize],
) {
    let cnt = nonzero_columns(arow, nz);
    let nz = &nz[..cnt];
    let mut c0 = 0;
    while c0 < n {
        let w = SPARSE_BLOCK.min(n - c0);
        let mut acc = [F::zero(); SPARSE_BLOCK];
        if w == SPARSE_BLOCK {
            // a fixed-length block, which the compiler keeps in registers
            for &j in nz {
                let (off, v) = (j * n, arow[j]);
                let Ok(brow) = <&[F; SPARSE_BLOCK]>::try_from(&b[off + c0..off + c0 + w]) else {
                    continue;
                };
                for (s, &bv) in acc.iter_mut().zip(brow) {
                    *s = *s + v * bv;
                }
            }
        } else {
            for &j in nz {
                let (off, v) = (j * n, arow[j]);
                for (s, &bv) in acc[..w].iter_mut().zip(&b[off + c0..off + c0 + w]) {
                    *s = *s + v * bv;
                }
            }
        }
        let o = &mut out[c0..c0 + w];
        match base {
            _ if beta == F::zero() => o
                .iter_mut()
                .zip(&acc[..w])
                .for_each(|(o, &s)| *o = alpha * s),
            None => o
                .iter_mut()
                .zip(&acc[..w])
                .for_each(|(o, &s)| *o = alpha * s + beta * *o),
            Some(base) => o
                .iter_mut()
                .zip(&acc[..w])
                .zip(&base[c0..c0 + w])
                .for_each(|((o, &s), &bv)| *o = alpha * s + beta * bv),
        }
        c0 += w;
    }
}
