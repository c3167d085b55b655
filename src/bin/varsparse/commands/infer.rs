//! `varsparse infer`: codes for the rows of an `.npy` against a fixed decoder, with the exact
//! lasso solver or FISTA (`varsparse::solve::encode`).

use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

use ndarray::{Array2, Axis};
use varsparse::backend::{Backend, Device, OnBackend};
use varsparse::comm::shard_blocks;
use varsparse::io::{
    NpyFile, read_npy_f32, read_npy_vector_f32, write_json, write_npy_f32_sharded,
};
use varsparse::lasso::LassoReport;
use varsparse::model::decoder::Decoder;
use varsparse::model::energy::EnergyParams;
use varsparse::solve::encode::{Encoded, Solver, encode};
use varsparse::solve::fista::{BatchReport, FistaParams, GradientPath, StepRule};
use varsparse::{Error, Result};

use crate::ranks::Ranks;

/// `infer`'s flags.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("decoder").required(true).args(["dictionary", "mlp"])))]
pub struct Args {
    /// A linear dictionary W (d, l), atoms as columns.
    #[arg(long, value_name = "W.npy")]
    dictionary: Option<PathBuf>,
    /// A one-hidden-layer decoder: W1 (m, l), b1 (m) (or (1, m)), W2 (d, m), comma-separated.
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
    /// Where to write a JSON report (the solver that ran; FISTA: per batch iterations, mean
    /// steps, convergence, energy; exact: the lasso's report).
    #[arg(long, value_name = "R.json")]
    report: Option<PathBuf>,
    /// The solver: exact (the active-set lasso solver: a linear dictionary with beta = gamma =
    /// 0), fista, or auto: exact where it applies, FISTA otherwise or when a FISTA-only flag
    /// (--step, --backtracking, --direct) is given.
    #[arg(long, value_enum, value_name = "SOLVER", default_value_t = Solver::Auto)]
    solver: Solver,
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
    /// FISTA: a constant step eta (default: 1/L from a Lipschitz bound for a dictionary,
    /// backtracking for the one-hidden-layer decoder).
    #[arg(long, value_name = "F", conflicts_with = "backtracking")]
    step: Option<f64>,
    /// FISTA: backtracking line search (Beck & Teboulle), one L per batch.
    #[arg(long)]
    backtracking: bool,
    /// FISTA: with --step, backtrack (from L = 1/step) in a batch whose loop runs past N
    /// iterations (the step safeguard of `train`; 0: from the first iteration).
    #[arg(long, value_name = "N", requires = "step")]
    safeguard_after: Option<usize>,
    /// FISTA: restart each sample's momentum when its step turns against it (adaptive restart,
    /// a deviation from the authors' code; needs a constant step: --step, or a dictionary).
    #[arg(long)]
    adaptive_restart: bool,
    /// FISTA: maximum iterations per batch.
    #[arg(long, value_name = "N", default_value_t = 200)]
    max_iter: usize,
    /// FISTA: relative tolerance of the per-sample convergence test (0: run max-iter
    /// iterations).
    #[arg(long, value_name = "F", default_value_t = 1e-3)]
    tol: f64,
    /// Signed codes (soft thresholding) instead of non-negative ones.
    #[arg(long)]
    signed: bool,
    /// FISTA: rows per batch (the variance term is computed per batch).
    #[arg(long, value_name = "N", default_value_t = 250)]
    batch_size: usize,
    /// FISTA: compute the gradient through the input space throughout (no Gram matrix: neither
    /// the linear decoder's nor, for a one-hidden-layer decoder, the hidden layer's).
    #[arg(long)]
    direct: bool,
}

impl Args {
    /// The solver to ask the library for: `auto` with a FISTA-only flag means FISTA.
    fn solver(&self) -> Result<Solver> {
        let fista_only =
            self.step.is_some() || self.backtracking || self.direct || self.adaptive_restart;
        match self.solver {
            Solver::Auto if fista_only => Ok(Solver::Fista),
            Solver::Exact if fista_only => Err(Error::param(
                "solver",
                "exact",
                "--step, --backtracking, --direct and --adaptive-restart are FISTA's; the exact solver does not use \
                 them (drop them, or use --solver fista)",
            )),
            s => Ok(s),
        }
    }

    fn params(&self) -> FistaParams {
        let step = match (self.step, self.backtracking) {
            (Some(eta), _) => match self.safeguard_after {
                None => StepRule::Constant { eta },
                Some(after) => StepRule::Safeguarded {
                    eta,
                    after,
                    factor: 2.0,
                },
            },
            (None, true) => StepRule::Backtracking {
                initial_step: None,
                factor: 2.0,
            },
            (None, false) => StepRule::Auto,
        };
        FistaParams {
            energy: EnergyParams {
                lambda: self.lambda,
                beta: self.beta,
                threshold: self.threshold,
                gamma: self.gamma,
            },
            step,
            max_iter: self.max_iter,
            tol: self.tol,
            nonneg: !self.signed,
            path: if self.direct {
                GradientPath::Direct
            } else {
                GradientPath::Auto
            },
            record_trace: false,
            restart: self.adaptive_restart,
        }
    }
}

/// The decoder as read from its files (on the host).
enum HostDecoder {
    Linear(Array2<f32>),
    OneHidden(Array2<f32>, Array2<f32>, Array2<f32>),
}

impl HostDecoder {
    fn read(a: &Args) -> Result<HostDecoder> {
        match (&a.dictionary, &a.mlp) {
            (Some(w), None) => Ok(HostDecoder::Linear(read_npy_f32(w)?)),
            (None, Some(files)) => match &files[..] {
                // b1 is a vector: (m,) as numpy and PyTorch write it, or (1, m) / (m, 1)
                [w1, b1, w2] => Ok(HostDecoder::OneHidden(
                    read_npy_f32(w1)?,
                    read_npy_vector_f32(b1)?.insert_axis(Axis(0)),
                    read_npy_f32(w2)?,
                )),
                _ => Err(Error::param(
                    "mlp",
                    files.len(),
                    "takes three files: W1.npy,b1.npy,W2.npy",
                )),
            },
            _ => Err(Error::param(
                "decoder",
                "both",
                "give exactly one of --dictionary and --mlp",
            )),
        }
    }
}

/// The encoding, on the job's backend.
struct Job<'a> {
    args: &'a Args,
    params: &'a FistaParams,
    solver: Solver,
    /// The input's rows this rank encodes.
    rows: Range<usize>,
}

impl OnBackend for Job<'_> {
    type Output = (Encoded, usize, f64);

    fn run<B: Backend<f32>>(self, make: &dyn Fn() -> Result<B>) -> Result<Self::Output> {
        let be = make()?;
        let a = self.args;
        let decoder = match HostDecoder::read(a)? {
            HostDecoder::Linear(w) => Decoder::linear(&be, &w)?,
            HostDecoder::OneHidden(w1, b1, w2) => Decoder::one_hidden(&be, &w1, &b1, &w2)?,
        };
        // only this rank's rows are read
        let y = NpyFile::open(&a.input)?.read_rows(self.rows.clone())?;
        let warm = match a.warm_start.as_deref() {
            Some(path) => {
                let mut f = NpyFile::open(path)?;
                let (n_in, n_warm) = (NpyFile::open(&a.input)?.dim2()?.0, f.dim2()?.0);
                if n_warm != n_in {
                    return Err(Error::shape(
                        "warm start",
                        format!("{} has {n_warm} rows, the input {n_in}", path.display()),
                    ));
                }
                Some(f.read_rows(self.rows.clone())?)
            }
            None => None,
        };
        let t0 = Instant::now();
        let out = encode(
            &be,
            &decoder,
            &y,
            warm.as_ref(),
            self.params,
            a.batch_size,
            self.solver,
        )?;
        Ok((out, y.nrows(), t0.elapsed().as_secs_f64()))
    }
}

/// Runs `infer`.
pub fn run(a: Args, device: Device, ranks: &Ranks) -> Result<()> {
    let params = a.params();
    let solver = a.solver()?;
    let comm = &*ranks.comm;
    // whole batches per rank, so that every batch is the one-process run's
    let n_all = NpyFile::open(&a.input)?.dim2()?.0;
    let rows = shard_blocks(n_all, a.batch_size, comm.rank(), comm.size());
    let start = rows.start;
    let (mine, _, my_secs) = device.run(Job {
        args: &a,
        params: &params,
        solver,
        rows,
    })?;
    write_npy_f32_sharded(&a.out, n_all, start, &mine.codes, comm)?;
    // the run's statistics over every rank's rows
    let mut v = [mine.codes.iter().filter(|&&x| x == 0.0).count() as f64];
    comm.sum_f64(&mut v)?;
    let mut secs = vec![0.0; comm.size()];
    comm.all_gather_f64(&[my_secs], &mut secs)?;
    let secs = secs.iter().copied().fold(0.0, f64::max);
    let out = if ranks.distributed() {
        mine.gather_reports(start, comm)?
    } else {
        mine
    };
    if !ranks.is_root() {
        return Ok(());
    }
    let n = n_all;
    let sparsity = v[0] / (n * out.codes.ncols()).max(1) as f64;
    if device != Device::Cpu && out.solver == Solver::Exact {
        eprintln!(
            "note: the exact lasso solver runs on the CPU (a host algorithm); --device {device} \
             applies to FISTA (--solver fista)"
        );
    }
    let energy = out.mean_energy();
    let steps = out.mean_steps();
    if let Some(path) = &a.report {
        #[derive(serde::Serialize)]
        struct Report<'a> {
            rows: usize,
            seconds: f64,
            solver: Solver,
            sparsity: f64,
            mean_energy: f64,
            mean_steps: f64,
            params: &'a FistaParams,
            batches: &'a [BatchReport],
            #[serde(skip_serializing_if = "Option::is_none")]
            lasso: Option<&'a LassoReport>,
        }
        write_json(
            path,
            &Report {
                rows: n,
                seconds: secs,
                solver: out.solver,
                sparsity,
                mean_energy: energy,
                mean_steps: steps,
                params: &params,
                batches: &out.batches,
                lasso: out.lasso.as_ref(),
            },
        )?;
    }
    match out.solver {
        Solver::Exact => eprintln!(
            "{n} rows in {secs:.3} s with the exact lasso solver: mean energy {energy:.6}, sparsity {:.1}%",
            100.0 * sparsity,
        ),
        _ => {
            let converged = out.batches.iter().filter(|b| b.report.converged).count();
            eprintln!(
                "{n} rows in {} batches ({converged} converged) in {secs:.3} s with FISTA: mean energy {energy:.6}, sparsity {:.1}%, mean steps {steps:.1}",
                out.batches.len(),
                100.0 * sparsity,
            );
        }
    }
    Ok(())
}
