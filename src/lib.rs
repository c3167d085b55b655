#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

#[cfg(feature = "openblas")]
extern crate blas_src;

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod classify;
pub mod data;
pub mod dataset;
pub mod decoder;
pub mod denoise;
pub mod encoder;
pub mod energy;
pub mod error;
pub mod figures;
pub mod fista;
pub mod init;
pub mod io;
pub mod lasso;
pub mod model;
pub mod optim;
pub mod scalar;
pub mod sweep;
pub mod train;

pub use backend::{Backend, Cpu, Trans};
pub use decoder::{Decoder, DecoderKind};
pub use encoder::Lista;
pub use energy::{EnergyParams, EnergyTerms};
pub use error::{Error, Result};
pub use fista::{FistaParams, FistaReport, FistaWorkspace, GradientPath, StepRule};
pub use model::{ModelParams, Preset, SparseCoder, TrainData};
pub use optim::{AdamParams, LrSchedule};
pub use scalar::Scalar;
pub use train::{StepConfig, StepStats, Trainer};
