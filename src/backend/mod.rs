//! The kernel seam: every algorithm in varsparse is written once against [`Backend`].
//!
//! A backend owns the storage of row-major matrices ([`Backend::Mat`]) and implements the few
//! kernels the algorithms need: GEMM with transposes and accumulation, fused element-wise updates
//! (shrinkage, momentum, Adam), column statistics, the variance hinge, ReLU and its mask, and a
//! handful of reductions that return scalars. Vectors (biases, per-column statistics, per-sample
//! flags) are matrices with one row (`(1, n)`) or one column (`(n, 1)`), so there is one storage
//! type.
//!
//! Algorithms never index elements on the host inside their loops; they call kernels and read back
//! only scalars (a count of converged samples, an energy). A device backend (CUDA) can therefore
//! keep all data resident on the device.
//!
//! Every kernel checks the shapes of its operands and returns [`Error::Shape`] on a mismatch,
//! naming the kernel and both shapes; kernels never panic.
//!
//! [`Error::Shape`]: crate::Error::Shape

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod device;

pub use cpu::Cpu;
#[cfg(feature = "cuda")]
pub use cuda::Cuda;
pub use device::{Device, OnBackend};

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::scalar::Scalar;

/// Whether a GEMM operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    /// Use the matrix as stored.
    N,
    /// Use its transpose.
    T,
}

/// Hyper-parameters of one Adam update of one parameter (PyTorch semantics).
///
/// The update, with `g` the gradient and `t` the 1-based step:
///
/// ```text
/// g  <- g + weight_decay * p                  (classic L2, not AdamW)
/// m  <- m + (1 - beta1) (g - m)
/// v  <- beta2 v + (1 - beta2) g^2
/// p  <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamUpdate<F> {
    /// Learning rate.
    pub lr: F,
    /// First-moment decay.
    pub beta1: F,
    /// Second-moment decay.
    pub beta2: F,
    /// Denominator floor.
    pub eps: F,
    /// L2 weight decay added to the gradient.
    pub weight_decay: F,
    /// The 1-based step number (after incrementing).
    pub step: u64,
}

/// The constants of one constant-step FISTA update ([`Backend::fista_update`],
/// [`Backend::gram_fista_step`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FistaStep<F> {
    /// The step size `eta`.
    pub eta: F,
    /// The shrinkage threshold, `lambda eta`.
    pub thr: F,
    /// Non-negative codes: `max(u - thr, 0)` instead of the soft threshold.
    pub nonneg: bool,
    /// The momentum coefficient `(t_k - 1) / t_(k+1)`.
    pub coef: F,
    /// The per-row convergence tolerance of [`Backend::converged_rows`].
    pub tol: F,
}

/// The outcome of [`Backend::converged_rows`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowConvergence {
    /// Number of rows flagged converged.
    pub converged: usize,
    /// Whether any row of the new iterate held a NaN or an infinity.
    pub non_finite: bool,
    /// An optional hint: the number of non-zeros of the new extrapolated point `x` in the rows
    /// not flagged, where the kernel counted them on the way ([`Backend::gram_fista_step`] on
    /// the CPU). Every backend may return `None` (the CUDA backend does), and callers must not
    /// rely on it for correctness: passed to the next [`Backend::gram_fista_step`], it only
    /// spares a backend that uses it a pass over `x`.
    pub active_nonzeros: Option<usize>,
    /// The rows whose momentum restarted ([`Backend::fista_update_restart`], or a
    /// [`RowMomentum`] given to [`Backend::gram_fista_step`]); 0 otherwise.
    pub restarts: usize,
}

/// Adaptive restart's momentum per row, for [`Backend::gram_fista_step`]: the coefficient
/// table and each row's age, as [`Backend::fista_update_restart`] takes them.
pub struct RowMomentum<'a, F, M> {
    /// The momentum coefficient by age.
    pub coefs: &'a [F],
    /// `(n, 1)`: each row's iterations since its momentum last restarted.
    pub age: &'a mut M,
}

/// The kernels the algorithms need, over one element type `F`.
///
/// Matrices are row-major, `(rows, cols)`. Kernels are destination-last: the last `&mut`
/// argument is written. Where a kernel has an accumulate mode it takes `beta` as in BLAS
/// (`c <- alpha * op + beta * c`; `beta = 0` ignores the previous contents, even NaN).
pub trait Backend<F: Scalar> {
    /// A row-major matrix stored by this backend.
    type Mat;
    /// A right-hand GEMM operand prepared by [`Backend::pack_rhs`] for many products with
    /// [`Backend::gemm_rows_packed`]; empty by default.
    type Packed: Default;

    /// A short name for messages (`"cpu"`, `"cuda"`).
    fn name(&self) -> &'static str;

    // ---- storage -------------------------------------------------------------------------

    /// A `(rows, cols)` matrix of zeros.
    fn zeros(&self, rows: usize, cols: usize) -> Result<Self::Mat>;
    /// Copies a host array into backend storage.
    fn upload(&self, a: ArrayView2<'_, F>) -> Result<Self::Mat>;
    /// Copies backend storage into a host array.
    fn download(&self, a: &Self::Mat) -> Result<Array2<F>>;
    /// `(rows, cols)` of a matrix.
    fn shape(&self, a: &Self::Mat) -> (usize, usize);

    // ---- BLAS-like -----------------------------------------------------------------------

    /// `c <- alpha * op(a) op(b) + beta * c`.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        alpha: F,
        a: &Self::Mat,
        ta: Trans,
        b: &Self::Mat,
        tb: Trans,
        beta: F,
        c: &mut Self::Mat,
    ) -> Result<()>;
    /// [`Backend::gemm`] on the leading `rows` rows of `a` (used as stored) and `c`:
    /// `c[..rows] <- alpha * a[..rows] op(b) + beta * c[..rows]`; the other rows of `c` are left
    /// as they are. (The compacted active samples of FISTA live in leading rows.)
    #[allow(clippy::too_many_arguments)]
    fn gemm_rows(
        &self,
        rows: usize,
        alpha: F,
        a: &Self::Mat,
        b: &Self::Mat,
        tb: Trans,
        beta: F,
        c: &mut Self::Mat,
    ) -> Result<()>;
    /// Prepares `op(b)` `(k, n)` as the right operand of many [`Backend::gemm_rows_packed`]
    /// products, reusing `packed`'s buffers. The CPU backend copies it into the panels of its
    /// own kernel ([`cpu::PackedRhs`]), so a product no longer packs it on every call; a
    /// backend may also keep a plain copy.
    fn pack_rhs(&self, b: &Self::Mat, tb: Trans, packed: &mut Self::Packed) -> Result<()>;
    /// `(k, n)` of a packed operand (`(0, 0)` when nothing was packed into it).
    fn packed_shape(&self, packed: &Self::Packed) -> (usize, usize);
    /// [`Backend::gemm_rows`] with a right operand prepared by [`Backend::pack_rhs`]:
    /// `c[..rows] <- alpha * a[..rows] op(b) + beta * c[..rows]`. It rounds as the backend's
    /// packed kernel does, which need not be as [`Backend::gemm_rows`] does.
    #[allow(clippy::too_many_arguments)]
    fn gemm_rows_packed(
        &self,
        rows: usize,
        alpha: F,
        a: &Self::Mat,
        b: &Self::Packed,
        beta: F,
        c: &mut Self::Mat,
    ) -> Result<()>;
    /// [`Backend::gemm_rows_packed`] whose accumulated term comes from the active rows of
    /// another matrix: `c[..rows] <- alpha * a[..rows] op(b) + beta * base[active]`, where
    /// `base[active]` are the rows `i` of `base` with `flags[i, 0] = 0`, in order (there must be
    /// `rows` of them). The default gathers them into `c` ([`Backend::gather_active_rows`]) and
    /// multiplies; the CPU backend reads them in place, with the same result.
    #[allow(clippy::too_many_arguments)]
    fn gemm_rows_packed_active_base(
        &self,
        flags: &Self::Mat,
        rows: usize,
        alpha: F,
        a: &Self::Mat,
        b: &Self::Packed,
        beta: F,
        base: &Self::Mat,
        c: &mut Self::Mat,
    ) -> Result<()> {
        let k = self.gather_active_rows(flags, base, c)?;
        if k != rows {
            return Err(Error::shape(
                "gemm_rows_packed_active_base",
                format!("{rows} rows of a, but {k} active rows of base"),
            ));
        }
        self.gemm_rows_packed(rows, alpha, a, b, beta, c)
    }
    /// `g <- op(b)^T op(b)` `(n, n)`: the Gram matrix of the columns of an operand packed by
    /// [`Backend::pack_rhs`] as `(k, n)`. The CPU kernel computes the upper triangle from the
    /// panels alone and mirrors it, so the result is symmetric to the bit.
    fn packed_gram(&self, b: &Self::Packed, g: &mut Self::Mat) -> Result<()>;
    /// Copies the rows `i` of `src` with `flags[i, 0] = 0` (the active samples), in order, to the
    /// leading rows of `dst`; returns their number.
    fn gather_active_rows(
        &self,
        flags: &Self::Mat,
        src: &Self::Mat,
        dst: &mut Self::Mat,
    ) -> Result<usize>;
    /// The inverse of [`Backend::gather_active_rows`]: the leading rows of `src` go, in order, to
    /// the rows `i` of `dst` with `flags[i, 0] = 0`; the other rows of `dst` are set to zero.
    fn scatter_active_rows(
        &self,
        flags: &Self::Mat,
        src: &Self::Mat,
        dst: &mut Self::Mat,
    ) -> Result<()>;
    /// FISTA's Gram-path gradient on the active rows: for each row `i` with `flags[i, 0] = 0`,
    /// `grad[i] <- alpha (x[i] g) - alpha c[i]`; the other rows of `grad` are set to zero.
    /// `xc` and `cc` are scratch of `x`'s and `c`'s shape.
    ///
    /// The default gathers the active rows of `x` and `c` into the scratch, multiplies with
    /// [`Backend::gemm_rows`] and scatters the result ([`gram_grad_active_composed`]); the CPU
    /// backend does it in one pass over the rows where `x` is mostly zeros.
    #[allow(clippy::too_many_arguments)]
    fn gram_grad_active(
        &self,
        flags: &Self::Mat,
        x: &Self::Mat,
        g: &Self::Mat,
        c: &Self::Mat,
        alpha: F,
        grad: &mut Self::Mat,
        xc: &mut Self::Mat,
        cc: &mut Self::Mat,
    ) -> Result<()> {
        gram_grad_active_composed(self, flags, x, g, c, alpha, grad, xc, cc)
    }
    /// `dst <- src`.
    fn copy(&self, src: &Self::Mat, dst: &mut Self::Mat) -> Result<()>;
    /// `y <- alpha * x + beta * y`.
    fn axpby(&self, alpha: F, x: &Self::Mat, beta: F, y: &mut Self::Mat) -> Result<()>;
    /// `y <- y + alpha * (a - b)` (a fused difference, e.g. the γ term's gradient).
    fn add_scaled_diff(
        &self,
        alpha: F,
        a: &Self::Mat,
        b: &Self::Mat,
        y: &mut Self::Mat,
    ) -> Result<()>;
    /// `y <- y * a`, element by element.
    fn mul_assign(&self, a: &Self::Mat, y: &mut Self::Mat) -> Result<()>;
    /// `y <- alpha * y`.
    fn scale(&self, alpha: F, y: &mut Self::Mat) -> Result<()>;
    /// Every element set to `value`.
    fn fill(&self, value: F, y: &mut Self::Mat) -> Result<()>;

    // ---- rows and columns ----------------------------------------------------------------

    /// `a[i, j] += bias[0, j]` for a `(1, cols)` bias.
    fn add_row_bias(&self, bias: &Self::Mat, a: &mut Self::Mat) -> Result<()>;
    /// `out[0, j] <- alpha * sum_i a[i, j] + beta * out[0, j]`.
    fn col_sums(&self, alpha: F, a: &Self::Mat, beta: F, out: &mut Self::Mat) -> Result<()>;
    /// Column means and unbiased standard deviations (divisor `rows - 1`) of `a`, into `(1, cols)`
    /// matrices. Requires at least two rows.
    fn col_mean_std(&self, a: &Self::Mat, mean: &mut Self::Mat, std: &mut Self::Mat) -> Result<()>;
    /// Scales every column of `a` to unit l2 norm; an all-zero column is left unchanged.
    fn normalize_columns(&self, a: &mut Self::Mat) -> Result<()>;

    // ---- activations ---------------------------------------------------------------------

    /// `a <- max(a, 0)`.
    fn relu(&self, a: &mut Self::Mat) -> Result<()>;
    /// `grad <- grad * 1[act > 0]` (ReLU's derivative, with `relu'(0) = 0`).
    fn relu_mask(&self, act: &Self::Mat, grad: &mut Self::Mat) -> Result<()>;

    // ---- the energy's terms --------------------------------------------------------------

    /// The variance hinge's value `sum_j relu(t - std_j)^2` for a `(1, l)` std vector.
    fn hinge_value(&self, std: &Self::Mat, t: F) -> Result<F>;
    /// Accumulates the variance hinge's gradient into `grad` (shape of `x`):
    /// `grad[i, j] += -(2 beta / (count - 1)) (t - s_j) / s_j (x[i, j] - mu_j)` where
    /// `0 < s_j < t`, nothing where `s_j = 0` or `s_j >= t`. `count` is the number of samples
    /// the statistics were taken over: `x`'s rows on one process, the whole batch when `x` is
    /// one rank's share of it ([`crate::comm`]); at least 2.
    #[allow(clippy::too_many_arguments)]
    fn hinge_grad(
        &self,
        x: &Self::Mat,
        mean: &Self::Mat,
        std: &Self::Mat,
        beta: F,
        t: F,
        count: usize,
        grad: &mut Self::Mat,
    ) -> Result<()>;

    // ---- FISTA ---------------------------------------------------------------------------

    /// The proximal-gradient step with per-sample activity:
    /// `z[i] <- shrink(x[i] - a_i eta g[i], a_i thr)` where `a_i = 1 - flags[i, 0]`
    /// (a flagged sample gets neither gradient nor shrinkage; with `nonneg` it is still projected
    /// onto the non-negative orthant). `shrink` is `max(u - thr, 0)` when `nonneg`, otherwise
    /// `sign(u) max(|u| - thr, 0)`. `flags` is `(n, 1)` holding 0 or 1.
    #[allow(clippy::too_many_arguments)]
    fn shrink_step(
        &self,
        x: &Self::Mat,
        g: &Self::Mat,
        flags: &Self::Mat,
        eta: F,
        thr: F,
        nonneg: bool,
        z: &mut Self::Mat,
    ) -> Result<()>;
    /// One whole FISTA update in a single pass over the rows (constant step): for each row,
    /// `z_old <- z`, then [`Backend::shrink_step`] into `z` with the previous `flags`, then the
    /// extrapolation `x <- z + coef (z - z_old)`, then [`Backend::converged_rows`]'s test into
    /// `flags`. Equal to calling those kernels in that order, with the constants of `step`.
    fn fista_update(
        &self,
        g: &Self::Mat,
        step: FistaStep<F>,
        x: &mut Self::Mat,
        z: &mut Self::Mat,
        z_old: &mut Self::Mat,
        flags: &mut Self::Mat,
    ) -> Result<RowConvergence>;
    /// [`Backend::fista_update`] with momentum per row and adaptive restart (O'Donoghue &
    /// Candès 2015, the gradient scheme, per sample): row `i`'s extrapolation uses the
    /// coefficient `coefs[k_i]`, `k_i = age[i, 0]` (the iterations since its momentum last
    /// restarted; the table's last entry past its end) in place of `step.coef`; but a row whose
    /// new step points against its momentum, `<x_i - z_new_i, z_new_i - z_old_i> > 0`,
    /// restarts: `x_i <- z_new_i` and `age[i, 0] <- 1`. Other rows' ages grow by one. `age` is
    /// `(n, 1)` and holds whole numbers. With no row restarting and every age equal to `k`,
    /// this is [`Backend::fista_update`] with `step.coef = coefs[k]`, to the bit. The result
    /// counts the rows that restarted ([`RowConvergence::restarts`]).
    ///
    /// The default runs the CPU backend's row kernel on host copies (a round trip per call);
    /// the CPU backend runs it in place, over its threads.
    #[allow(clippy::too_many_arguments)]
    fn fista_update_restart(
        &self,
        g: &Self::Mat,
        step: FistaStep<F>,
        coefs: &[F],
        age: &mut Self::Mat,
        x: &mut Self::Mat,
        z: &mut Self::Mat,
        z_old: &mut Self::Mat,
        flags: &mut Self::Mat,
    ) -> Result<RowConvergence> {
        let (n, l) = self.shape(g);
        same_shape("fista_update_restart", (n, l), self.shape(x))?;
        same_shape("fista_update_restart", (n, l), self.shape(z))?;
        same_shape("fista_update_restart", (n, l), self.shape(z_old))?;
        same_shape("fista_update_restart: flags", (n, 1), self.shape(flags))?;
        same_shape("fista_update_restart: age", (n, 1), self.shape(age))?;
        let std_layout = |a: Array2<F>| a.as_standard_layout().into_owned();
        let gh = std_layout(self.download(g)?);
        let mut xh = std_layout(self.download(x)?);
        let mut zh = std_layout(self.download(z)?);
        let mut zoh = std_layout(self.download(z_old)?);
        let mut fh = std_layout(self.download(flags)?);
        let mut ah = std_layout(self.download(age)?);
        let (converged, non_finite, restarts) = match (
            gh.as_slice(),
            xh.as_slice_mut(),
            zh.as_slice_mut(),
            zoh.as_slice_mut(),
            fh.as_slice_mut(),
            ah.as_slice_mut(),
        ) {
            (Some(gs), Some(xs), Some(zs), Some(zos), Some(fs), Some(ages)) if l > 0 => {
                cpu::fista_restart_rows(gs, step, coefs, xs, zs, zos, fs, ages, l)
            }
            _ => {
                // rows with no entries: nothing moves, and a zero row never converges
                fh.fill(F::zero());
                (0, false, 0)
            }
        };
        *x = self.upload(xh.view())?;
        *z = self.upload(zh.view())?;
        *z_old = self.upload(zoh.view())?;
        *flags = self.upload(fh.view())?;
        *age = self.upload(ah.view())?;
        Ok(RowConvergence {
            converged,
            non_finite,
            active_nonzeros: None,
            restarts,
        })
    }
    /// One constant-step FISTA iteration of the linear decoder's Gram path when the smooth part
    /// has no variance hinge: [`Backend::gram_grad_active`] of `x` into `grad` (with `flags`,
    /// `g`, `c`, `alpha`, scratch `xc` and `cc`); then, unless `prox` is zero, the proximity
    /// term's gradient `prox (x - target)` added to every row of `grad` (`target` zero when
    /// `None`; [`Backend::add_scaled_diff`], or [`Backend::axpby`] with `beta = 1`); then
    /// [`Backend::fista_update`] with that gradient, or, with a `momentum`,
    /// [`Backend::fista_update_restart`] with its coefficients and ages.
    ///
    /// The default calls those kernels. The CPU backend, where `x`'s active rows are mostly
    /// zeros, does it all in one pass over the rows: each row's gradient is computed and used at
    /// once, while it is in the L1 cache, and the threads meet once per iteration instead of
    /// two or three times. Each element sees the same operations in the same order, so the
    /// result is the same to the bit.
    ///
    /// `x_nonzeros` is an optional hint every backend may ignore (the default and the CUDA
    /// backend do): the number of non-zeros in the rows of `x` not flagged, when the caller
    /// knows it (the previous step's [`RowConvergence::active_nonzeros`]). The CPU backend then
    /// decides between its two paths without reading `x` (a pass on the calling thread over
    /// rows that the other threads wrote); `None` makes it count. A wrong count only picks the
    /// other path, whose result may differ in the last bits.
    #[allow(clippy::too_many_arguments)]
    fn gram_fista_step(
        &self,
        g: &Self::Mat,
        c: &Self::Mat,
        alpha: F,
        prox: F,
        target: Option<&Self::Mat>,
        step: FistaStep<F>,
        momentum: Option<RowMomentum<'_, F, Self::Mat>>,
        x_nonzeros: Option<usize>,
        x: &mut Self::Mat,
        z: &mut Self::Mat,
        z_old: &mut Self::Mat,
        flags: &mut Self::Mat,
        grad: &mut Self::Mat,
        xc: &mut Self::Mat,
        cc: &mut Self::Mat,
    ) -> Result<RowConvergence> {
        let _ = x_nonzeros;
        gram_fista_step_composed(
            self, g, c, alpha, prox, target, step, momentum, x, z, z_old, flags, grad, xc, cc,
        )
    }
    /// FISTA's extrapolation `x <- z + coef (z - z_old)`.
    fn momentum(&self, z: &Self::Mat, z_old: &Self::Mat, coef: F, x: &mut Self::Mat) -> Result<()>;
    /// The per-sample convergence test of the authors' code: row `i` is flagged (`flags[i,0] = 1`)
    /// iff `||z_old[i] - z_new[i]|| / ||z_old[i]|| < tol`; a row with `||z_old[i]|| = 0` is never
    /// flagged. Returns the number flagged and whether `z_new` holds a non-finite value.
    fn converged_rows(
        &self,
        z_old: &Self::Mat,
        z_new: &Self::Mat,
        tol: F,
        flags: &mut Self::Mat,
    ) -> Result<RowConvergence>;
    /// `(sum g (p - x), sum (p - x)^2)`: the two terms of backtracking's quadratic model.
    fn step_model_terms(&self, g: &Self::Mat, p: &Self::Mat, x: &Self::Mat) -> Result<(F, F)>;

    // ---- reductions ----------------------------------------------------------------------

    /// `sum a^2`.
    fn sum_sq(&self, a: &Self::Mat) -> Result<F>;
    /// `sum (a - b)^2`.
    fn sum_sq_diff(&self, a: &Self::Mat, b: &Self::Mat) -> Result<F>;
    /// `sum a * b`.
    fn dot(&self, a: &Self::Mat, b: &Self::Mat) -> Result<F>;
    /// `sum |a|`.
    fn sum_abs(&self, a: &Self::Mat) -> Result<F>;
    /// The number of elements exactly equal to zero.
    fn count_zeros(&self, a: &Self::Mat) -> Result<usize>;
    /// Whether every element is finite.
    fn all_finite(&self, a: &Self::Mat) -> Result<bool>;
    /// `sum_i 10 log10(1 / max(scale^2 mean_j r[i,j]^2, floor))` for a residual `r = target - pred`:
    /// the sum over rows of the per-image PSNR in the authors' convention (peak 1, pixel scale
    /// `scale`, per-image MSE floored at `floor`).
    fn psnr_sum(&self, residual: &Self::Mat, scale: F, floor: F) -> Result<F>;

    // ---- optimiser -----------------------------------------------------------------------

    /// One Adam update of parameter `p` with gradient `g` and moments `m`, `v` (all one shape).
    fn adam_update(
        &self,
        p: &mut Self::Mat,
        g: &Self::Mat,
        m: &mut Self::Mat,
        v: &mut Self::Mat,
        hp: &AdamUpdate<F>,
    ) -> Result<()>;
}

/// Checks that two shapes are equal, naming the kernel on failure.
pub(crate) fn same_shape(op: &str, a: (usize, usize), b: (usize, usize)) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(crate::Error::shape(
            op,
            format!("operands have shapes {a:?} and {b:?}, which must be equal"),
        ))
    }
}

/// [`Backend::gram_fista_step`] as the kernels it is made of (the trait's default; public so
/// that a backend's own version can be tested against it).
///
/// # Errors
/// As the kernels it calls.
#[allow(clippy::too_many_arguments)]
pub fn gram_fista_step_composed<F: Scalar, B: Backend<F> + ?Sized>(
    be: &B,
    g: &B::Mat,
    c: &B::Mat,
    alpha: F,
    prox: F,
    target: Option<&B::Mat>,
    step: FistaStep<F>,
    momentum: Option<RowMomentum<'_, F, B::Mat>>,
    x: &mut B::Mat,
    z: &mut B::Mat,
    z_old: &mut B::Mat,
    flags: &mut B::Mat,
    grad: &mut B::Mat,
    xc: &mut B::Mat,
    cc: &mut B::Mat,
) -> Result<RowConvergence> {
    be.gram_grad_active(flags, x, g, c, alpha, grad, xc, cc)?;
    if prox != F::zero() {
        match target {
            Some(e) => be.add_scaled_diff(prox, x, e, grad)?,
            None => be.axpby(prox, x, F::one(), grad)?,
        }
    }
    match momentum {
        Some(m) => be.fista_update_restart(grad, step, m.coefs, m.age, x, z, z_old, flags),
        None => be.fista_update(grad, step, x, z, z_old, flags),
    }
}

/// [`Backend::gram_grad_active`] through gather, [`Backend::gemm_rows`] and scatter (the
/// trait's default; public so that a backend's own version can be tested against it).
///
/// # Errors
/// As the kernels it calls.
#[allow(clippy::too_many_arguments)]
pub fn gram_grad_active_composed<F: Scalar, B: Backend<F> + ?Sized>(
    be: &B,
    flags: &B::Mat,
    x: &B::Mat,
    g: &B::Mat,
    c: &B::Mat,
    alpha: F,
    grad: &mut B::Mat,
    xc: &mut B::Mat,
    cc: &mut B::Mat,
) -> Result<()> {
    let k = be.gather_active_rows(flags, x, xc)?;
    if k == be.shape(x).0 {
        be.copy(c, grad)?;
        return be.gemm(alpha, x, Trans::N, g, Trans::N, -alpha, grad);
    }
    be.gather_active_rows(flags, c, cc)?;
    be.gemm_rows(k, alpha, xc, g, Trans::N, -alpha, cc)?;
    be.scatter_active_rows(flags, cc, grad)
}
