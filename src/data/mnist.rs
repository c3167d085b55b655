//! MNIST: the IDX reader, pixel normalisation and the seeded train/validation split.
//!
//! The IDX format: a big-endian `u32` magic number (`0x00000803` for a 3-D array of `u8`
//! images, `0x00000801` for a 1-D array of `u8` labels), one big-endian `u32` per dimension, then
//! the data in row-major order. Files whose name ends in `.gz` are gunzipped first. A reader
//! accepts a file only if the magic number is right, every image dimension is non-zero and the
//! data is exactly as long as the dimensions say.
//!
//! [`load_mnist`] follows the released code (docs/CONVENTIONS.md §7): pixels `x / 255`, then
//! `(x - 0.1307) / 0.3081`; 5,000 validation images drawn from the 60,000 training images by a
//! seeded permutation, the other 55,000 for training; the 10,000 test images in file order.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::DataError;
use super::sampling::permutation;

/// Mean of MNIST's training pixels on the `[0, 1]` scale (subtracted after dividing by 255).
pub const MNIST_MEAN: f32 = 0.1307;

/// Standard deviation of MNIST's training pixels on the `[0, 1]` scale.
pub const MNIST_STD: f32 = 0.3081;

/// The split seed every preset uses: `load_mnist(dir, DEFAULT_SPLIT_SEED)` gives the
/// train/validation split all reported numbers are measured on.
pub const DEFAULT_SPLIT_SEED: u64 = 0;

/// Number of validation images taken from the 60,000 training images.
pub const MNIST_VAL_SIZE: usize = 5_000;

/// The most bytes an IDX file may hold once decompressed (1 GiB; MNIST's training images are
/// 47 MB): a larger file, or a gzip stream that expands past it, is refused.
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// Magic number of an IDX file holding a 3-D array of `u8` (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;

/// Magic number of an IDX file holding a 1-D array of `u8` (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// Images read from an IDX file, as stored (`u8`, 0 = background).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// One image per row, `(n, rows * cols)`, each image flattened row-major.
    pub pixels: Array2<u8>,
    /// Height of an image.
    pub rows: usize,
    /// Width of an image.
    pub cols: usize,
}

/// One split of MNIST.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Normalised images, `(n, rows * cols)`: `(x / 255 - MNIST_MEAN) / MNIST_STD`, so a
    /// background pixel is about -0.4242 and a full-intensity one about 2.8215.
    pub images: Array2<f32>,
    /// The digit shown by each image, 0–9.
    pub labels: Vec<u8>,
    /// For each sample, its index in the IDX file it was read from (the training file for the
    /// training and validation splits, the test file for the test split).
    pub indices: Vec<usize>,
}

impl Split {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split holds no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// MNIST, split as in the paper: 55,000 training, 5,000 validation, 10,000 test images.
#[derive(Debug, Clone, PartialEq)]
pub struct Mnist {
    /// Training images, in the order of the seeded permutation.
    pub train: Split,
    /// Validation images, in the order of the seeded permutation.
    pub val: Split,
    /// Test images, in file order.
    pub test: Split,
    /// Height of an image (28 for MNIST).
    pub rows: usize,
    /// Width of an image (28 for MNIST).
    pub cols: usize,
}

/// The names each MNIST file may have: as shipped in `data/mnist/` and as distributed by
/// LeCun's site, each gzipped or not.
const TRAIN_IMAGES: [&str; 4] = [
    "train-images.idx3-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "train-images.idx3-ubyte",
    "train-images-idx3-ubyte",
];
const TRAIN_LABELS: [&str; 4] = [
    "train-labels.idx1-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "train-labels.idx1-ubyte",
    "train-labels-idx1-ubyte",
];
const TEST_IMAGES: [&str; 4] = [
    "t10k-images.idx3-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-images.idx3-ubyte",
    "t10k-images-idx3-ubyte",
];
const TEST_LABELS: [&str; 4] = [
    "t10k-labels.idx1-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-labels.idx1-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Loads MNIST from `dir` and splits the training file into 55,000 training and 5,000
/// validation images with the seed `split_seed` (see [`load_mnist_subset`] for the details).
///
/// `dir` must hold the four IDX files, named as in `data/mnist/`
/// (`train-images.idx3-ubyte.gz`, ...) or as on LeCun's site (`train-images-idx3-ubyte.gz`,
/// ...), gzipped or not.
///
/// # Errors
///
/// [`DataError`] naming the file when a file is missing, unreadable, not valid gzip, has the
/// wrong magic number or a bad header, holds more or less data than its header says, when the
/// images and labels of a split differ in number, a label is not 0–9, the training and test
/// images differ in size, or the training file holds no more than 5,000 images.
pub fn load_mnist(dir: &Path, split_seed: u64) -> Result<Mnist, DataError> {
    load_mnist_subset(dir, split_seed, None)
}

/// Like [`load_mnist`], keeping at most `max_train` training images.
///
/// The split is made over the whole training file whatever `max_train` is: the permutation of
/// its indices is drawn with a Fisher–Yates shuffle ([`super::sampling::shuffle`]) driven by
/// `ChaCha8Rng::seed_from_u64(split_seed)`; the first 5,000 indices of the permutation are the
/// validation split and the rest the training split, each kept in permuted order. `max_train`
/// truncates the training split to its first `max_train` images, so a subset is a prefix of the
/// full training split and the validation split does not depend on it. The test split is always
/// complete. (The whole training file is still read and checked; the saving is in the
/// normalised copies.)
///
/// # Errors
///
/// As [`load_mnist`].
pub fn load_mnist_subset(
    dir: &Path,
    split_seed: u64,
    max_train: Option<usize>,
) -> Result<Mnist, DataError> {
    let train_images_path = find_file(dir, &TRAIN_IMAGES, "MNIST training images")?;
    let train_labels_path = find_file(dir, &TRAIN_LABELS, "MNIST training labels")?;
    let test_images_path = find_file(dir, &TEST_IMAGES, "MNIST test images")?;
    let test_labels_path = find_file(dir, &TEST_LABELS, "MNIST test labels")?;

    let (train_images, train_labels) = read_idx_pair(&train_images_path, &train_labels_path)?;
    let (test_images, test_labels) = read_idx_pair(&test_images_path, &test_labels_path)?;
    if (train_images.rows, train_images.cols) != (test_images.rows, test_images.cols) {
        return Err(DataError::ImageSizeMismatch {
            train: train_images_path,
            train_rows: train_images.rows,
            train_cols: train_images.cols,
            test: test_images_path,
            test_rows: test_images.rows,
            test_cols: test_images.cols,
        });
    }

    let n = train_labels.len();
    if n <= MNIST_VAL_SIZE {
        return Err(DataError::TooFewSamples {
            path: train_images_path,
            found: n,
            needed: MNIST_VAL_SIZE + 1,
            why: "5,000 for validation and at least one for training",
        });
    }
    let perm = permutation(n, &mut ChaCha8Rng::seed_from_u64(split_seed));
    let (val_idx, train_idx) = perm.split_at(MNIST_VAL_SIZE);
    let train_idx = match max_train {
        Some(m) => &train_idx[..m.min(train_idx.len())],
        None => train_idx,
    };

    let take = |images: &IdxImages, labels: &[u8], idx: &[usize]| Split {
        images: normalise(images.pixels.select(Axis(0), idx).view()),
        labels: idx.iter().map(|&i| labels[i]).collect(),
        indices: idx.to_vec(),
    };
    let train = take(&train_images, &train_labels, train_idx);
    let val = take(&train_images, &train_labels, val_idx);
    let test = Split {
        images: normalise(test_images.pixels.view()),
        indices: (0..test_labels.len()).collect(),
        labels: test_labels,
    };
    Ok(Mnist {
        train,
        val,
        test,
        rows: train_images.rows,
        cols: train_images.cols,
    })
}

/// Maps raw pixels to the normalised scale: `(p / 255 - MNIST_MEAN) / MNIST_STD`, in `f32`, in
/// the same order of operations as torchvision's `ToTensor` + `Normalize`.
pub fn normalise(pixels: ArrayView2<'_, u8>) -> Array2<f32> {
    pixels.mapv(|p| (f32::from(p) / 255.0 - MNIST_MEAN) / MNIST_STD)
}

/// Maps normalised values back to the `[0, 1]` pixel scale: `x * MNIST_STD + MNIST_MEAN`
/// (no clamping).
pub fn denormalise(x: ArrayView2<'_, f32>) -> Array2<f32> {
    x.mapv(|v| v * MNIST_STD + MNIST_MEAN)
}

/// Reads an images file and its labels file and checks that they hold as many samples and that
/// every label is 0–9.
///
/// # Errors
///
/// Those of [`read_idx_images`] and [`read_idx_labels`], [`DataError::CountMismatch`] and
/// [`DataError::BadLabel`].
pub fn read_idx_pair(
    images_path: &Path,
    labels_path: &Path,
) -> Result<(IdxImages, Vec<u8>), DataError> {
    let images = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path)?;
    if images.pixels.nrows() != labels.len() {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            n_images: images.pixels.nrows(),
            labels: labels_path.to_path_buf(),
            n_labels: labels.len(),
        });
    }
    if let Some((index, &value)) = labels.iter().enumerate().find(|&(_, &l)| l > 9) {
        return Err(DataError::BadLabel {
            path: labels_path.to_path_buf(),
            index,
            value,
        });
    }
    Ok((images, labels))
}

/// Reads an IDX images file (magic `0x00000803`, dimensions `n, rows, cols`), gunzipping it
/// first if its name ends in `.gz`.
///
/// # Errors
///
/// [`DataError::Io`] if the file cannot be read, [`DataError::Gzip`] if it is not valid gzip,
/// [`DataError::BadMagic`] for another magic number, [`DataError::BadHeader`] for a short header
/// or a zero or overflowing image size, [`DataError::DataLength`] unless exactly
/// `n * rows * cols` bytes follow the header.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let bytes = read_file(path)?;
    let (dims, data) = parse_idx(path, &bytes, IDX_IMAGES_MAGIC, "images")?;
    let [n, rows, cols] = [dims[0], dims[1], dims[2]];
    if rows == 0 || cols == 0 {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            detail: format!("image size {rows}x{cols} has a zero dimension"),
        });
    }
    let overflow = || DataError::BadHeader {
        path: path.to_path_buf(),
        detail: format!("dimensions {n}x{rows}x{cols} overflow the address space"),
    };
    let d = rows.checked_mul(cols).ok_or_else(overflow)?;
    let expected = n.checked_mul(d).ok_or_else(overflow)?;
    check_length(path, expected, data.len())?;
    let pixels =
        Array2::from_shape_vec((n, d), data.to_vec()).map_err(|e| DataError::BadHeader {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    Ok(IdxImages { pixels, rows, cols })
}

/// Reads an IDX labels file (magic `0x00000801`, one dimension `n`), gunzipping it first if its
/// name ends in `.gz`. The values are not checked (see [`read_idx_pair`]).
///
/// # Errors
///
/// As [`read_idx_images`].
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = read_file(path)?;
    let (dims, data) = parse_idx(path, &bytes, IDX_LABELS_MAGIC, "labels")?;
    check_length(path, dims[0], data.len())?;
    Ok(data.to_vec())
}

/// The first of `names` that exists in `dir`.
fn find_file(dir: &Path, names: &[&str], what: &'static str) -> Result<PathBuf, DataError> {
    names
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::MissingFile {
            dir: dir.to_path_buf(),
            what,
            tried: names.join(", "),
        })
}

/// The whole content of `path`, gunzipped if the name ends in `.gz`.
fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let io_err = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let too_large = || DataError::BadHeader {
        path: path.to_path_buf(),
        detail: format!(
            "more than {MAX_IDX_BYTES} bytes (uncompressed), the most varsparse reads from an \
             IDX file"
        ),
    };
    let file = File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
    {
        if file.metadata().map_err(io_err)?.len() > MAX_IDX_BYTES {
            return Err(too_large());
        }
        BufReader::new(file)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        return Ok(bytes);
    }
    // a small gzip file can expand without bound: stop one byte past the limit
    GzDecoder::new(BufReader::new(file))
        .take(MAX_IDX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| DataError::Gzip {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_IDX_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Checks the magic number and splits an IDX file into its dimensions and its data.
fn parse_idx<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    what: &'static str,
) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    let word = |i: usize| -> Option<u32> {
        let b = bytes.get(4 * i..4 * i + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found = word(0).ok_or_else(|| DataError::BadHeader {
        path: path.to_path_buf(),
        detail: format!(
            "the file is {} bytes, too short for a magic number",
            bytes.len()
        ),
    })?;
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected: magic,
            found,
            what,
        });
    }
    // The low byte of the magic number is the number of dimensions.
    let n_dims = (magic & 0xff) as usize;
    let header_len = 4 * (1 + n_dims);
    let dims = (1..=n_dims)
        .map(|i| word(i).map(|d| d as usize))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| DataError::BadHeader {
            path: path.to_path_buf(),
            detail: format!(
                "the file is {} bytes, shorter than the {header_len}-byte header of {n_dims} \
                 dimension(s)",
                bytes.len()
            ),
        })?;
    Ok((dims, &bytes[header_len..]))
}

fn check_length(path: &Path, expected: usize, found: usize) -> Result<(), DataError> {
    if expected == found {
        Ok(())
    } else {
        Err(DataError::DataLength {
            path: path.to_path_buf(),
            expected,
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(magic: u32, dims: &[u32]) -> Vec<u8> {
        std::iter::once(magic)
            .chain(dims.iter().copied())
            .flat_map(u32::to_be_bytes)
            .collect()
    }

    #[test]
    fn parse_idx_reads_dimensions_and_rejects_short_headers() {
        let p = Path::new("x");
        let mut bytes = header(IDX_IMAGES_MAGIC, &[2, 3, 4]);
        bytes.extend([7u8; 24]);
        let (dims, data) = parse_idx(p, &bytes, IDX_IMAGES_MAGIC, "images").unwrap();
        assert_eq!(dims, vec![2, 3, 4]);
        assert_eq!(data.len(), 24);
        let err = parse_idx(p, &bytes[..10], IDX_IMAGES_MAGIC, "images").unwrap_err();
        assert!(matches!(err, DataError::BadHeader { .. }), "{err}");
        let err = parse_idx(p, &bytes[..3], IDX_IMAGES_MAGIC, "images").unwrap_err();
        assert!(matches!(err, DataError::BadHeader { .. }), "{err}");
    }

    #[test]
    fn normalise_matches_the_reference_constants() {
        let px = Array2::from_shape_vec((1, 3), vec![0u8, 255, 51]).unwrap();
        let x = normalise(px.view());
        assert!((x[[0, 0]] + 0.1307 / 0.3081).abs() < 1e-6);
        assert!((x[[0, 1]] - (1.0 - 0.1307) / 0.3081).abs() < 1e-6);
        let back = denormalise(x.view());
        assert!((back[[0, 2]] - 0.2).abs() < 1e-6);
    }
}
