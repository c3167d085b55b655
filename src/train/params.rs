//! A model's hyper-parameters: the paper's presets ([`Preset`]), every value overridable
//! ([`ModelParams`]), checked once ([`ModelParams::validate`] → [`ValidParams`]).

use crate::data::DataKind;
use crate::error::{Error, Result};
use crate::model::{DecoderKind, EnergyParams};
use crate::solve::fista::{FistaParams, GradientPath, SAFEGUARD_AFTER, StepRule};
use crate::train::optim::{AdamParams, LrSchedule};
use crate::train::step::StepConfig;

/// The paper's eight configurations (Table 3 and docs/CONVENTIONS.md §9).
///
/// The command-line names (`mnist-vdl`, ...) are serde's kebab-case names; the CLI derives its
/// `clap::ValueEnum` from the same variants (feature `cli`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
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

/// A model's hyper-parameters (authors' energy scaling; see [`crate::model::energy`]).
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
///
/// # Examples
///
/// A preset, changed by the builder methods, checked by [`ModelParams::validate`] before
/// anything is trained:
///
/// ```
/// use varsparse::{ModelParams, Preset};
///
/// let p = ModelParams::preset(Preset::MnistVdl).lambda(0.01).epochs(5).seed(1);
/// assert_eq!(p.energy.lambda, 0.01);
/// let valid = p.clone().validate()?; // ready for `fit`
/// assert_eq!(valid.params().epochs, 5);
///
/// let bad = ModelParams::preset(Preset::MnistVdl).lambda(-1.0).validate();
/// assert!(bad.unwrap_err().to_string().contains("lambda"));
/// # Ok::<(), varsparse::Error>(())
/// ```
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
    /// FISTA's step safeguard: `Some(k)` runs a batch's first `k` iterations with the constant
    /// step and then shrinks each sample's step as it needs ([`StepRule::Safeguarded`]); when
    /// more than half of a batch's samples needed a smaller step, the following batches start
    /// from half the step ([`Trainer::fista_step`](crate::train::Trainer::fista_step)). `None`:
    /// the released code's constant step throughout. On
    /// in the MNIST VDL-NL preset (`Some(SAFEGUARD_AFTER)`), whose loops otherwise stall late
    /// in training (docs/RESULTS.md). Absent in checkpoints written before it existed: `None`.
    #[serde(default)]
    pub step_safeguard: Option<usize>,
    /// FISTA's adaptive restart of each sample's momentum ([`FistaParams::restart`]): a
    /// deviation from the authors' code that ends the loops in fewer iterations, at other codes
    /// (docs/RESULTS.md, "Adaptive restart"). Off in every preset. Absent in checkpoints written
    /// before it existed: off.
    #[serde(default)]
    pub fista_restart: bool,
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

/// Overrides of a model's hyper-parameters, each optional (the command line's `train` flags:
/// with the `cli` feature this is a `clap::Args` group, flattened into the command).
///
/// ```
/// use varsparse::train::params::ParamOverrides;
/// use varsparse::{DecoderKind, ModelParams, Preset};
///
/// let mut p = ModelParams::preset(Preset::MnistVdl);
/// ParamOverrides { lambda: Some(0.05), hidden: Some(64), ..ParamOverrides::default() }.apply(&mut p);
/// assert_eq!(p.energy.lambda, 0.05);
/// assert_eq!(p.kind, DecoderKind::OneHidden { hidden: 64 });
/// ```
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ParamOverrides {
    /// Sparsity weight lambda.
    #[cfg_attr(feature = "cli", arg(long = "lambda", value_name = "F"))]
    pub lambda: Option<f64>,
    /// Variance hinge weight beta.
    #[cfg_attr(feature = "cli", arg(long, value_name = "F"))]
    pub beta: Option<f64>,
    /// Variance hinge threshold T.
    #[cfg_attr(feature = "cli", arg(long, value_name = "F"))]
    pub threshold: Option<f64>,
    /// Proximity weight gamma.
    #[cfg_attr(feature = "cli", arg(long, value_name = "F"))]
    pub gamma: Option<f64>,
    /// FISTA's constant step eta.
    #[cfg_attr(feature = "cli", arg(long, value_name = "F"))]
    pub eta: Option<f64>,
    /// FISTA's step safeguard: after N iterations with the constant step, a batch's loop that is
    /// still running backtracks (0: from the first iteration); `off`: the constant step
    /// throughout (the released code). Default: the preset's (on after 10 in mnist-vdl-nl).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N|off"))]
    pub safeguard_after: Option<Safeguard>,
    /// FISTA's adaptive restart of each sample's momentum (true/false; a deviation from the
    /// authors' code, off in every preset).
    #[cfg_attr(feature = "cli", arg(long, value_name = "BOOL"))]
    pub adaptive_restart: Option<bool>,
    /// FISTA's iteration cap.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub max_iter: Option<usize>,
    /// FISTA's per-sample tolerance.
    #[cfg_attr(feature = "cli", arg(long, value_name = "F"))]
    pub tol: Option<f64>,
    /// The decoder's learning rate.
    #[cfg_attr(feature = "cli", arg(long, value_name = "F"))]
    pub lr_decoder: Option<f64>,
    /// The encoder's learning rate.
    #[cfg_attr(feature = "cli", arg(long, value_name = "F"))]
    pub lr_encoder: Option<f64>,
    /// Weight decay of the hidden layer's bias b1.
    #[cfg_attr(feature = "cli", arg(long, value_name = "F"))]
    pub wd_hidden_bias: Option<f64>,
    /// Weight decay of the encoder's bias.
    #[cfg_attr(feature = "cli", arg(long, value_name = "F"))]
    pub wd_encoder_bias: Option<f64>,
    /// Code dimension l.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub code_dim: Option<usize>,
    /// Hidden width m of a one-hidden-layer decoder.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub hidden: Option<usize>,
    /// LISTA iterations.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub encoder_iters: Option<usize>,
    /// Training batch size.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub batch_size: Option<usize>,
    /// SDL column normalisation of the decoder (true/false).
    #[cfg_attr(feature = "cli", arg(long, value_name = "BOOL"))]
    pub column_norm: Option<bool>,
    /// Halve the decoder's learning rate every N epochs (0: never).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub halve_lr_every: Option<usize>,
}

/// The `--safeguard-after` value: `off`, or the iterations run with the constant step before
/// backtracking takes over ([`ModelParams::step_safeguard`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Safeguard {
    /// The constant step throughout.
    Off,
    /// Backtracking after this many iterations.
    After(usize),
}

impl std::str::FromStr for Safeguard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Safeguard::Off);
        }
        s.parse()
            .map(Safeguard::After)
            .map_err(|_| format!("expected `off` or a number of iterations, got `{s}`"))
    }
}

impl ParamOverrides {
    /// Sets every given value in `p`: `hidden` makes the decoder one-hidden-layer of that
    /// width, `halve_lr_every` 0 a constant learning rate. Ranges are checked later, by
    /// [`ModelParams::validate`].
    pub fn apply(&self, p: &mut ModelParams) {
        let set = |dst: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut p.energy.lambda, self.lambda);
        set(&mut p.energy.beta, self.beta);
        set(&mut p.energy.threshold, self.threshold);
        set(&mut p.energy.gamma, self.gamma);
        set(&mut p.eta, self.eta);
        set(&mut p.tol, self.tol);
        set(&mut p.lr_decoder, self.lr_decoder);
        set(&mut p.lr_encoder, self.lr_encoder);
        set(&mut p.wd_hidden_bias, self.wd_hidden_bias);
        set(&mut p.wd_encoder_bias, self.wd_encoder_bias);
        if let Some(v) = self.safeguard_after {
            p.step_safeguard = match v {
                Safeguard::Off => None,
                Safeguard::After(k) => Some(k),
            };
        }
        if let Some(v) = self.adaptive_restart {
            p.fista_restart = v;
        }
        if let Some(v) = self.max_iter {
            p.max_iter = v;
        }
        if let Some(v) = self.code_dim {
            p.code_dim = v;
        }
        if let Some(m) = self.hidden {
            p.kind = DecoderKind::OneHidden { hidden: m };
        }
        if let Some(v) = self.encoder_iters {
            p.encoder_iters = v;
        }
        if let Some(v) = self.batch_size {
            p.batch_size = v;
        }
        if let Some(v) = self.column_norm {
            p.column_norm = v;
        }
        if let Some(v) = self.halve_lr_every {
            p.decoder_schedule = if v == 0 {
                LrSchedule::Constant
            } else {
                LrSchedule::StepHalving { every: v }
            };
        }
    }
}

impl ModelParams {
    /// The hyper-parameters of a preset (docs/CONVENTIONS.md §9).
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
            step_safeguard: (p == Preset::MnistVdlNl).then_some(SAFEGUARD_AFTER),
            fista_restart: false,
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

    /// The FISTA parameters these hyper-parameters imply (the constant step `eta`, safeguarded
    /// when [`step_safeguard`](ModelParams::step_safeguard) says so; non-negative codes).
    pub fn fista(&self) -> FistaParams {
        let step = match self.step_safeguard {
            None => StepRule::Constant { eta: self.eta },
            Some(after) => StepRule::Safeguarded {
                eta: self.eta,
                after,
                factor: 2.0,
            },
        };
        FistaParams {
            energy: self.energy,
            step,
            max_iter: self.max_iter,
            tol: self.tol,
            nonneg: true,
            path: GradientPath::Auto,
            record_trace: false,
            restart: self.fista_restart,
        }
    }

    /// The training step's configuration for data with the given PSNR pixel scale.
    pub fn step_config(&self, pixel_scale: f64) -> StepConfig {
        let dec = match self.kind {
            DecoderKind::Linear => AdamParams::new(self.lr_decoder),
            DecoderKind::OneHidden { .. } => {
                AdamParams::new(self.lr_decoder).with_weight_decay("b1", self.wd_hidden_bias)
            }
        };
        let enc = AdamParams::new(self.lr_encoder).with_weight_decay("b", self.wd_encoder_bias);
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

/// Validated hyper-parameters; the only way to [`fit`](ValidParams::fit).
#[derive(Clone, Debug, PartialEq)]
pub struct ValidParams(pub(crate) ModelParams);

impl ValidParams {
    /// The parameters.
    pub fn params(&self) -> &ModelParams {
        &self.0
    }
}
