//! Data sets: the MNIST reader and split, its error paths, local contrast normalisation against
//! hand and direct computations, and natural patch generation.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use flate2::Compression;
use flate2::write::GzEncoder;
use ndarray::{Array2, s};
use tempfile::TempDir;
use varsparse::data::mnist::{
    IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_idx_images, read_idx_labels, read_idx_pair,
};
use varsparse::data::patches::{
    CROP_SIZE, GRAY_MEAN, GRAY_STD, PATCH_SIZE, SIGMA_FLOOR, gaussian_kernel, gaussian_kernel_1d,
    generate_patches_from_images, load_natural_images,
};
use varsparse::data::{
    DEFAULT_SPLIT_SEED, DataError, MNIST_MEAN, MNIST_STD, Mnist, PatchParams, generate_patches,
    lcn, load_mnist, load_mnist_subset,
};

fn data_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(sub)
}

/// The full load, shared by the tests that need it (it reads ~55 MB).
fn mnist() -> &'static Mnist {
    static MNIST: OnceLock<Mnist> = OnceLock::new();
    MNIST.get_or_init(|| {
        load_mnist(&data_dir("mnist"), DEFAULT_SPLIT_SEED).expect("data/mnist loads")
    })
}

// ---------------------------------------------------------------------------------------------
// MNIST

#[test]
fn mnist_loads_with_the_paper_split_sizes() {
    let m = mnist();
    assert_eq!((m.rows, m.cols), (28, 28));
    assert_eq!(m.train.images.dim(), (55_000, 784));
    assert_eq!(m.val.images.dim(), (5_000, 784));
    assert_eq!(m.test.images.dim(), (10_000, 784));
    assert_eq!(m.train.len(), 55_000);
    assert_eq!(m.val.labels.len(), 5_000);
    assert_eq!(m.test.labels.len(), 10_000);
    // Well-known first labels of the original files.
    assert_eq!(m.test.labels[..3], [7, 2, 1]);
    assert_eq!(m.test.indices, (0..10_000).collect::<Vec<_>>());
    for split in [&m.train, &m.val, &m.test] {
        let mut counts = [0usize; 10];
        for &l in &split.labels {
            counts[usize::from(l)] += 1;
        }
        assert!(
            counts.iter().all(|&c| c > 0),
            "every digit occurs: {counts:?}"
        );
    }
}

#[test]
fn mnist_pixels_are_normalised_with_the_reference_constants() {
    let m = mnist();
    let lo = (0.0 - MNIST_MEAN) / MNIST_STD;
    let hi = (1.0 - MNIST_MEAN) / MNIST_STD;
    for split in [&m.train, &m.val, &m.test] {
        let min = split.images.iter().copied().fold(f32::INFINITY, f32::min);
        let max = split
            .images
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        assert!((min - lo).abs() < 1e-6, "min {min} vs {lo}");
        assert!((max - hi).abs() < 1e-6, "max {max} vs {hi}");
    }
    // The mean over all training pixels, mapped back to [0, 1], is MNIST's 0.1307.
    let mean =
        m.train.images.iter().map(|&v| f64::from(v)).sum::<f64>() / m.train.images.len() as f64;
    let pixel_mean = mean * f64::from(MNIST_STD) + f64::from(MNIST_MEAN);
    assert!(
        (pixel_mean - 0.1307).abs() < 2e-3,
        "pixel mean {pixel_mean}"
    );

    // Each row is the normalised image its index names in the raw file.
    let raw = read_idx_images(&data_dir("mnist").join("train-images.idx3-ubyte.gz")).unwrap();
    let raw_labels =
        read_idx_labels(&data_dir("mnist").join("train-labels.idx1-ubyte.gz")).unwrap();
    for (split, rows) in [(&m.train, [0, 1, 54_999]), (&m.val, [0, 17, 4_999])] {
        for r in rows {
            let i = split.indices[r];
            assert_eq!(split.labels[r], raw_labels[i]);
            for (&x, &p) in split.images.row(r).iter().zip(raw.pixels.row(i)) {
                assert_eq!(x, (f32::from(p) / 255.0 - 0.1307) / 0.3081);
            }
        }
    }
}

#[test]
fn mnist_train_and_val_partition_the_training_file() {
    let m = mnist();
    let mut seen = vec![false; 60_000];
    for &i in m.train.indices.iter().chain(&m.val.indices) {
        assert!(!seen[i], "index {i} in two places");
        seen[i] = true;
    }
    assert!(seen.iter().all(|&s| s));
    // Permuted, not in file order.
    assert_ne!(m.val.indices[..10], (0..10).collect::<Vec<_>>()[..]);
}

#[test]
fn mnist_split_is_deterministic_for_a_seed_and_changes_with_it() {
    let full = mnist();
    let dir = data_dir("mnist");
    let sub = load_mnist_subset(&dir, DEFAULT_SPLIT_SEED, Some(1_000)).unwrap();
    // Same seed: same validation split, and the subset is a prefix of the full training split.
    assert_eq!(sub.val.indices, full.val.indices);
    assert_eq!(sub.val.images, full.val.images);
    assert_eq!(sub.train.indices[..], full.train.indices[..1_000]);
    assert_eq!(sub.train.images, full.train.images.slice(s![..1_000, ..]));
    assert_eq!(sub.train.labels[..], full.train.labels[..1_000]);
    assert_eq!(sub.test, full.test);

    let other = load_mnist_subset(&dir, 1, Some(10)).unwrap();
    assert_eq!(other.train.len(), 10);
    assert_ne!(other.val.indices, full.val.indices);
    let overlap = other
        .val
        .indices
        .iter()
        .filter(|i| full.val.indices.contains(i))
        .count();
    // Two independent 5,000-of-60,000 draws share about 417 indices.
    assert!(overlap < 600, "overlap {overlap}");
}

// ---------------------------------------------------------------------------------------------
// MNIST error paths, on small synthetic files

fn idx_images(n: u32, rows: u32, cols: u32, data: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = [IDX_IMAGES_MAGIC, n, rows, cols]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    v.extend_from_slice(data);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = [IDX_LABELS_MAGIC, labels.len() as u32]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    v.extend_from_slice(labels);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Asserts the error's message names the file.
fn names(err: &DataError, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name {}: {msg}",
        path.display()
    );
}

#[test]
fn small_idx_files_round_trip_gzipped_or_not() {
    let tmp = TempDir::new().unwrap();
    let pixels: Vec<u8> = (0..12).collect();
    for (name, bytes) in [
        ("a.idx3-ubyte.gz", gz(&idx_images(3, 2, 2, &pixels))),
        ("a.idx3-ubyte", idx_images(3, 2, 2, &pixels)),
    ] {
        let p = write(tmp.path(), name, &bytes);
        let img = read_idx_images(&p).unwrap();
        assert_eq!((img.rows, img.cols), (2, 2));
        assert_eq!(img.pixels.dim(), (3, 4));
        assert_eq!(img.pixels.row(2).to_vec(), vec![8, 9, 10, 11]);
    }
    let p = write(tmp.path(), "l.gz", &gz(&idx_labels(&[3, 1, 4])));
    assert_eq!(read_idx_labels(&p).unwrap(), vec![3, 1, 4]);
}

#[test]
fn truncated_or_corrupt_gzip_is_a_gzip_error() {
    let tmp = TempDir::new().unwrap();
    let good = gz(&idx_images(50, 4, 4, &[9u8; 800]));
    let p = write(tmp.path(), "cut.gz", &good[..good.len() / 2]);
    let err = read_idx_images(&p).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    names(&err, &p);

    let p = write(tmp.path(), "notgzip.gz", b"this is not gzip data at all");
    let err = read_idx_images(&p).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err}");

    // A flipped bit in the compressed body fails the CRC or the inflater.
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    let p = write(tmp.path(), "flipped.gz", &flipped);
    let err = read_idx_images(&p).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err}");

    // The real labels file, truncated.
    let real = std::fs::read(data_dir("mnist").join("t10k-labels.idx1-ubyte.gz")).unwrap();
    let p = write(
        tmp.path(),
        "t10k-labels.idx1-ubyte.gz",
        &real[..real.len() - 100],
    );
    let err = read_idx_labels(&p).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    names(&err, &p);
}

#[test]
fn wrong_magic_is_reported_with_both_numbers() {
    let tmp = TempDir::new().unwrap();
    let p = write(tmp.path(), "labels.gz", &gz(&idx_labels(&[1, 2])));
    let err = read_idx_images(&p).unwrap_err();
    match &err {
        DataError::BadMagic {
            expected, found, ..
        } => assert_eq!((*expected, *found), (0x803, 0x801)),
        other => panic!("expected BadMagic, got {other}"),
    }
    names(&err, &p);
    let p = write(tmp.path(), "images.gz", &gz(&idx_images(1, 1, 1, &[0])));
    assert!(matches!(
        read_idx_labels(&p),
        Err(DataError::BadMagic { found: 0x803, .. })
    ));
    let p = write(tmp.path(), "tiny.gz", &gz(&[0, 0, 8]));
    assert!(matches!(
        read_idx_labels(&p),
        Err(DataError::BadHeader { .. })
    ));
    let p = write(tmp.path(), "zero.gz", &gz(&idx_images(1, 0, 5, &[])));
    assert!(matches!(
        read_idx_images(&p),
        Err(DataError::BadHeader { .. })
    ));
}

#[test]
fn short_data_and_trailing_bytes_are_length_errors() {
    let tmp = TempDir::new().unwrap();
    let p = write(tmp.path(), "short.gz", &gz(&idx_images(3, 2, 2, &[1u8; 8])));
    let err = read_idx_images(&p).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::DataLength {
                expected: 12,
                found: 8,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("truncated"), "{err}");
    names(&err, &p);

    let p = write(tmp.path(), "long.gz", &gz(&idx_images(3, 2, 2, &[1u8; 13])));
    let err = read_idx_images(&p).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::DataLength {
                expected: 12,
                found: 13,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("trailing"), "{err}");

    let mut labels = idx_labels(&[1, 2, 3]);
    labels.pop();
    let p = write(tmp.path(), "labels.gz", &gz(&labels));
    assert!(matches!(
        read_idx_labels(&p),
        Err(DataError::DataLength {
            expected: 3,
            found: 2,
            ..
        })
    ));
}

#[test]
fn images_and_labels_must_agree() {
    let tmp = TempDir::new().unwrap();
    let img = write(tmp.path(), "i.gz", &gz(&idx_images(3, 2, 2, &[0u8; 12])));
    let lab = write(tmp.path(), "l.gz", &gz(&idx_labels(&[1, 2])));
    let err = read_idx_pair(&img, &lab).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                n_images: 3,
                n_labels: 2,
                ..
            }
        ),
        "{err}"
    );
    names(&err, &img);
    names(&err, &lab);

    let lab = write(tmp.path(), "bad.gz", &gz(&idx_labels(&[1, 12, 2])));
    let err = read_idx_pair(&img, &lab).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BadLabel {
                index: 1,
                value: 12,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn load_mnist_reports_missing_mismatched_and_too_small_files() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let err = load_mnist(dir, 0).unwrap_err();
    assert!(matches!(err, DataError::MissingFile { .. }), "{err}");

    // Complete but tiny: a count mismatch in the training pair is found first ...
    write(
        dir,
        "train-images-idx3-ubyte.gz",
        &gz(&idx_images(3, 2, 2, &[0u8; 12])),
    );
    write(dir, "train-labels-idx1-ubyte.gz", &gz(&idx_labels(&[1, 2])));
    write(
        dir,
        "t10k-images-idx3-ubyte.gz",
        &gz(&idx_images(2, 2, 2, &[0u8; 8])),
    );
    write(dir, "t10k-labels-idx1-ubyte.gz", &gz(&idx_labels(&[1, 2])));
    let err = load_mnist(dir, 0).unwrap_err();
    assert!(matches!(err, DataError::CountMismatch { .. }), "{err}");

    // ... and with consistent files, 3 training images cannot make a 5,000-image validation set.
    write(
        dir,
        "train-labels-idx1-ubyte.gz",
        &gz(&idx_labels(&[1, 2, 3])),
    );
    let err = load_mnist(dir, 0).unwrap_err();
    assert!(
        matches!(err, DataError::TooFewSamples { found: 3, .. }),
        "{err}"
    );

    // Train and test images of different sizes.
    write(
        dir,
        "t10k-images-idx3-ubyte.gz",
        &gz(&idx_images(2, 1, 4, &[0u8; 8])),
    );
    let err = load_mnist(dir, 0).unwrap_err();
    assert!(matches!(err, DataError::ImageSizeMismatch { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Local contrast normalisation

const C: usize = CROP_SIZE;
const P: usize = PATCH_SIZE;
/// Offset of the output window in the crop (two 'valid' 13x13 filterings).
const OFF: usize = 12;

/// LCN written out directly from docs/CONVENTIONS.md §7, in f64 with the full 2-D window: the reference
/// the separable f32 implementation is checked against. Returns (out, mean, sigma), `(n, 784)`.
fn lcn_direct(crops: &Array2<f32>) -> (Array2<f64>, Array2<f64>, Array2<f64>) {
    let g = gaussian_kernel().mapv(f64::from);
    let n = crops.nrows();
    let valid = |x: &dyn Fn(usize, usize) -> f64, side: usize| {
        let o = side - 12;
        Array2::from_shape_fn((o, o), |(i, j)| {
            let mut acc = 0.0;
            for a in 0..13 {
                for b in 0..13 {
                    acc += g[[a, b]] * x(i + a, j + b);
                }
            }
            acc
        })
    };
    let mut centred = Vec::new();
    let mut mean = Array2::zeros((n, P * P));
    let mut sigma = Array2::zeros((n, P * P));
    for p in 0..n {
        let x = |i: usize, j: usize| f64::from(crops[[p, i * C + j]]);
        let m = valid(&x, C);
        let c = Array2::from_shape_fn((40, 40), |(i, j)| x(i + 6, j + 6) - m[[i, j]]);
        let v = valid(&|i, j| c[[i, j]] * c[[i, j]], 40);
        for i in 0..P {
            for j in 0..P {
                mean[[p, i * P + j]] = m[[i + 6, j + 6]];
                sigma[[p, i * P + j]] = v[[i, j]].max(0.0).sqrt();
            }
        }
        centred.push(c);
    }
    let batch_mean = sigma.mean().unwrap();
    sigma.mapv_inplace(|s: f64| s.max(batch_mean).max(1e-4));
    let out = Array2::from_shape_fn((n, P * P), |(p, k)| {
        centred[p][[k / P + 6, k % P + 6]] / sigma[[p, k]]
    });
    (out, mean, sigma)
}

fn crop_from_fn(f: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    (0..C * C).map(|k| f(k / C, k % C)).collect()
}

#[test]
fn lcn_of_a_zero_patch_is_zero_with_sigma_at_the_floor() {
    // C = 0, V = 0, σ = max(batch mean 0, 1e-4) = 1e-4, output 0 / 1e-4 = 0: all exact.
    let crops = Array2::zeros((2, C * C));
    let r = lcn(crops.view()).unwrap();
    assert_eq!(r.patches.dim(), (2, 784));
    assert!(r.patches.iter().all(|&v| v == 0.0));
    assert!(r.local_mean.iter().all(|&v| v == 0.0));
    assert!(r.local_std.iter().all(|&v| v == SIGMA_FLOOR));
}

#[test]
fn lcn_of_a_constant_patch_is_zero_up_to_rounding() {
    // M = 0.7 · Σ G = 0.7, so C is 0 up to the rounding of Σ G in f32; σ sits at the floor,
    // which magnifies that rounding by 1e4, hence the tolerance on the output.
    let crops = Array2::from_elem((1, C * C), 0.7f32);
    let r = lcn(crops.view()).unwrap();
    assert!(r.local_std.iter().all(|&v| v == SIGMA_FLOOR));
    assert!(r.local_mean.iter().all(|&v| (v - 0.7).abs() < 1e-6));
    assert!(r.patches.iter().all(|&v| v.abs() < 1e-2), "{:?}", r.patches);
}

/// Alternating sum of the 1-D window, `s = Σ_a (-1)^a g_a`.
fn alternating_sum() -> f64 {
    gaussian_kernel_1d()
        .iter()
        .enumerate()
        .map(|(a, &g)| {
            if a % 2 == 0 {
                f64::from(g)
            } else {
                -f64::from(g)
            }
        })
        .sum()
}

#[test]
fn lcn_of_a_ramp_and_a_checkerboard_by_hand() {
    // Patch 0, a ramp x = 0.05·j − 0.03·i + 0.2: a symmetric window summing to 1 maps a linear
    // function to itself, so M = the centre crop of x, C = 0, and σ is 0 before the floors.
    // Patch 1, a checkerboard x = (−1)^(i+j): M = (−1)^(i+j) s², s = Σ_a (−1)^a g_a (the window
    // is separable), so C = (−1)^(i+j) (1 − s²), C² = (1 − s²)² everywhere and σ = 1 − s².
    // The batch mean of σ is (0 + (1 − s²)) / 2: the ramp's σ is raised to it (its output is
    // 0), the checkerboard's stays at 1 − s² (its output is (−1)^(i+j)).
    let ramp = |i: usize, j: usize| 0.05 * j as f32 - 0.03 * i as f32 + 0.2;
    let checker = |i: usize, j: usize| if (i + j).is_multiple_of(2) { 1.0 } else { -1.0 };
    let mut data = crop_from_fn(ramp);
    data.extend(crop_from_fn(checker));
    let crops = Array2::from_shape_vec((2, C * C), data).unwrap();
    let r = lcn(crops.view()).unwrap();

    let s = alternating_sum();
    let sigma_checker = 1.0 - s * s;
    let batch_mean = sigma_checker / 2.0;
    for k in 0..P * P {
        let (i, j) = (k / P + OFF, k % P + OFF);
        // Ramp.
        assert!((f64::from(r.local_mean[[0, k]]) - f64::from(ramp(i, j))).abs() < 1e-5);
        assert!((f64::from(r.local_std[[0, k]]) - batch_mean).abs() < 1e-5);
        assert!(r.patches[[0, k]].abs() < 1e-4, "{}", r.patches[[0, k]]);
        // Checkerboard.
        let sign = f64::from(checker(i, j));
        assert!((f64::from(r.local_mean[[1, k]]) - sign * s * s).abs() < 1e-5);
        assert!((f64::from(r.local_std[[1, k]]) - sigma_checker).abs() < 1e-5);
        assert!((f64::from(r.patches[[1, k]]) - sign).abs() < 1e-4);
    }
}

#[test]
fn lcn_of_a_single_bright_pixel_matches_an_explicit_computation() {
    // x = 1 at (26, 26), 0 elsewhere. Output pixel (14, 14) sits on it (offset 12).
    let crops = Array2::from_shape_vec(
        (1, C * C),
        crop_from_fn(|i, j| if (i, j) == (26, 26) { 1.0 } else { 0.0 }),
    )
    .unwrap();
    let r = lcn(crops.view()).unwrap();

    // M[i][j] = Σ_ab G[a][b] x[i + a][j + b] = G[26 − i][26 − j] when the window at (i, j)
    // covers (26, 26), i.e. 14 <= i, j <= 26, else 0. C[i][j] = x[i + 6][j + 6] − M[i][j]
    // = δ(i = j = 20) − M[i][j].
    let g = gaussian_kernel().mapv(f64::from);
    let m = |i: usize, j: usize| {
        if (14..=26).contains(&i) && (14..=26).contains(&j) {
            g[[26 - i, 26 - j]]
        } else {
            0.0
        }
    };
    let c = |i: usize, j: usize| f64::from(u8::from((i, j) == (20, 20))) - m(i, j);
    // V[u][v] = Σ_ab G[a][b] C[u + a][v + b]², σ = sqrt(V), for every output pixel, then the
    // mean over this one-patch batch.
    let v = |u: usize, w: usize| {
        let mut acc = 0.0;
        for a in 0..13 {
            for b in 0..13 {
                acc += g[[a, b]] * c(u + a, w + b).powi(2);
            }
        }
        acc
    };
    let raw: Vec<f64> = (0..P * P).map(|k| v(k / P, k % P).sqrt()).collect();
    let batch_mean = raw.iter().sum::<f64>() / raw.len() as f64;
    let sigma_centre = raw[14 * P + 14].max(batch_mean).max(1e-4);
    let expected = (1.0 - g[[6, 6]]) / sigma_centre;
    let got = f64::from(r.patches[[0, 14 * P + 14]]);
    assert!(
        (got - expected).abs() < 1e-4 * expected.abs(),
        "{got} vs {expected}"
    );
    assert!((f64::from(r.local_mean[[0, 14 * P + 14]]) - g[[6, 6]]).abs() < 1e-7);
    // A pixel far from the bright one: M = 0, C = 0, so the output is 0.
    assert_eq!(r.patches[[0, 0]], 0.0);
}

#[test]
fn lcn_matches_the_direct_f64_computation_on_a_random_batch() {
    // A deterministic pseudo-random batch of 4 crops with different contrasts.
    let mut state = 12345u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let crops = Array2::from_shape_fn((4, C * C), |(p, _)| next() * (0.2 + p as f32));
    let r = lcn(crops.view()).unwrap();
    let (out, mean, sigma) = lcn_direct(&crops);
    let close = |a: &Array2<f32>, b: &Array2<f64>, tol: f64| {
        a.iter()
            .zip(b)
            .all(|(&x, &y)| (f64::from(x) - y).abs() <= tol * (1.0 + y.abs()))
    };
    assert!(close(&r.patches, &out, 1e-4));
    assert!(close(&r.local_mean, &mean, 1e-5));
    assert!(close(&r.local_std, &sigma, 1e-5));

    // Undoing LCN recovers the centre of each crop on the pixel scale.
    let px = r.to_pixels(r.patches.view()).unwrap();
    for p in 0..4 {
        for k in 0..P * P {
            let x = crops[[p, (k / P + OFF) * C + k % P + OFF]] * GRAY_STD + GRAY_MEAN;
            assert!((px[[p, k]] - x).abs() < 1e-5);
        }
    }
}

#[test]
fn lcn_and_to_pixels_check_shapes() {
    let err = lcn(Array2::zeros((2, 100)).view()).unwrap_err();
    assert!(matches!(err, DataError::Shape { .. }), "{err}");
    let r = lcn(Array2::zeros((2, C * C)).view()).unwrap();
    assert!(r.to_pixels(Array2::zeros((3, 784)).view()).is_err());
    let empty = lcn(Array2::zeros((0, C * C)).view()).unwrap();
    assert!(empty.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Natural patches

fn small_params(seed: u64) -> PatchParams {
    PatchParams {
        n_train: 300,
        n_val: 100,
        n_test: 100,
        seed,
        ..PatchParams::default()
    }
}

fn unbiased_std(x: &[f32]) -> f64 {
    let n = x.len() as f64;
    let m = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    (x.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

#[test]
fn natural_images_load_grey_resized_and_standardised() {
    let imgs = load_natural_images(&data_dir("natural")).unwrap();
    assert_eq!(imgs.len(), 10);
    let names: Vec<&str> = imgs.iter().map(|i| i.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    let lo = (0.0 - GRAY_MEAN) / GRAY_STD - 1e-5;
    let hi = (1.0 - GRAY_MEAN) / GRAY_STD + 1e-5;
    for img in &imgs {
        let (h, w) = img.pixels.dim();
        assert_eq!(h.min(w), 256, "{}", img.name);
        assert!(
            img.pixels.iter().all(|&v| (lo..=hi).contains(&v)),
            "{}",
            img.name
        );
    }
    // 451x300 -> floor(451 * 256 / 300) = 384 wide.
    let chelsea = imgs.iter().find(|i| i.name == "chelsea.png").unwrap();
    assert_eq!(chelsea.pixels.dim(), (256, 384));
}

/// The shipped images, decoded once for the tests that generate from memory.
fn natural_pixels() -> &'static [Array2<f32>] {
    static IMAGES: OnceLock<Vec<Array2<f32>>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        load_natural_images(&data_dir("natural"))
            .expect("data/natural loads")
            .into_iter()
            .map(|i| i.pixels)
            .collect()
    })
}

#[test]
fn patch_generation_counts_right_and_filtered() {
    let t0 = Instant::now();
    let a = generate_patches(&data_dir("natural"), &small_params(5)).unwrap();
    let elapsed = t0.elapsed();
    // Generous: decoding the images dominates, about 1.5 s in the dev profile here.
    assert!(elapsed.as_secs_f64() < 20.0, "500 patches took {elapsed:?}");

    assert_eq!(a.train.patches.dim(), (300, 784));
    assert_eq!(a.val.local_mean.dim(), (100, 784));
    assert_eq!(a.test.local_std.dim(), (100, 784));
    assert!(a.candidates >= 500 && a.candidates.is_multiple_of(250));
    for set in [&a.train, &a.val, &a.test] {
        for row in set.patches.rows() {
            let row = row.to_vec();
            assert!(unbiased_std(&row) >= 0.5);
        }
        assert!(set.local_std.iter().all(|&v| v >= SIGMA_FLOOR));
        assert!(set.patches.iter().all(|v| v.is_finite()));
        // Undone, the patches are grey levels of the resized images, which lie in [0, 1].
        let px = set.to_pixels(set.patches.view()).unwrap();
        assert!(px.iter().all(|&v| (-1e-4..=1.0 + 1e-4).contains(&v)));
    }
    // From the directory or from the decoded images: the same patches.
    assert_eq!(
        a,
        generate_patches_from_images(natural_pixels(), &small_params(5)).unwrap()
    );
}

#[test]
fn patch_generation_depends_on_the_seed_only() {
    let images = natural_pixels();
    let a = generate_patches_from_images(images, &small_params(5)).unwrap();
    let b = generate_patches_from_images(images, &small_params(5)).unwrap();
    assert_eq!(a, b);
    let c = generate_patches_from_images(images, &small_params(6)).unwrap();
    assert_ne!(a.train.patches, c.train.patches);

    // Not on the number of threads.
    for threads in [1, 3] {
        let t = generate_patches_from_images(
            images,
            &PatchParams {
                threads: Some(threads),
                ..small_params(5)
            },
        )
        .unwrap();
        assert_eq!(t, a, "threads = {threads}");
    }

    // Splits are consecutive runs of one stream: asking for fewer test patches changes nothing
    // before them.
    let d = generate_patches_from_images(
        images,
        &PatchParams {
            n_test: 10,
            ..small_params(5)
        },
    )
    .unwrap();
    assert_eq!(d.train, a.train);
    assert_eq!(d.val, a.val);
    assert_eq!(d.test.patches, a.test.patches.slice(s![..10, ..]));
}

#[test]
fn patch_generation_reports_bad_inputs() {
    let params = PatchParams {
        n_train: 2,
        n_val: 0,
        n_test: 0,
        ..PatchParams::default()
    };
    // Flat images: every output is 0, nothing passes the std filter, the budget runs out.
    let flat = vec![Array2::from_elem((60, 60), 0.3f32)];
    let err = generate_patches_from_images(&flat, &params).unwrap_err();
    assert!(
        matches!(err, DataError::TooFewPatches { kept: 0, .. }),
        "{err}"
    );
    let small = vec![Array2::zeros((51, 300))];
    let err = generate_patches_from_images(&small, &params).unwrap_err();
    assert!(matches!(err, DataError::BadImageSize { .. }), "{err}");
    let err = generate_patches_from_images(&[], &params).unwrap_err();
    assert!(matches!(err, DataError::NoImages { .. }), "{err}");
    let err = generate_patches_from_images(
        &flat,
        &PatchParams {
            std_threshold: -1.0,
            ..params.clone()
        },
    )
    .unwrap_err();
    assert!(matches!(err, DataError::InvalidParameter { .. }), "{err}");

    let tmp = TempDir::new().unwrap();
    let err = generate_patches(tmp.path(), &params).unwrap_err();
    assert!(matches!(err, DataError::NoImages { .. }), "{err}");
    let bad = write(tmp.path(), "broken.png", b"\x89PNG\r\n\x1a\nnot really");
    let err = generate_patches(tmp.path(), &params).unwrap_err();
    assert!(matches!(err, DataError::Image { .. }), "{err}");
    names(&err, &bad);
}

/// Times the full 240,000-patch generation. Run with
/// `cargo test --release --test data -- --ignored --nocapture full_patch_generation`.
#[test]
#[ignore = "timing run: 240,000 patches, several seconds and ~2.3 GB"]
fn full_patch_generation_timing() {
    let t0 = Instant::now();
    let p = generate_patches(&data_dir("natural"), &PatchParams::default()).unwrap();
    let elapsed = t0.elapsed();
    assert_eq!(p.train.len() + p.val.len() + p.test.len(), 240_000);
    println!(
        "240,000 patches from {} candidates ({:.1}% kept) in {:.2} s",
        p.candidates,
        100.0 * 240_000.0 / p.candidates as f64,
        elapsed.as_secs_f64()
    );
}

#[test]
fn the_data_directory_comes_from_the_flag_the_environment_or_the_build() {
    use varsparse::data::spec::{builtin_data_dir, resolve_data_dir_from};
    let flag = Path::new("/from/flag");
    let missing = Path::new("/no/such/builtin");
    // the flag wins over everything
    assert_eq!(
        resolve_data_dir_from(Some(flag), Some("/from/env".into()), builtin_data_dir()).unwrap(),
        flag
    );
    // then the environment (an empty value is unset)
    assert_eq!(
        resolve_data_dir_from(None, Some("/from/env".into()), builtin_data_dir()).unwrap(),
        Path::new("/from/env")
    );
    assert_eq!(
        resolve_data_dir_from(None, Some("".into()), builtin_data_dir()).unwrap(),
        builtin_data_dir()
    );
    // then the crate's data/, when it is there
    assert_eq!(
        resolve_data_dir_from(None, None, builtin_data_dir()).unwrap(),
        builtin_data_dir()
    );
    // else a typed error naming every place tried
    match resolve_data_dir_from(None, None, missing) {
        Err(varsparse::Error::NoDataDir { tried }) => {
            assert_eq!(tried.len(), 3);
            let msg = varsparse::Error::NoDataDir { tried }.to_string();
            for want in ["--data-dir", "VARSPARSE_DATA", "/no/such/builtin"] {
                assert!(msg.contains(want), "{msg}");
            }
        }
        other => panic!("expected NoDataDir, got {other:?}"),
    }
}

#[test]
fn a_presets_data_spec_and_another_root() {
    use varsparse::data::spec::DataOptions;
    use varsparse::data::{DataKind, DataSpec, SplitName};
    let root = Path::new("/d");
    let mnist = DataSpec::for_kind(
        DataKind::Mnist,
        root,
        &DataOptions {
            train_limit: Some(5),
            ..DataOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        mnist,
        DataSpec::Mnist {
            dir: root.join("mnist"),
            split_seed: varsparse::data::DEFAULT_SPLIT_SEED,
            train_limit: Some(5),
        }
    );
    let patches = DataSpec::for_kind(DataKind::Patches, root, &DataOptions::default()).unwrap();
    assert!(
        matches!(&patches, DataSpec::Patches { dir, n_train: 200_000, .. } if dir == &root.join("natural"))
    );
    // options of the other data set are refused
    let e = DataSpec::for_kind(
        DataKind::Patches,
        root,
        &DataOptions {
            train_limit: Some(5),
            ..DataOptions::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("train-limit"), "{e}");
    let e = DataSpec::for_kind(
        DataKind::Mnist,
        root,
        &DataOptions {
            patches: Some([1, 2, 3]),
            ..DataOptions::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("patches"), "{e}");
    // another root keeps everything else
    assert_eq!(
        mnist.clone().with_root(Path::new("/e")),
        DataSpec::Mnist {
            dir: PathBuf::from("/e/mnist"),
            split_seed: varsparse::data::DEFAULT_SPLIT_SEED,
            train_limit: Some(5),
        }
    );
    // split names
    for (s, n) in [
        ("train", SplitName::Train),
        ("val", SplitName::Val),
        ("validation", SplitName::Val),
        ("test", SplitName::Test),
    ] {
        assert_eq!(s.parse::<SplitName>().unwrap(), n);
        assert_eq!(n.to_string().parse::<SplitName>().unwrap(), n);
        assert_eq!(serde_json::to_string(&n).unwrap(), format!("\"{n}\""));
    }
    assert!("holdout".parse::<SplitName>().is_err());
}

/// `LoadedData::keep_train_shard` and `TrainData::keep_shard`: rank r of N keeps the rows
/// `comm::shard(n, r, N)` of the training split (samples, scale map, labels), records them, and
/// the shards of all ranks put back together are the whole split; one rank changes nothing.
#[test]
fn training_shards_keep_their_rows_and_cover_the_split() {
    use varsparse::comm::shard;
    use varsparse::data::{LoadedData, PixelScale, RowShard, Split};
    let (n, d) = (11, 3);
    let x = Array2::from_shape_fn((n, d), |(i, j)| (10 * i + j) as f32);
    let split = |x: Array2<f32>| Split {
        scale_map: Some(x.mapv(|v| v + 0.5)),
        labels: Some((0..x.nrows() as u8).collect()),
        x,
    };
    let whole = LoadedData {
        train: split(x.clone()),
        val: split(x.slice(s![..4, ..]).to_owned()),
        test: None,
        pixel_scale: 1.0,
        image_shape: None,
        train_shard: None,
    };
    let mut one = whole.clone();
    one.keep_train_shard(0, 1).unwrap();
    assert_eq!((one.train.x.clone(), one.train_shard), (x.clone(), None));
    for ranks in [2, 3, 4] {
        let mut rows = Vec::new();
        for r in 0..ranks {
            let mut data = whole.clone();
            data.keep_train_shard(r, ranks).unwrap();
            let want = shard(n, r, ranks);
            assert_eq!(
                data.train_shard,
                Some(RowShard {
                    offset: want.start,
                    n_total: n
                })
            );
            assert_eq!(data.train.x, x.slice(s![want.clone(), ..]));
            assert_eq!(
                data.train.scale_map.as_ref().unwrap(),
                &data.train.x.mapv(|v| v + 0.5)
            );
            assert_eq!(
                data.train.labels.as_deref().unwrap(),
                &(want.start as u8..want.end as u8).collect::<Vec<_>>()[..]
            );
            assert_eq!(data.val.x.nrows(), 4, "validation stays whole");
            // TrainData::keep_shard on the whole data gives the same view
            let td = whole.train_data().keep_shard(r, ranks).unwrap();
            assert_eq!(td.train_shard, data.train_shard);
            assert_eq!(td.train.x, data.train.x);
            assert!(
                matches!(td.train.scale, PixelScale::PerElement(m) if m == data.train.scale_map.as_ref().unwrap())
            );
            // the shard's TrainData carries it to the fit
            assert_eq!(data.train_data().train_shard, data.train_shard);
            assert!(data.keep_train_shard(r, ranks).is_err(), "already a shard");
            rows.extend(data.train.x.rows().into_iter().map(|r| r.to_vec()));
        }
        let back: Vec<Vec<f32>> = x.rows().into_iter().map(|r| r.to_vec()).collect();
        assert_eq!(rows, back, "{ranks} ranks");
    }
    assert!(whole.clone().keep_train_shard(3, 3).is_err());
    assert!(whole.train_data().keep_shard(0, 0).is_err());
}

/// `NpyFile::read_row_indices` gives the rows asked for, in their order, from C- and
/// Fortran-order files and from spans longer than `ROW_SPAN_BYTES`; an index past the end is
/// an error naming the file.
#[test]
fn npy_rows_by_index_are_the_rows_asked_for() {
    use ndarray::ShapeBuilder;
    use ndarray_npy::WriteNpyExt;
    use varsparse::io::{NpyFile, ROW_SPAN_BYTES};
    let dir = TempDir::new().unwrap();
    // rows of 1 KiB: a span holds 4096 of them, so 9,000 rows need several spans
    let (n, d) = (9_000, 256);
    let x = Array2::from_shape_fn((n, d), |(i, j)| (i * 1000 + j) as f32);
    assert!(n * d * 4 > 2 * ROW_SPAN_BYTES);
    let c_path = dir.path().join("c.npy");
    varsparse::io::write_npy_f32(&c_path, &x).unwrap();
    let f_path = dir.path().join("f.npy");
    let xf = Array2::from_shape_vec((n, d).f(), x.t().iter().copied().collect()).unwrap();
    assert_eq!(xf, x);
    xf.write_npy(std::fs::File::create(&f_path).unwrap())
        .unwrap();
    let perm = varsparse::data::sampling::permutation(n, &mut varsparse::rng::rng(3));
    for idx in [
        perm[..700].to_vec(),
        vec![5, 5, 0, n - 1, 4096, 4095, 8191, 8192],
        vec![],
        (0..n).rev().collect(),
    ] {
        for path in [&c_path, &f_path] {
            let got = NpyFile::open(path).unwrap().read_row_indices(&idx).unwrap();
            assert_eq!(got, x.select(ndarray::Axis(0), &idx), "{}", path.display());
        }
    }
    let err = NpyFile::open(&c_path)
        .unwrap()
        .read_row_indices(&[3, n])
        .unwrap_err();
    assert!(
        err.to_string().contains("c.npy") && err.to_string().contains(&format!("row {n}")),
        "{err}"
    );
}

/// `DataSpec::load_shard` of an `.npy` source is `load` then `keep_train_shard` (with a
/// validation file, and with the seeded hold-out), while reading only the rank's rows; one
/// rank is `load`.
#[test]
fn npy_shards_load_as_the_whole_set_cut() {
    use varsparse::data::DataSpec;
    let dir = TempDir::new().unwrap();
    let (n, d) = (103, 6);
    let x = Array2::from_shape_fn((n, d), |(i, j)| (i * 10 + j) as f32);
    let v = Array2::from_shape_fn((7, d), |(i, j)| -((i * 10 + j) as f32));
    varsparse::io::write_npy_f32(&dir.path().join("x.npy"), &x).unwrap();
    varsparse::io::write_npy_f32(&dir.path().join("v.npy"), &v).unwrap();
    for val in [None, Some(dir.path().join("v.npy"))] {
        let spec = DataSpec::Npy {
            train: dir.path().join("x.npy"),
            val,
            image_shape: Some((2, 3)),
            pixel_scale: 2.0,
            split_seed: 4,
        };
        let whole = spec.load().unwrap();
        let one = spec.load_shard(0, 1).unwrap();
        assert_eq!(
            (one.train.x.clone(), one.val.x.clone()),
            (whole.train.x.clone(), whole.val.x.clone())
        );
        assert_eq!(one.train_shard, None);
        for ranks in [2, 3] {
            for r in 0..ranks {
                let mut want = whole.clone();
                want.keep_train_shard(r, ranks).unwrap();
                let got = spec.load_shard(r, ranks).unwrap();
                assert_eq!(got.train.x, want.train.x, "rank {r} of {ranks}");
                assert_eq!(got.val.x, want.val.x);
                assert_eq!(got.train_shard, want.train_shard);
                assert_eq!(
                    (got.pixel_scale, got.image_shape),
                    (want.pixel_scale, want.image_shape)
                );
            }
        }
        assert!(spec.load_shard(3, 3).is_err());
    }
}
