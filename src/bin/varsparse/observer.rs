//! Training progress: a progress bar on a terminal, one line per epoch on stderr, and
//! `log.jsonl` (one JSON line per epoch); Ctrl-C stops after the current batch.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use varsparse::train::{EpochSummary, Observer, RunInfo, StepStats};
use varsparse::{Error, Result};

/// Set by Ctrl-C; the fit loop stops between batches when it is.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C handler: the first press sets [`STOP`], the second exits at once.
pub fn stop_on_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this batch (Ctrl-C again to quit at once)");
    });
}

/// The CLI's [`Observer`].
pub struct CliObserver {
    bar: Option<ProgressBar>,
    log: std::fs::File,
    log_path: PathBuf,
    n: usize,
    sums: StepStats,
    error: Option<Error>,
}

impl CliObserver {
    /// Appends epoch lines to `log_path` (created if missing).
    pub fn new(log_path: PathBuf) -> Result<CliObserver> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| Error::Io {
                action: "opening",
                path: log_path.clone(),
                source,
            })?;
        Ok(CliObserver {
            bar: None,
            log,
            log_path,
            n: 0,
            sums: StepStats::default(),
            error: None,
        })
    }

    /// Clears the bar; the error that stopped the run from inside the observer, if any.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Observer for CliObserver {
    fn on_start(&mut self, info: &RunInfo) {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(info.batches_per_epoch as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {elapsed}<{eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            self.bar = Some(bar);
        }
        if info.start_epoch > 0 {
            eprintln!(
                "resuming at epoch {} of {}",
                info.start_epoch + 1,
                info.epochs
            );
        }
    }

    fn on_batch(&mut self, epoch: usize, batch: usize, s: &StepStats) -> ControlFlow<()> {
        if batch == 0 {
            self.n = 0;
            self.sums = StepStats::default();
        }
        self.n += 1;
        self.sums.psnr += s.psnr;
        self.sums.sparsity += s.sparsity;
        self.sums.inference_steps += s.inference_steps;
        self.sums.decoder_loss += s.energy.total() / s.n.max(1) as f64;
        if let Some(bar) = &self.bar {
            let k = self.n as f64;
            bar.set_prefix(format!("{}", epoch + 1));
            bar.set_position(batch as u64 + 1);
            bar.set_message(format!(
                "energy {:.4} PSNR {:.2} dB sparsity {:.1}% steps {:.1}",
                self.sums.decoder_loss / k,
                self.sums.psnr / k,
                100.0 * self.sums.sparsity / k,
                self.sums.inference_steps / k
            ));
        }
        ControlFlow::Continue(())
    }

    fn on_epoch(&mut self, s: &EpochSummary) -> ControlFlow<()> {
        let line = format!(
            "epoch {:>3}/{}: train energy {:.4} PSNR {:.2} dB steps {:.1}{} ({:.1} s) | val energy {:.4} PSNR {:.2} dB sparsity {:.1}%{}",
            s.epoch,
            s.epochs,
            s.train.energy,
            s.train.psnr,
            s.train.inference_steps,
            match s.train.safeguarded_batches {
                0 => String::new(),
                k => format!(", safeguard in {k} batches"),
            },
            s.train_seconds,
            s.val.energy,
            s.val.psnr,
            100.0 * s.val.sparsity,
            if s.best { " *" } else { "" }
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
        let json = serde_json::to_string(s).unwrap_or_default();
        if let Err(source) = writeln!(self.log, "{json}").and_then(|_| self.log.flush()) {
            self.error = Some(Error::Io {
                action: "writing",
                path: self.log_path.clone(),
                source,
            });
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}
