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
        assert_eq!(b["restarts"], 0);
    }
    assert_eq!(r["params"]["restart"], false, "{r}");
    // adaptive restart: on in the parameters, restarts counted per batch
    varsparse()
        .args(["--threads", "1", "infer", "--dictionary"])
        .arg(p("W.npy"))
        .arg("--input")
        .arg(p("Y.npy"))
        .arg("--out")
        .arg(p("Z2.npy"))
        .arg("--report")
        .arg(p("R2.json"))
        .args(["--lambda", "0.01", "--beta", "1", "--batch-size", "10"])
        .args(["--step", "0.5", "--tol", "1e-6", "--adaptive-restart"])
        .assert()
        .success();
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("R2.json")).unwrap()).unwrap();
    assert_eq!(r["params"]["restart"], true, "{r}");
    let batches = r["batches"].as_array().unwrap();
    assert!(
        batches.iter().all(|b| b["restarts"].as_u64().is_some()),
        "{r}"
    );
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
        .stderr(
            predicates::str::contains("resuming at epoch 2")
                .and(predicates::str::contains("warning").not()),
        );
    assert_eq!(
        std::fs::read_to_string(run.join("log.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    // the run directory itself resumes from its latest/ (into the same run directory); the
    // step safeguard, unlike the other hyper-parameters, may change
    varsparse()
        .args([
            "train",
            "--resume",
            &run.display().to_string(),
            "--epochs",
            "3",
            "--safeguard-after",
            "5",
            "--adaptive-restart",
            "true",
        ])
        .assert()
        .success()
        .stderr(
            predicates::str::contains("resuming at epoch 3")
                .and(predicates::str::contains("warning").not()),
        );
    let latest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("latest/model.json")).unwrap())
            .unwrap();
    assert_eq!(latest["epochs_done"], 3);
    assert_eq!(latest["params"]["step_safeguard"], 5, "{latest}");
    assert_eq!(latest["params"]["fista_restart"], true, "{latest}");
    // resuming from best/ works but warns that the epochs after it are discarded
    let elsewhere = dir.path().join("from-best").display().to_string();
    varsparse()
        .args(["train", "--resume", &p("best"), "--epochs", "4"])
        .args(["--out", &elsewhere])
        .assert()
        .success()
        .stderr(predicates::str::contains(
            "warning: resuming from the best checkpoint",
        ));
    // neither a run nor a checkpoint
    varsparse()
        .args(["train", "--resume", &dir.path().display().to_string()])
        .assert()
        .failure()
        .stderr(predicates::str::contains("neither a run directory"));

    varsparse()
        .args(["eval", "--model", &p("best"), "--split", "val"])
        .assert()
        .success()
        .stdout(predicates::str::contains("\"psnr\""));
    // split names are typed: `validation` is `val`, anything else a usage error
    varsparse()
        .args(["eval", "--model", &p("best"), "--split", "validation"])
        .assert()
        .success()
        .stdout(predicates::str::contains("\"split\": \"val\""));
    varsparse()
        .args(["eval", "--model", &p("best"), "--split", "holdout"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("train, val, test"));
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
        .stderr(
            predicates::str::contains(
                "only epochs, patience, the step safeguard and the adaptive restart may change",
            )
            // the error names the checkpoint it refused
            .and(predicates::str::contains(format!(
                "checkpoint {}",
                p("latest")
            ))),
        );
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
    // the step safeguard is `off` or a number of iterations
    varsparse()
        .args([
            "train",
            "--preset",
            "mnist-vdl-nl",
            "--safeguard-after",
            "soon",
            "--out",
            &out,
        ])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "expected `off` or a number of iterations, got `soon`",
        ));
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

/// Whether this build can start a CUDA device (a `cuda` build on a machine with a GPU).
fn gpu_available() -> bool {
    struct Probe;
    impl varsparse::backend::OnBackend for Probe {
        type Output = ();
        fn run<B: varsparse::Backend<f32>>(
            self,
            make: &dyn Fn() -> varsparse::Result<B>,
        ) -> varsparse::Result<()> {
            make().map(|_| ())
        }
    }
    varsparse::backend::Device::Cuda { ordinal: 0 }
        .run(Probe)
        .is_ok()
}

#[test]
fn device_flag_is_typed_and_cuda_without_a_gpu_is_a_clear_error() {
    let dir = setup();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let infer = [
        "infer",
        "--dictionary",
        &p("W.npy"),
        "--input",
        &p("Y.npy"),
        "--out",
        &p("Z.npy"),
        "--lambda",
        "0.01",
    ];
    // not a device: a usage error (exit code 2) listing the valid names
    varsparse()
        .args(["--device", "tpu"])
        .args(infer)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("cpu, cuda or cuda:N"));
    varsparse()
        .args(infer)
        .args(["--device", "cuda:x"])
        .assert()
        .code(2);
    // cpu explicitly
    varsparse()
        .args(infer)
        .args(["--device", "cpu"])
        .assert()
        .success();
    if gpu_available() {
        println!("skipped the no-GPU error path: this build has a GPU");
        return;
    }
    let nowhere = p("no-model");
    let data = data_dir();
    let out = p("out");
    let y = p("Y.npy");
    let commands: Vec<Vec<&str>> = vec![
        infer.to_vec(),
        vec!["encode", "--model", &nowhere, "--input", &y, "--out", &out],
        vec!["eval", "--model", &nowhere],
        vec!["denoise", "--model", &nowhere],
        vec![
            "classify",
            "--baseline",
            "raw",
            "--data-dir",
            &data,
            "--out",
            &out,
        ],
        vec![
            "train",
            "--preset",
            "mnist-vdl",
            "--train-limit",
            "300",
            "--epochs",
            "1",
            "--data-dir",
            &data,
            "--out",
            &out,
        ],
        vec![
            "sweep",
            "--preset",
            "mnist-vdl",
            "--lambdas",
            "0.02",
            "--epochs",
            "1",
            "--train-limit",
            "300",
            "--data-dir",
            &data,
            "--out",
            &out,
        ],
    ];
    for (k, c) in commands.iter().enumerate() {
        for device in ["cuda", "cuda:1"] {
            // global flag, before or after the subcommand
            let mut cmd = varsparse();
            if k % 2 == 0 {
                cmd.args(["--device", device]).args(c);
            } else {
                cmd.args(c).args(["--device", device]);
            }
            cmd.assert()
                .code(1)
                .stderr(predicates::str::contains("CUDA"));
        }
    }
    // bench runs on the CPU only, and says so
    varsparse()
        .args(["bench", "--device", "cuda", "--data-dir", &data])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("--device cpu"));
}

#[test]
fn infer_chooses_its_solver_and_says_which_ran() {
    let dir = setup();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let run = |decoder: &[&str], extra: &[&str]| {
        let mut c = varsparse();
        c.arg("infer")
            .args(decoder)
            .args(["--input", &p("Y.npy"), "--out", &p("Z.npy")])
            .args(["--report", &p("R.json"), "--lambda", "0.01"])
            .args(extra);
        c
    };
    let report = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("R.json")).unwrap()).unwrap()
    };
    let codes =
        || Array2::<f32>::read_npy(std::fs::File::open(dir.path().join("Z.npy")).unwrap()).unwrap();
    let w = p("W.npy");
    let mlp = format!("{},{},{}", p("W1.npy"), p("b1.npy"), p("W2.npy"));
    let linear = ["--dictionary", w.as_str()];
    let one_hidden = ["--mlp", mlp.as_str()];

    // a plain lasso: auto (the default) runs the exact solver
    run(&linear, &[])
        .assert()
        .success()
        .stderr(predicates::str::contains("exact"));
    assert_eq!(report()["solver"], "exact");
    assert!(report()["lasso"].is_object());
    let exact = codes();
    // FISTA on request, close to the exact codes
    run(&linear, &["--solver", "fista", "--tol", "0"])
        .assert()
        .success()
        .stderr(predicates::str::contains("FISTA"));
    assert_eq!(report()["solver"], "fista");
    assert_eq!(report()["batches"].as_array().unwrap().len(), 1);
    let fista = codes();
    let gap = (&exact - &fista).iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(gap < 1e-2, "exact and FISTA codes differ by {gap}");
    // a variance term, a proximity term or a one-hidden-layer decoder: auto runs FISTA ...
    for (decoder, extra) in [
        (&linear[..], &["--beta", "1"][..]),
        (&linear, &["--gamma", "1"]),
        (&one_hidden, &[]),
    ] {
        run(decoder, extra).assert().success();
        assert_eq!(report()["solver"], "fista", "{extra:?}");
        // ... and exact is a clear error
        run(decoder, extra)
            .args(["--solver", "exact"])
            .assert()
            .code(1)
            .stderr(predicates::str::contains(
                "exact solver needs a linear dictionary",
            ));
    }
    // FISTA-only flags make auto run FISTA; with exact they are an error
    run(&linear, &["--step", "0.5"]).assert().success();
    assert_eq!(report()["solver"], "fista");
    run(&linear, &["--solver", "exact", "--direct"])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("FISTA's"));
    // not a solver: a usage error
    run(&linear, &["--solver", "spams"]).assert().code(2);
}

#[test]
fn infer_takes_a_one_dimensional_b1() {
    let dir = setup();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let b1 = Array2::<f32>::from_shape_fn((1, 12), |(_, j)| 0.05 * j as f32 - 0.2);
    write(&dir.path().join("b1_row.npy"), &b1);
    b1.row(0)
        .to_owned()
        .write_npy(std::fs::File::create(dir.path().join("b1_vec.npy")).unwrap())
        .unwrap();
    let mut got = Vec::new();
    for b in ["b1_row.npy", "b1_vec.npy"] {
        varsparse()
            .args([
                "infer",
                "--mlp",
                &format!("{},{},{}", p("W1.npy"), p(b), p("W2.npy")),
                "--input",
                &p("Y.npy"),
                "--out",
                &p("Z.npy"),
                "--lambda",
                "0.01",
                "--step",
                "0.5",
            ])
            .assert()
            .success();
        got.push(
            Array2::<f32>::read_npy(std::fs::File::open(dir.path().join("Z.npy")).unwrap())
                .unwrap(),
        );
    }
    assert_eq!(got[0], got[1]);
    // a b1 of the wrong length names it
    ndarray::Array1::<f32>::zeros(5)
        .write_npy(std::fs::File::create(dir.path().join("b1_bad.npy")).unwrap())
        .unwrap();
    varsparse()
        .args([
            "infer",
            "--mlp",
            &format!("{},{},{}", p("W1.npy"), p("b1_bad.npy"), p("W2.npy")),
            "--input",
            &p("Y.npy"),
            "--out",
            &p("Z.npy"),
            "--lambda",
            "0.01",
        ])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("b1"));
}

#[test]
fn data_directory_from_flag_environment_or_build() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").display().to_string();
    // VARSPARSE_DATA is used when --data-dir is not given ...
    varsparse()
        .env("VARSPARSE_DATA", "/nonexistent-env")
        .args(["train", "--preset", "mnist-vdl", "--out", &out])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("/nonexistent-env/mnist"));
    // ... and --data-dir wins over it
    varsparse()
        .env("VARSPARSE_DATA", "/nonexistent-env")
        .args(["train", "--preset", "mnist-vdl", "--out", &out])
        .args(["--data-dir", "/nonexistent-flag"])
        .assert()
        .code(1)
        .stderr(
            predicates::str::contains("/nonexistent-flag/mnist")
                .and(predicates::str::contains("nonexistent-env").not()),
        );
    // without either, the crate's data/ (this test runs from elsewhere)
    varsparse()
        .env_remove("VARSPARSE_DATA")
        .current_dir(dir.path())
        .args([
            "classify",
            "--baseline",
            "raw",
            "--per-class",
            "1",
            "--seeds",
            "1",
        ])
        .args(["--epochs", "1", "--out", &out])
        .assert()
        .success()
        .stderr(predicates::str::contains(format!(
            "MNIST from {}/mnist",
            data_dir()
        )));
}

/// `bench --train` runs one short epoch of a preset and reports its counted floating-point
/// operations against the same run's GEMM rate.
#[test]
fn bench_train_reports_flops_against_the_gemm_rate() {
    let out = varsparse()
        .args([
            "--threads",
            "1",
            "bench",
            "--train",
            "mnist-vdl",
            "--train-limit",
            "500",
            "--repeats",
            "1",
            "--data-dir",
            &data_dir(),
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("### train mnist-vdl: 2 batches of 250"),
        "{text}"
    );
    for row in [
        "| training time |",
        "| products' floating-point operations (dense-equivalent) |",
        "| achieved rate |",
        "| fraction of the GEMM rate |",
    ] {
        assert!(text.contains(row), "{row} missing from\n{text}");
    }
}
