//! The CPU backend: ndarray storage, GEMM through ndarray (matrixmultiply by default, OpenBLAS
//! with the `openblas` feature), element-wise kernels as sequential loops.
//!
//! Reductions accumulate in `f64` in a fixed order, so results are bit-identical from run to run
//! for a given thread count (matrixmultiply and OpenBLAS partition GEMM outputs between threads
//! without changing each element's summation order).
//!
//! # Threads
//!
//! GEMM threading is process-global: matrixmultiply reads `MATMUL_NUM_THREADS` once, at its
//! first multiplication (unset: the number of physical cores; it uses at most 4); OpenBLAS reads `OPENBLAS_NUM_THREADS` when it loads (see
//! [`set_blas_threads`]). The element-wise kernels run on the calling thread.

use ndarray::{Array2, ArrayView2, Axis, Zip};

use super::{AdamUpdate, Backend, RowConvergence, Trans, same_shape};
use crate::error::{Error, Result};
use crate::scalar::Scalar;

thread_local! {
    /// Per-thread scratch of the hinge's per-latent coefficients (no allocation per call).
    static COEF: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The CPU backend. Stateless; cheap to copy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

/// Sets OpenBLAS's thread count (a no-op without the `openblas` feature).
///
/// matrixmultiply, the default GEMM, takes its thread count from the environment variable
/// `MATMUL_NUM_THREADS`, read once at its first use; the command-line tool sets it at start-up
/// from `--threads`.
pub fn set_blas_threads(n: usize) {
    #[cfg(feature = "openblas")]
    {
        unsafe extern "C" {
            fn openblas_set_num_threads(n: std::ffi::c_int);
        }
        let n = n.clamp(1, std::ffi::c_int::MAX as usize) as std::ffi::c_int;
        // SAFETY: a plain C call taking an int; OpenBLAS is linked by the `openblas` feature.
        unsafe { openblas_set_num_threads(n) };
    }
    #[cfg(not(feature = "openblas"))]
    let _ = n;
}

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
        ndarray::linalg::general_mat_mul(alpha, &view(a, ta), &view(b, tb), beta, c);
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
        let mut cv = c.slice_mut(ndarray::s![..rows, ..]);
        ndarray::linalg::general_mat_mul(
            alpha,
            &a.slice(ndarray::s![..rows, ..]),
            &view(b, tb),
            beta,
            &mut cv,
        );
        Ok(())
    }

    fn gather_active_rows(
        &self,
        flags: &Array2<F>,
        src: &Array2<F>,
        dst: &mut Array2<F>,
    ) -> Result<usize> {
        same_shape("gather_active_rows", dim(src), dim(dst))?;
        col_vec("gather_active_rows: flags", dim(flags), src.nrows())?;
        let mut k = 0;
        for (i, &f) in flags.iter().enumerate() {
            if f == F::zero() {
                dst.row_mut(k).assign(&src.row(i));
                k += 1;
            }
        }
        Ok(k)
    }

    fn scatter_active_rows(
        &self,
        flags: &Array2<F>,
        src: &Array2<F>,
        dst: &mut Array2<F>,
    ) -> Result<()> {
        same_shape("scatter_active_rows", dim(src), dim(dst))?;
        col_vec("scatter_active_rows: flags", dim(flags), src.nrows())?;
        let mut k = 0;
        for (i, &f) in flags.iter().enumerate() {
            if f == F::zero() {
                dst.row_mut(i).assign(&src.row(k));
                k += 1;
            } else {
                dst.row_mut(i).fill(F::zero());
            }
        }
        Ok(())
    }

    fn fista_update(
        &self,
        g: &Array2<F>,
        eta: F,
        thr: F,
        nonneg: bool,
        coef: F,
        tol: F,
        x: &mut Array2<F>,
        z: &mut Array2<F>,
        z_old: &mut Array2<F>,
        flags: &mut Array2<F>,
    ) -> Result<RowConvergence> {
        same_shape("fista_update", dim(g), dim(x))?;
        same_shape("fista_update", dim(g), dim(z))?;
        same_shape("fista_update", dim(g), dim(z_old))?;
        col_vec("fista_update: flags", dim(flags), g.nrows())?;
        let zero = F::zero();
        let mut converged = 0;
        let mut non_finite = false;
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
            self.shrink_step(&x_in, g, flags, eta, thr, nonneg, z)?;
            self.momentum(z, &zo, coef, x)?;
            let rc = self.converged_rows(&zo, z, tol, flags)?;
            z_old.assign(&zo);
            return Ok(rc);
        };
        let rows = gs
            .chunks_exact(l)
            .zip(xs.chunks_exact_mut(l))
            .zip(zs.chunks_exact_mut(l))
            .zip(zos.chunks_exact_mut(l))
            .zip(fs.iter_mut());
        for ((((gr, xr), zr), zor), f) in rows {
            zor.copy_from_slice(zr);
            // the new codes, by the previous flag (branch-free inner loops)
            match (*f == zero, nonneg) {
                (true, true) => {
                    for ((zv, &xv), &gv) in zr.iter_mut().zip(xr.iter()).zip(gr) {
                        let u = xv - eta * gv - thr;
                        *zv = if u > zero { u } else { zero };
                    }
                }
                (true, false) => {
                    for ((zv, &xv), &gv) in zr.iter_mut().zip(xr.iter()).zip(gr) {
                        let u = xv - eta * gv;
                        let m = u.abs() - thr;
                        *zv = if m > zero { m.copysign(u) } else { zero };
                    }
                }
                (false, true) => {
                    for (zv, &xv) in zr.iter_mut().zip(xr.iter()) {
                        *zv = if xv > zero { xv } else { zero };
                    }
                }
                (false, false) => zr.copy_from_slice(xr),
            }
            let (mut diff, mut old) = (zero, zero);
            for ((xv, &zn), &zo) in xr.iter_mut().zip(zr.iter()).zip(zor.iter()) {
                *xv = zn + coef * (zn - zo);
                let dd = zo - zn;
                diff = diff + dd * dd;
                old = old + zo * zo;
            }
            if !diff.is_finite() {
                non_finite = true;
            }
            // NaN compares false, and 0/0 is NaN: a zero previous row never counts as converged
            let ok = old > zero && diff.sqrt() / old.sqrt() < tol;
            *f = if ok { F::one() } else { zero };
            converged += ok as usize;
        }
        Ok(RowConvergence {
            converged,
            non_finite,
        })
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
        // Two passes: the mean, then the centred sum of squares (as torch.norm(x - mean)).
        // Accumulated in F over contiguous rows so that the loops vectorise; this runs once or
        // twice per FISTA iteration when beta > 0.
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
        // Shifted by the first row: a constant column then has a mean equal to its value and
        // a std of exactly 0 (the hinge's gradient must vanish there), and rounding is smaller.
        let first = &xs[..l];
        m.fill(F::zero());
        sd.fill(F::zero());
        for row in xs.chunks_exact(l).skip(1) {
            for ((acc, &v), &v0) in m.iter_mut().zip(row).zip(first) {
                *acc = *acc + (v - v0);
            }
        }
        let inv_n = F::one() / F::c(n as f64);
        m.iter_mut()
            .zip(first)
            .for_each(|(v, &v0)| *v = v0 + *v * inv_n);
        for row in xs.chunks_exact(l) {
            for ((acc, &v), &mu) in sd.iter_mut().zip(row).zip(m.iter()) {
                let d = v - mu;
                *acc = *acc + d * d;
            }
        }
        let inv = F::one() / F::c((n - 1) as f64);
        sd.iter_mut().for_each(|v| *v = (*v * inv).sqrt());
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
        a.mapv_inplace(|v| if v > F::zero() { v } else { F::zero() });
        Ok(())
    }

    fn relu_mask(&self, act: &Array2<F>, grad: &mut Array2<F>) -> Result<()> {
        same_shape("relu_mask", dim(act), dim(grad))?;
        Zip::from(grad).and(act).for_each(|g, &a| {
            if a <= F::zero() {
                *g = F::zero();
            }
        });
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
        grad: &mut Array2<F>,
    ) -> Result<()> {
        let (n, l) = x.dim();
        same_shape("hinge_grad", dim(x), dim(grad))?;
        row_vec("hinge_grad: mean", dim(mean), l)?;
        row_vec("hinge_grad: std", dim(std), l)?;
        if n < 2 {
            return Err(Error::shape(
                "hinge_grad",
                format!("the variance hinge needs at least 2 rows, got {n}"),
            ));
        }
        let scale = -(F::c(2.0) * beta) / F::c((n - 1) as f64);
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
            (Some(xs), Some(gs), Some(mu), Some(sd)) => COEF.with(|c| {
                let mut c = c.borrow_mut();
                c.clear();
                c.extend(sd.iter().map(|&s| coef(s).f()));
                // f64 scratch holds F values exactly for f32 and f64
                for (grow, xrow) in gs.chunks_exact_mut(l).zip(xs.chunks_exact(l)) {
                    for (((gv, &xv), &m), &cj) in grow.iter_mut().zip(xrow).zip(mu).zip(c.iter()) {
                        *gv = *gv + F::c(cj) * (xv - m);
                    }
                }
            }),
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
        Ok(a.iter().all(|v| v.is_finite()))
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
    use super::*;
    use ndarray::array;

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
        be.hinge_grad(&x, &mean, &std, 1.0, 0.5, &mut g).unwrap();
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
            let r1 = be
                .fista_update(
                    &g, 0.5, 0.05, nonneg, 0.3, 1e-3, &mut x, &mut z, &mut zo, &mut f,
                )
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
