//! Denoising (the paper's Table 1 and Figure 5; docs/CONVENTIONS.md §8).
//!
//! For each noise level σ the clean samples `y` (normalised units) get additive Gaussian noise,
//! `y_σ = y + σ ε` with `ε ~ N(0, 1)`, **without clipping**, and the model's encoder codes them.
//! Reported, averaged over the samples:
//!
//! - sparsity of the clean codes `E(y)` and of the noisy codes `E(y_σ)` (fraction of entries
//!   exactly zero),
//! - `PSNR(y, D(E(y)))`, `PSNR(y, y_σ)` and `PSNR(y, D(E(y_σ)))`, in the authors' convention
//!   (pixel units, peak 1, per-image MSE floored at 1e-4, averaged over images; see
//!   [`crate::train::PSNR_MSE_FLOOR`]).
//!
//! The noise `ε` is drawn once from a `ChaCha8` stream seeded with `seed` and scaled by every σ
//! (common random numbers), so the rows of a report differ only by σ, and σ = 0 reproduces the
//! clean numbers exactly.

use ndarray::{Array2, ArrayView2, Axis, s};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::backend::Backend;
use crate::data::{PixelScale, Samples};
use crate::error::{Error, Result};
use crate::experiments::figures::{GridLayout, TileScale, tile_grid};
use crate::train::PSNR_MSE_FLOOR;
use crate::train::SparseCoder;

/// One noise level's results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DenoiseRow {
    /// The noise level σ (normalised units).
    pub sigma: f64,
    /// Samples evaluated.
    pub samples: usize,
    /// Sparsity of the clean codes `E(y)`.
    pub sparsity_clean: f64,
    /// Sparsity of the noisy codes `E(y_σ)`.
    pub sparsity_noisy: f64,
    /// `PSNR(y, D(E(y)))` in dB.
    pub psnr_recon_clean: f64,
    /// `PSNR(y, y_σ)` in dB (the noisy input itself).
    pub psnr_noisy_input: f64,
    /// `PSNR(y, D(E(y_σ)))` in dB (the denoised output).
    pub psnr_recon_noisy: f64,
}

/// A denoising evaluation: one row per σ.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DenoiseReport {
    /// The seed of the noise stream.
    pub seed: u64,
    /// One row per requested σ, in the order asked.
    pub rows: Vec<DenoiseRow>,
}

impl DenoiseReport {
    /// A markdown table of the rows (Table 1's columns).
    pub fn to_markdown(&self) -> String {
        let mut t = String::from(
            "| sigma | samples | sparsity E(y) | sparsity E(y_s) | PSNR D(E(y)) | PSNR y_s | PSNR D(E(y_s)) |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            t.push_str(&format!(
                "| {} | {} | {:.1}% | {:.1}% | {:.2} | {:.2} | {:.2} |\n",
                r.sigma,
                r.samples,
                100.0 * r.sparsity_clean,
                100.0 * r.sparsity_noisy,
                r.psnr_recon_clean,
                r.psnr_noisy_input,
                r.psnr_recon_noisy
            ));
        }
        t
    }
}

/// A standard normal draw (Box–Muller on two uniforms from the stream).
pub fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    // u1 in (0, 1] so that ln(u1) is finite.
    let u1 = 1.0 - crate::rng::unit_f64(rng);
    let u2 = crate::rng::unit_f64(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `n x d` standard normal draws, row-major, from a stream seeded with `seed`.
pub fn gaussian_noise(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let mut r = crate::rng::rng(seed);
    Array2::from_shape_simple_fn((n, d), || standard_normal(&mut r) as f32)
}

fn check_sigmas(sigmas: &[f64]) -> Result<()> {
    if sigmas.is_empty() {
        return Err(Error::param(
            "sigma",
            "(none)",
            "give at least one noise level",
        ));
    }
    if let Some(s) = sigmas.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
        return Err(Error::param(
            "sigma",
            s,
            "noise levels must be finite and >= 0",
        ));
    }
    Ok(())
}

/// Per-image PSNR `10 log10(1 / max(mean_j (scale (y - p))^2, floor))` summed over rows.
fn psnr_sum(
    y: ArrayView2<'_, f32>,
    p: ArrayView2<'_, f32>,
    scale: &PixelScale<'_>,
    row0: usize,
) -> f64 {
    let d = y.ncols().max(1) as f64;
    let mut total = 0.0;
    for (i, (yr, pr)) in y.outer_iter().zip(p.outer_iter()).enumerate() {
        let mut sse = 0.0f64;
        match scale {
            PixelScale::Constant(c) => {
                for (a, b) in yr.iter().zip(pr.iter()) {
                    let e = c * f64::from(a - b);
                    sse += e * e;
                }
            }
            PixelScale::PerElement(m) => {
                let mr = m.row(row0 + i);
                for ((a, b), c) in yr.iter().zip(pr.iter()).zip(mr.iter()) {
                    let e = f64::from(*c) * f64::from(a - b);
                    sse += e * e;
                }
            }
        }
        total += 10.0 * (1.0 / (sse / d).max(PSNR_MSE_FLOOR)).log10();
    }
    total
}

fn zeros(z: &Array2<f32>) -> usize {
    z.iter().filter(|v| **v == 0.0).count()
}

/// Table 1's numbers for `samples` at every σ in `sigmas`, with the encoder's codes.
///
/// Works in chunks of 2,000 samples, so memory stays small on large sets.
///
/// # Errors
/// [`Error::InvalidParameter`] for a negative or non-finite σ or an empty list;
/// [`Error::Shape`] / [`Error::NonFiniteInput`] for bad samples; a backend error.
pub fn denoise<B: Backend<f32>>(
    model: &SparseCoder<B>,
    samples: &Samples<'_>,
    sigmas: &[f64],
    seed: u64,
) -> Result<DenoiseReport> {
    check_sigmas(sigmas)?;
    let y = samples.x;
    let (n, d) = y.dim();
    if n == 0 {
        return Err(Error::shape("denoise: samples", "no samples"));
    }
    crate::scalar::check_finite("denoise: samples", &y)?;
    if let PixelScale::PerElement(m) = samples.scale
        && m.dim() != y.dim()
    {
        return Err(Error::shape(
            "denoise: pixel-scale map",
            format!("is {:?}, samples are {:?}", m.dim(), y.dim()),
        ));
    }
    let noise = gaussian_noise(n, d, seed);
    let l = model.decoder().code_dim();
    let mut acc = vec![[0.0f64; 4]; sigmas.len()];
    let (mut clean_zeros, mut clean_psnr) = (0usize, 0.0f64);
    const CHUNK: usize = 2000;
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        let yc = y.slice(s![start..end, ..]);
        let yo = yc.to_owned();
        let e = model.encode(&yo)?;
        clean_zeros += zeros(&e);
        clean_psnr += psnr_sum(yc, model.decode(&e)?.view(), &samples.scale, start);
        for (k, &sigma) in sigmas.iter().enumerate() {
            let mut noisy = yo.clone();
            noisy.scaled_add(sigma as f32, &noise.slice(s![start..end, ..]));
            let en = model.encode(&noisy)?;
            let rec = model.decode(&en)?;
            acc[k][0] += zeros(&en) as f64;
            acc[k][1] += psnr_sum(yc, noisy.view(), &samples.scale, start);
            acc[k][2] += psnr_sum(yc, rec.view(), &samples.scale, start);
        }
    }
    let nf = n as f64;
    let rows = sigmas
        .iter()
        .zip(&acc)
        .map(|(&sigma, a)| DenoiseRow {
            sigma,
            samples: n,
            sparsity_clean: clean_zeros as f64 / (nf * l as f64),
            sparsity_noisy: a[0] / (nf * l as f64),
            psnr_recon_clean: clean_psnr / nf,
            psnr_noisy_input: a[1] / nf,
            psnr_recon_noisy: a[2] / nf,
        })
        .collect();
    Ok(DenoiseReport { seed, rows })
}

/// Figure 5: four rows of `show` images each — the first `show` samples, their reconstructions
/// `D(E(y))`, the noisy inputs `y_σ` (same noise stream as [`denoise`]) and their reconstructions
/// `D(E(y_σ))`. All tiles share one gray range: that of the originals shown.
///
/// # Errors
/// [`Error::Shape`] if the samples are not `h * w` wide or fewer than `show`;
/// [`Error::InvalidParameter`] for a bad σ or `show = 0`; a backend error.
pub fn denoise_figure<B: Backend<f32>>(
    model: &SparseCoder<B>,
    samples: ArrayView2<'_, f32>,
    image_shape: (usize, usize),
    sigma: f64,
    seed: u64,
    show: usize,
) -> Result<image::GrayImage> {
    check_sigmas(&[sigma])?;
    if show == 0 {
        return Err(Error::param("show", 0, "draw at least one image"));
    }
    let (n, d) = samples.dim();
    if n < show {
        return Err(Error::shape(
            "denoise figure",
            format!("{show} images asked for, {n} samples given"),
        ));
    }
    let y = samples.slice(s![..show, ..]).to_owned();
    crate::scalar::check_finite("denoise figure: samples", &y.view())?;
    // The stream is drawn row by row, so its first `show` rows are those `denoise` adds to the
    // first `show` samples: no need to draw all `n`.
    let noise = gaussian_noise(show, d, seed);
    let mut noisy = y.clone();
    noisy.scaled_add(sigma as f32, &noise);
    let rec = model.decode(&model.encode(&y)?)?;
    let rec_noisy = model.decode(&model.encode(&noisy)?)?;
    let lo = y.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = y.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let scale = if hi > lo {
        TileScale::Fixed { lo, hi }
    } else {
        TileScale::PerTile
    };
    let all = ndarray::concatenate(
        Axis(0),
        &[y.view(), rec.view(), noisy.view(), rec_noisy.view()],
    )
    .map_err(|e| Error::shape("denoise figure", e.to_string()))?;
    tile_grid(all.view(), GridLayout::new(image_shape, show), scale)
}
