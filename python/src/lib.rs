//! `varsparse._native`: the Python bindings of varsparse.
//!
//! Arrays arrive as float32 numpy arrays of any layout (C or Fortran order, strided views) and
//! are read in place through `PyReadonlyArray2::as_array`; the Python layer (`varsparse/`)
//! converts float64 and other dtypes before calling in. Every computation runs with the GIL
//! released (`Python::detach`) inside the CPU thread pool of `varsparse::backend::cpu::threads`,
//! and inside `catch_unwind`, so that a panic becomes a `VarSparseError` and never crosses into
//! Python. Reports cross as JSON strings (serde) that the Python layer turns into dicts.
//!
//! Devices: every computing entry point takes a `device` string (`cpu`, `cuda`, `cuda:N`),
//! parsed by `varsparse::backend::Device` (the names of the CLI's `--device`), and runs its work
//! through `Device::run` with a job implementing `OnBackend`, as the CLI's commands do. A build
//! without the `cuda` feature, or a machine without a usable GPU, answers a CUDA device with
//! `Error::CudaUnavailable`, raised as `CudaUnavailableError` (a `VarSparseError`). A `Model`
//! lives on the host; on a GPU it computes by being copied there for the call (saved to a
//! temporary checkpoint and loaded onto the device, as `varsparse encode --device` loads one),
//! and a model trained on a GPU comes back to the host the same way.

use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ndarray::{Array2, ArrayView2};
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyValueError};
use pyo3::prelude::*;

use varsparse::backend::{Backend, Device, OnBackend};
use varsparse::data::{Samples, TrainData};
use varsparse::solve::fista::{BatchReport, FistaParams, GradientPath, StepRule};
use varsparse::train::ValidParams;
use varsparse::train::fit::{FitOptions, Observer};
use varsparse::train::stats::EpochSummary;
use varsparse::{Cpu, Decoder, EnergyParams, Error, ModelParams, Preset, SparseCoder};

create_exception!(
    varsparse,
    VarSparseError,
    PyException,
    "An error from varsparse that is neither a bad argument (ValueError) nor an I/O failure \
     (OSError): a diverged solver, a corrupt checkpoint, an interrupted fit, an internal error."
);

create_exception!(
    varsparse,
    CudaUnavailableError,
    VarSparseError,
    "A CUDA device was asked for (device=\"cuda\" or \"cuda:N\") but cannot compute: the \
     package was built without the `cuda` feature (the default wheel is CPU-only), or the CUDA \
     driver, cuBLAS or NVRTC cannot be loaded, or there is no such GPU. A VarSparseError."
);

/// Maps a varsparse error to the Python exception with the same message.
fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::CudaUnavailable(_) => CudaUnavailableError::new_err(msg),
        Error::Shape { .. }
        | Error::InvalidParameter { .. }
        | Error::NonFiniteInput { .. }
        | Error::InvalidLabel { .. } => PyValueError::new_err(msg),
        Error::Io { .. } => PyOSError::new_err(msg),
        Error::Data(d) => match d {
            varsparse::error::DataError::Io { .. }
            | varsparse::error::DataError::MissingFile { .. } => PyOSError::new_err(msg),
            varsparse::error::DataError::InvalidParameter { .. }
            | varsparse::error::DataError::Shape { .. } => PyValueError::new_err(msg),
            _ => VarSparseError::new_err(msg),
        },
        _ => VarSparseError::new_err(msg),
    }
}

/// Runs `f` without the GIL, over `threads` CPU threads (all available when `None`), turning
/// a panic into a `VarSparseError` and a varsparse error into its Python exception.
fn compute<T: Send>(
    py: Python<'_>,
    threads: Option<usize>,
    f: impl FnOnce() -> varsparse::Result<T> + Send,
) -> PyResult<T> {
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let out = py.detach(move || {
        catch_unwind(AssertUnwindSafe(|| {
            varsparse::backend::cpu::set_blas_threads(1);
            varsparse::backend::cpu::threads::with_threads(threads, f)
        }))
    });
    match out {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) | Ok(Err(e)) => Err(to_py(e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(VarSparseError::new_err(format!(
                "internal error (a panic in varsparse; please report it): {what}"
            )))
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| VarSparseError::new_err(format!("JSON: {e}")))
}

/// FISTA's options as `varsparse infer` takes them.
#[allow(clippy::too_many_arguments)]
fn fista_params(
    lam: f64,
    beta: f64,
    threshold: f64,
    gamma: f64,
    step: Option<f64>,
    backtracking: bool,
    max_iter: usize,
    tol: f64,
    signed: bool,
    direct: bool,
    restart: bool,
) -> PyResult<FistaParams> {
    let step = match (step, backtracking) {
        (Some(_), true) => {
            return Err(PyValueError::new_err(
                "give either a constant step or backtracking=True, not both",
            ));
        }
        (Some(eta), false) => StepRule::Constant { eta },
        (None, true) => StepRule::Backtracking {
            initial_step: None,
            factor: 2.0,
        },
        (None, false) => StepRule::Auto,
    };
    Ok(FistaParams {
        energy: EnergyParams {
            lambda: lam,
            beta,
            threshold,
            gamma,
        },
        step,
        max_iter,
        tol,
        nonneg: !signed,
        path: if direct {
            GradientPath::Direct
        } else {
            GradientPath::Auto
        },
        record_trace: false,
        restart,
    })
}

/// The report of a batched FISTA run, as `varsparse infer --report` writes it (less `seconds`).
fn fista_report(
    codes: &Array2<f32>,
    params: &FistaParams,
    batches: &[BatchReport],
) -> PyResult<String> {
    let n = codes.nrows();
    let zeros = codes.iter().filter(|&&v| v == 0.0).count();
    let energy: f64 = batches.iter().map(|b| b.report.total_energy).sum();
    let steps: f64 = batches
        .iter()
        .map(|b| b.report.mean_steps * (b.end - b.start) as f64)
        .sum();
    #[derive(serde::Serialize)]
    struct Report<'a> {
        rows: usize,
        sparsity: f64,
        mean_energy: f64,
        mean_steps: f64,
        converged: bool,
        params: &'a FistaParams,
        batches: &'a [BatchReport],
    }
    json(&Report {
        rows: n,
        sparsity: zeros as f64 / codes.len().max(1) as f64,
        mean_energy: energy / n.max(1) as f64,
        mean_steps: steps / n.max(1) as f64,
        converged: batches.iter().all(|b| b.report.converged),
        params,
        batches,
    })
}

fn owned(a: &PyReadonlyArray2<'_, f32>) -> Array2<f32> {
    a.as_array().to_owned()
}

/// A device name (`cpu`, `cuda`, `cuda:N`) as the library parses it; `ValueError` otherwise.
fn to_device(name: &str) -> PyResult<Device> {
    name.parse().map_err(to_py)
}

/// Testing only (`_native._set_transfer_on_cpu`): the CPU device too takes the road a GPU
/// device takes for models, through a temporary checkpoint, so that the tests of a machine
/// without a GPU cover it.
static TRANSFER_ON_CPU: AtomicBool = AtomicBool::new(false);

/// Whether a model computes in place on the host (the CPU device) rather than through a copy
/// on `device`.
fn in_place(device: Device) -> bool {
    device == Device::Cpu && !TRANSFER_ON_CPU.load(Ordering::Relaxed)
}

/// A fresh directory under the system's temporary directory, removed with its contents on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> varsparse::Result<TempDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let path = std::env::temp_dir().join(format!(
                "varsparse-py-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(Error::Io {
                        action: "creating",
                        path,
                        source,
                    });
                }
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A decoder's parameters on the host, as the functions receive them.
enum HostDecoder {
    Linear(Array2<f32>),
    OneHidden(Array2<f32>, Array2<f32>, Array2<f32>),
}

/// FISTA in batches on the job's backend (`varsparse infer --solver fista`'s job).
struct FistaJob<'a> {
    decoder: &'a HostDecoder,
    y: ArrayView2<'a, f32>,
    warm: Option<&'a Array2<f32>>,
    params: &'a FistaParams,
    batch_size: usize,
}

impl OnBackend for FistaJob<'_> {
    type Output = (Array2<f32>, Vec<BatchReport>);

    fn run<B: Backend<f32>>(
        self,
        make: &dyn Fn() -> varsparse::Result<B>,
    ) -> varsparse::Result<Self::Output> {
        let be = make()?;
        let dec = match self.decoder {
            HostDecoder::Linear(w) => Decoder::linear(&be, w)?,
            HostDecoder::OneHidden(w1, b1, w2) => Decoder::one_hidden(&be, w1, b1, w2)?,
        };
        varsparse::fista::solve_batches(&be, &dec, self.y, self.warm, self.params, self.batch_size)
    }
}

/// The exact lasso: a host algorithm. As `varsparse infer --solver exact --device D` does, the
/// device is started first (so that an unavailable one is an error whatever the solver), and
/// the solver then runs on the CPU.
struct LassoJob<'a> {
    w: &'a Array2<f32>,
    y: ArrayView2<'a, f32>,
    lam: f64,
    positive: bool,
}

impl OnBackend for LassoJob<'_> {
    type Output = (Array2<f32>, varsparse::lasso::LassoReport);

    fn run<B: Backend<f32>>(
        self,
        make: &dyn Fn() -> varsparse::Result<B>,
    ) -> varsparse::Result<Self::Output> {
        let _device = make()?;
        varsparse::lasso::lasso(self.w, self.y, self.lam, self.positive)
    }
}

/// What a model computes for a `Model` method.
#[derive(Clone, Copy)]
enum ModelOp {
    Encode,
    EncodeFista,
    Decode,
}

type ModelOutput = (Array2<f32>, Vec<BatchReport>);

impl ModelOp {
    fn apply<B: Backend<f32>>(
        self,
        model: &SparseCoder<B>,
        x: ArrayView2<'_, f32>,
    ) -> varsparse::Result<ModelOutput> {
        match self {
            ModelOp::Encode => Ok((model.encode(x)?, Vec::new())),
            ModelOp::EncodeFista => model.encode_fista(x),
            ModelOp::Decode => Ok((model.decode(x)?, Vec::new())),
        }
    }
}

/// A host model's computation on the job's backend: the model is saved to a temporary
/// checkpoint and loaded onto the backend (`varsparse encode --device D`'s `load_on`).
struct ModelJob<'a> {
    host: &'a SparseCoder,
    op: ModelOp,
    x: ArrayView2<'a, f32>,
}

impl OnBackend for ModelJob<'_> {
    type Output = ModelOutput;

    fn run<B: Backend<f32>>(
        self,
        make: &dyn Fn() -> varsparse::Result<B>,
    ) -> varsparse::Result<ModelOutput> {
        let be = make()?;
        let tmp = TempDir::new()?;
        let dir = tmp.path().join("model");
        self.host.save(&dir)?;
        let model = SparseCoder::load_on(be, &dir)?;
        self.op.apply(&model, self.x)
    }
}

/// `op` of the host model `host` on `device`: in place on the CPU, through a copy otherwise.
fn run_model(
    host: &SparseCoder,
    device: Device,
    op: ModelOp,
    x: ArrayView2<'_, f32>,
) -> varsparse::Result<ModelOutput> {
    if in_place(device) {
        op.apply(host, x)
    } else {
        device.run(ModelJob { host, op, x })
    }
}

/// Training on the job's backend (`varsparse train`'s job); the model comes back to the host
/// through a temporary checkpoint.
struct FitJob<'a, 'd> {
    params: &'a ValidParams,
    data: &'a TrainData<'d>,
    observer: &'a mut PyObserver,
}

impl OnBackend for FitJob<'_, '_> {
    type Output = SparseCoder;

    fn run<B: Backend<f32>>(
        self,
        make: &dyn Fn() -> varsparse::Result<B>,
    ) -> varsparse::Result<SparseCoder> {
        let model =
            self.params
                .fit_with(make()?, self.data, &FitOptions::default(), self.observer)?;
        let tmp = TempDir::new()?;
        let dir = tmp.path().join("model");
        model.save(&dir)?;
        drop(model);
        SparseCoder::load(&dir)
    }
}

/// FISTA codes of the rows of `y` (n, d) for a linear dictionary `w` (d, l); returns the codes
/// and a JSON report, on `device` (`cpu`, `cuda`, `cuda:N`). All arguments are required here;
/// `varsparse.fista` has the defaults.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn fista<'py>(
    py: Python<'py>,
    y: PyReadonlyArray2<'py, f32>,
    w: PyReadonlyArray2<'py, f32>,
    lam: f64,
    beta: f64,
    threshold: f64,
    gamma: f64,
    warm_start: Option<PyReadonlyArray2<'py, f32>>,
    step: Option<f64>,
    backtracking: bool,
    max_iter: usize,
    tol: f64,
    signed: bool,
    batch_size: usize,
    direct: bool,
    adaptive_restart: bool,
    n_threads: Option<usize>,
    device: &str,
) -> PyResult<(Bound<'py, PyArray2<f32>>, String)> {
    let params = fista_params(
        lam,
        beta,
        threshold,
        gamma,
        step,
        backtracking,
        max_iter,
        tol,
        signed,
        direct,
        adaptive_restart,
    )?;
    let device = to_device(device)?;
    let decoder = HostDecoder::Linear(owned(&w));
    let warm = warm_start.as_ref().map(owned);
    let yv: ArrayView2<'_, f32> = y.as_array();
    let (codes, batches) = compute(py, n_threads, || {
        device.run(FistaJob {
            decoder: &decoder,
            y: yv,
            warm: warm.as_ref(),
            params: &params,
            batch_size,
        })
    })?;
    let report = fista_report(&codes, &params, &batches)?;
    Ok((codes.into_pyarray(py), report))
}

/// FISTA codes of the rows of `y` (n, d) for the one-hidden-layer decoder
/// `W2 relu(W1 z + b1)`: `w1` (m, l), `b1` (m,), `w2` (d, m). As `fista` otherwise, `device`
/// included.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn fista_mlp<'py>(
    py: Python<'py>,
    y: PyReadonlyArray2<'py, f32>,
    w1: PyReadonlyArray2<'py, f32>,
    b1: PyReadonlyArray1<'py, f32>,
    w2: PyReadonlyArray2<'py, f32>,
    lam: f64,
    beta: f64,
    threshold: f64,
    gamma: f64,
    warm_start: Option<PyReadonlyArray2<'py, f32>>,
    step: Option<f64>,
    backtracking: bool,
    max_iter: usize,
    tol: f64,
    signed: bool,
    batch_size: usize,
    direct: bool,
    adaptive_restart: bool,
    n_threads: Option<usize>,
    device: &str,
) -> PyResult<(Bound<'py, PyArray2<f32>>, String)> {
    let params = fista_params(
        lam,
        beta,
        threshold,
        gamma,
        step,
        backtracking,
        max_iter,
        tol,
        signed,
        direct,
        adaptive_restart,
    )?;
    let device = to_device(device)?;
    let decoder = HostDecoder::OneHidden(
        owned(&w1),
        b1.as_array().to_owned().insert_axis(ndarray::Axis(0)),
        owned(&w2),
    );
    let warm = warm_start.as_ref().map(owned);
    let yv: ArrayView2<'_, f32> = y.as_array();
    let (codes, batches) = compute(py, n_threads, || {
        device.run(FistaJob {
            decoder: &decoder,
            y: yv,
            warm: warm.as_ref(),
            params: &params,
            batch_size,
        })
    })?;
    let report = fista_report(&codes, &params, &batches)?;
    Ok((codes.into_pyarray(py), report))
}

/// Exact lasso codes of the rows of `y` (n, d) for the dictionary `w` (d, l): non-negative when
/// `positive`, signed otherwise; returns the codes and a JSON report. The solver is a host
/// algorithm: on another `device` than `cpu` the device is started (an unavailable one is an
/// error, as with `varsparse infer --solver exact --device D`) and the codes are computed on
/// the CPU.
#[pyfunction]
fn lasso<'py>(
    py: Python<'py>,
    y: PyReadonlyArray2<'py, f32>,
    w: PyReadonlyArray2<'py, f32>,
    lam: f64,
    positive: bool,
    n_threads: Option<usize>,
    device: &str,
) -> PyResult<(Bound<'py, PyArray2<f32>>, String)> {
    let device = to_device(device)?;
    let w = owned(&w);
    let yv: ArrayView2<'_, f32> = y.as_array();
    let (codes, report) = compute(py, n_threads, || {
        device.run(LassoJob {
            w: &w,
            y: yv,
            lam,
            positive,
        })
    })?;
    Ok((codes.into_pyarray(py), json(&report)?))
}

/// A device name (`cpu`, `cuda`, `cuda:N`) in the library's spelling (`cuda:0` is `cuda`);
/// `ValueError` for anything else. Starts nothing.
#[pyfunction]
fn parse_device(name: &str) -> PyResult<String> {
    Ok(to_device(name)?.to_string())
}

/// Testing only: with `on`, the CPU device computes models (fit, and a `Model`'s encode,
/// encode_fista and decode) the way a GPU device does, through a temporary checkpoint, so that
/// a machine without a GPU tests that road. Returns the previous setting.
#[pyfunction]
fn _set_transfer_on_cpu(on: bool) -> bool {
    TRANSFER_ON_CPU.swap(on, Ordering::Relaxed)
}

/// The names of the paper's presets.
#[pyfunction]
fn preset_names() -> Vec<&'static str> {
    Preset::ALL.iter().map(|p| p.name()).collect()
}

/// A preset's hyper-parameters (`ModelParams`) as JSON.
#[pyfunction]
fn preset_params(name: &str) -> PyResult<String> {
    let p = Preset::from_name(name).map_err(to_py)?;
    json(&ModelParams::preset(p))
}

/// Loads MNIST from `data_dir` (the four IDX files, gzipped or not), normalised as the paper
/// does; returns a dict of float32 images and uint8 labels per split.
#[pyfunction]
#[pyo3(signature = (data_dir, split_seed=0, max_train=None))]
fn load_mnist<'py>(
    py: Python<'py>,
    data_dir: PathBuf,
    split_seed: u64,
    max_train: Option<usize>,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    let m = compute(py, Some(1), || {
        varsparse::data::mnist::load_mnist_subset(&data_dir, split_seed, max_train)
            .map_err(Error::from)
    })?;
    let d = pyo3::types::PyDict::new(py);
    for (name, split) in [("train", m.train), ("val", m.val), ("test", m.test)] {
        d.set_item(format!("{name}_images"), split.images.into_pyarray(py))?;
        d.set_item(
            format!("{name}_labels"),
            numpy::PyArray1::from_vec(py, split.labels),
        )?;
    }
    d.set_item("image_shape", (m.rows, m.cols))?;
    Ok(d)
}

/// Watches a fit from Rust: polls Python's signal handlers after every batch (so that Ctrl-C
/// stops the run between batches with `KeyboardInterrupt`), and keeps every epoch's summary.
struct PyObserver {
    error: Option<PyErr>,
    epochs: Vec<EpochSummary>,
}

impl Observer for PyObserver {
    fn on_batch(
        &mut self,
        _epoch: usize,
        _batch: usize,
        _stats: &varsparse::StepStats,
    ) -> ControlFlow<()> {
        match Python::attach(|py| py.check_signals()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }

    fn on_epoch(&mut self, summary: &EpochSummary) -> ControlFlow<()> {
        self.epochs.push(summary.clone());
        ControlFlow::Continue(())
    }
}

/// Trains a model on the rows of `x_train` (validating on `x_val`, which may have no rows) with
/// the hyper-parameters `params_json` (a `ModelParams`); returns the model and a JSON list of
/// the epochs' summaries. Trains on `device`; the model returned lives on the host. Ctrl-C
/// raises `KeyboardInterrupt` between batches; nothing is written (a model trained on a GPU
/// crosses to the host through a temporary checkpoint, removed at once).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn fit<'py>(
    py: Python<'py>,
    x_train: PyReadonlyArray2<'py, f32>,
    x_val: PyReadonlyArray2<'py, f32>,
    params_json: &str,
    pixel_scale: f64,
    image_shape: Option<(usize, usize)>,
    n_threads: Option<usize>,
    device: &str,
) -> PyResult<(Model, String)> {
    let device = to_device(device)?;
    let params: ModelParams = serde_json::from_str(params_json)
        .map_err(|e| PyValueError::new_err(format!("hyper-parameters: {e}")))?;
    let valid = params.validate().map_err(to_py)?;
    let (xt, xv) = (x_train.as_array(), x_val.as_array());
    let mut obs = PyObserver {
        error: None,
        epochs: Vec::new(),
    };
    let obs_ref = &mut obs;
    let result = compute(py, n_threads, move || {
        let data = TrainData {
            train: Samples::new(xt, pixel_scale),
            val: Samples::new(xv, pixel_scale),
            image_shape,
            train_shard: None,
        };
        if in_place(device) {
            valid.fit_with(Cpu, &data, &FitOptions::default(), obs_ref)
        } else {
            device.run(FitJob {
                params: &valid,
                data: &data,
                observer: obs_ref,
            })
        }
    });
    if let Some(e) = obs.error.take() {
        return Err(e);
    }
    let model = result?;
    let history = json(&obs.epochs)?;
    Ok((
        Model {
            inner: std::sync::Arc::new(model),
        },
        history,
    ))
}

/// Loads a checkpoint directory (written by `varsparse train` or `Model.save`).
#[pyfunction]
fn load(py: Python<'_>, path: PathBuf) -> PyResult<Model> {
    if !path.exists() {
        // the library's message, as Python's error for a missing file
        return Err(pyo3::exceptions::PyFileNotFoundError::new_err(format!(
            "checkpoint {}: no such directory",
            path.display()
        )));
    }
    let m = compute(py, Some(1), || SparseCoder::load(&path))?;
    Ok(Model {
        inner: std::sync::Arc::new(m),
    })
}

/// A trained model (LISTA encoder and decoder), as `varsparse.load` returns it.
#[pyclass(frozen, module = "varsparse._native")]
struct Model {
    inner: std::sync::Arc<SparseCoder>,
}

#[pymethods]
impl Model {
    /// Amortised (encoder) codes (n, l) of the rows of `y` (n, d).
    ///
    /// `device`: "cpu" (default), "cuda" or "cuda:N". On a GPU the model is copied there for
    /// the call (through a temporary checkpoint); `CudaUnavailableError` when the build has no
    /// `cuda` feature or there is no usable GPU.
    #[pyo3(signature = (y, n_threads=None, device="cpu"))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        y: PyReadonlyArray2<'py, f32>,
        n_threads: Option<usize>,
        device: &str,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let device = to_device(device)?;
        let m = &self.inner;
        let yv = y.as_array();
        let (z, _) = compute(py, n_threads, || run_model(m, device, ModelOp::Encode, yv))?;
        Ok(z.into_pyarray(py))
    }

    /// FISTA codes warm-started from (and drawn towards) the encoder's, with the model's
    /// inference parameters, in batches of the training batch size; returns the codes and the
    /// report as a dict (as `varsparse.fista`'s). `device` as for `encode`.
    #[pyo3(signature = (y, n_threads=None, device="cpu"))]
    fn encode_fista<'py>(
        &self,
        py: Python<'py>,
        y: PyReadonlyArray2<'py, f32>,
        n_threads: Option<usize>,
        device: &str,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Bound<'py, PyAny>)> {
        let device = to_device(device)?;
        let m = &self.inner;
        let yv = y.as_array();
        let (z, batches) = compute(py, n_threads, || {
            run_model(m, device, ModelOp::EncodeFista, yv)
        })?;
        let report = fista_report(&z, &m.params().fista(), &batches)?;
        let report = py.import("json")?.call_method1("loads", (report,))?;
        Ok((z.into_pyarray(py), report))
    }

    /// Reconstructions (n, d) of codes `z` (n, l). `device` as for `encode`.
    #[pyo3(signature = (z, n_threads=None, device="cpu"))]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        z: PyReadonlyArray2<'py, f32>,
        n_threads: Option<usize>,
        device: &str,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let device = to_device(device)?;
        let m = &self.inner;
        let zv = z.as_array();
        let (y, _) = compute(py, n_threads, || run_model(m, device, ModelOp::Decode, zv))?;
        Ok(y.into_pyarray(py))
    }

    /// The decoder's atoms (l, d): a linear dictionary's columns, or `D(e_i) - D(0)`.
    fn atoms<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let m = &self.inner;
        let a = compute(py, Some(1), || m.atoms())?;
        Ok(a.into_pyarray(py))
    }

    /// Writes the model as a checkpoint directory, atomically.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let m = &self.inner;
        compute(py, Some(1), || m.save(&path))
    }

    /// The hyper-parameters (`ModelParams`) as JSON.
    #[getter]
    fn params_json(&self) -> PyResult<String> {
        json(self.inner.params())
    }

    /// The input dimension d.
    #[getter]
    fn input_dim(&self) -> usize {
        self.inner.input_dim()
    }

    /// The code dimension l.
    #[getter]
    fn code_dim(&self) -> usize {
        self.inner.decoder().code_dim()
    }

    /// Epochs trained.
    #[getter]
    fn epochs_trained(&self) -> usize {
        self.inner.epochs_trained()
    }

    /// The image shape (height, width) of a sample, when known.
    #[getter]
    fn image_shape(&self) -> Option<(usize, usize)> {
        self.inner.image_shape()
    }

    /// The decoder's parameters as a dict of arrays: `W` (d, l) for a linear decoder; `W1`
    /// (m, l), `b1` (m,), `W2` (d, m) for a one-hidden-layer one.
    fn decoder_params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let p = self.inner.decoder().to_host(&Cpu).map_err(to_py)?;
        let d = pyo3::types::PyDict::new(py);
        match p {
            varsparse::model::params::DecoderParams::Linear { w } => {
                d.set_item("W", w.into_pyarray(py))?;
            }
            varsparse::model::params::DecoderParams::OneHidden { w1, b1, w2 } => {
                d.set_item("W1", w1.into_pyarray(py))?;
                let b1: ndarray::Array1<f32> = b1.iter().copied().collect();
                d.set_item("b1", b1.into_pyarray(py))?;
                d.set_item("W2", w2.into_pyarray(py))?;
            }
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let p = self.inner.params();
        format!(
            "Model(kind={:?}, input_dim={}, code_dim={}, epochs_trained={})",
            p.kind,
            self.inner.input_dim(),
            self.inner.decoder().code_dim(),
            self.inner.epochs_trained()
        )
    }
}

/// The native part of the `varsparse` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("VarSparseError", m.py().get_type::<VarSparseError>())?;
    m.add(
        "CudaUnavailableError",
        m.py().get_type::<CudaUnavailableError>(),
    )?;
    m.add("CUDA_BUILD", cfg!(feature = "cuda"))?;
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(fista, m)?)?;
    m.add_function(wrap_pyfunction!(fista_mlp, m)?)?;
    m.add_function(wrap_pyfunction!(lasso, m)?)?;
    m.add_function(wrap_pyfunction!(preset_names, m)?)?;
    m.add_function(wrap_pyfunction!(preset_params, m)?)?;
    m.add_function(wrap_pyfunction!(load_mnist, m)?)?;
    m.add_function(wrap_pyfunction!(fit, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(parse_device, m)?)?;
    m.add_function(wrap_pyfunction!(_set_transfer_on_cpu, m)?)?;
    Ok(())
}
