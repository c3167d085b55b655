//! Training: hyper-parameters and presets ([`params`]), one training step ([`step`]), Adam
//! ([`optim`]), statistics ([`stats`]), the fit loop with its observer ([`fit`]), the fitted
//! model ([`coder`]) and its checkpoints ([`checkpoint`]).

pub mod checkpoint;
pub mod coder;
pub mod fit;
pub mod lock;
pub mod optim;
pub mod params;
mod shards;
pub mod stats;
pub mod step;

pub use coder::SparseCoder;
pub use fit::{BestEpoch, FitOptions, Observer, RunInfo, epoch_order};
pub use lock::RunLock;
pub use optim::{AdamParams, AdamState, LrSchedule};
pub use params::{ModelParams, ParamOverrides, Preset, ValidParams};
pub use stats::{EpochSummary, EvalStats, TrainStats};
pub use step::{PSNR_MSE_FLOOR, StepConfig, StepStats, Trainer};
