//! The paper's experiments on top of the library (feature `experiments`): denoising
//! ([`denoise`]), the lambda sweep ([`sweep`]), low-data classification ([`classify`]), the
//! batch-encoding benchmark ([`bench`](mod@bench)) and the figures ([`figures`]).

pub mod bench;
pub mod classify;
pub mod denoise;
pub mod figures;
pub mod sweep;
