//! `varsparse encode`: a model's codes for samples (its encoder's, or FISTA's).

use std::path::PathBuf;
use std::time::Instant;

use ndarray::Array2;
use varsparse::backend::{Backend, Device, OnBackend};
use varsparse::comm::{Comm, shard_blocks};
use varsparse::data::SplitName;
use varsparse::io::{NpyFile, write_json, write_npy_f32_sharded};
use varsparse::{Error, Result, SparseCoder};

use crate::args::load_model_split;
use crate::ranks::Ranks;

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
struct Job<'a>(&'a Args, &'a dyn Comm);

impl OnBackend for Job<'_> {
    /// This rank's codes, their first row, all rows, seconds.
    type Output = (Array2<f32>, usize, usize, f64);

    fn run<B: Backend<f32>>(self, make: &dyn Fn() -> Result<B>) -> Result<Self::Output> {
        let (a, comm) = (self.0, self.1);
        let model = SparseCoder::load_on(make()?, &a.model)?;
        // whole batches of the model's batch size per rank, so that every batch (and its
        // variance statistics) is the one-process run's
        let bs = model.params().batch_size;
        let (y, rows, n) = match (&a.input, &a.split) {
            (Some(path), None) => {
                // only this rank's rows are read
                let mut f = NpyFile::open(path)?;
                let n = f.dim2()?.0;
                let rows = shard_blocks(n, bs, comm.rank(), comm.size());
                (f.read_rows(rows.clone())?, rows, n)
            }
            (None, Some(split)) => {
                let data = load_model_split(&a.model, a.data_dir.as_deref(), *split)?;
                let x = &data.get(*split)?.x;
                let n = x.nrows();
                let rows = shard_blocks(n, bs, comm.rank(), comm.size());
                (x.slice(ndarray::s![rows.clone(), ..]).to_owned(), rows, n)
            }
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
        Ok((codes, rows.start, n, t0.elapsed().as_secs_f64()))
    }
}

/// Runs `encode`; under mpirun each rank encodes a block of whole batches of the rows.
pub fn run(a: Args, device: Device, ranks: &Ranks) -> Result<()> {
    let comm = &*ranks.comm;
    if ranks.distributed() && a.report.is_some() {
        return Err(Error::param(
            "report",
            "given",
            "under mpirun, encode writes no FISTA report (use infer --report)",
        ));
    }
    let (codes, start, n, secs) = device.run(Job(&a, comm))?;
    write_npy_f32_sharded(&a.out, n, start, &codes, comm)?;
    let mut v = [codes.iter().filter(|&&x| x == 0.0).count() as f64];
    comm.sum_f64(&mut v)?;
    if ranks.is_root() {
        eprintln!(
            "{n} codes ({}) in {secs:.2} s, sparsity {:.1}% -> {}",
            if a.fista { "FISTA" } else { "encoder" },
            100.0 * v[0] / (n * codes.ncols()).max(1) as f64,
            a.out.display()
        );
    }
    Ok(())
}
