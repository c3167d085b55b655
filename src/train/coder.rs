//! The fitted model, [`SparseCoder`]: encoder, decoder, optimiser states and where training
//! stands; encode, decode, atoms, evaluate, save and load, on any backend.

use std::path::Path;

use ndarray::{Array2, ArrayView2, AsArray, Ix2, s};

use crate::backend::{Backend, Cpu};
use crate::comm::{Comm, Solo, shard_blocks};
use crate::data::{PixelScale, Samples};
use crate::error::{Error, Result};
use crate::model::{Decoder, EnergyTerms, Lista, ListaTape, energy};
use crate::rng;
use crate::scalar::check_finite;
use crate::solve::fista::{self, BatchReport};
use crate::train::checkpoint;
use crate::train::fit::BestEpoch;
use crate::train::params::ModelParams;
use crate::train::stats::{EpochSummary, EvalStats};
use crate::train::step::{PSNR_MSE_FLOOR, Trainer};

/// A trained (or training) model: encoder, decoder, optimiser states and where training stands.
///
/// # Examples
///
/// Load a checkpoint (here the small one-hidden-layer model of the test fixtures), encode with
/// the LISTA encoder, refine the codes with FISTA, and decode:
///
/// ```
/// use ndarray::Array2;
/// use varsparse::SparseCoder;
///
/// let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint-v1");
/// let model = SparseCoder::load(&dir)?;
/// let y = Array2::<f32>::from_shape_fn((5, model.input_dim()), |(i, j)| ((i + j) % 3) as f32);
/// let codes = model.encode(&y)?;                     // E(y), (5, l), non-negative
/// let (refined, _reports) = model.encode_fista(&y)?; // FISTA warm-started from E(y)
/// let recon = model.decode(&refined)?;               // D(z), (5, d)
/// assert_eq!(codes.dim(), refined.dim());
/// assert_eq!(recon.dim(), y.dim());
/// assert!(codes.iter().all(|&z| z >= 0.0));
/// # Ok::<(), varsparse::Error>(())
/// ```
pub struct SparseCoder<B: Backend<f32> = Cpu> {
    pub(crate) be: B,
    pub(crate) params: ModelParams,
    pub(crate) trainer: Trainer<f32, B>,
    pub(crate) input_dim: usize,
    pub(crate) pixel_scale: f64,
    pub(crate) image_shape: Option<(usize, usize)>,
    pub(crate) epochs_done: usize,
    pub(crate) best: Option<BestEpoch>,
    pub(crate) last: Option<EpochSummary>,
    pub(crate) data_description: Option<String>,
    /// Whether the Adam moments are real (false for a checkpoint saved without them).
    pub(crate) optimizer_state: bool,
}

impl<B: Backend<f32>> SparseCoder<B> {
    /// A freshly initialised model (encoder, then decoder, from the seed's stream).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a zero dimension or a bad configuration.
    pub fn init(
        be: B,
        params: &ModelParams,
        input_dim: usize,
        pixel_scale: f64,
        image_shape: Option<(usize, usize)>,
    ) -> Result<Self> {
        let mut r = rng::rng(params.seed);
        let enc = Lista::init(
            &be,
            input_dim,
            params.code_dim,
            params.encoder_iters,
            &mut r,
        )?;
        let dec = Decoder::init(&be, params.kind, input_dim, params.code_dim, &mut r)?;
        let trainer = Trainer::new(&be, enc, dec, params.step_config(pixel_scale))?;
        Ok(SparseCoder {
            be,
            params: params.clone(),
            trainer,
            input_dim,
            pixel_scale,
            image_shape,
            epochs_done: 0,
            best: None,
            last: None,
            data_description: None,
            optimizer_state: true,
        })
    }

    pub(crate) fn check_resumable(&self, dir: &Path, p: &ModelParams, d: usize) -> Result<()> {
        let mut mine = self.params.clone();
        mine.epochs = p.epochs;
        mine.patience = p.patience;
        // the step safeguard only acts on FISTA's runs that would stall: a stalled run may
        // turn it on when it resumes (the epochs that follow then differ from an uninterrupted
        // run without it)
        mine.step_safeguard = p.step_safeguard;
        // so may the adaptive restart, for the same reason
        mine.fista_restart = p.fista_restart;
        if !self.optimizer_state {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                detail: "cannot resume: the checkpoint holds no Adam moments (adam_m_*.npy, \
                         adam_v_*.npy); it loads for inference only"
                    .into(),
            });
        }
        if mine != *p || self.input_dim != d {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                detail: format!(
                    "cannot resume: the checkpoint was trained with other hyper-parameters or data \
                     (checkpoint: {:?}, d = {}; requested: {:?}, d = {d}); only epochs, patience, the step safeguard and the adaptive restart may change",
                    self.params, self.input_dim, p
                ),
            });
        }
        if self.epochs_done >= p.epochs {
            return Err(Error::param(
                "epochs",
                p.epochs,
                format!("the checkpoint has already run {} epochs", self.epochs_done),
            ));
        }
        Ok(())
    }

    /// The hyper-parameters.
    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.be
    }

    /// The input dimension `d`.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// The image shape of a sample, when known.
    pub fn image_shape(&self) -> Option<(usize, usize)> {
        self.image_shape
    }

    /// Epochs trained.
    pub fn epochs_trained(&self) -> usize {
        self.epochs_done
    }

    /// The epoch with the lowest validation energy.
    pub fn best_epoch(&self) -> Option<BestEpoch> {
        self.best
    }

    /// The last epoch's summary.
    pub fn last_epoch(&self) -> Option<&EpochSummary> {
        self.last.as_ref()
    }

    /// The encoder.
    pub fn encoder(&self) -> &Lista<f32, B> {
        &self.trainer.encoder
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder<f32, B> {
        &self.trainer.decoder
    }

    fn check_input(&self, what: &str, y: &ArrayView2<'_, f32>, cols: usize) -> Result<()> {
        if y.ncols() != cols {
            return Err(Error::shape(
                what,
                format!("is {:?}, the model takes {cols} columns", y.dim()),
            ));
        }
        check_finite(what, y)
    }

    /// Amortised codes `E(y)` `(n, l)` for inputs `y` `(n, d)`.
    ///
    /// # Errors
    /// [`Error::Shape`] / [`Error::NonFiniteInput`] for bad input.
    pub fn encode<'a>(&self, y: impl AsArray<'a, f32, Ix2>) -> Result<Array2<f32>> {
        let y: ArrayView2<'a, f32> = y.into();
        self.check_input("input Y", &y, self.input_dim)?;
        let enc = &self.trainer.encoder;
        let n = y.nrows();
        let mut out = Array2::zeros((n, enc.code_dim()));
        let bs = self.params.batch_size.max(1);
        let mut tape = None;
        for start in (0..n).step_by(bs) {
            let end = (start + bs).min(n);
            if tape
                .as_ref()
                .is_none_or(|t: &ListaTape<B::Mat>| t.batch_size() != end - start)
            {
                tape = Some(enc.tape(&self.be, end - start)?);
            }
            let tape = tape
                .as_mut()
                .ok_or_else(|| Error::shape("encode", "no tape"))?;
            let yb = self.be.upload(y.slice(s![start..end, ..]))?;
            let e = enc.forward(&self.be, &yb, tape)?;
            out.slice_mut(s![start..end, ..])
                .assign(&self.be.download(e)?);
        }
        Ok(out)
    }

    /// FISTA codes warm-started from (and drawn towards) the encoder's codes, with the model's
    /// inference parameters, in batches of the training batch size.
    ///
    /// # Errors
    /// As [`fista::solve_batches`].
    pub fn encode_fista<'a>(
        &self,
        y: impl AsArray<'a, f32, Ix2>,
    ) -> Result<(Array2<f32>, Vec<BatchReport>)> {
        let y: ArrayView2<'a, f32> = y.into();
        let e = self.encode(y)?;
        fista::solve_batches(
            &self.be,
            &self.trainer.decoder,
            y,
            Some(&e),
            &self.params.fista(),
            self.params.batch_size,
        )
    }

    /// Reconstructions `D(z)` `(n, d)` of codes `z` `(n, l)`.
    ///
    /// # Errors
    /// [`Error::Shape`] / [`Error::NonFiniteInput`] for bad input.
    pub fn decode<'a>(&self, z: impl AsArray<'a, f32, Ix2>) -> Result<Array2<f32>> {
        let z: ArrayView2<'a, f32> = z.into();
        let dec = &self.trainer.decoder;
        self.check_input("codes Z", &z, dec.code_dim())?;
        let n = z.nrows();
        if n == 0 {
            return Ok(Array2::zeros((0, self.input_dim)));
        }
        let zb = self.be.upload(z.view())?;
        let mut s = dec.scratch(&self.be, n)?;
        let mut out = self.be.zeros(n, self.input_dim)?;
        dec.forward(&self.be, &zb, &mut s, &mut out)?;
        self.be.download(&out)
    }

    /// The decoder's atoms `(l, d)` (linear: columns of `W`; one hidden layer: `D(e_i) - D(0)`).
    ///
    /// # Errors
    /// A backend error.
    pub fn atoms(&self) -> Result<Array2<f32>> {
        self.trainer.decoder.atoms(&self.be, 1.0)
    }

    /// PSNR, sparsity and energy of `samples` under amortised codes `E(y)`, in batches of the
    /// training batch size (the hinge per batch; a last batch of one sample has no hinge term).
    ///
    /// # Errors
    /// [`Error::Shape`] / [`Error::NonFiniteInput`] for bad input.
    pub fn evaluate(&self, samples: &Samples<'_>) -> Result<EvalStats> {
        self.evaluate_on(samples, &Solo)
    }

    /// [`SparseCoder::evaluate`] shared between the ranks of `comm`: each rank evaluates whole
    /// batches of its block of the samples ([`crate::comm::shard_blocks`]), and the sums are
    /// reduced over the ranks, so every rank returns the statistics of all the samples (the
    /// same batches as on one process; only the order of the final sums differs).
    ///
    /// # Errors
    /// As [`SparseCoder::evaluate`]; a communication error.
    pub fn evaluate_on(&self, samples: &Samples<'_>, comm: &dyn Comm) -> Result<EvalStats> {
        let y = samples.x;
        let (n, d) = y.dim();
        if d != self.input_dim {
            return Err(Error::shape(
                "samples",
                format!(
                    "are {:?}, the model takes {} columns",
                    y.dim(),
                    self.input_dim
                ),
            ));
        }
        let be = &self.be;
        let enc = &self.trainer.encoder;
        let dec = &self.trainer.decoder;
        let l = dec.code_dim();
        let ep = &self.params.energy;
        let bs = self.params.batch_size.max(1);
        let (mut psnr, mut zeros) = (0.0f64, 0usize);
        let mut terms = EnergyTerms::default();
        let mine = shard_blocks(n, bs, comm.rank(), comm.size());
        let mut start = mine.start;
        while start < mine.end {
            let end = (start + bs).min(mine.end);
            let m = end - start;
            let yb = be.upload(y.slice(s![start..end, ..]))?;
            let mut tape = enc.tape(be, m)?;
            let mut scratch = dec.scratch(be, m)?;
            let e = enc.forward(be, &yb, &mut tape)?;
            zeros += be.count_zeros(e)?;
            terms.recon += dec.recon(be, &yb, e, &mut scratch, None, true)?.f64();
            terms.l1 += ep.lambda * be.sum_abs(e)?.f64();
            if ep.beta > 0.0 && m >= 2 {
                let mut mean = be.zeros(1, l)?;
                let mut std = be.zeros(1, l)?;
                terms.hinge += energy::hinge(
                    be,
                    e,
                    ep.beta as f32,
                    ep.threshold as f32,
                    &mut mean,
                    &mut std,
                    None,
                    true,
                )?
                .f64();
            }
            // the residual D(E(y)) - y is in the scratch
            let r = scratch.residual_mut();
            let scale = match samples.scale {
                PixelScale::Constant(c) => c as f32,
                PixelScale::PerElement(map) => {
                    be.mul_assign(&be.upload(map.slice(s![start..end, ..]))?, r)?;
                    1.0
                }
            };
            psnr += be.psnr_sum(r, scale, PSNR_MSE_FLOOR as f32)?.f64();
            start = end;
        }
        if comm.size() > 1 {
            let mut v = [psnr, zeros as f64, terms.recon, terms.l1, terms.hinge];
            comm.sum_f64(&mut v)?;
            [psnr, _, terms.recon, terms.l1, terms.hinge] = v;
            zeros = v[1] as usize;
        }
        let nf = n.max(1) as f64;
        let terms = EnergyTerms {
            recon: terms.recon / nf,
            l1: terms.l1 / nf,
            hinge: terms.hinge / nf,
            proximity: 0.0,
        };
        Ok(EvalStats {
            n,
            psnr: psnr / nf,
            sparsity: zeros as f64 / (nf * l as f64),
            energy: terms.total(),
            terms,
        })
    }

    /// Writes the model as a checkpoint directory (see [`crate::train::checkpoint`]), atomically.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn save(&self, dir: &Path) -> Result<()> {
        checkpoint::save(self, dir)
    }

    /// Loads a checkpoint directory onto backend `be`.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for a missing, corrupt or inconsistent checkpoint.
    pub fn load_on(be: B, dir: &Path) -> Result<Self> {
        checkpoint::load(be, dir)
    }
}

impl SparseCoder<Cpu> {
    /// Loads a checkpoint directory on the CPU.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for a missing, corrupt or inconsistent checkpoint.
    pub fn load(dir: &Path) -> Result<Self> {
        checkpoint::load(Cpu, dir)
    }
}

trait F64 {
    fn f64(self) -> f64;
}

impl F64 for f32 {
    fn f64(self) -> f64 {
        self as f64
    }
}
