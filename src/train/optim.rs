//! Adam with PyTorch semantics, one parameter group at a time, and the step-halving schedule.
//!
//! A group has one learning rate and a weight decay per parameter, by name (classic L2 added to
//! the gradient, not AdamW). The update is [`AdamUpdate`]'s, identical to `torch.optim.Adam`'s
//! single-tensor path (`exp_avg.lerp_`, `exp_avg_sq.mul_().addcmul_()`, bias corrections folded
//! into the step size and the denominator).

use std::collections::BTreeMap;

use crate::backend::{AdamUpdate, Backend};
use crate::error::{Error, Result};
use crate::model::params::ParamSet;
use crate::scalar::Scalar;

/// Adam's hyper-parameters for one parameter group.
///
/// | parameter | default | valid |
/// |---|---|---|
/// | `lr` | 1e-3 | `> 0` |
/// | `beta1`, `beta2` | 0.9, 0.999 | `[0, 1)` |
/// | `eps` | 1e-8 | `> 0` |
/// | `weight_decay` | none | `>= 0`, by parameter name (e.g. `b1`); a name the group lacks is an error at the first step |
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
    /// L2 weight decay by parameter name ([`ParamSet::named`]); a parameter not listed has none.
    pub weight_decay: BTreeMap<String, f64>,
}

impl AdamParams {
    /// Defaults with learning rate `lr` and no weight decay.
    pub fn new(lr: f64) -> Self {
        AdamParams {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: BTreeMap::new(),
        }
    }

    /// Sets the weight decay of the parameter `name` (a zero removes it).
    pub fn with_weight_decay(mut self, name: &str, wd: f64) -> Self {
        if wd == 0.0 {
            self.weight_decay.remove(name);
        } else {
            self.weight_decay.insert(name.to_string(), wd);
        }
        self
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
            .values()
            .find(|w| !(w.is_finite() && **w >= 0.0))
        {
            return Err(Error::param("weight decay", w, "must be finite and >= 0"));
        }
        Ok(())
    }

    /// Checks that every weight decay names a parameter of `params`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the unknown parameter and the group's names.
    pub fn check_names<T>(&self, params: &impl ParamSet<T>) -> Result<()> {
        let names: Vec<&str> = params.named().iter().map(|p| p.0).collect();
        match self
            .weight_decay
            .keys()
            .find(|k| !names.contains(&k.as_str()))
        {
            None => Ok(()),
            Some(k) => Err(Error::param(
                "weight decay",
                k,
                format!("names no parameter of the group ({})", names.join(", ")),
            )),
        }
    }
}

/// Adam's state for one group: first and second moments shaped like the parameters, and the
/// step count.
#[derive(Clone, Debug)]
pub struct AdamState<P> {
    /// First moments.
    pub m: P,
    /// Second moments.
    pub v: P,
    /// Steps taken so far.
    pub step: u64,
}

impl<P> AdamState<P> {
    /// Fresh state from two sets of zero buffers shaped like the parameters.
    pub fn new(m: P, v: P) -> Self {
        AdamState { m, v, step: 0 }
    }
}

/// One Adam step on every parameter of a group, at learning rate `lr` (the scheduled rate).
/// Parameters, gradients and moments are paired by name.
///
/// # Errors
/// [`Error::Shape`] if the sets' names differ (e.g. gradients of another decoder kind), or a
/// buffer's shape differs from its parameter's; [`Error::InvalidParameter`] for a weight decay
/// naming no parameter of the group.
pub fn adam_step<F: Scalar, B: Backend<F>, P: ParamSet<B::Mat>>(
    be: &B,
    hp: &AdamParams,
    lr: f64,
    params: &mut P,
    grads: &P,
    state: &mut AdamState<P>,
) -> Result<()> {
    hp.check_names(params)?;
    let ps = params.named_mut();
    let gs = grads.named();
    let ms = state.m.named_mut();
    let vs = state.v.named_mut();
    let names = |v: &[&'static str]| v.join(", ");
    let pn: Vec<_> = ps.iter().map(|p| p.0).collect();
    for other in [
        gs.iter().map(|p| p.0).collect::<Vec<_>>(),
        ms.iter().map(|p| p.0).collect(),
        vs.iter().map(|p| p.0).collect(),
    ] {
        if other != pn {
            return Err(Error::shape(
                "Adam",
                format!(
                    "parameters ({}) and gradients or moments ({}) differ",
                    names(&pn),
                    names(&other)
                ),
            ));
        }
    }
    state.step += 1;
    for ((((name, p), (_, g)), (_, m)), (_, v)) in ps.into_iter().zip(gs).zip(ms).zip(vs) {
        let up = AdamUpdate {
            lr: F::c(lr),
            beta1: F::c(hp.beta1),
            beta2: F::c(hp.beta2),
            eps: F::c(hp.eps),
            weight_decay: F::c(hp.weight_decay.get(name).copied().unwrap_or(0.0)),
            step: state.step,
        };
        be.adam_update(p, g, m, v, &up)?;
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
