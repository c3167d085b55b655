//! Data sets: MNIST (gzipped IDX) and natural image patches with local contrast normalisation.
//!
//! - [`mnist`]: the IDX reader, pixel normalisation `(x/255 - 0.1307) / 0.3081` and the seeded
//!   55,000 / 5,000 train/validation split of the 60,000 training images.
//! - [`patches`]: random 52×52 crops of natural photographs, standardised with the global grey
//!   mean and std, locally contrast-normalised with a 13×13 Gaussian (σ = 5) down to 28×28, and
//!   filtered by their standard deviation; the local mean and σ maps are kept so that a
//!   reconstruction can be mapped back to pixels.
//! - [`sampling`]: the seeded random draws both use (uniform integers, Fisher–Yates), written out
//!   here so that splits and patches do not change when `rand` changes its algorithms.
//!
//! - [`samples`]: samples with their PSNR pixel scale ([`Samples`], [`TrainData`]), what the
//!   training and evaluation code take.
//! - [`spec`]: where a run's data comes from ([`DataSpec`], recorded in checkpoints) and the
//!   loaded splits ([`LoadedData`]).
//!
//! Every reader returns [`DataError`], whose variants name the file and what is wrong with it.

pub mod mnist;
pub mod patches;
pub mod samples;
pub mod sampling;
pub mod spec;

pub use crate::error::DataError;
pub use mnist::{
    DEFAULT_SPLIT_SEED, MNIST_MEAN, MNIST_STD, MNIST_VAL_SIZE, Mnist, load_mnist, load_mnist_subset,
};
pub use patches::{
    DEFAULT_PATCH_SEED, NaturalImage, PatchParams, PatchSet, Patches, generate_patches,
    generate_patches_from_images, lcn, load_natural_images,
};
pub use samples::{PixelScale, RowShard, Samples, TrainData};
pub use spec::{DataKind, DataSpec, LoadedData, Split, SplitName};
