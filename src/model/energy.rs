//! The inference energy and its terms (paper eqs. (2), (7), (11); docs/CONVENTIONS.md §1).
//!
//! varsparse uses the scaling of the authors' released code, which is what the paper's Table 3
//! hyper-parameters mean. For a batch `Y` `(n, d)` with codes `Z` `(n, l)`:
//!
//! ```text
//! E(Z) = sum_i (1/d) ||y_i - D(z_i)||^2           reconstruction
//!      + lambda sum_i ||z_i||_1                    sparsity (through the shrinkage)
//!      + beta sum_j relu(T - s_j(Z))^2             variance hinge, s_j = unbiased std of column j
//!      + gamma sum_i (1/l) ||z_i - e_i||^2         proximity to the encoder's codes e_i
//! ```
//!
//! The paper writes `1/2 ||y - D(z)||^2`; multiplying `E` by `d/2` gives the paper's form with
//! `lambda_paper = lambda d/2`, `beta_paper = beta d/2`, `gamma_paper = gamma d/(2l)` and a FISTA
//! step `eta_paper = 2 eta / d`. [`EnergyParams::to_paper`] and [`EnergyParams::from_paper`]
//! convert.
//!
//! The hinge compares the **standard deviation** with `T` (eq. (7)); it is active iff `s_j < T`.
//! Its gradient for latent `j` is `-(2 beta/(n-1)) (T - s_j)/s_j (z_ij - mu_j)` when
//! `0 < s_j < T`, and exactly zero when `s_j = 0` (a constant latent) or `s_j >= T`.

use ndarray::Array2;

use crate::backend::Backend;
use crate::comm::Comm;
use crate::error::{Error, Result};
use crate::scalar::Scalar;

/// The energy's hyper-parameters, in the authors' scaling (see the module docs).
///
/// | parameter | default | valid |
/// |---|---|---|
/// | `lambda` | 0.005 | `>= 0`, finite |
/// | `beta` | 0 | `>= 0`, finite |
/// | `threshold` (`T`) | 0.5 | `> 0` when `beta > 0` |
/// | `gamma` | 0 | `>= 0`, finite |
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnergyParams {
    /// Sparsity weight `lambda` (shrinkage threshold `lambda * eta`).
    pub lambda: f64,
    /// Variance hinge weight `beta`.
    pub beta: f64,
    /// Variance hinge threshold `T` on each latent's standard deviation.
    pub threshold: f64,
    /// Proximity weight `gamma` to the encoder's codes.
    pub gamma: f64,
}

impl Default for EnergyParams {
    fn default() -> Self {
        EnergyParams {
            lambda: 0.005,
            beta: 0.0,
            threshold: 0.5,
            gamma: 0.0,
        }
    }
}

/// The same hyper-parameters in the paper's `1/2 ||.||^2` scaling, with the FISTA step.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PaperParams {
    /// The paper's `lambda`.
    pub lambda: f64,
    /// The paper's `beta`.
    pub beta: f64,
    /// `T` (unchanged).
    pub threshold: f64,
    /// The paper's `gamma`.
    pub gamma: f64,
    /// The paper's FISTA step `eta`.
    pub eta: f64,
}

impl EnergyParams {
    /// Checks every value's range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first bad value.
    pub fn validate(&self) -> Result<()> {
        nonneg("lambda", self.lambda)?;
        nonneg("beta", self.beta)?;
        nonneg("gamma", self.gamma)?;
        if self.beta > 0.0 && !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(Error::param(
                "threshold",
                self.threshold,
                "the variance hinge needs a finite T > 0 when beta > 0",
            ));
        }
        Ok(())
    }

    /// Converts to the paper's scaling for input dimension `d`, code dimension `l` and the
    /// authors' FISTA step `eta`.
    pub fn to_paper(&self, d: usize, l: usize, eta: f64) -> PaperParams {
        let (d, l) = (d as f64, l as f64);
        PaperParams {
            lambda: self.lambda * d / 2.0,
            beta: self.beta * d / 2.0,
            threshold: self.threshold,
            gamma: self.gamma * d / (2.0 * l),
            eta: eta * 2.0 / d,
        }
    }

    /// Converts from the paper's scaling; returns the parameters and the authors'-scaling step.
    pub fn from_paper(p: &PaperParams, d: usize, l: usize) -> (EnergyParams, f64) {
        let (d, l) = (d as f64, l as f64);
        (
            EnergyParams {
                lambda: p.lambda * 2.0 / d,
                beta: p.beta * 2.0 / d,
                threshold: p.threshold,
                gamma: p.gamma * 2.0 * l / d,
            },
            p.eta * d / 2.0,
        )
    }
}

fn nonneg(name: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(Error::param(name, v, "must be finite and >= 0"))
    }
}

/// The energy's terms at some codes (sums over the batch, authors' scaling).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnergyTerms {
    /// `sum_i (1/d) ||y_i - D(z_i)||^2`.
    pub recon: f64,
    /// `lambda sum_i ||z_i||_1`.
    pub l1: f64,
    /// `beta sum_j relu(T - s_j)^2`.
    pub hinge: f64,
    /// `gamma sum_i (1/l) ||z_i - e_i||^2`.
    pub proximity: f64,
}

impl EnergyTerms {
    /// The total energy.
    pub fn total(&self) -> f64 {
        self.recon + self.l1 + self.hinge + self.proximity
    }

    /// The name of the first non-finite term, if any (`"reconstruction"`, ...).
    pub fn non_finite_term(&self) -> Option<&'static str> {
        [
            ("reconstruction", self.recon),
            ("l1", self.l1),
            ("variance hinge", self.hinge),
            ("proximity", self.proximity),
        ]
        .into_iter()
        .find(|(_, v)| !v.is_finite())
        .map(|(n, _)| n)
    }
}

/// The variance hinge `beta sum_j relu(T - s_j)^2` at `x` `(n, l)`, using `mean` and `std`
/// `(1, l)` as scratch; when `grad` is given, its gradient is **added** to it.
/// Zero (and no gradient) when `beta = 0`.
///
/// # Errors
/// [`Error::Shape`] if `n < 2` (an unbiased std needs two samples) or on inconsistent shapes.
#[allow(clippy::too_many_arguments)]
pub fn hinge<F: Scalar, B: Backend<F>>(
    be: &B,
    x: &B::Mat,
    beta: F,
    t: F,
    mean: &mut B::Mat,
    std: &mut B::Mat,
    grad: Option<&mut B::Mat>,
    want_value: bool,
) -> Result<F> {
    if beta == F::zero() {
        return Ok(F::zero());
    }
    be.col_mean_std(x, mean, std)?;
    if let Some(g) = grad {
        be.hinge_grad(x, mean, std, beta, t, be.shape(x).0, g)?;
    }
    if want_value {
        Ok(beta * be.hinge_value(std, t)?)
    } else {
        Ok(F::zero())
    }
}

/// [`hinge`] over a batch whose rows are split between the ranks of `comm` (`x` holds this
/// rank's rows): the column statistics are those of the whole batch, from two reductions
/// (column sums, the row count and the columns' extremes, `3 l + 1` numbers; then the sums of
/// squared deviations from the batch mean, `l` numbers: for `f32`, the same two passes in `f64`
/// as [`Backend::col_mean_std`] on the CPU, so the statistics are one process's). The value (the same on
/// every rank) and the gradient of this rank's rows are [`hinge`]'s for the whole batch. On one
/// process this is [`hinge`].
///
/// # Errors
/// As [`hinge`], with `n` the whole batch's rows; a communication error.
#[allow(clippy::too_many_arguments)]
pub fn hinge_on<F: Scalar, B: Backend<F>>(
    be: &B,
    x: &B::Mat,
    beta: F,
    t: F,
    mean: &mut B::Mat,
    std: &mut B::Mat,
    grad: Option<&mut B::Mat>,
    want_value: bool,
    comm: &dyn Comm,
) -> Result<F> {
    if comm.size() == 1 {
        return hinge(be, x, beta, t, mean, std, grad, want_value);
    }
    if beta == F::zero() {
        return Ok(F::zero());
    }
    let xh = be.download(x)?;
    let (rows, l) = xh.dim();
    // this rank's column sums, row count, column minima and maxima
    let w = 3 * l + 1;
    let mut local = vec![0.0f64; w];
    local[l + 1..2 * l + 1].fill(f64::INFINITY);
    local[2 * l + 1..].fill(f64::NEG_INFINITY);
    for row in xh.rows() {
        for (j, &v) in row.iter().enumerate() {
            let v = v.f();
            local[j] += v;
            local[l + 1 + j] = local[l + 1 + j].min(v);
            local[2 * l + 1 + j] = local[2 * l + 1 + j].max(v);
        }
    }
    local[l] = rows as f64;
    let mut all = vec![0.0f64; comm.size() * w];
    comm.all_gather_f64(&local, &mut all)?;
    // sums in rank order (as Comm::sum_f64), extremes over the ranks
    let mut sums = all[..l + 1].to_vec();
    let (mut lo, mut hi) = (all[l + 1..2 * l + 1].to_vec(), all[2 * l + 1..w].to_vec());
    for part in all.chunks_exact(w).skip(1) {
        for (s, v) in sums.iter_mut().zip(&part[..l + 1]) {
            *s += v;
        }
        for j in 0..l {
            lo[j] = lo[j].min(part[l + 1 + j]);
            hi[j] = hi[j].max(part[2 * l + 1 + j]);
        }
    }
    let n = sums[l] as usize;
    if n < 2 {
        return Err(Error::shape(
            "variance hinge",
            format!("an unbiased std needs at least 2 samples in the batch, got {n}"),
        ));
    }
    // A constant column's mean is its value, so that its std is exactly 0 (its hinge gradient
    // must vanish); for `f32` the sum is exact there anyway, as in `Backend::col_mean_std`.
    let mu: Vec<f64> = (0..l)
        .map(|j| {
            if lo[j] == hi[j] {
                lo[j]
            } else {
                sums[j] / n as f64
            }
        })
        .collect();
    let mut ss = vec![0.0f64; l];
    for row in xh.rows() {
        for ((s, &v), m) in ss.iter_mut().zip(row.iter()).zip(&mu) {
            let dv = v.f() - m;
            *s += dv * dv;
        }
    }
    comm.sum_f64(&mut ss)?;
    let mean_h = Array2::from_shape_fn((1, l), |(_, j)| F::c(mu[j]));
    let std_h = Array2::from_shape_fn((1, l), |(_, j)| F::c((ss[j] / (n - 1) as f64).sqrt()));
    *mean = be.upload(mean_h.view())?;
    *std = be.upload(std_h.view())?;
    if let Some(g) = grad
        && rows > 0
    {
        be.hinge_grad(x, mean, std, beta, t, n, g)?;
    }
    if want_value {
        Ok(beta * be.hinge_value(std, t)?)
    } else {
        Ok(F::zero())
    }
}

/// `2 gamma / l`, the coefficient of the proximity term's gradient `(2 gamma / l)(x - e)` for
/// codes of `l` columns (see [`proximity`]).
pub(crate) fn proximity_grad_coef<F: Scalar>(gamma: F, l: usize) -> F {
    F::c(2.0) * gamma / F::c(l.max(1) as f64)
}

/// The proximity term `gamma sum_i (1/l) ||x_i - e_i||^2` (`e = 0` when `target` is `None`);
/// when `grad` is given, `(2 gamma / l)(x - e)` is **added** to it. Zero when `gamma = 0`.
///
/// # Errors
/// [`Error::Shape`] on inconsistent shapes.
pub fn proximity<F: Scalar, B: Backend<F>>(
    be: &B,
    x: &B::Mat,
    target: Option<&B::Mat>,
    gamma: F,
    grad: Option<&mut B::Mat>,
    want_value: bool,
) -> Result<F> {
    if gamma == F::zero() {
        return Ok(F::zero());
    }
    let l = F::c(be.shape(x).1.max(1) as f64);
    let c = proximity_grad_coef(gamma, be.shape(x).1);
    if let Some(g) = grad {
        match target {
            Some(e) => be.add_scaled_diff(c, x, e, g)?,
            None => be.axpby(c, x, F::one(), g)?,
        }
    }
    if !want_value {
        return Ok(F::zero());
    }
    let ss = match target {
        Some(e) => be.sum_sq_diff(x, e)?,
        None => be.sum_sq(x)?,
    };
    Ok(gamma * ss / l)
}
