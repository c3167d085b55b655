//! `varsparse bench`: a thin wrapper over `varsparse::experiments::bench` (CPU only: it times
//! the CPU kernels and solvers).

use std::path::PathBuf;
use std::time::Instant;

use varsparse::backend::Device;
use varsparse::data::spec::{DataOptions, DataSpec, resolve_data_dir};
use varsparse::train::{EpochSummary, Observer};
use varsparse::{DecoderKind, ModelParams, Preset};
use varsparse::{Error, Result};

use crate::args::create_dir;

/// Where the benchmark's dictionary and inputs come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// The 10,000 MNIST test images; atoms are normalised training images.
    Mnist,
    /// 10,000 natural test patches (28 x 28, LCN); atoms are normalised training patches.
    Patches,
}

/// `bench`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// Timed repetitions of each path (the table gives medians).
    #[arg(long, value_name = "N", default_value_t = 5)]
    repeats: usize,
    /// Seed of the atoms' draw from the training samples.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Target fractions of zero codes, each giving one problem (sets lambda), e.g.
    /// 0.5,0.7,0.89,0.95,0.97.
    #[arg(
        long,
        value_name = "F[,F..]",
        value_delimiter = ',',
        default_value = "0.89"
    )]
    sparsity: Vec<f64>,
    /// The inputs and atoms.
    #[arg(long, value_enum, default_value_t = Source::Mnist)]
    source: Source,
    /// Dictionary sizes, each giving one problem per sparsity (MNIST: 128 only makes sense
    /// beside the training set's size; patches: e.g. 256,512,1024).
    #[arg(
        long,
        value_name = "L[,L..]",
        value_delimiter = ',',
        default_value = "128"
    )]
    atoms: Vec<usize>,
    /// Time only the active-set solver (no FISTA paths).
    #[arg(long)]
    no_fista: bool,
    /// Write W.npy, Y.npy and problem.json here (one sub-directory per problem when there are
    /// several), for benches/compare/compare.py.
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
    /// The data directory holding mnist/ and natural/ (default: $VARSPARSE_DATA, else the
    /// crate's data/).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Time training instead: one epoch of PRESET on --train-limit samples from its seed
    /// (--seed), with the floating-point operations of its products counted from the
    /// iterations that ran, and their rate against this run's GEMM throughput.
    #[arg(long, value_name = "PRESET", value_enum)]
    train: Option<Preset>,
    /// With --train: the training samples (MNIST images, or natural patches cut for the run;
    /// each 250 is one batch).
    #[arg(long, value_name = "N", default_value_t = 5000, requires = "train")]
    train_limit: usize,
}

/// Runs `bench`.
pub fn run(a: Args, device: Device, threads: usize) -> Result<()> {
    use varsparse::experiments::bench::{self, Problem};
    if device != Device::Cpu {
        return Err(Error::param(
            "device",
            device,
            "bench times the CPU kernels and solvers; run it with --device cpu \
             (examples/cuda_bench.rs compares the CUDA backend)",
        ));
    }
    let data = resolve_data_dir(a.data_dir.as_deref())?;
    if let Some(preset) = a.train {
        return train(preset, &a, &data, threads);
    }
    print_build(threads);
    let several = a.atoms.len() * a.sparsity.len() > 1;
    for &atoms in &a.atoms {
        let t0 = Instant::now();
        // built at the default sparsity (reachable on both sources), then set per case
        let first = 0.89;
        let mut p = match a.source {
            Source::Mnist if atoms == 128 => Problem::mnist(&data.join("mnist"), a.seed, first)?,
            Source::Mnist => {
                return Err(Error::param(
                    "atoms",
                    atoms,
                    "128 for --source mnist (the bench's MNIST problem); use --source patches for other sizes",
                ));
            }
            Source::Patches => Problem::patches(&data.join("natural"), atoms, a.seed, first)?,
        };
        eprintln!(
            "problem: Y {:?}, W {:?} ({:.1} s to set up)",
            p.y.dim(),
            p.w.dim(),
            t0.elapsed().as_secs_f64()
        );
        // the sparsity the problem's lambda was set for
        let mut current = first;
        for &sparsity in &a.sparsity {
            if sparsity != current {
                if let Err(e) = p.set_sparsity(sparsity) {
                    eprintln!("skipping sparsity {sparsity}: {e}");
                    continue;
                }
                current = sparsity;
            }
            let label = format!("{:?} l={atoms} sparsity={sparsity}", a.source).to_lowercase();
            let (rows, refs) = bench::run(&p, a.repeats, !a.no_fista)?;
            let split = bench::time_split(&p, a.repeats)?;
            println!("\n### {label}: lambda {:.6e}", p.lambda);
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
            println!(
                "exact solver: {:.1} ms = W^T W {:.2} ms + Y W {:.1} ms + per-sample solves {:.1} ms; \
                 {:.0}% of the GEMM-bound limit (Y W alone)",
                1e3 * split.whole_s,
                1e3 * split.gram_s,
                1e3 * split.yw_s,
                1e3 * split.solves_s,
                100.0 * split.fraction_of_gemm_limit
            );
            if let Some(out) = &a.export {
                let dir = if several {
                    out.join(format!("{:?}_l{atoms}_s{sparsity}", a.source).to_lowercase())
                } else {
                    out.clone()
                };
                create_dir(&dir)?;
                bench::export(&dir, &label, &p, &rows, Some(&split))?;
            }
        }
    }
    Ok(())
}

/// `bench --train PRESET`: one epoch of the preset on `--train-limit` samples, its time, the
/// floating-point operations of its products (counted by the trainer from the rows each
/// iteration computed, as dense products: `TrainStats::flops`; the kernels' skipping of zero
/// codes is not subtracted, so the rate can exceed the GEMM's), and their rate against a GEMM
/// of the decoder's largest product's shape on the same threads.
fn train(preset: Preset, a: &Args, root: &std::path::Path, threads: usize) -> Result<()> {
    use varsparse::experiments::bench::gemm_gflops;
    let mnist = preset.data() == varsparse::data::DataKind::Mnist;
    let opts = DataOptions {
        split_seed: None,
        train_limit: mnist.then_some(a.train_limit),
        patches: (!mnist).then_some([a.train_limit, 1000, 1000]),
    };
    let t0 = Instant::now();
    let data = DataSpec::for_kind(preset.data(), root, &opts)?.load()?;
    let params = ModelParams::preset(preset).epochs(1).seed(a.seed);
    let (d, batch) = (data.train.x.ncols(), params.batch_size);
    let widest = match params.kind {
        DecoderKind::Linear => params.code_dim,
        DecoderKind::OneHidden { hidden } => hidden,
    };
    eprintln!(
        "data: {} training samples of dimension {d} ({:.1} s)",
        data.train.x.nrows(),
        t0.elapsed().as_secs_f64()
    );
    struct Keep(Option<EpochSummary>);
    impl Observer for Keep {
        fn on_epoch(&mut self, s: &EpochSummary) -> std::ops::ControlFlow<()> {
            self.0 = Some(s.clone());
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut keep = Keep(None);
    params.validate()?.fit(&data.train_data(), &mut keep)?;
    let s = keep
        .0
        .ok_or_else(|| Error::param("train-limit", a.train_limit, "no epoch ran"))?;
    let t = &s.train;
    let rate = t.flops / s.train_seconds / 1e9;
    let gemm = gemm_gflops(batch, d, widest, a.repeats)?;
    let epoch_batches = if mnist { 55_000 } else { 200_000 } / batch;
    print_build(threads);
    println!(
        "\n### train {}: {} batches of {batch}, seed {}",
        preset.name(),
        t.batches,
        a.seed
    );
    println!("| quantity | value |");
    println!("|---|---|");
    println!(
        "| training time | {:.2} s ({:.1} ms per batch; a full epoch of {epoch_batches} batches at this rate: {:.0} s) |",
        s.train_seconds,
        1e3 * s.train_seconds / t.batches as f64,
        s.train_seconds / t.batches as f64 * epoch_batches as f64
    );
    println!(
        "| FISTA | {:.2} mean steps per sample, at most {} iterations per batch |",
        t.inference_steps, t.max_fista_iterations
    );
    println!(
        "| products' floating-point operations (dense-equivalent) | {:.2} GFLOP ({:.0}% in FISTA) |",
        t.flops / 1e9,
        100.0 * t.fista_flops / t.flops.max(f64::MIN_POSITIVE)
    );
    println!("| achieved rate | {rate:.1} GFLOP/s |");
    println!("| GEMM ({batch} x {d}) x ({d} x {widest}), f32, same threads | {gemm:.1} GFLOP/s |");
    println!(
        "| fraction of the GEMM rate | {:.0}% |",
        100.0 * rate / gemm
    );
    Ok(())
}

/// The first line of `bench`'s report: threads and GEMM.
fn print_build(threads: usize) {
    println!(
        "threads {threads}, build: {}",
        if cfg!(feature = "openblas") {
            "openblas"
        } else {
            "matrixmultiply (default)"
        }
    );
}
