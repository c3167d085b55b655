//! Sparse codes for a batch against a fixed dictionary: the non-negative lasso with FISTA.
//!
//!     cargo run --release --example encode_dictionary

use ndarray::Array2;
use varsparse::rng::{linear_uniform, rng};
use varsparse::{Cpu, Decoder, EnergyParams, FistaParams, fista};

fn main() -> varsparse::Result<()> {
    let (n, d, l) = (500, 64, 32);
    // A dictionary with unit-norm atoms, and inputs made of ~4 atoms each.
    let mut w: Array2<f32> = linear_uniform(&mut rng(0), d, l, l);
    for mut col in w.columns_mut() {
        let norm = col.dot(&col).sqrt();
        col /= norm;
    }
    let codes: Array2<f32> =
        linear_uniform::<f32>(&mut rng(1), n, l, 1).mapv(|v| (v - 0.75).max(0.0) * 8.0);
    let y = codes.dot(&w.t());

    let be = Cpu;
    let dict = Decoder::linear(&be, &w)?;
    let params = FistaParams {
        energy: EnergyParams {
            lambda: 1e-3,
            ..EnergyParams::default()
        },
        ..FistaParams::default()
    };
    let (z, reports) = fista::solve_batches(&be, &dict, &y, None, &params, 250)?;
    let zeros = z.iter().filter(|&&v| v == 0.0).count() as f64 / z.len() as f64;
    let true_zeros = codes.iter().filter(|&&v| v == 0.0).count() as f64 / codes.len() as f64;
    for r in &reports {
        println!(
            "rows {}..{}: {} iterations, {:.1} mean steps, energy {:.4}",
            r.start, r.end, r.report.iterations, r.report.mean_steps, r.report.total_energy
        );
    }
    println!(
        "sparsity {:.1}% (generating codes: {:.1}%)",
        100.0 * zeros,
        100.0 * true_zeros
    );
    Ok(())
}
