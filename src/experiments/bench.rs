//! The batch-encoding benchmark of `varsparse bench`: one problem, every path, one table.
//!
//! The problem (shared with `benches/compare/compare.py`): the 10,000 MNIST test images,
//! normalised as in training; a dictionary of 128 unit-norm atoms, the normalised training images
//! of a seeded draw; `lambda` (authors' scaling) found by bisection so that about 89% of the code
//! entries of the first 1,000 images are zero. Each path is timed `repeats` times; the table gives
//! medians, the achieved GFLOP/s, and the GEMM throughput measured in the same run at the same
//! shapes.

use std::path::Path;
use std::time::Instant;

use ndarray::{Array2, s};

use crate::backend::{Backend, Cpu, Trans};
use crate::error::Result;
use crate::model::decoder::Decoder;
use crate::model::energy::EnergyParams;
use crate::solve::fista::{self, FistaParams, FistaWorkspace, GradientPath, StepRule};
use crate::solve::lasso::{nonneg_lasso, objective};

/// The benchmark problem.
pub struct Problem {
    /// Dictionary `(784, 128)`, unit-norm columns.
    pub w: Array2<f32>,
    /// Inputs `(10000, 784)`.
    pub y: Array2<f32>,
    /// The sparsity weight (authors' scaling).
    pub lambda: f64,
}

impl Problem {
    /// Builds the problem from the MNIST directory (`data/mnist`), atoms drawn with `seed`.
    ///
    /// # Errors
    /// Data errors.
    pub fn mnist(dir: &Path, seed: u64, target_sparsity: f64) -> Result<Problem> {
        let m = crate::data::load_mnist(dir, crate::data::DEFAULT_SPLIT_SEED)?;
        let idx =
            crate::data::sampling::permutation(m.train.images.nrows(), &mut crate::rng::rng(seed));
        let mut w = m
            .train
            .images
            .select(ndarray::Axis(0), &idx[..128])
            .reversed_axes()
            .as_standard_layout()
            .to_owned();
        for mut c in w.columns_mut() {
            let norm = c.dot(&c).sqrt();
            c.mapv_inplace(|v| v / norm);
        }
        let y = m.test.images;
        // bisection on log(lambda) for the target sparsity on the first 1,000 images
        let probe = y.slice(s![..1000, ..]).to_owned();
        let (mut lo, mut hi) = (1e-5f64.ln(), 1.0f64.ln());
        for _ in 0..30 {
            let mid = 0.5 * (lo + hi);
            let (_, r) = nonneg_lasso(&w, &probe, mid.exp())?;
            if r.sparsity < target_sparsity {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(Problem {
            w,
            y,
            lambda: (0.5 * (lo + hi)).exp(),
        })
    }
}

/// One row of the table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    /// The path.
    pub path: String,
    /// Median wall time over the repeats (s).
    pub seconds: f64,
    /// Samples per second at the median.
    pub samples_per_s: f64,
    /// Achieved GFLOP/s, counting the multiply-adds of the dense products (× 2 / time); NaN where
    /// converged samples are skipped and the work is not known. The CPU backend skips the zeros
    /// of mostly-zero codes (its sparse GEMM path), so for FISTA this is a dense-equivalent rate
    /// and may exceed the GEMM reference at the same shape.
    pub gflops: f64,
    /// Mean objective per sample.
    pub mean_objective: f64,
    /// `(objective - optimum) / optimum`, the optimum from the active-set solver.
    pub rel_gap: f64,
    /// Fraction of zero codes.
    pub sparsity: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<T>(repeats: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, T)> {
    let mut times = Vec::with_capacity(repeats);
    let mut last = None;
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        let out = f()?;
        times.push(t0.elapsed().as_secs_f64());
        last = Some(out);
    }
    let out = last.ok_or_else(|| crate::Error::param("repeats", 0, "at least 1"))?;
    Ok((median(times), out))
}

/// GEMM throughput (GFLOP/s, median) of `(m, k) x (k, n)` on the CPU backend.
///
/// # Errors
/// Backend errors.
pub fn gemm_gflops(m: usize, k: usize, n: usize, repeats: usize) -> Result<f64> {
    let a = crate::rng::linear_uniform::<f32>(&mut crate::rng::rng(1), m, k, 1);
    let b = crate::rng::linear_uniform::<f32>(&mut crate::rng::rng(2), k, n, 1);
    let mut c = Array2::<f32>::zeros((m, n));
    let inner = (2e8 / (2.0 * (m * k * n) as f64)).ceil().max(1.0) as usize;
    let (t, _) = time(repeats, || {
        for _ in 0..inner {
            Cpu.gemm(1.0, &a, Trans::N, &b, Trans::N, 0.0, &mut c)?;
        }
        Ok(())
    })?;
    Ok(2.0 * (m * k * n * inner) as f64 / t / 1e9)
}

/// GEMM references: `(label, GFLOP/s)` at the paths' shapes.
pub type GemmRefs = Vec<(String, f64)>;

/// Runs every path on `p` and returns the table rows, plus GEMM references at the paths' shapes.
///
/// # Errors
/// Solver errors.
pub fn run(p: &Problem, repeats: usize, with_fista: bool) -> Result<(Vec<Row>, GemmRefs)> {
    let (n, d) = p.y.dim();
    let l = p.w.ncols();
    let mut rows = vec![];
    let (t, (z, r)) = time(repeats, || nonneg_lasso(&p.w, &p.y, p.lambda))?;
    let opt = objective(&p.w, &p.y, &z, p.lambda) / n as f64;
    // C = Y W dominates; then the active-set work (counted as ~2 l k^2 per sample, k the support).
    let flops = 2.0 * (n * d * l) as f64;
    rows.push(Row {
        path: "active set (exact)".into(),
        seconds: t,
        samples_per_s: n as f64 / t,
        gflops: flops / t / 1e9,
        mean_objective: opt,
        rel_gap: 0.0,
        sparsity: r.sparsity,
    });
    let dec = Decoder::linear(&Cpu, &p.w)?;
    let fista_paths = if with_fista {
        vec![
            (
                "FISTA Gram, tol 1e-3 (authors' stop)",
                GradientPath::Gram,
                200,
                1e-3,
            ),
            ("FISTA Gram, 200 iterations", GradientPath::Gram, 200, 0.0),
            (
                "FISTA direct, 200 iterations",
                GradientPath::Direct,
                200,
                0.0,
            ),
        ]
    } else {
        vec![]
    };
    for (label, path, max_iter, tol) in fista_paths {
        let params = FistaParams {
            energy: EnergyParams {
                lambda: p.lambda,
                ..EnergyParams::default()
            },
            step: StepRule::Auto,
            max_iter,
            tol,
            path,
            ..FistaParams::default()
        };
        let bs = 250;
        let mut ws = FistaWorkspace::new(&Cpu, &dec, bs)?;
        let mut iters = 0usize;
        let (t, z) = time(repeats, || {
            let mut z = Array2::<f32>::zeros((n, l));
            iters = 0;
            for start in (0..n).step_by(bs) {
                let end = (start + bs).min(n);
                if end - start != bs {
                    ws = FistaWorkspace::new(&Cpu, &dec, end - start)?;
                }
                let yb = p.y.slice(s![start..end, ..]).to_owned();
                let rep = fista::solve(&Cpu, &dec, &yb, None, &params, &mut ws)?;
                iters += rep.iterations * (end - start);
                z.slice_mut(s![start..end, ..]).assign(ws.codes());
            }
            Ok(z)
        })?;
        let per_iter = match path {
            GradientPath::Direct => 2.0 * (2 * d * l) as f64,
            _ => 2.0 * (l * l) as f64,
        };
        let setup = match path {
            GradientPath::Direct => 0.0,
            _ => 2.0 * (n * d * l) as f64,
        };
        let obj = objective(&p.w, &p.y, &z, p.lambda) / n as f64;
        rows.push(Row {
            path: label.into(),
            seconds: t,
            samples_per_s: n as f64 / t,
            // with a tolerance, converged samples are skipped: the count would overstate the work
            gflops: if tol > 0.0 {
                f64::NAN
            } else {
                (setup + per_iter * iters as f64) / t / 1e9
            },
            mean_objective: obj,
            rel_gap: (obj - opt) / opt,
            sparsity: z.iter().filter(|&&v| v == 0.0).count() as f64 / z.len() as f64,
        });
    }
    let refs = vec![
        (
            format!("GEMM ({n} x {d}) x ({d} x {l}): Y W"),
            gemm_gflops(n, d, l, repeats)?,
        ),
        (
            format!("GEMM (250 x {l}) x ({l} x {l}): X G"),
            gemm_gflops(250, l, l, repeats)?,
        ),
        (
            format!("GEMM (250 x {l}) x ({l} x {d}): X W^T"),
            gemm_gflops(250, l, d, repeats)?,
        ),
    ];
    Ok((rows, refs))
}
