//! One training step on a mini-batch (docs/CONVENTIONS.md §4), written once against the backend.
//!
//! 1. `e = E(y)` (the LISTA forward pass, kept on a tape);
//! 2. `z* = FISTA(D, y)`, warm-started from `e`, with the proximity term towards `e`;
//! 3. the decoder's loss `(1/(n d)) sum ||y - D(z*)||^2`, one Adam step, then (SDL) column
//!    normalisation;
//! 4. the encoder's loss `(1/(n l)) sum ||e - z*||^2` with `z*` constant, one Adam step.
//!
//! Decoder and encoder train together from the first batch.

use std::sync::Arc;

use crate::backend::Backend;
use crate::comm::{Comm, Solo};
use crate::error::{Error, Result};
use crate::model::decoder::{Decoder, DecoderScratch};
use crate::model::encoder::{Lista, ListaTape};
use crate::model::energy::EnergyTerms;
use crate::model::params::{DecoderParams, ListaParams, ParamSet};
use crate::scalar::Scalar;
use crate::solve::fista::{self, FistaParams, FistaWorkspace, StepRule};
use crate::train::optim::{AdamParams, AdamState, LrSchedule, adam_step};

/// The per-image MSE floor of the authors' PSNR (an exact reconstruction scores 40 dB).
pub const PSNR_MSE_FLOOR: f64 = 1e-4;

/// The hyper-parameters of a training step.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepConfig {
    /// FISTA's parameters (the energy's `lambda`, `beta`, `T`, `gamma`; the step `eta`; ...).
    pub fista: FistaParams,
    /// The decoder's Adam group.
    pub decoder_adam: AdamParams,
    /// The encoder's Adam group.
    pub encoder_adam: AdamParams,
    /// The decoder's learning-rate schedule (per epoch).
    pub decoder_schedule: LrSchedule,
    /// The encoder's learning-rate schedule (per epoch).
    pub encoder_schedule: LrSchedule,
    /// SDL: renormalise every decoder weight column after each step (and at the start).
    pub column_norm: bool,
    /// The data's pixel scale for PSNR (MNIST: 0.3081, the normalisation's std).
    pub pixel_scale: f64,
}

impl StepConfig {
    /// Checks every value's range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first bad value.
    pub fn validate(&self) -> Result<()> {
        self.fista.validate()?;
        self.decoder_adam.validate()?;
        self.encoder_adam.validate()?;
        if !(self.pixel_scale.is_finite() && self.pixel_scale > 0.0) {
            return Err(Error::param(
                "pixel scale",
                self.pixel_scale,
                "must be finite and > 0",
            ));
        }
        for s in [self.decoder_schedule, self.encoder_schedule] {
            if let LrSchedule::StepHalving { every: 0 } = s {
                return Err(Error::param(
                    "schedule period",
                    0,
                    "must be at least 1 epoch",
                ));
            }
        }
        Ok(())
    }
}

/// Statistics of one training step (sums are over the batch).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepStats {
    /// Samples in the batch.
    pub n: usize,
    /// The decoder's loss `(1/(n d)) sum ||y - D(z*)||^2` before its update.
    pub decoder_loss: f64,
    /// The encoder's loss `(1/(n l)) sum ||e - z*||^2` before its update.
    pub encoder_loss: f64,
    /// The energy's terms at `z*`.
    pub energy: EnergyTerms,
    /// Mean PSNR (dB) of `D(z*)` in the authors' convention.
    pub psnr: f64,
    /// Fraction of exact zeros in `z*`.
    pub sparsity: f64,
    /// Fraction of exact zeros in the encoder's codes `e`.
    pub encoder_sparsity: f64,
    /// FISTA's mean per-sample steps (the authors' "inference steps").
    pub inference_steps: f64,
    /// FISTA's loop iterations.
    pub fista_iterations: usize,
    /// Whether FISTA's step safeguard engaged ([`FistaReport::safeguard_from`](crate::solve::fista::FistaReport::safeguard_from)).
    pub safeguarded: bool,
    /// The step FISTA started with ([`Trainer::fista_step`]; `None` for a backtracking rule).
    pub fista_step: Option<f64>,
    /// Floating-point operations of FISTA's products ([`FistaReport::flops`](crate::solve::fista::FistaReport::flops)).
    pub fista_flops: f64,
    /// Floating-point operations of the step's products in all: FISTA's, the encoder's
    /// forward pass and both models' gradients (2 per multiply-add; the whole batch).
    pub flops: f64,
}

/// Buffers for one batch size.
struct StepWorkspace<F: Scalar, B: Backend<F>> {
    tape: ListaTape<B::Mat>,
    fista: FistaWorkspace<F, B>,
    dec: DecoderScratch<B::Mat>,
    dec_grads: DecoderParams<B::Mat>,
    enc_grads: ListaParams<B::Mat>,
    /// The epoch and FISTA mean steps of the last step: the next step's forecast
    /// ([`FistaWorkspace::set_forecast`]) within the same epoch.
    last_steps: Option<(usize, f64)>,
}

/// An encoder, a decoder, their optimiser states and a training step's configuration.
pub struct Trainer<F: Scalar, B: Backend<F>> {
    /// The LISTA encoder.
    pub encoder: Lista<F, B>,
    /// The decoder.
    pub decoder: Decoder<F, B>,
    /// The encoder's Adam state.
    pub encoder_opt: AdamState<ListaParams<B::Mat>>,
    /// The decoder's Adam state.
    pub decoder_opt: AdamState<DecoderParams<B::Mat>>,
    config: StepConfig,
    /// With the step safeguard: the step the next batch's FISTA starts with, once a batch has
    /// made it smaller than the configured one (see [`Trainer::fista_step`]).
    carried_step: Option<f64>,
    ws: Option<StepWorkspace<F, B>>,
    /// The ranks sharing each batch ([`Solo`] unless [`Trainer::set_comm`]).
    comm: Arc<dyn Comm>,
}

impl<F: Scalar, B: Backend<F>> Trainer<F, B> {
    /// A trainer with fresh optimiser states. With `column_norm`, the decoder's columns are
    /// normalised once here (as the released code does at initialisation).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a bad configuration or a weight decay naming no parameter
    /// of its group; [`Error::Shape`] if the encoder and decoder dimensions disagree.
    pub fn new(
        be: &B,
        encoder: Lista<F, B>,
        mut decoder: Decoder<F, B>,
        config: StepConfig,
    ) -> Result<Self> {
        config.validate()?;
        if encoder.input_dim() != decoder.input_dim() || encoder.code_dim() != decoder.code_dim() {
            return Err(Error::shape(
                "trainer",
                format!(
                    "encoder maps {} -> {}, decoder maps {} -> {}",
                    encoder.input_dim(),
                    encoder.code_dim(),
                    decoder.code_dim(),
                    decoder.input_dim()
                ),
            ));
        }
        config.decoder_adam.check_names(decoder.params())?;
        config.encoder_adam.check_names(encoder.params())?;
        if config.column_norm {
            decoder.normalize_columns(be)?;
        }
        let decoder_opt = AdamState::new(
            decoder.zeros_like_params(be)?,
            decoder.zeros_like_params(be)?,
        );
        let encoder_opt = AdamState::new(
            encoder.zeros_like_params(be)?,
            encoder.zeros_like_params(be)?,
        );
        Self::from_parts(encoder, decoder, encoder_opt, decoder_opt, config)
    }

    /// A trainer from existing parts (e.g. a checkpoint): no column normalisation is applied.
    ///
    /// # Errors
    /// As [`Trainer::new`].
    pub fn from_parts(
        encoder: Lista<F, B>,
        decoder: Decoder<F, B>,
        encoder_opt: AdamState<ListaParams<B::Mat>>,
        decoder_opt: AdamState<DecoderParams<B::Mat>>,
        config: StepConfig,
    ) -> Result<Self> {
        config.validate()?;
        config.decoder_adam.check_names(decoder.params())?;
        config.encoder_adam.check_names(encoder.params())?;
        if decoder_opt.m.is_one_hidden() != decoder.params().is_one_hidden()
            || decoder_opt.v.is_one_hidden() != decoder.params().is_one_hidden()
        {
            return Err(Error::shape(
                "trainer",
                "the decoder's optimiser state is for the other decoder kind",
            ));
        }
        Ok(Trainer {
            encoder,
            decoder,
            encoder_opt,
            decoder_opt,
            config,
            carried_step: None,
            ws: None,
            comm: Arc::new(Solo),
        })
    }

    /// Trains data-parallel with the ranks of `comm` (docs/SCALING.md): each [`Trainer::step`]
    /// then takes this rank's rows of a global batch, FISTA reduces its batch-wide quantities
    /// over the ranks ([`fista::solve_on`]), and the gradients and statistics are those of the
    /// whole batch ([`Decoder::loss_grads_on`], [`Lista::loss_grads_on`]: each rank's rows
    /// scaled for the whole batch, summed in rank order), so that every rank applies the same
    /// update. Every rank must start from the same weights.
    pub fn set_comm(&mut self, comm: Arc<dyn Comm>) {
        self.comm = comm;
    }

    /// The step FISTA starts each batch with. With the step safeguard
    /// ([`StepRule::Safeguarded`]) it is carried from
    /// batch to batch: when the safeguard had to shrink the steps of more than half of a batch's
    /// samples, the next batches start from the step divided by the safeguard's factor (it never
    /// grows back). Until then it is the configured constant step, and the iterates are the
    /// released code's. Saved in checkpoints, so a resumed run continues with it.
    pub fn fista_step(&self) -> Option<f64> {
        match self.config.fista.step {
            StepRule::Safeguarded { eta, .. } => Some(self.carried_step.unwrap_or(eta)),
            StepRule::Constant { eta } => Some(eta),
            StepRule::Backtracking { .. } | StepRule::Auto => None,
        }
    }

    /// Restores the carried step of [`Trainer::fista_step`] (from a checkpoint).
    pub(crate) fn set_carried_step(&mut self, step: Option<f64>) {
        self.carried_step = step;
    }

    /// The carried step, for checkpoints (`None` while it is the configured one).
    pub(crate) fn carried_step(&self) -> Option<f64> {
        self.carried_step
    }

    /// Replaces FISTA's parameters (a resumed run may change its step safeguard).
    pub(crate) fn set_fista(&mut self, fista: FistaParams) {
        self.config.fista = fista;
    }

    /// The ranks sharing each batch.
    pub fn comm(&self) -> &Arc<dyn Comm> {
        &self.comm
    }

    /// The configuration.
    pub fn config(&self) -> &StepConfig {
        &self.config
    }

    /// The FISTA codes `z*` of the last [`Trainer::step`], if any.
    pub fn last_codes(&self) -> Option<&B::Mat> {
        self.ws.as_ref().map(|ws| ws.fista.codes())
    }

    fn workspace(&mut self, be: &B, n: usize) -> Result<StepWorkspace<F, B>> {
        match self.ws.take() {
            Some(ws) if ws.tape.batch_size() == n => Ok(ws),
            _ => Ok(StepWorkspace {
                tape: self.encoder.tape(be, n)?,
                fista: FistaWorkspace::new(be, &self.decoder, n)?,
                dec: self.decoder.scratch(be, n)?,
                dec_grads: self.decoder.zeros_like_params(be)?,
                enc_grads: self.encoder.zeros_like_params(be)?,
                last_steps: None,
            }),
        }
    }

    /// One training step on the batch `y` `(n, d)` in epoch `epoch` (0-based; it sets the
    /// scheduled learning rates). Within an epoch, each step's FISTA length is the next step's
    /// forecast ([`FistaWorkspace::set_forecast`]), which may start the one-hidden-layer
    /// decoder's Gram path at once; the first step of an epoch has none.
    ///
    /// # Errors
    /// [`Error::Shape`] if `y` does not fit; [`Error::Diverged`] if a loss or a weight becomes
    /// non-finite (the message names it); any FISTA error.
    pub fn step(&mut self, be: &B, y: &B::Mat, epoch: usize) -> Result<StepStats> {
        self.step_scaled(be, y, epoch, None)
    }

    /// [`Trainer::step`] with a per-element pixel scale `(n, d)` for the PSNR statistic (natural
    /// patches: the LCN's local std times the grey-level std) instead of the configuration's
    /// constant one.
    ///
    /// # Errors
    /// As [`Trainer::step`]; [`Error::Shape`] if the map's shape is not the batch's.
    pub fn step_scaled(
        &mut self,
        be: &B,
        y: &B::Mat,
        epoch: usize,
        pixel_map: Option<&B::Mat>,
    ) -> Result<StepStats> {
        let (n, d) = be.shape(y);
        if let Some(m) = pixel_map
            && be.shape(m) != (n, d)
        {
            return Err(Error::shape(
                "training step",
                format!(
                    "pixel-scale map is {:?}, batch is {:?}",
                    be.shape(m),
                    (n, d)
                ),
            ));
        }
        if d != self.decoder.input_dim() {
            return Err(Error::shape(
                "training step",
                format!(
                    "batch is {:?}, the model takes d = {}",
                    (n, d),
                    self.decoder.input_dim()
                ),
            ));
        }
        let mut ws = self.workspace(be, n)?;
        let out = self.step_with(be, y, epoch, pixel_map, &mut ws);
        self.ws = Some(ws);
        out
    }

    fn step_with(
        &mut self,
        be: &B,
        y: &B::Mat,
        epoch: usize,
        pixel_map: Option<&B::Mat>,
        ws: &mut StepWorkspace<F, B>,
    ) -> Result<StepStats> {
        let (n, _) = be.shape(y);
        let cfg = &self.config;
        let l = self.decoder.code_dim();
        let comm = &*self.comm;
        let distributed = comm.size() > 1;
        // the global batch's rows
        let n_all = if distributed { comm.sum_count(n)? } else { n };

        // 1. amortised codes
        let (enc_fwd, enc_bwd) = self.encoder.flops(n_all);
        let e = self.encoder.forward(be, y, &mut ws.tape)?;
        let mut e_zeros = be.count_zeros(e)?;

        // 2. FISTA from the encoder's codes. The previous batch's length forecasts this one's
        // (it picks the gradient path, which changes the codes by rounding only); not across
        // epochs, so that a run resumed from an epoch's checkpoint repeats the same steps.
        let forecast = ws.last_steps.filter(|&(ep, _)| ep == epoch).map(|(_, s)| s);
        ws.fista.set_forecast(forecast)?;
        let mut fista_params = cfg.fista;
        if let (StepRule::Safeguarded { eta, .. }, Some(s)) =
            (&mut fista_params.step, self.carried_step)
        {
            *eta = s;
        }
        let report = fista::solve_on(
            be,
            &self.decoder,
            y,
            Some(e),
            &fista_params,
            &mut ws.fista,
            comm,
        )?;
        let started_with = self.fista_step();
        if let StepRule::Safeguarded { eta, factor, .. } = fista_params.step
            && 2 * report.safeguard_shrunk > n_all
        {
            self.carried_step = Some(eta / factor);
        }
        ws.last_steps = Some((epoch, report.mean_steps));
        let z = ws.fista.codes();

        // 3. decoder step
        let decoder_loss =
            self.decoder
                .loss_grads_on(be, y, z, &mut ws.dec, &mut ws.dec_grads, comm)?;
        let scale = match pixel_map {
            Some(m) => {
                be.mul_assign(m, ws.dec.residual_mut())?;
                F::one()
            }
            None => F::c(cfg.pixel_scale),
        };
        let mut psnr_sum = be
            .psnr_sum(ws.dec.residual(), scale, F::c(PSNR_MSE_FLOOR))?
            .f();
        let mut z_zeros = be.count_zeros(z)?;
        if distributed {
            // the whole batch's statistics (the loss and gradients are already the batch's)
            let mut v = [psnr_sum, z_zeros as f64, e_zeros as f64];
            comm.sum_f64(&mut v)?;
            psnr_sum = v[0];
            (z_zeros, e_zeros) = (v[1] as usize, v[2] as usize);
        }
        let psnr = psnr_sum / n_all as f64;
        let sparsity = z_zeros as f64 / (n_all * l) as f64;
        let encoder_sparsity = e_zeros as f64 / (n_all * l) as f64;
        if !decoder_loss.is_finite() {
            return Err(diverged(epoch, "decoder loss"));
        }
        let lr_d = cfg.decoder_schedule.lr_at(cfg.decoder_adam.lr, epoch);
        adam_step(
            be,
            &cfg.decoder_adam,
            lr_d,
            self.decoder.params_mut(),
            &ws.dec_grads,
            &mut self.decoder_opt,
        )?;
        if cfg.column_norm {
            self.decoder.normalize_columns(be)?;
        }
        for (name, p) in self.decoder.params().named() {
            if !be.all_finite(p)? {
                return Err(diverged(epoch, &format!("decoder weight {name}")));
            }
        }

        // 4. encoder step, towards the FISTA codes
        let encoder_loss =
            self.encoder
                .loss_grads_on(be, y, z, &mut ws.tape, &mut ws.enc_grads, comm)?;
        if !encoder_loss.is_finite() {
            return Err(diverged(epoch, "encoder loss"));
        }
        let lr_e = cfg.encoder_schedule.lr_at(cfg.encoder_adam.lr, epoch);
        adam_step(
            be,
            &cfg.encoder_adam,
            lr_e,
            self.encoder.params_mut(),
            &ws.enc_grads,
            &mut self.encoder_opt,
        )?;
        for (name, p) in self.encoder.params().named() {
            if !be.all_finite(p)? {
                return Err(diverged(epoch, &format!("encoder weight {name}")));
            }
        }

        Ok(StepStats {
            n: n_all,
            decoder_loss: decoder_loss.f(),
            encoder_loss: encoder_loss.f(),
            energy: report.energy,
            psnr,
            sparsity,
            encoder_sparsity,
            inference_steps: report.mean_steps,
            fista_iterations: report.iterations,
            safeguarded: report.safeguard_from.is_some(),
            fista_step: started_with,
            fista_flops: report.flops,
            flops: report.flops + enc_fwd + enc_bwd + self.decoder.loss_grads_flops(n_all),
        })
    }
}

fn diverged(epoch: usize, term: &str) -> Error {
    Error::Diverged {
        algorithm: "training",
        iteration: epoch,
        term: term.to_string(),
    }
}
