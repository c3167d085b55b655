//! Train a model on the bundled MNIST with the library API (no CLI), printing one line per epoch.
//!
//!     cargo run --release --example train_mnist -- [preset] [epochs] [train images]
//!
//! e.g. `cargo run --release --example train_mnist -- mnist-vdl 2 10000`.

use std::ops::ControlFlow;

use varsparse::data::DataSpec;
use varsparse::train::{EpochSummary, Observer};
use varsparse::{ModelParams, Preset};

struct Print;

impl Observer for Print {
    fn on_epoch(&mut self, s: &EpochSummary) -> ControlFlow<()> {
        println!(
            "epoch {}/{}: train {:.1} s (energy {:.4}, PSNR {:.2} dB, {:.1} FISTA steps) | val PSNR {:.2} dB, sparsity {:.1}%, energy {:.4}",
            s.epoch,
            s.epochs,
            s.train_seconds,
            s.train.energy,
            s.train.psnr,
            s.train.inference_steps,
            s.val.psnr,
            100.0 * s.val.sparsity,
            s.val.energy
        );
        ControlFlow::Continue(())
    }
}

fn main() -> varsparse::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let preset = Preset::from_name(args.get(1).map_or("mnist-vdl", String::as_str))?;
    let epochs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let limit: Option<usize> = args.get(3).and_then(|s| s.parse().ok());
    let data = DataSpec::Mnist {
        dir: DataSpec::default_dir().join("mnist"),
        split_seed: varsparse::data::DEFAULT_SPLIT_SEED,
        train_limit: limit,
    }
    .load()?;
    let model = ModelParams::preset(preset)
        .epochs(epochs)
        .validate()?
        .fit(&data.train_data(), &mut Print)?;
    let test = model.evaluate(&data.split("test")?.samples(data.pixel_scale))?;
    println!(
        "test: PSNR {:.2} dB, sparsity {:.1}%",
        test.psnr,
        100.0 * test.sparsity
    );
    Ok(())
}
