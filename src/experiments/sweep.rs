//! The sparsity–PSNR sweep of the paper's Figure 4: one model per (preset, λ, seed), each
//! evaluated on the test split with its encoder's codes.
//!
//! Every run lives in its own directory `OUT/PRESET_lambda{λ}_seed{S}/` (the usual `latest/`,
//! `best/` checkpoints and `log.jsonl`), and writes `result.json` once it is trained and
//! evaluated. The sweep is resumable: a run whose `result.json` matches the request is skipped;
//! a run interrupted mid-training continues from its `latest/` checkpoint (bit-identically, see
//! [`crate::train::ValidParams::fit_with`]). The best checkpoint (lowest validation energy) is
//! the one evaluated, as in the paper's protocol.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Cpu};
use crate::data::spec::LoadedData;
use crate::error::{Error, Result};
use crate::experiments::figures::{LinePlot, Series};
use crate::io::{write_atomic, write_json};
use crate::train::{FitOptions, ModelParams, Preset, SparseCoder};

/// What to sweep.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// The model kinds (one line each in the plot); all must train on the same data.
    pub presets: Vec<Preset>,
    /// The sparsity weights λ.
    pub lambdas: Vec<f64>,
    /// The seeds (initialisation and shuffles).
    pub seeds: Vec<u64>,
    /// Epochs per run (default: the preset's).
    pub epochs: Option<usize>,
    /// The sweep directory.
    pub out: PathBuf,
    /// A description of the data recorded in each run's checkpoints (e.g. the `DataSpec` as
    /// JSON, which lets the CLI's `eval` reload the data of a run).
    pub data_description: Option<String>,
}

/// One finished run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepResult {
    /// The preset's name.
    pub preset: String,
    /// λ.
    pub lambda: f64,
    /// The seed.
    pub seed: u64,
    /// Epochs trained.
    pub epochs: usize,
    /// The epoch of the kept (best validation energy) checkpoint.
    pub best_epoch: usize,
    /// Test PSNR of `D(E(y))` in dB.
    pub test_psnr: f64,
    /// Test sparsity of `E(y)`.
    pub test_sparsity: f64,
    /// Wall time of this run's training and evaluation in seconds (of the session that
    /// finished it).
    pub seconds: f64,
}

/// Progress of a sweep, for the caller to report.
#[derive(Debug)]
pub enum SweepEvent<'a> {
    /// A run already finished in an earlier session.
    Skipped(&'a SweepResult),
    /// A run starts training (from epoch `from`: non-zero when it resumes).
    Training {
        /// The preset.
        preset: Preset,
        /// λ.
        lambda: f64,
        /// The seed.
        seed: u64,
        /// The epoch it starts from.
        from: usize,
        /// Its directory.
        dir: &'a Path,
    },
    /// A run finished now.
    Finished(&'a SweepResult),
}

impl SweepConfig {
    fn validate(&self) -> Result<()> {
        if self.presets.is_empty() || self.lambdas.is_empty() || self.seeds.is_empty() {
            return Err(Error::param(
                "sweep",
                format!(
                    "{} presets, {} lambdas, {} seeds",
                    self.presets.len(),
                    self.lambdas.len(),
                    self.seeds.len()
                ),
                "needs at least one of each",
            ));
        }
        let kind = self.presets[0].data();
        if let Some(p) = self.presets.iter().find(|p| p.data() != kind) {
            return Err(Error::param(
                "preset",
                p.name(),
                "a sweep's presets must all train on the same data (MNIST or patches)",
            ));
        }
        if let Some(l) = self.lambdas.iter().find(|l| !(l.is_finite() && **l > 0.0)) {
            return Err(Error::param("lambda", l, "must be finite and > 0"));
        }
        if self.epochs == Some(0) {
            return Err(Error::param("epochs", 0, "must be >= 1"));
        }
        Ok(())
    }

    /// The parameters of one run.
    fn params(&self, preset: Preset, lambda: f64, seed: u64) -> ModelParams {
        let mut p = ModelParams::preset(preset).seed(seed);
        p.energy.lambda = lambda;
        if let Some(e) = self.epochs {
            p.epochs = e;
        }
        p
    }

    /// The directory of one run.
    pub fn run_dir(&self, preset: Preset, lambda: f64, seed: u64) -> PathBuf {
        self.out
            .join(format!("{}_lambda{lambda:e}_seed{seed}", preset.name()))
    }
}

/// Reads a finished run's `result.json`; `None` if it is missing, unreadable, larger than
/// [`MAX_JSON_BYTES`](crate::io::MAX_JSON_BYTES) or not a [`SweepResult`] (the run is then
/// trained again).
pub fn read_result(path: &Path) -> Option<SweepResult> {
    crate::io::read_json(path).ok()
}

/// Runs (or resumes) the sweep on `data`: trains what is missing, evaluates each run's best
/// checkpoint on the test split, and returns one result per (preset, λ, seed) in that order.
/// `stop` ends it between batches ([`Error::Interrupted`]; finished runs stay finished).
///
/// # Errors
/// [`Error::InvalidParameter`] for an empty grid, mixed data kinds or a bad λ; [`Error::Shape`]
/// when the data has no test split; training, checkpoint and I/O errors.
pub fn run_sweep(
    cfg: &SweepConfig,
    data: &LoadedData,
    stop: Option<&AtomicBool>,
    on_event: impl FnMut(&SweepEvent<'_>),
) -> Result<Vec<SweepResult>> {
    run_sweep_on(&|| Ok(Cpu), cfg, data, stop, on_event)
}

/// [`run_sweep`] on the backends `make` returns (one per training run and one per evaluation;
/// e.g. a [`crate::backend::Device`]'s through [`crate::backend::OnBackend`]). The checkpoints
/// and results do not depend on the backend beyond its rounding.
///
/// # Errors
/// As [`run_sweep`]; `make`'s error when the device cannot start.
pub fn run_sweep_on<B: Backend<f32>>(
    make: &dyn Fn() -> Result<B>,
    cfg: &SweepConfig,
    data: &LoadedData,
    stop: Option<&AtomicBool>,
    mut on_event: impl FnMut(&SweepEvent<'_>),
) -> Result<Vec<SweepResult>> {
    cfg.validate()?;
    let test = data
        .test
        .as_ref()
        .ok_or_else(|| Error::shape("sweep", "the data has no test split to evaluate on"))?;
    std::fs::create_dir_all(&cfg.out).map_err(|source| Error::Io {
        action: "creating",
        path: cfg.out.clone(),
        source,
    })?;
    let mut results = Vec::new();
    for &preset in &cfg.presets {
        for &lambda in &cfg.lambdas {
            for &seed in &cfg.seeds {
                let params = cfg.params(preset, lambda, seed);
                let dir = cfg.run_dir(preset, lambda, seed);
                let result_path = dir.join("result.json");
                if let Some(r) = read_result(&result_path)
                    && r.preset == preset.name()
                    && r.lambda == lambda
                    && r.seed == seed
                    && r.epochs == params.epochs
                {
                    on_event(&SweepEvent::Skipped(&r));
                    results.push(r);
                    continue;
                }
                let t0 = Instant::now();
                let latest = dir.join("latest");
                let done = crate::train::checkpoint::read_manifest(&latest)
                    .ok()
                    .filter(|m| {
                        // same run, perhaps asked for fewer epochs then: continue it
                        let mut same = m.params.clone();
                        same.epochs = params.epochs;
                        same.patience = params.patience;
                        same == params && m.epochs_done <= params.epochs
                    })
                    .map(|m| m.epochs_done);
                let from = done.unwrap_or(0);
                if from < params.epochs {
                    on_event(&SweepEvent::Training {
                        preset,
                        lambda,
                        seed,
                        from,
                        dir: &dir,
                    });
                    let opts = FitOptions {
                        out_dir: Some(dir.clone()),
                        resume: (from > 0).then(|| latest.clone()),
                        stop,
                        data_description: cfg.data_description.clone(),
                        comm: None,
                    };
                    params.clone().validate()?.fit_with(
                        make()?,
                        &data.train_data(),
                        &opts,
                        &mut (),
                    )?;
                }
                let model = SparseCoder::load_on(make()?, &dir.join("best"))?;
                let stats = model.evaluate(&test.samples(data.pixel_scale))?;
                let r = SweepResult {
                    preset: preset.name().to_string(),
                    lambda,
                    seed,
                    epochs: params.epochs,
                    best_epoch: model.best_epoch().map_or(0, |b| b.epoch),
                    test_psnr: stats.psnr,
                    test_sparsity: stats.sparsity,
                    seconds: t0.elapsed().as_secs_f64(),
                };
                write_json(&result_path, &r)?;
                on_event(&SweepEvent::Finished(&r));
                results.push(r);
            }
        }
    }
    Ok(results)
}

/// The results as CSV (`preset,lambda,seed,epochs,best_epoch,test_sparsity,test_psnr,seconds`).
pub fn to_csv(results: &[SweepResult]) -> String {
    let mut s =
        String::from("preset,lambda,seed,epochs,best_epoch,test_sparsity,test_psnr,seconds\n");
    for r in results {
        s.push_str(&format!(
            "{},{},{},{},{},{:.6},{:.4},{:.1}\n",
            r.preset,
            r.lambda,
            r.seed,
            r.epochs,
            r.best_epoch,
            r.test_sparsity,
            r.test_psnr,
            r.seconds
        ));
    }
    s
}

/// Writes [`to_csv`] to `path`, atomically.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_csv(results: &[SweepResult], path: &Path) -> Result<()> {
    let text = to_csv(results);
    write_atomic(path, |w| std::io::Write::write_all(w, text.as_bytes()))
}

/// Figure 4: test PSNR against test sparsity (in %), one line per preset through its λ values
/// (mean over seeds, error bars one standard deviation of the PSNR).
pub fn plot(results: &[SweepResult], title: &str) -> LinePlot {
    let mut plot = LinePlot::new(title, "sparsity of E(y) (%)", "PSNR of D(E(y)) (dB)");
    // the curves fall from the upper left to the lower right
    plot.legend = crate::experiments::figures::LegendCorner::UpperRight;
    let mut presets: Vec<&str> = Vec::new();
    for r in results {
        if !presets.contains(&r.preset.as_str()) {
            presets.push(&r.preset);
        }
    }
    for p in presets {
        let mut lambdas: Vec<f64> = results
            .iter()
            .filter(|r| r.preset == p)
            .map(|r| r.lambda)
            .collect();
        lambdas.sort_by(f64::total_cmp);
        lambdas.dedup();
        let mut pts = Vec::new();
        let mut err = Vec::new();
        for l in lambdas {
            let rs: Vec<&SweepResult> = results
                .iter()
                .filter(|r| r.preset == p && r.lambda == l)
                .collect();
            let n = rs.len() as f64;
            let sp = rs.iter().map(|r| 100.0 * r.test_sparsity).sum::<f64>() / n;
            let ps = rs.iter().map(|r| r.test_psnr).sum::<f64>() / n;
            let sd = if rs.len() > 1 {
                (rs.iter().map(|r| (r.test_psnr - ps).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
            } else {
                0.0
            };
            pts.push((sp, ps));
            err.push(sd);
        }
        let mut idx: Vec<usize> = (0..pts.len()).collect();
        idx.sort_by(|&a, &b| pts[a].0.total_cmp(&pts[b].0));
        plot.series.push(Series {
            label: p.to_string(),
            points: idx.iter().map(|&i| pts[i]).collect(),
            err: Some(idx.iter().map(|&i| err[i]).collect()),
        });
    }
    plot
}
