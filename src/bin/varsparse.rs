//! The `varsparse` command-line tool: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use varsparse::backend::Cpu;
use varsparse::decoder::Decoder;
use varsparse::energy::EnergyParams;
use varsparse::fista::{self, BatchReport, FistaParams, GradientPath, StepRule};
use varsparse::io::{read_npy_f32, write_json, write_npy_f32};
use varsparse::{Error, Result};

#[derive(Parser)]
#[command(name = "varsparse", version, about = "Sparse coding with variance-regularised codes")]
struct Cli {
    /// Threads for GEMM (default: the number of available cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run FISTA on the rows of an .npy array against a fixed decoder.
    ///
    /// Conventions: float32 .npy (float64 is converted), C order; W is (d, l) with atoms as
    /// columns; Y is (n, d), one sample per row; codes are (n, l). Energy in the authors'
    /// scaling: (1/d)||y - D(z)||^2 + lambda ||z||_1 + beta sum_j relu(T - std_j)^2
    /// + (gamma/l)||z - e||^2.
    Infer(InferArgs),
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("decoder").required(true).args(["dictionary", "mlp"])))]
struct InferArgs {
    /// A linear dictionary W (d, l), atoms as columns.
    #[arg(long, value_name = "W.npy")]
    dictionary: Option<PathBuf>,
    /// A one-hidden-layer decoder: W1 (m, l), b1 (m), W2 (d, m), comma-separated.
    #[arg(long, value_name = "W1.npy,b1.npy,W2.npy", value_delimiter = ',')]
    mlp: Option<Vec<PathBuf>>,
    /// The inputs Y (n, d), one sample per row.
    #[arg(long, value_name = "Y.npy")]
    input: PathBuf,
    /// Initial codes (n, l), also the proximity term's target (zeros when absent).
    #[arg(long, value_name = "E.npy")]
    warm_start: Option<PathBuf>,
    /// Where to write the codes (n, l), float32.
    #[arg(long, value_name = "Z.npy")]
    out: PathBuf,
    /// Where to write a JSON report (per batch: iterations, mean steps, convergence, energy).
    #[arg(long, value_name = "R.json")]
    report: Option<PathBuf>,
    /// Sparsity weight lambda.
    #[arg(long = "lambda", value_name = "F")]
    lambda: f64,
    /// Variance hinge weight beta.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    beta: f64,
    /// Variance hinge threshold T on each latent's standard deviation.
    #[arg(long, value_name = "F", default_value_t = 0.5)]
    threshold: f64,
    /// Proximity weight gamma to the warm start.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    gamma: f64,
    /// A constant step eta (default: 1/L from a Lipschitz bound for a dictionary, backtracking
    /// for the one-hidden-layer decoder).
    #[arg(long, value_name = "F", conflicts_with = "backtracking")]
    step: Option<f64>,
    /// Backtracking line search (Beck & Teboulle), one L per batch.
    #[arg(long)]
    backtracking: bool,
    /// Maximum FISTA iterations per batch.
    #[arg(long, value_name = "N", default_value_t = 200)]
    max_iter: usize,
    /// Relative tolerance of the per-sample convergence test (0: run max-iter iterations).
    #[arg(long, value_name = "F", default_value_t = 1e-3)]
    tol: f64,
    /// Signed codes (soft thresholding) instead of non-negative ones.
    #[arg(long)]
    signed: bool,
    /// Rows per batch (the variance term is computed per batch).
    #[arg(long, value_name = "N", default_value_t = 250)]
    batch_size: usize,
    /// Compute the linear decoder's gradient through the input space instead of the Gram matrix.
    #[arg(long)]
    direct: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    if threads == 0 {
        eprintln!("error: --threads must be at least 1");
        return ExitCode::FAILURE;
    }
    // SAFETY: set before any other thread exists; matrixmultiply reads it at its first GEMM.
    unsafe { std::env::set_var("MATRIXMULTIPLY_THREADS", threads.to_string()) };
    varsparse::backend::cpu::set_blas_threads(threads);
    let result = match cli.command {
        Command::Infer(args) => infer(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn infer(a: InferArgs) -> Result<()> {
    let be = Cpu;
    let decoder: Decoder<f32, Cpu> = match (&a.dictionary, &a.mlp) {
        (Some(w), None) => Decoder::linear(&be, &read_npy_f32(w)?)?,
        (None, Some(files)) => match &files[..] {
            [w1, b1, w2] => Decoder::one_hidden(&be, &read_npy_f32(w1)?, &read_npy_f32(b1)?, &read_npy_f32(w2)?)?,
            _ => return Err(Error::param("mlp", files.len(), "takes three files: W1.npy,b1.npy,W2.npy")),
        },
        _ => return Err(Error::param("decoder", "both", "give exactly one of --dictionary and --mlp")),
    };
    let y = read_npy_f32(&a.input)?;
    let warm = a.warm_start.as_deref().map(read_npy_f32).transpose()?;
    let step = match (a.step, a.backtracking) {
        (Some(eta), _) => StepRule::Constant { eta },
        (None, true) => StepRule::Backtracking {
            initial_step: None,
            factor: 2.0,
        },
        (None, false) => StepRule::Auto,
    };
    let params = FistaParams {
        energy: EnergyParams {
            lambda: a.lambda,
            beta: a.beta,
            threshold: a.threshold,
            gamma: a.gamma,
        },
        step,
        max_iter: a.max_iter,
        tol: a.tol,
        nonneg: !a.signed,
        path: if a.direct {
            GradientPath::Direct
        } else {
            GradientPath::Auto
        },
        record_trace: false,
    };
    let t0 = Instant::now();
    let (codes, batches) = fista::solve_batches(&be, &decoder, &y, warm.as_ref(), &params, a.batch_size)?;
    let secs = t0.elapsed().as_secs_f64();
    write_npy_f32(&a.out, &codes)?;
    let n = y.nrows();
    let zeros = codes.iter().filter(|&&v| v == 0.0).count();
    let sparsity = zeros as f64 / codes.len().max(1) as f64;
    let energy: f64 = batches.iter().map(|b| b.report.total_energy).sum();
    let steps: f64 = batches.iter().map(|b| b.report.mean_steps * (b.end - b.start) as f64).sum();
    if let Some(path) = &a.report {
        #[derive(serde::Serialize)]
        struct Report<'a> {
            rows: usize,
            seconds: f64,
            sparsity: f64,
            mean_energy: f64,
            mean_steps: f64,
            params: &'a FistaParams,
            batches: &'a [BatchReport],
        }
        write_json(
            path,
            &Report {
                rows: n,
                seconds: secs,
                sparsity,
                mean_energy: energy / n.max(1) as f64,
                mean_steps: steps / n.max(1) as f64,
                params: &params,
                batches: &batches,
            },
        )?;
    }
    let converged = batches.iter().filter(|b| b.report.converged).count();
    eprintln!(
        "{n} rows in {} batches ({converged} converged) in {secs:.3} s: mean energy {:.6}, sparsity {:.1}%, mean steps {:.1}",
        batches.len(),
        energy / n.max(1) as f64,
        100.0 * sparsity,
        steps / n.max(1) as f64
    );
    Ok(())
}
