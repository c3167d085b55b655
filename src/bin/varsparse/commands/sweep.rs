//! `varsparse sweep`: Figure 4 (`varsparse::experiments::sweep`).

use std::path::PathBuf;
use std::time::Instant;

use varsparse::backend::{Backend, Device, OnBackend};
use varsparse::data::LoadedData;
use varsparse::experiments::sweep::{
    SweepConfig, SweepEvent, SweepResult, plot, run_sweep_on, to_csv, write_csv,
};
use varsparse::{Error, Preset, Result};

use crate::args::DataArgs;
use crate::observer::{STOP, stop_on_ctrl_c};

/// `sweep`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// Presets to sweep, comma-separated (one line each in the plot; same data for all).
    #[arg(
        long,
        value_enum,
        value_name = "PRESET,PRESET",
        value_delimiter = ',',
        required = true
    )]
    preset: Vec<Preset>,
    /// Sparsity weights lambda, comma-separated.
    #[arg(long, value_name = "F,F", value_delimiter = ',', required = true)]
    lambdas: Vec<f64>,
    /// Seeds per (preset, lambda): 1..=N.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seeds: u64,
    /// Epochs per run (default: the preset's).
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// The sweep directory.
    #[arg(long, value_name = "DIR", default_value = "runs/sweep")]
    out: PathBuf,
    #[command(flatten)]
    data: DataArgs,
}

/// The sweep, on the job's backends.
struct Job<'a> {
    cfg: &'a SweepConfig,
    data: &'a LoadedData,
}

impl OnBackend for Job<'_> {
    type Output = Vec<SweepResult>;

    fn run<B: Backend<f32>>(self, make: &dyn Fn() -> Result<B>) -> Result<Vec<SweepResult>> {
        run_sweep_on(make, self.cfg, self.data, Some(&STOP), |ev| match ev {
            SweepEvent::Skipped(r) => eprintln!(
                "skip   {} lambda {} seed {}: already done ({:.2} dB, {:.1}%)",
                r.preset,
                r.lambda,
                r.seed,
                r.test_psnr,
                100.0 * r.test_sparsity
            ),
            SweepEvent::Training {
                preset,
                lambda,
                seed,
                from,
                dir,
            } => eprintln!(
                "train  {} lambda {lambda} seed {seed} from epoch {from} -> {}",
                preset.name(),
                dir.display()
            ),
            SweepEvent::Finished(r) => eprintln!(
                "done   {} lambda {} seed {}: test {:.2} dB, {:.1}% zeros ({:.1} s)",
                r.preset,
                r.lambda,
                r.seed,
                r.test_psnr,
                100.0 * r.test_sparsity,
                r.seconds
            ),
        })
    }
}

/// Runs `sweep`.
pub fn run(a: Args, device: Device) -> Result<()> {
    if a.seeds == 0 {
        return Err(Error::param("seeds", 0, "must be >= 1"));
    }
    let spec = a
        .data
        .spec(a.preset.first().copied())?
        .ok_or_else(|| Error::param("data", "missing", "no data"))?;
    let cfg = SweepConfig {
        presets: a.preset.clone(),
        lambdas: a.lambdas.clone(),
        seeds: (1..=a.seeds).collect(),
        epochs: a.epochs,
        out: a.out.clone(),
        data_description: serde_json::to_string(&spec).ok(),
    };
    let t0 = Instant::now();
    let data = spec.load()?;
    stop_on_ctrl_c();
    let results = device.run(Job {
        cfg: &cfg,
        data: &data,
    })?;
    let csv = a.out.join("sweep.csv");
    write_csv(&results, &csv)?;
    let png = a.out.join("sweep.png");
    varsparse::experiments::figures::save_plot(
        &plot(&results, "Test PSNR against sparsity (encoder codes)"),
        &png,
    )?;
    print!("{}", to_csv(&results));
    eprintln!(
        "{} runs ({:.1} s) -> {}, {}",
        results.len(),
        t0.elapsed().as_secs_f64(),
        csv.display(),
        png.display()
    );
    Ok(())
}
