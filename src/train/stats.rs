//! What training and evaluation report: a data set's statistics under the encoder's codes
//! ([`EvalStats`]), an epoch's training means ([`TrainStats`]), and an epoch's summary
//! ([`EpochSummary`], one line of `log.jsonl`).

use crate::model::EnergyTerms;
use crate::train::step::StepStats;

/// Statistics of a data set under a model's amortised codes `E(y)` (means per sample).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalStats {
    /// Samples evaluated.
    pub n: usize,
    /// Mean PSNR (dB) of `D(E(y))`, authors' convention.
    pub psnr: f64,
    /// Fraction of exact zeros in `E(y)`.
    pub sparsity: f64,
    /// Mean energy per sample at `E(y)` (the hinge is computed per batch of the training batch
    /// size; the proximity term is zero there).
    pub energy: f64,
    /// The mean energy's terms per sample.
    pub terms: EnergyTerms,
}

/// The training statistics of one epoch (means over its batches, energies per sample).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainStats {
    /// Batches run.
    pub batches: usize,
    /// Mean decoder loss.
    pub decoder_loss: f64,
    /// Mean encoder loss.
    pub encoder_loss: f64,
    /// Mean energy per sample at the FISTA codes.
    pub energy: f64,
    /// Mean PSNR of `D(z*)`.
    pub psnr: f64,
    /// Mean sparsity of `z*`.
    pub sparsity: f64,
    /// Mean sparsity of the encoder's codes.
    pub encoder_sparsity: f64,
    /// Mean FISTA steps per sample.
    pub inference_steps: f64,
    /// The most FISTA loop iterations any batch ran (a batch that reached the iteration cap
    /// did not converge). Absent in logs written before it existed: 0.
    #[serde(default)]
    pub max_fista_iterations: usize,
    /// Batches whose FISTA step safeguard engaged (their loop ran past the constant-step
    /// iterations of [`StepRule::Safeguarded`](crate::solve::fista::StepRule::Safeguarded)).
    #[serde(default)]
    pub safeguarded_batches: usize,
    /// Floating-point operations of the epoch's products, summed over its batches
    /// ([`StepStats::flops`]). Absent in logs written before it existed: 0.
    #[serde(default)]
    pub flops: f64,
    /// The part of [`flops`](TrainStats::flops) in FISTA.
    #[serde(default)]
    pub fista_flops: f64,
    /// The step FISTA started the epoch's last batch with
    /// ([`Trainer::fista_step`](crate::train::Trainer::fista_step)).
    #[serde(default)]
    pub fista_step: Option<f64>,
}

impl TrainStats {
    pub(crate) fn add(&mut self, s: &StepStats) {
        self.batches += 1;
        self.decoder_loss += s.decoder_loss;
        self.encoder_loss += s.encoder_loss;
        self.energy += s.energy.total() / s.n.max(1) as f64;
        self.psnr += s.psnr;
        self.sparsity += s.sparsity;
        self.encoder_sparsity += s.encoder_sparsity;
        self.inference_steps += s.inference_steps;
        self.max_fista_iterations = self.max_fista_iterations.max(s.fista_iterations);
        self.safeguarded_batches += usize::from(s.safeguarded);
        self.flops += s.flops;
        self.fista_flops += s.fista_flops;
        self.fista_step = s.fista_step;
    }

    pub(crate) fn mean(mut self) -> Self {
        let k = self.batches.max(1) as f64;
        for v in [
            &mut self.decoder_loss,
            &mut self.encoder_loss,
            &mut self.energy,
            &mut self.psnr,
            &mut self.sparsity,
            &mut self.encoder_sparsity,
            &mut self.inference_steps,
        ] {
            *v /= k;
        }
        self
    }
}

/// One epoch's summary, as given to [`Observer::on_epoch`](crate::train::fit::Observer::on_epoch) and written to the JSONL log.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochSummary {
    /// The epoch (1-based: the number of epochs completed).
    pub epoch: usize,
    /// Epochs planned.
    pub epochs: usize,
    /// Training statistics.
    pub train: TrainStats,
    /// Validation statistics.
    pub val: EvalStats,
    /// Whether this epoch has the lowest validation energy so far.
    pub best: bool,
    /// Wall time of the epoch's training steps (s).
    pub train_seconds: f64,
    /// Wall time of the validation (s).
    pub val_seconds: f64,
    /// The decoder's learning rate this epoch.
    pub lr_decoder: f64,
    /// The encoder's learning rate this epoch.
    pub lr_encoder: f64,
}
