//! `varsparse encode`: a model's codes for samples (its encoder's, or FISTA's).

use std::path::PathBuf;
use std::time::Instant;

use ndarray::Array2;
use varsparse::backend::{Backend, Device, OnBackend};
use varsparse::data::SplitName;
use varsparse::io::{read_npy_f32, write_json, write_npy_f32};
use varsparse::{Error, Result, SparseCoder};

use crate::args::{load_model_split, sparsity};

/// `encode`'s flags.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["input", "split"])))]
pub struct Args {
    /// The checkpoint directory (e.g. runs/mnist-vdl/best).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Samples (n, d) to encode.
    #[arg(long, value_name = "Y.npy")]
    input: Option<PathBuf>,
    /// A split of the model's data.
    #[arg(long, value_enum, value_name = "NAME")]
    split: Option<SplitName>,
    /// Where to write the codes (n, l).
    #[arg(long, value_name = "Z.npy")]
    out: PathBuf,
    /// FISTA codes warm-started from the encoder's, with the model's inference parameters.
    #[arg(long)]
    fista: bool,
    /// FISTA's per-batch report (with --fista).
    #[arg(long, value_name = "R.json", requires = "fista")]
    report: Option<PathBuf>,
    /// The data directory (for --split; default: the one the model was trained with).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// The codes, on the job's backend.
struct Job<'a>(&'a Args);

impl OnBackend for Job<'_> {
    type Output = (Array2<f32>, f64);

    fn run<B: Backend<f32>>(self, make: &dyn Fn() -> Result<B>) -> Result<Self::Output> {
        let a = self.0;
        let model = SparseCoder::load_on(make()?, &a.model)?;
        let y = match (&a.input, &a.split) {
            (Some(path), None) => read_npy_f32(path)?,
            (None, Some(split)) => load_model_split(&a.model, a.data_dir.as_deref(), *split)?
                .get(*split)?
                .x
                .clone(),
            _ => {
                return Err(Error::param(
                    "input",
                    "both",
                    "give exactly one of --input and --split",
                ));
            }
        };
        let t0 = Instant::now();
        let codes = if a.fista {
            let (z, reports) = model.encode_fista(&y)?;
            if let Some(path) = &a.report {
                write_json(path, &reports)?;
            }
            z
        } else {
            model.encode(&y)?
        };
        Ok((codes, t0.elapsed().as_secs_f64()))
    }
}

/// Runs `encode`.
pub fn run(a: Args, device: Device) -> Result<()> {
    let (codes, secs) = device.run(Job(&a))?;
    write_npy_f32(&a.out, &codes)?;
    eprintln!(
        "{} codes ({}) in {secs:.2} s, sparsity {:.1}% -> {}",
        codes.nrows(),
        if a.fista { "FISTA" } else { "encoder" },
        100.0 * sparsity(&codes),
        a.out.display()
    );
    Ok(())
}
