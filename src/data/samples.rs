//! Samples as the training and evaluation code see them: rows of an `(n, d)` array with the
//! pixel scale that maps a residual back to pixels for PSNR ([`PixelScale`]), and a training set
//! with its validation set ([`TrainData`]).

use ndarray::ArrayView2;

use crate::error::{Error, Result};
use crate::scalar::check_finite;

/// How a residual in normalised units maps to pixel units for PSNR.
#[derive(Clone, Copy, Debug)]
pub enum PixelScale<'a> {
    /// Every element by one factor (MNIST: its normalisation's std, 0.3081).
    Constant(f64),
    /// Element by element, `(n, d)` like the samples (natural patches: the LCN's local std times
    /// the grey-level std 0.259).
    PerElement(ArrayView2<'a, f32>),
}

/// Samples (rows) with their pixel scale.
#[derive(Clone, Copy, Debug)]
pub struct Samples<'a> {
    /// The samples, `(n, d)`, normalised.
    pub x: ArrayView2<'a, f32>,
    /// How to measure PSNR on them.
    pub scale: PixelScale<'a>,
}

impl<'a> Samples<'a> {
    /// Samples with a constant pixel scale.
    pub fn new(x: ArrayView2<'a, f32>, scale: f64) -> Self {
        Samples {
            x,
            scale: PixelScale::Constant(scale),
        }
    }

    /// Checks that the samples are finite and that a per-element scale has their shape.
    ///
    /// # Errors
    /// [`Error::NonFiniteInput`] naming the first NaN or infinity; [`Error::Shape`].
    pub fn validate(&self, what: &str) -> Result<()> {
        check_finite(what, &self.x)?;
        if let PixelScale::PerElement(m) = self.scale
            && m.dim() != self.x.dim()
        {
            return Err(Error::shape(
                what,
                format!(
                    "pixel-scale map is {:?}, samples are {:?}",
                    m.dim(),
                    self.x.dim()
                ),
            ));
        }
        Ok(())
    }
}

/// A training set and a validation set.
#[derive(Clone, Copy, Debug)]
pub struct TrainData<'a> {
    /// Training samples.
    pub train: Samples<'a>,
    /// Validation samples.
    pub val: Samples<'a>,
    /// The image shape `(height, width)` of a sample, for display (atoms); `None` if not images.
    pub image_shape: Option<(usize, usize)>,
}

impl<'a> TrainData<'a> {
    /// MNIST's training and validation splits (PSNR at the pixel scale 0.3081).
    pub fn mnist(m: &'a crate::data::Mnist) -> Self {
        let s = crate::data::MNIST_STD as f64;
        TrainData {
            train: Samples::new(m.train.images.view(), s),
            val: Samples::new(m.val.images.view(), s),
            image_shape: Some((m.rows, m.cols)),
        }
    }
}
