//! Where a run's data comes from, as a serialisable specification ([`DataSpec`]) that a checkpoint
//! records, and the loaded splits ([`LoadedData`]).

use std::path::{Path, PathBuf};

use ndarray::{Array2, s};

use crate::data::samples::{PixelScale, Samples, TrainData};
use crate::data::{self, PatchParams, PatchSet};
use crate::error::{Error, Result};
use crate::io::read_npy_f32;

/// Which bundled data set a preset trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// MNIST (`data/mnist`).
    Mnist,
    /// Natural-image patches (`data/natural`).
    Patches,
}

/// A data source.
///
/// # Examples
///
/// Your own samples from an `.npy` file (rows are samples); without a validation file, 10% of
/// the rows are held out by a seeded permutation:
///
/// ```
/// use ndarray::Array2;
/// use varsparse::data::DataSpec;
///
/// let dir = std::env::temp_dir().join(format!("varsparse-spec-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let y = Array2::<f32>::from_shape_fn((100, 16), |(i, j)| ((i * j) % 7) as f32);
/// varsparse::io::write_npy_f32(&dir.join("y.npy"), &y)?;
/// let spec = DataSpec::Npy {
///     train: dir.join("y.npy"),
///     val: None,
///     image_shape: Some((4, 4)),
///     pixel_scale: 1.0,
///     split_seed: 0,
/// };
/// let data = spec.load()?;
/// assert_eq!((data.train.x.nrows(), data.val.x.nrows()), (90, 10));
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), varsparse::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum DataSpec {
    /// MNIST from a directory of IDX files.
    Mnist {
        /// The directory (e.g. `data/mnist`).
        dir: PathBuf,
        /// The seed of the 55,000 / 5,000 split ([`data::DEFAULT_SPLIT_SEED`] in the presets).
        split_seed: u64,
        /// Keep only the first N training images (quick runs).
        train_limit: Option<usize>,
    },
    /// Natural-image patches generated from a directory of photographs.
    Patches {
        /// The directory (e.g. `data/natural`).
        dir: PathBuf,
        /// Training patches.
        n_train: usize,
        /// Validation patches.
        n_val: usize,
        /// Test patches.
        n_test: usize,
        /// The crops' seed.
        seed: u64,
    },
    /// The user's own samples: an `.npy` `(n, d)`; without a validation file, 10% of the rows
    /// (a seeded permutation) are held out.
    Npy {
        /// Training samples (or all samples).
        train: PathBuf,
        /// Validation samples.
        val: Option<PathBuf>,
        /// The image shape of a sample, for display.
        image_shape: Option<(usize, usize)>,
        /// PSNR pixel scale of the samples.
        pixel_scale: f64,
        /// Seed of the hold-out split.
        split_seed: u64,
    },
}

/// One loaded split: samples and, for patches, the per-element pixel scale and labels if any.
#[derive(Clone, Debug)]
pub struct Split {
    /// Samples `(n, d)`.
    pub x: Array2<f32>,
    /// Per-element pixel scale `(n, d)` (patches), or `None` for the constant one.
    pub scale_map: Option<Array2<f32>>,
    /// Class labels, when the data has them (MNIST).
    pub labels: Option<Vec<u8>>,
}

/// Training, validation and (when the source has one) test splits.
#[derive(Clone, Debug)]
pub struct LoadedData {
    /// Training split.
    pub train: Split,
    /// Validation split.
    pub val: Split,
    /// Test split.
    pub test: Option<Split>,
    /// The constant PSNR pixel scale (when the splits have no map).
    pub pixel_scale: f64,
    /// Image shape of a sample.
    pub image_shape: Option<(usize, usize)>,
}

fn patch_split(p: PatchSet) -> Split {
    let map = p.local_std.mapv(|s| s * data::patches::GRAY_STD);
    Split {
        x: p.patches,
        scale_map: Some(map),
        labels: None,
    }
}

impl DataSpec {
    /// The bundled data directory: `./data` when it exists, else the crate's own `data/`.
    pub fn default_dir() -> PathBuf {
        let local = PathBuf::from("data");
        if local.is_dir() {
            local
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
        }
    }

    /// Loads the splits.
    ///
    /// # Errors
    /// [`Error::Data`] for the readers' errors; [`Error::Npy`] / [`Error::Shape`] for `.npy`
    /// sources.
    pub fn load(&self) -> Result<LoadedData> {
        match self {
            DataSpec::Mnist {
                dir,
                split_seed,
                train_limit,
            } => {
                let m = data::load_mnist_subset(dir, *split_seed, *train_limit)?;
                let split = |s: data::mnist::Split| Split {
                    x: s.images,
                    scale_map: None,
                    labels: Some(s.labels),
                };
                Ok(LoadedData {
                    image_shape: Some((m.rows, m.cols)),
                    train: split(m.train),
                    val: split(m.val),
                    test: Some(split(m.test)),
                    pixel_scale: data::MNIST_STD as f64,
                })
            }
            DataSpec::Patches {
                dir,
                n_train,
                n_val,
                n_test,
                seed,
            } => {
                let params = PatchParams {
                    n_train: *n_train,
                    n_val: *n_val,
                    n_test: *n_test,
                    seed: *seed,
                    ..PatchParams::default()
                };
                let p = data::generate_patches(dir, &params)?;
                let side = data::patches::PATCH_SIZE;
                Ok(LoadedData {
                    train: patch_split(p.train),
                    val: patch_split(p.val),
                    test: Some(patch_split(p.test)),
                    pixel_scale: 1.0,
                    image_shape: Some((side, side)),
                })
            }
            DataSpec::Npy {
                train,
                val,
                image_shape,
                pixel_scale,
                split_seed,
            } => {
                let x = read_npy_f32(train)?;
                if let Some((h, w)) = image_shape
                    && h * w != x.ncols()
                {
                    return Err(Error::shape(
                        "--image-shape",
                        format!(
                            "{h}x{w} = {} pixels, but the samples have {} columns",
                            h * w,
                            x.ncols()
                        ),
                    ));
                }
                let plain = |x| Split {
                    x,
                    scale_map: None,
                    labels: None,
                };
                let (tr, va) = match val {
                    Some(v) => (x, read_npy_f32(v)?),
                    None => {
                        let n = x.nrows();
                        let n_val = n / 10;
                        let perm =
                            data::sampling::permutation(n, &mut crate::rng::rng(*split_seed));
                        let take = |idx: &[usize]| x.select(ndarray::Axis(0), idx);
                        (take(&perm[n_val..]), take(&perm[..n_val]))
                    }
                };
                Ok(LoadedData {
                    train: plain(tr),
                    val: plain(va),
                    test: None,
                    pixel_scale: *pixel_scale,
                    image_shape: *image_shape,
                })
            }
        }
    }
}

impl Split {
    /// The split as [`Samples`] with `pixel_scale` where it has no map.
    pub fn samples(&self, pixel_scale: f64) -> Samples<'_> {
        Samples {
            x: self.x.view(),
            scale: match &self.scale_map {
                Some(m) => PixelScale::PerElement(m.view()),
                None => PixelScale::Constant(pixel_scale),
            },
        }
    }

    /// The first `n` samples (or all).
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.x.nrows());
        Split {
            x: self.x.slice(s![..n, ..]).to_owned(),
            scale_map: self
                .scale_map
                .as_ref()
                .map(|m| m.slice(s![..n, ..]).to_owned()),
            labels: self.labels.as_ref().map(|l| l[..n].to_vec()),
        }
    }
}

impl LoadedData {
    /// The training and validation splits for [`crate::train::ValidParams::fit`].
    pub fn train_data(&self) -> TrainData<'_> {
        TrainData {
            train: self.train.samples(self.pixel_scale),
            val: self.val.samples(self.pixel_scale),
            image_shape: self.image_shape,
        }
    }

    /// A split by name: `"train"`, `"val"` or `"test"`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for another name or a source without a test split.
    pub fn split(&self, name: &str) -> Result<&Split> {
        match name {
            "train" => Ok(&self.train),
            "val" | "validation" => Ok(&self.val),
            "test" => self
                .test
                .as_ref()
                .ok_or_else(|| Error::param("split", name, "this data source has no test split")),
            _ => Err(Error::param("split", name, "expected train, val or test")),
        }
    }
}

/// Parses an image shape `"HxW"` (e.g. `"28x28"`).
///
/// # Errors
/// [`Error::InvalidParameter`] for anything else.
pub fn parse_image_shape(s: &str) -> Result<(usize, usize)> {
    let bad = || {
        Error::param(
            "image shape",
            s,
            "expected HxW with positive integers, e.g. 28x28",
        )
    };
    let (h, w) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let h: usize = h.trim().parse().map_err(|_| bad())?;
    let w: usize = w.trim().parse().map_err(|_| bad())?;
    if h == 0 || w == 0 {
        return Err(bad());
    }
    Ok((h, w))
}
