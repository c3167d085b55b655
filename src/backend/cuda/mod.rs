//! The CUDA backend (feature `cuda`): the kernel trait on an NVIDIA GPU, data resident on the
//! device. GEMMs go to cuBLAS (row-major through the operand swap); the element-wise and
//! reduction kernels are CUDA C (`kernels.cu`) compiled with NVRTC once per process.
//! Per call, only scalars come back to the host (a reduction's value, a count of flags).
//!
//! The libraries are loaded at run time (cudarc's `dynamic-loading`), so the crate builds and its
//! tests run on machines without CUDA: [`Cuda::new`] then returns [`Error::CudaUnavailable`]
//! naming the missing library instead of panicking.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys::cublasOperation_t};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use ndarray::{Array2, ArrayView2};

use super::{AdamUpdate, Backend, FistaStep, RowConvergence, Trans, same_shape};
use crate::error::{Error, Result};

const KERNELS: &str = include_str!("kernels.cu");
const TPB: u32 = 256;

/// A row-major `f32` matrix on the GPU.
pub struct CudaMat {
    data: CudaSlice<f32>,
    rows: usize,
    cols: usize,
}

/// The CUDA backend: a context on one device, its stream, cuBLAS and the compiled kernels.
pub struct Cuda {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    funcs: HashMap<&'static str, CudaFunction>,
    scalars: RefCell<CudaSlice<f64>>,
    counts: RefCell<CudaSlice<i32>>,
    pos: RefCell<CudaSlice<i32>>,
}

fn err(e: impl std::fmt::Debug) -> Error {
    Error::Backend {
        backend: "cuda",
        detail: format!("{e:?}"),
    }
}

const NAMES: [&str; 24] = [
    "vs_fill",
    "vs_axpby",
    "vs_add_scaled_diff",
    "vs_mul_assign",
    "vs_scale",
    "vs_add_row_bias",
    "vs_relu",
    "vs_relu_mask",
    "vs_hinge_grad",
    "vs_shrink_step",
    "vs_momentum",
    "vs_converged_rows",
    "vs_fista_update",
    "vs_psnr_rows",
    "vs_reduce",
    "vs_step_model_terms",
    "vs_hinge_value",
    "vs_col_sums",
    "vs_col_mean_std",
    "vs_normalize_columns",
    "vs_adam",
    "vs_scan_flags",
    "vs_gather_rows",
    "vs_scatter_rows",
];

impl Cuda {
    /// A backend on device `ordinal`.
    ///
    /// # Errors
    /// [`Error::CudaUnavailable`] when the driver, NVRTC or cuBLAS library is missing or there is
    /// no such device; [`Error::Backend`] when a kernel fails to compile.
    pub fn new(ordinal: usize) -> Result<Cuda> {
        // SAFETY: the probes only try to load the shared libraries.
        let present = unsafe {
            [
                (
                    "the CUDA driver (libcuda)",
                    cudarc::driver::sys::is_culib_present(),
                ),
                ("NVRTC (libnvrtc)", cudarc::nvrtc::sys::is_culib_present()),
                (
                    "cuBLAS (libcublas)",
                    cudarc::cublas::sys::is_culib_present(),
                ),
            ]
        };
        if let Some((name, _)) = present.iter().find(|(_, ok)| !ok) {
            return Err(Error::CudaUnavailable(format!(
                "{name} could not be loaded"
            )));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| Error::CudaUnavailable(format!("device {ordinal}: {e:?}")))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(err)?;
        let (major, minor) = ctx.compute_capability().map_err(err)?;
        let ptx = kernels_ptx(major, minor)?;
        let module = ctx.load_module(ptx).map_err(err)?;
        let mut funcs = HashMap::new();
        for name in NAMES {
            funcs.insert(name, module.load_function(name).map_err(err)?);
        }
        Ok(Cuda {
            scalars: RefCell::new(stream.alloc_zeros::<f64>(4).map_err(err)?),
            counts: RefCell::new(stream.alloc_zeros::<i32>(4).map_err(err)?),
            pos: RefCell::new(stream.alloc_zeros::<i32>(1).map_err(err)?),
            stream,
            blas,
            funcs,
        })
    }

    /// Waits for the queued work (for timing).
    ///
    /// # Errors
    /// A driver error.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(err)
    }

    fn f(&self, name: &str) -> Result<&CudaFunction> {
        self.funcs
            .get(name)
            .ok_or_else(|| err(format!("kernel {name} not loaded")))
    }
}

/// The kernels' PTX for compute capability `major.minor`, compiled by NVRTC once per process and
/// architecture, then cached. Compiled for the device's own architecture (double-precision
/// atomics need sm_60+), without fused multiply-add contraction so that the kernels round like
/// the CPU backend's loops.
fn kernels_ptx(major: i32, minor: i32) -> Result<cudarc::nvrtc::Ptx> {
    static CACHE: Mutex<Vec<((i32, i32), cudarc::nvrtc::Ptx)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().map_err(|_| err("PTX cache poisoned"))?;
    if let Some((_, ptx)) = cache.iter().find(|(cc, _)| *cc == (major, minor)) {
        return Ok(ptx.clone());
    }
    let opts = cudarc::nvrtc::CompileOptions {
        fmad: Some(false),
        options: vec![format!("--gpu-architecture=compute_{major}{minor}")],
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(KERNELS, opts).map_err(|e| Error::Backend {
        backend: "cuda",
        detail: format!("NVRTC: {e:?}"),
    })?;
    cache.push(((major, minor), ptx.clone()));
    Ok(ptx)
}

fn grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(TPB as usize).clamp(1, 4096) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (TPB, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.max(1) as u32, 1, 1),
        block_dim: (TPB, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn per_col(cols: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (cols.div_ceil(TPB as usize).max(1) as u32, 1, 1),
        block_dim: (TPB, 1, 1),
        shared_mem_bytes: 0,
    }
}

macro_rules! launch {
    ($self:expr, $name:expr, $cfg:expr; $($arg:expr),* $(,)?) => {{
        let f = $self.f($name)?;
        let mut b = $self.stream.launch_builder(f);
        $( b.arg($arg); )*
        // SAFETY: every kernel's parameters are pushed in its C signature's order and types, and
        // the buffers hold at least the elements the launch indexes (shapes checked by callers).
        unsafe { b.launch($cfg) }.map_err(err)?;
    }};
}

fn dims(a: &CudaMat) -> (usize, usize) {
    (a.rows, a.cols)
}

/// The kernels and cuBLAS index with 32-bit `int`s: every matrix is refused at allocation
/// ([`Backend::zeros`], [`Backend::upload`]) unless its element count fits in an `i32`, so the
/// conversions of its rows, columns and element count in the launches below cannot overflow.
fn check_size(op: &str, rows: usize, cols: usize) -> Result<()> {
    match rows.checked_mul(cols) {
        Some(n) if n <= i32::MAX as usize => Ok(()),
        _ => Err(Error::shape(
            op,
            format!(
                "a ({rows}, {cols}) matrix has more than {} elements, the CUDA backend's limit \
                 (its kernels and cuBLAS index with 32-bit integers)",
                i32::MAX
            ),
        )),
    }
}

/// `n` as the kernels' `int`; every size passed is at most a matrix's element count, which
/// [`check_size`] bounded at allocation.
fn int(n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| {
        Error::shape(
            "cuda",
            format!("{n} does not fit the kernels' 32-bit index"),
        )
    })
}

fn op(t: Trans) -> cublasOperation_t {
    match t {
        Trans::N => cublasOperation_t::CUBLAS_OP_N,
        Trans::T => cublasOperation_t::CUBLAS_OP_T,
    }
}

impl Cuda {
    fn reduce(&self, a: &CudaMat, b: Option<&CudaMat>, opcode: i32) -> Result<f64> {
        if let Some(b) = b {
            same_shape("reduce", dims(a), dims(b))?;
        }
        let n = int(a.rows * a.cols)?;
        let mut out = self.scalars.borrow_mut();
        self.stream.memset_zeros(&mut *out).map_err(err)?;
        let bb = b.map_or(&a.data, |b| &b.data);
        launch!(self, "vs_reduce", grid(n as usize); &mut *out, &a.data, bb, &opcode, &n);
        Ok(self.stream.clone_dtoh(&*out).map_err(err)?[0])
    }

    fn elems(a: &CudaMat) -> Result<i32> {
        int(a.rows * a.cols)
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm_impl(
        &self,
        m: usize,
        alpha: f32,
        a: &CudaMat,
        ta: Trans,
        b: &CudaMat,
        tb: Trans,
        beta: f32,
        c: &mut CudaMat,
    ) -> Result<()> {
        // Row-major C (m, n) = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap operands.
        let k = match ta {
            Trans::N => a.cols,
            Trans::T => a.rows,
        };
        let n = c.cols;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let cfg = GemmConfig {
            transa: op(tb),
            transb: op(ta),
            m: int(n)?,
            n: int(m)?,
            k: int(k)?,
            alpha,
            lda: int(b.cols)?,
            ldb: int(a.cols)?,
            beta,
            ldc: int(n)?,
        };
        let a_view = a.data.slice(..);
        let b_view = b.data.slice(..);
        let mut c_view = c.data.slice_mut(..m * n);
        // SAFETY: the shapes were checked by the caller; cuBLAS reads and writes within them.
        unsafe { self.blas.gemm(cfg, &b_view, &a_view, &mut c_view) }.map_err(err)
    }

    fn row_counts(&self) -> Result<RowConvergence> {
        let c = self
            .stream
            .clone_dtoh(&*self.counts.borrow())
            .map_err(err)?;
        Ok(RowConvergence {
            converged: c[0].max(0) as usize,
            non_finite: c[1] > 0,
            active_nonzeros: None,
            restarts: 0,
        })
    }

    fn scan(&self, flags: &CudaMat) -> Result<usize> {
        let rows = flags.rows;
        {
            let mut pos = self.pos.borrow_mut();
            if pos.len() < rows {
                *pos = self.stream.alloc_zeros::<i32>(rows).map_err(err)?;
            }
        }
        let mut pos = self.pos.borrow_mut();
        let mut counts = self.counts.borrow_mut();
        let r = int(rows)?;
        launch!(self, "vs_scan_flags", per_row(1); &mut *pos, &mut *counts, &flags.data, &r);
        Ok(self.stream.clone_dtoh(&*counts).map_err(err)?[0].max(0) as usize)
    }
}

impl Backend<f32> for Cuda {
    type Mat = CudaMat;
    /// A device copy of the operand and how to apply it: cuBLAS needs no packing.
    type Packed = Option<(CudaMat, Trans)>;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn zeros(&self, rows: usize, cols: usize) -> Result<CudaMat> {
        check_size("zeros", rows, cols)?;
        Ok(CudaMat {
            data: self
                .stream
                .alloc_zeros::<f32>((rows * cols).max(1))
                .map_err(err)?,
            rows,
            cols,
        })
    }

    fn upload(&self, a: ArrayView2<'_, f32>) -> Result<CudaMat> {
        check_size("upload", a.nrows(), a.ncols())?;
        let host = a.as_standard_layout();
        let slice = host
            .as_slice()
            .ok_or_else(|| err("non-contiguous upload"))?;
        let data = if slice.is_empty() {
            self.stream.alloc_zeros::<f32>(1).map_err(err)?
        } else {
            self.stream.clone_htod(slice).map_err(err)?
        };
        Ok(CudaMat {
            data,
            rows: a.nrows(),
            cols: a.ncols(),
        })
    }

    fn download(&self, a: &CudaMat) -> Result<Array2<f32>> {
        let mut v = self.stream.clone_dtoh(&a.data).map_err(err)?;
        v.truncate(a.rows * a.cols);
        Array2::from_shape_vec((a.rows, a.cols), v).map_err(err)
    }

    fn shape(&self, a: &CudaMat) -> (usize, usize) {
        (a.rows, a.cols)
    }

    fn gemm(
        &self,
        alpha: f32,
        a: &CudaMat,
        ta: Trans,
        b: &CudaMat,
        tb: Trans,
        beta: f32,
        c: &mut CudaMat,
    ) -> Result<()> {
        let (m, k) = match ta {
            Trans::N => (a.rows, a.cols),
            Trans::T => (a.cols, a.rows),
        };
        let (k2, n) = match tb {
            Trans::N => (b.rows, b.cols),
            Trans::T => (b.cols, b.rows),
        };
        if k != k2 || (c.rows, c.cols) != (m, n) {
            return Err(Error::shape(
                "gemm",
                format!(
                    "op(a) is ({m}, {k}), op(b) is ({k2}, {n}), c is {:?}",
                    dims(c)
                ),
            ));
        }
        self.gemm_impl(m, alpha, a, ta, b, tb, beta, c)
    }

    fn gemm_rows(
        &self,
        rows: usize,
        alpha: f32,
        a: &CudaMat,
        b: &CudaMat,
        tb: Trans,
        beta: f32,
        c: &mut CudaMat,
    ) -> Result<()> {
        let (k2, n) = match tb {
            Trans::N => (b.rows, b.cols),
            Trans::T => (b.cols, b.rows),
        };
        if rows > a.rows || rows > c.rows || a.cols != k2 || c.cols != n {
            return Err(Error::shape(
                "gemm_rows",
                format!(
                    "{rows} rows of a {:?} times op(b) ({k2}, {n}) into c {:?}",
                    dims(a),
                    dims(c)
                ),
            ));
        }
        self.gemm_impl(rows, alpha, a, Trans::N, b, tb, beta, c)
    }

    fn pack_rhs(&self, b: &CudaMat, tb: Trans, packed: &mut Self::Packed) -> Result<()> {
        let mut stored = match packed.take() {
            Some((m, _)) if dims(&m) == dims(b) => m,
            _ => self.zeros(b.rows, b.cols)?,
        };
        self.copy(b, &mut stored)?;
        *packed = Some((stored, tb));
        Ok(())
    }

    fn packed_shape(&self, packed: &Self::Packed) -> (usize, usize) {
        match packed {
            Some((b, Trans::N)) => (b.rows, b.cols),
            Some((b, Trans::T)) => (b.cols, b.rows),
            None => (0, 0),
        }
    }

    fn gemm_rows_packed(
        &self,
        rows: usize,
        alpha: f32,
        a: &CudaMat,
        b: &Self::Packed,
        beta: f32,
        c: &mut CudaMat,
    ) -> Result<()> {
        let Some((b, tb)) = b else {
            return Err(Error::shape("gemm_rows_packed", "nothing was packed"));
        };
        self.gemm_rows(rows, alpha, a, b, *tb, beta, c)
    }

    fn packed_gram(&self, b: &Self::Packed, g: &mut CudaMat) -> Result<()> {
        let Some((b, tb)) = b else {
            return Err(Error::shape("packed_gram", "nothing was packed"));
        };
        let ta = match tb {
            Trans::N => Trans::T,
            Trans::T => Trans::N,
        };
        self.gemm(1.0, b, ta, b, *tb, 0.0, g)
    }

    fn gather_active_rows(
        &self,
        flags: &CudaMat,
        src: &CudaMat,
        dst: &mut CudaMat,
    ) -> Result<usize> {
        same_shape("gather_active_rows", dims(src), dims(dst))?;
        same_shape("gather_active_rows: flags", dims(flags), (src.rows, 1))?;
        let k = self.scan(flags)?;
        let cols = int(src.cols)?;
        let pos = self.pos.borrow();
        launch!(self, "vs_gather_rows", per_row(src.rows); &mut dst.data, &src.data, &flags.data, &*pos, &cols);
        Ok(k)
    }

    fn scatter_active_rows(&self, flags: &CudaMat, src: &CudaMat, dst: &mut CudaMat) -> Result<()> {
        same_shape("scatter_active_rows", dims(src), dims(dst))?;
        same_shape("scatter_active_rows: flags", dims(flags), (src.rows, 1))?;
        self.scan(flags)?;
        let cols = int(src.cols)?;
        let pos = self.pos.borrow();
        launch!(self, "vs_scatter_rows", per_row(src.rows); &mut dst.data, &src.data, &flags.data, &*pos, &cols);
        Ok(())
    }

    fn copy(&self, src: &CudaMat, dst: &mut CudaMat) -> Result<()> {
        same_shape("copy", dims(src), dims(dst))?;
        self.stream
            .memcpy_dtod(&src.data, &mut dst.data)
            .map_err(err)
    }

    fn axpby(&self, alpha: f32, x: &CudaMat, beta: f32, y: &mut CudaMat) -> Result<()> {
        same_shape("axpby", dims(x), dims(y))?;
        let (n, bz) = (Self::elems(y)?, (beta == 0.0) as i32);
        launch!(self, "vs_axpby", grid(n as usize); &mut y.data, &x.data, &alpha, &beta, &bz, &n);
        Ok(())
    }

    fn add_scaled_diff(&self, alpha: f32, a: &CudaMat, b: &CudaMat, y: &mut CudaMat) -> Result<()> {
        same_shape("add_scaled_diff", dims(a), dims(b))?;
        same_shape("add_scaled_diff", dims(a), dims(y))?;
        let n = Self::elems(y)?;
        launch!(self, "vs_add_scaled_diff", grid(n as usize); &mut y.data, &a.data, &b.data, &alpha, &n);
        Ok(())
    }

    fn mul_assign(&self, a: &CudaMat, y: &mut CudaMat) -> Result<()> {
        same_shape("mul_assign", dims(a), dims(y))?;
        let n = Self::elems(y)?;
        launch!(self, "vs_mul_assign", grid(n as usize); &mut y.data, &a.data, &n);
        Ok(())
    }

    fn scale(&self, alpha: f32, y: &mut CudaMat) -> Result<()> {
        let n = Self::elems(y)?;
        launch!(self, "vs_scale", grid(n as usize); &mut y.data, &alpha, &n);
        Ok(())
    }

    fn fill(&self, value: f32, y: &mut CudaMat) -> Result<()> {
        let n = Self::elems(y)?;
        launch!(self, "vs_fill", grid(n as usize); &mut y.data, &value, &n);
        Ok(())
    }

    fn add_row_bias(&self, bias: &CudaMat, a: &mut CudaMat) -> Result<()> {
        if dims(bias) != (1, a.cols) {
            return Err(Error::shape(
                "add_row_bias",
                format!("bias {:?} for a {:?}", dims(bias), dims(a)),
            ));
        }
        let (cols, n) = (int(a.cols)?, Self::elems(a)?);
        launch!(self, "vs_add_row_bias", grid(n as usize); &mut a.data, &bias.data, &cols, &n);
        Ok(())
    }

    fn col_sums(&self, alpha: f32, a: &CudaMat, beta: f32, out: &mut CudaMat) -> Result<()> {
        if dims(out) != (1, a.cols) {
            return Err(Error::shape(
                "col_sums",
                format!("out {:?} for a {:?}", dims(out), dims(a)),
            ));
        }
        let (bz, rows, cols) = ((beta == 0.0) as i32, int(a.rows)?, int(a.cols)?);
        launch!(self, "vs_col_sums", per_col(a.cols); &mut out.data, &a.data, &alpha, &beta, &bz, &rows, &cols);
        Ok(())
    }

    fn col_mean_std(&self, a: &CudaMat, mean: &mut CudaMat, std: &mut CudaMat) -> Result<()> {
        if dims(mean) != (1, a.cols) || dims(std) != (1, a.cols) || a.rows < 2 {
            return Err(Error::shape(
                "col_mean_std",
                format!(
                    "a {:?} (needs 2 rows), mean {:?}, std {:?}",
                    dims(a),
                    dims(mean),
                    dims(std)
                ),
            ));
        }
        let (rows, cols) = (int(a.rows)?, int(a.cols)?);
        launch!(self, "vs_col_mean_std", per_col(a.cols); &mut mean.data, &mut std.data, &a.data, &rows, &cols);
        Ok(())
    }

    fn normalize_columns(&self, a: &mut CudaMat) -> Result<()> {
        let (rows, cols) = (int(a.rows)?, int(a.cols)?);
        launch!(self, "vs_normalize_columns", per_col(a.cols); &mut a.data, &rows, &cols);
        Ok(())
    }

    fn relu(&self, a: &mut CudaMat) -> Result<()> {
        let n = Self::elems(a)?;
        launch!(self, "vs_relu", grid(n as usize); &mut a.data, &n);
        Ok(())
    }

    fn relu_mask(&self, act: &CudaMat, grad: &mut CudaMat) -> Result<()> {
        same_shape("relu_mask", dims(act), dims(grad))?;
        let n = Self::elems(grad)?;
        launch!(self, "vs_relu_mask", grid(n as usize); &mut grad.data, &act.data, &n);
        Ok(())
    }

    fn hinge_value(&self, std: &CudaMat, t: f32) -> Result<f32> {
        let n = Self::elems(std)?;
        let mut out = self.scalars.borrow_mut();
        self.stream.memset_zeros(&mut *out).map_err(err)?;
        launch!(self, "vs_hinge_value", grid(n as usize); &mut *out, &std.data, &t, &n);
        Ok(self.stream.clone_dtoh(&*out).map_err(err)?[0] as f32)
    }

    fn hinge_grad(
        &self,
        x: &CudaMat,
        mean: &CudaMat,
        std: &CudaMat,
        beta: f32,
        t: f32,
        count: usize,
        grad: &mut CudaMat,
    ) -> Result<()> {
        same_shape("hinge_grad", dims(x), dims(grad))?;
        if dims(mean) != (1, x.cols) || dims(std) != (1, x.cols) || count < 2 {
            return Err(Error::shape(
                "hinge_grad",
                format!(
                    "x {:?} over {count} samples (needs 2), mean {:?}, std {:?}",
                    dims(x),
                    dims(mean),
                    dims(std)
                ),
            ));
        }
        if x.rows * x.cols == 0 {
            return Ok(());
        }
        let (rows, cols, count) = (int(x.rows)?, int(x.cols)?, int(count)?);
        launch!(self, "vs_hinge_grad", grid(x.rows * x.cols); &mut grad.data, &x.data, &mean.data, &std.data, &beta, &t, &rows, &cols, &count);
        Ok(())
    }

    fn shrink_step(
        &self,
        x: &CudaMat,
        g: &CudaMat,
        flags: &CudaMat,
        eta: f32,
        thr: f32,
        nonneg: bool,
        z: &mut CudaMat,
    ) -> Result<()> {
        same_shape("shrink_step", dims(x), dims(g))?;
        same_shape("shrink_step", dims(x), dims(z))?;
        same_shape("shrink_step: flags", dims(flags), (x.rows, 1))?;
        let (nn, cols, n) = (nonneg as i32, int(x.cols)?, Self::elems(x)?);
        launch!(self, "vs_shrink_step", grid(n as usize); &mut z.data, &x.data, &g.data, &flags.data, &eta, &thr, &nn, &cols, &n);
        Ok(())
    }

    fn fista_update(
        &self,
        g: &CudaMat,
        step: FistaStep<f32>,
        x: &mut CudaMat,
        z: &mut CudaMat,
        z_old: &mut CudaMat,
        flags: &mut CudaMat,
    ) -> Result<RowConvergence> {
        let FistaStep {
            eta,
            thr,
            nonneg,
            coef,
            tol,
        } = step;
        same_shape("fista_update", dims(g), dims(x))?;
        same_shape("fista_update", dims(g), dims(z))?;
        same_shape("fista_update", dims(g), dims(z_old))?;
        same_shape("fista_update: flags", dims(flags), (g.rows, 1))?;
        {
            let mut counts = self.counts.borrow_mut();
            self.stream.memset_zeros(&mut *counts).map_err(err)?;
            let (nn, cols) = (nonneg as i32, int(g.cols)?);
            launch!(self, "vs_fista_update", per_row(g.rows);
                &mut x.data, &mut z.data, &mut z_old.data, &mut flags.data, &g.data,
                &eta, &thr, &nn, &coef, &tol, &cols, &mut *counts);
        }
        self.row_counts()
    }

    fn momentum(&self, z: &CudaMat, z_old: &CudaMat, coef: f32, x: &mut CudaMat) -> Result<()> {
        same_shape("momentum", dims(z), dims(z_old))?;
        same_shape("momentum", dims(z), dims(x))?;
        let n = Self::elems(x)?;
        launch!(self, "vs_momentum", grid(n as usize); &mut x.data, &z.data, &z_old.data, &coef, &n);
        Ok(())
    }

    fn converged_rows(
        &self,
        z_old: &CudaMat,
        z_new: &CudaMat,
        tol: f32,
        flags: &mut CudaMat,
    ) -> Result<RowConvergence> {
        same_shape("converged_rows", dims(z_old), dims(z_new))?;
        same_shape("converged_rows: flags", dims(flags), (z_old.rows, 1))?;
        {
            let mut counts = self.counts.borrow_mut();
            self.stream.memset_zeros(&mut *counts).map_err(err)?;
            let cols = int(z_old.cols)?;
            launch!(self, "vs_converged_rows", per_row(z_old.rows); &mut flags.data, &z_old.data, &z_new.data, &tol, &cols, &mut *counts);
        }
        self.row_counts()
    }

    fn step_model_terms(&self, g: &CudaMat, p: &CudaMat, x: &CudaMat) -> Result<(f32, f32)> {
        same_shape("step_model_terms", dims(g), dims(p))?;
        same_shape("step_model_terms", dims(g), dims(x))?;
        let n = Self::elems(g)?;
        let mut out = self.scalars.borrow_mut();
        self.stream.memset_zeros(&mut *out).map_err(err)?;
        launch!(self, "vs_step_model_terms", grid(n as usize); &mut *out, &g.data, &p.data, &x.data, &n);
        let v = self.stream.clone_dtoh(&*out).map_err(err)?;
        Ok((v[0] as f32, v[1] as f32))
    }

    fn sum_sq(&self, a: &CudaMat) -> Result<f32> {
        Ok(self.reduce(a, None, 0)? as f32)
    }

    fn sum_sq_diff(&self, a: &CudaMat, b: &CudaMat) -> Result<f32> {
        Ok(self.reduce(a, Some(b), 1)? as f32)
    }

    fn dot(&self, a: &CudaMat, b: &CudaMat) -> Result<f32> {
        Ok(self.reduce(a, Some(b), 2)? as f32)
    }

    fn sum_abs(&self, a: &CudaMat) -> Result<f32> {
        Ok(self.reduce(a, None, 3)? as f32)
    }

    fn count_zeros(&self, a: &CudaMat) -> Result<usize> {
        Ok(self.reduce(a, None, 4)? as usize)
    }

    fn all_finite(&self, a: &CudaMat) -> Result<bool> {
        Ok(self.reduce(a, None, 5)? == 0.0)
    }

    fn psnr_sum(&self, residual: &CudaMat, scale: f32, floor: f32) -> Result<f32> {
        let mut out = self.scalars.borrow_mut();
        self.stream.memset_zeros(&mut *out).map_err(err)?;
        let (s2, cols) = (scale * scale, int(residual.cols)?);
        launch!(self, "vs_psnr_rows", per_row(residual.rows); &mut *out, &residual.data, &s2, &floor, &cols);
        Ok(self.stream.clone_dtoh(&*out).map_err(err)?[0] as f32)
    }

    fn adam_update(
        &self,
        p: &mut CudaMat,
        g: &CudaMat,
        m: &mut CudaMat,
        v: &mut CudaMat,
        hp: &AdamUpdate<f32>,
    ) -> Result<()> {
        same_shape("adam_update: grad", dims(p), dims(g))?;
        same_shape("adam_update: m", dims(p), dims(m))?;
        same_shape("adam_update: v", dims(p), dims(v))?;
        let t = hp.step.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - hp.beta1.powi(t);
        let bc2_sqrt = (1.0 - hp.beta2.powi(t)).sqrt();
        let step_size = hp.lr / bc1;
        let n = Self::elems(p)?;
        launch!(self, "vs_adam", grid(n as usize);
            &mut p.data, &g.data, &mut m.data, &mut v.data, &step_size, &hp.beta1, &hp.beta2, &hp.eps,
            &hp.weight_decay, &bc2_sqrt, &n);
        Ok(())
    }
}
