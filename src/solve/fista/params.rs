//! FISTA's parameters: the step rule, the gradient path, and [`FistaParams`] with its checks.

use crate::error::{Error, Result};
use crate::model::energy::EnergyParams;

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
    /// The constant step `eta` for the first `after` iterations; then, if the loop is still
    /// running, one step per sample, starting at `eta` and divided by `factor` until the
    /// sample's step satisfies FISTA's sufficient-decrease condition (the hinge enters the test
    /// linearised; see the safeguard's notes in the module's source, `safeguard.rs`). It is the
    /// released code's rule, to the bit, wherever a batch's loop ends within `after`
    /// iterations. The constant step is not valid for a one-hidden-layer decoder, whose
    /// reconstruction is not smooth at the hidden units' kinks: a sample whose minimiser sits on
    /// a kink can settle into a 2-cycle across it that never meets the tolerance and holds the
    /// whole batch's loop to `max_iter` (docs/RESULTS.md, "VDL-NL's late stall"). The test is
    /// per sample because that sample's violation is far below the float32 rounding of the
    /// batch's energy, which is all a batch-wide test ([`Backtracking`](StepRule::Backtracking))
    /// can compare. `after = 0`: per-sample steps from the first iteration.
    Safeguarded {
        /// The constant step, `> 0`, and backtracking's first step.
        eta: f64,
        /// Iterations run with the constant step before backtracking takes over.
        after: usize,
        /// The factor by which a sample's step shrinks when it fails the test, `> 1`.
        factor: f64,
    },
}

/// [`StepRule::Safeguarded`]'s `after` in the presets that use it (the MNIST VDL-NL preset):
/// its batches' loops end within 3 or 4 iterations until they stall (docs/RESULTS.md).
pub const SAFEGUARD_AFTER: usize = 10;

/// How the reconstruction gradient is computed.
///
/// The Gram paths trade a setup per [`solve`](crate::solve::fista::solve) for cheaper iterations. For a linear decoder,
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
    /// for the first [`HIDDEN_GRAM_AFTER`](crate::solve::fista::HIDDEN_GRAM_AFTER) iterations, then the hidden-layer Gram path if the
    /// samples still active, running twice as many iterations again, would save more than its
    /// setup costs (see [`GradientPath`]); otherwise direct throughout. When the workspace
    /// holds a forecast of the solve's length ([`FistaWorkspace::set_forecast`](crate::solve::fista::FistaWorkspace::set_forecast)) that says the
    /// Gram path pays, it runs from the first iteration.
    #[default]
    Auto,
    /// Through the input space: `(2/d)(D(X) - Y)` back through the decoder.
    Direct,
    /// Through the code space (linear decoder) or the hidden layer (one-hidden-layer decoder,
    /// constant step only), from the first iteration.
    Gram,
}

/// Iterations [`GradientPath::Auto`](crate::solve::fista::GradientPath::Auto) runs the direct path on a one-hidden-layer decoder before
/// it considers the hidden-layer Gram path; twice this is the horizon over which that path must
/// pay for its setup.
pub const HIDDEN_GRAM_AFTER: usize = 4;

/// FISTA's parameters.
///
/// | parameter | default | valid |
/// |---|---|---|
/// | `energy` | [`EnergyParams::default`] | see there |
/// | `step` | `Auto` | `eta > 0`; `factor > 1`; `initial_step > 0`; any `after` |
/// | `max_iter` | 200 | `>= 1` |
/// | `tol` | 1e-3 | `>= 0` (0: never flag, run `max_iter` iterations) |
/// | `nonneg` | `true` | |
/// | `path` | `Auto` | `Gram` on the one-hidden-layer decoder needs a constant step |
/// | `record_trace` | `false` | |
/// | `restart` | `false` | with a constant step (or `Auto` on a linear decoder) |
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
    /// Record one [`TraceRecord`](crate::solve::fista::TraceRecord) per iteration in the report.
    pub record_trace: bool,
    /// Adaptive restart of the momentum, per sample (O'Donoghue & Candès 2015, the gradient
    /// scheme): a sample whose new step points against its momentum,
    /// `<x_i - z_new_i, z_new_i - z_old_i> > 0`, drops its momentum (`x_i = z_new_i`) and
    /// starts its momentum weight `t` again from 1; each sample carries its own `t`
    /// ([`Backend::fista_update_restart`](crate::backend::Backend::fista_update_restart)). It
    /// acts on the constant-step iterations (a safeguarded run's first `after`, and `Auto`'s
    /// `1/L` on a linear decoder); with a backtracking rule it is an error. Off by default:
    /// the released code's momentum. It is a deviation from the authors' code: the loops stop
    /// on the same tolerance, at other codes (docs/RESULTS.md, "Adaptive restart"). Absent in
    /// serialised parameters written before it existed: off.
    #[serde(default)]
    pub restart: bool,
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
            restart: false,
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
                backtracking_factor(factor)?;
            }
            StepRule::Safeguarded { eta, factor, .. } => {
                positive("step", eta)?;
                backtracking_factor(factor)?;
            }
            StepRule::Auto => {}
        }
        Ok(())
    }
}

fn backtracking_factor(factor: f64) -> Result<()> {
    if factor.is_finite() && factor > 1.0 {
        Ok(())
    } else {
        Err(Error::param(
            "backtracking factor",
            factor,
            "must be finite and > 1",
        ))
    }
}

pub(crate) fn positive(name: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::param(name, v, "must be finite and > 0"))
    }
}
