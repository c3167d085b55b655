//! What a FISTA run reports: [`FistaReport`] (with an optional per-iteration trace) and, over
//! many batches, [`BatchReport`].

use crate::model::energy::EnergyTerms;

/// One iteration's record (with [`FistaParams::record_trace`](crate::solve::fista::FistaParams::record_trace)).
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
    /// [`StepRule::Safeguarded`](crate::solve::fista::StepRule::Safeguarded) only: the iteration
    /// from which the step was backtracked (`None`: the loop ended on the constant step).
    #[serde(default)]
    pub safeguard_from: Option<usize>,
    /// Floating-point operations of the decoder's products that the run did, counted from the
    /// rows each iteration computed (2 per multiply-add; the element-wise work is not counted),
    /// over the whole batch (all ranks).
    #[serde(default)]
    pub flops: f64,
    /// [`StepRule::Safeguarded`](crate::solve::fista::StepRule::Safeguarded) only: how many of
    /// the batch's samples (all ranks) ended with a step smaller than the one they started with.
    #[serde(default)]
    pub safeguard_shrunk: usize,
    /// [`FistaParams::restart`](crate::solve::fista::FistaParams::restart) only: how many times a
    /// sample's momentum restarted (all samples, all iterations, all ranks).
    #[serde(default)]
    pub restarts: usize,
    /// `"gram"`, `"direct"`, `"direct, then gram from iteration K"`, or `"gram (forecast)"`
    /// when the workspace's forecast chose it from the start (see [`GradientPath::Auto`](crate::solve::fista::GradientPath::Auto)).
    pub path: String,
    /// One record per iteration when requested.
    pub trace: Vec<TraceRecord>,
}

/// One batch's entry in [`solve_batches`](crate::solve::fista::solve_batches)'s report.
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
