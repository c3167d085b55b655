//! `varsparse bench`: a thin wrapper over `varsparse::experiments::bench` (CPU only: it times
//! the CPU kernels and solvers).

use std::path::PathBuf;
use std::time::Instant;

use varsparse::backend::Device;
use varsparse::data::spec::resolve_data_dir;
use varsparse::io::{write_json, write_npy_f32};
use varsparse::{Error, Result};

use crate::args::create_dir;

/// `bench`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// Timed repetitions of each path (the table gives medians).
    #[arg(long, value_name = "N", default_value_t = 5)]
    repeats: usize,
    /// Seed of the atoms' draw from the training images.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Target fraction of zero codes (sets lambda).
    #[arg(long, value_name = "F", default_value_t = 0.89)]
    sparsity: f64,
    /// Time only the active-set solver (no FISTA paths).
    #[arg(long)]
    no_fista: bool,
    /// Write W.npy, Y.npy and problem.json here (for benches/compare/compare.py).
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
    /// The data directory holding mnist/ (default: $VARSPARSE_DATA, else the crate's data/).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// Runs `bench`.
pub fn run(a: Args, device: Device, threads: usize) -> Result<()> {
    if device != Device::Cpu {
        return Err(Error::param(
            "device",
            device,
            "bench times the CPU kernels and solvers; run it with --device cpu \
             (examples/cuda_bench.rs compares the CUDA backend)",
        ));
    }
    let dir = resolve_data_dir(a.data_dir.as_deref())?.join("mnist");
    let t0 = Instant::now();
    let p = varsparse::experiments::bench::Problem::mnist(&dir, a.seed, a.sparsity)?;
    eprintln!(
        "problem: Y {:?}, W {:?}, lambda {:.6e} ({:.1} s to set up)",
        p.y.dim(),
        p.w.dim(),
        p.lambda,
        t0.elapsed().as_secs_f64()
    );
    let (rows, refs) = varsparse::experiments::bench::run(&p, a.repeats, !a.no_fista)?;
    println!(
        "threads {threads}, build: {}",
        if cfg!(feature = "openblas") {
            "openblas"
        } else {
            "matrixmultiply (default)"
        }
    );
    println!(
        "| path | median s | samples/s | GFLOP/s (dense-equivalent) | mean objective | rel. gap to optimum | sparsity |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.4} | {:.0} | {:.1} | {:.6} | {:.1e} | {:.1}% |",
            r.path,
            r.seconds,
            r.samples_per_s,
            r.gflops,
            r.mean_objective,
            r.rel_gap,
            100.0 * r.sparsity
        );
    }
    for (label, g) in &refs {
        println!("| {label} | | | {g:.1} | | | |");
    }
    if let Some(out) = &a.export {
        create_dir(out)?;
        write_npy_f32(&out.join("W.npy"), &p.w)?;
        write_npy_f32(&out.join("Y.npy"), &p.y)?;
        let json = serde_json::json!({
            "lambda": p.lambda,
            "objective": "mean over samples of (1/d)||y - W z||^2 + lambda ||z||_1, z >= 0",
            "d": p.w.nrows(),
            "rows": rows,
        });
        write_json(&out.join("problem.json"), &json)?;
    }
    Ok(())
}
