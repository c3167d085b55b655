//! FISTA over a batch of codes (Beck & Teboulle 2009), with the released code's semantics.
//!
//! Minimises `E(Z) = f(Z) + lambda ||Z||_1` (plus `Z >= 0` by default) where `f` is the smooth
//! part of the energy (reconstruction, variance hinge, proximity; see [`crate::model::energy`]). Each
//! iteration, with `x` the extrapolated point and `a_i = 0` for samples flagged converged at the
//! previous iteration, `1` otherwise (REFERENCE §2):
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
//! * [`StepRule::Auto`]: for a linear decoder, `eta = 1/L` with
//!   `L = (2/d) ||W||_2^2 + 2 gamma / l` (power iteration on `W^T W`, inflated by 2% because
//!   power iteration approaches the top eigenvalue from below). The variance hinge is not globally
//!   Lipschitz (its curvature grows like `1/s_j`), so `beta` is not included; prefer
//!   backtracking when `beta > 0`. For a one-hidden-layer decoder, `Auto` means backtracking
//!   from `L = 1`.
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

use crate::backend::{Backend, FistaStep, Trans};
use crate::error::{Error, Result};
use crate::model::decoder::{Decoder, DecoderKind, DecoderScratch, HiddenGram};
use crate::model::energy::{self, EnergyParams, EnergyTerms};
use crate::scalar::Scalar;

/// How FISTA chooses its step.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum StepRule {
    /// A constant step `eta` (the released code's rule).
    Constant {
        /// The step, `> 0`.
        eta: f64,
    },
    /// Backtracking on a batch-wide Lipschitz estimate `L` (step `1/L`).
    Backtracking {
        /// The first step tried, `1/L_0` (`None`: `L_0 = 1`).
        initial_step: Option<f64>,
        /// The factor by which `L` grows, `> 1`.
        factor: f64,
    },
    /// `1/L` from a Lipschitz bound (linear decoder), backtracking otherwise.
    Auto,
}

/// How the reconstruction gradient is computed.
///
/// The Gram paths trade a setup per [`solve`] for cheaper iterations. For a linear decoder,
/// `G = W^T W` `(l, l)` and `C = Y W`. For the one-hidden-layer decoder `W2 relu(W1 z + b1)`
/// they act at the hidden layer: `G2 = W2^T W2` `(m, m)` and `C2 = Y W2`, so that the gradient
/// at the hidden layer `(2/d)(H W2^T - Y) W2` becomes `(2/d)(H G2 - C2)`, one `(n, m) x (m, m)`
/// product instead of two `(n, m) x (m, d)` ones. That pays when `m < 2d` and enough iterations
/// follow: the setup costs `m d (m + n)` multiply-adds and each iteration saves `k m (2d - m)`
/// for `k` active samples (MNIST, `m` 1024: about 7 iterations of the whole batch).
/// The one-hidden-layer Gram path needs a constant step (the backtracking test evaluates the
/// energy, which goes through the direct reconstruction).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradientPath {
    /// Gram for a linear decoder. For the one-hidden-layer decoder with a constant step, direct
    /// for the first [`HIDDEN_GRAM_AFTER`] iterations, then the hidden-layer Gram path if the
    /// samples still active, running twice as many iterations again, would save more than its
    /// setup costs (see [`GradientPath`]); otherwise direct throughout. When the workspace
    /// holds a forecast of the solve's length ([`FistaWorkspace::set_forecast`]) that says the
    /// Gram path pays, it runs from the first iteration.
    #[default]
    Auto,
    /// Through the input space: `(2/d)(D(X) - Y)` back through the decoder.
    Direct,
    /// Through the code space (linear decoder) or the hidden layer (one-hidden-layer decoder,
    /// constant step only), from the first iteration.
    Gram,
}

/// Iterations [`GradientPath::Auto`] runs the direct path on a one-hidden-layer decoder before
/// it considers the hidden-layer Gram path; twice this is the horizon over which that path must
/// pay for its setup.
pub const HIDDEN_GRAM_AFTER: usize = 4;

/// FISTA's parameters.
///
/// | parameter | default | valid |
/// |---|---|---|
/// | `energy` | [`EnergyParams::default`] | see there |
/// | `step` | `Auto` | `eta > 0`; `factor > 1`; `initial_step > 0` |
/// | `max_iter` | 200 | `>= 1` |
/// | `tol` | 1e-3 | `>= 0` (0: never flag, run `max_iter` iterations) |
/// | `nonneg` | `true` | |
/// | `path` | `Auto` | `Gram` on the one-hidden-layer decoder needs a constant step |
/// | `record_trace` | `false` | |
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FistaParams {
    /// The energy's hyper-parameters.
    pub energy: EnergyParams,
    /// The step rule.
    pub step: StepRule,
    /// Maximum number of iterations.
    pub max_iter: usize,
    /// Relative tolerance of the per-sample convergence test.
    pub tol: f64,
    /// Non-negative codes (`max(u - thr, 0)`) or signed (soft thresholding).
    pub nonneg: bool,
    /// The gradient path for a linear decoder.
    pub path: GradientPath,
    /// Record one [`TraceRecord`] per iteration in the report.
    pub record_trace: bool,
}

impl Default for FistaParams {
    fn default() -> Self {
        FistaParams {
            energy: EnergyParams::default(),
            step: StepRule::Auto,
            max_iter: 200,
            tol: 1e-3,
            nonneg: true,
            path: GradientPath::Auto,
            record_trace: false,
        }
    }
}

impl FistaParams {
    /// Checks every value's range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first bad value.
    pub fn validate(&self) -> Result<()> {
        self.energy.validate()?;
        if self.max_iter == 0 {
            return Err(Error::param("max_iter", 0, "must be at least 1"));
        }
        if !(self.tol.is_finite() && self.tol >= 0.0) {
            return Err(Error::param("tol", self.tol, "must be finite and >= 0"));
        }
        match self.step {
            StepRule::Constant { eta } => positive("step", eta)?,
            StepRule::Backtracking {
                initial_step,
                factor,
            } => {
                if let Some(s) = initial_step {
                    positive("initial step", s)?;
                }
                if !(factor.is_finite() && factor > 1.0) {
                    return Err(Error::param(
                        "backtracking factor",
                        factor,
                        "must be finite and > 1",
                    ));
                }
            }
            StepRule::Auto => {}
        }
        Ok(())
    }
}

fn positive(name: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::param(name, v, "must be finite and > 0"))
    }
}

/// One iteration's record (with [`FistaParams::record_trace`]).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TraceRecord {
    /// The iteration (0-based).
    pub iteration: usize,
    /// The accepted step `1/L`.
    pub step: f64,
    /// Backtracking only: the smooth part `f` at the accepted trial codes.
    pub f_trial: Option<f64>,
    /// Backtracking only: the quadratic model `Q_L(p, x)` at the accepted trial codes.
    pub model: Option<f64>,
    /// Samples not flagged converged after this iteration.
    pub active: usize,
}

/// What a FISTA run did.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FistaReport {
    /// Loop iterations run.
    pub iterations: usize,
    /// Mean over samples of the iterations in which the sample was not converged (the authors'
    /// "inference steps").
    pub mean_steps: f64,
    /// Whether every sample was flagged converged at the last iteration.
    pub converged: bool,
    /// The energy's terms at the returned codes.
    pub energy: EnergyTerms,
    /// The total energy at the returned codes.
    pub total_energy: f64,
    /// How many times backtracking increased `L`.
    pub backtracks: usize,
    /// The last step used, `1/L`.
    pub step: f64,
    /// `"gram"`, `"direct"`, `"direct, then gram from iteration K"`, or `"gram (forecast)"`
    /// when the workspace's forecast chose it from the start (see [`GradientPath::Auto`]).
    pub path: String,
    /// One record per iteration when requested.
    pub trace: Vec<TraceRecord>,
}

/// Reusable buffers for batches of `n` samples of one decoder's shape. Allocate once, reuse for
/// every batch of that size; [`solve`] allocates no matrices inside its iteration loop (the CPU
/// kernels take a few vectors of at most `n` or `l` entries per call).
pub struct FistaWorkspace<F: Scalar, B: Backend<F>> {
    n: usize,
    l: usize,
    z: B::Mat,
    z_old: B::Mat,
    x: B::Mat,
    g: B::Mat,
    flags: B::Mat,
    mean: B::Mat,
    std: B::Mat,
    dec: DecoderScratch<B::Mat>,
    /// The Gram path's buffers.
    gram: Option<GramBuffers<F, B>>,
    trace: Vec<TraceRecord>,
    /// The caller's forecast of the next solve's mean steps per sample.
    forecast: Option<f64>,
}

impl<F: Scalar, B: Backend<F>> FistaWorkspace<F, B> {
    /// Buffers for `n` samples and `decoder`'s dimensions.
    ///
    /// # Errors
    /// [`Error::Shape`] if `n = 0`; a backend allocation error.
    pub fn new(be: &B, decoder: &Decoder<F, B>, n: usize) -> Result<Self> {
        if n == 0 {
            return Err(Error::shape(
                "FISTA workspace",
                "batch size must be at least 1",
            ));
        }
        let l = decoder.code_dim();
        let w = match decoder.kind() {
            DecoderKind::Linear => l,
            DecoderKind::OneHidden { hidden } => hidden,
        };
        let gram = Some(GramBuffers {
            g: be.zeros(w, w)?,
            c: be.zeros(n, w)?,
            q: be.zeros(n, w)?,
            w: B::Packed::default(),
            hidden: HiddenGram::default(),
        });
        Ok(FistaWorkspace {
            n,
            l,
            z: be.zeros(n, l)?,
            z_old: be.zeros(n, l)?,
            x: be.zeros(n, l)?,
            g: be.zeros(n, l)?,
            flags: be.zeros(n, 1)?,
            mean: be.zeros(1, l)?,
            std: be.zeros(1, l)?,
            dec: decoder.scratch(be, n)?,
            gram,
            trace: Vec::new(),
            forecast: None,
        })
    }

    /// Sets (or, with `None`, clears) a forecast of the mean steps per sample
    /// ([`FistaReport::mean_steps`]) of the solves that follow, typically the previous batch's
    /// in a sequence of similar batches (training, [`solve_batches`]). The workspace never sets
    /// it itself.
    ///
    /// Only [`GradientPath::Auto`] on a one-hidden-layer decoder with a constant step reads it:
    /// if the forecast samples, each run through the hidden-layer Gram path, would save more
    /// multiply-adds than its setup costs, that path runs from the first iteration instead of
    /// after [`HIDDEN_GRAM_AFTER`] direct ones. Both paths compute the same gradient, so the
    /// forecast changes the codes by rounding only.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a negative or non-finite forecast.
    pub fn set_forecast(&mut self, mean_steps: Option<f64>) -> Result<()> {
        if let Some(s) = mean_steps
            && !(s.is_finite() && s >= 0.0)
        {
            return Err(Error::param(
                "forecast mean steps",
                s,
                "must be finite and >= 0",
            ));
        }
        self.forecast = mean_steps;
        Ok(())
    }

    /// The forecast set by [`FistaWorkspace::set_forecast`].
    pub fn forecast(&self) -> Option<f64> {
        self.forecast
    }

    /// The batch size this workspace serves.
    pub fn batch_size(&self) -> usize {
        self.n
    }

    /// The codes of the last [`solve`].
    pub fn codes(&self) -> &B::Mat {
        &self.z
    }
}

/// Everything the smooth part needs, borrowed from the caller and the workspace.
struct Smooth<'a, F: Scalar, B: Backend<F>> {
    be: &'a B,
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
        let hinge = energy::hinge(be, point, self.beta, self.t, mean, std, grad, want_value)?;
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
        energy::hinge(be, point, self.beta, self.t, mean, std, Some(grad), false)?;
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
    params.validate()?;
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
    let ep = &params.energy;
    if ep.beta > 0.0 && n < 2 {
        return Err(Error::param(
            "batch size",
            n,
            "the variance hinge (beta > 0) needs at least 2 samples per batch",
        ));
    }
    check_finite_mat(be, "Y", y)?;
    if let Some(e) = warm {
        check_finite_mat(be, "warm start", e)?;
    }
    let constant_step = matches!(params.step, StepRule::Constant { .. });
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
            .is_some_and(|s| hidden_gram_pays(decoder, n, s * n as f64));
    let use_gram = match params.path {
        GradientPath::Direct => false,
        GradientPath::Gram => true,
        GradientPath::Auto => linear || forecast_gram,
    };

    let mut yy = F::zero();
    if use_gram {
        gram_setup(be, decoder, y, ws.gram.as_mut())?;
        if linear {
            yy = be.sum_sq(y)?;
        }
    }

    // The step rule, resolved to an initial L and whether to backtrack.
    let (mut lip, backtrack, factor) = match params.step {
        StepRule::Constant { eta } => (1.0 / eta, false, 1.0),
        StepRule::Backtracking {
            initial_step,
            factor,
        } => (1.0 / initial_step.unwrap_or(1.0), true, factor),
        StepRule::Auto => match decoder.kind() {
            DecoderKind::Linear => {
                let sigma2 = top_eigenvalue_wtw(be, &decoder.params()[0])?;
                let lip = 1.02 * (2.0 / d as f64) * sigma2 + 2.0 * ep.gamma / l as f64;
                (lip.max(f64::MIN_POSITIVE), false, 1.0)
            }
            DecoderKind::OneHidden { .. } => (1.0, true, 2.0),
        },
    };

    let mut smooth = Smooth {
        be,
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

    let mut t = 1.0f64;
    let mut steps_sum = 0usize;
    let mut iterations = 0usize;
    let mut converged = false;
    let mut backtracks = 0usize;
    let mut rows_flagged = 0usize;
    let mut switched_at = None;
    // the non-zeros of x's unflagged rows, when the last step counted them
    let mut x_nonzeros = None;
    let tol = F::c(params.tol);
    // Rounding slack for the sufficient-decrease test: the energies are sums of O(n l) terms.
    let slack_rel = 64.0 * F::EPS;

    for it in 0..params.max_iter {
        let t_next = 0.5 * (1.0 + (1.0 + 4.0 * t * t).sqrt());
        let coef = F::c((t - 1.0) / t_next);
        if may_switch && !smooth.use_gram && it == HIDDEN_GRAM_AFTER {
            // switch if the samples still active, over twice as many iterations again, would
            // save more multiply-adds than the setup costs
            let active = (n - rows_flagged) as f64;
            if hidden_gram_pays(decoder, n, active * (2 * HIDDEN_GRAM_AFTER) as f64) {
                gram_setup(be, decoder, y, gram.as_mut())?;
                smooth.use_gram = true;
                switched_at = Some(it);
            }
        }
        let (rc, f_trial, model) = if !backtrack {
            // constant step: gradient of the active rows only, then one fused update pass
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
                    x_nonzeros,
                    x,
                    z,
                    z_old,
                    flags,
                    g,
                    &mut dec.xc,
                    &mut dec.gc,
                )?,
                _ => {
                    smooth.grad_active(x, flags, dec, gram.as_mut(), mean, std, g)?;
                    be.fista_update(g, step, x, z, z_old, flags)?
                }
            };
            x_nonzeros = rc.active_nonzeros;
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
            let mut attempts = 0usize;
            let (f_trial, model) = loop {
                let eta = 1.0 / lip;
                be.shrink_step(x, g, flags, F::c(eta), F::c(lambda * eta), params.nonneg, z)?;
                let fp = smooth
                    .eval(z, dec, gram.as_mut(), mean, std, None, true)?
                    .f();
                let (lin, sq) = be.step_model_terms(g, z, x)?;
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
        if rc.non_finite {
            return Err(Error::Diverged {
                algorithm: "FISTA",
                iteration: it,
                term: "codes".into(),
            });
        }
        steps_sum += n - rc.converged;
        rows_flagged = rc.converged;
        iterations = it + 1;
        if params.record_trace {
            trace.push(TraceRecord {
                iteration: it,
                step: 1.0 / lip,
                f_trial,
                model,
                active: n - rc.converged,
            });
        }
        if rc.converged == n {
            converged = true;
            break;
        }
    }

    // The energy at the returned codes, through the exact (direct) reconstruction.
    let recon = decoder.recon(be, y, z, dec, None, true)?.f();
    let l1 = lambda * be.sum_abs(z)?.f();
    let hinge = energy::hinge(be, z, smooth.beta, smooth.t, mean, std, None, true)?.f();
    let prox = energy::proximity(be, z, warm, smooth.gamma, None, true)?.f();
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
        mean_steps: steps_sum as f64 / n as f64,
        converged,
        energy,
        total_energy: energy.total(),
        backtracks,
        step: 1.0 / lip,
        path: match switched_at {
            Some(it) => format!("direct, then gram from iteration {it}"),
            None if forecast_gram => "gram (forecast)".into(),
            None if use_gram => "gram".into(),
            None => "direct".into(),
        },
        trace: trace.clone(),
    })
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
    match decoder.kind() {
        DecoderKind::Linear => {
            // W (d, l) is small: packing it costs more than it saves (bench `gram_setup/l128`)
            let w = &decoder.params()[0];
            be.gemm(F::one(), w, Trans::T, w, Trans::N, F::zero(), g_mat)?;
            be.gemm(F::one(), y, Trans::N, w, Trans::N, F::zero(), c)
        }
        DecoderKind::OneHidden { .. } => {
            // W2 packed once serves both products: G2 = W2^T W2 (half of it, mirrored) and
            // C2 = Y W2 (bench `gram_setup/m1024`)
            let w2 = &decoder.params()[2];
            be.pack_rhs(w2, Trans::N, w_packed)?;
            be.packed_gram(w_packed, g_mat)?;
            // every iteration multiplies by G2, W1^T and W1: pack them once for the solve
            decoder.pack_hidden_gram(be, g_mat, hidden)?;
            be.gemm_rows_packed(be.shape(y).0, F::one(), y, w_packed, F::zero(), c)
        }
    }
}

/// The Gram path's buffers: `(G, C, Q)` of `(l, l)`, `(n, l)`, `(n, l)` for a linear decoder,
/// `(G2, C2, Q)` of `(m, m)`, `(n, m)`, `(n, m)` for the one-hidden-layer decoder, which also
/// packs `W2` for the setup's two products and `G2` and `W1` for the solve's iterations
/// ([`HiddenGram`]; the linear decoder's products take the sparse path instead, and its `G` is
/// small).
struct GramBuffers<F: Scalar, B: Backend<F>> {
    g: B::Mat,
    c: B::Mat,
    q: B::Mat,
    w: B::Packed,
    hidden: HiddenGram<B::Packed>,
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

/// One batch's entry in [`solve_batches`]'s report.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchReport {
    /// The first row of the batch.
    pub start: usize,
    /// One past the last row.
    pub end: usize,
    /// The batch's FISTA report.
    #[serde(flatten)]
    pub report: FistaReport,
}

/// FISTA over the rows of `y` `(N, d)` in consecutive batches of `batch_size` (the last may be
/// smaller; the variance hinge is computed per batch), warm-started from the matching rows of
/// `warm`. Returns the codes `(N, l)` and one report per batch. Each batch's
/// [`FistaReport::mean_steps`] is the next one's forecast ([`FistaWorkspace::set_forecast`]).
///
/// # Errors
/// As [`solve`]; also [`Error::InvalidParameter`] for `batch_size = 0`, [`Error::Shape`] if
/// `warm` does not have `N` rows, and [`Error::NonFiniteInput`] naming the row and column of the
/// first NaN or infinity in `y` or `warm`.
pub fn solve_batches<F: Scalar, B: Backend<F>>(
    be: &B,
    decoder: &Decoder<F, B>,
    y: &ndarray::Array2<F>,
    warm: Option<&ndarray::Array2<F>>,
    params: &FistaParams,
    batch_size: usize,
) -> Result<(ndarray::Array2<F>, Vec<BatchReport>)> {
    params.validate()?;
    if batch_size == 0 {
        return Err(Error::param("batch size", 0, "must be at least 1"));
    }
    let (n, d) = y.dim();
    let l = decoder.code_dim();
    if d != decoder.input_dim() {
        return Err(Error::shape(
            "input Y",
            format!(
                "Y is {:?} but the decoder's atoms have {} entries (d)",
                y.dim(),
                decoder.input_dim()
            ),
        ));
    }
    if let Some(e) = warm
        && e.dim() != (n, l)
    {
        return Err(Error::shape(
            "warm start",
            format!("is {:?}, expected ({n}, {l})", e.dim()),
        ));
    }
    crate::scalar::check_finite("Y", y)?;
    if let Some(e) = warm {
        crate::scalar::check_finite("warm start", e)?;
    }
    let mut codes = ndarray::Array2::<F>::zeros((n, l));
    let mut reports = Vec::with_capacity(n.div_ceil(batch_size));
    let mut ws: Option<FistaWorkspace<F, B>> = None;
    let mut forecast = None;
    let mut start = 0;
    while start < n {
        let end = (start + batch_size).min(n);
        let rows = end - start;
        if ws.as_ref().map(|w| w.batch_size()) != Some(rows) {
            ws = Some(FistaWorkspace::new(be, decoder, rows)?);
        }
        let ws = ws
            .as_mut()
            .ok_or_else(|| Error::shape("FISTA", "no workspace"))?;
        let yb = be.upload(y.slice(ndarray::s![start..end, ..]))?;
        let eb = match warm {
            Some(e) => Some(be.upload(e.slice(ndarray::s![start..end, ..]))?),
            None => None,
        };
        // each batch forecasts the next one's length (the Gram path's choice, see
        // FistaWorkspace::set_forecast)
        ws.set_forecast(forecast)?;
        let report = solve(be, decoder, &yb, eb.as_ref(), params, ws).map_err(|e| match e {
            Error::InvalidParameter {
                name: "batch size",
                value,
                reason,
            } => Error::InvalidParameter {
                name: "batch size",
                value,
                reason: format!("{reason} (rows {start}..{end} form a batch of {rows})"),
            },
            other => other,
        })?;
        codes
            .slice_mut(ndarray::s![start..end, ..])
            .assign(&be.download(ws.codes())?);
        forecast = Some(report.mean_steps);
        reports.push(BatchReport { start, end, report });
        start = end;
    }
    Ok((codes, reports))
}
