//! `varsparse train`: a preset of the paper (or a resumed run), every hyper-parameter
//! overridable, with checkpoints and `log.jsonl`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use varsparse::backend::{Backend, Device, OnBackend};
use varsparse::comm::{Comm, Timed};
use varsparse::data::LoadedData;
use varsparse::io::write_json;
use varsparse::train::checkpoint;
use varsparse::train::{BestEpoch, FitOptions, Observer, ParamOverrides, ValidParams};
use varsparse::{Error, ModelParams, Preset, Result};

use crate::args::{DataArgs, create_dir};
use crate::observer::{CliObserver, STOP, stop_on_ctrl_c};
use crate::ranks::Ranks;

/// `train`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// The paper's configuration (not needed with --resume).
    #[arg(long, value_enum, value_name = "PRESET")]
    preset: Option<Preset>,
    /// Epochs to run in all (default: the preset's, 200 MNIST / 100 patches).
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// The run directory (default: runs/PRESET, or the resumed run's).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Seed of the initialisation and the shuffles.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Continue a run: its directory RUN (resumes from RUN/latest) or a checkpoint directory;
    /// from RUN/latest the result is bit-identical to an uninterrupted run with the same seed
    /// (from RUN/best, the epochs after the best one are discarded and trained again).
    #[arg(long, value_name = "RUN")]
    resume: Option<PathBuf>,
    /// Stop when the validation energy has not improved for N epochs (off by default).
    #[arg(long, value_name = "N")]
    patience: Option<usize>,
    #[command(flatten)]
    hp: ParamOverrides,
    #[command(flatten)]
    data: DataArgs,
}

/// The fit loop, on the job's backend.
struct Fit<'a> {
    params: &'a ValidParams,
    data: &'a LoadedData,
    opts: &'a FitOptions<'a>,
    observer: &'a mut dyn Observer,
}

impl OnBackend for Fit<'_> {
    type Output = (usize, Option<BestEpoch>);

    fn run<B: Backend<f32>>(self, make: &dyn Fn() -> Result<B>) -> Result<Self::Output> {
        let m = self
            .params
            .fit_with(make()?, &self.data.train_data(), self.opts, self.observer)?;
        Ok((m.epochs_trained(), m.best_epoch()))
    }
}

/// Runs `train`.
pub fn run(a: Args, device: Device, ranks: &Ranks) -> Result<()> {
    let root = ranks.is_root();
    let (mut params, spec, out, resume) = match &a.resume {
        Some(path) => {
            let from = checkpoint::resume_from(path)?;
            if let Some(w) = &from.warning {
                eprintln!("warning: {w}");
            }
            let m = checkpoint::read_manifest(&from.checkpoint)?;
            if let Some(p) = a.preset
                && m.params.preset != Some(p)
            {
                return Err(Error::Checkpoint {
                    path: from.checkpoint.clone(),
                    detail: format!(
                        "was trained with preset {:?}, not {}: a run resumes with its own preset",
                        m.params.preset.map(|p| p.name()),
                        p.name()
                    ),
                });
            }
            let given = if a.data.chooses_data() {
                a.data.spec(m.params.preset)?
            } else {
                None
            };
            let spec = match given {
                Some(s) => s,
                None => crate::args::model_data(&from.checkpoint, a.data.data_dir.as_deref())?,
            };
            let out = a.out.clone().unwrap_or_else(|| from.run_dir.clone());
            (m.params, spec, out, Some(from.checkpoint))
        }
        None => {
            let preset = a.preset.ok_or_else(|| {
                Error::param("preset", "missing", "give --preset NAME (or --resume RUN)")
            })?;
            let spec = a
                .data
                .spec(Some(preset))?
                .ok_or_else(|| Error::param("data", "missing", "no data"))?;
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs").join(preset.name()));
            (ModelParams::preset(preset), spec, out, None)
        }
    };
    a.hp.apply(&mut params);
    if let Some(e) = a.epochs {
        params.epochs = e;
    }
    if let Some(s) = a.seed {
        params.seed = s;
    }
    if a.patience.is_some() {
        params.patience = a.patience;
    }
    let valid = params.validate()?;
    let config = serde_json::json!({ "params": valid.params(), "data": spec, "out": out });
    let config_text = serde_json::to_string_pretty(&config).unwrap_or_default();
    // rank 0 writes the run directory and prints; every rank loads the data and trains
    if root {
        eprintln!("configuration:\n{config_text}");
        if ranks.distributed() {
            eprintln!(
                "data-parallel over {} ranks: each batch of {} split by rows",
                ranks.comm.size(),
                valid.params().batch_size
            );
        }
        create_dir(&out)?;
        write_json(&out.join("config.json"), &config)?;
    }

    let t0 = Instant::now();
    // under mpirun each rank keeps only its shard of the training rows (an `.npy` source reads
    // only those; MNIST and patches are cut right after loading); every epoch's batches come
    // from one all-to-all (docs/SCALING.md)
    let data = spec.load_shard(ranks.comm.rank(), ranks.comm.size())?;
    let n_train = data.train_shard.map_or(data.train.x.nrows(), |s| s.n_total);
    if root {
        eprintln!(
            "data: {} training, {} validation samples of dimension {} ({:.1} s)",
            n_train,
            data.val.x.nrows(),
            data.train.x.ncols(),
            t0.elapsed().as_secs_f64()
        );
        if ranks.distributed() {
            eprintln!(
                "each rank holds its shard of the training samples (rank 0: {} rows)",
                data.train.x.nrows()
            );
        }
    }
    stop_on_ctrl_c();
    // under mpirun, the time in collectives is counted and reported
    let timed = ranks
        .distributed()
        .then(|| Arc::new(Timed::new(ranks.comm.clone())));
    let mut observer = match root {
        true => Some(CliObserver::new(out.join("log.jsonl"))?),
        false => None,
    };
    let opts = FitOptions {
        out_dir: Some(out.clone()),
        resume,
        stop: Some(&STOP),
        data_description: serde_json::to_string(&spec).ok(),
        comm: timed.clone().map(|t| t as Arc<dyn Comm>),
    };
    let mut quiet = ();
    let summary = device.run(Fit {
        params: &valid,
        data: &data,
        opts: &opts,
        observer: match &mut observer {
            Some(o) => o,
            None => &mut quiet,
        },
    });
    if let Some(o) = &mut observer {
        o.finish()?;
    }
    let (epochs, best) = summary?;
    if let (true, Some(t)) = (root, &timed) {
        let c = t.totals();
        eprintln!(
            "rank 0 of {}: {:.2} s of {:.2} s in {} collectives ({:.1} MB sent), waiting for the \
             other ranks included",
            ranks.comm.size(),
            c.seconds,
            t0.elapsed().as_secs_f64(),
            c.calls,
            c.bytes as f64 / 1e6
        );
    }
    if let (true, Some(b)) = (root, best) {
        eprintln!(
            "done: {epochs} epochs in {:.1} s; best validation energy {:.5} at epoch {} -> {}",
            t0.elapsed().as_secs_f64(),
            b.val_energy,
            b.epoch,
            out.join("best").display()
        );
    }
    Ok(())
}
