//! FISTA over a batch of codes (Beck & Teboulle 2009), with the released code's semantics.
//!
//! Minimises `E(Z) = f(Z) + lambda ||Z||_1` (plus `Z >= 0` by default) where `f` is the smooth
//! part of the energy (reconstruction, variance hinge, proximity; see [`crate::model::energy`]). Each
//! iteration, with `x` the extrapolated point and `a_i = 0` for samples flagged converged at the
//! previous iteration, `1` otherwise (docs/CONVENTIONS.md §2):
//!
//! ```text
//! g     = grad f(x)                               (the hinge is evaluated at x)
//! z_new = shrink(x - a_i eta g, a_i lambda eta)  (a flagged sample is only projected, not frozen)
//! t'    = (1 + sqrt(1 + 4 t^2)) / 2
//! x     = z_new + ((t - 1)/t') (z_new - z_old)
//! flag_i = ||z_old_i - z_new_i|| / ||z_old_i|| < tol      (never when ||z_old_i|| = 0)
//! ```
//!
//! The loop ends when every sample is flagged at the same iteration, or after `max_iter`
//! iterations. "Inference steps" is the mean over samples of the number of iterations after which
//! the sample was not flagged (the authors' `stop_early_step`).
//!
//! # Step rules
//!
//! * [`StepRule::Constant`]: a fixed `eta`, as the released code.
//! * [`StepRule::Backtracking`]: one Lipschitz estimate `L` for the batch (the hinge couples
//!   samples), increased by `factor` until `F(p) <= Q_L(p, x) = f(x) + <g, p - x> + L/2 ||p - x||^2`
//!   with `p` the trial codes; `L` is carried to the next iteration.
//! * [`StepRule::Safeguarded`]: the constant step for a number of iterations, then one step per
//!   sample, shrunk until it satisfies the sufficient-decrease condition for that sample (the
//!   iterates are the constant step's until the switch).
//! * [`StepRule::Auto`]: for a linear decoder, `eta = 1/L` with
//!   `L = (2/d) ||W||_2^2 + 2 gamma / l` (power iteration on `W^T W`, inflated by 2% because
//!   power iteration approaches the top eigenvalue from below). The variance hinge is not globally
//!   Lipschitz (its curvature grows like `1/s_j`), so `beta` is not included; prefer
//!   backtracking when `beta > 0`. For a one-hidden-layer decoder, `Auto` means backtracking
//!   from `L = 1`.
//!
//! # Adaptive restart
//!
//! [`FistaParams::restart`] (off by default) gives each sample its own momentum weight and
//! restarts it when the sample's new step points against its momentum,
//! `<x_i - z_new_i, z_new_i - z_old_i> > 0` (O'Donoghue & Candès 2015, the gradient scheme):
//! then `x_i = z_new_i` and the sample's `t` starts again from 1. A sample that never restarts
//! follows the batch's schedule above, to the bit. It needs a constant step, and it runs the
//! update with the same fused kernels as the constant step (the linear Gram path's one pass
//! included).
//!
//! # Gradient paths
//!
//! For a linear decoder the reconstruction gradient can be computed in code space:
//! `(2/d)(X G - C)` with `G = W^T W` `(l, l)` and `C = Y W` `(n, l)` formed once per batch
//! ([`GradientPath::Gram`], the default), instead of `(2/d)(X W^T - Y) W` ([`GradientPath::Direct`]).
//! Both give the same iterates up to rounding.
//!
//! With a constant step an iteration is a gradient of the samples still active, then one fused
//! update ([`Backend::fista_update`]). On the linear decoder's Gram path without the variance
//! hinge (the non-negative lasso; SDL), whose gradient is row by row, the two are one kernel,
//! [`Backend::gram_fista_step`]: the CPU backend computes each row's gradient and applies its
//! update while the row is in cache, with the same result to the bit.

mod batches;
mod params;
mod report;
mod safeguard;
mod workspace;

pub use batches::solve_batches;
pub use params::{FistaParams, GradientPath, HIDDEN_GRAM_AFTER, SAFEGUARD_AFTER, StepRule};
pub use report::{BatchReport, FistaReport, TraceRecord};
pub use workspace::FistaWorkspace;

use crate::backend::{Backend, FistaStep, RowMomentum, Trans};
use crate::comm::{Comm, Solo};
use crate::error::{Error, Result};
use crate::model::decoder::{Decoder, DecoderKind, DecoderScratch};
use crate::model::energy::{self, EnergyTerms};
use crate::model::params::DecoderParams;
use crate::scalar::Scalar;
use workspace::GramBuffers;

/// Everything the smooth part needs, borrowed from the caller and the workspace.
struct Smooth<'a, F: Scalar, B: Backend<F>> {
    be: &'a B,
    /// The ranks sharing the batch (`y` holds this rank's rows).
    comm: &'a dyn Comm,
    decoder: &'a Decoder<F, B>,
    y: &'a B::Mat,
    target: Option<&'a B::Mat>,
    beta: F,
    t: F,
    gamma: F,
    /// `||Y||^2`, Gram path only.
    yy: F,
    use_gram: bool,
}

impl<F: Scalar, B: Backend<F>> Smooth<'_, F, B> {
    /// `f(point)` (when `want_value`) and, when `grad` is given, `grad f(point)` written into it.
    #[allow(clippy::too_many_arguments)]
    fn eval(
        &self,
        point: &B::Mat,
        dec: &mut DecoderScratch<B::Mat>,
        gram: Option<&mut GramBuffers<F, B>>,
        mean: &mut B::Mat,
        std: &mut B::Mat,
        mut grad: Option<&mut B::Mat>,
        want_value: bool,
    ) -> Result<F> {
        let be = self.be;
        let linear = self.decoder.kind() == DecoderKind::Linear;
        let recon = match (self.use_gram && linear, gram) {
            (true, Some(GramBuffers { g: g_mat, c, q, .. })) => {
                // q = X G - C; recon = (1/d)(||Y||^2 + <X, q> - <X, C>); grad = (2/d) q.
                let inv_d = F::one() / F::c(self.decoder.input_dim() as f64);
                be.copy(c, q)?;
                be.gemm(F::one(), point, Trans::N, g_mat, Trans::N, -F::one(), q)?;
                if let Some(g) = grad.as_deref_mut() {
                    be.axpby(F::c(2.0) * inv_d, q, F::zero(), g)?;
                }
                if want_value {
                    (self.yy + be.dot(point, q)? - be.dot(point, c)?) * inv_d
                } else {
                    F::zero()
                }
            }
            _ => self
                .decoder
                .recon(be, self.y, point, dec, grad.as_deref_mut(), want_value)?,
        };
        let prox = energy::proximity(
            be,
            point,
            self.target,
            self.gamma,
            grad.as_deref_mut(),
            want_value,
        )?;
        let hinge = energy::hinge_on(
            be, point, self.beta, self.t, mean, std, grad, want_value, self.comm,
        )?;
        if self.comm.size() > 1 && want_value {
            // the row terms summed over the ranks; the hinge is already the batch's
            let mut v = [(recon + prox).f()];
            self.comm.sum_f64(&mut v)?;
            return Ok(F::c(v[0]) + hinge);
        }
        Ok(recon + prox + hinge)
    }
}

impl<F: Scalar, B: Backend<F>> Smooth<'_, F, B> {
    /// `2 / d`, the Gram path's gradient scale.
    fn two_over_d(&self) -> F {
        F::c(2.0) / F::c(self.decoder.input_dim() as f64)
    }

    /// Whether the gradient is the linear decoder's Gram-path reconstruction gradient with at
    /// most the proximity term (no hinge), so that [`Backend::gram_fista_step`] can take the
    /// step.
    fn gram_without_hinge(&self) -> bool {
        self.use_gram && self.decoder.kind() == DecoderKind::Linear && self.beta == F::zero()
    }

    /// `grad f(point)` on the active rows (`flags = 0`) only, zero on the others: what a
    /// constant-step iteration uses (flagged samples take no gradient step).
    #[allow(clippy::too_many_arguments)]
    fn grad_active(
        &self,
        point: &B::Mat,
        flags: &B::Mat,
        dec: &mut DecoderScratch<B::Mat>,
        gram: Option<&mut GramBuffers<F, B>>,
        mean: &mut B::Mat,
        std: &mut B::Mat,
        grad: &mut B::Mat,
    ) -> Result<()> {
        let be = self.be;
        match (self.use_gram, gram) {
            (true, Some(GramBuffers { hidden, c, q, .. }))
                if self.decoder.kind() != DecoderKind::Linear =>
            {
                self.decoder
                    .hidden_gram_grad_active(be, point, flags, hidden, c, q, dec, grad)?;
            }
            (true, Some(GramBuffers { g: g_mat, c, .. })) => {
                // grad[active] = (2/d)(X[active] G - C[active])
                let two_d = self.two_over_d();
                be.gram_grad_active(
                    flags,
                    point,
                    g_mat,
                    c,
                    two_d,
                    grad,
                    &mut dec.xc,
                    &mut dec.gc,
                )?;
            }
            _ => {
                self.decoder
                    .recon_grad_active(be, self.y, point, flags, dec, grad)?;
            }
        }
        energy::proximity(be, point, self.target, self.gamma, Some(&mut *grad), false)?;
        energy::hinge_on(
            be,
            point,
            self.beta,
            self.t,
            mean,
            std,
            Some(grad),
            false,
            self.comm,
        )?;
        Ok(())
    }
}

const MAX_BACKTRACKS: usize = 64;

/// Runs FISTA on the batch `y` `(n, d)`, starting from `warm` `(n, l)` (zeros when `None`), which
/// is also the proximity term's target `e`. The codes are left in [`FistaWorkspace::codes`].
///
/// # Errors
/// * [`Error::InvalidParameter`] for out-of-range parameters, or `n < 2` with `beta > 0`;
/// * [`Error::Shape`] if `y`, `warm` or the workspace do not fit the decoder;
/// * [`Error::NonFiniteInput`] if `y` or `warm` holds NaN or infinity;
/// * [`Error::Diverged`] if an iterate or the energy becomes non-finite;
/// * [`Error::Backtracking`] if no step satisfies the sufficient-decrease condition.
pub fn solve<F: Scalar, B: Backend<F>>(
    be: &B,
    decoder: &Decoder<F, B>,
    y: &B::Mat,
    warm: Option<&B::Mat>,
    params: &FistaParams,
    ws: &mut FistaWorkspace<F, B>,
) -> Result<FistaReport> {
    solve_on(be, decoder, y, warm, params, ws, &Solo)
}

/// [`solve`] on a batch whose rows are split between the ranks of `comm`: `y` (and `warm`)
/// hold this rank's rows, and the batch-wide quantities are reduced over the ranks at every
/// iteration, so that the run is the algorithm of [`solve`] on the whole batch (docs/SCALING.md):
/// the variance hinge's column statistics ([`energy::hinge_on`]), the number of converged
/// samples (the loop ends when every sample of the batch is flagged), the energies and model
/// terms of the backtracking test, the report's energy and mean steps, and the counts behind
/// the one-hidden-layer decoder's choice of gradient path. Each rank keeps at least one row.
/// On one process ([`Solo`]) this is [`solve`], to the bit.
///
/// Every rank must call it with the same parameters. An error on one rank (bad input on its
/// rows) is returned there only: the caller must end the job (the CLI aborts every rank).
///
/// # Errors
/// As [`solve`]; a communication error.
pub fn solve_on<F: Scalar, B: Backend<F>>(
    be: &B,
    decoder: &Decoder<F, B>,
    y: &B::Mat,
    warm: Option<&B::Mat>,
    params: &FistaParams,
    ws: &mut FistaWorkspace<F, B>,
    comm: &dyn Comm,
) -> Result<FistaReport> {
    params.validate()?;
    let distributed = comm.size() > 1;
    let (n, d) = be.shape(y);
    let l = decoder.code_dim();
    if d != decoder.input_dim() {
        return Err(Error::shape(
            "FISTA: input Y",
            format!(
                "Y is {:?} but the decoder expects {} columns",
                (n, d),
                decoder.input_dim()
            ),
        ));
    }
    if ws.n != n || ws.l != l {
        return Err(Error::shape(
            "FISTA: workspace",
            format!(
                "workspace is for ({}, {}) codes, the batch needs ({n}, {l})",
                ws.n, ws.l
            ),
        ));
    }
    if let Some(e) = warm
        && be.shape(e) != (n, l)
    {
        return Err(Error::shape(
            "FISTA: warm start",
            format!("warm start is {:?}, expected ({n}, {l})", be.shape(e)),
        ));
    }
    // the batch's rows, over all ranks
    let n_all = if distributed { comm.sum_count(n)? } else { n };
    let ep = &params.energy;
    if ep.beta > 0.0 && n_all < 2 {
        return Err(Error::param(
            "batch size",
            n_all,
            "the variance hinge (beta > 0) needs at least 2 samples per batch",
        ));
    }
    check_finite_mat(be, "Y", y)?;
    if let Some(e) = warm {
        check_finite_mat(be, "warm start", e)?;
    }
    // a constant step at the first iteration (Safeguarded may switch to backtracking later)
    let constant_step = match params.step {
        StepRule::Constant { .. } => true,
        StepRule::Safeguarded { after, .. } => after > 0,
        StepRule::Backtracking { .. } | StepRule::Auto => false,
    };
    let linear = decoder.kind() == DecoderKind::Linear;
    if params.path == GradientPath::Gram && !linear && !constant_step {
        return Err(Error::param(
            "path",
            "gram",
            "the one-hidden-layer decoder's Gram path needs a constant step",
        ));
    }
    // Auto may switch a one-hidden-layer decoder to its Gram path (see GradientPath): from the
    // start when the workspace's forecast says it pays, else perhaps after HIDDEN_GRAM_AFTER
    // iterations
    let may_switch = params.path == GradientPath::Auto && !linear && constant_step;
    let forecast_gram = may_switch
        && ws
            .forecast
            .is_some_and(|s| hidden_gram_pays(decoder, n_all, s * n_all as f64));
    let use_gram = match params.path {
        GradientPath::Direct => false,
        GradientPath::Gram => true,
        GradientPath::Auto => linear || forecast_gram,
    };

    let cost = Flops::of(decoder, n_all);
    let mut flops = 0.0f64;
    let mut yy = F::zero();
    if use_gram {
        gram_setup(be, decoder, y, ws.gram.as_mut())?;
        flops += cost.gram_setup;
        if linear {
            yy = be.sum_sq(y)?;
        }
    }

    // The step rule, resolved to an initial L, whether to backtrack, and (Safeguarded) the
    // iteration from which to backtrack.
    let mut safeguard_at = None;
    let (mut lip, backtrack, factor) = match params.step {
        StepRule::Constant { eta } => (1.0 / eta, false, 1.0),
        StepRule::Safeguarded { eta, after, factor } => {
            safeguard_at = Some(after);
            (1.0 / eta, false, factor)
        }
        StepRule::Backtracking {
            initial_step,
            factor,
        } => (1.0 / initial_step.unwrap_or(1.0), true, factor),
        StepRule::Auto => match decoder.params() {
            DecoderParams::Linear { w } => {
                let sigma2 = top_eigenvalue_wtw(be, w)?;
                let lip = 1.02 * (2.0 / d as f64) * sigma2 + 2.0 * ep.gamma / l as f64;
                (lip.max(f64::MIN_POSITIVE), false, 1.0)
            }
            DecoderParams::OneHidden { .. } => (1.0, true, 2.0),
        },
    };

    if params.restart && backtrack {
        return Err(Error::param(
            "restart",
            "on",
            "adaptive restart needs a constant step (a constant or safeguarded rule, or Auto on a \
             linear decoder); this rule backtracks",
        ));
    }

    let mut smooth = Smooth {
        be,
        comm,
        decoder,
        y,
        target: warm,
        beta: F::c(ep.beta),
        t: F::c(ep.threshold),
        gamma: F::c(ep.gamma),
        yy,
        use_gram,
    };
    let lambda = ep.lambda;
    let FistaWorkspace {
        z,
        z_old,
        x,
        g,
        flags,
        age,
        mean,
        std,
        dec,
        gram,
        trace,
        ..
    } = ws;
    trace.clear();
    if params.record_trace {
        trace.reserve(params.max_iter);
    }

    match warm {
        Some(e) => be.copy(e, z)?,
        None => be.fill(F::zero(), z)?,
    }
    be.copy(z, x)?;
    be.fill(F::zero(), flags)?;

    // adaptive restart: each sample's momentum coefficient by its age, the same sequence as the
    // batch's `t` below
    let coefs: Vec<F> = if params.restart {
        be.fill(F::zero(), age)?;
        let mut t = 1.0f64;
        (0..=params.max_iter)
            .map(|_| {
                let t_next = 0.5 * (1.0 + (1.0 + 4.0 * t * t).sqrt());
                let c = F::c((t - 1.0) / t_next);
                t = t_next;
                c
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut restarts = 0usize;
    let mut t = 1.0f64;
    let mut steps_sum = 0usize;
    let mut iterations = 0usize;
    let mut converged = false;
    let mut backtracks = 0usize;
    let mut rows_flagged = 0usize;
    let mut switched_at = None;
    let mut safeguard_from = None;
    let mut safeguard: Option<safeguard::Safeguard<F, B>> = None;
    // the non-zeros of x's unflagged rows, when the last step counted them
    let mut x_nonzeros = None;
    let tol = F::c(params.tol);
    // Rounding slack for the sufficient-decrease test: the energies are sums of O(n l) terms.
    let slack_rel = 64.0 * F::EPS;

    for it in 0..params.max_iter {
        let t_next = 0.5 * (1.0 + (1.0 + 4.0 * t * t).sqrt());
        let coef = F::c((t - 1.0) / t_next);
        if safeguard_at == Some(it) {
            // Safeguarded: the loop has run `after` iterations; per-sample steps take over from
            // the state the constant steps left (z, x, flags)
            safeguard = Some(safeguard::Safeguard::new(&smooth, 1.0 / lip, factor)?);
            safeguard_from = Some(it);
        }
        if may_switch && safeguard.is_none() && !smooth.use_gram && it == HIDDEN_GRAM_AFTER {
            // switch if the samples still active, over twice as many iterations again, would
            // save more multiply-adds than the setup costs
            let active = (n_all - rows_flagged) as f64;
            if hidden_gram_pays(decoder, n_all, active * (2 * HIDDEN_GRAM_AFTER) as f64) {
                gram_setup(be, decoder, y, gram.as_mut())?;
                flops += cost.gram_setup;
                smooth.use_gram = true;
                switched_at = Some(it);
            }
        }
        let (rc, f_trial, model) = if let Some(sg) = safeguard.as_mut() {
            let step = sg.iterate(
                &smooth,
                lambda,
                params.nonneg,
                coef,
                tol,
                x,
                z,
                z_old,
                g,
                flags,
                dec,
                mean,
                std,
                it,
            )?;
            backtracks += step.backtracks;
            flops += n_all as f64 * (cost.direct_grad + step.forwards as f64 * cost.forward);
            (step.rc, None, None)
        } else if !backtrack {
            // constant step: gradient of the active rows only, then one fused update pass
            flops += (n_all - rows_flagged) as f64 * cost.grad(smooth.use_gram);
            let eta = 1.0 / lip;
            let step = FistaStep {
                eta: F::c(eta),
                thr: F::c(lambda * eta),
                nonneg: params.nonneg,
                coef,
                tol,
            };
            let rc = match (smooth.gram_without_hinge(), gram.as_mut()) {
                // the linear Gram path without the hinge: gradient (reconstruction and
                // proximity terms) and update in one kernel
                (true, Some(GramBuffers { g: g_mat, c, .. })) => be.gram_fista_step(
                    g_mat,
                    c,
                    smooth.two_over_d(),
                    // zero when gamma is, as energy::proximity skips the term
                    energy::proximity_grad_coef(smooth.gamma, l),
                    smooth.target,
                    step,
                    params.restart.then_some(RowMomentum {
                        coefs: &coefs,
                        age: &mut *age,
                    }),
                    x_nonzeros,
                    x,
                    z,
                    z_old,
                    flags,
                    g,
                    &mut dec.xc,
                    &mut dec.gc,
                )?,
                _ if params.restart => {
                    smooth.grad_active(x, flags, dec, gram.as_mut(), mean, std, g)?;
                    be.fista_update_restart(g, step, &coefs, age, x, z, z_old, flags)?
                }
                _ => {
                    smooth.grad_active(x, flags, dec, gram.as_mut(), mean, std, g)?;
                    be.fista_update(g, step, x, z, z_old, flags)?
                }
            };
            x_nonzeros = rc.active_nonzeros;
            restarts += rc.restarts;
            (rc, None, None)
        } else {
            let fx = smooth.eval(x, dec, gram.as_mut(), mean, std, Some(g), true)?;
            if !fx.is_finite() {
                return Err(Error::Diverged {
                    algorithm: "FISTA",
                    iteration: it,
                    term: "smooth energy at the extrapolated point".into(),
                });
            }
            be.copy(z, z_old)?;
            flops += n_all as f64 * cost.grad(smooth.use_gram);
            let mut attempts = 0usize;
            let (f_trial, model) = loop {
                let eta = 1.0 / lip;
                be.shrink_step(x, g, flags, F::c(eta), F::c(lambda * eta), params.nonneg, z)?;
                flops += n_all as f64 * cost.value(smooth.use_gram);
                let fp = smooth
                    .eval(z, dec, gram.as_mut(), mean, std, None, true)?
                    .f();
                let (mut lin, mut sq) = be.step_model_terms(g, z, x)?;
                if distributed {
                    let mut v = [lin.f(), sq.f()];
                    comm.sum_f64(&mut v)?;
                    (lin, sq) = (F::c(v[0]), F::c(v[1]));
                }
                let q = fx.f() + lin.f() + 0.5 * lip * sq.f();
                if fp.is_finite() && fp <= q + slack_rel * (fx.f().abs() + fp.abs()) {
                    break (Some(fp), Some(q));
                }
                attempts += 1;
                backtracks += 1;
                if attempts > MAX_BACKTRACKS {
                    return Err(Error::Backtracking {
                        iteration: it,
                        attempts,
                        last_l: lip,
                    });
                }
                lip *= factor;
            };
            be.momentum(z, z_old, coef, x)?;
            let rc = be.converged_rows(z_old, z, tol, flags)?;
            (rc, f_trial, model)
        };
        t = t_next;
        let mut rc = rc;
        if distributed {
            // the batch's converged samples, and whether any rank's codes blew up
            let mut v = [rc.converged as f64, f64::from(u8::from(rc.non_finite))];
            comm.sum_f64(&mut v)?;
            rc.converged = v[0] as usize;
            rc.non_finite = v[1] > 0.0;
        }
        if rc.non_finite {
            return Err(Error::Diverged {
                algorithm: "FISTA",
                iteration: it,
                term: "codes".into(),
            });
        }
        steps_sum += n_all - rc.converged;
        rows_flagged = rc.converged;
        iterations = it + 1;
        if params.record_trace {
            trace.push(TraceRecord {
                iteration: it,
                step: safeguard.as_ref().map_or(1.0 / lip, |s| s.min_step()),
                f_trial,
                model,
                active: n_all - rc.converged,
            });
        }
        if rc.converged == n_all {
            converged = true;
            break;
        }
    }

    let safeguard_shrunk = match (&safeguard, params.step) {
        (Some(sg), StepRule::Safeguarded { eta, .. }) => {
            let mut v = [sg.shrunk(eta) as f64];
            if distributed {
                comm.sum_f64(&mut v)?;
            }
            v[0] as usize
        }
        _ => 0,
    };
    if distributed && params.restart {
        let mut v = [restarts as f64];
        comm.sum_f64(&mut v)?;
        restarts = v[0] as usize;
    }
    // The energy at the returned codes, through the exact (direct) reconstruction.
    let mut recon = decoder.recon(be, y, z, dec, None, true)?.f();
    flops += n_all as f64 * cost.forward;
    let mut l1 = lambda * be.sum_abs(z)?.f();
    let hinge = energy::hinge_on(be, z, smooth.beta, smooth.t, mean, std, None, true, comm)?.f();
    let mut prox = energy::proximity(be, z, warm, smooth.gamma, None, true)?.f();
    if distributed {
        let mut v = [recon, l1, prox];
        comm.sum_f64(&mut v)?;
        [recon, l1, prox] = v;
    }
    let energy = EnergyTerms {
        recon,
        l1,
        hinge,
        proximity: prox,
    };
    if let Some(term) = energy.non_finite_term() {
        return Err(Error::Diverged {
            algorithm: "FISTA",
            iteration: iterations,
            term: format!("{term} energy"),
        });
    }
    Ok(FistaReport {
        iterations,
        mean_steps: steps_sum as f64 / n_all as f64,
        converged,
        energy,
        total_energy: energy.total(),
        backtracks,
        step: safeguard.as_ref().map_or(1.0 / lip, |s| s.min_step()),
        safeguard_from,
        flops,
        safeguard_shrunk,
        restarts,
        path: match switched_at {
            Some(it) => format!("direct, then gram from iteration {it}"),
            None if forecast_gram => "gram (forecast)".into(),
            None if use_gram => "gram".into(),
            None => "direct".into(),
        },
        trace: trace.clone(),
    })
}

/// The floating-point operations of the decoder's products per row, for
/// [`FistaReport::flops`]: `2` per multiply-add of a product; the element-wise work (shrinkage,
/// momentum, hinge, proximity) is not counted.
struct Flops {
    /// `D(z)` (the reconstruction's value).
    forward: f64,
    /// The reconstruction's gradient through the input space (its forward pass included).
    direct_grad: f64,
    /// The gradient on the Gram path (`X G` for a linear decoder; the hidden layer's forward
    /// pass, `H G2` and the product with `W1` for the one-hidden-layer decoder).
    gram_grad: f64,
    /// The energy's value on the Gram path (linear: `X G`; one-hidden-layer: `forward`).
    gram_value: f64,
    /// The Gram path's setup for the batch.
    gram_setup: f64,
}

impl Flops {
    fn of<F: Scalar, B: Backend<F>>(decoder: &Decoder<F, B>, n: usize) -> Flops {
        let (d, l, n) = (
            decoder.input_dim() as f64,
            decoder.code_dim() as f64,
            n as f64,
        );
        match decoder.kind() {
            DecoderKind::Linear => Flops {
                forward: 2.0 * d * l,
                direct_grad: 4.0 * d * l,
                gram_grad: 2.0 * l * l,
                gram_value: 2.0 * l * l,
                // W^T W and Y W
                gram_setup: 2.0 * l * l * d + 2.0 * n * d * l,
            },
            DecoderKind::OneHidden { hidden } => {
                let m = hidden as f64;
                Flops {
                    forward: 2.0 * l * m + 2.0 * m * d,
                    direct_grad: 4.0 * m * (l + d),
                    gram_grad: 4.0 * l * m + 2.0 * m * m,
                    gram_value: 2.0 * l * m + 2.0 * m * d,
                    // half of W2^T W2 (mirrored) and Y W2
                    gram_setup: m * m * d + 2.0 * n * d * m,
                }
            }
        }
    }

    fn grad(&self, gram: bool) -> f64 {
        if gram {
            self.gram_grad
        } else {
            self.direct_grad
        }
    }

    fn value(&self, gram: bool) -> f64 {
        if gram { self.gram_value } else { self.forward }
    }
}

/// Whether the one-hidden-layer decoder's Gram path repays its setup for a batch of `n` over
/// `sample_steps` sample-iterations to come: each saves `m (2d - m)` multiply-adds, the setup
/// costs `m d (m + n)` (see [`GradientPath`]). False for a linear decoder.
fn hidden_gram_pays<F: Scalar, B: Backend<F>>(
    decoder: &Decoder<F, B>,
    n: usize,
    sample_steps: f64,
) -> bool {
    let DecoderKind::OneHidden { hidden } = decoder.kind() else {
        return false;
    };
    let (m, d) = (hidden as f64, decoder.input_dim() as f64);
    sample_steps * m * (2.0 * d - m) > m * d * (m + n as f64)
}

/// Fills the Gram path's `(G, C)`: `W^T W` and `Y W` for a linear decoder, `W2^T W2` and
/// `Y W2` for the one-hidden-layer decoder.
fn gram_setup<F: Scalar, B: Backend<F>>(
    be: &B,
    decoder: &Decoder<F, B>,
    y: &B::Mat,
    gram: Option<&mut GramBuffers<F, B>>,
) -> Result<()> {
    let GramBuffers {
        g: g_mat,
        c,
        w: w_packed,
        hidden,
        ..
    } = gram.ok_or_else(|| Error::shape("FISTA: workspace", "workspace lacks Gram buffers"))?;
    match decoder.params() {
        DecoderParams::Linear { w } => {
            // W (d, l) is small: packing it costs more than it saves (bench `gram_setup/l128`)
            be.gemm(F::one(), w, Trans::T, w, Trans::N, F::zero(), g_mat)?;
            be.gemm(F::one(), y, Trans::N, w, Trans::N, F::zero(), c)
        }
        DecoderParams::OneHidden { w2, .. } => {
            // W2 packed once serves both products: G2 = W2^T W2 (half of it, mirrored) and
            // C2 = Y W2 (bench `gram_setup/m1024`)
            be.pack_rhs(w2, Trans::N, w_packed)?;
            be.packed_gram(w_packed, g_mat)?;
            // every iteration multiplies by G2, W1^T and W1: pack them once for the solve
            decoder.pack_hidden_gram(be, g_mat, hidden)?;
            be.gemm_rows_packed(be.shape(y).0, F::one(), y, w_packed, F::zero(), c)
        }
    }
}

/// `lambda_max(W^T W) = ||W||_2^2` by power iteration from a fixed start (deterministic).
///
/// # Errors
/// A backend error.
pub fn top_eigenvalue_wtw<F: Scalar, B: Backend<F>>(be: &B, w: &B::Mat) -> Result<f64> {
    let (d, l) = be.shape(w);
    // A fixed, non-degenerate start: (1, 1.1, 1.2, ...) normalised.
    let start = ndarray::Array2::from_shape_fn((1, l), |(_, j)| F::c(1.0 + 0.1 * (j % 10) as f64));
    let mut v = be.upload(start.view())?;
    let mut wv = be.zeros(1, d)?;
    let mut u = be.zeros(1, l)?;
    let mut est = 0.0f64;
    let norm = be.sum_sq(&v)?.f().sqrt();
    be.scale(F::c(1.0 / norm), &mut v)?;
    for _ in 0..500 {
        be.gemm(F::one(), &v, Trans::N, w, Trans::T, F::zero(), &mut wv)?;
        be.gemm(F::one(), &wv, Trans::N, w, Trans::N, F::zero(), &mut u)?;
        let nu = be.sum_sq(&u)?.f().sqrt();
        if !(nu.is_finite() && nu > 0.0) {
            return Ok(if nu.is_finite() { 0.0 } else { f64::INFINITY });
        }
        be.axpby(F::c(1.0 / nu), &u, F::zero(), &mut v)?;
        let done = (nu - est).abs() <= 1e-7 * nu;
        est = nu;
        if done {
            break;
        }
    }
    Ok(est)
}

/// [`Error::NonFiniteInput`] for the first non-finite element of a backend matrix (the host copy
/// is made only when one exists).
pub(crate) fn check_finite_mat<F: Scalar, B: Backend<F>>(
    be: &B,
    what: &str,
    a: &B::Mat,
) -> Result<()> {
    if be.all_finite(a)? {
        return Ok(());
    }
    crate::scalar::check_finite(what, &be.download(a)?)
}
