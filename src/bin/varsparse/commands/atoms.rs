//! `varsparse atoms`: the decoder's atoms as a grid PNG (on the CPU: it only draws).

use std::path::PathBuf;

use varsparse::{Result, SparseCoder};

/// `atoms`' flags.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint directory.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The PNG to write.
    #[arg(long, value_name = "FILE", default_value = "atoms.png")]
    out: PathBuf,
    /// Atoms per row.
    #[arg(long, value_name = "N", default_value_t = 16)]
    cols: usize,
}

/// Runs `atoms`.
pub fn run(a: Args) -> Result<()> {
    let model = SparseCoder::load(&a.model)?;
    let img = varsparse::experiments::figures::atoms_image(&model, a.cols)?;
    varsparse::experiments::figures::save_gray_png(&img, &a.out)?;
    eprintln!(
        "{} atoms, {}x{} pixels -> {}",
        model.decoder().code_dim(),
        img.width(),
        img.height(),
        a.out.display()
    );
    Ok(())
}
