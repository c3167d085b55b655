//! The model's pieces: the energy ([`energy`]), the decoders ([`decoder`]) and the LISTA encoder
//! ([`encoder`]), each written once against [`Backend`](crate::backend::Backend).

pub mod decoder;
pub mod encoder;
pub mod energy;
pub mod params;
mod reduce;

pub use decoder::{Decoder, DecoderKind, DecoderScratch, HiddenGram};
pub use encoder::{Lista, ListaTape};
pub use energy::{EnergyParams, EnergyTerms, PaperParams};
pub use params::{DecoderParams, ListaParams, ParamSet};
