//! One module per subcommand: its flags (`Args`) and `run`. Computation goes through an
//! `OnBackend` job, so that `--device` reaches it.

pub mod atoms;
pub mod bench;
pub mod classify;
pub mod denoise;
pub mod encode;
pub mod eval;
pub mod infer;
pub mod sweep;
pub mod train;
