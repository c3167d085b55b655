//! Golden bits: the weights after short runs of all eight presets and the codes of `infer` for
//! both decoders, hashed and compared with `tests/golden/hashes.txt`.
//!
//! These hashes were recorded before the crate was reshaped into layers (docs/ARCHITECTURE.md),
//! and every refactor since must leave them as they are: a refactor that changes a single bit of
//! a trained model fails here. A change that is *meant* to change results (a new default, a
//! different summation order) re-records them with `VARSPARSE_BLESS=1 cargo test --test golden`
//! and says why in its commit.
//!
//! The bits depend on the machine's kernels (matrixmultiply's and varsparse's own AVX2/FMA
//! kernels round differently from their portable fallbacks, OpenBLAS differently again), so the
//! hashes are recorded per kernel class and the test skips, saying why, where the class differs.
//! Everything goes through the command line, whose flags outlive the library's internal names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use ndarray::{Array2, ArrayD};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};

const HASHES: &str = "tests/golden/hashes.txt";

/// The kernels that decide the bits, or `None` where no hashes were recorded for them.
fn kernel_class() -> Option<&'static str> {
    if cfg!(feature = "openblas") {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        return Some("x86_64-avx2-fma");
    }
    None
}

/// FNV-1a over the little-endian bits of every value, in C order, with the shape first.
fn hash(a: &ArrayD<f32>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    // a (1, m) matrix and an (m,) vector hold the same values: hash the element count, not the
    // rank, so that a change of a bias's stored shape is not a change of bits
    eat(&(a.len() as u64).to_le_bytes());
    for v in a.iter() {
        eat(&v.to_bits().to_le_bytes());
    }
    format!("{h:016x}")
}

fn read(path: &Path) -> ArrayD<f32> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ArrayD::<f32>::read_npy(f).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write(path: &Path, a: &Array2<f32>) {
    a.write_npy(std::fs::File::create(path).unwrap()).unwrap();
}

/// A deterministic `(rows, cols)` matrix from a 64-bit LCG, uniform in `[lo, hi)`.
fn lcg(rows: usize, cols: usize, seed: u64, lo: f32, hi: f32) -> Array2<f32> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    Array2::from_shape_simple_fn((rows, cols), || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
    })
}

fn varsparse() -> Command {
    Command::cargo_bin("varsparse").unwrap()
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// Every weight of a run's last checkpoint.
fn run_hashes(preset: &str, out: &Path, got: &mut BTreeMap<String, String>) {
    let mut cmd = varsparse();
    cmd.args(["train", "--preset", preset, "--epochs", "2", "--seed", "3"])
        .arg("--data-dir")
        .arg(data_dir())
        .arg("--out")
        .arg(out);
    if preset.starts_with("mnist") {
        cmd.args(["--train-limit", "500"]);
    } else {
        cmd.args(["--patches", "500,250,250"]);
    }
    cmd.assert().success();
    let latest = out.join("latest");
    let mut names: Vec<String> = std::fs::read_dir(&latest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".npy") && (n.starts_with("encoder_") || n.starts_with("decoder_")))
        .collect();
    names.sort();
    assert!(names.len() >= 4, "{preset}: {names:?}");
    for n in names {
        got.insert(
            format!("train {preset} {}", n.trim_end_matches(".npy")),
            hash(&read(&latest.join(&n))),
        );
    }
}

fn infer_hash(dir: &Path, name: &str, decoder: &[&str], extra: &[&str]) -> (String, String) {
    let out = dir.join(format!("{name}.npy"));
    varsparse()
        .arg("infer")
        .args(decoder)
        .arg("--input")
        .arg(dir.join("Y.npy"))
        .arg("--out")
        .arg(&out)
        .args(extra)
        .assert()
        .success();
    (format!("infer {name}"), hash(&read(&out)))
}

#[test]
fn short_runs_and_infer_give_the_recorded_bits() {
    let bless = std::env::var_os("VARSPARSE_BLESS").is_some();
    let Some(class) = kernel_class() else {
        println!(
            "skipped: the golden hashes were recorded with matrixmultiply and the AVX2/FMA kernels \
             (x86_64-avx2-fma); this build or CPU rounds differently"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut got = BTreeMap::new();

    // infer: a linear dictionary and a one-hidden-layer decoder on synthetic data
    write(&dir.join("W.npy"), &lcg(64, 32, 1, -0.5, 0.5));
    write(&dir.join("Y.npy"), &lcg(300, 64, 2, -1.0, 1.0));
    write(&dir.join("E.npy"), &lcg(300, 32, 3, 0.0, 0.2));
    write(&dir.join("W1.npy"), &lcg(48, 32, 4, -0.3, 0.3));
    write(&dir.join("b1.npy"), &lcg(1, 48, 5, -0.1, 0.1));
    write(&dir.join("W2.npy"), &lcg(64, 48, 6, -0.3, 0.3));
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let (w, w1b1w2) = (
        p("W.npy"),
        format!("{},{},{}", p("W1.npy"), p("b1.npy"), p("W2.npy")),
    );
    let e = p("E.npy");
    let linear = ["--dictionary", w.as_str()];
    let mlp = ["--mlp", w1b1w2.as_str()];
    for (name, decoder, extra) in [
        (
            "linear-fista-lasso",
            &linear[..],
            &["--lambda", "0.01", "--solver-fista"][..],
        ),
        (
            "linear-vdl",
            &linear,
            &[
                "--lambda",
                "0.02",
                "--beta",
                "10",
                "--gamma",
                "5",
                "--warm-start",
                e.as_str(),
                "--step",
                "0.5",
            ],
        ),
        (
            "linear-backtracking",
            &linear,
            &["--lambda", "0.01", "--beta", "1", "--backtracking"],
        ),
        (
            "linear-direct-signed",
            &linear,
            &["--lambda", "0.01", "--direct", "--signed", "--step", "0.5"],
        ),
        (
            "mlp-constant",
            &mlp,
            &[
                "--lambda",
                "0.01",
                "--gamma",
                "1",
                "--warm-start",
                e.as_str(),
                "--step",
                "0.5",
            ],
        ),
        (
            "mlp-backtracking",
            &mlp,
            &["--lambda", "0.01", "--beta", "10"],
        ),
        (
            "mlp-direct",
            &mlp,
            &[
                "--lambda",
                "0.01",
                "--direct",
                "--step",
                "0.5",
                "--max-iter",
                "30",
            ],
        ),
    ] {
        let extra: Vec<&str> = extra
            .iter()
            .flat_map(|a| match *a {
                // the FISTA run of the plain lasso, whichever flag this version spells it with
                "--solver-fista" => solver_fista(),
                other => vec![other],
            })
            .collect();
        let (k, v) = infer_hash(dir, name, decoder, &extra);
        got.insert(k, v);
    }

    for preset in [
        "mnist-sdl",
        "mnist-vdl",
        "mnist-sdl-nl",
        "mnist-vdl-nl",
        "patches-sdl",
        "patches-vdl",
        "patches-sdl-nl",
        "patches-vdl-nl",
    ] {
        run_hashes(preset, &dir.join(preset), &mut got);
    }

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(HASHES);
    if bless {
        let mut text = format!(
            "# Golden hashes (tests/golden.rs): FNV-1a of the f32 bits, per kernel class.\n\
             # Re-record only for a change meant to change results: VARSPARSE_BLESS=1 cargo test --test golden\n\
             class {class}\n"
        );
        for (k, v) in &got {
            text.push_str(&format!("{k} = {v}\n"));
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        println!("recorded {} hashes in {}", got.len(), path.display());
        return;
    }
    let text = std::fs::read_to_string(&path).expect("tests/golden/hashes.txt");
    let recorded_class = text
        .lines()
        .find_map(|l| l.strip_prefix("class "))
        .unwrap_or("");
    if recorded_class != class {
        println!("skipped: hashes recorded for {recorded_class}, this machine is {class}");
        return;
    }
    let want: BTreeMap<String, String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("class "))
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut diffs = Vec::new();
    for (k, v) in &want {
        match got.get(k) {
            Some(g) if g == v => {}
            Some(g) => diffs.push(format!("{k}: recorded {v}, now {g}")),
            None => diffs.push(format!("{k}: recorded {v}, now missing")),
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        diffs.push(format!("{k}: new, not recorded"));
    }
    assert!(diffs.is_empty(), "bits changed:\n{}", diffs.join("\n"));
}

/// The flags that make `infer` run FISTA on a plain lasso.
fn solver_fista() -> Vec<&'static str> {
    vec!["--solver", "fista"]
}
