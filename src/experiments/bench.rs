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
        let w = unit_atoms(&m.train.images, 128, seed)?;
        Problem::new(w, m.test.images, target_sparsity)
    }

    /// The natural-patch variant: `atoms` unit-norm atoms drawn with `seed` from 4 x `atoms`
    /// training patches of the images in `dir` (`data/natural`), inputs 10,000 test patches
    /// (28 x 28, LCN-normalised as in training; docs/CONVENTIONS.md §7).
    ///
    /// # Errors
    /// Data errors; [`crate::Error::InvalidParameter`] for `atoms == 0`.
    pub fn patches(dir: &Path, atoms: usize, seed: u64, target_sparsity: f64) -> Result<Problem> {
        if atoms == 0 {
            return Err(crate::Error::param("atoms", atoms, "at least 1"));
        }
        let params = crate::data::patches::PatchParams {
            n_train: 4 * atoms,
            n_val: 0,
            n_test: 10_000,
            ..Default::default()
        };
        let p = crate::data::patches::generate_patches(dir, &params)?;
        let w = unit_atoms(&p.train.patches, atoms, seed)?;
        Problem::new(w, p.test.patches, target_sparsity)
    }

    /// A problem over `w` and `y` with `lambda` set for `target_sparsity` (see
    /// [`Problem::set_sparsity`]).
    ///
    /// # Errors
    /// As [`Problem::set_sparsity`].
    pub fn new(w: Array2<f32>, y: Array2<f32>, target_sparsity: f64) -> Result<Problem> {
        let mut p = Problem { w, y, lambda: 0.0 };
        p.set_sparsity(target_sparsity)?;
        Ok(p)
    }

    /// Sets `lambda` (authors' scaling) by bisection on its logarithm over `[1e-6, 10]` so that
    /// about `target` of the code entries of the first 1,000 inputs are zero.
    ///
    /// # Errors
    /// [`crate::Error::InvalidParameter`] unless `0 < target < 1`, or when no `lambda` in the
    /// range gets within 2 points of `target`; solver errors.
    pub fn set_sparsity(&mut self, target: f64) -> Result<()> {
        if !(target > 0.0 && target < 1.0) {
            return Err(crate::Error::param(
                "sparsity",
                target,
                "a fraction strictly between 0 and 1",
            ));
        }
        let probe = self.y.slice(s![..self.y.nrows().min(1000), ..]);
        let (mut lo, mut hi) = (1e-6f64.ln(), 10.0f64.ln());
        for _ in 0..30 {
            let mid = 0.5 * (lo + hi);
            let (_, r) = nonneg_lasso(&self.w, probe, mid.exp())?;
            if r.sparsity < target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let lambda = (0.5 * (lo + hi)).exp();
        let (_, r) = nonneg_lasso(&self.w, probe, lambda)?;
        if (r.sparsity - target).abs() > 0.02 {
            return Err(crate::Error::param(
                "sparsity",
                target,
                format!(
                    "not reachable on this problem: lambda in [1e-6, 10] gives {:.1}% at best \
                     (non-negative codes are sparse even as lambda goes to 0)",
                    100.0 * r.sparsity
                ),
            ));
        }
        self.lambda = lambda;
        Ok(())
    }
}

/// `atoms` rows of `x` drawn without replacement with `seed`, as unit-norm columns `(d, atoms)`.
fn unit_atoms(x: &Array2<f32>, atoms: usize, seed: u64) -> Result<Array2<f32>> {
    if atoms > x.nrows() {
        return Err(crate::Error::param(
            "atoms",
            atoms,
            format!("at most the {} samples to draw from", x.nrows()),
        ));
    }
    let idx = crate::data::sampling::permutation(x.nrows(), &mut crate::rng::rng(seed));
    let mut w = x
        .select(ndarray::Axis(0), &idx[..atoms])
        .reversed_axes()
        .as_standard_layout()
        .to_owned();
    for mut c in w.columns_mut() {
        let norm = c.dot(&c).sqrt();
        if norm > 0.0 {
            c.mapv_inplace(|v| v / norm);
        }
    }
    Ok(w)
}

/// Where the exact solver's time goes: the shared products against the per-sample solves.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TimeSplit {
    /// Median time of the whole solve, [`nonneg_lasso`] (s).
    pub whole_s: f64,
    /// Median time of `G = W^T W` alone, as the solver computes it (f64) (s).
    pub gram_s: f64,
    /// Median time of `C = Y W` alone, the product the solver starts from (s).
    pub yw_s: f64,
    /// `whole_s - gram_s - yw_s`: the per-sample active-set solves and the codes' bookkeeping.
    pub solves_s: f64,
    /// `yw_s / whole_s`: the fraction of the GEMM-bound limit (the time of `Y W` alone, which no
    /// method that reads `Wᵀy` can avoid) that the whole solve reaches.
    pub fraction_of_gemm_limit: f64,
}

/// Times the exact solver on `p` and its shared products alone (medians over `repeats`).
///
/// # Errors
/// Solver errors.
pub fn time_split(p: &Problem, repeats: usize) -> Result<TimeSplit> {
    let (whole_s, _) = time(repeats, || nonneg_lasso(&p.w, &p.y, p.lambda))?;
    let (gram_s, _) = time(repeats, || {
        let w64 = p.w.mapv(|v| v as f64);
        Ok(w64.t().dot(&w64))
    })?;
    let mut c = Array2::<f32>::zeros((p.y.nrows(), p.w.ncols()));
    let (yw_s, _) = time(repeats, || {
        crate::backend::cpu::mat_mul(1.0, p.y.view(), p.w.view(), 0.0, c.view_mut());
        Ok(())
    })?;
    Ok(TimeSplit {
        whole_s,
        gram_s,
        yw_s,
        solves_s: (whole_s - gram_s - yw_s).max(0.0),
        fraction_of_gemm_limit: yw_s / whole_s,
    })
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

/// Writes `W.npy`, `Y.npy` and `problem.json` (lambda, the table's rows, the time split, a label)
/// into `dir`, created if missing: the input of `benches/compare/compare.py`.
///
/// # Errors
/// I/O errors, naming the file.
pub fn export(
    dir: &Path,
    label: &str,
    p: &Problem,
    rows: &[Row],
    split: Option<&TimeSplit>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| crate::Error::Io {
        action: "creating",
        path: dir.to_path_buf(),
        source,
    })?;
    crate::io::write_npy_f32(&dir.join("W.npy"), &p.w)?;
    crate::io::write_npy_f32(&dir.join("Y.npy"), &p.y)?;
    let json = serde_json::json!({
        "label": label,
        "lambda": p.lambda,
        "objective": "mean over samples of (1/d)||y - W z||^2 + lambda ||z||_1, z >= 0",
        "d": p.w.nrows(),
        "rows": rows,
        "split": split,
    });
    crate::io::write_json(&dir.join("problem.json"), &json)
}
