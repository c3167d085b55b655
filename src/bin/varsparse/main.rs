//! The `varsparse` command-line tool: a thin layer over the library. Each subcommand lives in
//! `commands/<name>.rs` (its flags and a `run` function); shared flag groups in `args.rs`; the
//! training progress in `observer.rs`.

mod args;
mod commands;
mod observer;
mod ranks;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use varsparse::Error;
use varsparse::backend::Device;

#[derive(Parser)]
#[command(
    name = "varsparse",
    version,
    about = "Sparse coding with variance-regularised codes"
)]
struct Cli {
    /// Threads for the CPU kernels (default: the number of available cores); results do not
    /// depend on it.
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Where to compute: cpu, cuda (the first GPU) or cuda:N (needs a build with the `cuda`
    /// feature and a GPU). Checkpoints and outputs have the same format either way. `bench`
    /// measures the CPU and `atoms` only draws, so they run on the CPU. Under mpirun, cuda:N is
    /// GPU N + the rank's rank on its node.
    #[arg(
        long,
        global = true,
        value_name = "DEVICE",
        default_value = "cpu",
        value_parser = args::parse_device
    )]
    device: Device,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encode the rows of an .npy array against a fixed decoder: the exact lasso solver where
    /// it applies, FISTA otherwise (--solver).
    ///
    /// Conventions: float32 .npy (float64 is converted), C order; W is (d, l) with atoms as
    /// columns; Y is (n, d), one sample per row; codes are (n, l). Energy in the authors'
    /// scaling: (1/d)||y - D(z)||^2 + lambda ||z||_1 + beta sum_j relu(T - std_j)^2
    /// + (gamma/l)||z - e||^2.
    Infer(commands::infer::Args),
    /// Train a model (a preset of the paper, every hyper-parameter overridable).
    ///
    /// Writes OUT/config.json, OUT/log.jsonl (one line per epoch), and the checkpoints
    /// OUT/latest/ and OUT/best/ (lowest validation energy) after every epoch.
    Train(Box<commands::train::Args>),
    /// Codes for samples: the encoder's, or FISTA's warm-started from them (--fista).
    Encode(commands::encode::Args),
    /// PSNR, sparsity and energy of a split under a model's encoder codes.
    Eval(commands::eval::Args),
    /// Low-data linear classification on MNIST: a linear layer on the encoder's codes trained
    /// on the first N training images of each class, best epoch by validation loss, top-1 and
    /// top-3 test accuracy over seeds; optionally the same on raw pixels (--baseline raw) and a
    /// random LISTA encoder + linear layer trained jointly on pixels (--baseline lista-raw).
    ///
    /// Prints a markdown table and writes OUT/classify.csv, OUT/classify.json and OUT/classify.png (Figure 9: top-1 accuracy against N).
    Classify(commands::classify::Args),
    /// Batch-encoding benchmark: the non-negative lasso on 10,000 MNIST test images (128 atoms) or
    /// natural patches (--atoms 256,512,1024), at one or more sparsities, every solver path, the
    /// exact solver's time split, with the GEMM throughput at the same shapes.
    Bench(commands::bench::Args),
    /// Denoising (Table 1, Figure 5): sparsity and PSNR of clean and noisy test images under the
    /// encoder's codes, for each noise level.
    ///
    /// Writes OUT/denoise.json and OUT/denoise_sigmaS.png (rows: originals, reconstructions,
    /// noisy inputs, their reconstructions); prints a table.
    Denoise(commands::denoise::Args),
    /// Draw the decoder's atoms as a grid PNG (Figures 2, 3, 7, 8).
    Atoms(commands::atoms::Args),
    /// Figure 4: train one model per (preset, lambda, seed), evaluate test sparsity and PSNR
    /// with the encoder, write OUT/sweep.csv and OUT/sweep.png. Resumable: finished runs are
    /// skipped, interrupted ones continue from their last checkpoint.
    Sweep(commands::sweep::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = cli.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 {
        eprintln!("error: --threads must be at least 1");
        return ExitCode::FAILURE;
    }
    #[cfg(feature = "mpi")]
    let ranks = match ranks::Ranks::mpi() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    #[cfg(not(feature = "mpi"))]
    let ranks = ranks::Ranks::solo();
    ranks.abort_on_panic();
    ranks.inject_fault();
    let device = ranks.device(cli.device);
    // The kernels split each batch over a pool of `threads` threads (backend::threads); BLAS runs
    // single-threaded inside each part, so the two never compete for the cores.
    varsparse::backend::cpu::set_blas_threads(1);
    let r = &ranks;
    let result = varsparse::backend::cpu::threads::with_threads(threads, || match cli.command {
        Command::Infer(a) => commands::infer::run(a, device, r),
        Command::Train(a) => commands::train::run(*a, device, r),
        Command::Encode(a) => commands::encode::run(a, device, r),
        Command::Eval(a) => r
            .single("eval")
            .and_then(|()| commands::eval::run(a, device)),
        Command::Classify(a) => r
            .single("classify")
            .and_then(|()| commands::classify::run(a, device)),
        Command::Bench(a) => r
            .single("bench")
            .and_then(|()| commands::bench::run(a, device, threads)),
        Command::Denoise(a) => r
            .single("denoise")
            .and_then(|()| commands::denoise::run(a, device)),
        Command::Atoms(a) => r.single("atoms").and_then(|()| commands::atoms::run(a)),
        Command::Sweep(a) => r
            .single("sweep")
            .and_then(|()| commands::sweep::run(a, device)),
    })
    .and_then(|r| r);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // every rank stops between the same batches (the request is shared)
        Err(e @ Error::Interrupted { .. }) => {
            if ranks.is_root() {
                eprintln!("{e}");
            }
            ExitCode::from(130)
        }
        Err(e) => ranks.fail(&e),
    }
}
