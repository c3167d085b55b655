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
        // Two passes in f64: the mean, then the centred sum of squares (as torch.norm(x - mean)).
        let mut mu = vec![0.0f64; l];
        for row in a.rows() {
            for (s, &v) in mu.iter_mut().zip(row.iter()) {
                *s += v.f();
            }
        }
        for s in mu.iter_mut() {
            *s /= n as f64;
        }
        let mut ss = vec![0.0f64; l];
        for row in a.rows() {
            for ((s, &v), &m) in ss.iter_mut().zip(row.iter()).zip(mu.iter()) {
                let d = v.f() - m;
                *s += d * d;
            }
        }
        for j in 0..l {
            mean[(0, j)] = F::c(mu[j]);
            std[(0, j)] = F::c((ss[j] / (n - 1) as f64).sqrt());
        }
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
        // Coefficient per latent; exactly zero where the hinge is inactive or the std is zero.
        let coef: Vec<F> = std
            .iter()
            .map(|&s| {
                if s > F::zero() && s < t {
                    scale * (t - s) / s
                } else {
                    F::zero()
                }
            })
            .collect();
        let mu = mean.row(0);
        for (mut grow, xrow) in grad.rows_mut().into_iter().zip(x.rows()) {
            for j in 0..l {
                if coef[j] != F::zero() {
                    grow[j] = grow[j] + coef[j] * (xrow[j] - mu[j]);
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
}
