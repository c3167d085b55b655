//! Training a model end to end: parameters and presets → validated → `fit` → [`SparseCoder`].
//!
//! ```text
//! let params = ModelParams::preset(Preset::MnistVdl).epochs(5).seed(1);
//! let model = params.validate()?.fit(&data, &mut ())?;
//! let codes = model.encode(&y)?;
//! ```
//!
//! The protocol is the released code's (REFERENCE §4–§5): each epoch reshuffles the training
//! set (a seeded ChaCha8 stream per epoch, so a resumed run draws the same batches), runs one
//! training step per full batch of `batch_size` (the last partial batch is dropped), then
//! validates with amortised codes `z = E(y)` (PSNR of `D(E(y))`, sparsity of `E(y)`, the energy at
//! `E(y)`). All epochs run unless a patience is set; the checkpoint with the lowest mean
//! validation energy is kept as `best/` next to `latest/`.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ndarray::{Array2, ArrayView2, s};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::backend::{Backend, Cpu};
use crate::checkpoint;
use crate::decoder::{Decoder, DecoderKind};
use crate::encoder::Lista;
use crate::energy::{self, EnergyParams, EnergyTerms};
use crate::error::{Error, Result};
use crate::fista::{self, BatchReport, FistaParams, GradientPath, StepRule};
use crate::init;
use crate::optim::{AdamParams, LrSchedule};
use crate::train::{PSNR_MSE_FLOOR, StepConfig, StepStats, Trainer};

/// The paper's eight configurations (Table 3 and REFERENCE §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Standard dictionary learning (column-normalised), MNIST.
    MnistSdl,
    /// Variance-regularised dictionary learning, MNIST.
    MnistVdl,
    /// SDL with a one-hidden-layer decoder (m 1024), MNIST.
    MnistSdlNl,
    /// VDL with a one-hidden-layer decoder (m 1024), MNIST.
    MnistVdlNl,
    /// SDL on natural-image patches.
    PatchesSdl,
    /// VDL on natural-image patches.
    PatchesVdl,
    /// SDL-NL on natural-image patches (m 2048).
    PatchesSdlNl,
    /// VDL-NL on natural-image patches (m 2048).
    PatchesVdlNl,
}

/// Which bundled data set a preset trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// MNIST (`data/mnist`).
    Mnist,
    /// Natural-image patches (`data/natural`).
    Patches,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 8] = [
        Preset::MnistSdl,
        Preset::MnistVdl,
        Preset::MnistSdlNl,
        Preset::MnistVdlNl,
        Preset::PatchesSdl,
        Preset::PatchesVdl,
        Preset::PatchesSdlNl,
        Preset::PatchesVdlNl,
    ];

    /// The command-line name (`"mnist-vdl"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Preset::MnistSdl => "mnist-sdl",
            Preset::MnistVdl => "mnist-vdl",
            Preset::MnistSdlNl => "mnist-sdl-nl",
            Preset::MnistVdlNl => "mnist-vdl-nl",
            Preset::PatchesSdl => "patches-sdl",
            Preset::PatchesVdl => "patches-vdl",
            Preset::PatchesSdlNl => "patches-sdl-nl",
            Preset::PatchesVdlNl => "patches-vdl-nl",
        }
    }

    /// Parses a command-line name.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] listing the valid names.
    pub fn from_name(name: &str) -> Result<Preset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Preset::ALL.iter().map(|p| p.name()).collect();
                Error::param(
                    "preset",
                    name,
                    format!("valid presets: {}", names.join(", ")),
                )
            })
    }

    /// The data set the preset trains on.
    pub fn data(self) -> DataKind {
        match self {
            Preset::MnistSdl | Preset::MnistVdl | Preset::MnistSdlNl | Preset::MnistVdlNl => {
                DataKind::Mnist
            }
            _ => DataKind::Patches,
        }
    }
}

/// A model's hyper-parameters (authors' energy scaling; see [`crate::energy`]).
///
/// | field | MNIST VDL preset | valid |
/// |---|---|---|
/// | `kind` | linear | linear, or one hidden layer of width `>= 1` |
/// | `code_dim` (`l`) | 128 | `>= 1` |
/// | `encoder_iters` (LISTA `L`) | 3 | any |
/// | `energy` | `lambda` 0.02, `beta` 10, `T` 0.5, `gamma` 5 | see [`EnergyParams`] |
/// | `eta` (FISTA step) | 0.5 | `> 0` |
/// | `max_iter`, `tol` | 200, 1e-3 | `>= 1`, `>= 0` |
/// | `lr_decoder`, `lr_encoder` | 3e-4, 1e-4 | `> 0` |
/// | `wd_hidden_bias` (`b1`), `wd_encoder_bias` (`b`) | 0, 0 | `>= 0` |
/// | `decoder_schedule` | constant | halving every `>= 1` epochs |
/// | `column_norm` (SDL) | false | |
/// | `epochs` | 200 | `>= 1` |
/// | `batch_size` | 250 | `>= 2` when `beta > 0` |
/// | `seed` | 0 | any |
/// | `patience` | none | `>= 1` |
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelParams {
    /// The preset these parameters started from, if any (informational).
    pub preset: Option<Preset>,
    /// The decoder.
    pub kind: DecoderKind,
    /// Code dimension `l`.
    pub code_dim: usize,
    /// LISTA iterations `L`.
    pub encoder_iters: usize,
    /// The energy's hyper-parameters.
    pub energy: EnergyParams,
    /// FISTA's constant step.
    pub eta: f64,
    /// FISTA's iteration cap.
    pub max_iter: usize,
    /// FISTA's per-sample relative tolerance.
    pub tol: f64,
    /// The decoder's Adam learning rate.
    pub lr_decoder: f64,
    /// The encoder's Adam learning rate.
    pub lr_encoder: f64,
    /// L2 weight decay of the one-hidden-layer decoder's bias `b1`.
    pub wd_hidden_bias: f64,
    /// L2 weight decay of the encoder's bias `b`.
    pub wd_encoder_bias: f64,
    /// The decoder's learning-rate schedule.
    pub decoder_schedule: LrSchedule,
    /// SDL column normalisation of the decoder.
    pub column_norm: bool,
    /// Epochs to run.
    pub epochs: usize,
    /// Training batch size.
    pub batch_size: usize,
    /// Seed of the initialisation and of the per-epoch shuffles.
    pub seed: u64,
    /// Stop when the validation energy has not improved for this many epochs (off by default).
    pub patience: Option<usize>,
}

impl ModelParams {
    /// The hyper-parameters of a preset (REFERENCE §9).
    pub fn preset(p: Preset) -> ModelParams {
        let mnist = p.data() == DataKind::Mnist;
        let (code_dim, hidden, epochs) = if mnist {
            (128, 1024, 200)
        } else {
            (256, 2048, 100)
        };
        let e = |lambda, gamma, beta| EnergyParams {
            lambda,
            beta,
            threshold: 0.5,
            gamma,
        };
        let linear = DecoderKind::Linear;
        let nl = DecoderKind::OneHidden { hidden };
        // (kind, energy, lr_D, lr_E, eta, column norm, wd b1, wd b_E)
        let (kind, energy, lr_d, lr_e, eta, sdl, wd_b1, wd_be) = match p {
            Preset::MnistSdl => (linear, e(0.005, 1.0, 0.0), 1e-3, 3e-4, 1.0, true, 0.0, 0.0),
            Preset::MnistVdl => (linear, e(0.02, 5.0, 10.0), 3e-4, 1e-4, 0.5, false, 0.0, 0.0),
            Preset::MnistSdlNl => (nl, e(0.01, 1.0, 0.0), 1e-3, 1e-4, 1.0, true, 1e-3, 0.0),
            Preset::MnistVdlNl => (nl, e(0.01, 100.0, 10.0), 3e-4, 1e-4, 0.5, false, 1e-3, 0.0),
            Preset::PatchesSdl => (linear, e(0.005, 1.0, 0.0), 1e-3, 1e-4, 0.5, true, 0.0, 1e-2),
            Preset::PatchesVdl => (
                linear,
                e(0.01, 5.0, 10.0),
                3e-4,
                1e-4,
                0.5,
                false,
                0.0,
                1e-2,
            ),
            Preset::PatchesSdlNl => (nl, e(0.01, 1.0, 0.0), 1e-3, 1e-4, 0.5, true, 1e-2, 1e-2),
            Preset::PatchesVdlNl => (nl, e(0.01, 40.0, 10.0), 5e-5, 1e-4, 0.5, false, 1e-1, 1e-2),
        };
        let decoder_schedule = match p {
            Preset::MnistVdlNl | Preset::PatchesVdlNl => LrSchedule::StepHalving { every: 30 },
            _ => LrSchedule::Constant,
        };
        ModelParams {
            preset: Some(p),
            kind,
            code_dim,
            encoder_iters: 3,
            energy,
            eta,
            max_iter: 200,
            tol: 1e-3,
            lr_decoder: lr_d,
            lr_encoder: lr_e,
            wd_hidden_bias: wd_b1,
            wd_encoder_bias: wd_be,
            decoder_schedule,
            column_norm: sdl,
            epochs,
            batch_size: 250,
            seed: 0,
            patience: None,
        }
    }

    /// Sets the number of epochs.
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets `lambda`.
    pub fn lambda(mut self, lambda: f64) -> Self {
        self.energy.lambda = lambda;
        self
    }

    /// Sets the training batch size.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Sets the hidden width of a one-hidden-layer decoder (no effect on a linear one).
    pub fn hidden(mut self, m: usize) -> Self {
        if let DecoderKind::OneHidden { .. } = self.kind {
            self.kind = DecoderKind::OneHidden { hidden: m };
        }
        self
    }

    /// Sets the code dimension.
    pub fn code_dim(mut self, l: usize) -> Self {
        self.code_dim = l;
        self
    }

    /// Sets a patience (epochs without improvement of the validation energy before stopping).
    pub fn patience(mut self, epochs: Option<usize>) -> Self {
        self.patience = epochs;
        self
    }

    /// The FISTA parameters these hyper-parameters imply (constant step, non-negative codes).
    pub fn fista(&self) -> FistaParams {
        FistaParams {
            energy: self.energy,
            step: StepRule::Constant { eta: self.eta },
            max_iter: self.max_iter,
            tol: self.tol,
            nonneg: true,
            path: GradientPath::Auto,
            record_trace: false,
        }
    }

    /// The training step's configuration for data with the given PSNR pixel scale.
    pub fn step_config(&self, pixel_scale: f64) -> StepConfig {
        let n_dec = match self.kind {
            DecoderKind::Linear => 1,
            DecoderKind::OneHidden { .. } => 3,
        };
        let mut dec = AdamParams::new(self.lr_decoder, n_dec);
        if n_dec == 3 {
            dec.weight_decay[1] = self.wd_hidden_bias;
        }
        let mut enc = AdamParams::new(self.lr_encoder, 3);
        enc.weight_decay[1] = self.wd_encoder_bias;
        StepConfig {
            fista: self.fista(),
            decoder_adam: dec,
            encoder_adam: enc,
            decoder_schedule: self.decoder_schedule,
            encoder_schedule: LrSchedule::Constant,
            column_norm: self.column_norm,
            pixel_scale,
        }
    }

    /// Checks every value's range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first bad value.
    pub fn validate(self) -> Result<ValidParams> {
        self.step_config(1.0).validate()?;
        if self.code_dim == 0 {
            return Err(Error::param("code_dim", 0, "must be at least 1"));
        }
        if let DecoderKind::OneHidden { hidden: 0 } = self.kind {
            return Err(Error::param("hidden", 0, "must be at least 1"));
        }
        if self.epochs == 0 {
            return Err(Error::param("epochs", 0, "must be at least 1"));
        }
        if self.batch_size == 0 || (self.energy.beta > 0.0 && self.batch_size < 2) {
            return Err(Error::param(
                "batch_size",
                self.batch_size,
                "must be at least 1, and at least 2 when beta > 0 (the variance hinge)",
            ));
        }
        if self.patience == Some(0) {
            return Err(Error::param("patience", 0, "must be at least 1 epoch"));
        }
        Ok(ValidParams(self))
    }
}

/// How a residual in normalised units maps to pixel units for PSNR.
#[derive(Clone, Copy, Debug)]
pub enum PixelScale<'a> {
    /// Every element by one factor (MNIST: its normalisation's std, 0.3081).
    Constant(f64),
    /// Element by element, `(n, d)` like the samples (natural patches: the LCN's local std times
    /// the grey-level std 0.259).
    PerElement(ArrayView2<'a, f32>),
}

/// Samples (rows) with their pixel scale.
#[derive(Clone, Copy, Debug)]
pub struct Samples<'a> {
    /// The samples, `(n, d)`, normalised.
    pub x: ArrayView2<'a, f32>,
    /// How to measure PSNR on them.
    pub scale: PixelScale<'a>,
}

impl<'a> Samples<'a> {
    /// Samples with a constant pixel scale.
    pub fn new(x: ArrayView2<'a, f32>, scale: f64) -> Self {
        Samples {
            x,
            scale: PixelScale::Constant(scale),
        }
    }

    fn validate(&self, what: &str) -> Result<()> {
        crate::decoder::check_finite(what, &self.x)?;
        if let PixelScale::PerElement(m) = self.scale
            && m.dim() != self.x.dim()
        {
            return Err(Error::shape(
                what,
                format!(
                    "pixel-scale map is {:?}, samples are {:?}",
                    m.dim(),
                    self.x.dim()
                ),
            ));
        }
        Ok(())
    }
}

/// A training set and a validation set.
#[derive(Clone, Copy, Debug)]
pub struct TrainData<'a> {
    /// Training samples.
    pub train: Samples<'a>,
    /// Validation samples.
    pub val: Samples<'a>,
    /// The image shape `(height, width)` of a sample, for display (atoms); `None` if not images.
    pub image_shape: Option<(usize, usize)>,
}

impl<'a> TrainData<'a> {
    /// MNIST's training and validation splits (PSNR at the pixel scale 0.3081).
    pub fn mnist(m: &'a crate::data::Mnist) -> Self {
        let s = crate::data::MNIST_STD as f64;
        TrainData {
            train: Samples::new(m.train.images.view(), s),
            val: Samples::new(m.val.images.view(), s),
            image_shape: Some((m.rows, m.cols)),
        }
    }
}

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
}

impl TrainStats {
    fn add(&mut self, s: &StepStats) {
        self.batches += 1;
        self.decoder_loss += s.decoder_loss;
        self.encoder_loss += s.encoder_loss;
        self.energy += s.energy.total() / s.n.max(1) as f64;
        self.psnr += s.psnr;
        self.sparsity += s.sparsity;
        self.encoder_sparsity += s.encoder_sparsity;
        self.inference_steps += s.inference_steps;
    }

    fn mean(mut self) -> Self {
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

/// One epoch's summary, as given to [`Observer::on_epoch`] and written to the JSONL log.
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

/// What a training run tells its observer before the first epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct RunInfo {
    /// The epoch training starts at (0-based; > 0 when resuming).
    pub start_epoch: usize,
    /// Epochs planned in all.
    pub epochs: usize,
    /// Training batches per epoch.
    pub batches_per_epoch: usize,
}

/// Watches a training run; every method may stop it by returning [`ControlFlow::Break`].
/// `()` is the observer that watches nothing.
pub trait Observer {
    /// Before the first epoch.
    fn on_start(&mut self, _info: &RunInfo) {}
    /// After every training step.
    fn on_batch(&mut self, _epoch: usize, _batch: usize, _stats: &StepStats) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    /// After every epoch's validation (and checkpoint).
    fn on_epoch(&mut self, _summary: &EpochSummary) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

impl Observer for () {}

/// Where and how [`ValidParams::fit_with`] keeps its checkpoints.
#[derive(Clone, Debug, Default)]
pub struct FitOptions<'a> {
    /// The run directory: `latest/` and `best/` checkpoints are written there after every
    /// epoch (atomically). `None`: no checkpoints.
    pub out_dir: Option<PathBuf>,
    /// Resume from this checkpoint directory (a run's `latest/`).
    pub resume: Option<PathBuf>,
    /// Stop between batches when this becomes `true` (e.g. set by a Ctrl-C handler); the run
    /// then ends with [`Error::Interrupted`] and the last complete checkpoint stays as it was.
    pub stop: Option<&'a AtomicBool>,
    /// A description of the data (recorded in the checkpoints).
    pub data_description: Option<String>,
}

/// Validated hyper-parameters; the only way to [`fit`](ValidParams::fit).
#[derive(Clone, Debug, PartialEq)]
pub struct ValidParams(ModelParams);

impl ValidParams {
    /// The parameters.
    pub fn params(&self) -> &ModelParams {
        &self.0
    }

    /// Trains a model on the CPU without checkpoints.
    ///
    /// # Errors
    /// See [`ValidParams::fit_with`].
    pub fn fit(&self, data: &TrainData<'_>, observer: &mut dyn Observer) -> Result<SparseCoder> {
        self.fit_with(Cpu, data, &FitOptions::default(), observer)
    }

    /// Trains a model on backend `be`, with checkpoints and resumption as `opts` says.
    ///
    /// # Errors
    /// [`Error::Shape`] / [`Error::NonFiniteInput`] for unusable data (fewer samples than one
    /// batch, NaN); [`Error::Diverged`] naming the term that blew up; [`Error::Checkpoint`] for a
    /// checkpoint that cannot be resumed (another model kind, other hyper-parameters);
    /// [`Error::Interrupted`] when stopped by the observer or the stop flag; I/O errors.
    pub fn fit_with<B: Backend<f32>>(
        &self,
        be: B,
        data: &TrainData<'_>,
        opts: &FitOptions<'_>,
        observer: &mut dyn Observer,
    ) -> Result<SparseCoder<B>> {
        let p = &self.0;
        data.train.validate("training samples")?;
        data.val.validate("validation samples")?;
        let (n_train, d) = data.train.x.dim();
        if data.val.x.ncols() != d {
            return Err(Error::shape(
                "data",
                format!(
                    "training samples have {d} columns, validation samples {}",
                    data.val.x.ncols()
                ),
            ));
        }
        let n_batches = n_train / p.batch_size;
        if n_batches == 0 {
            return Err(Error::shape(
                "training samples",
                format!("{n_train} samples make no full batch of {}", p.batch_size),
            ));
        }
        let pixel_scale = match data.train.scale {
            PixelScale::Constant(s) => s,
            PixelScale::PerElement(_) => 1.0,
        };
        let mut model = match &opts.resume {
            Some(dir) => {
                let m = SparseCoder::load_on(be, dir)?;
                m.check_resumable(p, d)?;
                SparseCoder {
                    params: p.clone(),
                    ..m
                }
            }
            None => SparseCoder::init(be, p, d, pixel_scale, data.image_shape)?,
        };
        model.image_shape = model.image_shape.or(data.image_shape);
        if let Some(desc) = &opts.data_description {
            model.data_description = Some(desc.clone());
        }
        let start = model.epochs_done;
        observer.on_start(&RunInfo {
            start_epoch: start,
            epochs: p.epochs,
            batches_per_epoch: n_batches,
        });
        let mut batch = Array2::<f32>::zeros((p.batch_size, d));
        let mut batch_map = match data.train.scale {
            PixelScale::PerElement(_) => Some(Array2::<f32>::zeros((p.batch_size, d))),
            PixelScale::Constant(_) => None,
        };
        for epoch in start..p.epochs {
            let t0 = Instant::now();
            let order = epoch_order(p.seed, epoch, n_train);
            let mut stats = TrainStats::default();
            for b in 0..n_batches {
                if opts.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                    return Err(Error::Interrupted { epoch });
                }
                let rows = &order[b * p.batch_size..(b + 1) * p.batch_size];
                for (k, &i) in rows.iter().enumerate() {
                    batch.row_mut(k).assign(&data.train.x.row(i));
                }
                let yb = model.be.upload(batch.view())?;
                let map = match (&mut batch_map, data.train.scale) {
                    (Some(m), PixelScale::PerElement(src)) => {
                        for (k, &i) in rows.iter().enumerate() {
                            m.row_mut(k).assign(&src.row(i));
                        }
                        Some(model.be.upload(m.view())?)
                    }
                    _ => None,
                };
                let s = model
                    .trainer
                    .step_scaled(&model.be, &yb, epoch, map.as_ref())?;
                stats.add(&s);
                if observer.on_batch(epoch, b, &s).is_break() {
                    return Err(Error::Interrupted { epoch });
                }
            }
            let train_seconds = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let val = model.evaluate(&data.val)?;
            let val_seconds = t1.elapsed().as_secs_f64();
            if !val.energy.is_finite() {
                let term = val.terms.non_finite_term().unwrap_or("total");
                return Err(Error::Diverged {
                    algorithm: "training (validation)",
                    iteration: epoch,
                    term: format!("{term} energy"),
                });
            }
            model.epochs_done = epoch + 1;
            let is_best = model.best.is_none_or(|b| val.energy < b.val_energy);
            if is_best {
                model.best = Some(BestEpoch {
                    epoch: epoch + 1,
                    val_energy: val.energy,
                });
            }
            let summary = EpochSummary {
                epoch: epoch + 1,
                epochs: p.epochs,
                train: stats.mean(),
                val,
                best: is_best,
                train_seconds,
                val_seconds,
                lr_decoder: p.decoder_schedule.lr_at(p.lr_decoder, epoch),
                lr_encoder: p.lr_encoder,
            };
            model.last = Some(summary.clone());
            if let Some(dir) = &opts.out_dir {
                model.save(&dir.join("latest"))?;
                if is_best {
                    model.save(&dir.join("best"))?;
                }
            }
            if observer.on_epoch(&summary).is_break() {
                return Err(Error::Interrupted { epoch: epoch + 1 });
            }
            if let (Some(pat), Some(best)) = (p.patience, model.best)
                && epoch + 1 >= best.epoch + pat
            {
                break;
            }
        }
        Ok(model)
    }
}

/// The training order of epoch `epoch`: a Fisher–Yates permutation from the ChaCha8 stream
/// `epoch` of the run's seed, so that any epoch's batches can be drawn without replaying the
/// ones before it (this is what makes resumption bit-identical).
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    crate::data::sampling::permutation(n, &mut rng)
}

/// The epoch with the lowest validation energy so far.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BestEpoch {
    /// The epoch (1-based).
    pub epoch: usize,
    /// Its mean validation energy per sample.
    pub val_energy: f64,
}

/// A trained (or training) model: encoder, decoder, optimiser states and where training stands.
pub struct SparseCoder<B: Backend<f32> = Cpu> {
    pub(crate) be: B,
    pub(crate) params: ModelParams,
    pub(crate) trainer: Trainer<f32, B>,
    pub(crate) input_dim: usize,
    pub(crate) pixel_scale: f64,
    pub(crate) image_shape: Option<(usize, usize)>,
    pub(crate) epochs_done: usize,
    pub(crate) best: Option<BestEpoch>,
    pub(crate) last: Option<EpochSummary>,
    pub(crate) data_description: Option<String>,
    /// Whether the Adam moments are real (false for a checkpoint saved without them).
    pub(crate) optimizer_state: bool,
}

impl<B: Backend<f32>> SparseCoder<B> {
    /// A freshly initialised model (encoder, then decoder, from the seed's stream).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a zero dimension or a bad configuration.
    pub fn init(
        be: B,
        params: &ModelParams,
        input_dim: usize,
        pixel_scale: f64,
        image_shape: Option<(usize, usize)>,
    ) -> Result<Self> {
        let mut r = init::rng(params.seed);
        let enc = Lista::init(
            &be,
            input_dim,
            params.code_dim,
            params.encoder_iters,
            &mut r,
        )?;
        let dec = Decoder::init(&be, params.kind, input_dim, params.code_dim, &mut r)?;
        let trainer = Trainer::new(&be, enc, dec, params.step_config(pixel_scale))?;
        Ok(SparseCoder {
            be,
            params: params.clone(),
            trainer,
            input_dim,
            pixel_scale,
            image_shape,
            epochs_done: 0,
            best: None,
            last: None,
            data_description: None,
            optimizer_state: true,
        })
    }

    fn check_resumable(&self, p: &ModelParams, d: usize) -> Result<()> {
        let mut mine = self.params.clone();
        mine.epochs = p.epochs;
        mine.patience = p.patience;
        if !self.optimizer_state {
            return Err(Error::Checkpoint {
                path: PathBuf::new(),
                detail: "cannot resume: the checkpoint holds no Adam moments (adam_m_*.npy, \
                         adam_v_*.npy); it loads for inference only"
                    .into(),
            });
        }
        if mine != *p || self.input_dim != d {
            return Err(Error::Checkpoint {
                path: PathBuf::new(),
                detail: format!(
                    "cannot resume: the checkpoint was trained with other hyper-parameters or data \
                     (checkpoint: {:?}, d = {}; requested: {:?}, d = {d}); only epochs and patience may change",
                    self.params, self.input_dim, p
                ),
            });
        }
        if self.epochs_done >= p.epochs {
            return Err(Error::param(
                "epochs",
                p.epochs,
                format!("the checkpoint has already run {} epochs", self.epochs_done),
            ));
        }
        Ok(())
    }

    /// The hyper-parameters.
    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.be
    }

    /// The input dimension `d`.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// The image shape of a sample, when known.
    pub fn image_shape(&self) -> Option<(usize, usize)> {
        self.image_shape
    }

    /// Epochs trained.
    pub fn epochs_trained(&self) -> usize {
        self.epochs_done
    }

    /// The epoch with the lowest validation energy.
    pub fn best_epoch(&self) -> Option<BestEpoch> {
        self.best
    }

    /// The last epoch's summary.
    pub fn last_epoch(&self) -> Option<&EpochSummary> {
        self.last.as_ref()
    }

    /// The encoder.
    pub fn encoder(&self) -> &Lista<f32, B> {
        &self.trainer.encoder
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder<f32, B> {
        &self.trainer.decoder
    }

    fn check_input(&self, what: &str, y: &Array2<f32>, cols: usize) -> Result<()> {
        if y.ncols() != cols {
            return Err(Error::shape(
                what,
                format!("is {:?}, the model takes {cols} columns", y.dim()),
            ));
        }
        crate::decoder::check_finite(what, y)
    }

    /// Amortised codes `E(y)` `(n, l)` for inputs `y` `(n, d)`.
    ///
    /// # Errors
    /// [`Error::Shape`] / [`Error::NonFiniteInput`] for bad input.
    pub fn encode(&self, y: &Array2<f32>) -> Result<Array2<f32>> {
        self.check_input("input Y", y, self.input_dim)?;
        let enc = &self.trainer.encoder;
        let n = y.nrows();
        let mut out = Array2::zeros((n, enc.code_dim()));
        let bs = self.params.batch_size.max(1);
        let mut tape = None;
        for start in (0..n).step_by(bs) {
            let end = (start + bs).min(n);
            if tape
                .as_ref()
                .is_none_or(|t: &crate::encoder::ListaTape<B::Mat>| t.batch_size() != end - start)
            {
                tape = Some(enc.tape(&self.be, end - start)?);
            }
            let tape = tape
                .as_mut()
                .ok_or_else(|| Error::shape("encode", "no tape"))?;
            let yb = self.be.upload(y.slice(s![start..end, ..]))?;
            let e = enc.forward(&self.be, &yb, tape)?;
            out.slice_mut(s![start..end, ..])
                .assign(&self.be.download(e)?);
        }
        Ok(out)
    }

    /// FISTA codes warm-started from (and drawn towards) the encoder's codes, with the model's
    /// inference parameters, in batches of the training batch size.
    ///
    /// # Errors
    /// As [`fista::solve_batches`].
    pub fn encode_fista(&self, y: &Array2<f32>) -> Result<(Array2<f32>, Vec<BatchReport>)> {
        let e = self.encode(y)?;
        fista::solve_batches(
            &self.be,
            &self.trainer.decoder,
            y,
            Some(&e),
            &self.params.fista(),
            self.params.batch_size,
        )
    }

    /// Reconstructions `D(z)` `(n, d)` of codes `z` `(n, l)`.
    ///
    /// # Errors
    /// [`Error::Shape`] / [`Error::NonFiniteInput`] for bad input.
    pub fn decode(&self, z: &Array2<f32>) -> Result<Array2<f32>> {
        let dec = &self.trainer.decoder;
        self.check_input("codes Z", z, dec.code_dim())?;
        let n = z.nrows();
        if n == 0 {
            return Ok(Array2::zeros((0, self.input_dim)));
        }
        let zb = self.be.upload(z.view())?;
        let mut s = dec.scratch(&self.be, n)?;
        let mut out = self.be.zeros(n, self.input_dim)?;
        dec.forward(&self.be, &zb, &mut s, &mut out)?;
        self.be.download(&out)
    }

    /// The decoder's atoms `(l, d)` (linear: columns of `W`; one hidden layer: `D(e_i) - D(0)`).
    ///
    /// # Errors
    /// A backend error.
    pub fn atoms(&self) -> Result<Array2<f32>> {
        self.trainer.decoder.atoms(&self.be, 1.0)
    }

    /// PSNR, sparsity and energy of `samples` under amortised codes `E(y)`, in batches of the
    /// training batch size (the hinge per batch; a last batch of one sample has no hinge term).
    ///
    /// # Errors
    /// [`Error::Shape`] / [`Error::NonFiniteInput`] for bad input.
    pub fn evaluate(&self, samples: &Samples<'_>) -> Result<EvalStats> {
        let y = samples.x;
        let (n, d) = y.dim();
        if d != self.input_dim {
            return Err(Error::shape(
                "samples",
                format!(
                    "are {:?}, the model takes {} columns",
                    y.dim(),
                    self.input_dim
                ),
            ));
        }
        let be = &self.be;
        let enc = &self.trainer.encoder;
        let dec = &self.trainer.decoder;
        let l = dec.code_dim();
        let ep = &self.params.energy;
        let bs = self.params.batch_size.max(1);
        let (mut psnr, mut zeros) = (0.0f64, 0usize);
        let mut terms = EnergyTerms::default();
        let mut start = 0;
        while start < n {
            let end = (start + bs).min(n);
            let m = end - start;
            let yb = be.upload(y.slice(s![start..end, ..]))?;
            let mut tape = enc.tape(be, m)?;
            let mut scratch = dec.scratch(be, m)?;
            let e = enc.forward(be, &yb, &mut tape)?;
            zeros += be.count_zeros(e)?;
            terms.recon += dec.recon(be, &yb, e, &mut scratch, None, true)?.f64();
            terms.l1 += ep.lambda * be.sum_abs(e)?.f64();
            if ep.beta > 0.0 && m >= 2 {
                let mut mean = be.zeros(1, l)?;
                let mut std = be.zeros(1, l)?;
                terms.hinge += energy::hinge(
                    be,
                    e,
                    ep.beta as f32,
                    ep.threshold as f32,
                    &mut mean,
                    &mut std,
                    None,
                    true,
                )?
                .f64();
            }
            // the residual D(E(y)) - y is in the scratch
            let r = scratch.residual_mut();
            let scale = match samples.scale {
                PixelScale::Constant(c) => c as f32,
                PixelScale::PerElement(map) => {
                    be.mul_assign(&be.upload(map.slice(s![start..end, ..]))?, r)?;
                    1.0
                }
            };
            psnr += be.psnr_sum(r, scale, PSNR_MSE_FLOOR as f32)?.f64();
            start = end;
        }
        let nf = n.max(1) as f64;
        let terms = EnergyTerms {
            recon: terms.recon / nf,
            l1: terms.l1 / nf,
            hinge: terms.hinge / nf,
            proximity: 0.0,
        };
        Ok(EvalStats {
            n,
            psnr: psnr / nf,
            sparsity: zeros as f64 / (nf * l as f64),
            energy: terms.total(),
            terms,
        })
    }

    /// Writes the model as a checkpoint directory (see [`crate::checkpoint`]), atomically.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn save(&self, dir: &Path) -> Result<()> {
        checkpoint::save(self, dir)
    }

    /// Loads a checkpoint directory onto backend `be`.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for a missing, corrupt or inconsistent checkpoint.
    pub fn load_on(be: B, dir: &Path) -> Result<Self> {
        checkpoint::load(be, dir)
    }
}

impl SparseCoder<Cpu> {
    /// Loads a checkpoint directory on the CPU.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for a missing, corrupt or inconsistent checkpoint.
    pub fn load(dir: &Path) -> Result<Self> {
        checkpoint::load(Cpu, dir)
    }
}

trait F64 {
    fn f64(self) -> f64;
}

impl F64 for f32 {
    fn f64(self) -> f64 {
        self as f64
    }
}
