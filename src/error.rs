//! The crate's error type.
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
    Data(#[from] crate::data::DataError),
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
    /// The CUDA backend cannot start: a library is missing or there is no such device.
    #[error("CUDA unavailable: {0}")]
    CudaUnavailable(String),
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
