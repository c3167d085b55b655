//! The step safeguard of [`StepRule::Safeguarded`](super::StepRule::Safeguarded): FISTA
//! iterations with one step per sample, each shrunk until the sample's step satisfies the
//! sufficient-decrease condition.
//!
//! Why per sample: the safeguard is there for a sample that bounces across a kink of a
//! one-hidden-layer decoder (docs/RESULTS.md, "VDL-NL's late stall"). Its violation of the
//! condition is of the order of `eta |jump of the gradient|^2`, about `1e-6` of an energy that
//! is summed over the batch to about `80` in float32: a batch-wide test (what
//! [`StepRule::Backtracking`](super::StepRule::Backtracking) does) cannot see it. Per sample,
//! with the change of the reconstruction computed as `<D(p) - D(x), r_p + r_x>` in f64, it is
//! measured to about `1e-9`.
//!
//! Sample `i` (not flagged) takes the step `p_i = prox(x_i - eta_i g_i)` and keeps it iff
//!
//! ```text
//! phi_i(p_i) - phi_i(x_i) - <g_i - h_i, p_i - x_i> <= ||p_i - x_i||^2 / (2 eta_i)
//! ```
//!
//! where `phi_i` is its reconstruction and proximity terms and `h_i` the variance hinge's
//! gradient at `x` (the hinge couples the samples; it enters the test linearised, so its
//! curvature is not checked). Otherwise `eta_i` is divided by the factor and the sample's step
//! taken again. The steps start at the constant step and only shrink; a sample whose step
//! shrank restarts its momentum (its next extrapolated point is its new codes; O'Donoghue &
//! Candès's restart, per sample); the momentum weight `t` stays the batch's. A flagged sample
//! is projected, as in the constant-step iterations.
//!
//! These iterations run only in batches whose loop outlived the constant-step iterations, so
//! they use the backend's products and do the per-sample arithmetic on host copies of the
//! `(n, l)` codes and the `(n, d)` residuals.

use ndarray::{Array2, ArrayView1, Zip};

use crate::backend::{Backend, RowConvergence};
use crate::error::{Error, Result};
use crate::model::decoder::DecoderScratch;
use crate::model::energy;
use crate::scalar::Scalar;

use super::{MAX_BACKTRACKS, Smooth};

/// The safeguard's state for one solve: the per-sample steps and host copies of the inputs.
pub(super) struct Safeguard<F: Scalar, B: Backend<F>> {
    /// `eta_i`, one per row of this rank.
    steps: Vec<f64>,
    factor: f64,
    /// This rank's warm start `e` (the proximity term's target), as f64.
    e: Option<Array2<f64>>,
    /// The hinge's gradient at `x` (device buffer).
    h: B::Mat,
}

/// What one safeguarded iteration did.
pub(super) struct SafeguardStep {
    pub(super) rc: RowConvergence,
    /// Step reductions, summed over samples.
    pub(super) backtracks: usize,
    /// Reconstructions at trial codes (each over every row).
    pub(super) forwards: usize,
}

fn host<F: Scalar, B: Backend<F>>(be: &B, m: &B::Mat) -> Result<Array2<f64>> {
    Ok(be.download(m)?.mapv(|v| v.f()))
}

impl<F: Scalar, B: Backend<F>> Safeguard<F, B> {
    /// Starts the safeguard with every sample's step `eta`.
    pub(super) fn new(smooth: &Smooth<'_, F, B>, eta: f64, factor: f64) -> Result<Self> {
        let be = smooth.be;
        let (n, l) = (be.shape(smooth.y).0, smooth.decoder.code_dim());
        Ok(Safeguard {
            steps: vec![eta; n],
            factor,
            e: smooth.target.map(|e| host(be, e)).transpose()?,
            h: be.zeros(n, l)?,
        })
    }

    /// How many of this rank's samples have a step smaller than `eta`.
    pub(super) fn shrunk(&self, eta: f64) -> usize {
        self.steps.iter().filter(|&&s| s < eta).count()
    }

    /// The smallest step any sample uses.
    pub(super) fn min_step(&self) -> f64 {
        self.steps.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// One iteration: gradient at `x`, per-sample steps into `z` (the old codes into `z_old`),
    /// then the extrapolation into `x` and the convergence flags, as
    /// [`Backend::fista_update`] does for a constant step.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn iterate(
        &mut self,
        smooth: &Smooth<'_, F, B>,
        lambda: f64,
        nonneg: bool,
        coef: F,
        tol: F,
        x: &mut B::Mat,
        z: &mut B::Mat,
        z_old: &mut B::Mat,
        g: &mut B::Mat,
        flags: &mut B::Mat,
        dec: &mut DecoderScratch<B::Mat>,
        mean: &mut B::Mat,
        std: &mut B::Mat,
        iteration: usize,
    ) -> Result<SafeguardStep> {
        let be = smooth.be;
        let d = smooth.decoder.input_dim() as f64;
        let l = smooth.decoder.code_dim() as f64;
        let gamma = smooth.gamma.f();
        // phi's gradient (reconstruction and proximity) and the residual at x, then the hinge's
        smooth
            .decoder
            .recon(be, smooth.y, x, dec, Some(&mut *g), false)?;
        energy::proximity(be, x, smooth.target, smooth.gamma, Some(&mut *g), false)?;
        let g_phi = host(be, g)?;
        let r_x = host(be, dec.residual())?;
        be.fill(F::zero(), &mut self.h)?;
        energy::hinge_on(
            be,
            x,
            smooth.beta,
            smooth.t,
            mean,
            std,
            Some(&mut self.h),
            false,
            smooth.comm,
        )?;
        let h = host(be, &self.h)?;
        let x_h = host(be, x)?;
        let z_prev = host(be, z)?;
        let active: Vec<bool> = host(be, flags)?
            .column(0)
            .iter()
            .map(|&f| f == 0.0)
            .collect();
        be.copy(z, z_old)?;

        let n = x_h.nrows();
        let mut p = Array2::<f64>::zeros(x_h.raw_dim());
        let take_step = |p: &mut Array2<f64>, i: usize, eta: f64| {
            let thr = lambda * eta;
            Zip::from(p.row_mut(i))
                .and(x_h.row(i))
                .and(g_phi.row(i))
                .and(h.row(i))
                .for_each(|p, &x, &gp, &hh| {
                    let u = x - eta * (gp + hh);
                    *p = if nonneg {
                        (u - thr).max(0.0)
                    } else {
                        u.signum() * (u.abs() - thr).max(0.0)
                    };
                });
        };
        for (i, &is_active) in active.iter().enumerate() {
            if is_active {
                take_step(&mut p, i, self.steps[i]);
            } else {
                // flagged: projected only
                Zip::from(p.row_mut(i)).and(x_h.row(i)).for_each(|p, &x| {
                    *p = if nonneg { x.max(0.0) } else { x };
                });
            }
        }
        // test the active samples; take the failing ones' steps again, smaller
        let mut pending: Vec<usize> = (0..n).filter(|&i| active[i]).collect();
        let mut backtracks = 0usize;
        let mut attempts = 0usize;
        let mut forwards = 0usize;
        let mut restart = vec![false; n];
        loop {
            let p_dev = be.upload(p.mapv(F::c).view())?;
            be.copy(&p_dev, z)?;
            if pending.is_empty() {
                break;
            }
            smooth.decoder.recon(be, smooth.y, z, dec, None, false)?;
            forwards += 1;
            let r_p = host(be, dec.residual())?;
            let mut failing = vec![];
            for &i in &pending {
                let (pi, xi) = (p.row(i), x_h.row(i));
                let (mut lin, mut sq, mut prox_diff, mut prox_sum) = (0.0, 0.0, 0.0, 0.0);
                for j in 0..pi.len() {
                    let s = pi[j] - xi[j];
                    lin += g_phi[[i, j]] * s;
                    sq += s * s;
                    if gamma != 0.0 {
                        let e = self.e.as_ref().map_or(0.0, |e| e[[i, j]]);
                        prox_diff += s * (pi[j] + xi[j] - 2.0 * e);
                        prox_sum += (pi[j] - e).powi(2) + (xi[j] - e).powi(2);
                    }
                }
                let (recon_diff, recon_sum) = recon_change(r_p.row(i), r_x.row(i));
                let change = recon_diff / d + gamma / l * prox_diff;
                // the rounding of phi_i's float values, with room
                let slack = 8.0 * F::EPS * (recon_sum / d + gamma / l * prox_sum);
                let excess = change - lin - sq / (2.0 * self.steps[i]);
                // a NaN fails the test too
                if excess.is_nan() || excess > slack {
                    failing.push(i);
                }
            }
            if failing.is_empty() {
                break;
            }
            attempts += 1;
            if attempts > MAX_BACKTRACKS {
                return Err(Error::Backtracking {
                    iteration,
                    attempts,
                    last_l: 1.0 / self.min_step(),
                });
            }
            for &i in &failing {
                self.steps[i] /= self.factor;
                restart[i] = true;
                take_step(&mut p, i, self.steps[i]);
            }
            backtracks += failing.len();
            pending = failing;
        }
        // the extrapolation; a sample whose step shrank restarts its momentum (x_i = p_i): its
        // velocity was built with the larger step
        if restart.iter().any(|&r| r) {
            let c = coef.f();
            let mut x_new = p.clone();
            for i in (0..n).filter(|&i| !restart[i]) {
                Zip::from(x_new.row_mut(i))
                    .and(z_prev.row(i))
                    .for_each(|x, &zp| *x += c * (*x - zp));
            }
            let x_dev = be.upload(x_new.mapv(F::c).view())?;
            be.copy(&x_dev, x)?;
        } else {
            be.momentum(z, z_old, coef, x)?;
        }
        let rc = be.converged_rows(z_old, z, tol, flags)?;
        Ok(SafeguardStep {
            rc,
            backtracks,
            forwards,
        })
    }
}

/// `(||r_p||^2 - ||r_x||^2, ||r_p||^2 + ||r_x||^2)` with the difference as
/// `<r_p - r_x, r_p + r_x>`, so that it does not cancel.
fn recon_change(r_p: ArrayView1<'_, f64>, r_x: ArrayView1<'_, f64>) -> (f64, f64) {
    let (mut diff, mut sum) = (0.0, 0.0);
    for (&a, &b) in r_p.iter().zip(r_x) {
        diff += (a - b) * (a + b);
        sum += a * a + b * b;
    }
    (diff, sum)
}
