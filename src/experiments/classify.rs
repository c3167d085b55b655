//! Low-data linear classification (docs/CONVENTIONS.md §8): how much class information the codes carry.
//!
//! A linear layer with bias is trained with softmax cross-entropy on features of a few labelled
//! samples per class; the weights with the lowest validation loss are kept and scored on a test
//! set by top-1 and top-3 accuracy. The protocol ([`run_protocol`]) repeats this for several
//! numbers `N` of training samples per class and several seeds, on three kinds of features:
//!
//! | [`Method`] | features | trained |
//! |---|---|---|
//! | `codes` | a trained model's encoder codes `E(y)` (not standardised) | the linear layer |
//! | `raw` | the normalised pixels | the linear layer |
//! | `lista-raw` | a randomly initialised LISTA encoder on the pixels | encoder and layer jointly |
//!
//! The classifier, with `C` classes and inputs `x` of dimension `d` (rows of `X`):
//!
//! ```text
//! logits  A = X W^T + b                      W (C, d), b (1, C), PyTorch-default uniform init
//! loss      = (1/n) sum_i [ logsumexp(A_i) - A_{i, y_i} ]
//! dA        = (softmax(A) - onehot(y)) / n
//! dW = dA^T X,   db = colsum(dA),   dX = dA W   (into the LISTA encoder for `lista-raw`)
//! ```
//!
//! Training ([`ClassifyParams`]): Adam (PyTorch semantics, [`crate::train::optim`]) at `lr` 1e-3,
//! batches of 250 from a per-epoch reshuffle (the last, partial batch is kept; a training set
//! smaller than a batch is one batch), 100 epochs. After every epoch the mean validation loss is
//! computed; the parameters of the epoch with the lowest one are copied aside and returned
//! (the released code meant to do this but evaluated its last epoch). Every random draw — the
//! initialisation, then the shuffles — comes from one ChaCha8 stream seeded by
//! [`ClassifyParams::seed`], so a run is bit-identical for a given seed.
//!
//! Features and parameters are `F` (`f32` in the protocol, `f64` for gradient checks); losses
//! are accumulated in `f64`. The module knows nothing about MNIST: the command-line tool loads
//! the splits and passes the encoder in.
//!
//! Devices: the codes come from whatever [`EncodeFn`] computes them, so a model on any backend
//! (e.g. `SparseCoder<Cuda>`) encodes on its device; the classifiers themselves (the linear
//! layer, and the `lista-raw` baseline's small LISTA) train on the CPU ([`Cpu`]): a
//! `(n, 128) x (128, 10)` layer on at most a few thousand samples is too small to gain from a
//! GPU.

use ndarray::{Array2, ArrayView2, Axis, s};
use rand_chacha::ChaCha8Rng;

use std::path::{Path, PathBuf};

use crate::backend::{Backend, Cpu};
use crate::data::DataSpec;
use crate::data::sampling::permutation;
use crate::error::{Error, Result};
use crate::model::encoder::{Lista, ListaTape};
use crate::model::params::{ListaParams, ParamSet};
use crate::rng::{self, linear_uniform};
use crate::scalar::Scalar;
use crate::scalar::check_finite;
use crate::train::SparseCoder;
use crate::train::optim::{AdamParams, AdamState, adam_step};

/// Rows per forward pass when a LISTA classifier scores a large set (bounds the tape's memory).
const EVAL_CHUNK: usize = 1000;

/// The classifier's training hyper-parameters (Adam's betas and eps are PyTorch's defaults,
/// 0.9, 0.999 and 1e-8).
///
/// | parameter | default (the protocol) | valid |
/// |---|---|---|
/// | `lr` | 1e-3 | finite, `> 0` |
/// | `batch_size` | 250 | `>= 1` |
/// | `epochs` | 100 | `>= 1` |
/// | `seed` | 0 | any |
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassifyParams {
    /// Adam's learning rate.
    pub lr: f64,
    /// Samples per training batch.
    pub batch_size: usize,
    /// Epochs to run (all of them; the best one by validation loss is kept).
    pub epochs: usize,
    /// Seed of the initialisation and the shuffles. [`run_protocol`] runs the seeds
    /// `seed, seed + 1, ...`.
    pub seed: u64,
}

impl Default for ClassifyParams {
    fn default() -> Self {
        ClassifyParams {
            lr: 1e-3,
            batch_size: 250,
            epochs: 100,
            seed: 0,
        }
    }
}

impl ClassifyParams {
    /// Checks every value's range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first bad value.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::param("lr", self.lr, "must be finite and > 0"));
        }
        if self.batch_size == 0 {
            return Err(Error::param("batch_size", 0, "must be at least 1"));
        }
        if self.epochs == 0 {
            return Err(Error::param("epochs", 0, "must be at least 1"));
        }
        Ok(())
    }
}

/// The per-epoch losses of a training run and the epoch whose weights were kept.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct History {
    /// Mean training loss of each epoch (over its batches, weighted by their sizes, as the
    /// parameters moved).
    pub train_loss: Vec<f64>,
    /// Mean validation loss after each epoch.
    pub val_loss: Vec<f64>,
    /// The epoch (1-based) with the lowest validation loss (the first one on a tie): the
    /// returned weights are that epoch's.
    pub best_epoch: usize,
    /// Its validation loss, `val_loss[best_epoch - 1]`.
    pub best_val_loss: f64,
}

/// A trained model and how its training went.
#[derive(Debug)]
pub struct Fit<M> {
    /// The model, with the weights of the epoch of lowest validation loss.
    pub model: M,
    /// The losses per epoch.
    pub history: History,
}

/// The dimensions of a LISTA encoder (for the `lista-raw` baseline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListaDims {
    /// Code dimension `l`.
    pub code_dim: usize,
    /// Unrolled iterations `L`.
    pub n_iter: usize,
}

// ---- input checks -------------------------------------------------------------------------

/// Checks a labelled set: non-empty, as many labels as rows, `dim` features when given, labels
/// below `n_classes`, finite features.
fn check_set<F: Scalar>(
    what: &str,
    x: &ArrayView2<'_, F>,
    labels: &[usize],
    n_classes: usize,
    dim: Option<usize>,
) -> Result<()> {
    if x.nrows() == 0 || x.ncols() == 0 {
        return Err(Error::shape(
            what,
            format!(
                "features are {:?}: needs at least one sample and one feature",
                x.dim()
            ),
        ));
    }
    if labels.len() != x.nrows() {
        return Err(Error::shape(
            what,
            format!(
                "features have {} rows but there are {} labels",
                x.nrows(),
                labels.len()
            ),
        ));
    }
    if let Some(d) = dim
        && x.ncols() != d
    {
        return Err(Error::shape(
            what,
            format!(
                "features are {:?}, expected {d} columns (the classifier's input dimension)",
                x.dim()
            ),
        ));
    }
    check_labels(what, labels.iter().copied(), n_classes)?;
    check_finite(&format!("{what} features"), x)
}

fn check_labels(what: &str, labels: impl Iterator<Item = usize>, n_classes: usize) -> Result<()> {
    for (index, label) in labels.enumerate() {
        if label >= n_classes {
            return Err(Error::InvalidLabel {
                what: format!("{what} labels"),
                index,
                label,
                n_classes,
            });
        }
    }
    Ok(())
}

fn check_n_classes(n_classes: usize) -> Result<()> {
    if n_classes < 2 {
        return Err(Error::param(
            "n_classes",
            n_classes,
            "a classifier needs at least two classes",
        ));
    }
    Ok(())
}

fn check_k(k: usize) -> Result<()> {
    if k == 0 {
        return Err(Error::param("k", 0, "top-k accuracy needs k >= 1"));
    }
    Ok(())
}

// ---- softmax cross-entropy ----------------------------------------------------------------

/// `sum_i [logsumexp(A_i) - A_{i, y_i}]` over the rows of `logits` (in `f64`), and, when `grad`
/// is given as `(dA, scale)`, `dA <- scale * (softmax(A) - onehot(y))`. Labels must be checked.
/// A non-finite logit gives a non-finite sum.
fn xent_sum<F: Scalar>(
    logits: &ArrayView2<'_, F>,
    labels: &[usize],
    mut grad: Option<(&mut Array2<F>, f64)>,
) -> f64 {
    let mut total = 0.0f64;
    for (i, row) in logits.outer_iter().enumerate() {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v.f()));
        let sum: f64 = row.iter().map(|&v| (v.f() - max).exp()).sum();
        let lse = max + sum.ln();
        let y = labels[i];
        total += lse - row[y].f();
        if let Some((d, scale)) = grad.as_mut() {
            for (j, (dv, &v)) in d.row_mut(i).iter_mut().zip(row.iter()).enumerate() {
                let p = (v.f() - lse).exp() - if j == y { 1.0 } else { 0.0 };
                *dv = F::c(*scale * p);
            }
        }
    }
    total
}

/// The rank of the true class in a row of logits: the number of classes with a larger logit,
/// or an equal one at a lower index (a stable descending sort), so that ties never count twice;
/// a NaN counts as larger, and a NaN true logit ranks last.
fn rank_of_true<F: Scalar>(row: ndarray::ArrayView1<'_, F>, y: usize) -> usize {
    let t = row[y];
    if t.is_nan() {
        return usize::MAX;
    }
    row.iter()
        .enumerate()
        .filter(|&(j, &v)| v > t || (v == t && j < y) || (v.is_nan() && j != y))
        .count()
}

/// Top-`k` accuracy of `logits` `(n, C)` against `labels`: the fraction of rows whose true
/// class is among the `k` largest logits (ties broken towards the lower class index; a NaN
/// logit counts as larger than the true class's, a NaN true logit as a miss). `k >= C` gives 1
/// for finite logits.
///
/// # Errors
/// [`Error::Shape`] for an empty set or a label count other than `n`; [`Error::InvalidLabel`]
/// for a label `>= C`; [`Error::InvalidParameter`] for `k = 0`.
pub fn accuracy_topk<F: Scalar>(
    logits: ArrayView2<'_, F>,
    labels: &[usize],
    k: usize,
) -> Result<f64> {
    check_k(k)?;
    if logits.nrows() == 0 || labels.len() != logits.nrows() {
        return Err(Error::shape(
            "accuracy: logits",
            format!(
                "are {:?} with {} labels: needs one label per row and at least one row",
                logits.dim(),
                labels.len()
            ),
        ));
    }
    check_labels("accuracy", labels.iter().copied(), logits.ncols())?;
    Ok(topk_unchecked(&logits, labels, k))
}

fn topk_unchecked<F: Scalar>(logits: &ArrayView2<'_, F>, labels: &[usize], k: usize) -> f64 {
    let hits = logits
        .outer_iter()
        .zip(labels)
        .filter(|(row, y)| rank_of_true(row.view(), **y) < k)
        .count();
    hits as f64 / labels.len().max(1) as f64
}

fn argmax<F: Scalar>(row: ndarray::ArrayView1<'_, F>) -> usize {
    let mut best = 0;
    for (j, &v) in row.iter().enumerate() {
        if v > row[best] || (row[best].is_nan() && !v.is_nan()) {
            best = j;
        }
    }
    best
}

// ---- the linear classifier ----------------------------------------------------------------

/// A linear layer with bias, `logits = X W^T + b`: `W` `(C, d)` as PyTorch's `nn.Linear`
/// stores it, `b` `(1, C)`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearClassifier<F: Scalar = f32> {
    params: LinearParams<Array2<F>>,
}

/// A linear layer's parameters (or anything shaped like them): `W` `(C, d)` and `b` `(1, C)`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearParams<T> {
    /// `W` `(C, d)`.
    pub weight: T,
    /// `b` `(1, C)`.
    pub bias: T,
}

impl<T> LinearParams<T> {
    /// The same structure with `f` applied to every value.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> LinearParams<U> {
        LinearParams {
            weight: f(&self.weight),
            bias: f(&self.bias),
        }
    }
}

impl<T> ParamSet<T> for LinearParams<T> {
    fn named(&self) -> Vec<(&'static str, &T)> {
        vec![("W", &self.weight), ("b", &self.bias)]
    }

    fn named_mut(&mut self) -> Vec<(&'static str, &mut T)> {
        vec![("W", &mut self.weight), ("b", &mut self.bias)]
    }
}

impl<F: Scalar> LinearClassifier<F> {
    /// PyTorch's default initialisation from `rng`: `W`, then `b`, each uniform in
    /// `±1/sqrt(input_dim)`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for `input_dim = 0` or fewer than two classes.
    pub fn init(input_dim: usize, n_classes: usize, rng: &mut ChaCha8Rng) -> Result<Self> {
        check_n_classes(n_classes)?;
        if input_dim == 0 {
            return Err(Error::param("input_dim", 0, "must be at least 1"));
        }
        let w = linear_uniform::<F>(rng, n_classes, input_dim, input_dim);
        let b = linear_uniform::<F>(rng, 1, n_classes, input_dim);
        Ok(LinearClassifier {
            params: LinearParams { weight: w, bias: b },
        })
    }

    /// A classifier from its weight `W` `(C, d)` and bias `b` (`C` values, one row or column).
    ///
    /// # Errors
    /// [`Error::Shape`] for inconsistent shapes; [`Error::NonFiniteInput`];
    /// [`Error::InvalidParameter`] for fewer than two classes.
    pub fn from_params(weight: Array2<F>, bias: Array2<F>) -> Result<Self> {
        let (c, d) = weight.dim();
        check_n_classes(c)?;
        if d == 0 || bias.len() != c || !(bias.nrows() == 1 || bias.ncols() == 1) {
            return Err(Error::shape(
                "linear classifier",
                format!(
                    "W is {:?} and b {:?}: expected W (C, d) with d >= 1 and C bias values",
                    weight.dim(),
                    bias.dim()
                ),
            ));
        }
        check_finite("classifier W", &weight)?;
        check_finite("classifier b", &bias)?;
        let bias = Array2::from_shape_vec((1, c), bias.iter().copied().collect())
            .map_err(|e| Error::shape("classifier b", e.to_string()))?;
        Ok(LinearClassifier {
            params: LinearParams { weight, bias },
        })
    }

    /// The weight `W` `(C, d)`.
    pub fn weight(&self) -> &Array2<F> {
        &self.params.weight
    }

    /// The bias `b` `(1, C)`.
    pub fn bias(&self) -> &Array2<F> {
        &self.params.bias
    }

    /// The input dimension `d`.
    pub fn input_dim(&self) -> usize {
        self.params.weight.ncols()
    }

    /// The number of classes `C`.
    pub fn n_classes(&self) -> usize {
        self.params.weight.nrows()
    }

    fn check_x(&self, what: &str, x: &ArrayView2<'_, F>) -> Result<()> {
        if x.ncols() != self.input_dim() {
            return Err(Error::shape(
                what,
                format!(
                    "features are {:?}, the classifier takes {} columns",
                    x.dim(),
                    self.input_dim()
                ),
            ));
        }
        check_finite(&format!("{what} features"), x)
    }

    fn check_xy(&self, what: &str, x: &ArrayView2<'_, F>, labels: &[usize]) -> Result<()> {
        check_set(what, x, labels, self.n_classes(), Some(self.input_dim()))
    }

    /// One GEMM: `X W^T + b`.
    fn logits_unchecked(&self, x: &ArrayView2<'_, F>) -> Array2<F> {
        let mut a = Array2::zeros((x.nrows(), self.n_classes()));
        ndarray::linalg::general_mat_mul(F::one(), x, &self.params.weight.t(), F::zero(), &mut a);
        let b = self.params.bias.row(0);
        for mut row in a.outer_iter_mut() {
            row.zip_mut_with(&b, |v, &c| *v = *v + c);
        }
        a
    }

    /// The logits `X W^T + b` `(n, C)` of the rows of `x` `(n, d)`.
    ///
    /// # Errors
    /// [`Error::Shape`] / [`Error::NonFiniteInput`] for bad input.
    pub fn logits(&self, x: ArrayView2<'_, F>) -> Result<Array2<F>> {
        self.check_x("classifier input", &x)?;
        Ok(self.logits_unchecked(&x))
    }

    /// The predicted class (largest logit, the lowest index on a tie) of each row of `x`.
    ///
    /// # Errors
    /// As [`LinearClassifier::logits`].
    pub fn predict(&self, x: ArrayView2<'_, F>) -> Result<Vec<usize>> {
        Ok(self.logits(x)?.outer_iter().map(argmax).collect())
    }

    /// Top-`k` accuracy on `(x, labels)` (see [`accuracy_topk`]).
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::InvalidLabel`], [`Error::NonFiniteInput`] for bad input;
    /// [`Error::InvalidParameter`] for `k = 0`.
    pub fn accuracy_topk(&self, x: ArrayView2<'_, F>, labels: &[usize], k: usize) -> Result<f64> {
        check_k(k)?;
        self.check_xy("accuracy", &x, labels)?;
        Ok(topk_unchecked(&self.logits_unchecked(&x).view(), labels, k))
    }

    /// The mean softmax cross-entropy on `(x, labels)`, accumulated in `f64`.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::InvalidLabel`], [`Error::NonFiniteInput`] for bad input.
    pub fn loss(&self, x: ArrayView2<'_, F>, labels: &[usize]) -> Result<f64> {
        self.check_xy("loss", &x, labels)?;
        Ok(self.loss_unchecked(&x, labels))
    }

    fn loss_unchecked(&self, x: &ArrayView2<'_, F>, labels: &[usize]) -> f64 {
        xent_sum(&self.logits_unchecked(x).view(), labels, None) / x.nrows() as f64
    }

    /// The mean softmax cross-entropy on `(x, labels)` and its gradients `(dW, db)` (shaped like
    /// `W` and `b`).
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::InvalidLabel`], [`Error::NonFiniteInput`] for bad input.
    pub fn loss_grads(
        &self,
        x: ArrayView2<'_, F>,
        labels: &[usize],
    ) -> Result<(f64, Array2<F>, Array2<F>)> {
        self.check_xy("loss", &x, labels)?;
        let mut g = self.params.map(|a| Array2::zeros(a.dim()));
        let loss = self.batch_loss_grads(&x, labels, &mut g, None);
        Ok((loss, g.weight, g.bias))
    }

    /// Mean loss over the batch, `grads <- (dW, db)`; `d_x`, when given `(n, d)`, receives
    /// `dA W`. Inputs must be checked.
    fn batch_loss_grads(
        &self,
        x: &ArrayView2<'_, F>,
        labels: &[usize],
        grads: &mut LinearParams<Array2<F>>,
        d_x: Option<&mut Array2<F>>,
    ) -> f64 {
        let n = x.nrows();
        let logits = self.logits_unchecked(x);
        let mut d_a = Array2::zeros(logits.dim());
        let loss = xent_sum(&logits.view(), labels, Some((&mut d_a, 1.0 / n as f64))) / n as f64;
        ndarray::linalg::general_mat_mul(F::one(), &d_a.t(), x, F::zero(), &mut grads.weight);
        grads
            .bias
            .assign(&d_a.sum_axis(Axis(0)).insert_axis(Axis(0)));
        if let Some(d_x) = d_x {
            ndarray::linalg::general_mat_mul(F::one(), &d_a, &self.params.weight, F::zero(), d_x);
        }
        loss
    }
}

// ---- LISTA + linear, trained jointly ------------------------------------------------------

/// A LISTA encoder followed by a linear layer: `logits = E(X) W^T + b`, trained end to end
/// (the `lista-raw` baseline).
pub struct ListaClassifier<F: Scalar = f32> {
    encoder: Lista<F, Cpu>,
    head: LinearClassifier<F>,
}

/// Tapes of a LISTA encoder, one per batch size met (a training run meets at most four: the
/// batch, the last partial batch, the evaluation chunk and its remainder).
struct TapeCache<F: Scalar> {
    tapes: Vec<ListaTape<Array2<F>>>,
}

impl<F: Scalar> TapeCache<F> {
    fn new() -> Self {
        TapeCache { tapes: Vec::new() }
    }

    fn get(&mut self, enc: &Lista<F, Cpu>, n: usize) -> Result<&mut ListaTape<Array2<F>>> {
        let i = match self.tapes.iter().position(|t| t.batch_size() == n) {
            Some(i) => i,
            None => {
                self.tapes.push(enc.tape(&Cpu, n)?);
                self.tapes.len() - 1
            }
        };
        Ok(&mut self.tapes[i])
    }
}

impl<F: Scalar> ListaClassifier<F> {
    /// A randomly initialised encoder (`Lista::init`, drawing `U` then `S`) and linear layer
    /// (`W` then `b`, fan-in `code_dim`), in that order from `rng`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a zero dimension or fewer than two classes.
    pub fn init(
        input_dim: usize,
        dims: ListaDims,
        n_classes: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        check_n_classes(n_classes)?;
        let encoder = Lista::init(&Cpu, input_dim, dims.code_dim, dims.n_iter, rng)?;
        let head = LinearClassifier::init(dims.code_dim, n_classes, rng)?;
        Ok(ListaClassifier { encoder, head })
    }

    /// A classifier from an encoder and a linear layer on its codes.
    ///
    /// # Errors
    /// [`Error::Shape`] if the layer's input dimension is not the encoder's code dimension.
    pub fn from_parts(encoder: Lista<F, Cpu>, head: LinearClassifier<F>) -> Result<Self> {
        if head.input_dim() != encoder.code_dim() {
            return Err(Error::shape(
                "LISTA classifier",
                format!(
                    "the linear layer takes {} inputs, the encoder gives {} codes",
                    head.input_dim(),
                    encoder.code_dim()
                ),
            ));
        }
        Ok(ListaClassifier { encoder, head })
    }

    /// The encoder.
    pub fn encoder(&self) -> &Lista<F, Cpu> {
        &self.encoder
    }

    /// The linear layer on the codes.
    pub fn head(&self) -> &LinearClassifier<F> {
        &self.head
    }

    /// The input dimension `d`.
    pub fn input_dim(&self) -> usize {
        self.encoder.input_dim()
    }

    /// The number of classes.
    pub fn n_classes(&self) -> usize {
        self.head.n_classes()
    }

    fn check_x(&self, what: &str, x: &ArrayView2<'_, F>) -> Result<()> {
        if x.ncols() != self.input_dim() {
            return Err(Error::shape(
                what,
                format!(
                    "features are {:?}, the encoder takes {} columns",
                    x.dim(),
                    self.input_dim()
                ),
            ));
        }
        check_finite(&format!("{what} features"), x)
    }

    /// Codes then logits of `x`, in chunks; the codes only when `logits` is false.
    fn forward_chunks(
        &self,
        tapes: &mut TapeCache<F>,
        x: &ArrayView2<'_, F>,
        logits: bool,
    ) -> Result<Array2<F>> {
        let n = x.nrows();
        let width = if logits {
            self.n_classes()
        } else {
            self.encoder.code_dim()
        };
        let mut out = Array2::zeros((n, width));
        let mut start = 0;
        while start < n {
            let end = (start + EVAL_CHUNK).min(n);
            let y = x.slice(s![start..end, ..]).to_owned();
            let tape = tapes.get(&self.encoder, end - start)?;
            let z = self.encoder.forward(&Cpu, &y, tape)?;
            let mut dst = out.slice_mut(s![start..end, ..]);
            if logits {
                dst.assign(&self.head.logits_unchecked(&z.view()));
            } else {
                dst.assign(z);
            }
            start = end;
        }
        Ok(out)
    }

    /// The encoder's codes `E(X)` `(n, l)`.
    ///
    /// # Errors
    /// [`Error::Shape`] / [`Error::NonFiniteInput`] for bad input.
    pub fn codes(&self, x: ArrayView2<'_, F>) -> Result<Array2<F>> {
        self.check_x("classifier input", &x)?;
        self.forward_chunks(&mut TapeCache::new(), &x, false)
    }

    /// The logits `E(X) W^T + b` `(n, C)`.
    ///
    /// # Errors
    /// [`Error::Shape`] / [`Error::NonFiniteInput`] for bad input.
    pub fn logits(&self, x: ArrayView2<'_, F>) -> Result<Array2<F>> {
        self.check_x("classifier input", &x)?;
        self.forward_chunks(&mut TapeCache::new(), &x, true)
    }

    /// The predicted class of each row of `x` (the lowest index on a tie).
    ///
    /// # Errors
    /// As [`ListaClassifier::logits`].
    pub fn predict(&self, x: ArrayView2<'_, F>) -> Result<Vec<usize>> {
        Ok(self.logits(x)?.outer_iter().map(argmax).collect())
    }

    /// Top-`k` accuracy on `(x, labels)` (see [`accuracy_topk`]).
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::InvalidLabel`], [`Error::NonFiniteInput`] for bad input;
    /// [`Error::InvalidParameter`] for `k = 0`.
    pub fn accuracy_topk(&self, x: ArrayView2<'_, F>, labels: &[usize], k: usize) -> Result<f64> {
        check_k(k)?;
        check_set(
            "accuracy",
            &x,
            labels,
            self.n_classes(),
            Some(self.input_dim()),
        )?;
        let a = self.forward_chunks(&mut TapeCache::new(), &x, true)?;
        Ok(topk_unchecked(&a.view(), labels, k))
    }

    /// The mean softmax cross-entropy on `(x, labels)`.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::InvalidLabel`], [`Error::NonFiniteInput`] for bad input.
    pub fn loss(&self, x: ArrayView2<'_, F>, labels: &[usize]) -> Result<f64> {
        check_set("loss", &x, labels, self.n_classes(), Some(self.input_dim()))?;
        self.loss_unchecked(&mut TapeCache::new(), &x, labels)
    }

    fn loss_unchecked(
        &self,
        tapes: &mut TapeCache<F>,
        x: &ArrayView2<'_, F>,
        labels: &[usize],
    ) -> Result<f64> {
        let a = self.forward_chunks(tapes, x, true)?;
        Ok(xent_sum(&a.view(), labels, None) / x.nrows() as f64)
    }

    /// The mean softmax cross-entropy on `(x, labels)` and its gradients with respect to the
    /// encoder's parameters (through [`Lista::backward_from`]) and the linear layer's, in one
    /// batch.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::InvalidLabel`], [`Error::NonFiniteInput`] for bad input.
    pub fn loss_grads(
        &self,
        x: ArrayView2<'_, F>,
        labels: &[usize],
    ) -> Result<(f64, ListaGrads<F>)> {
        check_set("loss", &x, labels, self.n_classes(), Some(self.input_dim()))?;
        let mut grads = self.zero_grads();
        let loss =
            self.batch_loss_grads(&mut TapeCache::new(), &x.to_owned(), labels, &mut grads)?;
        Ok((loss, grads))
    }

    fn zero_grads(&self) -> ListaGrads<F> {
        (
            self.encoder.params().map(|a| Array2::zeros(a.dim())),
            self.head.params.map(|a| Array2::zeros(a.dim())),
        )
    }

    /// Mean loss over the batch; `grads <- (encoder's, layer's)`.
    fn batch_loss_grads(
        &self,
        tapes: &mut TapeCache<F>,
        x: &Array2<F>,
        labels: &[usize],
        grads: &mut ListaGrads<F>,
    ) -> Result<f64> {
        let n = x.nrows();
        let tape = tapes.get(&self.encoder, n)?;
        let z = self.encoder.forward(&Cpu, x, tape)?.clone();
        let mut d_z = Array2::zeros(z.dim());
        let (g_enc, g_head) = grads;
        let loss = self
            .head
            .batch_loss_grads(&z.view(), labels, g_head, Some(&mut d_z));
        self.encoder.backward_from(&Cpu, x, tape, &d_z, g_enc)?;
        Ok(loss)
    }
}

// ---- the training loop --------------------------------------------------------------------

/// The gradients of a [`ListaClassifier`]: the encoder's and the linear layer's.
pub type ListaGrads<F> = (ListaParams<Array2<F>>, LinearParams<Array2<F>>);

/// What the training loop needs of a model: a snapshot of its parameters, its Adam groups, a
/// batch's loss and gradients, and the loss of a whole set. Inputs reaching these are already
/// checked.
trait Trainable<F: Scalar> {
    type Workspace;
    /// The parameters (and the gradients, shaped like them).
    type Params: Clone;
    /// Adam's states, one per group.
    type Opt;
    fn workspace(&self) -> Self::Workspace;
    fn snapshot(&self) -> Self::Params;
    fn restore(&mut self, p: &Self::Params);
    fn zero_grads(&self) -> Self::Params;
    fn new_opt(&self) -> Self::Opt;
    fn adam(&mut self, hp: &AdamParams, grads: &Self::Params, opt: &mut Self::Opt) -> Result<()>;
    fn batch(
        &self,
        ws: &mut Self::Workspace,
        x: &Array2<F>,
        labels: &[usize],
        grads: &mut Self::Params,
    ) -> Result<f64>;
    fn set_loss(
        &self,
        ws: &mut Self::Workspace,
        x: &ArrayView2<'_, F>,
        labels: &[usize],
    ) -> Result<f64>;
}

fn zero_state<P: Clone>(zeros: P) -> AdamState<P> {
    AdamState::new(zeros.clone(), zeros)
}

impl<F: Scalar> Trainable<F> for LinearClassifier<F> {
    type Workspace = ();
    type Params = LinearParams<Array2<F>>;
    type Opt = AdamState<LinearParams<Array2<F>>>;
    fn workspace(&self) {}
    fn snapshot(&self) -> Self::Params {
        self.params.clone()
    }
    fn restore(&mut self, p: &Self::Params) {
        self.params.clone_from(p);
    }
    fn zero_grads(&self) -> Self::Params {
        self.params.map(|a| Array2::zeros(a.dim()))
    }
    fn new_opt(&self) -> Self::Opt {
        zero_state(self.zero_grads())
    }
    fn adam(&mut self, hp: &AdamParams, grads: &Self::Params, opt: &mut Self::Opt) -> Result<()> {
        adam_step(&Cpu, hp, hp.lr, &mut self.params, grads, opt)
    }
    fn batch(
        &self,
        _: &mut (),
        x: &Array2<F>,
        labels: &[usize],
        grads: &mut Self::Params,
    ) -> Result<f64> {
        Ok(self.batch_loss_grads(&x.view(), labels, grads, None))
    }
    fn set_loss(&self, _: &mut (), x: &ArrayView2<'_, F>, labels: &[usize]) -> Result<f64> {
        Ok(self.loss_unchecked(x, labels))
    }
}

impl<F: Scalar> Trainable<F> for ListaClassifier<F> {
    type Workspace = TapeCache<F>;
    type Params = ListaGrads<F>;
    type Opt = (
        AdamState<ListaParams<Array2<F>>>,
        AdamState<LinearParams<Array2<F>>>,
    );
    fn workspace(&self) -> TapeCache<F> {
        TapeCache::new()
    }
    fn snapshot(&self) -> Self::Params {
        (self.encoder.params().clone(), self.head.params.clone())
    }
    fn restore(&mut self, p: &Self::Params) {
        self.encoder.params_mut().clone_from(&p.0);
        self.head.params.clone_from(&p.1);
    }
    fn zero_grads(&self) -> Self::Params {
        ListaClassifier::zero_grads(self)
    }
    fn new_opt(&self) -> Self::Opt {
        let (e, h) = ListaClassifier::zero_grads(self);
        (zero_state(e), zero_state(h))
    }
    fn adam(&mut self, hp: &AdamParams, grads: &Self::Params, opt: &mut Self::Opt) -> Result<()> {
        adam_step(
            &Cpu,
            hp,
            hp.lr,
            self.encoder.params_mut(),
            &grads.0,
            &mut opt.0,
        )?;
        adam_step(&Cpu, hp, hp.lr, &mut self.head.params, &grads.1, &mut opt.1)
    }
    fn batch(
        &self,
        ws: &mut TapeCache<F>,
        x: &Array2<F>,
        labels: &[usize],
        grads: &mut Self::Params,
    ) -> Result<f64> {
        self.batch_loss_grads(ws, x, labels, grads)
    }
    fn set_loss(
        &self,
        ws: &mut TapeCache<F>,
        x: &ArrayView2<'_, F>,
        labels: &[usize],
    ) -> Result<f64> {
        self.loss_unchecked(ws, x, labels)
    }
}

/// The loop of the module docs. Inputs must be checked.
fn fit<F: Scalar, M: Trainable<F>>(
    mut model: M,
    train: (ArrayView2<'_, F>, &[usize]),
    val: (ArrayView2<'_, F>, &[usize]),
    p: &ClassifyParams,
    rng: &mut ChaCha8Rng,
) -> Result<Fit<M>> {
    let (x, y) = train;
    let (n, d) = x.dim();
    let bs = p.batch_size.min(n);
    let mut ws = model.workspace();
    let mut grads = model.zero_grads();
    let mut opt = model.new_opt();
    let adam = AdamParams::new(p.lr);
    let mut best = model.snapshot();
    // Batch buffers: the full batch and the last partial one.
    let mut bufs: Vec<Array2<F>> = Vec::new();
    let mut labels = Vec::with_capacity(bs);
    let mut history = History {
        train_loss: Vec::with_capacity(p.epochs),
        val_loss: Vec::with_capacity(p.epochs),
        best_epoch: 0,
        best_val_loss: f64::INFINITY,
    };
    for epoch in 0..p.epochs {
        let order = permutation(n, rng);
        let mut sum = 0.0f64;
        for rows in order.chunks(bs) {
            let m = rows.len();
            let i = match bufs.iter().position(|b| b.nrows() == m) {
                Some(i) => i,
                None => {
                    bufs.push(Array2::zeros((m, d)));
                    bufs.len() - 1
                }
            };
            let xb = &mut bufs[i];
            labels.clear();
            for (k, &r) in rows.iter().enumerate() {
                xb.row_mut(k).assign(&x.row(r));
                labels.push(y[r]);
            }
            let loss = model.batch(&mut ws, xb, &labels, &mut grads)?;
            if !loss.is_finite() {
                return Err(Error::Diverged {
                    algorithm: "classifier training",
                    iteration: epoch,
                    term: "training loss".into(),
                });
            }
            sum += loss * m as f64;
            model.adam(&adam, &grads, &mut opt)?;
        }
        let val_loss = model.set_loss(&mut ws, &val.0, val.1)?;
        if !val_loss.is_finite() {
            return Err(Error::Diverged {
                algorithm: "classifier training",
                iteration: epoch,
                term: "validation loss".into(),
            });
        }
        history.train_loss.push(sum / n as f64);
        history.val_loss.push(val_loss);
        if val_loss < history.best_val_loss {
            history.best_val_loss = val_loss;
            history.best_epoch = epoch + 1;
            best = model.snapshot();
        }
    }
    model.restore(&best);
    Ok(Fit { model, history })
}

fn check_train_val<F: Scalar>(
    train: (&ArrayView2<'_, F>, &[usize]),
    val: (&ArrayView2<'_, F>, &[usize]),
    n_classes: usize,
    params: &ClassifyParams,
) -> Result<()> {
    params.validate()?;
    check_n_classes(n_classes)?;
    check_set("training set", train.0, train.1, n_classes, None)?;
    check_set(
        "validation set",
        val.0,
        val.1,
        n_classes,
        Some(train.0.ncols()),
    )
}

/// Trains a [`LinearClassifier`] on `(train_x, train_y)`, keeping the weights of the epoch with
/// the lowest loss on `(val_x, val_y)` (see the module docs for the loop). Labels are
/// `0..n_classes`.
///
/// # Errors
/// [`Error::InvalidParameter`] for bad `params` or fewer than two classes; [`Error::Shape`] for
/// an empty set, a label count other than the number of rows, or validation features of another
/// width; [`Error::InvalidLabel`]; [`Error::NonFiniteInput`] naming the set and the element;
/// [`Error::Diverged`] if a loss becomes non-finite.
pub fn train_linear<F: Scalar>(
    train_x: ArrayView2<'_, F>,
    train_y: &[usize],
    val_x: ArrayView2<'_, F>,
    val_y: &[usize],
    n_classes: usize,
    params: &ClassifyParams,
) -> Result<Fit<LinearClassifier<F>>> {
    check_train_val((&train_x, train_y), (&val_x, val_y), n_classes, params)?;
    let mut rng = rng::rng(params.seed);
    let model = LinearClassifier::init(train_x.ncols(), n_classes, &mut rng)?;
    fit(model, (train_x, train_y), (val_x, val_y), params, &mut rng)
}

/// Trains a randomly initialised LISTA encoder of dimensions `dims` and a linear layer on its
/// codes jointly, end to end, on `(train_x, train_y)` (the `lista-raw` baseline), keeping the
/// weights of the epoch with the lowest validation loss. Encoder and layer are two Adam groups
/// with the same hyper-parameters.
///
/// # Errors
/// As [`train_linear`]; also [`Error::InvalidParameter`] for a zero code dimension.
pub fn train_lista_linear<F: Scalar>(
    train_x: ArrayView2<'_, F>,
    train_y: &[usize],
    val_x: ArrayView2<'_, F>,
    val_y: &[usize],
    n_classes: usize,
    dims: ListaDims,
    params: &ClassifyParams,
) -> Result<Fit<ListaClassifier<F>>> {
    check_train_val((&train_x, train_y), (&val_x, val_y), n_classes, params)?;
    let mut rng = rng::rng(params.seed);
    let model = ListaClassifier::init(train_x.ncols(), dims, n_classes, &mut rng)?;
    fit(model, (train_x, train_y), (val_x, val_y), params, &mut rng)
}

// ---- the protocol -------------------------------------------------------------------------

/// The indices of the first `n` samples of each class, in the order of `labels` (so the result
/// is increasing). The classes are `0..=max(labels)`.
///
/// # Errors
/// [`Error::InvalidParameter`] for `n = 0` or when a class has fewer than `n` samples (naming
/// it and its count); [`Error::Shape`] for no labels.
pub fn first_per_class(labels: &[u8], n: usize) -> Result<Vec<usize>> {
    let n_classes = match labels.iter().max() {
        Some(&m) => m as usize + 1,
        None => return Err(Error::shape("first_per_class: labels", "there are none")),
    };
    first_per_class_of(labels, n, n_classes)
}

fn first_per_class_of(labels: &[u8], n: usize, n_classes: usize) -> Result<Vec<usize>> {
    if n == 0 {
        return Err(Error::param(
            "per-class count",
            0,
            "must be at least 1 sample per class",
        ));
    }
    let mut counts = vec![0usize; n_classes];
    let mut out = Vec::with_capacity(n.saturating_mul(n_classes).min(labels.len()));
    let mut full = 0;
    for (i, &c) in labels.iter().enumerate() {
        let c = c as usize;
        if c >= n_classes {
            return Err(Error::InvalidLabel {
                what: "training labels".into(),
                index: i,
                label: c,
                n_classes,
            });
        }
        if counts[c] < n {
            counts[c] += 1;
            out.push(i);
            if counts[c] == n {
                full += 1;
                if full == n_classes {
                    break;
                }
            }
        }
    }
    if let Some((c, &k)) = counts.iter().enumerate().find(|(_, k)| **k < n) {
        return Err(Error::param(
            "per-class count",
            n,
            format!(
                "class {c} has only {k} samples among the {} training labels",
                labels.len()
            ),
        ));
    }
    Ok(out)
}

/// What a classifier is trained on. Names (`codes`, `raw`, `lista-raw`) are serde's, shared
/// with the CLI (a `clap::ValueEnum` derived from these variants, feature `cli`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The linear layer on a trained model's encoder codes.
    Codes,
    /// The linear layer on the raw (normalised) pixels.
    Raw,
    /// A randomly initialised LISTA encoder and the linear layer, trained jointly on the pixels.
    ListaRaw,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 3] = [Method::Codes, Method::Raw, Method::ListaRaw];

    /// The name used in reports and on the command line: `codes`, `raw`, `lista-raw`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Codes => "codes",
            Method::Raw => "raw",
            Method::ListaRaw => "lista-raw",
        }
    }

    /// Parses a name.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] listing the valid names.
    pub fn from_name(name: &str) -> Result<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| Error::param("method", name, "expected codes, raw or lista-raw"))
    }
}

/// One labelled split: features (rows) and their classes.
#[derive(Clone, Copy, Debug)]
pub struct LabelledSplit<'a> {
    /// The raw features, `(n, d)` (MNIST: the normalised pixels).
    pub x: ArrayView2<'a, f32>,
    /// The class of each row.
    pub labels: &'a [u8],
}

/// The three splits of a protocol run.
#[derive(Clone, Copy, Debug)]
pub struct ProtocolData<'a> {
    /// Where the first `N` samples of each class are taken from, in this order.
    pub train: LabelledSplit<'a>,
    /// Model selection (the epoch of lowest loss).
    pub val: LabelledSplit<'a>,
    /// The reported accuracies.
    pub test: LabelledSplit<'a>,
    /// The number of classes (labels are `0..n_classes`).
    pub n_classes: usize,
}

/// What [`run_protocol`] runs.
///
/// | field | protocol default |
/// |---|---|
/// | `methods` | codes, raw, lista-raw |
/// | `per_class` | 1, 2, 5, 10, 20, 50, 100 |
/// | `seeds` | 5 (`params.seed` to `params.seed + 4`) |
/// | `params` | [`ClassifyParams::default`] |
/// | `lista` | `l` 128, `L` 3 (the MNIST models'; use the model's own) |
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProtocolSpec {
    /// The methods, in the order of the report's rows.
    pub methods: Vec<Method>,
    /// The numbers `N` of training samples per class.
    pub per_class: Vec<usize>,
    /// Seeds per `(method, N)`.
    pub seeds: usize,
    /// The training hyper-parameters; `seed` is the first seed.
    pub params: ClassifyParams,
    /// The `lista-raw` encoder's dimensions.
    pub lista: ListaDims,
}

impl Default for ProtocolSpec {
    fn default() -> Self {
        ProtocolSpec {
            methods: Method::ALL.to_vec(),
            per_class: vec![1, 2, 5, 10, 20, 50, 100],
            seeds: 5,
            params: ClassifyParams::default(),
            lista: ListaDims {
                code_dim: 128,
                n_iter: 3,
            },
        }
    }
}

impl ProtocolSpec {
    /// Checks every value's range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first bad value.
    pub fn validate(&self) -> Result<()> {
        self.params.validate()?;
        if self.methods.is_empty() {
            return Err(Error::param("methods", "none", "give at least one method"));
        }
        if self.per_class.is_empty() {
            return Err(Error::param("per_class", "none", "give at least one N"));
        }
        if let Some(&n) = self.per_class.iter().find(|&&n| n == 0) {
            return Err(Error::param("per_class", n, "every N must be at least 1"));
        }
        if self.seeds == 0 {
            return Err(Error::param("seeds", 0, "must be at least 1"));
        }
        if self
            .params
            .seed
            .checked_add(self.seeds as u64 - 1)
            .is_none()
        {
            return Err(Error::param(
                "seed",
                self.params.seed,
                "the seeds seed..seed + seeds - 1 overflow u64",
            ));
        }
        if self.methods.contains(&Method::ListaRaw) && self.lista.code_dim == 0 {
            return Err(Error::param("code_dim", 0, "must be at least 1"));
        }
        Ok(())
    }
}

/// The result of one `(method, N)`: accuracies on the test set over the seeds. Accuracies are
/// fractions in `[0, 1]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassifyRow {
    /// The method.
    pub method: Method,
    /// For `codes` rows, which encoder made the codes (e.g. the model's preset), when the report
    /// compares several; `None` otherwise.
    #[serde(default)]
    pub encoder: Option<String>,
    /// The kind of model behind `encoder` (its preset's name, or the label of a model without
    /// one), set with it by [`ClassifyReport::label_encoder`]: rows of one kind compete in
    /// [`ClassifyReport::select_best_by_kind`]. `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_kind: Option<String>,
    /// When the row was chosen among several encoders of one kind by validation accuracy (the
    /// paper's Figure 9 protocol), the encoder chosen; `None` otherwise.
    #[serde(default)]
    pub selected: Option<String>,
    /// Training samples per class.
    pub per_class: usize,
    /// Training samples in all (`per_class` times the number of classes).
    pub train_size: usize,
    /// The seeds, in the order of the per-seed values.
    pub seeds: Vec<u64>,
    /// Mean top-1 test accuracy over the seeds.
    pub top1_mean: f64,
    /// Sample standard deviation (divisor `seeds - 1`; 0 for one seed) of the top-1 accuracy.
    pub top1_std: f64,
    /// Mean top-3 test accuracy.
    pub top3_mean: f64,
    /// Sample standard deviation of the top-3 accuracy.
    pub top3_std: f64,
    /// Top-1 test accuracy of each seed.
    pub top1: Vec<f64>,
    /// Top-3 test accuracy of each seed.
    pub top3: Vec<f64>,
    /// The kept (lowest validation loss) epoch of each seed, 1-based.
    pub best_epoch: Vec<usize>,
    /// The validation loss at that epoch, per seed.
    pub best_val_loss: Vec<f64>,
    /// Top-1 validation accuracy of the kept weights, per seed.
    #[serde(default)]
    pub val_top1: Vec<f64>,
    /// Mean of `val_top1` (used to choose among encoders).
    #[serde(default)]
    pub val_top1_mean: f64,
    /// Wall time of the row's training and scoring, seconds.
    pub seconds: f64,
}

impl ClassifyRow {
    /// The row's series name: the method, with the encoder for `codes` rows that name one
    /// (`codes (mnist-vdl)`).
    pub fn series(&self) -> String {
        match &self.encoder {
            Some(e) => format!("{} ({e})", self.method.name()),
            None => self.method.name().to_string(),
        }
    }
}

/// The protocol's results: one row per `(method, N)`, methods in the order asked, `N` increasing
/// as given.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassifyReport {
    /// What was run.
    pub spec: ProtocolSpec,
    /// Number of classes.
    pub n_classes: usize,
    /// Validation samples.
    pub n_val: usize,
    /// Test samples.
    pub n_test: usize,
    /// The results.
    pub rows: Vec<ClassifyRow>,
}

impl ClassifyReport {
    /// The paper's Figure 9 protocol for several encoders of each kind (e.g. a λ sweep): among
    /// the rows that `group` puts in one group, keep for each `(method, N)` only the one with
    /// the highest mean validation accuracy (the first on a tie). The kept row's `encoder`
    /// becomes the group's name and `selected` the encoder it came from. Rows for which `group`
    /// returns `None` stay as they are; the order of first appearance is kept.
    pub fn select_best_by_validation(&mut self, group: impl Fn(&ClassifyRow) -> Option<String>) {
        let mut kept: Vec<ClassifyRow> = Vec::with_capacity(self.rows.len());
        let mut groups: Vec<Option<String>> = Vec::with_capacity(self.rows.len());
        for row in self.rows.drain(..) {
            let Some(g) = group(&row) else {
                kept.push(row);
                groups.push(None);
                continue;
            };
            let same = kept.iter().zip(&groups).position(|(k, kg)| {
                kg.as_deref() == Some(g.as_str())
                    && k.method == row.method
                    && k.per_class == row.per_class
            });
            let mut row = row;
            row.selected = row.encoder.take();
            row.encoder = Some(g.clone());
            match same {
                Some(i) if kept[i].val_top1_mean >= row.val_top1_mean => {}
                Some(i) => kept[i] = row,
                None => {
                    kept.push(row);
                    groups.push(Some(g));
                }
            }
        }
        self.rows = kept;
    }
    /// Labels every `codes` row with the encoder that made its codes, `model` read from
    /// `path`, for a report comparing several encoders: the label is the model's preset, λ and
    /// epochs trained (`mnist-vdl λ=0.02 ep200`), or the directory for a model without a
    /// preset; the kind ([`ClassifyRow::encoder_kind`]) is the preset's name (or that label).
    pub fn label_encoder<B: Backend<f32>>(&mut self, model: &SparseCoder<B>, path: &Path) {
        let (label, kind) = match model.params().preset {
            Some(p) => (
                format!(
                    "{} λ={} ep{}",
                    p.name(),
                    model.params().energy.lambda,
                    model.epochs_trained()
                ),
                p.name().to_string(),
            ),
            None => {
                let l = path.display().to_string();
                (l.clone(), l)
            }
        };
        for row in self.rows.iter_mut().filter(|r| r.method == Method::Codes) {
            row.encoder = Some(label.clone());
            row.encoder_kind = Some(kind.clone());
        }
    }

    /// [`ClassifyReport::select_best_by_validation`] over the groups of
    /// [`ClassifyRow::encoder_kind`] (the paper's Figure 9 protocol over a λ sweep: for each
    /// model kind and `N`, the encoder with the best mean validation accuracy).
    pub fn select_best_by_kind(&mut self) {
        self.select_best_by_validation(|r| r.encoder_kind.clone());
    }

    /// Figure 9: top-1 test accuracy (%) against training samples per class (log axis), one line
    /// per method, error bars one standard deviation over seeds.
    pub fn plot(&self, title: &str) -> crate::experiments::figures::LinePlot {
        let mut plot = crate::experiments::figures::LinePlot::new(
            title,
            "training samples per class",
            "top-1 test accuracy (%)",
        );
        plot.log_x = true;
        let mut names: Vec<String> = Vec::new();
        for r in &self.rows {
            if !names.contains(&r.series()) {
                names.push(r.series());
            }
        }
        for name in names {
            let rows: Vec<&ClassifyRow> = self.rows.iter().filter(|r| r.series() == name).collect();
            plot.series.push(crate::experiments::figures::Series {
                label: name,
                points: rows
                    .iter()
                    .map(|r| (r.per_class as f64, 100.0 * r.top1_mean))
                    .collect(),
                err: Some(rows.iter().map(|r| 100.0 * r.top1_std).collect()),
            });
        }
        plot
    }
    /// The rows as CSV with a header: `method, per_class, train_size, seeds, top1_mean, top1_std,
    /// top3_mean, top3_std, top1_per_seed, top3_per_seed, best_epoch_per_seed`; accuracies as
    /// fractions; per-seed lists separated by `;`.
    pub fn to_csv(&self) -> String {
        fn join<T: std::fmt::Display>(v: &[T]) -> String {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(";")
        }
        let mut out = String::from(
            "method,per_class,train_size,seeds,top1_mean,top1_std,top3_mean,top3_std,\
             top1_per_seed,top3_per_seed,best_epoch_per_seed,encoder,val_top1_mean,selected\n",
        );
        for r in &self.rows {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                r.method.name(),
                r.per_class,
                r.train_size,
                r.seeds.len(),
                r.top1_mean,
                r.top1_std,
                r.top3_mean,
                r.top3_std,
                join(&r.top1),
                join(&r.top3),
                join(&r.best_epoch),
                r.encoder.as_deref().unwrap_or(""),
                r.val_top1_mean,
                r.selected.as_deref().unwrap_or("")
            ));
        }
        out
    }

    /// A markdown table: method, N, top-1 and top-3 test accuracy in percent, mean ± std.
    pub fn to_markdown(&self) -> String {
        let mut out =
            String::from("| method | N per class | top-1 (%) | top-3 (%) |\n|---|---|---|---|\n");
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {:.2} ± {:.2} | {:.2} ± {:.2} |\n",
                r.series(),
                r.per_class,
                100.0 * r.top1_mean,
                100.0 * r.top1_std,
                100.0 * r.top3_mean,
                100.0 * r.top3_std
            ));
        }
        out
    }
}

/// Mean and sample standard deviation (divisor `n - 1`; 0 for fewer than two values).
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len();
    if n == 0 {
        return (f64::NAN, 0.0);
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// The MNIST data that the encoders of several models were trained on, `recorded` holding
/// each model's directory and its recorded [`DataSpec`]: its directory and split seed, the same
/// for all (the protocol draws the first `N` images per class from the training split, so the
/// models must share it); `None` for no models.
///
/// # Errors
/// [`Error::InvalidParameter`] naming the model for one trained on other data than MNIST, or
/// on another split seed than the first.
pub fn shared_mnist_split(recorded: &[(PathBuf, DataSpec)]) -> Result<Option<(PathBuf, u64)>> {
    let mut first: Option<(PathBuf, u64)> = None;
    for (model, spec) in recorded {
        let DataSpec::Mnist {
            dir, split_seed, ..
        } = spec
        else {
            return Err(Error::param(
                "model",
                model.display(),
                format!(
                    "classification needs MNIST's labels; the model was trained on {}",
                    serde_json::to_string(spec).unwrap_or_default()
                ),
            ));
        };
        match &first {
            None => first = Some((dir.clone(), *split_seed)),
            Some((_, s0)) if s0 != split_seed => {
                return Err(Error::param(
                    "model",
                    model.display(),
                    format!(
                        "was trained on MNIST split seed {split_seed}, the first model on {s0}: \
                         compare models of one split"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(first)
}

/// An encoder of raw features into codes (e.g. `|y| model.encode(y)` for a
/// [`crate::SparseCoder`]).
pub type EncodeFn<'e> = &'e dyn Fn(&Array2<f32>) -> Result<Array2<f32>>;

fn encode_checked(encoder: EncodeFn<'_>, what: &str, x: &Array2<f32>) -> Result<Array2<f32>> {
    let z = encoder(x)?;
    if z.nrows() != x.nrows() || z.ncols() == 0 {
        return Err(Error::shape(
            format!("encoder codes of the {what}"),
            format!("are {:?} for {} inputs", z.dim(), x.nrows()),
        ));
    }
    check_finite(&format!("encoder codes of the {what}"), &z)?;
    Ok(z)
}

/// Runs the low-data classification protocol (docs/CONVENTIONS.md §8): for each method of `spec`, each
/// `N` and each seed, trains on the first `N` samples of each class of `data.train` (in its
/// order; see [`first_per_class`]), selects the epoch by loss on `data.val`, and scores top-1
/// and top-3 accuracy on `data.test`. `encoder` computes the codes for [`Method::Codes`]; it is
/// called once per split (on the training samples that the largest `N` uses, the validation set
/// and the test set). `on_row` sees each row as it completes (progress).
///
/// # Errors
/// [`Error::InvalidParameter`] for a bad `spec`, a missing encoder for `codes`, or a class with
/// fewer than `max(N)` training samples; [`Error::Shape`], [`Error::InvalidLabel`] and
/// [`Error::NonFiniteInput`] naming the split for bad data; the encoder's errors; the
/// training's ([`train_linear`], [`train_lista_linear`]).
pub fn run_protocol(
    data: &ProtocolData<'_>,
    encoder: Option<EncodeFn<'_>>,
    spec: &ProtocolSpec,
    on_row: &mut dyn FnMut(&ClassifyRow),
) -> Result<ClassifyReport> {
    spec.validate()?;
    check_n_classes(data.n_classes)?;
    if spec.methods.contains(&Method::Codes) && encoder.is_none() {
        return Err(Error::param(
            "method",
            "codes",
            "needs an encoder (a trained model)",
        ));
    }
    let k = data.n_classes;
    let splits = [
        ("training set", &data.train),
        ("validation set", &data.val),
        ("test set", &data.test),
    ];
    let d = data.train.x.ncols();
    for (what, split) in splits {
        let labels: Vec<usize> = split.labels.iter().map(|&c| c as usize).collect();
        check_set(what, &split.x, &labels, k, Some(d))?;
    }
    let max_n = spec.per_class.iter().copied().max().unwrap_or(1);
    // The largest training set; every smaller N's is a subset of it.
    let pool = first_per_class_of(data.train.labels, max_n, k)?;
    let to_usize = |l: &[u8]| l.iter().map(|&c| c as usize).collect::<Vec<_>>();
    let val_y = to_usize(data.val.labels);
    let test_y = to_usize(data.test.labels);
    let pool_x = data.train.x.select(Axis(0), &pool);

    let codes = match (encoder, spec.methods.contains(&Method::Codes)) {
        (Some(enc), true) => {
            let tr = encode_checked(enc, "training set", &pool_x)?;
            let va = encode_checked(enc, "validation set", &data.val.x.to_owned())?;
            let te = encode_checked(enc, "test set", &data.test.x.to_owned())?;
            if va.ncols() != tr.ncols() || te.ncols() != tr.ncols() {
                return Err(Error::shape(
                    "encoder codes",
                    format!(
                        "have {}, {} and {} columns for the training, validation and test sets",
                        tr.ncols(),
                        va.ncols(),
                        te.ncols()
                    ),
                ));
            }
            Some((tr, va, te))
        }
        _ => None,
    };

    let mut rows = Vec::new();
    for &method in &spec.methods {
        let (pool_f, val_f, test_f) = match (method, &codes) {
            (Method::Codes, Some((tr, va, te))) => (tr.view(), va.view(), te.view()),
            (Method::Codes, None) => {
                return Err(Error::param("method", "codes", "needs an encoder"));
            }
            _ => (pool_x.view(), data.val.x, data.test.x),
        };
        for &n in &spec.per_class {
            let t0 = std::time::Instant::now();
            // Positions in the pool of the first n of each class (the pool is in train order).
            let idx = first_per_class_of(
                &pool
                    .iter()
                    .map(|&i| data.train.labels[i])
                    .collect::<Vec<_>>(),
                n,
                k,
            )?;
            let x = pool_f.select(Axis(0), &idx);
            let y: Vec<usize> = idx
                .iter()
                .map(|&i| data.train.labels[pool[i]] as usize)
                .collect();
            let mut row = ClassifyRow {
                method,
                encoder: None,
                encoder_kind: None,
                selected: None,
                per_class: n,
                train_size: idx.len(),
                seeds: Vec::new(),
                top1_mean: 0.0,
                top1_std: 0.0,
                top3_mean: 0.0,
                top3_std: 0.0,
                top1: Vec::new(),
                top3: Vec::new(),
                best_epoch: Vec::new(),
                best_val_loss: Vec::new(),
                val_top1: Vec::new(),
                val_top1_mean: 0.0,
                seconds: 0.0,
            };
            for s in 0..spec.seeds as u64 {
                let seed = spec.params.seed + s;
                let p = ClassifyParams {
                    seed,
                    ..spec.params.clone()
                };
                let (history, logits, val_logits) = match method {
                    Method::Codes | Method::Raw => {
                        let f = train_linear(x.view(), &y, val_f, &val_y, k, &p)?;
                        let v = f.model.logits_unchecked(&val_f);
                        (f.history, f.model.logits_unchecked(&test_f), v)
                    }
                    Method::ListaRaw => {
                        let f = train_lista_linear(x.view(), &y, val_f, &val_y, k, spec.lista, &p)?;
                        let mut cache = TapeCache::new();
                        let a = f.model.forward_chunks(&mut cache, &test_f, true)?;
                        let v = f.model.forward_chunks(&mut cache, &val_f, true)?;
                        (f.history, a, v)
                    }
                };
                row.val_top1
                    .push(topk_unchecked(&val_logits.view(), &val_y, 1));
                row.seeds.push(seed);
                row.top1.push(topk_unchecked(&logits.view(), &test_y, 1));
                row.top3.push(topk_unchecked(&logits.view(), &test_y, 3));
                row.best_epoch.push(history.best_epoch);
                row.best_val_loss.push(history.best_val_loss);
            }
            (row.top1_mean, row.top1_std) = mean_std(&row.top1);
            (row.top3_mean, row.top3_std) = mean_std(&row.top3);
            row.val_top1_mean = mean_std(&row.val_top1).0;
            row.seconds = t0.elapsed().as_secs_f64();
            on_row(&row);
            rows.push(row);
        }
    }
    Ok(ClassifyReport {
        spec: spec.clone(),
        n_classes: k,
        n_val: data.val.x.nrows(),
        n_test: data.test.x.nrows(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn mean_std_is_the_sample_std() {
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!((s - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn topk_ties_count_once() {
        let a = array![[1.0f32, 1.0, 1.0], [0.0, 2.0, 1.0]];
        // row 0: all tied; class 2 ranks third (two lower indices tie), class 0 first
        assert_eq!(topk_unchecked(&a.view(), &[0, 2], 1), 0.5);
        assert_eq!(topk_unchecked(&a.view(), &[2, 0], 2), 0.0);
        assert_eq!(topk_unchecked(&a.view(), &[2, 0], 3), 1.0);
        assert_eq!(argmax(a.row(0)), 0);
        assert_eq!(argmax(a.row(1)), 1);
    }

    #[test]
    fn cross_entropy_of_uniform_logits_is_log_c() {
        let a = Array2::<f64>::zeros((4, 10));
        let l = xent_sum(&a.view(), &[0, 3, 9, 2], None) / 4.0;
        assert!((l - 10f64.ln()).abs() < 1e-12);
    }
}
