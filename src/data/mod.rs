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
//! Every reader returns [`DataError`], whose variants name the file and what is wrong with it.

use std::path::PathBuf;

pub mod mnist;
pub mod patches;
pub mod sampling;

pub use mnist::{
    DEFAULT_SPLIT_SEED, MNIST_MEAN, MNIST_STD, MNIST_VAL_SIZE, Mnist, Split, load_mnist,
    load_mnist_subset,
};
pub use patches::{
    DEFAULT_PATCH_SEED, NaturalImage, PatchParams, PatchSet, Patches, generate_patches,
    generate_patches_from_images, lcn, load_natural_images,
};

/// Errors from the data readers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A `.gz` file is not a valid gzip stream (corrupt, truncated, or not gzip at all).
    #[error("decompressing {path}: {source} (is the gzip file corrupt or truncated?)")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: std::io::Error,
    },
    /// An IDX file starts with the wrong magic number.
    #[error("{path}: IDX magic number is {found:#010x}, expected {expected:#010x} ({what})")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number required.
        expected: u32,
        /// The magic number found.
        found: u32,
        /// What kind of IDX file was expected (`"images"` or `"labels"`).
        what: &'static str,
    },
    /// An IDX header is too short or its dimensions are unusable.
    #[error("{path}: malformed IDX header: {detail}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The data after an IDX header is shorter or longer than the header's dimensions say.
    #[error(
        "{path}: IDX data is {found} bytes but the header's dimensions need {expected} ({})",
        if found < expected { "truncated" } else { "trailing bytes" }
    )]
    DataLength {
        /// The file.
        path: PathBuf,
        /// Bytes the header's dimensions need.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// An images file and its labels file disagree on the number of samples.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// Number of images in it.
        n_images: usize,
        /// The labels file.
        labels: PathBuf,
        /// Number of labels in it.
        n_labels: usize,
    },
    /// The training and test images have different sizes.
    #[error(
        "{train} holds {train_rows}x{train_cols} images but {test} holds {test_rows}x{test_cols}"
    )]
    ImageSizeMismatch {
        /// The training images file.
        train: PathBuf,
        /// Rows of a training image.
        train_rows: usize,
        /// Columns of a training image.
        train_cols: usize,
        /// The test images file.
        test: PathBuf,
        /// Rows of a test image.
        test_rows: usize,
        /// Columns of a test image.
        test_cols: usize,
    },
    /// A label is not a digit 0–9.
    #[error("{path}: label {value} at index {index} is not a digit 0-9")]
    BadLabel {
        /// The labels file.
        path: PathBuf,
        /// Index of the first bad label.
        index: usize,
        /// Its value.
        value: u8,
    },
    /// A file holds fewer samples than the split needs.
    #[error("{path}: holds {found} images, at least {needed} are needed ({why})")]
    TooFewSamples {
        /// The file.
        path: PathBuf,
        /// Samples found.
        found: usize,
        /// Samples needed.
        needed: usize,
        /// Why they are needed.
        why: &'static str,
    },
    /// None of the names a data file may have exists in the directory.
    #[error("{dir}: no {what} file (looked for {tried})")]
    MissingFile {
        /// The directory searched.
        dir: PathBuf,
        /// Which file (e.g. `"MNIST training images"`).
        what: &'static str,
        /// The names tried, comma-separated.
        tried: String,
    },
    /// An image file could not be decoded.
    #[error("decoding image {path}: {source}")]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// An image's size is unusable (empty, smaller than a crop, or too large once resized).
    #[error("{name}: image is {width}x{height}: {reason}")]
    BadImageSize {
        /// The image's file name (or its index, for in-memory images).
        name: String,
        /// Its width.
        width: usize,
        /// Its height.
        height: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A directory holds no usable images.
    #[error("{dir}: no .png, .jpg or .jpeg images")]
    NoImages {
        /// The directory.
        dir: PathBuf,
    },
    /// A data parameter is outside its valid range.
    #[error("invalid data parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// The rejected value, formatted.
        value: String,
        /// Why it is rejected and what is valid.
        reason: String,
    },
    /// An array passed to a data function has the wrong shape.
    #[error("shape mismatch in {context}: {detail}")]
    Shape {
        /// The function and argument.
        context: &'static str,
        /// What was expected and what was found.
        detail: String,
    },
    /// Too few candidate crops passed the standard-deviation filter.
    #[error(
        "patch generation kept {kept} of the {requested} patches requested after drawing \
         {candidates} candidate crops (the limit); the images are too flat for \
         std_threshold = {std_threshold}"
    )]
    TooFewPatches {
        /// Patches requested (train + validation + test).
        requested: usize,
        /// Patches that passed the filter.
        kept: usize,
        /// Candidate crops drawn.
        candidates: usize,
        /// The threshold on the output std.
        std_threshold: f32,
    },
}
