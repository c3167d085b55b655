//! The data readers' error type, [`DataError`]: every variant names the file and what is wrong
//! with it.

use std::path::PathBuf;

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
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// This build lacks an optional part the request needs.
    #[error("{what} needs varsparse's `{feature}` feature (rebuild with `--features {feature}`)")]
    FeatureDisabled {
        /// What was asked for.
        what: &'static str,
        /// The cargo feature that provides it.
        feature: &'static str,
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
