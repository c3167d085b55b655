//! Decoders: the linear dictionary `W` and the one-hidden-layer decoder `W2 relu(W1 z + b1)`.
//!
//! Shapes (samples are rows): codes `Z` `(n, l)`, inputs `Y` `(n, d)`.
//!
//! * Linear: `W` `(d, l)`, atoms are its columns; `Y_hat = Z W^T`.
//! * One hidden layer (width `m`): `W1` `(m, l)`, `b1` `(1, m)`, `W2` `(d, m)`;
//!   `A = Z W1^T + b1`, `H = relu(A)`, `Y_hat = H W2^T`.
//!
//! The reconstruction energy is the authors' `(1/d) sum_i ||y_i - D(z_i)||^2` (docs/CONVENTIONS.md §1); its
//! gradient with respect to the codes is `(2/d) J_D^T (D(z) - y)`. The decoder's training loss is
//! the same quantity averaged over the batch, `(1/(n d)) sum_i ||y_i - D(z_i)||^2` (docs/CONVENTIONS.md §4).

use ndarray::Array2;
use rand_chacha::ChaCha8Rng;

use crate::backend::{Backend, Trans};
use crate::comm::{Comm, Solo};
use crate::error::{Error, Result};
use crate::model::params::{DecoderParams, ParamSet};
use crate::model::reduce::{Part, sum_over_ranks};
use crate::rng::linear_uniform;
use crate::scalar::{Scalar, check_finite};

/// Which decoder, with its dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DecoderKind {
    /// `W` `(d, l)`.
    Linear,
    /// `W1` `(hidden, l)`, `b1` `(1, hidden)`, `W2` `(d, hidden)`.
    OneHidden {
        /// The hidden width `m` (1024 for MNIST, 2048 for patches in the paper).
        hidden: usize,
    },
}

/// A decoder's parameters, resident on a backend.
///
/// The parameters are a [`DecoderParams`]: `W`, or `W1`, `b1`, `W2`, by name.
///
/// # Examples
///
/// A linear dictionary on the CPU backend, whose matrices are `ndarray` arrays:
///
/// ```
/// use ndarray::{Array2, array};
/// use varsparse::{Backend, Cpu, Decoder};
///
/// let w = array![[1.0f32, 0.0], [0.0, 2.0], [1.0, 1.0]]; // (d = 3, l = 2): atoms are columns
/// let dec = Decoder::linear(&Cpu, &w)?;
/// assert_eq!((dec.input_dim(), dec.code_dim()), (3, 2));
/// let z = array![[1.0f32, 0.5]];                          // one sample's codes
/// let mut scratch = dec.scratch(&Cpu, 1)?;
/// let mut y_hat = Cpu.zeros(1, 3)?;
/// dec.forward(&Cpu, &z, &mut scratch, &mut y_hat)?;       // D(z) = z W^T
/// assert_eq!(y_hat, array![[1.0f32, 1.0, 1.5]]);
/// # Ok::<(), varsparse::Error>(())
/// ```
pub struct Decoder<F: Scalar, B: Backend<F>> {
    kind: DecoderKind,
    d: usize,
    l: usize,
    params: DecoderParams<B::Mat>,
}

/// The one-hidden-layer decoder's operands for one FISTA solve on the hidden-layer Gram path
/// ([`Decoder::hidden_gram_grad_active`]), prepared once by [`Decoder::pack_hidden_gram`] with
/// [`Backend::pack_rhs`] and reused by every iteration: `G2 = W2^T W2` `(m, m)`, `W1^T`
/// `(l, m)` and `W1` `(m, l)`. They are copies: pack again after the decoder changes.
#[derive(Debug, Default)]
pub struct HiddenGram<P> {
    g2: P,
    w1t: P,
    w1: P,
}

/// Work buffers for a decoder at a batch size; allocate once with [`Decoder::scratch`].
pub struct DecoderScratch<M> {
    /// `D(z) - y`, `(n, d)`.
    pub(crate) r: M,
    /// Hidden activations `relu(W1 z + b1)`, `(n, m)` (one-hidden-layer only).
    pub(crate) h: Option<M>,
    /// Gradient at the hidden layer, `(n, m)` (one-hidden-layer only).
    pub(crate) dh: Option<M>,
    /// Compacted active codes, `(n, l)` (leading rows used).
    pub(crate) xc: M,
    /// Compacted gradient, `(n, l)` (leading rows used).
    pub(crate) gc: M,
    n: usize,
}

impl<M> DecoderScratch<M> {
    /// The residual `D(z) - y` left by the last [`Decoder::recon`] or [`Decoder::loss_grads`].
    pub fn residual(&self) -> &M {
        &self.r
    }

    /// Mutable access to the residual (e.g. to rescale it to pixel units).
    pub fn residual_mut(&mut self) -> &mut M {
        &mut self.r
    }
}

impl<F: Scalar, B: Backend<F>> Decoder<F, B> {
    /// A decoder with PyTorch-default uniform weights (`±1/sqrt(fan_in)`) from `rng`, biases zero.
    /// Weights are drawn in the order `W` (linear) or `W1`, `W2`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if a dimension is zero.
    pub fn init(
        be: &B,
        kind: DecoderKind,
        input_dim: usize,
        code_dim: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        check_dim("input_dim", input_dim)?;
        check_dim("code_dim", code_dim)?;
        let params = match kind {
            DecoderKind::Linear => DecoderParams::Linear {
                w: be.upload(linear_uniform::<F>(rng, input_dim, code_dim, code_dim).view())?,
            },
            DecoderKind::OneHidden { hidden } => {
                check_dim("hidden", hidden)?;
                let w1 = linear_uniform::<F>(rng, hidden, code_dim, code_dim);
                let w2 = linear_uniform::<F>(rng, input_dim, hidden, hidden);
                DecoderParams::OneHidden {
                    w1: be.upload(w1.view())?,
                    b1: be.zeros(1, hidden)?,
                    w2: be.upload(w2.view())?,
                }
            }
        };
        Ok(Decoder {
            kind,
            d: input_dim,
            l: code_dim,
            params,
        })
    }

    /// A linear decoder from a dictionary `W` `(d, l)` with atoms as columns.
    ///
    /// # Errors
    /// [`Error::Shape`] if `W` is empty; [`Error::NonFiniteInput`] if it holds NaN or infinity.
    pub fn linear(be: &B, w: &Array2<F>) -> Result<Self> {
        check_finite("dictionary W", w)?;
        let (d, l) = w.dim();
        if d == 0 || l == 0 {
            return Err(Error::shape(
                "dictionary W",
                format!("is empty: {:?}", w.dim()),
            ));
        }
        Ok(Decoder {
            kind: DecoderKind::Linear,
            d,
            l,
            params: DecoderParams::Linear {
                w: be.upload(w.view())?,
            },
        })
    }

    /// A one-hidden-layer decoder from `W1` `(m, l)`, `b1` (length `m`, as `(1, m)` or `(m, 1)`)
    /// and `W2` `(d, m)`.
    ///
    /// # Errors
    /// [`Error::Shape`] naming the inconsistent shapes; [`Error::NonFiniteInput`].
    pub fn one_hidden(be: &B, w1: &Array2<F>, b1: &Array2<F>, w2: &Array2<F>) -> Result<Self> {
        check_finite("W1", w1)?;
        check_finite("b1", b1)?;
        check_finite("W2", w2)?;
        let (m, l) = w1.dim();
        let (d, m2) = w2.dim();
        if m == 0 || l == 0 || d == 0 {
            return Err(Error::shape(
                "one-hidden-layer decoder",
                "W1 and W2 must be non-empty",
            ));
        }
        if m2 != m {
            return Err(Error::shape(
                "one-hidden-layer decoder",
                format!(
                    "W1 is {:?} and W2 is {:?}: W2 must have W1's {m} rows as columns",
                    w1.dim(),
                    w2.dim()
                ),
            ));
        }
        if b1.len() != m || !(b1.nrows() == 1 || b1.ncols() == 1) {
            return Err(Error::shape(
                "one-hidden-layer decoder",
                format!("b1 is {:?}, expected a vector of length {m}", b1.dim()),
            ));
        }
        let b1 = b1
            .to_shape((1, m))
            .map_err(|e| Error::shape("b1", e.to_string()))?;
        Ok(Decoder {
            kind: DecoderKind::OneHidden { hidden: m },
            d,
            l,
            params: DecoderParams::OneHidden {
                w1: be.upload(w1.view())?,
                b1: be.upload(b1.view())?,
                w2: be.upload(w2.view())?,
            },
        })
    }

    /// Rebuilds a decoder from host copies of its parameters (e.g. a checkpoint).
    ///
    /// # Errors
    /// As [`Decoder::linear`] and [`Decoder::one_hidden`].
    pub fn from_params(be: &B, params: &DecoderParams<Array2<F>>) -> Result<Self> {
        match params {
            DecoderParams::Linear { w } => Self::linear(be, w),
            DecoderParams::OneHidden { w1, b1, w2 } => Self::one_hidden(be, w1, b1, w2),
        }
    }

    /// The kind and hidden width.
    pub fn kind(&self) -> DecoderKind {
        self.kind
    }

    /// The input dimension `d`.
    pub fn input_dim(&self) -> usize {
        self.d
    }

    /// The code dimension `l`.
    pub fn code_dim(&self) -> usize {
        self.l
    }

    /// The parameters' names in storage order: `["W"]` or `["W1", "b1", "W2"]`.
    pub fn param_names(&self) -> &'static [&'static str] {
        DecoderParams::<()>::names(self.kind)
    }

    /// The parameters.
    pub fn params(&self) -> &DecoderParams<B::Mat> {
        &self.params
    }

    /// Mutable access to the parameters (the optimiser's view).
    pub fn params_mut(&mut self) -> &mut DecoderParams<B::Mat> {
        &mut self.params
    }

    /// Copies the parameters to the host.
    ///
    /// # Errors
    /// A backend transfer error.
    pub fn to_host(&self, be: &B) -> Result<DecoderParams<Array2<F>>> {
        self.params.try_map(|p| be.download(p))
    }

    /// Zero-initialised buffers shaped like the parameters (for gradients and optimiser moments).
    ///
    /// # Errors
    /// A backend allocation error.
    pub fn zeros_like_params(&self, be: &B) -> Result<DecoderParams<B::Mat>> {
        self.params.try_map(|p| {
            let (r, c) = be.shape(p);
            be.zeros(r, c)
        })
    }

    /// `(W1, b1, W2)` of the one-hidden-layer decoder.
    fn hidden_params(&self, what: &str) -> Result<(&B::Mat, &B::Mat, &B::Mat)> {
        match &self.params {
            DecoderParams::OneHidden { w1, b1, w2 } => Ok((w1, b1, w2)),
            DecoderParams::Linear { .. } => {
                Err(Error::shape(what, "the decoder has no hidden layer"))
            }
        }
    }

    /// Work buffers for batches of `n` samples.
    ///
    /// # Errors
    /// A backend allocation error.
    pub fn scratch(&self, be: &B, n: usize) -> Result<DecoderScratch<B::Mat>> {
        let (h, dh) = match self.kind {
            DecoderKind::Linear => (None, None),
            DecoderKind::OneHidden { hidden } => {
                (Some(be.zeros(n, hidden)?), Some(be.zeros(n, hidden)?))
            }
        };
        Ok(DecoderScratch {
            r: be.zeros(n, self.d)?,
            h,
            dh,
            xc: be.zeros(n, self.l)?,
            gc: be.zeros(n, self.l)?,
            n,
        })
    }

    fn check_batch(
        &self,
        be: &B,
        what: &str,
        y: &B::Mat,
        z: &B::Mat,
        s: &DecoderScratch<B::Mat>,
    ) -> Result<usize> {
        let (n, d) = be.shape(y);
        let (nz, l) = be.shape(z);
        if d != self.d || l != self.l || nz != n {
            return Err(Error::shape(
                what,
                format!(
                    "inputs {:?} and codes {:?} do not fit a decoder with d = {}, l = {}",
                    (n, d),
                    (nz, l),
                    self.d,
                    self.l
                ),
            ));
        }
        if s.n != n {
            return Err(Error::shape(
                what,
                format!("scratch is for {} samples, batch has {n}", s.n),
            ));
        }
        Ok(n)
    }

    /// Floating-point operations (2 per multiply-add) of the products of one
    /// [`Decoder::loss_grads`] on `n` rows: the forward pass, the weights' gradients and, for
    /// the one-hidden-layer decoder, the back-propagation to its hidden layer.
    pub fn loss_grads_flops(&self, n: usize) -> f64 {
        let (n, d, l) = (n as f64, self.d as f64, self.l as f64);
        match self.kind {
            DecoderKind::Linear => 4.0 * n * d * l,
            DecoderKind::OneHidden { hidden } => {
                let m = hidden as f64;
                4.0 * n * l * m + 6.0 * n * m * d
            }
        }
    }

    /// `Y_hat = D(z)` into `out` `(n, d)`.
    ///
    /// # Errors
    /// [`Error::Shape`] on inconsistent shapes.
    pub fn forward(
        &self,
        be: &B,
        z: &B::Mat,
        s: &mut DecoderScratch<B::Mat>,
        out: &mut B::Mat,
    ) -> Result<()> {
        match &self.params {
            DecoderParams::Linear { w } => {
                be.gemm(F::one(), z, Trans::N, w, Trans::T, F::zero(), out)
            }
            DecoderParams::OneHidden { w2, .. } => {
                let h =
                    s.h.as_mut()
                        .ok_or_else(|| Error::shape("forward", "scratch lacks the hidden layer"))?;
                self.hidden(be, z, h)?;
                be.gemm(F::one(), h, Trans::N, w2, Trans::T, F::zero(), out)
            }
        }
    }

    fn hidden(&self, be: &B, z: &B::Mat, h: &mut B::Mat) -> Result<()> {
        let (w1, b1, _) = self.hidden_params("hidden layer")?;
        be.gemm(F::one(), z, Trans::N, w1, Trans::T, F::zero(), h)?;
        be.add_row_bias(b1, h)?;
        be.relu(h)
    }

    /// Residual `r = D(z) - y` into the scratch (and the hidden activations for the MLP).
    fn residual(
        &self,
        be: &B,
        y: &B::Mat,
        z: &B::Mat,
        s: &mut DecoderScratch<B::Mat>,
    ) -> Result<()> {
        be.copy(y, &mut s.r)?;
        match &self.params {
            DecoderParams::Linear { w } => {
                be.gemm(F::one(), z, Trans::N, w, Trans::T, -F::one(), &mut s.r)
            }
            DecoderParams::OneHidden { w2, .. } => {
                let h = s
                    .h
                    .as_mut()
                    .ok_or_else(|| Error::shape("residual", "scratch lacks the hidden layer"))?;
                self.hidden(be, z, h)?;
                be.gemm(F::one(), h, Trans::N, w2, Trans::T, -F::one(), &mut s.r)
            }
        }
    }

    /// The reconstruction energy `(1/d) sum_i ||y_i - D(z_i)||^2` and, when `grad` is given, its
    /// gradient with respect to the codes, `(2/d) J^T (D(z) - y)`, written into `grad` `(n, l)`
    /// (overwriting it). Returns the energy when `want_value`, otherwise zero.
    ///
    /// # Errors
    /// [`Error::Shape`] on inconsistent shapes.
    pub fn recon(
        &self,
        be: &B,
        y: &B::Mat,
        z: &B::Mat,
        s: &mut DecoderScratch<B::Mat>,
        grad: Option<&mut B::Mat>,
        want_value: bool,
    ) -> Result<F> {
        self.check_batch(be, "reconstruction", y, z, s)?;
        self.residual(be, y, z, s)?;
        let inv_d = F::one() / F::c(self.d as f64);
        let value = if want_value {
            be.sum_sq(&s.r)? * inv_d
        } else {
            F::zero()
        };
        if let Some(g) = grad {
            let two_d = F::c(2.0) * inv_d;
            match &self.params {
                DecoderParams::Linear { w } => {
                    be.gemm(two_d, &s.r, Trans::N, w, Trans::N, F::zero(), g)?;
                }
                DecoderParams::OneHidden { w1, w2, .. } => {
                    let (r, h, dh) = hidden_pair(s)?;
                    be.gemm(two_d, r, Trans::N, w2, Trans::N, F::zero(), dh)?;
                    be.relu_mask(h, dh)?;
                    be.gemm(F::one(), dh, Trans::N, w1, Trans::N, F::zero(), g)?;
                }
            }
        }
        Ok(value)
    }

    /// The reconstruction gradient `(2/d) J^T (D(z) - y)` of the **active** rows only (those with
    /// `flags[i, 0] = 0`), written into `grad`, whose other rows are set to zero. The active rows
    /// are compacted first, so the cost scales with their number: FISTA's flagged samples take
    /// no gradient step, and in a batch most of the loop's iterations run with few samples left.
    /// Returns the number of active rows.
    ///
    /// # Errors
    /// [`Error::Shape`] on inconsistent shapes.
    pub fn recon_grad_active(
        &self,
        be: &B,
        y: &B::Mat,
        z: &B::Mat,
        flags: &B::Mat,
        s: &mut DecoderScratch<B::Mat>,
        grad: &mut B::Mat,
    ) -> Result<usize> {
        let n = self.check_batch(be, "reconstruction", y, z, s)?;
        let k = be.gather_active_rows(flags, z, &mut s.xc)?;
        if k == n {
            self.recon(be, y, z, s, Some(grad), false)?;
            return Ok(n);
        }
        if k == 0 {
            be.fill(F::zero(), grad)?;
            return Ok(0);
        }
        // r[..k] = D(xc[..k]) - y[active]
        be.gather_active_rows(flags, y, &mut s.r)?;
        let two_d = F::c(2.0) / F::c(self.d as f64);
        match &self.params {
            DecoderParams::Linear { w } => {
                be.gemm_rows(k, F::one(), &s.xc, w, Trans::T, -F::one(), &mut s.r)?;
                be.gemm_rows(k, two_d, &s.r, w, Trans::N, F::zero(), &mut s.gc)?;
            }
            DecoderParams::OneHidden { w2, .. } => {
                let (h, dh) = match (s.h.as_mut(), s.dh.as_mut()) {
                    (Some(h), Some(dh)) => (h, dh),
                    _ => {
                        return Err(Error::shape(
                            "reconstruction",
                            "scratch lacks the hidden layer",
                        ));
                    }
                };
                self.hidden_rows(be, k, &s.xc, None, h)?;
                be.gemm_rows(k, F::one(), h, w2, Trans::T, -F::one(), &mut s.r)?;
                be.gemm_rows(k, two_d, &s.r, w2, Trans::N, F::zero(), dh)?;
                self.hidden_back_rows(be, k, h, dh, None, &mut s.gc)?;
            }
        }
        be.scatter_active_rows(flags, &s.gc, grad)?;
        Ok(k)
    }

    /// Packs `g2 = W2^T W2` `(m, m)` and this decoder's `W1` for
    /// [`Decoder::hidden_gram_grad_active`], reusing `out`'s buffers.
    ///
    /// # Errors
    /// [`Error::Shape`] if `g2` is not `(m, m)`, or for a linear decoder.
    pub fn pack_hidden_gram(
        &self,
        be: &B,
        g2: &B::Mat,
        out: &mut HiddenGram<B::Packed>,
    ) -> Result<()> {
        let DecoderKind::OneHidden { hidden: m } = self.kind else {
            return Err(Error::shape(
                "hidden-layer Gram operands",
                "the decoder has no hidden layer",
            ));
        };
        if be.shape(g2) != (m, m) {
            return Err(Error::shape(
                "hidden-layer Gram operands",
                format!("G2 is {:?}, expected ({m}, {m})", be.shape(g2)),
            ));
        }
        be.pack_rhs(g2, Trans::N, &mut out.g2)?;
        let (w1, _, _) = self.hidden_params("hidden-layer Gram operands")?;
        be.pack_rhs(w1, Trans::T, &mut out.w1t)?;
        be.pack_rhs(w1, Trans::N, &mut out.w1)
    }

    /// [`Decoder::recon_grad_active`] of the one-hidden-layer decoder through the hidden-layer
    /// Gram matrix `G2 = W2^T W2` and `c2 = Y W2` `(n, m)`, with the operands `packed` by
    /// [`Decoder::pack_hidden_gram`] (see
    /// [`crate::solve::fista::GradientPath`]): for the active rows, `H = relu(Z W1^T + b1)`, then
    /// `dH = (2/d)(H G2 - C2) * [H > 0]`, then `grad = dH W1`; the other rows of `grad` are set
    /// to zero. `q` `(n, m)` is scratch. Returns the number of active rows.
    ///
    /// # Errors
    /// [`Error::Shape`] on inconsistent shapes, or for a linear decoder.
    #[allow(clippy::too_many_arguments)]
    pub fn hidden_gram_grad_active(
        &self,
        be: &B,
        z: &B::Mat,
        flags: &B::Mat,
        packed: &HiddenGram<B::Packed>,
        c2: &B::Mat,
        q: &mut B::Mat,
        s: &mut DecoderScratch<B::Mat>,
        grad: &mut B::Mat,
    ) -> Result<usize> {
        let DecoderKind::OneHidden { hidden: m } = self.kind else {
            return Err(Error::shape(
                "hidden-layer Gram gradient",
                "the decoder has no hidden layer",
            ));
        };
        let n = be.shape(z).0;
        if be.shape(z) != (s.n, self.l)
            || be.packed_shape(&packed.g2) != (m, m)
            || be.packed_shape(&packed.w1t) != (self.l, m)
            || be.packed_shape(&packed.w1) != (m, self.l)
            || be.shape(c2) != (n, m)
            || be.shape(q) != (n, m)
        {
            return Err(Error::shape(
                "hidden-layer Gram gradient",
                format!(
                    "Z {:?}, packed G2 {:?}, W1^T {:?}, W1 {:?}, C2 {:?}, Q {:?} for l = {}, \
                     m = {m} and scratch of {} rows",
                    be.shape(z),
                    be.packed_shape(&packed.g2),
                    be.packed_shape(&packed.w1t),
                    be.packed_shape(&packed.w1),
                    be.shape(c2),
                    be.shape(q),
                    self.l,
                    s.n
                ),
            ));
        }
        let h =
            s.h.as_mut()
                .ok_or_else(|| Error::shape("reconstruction", "scratch lacks the hidden layer"))?;
        let k = be.gather_active_rows(flags, z, &mut s.xc)?;
        if k == 0 {
            be.fill(F::zero(), grad)?;
            return Ok(0);
        }
        let two_d = F::c(2.0) / F::c(self.d as f64);
        self.hidden_rows(be, k, &s.xc, Some(packed), h)?;
        // q[..k] = (2/d)(H G2 - C2[active])
        be.gemm_rows_packed_active_base(flags, k, two_d, h, &packed.g2, -two_d, c2, q)?;
        self.hidden_back_rows(be, k, h, q, Some(packed), &mut s.gc)?;
        be.scatter_active_rows(flags, &s.gc, grad)?;
        Ok(k)
    }

    /// The hidden layer of the leading `k` rows of `xc`: `h[..k] = relu(xc W1^T + b1)`, with
    /// the packed `W1^T` where given.
    fn hidden_rows(
        &self,
        be: &B,
        k: usize,
        xc: &B::Mat,
        packed: Option<&HiddenGram<B::Packed>>,
        h: &mut B::Mat,
    ) -> Result<()> {
        let (w1, b1, _) = self.hidden_params("hidden layer")?;
        match packed {
            Some(p) => be.gemm_rows_packed(k, F::one(), xc, &p.w1t, F::zero(), h)?,
            None => be.gemm_rows(k, F::one(), xc, w1, Trans::T, F::zero(), h)?,
        }
        be.add_row_bias(b1, h)?;
        be.relu(h)
    }

    /// Back through the hidden layer for the leading `k` rows: `dh <- dh * [h > 0]`, then
    /// `gc[..k] = dh W1`, with the packed `W1` where given.
    fn hidden_back_rows(
        &self,
        be: &B,
        k: usize,
        h: &B::Mat,
        dh: &mut B::Mat,
        packed: Option<&HiddenGram<B::Packed>>,
        gc: &mut B::Mat,
    ) -> Result<()> {
        be.relu_mask(h, dh)?;
        match packed {
            Some(p) => be.gemm_rows_packed(k, F::one(), dh, &p.w1, F::zero(), gc),
            None => {
                let (w1, _, _) = self.hidden_params("hidden layer")?;
                be.gemm_rows(k, F::one(), dh, w1, Trans::N, F::zero(), gc)
            }
        }
    }

    /// The decoder's training loss `(1/(n d)) sum_i ||y_i - D(z_i)||^2` and its gradients with
    /// respect to every parameter, written into `grads` (shaped like the parameters,
    /// [`Decoder::zeros_like_params`]).
    ///
    /// # Errors
    /// [`Error::Shape`] on inconsistent shapes or gradients of the other decoder kind.
    pub fn loss_grads(
        &self,
        be: &B,
        y: &B::Mat,
        z: &B::Mat,
        s: &mut DecoderScratch<B::Mat>,
        grads: &mut DecoderParams<B::Mat>,
    ) -> Result<F> {
        self.loss_grads_on(be, y, z, s, grads, &Solo)
    }

    /// [`Decoder::loss_grads`] of a batch whose rows are split between the ranks of `comm`
    /// (`y`, `z` hold this rank's rows): the whole batch's loss and gradients, the same on every
    /// rank. Each rank scales its rows by the whole batch's `1/(n d)`, so that every per-row
    /// quantity is the one-process value; the gradients are then summed over the ranks in one
    /// reduction, the bias's column sums in `f64` before rounding (docs/SCALING.md says what
    /// differs from one process). On one process this is [`Decoder::loss_grads`].
    ///
    /// # Errors
    /// As [`Decoder::loss_grads`]; a communication error.
    pub fn loss_grads_on(
        &self,
        be: &B,
        y: &B::Mat,
        z: &B::Mat,
        s: &mut DecoderScratch<B::Mat>,
        grads: &mut DecoderParams<B::Mat>,
        comm: &dyn Comm,
    ) -> Result<F> {
        let n = self.check_batch(be, "decoder loss", y, z, s)?;
        if grads.is_one_hidden() != self.params.is_one_hidden() {
            return Err(Error::shape(
                "decoder loss",
                format!(
                    "gradients {:?} for parameters {:?}",
                    grads.named().iter().map(|p| p.0).collect::<Vec<_>>(),
                    self.param_names()
                ),
            ));
        }
        // the whole batch's rows (n on one process)
        let n_all = comm.sum_count(n)?;
        self.residual(be, y, z, s)?;
        let inv = F::one() / F::c((n_all * self.d) as f64);
        let loss = be.sum_sq(&s.r)? * inv;
        let two = F::c(2.0) * inv;
        let mut total = [loss.f()];
        match (&self.params, grads) {
            (DecoderParams::Linear { .. }, DecoderParams::Linear { w: g_w }) => {
                // dW = (2/(n d)) R^T Z
                be.gemm(two, &s.r, Trans::T, z, Trans::N, F::zero(), g_w)?;
                sum_over_ranks(be, comm, &mut [Part::Sum(g_w)], &mut total)?;
            }
            (
                DecoderParams::OneHidden { w2, .. },
                DecoderParams::OneHidden {
                    w1: g_w1,
                    b1: g_b1,
                    w2: g_w2,
                },
            ) => {
                let (r, h, dh) = hidden_pair(s)?;
                // dW2 = (2/(n d)) R^T H; dH = (2/(n d)) R W2 * 1[H > 0]; dW1 = dH^T Z; db1 = colsum(dH)
                be.gemm(two, r, Trans::T, h, Trans::N, F::zero(), g_w2)?;
                be.gemm(two, r, Trans::N, w2, Trans::N, F::zero(), dh)?;
                be.relu_mask(h, dh)?;
                be.gemm(F::one(), dh, Trans::T, z, Trans::N, F::zero(), g_w1)?;
                let mut parts = [
                    Part::Sum(g_w1),
                    Part::ColSums {
                        alpha: 1.0,
                        src: &*dh,
                        out: g_b1,
                    },
                    Part::Sum(g_w2),
                ];
                sum_over_ranks(be, comm, &mut parts, &mut total)?;
            }
            _ => {
                return Err(Error::shape(
                    "decoder loss",
                    "gradients of the other decoder kind",
                ));
            }
        }
        Ok(if comm.size() > 1 {
            F::c(total[0])
        } else {
            loss
        })
    }

    /// SDL column normalisation (docs/CONVENTIONS.md §4): every column of every weight matrix scaled to unit
    /// l2 norm (`W`'s atoms; `W1`'s columns, one per latent, and `W2`'s, one per hidden unit).
    /// Biases are untouched; an all-zero column is left as it is (PyTorch would divide by zero).
    ///
    /// # Errors
    /// A backend error.
    pub fn normalize_columns(&mut self, be: &B) -> Result<()> {
        match &mut self.params {
            DecoderParams::Linear { w } => be.normalize_columns(w),
            DecoderParams::OneHidden { w1, w2, .. } => {
                be.normalize_columns(w1)?;
                be.normalize_columns(w2)
            }
        }
    }

    /// The atoms for visualisation, one per row `(l, d)`: linear, the columns of `W`;
    /// one-hidden-layer, `D(c e_i) - D(0)` for each latent `i`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `c` is not finite; a backend error.
    pub fn atoms(&self, be: &B, c: F) -> Result<Array2<F>> {
        if !c.is_finite() {
            return Err(Error::param("atom amplitude c", c, "must be finite"));
        }
        match &self.params {
            DecoderParams::Linear { w } => Ok(be.download(w)?.t().to_owned()),
            DecoderParams::OneHidden { .. } => {
                let l = self.l;
                // Row 0 of the batch is the zero code, rows 1..=l are c e_i.
                let mut codes = Array2::<F>::zeros((l + 1, l));
                for i in 0..l {
                    codes[(i + 1, i)] = c;
                }
                let z = be.upload(codes.view())?;
                let mut s = self.scratch(be, l + 1)?;
                let mut out = be.zeros(l + 1, self.d)?;
                self.forward(be, &z, &mut s, &mut out)?;
                let out = be.download(&out)?;
                let base = out.row(0).to_owned();
                let mut atoms = out.slice(ndarray::s![1.., ..]).to_owned();
                for mut row in atoms.rows_mut() {
                    ndarray::Zip::from(&mut row)
                        .and(&base)
                        .for_each(|a, &b| *a = *a - b);
                }
                Ok(atoms)
            }
        }
    }
}

/// `(r, h, dh)` of a one-hidden-layer scratch.
fn hidden_pair<M>(s: &mut DecoderScratch<M>) -> Result<(&M, &M, &mut M)> {
    match (s.h.as_ref(), s.dh.as_mut()) {
        (Some(h), Some(dh)) => Ok((&s.r, h, dh)),
        _ => Err(Error::shape("decoder", "scratch lacks the hidden layer")),
    }
}

fn check_dim(name: &'static str, v: usize) -> Result<()> {
    if v == 0 {
        Err(Error::param(name, v, "must be at least 1"))
    } else {
        Ok(())
    }
}
