//! Denoising with the library API: train a tiny VDL model (1 epoch on 1,000 MNIST images), add
//! Gaussian noise to 500 test images, and report Table 1's columns; writes a Figure-5-like PNG.
//!
//!     cargo run --release --example denoise -- [out.png]

use varsparse::data::DataSpec;
use varsparse::experiments::denoise::{denoise, denoise_figure};
use varsparse::experiments::figures::save_gray_png;
use varsparse::{ModelParams, Preset};

fn main() -> varsparse::Result<()> {
    let out = std::env::args().nth(1).unwrap_or_else(|| {
        std::env::temp_dir()
            .join("varsparse-denoise.png")
            .display()
            .to_string()
    });
    let data = DataSpec::Mnist {
        dir: DataSpec::default_dir().join("mnist"),
        split_seed: varsparse::data::DEFAULT_SPLIT_SEED,
        train_limit: Some(1000),
    }
    .load()?;
    let model = ModelParams::preset(Preset::MnistVdl)
        .epochs(1)
        .validate()?
        .fit(&data.train_data(), &mut ())?;
    let test = data.split("test")?.head(500);
    let report = denoise(&model, &test.samples(data.pixel_scale), &[0.0, 1.0, 1.5], 0)?;
    print!("{}", report.to_markdown());
    let img = denoise_figure(&model, test.x.view(), (28, 28), 1.0, 0, 8)?;
    save_gray_png(&img, std::path::Path::new(&out))?;
    println!("figure -> {out}");
    Ok(())
}
