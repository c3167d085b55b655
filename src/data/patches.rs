//! Natural image patches with local contrast normalisation (REFERENCE §7).
//!
//! The pipeline, as the released code's `imagenet_LCN_patches.py` runs it on ImageNet, here on
//! the photographs in `data/natural/`:
//!
//! 1. **Images.** Each image is decoded, converted to grey with `image`'s luma conversion
//!    (Rec. 709 weights 0.2126 R + 0.7152 G + 0.0722 B on the stored values; torchvision's
//!    `Grayscale` uses the Rec. 601 weights 0.299/0.587/0.114), kept in `f32` on `[0, 1]`, and
//!    resized with a triangle (bilinear) filter so that its shorter side is 256 pixels and the
//!    longer side is `⌊long · 256 / short⌋` (torchvision's `Resize(256)` rounding). It is then
//!    standardised with the fixed grey mean and std of ImageNet: `(x - 0.457) / 0.259`.
//! 2. **Candidates.** A candidate is a 52×52 crop: an image drawn uniformly (not weighted by
//!    area), then its top row and left column drawn uniformly among the positions where the crop
//!    fits, in that order, from `ChaCha8Rng::seed_from_u64(seed)` through
//!    [`uniform_below`](super::sampling::uniform_below).
//! 3. **Local contrast normalisation** ([`lcn`]), on a batch of candidates at a time
//!    ([`PatchParams::lcn_batch`], 250 as in the released code's data loader). With `G` the
//!    13×13 Gaussian of σ = 5 normalised to sum 1 ([`gaussian_kernel`]) and `*` a 'valid'
//!    correlation (no padding): `M = G * x` (52→40), `C = x[6..46, 6..46] − M`,
//!    `V = max(G * C², 0)` (40→28), `σ = sqrt(V)`. Every σ below the mean of σ over all pixels
//!    of all patches of the batch is raised to that mean, then σ is floored at `1e-4`. The
//!    patch is `C[6..34, 6..34] / σ` (28×28); its local mean `M[6..34, 6..34]` and its σ map are
//!    kept, so that a reconstruction can be mapped back to pixels ([`PatchSet::to_pixels`]).
//! 4. **Filter.** A patch is kept if the standard deviation of its 784 output values is at
//!    least [`PatchParams::std_threshold`] (0.5). As in the released code (`img.std((1,2,3))`
//!    in PyTorch), this is the *unbiased* standard deviation (divisor 783) of the normalised
//!    28×28 output patch.
//! 5. Batches are drawn until `n_train + n_val + n_test` patches are kept; the kept patches, in
//!    the order drawn, fill the training split, then the validation split, then the test split.
//!
//! The Gaussian is applied as two separable 13-tap passes in `f32`.

use std::path::Path;

use image::imageops::FilterType;
use ndarray::{Array2, ArrayView2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::DataError;
use super::sampling::uniform_below;

/// Mean of ImageNet's grey levels on the `[0, 1]` scale (subtracted before LCN).
pub const GRAY_MEAN: f32 = 0.457;

/// Standard deviation of ImageNet's grey levels on the `[0, 1]` scale.
pub const GRAY_STD: f32 = 0.259;

/// Length of the shorter side of an image after resizing.
pub const SHORT_SIDE: u32 = 256;

/// Side of a candidate crop.
pub const CROP_SIZE: usize = 52;

/// Side of an output patch: the crop minus two 'valid' 13×13 filterings (52 − 2·12).
pub const PATCH_SIZE: usize = 28;

/// Side of the Gaussian window.
pub const KERNEL_SIZE: usize = 13;

/// Standard deviation of the Gaussian window, in pixels.
pub const KERNEL_SIGMA: f64 = 5.0;

/// Floor of the local standard deviation, applied after raising it to the batch mean.
pub const SIGMA_FLOOR: f32 = 1e-4;

/// Candidates per LCN batch in the released code (its data loader's batch size).
pub const DEFAULT_LCN_BATCH: usize = 250;

/// A patch is kept if the (unbiased) std of its output is at least this.
pub const DEFAULT_STD_THRESHOLD: f32 = 0.5;

/// The patch seed every preset uses.
pub const DEFAULT_PATCH_SEED: u64 = 0;

/// Candidates drawn per requested patch before generation gives up
/// ([`DataError::TooFewPatches`]); on the shipped images about two candidates are drawn per
/// kept patch.
pub const MAX_CANDIDATES_PER_PATCH: usize = 100;

/// Largest image, in pixels after resizing, that [`load_natural_image`] accepts (an aspect ratio
/// of 4096:1 at a shorter side of 256).
const MAX_RESIZED_PIXELS: u64 = 1 << 28;

/// Half-width of the window: the offset of a 'valid' filtering's output in its input.
const HALF: usize = KERNEL_SIZE / 2;
/// Side of the local mean `M` and of the centred crop `C`.
const MID_SIZE: usize = CROP_SIZE - KERNEL_SIZE + 1;
const CROP_LEN: usize = CROP_SIZE * CROP_SIZE;
const MID_LEN: usize = MID_SIZE * MID_SIZE;
const PATCH_LEN: usize = PATCH_SIZE * PATCH_SIZE;

/// How many patches to generate and how.
///
/// | field | default | valid |
/// |---|---|---|
/// | `n_train` | 200,000 | any |
/// | `n_val` | 20,000 | any |
/// | `n_test` | 20,000 | any |
/// | `seed` | [`DEFAULT_PATCH_SEED`] | any |
/// | `std_threshold` | 0.5 | finite, ≥ 0 |
/// | `lcn_batch` | 250 | ≥ 1 |
#[derive(Debug, Clone, PartialEq)]
pub struct PatchParams {
    /// Training patches.
    pub n_train: usize,
    /// Validation patches.
    pub n_val: usize,
    /// Test patches.
    pub n_test: usize,
    /// Seed of the `ChaCha8Rng` that draws the crops.
    pub seed: u64,
    /// Minimum (unbiased) standard deviation of a kept output patch.
    pub std_threshold: f32,
    /// Candidates normalised together: the "batch" over which the mean of σ is taken.
    pub lcn_batch: usize,
}

impl Default for PatchParams {
    fn default() -> Self {
        Self {
            n_train: 200_000,
            n_val: 20_000,
            n_test: 20_000,
            seed: DEFAULT_PATCH_SEED,
            std_threshold: DEFAULT_STD_THRESHOLD,
            lcn_batch: DEFAULT_LCN_BATCH,
        }
    }
}

impl PatchParams {
    /// Total number of patches requested.
    ///
    /// # Errors
    ///
    /// [`DataError::InvalidParameter`] if the sum overflows `usize`.
    pub fn total(&self) -> Result<usize, DataError> {
        self.n_train
            .checked_add(self.n_val)
            .and_then(|n| n.checked_add(self.n_test))
            .ok_or_else(|| DataError::InvalidParameter {
                name: "n_train + n_val + n_test",
                value: format!("{} + {} + {}", self.n_train, self.n_val, self.n_test),
                reason: "the sum overflows".into(),
            })
    }

    /// Checks every field against the table above.
    ///
    /// # Errors
    ///
    /// [`DataError::InvalidParameter`] naming the first invalid field.
    pub fn validate(&self) -> Result<(), DataError> {
        self.total()?;
        if !(self.std_threshold.is_finite() && self.std_threshold >= 0.0) {
            return Err(DataError::InvalidParameter {
                name: "std_threshold",
                value: self.std_threshold.to_string(),
                reason: "must be finite and non-negative".into(),
            });
        }
        if self.lcn_batch == 0 {
            return Err(DataError::InvalidParameter {
                name: "lcn_batch",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// Locally contrast-normalised patches with what is needed to undo the normalisation.
///
/// All three arrays are `(n, 784)`, one 28×28 patch per row, flattened row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchSet {
    /// The normalised patches `C / σ`.
    pub patches: Array2<f32>,
    /// The local mean `M` over each output pixel, in standardised units.
    pub local_mean: Array2<f32>,
    /// The local standard deviation σ each output pixel was divided by (after the batch-mean
    /// and `1e-4` floors), in standardised units.
    pub local_std: Array2<f32>,
}

impl PatchSet {
    /// An empty set (no patches).
    fn with_len(n: usize) -> Self {
        Self {
            patches: Array2::zeros((n, PATCH_LEN)),
            local_mean: Array2::zeros((n, PATCH_LEN)),
            local_std: Array2::zeros((n, PATCH_LEN)),
        }
    }

    /// Number of patches.
    pub fn len(&self) -> usize {
        self.patches.nrows()
    }

    /// Whether the set holds no patches.
    pub fn is_empty(&self) -> bool {
        self.patches.nrows() == 0
    }

    /// Maps `y`, patches on the normalised scale (these patches or reconstructions of them, row
    /// for row), back to grey levels on the `[0, 1]` scale:
    /// `(y · σ + M) · GRAY_STD + GRAY_MEAN`, without clamping. Applied to
    /// [`patches`](Self::patches) it recovers the centre 28×28 of the source crops.
    ///
    /// # Errors
    ///
    /// [`DataError::Shape`] unless `y` has the shape of [`patches`](Self::patches).
    pub fn to_pixels(&self, y: ArrayView2<'_, f32>) -> Result<Array2<f32>, DataError> {
        if y.dim() != self.patches.dim() {
            return Err(DataError::Shape {
                context: "PatchSet::to_pixels: y",
                detail: format!(
                    "expected {:?} (one row per patch), got {:?}",
                    self.patches.dim(),
                    y.dim()
                ),
            });
        }
        let mut out = y.to_owned();
        ndarray::Zip::from(&mut out)
            .and(&self.local_std)
            .and(&self.local_mean)
            .for_each(|v, &s, &m| *v = (*v * s + m) * GRAY_STD + GRAY_MEAN);
        Ok(out)
    }
}

/// Training, validation and test patches.
#[derive(Debug, Clone, PartialEq)]
pub struct Patches {
    /// Training patches.
    pub train: PatchSet,
    /// Validation patches.
    pub val: PatchSet,
    /// Test patches.
    pub test: PatchSet,
    /// Candidate crops drawn (kept or not), a multiple of the LCN batch.
    pub candidates: usize,
}

/// A grey image, resized and standardised, ready to be cropped.
#[derive(Debug, Clone, PartialEq)]
pub struct NaturalImage {
    /// The file name it was read from.
    pub name: String,
    /// Grey levels `(x - GRAY_MEAN) / GRAY_STD`, `(height, width)`.
    pub pixels: Array2<f32>,
}

/// The normalised 1-D Gaussian: `g[k] ∝ exp(-(k - 6)² / (2 · 5²))`, `k = 0..13`, summing to 1.
/// The 2-D window is `g[a] · g[b]` ([`gaussian_kernel`]).
pub fn gaussian_kernel_1d() -> [f32; KERNEL_SIZE] {
    let centre = (KERNEL_SIZE - 1) as f64 / 2.0;
    let w: [f64; KERNEL_SIZE] = std::array::from_fn(|k| {
        let t = (k as f64 - centre) / KERNEL_SIGMA;
        (-0.5 * t * t).exp()
    });
    let sum: f64 = w.iter().sum();
    w.map(|v| (v / sum) as f32)
}

/// The 13×13 Gaussian window of σ = 5 normalised to sum 1, as the released code builds it
/// (`get_gaussian_filter`): the outer product of [`gaussian_kernel_1d`] with itself.
pub fn gaussian_kernel() -> Array2<f32> {
    let g = gaussian_kernel_1d();
    Array2::from_shape_fn((KERNEL_SIZE, KERNEL_SIZE), |(a, b)| g[a] * g[b])
}

/// Local contrast normalisation of a batch of 52×52 crops, `(n, 2704)` flattened row-major, on
/// the standardised scale. The mean of σ that low values are raised to is taken over the whole
/// batch (see the [module documentation](self) for the formulae).
///
/// # Errors
///
/// [`DataError::Shape`] unless `crops` has 2704 columns.
pub fn lcn(crops: ArrayView2<'_, f32>) -> Result<PatchSet, DataError> {
    if crops.ncols() != CROP_LEN {
        return Err(DataError::Shape {
            context: "lcn: crops",
            detail: format!(
                "expected (n, {CROP_LEN}) ({CROP_SIZE}x{CROP_SIZE} crops), got {:?}",
                crops.dim()
            ),
        });
    }
    let n = crops.nrows();
    let mut ws = LcnWorkspace::new(n);
    for (dst, row) in ws.crops.chunks_exact_mut(CROP_LEN).zip(crops.rows()) {
        for (d, &s) in dst.iter_mut().zip(row.iter()) {
            *d = s;
        }
    }
    ws.run(n);
    let to_array = |v: &[f32]| {
        Array2::from_shape_vec((n, PATCH_LEN), v[..n * PATCH_LEN].to_vec()).map_err(|e| {
            DataError::Shape {
                context: "lcn: output",
                detail: e.to_string(),
            }
        })
    };
    Ok(PatchSet {
        patches: to_array(&ws.out)?,
        local_mean: to_array(&ws.mean)?,
        local_std: to_array(&ws.sigma)?,
    })
}

/// Loads one image: grey, resized so that its shorter side is 256, standardised.
///
/// # Errors
///
/// [`DataError::Image`] if it cannot be decoded, [`DataError::BadImageSize`] if it is empty or
/// its aspect ratio is more extreme than 4096:1.
pub fn load_natural_image(path: &Path) -> Result<NaturalImage, DataError> {
    let name = path
        .file_name()
        .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let img = image::open(path).map_err(|source| DataError::Image {
        path: path.to_path_buf(),
        source,
    })?;
    let grey = img.to_luma32f();
    let (w, h) = grey.dimensions();
    let bad_size = |reason: String| DataError::BadImageSize {
        name: name.clone(),
        width: w as usize,
        height: h as usize,
        reason,
    };
    if w == 0 || h == 0 {
        return Err(bad_size("the image is empty".into()));
    }
    // torchvision's Resize(256): the shorter side becomes 256, the longer one
    // floor(long * 256 / short).
    let (long, short) = (u64::from(w.max(h)), u64::from(w.min(h)));
    let new_long = long * u64::from(SHORT_SIDE) / short;
    if new_long * u64::from(SHORT_SIDE) > MAX_RESIZED_PIXELS {
        return Err(bad_size(format!(
            "resizing its shorter side to {SHORT_SIDE} would give more than \
             {MAX_RESIZED_PIXELS} pixels"
        )));
    }
    // new_long * 256 <= MAX_RESIZED_PIXELS < 2^32, so new_long fits in u32.
    let new_long = new_long as u32;
    let (nw, nh) = if w <= h {
        (SHORT_SIDE, new_long)
    } else {
        (new_long, SHORT_SIDE)
    };
    let resized = image::imageops::resize(&grey, nw, nh, FilterType::Triangle);
    let data: Vec<f32> = resized
        .into_raw()
        .into_iter()
        .map(|v| (v - GRAY_MEAN) / GRAY_STD)
        .collect();
    let pixels = Array2::from_shape_vec((nh as usize, nw as usize), data).map_err(|e| {
        DataError::Shape {
            context: "load_natural_image: resized image",
            detail: e.to_string(),
        }
    })?;
    Ok(NaturalImage { name, pixels })
}

/// Loads every `.png`, `.jpg` and `.jpeg` file of `dir` (case-insensitive extensions), sorted
/// by file name, with [`load_natural_image`].
///
/// # Errors
///
/// [`DataError::Io`] if the directory cannot be listed, [`DataError::NoImages`] if it holds no
/// image, and those of [`load_natural_image`].
pub fn load_natural_images(dir: &Path) -> Result<Vec<NaturalImage>, DataError> {
    let io_err = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let path = entry.map_err(io_err)?.path();
        let is_image = path.extension().is_some_and(|e| {
            ["png", "jpg", "jpeg"]
                .iter()
                .any(|x| e.eq_ignore_ascii_case(x))
        });
        if is_image && path.is_file() {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(DataError::NoImages {
            dir: dir.to_path_buf(),
        });
    }
    paths.sort();
    paths.iter().map(|p| load_natural_image(p)).collect()
}

/// Generates the training, validation and test patches from the images in `dir`
/// ([`load_natural_images`]) as the [module documentation](self) describes. The result depends
/// only on the images and `params`.
///
/// # Errors
///
/// Those of [`load_natural_images`] and [`generate_patches_from_images`].
pub fn generate_patches(dir: &Path, params: &PatchParams) -> Result<Patches, DataError> {
    params.validate()?;
    let images = load_natural_images(dir)?;
    let pixels: Vec<Array2<f32>> = images.into_iter().map(|i| i.pixels).collect();
    generate_patches_from_images(&pixels, params)
}

/// Generates patches from images already grey and standardised, each `(height, width)`.
///
/// # Errors
///
/// [`DataError::InvalidParameter`] for invalid `params`, [`DataError::NoImages`] if `images` is
/// empty, [`DataError::BadImageSize`] if an image is smaller than 52×52, and
/// [`DataError::TooFewPatches`] if fewer than the requested patches pass the filter among
/// [`MAX_CANDIDATES_PER_PATCH`] candidates per requested patch.
pub fn generate_patches_from_images(
    images: &[Array2<f32>],
    params: &PatchParams,
) -> Result<Patches, DataError> {
    params.validate()?;
    let total = params.total()?;
    if images.is_empty() {
        return Err(DataError::NoImages {
            dir: "(in-memory images)".into(),
        });
    }
    for (i, img) in images.iter().enumerate() {
        let (h, w) = img.dim();
        if h < CROP_SIZE || w < CROP_SIZE {
            return Err(DataError::BadImageSize {
                name: format!("image {i}"),
                width: w,
                height: h,
                reason: format!("too small for {CROP_SIZE}x{CROP_SIZE} crops"),
            });
        }
    }

    let mut splits = [
        PatchSet::with_len(params.n_train),
        PatchSet::with_len(params.n_val),
        PatchSet::with_len(params.n_test),
    ];
    let batch = params.lcn_batch;
    let budget = total.saturating_mul(MAX_CANDIDATES_PER_PATCH).max(batch);
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut ws = LcnWorkspace::new(batch);
    let (mut kept, mut candidates) = (0usize, 0usize);
    while kept < total {
        if candidates >= budget {
            return Err(DataError::TooFewPatches {
                requested: total,
                kept,
                candidates,
                std_threshold: params.std_threshold,
            });
        }
        for dst in ws.crops.chunks_exact_mut(CROP_LEN) {
            // Image counts and sizes are usize values, so the draws below them convert back.
            let img = &images[uniform_below(&mut rng, images.len() as u64) as usize];
            let (h, w) = img.dim();
            let top = uniform_below(&mut rng, (h - CROP_SIZE + 1) as u64) as usize;
            let left = uniform_below(&mut rng, (w - CROP_SIZE + 1) as u64) as usize;
            for (r, dst_row) in dst.chunks_exact_mut(CROP_SIZE).enumerate() {
                let src = img.row(top + r);
                for (d, &s) in dst_row.iter_mut().zip(src.iter().skip(left)) {
                    *d = s;
                }
            }
        }
        candidates += batch;
        ws.run(batch);

        for p in 0..batch {
            if kept == total {
                break;
            }
            let range = p * PATCH_LEN..(p + 1) * PATCH_LEN;
            if unbiased_std(&ws.out[range.clone()]) < params.std_threshold {
                continue;
            }
            let (split, row) = if kept < params.n_train {
                (0, kept)
            } else if kept < params.n_train + params.n_val {
                (1, kept - params.n_train)
            } else {
                (2, kept - params.n_train - params.n_val)
            };
            let set = &mut splits[split];
            let copy = |dst: &mut Array2<f32>, src: &[f32]| {
                for (d, &s) in dst.row_mut(row).iter_mut().zip(src) {
                    *d = s;
                }
            };
            copy(&mut set.patches, &ws.out[range.clone()]);
            copy(&mut set.local_mean, &ws.mean[range.clone()]);
            copy(&mut set.local_std, &ws.sigma[range]);
            kept += 1;
        }
    }
    let [train, val, test] = splits;
    Ok(Patches {
        train,
        val,
        test,
        candidates,
    })
}

/// The unbiased (divisor `n - 1`) standard deviation, accumulated in `f64`; 0 for fewer than
/// two values.
fn unbiased_std(x: &[f32]) -> f32 {
    if x.len() < 2 {
        return 0.0;
    }
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let ss: f64 = x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum();
    (ss / (n - 1.0)).sqrt() as f32
}

/// Buffers for LCN of up to `capacity` crops, allocated once and reused across batches.
struct LcnWorkspace {
    g: [f32; KERNEL_SIZE],
    /// Input crops, `capacity × 52 × 52`.
    crops: Vec<f32>,
    /// Centred crops `C`, `capacity × 40 × 40`.
    centred: Vec<f32>,
    /// Outputs `C / σ`, `capacity × 28 × 28`.
    out: Vec<f32>,
    /// Local means `M` (centre crop), `capacity × 28 × 28`.
    mean: Vec<f32>,
    /// σ, `capacity × 28 × 28`.
    sigma: Vec<f32>,
    /// Horizontal pass of the separable filter (at most 52 × 40).
    tmp: Vec<f32>,
    /// `M` or `C²` of one crop, 40 × 40.
    mid: Vec<f32>,
}

impl LcnWorkspace {
    fn new(capacity: usize) -> Self {
        Self {
            g: gaussian_kernel_1d(),
            crops: vec![0.0; capacity * CROP_LEN],
            centred: vec![0.0; capacity * MID_LEN],
            out: vec![0.0; capacity * PATCH_LEN],
            mean: vec![0.0; capacity * PATCH_LEN],
            sigma: vec![0.0; capacity * PATCH_LEN],
            tmp: vec![0.0; CROP_SIZE * MID_SIZE],
            mid: vec![0.0; MID_LEN],
        }
    }

    /// LCN of the first `n` crops in `self.crops` into `out`, `mean` and `sigma`.
    fn run(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        // Pass 1: per crop, M, C and the raw σ.
        for p in 0..n {
            let x = &self.crops[p * CROP_LEN..(p + 1) * CROP_LEN];
            let c = &mut self.centred[p * MID_LEN..(p + 1) * MID_LEN];
            let mean = &mut self.mean[p * PATCH_LEN..(p + 1) * PATCH_LEN];
            let sigma = &mut self.sigma[p * PATCH_LEN..(p + 1) * PATCH_LEN];

            filter_valid(x, CROP_SIZE, &self.g, &mut self.tmp, &mut self.mid);
            for i in 0..MID_SIZE {
                let xr = &x[(i + HALF) * CROP_SIZE + HALF..][..MID_SIZE];
                let mr = &self.mid[i * MID_SIZE..][..MID_SIZE];
                for ((c, &xv), &mv) in c[i * MID_SIZE..][..MID_SIZE].iter_mut().zip(xr).zip(mr) {
                    *c = xv - mv;
                }
            }
            for i in 0..PATCH_SIZE {
                mean[i * PATCH_SIZE..][..PATCH_SIZE]
                    .copy_from_slice(&self.mid[(i + HALF) * MID_SIZE + HALF..][..PATCH_SIZE]);
            }
            for (sq, &cv) in self.mid.iter_mut().zip(c.iter()) {
                *sq = cv * cv;
            }
            filter_valid(&self.mid, MID_SIZE, &self.g, &mut self.tmp, sigma);
            for s in sigma.iter_mut() {
                *s = s.max(0.0).sqrt();
            }
        }
        // Pass 2: raise σ to the batch mean, floor it, divide.
        let sigma = &mut self.sigma[..n * PATCH_LEN];
        let batch_mean =
            (sigma.iter().map(|&s| f64::from(s)).sum::<f64>() / sigma.len() as f64) as f32;
        for s in sigma.iter_mut() {
            *s = s.max(batch_mean).max(SIGMA_FLOOR);
        }
        for p in 0..n {
            let c = &self.centred[p * MID_LEN..(p + 1) * MID_LEN];
            let range = p * PATCH_LEN..(p + 1) * PATCH_LEN;
            let (out, s) = (&mut self.out[range.clone()], &sigma[range]);
            for i in 0..PATCH_SIZE {
                let cr = &c[(i + HALF) * MID_SIZE + HALF..][..PATCH_SIZE];
                let o = &mut out[i * PATCH_SIZE..][..PATCH_SIZE];
                for ((o, &cv), &sv) in o.iter_mut().zip(cr).zip(&s[i * PATCH_SIZE..]) {
                    *o = cv / sv;
                }
            }
        }
    }
}

/// 'Valid' correlation of the `side × side` image `src` with the separable window `g ⊗ g`,
/// into `dst` (`(side - 12)²`): a horizontal 13-tap pass into `tmp`, then a vertical one.
fn filter_valid(src: &[f32], side: usize, g: &[f32; KERNEL_SIZE], tmp: &mut [f32], dst: &mut [f32]) {
    let out = side - KERNEL_SIZE + 1;
    let tmp = &mut tmp[..side * out];
    for (src_row, tmp_row) in src.chunks_exact(side).zip(tmp.chunks_exact_mut(out)) {
        tmp_row.fill(0.0);
        for (k, &gk) in g.iter().enumerate() {
            for (t, &s) in tmp_row.iter_mut().zip(&src_row[k..]) {
                *t += gk * s;
            }
        }
    }
    for (i, dst_row) in dst[..out * out].chunks_exact_mut(out).enumerate() {
        dst_row.fill(0.0);
        for (k, &gk) in g.iter().enumerate() {
            for (d, &t) in dst_row.iter_mut().zip(&tmp[(i + k) * out..][..out]) {
                *d += gk * t;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sums_to_one_and_is_symmetric() {
        let g = gaussian_kernel_1d();
        let sum: f32 = g.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        for k in 0..KERNEL_SIZE {
            assert_eq!(g[k], g[KERNEL_SIZE - 1 - k]);
        }
        assert!((gaussian_kernel().sum() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn separable_filter_matches_direct_2d_correlation() {
        let side = 20;
        let src: Vec<f32> = (0..side * side)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let g = gaussian_kernel_1d();
        let g2 = gaussian_kernel();
        let out = side - KERNEL_SIZE + 1;
        let mut tmp = vec![0.0; side * out];
        let mut dst = vec![0.0; out * out];
        filter_valid(&src, side, &g, &mut tmp, &mut dst);
        for i in 0..out {
            for j in 0..out {
                let mut direct = 0.0f64;
                for a in 0..KERNEL_SIZE {
                    for b in 0..KERNEL_SIZE {
                        direct += f64::from(g2[[a, b]]) * f64::from(src[(i + a) * side + j + b]);
                    }
                }
                assert!((f64::from(dst[i * out + j]) - direct).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn params_are_validated() {
        let bad = PatchParams {
            lcn_batch: 0,
            ..PatchParams::default()
        };
        assert!(matches!(bad.validate(), Err(DataError::InvalidParameter { name: "lcn_batch", .. })));
        let bad = PatchParams {
            std_threshold: f32::NAN,
            ..PatchParams::default()
        };
        assert!(bad.validate().is_err());
        assert!(PatchParams::default().validate().is_ok());
    }
}
