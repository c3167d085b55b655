//! The `varsparse` command-line tool: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use varsparse::backend::Cpu;
use varsparse::data::spec::parse_image_shape;
use varsparse::data::{DataSpec, LoadedData};
use varsparse::experiments::classify::{
    ClassifyParams, EncodeFn, LabelledSplit, ListaDims, Method, ProtocolData, ProtocolSpec,
    run_protocol,
};
use varsparse::io::{read_npy_f32, write_atomic, write_json, write_npy_f32};
use varsparse::model::decoder::{Decoder, DecoderKind};
use varsparse::model::energy::EnergyParams;
use varsparse::solve::fista::{self, BatchReport, FistaParams, GradientPath, StepRule};
use varsparse::train::StepStats;
use varsparse::train::checkpoint;
use varsparse::train::optim::LrSchedule;
use varsparse::train::{EpochSummary, EvalStats, FitOptions, Observer, RunInfo};
use varsparse::{Error, ModelParams, Preset, Result, SparseCoder};

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
    /// Train a model (a preset of the paper, every hyper-parameter overridable).
    ///
    /// Writes OUT/config.json, OUT/log.jsonl (one line per epoch), and the checkpoints
    /// OUT/latest/ and OUT/best/ (lowest validation energy) after every epoch.
    Train(Box<TrainArgs>),
    /// Codes for samples: the encoder's, or FISTA's warm-started from them (--fista).
    Encode(EncodeArgs),
    /// PSNR, sparsity and energy of a split under a model's encoder codes.
    Eval(EvalArgs),
    /// Low-data linear classification on MNIST: a linear layer on the encoder's codes trained
    /// on the first N training images of each class, best epoch by validation loss, top-1 and
    /// top-3 test accuracy over seeds; optionally the same on raw pixels (--baseline raw) and a
    /// random LISTA encoder + linear layer trained jointly on pixels (--baseline lista-raw).
    ///
    /// Prints a markdown table and writes OUT/classify.csv, OUT/classify.json and OUT/classify.png (Figure 9: top-1 accuracy against N).
    Classify(ClassifyArgs),
    /// Batch-encoding benchmark: the non-negative lasso on the 10,000 MNIST test images against
    /// 128 unit-norm atoms, every solver path, with the GEMM throughput at the same shapes.
    Bench(BenchArgs),
    /// Denoising (Table 1, Figure 5): sparsity and PSNR of clean and noisy test images under the
    /// encoder's codes, for each noise level.
    ///
    /// Writes OUT/denoise.json and OUT/denoise_sigmaS.png (rows: originals, reconstructions,
    /// noisy inputs, their reconstructions); prints a table.
    Denoise(DenoiseArgs),
    /// Draw the decoder's atoms as a grid PNG (Figures 2, 3, 7, 8).
    Atoms(AtomsArgs),
    /// Figure 4: train one model per (preset, lambda, seed), evaluate test sparsity and PSNR
    /// with the encoder, write OUT/sweep.csv and OUT/sweep.png. Resumable: finished runs are
    /// skipped, interrupted ones continue from their last checkpoint.
    Sweep(SweepArgs),
}

#[derive(Args)]
struct DenoiseArgs {
    /// The checkpoint directory (e.g. runs/mnist-vdl/best).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Noise levels sigma in normalised units, comma-separated.
    #[arg(
        long,
        value_name = "S,S",
        value_delimiter = ',',
        default_value = "1,1.5"
    )]
    sigma: Vec<f64>,
    /// Seed of the noise.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// train, val or test.
    #[arg(long, value_name = "NAME", default_value = "test")]
    split: String,
    /// Where to write denoise.json and the PNGs (default: the model directory's parent).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Images per row of the PNG.
    #[arg(long, value_name = "N", default_value_t = 10)]
    show: usize,
    /// The bundled data directory (default: the one the model was trained with).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct AtomsArgs {
    /// The checkpoint directory.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The PNG to write.
    #[arg(long, value_name = "FILE", default_value = "atoms.png")]
    out: PathBuf,
    /// Atoms per row.
    #[arg(long, value_name = "N", default_value_t = 16)]
    cols: usize,
}

#[derive(Args)]
struct SweepArgs {
    /// Presets to sweep, comma-separated (one line each in the plot; same data for all).
    #[arg(long, value_name = "NAME,NAME", value_delimiter = ',', required = true)]
    preset: Vec<String>,
    /// Sparsity weights lambda, comma-separated.
    #[arg(long, value_name = "F,F", value_delimiter = ',', required = true)]
    lambdas: Vec<f64>,
    /// Seeds per (preset, lambda): 1..=N.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seeds: u64,
    /// Epochs per run (default: the preset's).
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// The sweep directory.
    #[arg(long, value_name = "DIR", default_value = "runs/sweep")]
    out: PathBuf,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Args)]
struct BenchArgs {
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
    /// The bundled data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ClassifyArgs {
    /// The checkpoint directory whose encoder gives the codes (e.g. runs/mnist-vdl/best);
    /// optional when only baselines are asked for. Repeat it to compare several encoders in one
    /// table and plot (their rows are labelled by preset, lambda and epochs trained, or by directory); they must share the
    /// MNIST split.
    #[arg(long, value_name = "DIR")]
    model: Vec<PathBuf>,
    /// With several models: keep, for each model kind (preset) and N, only the encoder with the
    /// best mean validation accuracy (the paper's Figure 9 protocol over a lambda sweep).
    #[arg(long)]
    select_best: bool,
    /// Training images per class, N.
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        default_value = "1,2,5,10,20,50,100"
    )]
    per_class: Vec<usize>,
    /// Seeds per N (seed, seed + 1, ...).
    #[arg(long, value_name = "N", default_value_t = 5)]
    seeds: usize,
    /// The first seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// A baseline to run as well: raw (pixels) or lista-raw (random LISTA + linear layer trained
    /// jointly on pixels, with the model's encoder dimensions, or l 128, L 3 without a model);
    /// may be repeated.
    #[arg(long = "baseline", value_name = "NAME")]
    baselines: Vec<String>,
    /// Training epochs (the epoch of lowest validation loss is kept).
    #[arg(long, value_name = "N", default_value_t = 100)]
    epochs: usize,
    /// Adam's learning rate.
    #[arg(long, value_name = "F", default_value_t = 1e-3)]
    lr: f64,
    /// Training batch size.
    #[arg(long, value_name = "N", default_value_t = 250)]
    batch_size: usize,
    /// The bundled data directory holding mnist/ (default: the one the model was trained with,
    /// or ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Seed of the 55,000 / 5,000 train/validation split (default: the model's, or 0).
    #[arg(long, value_name = "S")]
    split_seed: Option<u64>,
    /// Where to write classify.csv and classify.json (default: the model directory's parent, or
    /// the current directory).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct TrainArgs {
    /// mnist-sdl, mnist-vdl, mnist-sdl-nl, mnist-vdl-nl, patches-sdl, patches-vdl,
    /// patches-sdl-nl or patches-vdl-nl (not needed with --resume).
    #[arg(long)]
    preset: Option<String>,
    /// Epochs to run in all (default: the preset's, 200 MNIST / 100 patches).
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// The run directory (default: runs/PRESET).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Seed of the initialisation and the shuffles.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Continue a run from its checkpoint (a run's latest/ directory); the result is
    /// bit-identical to an uninterrupted run with the same seed.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Stop when the validation energy has not improved for N epochs (off by default).
    #[arg(long, value_name = "N")]
    patience: Option<usize>,
    /// Where to compute: cpu, or cuda (needs the `cuda` feature and a GPU); checkpoints are the
    /// same either way.
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    device: String,
    #[command(flatten)]
    hp: Overrides,
    #[command(flatten)]
    data: DataArgs,
}

/// Hyper-parameter overrides (authors' energy scaling).
#[derive(Args, Default)]
struct Overrides {
    /// Sparsity weight lambda.
    #[arg(long = "lambda", value_name = "F")]
    lambda: Option<f64>,
    /// Variance hinge weight beta.
    #[arg(long, value_name = "F")]
    beta: Option<f64>,
    /// Variance hinge threshold T.
    #[arg(long, value_name = "F")]
    threshold: Option<f64>,
    /// Proximity weight gamma.
    #[arg(long, value_name = "F")]
    gamma: Option<f64>,
    /// FISTA's constant step eta.
    #[arg(long, value_name = "F")]
    eta: Option<f64>,
    /// FISTA's iteration cap.
    #[arg(long, value_name = "N")]
    max_iter: Option<usize>,
    /// FISTA's per-sample tolerance.
    #[arg(long, value_name = "F")]
    tol: Option<f64>,
    /// The decoder's learning rate.
    #[arg(long, value_name = "F")]
    lr_decoder: Option<f64>,
    /// The encoder's learning rate.
    #[arg(long, value_name = "F")]
    lr_encoder: Option<f64>,
    /// Weight decay of the hidden layer's bias b1.
    #[arg(long, value_name = "F")]
    wd_hidden_bias: Option<f64>,
    /// Weight decay of the encoder's bias.
    #[arg(long, value_name = "F")]
    wd_encoder_bias: Option<f64>,
    /// Code dimension l.
    #[arg(long, value_name = "N")]
    code_dim: Option<usize>,
    /// Hidden width m of a one-hidden-layer decoder.
    #[arg(long, value_name = "N")]
    hidden: Option<usize>,
    /// LISTA iterations.
    #[arg(long, value_name = "N")]
    encoder_iters: Option<usize>,
    /// Training batch size.
    #[arg(long, value_name = "N")]
    batch_size: Option<usize>,
    /// SDL column normalisation of the decoder (true/false).
    #[arg(long, value_name = "BOOL")]
    column_norm: Option<bool>,
    /// Halve the decoder's learning rate every N epochs (0: never).
    #[arg(long, value_name = "N")]
    halve_lr_every: Option<usize>,
}

#[derive(Args, Default)]
struct DataArgs {
    /// The bundled data directory (holding mnist/ and natural/; default ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Train on your own samples (n, d) instead of the preset's data.
    #[arg(long, value_name = "Y.npy")]
    input: Option<PathBuf>,
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
    train_limit: Option<usize>,
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
    patches: Option<Vec<usize>>,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["input", "split"])))]
struct EncodeArgs {
    /// The checkpoint directory (e.g. runs/mnist-vdl/best).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Samples (n, d) to encode.
    #[arg(long, value_name = "Y.npy")]
    input: Option<PathBuf>,
    /// A split of the model's training data: train, val or test.
    #[arg(long, value_name = "NAME")]
    split: Option<String>,
    /// Where to write the codes (n, l).
    #[arg(long, value_name = "Z.npy")]
    out: PathBuf,
    /// FISTA codes warm-started from the encoder's, with the model's inference parameters.
    #[arg(long)]
    fista: bool,
    /// FISTA's per-batch report (with --fista).
    #[arg(long, value_name = "R.json", requires = "fista")]
    report: Option<PathBuf>,
    /// The bundled data directory (for --split; default: the one the model was trained with).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// The checkpoint directory.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// train, val or test.
    #[arg(long, value_name = "NAME", default_value = "test")]
    split: String,
    /// Also write the JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The bundled data directory (default: the one the model was trained with).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
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
    /// Compute the gradient through the input space throughout (no Gram matrix: neither the
    /// linear decoder's nor, for a one-hidden-layer decoder, the hidden layer's).
    #[arg(long)]
    direct: bool,
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
    // The kernels split each batch over a pool of `threads` threads (backend::threads); BLAS runs
    // single-threaded inside each part, so the two never compete for the cores.
    varsparse::backend::cpu::set_blas_threads(1);
    let result = varsparse::backend::cpu::threads::with_threads(threads, || match cli.command {
        Command::Infer(args) => infer(args),
        Command::Train(args) => train(*args),
        Command::Encode(args) => encode(args),
        Command::Eval(args) => eval(args),
        Command::Classify(args) => classify(args),
        Command::Bench(args) => bench(args, threads),
        Command::Denoise(args) => denoise(args),
        Command::Atoms(args) => atoms(args),
        Command::Sweep(args) => sweep(args),
    })
    .and_then(|r| r);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Error::Interrupted { .. }) => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
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
            [w1, b1, w2] => Decoder::one_hidden(
                &be,
                &read_npy_f32(w1)?,
                &read_npy_f32(b1)?,
                &read_npy_f32(w2)?,
            )?,
            _ => {
                return Err(Error::param(
                    "mlp",
                    files.len(),
                    "takes three files: W1.npy,b1.npy,W2.npy",
                ));
            }
        },
        _ => {
            return Err(Error::param(
                "decoder",
                "both",
                "give exactly one of --dictionary and --mlp",
            ));
        }
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
    let (codes, batches) =
        fista::solve_batches(&be, &decoder, &y, warm.as_ref(), &params, a.batch_size)?;
    let secs = t0.elapsed().as_secs_f64();
    write_npy_f32(&a.out, &codes)?;
    let n = y.nrows();
    let zeros = codes.iter().filter(|&&v| v == 0.0).count();
    let sparsity = zeros as f64 / codes.len().max(1) as f64;
    let energy: f64 = batches.iter().map(|b| b.report.total_energy).sum();
    let steps: f64 = batches
        .iter()
        .map(|b| b.report.mean_steps * (b.end - b.start) as f64)
        .sum();
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

static STOP: AtomicBool = AtomicBool::new(false);

fn apply(p: &mut ModelParams, o: &Overrides) {
    let set = |dst: &mut f64, v: Option<f64>| {
        if let Some(v) = v {
            *dst = v;
        }
    };
    set(&mut p.energy.lambda, o.lambda);
    set(&mut p.energy.beta, o.beta);
    set(&mut p.energy.threshold, o.threshold);
    set(&mut p.energy.gamma, o.gamma);
    set(&mut p.eta, o.eta);
    set(&mut p.tol, o.tol);
    set(&mut p.lr_decoder, o.lr_decoder);
    set(&mut p.lr_encoder, o.lr_encoder);
    set(&mut p.wd_hidden_bias, o.wd_hidden_bias);
    set(&mut p.wd_encoder_bias, o.wd_encoder_bias);
    if let Some(v) = o.max_iter {
        p.max_iter = v;
    }
    if let Some(v) = o.code_dim {
        p.code_dim = v;
    }
    if let Some(m) = o.hidden {
        p.kind = DecoderKind::OneHidden { hidden: m };
    }
    if let Some(v) = o.encoder_iters {
        p.encoder_iters = v;
    }
    if let Some(v) = o.batch_size {
        p.batch_size = v;
    }
    if let Some(v) = o.column_norm {
        p.column_norm = v;
    }
    if let Some(v) = o.halve_lr_every {
        p.decoder_schedule = if v == 0 {
            LrSchedule::Constant
        } else {
            LrSchedule::StepHalving { every: v }
        };
    }
}

/// The data spec the flags describe, or `None` when no data flag is given.
fn data_spec(d: &DataArgs, preset: Option<Preset>) -> Result<Option<DataSpec>> {
    let dir = d.data_dir.clone().unwrap_or_else(DataSpec::default_dir);
    if let Some(input) = &d.input {
        return Ok(Some(DataSpec::Npy {
            train: input.clone(),
            val: d.val.clone(),
            image_shape: d
                .image_shape
                .as_deref()
                .map(parse_image_shape)
                .transpose()?,
            pixel_scale: d.pixel_scale.unwrap_or(1.0),
            split_seed: d.split_seed.unwrap_or(0),
        }));
    }
    let Some(preset) = preset else {
        return Ok(None);
    };
    match preset.data() {
        varsparse::data::DataKind::Mnist => {
            if d.patches.is_some() {
                return Err(Error::param(
                    "patches",
                    "given",
                    "--patches applies to the patches-* presets, not MNIST",
                ));
            }
            Ok(Some(DataSpec::Mnist {
                dir: dir.join("mnist"),
                split_seed: d.split_seed.unwrap_or(varsparse::data::DEFAULT_SPLIT_SEED),
                train_limit: d.train_limit,
            }))
        }
        varsparse::data::DataKind::Patches => {
            if d.train_limit.is_some() {
                return Err(Error::param(
                    "train-limit",
                    "given",
                    "--train-limit applies to MNIST; use --patches N,N,N",
                ));
            }
            let (n_train, n_val, n_test) = match d.patches.as_deref() {
                None => (200_000, 20_000, 20_000),
                Some([a, b, c]) => (*a, *b, *c),
                Some(v) => {
                    return Err(Error::param(
                        "patches",
                        format!("{v:?}"),
                        "expected three counts: train,val,test",
                    ));
                }
            };
            Ok(Some(DataSpec::Patches {
                dir: dir.join("natural"),
                n_train,
                n_val,
                n_test,
                seed: d
                    .split_seed
                    .unwrap_or(varsparse::data::patches::DEFAULT_PATCH_SEED),
            }))
        }
    }
}

fn recorded_spec(model_dir: &std::path::Path) -> Result<DataSpec> {
    let m = checkpoint::read_manifest(model_dir)?;
    let text = m.data.ok_or_else(|| {
        Error::param(
            "data",
            "unknown",
            "the checkpoint does not record its data; pass --input or the data flags",
        )
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: model_dir.join("model.json"),
        detail: format!("recorded data spec: {e}"),
    })
}

fn with_data_dir(spec: DataSpec, dir: Option<PathBuf>) -> DataSpec {
    match (spec, dir) {
        (
            DataSpec::Mnist {
                split_seed,
                train_limit,
                ..
            },
            Some(d),
        ) => DataSpec::Mnist {
            dir: d.join("mnist"),
            split_seed,
            train_limit,
        },
        (
            DataSpec::Patches {
                n_train,
                n_val,
                n_test,
                seed,
                ..
            },
            Some(d),
        ) => DataSpec::Patches {
            dir: d.join("natural"),
            n_train,
            n_val,
            n_test,
            seed,
        },
        (spec, _) => spec,
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let (mut params, spec, out) = match &a.resume {
        Some(dir) => {
            let m = checkpoint::read_manifest(dir)?;
            if let Some(name) = &a.preset {
                let p = Preset::from_name(name)?;
                if m.params.preset != Some(p) {
                    return Err(Error::Checkpoint {
                        path: dir.clone(),
                        detail: format!(
                            "was trained with preset {:?}, not {name}: a run resumes with its own preset",
                            m.params.preset.map(|p| p.name())
                        ),
                    });
                }
            }
            let spec = match data_spec(&a.data, m.params.preset)? {
                Some(s)
                    if a.data.data_dir.is_some()
                        || a.data.input.is_some()
                        || a.data.train_limit.is_some()
                        || a.data.patches.is_some() =>
                {
                    s
                }
                _ => recorded_spec(dir)?,
            };
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| dir.parent().map(PathBuf::from).unwrap_or_default());
            (m.params, spec, out)
        }
        None => {
            let name = a.preset.as_deref().ok_or_else(|| {
                Error::param("preset", "missing", "give --preset NAME (or --resume DIR)")
            })?;
            let preset = Preset::from_name(name)?;
            let spec = data_spec(&a.data, Some(preset))?
                .ok_or_else(|| Error::param("data", "missing", "no data"))?;
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs").join(name));
            (ModelParams::preset(preset), spec, out)
        }
    };
    apply(&mut params, &a.hp);
    if let Some(e) = a.epochs {
        params.epochs = e;
    }
    if let Some(s) = a.seed {
        params.seed = s;
    }
    if a.patience.is_some() {
        params.patience = a.patience;
    }
    let valid = params.validate()?;
    let config = serde_json::json!({ "params": valid.params(), "data": spec, "out": out });
    let config_text = serde_json::to_string_pretty(&config).unwrap_or_default();
    eprintln!("configuration:\n{config_text}");
    std::fs::create_dir_all(&out).map_err(|source| Error::Io {
        action: "creating",
        path: out.clone(),
        source,
    })?;
    write_json(&out.join("config.json"), &config)?;

    let t0 = Instant::now();
    let data = spec.load()?;
    eprintln!(
        "data: {} training, {} validation samples of dimension {} ({:.1} s)",
        data.train.x.nrows(),
        data.val.x.nrows(),
        data.train.x.ncols(),
        t0.elapsed().as_secs_f64()
    );
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this batch (Ctrl-C again to quit at once)");
    });
    let log_path = out.join("log.jsonl");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| Error::Io {
            action: "opening",
            path: log_path.clone(),
            source,
        })?;
    let mut obs = CliObserver {
        bar: None,
        log,
        log_path,
        n: 0,
        sums: StepStats::default(),
        error: None,
    };
    let opts = FitOptions {
        out_dir: Some(out.clone()),
        resume: a.resume.clone(),
        stop: Some(&STOP),
        data_description: serde_json::to_string(&spec).ok(),
    };
    let summary = match a.device.as_str() {
        "cpu" => valid
            .fit_with(Cpu, &data.train_data(), &opts, &mut obs)
            .map(|m| (m.epochs_trained(), m.best_epoch())),
        #[cfg(feature = "cuda")]
        "cuda" => {
            let gpu = varsparse::backend::Cuda::new(0)?;
            valid
                .fit_with(gpu, &data.train_data(), &opts, &mut obs)
                .map(|m| (m.epochs_trained(), m.best_epoch()))
        }
        #[cfg(not(feature = "cuda"))]
        "cuda" => Err(Error::CudaUnavailable(
            "this build has no CUDA backend: rebuild with --features cuda".into(),
        )),
        other => Err(Error::param("device", other, "expected cpu or cuda")),
    };
    if let Some(bar) = &obs.bar {
        bar.finish_and_clear();
    }
    if let Some(e) = obs.error.take() {
        return Err(e);
    }
    let (epochs, best) = summary?;
    if let Some(b) = best {
        eprintln!(
            "done: {epochs} epochs in {:.1} s; best validation energy {:.5} at epoch {} -> {}",
            t0.elapsed().as_secs_f64(),
            b.val_energy,
            b.epoch,
            out.join("best").display()
        );
    }
    Ok(())
}

struct CliObserver {
    bar: Option<ProgressBar>,
    log: std::fs::File,
    log_path: PathBuf,
    n: usize,
    sums: StepStats,
    error: Option<Error>,
}

impl Observer for CliObserver {
    fn on_start(&mut self, info: &RunInfo) {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(info.batches_per_epoch as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {elapsed}<{eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            self.bar = Some(bar);
        }
        if info.start_epoch > 0 {
            eprintln!(
                "resuming at epoch {} of {}",
                info.start_epoch + 1,
                info.epochs
            );
        }
    }

    fn on_batch(&mut self, epoch: usize, batch: usize, s: &StepStats) -> ControlFlow<()> {
        if batch == 0 {
            self.n = 0;
            self.sums = StepStats::default();
        }
        self.n += 1;
        self.sums.psnr += s.psnr;
        self.sums.sparsity += s.sparsity;
        self.sums.inference_steps += s.inference_steps;
        self.sums.decoder_loss += s.energy.total() / s.n.max(1) as f64;
        if let Some(bar) = &self.bar {
            let k = self.n as f64;
            bar.set_prefix(format!("{}", epoch + 1));
            bar.set_position(batch as u64 + 1);
            bar.set_message(format!(
                "energy {:.4} PSNR {:.2} dB sparsity {:.1}% steps {:.1}",
                self.sums.decoder_loss / k,
                self.sums.psnr / k,
                100.0 * self.sums.sparsity / k,
                self.sums.inference_steps / k
            ));
        }
        ControlFlow::Continue(())
    }

    fn on_epoch(&mut self, s: &EpochSummary) -> ControlFlow<()> {
        let line = format!(
            "epoch {:>3}/{}: train energy {:.4} PSNR {:.2} dB steps {:.1} ({:.1} s) | val energy {:.4} PSNR {:.2} dB sparsity {:.1}%{}",
            s.epoch,
            s.epochs,
            s.train.energy,
            s.train.psnr,
            s.train.inference_steps,
            s.train_seconds,
            s.val.energy,
            s.val.psnr,
            100.0 * s.val.sparsity,
            if s.best { " *" } else { "" }
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
        let json = serde_json::to_string(s).unwrap_or_default();
        if let Err(source) = writeln!(self.log, "{json}").and_then(|_| self.log.flush()) {
            self.error = Some(Error::Io {
                action: "writing",
                path: self.log_path.clone(),
                source,
            });
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

fn load_split(
    model_dir: &std::path::Path,
    data_dir: Option<PathBuf>,
    split: &str,
) -> Result<(LoadedData, String)> {
    let spec = with_data_dir(recorded_spec(model_dir)?, data_dir);
    let data = spec.load()?;
    data.split(split)?;
    Ok((data, split.to_string()))
}

fn encode(a: EncodeArgs) -> Result<()> {
    let model = SparseCoder::load(&a.model)?;
    let loaded;
    let y = match (&a.input, &a.split) {
        (Some(path), None) => read_npy_f32(path)?,
        (None, Some(split)) => {
            loaded = load_split(&a.model, a.data_dir.clone(), split)?;
            loaded.0.split(&loaded.1)?.x.clone()
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
    write_npy_f32(&a.out, &codes)?;
    let zeros = codes.iter().filter(|&&v| v == 0.0).count() as f64 / codes.len().max(1) as f64;
    eprintln!(
        "{} codes ({}) in {:.2} s, sparsity {:.1}% -> {}",
        codes.nrows(),
        if a.fista { "FISTA" } else { "encoder" },
        t0.elapsed().as_secs_f64(),
        100.0 * zeros,
        a.out.display()
    );
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let model = SparseCoder::load(&a.model)?;
    let (data, split) = load_split(&a.model, a.data_dir.clone(), &a.split)?;
    let stats: EvalStats = model.evaluate(&data.split(&split)?.samples(data.pixel_scale))?;
    let json = serde_json::json!({ "model": a.model, "split": split, "stats": stats });
    if let Some(path) = &a.json {
        write_json(path, &json)?;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json).unwrap_or_default()
    );
    eprintln!("| split | samples | PSNR (dB) | sparsity | energy |");
    eprintln!("|---|---|---|---|---|");
    eprintln!(
        "| {split} | {} | {:.2} | {:.1}% | {:.4} |",
        stats.n,
        stats.psnr,
        100.0 * stats.sparsity,
        stats.energy
    );
    Ok(())
}

fn classify(a: ClassifyArgs) -> Result<()> {
    let mut methods = Vec::new();
    if !a.model.is_empty() {
        methods.push(Method::Codes);
    }
    for name in &a.baselines {
        let m = Method::from_name(name)?;
        if m == Method::Codes {
            return Err(Error::param(
                "baseline",
                name,
                "expected raw or lista-raw (the codes come from --model)",
            ));
        }
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    if methods.is_empty() {
        return Err(Error::param(
            "model",
            "missing",
            "give --model DIR and/or --baseline raw / --baseline lista-raw",
        ));
    }
    let models = a
        .model
        .iter()
        .map(|m| SparseCoder::load(m))
        .collect::<Result<Vec<_>>>()?;
    let model = models.first();
    let defaults = ProtocolSpec::default();
    let spec = ProtocolSpec {
        methods,
        per_class: a.per_class.clone(),
        seeds: a.seeds,
        params: ClassifyParams {
            lr: a.lr,
            batch_size: a.batch_size,
            epochs: a.epochs,
            seed: a.seed,
        },
        lista: match model {
            Some(m) => ListaDims {
                code_dim: m.encoder().code_dim(),
                n_iter: m.encoder().n_iter(),
            },
            None => defaults.lista,
        },
    };
    spec.validate()?;

    // The model's own MNIST split (its data spec records the split seed), without any training
    // limit: the first N images per class are taken from the training split in its order.
    let mut recorded = Vec::new();
    for m in &a.model {
        match with_data_dir(recorded_spec(m)?, a.data_dir.clone()) {
            DataSpec::Mnist {
                dir, split_seed, ..
            } => recorded.push((dir, split_seed)),
            other => {
                return Err(Error::param(
                    "model",
                    m.display(),
                    format!(
                        "classification needs MNIST's labels; the model was trained on {}",
                        serde_json::to_string(&other).unwrap_or_default()
                    ),
                ));
            }
        }
    }
    let first_seed = recorded.first().map(|(_, s)| *s);
    if let Some((m, (_, s))) = a
        .model
        .iter()
        .zip(&recorded)
        .find(|(_, (_, s))| Some(*s) != first_seed)
    {
        return Err(Error::param(
            "model",
            m.display(),
            format!(
                "was trained on MNIST split seed {s}, the first model on {}: compare models of one split",
                first_seed.unwrap_or_default()
            ),
        ));
    }
    let (dir, recorded_seed) = match recorded.first() {
        Some((dir, seed)) => (dir.clone(), Some(*seed)),
        None => (
            a.data_dir
                .clone()
                .unwrap_or_else(DataSpec::default_dir)
                .join("mnist"),
            None,
        ),
    };
    let split_seed = a
        .split_seed
        .or(recorded_seed)
        .unwrap_or(varsparse::data::DEFAULT_SPLIT_SEED);
    let t0 = Instant::now();
    let mnist = varsparse::data::load_mnist(&dir, split_seed)?;
    eprintln!(
        "data: MNIST from {} (split seed {split_seed}): {} training, {} validation, {} test images ({:.1} s)",
        dir.display(),
        mnist.train.len(),
        mnist.val.len(),
        mnist.test.len(),
        t0.elapsed().as_secs_f64()
    );
    fn split(s: &varsparse::data::mnist::Split) -> LabelledSplit<'_> {
        LabelledSplit {
            x: s.images.view(),
            labels: &s.labels,
        }
    }
    let data = ProtocolData {
        train: split(&mnist.train),
        val: split(&mnist.val),
        test: split(&mnist.test),
        n_classes: 10,
    };
    let t1 = Instant::now();
    let mut on_row = |r: &varsparse::experiments::classify::ClassifyRow| {
        eprintln!(
            "{} N = {}: top-1 {:.2}% ± {:.2}, top-3 {:.2}% ± {:.2} ({} seeds, {:.1} s)",
            r.method.name(),
            r.per_class,
            100.0 * r.top1_mean,
            100.0 * r.top1_std,
            100.0 * r.top3_mean,
            100.0 * r.top3_std,
            r.seeds.len(),
            r.seconds
        );
    };
    let baselines = ProtocolSpec {
        methods: spec
            .methods
            .iter()
            .copied()
            .filter(|m| *m != Method::Codes)
            .collect(),
        ..spec.clone()
    };
    let mut report: Option<varsparse::experiments::classify::ClassifyReport> = None;
    for (m, path) in models.iter().zip(&a.model) {
        if models.len() > 1 {
            eprintln!("codes of {}", path.display());
        }
        let encode = |y: &ndarray::Array2<f32>| m.encode(y);
        let one = ProtocolSpec {
            methods: vec![Method::Codes],
            ..spec.clone()
        };
        let mut r = run_protocol(&data, Some(&encode as EncodeFn<'_>), &one, &mut on_row)?;
        if models.len() > 1 {
            let label = match m.params().preset {
                Some(p) => format!(
                    "{} λ={} ep{}",
                    p.name(),
                    m.params().energy.lambda,
                    m.epochs_trained()
                ),
                None => path.display().to_string(),
            };
            for row in &mut r.rows {
                row.encoder = Some(label.clone());
            }
        }
        match &mut report {
            None => report = Some(r),
            Some(all) => all.rows.extend(r.rows),
        }
    }
    if !baselines.methods.is_empty() {
        let r = run_protocol(&data, None, &baselines, &mut on_row)?;
        match &mut report {
            None => report = Some(r),
            Some(all) => all.rows.extend(r.rows),
        }
    }
    let mut report = report.ok_or_else(|| Error::param("model", "missing", "nothing to run"))?;
    report.spec = spec.clone();
    eprintln!("done in {:.1} s", t1.elapsed().as_secs_f64());
    if a.select_best {
        // one line per model kind: for each N, the encoder of that kind with the best mean
        // validation accuracy (the paper's Figure 9 protocol over its Figure 4 models)
        report.select_best_by_validation(|r| {
            r.encoder
                .as_deref()
                .map(|e| e.split(" λ=").next().unwrap_or(e).to_string())
        });
        for r in report.rows.iter().filter(|r| r.selected.is_some()) {
            eprintln!(
                "{} N = {}: chose {} (validation top-1 {:.2}%)",
                r.series(),
                r.per_class,
                r.selected.as_deref().unwrap_or(""),
                100.0 * r.val_top1_mean
            );
        }
    }
    print!("{}", report.to_markdown());

    let out = a.out.clone().unwrap_or_else(|| {
        a.model
            .first()
            .and_then(|m| m.parent())
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    std::fs::create_dir_all(&out).map_err(|source| Error::Io {
        action: "creating",
        path: out.clone(),
        source,
    })?;
    let csv_path = out.join("classify.csv");
    let csv = report.to_csv();
    write_atomic(&csv_path, |w| w.write_all(csv.as_bytes()))?;
    let png = out.join("classify.png");
    varsparse::experiments::figures::save_plot(
        &report.plot("Low-data classification on frozen codes (MNIST test)"),
        &png,
    )?;
    let json = serde_json::json!({ "models": a.model, "split_seed": split_seed, "report": report });
    write_json(&out.join("classify.json"), &json)?;
    eprintln!(
        "wrote {}, {} and {}",
        csv_path.display(),
        out.join("classify.json").display(),
        png.display()
    );
    Ok(())
}

fn bench(a: BenchArgs, threads: usize) -> Result<()> {
    let dir = a
        .data_dir
        .unwrap_or_else(DataSpec::default_dir)
        .join("mnist");
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
        std::fs::create_dir_all(out).map_err(|source| Error::Io {
            action: "creating",
            path: out.clone(),
            source,
        })?;
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

fn denoise(a: DenoiseArgs) -> Result<()> {
    let model = SparseCoder::load(&a.model)?;
    let (data, split) = load_split(&a.model, a.data_dir.clone(), &a.split)?;
    let part = data.split(&split)?;
    let t0 = Instant::now();
    let report = varsparse::experiments::denoise::denoise(
        &model,
        &part.samples(data.pixel_scale),
        &a.sigma,
        a.seed,
    )?;
    let out = a.out.clone().unwrap_or_else(|| parent_dir(&a.model));
    create_dir(&out)?;
    write_json(
        &out.join("denoise.json"),
        &serde_json::json!({ "model": a.model, "split": split, "report": report }),
    )?;
    if let Some(shape) = model.image_shape().or(data.image_shape) {
        for &sigma in &a.sigma {
            let img = varsparse::experiments::denoise::denoise_figure(
                &model,
                part.x.view(),
                shape,
                sigma,
                a.seed,
                a.show,
            )?;
            let path = out.join(format!("denoise_sigma{sigma}.png"));
            varsparse::experiments::figures::save_gray_png(&img, &path)?;
            eprintln!("wrote {}", path.display());
        }
    }
    println!("{}", report.to_markdown());
    eprintln!(
        "{split} split, noise seed {} ({:.1} s) -> {}",
        a.seed,
        t0.elapsed().as_secs_f64(),
        out.join("denoise.json").display()
    );
    Ok(())
}

fn atoms(a: AtomsArgs) -> Result<()> {
    let model = SparseCoder::load(&a.model)?;
    let img = varsparse::experiments::figures::atoms_image(&model, a.cols)?;
    varsparse::experiments::figures::save_gray_png(&img, &a.out)?;
    eprintln!(
        "{} atoms, {}x{} pixels -> {}",
        model.decoder().code_dim(),
        img.width(),
        img.height(),
        a.out.display()
    );
    Ok(())
}

fn sweep(a: SweepArgs) -> Result<()> {
    let presets = a
        .preset
        .iter()
        .map(|n| Preset::from_name(n))
        .collect::<Result<Vec<_>>>()?;
    if a.seeds == 0 {
        return Err(Error::param("seeds", 0, "must be >= 1"));
    }
    let spec = data_spec(&a.data, presets.first().copied())?
        .ok_or_else(|| Error::param("data", "missing", "no data"))?;
    let cfg = varsparse::experiments::sweep::SweepConfig {
        presets,
        lambdas: a.lambdas.clone(),
        seeds: (1..=a.seeds).collect(),
        epochs: a.epochs,
        out: a.out.clone(),
        data_description: serde_json::to_string(&spec).ok(),
    };
    let t0 = Instant::now();
    let data = spec.load()?;
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this batch (Ctrl-C again to quit at once)");
    });
    let results =
        varsparse::experiments::sweep::run_sweep(&cfg, &data, Some(&STOP), |ev| match ev {
            varsparse::experiments::sweep::SweepEvent::Skipped(r) => eprintln!(
                "skip   {} lambda {} seed {}: already done ({:.2} dB, {:.1}%)",
                r.preset,
                r.lambda,
                r.seed,
                r.test_psnr,
                100.0 * r.test_sparsity
            ),
            varsparse::experiments::sweep::SweepEvent::Training {
                preset,
                lambda,
                seed,
                from,
                dir,
            } => eprintln!(
                "train  {} lambda {lambda} seed {seed} from epoch {from} -> {}",
                preset.name(),
                dir.display()
            ),
            varsparse::experiments::sweep::SweepEvent::Finished(r) => eprintln!(
                "done   {} lambda {} seed {}: test {:.2} dB, {:.1}% zeros ({:.1} s)",
                r.preset,
                r.lambda,
                r.seed,
                r.test_psnr,
                100.0 * r.test_sparsity,
                r.seconds
            ),
        })?;
    let csv = a.out.join("sweep.csv");
    varsparse::experiments::sweep::write_csv(&results, &csv)?;
    let png = a.out.join("sweep.png");
    varsparse::experiments::figures::save_plot(
        &varsparse::experiments::sweep::plot(
            &results,
            "Test PSNR against sparsity (encoder codes)",
        ),
        &png,
    )?;
    print!("{}", varsparse::experiments::sweep::to_csv(&results));
    eprintln!(
        "{} runs ({:.1} s) -> {}, {}",
        results.len(),
        t0.elapsed().as_secs_f64(),
        csv.display(),
        png.display()
    );
    Ok(())
}

/// The directory a model directory sits in (`runs/x` for `runs/x/best`), or `.`.
fn parent_dir(model: &std::path::Path) -> PathBuf {
    match model.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn create_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "creating",
        path: dir.to_path_buf(),
        source,
    })
}
