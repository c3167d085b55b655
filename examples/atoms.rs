//! Draw a decoder's atoms: train a tiny SDL model (1 epoch on 1,000 MNIST images), save it, load
//! it back as the CLI would, and write its 128 atoms as a 16-column grid PNG.
//!
//!     cargo run --release --example atoms -- [out.png]

use varsparse::data::DataSpec;
use varsparse::experiments::figures::{atoms_image, save_gray_png};
use varsparse::{ModelParams, Preset, SparseCoder};

fn main() -> varsparse::Result<()> {
    let out = std::env::args().nth(1).unwrap_or_else(|| {
        std::env::temp_dir()
            .join("varsparse-atoms.png")
            .display()
            .to_string()
    });
    let data = DataSpec::Mnist {
        dir: DataSpec::default_dir().join("mnist"),
        split_seed: varsparse::data::DEFAULT_SPLIT_SEED,
        train_limit: Some(1000),
    }
    .load()?;
    let model = ModelParams::preset(Preset::MnistSdl)
        .epochs(1)
        .validate()?
        .fit(&data.train_data(), &mut ())?;
    let dir = std::env::temp_dir().join(format!("varsparse-atoms-{}", std::process::id()));
    model.save(&dir)?;
    let loaded = SparseCoder::load(&dir)?;
    let img = atoms_image(&loaded, 16)?;
    save_gray_png(&img, std::path::Path::new(&out))?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{} atoms, {}x{} pixels -> {out}",
        loaded.decoder().code_dim(),
        img.width(),
        img.height()
    );
    Ok(())
}
