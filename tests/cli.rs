//! The command-line tool: `varsparse infer`.

use assert_cmd::Command;
use ndarray::Array2;
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use varsparse::init::{linear_uniform, rng};

fn write(path: &std::path::Path, a: &Array2<f32>) {
    a.write_npy(std::fs::File::create(path).unwrap()).unwrap();
}

fn varsparse() -> Command {
    Command::cargo_bin("varsparse").unwrap()
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let w: Array2<f32> = linear_uniform(&mut rng(1), 20, 8, 8);
    let z: Array2<f32> = linear_uniform::<f32>(&mut rng(2), 30, 8, 1).mapv(|v| v.max(0.0));
    write(&dir.path().join("W.npy"), &w);
    write(&dir.path().join("Y.npy"), &z.dot(&w.t()));
    write(&dir.path().join("W1.npy"), &linear_uniform(&mut rng(3), 12, 8, 8));
    write(&dir.path().join("b1.npy"), &Array2::zeros((1, 12)));
    write(&dir.path().join("W2.npy"), &linear_uniform(&mut rng(4), 20, 12, 12));
    write(&dir.path().join("E.npy"), &Array2::from_elem((30, 8), 0.1));
    dir
}

#[test]
fn infer_with_a_dictionary_writes_codes_and_report() {
    let dir = setup();
    let p = |n: &str| dir.path().join(n);
    varsparse()
        .args(["--threads", "1", "infer", "--dictionary"])
        .arg(p("W.npy"))
        .arg("--input")
        .arg(p("Y.npy"))
        .arg("--out")
        .arg(p("Z.npy"))
        .arg("--report")
        .arg(p("R.json"))
        .args(["--lambda", "0.01", "--beta", "1", "--batch-size", "10", "--step", "0.5"])
        .assert()
        .success();
    let z = Array2::<f32>::read_npy(std::fs::File::open(p("Z.npy")).unwrap()).unwrap();
    assert_eq!(z.dim(), (30, 8));
    assert!(z.iter().all(|&v| v >= 0.0));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("R.json")).unwrap()).unwrap();
    let batches = r["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 3);
    for b in batches {
        assert!(b["iterations"].as_u64().unwrap() >= 1);
        assert!(b["mean_steps"].as_f64().is_some());
        assert!(b["converged"].is_boolean());
        assert!(b["total_energy"].as_f64().unwrap().is_finite());
    }
}

#[test]
fn infer_with_a_one_hidden_decoder_and_warm_start() {
    let dir = setup();
    let p = |n: &str| dir.path().join(n).display().to_string();
    varsparse()
        .args(["infer", "--mlp", &format!("{},{},{}", p("W1.npy"), p("b1.npy"), p("W2.npy"))])
        .args(["--input", &p("Y.npy"), "--warm-start", &p("E.npy"), "--out", &p("Z.npy")])
        .args(["--lambda", "0.01", "--gamma", "1", "--backtracking", "--signed"])
        .assert()
        .success();
    let z = Array2::<f32>::read_npy(std::fs::File::open(dir.path().join("Z.npy")).unwrap()).unwrap();
    assert_eq!(z.dim(), (30, 8));
}

#[test]
fn infer_errors_exit_non_zero_with_a_message() {
    let dir = setup();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let base = |args: &[&str]| {
        let mut c = varsparse();
        c.arg("infer").args(args).args(["--out", &p("Z.npy")]);
        c
    };
    // missing file
    base(&["--dictionary", &p("missing.npy"), "--input", &p("Y.npy"), "--lambda", "0.1"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("missing.npy"));
    // wrong shape: the input has d = 20, W1 is not a dictionary for it
    base(&["--dictionary", &p("W1.npy"), "--input", &p("Y.npy"), "--lambda", "0.1"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("shape mismatch"));
    // negative lambda
    base(&["--dictionary", &p("W.npy"), "--input", &p("Y.npy"), "--lambda=-1"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("lambda"));
    // T <= 0 with beta > 0
    base(&["--dictionary", &p("W.npy"), "--input", &p("Y.npy"), "--lambda", "0.1", "--beta", "1", "--threshold", "0"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("threshold"));
    // contradictory flags
    base(&["--dictionary", &p("W.npy"), "--input", &p("Y.npy"), "--lambda", "0.1", "--step", "1", "--backtracking"])
        .assert()
        .failure();
    base(&["--input", &p("Y.npy"), "--lambda", "0.1"]).assert().failure();
    // malformed npy
    std::fs::write(dir.path().join("bad.npy"), b"garbage").unwrap();
    base(&["--dictionary", &p("W.npy"), "--input", &p("bad.npy"), "--lambda", "0.1"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("bad.npy"));
    assert!(!dir.path().join("Z.npy").exists(), "no output on failure");
}
