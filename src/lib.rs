#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

#[cfg(feature = "openblas")]
extern crate blas_src;

pub mod backend;
pub mod comm;
pub mod data;
pub mod error;
#[cfg(feature = "experiments")]
pub mod experiments;
pub mod io;
pub mod model;
pub mod rng;
pub mod scalar;
pub mod solve;
pub mod train;

pub use backend::{Backend, Cpu, Trans};
pub use error::{Error, Result};
pub use model::{Decoder, DecoderKind, EnergyParams, EnergyTerms, Lista};
pub use scalar::Scalar;
pub use solve::fista::{self, FistaParams, FistaReport, FistaWorkspace, GradientPath, StepRule};
pub use solve::lasso;
pub use train::{
    AdamParams, LrSchedule, ModelParams, Preset, SparseCoder, StepConfig, StepStats, Trainer,
};
