//! Flag groups shared by several commands (flattened into their `Args`), and the parsers of
//! typed values. The hyper-parameter overrides are the library's own flag group,
//! `varsparse::train::ParamOverrides` (a `clap::Args` under the `cli` feature).

use std::path::{Path, PathBuf};

use clap::Args;
use varsparse::backend::Device;
use varsparse::data::spec::{DataOptions, LoadedData, parse_image_shape, resolve_data_dir};
use varsparse::data::{DataSpec, SplitName};
use varsparse::train::checkpoint;
use varsparse::{Error, Preset, Result};

/// `--device`: the library's own names (`cpu`, `cuda`, `cuda:N`), through [`Device`]'s
/// `FromStr`; a bad name is a usage error (exit code 2).
pub fn parse_device(s: &str) -> std::result::Result<Device, String> {
    s.parse::<Device>().map_err(|e| e.to_string())
}

/// Where training data comes from.
#[derive(Args, Default)]
pub struct DataArgs {
    /// The data directory holding mnist/ and natural/ (default: $VARSPARSE_DATA, else the
    /// crate's data/ this binary was built with).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Train on your own samples (n, d) instead of the preset's data.
    #[arg(long, value_name = "Y.npy")]
    pub input: Option<PathBuf>,
    /// Validation samples for --input (default: a seeded 10% hold-out).
    #[arg(long, value_name = "V.npy", requires = "input")]
    val: Option<PathBuf>,
    /// The image shape of a sample of --input, HxW.
    #[arg(long, value_name = "HxW", requires = "input")]
    image_shape: Option<String>,
    /// PSNR pixel scale of --input samples (default 1).
    #[arg(long, value_name = "F", requires = "input")]
    pixel_scale: Option<f64>,
    /// MNIST: use only the first N training images (quick runs).
    #[arg(long, value_name = "N", conflicts_with = "input")]
    pub train_limit: Option<usize>,
    /// Seed of the train/validation split.
    #[arg(long, value_name = "S")]
    split_seed: Option<u64>,
    /// Patches: numbers of training, validation and test patches (default 200000,20000,20000).
    #[arg(
        long,
        value_name = "N,N,N",
        value_delimiter = ',',
        conflicts_with = "input"
    )]
    pub patches: Option<Vec<usize>>,
}

impl DataArgs {
    /// Whether a flag choosing the data (not only how it is split) is given.
    pub fn chooses_data(&self) -> bool {
        self.data_dir.is_some()
            || self.input.is_some()
            || self.train_limit.is_some()
            || self.patches.is_some()
    }

    /// The data spec the flags describe: the user's `.npy` samples, or `preset`'s data set;
    /// `None` without either.
    pub fn spec(&self, preset: Option<Preset>) -> Result<Option<DataSpec>> {
        if let Some(input) = &self.input {
            return Ok(Some(DataSpec::Npy {
                train: input.clone(),
                val: self.val.clone(),
                image_shape: self
                    .image_shape
                    .as_deref()
                    .map(parse_image_shape)
                    .transpose()?,
                pixel_scale: self.pixel_scale.unwrap_or(1.0),
                split_seed: self.split_seed.unwrap_or(0),
            }));
        }
        let Some(preset) = preset else {
            return Ok(None);
        };
        let patches = match self.patches.as_deref() {
            None => None,
            Some(&[a, b, c]) => Some([a, b, c]),
            Some(v) => {
                return Err(Error::param(
                    "patches",
                    format!("{v:?}"),
                    "expected three counts: train,val,test",
                ));
            }
        };
        let opts = DataOptions {
            split_seed: self.split_seed,
            train_limit: self.train_limit,
            patches,
        };
        let root = resolve_data_dir(self.data_dir.as_deref())?;
        DataSpec::for_kind(preset.data(), &root, &opts).map(Some)
    }
}

/// The data a checkpoint was trained on, read from `data_dir` instead of the recorded
/// directory when given.
pub fn model_data(model_dir: &Path, data_dir: Option<&Path>) -> Result<DataSpec> {
    let spec = checkpoint::recorded_data(model_dir)?;
    Ok(match data_dir {
        Some(d) => spec.with_root(d),
        None => spec,
    })
}

/// The data a checkpoint was trained on, loaded, with `split` checked to exist.
pub fn load_model_split(
    model_dir: &Path,
    data_dir: Option<&Path>,
    split: SplitName,
) -> Result<LoadedData> {
    let data = model_data(model_dir, data_dir)?.load()?;
    data.get(split)?;
    Ok(data)
}

/// The directory a model directory sits in (`runs/x` for `runs/x/best`), or `.`.
pub fn parent_dir(model: &Path) -> PathBuf {
    match model.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `create_dir_all` with a typed error.
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "creating",
        path: dir.to_path_buf(),
        source,
    })
}
