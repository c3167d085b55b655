//! Exact batch encoding for the lasso (`beta = gamma = 0`), non-negative or signed: an
//! active-set solver.
//!
//! With a fixed dictionary `W` `(d, l)` and no variance or proximity term, every sample's codes
//! solve an independent problem, in the authors' scaling
//!
//! ```text
//! min_{z >= 0}  (1/d) ||y - W z||^2 + lambda sum_j z_j
//! ```
//!
//! Multiplying by `d/2` gives the quadratic program `min_{z >= 0} 1/2 z^T G z - b^T z` with
//! `G = W^T W` and `b = W^T y - (d lambda / 2) 1`. [`nonneg_lasso`] solves it exactly with the
//! Lawson–Hanson active-set method: grow the support one coordinate at a time (the one whose
//! gradient most violates the optimality conditions), solve the small positive system on the
//! support by Cholesky (in f64), and step back along the segment when a coordinate would turn
//! negative. Codes are ~89% zero on MNIST, so each sample costs a few solves of size ~15 and
//! matrix–vector products with `G`'s support columns — far fewer operations than FISTA's
//! iterations, and the answer is the optimum to rounding rather than to a tolerance.
//!
//! Samples are independent: they are split over the threads of the CPU pool
//! ([`crate::backend::cpu::threads`]), and the codes do not depend on the thread count.
//!
//! This solver is CPU-only by design: its work is a few small dependent solves per sample with
//! data-dependent supports, which suits a CPU core and not a GPU's lock-step threads. It runs on
//! the host whatever device the rest of a run uses.

use ndarray::{
    Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, AsArray, Axis, Ix2,
};

use crate::backend::cpu;
use crate::backend::cpu::threads;
use crate::error::{Error, Result};

/// What [`lasso`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LassoReport {
    /// Samples solved.
    pub n: usize,
    /// Mean objective `(1/d) ||y - W z||^2 + lambda ||z||_1` per sample, from the quadratic form
    /// (`(y^T y - 2 c^T z + z^T G z)/d`, in f64; [`objective`] recomputes it from the residual).
    pub mean_objective: f64,
    /// Mean support size.
    pub mean_support: f64,
    /// Fraction of exact zeros in the codes.
    pub sparsity: f64,
    /// Total active-set iterations (support changes).
    pub iterations: usize,
    /// Largest violation of the optimality conditions left, `max_j (b - G z)_j` over `z_j = 0`
    /// and `|(b - G z)_j|` over `z_j > 0`, relative to `max |b|`.
    pub max_kkt_violation: f64,
}

impl LassoReport {
    /// The report of the union of disjoint sets of samples (e.g. the ranks' shares of one
    /// input): counts added, means weighted by samples, the largest violation.
    pub fn combine(parts: &[LassoReport]) -> LassoReport {
        let n: usize = parts.iter().map(|p| p.n).sum();
        let mean = |f: fn(&LassoReport) -> f64| {
            parts.iter().map(|p| f(p) * p.n as f64).sum::<f64>() / n.max(1) as f64
        };
        LassoReport {
            n,
            mean_objective: mean(|p| p.mean_objective),
            mean_support: mean(|p| p.mean_support),
            sparsity: mean(|p| p.sparsity),
            iterations: parts.iter().map(|p| p.iterations).sum(),
            max_kkt_violation: parts
                .iter()
                .map(|p| p.max_kkt_violation)
                .fold(0.0, f64::max),
        }
    }
}

/// Solves the non-negative lasso for every row of `y` `(n, d)` against `w` `(d, l)`:
/// [`lasso`] with `positive = true`.
///
/// # Errors
/// As [`lasso`].
pub fn nonneg_lasso<'a>(
    w: &Array2<f32>,
    y: impl AsArray<'a, f32, Ix2>,
    lambda: f64,
) -> Result<(Array2<f32>, LassoReport)> {
    lasso(w, y.into(), lambda, true)
}

/// Solves the lasso for every row of `y` `(n, d)` against `w` `(d, l)`, exactly (to rounding):
/// non-negative codes when `positive` (the paper's), signed codes otherwise.
///
/// Signed codes `z = z+ - z-` solve the non-negative problem over the dictionary `[W, -W]`,
/// whose Gram matrix is `[[G, -G], [-G, G]]`: an atom and its negation are never both in the
/// support at the optimum, and the active-set loop drops a coordinate whose entry would make
/// the support singular. The samples are split over the threads of the enclosing
/// [`with_threads`](crate::backend::cpu::threads::with_threads); the codes do not depend on
/// their number.
///
/// # Errors
/// [`Error::Shape`] if the shapes disagree; [`Error::NonFiniteInput`]; [`Error::InvalidParameter`]
/// for `lambda < 0`.
pub fn lasso<'a>(
    w: &Array2<f32>,
    y: impl AsArray<'a, f32, Ix2>,
    lambda: f64,
    positive: bool,
) -> Result<(Array2<f32>, LassoReport)> {
    let y: ArrayView2<'a, f32> = y.into();
    let (d, l) = w.dim();
    if y.ncols() != d {
        return Err(Error::shape(
            "lasso: input Y",
            format!("Y is {:?}, W is {:?}", y.dim(), w.dim()),
        ));
    }
    if !(lambda.is_finite() && lambda >= 0.0) {
        return Err(Error::param("lambda", lambda, "must be finite and >= 0"));
    }
    crate::scalar::check_finite("dictionary W", w)?;
    crate::scalar::check_finite("Y", &y)?;
    let n = y.nrows();
    // G in f64 (l x l, cheap); C = Y W in f32 through the backend's GEMM (the dominant cost).
    let w64 = w.mapv(|v| v as f64);
    let g = w64.t().dot(&w64);
    let mut c = Array2::<f32>::zeros((n, l));
    cpu::mat_mul(1.0, y, w.view(), 0.0, c.view_mut());
    let (g, c) = if positive {
        (g, c)
    } else {
        let g2 = Array2::from_shape_fn((2 * l, 2 * l), |(i, j)| {
            let v = g[(i % l, j % l)];
            if (i < l) == (j < l) { v } else { -v }
        });
        let c2 = Array2::from_shape_fn(
            (n, 2 * l),
            |(i, j)| {
                if j < l { c[(i, j)] } else { -c[(i, j - l)] }
            },
        );
        (g2, c2)
    };
    let width = g.nrows();
    let shift = d as f64 * lambda / 2.0;
    let mut z = Array2::<f32>::zeros((n, width));
    let chunk = n.div_ceil(threads::parts(n, n * width * width)).max(1);
    let mut results = vec![(0usize, 0.0f64, 0.0f64); n.div_ceil(chunk)];
    let work = z
        .axis_chunks_iter_mut(Axis(0), chunk)
        .zip(c.axis_chunks_iter(Axis(0), chunk))
        .zip(y.axis_chunks_iter(Axis(0), chunk))
        .zip(results.iter_mut());
    threads::for_each_part(work, |(((zc, cc), yc), out)| {
        let mut ws = Solver::new(width);
        *out = solve_chunk(&mut ws, &g, zc, cc, yc, shift, lambda);
    });
    let z = if positive {
        z
    } else {
        Array2::from_shape_fn((n, l), |(i, j)| z[(i, j)] - z[(i, j + l)])
    };
    let iterations = results.iter().map(|r| r.0).sum();
    let max_kkt_violation = results.iter().map(|r| r.1).fold(0.0, f64::max);
    let r: f64 = results.iter().map(|r| r.2).sum();
    let zeros = z.iter().filter(|&&v| v == 0.0).count();
    Ok((
        z,
        LassoReport {
            n,
            mean_objective: r / n.max(1) as f64,
            mean_support: (n * l - zeros) as f64 / n.max(1) as f64,
            sparsity: zeros as f64 / (n * l).max(1) as f64,
            iterations,
            max_kkt_violation,
        },
    ))
}

/// The summed objective `sum_i (1/d) ||y_i - W z_i||^2 + lambda ||z_i||_1`, accumulated in f64.
pub fn objective(w: &Array2<f32>, y: &Array2<f32>, z: &Array2<f32>, lambda: f64) -> f64 {
    let d = w.nrows() as f64;
    let yhat = z.dot(&w.t());
    let mut total = 0.0f64;
    for ((yr, hr), zr) in y.rows().into_iter().zip(yhat.rows()).zip(z.rows()) {
        let rec: f64 = yr
            .iter()
            .zip(hr.iter())
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum();
        let l1: f64 = zr.iter().map(|&v| (v as f64).abs()).sum();
        total += rec / d + lambda * l1;
    }
    total
}

/// One thread's samples: solves each row of `c` (`Y W`) into `z`; returns (iterations, largest
/// relative KKT violation, summed objective). Runs the AVX2 instantiation of the loops where the
/// CPU has AVX2 (the same operations in the same order, so the same result: no fused
/// multiply-adds either way).
fn solve_chunk(
    ws: &mut Solver,
    g: &Array2<f64>,
    z: ArrayViewMut2<'_, f32>,
    c: ArrayView2<'_, f32>,
    y: ArrayView2<'_, f32>,
    shift: f64,
    lambda: f64,
) -> (usize, f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { solve_chunk_avx2(ws, g, z, c, y, shift, lambda) };
    }
    solve_rows(ws, g, z, c, y, shift, lambda)
}

/// [`solve_rows`] compiled with AVX2 enabled.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn solve_chunk_avx2(
    ws: &mut Solver,
    g: &Array2<f64>,
    z: ArrayViewMut2<'_, f32>,
    c: ArrayView2<'_, f32>,
    y: ArrayView2<'_, f32>,
    shift: f64,
    lambda: f64,
) -> (usize, f64, f64) {
    solve_rows(ws, g, z, c, y, shift, lambda)
}

/// The loop over one thread's samples (see [`solve_chunk`]).
#[inline(always)]
fn solve_rows(
    ws: &mut Solver,
    g: &Array2<f64>,
    mut z: ArrayViewMut2<'_, f32>,
    c: ArrayView2<'_, f32>,
    y: ArrayView2<'_, f32>,
    shift: f64,
    lambda: f64,
) -> (usize, f64, f64) {
    let d = y.ncols() as f64;
    let mut iters = 0;
    let mut viol = 0.0f64;
    let mut obj = 0.0f64;
    for ((zr, cr), yr) in z
        .axis_iter_mut(Axis(0))
        .zip(c.axis_iter(Axis(0)))
        .zip(y.axis_iter(Axis(0)))
    {
        let (it, v) = ws.solve(g, cr, shift, zr);
        iters += it;
        viol = viol.max(v);
        // (y^T y - 2 c^T z + z^T G z)/d + lambda sum z, with G z = b - grad
        let yy = sum_squares(yr);
        let (mut cz, mut zgz, mut sz) = (0.0f64, 0.0f64, 0.0f64);
        for &j in &ws.active {
            let zj = ws.z[j];
            cz += cr[j] as f64 * zj;
            zgz += zj * (ws.b[j] - ws.grad[j]);
            sz += zj;
        }
        obj += (yy - 2.0 * cz + zgz) / d + lambda * sz;
    }
    (iters, viol, obj)
}

/// `sum_i y_i^2` in f64, over 8 lanes (so that it vectorises) added in a fixed order.
#[inline(always)]
fn sum_squares(y: ArrayView1<'_, f32>) -> f64 {
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let tail: f64 = match y.as_slice() {
        Some(ys) => {
            let mut chunks = ys.chunks_exact(LANES);
            for c in &mut chunks {
                for k in 0..LANES {
                    acc[k] += c[k] as f64 * c[k] as f64;
                }
            }
            chunks
                .remainder()
                .iter()
                .map(|&v| v as f64 * v as f64)
                .sum()
        }
        None => y.iter().map(|&v| v as f64 * v as f64).sum(),
    };
    acc.iter().sum::<f64>() + tail
}

/// Per-thread buffers of the active-set method.
struct Solver {
    l: usize,
    active: Vec<usize>,
    in_active: Vec<bool>,
    /// Rows of the Cholesky factor of `G_AA` that are valid for the current `active` order.
    factored: usize,
    b: Vec<f64>,
    z: Array1<f64>,
    grad: Array1<f64>,
    chol: Vec<f64>,
    /// `1 / chol[i][i]` (multiplications instead of divisions in the substitutions).
    inv_diag: Vec<f64>,
    rhs: Vec<f64>,
    sol: Vec<f64>,
}

impl Solver {
    fn new(l: usize) -> Self {
        Solver {
            l,
            active: Vec::with_capacity(l),
            in_active: vec![false; l],
            factored: 0,
            b: vec![0.0; l],
            z: Array1::zeros(l),
            grad: Array1::zeros(l),
            chol: vec![0.0; l * l],
            inv_diag: vec![0.0; l],
            rhs: vec![0.0; l],
            sol: vec![0.0; l],
        }
    }

    /// `s = G_AA^{-1} b_A` by Cholesky, extending the factor from the rows still valid (a
    /// support that only grew costs O(k^2)); `false` if `G_AA` is not numerically positive
    /// definite.
    #[inline(always)]
    fn solve_support(&mut self, g: &Array2<f64>) -> bool {
        let k = self.active.len();
        let l = self.l;
        let a = &mut self.chol;
        // rows before `factored` of the factor and of the forward substitution `rhs = L^-1 b_A`
        // are still valid: they depend only on the support before them, whose order is kept
        let start = self.factored;
        for i in start..k {
            let gi = g.row(self.active[i]);
            for j in 0..=i {
                let mut sum = gi[self.active[j]];
                let (ri, rj) = (&a[i * l..i * l + j], &a[j * l..j * l + j]);
                sum -= ri.iter().zip(rj).map(|(x, y)| x * y).sum::<f64>();
                if i == j {
                    if sum <= 1e-12 * gi[self.active[i]].max(1e-300) {
                        self.factored = i;
                        return false;
                    }
                    a[i * l + i] = sum.sqrt();
                    self.inv_diag[i] = 1.0 / a[i * l + i];
                } else {
                    a[i * l + j] = sum * self.inv_diag[j];
                }
            }
            // the new row of the forward substitution
            let ri = &a[i * l..i * l + i];
            let dot: f64 = ri.iter().zip(&self.rhs[..i]).map(|(x, y)| x * y).sum();
            self.rhs[i] = (self.b[self.active[i]] - dot) * self.inv_diag[i];
        }
        self.factored = k;
        // back substitution `L^T s = rhs` by columns of L^T (rows of L, contiguous): each
        // solved entry is subtracted from the rows above it in one vectorisable pass
        let sol = &mut self.sol[..k];
        sol.copy_from_slice(&self.rhs[..k]);
        for i in (0..k).rev() {
            let si = sol[i] * self.inv_diag[i];
            sol[i] = si;
            let ri = &a[i * l..i * l + i];
            for (o, &v) in sol[..i].iter_mut().zip(ri) {
                *o -= v * si;
            }
        }
        true
    }

    /// `grad = b - G z` over the support (rows of `G`: it is symmetric, and rows are contiguous).
    ///
    /// Four support rows at a time, so that `grad` is loaded and stored once per four rows.
    #[inline(always)]
    fn update_grad(&mut self, g: &Array2<f64>) {
        let l = self.l;
        let grad = self.grad.as_slice_mut().unwrap_or(&mut []);
        grad.copy_from_slice(&self.b);
        let gs = g.as_slice().unwrap_or(&[]);
        let row = |j: usize| &gs[j * l..(j + 1) * l];
        let z = &self.z;
        let mut quads = self.active.chunks_exact(4);
        for q in &mut quads {
            let (z0, z1, z2, z3) = (z[q[0]], z[q[1]], z[q[2]], z[q[3]]);
            let (r0, r1, r2, r3) = (row(q[0]), row(q[1]), row(q[2]), row(q[3]));
            for i in 0..grad.len().min(l) {
                grad[i] -= (z0 * r0[i] + z1 * r1[i]) + (z2 * r2[i] + z3 * r3[i]);
            }
        }
        for &j in quads.remainder() {
            let zj = z[j];
            for (o, &v) in grad.iter_mut().zip(row(j)) {
                *o -= zj * v;
            }
        }
    }

    /// The coordinate with the largest gradient above `tol` (the first such on ties); entries
    /// that must not enter (the support, a blocked coordinate) hold `-inf`.
    #[inline(always)]
    fn most_violating(&self, tol: f64) -> Option<usize> {
        let grad = self.grad.as_slice().unwrap_or(&[]);
        // 8 lanes of (max, first index holding it, as f64: exact below 2^53); compares and
        // blends only, so it vectorises
        const LANES: usize = 8;
        let mut best = [f64::NEG_INFINITY; LANES];
        let mut at = [0.0f64; LANES];
        let mut base = [0.0f64; LANES];
        for (k, b) in base.iter_mut().enumerate() {
            *b = k as f64;
        }
        let mut chunks = grad.chunks_exact(LANES);
        for c in &mut chunks {
            for k in 0..LANES {
                let take = c[k] > best[k];
                best[k] = if take { c[k] } else { best[k] };
                at[k] = if take { base[k] } else { at[k] };
                base[k] += LANES as f64;
            }
        }
        let mut top = (tol, usize::MAX);
        let rem = chunks.remainder();
        for (k, &v) in rem.iter().enumerate() {
            if v > top.0 {
                top = (v, grad.len() - rem.len() + k);
            }
        }
        // across lanes: the largest value, the smallest index on ties (as a sequential scan)
        for k in 0..LANES {
            let i = at[k] as usize;
            if best[k] > top.0 || (best[k] == top.0 && best[k] > tol && i < top.1) {
                top = (best[k], i);
            }
        }
        (top.1 != usize::MAX).then_some(top.1)
    }

    /// Hides the support and `blocked` from [`Solver::most_violating`]: their gradient entries
    /// become `-inf` (the next [`Solver::update_grad`] restores them).
    #[inline(always)]
    fn mask(&mut self, blocked: usize) {
        for &j in &self.active {
            self.grad[j] = f64::NEG_INFINITY;
        }
        if let Some(v) = self.grad.get_mut(blocked) {
            *v = f64::NEG_INFINITY;
        }
    }

    /// Solves one sample; returns (iterations, relative KKT violation).
    #[inline(always)]
    fn solve(
        &mut self,
        g: &Array2<f64>,
        c: ArrayView1<'_, f32>,
        shift: f64,
        mut out: ArrayViewMut1<'_, f32>,
    ) -> (usize, f64) {
        let l = self.l;
        for (o, &v) in self.b.iter_mut().zip(c.iter()) {
            *o = v as f64 - shift;
        }
        let scale = self.b.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
        let tol = 1e-10 * scale;
        for &j in &self.active {
            self.in_active[j] = false;
        }
        self.active.clear();
        self.factored = 0;
        self.z.fill(0.0);
        self.update_grad(g);
        let mut iterations = 0;
        let mut blocked = usize::MAX;
        for _ in 0..3 * l {
            // the most violating coordinate off the support
            let Some(best) = self.most_violating(tol) else {
                break;
            };
            self.active.push(best);
            self.in_active[best] = true;
            iterations += 1;
            for _ in 0..=l {
                if !self.solve_support(g) {
                    // G_AA singular (e.g. duplicate atoms): drop the newcomer and move on
                    if let Some(j) = self.active.pop() {
                        self.in_active[j] = false;
                        self.z[j] = 0.0;
                    }
                    self.factored = self.factored.min(self.active.len());
                    blocked = best;
                    break;
                }
                let k = self.active.len();
                if self.sol[..k].iter().all(|&s| s > 0.0) {
                    for (i, &j) in self.active.iter().enumerate() {
                        self.z[j] = self.sol[i];
                    }
                    blocked = usize::MAX;
                    break;
                }
                // step from z towards s until the first coordinate reaches zero
                let mut alpha = 1.0f64;
                for (i, &j) in self.active.iter().enumerate() {
                    let (zi, si) = (self.z[j], self.sol[i]);
                    if si <= 0.0 {
                        let a = if zi - si > 0.0 { zi / (zi - si) } else { 0.0 };
                        alpha = alpha.min(a);
                    }
                }
                for (i, &j) in self.active.iter().enumerate() {
                    self.z[j] += alpha * (self.sol[i] - self.z[j]);
                }
                // the factor's rows before the first removed coordinate stay valid (they depend
                // only on the support before it, which keeps its order)
                let first = self.active.iter().position(|&j| self.z[j] <= 0.0);
                self.factored = self.factored.min(first.unwrap_or(self.active.len()));
                let (z, member) = (&mut self.z, &mut self.in_active);
                self.active.retain(|&j| {
                    if z[j] <= 0.0 {
                        z[j] = 0.0;
                        member[j] = false;
                        false
                    } else {
                        true
                    }
                });
                if self.active.is_empty() {
                    blocked = best;
                    break;
                }
            }
            self.update_grad(g);
            self.mask(blocked);
        }
        // the true gradient on the support too, for the optimality check and the objective
        self.update_grad(g);
        let mut viol = 0.0f64;
        for j in 0..l {
            let v = if self.z[j] > 0.0 {
                self.grad[j].abs()
            } else {
                self.grad[j].max(0.0)
            };
            viol = viol.max(v);
        }
        for (o, &v) in out.iter_mut().zip(self.z.iter()) {
            *o = v as f32;
        }
        (iterations, viol / scale)
    }
}
