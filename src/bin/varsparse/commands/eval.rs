//! `varsparse eval`: PSNR, sparsity and energy of a split under a model's encoder codes.

use std::path::PathBuf;

use varsparse::backend::{Backend, Device, OnBackend};
use varsparse::data::SplitName;
use varsparse::io::write_json;
use varsparse::train::EvalStats;
use varsparse::{Result, SparseCoder};

use crate::args::load_model_split;

/// `eval`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint directory.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The split of the model's data.
    #[arg(long, value_enum, value_name = "NAME", default_value_t = SplitName::Test)]
    split: SplitName,
    /// Also write the JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The data directory (default: the one the model was trained with).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// The evaluation, on the job's backend.
struct Job<'a>(&'a Args);

impl OnBackend for Job<'_> {
    type Output = EvalStats;

    fn run<B: Backend<f32>>(self, make: &dyn Fn() -> Result<B>) -> Result<EvalStats> {
        let a = self.0;
        let model = SparseCoder::load_on(make()?, &a.model)?;
        let data = load_model_split(&a.model, a.data_dir.as_deref(), a.split)?;
        model.evaluate(&data.get(a.split)?.samples(data.pixel_scale))
    }
}

/// Runs `eval`.
pub fn run(a: Args, device: Device) -> Result<()> {
    let stats = device.run(Job(&a))?;
    let split = &a.split;
    let json = serde_json::json!({ "model": a.model, "split": split, "stats": stats });
    if let Some(path) = &a.json {
        write_json(path, &json)?;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json).unwrap_or_default()
    );
    eprintln!("| split | samples | PSNR (dB) | sparsity | energy |");
    eprintln!("|---|---|---|---|---|");
    eprintln!(
        "| {split} | {} | {:.2} | {:.1}% | {:.4} |",
        stats.n,
        stats.psnr,
        100.0 * stats.sparsity,
        stats.energy
    );
    Ok(())
}
