//! The CPU backend: ndarray storage, GEMM through ndarray (matrixmultiply by default, OpenBLAS
//! with the `openblas` feature) or, when the left operand is mostly zeros (codes), a sparse
//! product that skips the zeros; element-wise kernels as loops written to vectorise.
//!
//! Reductions accumulate in a fixed order, so results are bit-identical from run to run.
//!
//! # Threads
//!
//! Called inside [`threads::with_threads`], the GEMMs, the fused FISTA update, the hinge's
//! gradient and the column statistics split their rows (or columns) over the pool's threads;
//! each part computes what the one-thread loop computes, so the results are the same for every
//! thread count (see [`threads`]). Elsewhere every kernel runs on the calling thread.
//! matrixmultiply is built without its own threads. OpenBLAS (feature `openblas`) has its own
//! pool: call [`set_blas_threads`]`(1)` when you use [`threads::with_threads`], as the
//! command-line tool does, so the two do not compete for the cores.

use ndarray::{Array2, ArrayView2, Axis, Zip};

mod gemm;
mod packed;
mod rows;
mod simd;
mod sparse;
pub mod threads;

pub(crate) use gemm::mat_mul;
pub use gemm::set_blas_threads;
pub(crate) use rows::fista_restart_rows;
use rows::*;
use simd::*;
pub use sparse::SPARSE_DENSITY;
use sparse::*;

use super::{AdamUpdate, Backend, FistaStep, RowConvergence, RowMomentum, Trans, same_shape};
use crate::error::{Error, Result};
use crate::scalar::Scalar;
pub use packed::PackedRhs;

/// The CPU backend. Stateless; cheap to copy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

fn dim(a: &Array2<impl Sized>) -> (usize, usize) {
    a.dim()
}

fn op_dim(a: &Array2<impl Sized>, t: Trans) -> (usize, usize) {
    let (r, c) = a.dim();
    match t {
        Trans::N => (r, c),
        Trans::T => (c, r),
    }
}

fn view<F>(a: &Array2<F>, t: Trans) -> ArrayView2<'_, F> {
    match t {
        Trans::N => a.view(),
        Trans::T => a.t(),
    }
}

fn row_vec(op: &str, v: (usize, usize), cols: usize) -> Result<()> {
    if v == (1, cols) {
        Ok(())
    } else {
        Err(Error::shape(
            op,
            format!("expected a (1, {cols}) row vector, got {v:?}"),
        ))
    }
}

fn col_vec(op: &str, v: (usize, usize), rows: usize) -> Result<()> {
    if v == (rows, 1) {
        Ok(())
    } else {
        Err(Error::shape(
            op,
            format!("expected a ({rows}, 1) column vector, got {v:?}"),
        ))
    }
}

impl<F: Scalar> Backend<F> for Cpu {
    type Mat = Array2<F>;
    type Packed = PackedRhs<F>;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn zeros(&self, rows: usize, cols: usize) -> Result<Array2<F>> {
        Ok(Array2::zeros((rows, cols)))
    }

    fn upload(&self, a: ArrayView2<'_, F>) -> Result<Array2<F>> {
        Ok(a.as_standard_layout().into_owned())
    }

    fn download(&self, a: &Array2<F>) -> Result<Array2<F>> {
        Ok(a.clone())
    }

    fn shape(&self, a: &Array2<F>) -> (usize, usize) {
        a.dim()
    }

    fn gemm(
        &self,
        alpha: F,
        a: &Array2<F>,
        ta: Trans,
        b: &Array2<F>,
        tb: Trans,
        beta: F,
        c: &mut Array2<F>,
    ) -> Result<()> {
        let (m, k) = op_dim(a, ta);
        let (k2, n) = op_dim(b, tb);
        if k != k2 || c.dim() != (m, n) {
            return Err(Error::shape(
                "gemm",
                format!(
                    "op(a) is ({m}, {k}), op(b) is ({k2}, {n}), c is {:?}",
                    c.dim()
                ),
            ));
        }
        mat_mul(alpha, view(a, ta), view(b, tb), beta, c.view_mut());
        Ok(())
    }

    fn gemm_rows(
        &self,
        rows: usize,
        alpha: F,
        a: &Array2<F>,
        b: &Array2<F>,
        tb: Trans,
        beta: F,
        c: &mut Array2<F>,
    ) -> Result<()> {
        let (k2, n) = op_dim(b, tb);
        if rows > a.nrows() || rows > c.nrows() || a.ncols() != k2 || c.ncols() != n {
            return Err(Error::shape(
                "gemm_rows",
                format!(
                    "{rows} rows of a {:?} times op(b) ({k2}, {n}) into c {:?}",
                    a.dim(),
                    c.dim()
                ),
            ));
        }
        if rows == 0 {
            return Ok(());
        }
        mat_mul(
            alpha,
            a.slice(ndarray::s![..rows, ..]),
            view(b, tb),
            beta,
            c.slice_mut(ndarray::s![..rows, ..]),
        );
        Ok(())
    }

    fn pack_rhs(&self, b: &Array2<F>, tb: Trans, packed: &mut PackedRhs<F>) -> Result<()> {
        packed.pack(view(b, tb));
        Ok(())
    }

    fn packed_shape(&self, packed: &PackedRhs<F>) -> (usize, usize) {
        packed.dim()
    }

    fn gemm_rows_packed(
        &self,
        rows: usize,
        alpha: F,
        a: &Array2<F>,
        b: &PackedRhs<F>,
        beta: F,
        c: &mut Array2<F>,
    ) -> Result<()> {
        let (k2, n) = b.dim();
        if rows > a.nrows() || rows > c.nrows() || a.ncols() != k2 || c.ncols() != n {
            return Err(Error::shape(
                "gemm_rows_packed",
                format!(
                    "{rows} rows of a {:?} times packed b ({k2}, {n}) into c {:?}",
                    a.dim(),
                    c.dim()
                ),
            ));
        }
        packed::gemm_packed(
            alpha,
            a.slice(ndarray::s![..rows, ..]),
            b,
            beta,
            None,
            c.slice_mut(ndarray::s![..rows, ..]),
        );
        Ok(())
    }

    fn packed_gram(&self, b: &PackedRhs<F>, g: &mut Array2<F>) -> Result<()> {
        let (_, n) = b.dim();
        if g.dim() != (n, n) {
            return Err(Error::shape(
                "packed_gram",
                format!("packed b has {n} columns, g is {:?}", g.dim()),
            ));
        }
        packed::gram_packed(b, g.view_mut());
        Ok(())
    }

    /// Reads the active rows of `base` in place, where the default gathers them into `c` first
    /// (the same arithmetic, so the same result).
    fn gemm_rows_packed_active_base(
        &self,
        flags: &Array2<F>,
        rows: usize,
        alpha: F,
        a: &Array2<F>,
        b: &PackedRhs<F>,
        beta: F,
        base: &Array2<F>,
        c: &mut Array2<F>,
    ) -> Result<()> {
        let (k2, n) = b.dim();
        col_vec(
            "gemm_rows_packed_active_base: flags",
            dim(flags),
            base.nrows(),
        )?;
        let active: Vec<usize> = (0..flags.len())
            .filter(|&i| flags[(i, 0)] == F::zero())
            .collect();
        if rows > a.nrows()
            || rows > c.nrows()
            || a.ncols() != k2
            || c.ncols() != n
            || base.ncols() != n
            || active.len() != rows
        {
            return Err(Error::shape(
                "gemm_rows_packed_active_base",
                format!(
                    "{rows} rows of a {:?} times packed b ({k2}, {n}) plus {} active rows of \
                     base {:?} into c {:?}",
                    a.dim(),
                    active.len(),
                    base.dim(),
                    c.dim()
                ),
            ));
        }
        packed::gemm_packed(
            alpha,
            a.slice(ndarray::s![..rows, ..]),
            b,
            beta,
            Some((base.view(), &active)),
            c.slice_mut(ndarray::s![..rows, ..]),
        );
        Ok(())
    }

    /// One pass over the rows, without the gather and scatter copies, where the active rows of
    /// `x` are mostly zero (the test the sparse GEMM path makes on the gathered rows) and every matrix is
    /// stored row-major; then it computes what the composition does, in the same order, so the
    /// result is the same to the bit. Otherwise the composition.
    fn gram_grad_active(
        &self,
        flags: &Array2<F>,
        x: &Array2<F>,
        g: &Array2<F>,
        c: &Array2<F>,
        alpha: F,
        grad: &mut Array2<F>,
        xc: &mut Array2<F>,
        cc: &mut Array2<F>,
    ) -> Result<()> {
        let (n, l) = x.dim();
        same_shape("gram_grad_active: grad", dim(x), dim(grad))?;
        same_shape("gram_grad_active: c", dim(x), dim(c))?;
        same_shape("gram_grad_active: G", (l, l), dim(g))?;
        col_vec("gram_grad_active: flags", dim(flags), n)?;
        if let (Some(xs), Some(gs), Some(cs), Some(fs), true) = (
            x.as_slice(),
            g.as_slice(),
            c.as_slice(),
            flags.as_slice(),
            l >= 8 && grad.is_standard_layout(),
        ) && active_mostly_zero(xs, fs, l)
        {
            let out = grad.as_slice_mut().unwrap_or(&mut []);
            let rows_per = n.div_ceil(threads::parts(n, n * l * l)).max(1);
            let work = xs
                .chunks(rows_per * l)
                .zip(cs.chunks(rows_per * l))
                .zip(fs.chunks(rows_per))
                .zip(out.chunks_mut(rows_per * l));
            threads::for_each_part(work, |(((xp, cp), fp), op)| {
                run_sparse_job(SparseJob::GramGrad {
                    alpha,
                    x: xp,
                    g: gs,
                    c: cp,
                    flags: fp,
                    out: op,
                    l,
                });
            });
            return Ok(());
        }
        super::gram_grad_active_composed(self, flags, x, g, c, alpha, grad, xc, cc)
    }

    /// Split over the pool by source rows, each part writing the destination rows its active
    /// rows go to (a count of the active rows before it gives the first).
    fn gather_active_rows(
        &self,
        flags: &Array2<F>,
        src: &Array2<F>,
        dst: &mut Array2<F>,
    ) -> Result<usize> {
        same_shape("gather_active_rows", dim(src), dim(dst))?;
        col_vec("gather_active_rows: flags", dim(flags), src.nrows())?;
        let (n, w) = src.dim();
        let active: Vec<bool> = flags.iter().map(|&f| f == F::zero()).collect();
        let k = active.iter().filter(|&&a| a).count();
        let (Some(ss), Some(ds), true) = (src.as_slice(), dst.as_slice_mut(), w > 0) else {
            let mut k = 0;
            for (i, &a) in active.iter().enumerate() {
                if a {
                    dst.row_mut(k).assign(&src.row(i));
                    k += 1;
                }
            }
            return Ok(k);
        };
        let rows_per = n.div_ceil(threads::parts(n, k * w)).max(1);
        // each part: its source rows, its flags, and the destination rows of its active rows
        let mut parts = Vec::new();
        let mut rest = &mut ds[..k * w];
        for (sp, ap) in ss.chunks(rows_per * w).zip(active.chunks(rows_per)) {
            let cnt = ap.iter().filter(|&&a| a).count();
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(cnt * w);
            rest = tail;
            parts.push((sp, ap, mine));
        }
        threads::for_each_part(parts.into_iter(), |(sp, ap, mine)| {
            let rows = sp.chunks_exact(w).zip(ap).filter(|(_, a)| **a);
            for ((row, _), out) in rows.zip(mine.chunks_exact_mut(w)) {
                out.copy_from_slice(row);
            }
        });
        Ok(k)
    }

    /// Split over the pool by destination rows, as [`Backend::gather_active_rows`] by source
    /// rows.
    fn scatter_active_rows(
        &self,
        flags: &Array2<F>,
        src: &Array2<F>,
        dst: &mut Array2<F>,
    ) -> Result<()> {
        same_shape("scatter_active_rows", dim(src), dim(dst))?;
        col_vec("scatter_active_rows: flags", dim(flags), src.nrows())?;
        let (n, w) = src.dim();
        let active: Vec<bool> = flags.iter().map(|&f| f == F::zero()).collect();
        let (Some(ss), Some(ds), true) = (src.as_slice(), dst.as_slice_mut(), w > 0) else {
            let mut k = 0;
            for (i, &a) in active.iter().enumerate() {
                if a {
                    dst.row_mut(i).assign(&src.row(k));
                    k += 1;
                } else {
                    dst.row_mut(i).fill(F::zero());
                }
            }
            return Ok(());
        };
        let rows_per = n.div_ceil(threads::parts(n, n * w)).max(1);
        let mut parts = Vec::new();
        let mut first = 0;
        for (dp, ap) in ds.chunks_mut(rows_per * w).zip(active.chunks(rows_per)) {
            parts.push((dp, ap, first));
            first += ap.iter().filter(|&&a| a).count();
        }
        threads::for_each_part(parts.into_iter(), |(dp, ap, first)| {
            let mut from = ss[first * w..].chunks_exact(w);
            for (out, &a) in dp.chunks_exact_mut(w).zip(ap) {
                // the next source row belongs to this row only when it is active
                match if a { from.next() } else { None } {
                    Some(row) => out.copy_from_slice(row),
                    None => out.fill(F::zero()),
                }
            }
        });
        Ok(())
    }

    fn fista_update(
        &self,
        g: &Array2<F>,
        step: FistaStep<F>,
        x: &mut Array2<F>,
        z: &mut Array2<F>,
        z_old: &mut Array2<F>,
        flags: &mut Array2<F>,
    ) -> Result<RowConvergence> {
        same_shape("fista_update", dim(g), dim(x))?;
        same_shape("fista_update", dim(g), dim(z))?;
        same_shape("fista_update", dim(g), dim(z_old))?;
        col_vec("fista_update: flags", dim(flags), g.nrows())?;
        let l = g.ncols();
        let (Some(gs), Some(xs), Some(zs), Some(zos), Some(fs)) = (
            g.as_slice(),
            x.as_slice_mut(),
            z.as_slice_mut(),
            z_old.as_slice_mut(),
            flags.as_slice_mut(),
        ) else {
            // not in standard layout: the kernels it fuses
            let zo = z.clone();
            let x_in = x.clone();
            self.shrink_step(&x_in, g, flags, step.eta, step.thr, step.nonneg, z)?;
            self.momentum(z, &zo, step.coef, x)?;
            let rc = self.converged_rows(&zo, z, step.tol, flags)?;
            z_old.assign(&zo);
            return Ok(rc);
        };
        let n = fs.len();
        if n == 0 || l == 0 {
            // no rows, or rows with no entries: nothing moves, and a zero row never converges
            fs.fill(F::zero());
            return Ok(RowConvergence {
                converged: 0,
                non_finite: false,
                active_nonzeros: None,
                restarts: 0,
            });
        }
        let rows_per = n.div_ceil(threads::parts(n, n * l));
        let mut results = vec![(0usize, false); n.div_ceil(rows_per)];
        let work = gs
            .chunks(rows_per * l)
            .zip(xs.chunks_mut(rows_per * l))
            .zip(zs.chunks_mut(rows_per * l))
            .zip(zos.chunks_mut(rows_per * l))
            .zip(fs.chunks_mut(rows_per))
            .zip(results.iter_mut());
        let avx2 = has_avx2();
        threads::for_each_part(work, |(((((g, x), z), zo), f), out)| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU supports AVX2 (`has_avx2`).
                *out = unsafe { fista_update_rows_avx2(g, step, x, z, zo, f, l) };
                return;
            }
            *out = fista_update_rows(g, step, x, z, zo, f, l);
        });
        Ok(row_convergence(&results))
    }

    fn fista_update_restart(
        &self,
        g: &Array2<F>,
        step: FistaStep<F>,
        coefs: &[F],
        age: &mut Array2<F>,
        x: &mut Array2<F>,
        z: &mut Array2<F>,
        z_old: &mut Array2<F>,
        flags: &mut Array2<F>,
    ) -> Result<RowConvergence> {
        same_shape("fista_update_restart", dim(g), dim(x))?;
        same_shape("fista_update_restart", dim(g), dim(z))?;
        same_shape("fista_update_restart", dim(g), dim(z_old))?;
        col_vec("fista_update_restart: flags", dim(flags), g.nrows())?;
        col_vec("fista_update_restart: age", dim(age), g.nrows())?;
        let l = g.ncols();
        let n = g.nrows();
        if n == 0 || l == 0 {
            // no rows, or rows with no entries: nothing moves, and a zero row never converges
            flags.fill(F::zero());
            return Ok(row_convergence(&[]));
        }
        let (Some(gs), Some(xs), Some(zs), Some(zos), Some(fs), Some(ages)) = (
            g.as_slice(),
            x.as_slice_mut(),
            z.as_slice_mut(),
            z_old.as_slice_mut(),
            flags.as_slice_mut(),
            age.as_slice_mut(),
        ) else {
            // not in standard layout: on standard-layout copies
            let std = |a: &Array2<F>| a.as_standard_layout().into_owned();
            let (mut xh, mut zh, mut zoh) = (std(x), std(z), std(z_old));
            let (mut fh, mut ah) = (std(flags), std(age));
            let rc = self.fista_update_restart(
                &std(g),
                step,
                coefs,
                &mut ah,
                &mut xh,
                &mut zh,
                &mut zoh,
                &mut fh,
            )?;
            x.assign(&xh);
            z.assign(&zh);
            z_old.assign(&zoh);
            flags.assign(&fh);
            age.assign(&ah);
            return Ok(rc);
        };
        let rows_per = n.div_ceil(threads::parts(n, n * l));
        let mut results = vec![(0usize, false, 0usize); n.div_ceil(rows_per)];
        let work = gs
            .chunks(rows_per * l)
            .zip(xs.chunks_mut(rows_per * l))
            .zip(zs.chunks_mut(rows_per * l))
            .zip(zos.chunks_mut(rows_per * l))
            .zip(fs.chunks_mut(rows_per).zip(ages.chunks_mut(rows_per)))
            .zip(results.iter_mut());
        let avx2 = has_avx2();
        threads::for_each_part(work, |(((((g, x), z), zo), (f, a)), out)| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU supports AVX2 (`has_avx2`).
                *out = unsafe { fista_restart_rows_avx2(g, step, coefs, x, z, zo, f, a, l) };
                return;
            }
            *out = fista_restart_rows(g, step, coefs, x, z, zo, f, a, l);
        });
        let parts: Vec<(usize, bool)> = results.iter().map(|r| (r.0, r.1)).collect();
        Ok(RowConvergence {
            restarts: results.iter().map(|r| r.2).sum(),
            ..row_convergence(&parts)
        })
    }

    /// One pass over the rows where the active rows of `x` are mostly zero (the test of
    /// [`Backend::gram_grad_active`]'s own one-pass path) and every matrix is stored row-major:
    /// each row's gradient by the sparse row kernel, then its update, in the same order as the
    /// two kernels, so the same result to the bit. Otherwise the two kernels.
    fn gram_fista_step(
        &self,
        g: &Array2<F>,
        c: &Array2<F>,
        alpha: F,
        prox: F,
        target: Option<&Array2<F>>,
        step: FistaStep<F>,
        mut momentum: Option<RowMomentum<'_, F, Array2<F>>>,
        x_nonzeros: Option<usize>,
        x: &mut Array2<F>,
        z: &mut Array2<F>,
        z_old: &mut Array2<F>,
        flags: &mut Array2<F>,
        grad: &mut Array2<F>,
        xc: &mut Array2<F>,
        cc: &mut Array2<F>,
    ) -> Result<RowConvergence> {
        let (n, l) = x.dim();
        same_shape("gram_fista_step: grad", dim(x), dim(grad))?;
        same_shape("gram_fista_step: c", dim(x), dim(c))?;
        same_shape("gram_fista_step: z", dim(x), dim(z))?;
        same_shape("gram_fista_step: z_old", dim(x), dim(z_old))?;
        same_shape("gram_fista_step: G", (l, l), dim(g))?;
        col_vec("gram_fista_step: flags", dim(flags), n)?;
        if let Some(e) = target {
            same_shape("gram_fista_step: target", dim(x), dim(e))?;
        }
        if let Some(m) = &momentum {
            col_vec("gram_fista_step: age", dim(m.age), n)?;
        }
        // the target's rows, empty when there is none (or no term)
        let es = match target {
            Some(e) if prox != F::zero() => e.as_slice(),
            _ => Some(&[][..]),
        };
        let sparse = n > 0
            && l >= 8
            && match (x.as_slice(), flags.as_slice(), x_nonzeros) {
                (Some(_), Some(fs), Some(nnz)) => {
                    sparse_enough(nnz, fs.iter().filter(|&&f| f == F::zero()).count(), l)
                }
                (Some(xs), Some(fs), None) => active_mostly_zero(xs, fs, l),
                _ => false,
            };
        // the momentum's coefficients and the rows' ages when it restarts (no ages without a
        // restart; `None`: ages not in standard layout, so the composed kernels)
        let coefs = momentum.as_ref().map_or(&[][..], |m| m.coefs);
        let ages: Option<&mut [F]> = match momentum.as_mut() {
            Some(m) => m.age.as_slice_mut(),
            None => Some(&mut []),
        };
        if let (
            true,
            Some(es),
            Some(ages),
            Some(gs),
            Some(cs),
            Some(xs),
            Some(zs),
            Some(zos),
            Some(fs),
            Some(out),
        ) = (
            sparse,
            es,
            ages,
            g.as_slice(),
            c.as_slice(),
            x.as_slice_mut(),
            z.as_slice_mut(),
            z_old.as_slice_mut(),
            flags.as_slice_mut(),
            grad.as_slice_mut(),
        ) {
            let rows_per = n.div_ceil(threads::parts(n, n * l * l)).max(1);
            let mut results = vec![(0usize, false, 0usize, 0usize); n.div_ceil(rows_per)];
            // each part's ages (none without a restart)
            let age_parts = ages
                .chunks_mut(rows_per)
                .map(Some)
                .chain(std::iter::repeat_with(|| None));
            let work = xs
                .chunks_mut(rows_per * l)
                .zip(zs.chunks_mut(rows_per * l))
                .zip(zos.chunks_mut(rows_per * l))
                .zip(cs.chunks(rows_per * l))
                .zip(out.chunks_mut(rows_per * l))
                .zip(fs.chunks_mut(rows_per))
                .zip(results.iter_mut())
                .zip(es.chunks(rows_per * l).chain(std::iter::repeat(&[][..])))
                .zip(age_parts);
            threads::for_each_part(
                work,
                |((((((((xp, zp), zop), cp), gp), fp), res), ep), ap)| {
                    run_sparse_job(SparseJob::GramStep {
                        alpha,
                        g: gs,
                        c: cp,
                        prox,
                        target: ep,
                        step,
                        momentum: ap.map(|a| (coefs, a)),
                        x: xp,
                        z: zp,
                        z_old: zop,
                        flags: fp,
                        grad: gp,
                        l,
                        out: res,
                    });
                },
            );
            return Ok(RowConvergence {
                converged: results.iter().map(|r| r.0).sum(),
                non_finite: results.iter().any(|r| r.1),
                active_nonzeros: Some(results.iter().map(|r| r.2).sum()),
                restarts: results.iter().map(|r| r.3).sum(),
            });
        }
        super::gram_fista_step_composed(
            self, g, c, alpha, prox, target, step, momentum, x, z, z_old, flags, grad, xc, cc,
        )
    }

    fn copy(&self, src: &Array2<F>, dst: &mut Array2<F>) -> Result<()> {
        same_shape("copy", dim(src), dim(dst))?;
        dst.assign(src);
        Ok(())
    }

    fn axpby(&self, alpha: F, x: &Array2<F>, beta: F, y: &mut Array2<F>) -> Result<()> {
        same_shape("axpby", dim(x), dim(y))?;
        if beta == F::zero() {
            Zip::from(y).and(x).for_each(|y, &x| *y = alpha * x);
        } else {
            Zip::from(y)
                .and(x)
                .for_each(|y, &x| *y = alpha * x + beta * *y);
        }
        Ok(())
    }

    fn add_scaled_diff(
        &self,
        alpha: F,
        a: &Array2<F>,
        b: &Array2<F>,
        y: &mut Array2<F>,
    ) -> Result<()> {
        same_shape("add_scaled_diff", dim(a), dim(b))?;
        same_shape("add_scaled_diff", dim(a), dim(y))?;
        Zip::from(y)
            .and(a)
            .and(b)
            .for_each(|y, &a, &b| *y = *y + alpha * (a - b));
        Ok(())
    }

    fn mul_assign(&self, a: &Array2<F>, y: &mut Array2<F>) -> Result<()> {
        same_shape("mul_assign", dim(a), dim(y))?;
        Zip::from(y).and(a).for_each(|y, &a| *y = *y * a);
        Ok(())
    }

    fn scale(&self, alpha: F, y: &mut Array2<F>) -> Result<()> {
        y.mapv_inplace(|v| alpha * v);
        Ok(())
    }

    fn fill(&self, value: F, y: &mut Array2<F>) -> Result<()> {
        y.fill(value);
        Ok(())
    }

    fn add_row_bias(&self, bias: &Array2<F>, a: &mut Array2<F>) -> Result<()> {
        row_vec("add_row_bias", dim(bias), a.ncols())?;
        let m = a.ncols();
        if let (Some(bs), Some(s)) = (bias.as_slice(), a.as_slice_mut())
            && m > 0
        {
            let rows_per = (s.len() / m).div_ceil(threads::parts(s.len() / m, s.len()));
            threads::for_each_part(s.chunks_mut(rows_per.max(1) * m), |p| {
                for row in p.chunks_exact_mut(m) {
                    row.iter_mut().zip(bs).for_each(|(v, &b)| *v = *v + b);
                }
            });
            return Ok(());
        }
        let b = bias.row(0);
        for mut row in a.rows_mut() {
            Zip::from(&mut row).and(&b).for_each(|v, &b| *v = *v + b);
        }
        Ok(())
    }

    fn col_sums(&self, alpha: F, a: &Array2<F>, beta: F, out: &mut Array2<F>) -> Result<()> {
        row_vec("col_sums", dim(out), a.ncols())?;
        let mut acc = vec![0.0f64; a.ncols()];
        for row in a.rows() {
            for (s, &v) in acc.iter_mut().zip(row.iter()) {
                *s += v.f();
            }
        }
        for (o, s) in out.row_mut(0).iter_mut().zip(acc) {
            *o = if beta == F::zero() {
                alpha * F::c(s)
            } else {
                alpha * F::c(s) + beta * *o
            };
        }
        Ok(())
    }

    fn col_mean_std(&self, a: &Array2<F>, mean: &mut Array2<F>, std: &mut Array2<F>) -> Result<()> {
        let (n, l) = a.dim();
        row_vec("col_mean_std: mean", dim(mean), l)?;
        row_vec("col_mean_std: std", dim(std), l)?;
        if n < 2 {
            return Err(Error::shape(
                "col_mean_std",
                format!("an unbiased std needs at least 2 rows, got {n}"),
            ));
        }
        let (Some(xs), Some(m), Some(sd)) = (a.as_slice(), mean.as_slice_mut(), std.as_slice_mut())
        else {
            let owned = a.as_standard_layout().into_owned();
            let mut m2 = Array2::zeros((1, l));
            let mut s2 = Array2::zeros((1, l));
            self.col_mean_std(&owned, &mut m2, &mut s2)?;
            mean.assign(&m2);
            std.assign(&s2);
            return Ok(());
        };
        if l == 0 {
            return Ok(());
        }
        // Split over columns, so that each column's sums run over all rows in order, as on one
        // thread.
        let cols_per = l.div_ceil(threads::parts(l, n * l));
        let work = m
            .chunks_mut(cols_per)
            .zip(sd.chunks_mut(cols_per))
            .enumerate();
        threads::for_each_part(work, |(p, (m, sd))| {
            let j0 = p * cols_per;
            col_mean_std_cols(xs, l, j0, m, sd);
        });
        Ok(())
    }

    fn normalize_columns(&self, a: &mut Array2<F>) -> Result<()> {
        let mut norms = vec![0.0f64; a.ncols()];
        for row in a.rows() {
            for (s, &v) in norms.iter_mut().zip(row.iter()) {
                *s += v.f() * v.f();
            }
        }
        let inv: Vec<F> = norms
            .iter()
            .map(|&s| {
                if s > 0.0 {
                    F::c(1.0 / s.sqrt())
                } else {
                    F::one()
                }
            })
            .collect();
        for mut row in a.rows_mut() {
            for (v, &s) in row.iter_mut().zip(inv.iter()) {
                *v = *v * s;
            }
        }
        Ok(())
    }

    fn relu(&self, a: &mut Array2<F>) -> Result<()> {
        let zero = F::zero();
        match a.as_slice_mut() {
            Some(s) => {
                let per = s.len().div_ceil(threads::parts(s.len(), s.len())).max(1);
                threads::for_each_part(s.chunks_mut(per), |p| {
                    p.iter_mut()
                        .for_each(|v| *v = if *v > zero { *v } else { zero });
                });
            }
            None => a.mapv_inplace(|v| if v > zero { v } else { zero }),
        }
        Ok(())
    }

    fn relu_mask(&self, act: &Array2<F>, grad: &mut Array2<F>) -> Result<()> {
        same_shape("relu_mask", dim(act), dim(grad))?;
        let zero = F::zero();
        // a select, not a branch: it vectorises, and the signs of `act` are unpredictable
        let mask = |g: &mut F, a: F| *g = if a <= zero { zero } else { *g };
        match (act.as_slice(), grad.as_slice_mut()) {
            (Some(a), Some(g)) => {
                let per = g.len().div_ceil(threads::parts(g.len(), g.len())).max(1);
                threads::for_each_part(g.chunks_mut(per).zip(a.chunks(per)), |(gp, ap)| {
                    gp.iter_mut().zip(ap).for_each(|(g, &a)| mask(g, a));
                });
            }
            _ => Zip::from(grad).and(act).for_each(|g, &a| mask(g, a)),
        }
        Ok(())
    }

    fn hinge_value(&self, std: &Array2<F>, t: F) -> Result<F> {
        let mut acc = 0.0f64;
        for &s in std.iter() {
            let h = (t - s).f().max(0.0);
            acc += h * h;
        }
        Ok(F::c(acc))
    }

    fn hinge_grad(
        &self,
        x: &Array2<F>,
        mean: &Array2<F>,
        std: &Array2<F>,
        beta: F,
        t: F,
        count: usize,
        grad: &mut Array2<F>,
    ) -> Result<()> {
        let (n, l) = x.dim();
        same_shape("hinge_grad", dim(x), dim(grad))?;
        row_vec("hinge_grad: mean", dim(mean), l)?;
        row_vec("hinge_grad: std", dim(std), l)?;
        if count < 2 {
            return Err(Error::shape(
                "hinge_grad",
                format!("the variance hinge needs at least 2 samples, got {count}"),
            ));
        }
        if l == 0 || n == 0 {
            return Ok(());
        }
        let scale = -(F::c(2.0) * beta) / F::c((count - 1) as f64);
        // Coefficient per latent; exactly zero where the hinge is inactive or the std is zero
        // (adding 0 * (x - mu) then leaves the gradient unchanged).
        let coef = |s: F| {
            if s > F::zero() && s < t {
                scale * (t - s) / s
            } else {
                F::zero()
            }
        };
        match (
            x.as_slice(),
            grad.as_slice_mut(),
            mean.as_slice(),
            std.as_slice(),
        ) {
            (Some(xs), Some(gs), Some(mu), Some(sd)) => {
                let c: Vec<F> = sd.iter().map(|&s| coef(s)).collect();
                if c.iter().all(|&v| v == F::zero()) {
                    // the hinge is inactive in every column: the gradient is unchanged
                    return Ok(());
                }
                let (c, mu) = (&c[..l], &mu[..l]);
                let rows_per = n.div_ceil(threads::parts(n, n * l));
                let work = gs.chunks_mut(rows_per * l).zip(xs.chunks(rows_per * l));
                threads::for_each_part(work, |(gp, xp)| {
                    for (grow, xrow) in gp.chunks_exact_mut(l).zip(xp.chunks_exact(l)) {
                        let (grow, xrow) = (&mut grow[..l], &xrow[..l]);
                        for j in 0..l {
                            grow[j] = grow[j] + c[j] * (xrow[j] - mu[j]);
                        }
                    }
                });
            }
            _ => {
                for (mut grow, xrow) in grad.rows_mut().into_iter().zip(x.rows()) {
                    for j in 0..l {
                        let c = coef(std[(0, j)]);
                        if c != F::zero() {
                            grow[j] = grow[j] + c * (xrow[j] - mean[(0, j)]);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn shrink_step(
        &self,
        x: &Array2<F>,
        g: &Array2<F>,
        flags: &Array2<F>,
        eta: F,
        thr: F,
        nonneg: bool,
        z: &mut Array2<F>,
    ) -> Result<()> {
        same_shape("shrink_step", dim(x), dim(g))?;
        same_shape("shrink_step", dim(x), dim(z))?;
        col_vec("shrink_step: flags", dim(flags), x.nrows())?;
        for (((mut zr, xr), gr), &f) in z
            .rows_mut()
            .into_iter()
            .zip(x.rows())
            .zip(g.rows())
            .zip(flags.iter())
        {
            let active = f == F::zero();
            if active {
                if nonneg {
                    Zip::from(&mut zr).and(&xr).and(&gr).for_each(|z, &x, &g| {
                        let u = x - eta * g - thr;
                        *z = if u > F::zero() { u } else { F::zero() };
                    });
                } else {
                    Zip::from(&mut zr).and(&xr).and(&gr).for_each(|z, &x, &g| {
                        let u = x - eta * g;
                        let m = u.abs() - thr;
                        *z = if m > F::zero() {
                            m.copysign(u)
                        } else {
                            F::zero()
                        };
                    });
                }
            } else if nonneg {
                Zip::from(&mut zr).and(&xr).for_each(|z, &x| {
                    *z = if x > F::zero() { x } else { F::zero() };
                });
            } else {
                zr.assign(&xr);
            }
        }
        Ok(())
    }

    fn momentum(&self, z: &Array2<F>, z_old: &Array2<F>, coef: F, x: &mut Array2<F>) -> Result<()> {
        same_shape("momentum", dim(z), dim(z_old))?;
        same_shape("momentum", dim(z), dim(x))?;
        Zip::from(x)
            .and(z)
            .and(z_old)
            .for_each(|x, &z, &zo| *x = z + coef * (z - zo));
        Ok(())
    }

    fn converged_rows(
        &self,
        z_old: &Array2<F>,
        z_new: &Array2<F>,
        tol: F,
        flags: &mut Array2<F>,
    ) -> Result<RowConvergence> {
        same_shape("converged_rows", dim(z_old), dim(z_new))?;
        col_vec("converged_rows: flags", dim(flags), z_old.nrows())?;
        let mut converged = 0;
        let mut non_finite = false;
        for ((zo, zn), f) in z_old
            .rows()
            .into_iter()
            .zip(z_new.rows())
            .zip(flags.iter_mut())
        {
            let mut diff = 0.0f64;
            let mut old = 0.0f64;
            for (&a, &b) in zo.iter().zip(zn.iter()) {
                let d = (a - b).f();
                diff += d * d;
                old += a.f() * a.f();
            }
            if !diff.is_finite() {
                non_finite = true;
            }
            // NaN compares false, and 0/0 is NaN: a zero previous row never counts as converged.
            let ok = old > 0.0 && diff.sqrt() / old.sqrt() < tol.f();
            *f = if ok { F::one() } else { F::zero() };
            converged += ok as usize;
        }
        Ok(RowConvergence {
            converged,
            non_finite,
            active_nonzeros: None,
            restarts: 0,
        })
    }

    fn step_model_terms(&self, g: &Array2<F>, p: &Array2<F>, x: &Array2<F>) -> Result<(F, F)> {
        same_shape("step_model_terms", dim(g), dim(p))?;
        same_shape("step_model_terms", dim(g), dim(x))?;
        let mut lin = 0.0f64;
        let mut sq = 0.0f64;
        Zip::from(g).and(p).and(x).for_each(|&g, &p, &x| {
            let d = (p - x).f();
            lin += g.f() * d;
            sq += d * d;
        });
        Ok((F::c(lin), F::c(sq)))
    }

    fn sum_sq(&self, a: &Array2<F>) -> Result<F> {
        Ok(F::c(a.iter().map(|&v| v.f() * v.f()).sum()))
    }

    fn sum_sq_diff(&self, a: &Array2<F>, b: &Array2<F>) -> Result<F> {
        same_shape("sum_sq_diff", dim(a), dim(b))?;
        let mut acc = 0.0f64;
        Zip::from(a).and(b).for_each(|&a, &b| {
            let d = (a - b).f();
            acc += d * d;
        });
        Ok(F::c(acc))
    }

    fn dot(&self, a: &Array2<F>, b: &Array2<F>) -> Result<F> {
        same_shape("dot", dim(a), dim(b))?;
        let mut acc = 0.0f64;
        Zip::from(a).and(b).for_each(|&a, &b| acc += a.f() * b.f());
        Ok(F::c(acc))
    }

    fn sum_abs(&self, a: &Array2<F>) -> Result<F> {
        Ok(F::c(a.iter().map(|&v| v.f().abs()).sum()))
    }

    fn count_zeros(&self, a: &Array2<F>) -> Result<usize> {
        Ok(a.iter().filter(|&&v| v == F::zero()).count())
    }

    fn all_finite(&self, a: &Array2<F>) -> Result<bool> {
        Ok(match a.as_slice_memory_order() {
            Some(s) => crate::scalar::all_finite(s),
            None => a.iter().all(|v| v.is_finite()),
        })
    }

    fn psnr_sum(&self, residual: &Array2<F>, scale: F, floor: F) -> Result<F> {
        let d = residual.ncols().max(1) as f64;
        let s2 = scale.f() * scale.f();
        let mut acc = 0.0f64;
        for r in residual.axis_iter(Axis(0)) {
            let mut ss = 0.0f64;
            for &e in r.iter() {
                let e = e.f();
                ss += e * e;
            }
            let mse = (s2 * ss / d).max(floor.f());
            acc += -10.0 * mse.log10();
        }
        Ok(F::c(acc))
    }

    fn adam_update(
        &self,
        p: &mut Array2<F>,
        g: &Array2<F>,
        m: &mut Array2<F>,
        v: &mut Array2<F>,
        hp: &AdamUpdate<F>,
    ) -> Result<()> {
        same_shape("adam_update: grad", dim(p), dim(g))?;
        same_shape("adam_update: m", dim(p), dim(m))?;
        same_shape("adam_update: v", dim(p), dim(v))?;
        let one = F::one();
        let t = hp.step.min(i32::MAX as u64) as i32;
        let bc1 = one - hp.beta1.powi(t);
        let bc2_sqrt = (one - hp.beta2.powi(t)).sqrt();
        let step_size = hp.lr / bc1;
        let wd = hp.weight_decay;
        Zip::from(p).and(g).and(m).and(v).for_each(|p, &g, m, v| {
            let g = if wd != F::zero() { g + wd * *p } else { g };
            // PyTorch: exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2)
            *m = *m + (one - hp.beta1) * (g - *m);
            *v = hp.beta2 * *v + (one - hp.beta2) * g * g;
            let denom = v.sqrt() / bc2_sqrt + hp.eps;
            *p = *p - step_size * (*m / denom);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::gemm::*;
    use super::*;
    use ndarray::array;

    #[test]
    fn transpose_in_blocks_and_ragged_edges() {
        for (rows, cols, threads) in [
            (0, 5, 1),
            (1, 1, 1),
            (3, 17, 2),
            (8, 8, 1),
            (16, 24, 2),
            (13, 9, 3),
            (1024, 12, 2),
            (700, 37, 3),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = threads::with_threads(threads, || transpose(&src, rows, cols)).unwrap();
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        t[j * rows + i],
                        src[i * cols + j],
                        "({rows}, {cols}) on {threads} threads at ({i}, {j})"
                    );
                }
            }
        }
    }

    #[test]
    fn gemm_transposes_and_accumulates() {
        let be = Cpu;
        let a = array![[1.0f64, 2.0], [3.0, 4.0], [5.0, 6.0]]; // (3, 2)
        let b = array![[1.0f64, 0.0, 1.0], [0.0, 1.0, 1.0]]; // (2, 3)
        let mut c = Array2::from_elem((2, 2), 1.0);
        // c = 2 * a^T b^T + 1 * c
        be.gemm(2.0, &a, Trans::T, &b, Trans::T, 1.0, &mut c)
            .unwrap();
        let want = 2.0 * a.t().dot(&b.t()) + 1.0;
        assert_eq!(c, want);
        let mut bad = Array2::zeros((3, 3));
        assert!(
            be.gemm(1.0, &a, Trans::N, &b, Trans::T, 0.0, &mut bad)
                .is_err()
        );
    }

    #[test]
    fn hinge_grad_is_zero_at_zero_std_and_above_threshold() {
        let be = Cpu;
        let x = array![[0.0f64, 0.0, 1.0], [0.0, 2.0, 3.0]];
        let mut mean = Array2::zeros((1, 3));
        let mut std = Array2::zeros((1, 3));
        be.col_mean_std(&x, &mut mean, &mut std).unwrap();
        let mut g = Array2::zeros((2, 3));
        be.hinge_grad(&x, &mean, &std, 1.0, 0.5, 2, &mut g).unwrap();
        // column 0: std 0; columns 1, 2: std sqrt(2) > 0.5
        assert!(g.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn shrink_nonneg_and_signed() {
        let be = Cpu;
        let x = array![[1.0f64, -1.0, 0.05], [1.0, -1.0, 0.05]];
        let g = Array2::zeros((2, 3));
        let flags = array![[0.0], [1.0]];
        let mut z = Array2::zeros((2, 3));
        be.shrink_step(&x, &g, &flags, 1.0, 0.1, true, &mut z)
            .unwrap();
        assert_eq!(z, array![[0.9, 0.0, 0.0], [1.0, 0.0, 0.05]]);
        be.shrink_step(&x, &g, &flags, 1.0, 0.1, false, &mut z)
            .unwrap();
        assert_eq!(z, array![[0.9, -0.9, 0.0], [1.0, -1.0, 0.05]]);
    }

    #[test]
    fn converged_rows_never_flags_a_zero_row() {
        let be = Cpu;
        let old = array![[0.0f64, 0.0], [1.0, 1.0], [1.0, 0.0]];
        let new = array![[0.0f64, 0.0], [1.0, 1.0001], [0.0, 1.0]];
        let mut flags = Array2::zeros((3, 1));
        let r = be.converged_rows(&old, &new, 1e-3, &mut flags).unwrap();
        assert_eq!(r.converged, 1);
        assert!(!r.non_finite);
        assert_eq!(flags, array![[0.0], [1.0], [0.0]]);
    }

    #[test]
    fn fused_update_equals_its_parts() {
        let be = Cpu;
        let x0 = array![[0.5f64, -0.2, 1.0], [0.0, 0.0, 0.0], [2.0, 1.0, -1.0]];
        let g = array![[0.1f64, -0.3, 0.2], [0.5, -0.5, 0.0], [0.0, 0.1, 0.2]];
        let z0 = array![[0.4f64, 0.0, 1.1], [0.0, 0.0, 0.0], [2.0, 1.0, 0.0]];
        let f0 = array![[0.0f64], [0.0], [1.0]];
        for nonneg in [true, false] {
            let (mut x, mut z, mut zo, mut f) =
                (x0.clone(), z0.clone(), Array2::zeros((3, 3)), f0.clone());
            let step = FistaStep {
                eta: 0.5,
                thr: 0.05,
                nonneg,
                coef: 0.3,
                tol: 1e-3,
            };
            let r1 = be
                .fista_update(&g, step, &mut x, &mut z, &mut zo, &mut f)
                .unwrap();
            let (mut x2, mut z2, mut zo2, mut f2) =
                (x0.clone(), z0.clone(), z0.clone(), f0.clone());
            be.shrink_step(&x0, &g, &f0, 0.5, 0.05, nonneg, &mut z2)
                .unwrap();
            be.momentum(&z2, &zo2, 0.3, &mut x2).unwrap();
            let r2 = be.converged_rows(&zo2, &z2, 1e-3, &mut f2).unwrap();
            zo2.assign(&z0);
            assert_eq!((x, z, zo, f, r1), (x2, z2, zo2, f2, r2));
        }
    }

    #[test]
    fn fused_update_equals_its_parts_on_long_rows() {
        // 37 columns: chunks of the lanes and a tail; every fourth row flagged
        let be = Cpu;
        let (n, l) = (8, 37);
        let val = |i: usize, j: usize, k: usize| {
            let h = (i * 131 + j * 71 + k * 29) % 97;
            if h.is_multiple_of(3) {
                0.0
            } else {
                h as f64 / 40.0 - 1.2
            }
        };
        let x0 = Array2::from_shape_fn((n, l), |(i, j)| val(i, j, 1));
        let g = Array2::from_shape_fn((n, l), |(i, j)| val(i, j, 2));
        let f0 = Array2::from_shape_fn((n, 1), |(i, _)| f64::from(u8::from(i % 4 == 2)));
        for nonneg in [true, false] {
            // the flagged rows' codes close to what they become, so that those rows pass the
            // test and the others do not
            let z0 = Array2::from_shape_fn((n, l), |(i, j)| match i % 4 {
                2 if nonneg => val(i, j, 1).max(0.0) + 0.01,
                2 => val(i, j, 1) + 0.01,
                _ => val(i, j, 3),
            });
            let step = FistaStep {
                eta: 0.5,
                thr: 0.05,
                nonneg,
                coef: 0.3,
                tol: 0.2,
            };
            let (mut x, mut z, mut zo, mut f) =
                (x0.clone(), z0.clone(), Array2::zeros((n, l)), f0.clone());
            let r1 = be
                .fista_update(&g, step, &mut x, &mut z, &mut zo, &mut f)
                .unwrap();
            let (mut x2, mut z2, mut f2) = (x0.clone(), z0.clone(), f0.clone());
            be.shrink_step(&x0, &g, &f0, 0.5, 0.05, nonneg, &mut z2)
                .unwrap();
            be.momentum(&z2, &z0, 0.3, &mut x2).unwrap();
            let r2 = be.converged_rows(&z0, &z2, 0.2, &mut f2).unwrap();
            let ratios: Vec<f64> = (0..n)
                .map(|i| {
                    let d = (&z.row(i) - &zo.row(i)).mapv(|v| v * v).sum();
                    (d / zo.row(i).mapv(|v| v * v).sum()).sqrt()
                })
                .collect();
            assert!(r1.converged > 0 && r1.converged < n, "{r1:?} {ratios:?}");
            assert_eq!((x, z, zo, f, r1), (x2, z2, z0.clone(), f2, r2));
        }
    }

    #[test]
    fn col_mean_std_equals_a_plain_two_pass_reference_in_blocks_and_tails() {
        let be = Cpu;
        for (n, l) in [(2, 1), (5, 31), (7, 32), (9, 33), (40, 70), (3, 100)] {
            let mut x = Array2::from_shape_fn((n, l), |(i, j)| {
                ((i * 37 + j * 11) % 23) as f64 / 7.0 - 1.5 + j as f64
            });
            // a constant column: its std must be exactly zero
            x.column_mut(l / 2).fill(0.3);
            let (mut mean, mut std) = (Array2::zeros((1, l)), Array2::zeros((1, l)));
            be.col_mean_std(&x, &mut mean, &mut std).unwrap();
            for j in 0..l {
                let col = x.column(j);
                let mu = col.sum() / n as f64;
                let var = col.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / (n - 1) as f64;
                assert!(
                    (mean[(0, j)] - mu).abs() <= 1e-12 * (1.0 + mu.abs()),
                    "{n}x{l} {j}"
                );
                assert!((std[(0, j)] - var.sqrt()).abs() <= 1e-12, "{n}x{l} {j}");
            }
            assert_eq!(std[(0, l / 2)], 0.0);
            assert_eq!(mean[(0, l / 2)], 0.3);
            // the same bits on every thread count
            for t in [2, 3] {
                let (mut m2, mut s2) = (Array2::zeros((1, l)), Array2::zeros((1, l)));
                super::threads::with_threads(t, || be.col_mean_std(&x, &mut m2, &mut s2))
                    .unwrap()
                    .unwrap();
                assert_eq!((&m2, &s2), (&mean, &std), "{n}x{l}, {t} threads");
            }
        }
    }

    #[test]
    fn nonzero_columns_lists_the_non_zeros_in_order() {
        for len in [0usize, 1, 7, 31, 32, 33, 64, 100] {
            let row: Vec<f32> = (0..len)
                .map(|j| match j % 5 {
                    0 => 0.0,
                    1 => -0.0,
                    2 if j % 3 == 0 => f32::NAN,
                    _ if j % 7 == 0 => 0.0,
                    _ => j as f32 - 10.0,
                })
                .collect();
            let want: Vec<usize> = (0..len).filter(|&j| row[j] != 0.0).collect();
            let mut nz = vec![usize::MAX; len];
            let cnt = nonzero_columns(&row, &mut nz);
            assert_eq!(&nz[..cnt], &want[..], "len {len}");
            // where the NaNs are, they are counted
            assert!(want.iter().any(|&j| row[j].is_nan()) || len < 13);
        }
    }

    #[test]
    fn gather_scatter_and_leading_row_gemm() {
        let be = Cpu;
        let src = array![[1.0f64, 2.0], [3.0, 4.0], [5.0, 6.0]];
        let flags = array![[1.0f64], [0.0], [0.0]];
        let mut dst = Array2::from_elem((3, 2), 9.0);
        assert_eq!(be.gather_active_rows(&flags, &src, &mut dst).unwrap(), 2);
        assert_eq!(dst.row(0), src.row(1));
        assert_eq!(dst.row(1), src.row(2));
        let b = array![[1.0f64, 0.0], [0.0, 2.0]];
        let mut c = Array2::from_elem((3, 2), 7.0);
        be.gemm_rows(2, 1.0, &dst, &b, Trans::N, 0.0, &mut c)
            .unwrap();
        assert_eq!(c, array![[3.0, 8.0], [5.0, 12.0], [7.0, 7.0]]);
        let mut back = Array2::from_elem((3, 2), 9.0);
        be.scatter_active_rows(&flags, &c, &mut back).unwrap();
        assert_eq!(back, array![[0.0, 0.0], [3.0, 8.0], [5.0, 12.0]]);
        assert!(
            be.gemm_rows(4, 1.0, &dst, &b, Trans::N, 0.0, &mut c)
                .is_err()
        );
    }
}
