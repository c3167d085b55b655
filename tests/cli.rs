//! The command-line tool: `varsparse infer`.

use assert_cmd::Command;
use ndarray::Array2;
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use predicates::prelude::*;
use varsparse::rng::{linear_uniform, rng};

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
    write(
        &dir.path().join("W1.npy"),
        &linear_uniform(&mut rng(3), 12, 8, 8),
    );
    write(&dir.path().join("b1.npy"), &Array2::zeros((1, 12)));
    write(
        &dir.path().join("W2.npy"),
        &linear_uniform(&mut rng(4), 20, 12, 12),
    );
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
        .args([
            "--lambda",
            "0.01",
            "--beta",
            "1",
            "--batch-size",
            "10",
            "--step",
            "0.5",
        ])
        .assert()
        .success();
    let z = Array2::<f32>::read_npy(std::fs::File::open(p("Z.npy")).unwrap()).unwrap();
    assert_eq!(z.dim(), (30, 8));
    assert!(z.iter().all(|&v| v >= 0.0));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("R.json")).unwrap()).unwrap();
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
        .args([
            "infer",
            "--mlp",
            &format!("{},{},{}", p("W1.npy"), p("b1.npy"), p("W2.npy")),
        ])
        .args([
            "--input",
            &p("Y.npy"),
            "--warm-start",
            &p("E.npy"),
            "--out",
            &p("Z.npy"),
        ])
        .args([
            "--lambda",
            "0.01",
            "--gamma",
            "1",
            "--backtracking",
            "--signed",
        ])
        .assert()
        .success();
    let z =
        Array2::<f32>::read_npy(std::fs::File::open(dir.path().join("Z.npy")).unwrap()).unwrap();
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
    base(&[
        "--dictionary",
        &p("missing.npy"),
        "--input",
        &p("Y.npy"),
        "--lambda",
        "0.1",
    ])
    .assert()
    .failure()
    .stderr(predicates::str::contains("missing.npy"));
    // wrong shape: the input has d = 20, W1 is not a dictionary for it
    base(&[
        "--dictionary",
        &p("W1.npy"),
        "--input",
        &p("Y.npy"),
        "--lambda",
        "0.1",
    ])
    .assert()
    .failure()
    .stderr(predicates::str::contains("shape mismatch"));
    // negative lambda
    base(&[
        "--dictionary",
        &p("W.npy"),
        "--input",
        &p("Y.npy"),
        "--lambda=-1",
    ])
    .assert()
    .failure()
    .stderr(predicates::str::contains("lambda"));
    // T <= 0 with beta > 0
    base(&[
        "--dictionary",
        &p("W.npy"),
        "--input",
        &p("Y.npy"),
        "--lambda",
        "0.1",
        "--beta",
        "1",
        "--threshold",
        "0",
    ])
    .assert()
    .failure()
    .stderr(predicates::str::contains("threshold"));
    // contradictory flags
    base(&[
        "--dictionary",
        &p("W.npy"),
        "--input",
        &p("Y.npy"),
        "--lambda",
        "0.1",
        "--step",
        "1",
        "--backtracking",
    ])
    .assert()
    .failure();
    base(&["--input", &p("Y.npy"), "--lambda", "0.1"])
        .assert()
        .failure();
    // malformed npy
    std::fs::write(dir.path().join("bad.npy"), b"garbage").unwrap();
    base(&[
        "--dictionary",
        &p("W.npy"),
        "--input",
        &p("bad.npy"),
        "--lambda",
        "0.1",
    ])
    .assert()
    .failure()
    .stderr(predicates::str::contains("bad.npy"));
    assert!(!dir.path().join("Z.npy").exists(), "no output on failure");
}

fn data_dir() -> String {
    format!("{}/data", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn train_then_encode_eval_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let p = |s: &str| run.join(s).display().to_string();
    varsparse()
        .args([
            "--threads",
            "1",
            "train",
            "--preset",
            "mnist-vdl",
            "--train-limit",
            "500",
            "--epochs",
            "1",
        ])
        .args([
            "--data-dir",
            &data_dir(),
            "--out",
            &run.display().to_string(),
        ])
        .assert()
        .success()
        .stderr(
            predicates::str::contains("\"lambda\": 0.02")
                .and(predicates::str::contains("epoch   1/1")),
        );
    for f in [
        "config.json",
        "log.jsonl",
        "best/model.json",
        "latest/decoder_W.npy",
    ] {
        assert!(run.join(f).exists(), "{f}");
    }
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert!(line["val"]["psnr"].as_f64().unwrap() > 5.0);
    assert!(line["train_seconds"].as_f64().is_some());

    // resume to a second epoch; the log grows by one line
    varsparse()
        .args(["train", "--resume", &p("latest"), "--epochs", "2"])
        .assert()
        .success()
        .stderr(predicates::str::contains("resuming at epoch 2"));
    assert_eq!(
        std::fs::read_to_string(run.join("log.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );

    varsparse()
        .args(["eval", "--model", &p("best"), "--split", "val"])
        .assert()
        .success()
        .stdout(predicates::str::contains("\"psnr\""));
    // encode a file of the right width, with and without FISTA
    let y: Array2<f32> = linear_uniform(&mut rng(9), 20, 784, 1);
    write(&run.join("y.npy"), &y);
    for fista in [false, true] {
        let mut c = varsparse();
        c.args([
            "encode",
            "--model",
            &p("best"),
            "--input",
            &p("y.npy"),
            "--out",
            &p("z.npy"),
        ]);
        if fista {
            c.args(["--fista", "--report", &p("r.json")]);
        }
        c.assert().success();
        let z = Array2::<f32>::read_npy(std::fs::File::open(run.join("z.npy")).unwrap()).unwrap();
        assert_eq!(z.dim(), (20, 128));
    }

    // errors: wrong width, another preset's resume, other hyper-parameters, contradictory flags
    write(&run.join("bad.npy"), &Array2::zeros((3, 5)));
    varsparse()
        .args([
            "encode",
            "--model",
            &p("best"),
            "--input",
            &p("bad.npy"),
            "--out",
            &p("z2.npy"),
        ])
        .assert()
        .failure()
        .stderr(predicates::str::contains("(3, 5)"));
    varsparse()
        .args([
            "train",
            "--resume",
            &p("latest"),
            "--preset",
            "mnist-sdl",
            "--epochs",
            "3",
        ])
        .assert()
        .failure()
        .stderr(predicates::str::contains("preset"));
    varsparse()
        .args([
            "train",
            "--resume",
            &p("latest"),
            "--epochs",
            "3",
            "--lambda",
            "0.5",
        ])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "only epochs and patience may change",
        ));
    varsparse()
        .args(["eval", "--model", &dir.path().display().to_string()])
        .assert()
        .failure()
        .stderr(predicates::str::contains("model.json"));
}

#[test]
fn train_flag_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    // contradictory data flags
    varsparse()
        .args([
            "train",
            "--preset",
            "mnist-vdl",
            "--input",
            "x.npy",
            "--train-limit",
            "5",
            "--out",
            &out,
        ])
        .assert()
        .failure();
    varsparse()
        .args([
            "train",
            "--preset",
            "mnist-vdl",
            "--patches",
            "1,2,3",
            "--out",
            &out,
        ])
        .assert()
        .failure()
        .stderr(predicates::str::contains("patches"));
    varsparse()
        .args(["train", "--preset", "no-such-preset", "--out", &out])
        .assert()
        .failure()
        .stderr(predicates::str::contains("mnist-vdl"));
    varsparse()
        .args(["train", "--out", &out])
        .assert()
        .failure()
        .stderr(predicates::str::contains("--preset"));
    // missing data directory
    varsparse()
        .args([
            "train",
            "--preset",
            "mnist-vdl",
            "--data-dir",
            "/nonexistent",
            "--out",
            &out,
        ])
        .assert()
        .failure()
        .stderr(predicates::str::contains("/nonexistent"));
    // bad hyper-parameter
    varsparse()
        .args([
            "train",
            "--preset",
            "mnist-vdl",
            "--threshold",
            "0",
            "--out",
            &out,
        ])
        .assert()
        .failure()
        .stderr(predicates::str::contains("threshold"));
    // own data with a wrong image shape
    let y: Array2<f32> = linear_uniform(&mut rng(9), 600, 30, 1);
    write(&dir.path().join("y.npy"), &y);
    varsparse()
        .args([
            "train",
            "--preset",
            "mnist-vdl",
            "--input",
            &format!("{out}/y.npy"),
            "--image-shape",
            "5x5",
            "--out",
            &out,
        ])
        .assert()
        .failure()
        .stderr(predicates::str::contains("5x5"));
}

#[test]
fn train_on_own_npy_samples() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").display().to_string();
    let w: Array2<f32> = linear_uniform(&mut rng(1), 36, 8, 8);
    let z: Array2<f32> = linear_uniform::<f32>(&mut rng(2), 600, 8, 1).mapv(|v| v.max(0.0));
    write(&dir.path().join("y.npy"), &z.dot(&w.t()));
    varsparse()
        .args([
            "train",
            "--preset",
            "mnist-sdl",
            "--code-dim",
            "16",
            "--batch-size",
            "50",
            "--epochs",
            "2",
        ])
        .args([
            "--input",
            &dir.path().join("y.npy").display().to_string(),
            "--image-shape",
            "6x6",
            "--out",
            &out,
        ])
        .assert()
        .success();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{out}/latest/model.json")).unwrap())
            .unwrap();
    assert_eq!(m["input_dim"], 36);
    assert_eq!(m["code_dim"], 16);
    assert_eq!(m["epochs_done"], 2);
}

#[test]
fn denoise_atoms_and_sweep_commands() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let p = |s: &str| run.join(s).display().to_string();
    varsparse()
        .args(["--threads", "1", "train", "--preset", "mnist-sdl"])
        .args([
            "--train-limit",
            "500",
            "--epochs",
            "1",
            "--data-dir",
            &data_dir(),
        ])
        .args(["--out", &run.display().to_string()])
        .assert()
        .success();
    // denoise: JSON, one PNG per sigma, a table on stdout; the output defaults to the run dir
    varsparse()
        .args([
            "denoise",
            "--model",
            &p("best"),
            "--sigma",
            "0,1",
            "--split",
            "val",
        ])
        .assert()
        .success()
        .stdout(predicates::str::contains("| 1 | 5000 |"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("denoise.json")).unwrap()).unwrap();
    let rows = json["report"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["psnr_recon_noisy"], rows[0]["psnr_recon_clean"]);
    for s in ["0", "1"] {
        let img = image::open(run.join(format!("denoise_sigma{s}.png"))).unwrap();
        assert_eq!((img.width(), img.height()), (10 * 58 + 2, 4 * 58 + 2));
    }
    varsparse()
        .args(["denoise", "--model", &p("best"), "--sigma=-1"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("sigma"));

    // atoms: a 16 x 8 grid of 128 atoms
    varsparse()
        .args(["atoms", "--model", &p("best"), "--out", &p("atoms.png")])
        .assert()
        .success();
    let img = image::open(run.join("atoms.png")).unwrap();
    assert_eq!((img.width(), img.height()), (16 * 58 + 2, 8 * 58 + 2));

    // sweep: the second invocation skips both runs
    let sweep = dir.path().join("sweep").display().to_string();
    let sweep_cmd = || {
        let mut c = varsparse();
        c.args(["--threads", "1", "sweep", "--preset", "mnist-vdl"])
            .args([
                "--lambdas",
                "5e-3,2e-2",
                "--epochs",
                "1",
                "--train-limit",
                "500",
            ])
            .args(["--data-dir", &data_dir(), "--out", &sweep]);
        c
    };
    sweep_cmd()
        .assert()
        .success()
        .stderr(predicates::str::contains("train  mnist-vdl lambda 0.005"));
    sweep_cmd().assert().success().stderr(
        predicates::str::contains("skip   mnist-vdl lambda 0.005")
            .and(predicates::str::contains("skip   mnist-vdl lambda 0.02")),
    );
    let csv = std::fs::read_to_string(dir.path().join("sweep/sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(dir.path().join("sweep/sweep.png").exists());
    varsparse()
        .args([
            "sweep",
            "--preset",
            "mnist-vdl,patches-vdl",
            "--lambdas",
            "0.01",
        ])
        .args(["--out", &sweep])
        .assert()
        .failure()
        .stderr(predicates::str::contains("same data"));
}
