//! Where a run's data comes from, as a serialisable specification ([`DataSpec`]) that a checkpoint
//! records, and the loaded splits ([`LoadedData`]).

use std::path::{Path, PathBuf};

use ndarray::{Array2, s};

use crate::data::samples::{PixelScale, RowShard, Samples, TrainData};
use crate::data::{self, PatchParams, PatchSet};
use crate::error::{Error, Result};
use crate::io::{NpyFile, read_npy_f32};

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

/// Which split of a data set. Names (`train`, `val`, `test`; `validation` is accepted for
/// `val`) are serde's, shared with the CLI's `--split` (a `clap::ValueEnum` derived from these
/// variants, feature `cli`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum SplitName {
    /// The training split.
    Train,
    /// The validation split (model selection).
    #[serde(alias = "validation")]
    #[cfg_attr(feature = "cli", value(alias = "validation"))]
    Val,
    /// The test split.
    Test,
}

impl std::str::FromStr for SplitName {
    type Err = Error;

    fn from_str(s: &str) -> Result<SplitName> {
        match s {
            "train" => Ok(SplitName::Train),
            "val" | "validation" => Ok(SplitName::Val),
            "test" => Ok(SplitName::Test),
            _ => Err(Error::param("split", s, "expected train, val or test")),
        }
    }
}

impl std::fmt::Display for SplitName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitName::Train => "train",
            SplitName::Val => "val",
            SplitName::Test => "test",
        })
    }
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
    /// `Some` after [`LoadedData::keep_train_shard`]: `train` holds only these rows of the
    /// whole training split.
    pub train_shard: Option<RowShard>,
}

fn patch_split(p: PatchSet) -> Split {
    let map = p.local_std.mapv(|s| s * data::patches::GRAY_STD);
    Split {
        x: p.patches,
        scale_map: Some(map),
        labels: None,
    }
}

/// The environment variable naming the data directory when `--data-dir` is not given.
pub const DATA_DIR_ENV: &str = "VARSPARSE_DATA";

/// The crate's own `data/` directory, as it was at compile time (for `cargo run` and the tests).
pub fn builtin_data_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/data"))
}

/// The data directory (holding `mnist/` and `natural/`): `flag` when given (e.g. the CLI's
/// `--data-dir`), else the environment variable [`DATA_DIR_ENV`] (`VARSPARSE_DATA`) when set
/// and non-empty, else the crate's `data/` ([`builtin_data_dir`]) when it exists.
///
/// # Errors
/// [`Error::NoDataDir`] naming every place tried, when none applies.
pub fn resolve_data_dir(flag: Option<&Path>) -> Result<PathBuf> {
    resolve_data_dir_from(flag, std::env::var_os(DATA_DIR_ENV), builtin_data_dir())
}

/// [`resolve_data_dir`] with the environment's value and the built-in directory given
/// explicitly (for tests, or a program with its own defaults).
///
/// ```
/// use std::path::Path;
/// use varsparse::data::spec::resolve_data_dir_from;
///
/// let err = resolve_data_dir_from(None, None, Path::new("/no/such/dir")).unwrap_err();
/// let msg = err.to_string();
/// assert!(msg.contains("--data-dir") && msg.contains("VARSPARSE_DATA") && msg.contains("/no/such/dir"));
/// assert_eq!(
///     resolve_data_dir_from(None, Some("/elsewhere".into()), Path::new("/no/such/dir"))?,
///     Path::new("/elsewhere")
/// );
/// # Ok::<(), varsparse::Error>(())
/// ```
///
/// # Errors
/// [`Error::NoDataDir`] naming every place tried, when none applies.
pub fn resolve_data_dir_from(
    flag: Option<&Path>,
    env: Option<std::ffi::OsString>,
    builtin: &Path,
) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = env.filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if builtin.is_dir() {
        return Ok(builtin.to_path_buf());
    }
    Err(Error::NoDataDir {
        tried: vec![
            "--data-dir (not given)".into(),
            format!("the environment variable {DATA_DIR_ENV} (not set)"),
            format!(
                "the data directory this binary was built with, {} (not a directory)",
                builtin.display()
            ),
        ],
    })
}

/// How a preset's bundled data is drawn (every field optional: the presets' defaults apply).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataOptions {
    /// MNIST: the seed of the train/validation split; patches: the crops' seed.
    pub split_seed: Option<u64>,
    /// MNIST: keep only the first N training images.
    pub train_limit: Option<usize>,
    /// Patches: training, validation and test patches (default 200,000 / 20,000 / 20,000).
    pub patches: Option<[usize; 3]>,
}

impl DataSpec {
    /// The bundled data directory, as [`resolve_data_dir`] finds it without a flag, or the
    /// crate's `data/` when nothing is found (loading from it then names the missing files).
    pub fn default_dir() -> PathBuf {
        resolve_data_dir(None).unwrap_or_else(|_| builtin_data_dir().to_path_buf())
    }

    /// The data a preset of kind `kind` trains on, under the data directory `root`
    /// (`root/mnist` or `root/natural`).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an option of the other data set (`train_limit` with
    /// patches, `patches` with MNIST).
    pub fn for_kind(kind: DataKind, root: &Path, opts: &DataOptions) -> Result<DataSpec> {
        match kind {
            DataKind::Mnist => {
                if opts.patches.is_some() {
                    return Err(Error::param(
                        "patches",
                        "given",
                        "--patches applies to the patches-* presets, not MNIST",
                    ));
                }
                Ok(DataSpec::Mnist {
                    dir: root.join("mnist"),
                    split_seed: opts.split_seed.unwrap_or(data::DEFAULT_SPLIT_SEED),
                    train_limit: opts.train_limit,
                })
            }
            DataKind::Patches => {
                if opts.train_limit.is_some() {
                    return Err(Error::param(
                        "train-limit",
                        "given",
                        "--train-limit applies to MNIST; use --patches N,N,N",
                    ));
                }
                let [n_train, n_val, n_test] = opts.patches.unwrap_or([200_000, 20_000, 20_000]);
                Ok(DataSpec::Patches {
                    dir: root.join("natural"),
                    n_train,
                    n_val,
                    n_test,
                    seed: opts.split_seed.unwrap_or(data::patches::DEFAULT_PATCH_SEED),
                })
            }
        }
    }

    /// The same data read from another data directory `root` (`root/mnist` or
    /// `root/natural`), e.g. a checkpoint's recorded data on another machine; `.npy` sources
    /// are unchanged.
    pub fn with_root(self, root: &Path) -> DataSpec {
        match self {
            DataSpec::Mnist {
                split_seed,
                train_limit,
                ..
            } => DataSpec::Mnist {
                dir: root.join("mnist"),
                split_seed,
                train_limit,
            },
            DataSpec::Patches {
                n_train,
                n_val,
                n_test,
                seed,
                ..
            } => DataSpec::Patches {
                dir: root.join("natural"),
                n_train,
                n_val,
                n_test,
                seed,
            },
            spec => spec,
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
                    train_shard: None,
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
                    train_shard: None,
                })
            }
            DataSpec::Npy { .. } => self.load_npy(0, 1),
        }
    }

    /// Loads the splits as rank `rank` of `ranks` needs them for a data-parallel fit: its
    /// shard of the training split (rows `comm::shard(n, rank, ranks)` of its `n`, recorded in
    /// [`LoadedData::train_shard`]), the validation and test splits whole; with one rank,
    /// [`DataSpec::load`]. The result is [`DataSpec::load`] followed by
    /// [`LoadedData::keep_train_shard`], but an `.npy` source reads only the rows the rank
    /// keeps (a C-order file: its training rows, and with no validation file the held-out rows
    /// too, by [`NpyFile::read_row_indices`](crate::io::NpyFile::read_row_indices)), so no rank
    /// holds the whole training set. MNIST and patches are loaded whole and then cut (their
    /// training rows are a seeded selection of the files' rows and one seeded stream of crops;
    /// docs/SCALING.md).
    ///
    /// # Errors
    /// As [`DataSpec::load`] and [`LoadedData::keep_train_shard`].
    pub fn load_shard(&self, rank: usize, ranks: usize) -> Result<LoadedData> {
        match self {
            DataSpec::Npy { .. } => self.load_npy(rank, ranks),
            _ => {
                let mut data = self.load()?;
                data.keep_train_shard(rank, ranks)?;
                Ok(data)
            }
        }
    }

    /// [`DataSpec::load_shard`] of an `.npy` source (`ranks = 1`: the whole training split).
    fn load_npy(&self, rank: usize, ranks: usize) -> Result<LoadedData> {
        let DataSpec::Npy {
            train,
            val,
            image_shape,
            pixel_scale,
            split_seed,
        } = self
        else {
            return Err(Error::param(
                "data",
                "not .npy",
                "load_npy on another source",
            ));
        };
        let mut file = NpyFile::open(train)?;
        let (n, d) = file.dim2()?;
        if let Some((h, w)) = image_shape
            && h * w != d
        {
            return Err(Error::shape(
                "--image-shape",
                format!(
                    "{h}x{w} = {} pixels, but the samples have {d} columns",
                    h * w
                ),
            ));
        }
        let plain = |x| Split {
            x,
            scale_map: None,
            labels: None,
        };
        // the training rows of the file (all of them, or the permutation's tail) and the
        // validation samples
        let (n_train, rows_of, va) = match val {
            Some(v) => (n, None, read_npy_f32(v)?),
            None => {
                let n_val = n / 10;
                let perm = data::sampling::permutation(n, &mut crate::rng::rng(*split_seed));
                let va = file.read_row_indices(&perm[..n_val])?;
                (n - n_val, Some(perm[n_val..].to_vec()), va)
            }
        };
        let keep = RowShard::rows_to_keep(None, n_train, rank, ranks)?;
        let tr = match rows_of {
            None => file.read_rows(keep.clone())?,
            Some(rows) => file.read_row_indices(&rows[keep.clone()])?,
        };
        Ok(LoadedData {
            train: plain(tr),
            val: plain(va),
            test: None,
            pixel_scale: *pixel_scale,
            image_shape: *image_shape,
            train_shard: (ranks > 1).then_some(RowShard {
                offset: keep.start,
                n_total: n_train,
            }),
        })
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

    /// Rows `rows` of the split (samples, scale map and labels), copied.
    ///
    /// # Errors
    /// [`Error::Shape`] for rows past the end.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Result<Split> {
        let n = self.x.nrows();
        if rows.start > rows.end || rows.end > n {
            return Err(Error::shape(
                "split",
                format!("rows {rows:?} of {n} samples"),
            ));
        }
        let map_rows = |m: &Array2<f32>| -> Result<Array2<f32>> {
            if m.nrows() != n {
                return Err(Error::shape(
                    "split",
                    format!(
                        "pixel-scale map is {:?}, samples are {:?}",
                        m.dim(),
                        self.x.dim()
                    ),
                ));
            }
            Ok(m.slice(s![rows.clone(), ..]).to_owned())
        };
        Ok(Split {
            x: self.x.slice(s![rows.clone(), ..]).to_owned(),
            scale_map: self.scale_map.as_ref().map(map_rows).transpose()?,
            labels: self
                .labels
                .as_ref()
                .and_then(|l| l.get(rows.clone()).map(<[u8]>::to_vec)),
        })
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
            train_shard: self.train_shard,
        }
    }

    /// Keeps only rank `rank`'s shard of the training split, rows
    /// `comm::shard(n, rank, ranks)` of its `n` (samples, scale map and labels; the rest is
    /// freed), and records it in [`LoadedData::train_shard`], so that
    /// [`LoadedData::train_data`] hands the shard to a data-parallel fit (docs/SCALING.md).
    /// Validation and test splits are kept whole. With one rank, nothing changes.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if the training split is already a shard, if `ranks` is 0
    /// or `rank` is not below it; [`Error::Shape`] for a scale map of another shape.
    pub fn keep_train_shard(&mut self, rank: usize, ranks: usize) -> Result<()> {
        let n = self.train.x.nrows();
        let rows = RowShard::rows_to_keep(self.train_shard, n, rank, ranks)?;
        if ranks == 1 {
            return Ok(());
        }
        self.train = self.train.rows(rows.clone())?;
        self.train_shard = Some(RowShard {
            offset: rows.start,
            n_total: n,
        });
        Ok(())
    }

    /// A split by name: `"train"`, `"val"` (or `"validation"`) or `"test"` (see [`SplitName`]).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for another name or a source without a test split.
    pub fn split(&self, name: &str) -> Result<&Split> {
        self.get(name.parse()?)
    }

    /// A split.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for the test split of a source without one.
    pub fn get(&self, name: SplitName) -> Result<&Split> {
        match name {
            SplitName::Train => Ok(&self.train),
            SplitName::Val => Ok(&self.val),
            SplitName::Test => self
                .test
                .as_ref()
                .ok_or_else(|| Error::param("split", name, "this data source has no test split")),
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
