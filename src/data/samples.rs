//! Samples as the training and evaluation code see them: rows of an `(n, d)` array with the
//! pixel scale that maps a residual back to pixels for PSNR ([`PixelScale`]), and a training set
//! with its validation set ([`TrainData`]), whole or one rank's shard of it ([`RowShard`]).

use ndarray::{ArrayView2, s};

use crate::comm::shard;
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

    /// Rows `rows` of the samples (and of the per-element scale map).
    ///
    /// # Errors
    /// [`Error::Shape`] for rows past the end.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Result<Samples<'a>> {
        let n = self.x.nrows();
        if rows.start > rows.end || rows.end > n {
            return Err(Error::shape(
                "samples",
                format!("rows {rows:?} of {n} samples"),
            ));
        }
        Ok(Samples {
            x: self.x.slice_move(s![rows.clone(), ..]),
            scale: match self.scale {
                PixelScale::PerElement(m) if m.nrows() == n => {
                    PixelScale::PerElement(m.slice_move(s![rows, ..]))
                }
                // a map of another shape is reported by `validate`
                other => other,
            },
        })
    }
}

/// Which rows of a whole training set a rank's [`TrainData::train`] holds: rows
/// `offset..offset + n` of `n_total`, where `n` is its number of rows.
///
/// In a data-parallel fit ([`crate::train::FitOptions::comm`]) in which every rank passes a
/// `RowShard`, the ranks' shards must follow each other in rank order and cover the whole set
/// (`comm::shard(n_total, rank, ranks)` does: [`TrainData::keep_shard`]); each epoch the ranks
/// then exchange the rows of that epoch's batches (docs/SCALING.md), and the batches are those of
/// one process holding the whole set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowShard {
    /// The index of the shard's first row in the whole set.
    pub offset: usize,
    /// The rows of the whole set.
    pub n_total: usize,
}

impl RowShard {
    /// The rows `comm::shard(n, rank, ranks)` that rank `rank` keeps of a set of `n` rows that
    /// is not yet a shard (`current` is `None`).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `current` is already a shard, or `rank` is not below
    /// `ranks` (so also for `ranks = 0`).
    pub(crate) fn rows_to_keep(
        current: Option<RowShard>,
        n: usize,
        rank: usize,
        ranks: usize,
    ) -> Result<std::ops::Range<usize>> {
        if current.is_some() {
            return Err(Error::param(
                "training data",
                "a shard",
                "already a shard of a larger set",
            ));
        }
        if rank >= ranks {
            return Err(Error::param(
                "rank",
                rank,
                format!("not a rank of {ranks} ranks"),
            ));
        }
        Ok(shard(n, rank, ranks))
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
    /// `None`: `train` is the whole training set (in a data-parallel fit every rank holds all
    /// of it). `Some`: `train` (samples and per-element scale map) is this rank's shard of a
    /// larger set, as [`RowShard`] describes; every rank of the fit must then pass one.
    pub train_shard: Option<RowShard>,
}

impl<'a> TrainData<'a> {
    /// MNIST's training and validation splits (PSNR at the pixel scale 0.3081).
    pub fn mnist(m: &'a crate::data::Mnist) -> Self {
        let s = crate::data::MNIST_STD as f64;
        TrainData {
            train: Samples::new(m.train.images.view(), s),
            val: Samples::new(m.val.images.view(), s),
            image_shape: Some((m.rows, m.cols)),
            train_shard: None,
        }
    }

    /// Rank `rank`'s shard of the whole training set: its rows `comm::shard(n, rank, ranks)`
    /// (contiguous, in rank order) with their [`RowShard`]; the validation set is unchanged.
    /// For library users whose data is in memory on every rank; a rank that loads only its rows
    /// builds the `TrainData` with its [`RowShard`] directly.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if the data is already a shard, if `ranks` is 0 or if `rank`
    /// is not below it.
    pub fn keep_shard(self, rank: usize, ranks: usize) -> Result<TrainData<'a>> {
        let n = self.train.x.nrows();
        let rows = RowShard::rows_to_keep(self.train_shard, n, rank, ranks)?;
        Ok(TrainData {
            train: self.train.rows(rows.clone())?,
            train_shard: Some(RowShard {
                offset: rows.start,
                n_total: n,
            }),
            ..self
        })
    }
}
