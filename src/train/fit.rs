//! The fit loop: validated parameters and data → epochs of training steps → a [`SparseCoder`].
//!
//! ```text
//! let params = ModelParams::preset(Preset::MnistVdl).epochs(5).seed(1);
//! let model = params.validate()?.fit(&data, &mut ())?;
//! let codes = model.encode(&y)?;
//! ```
//!
//! The protocol is the released code's (docs/CONVENTIONS.md §4–§5): each epoch reshuffles the training
//! set (a seeded ChaCha8 stream per epoch, so a resumed run draws the same batches), runs one
//! training step per full batch of `batch_size` (the last partial batch is dropped), then
//! validates with amortised codes `z = E(y)` (PSNR of `D(E(y))`, sparsity of `E(y)`, the energy at
//! `E(y)`). All epochs run unless a patience is set; the checkpoint with the lowest mean
//! validation energy is kept as `best/` next to `latest/`.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ndarray::Array2;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::backend::{Backend, Cpu};
use crate::comm::{Comm, SHARD_ALIGN, Solo, shard_blocks};
use crate::data::{PixelScale, TrainData};
use crate::error::{Error, Result};
use crate::train::coder::SparseCoder;
use crate::train::lock::RunLock;
use crate::train::params::ValidParams;
use crate::train::shards::{self, Layout};
use crate::train::stats::{EpochSummary, TrainStats};
use crate::train::step::StepStats;

/// What a training run tells its observer before the first epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct RunInfo {
    /// The epoch training starts at (0-based; > 0 when resuming).
    pub start_epoch: usize,
    /// Epochs planned in all.
    pub epochs: usize,
    /// Training batches per epoch.
    pub batches_per_epoch: usize,
}

/// Watches a training run; every method may stop it by returning [`ControlFlow::Break`].
/// `()` is the observer that watches nothing.
pub trait Observer {
    /// Before the first epoch.
    fn on_start(&mut self, _info: &RunInfo) {}
    /// After every training step.
    fn on_batch(&mut self, _epoch: usize, _batch: usize, _stats: &StepStats) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    /// After every epoch's validation (and checkpoint).
    fn on_epoch(&mut self, _summary: &EpochSummary) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

impl Observer for () {}

/// Where and how [`ValidParams::fit_with`] keeps its checkpoints.
#[derive(Clone, Debug, Default)]
pub struct FitOptions<'a> {
    /// The run directory: `latest/` and `best/` checkpoints are written there after every
    /// epoch (atomically). `None`: no checkpoints.
    pub out_dir: Option<PathBuf>,
    /// Resume from this checkpoint directory (a run's `latest/`).
    pub resume: Option<PathBuf>,
    /// Stop between batches when this becomes `true` (e.g. set by a Ctrl-C handler); the run
    /// then ends with [`Error::Interrupted`] and the last complete checkpoint stays as it was.
    pub stop: Option<&'a AtomicBool>,
    /// A description of the data (recorded in the checkpoints).
    pub data_description: Option<String>,
    /// Train data-parallel with these ranks (docs/SCALING.md); `None`: this process alone.
    /// Every rank calls [`ValidParams::fit_with`] with the same parameters and validation
    /// samples, and either the whole training set or its shard of it
    /// ([`crate::data::TrainData::train_shard`]: contiguous shards in rank order, e.g. from
    /// [`crate::data::TrainData::keep_shard`]; then each epoch starts with one all-to-all that
    /// brings every rank the rows of its blocks of that epoch's batches). Each rank takes its
    /// rows of every global batch (the one-process run's; blocks of
    /// [`crate::comm::SHARD_ALIGN`] rows, split by [`crate::comm::shard_blocks`]) and its block
    /// of the validation samples, and the result is the one-process run's up to the order of
    /// floating-point sums (sharded or not, the same bits). Only rank 0 writes checkpoints
    /// (`out_dir` is ignored on the others), and the observers' and stop flag's requests to
    /// stop are shared, so that every rank stops between the same batches.
    pub comm: Option<Arc<dyn Comm>>,
}

impl ValidParams {
    /// Trains a model on the CPU without checkpoints.
    ///
    /// # Errors
    /// See [`ValidParams::fit_with`].
    pub fn fit(&self, data: &TrainData<'_>, observer: &mut dyn Observer) -> Result<SparseCoder> {
        self.fit_with(Cpu, data, &FitOptions::default(), observer)
    }

    /// Trains a model on backend `be`, with checkpoints and resumption as `opts` says.
    ///
    /// # Errors
    /// [`Error::Shape`] / [`Error::NonFiniteInput`] for unusable data (fewer samples than one
    /// batch, NaN); [`Error::Diverged`] naming the term that blew up; [`Error::Checkpoint`] for a
    /// checkpoint that cannot be resumed (another model kind, other hyper-parameters);
    /// [`Error::Interrupted`] when stopped by the observer or the stop flag; I/O errors. With
    /// several ranks: [`Error::Comm`] / [`Error::Shape`] on every rank when the ranks' training
    /// shards do not follow each other in rank order from row 0 and cover the set, differ in
    /// width or pixel-scale kind, or some ranks pass a shard and others the whole set; on every
    /// rank when one rank's shard holds a NaN (that rank names it); a communication error.
    pub fn fit_with<B: Backend<f32>>(
        &self,
        be: B,
        data: &TrainData<'_>,
        opts: &FitOptions<'_>,
        observer: &mut dyn Observer,
    ) -> Result<SparseCoder<B>> {
        let p = &self.0;
        let comm: Arc<dyn Comm> = opts.comm.clone().unwrap_or_else(|| Arc::new(Solo));
        let (rank, ranks) = (comm.rank(), comm.size());
        // the run directory, on the rank that writes it
        let out_dir = opts.out_dir.as_ref().filter(|_| rank == 0);
        // one writer per run directory, for the whole run
        let _lock = match out_dir {
            Some(dir) => Some(RunLock::acquire(dir)?),
            None => None,
        };
        if p.batch_size.div_ceil(SHARD_ALIGN) < ranks {
            return Err(Error::param(
                "batch size",
                p.batch_size,
                format!(
                    "a batch is split between {ranks} ranks in blocks of {SHARD_ALIGN} rows: it \
                     needs at least one block per rank"
                ),
            ));
        }
        // where the training rows are (one collective with several ranks)
        let layout = shards::layout(&*comm, data)?;
        match layout {
            Layout::Whole => data.train.validate("training samples")?,
            Layout::Sharded { .. } => {
                // each rank checks its shard; all fail together
                let local = data.train.validate("training samples");
                if comm.any(local.is_err())? {
                    local?;
                    return Err(Error::Comm(
                        "another rank's shard of the training samples is not usable (that rank \
                         reports why)"
                            .into(),
                    ));
                }
            }
        }
        data.val.validate("validation samples")?;
        let d = data.train.x.ncols();
        let n_train = layout.n_total(data.train.x.nrows());
        if data.val.x.ncols() != d {
            return Err(Error::shape(
                "data",
                format!(
                    "training samples have {d} columns, validation samples {}",
                    data.val.x.ncols()
                ),
            ));
        }
        let n_batches = n_train / p.batch_size;
        if n_batches == 0 {
            return Err(Error::shape(
                "training samples",
                format!("{n_train} samples make no full batch of {}", p.batch_size),
            ));
        }
        let pixel_scale = match data.train.scale {
            PixelScale::Constant(s) => s,
            PixelScale::PerElement(_) => 1.0,
        };
        let mut model = match &opts.resume {
            Some(dir) => {
                let mut m = SparseCoder::load_on(be, dir)?;
                m.check_resumable(dir, p, d)?;
                m.trainer.set_fista(p.fista());
                SparseCoder {
                    params: p.clone(),
                    ..m
                }
            }
            None => SparseCoder::init(be, p, d, pixel_scale, data.image_shape)?,
        };
        model.image_shape = model.image_shape.or(data.image_shape);
        model.trainer.set_comm(comm.clone());
        // this rank's rows of every batch, in blocks aligned as the GEMM's tiles
        let mine = shard_blocks(p.batch_size, SHARD_ALIGN, rank, ranks);
        if let Some(desc) = &opts.data_description {
            model.data_description = Some(desc.clone());
        }
        let start = model.epochs_done;
        observer.on_start(&RunInfo {
            start_epoch: start,
            epochs: p.epochs,
            batches_per_epoch: n_batches,
        });
        let mut batch = Array2::<f32>::zeros((mine.len(), d));
        let mut batch_map = match data.train.scale {
            PixelScale::PerElement(_) => Some(Array2::<f32>::zeros((mine.len(), d))),
            PixelScale::Constant(_) => None,
        };
        for epoch in start..p.epochs {
            let t0 = Instant::now();
            let order = epoch_order(p.seed, epoch, n_train);
            // sharded data: the rows of this rank's blocks of the epoch's batches that other ranks
            // hold, from one all-to-all (more only past the communicator's size limit)
            let mut groups = match &layout {
                Layout::Sharded { starts } => shards::groups(
                    &*comm,
                    starts,
                    &order,
                    p.batch_size,
                    n_batches,
                    shards::row_bytes(&data.train)?,
                )?,
                Layout::Whole => Vec::new(),
            }
            .into_iter();
            let mut epoch_rows: Option<shards::EpochRows> = None;
            let mut stats = TrainStats::default();
            for b in 0..n_batches {
                if comm.any(opts.stop.is_some_and(|s| s.load(Ordering::Relaxed)))? {
                    return Err(Error::Interrupted { epoch });
                }
                if let Layout::Sharded { starts } = &layout
                    && epoch_rows
                        .as_ref()
                        .is_none_or(|r| !r.batches().contains(&b))
                {
                    // the previous group's rows are freed first
                    drop(epoch_rows.take());
                    let batches = groups
                        .next()
                        .ok_or_else(|| Error::Comm(format!("no exchange planned for batch {b}")))?;
                    epoch_rows = Some(shards::exchange(
                        &*comm,
                        starts,
                        &data.train,
                        &order,
                        p.batch_size,
                        batches,
                    )?);
                }
                let (yb, map) = match &epoch_rows {
                    Some(rows) => {
                        rows.fill(b, &data.train, &mut batch, batch_map.as_mut());
                        let map = batch_map.as_ref().map(|m| model.be.upload(m.view()));
                        (model.be.upload(batch.view())?, map.transpose()?)
                    }
                    None => {
                        let rows = &order[b * p.batch_size..(b + 1) * p.batch_size][mine.clone()];
                        for (k, &i) in rows.iter().enumerate() {
                            batch.row_mut(k).assign(&data.train.x.row(i));
                        }
                        let yb = model.be.upload(batch.view())?;
                        let map = match (&mut batch_map, data.train.scale) {
                            (Some(m), PixelScale::PerElement(src)) => {
                                for (k, &i) in rows.iter().enumerate() {
                                    m.row_mut(k).assign(&src.row(i));
                                }
                                Some(model.be.upload(m.view())?)
                            }
                            _ => None,
                        };
                        (yb, map)
                    }
                };
                let s = model
                    .trainer
                    .step_scaled(&model.be, &yb, epoch, map.as_ref())?;
                stats.add(&s);
                if comm.any(observer.on_batch(epoch, b, &s).is_break())? {
                    return Err(Error::Interrupted { epoch });
                }
            }
            let train_seconds = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let val = model.evaluate_on(&data.val, &*comm)?;
            let val_seconds = t1.elapsed().as_secs_f64();
            if !val.energy.is_finite() {
                let term = val.terms.non_finite_term().unwrap_or("total");
                return Err(Error::Diverged {
                    algorithm: "training (validation)",
                    iteration: epoch,
                    term: format!("{term} energy"),
                });
            }
            model.epochs_done = epoch + 1;
            let is_best = model.best.is_none_or(|b| val.energy < b.val_energy);
            if is_best {
                model.best = Some(BestEpoch {
                    epoch: epoch + 1,
                    val_energy: val.energy,
                });
            }
            let summary = EpochSummary {
                epoch: epoch + 1,
                epochs: p.epochs,
                train: stats.mean(),
                val,
                best: is_best,
                train_seconds,
                val_seconds,
                lr_decoder: p.decoder_schedule.lr_at(p.lr_decoder, epoch),
                lr_encoder: p.lr_encoder,
            };
            model.last = Some(summary.clone());
            if let Some(dir) = out_dir {
                model.save(&dir.join("latest"))?;
                if is_best {
                    model.save(&dir.join("best"))?;
                }
            }
            if comm.any(observer.on_epoch(&summary).is_break())? {
                return Err(Error::Interrupted { epoch: epoch + 1 });
            }
            if let (Some(pat), Some(best)) = (p.patience, model.best)
                && epoch + 1 >= best.epoch + pat
            {
                break;
            }
        }
        Ok(model)
    }
}

/// The training order of epoch `epoch`: a Fisher–Yates permutation from the ChaCha8 stream
/// `epoch` of the run's seed, so that any epoch's batches can be drawn without replaying the
/// ones before it (this is what makes resumption bit-identical).
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    crate::data::sampling::permutation(n, &mut rng)
}

/// The epoch with the lowest validation energy so far.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BestEpoch {
    /// The epoch (1-based).
    pub epoch: usize,
    /// Its mean validation energy per sample.
    pub val_energy: f64,
}
