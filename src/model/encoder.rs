//! The LISTA encoder (paper Algorithm 1; docs/CONVENTIONS.md §3), with a hand-written backward pass.
//!
//! Parameters `U` `(l, d)`, `b` `(1, l)`, `S` `(l, l)`, and `L` unrolled iterations sharing `S`:
//!
//! ```text
//! B   = Y U^T + b
//! Z_0 = relu(B)
//! Z_k = relu(B + Z_{k-1} S^T),  k = 1..L
//! E(Y) = Z_L
//! ```
//!
//! The encoder's training loss is `(1/(n l)) sum_i ||e_i - z*_i||^2` with the FISTA codes `z*`
//! held constant (docs/CONVENTIONS.md §4). Backward, with `dZ_L = (2/(n l))(Z_L - z*)`:
//!
//! ```text
//! for k = L..1:  dP = dZ_k * 1[Z_k > 0];  dS += dP^T Z_{k-1};  dB += dP;  dZ_{k-1} = dP S
//! dB += dZ_0 * 1[Z_0 > 0];  dU = dB^T Y;  db = colsum(dB)
//! ```
//!
//! (`1[Z_k > 0]` equals `1[pre-activation > 0]`, so the tape keeps only the `Z_k`.)

use ndarray::Array2;
use rand_chacha::ChaCha8Rng;

use crate::backend::{Backend, Trans};
use crate::comm::{Comm, Solo};
use crate::error::{Error, Result};
use crate::model::params::{ListaParams, ParamSet};
use crate::model::reduce::{Part, sum_over_ranks};
use crate::rng::linear_uniform;
use crate::scalar::Scalar;

/// The LISTA encoder: its parameters `U`, `b`, `S` ([`ListaParams`]) and iteration count.
///
/// # Examples
///
/// A seeded encoder with 3 unrolled iterations; the forward pass writes into a tape (kept for
/// the backward pass):
///
/// ```
/// use ndarray::Array2;
/// use varsparse::{Cpu, Lista};
///
/// let mut rng = varsparse::rng::rng(7);
/// let enc = Lista::<f32, Cpu>::init(&Cpu, 6, 4, 3, &mut rng)?; // d = 6, l = 4, L = 3
/// let y = Array2::<f32>::from_shape_fn((2, 6), |(i, j)| (i + j) as f32 / 6.0);
/// let mut tape = enc.tape(&Cpu, 2)?;
/// let z = enc.forward(&Cpu, &y, &mut tape)?;                   // E(Y), (2, 4)
/// assert_eq!(z.dim(), (2, 4));
/// assert!(z.iter().all(|&v| v >= 0.0));                        // ReLU codes
/// # Ok::<(), varsparse::Error>(())
/// ```
pub struct Lista<F: Scalar, B: Backend<F>> {
    d: usize,
    l: usize,
    n_iter: usize,
    params: ListaParams<B::Mat>,
}

/// The forward pass's saved activations, and the backward pass's buffers, for `n` samples.
pub struct ListaTape<M> {
    /// `B = Y U^T + b`.
    base: M,
    /// `Z_0 ..= Z_L`; the last is the encoder's output.
    z: Vec<M>,
    d_z: M,
    d_p: M,
    d_b: M,
    n: usize,
}

impl<M> ListaTape<M> {
    /// The batch size this tape serves.
    pub fn batch_size(&self) -> usize {
        self.n
    }
}

impl<F: Scalar, B: Backend<F>> Lista<F, B> {
    /// A LISTA encoder with PyTorch-default uniform weights from `rng` (drawn in the order `U`,
    /// `S`; `U` with fan-in `d`, `S` with fan-in `l`) and `b = 0`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if a dimension is zero.
    pub fn init(
        be: &B,
        input_dim: usize,
        code_dim: usize,
        n_iter: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        if input_dim == 0 || code_dim == 0 {
            return Err(Error::param(
                "encoder dimensions",
                format!("({input_dim}, {code_dim})"),
                "must be at least 1",
            ));
        }
        let u = linear_uniform::<F>(rng, code_dim, input_dim, input_dim);
        let s = linear_uniform::<F>(rng, code_dim, code_dim, code_dim);
        Ok(Lista {
            d: input_dim,
            l: code_dim,
            n_iter,
            params: ListaParams {
                u: be.upload(u.view())?,
                b: be.zeros(1, code_dim)?,
                s: be.upload(s.view())?,
            },
        })
    }

    /// Rebuilds an encoder from host copies of `U`, `b` (a vector of length `l`, as `(1, l)` or
    /// `(l, 1)`) and `S` (e.g. a checkpoint).
    ///
    /// # Errors
    /// [`Error::Shape`] naming inconsistent shapes; [`Error::NonFiniteInput`].
    pub fn from_params(be: &B, params: &ListaParams<Array2<F>>, n_iter: usize) -> Result<Self> {
        for (name, p) in params.named() {
            crate::scalar::check_finite(name, p)?;
        }
        let ListaParams { u, b, s } = params;
        let (l, d) = u.dim();
        if l == 0
            || d == 0
            || s.dim() != (l, l)
            || b.len() != l
            || !(b.nrows() == 1 || b.ncols() == 1)
        {
            return Err(Error::shape(
                "LISTA encoder",
                format!(
                    "U {:?}, b {:?}, S {:?}: expected U (l, d), b of length l, S (l, l)",
                    u.dim(),
                    b.dim(),
                    s.dim()
                ),
            ));
        }
        let b = b
            .to_shape((1, l))
            .map_err(|e| Error::shape("b", e.to_string()))?;
        Ok(Lista {
            d,
            l,
            n_iter,
            params: ListaParams {
                u: be.upload(u.view())?,
                b: be.upload(b.view())?,
                s: be.upload(s.view())?,
            },
        })
    }

    /// The input dimension `d`.
    pub fn input_dim(&self) -> usize {
        self.d
    }

    /// The code dimension `l`.
    pub fn code_dim(&self) -> usize {
        self.l
    }

    /// The number of unrolled iterations `L`.
    pub fn n_iter(&self) -> usize {
        self.n_iter
    }

    /// The parameters.
    pub fn params(&self) -> &ListaParams<B::Mat> {
        &self.params
    }

    /// Mutable access to the parameters (the optimiser's view).
    pub fn params_mut(&mut self) -> &mut ListaParams<B::Mat> {
        &mut self.params
    }

    /// Copies the parameters to the host.
    ///
    /// # Errors
    /// A backend transfer error.
    pub fn to_host(&self, be: &B) -> Result<ListaParams<Array2<F>>> {
        self.params.try_map(|p| be.download(p))
    }

    /// Zero-initialised buffers shaped like the parameters.
    ///
    /// # Errors
    /// A backend allocation error.
    pub fn zeros_like_params(&self, be: &B) -> Result<ListaParams<B::Mat>> {
        self.params.try_map(|p| {
            let (r, c) = be.shape(p);
            be.zeros(r, c)
        })
    }

    /// Floating-point operations (2 per multiply-add) of the products of one
    /// [`Lista::forward`] on `n` rows, and of one [`Lista::loss_grads`] after it (the gradients
    /// of `U` and `S` and the back-propagation through the `S` products).
    pub fn flops(&self, n: usize) -> (f64, f64) {
        let (n, d, l, k) = (
            n as f64,
            self.input_dim() as f64,
            self.code_dim() as f64,
            self.n_iter() as f64,
        );
        (
            2.0 * n * d * l + 2.0 * k * n * l * l,
            2.0 * n * d * l + 4.0 * k * n * l * l,
        )
    }

    /// A tape for batches of `n` samples.
    ///
    /// # Errors
    /// A backend allocation error.
    pub fn tape(&self, be: &B, n: usize) -> Result<ListaTape<B::Mat>> {
        let l = self.l;
        Ok(ListaTape {
            base: be.zeros(n, l)?,
            z: (0..=self.n_iter)
                .map(|_| be.zeros(n, l))
                .collect::<Result<_>>()?,
            d_z: be.zeros(n, l)?,
            d_p: be.zeros(n, l)?,
            d_b: be.zeros(n, l)?,
            n,
        })
    }

    /// The forward pass; returns the codes `E(Y)` `(n, l)`, which live in the tape.
    ///
    /// # Errors
    /// [`Error::Shape`] if `y` or the tape do not fit.
    pub fn forward<'t>(
        &self,
        be: &B,
        y: &B::Mat,
        tape: &'t mut ListaTape<B::Mat>,
    ) -> Result<&'t B::Mat> {
        let (n, d) = be.shape(y);
        if d != self.d || n != tape.n || tape.z.len() != self.n_iter + 1 {
            return Err(Error::shape(
                "LISTA forward",
                format!(
                    "input is {:?}; the encoder takes d = {} and the tape is for {} samples",
                    (n, d),
                    self.d,
                    tape.n
                ),
            ));
        }
        let ListaParams { u, b, s } = &self.params;
        be.gemm(
            F::one(),
            y,
            Trans::N,
            u,
            Trans::T,
            F::zero(),
            &mut tape.base,
        )?;
        be.add_row_bias(b, &mut tape.base)?;
        be.copy(&tape.base, &mut tape.z[0])?;
        be.relu(&mut tape.z[0])?;
        for k in 1..=self.n_iter {
            let (prev, next) = tape.z.split_at_mut(k);
            let zk = &mut next[0];
            be.copy(&tape.base, zk)?;
            be.gemm(F::one(), &prev[k - 1], Trans::N, s, Trans::T, F::one(), zk)?;
            be.relu(zk)?;
        }
        Ok(&tape.z[self.n_iter])
    }

    /// The codes of the last [`Lista::forward`] on this tape.
    pub fn output<'t>(&self, tape: &'t ListaTape<B::Mat>) -> &'t B::Mat {
        &tape.z[tape.z.len() - 1]
    }

    /// The encoder's loss `(1/(n l)) sum ||E(y) - target||^2` after [`Lista::forward`] on `tape`,
    /// and its gradients with respect to `U`, `b`, `S`, written into `grads`.
    ///
    /// # Errors
    /// [`Error::Shape`] on inconsistent shapes.
    pub fn loss_grads(
        &self,
        be: &B,
        y: &B::Mat,
        target: &B::Mat,
        tape: &mut ListaTape<B::Mat>,
        grads: &mut ListaParams<B::Mat>,
    ) -> Result<F> {
        self.loss_grads_on(be, y, target, tape, grads, &Solo)
    }

    /// [`Lista::loss_grads`] of a batch whose rows are split between the ranks of `comm` (`y`,
    /// `target` and the tape hold this rank's rows): the whole batch's loss and gradients, the
    /// same on every rank. Each rank scales its rows by the whole batch's `1/(n l)`; the
    /// gradients are summed over the ranks in one reduction, the bias's column sums in `f64`
    /// before rounding (as [`Decoder::loss_grads_on`](crate::model::Decoder::loss_grads_on)).
    /// On one process this is [`Lista::loss_grads`].
    ///
    /// # Errors
    /// As [`Lista::loss_grads`]; a communication error.
    pub fn loss_grads_on(
        &self,
        be: &B,
        y: &B::Mat,
        target: &B::Mat,
        tape: &mut ListaTape<B::Mat>,
        grads: &mut ListaParams<B::Mat>,
        comm: &dyn Comm,
    ) -> Result<F> {
        let n = tape.n;
        if be.shape(target) != (n, self.l) {
            return Err(Error::shape(
                "encoder loss",
                format!(
                    "target is {:?}, expected ({n}, {})",
                    be.shape(target),
                    self.l
                ),
            ));
        }
        // the whole batch's rows (n on one process)
        let n_all = comm.sum_count(n)?;
        let out = &tape.z[tape.z.len() - 1];
        let inv = F::one() / F::c((n_all * self.l) as f64);
        let loss = be.sum_sq_diff(out, target)? * inv;
        be.copy(out, &mut tape.d_z)?;
        be.axpby(-F::c(2.0) * inv, target, F::c(2.0) * inv, &mut tape.d_z)?;
        self.backward(be, y, tape, grads)?;
        if comm.size() == 1 {
            return Ok(loss);
        }
        let ListaParams { u, b, s } = grads;
        let mut total = [loss.f()];
        let mut parts = [
            Part::Sum(u),
            Part::ColSums {
                alpha: 1.0,
                src: &tape.d_b,
                out: b,
            },
            Part::Sum(s),
        ];
        sum_over_ranks(be, comm, &mut parts, &mut total)?;
        Ok(F::c(total[0]))
    }

    /// Backpropagates a gradient `d_out` `(n, l)` with respect to the output `E(Y)` of the last
    /// [`Lista::forward`] on `tape` (for the same `y`) to the parameters: writes `grads` =
    /// `dU`, `db`, `dS` (overwritten, not accumulated), with the recursion of the module docs
    /// started at `dZ_L = d_out`. This is how a loss stacked on the codes (e.g. a classifier
    /// trained jointly with the encoder) trains the encoder.
    ///
    /// # Errors
    /// [`Error::Shape`] if `y`, `d_out` or `grads` do not fit the encoder and the tape.
    pub fn backward_from(
        &self,
        be: &B,
        y: &B::Mat,
        tape: &mut ListaTape<B::Mat>,
        d_out: &B::Mat,
        grads: &mut ListaParams<B::Mat>,
    ) -> Result<()> {
        let n = tape.n;
        if be.shape(y) != (n, self.d)
            || be.shape(d_out) != (n, self.l)
            || tape.z.len() != self.n_iter + 1
        {
            return Err(Error::shape(
                "LISTA backward_from",
                format!(
                    "input is {:?} and output gradient {:?}; the encoder takes d = {}, l = {} and \
                     the tape is for {n} samples",
                    be.shape(y),
                    be.shape(d_out),
                    self.d,
                    self.l
                ),
            ));
        }
        be.copy(d_out, &mut tape.d_z)?;
        self.backward(be, y, tape, grads)
    }

    /// Backpropagates `tape.d_z` (the gradient at the output) to `grads` (`dU`, `db`, `dS`).
    fn backward(
        &self,
        be: &B,
        y: &B::Mat,
        tape: &mut ListaTape<B::Mat>,
        grads: &mut ListaParams<B::Mat>,
    ) -> Result<()> {
        let ListaParams {
            u: g_u,
            b: g_b,
            s: g_s,
        } = grads;
        let s = &self.params.s;
        be.fill(F::zero(), g_s)?;
        be.fill(F::zero(), &mut tape.d_b)?;
        for k in (1..=self.n_iter).rev() {
            be.copy(&tape.d_z, &mut tape.d_p)?;
            be.relu_mask(&tape.z[k], &mut tape.d_p)?;
            be.gemm(
                F::one(),
                &tape.d_p,
                Trans::T,
                &tape.z[k - 1],
                Trans::N,
                F::one(),
                g_s,
            )?;
            be.axpby(F::one(), &tape.d_p, F::one(), &mut tape.d_b)?;
            be.gemm(
                F::one(),
                &tape.d_p,
                Trans::N,
                s,
                Trans::N,
                F::zero(),
                &mut tape.d_z,
            )?;
        }
        be.relu_mask(&tape.z[0], &mut tape.d_z)?;
        be.axpby(F::one(), &tape.d_z, F::one(), &mut tape.d_b)?;
        be.gemm(F::one(), &tape.d_b, Trans::T, y, Trans::N, F::zero(), g_u)?;
        be.col_sums(F::one(), &tape.d_b, F::zero(), g_b)?;
        Ok(())
    }
}
