//! [`FistaWorkspace`]: the buffers of one batch size, allocated once and reused, and the
//! caller's forecast of the next solve's length.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::decoder::{Decoder, DecoderKind, DecoderScratch, HiddenGram};
use crate::scalar::Scalar;

use super::report::TraceRecord;

/// Reusable buffers for batches of `n` samples of one decoder's shape. Allocate once, reuse for
/// every batch of that size; [`solve`](crate::solve::fista::solve) allocates no matrices inside its iteration loop (the CPU
/// kernels take a few vectors of at most `n` or `l` entries per call).
pub struct FistaWorkspace<F: Scalar, B: Backend<F>> {
    pub(crate) n: usize,
    pub(crate) l: usize,
    pub(crate) z: B::Mat,
    pub(crate) z_old: B::Mat,
    pub(crate) x: B::Mat,
    pub(crate) g: B::Mat,
    pub(crate) flags: B::Mat,
    /// Each sample's iterations since its momentum restarted (adaptive restart only).
    pub(crate) age: B::Mat,
    pub(crate) mean: B::Mat,
    pub(crate) std: B::Mat,
    pub(crate) dec: DecoderScratch<B::Mat>,
    /// The Gram path's buffers.
    pub(crate) gram: Option<GramBuffers<F, B>>,
    pub(crate) trace: Vec<TraceRecord>,
    /// The caller's forecast of the next solve's mean steps per sample.
    pub(crate) forecast: Option<f64>,
}

impl<F: Scalar, B: Backend<F>> FistaWorkspace<F, B> {
    /// Buffers for `n` samples and `decoder`'s dimensions.
    ///
    /// # Errors
    /// [`Error::Shape`] if `n = 0`; a backend allocation error.
    pub fn new(be: &B, decoder: &Decoder<F, B>, n: usize) -> Result<Self> {
        if n == 0 {
            return Err(Error::shape(
                "FISTA workspace",
                "batch size must be at least 1",
            ));
        }
        let l = decoder.code_dim();
        let w = match decoder.kind() {
            DecoderKind::Linear => l,
            DecoderKind::OneHidden { hidden } => hidden,
        };
        let gram = Some(GramBuffers {
            g: be.zeros(w, w)?,
            c: be.zeros(n, w)?,
            q: be.zeros(n, w)?,
            w: B::Packed::default(),
            hidden: HiddenGram::default(),
        });
        Ok(FistaWorkspace {
            n,
            l,
            z: be.zeros(n, l)?,
            z_old: be.zeros(n, l)?,
            x: be.zeros(n, l)?,
            g: be.zeros(n, l)?,
            flags: be.zeros(n, 1)?,
            age: be.zeros(n, 1)?,
            mean: be.zeros(1, l)?,
            std: be.zeros(1, l)?,
            dec: decoder.scratch(be, n)?,
            gram,
            trace: Vec::new(),
            forecast: None,
        })
    }

    /// Sets (or, with `None`, clears) a forecast of the mean steps per sample
    /// ([`FistaReport::mean_steps`](crate::solve::fista::FistaReport::mean_steps)) of the solves that follow, typically the previous batch's
    /// in a sequence of similar batches (training, [`solve_batches`](crate::solve::fista::solve_batches)). The workspace never sets
    /// it itself.
    ///
    /// Only [`GradientPath::Auto`](crate::solve::fista::GradientPath::Auto) on a one-hidden-layer decoder with a constant step reads it:
    /// if the forecast samples, each run through the hidden-layer Gram path, would save more
    /// multiply-adds than its setup costs, that path runs from the first iteration instead of
    /// after [`HIDDEN_GRAM_AFTER`](crate::solve::fista::HIDDEN_GRAM_AFTER) direct ones. Both paths compute the same gradient, so the
    /// forecast changes the codes by rounding only.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a negative or non-finite forecast.
    pub fn set_forecast(&mut self, mean_steps: Option<f64>) -> Result<()> {
        if let Some(s) = mean_steps
            && !(s.is_finite() && s >= 0.0)
        {
            return Err(Error::param(
                "forecast mean steps",
                s,
                "must be finite and >= 0",
            ));
        }
        self.forecast = mean_steps;
        Ok(())
    }

    /// The forecast set by [`FistaWorkspace::set_forecast`](crate::solve::fista::FistaWorkspace::set_forecast).
    pub fn forecast(&self) -> Option<f64> {
        self.forecast
    }

    /// The batch size this workspace serves.
    pub fn batch_size(&self) -> usize {
        self.n
    }

    /// The codes of the last [`solve`](crate::solve::fista::solve).
    pub fn codes(&self) -> &B::Mat {
        &self.z
    }
}

/// The Gram path's buffers: `(G, C, Q)` of `(l, l)`, `(n, l)`, `(n, l)` for a linear decoder,
/// `(G2, C2, Q)` of `(m, m)`, `(n, m)`, `(n, m)` for the one-hidden-layer decoder, which also
/// packs `W2` for the setup's two products and `G2` and `W1` for the solve's iterations
/// ([`HiddenGram`]; the linear decoder's products take the sparse path instead, and its `G` is
/// small).
pub(crate) struct GramBuffers<F: Scalar, B: Backend<F>> {
    pub(crate) g: B::Mat,
    pub(crate) c: B::Mat,
    pub(crate) q: B::Mat,
    pub(crate) w: B::Packed,
    pub(crate) hidden: HiddenGram<B::Packed>,
}
