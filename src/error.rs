//! The crate's error types: [`Error`], and the data readers' [`DataError`] that it wraps.
//!
//! Every fallible public function returns [`Result<T>`]. Variants carry the offending values so
//! that a message says *what* was wrong and *where* without a debugger.

use std::path::PathBuf;

/// Everything that can go wrong in varsparse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two arrays whose shapes must agree do not.
    #[error("shape mismatch in {context}: {detail}")]
    Shape {
        /// The operation or argument being checked (e.g. `"fista: input Y"`).
        context: String,
        /// What was expected and what was found.
        detail: String,
    },
    /// A hyper-parameter is outside its valid range.
    #[error("invalid hyper-parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// The parameter's name as the user knows it (e.g. `"lambda"`).
        name: &'static str,
        /// The rejected value, formatted.
        value: String,
        /// Why it is rejected and what is valid.
        reason: String,
    },
    /// An input array holds NaN or infinity.
    #[error("non-finite input in {what}: element {index:?} is {value}")]
    NonFiniteInput {
        /// Which input (e.g. `"Y"`).
        what: String,
        /// The (row, column) of the first offending element.
        index: (usize, usize),
        /// The value found there.
        value: f64,
    },
    /// A class label is outside `0..n_classes`.
    #[error("invalid label in {what}: sample {index} has label {label}, expected 0..{n_classes}")]
    InvalidLabel {
        /// Which labels (e.g. `"training labels"`).
        what: String,
        /// The sample (row) holding it.
        index: usize,
        /// The label found.
        label: usize,
        /// The number of classes.
        n_classes: usize,
    },
    /// An iterate became NaN or infinite during optimisation.
    #[error(
        "{algorithm} diverged at iteration {iteration}: {term} is not finite; \
         try a smaller step size (or backtracking)"
    )]
    Diverged {
        /// The algorithm that diverged (e.g. `"FISTA"`).
        algorithm: &'static str,
        /// The iteration (0-based) at which the non-finite value appeared.
        iteration: usize,
        /// Which quantity blew up (e.g. `"codes"`, `"reconstruction energy"`).
        term: String,
    },
    /// Backtracking could not find a step satisfying the sufficient-decrease condition.
    #[error(
        "backtracking failed at iteration {iteration}: no step satisfied the sufficient-decrease \
         condition after {attempts} increases of L (last L = {last_l:e})"
    )]
    Backtracking {
        /// FISTA iteration.
        iteration: usize,
        /// Number of increases of L tried.
        attempts: usize,
        /// The last Lipschitz estimate tried.
        last_l: f64,
    },
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`"reading"`, `"writing"`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A `.npy` file is malformed or has an unsupported type or layout.
    #[error("reading {path}: {detail}")]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A JSON document (report, manifest) could not be produced or parsed.
    #[error("JSON {path}: {detail}")]
    Json {
        /// The file, or a description of the document.
        path: PathBuf,
        /// The serde error.
        detail: String,
    },
    /// An error from a data set reader (MNIST, natural patches).
    #[error(transparent)]
    Data(#[from] DataError),
    /// A checkpoint directory is missing, corrupt, or does not fit what was asked of it.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Training was stopped (Ctrl-C, or an observer) before it finished; the last complete
    /// checkpoint, if any, is intact.
    #[error("training interrupted during epoch {epoch}; the last complete checkpoint is intact")]
    Interrupted {
        /// The epoch (0-based) that was running.
        epoch: usize,
    },
    /// Another live process is writing checkpoints into this run directory.
    #[error(
        "run directory {dir} is in use by process {pid} (its lock file .lock); wait for it, \
         choose another --out, or remove the lock file if that process is not a varsparse run"
    )]
    RunLocked {
        /// The run directory.
        dir: PathBuf,
        /// The process holding the lock.
        pid: u32,
    },
    /// No data directory was found: neither `--data-dir`, nor the environment variable
    /// `VARSPARSE_DATA`, nor the crate's own `data/` (see [`crate::data::spec::resolve_data_dir`]).
    #[error(
        "no data directory found; tried: {}; pass --data-dir DIR or set VARSPARSE_DATA",
        .tried.join("; ")
    )]
    NoDataDir {
        /// Every place tried, each with why it was not used.
        tried: Vec<String>,
    },
    /// The CUDA backend cannot start: a library is missing or there is no such device.
    #[error("CUDA unavailable: {0}")]
    CudaUnavailable(String),
    /// A collective operation between the processes of a distributed run failed, or the run's
    /// ranks disagree (docs/SCALING.md).
    #[error("distributed run: {0}")]
    Comm(String),
    /// Drawing a figure failed.
    #[error("drawing the figure `{what}`: {detail}")]
    Figure {
        /// The figure (its title or file).
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// A compute backend failed (e.g. a device error).
    #[error("backend {backend}: {detail}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// What failed.
        detail: String,
    },
}

/// `std::result::Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Convenience constructor for [`Error::Shape`].
    pub fn shape(context: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Shape {
            context: context.into(),
            detail: detail.into(),
        }
    }

    /// Convenience constructor for [`Error::InvalidParameter`].
    pub fn param(
        name: &'static str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidParameter {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

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
