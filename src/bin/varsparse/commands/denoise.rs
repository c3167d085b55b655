//! `varsparse denoise`: Table 1 and Figure 5 for a model (`varsparse::experiments::denoise`).

use std::path::PathBuf;
use std::time::Instant;

use varsparse::backend::{Backend, Device, OnBackend};
use varsparse::data::SplitName;
use varsparse::experiments::denoise::{denoise, denoise_figure};
use varsparse::experiments::figures::save_gray_png;
use varsparse::io::write_json;
use varsparse::{Result, SparseCoder};

use crate::args::{create_dir, load_model_split, parent_dir};

/// `denoise`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint directory (e.g. runs/mnist-vdl/best).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Noise levels sigma in normalised units, comma-separated.
    #[arg(
        long,
        value_name = "S,S",
        value_delimiter = ',',
        default_value = "1,1.5"
    )]
    sigma: Vec<f64>,
    /// Seed of the noise.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// The split of the model's data.
    #[arg(long, value_enum, value_name = "NAME", default_value_t = SplitName::Test)]
    split: SplitName,
    /// Where to write denoise.json and the PNGs (default: the model directory's parent).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Images per row of the PNG.
    #[arg(long, value_name = "N", default_value_t = 10)]
    show: usize,
    /// The data directory (default: the one the model was trained with).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// The whole command, on the job's backend.
struct Job<'a>(&'a Args);

impl OnBackend for Job<'_> {
    type Output = ();

    fn run<B: Backend<f32>>(self, make: &dyn Fn() -> Result<B>) -> Result<()> {
        let a = self.0;
        let model = SparseCoder::load_on(make()?, &a.model)?;
        let data = load_model_split(&a.model, a.data_dir.as_deref(), a.split)?;
        let split = &a.split;
        let part = data.get(a.split)?;
        let t0 = Instant::now();
        let report = denoise(&model, &part.samples(data.pixel_scale), &a.sigma, a.seed)?;
        let out = a.out.clone().unwrap_or_else(|| parent_dir(&a.model));
        create_dir(&out)?;
        write_json(
            &out.join("denoise.json"),
            &serde_json::json!({ "model": a.model, "split": split, "report": report }),
        )?;
        if let Some(shape) = model.image_shape().or(data.image_shape) {
            for &sigma in &a.sigma {
                let img = denoise_figure(&model, part.x.view(), shape, sigma, a.seed, a.show)?;
                let path = out.join(format!("denoise_sigma{sigma}.png"));
                save_gray_png(&img, &path)?;
                eprintln!("wrote {}", path.display());
            }
        }
        println!("{}", report.to_markdown());
        eprintln!(
            "{split} split, noise seed {} ({:.1} s) -> {}",
            a.seed,
            t0.elapsed().as_secs_f64(),
            out.join("denoise.json").display()
        );
        Ok(())
    }
}

/// Runs `denoise`.
pub fn run(a: Args, device: Device) -> Result<()> {
    device.run(Job(&a))
}
