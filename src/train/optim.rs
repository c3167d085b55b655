//! Adam with PyTorch semantics, one parameter group at a time, and the step-halving schedule.
//!
//! A group has one learning rate and a weight decay per parameter (classic L2 added to the
//! gradient, not AdamW). The update is [`AdamUpdate`]'s, identical to `torch.optim.Adam`'s
//! single-tensor path (`exp_avg.lerp_`, `exp_avg_sq.mul_().addcmul_()`, bias corrections folded
//! into the step size and the denominator).

use crate::backend::{AdamUpdate, Backend};
use crate::error::{Error, Result};
use crate::scalar::Scalar;

/// Adam's hyper-parameters for one parameter group.
///
/// | parameter | default | valid |
/// |---|---|---|
/// | `lr` | 1e-3 | `> 0` |
/// | `beta1`, `beta2` | 0.9, 0.999 | `[0, 1)` |
/// | `eps` | 1e-8 | `> 0` |
/// | `weight_decay` | all 0 | `>= 0`, one per parameter |
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamParams {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator floor.
    pub eps: f64,
    /// L2 weight decay of each parameter, in the group's parameter order.
    pub weight_decay: Vec<f64>,
}

impl AdamParams {
    /// Defaults with learning rate `lr` and no weight decay for `n_params` parameters.
    pub fn new(lr: f64, n_params: usize) -> Self {
        AdamParams {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: vec![0.0; n_params],
        }
    }

    /// Checks every value's range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first bad value.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::param(
                "learning rate",
                self.lr,
                "must be finite and > 0",
            ));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::param(name, b, "must be in [0, 1)"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::param("eps", self.eps, "must be finite and > 0"));
        }
        if let Some(&w) = self
            .weight_decay
            .iter()
            .find(|w| !(w.is_finite() && **w >= 0.0))
        {
            return Err(Error::param("weight decay", w, "must be finite and >= 0"));
        }
        Ok(())
    }
}

/// Adam's state for one group: first and second moments per parameter and the step count.
pub struct AdamState<M> {
    /// First moments, one per parameter.
    pub m: Vec<M>,
    /// Second moments, one per parameter.
    pub v: Vec<M>,
    /// Steps taken so far.
    pub step: u64,
}

impl<M> AdamState<M> {
    /// Fresh state from zero buffers shaped like the parameters (two sets).
    pub fn new(m: Vec<M>, v: Vec<M>) -> Self {
        AdamState { m, v, step: 0 }
    }
}

/// One Adam step on every parameter of a group, at learning rate `lr` (the scheduled rate).
///
/// # Errors
/// [`Error::Shape`] if the numbers of parameters, gradients, moments and weight decays differ,
/// or a buffer's shape differs from its parameter's.
pub fn adam_step<F: Scalar, B: Backend<F>>(
    be: &B,
    hp: &AdamParams,
    lr: f64,
    params: &mut [B::Mat],
    grads: &[B::Mat],
    state: &mut AdamState<B::Mat>,
) -> Result<()> {
    let k = params.len();
    if grads.len() != k || state.m.len() != k || state.v.len() != k || hp.weight_decay.len() != k {
        return Err(Error::shape(
            "Adam",
            format!(
                "{k} parameters, {} gradients, {} + {} moments, {} weight decays",
                grads.len(),
                state.m.len(),
                state.v.len(),
                hp.weight_decay.len()
            ),
        ));
    }
    state.step += 1;
    for i in 0..k {
        let up = AdamUpdate {
            lr: F::c(lr),
            beta1: F::c(hp.beta1),
            beta2: F::c(hp.beta2),
            eps: F::c(hp.eps),
            weight_decay: F::c(hp.weight_decay[i]),
            step: state.step,
        };
        be.adam_update(
            &mut params[i],
            &grads[i],
            &mut state.m[i],
            &mut state.v[i],
            &up,
        )?;
    }
    Ok(())
}

/// A learning-rate schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "schedule")]
pub enum LrSchedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// The rate halves every `every` epochs (VDL-NL's decoder: every 30).
    StepHalving {
        /// Epochs between halvings, `>= 1`.
        every: usize,
    },
}

impl LrSchedule {
    /// The rate at `epoch` (0-based) for base rate `base`.
    pub fn lr_at(&self, base: f64, epoch: usize) -> f64 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::StepHalving { every } => {
                base * 0.5f64.powi((epoch / every.max(1)).min(i32::MAX as usize) as i32)
            }
        }
    }
}
