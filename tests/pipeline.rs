//! End-to-end training on a slice of the bundled MNIST; checkpoints and resumption.

use std::path::Path;
use std::sync::OnceLock;

use ndarray::{Array2, Axis};
use varsparse::data::{DataSpec, LoadedData};
use varsparse::model::{DecoderParams, ParamSet};
use varsparse::train::FitOptions;
use varsparse::{Cpu, Error, ModelParams, Preset, SparseCoder};

fn mnist() -> &'static LoadedData {
    static DATA: OnceLock<LoadedData> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut d = DataSpec::Mnist {
            dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"),
            split_seed: 0,
            train_limit: Some(2000),
        }
        .load()
        .expect("bundled MNIST");
        // a smaller validation set keeps the tests quick
        d.val = d.val.head(1000);
        d
    })
}

fn small(p: Preset) -> ModelParams {
    ModelParams::preset(p).epochs(2).hidden(128).seed(3)
}

#[test]
fn each_model_kind_learns_in_two_epochs() {
    for p in [
        Preset::MnistSdl,
        Preset::MnistVdl,
        Preset::MnistSdlNl,
        Preset::MnistVdlNl,
    ] {
        let mut summaries = vec![];
        struct Keep<'a>(&'a mut Vec<varsparse::train::EpochSummary>);
        impl varsparse::train::Observer for Keep<'_> {
            fn on_epoch(
                &mut self,
                s: &varsparse::train::EpochSummary,
            ) -> std::ops::ControlFlow<()> {
                self.0.push(s.clone());
                std::ops::ControlFlow::Continue(())
            }
        }
        let model = small(p)
            .validate()
            .unwrap()
            .fit(&mnist().train_data(), &mut Keep(&mut summaries))
            .unwrap();
        assert_eq!(summaries.len(), 2);
        let (a, b) = (&summaries[0].val, &summaries[1].val);
        assert!(
            b.energy < a.energy,
            "{p:?}: validation energy {} -> {}",
            a.energy,
            b.energy
        );
        assert!(
            b.psnr > a.psnr,
            "{p:?}: validation PSNR {} -> {}",
            a.psnr,
            b.psnr
        );
        assert!(b.psnr > 9.0, "{p:?}: PSNR {}", b.psnr);
        let codes = model.encode(&mnist().val.x).unwrap();
        assert!(codes.iter().all(|&v| v >= 0.0));
        let (fista_codes, _) = model.encode_fista(&mnist().val.head(250).x).unwrap();
        assert!(fista_codes.iter().all(|&v| v >= 0.0));
        if model.params().column_norm {
            let params = model.decoder().to_host(&Cpu).unwrap();
            let weights: Vec<&Array2<f32>> = match &params {
                DecoderParams::Linear { w } => vec![w],
                DecoderParams::OneHidden { w1, w2, .. } => vec![w1, w2],
            };
            for w in weights {
                for c in w.axis_iter(Axis(1)) {
                    assert!((c.dot(&c).sqrt() - 1.0).abs() < 1e-5);
                }
            }
        }
    }
}

fn weights(m: &SparseCoder) -> Vec<Array2<f32>> {
    let enc = m.encoder().to_host(&Cpu).unwrap();
    let dec = m.decoder().to_host(&Cpu).unwrap();
    let mut w: Vec<Array2<f32>> = enc.named().into_iter().map(|p| p.1.clone()).collect();
    w.extend(dec.named().into_iter().map(|p| p.1.clone()));
    w
}

#[test]
fn resuming_gives_bit_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = mnist().train_data();
    let params = ModelParams::preset(Preset::MnistVdlNl).hidden(64).seed(11);
    let full = params
        .clone()
        .epochs(3)
        .validate()
        .unwrap()
        .fit(&data, &mut ())
        .unwrap();

    let opts = FitOptions {
        out_dir: Some(dir.path().to_path_buf()),
        ..FitOptions::default()
    };
    params
        .clone()
        .epochs(2)
        .validate()
        .unwrap()
        .fit_with(Cpu, &data, &opts, &mut ())
        .unwrap();
    let resume = FitOptions {
        out_dir: Some(dir.path().to_path_buf()),
        resume: Some(dir.path().join("latest")),
        ..FitOptions::default()
    };
    let resumed = params
        .clone()
        .epochs(3)
        .validate()
        .unwrap()
        .fit_with(Cpu, &data, &resume, &mut ())
        .unwrap();
    assert_eq!(resumed.epochs_trained(), 3);
    assert_eq!(weights(&full), weights(&resumed));
    // and the checkpoint on disk is the resumed model
    assert_eq!(
        weights(&SparseCoder::load(&dir.path().join("latest")).unwrap()),
        weights(&full)
    );

    // other hyper-parameters cannot resume this run
    let other = params.clone().epochs(4).lambda(0.5).validate().unwrap();
    let err = other.fit_with(Cpu, &data, &resume, &mut ()).err().unwrap();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
}

#[test]
fn checkpoint_round_trip_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let data = mnist().train_data();
    let model = ModelParams::preset(Preset::MnistSdlNl)
        .hidden(32)
        .epochs(1)
        .validate()
        .unwrap()
        .fit(&data, &mut ())
        .unwrap();
    let ck = dir.path().join("ck");
    model.save(&ck).unwrap();
    let back = SparseCoder::load(&ck).unwrap();
    assert_eq!(weights(&model), weights(&back));
    assert_eq!(back.params(), model.params());
    assert_eq!(back.epochs_trained(), 1);
    let y = mnist().val.head(50).x;
    assert_eq!(model.encode(&y).unwrap(), back.encode(&y).unwrap());
    assert_eq!(model.atoms().unwrap(), back.atoms().unwrap());
    // saving again over it leaves no temporary or aside directory
    model.save(&ck).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["ck".to_string()]);

    let corrupt = |what: &str, f: &dyn Fn(&Path)| {
        let c = dir.path().join(what);
        let _ = std::fs::remove_dir_all(&c);
        model.save(&c).unwrap();
        f(&c);
        let err = SparseCoder::load(&c).err().expect(what);
        assert!(matches!(err, Error::Checkpoint { .. }), "{what}: {err}");
        err.to_string()
    };
    let msg = corrupt("truncated", &|c| {
        let p = c.join("decoder_W2.npy");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    });
    assert!(msg.contains("decoder_W2.npy"), "{msg}");
    let msg = corrupt("no-manifest", &|c| {
        std::fs::remove_file(c.join("model.json")).unwrap()
    });
    assert!(msg.contains("model.json"), "{msg}");
    corrupt("bad-json", &|c| {
        std::fs::write(c.join("model.json"), "{ not json").unwrap()
    });
    let msg = corrupt("wrong-shape", &|c| {
        varsparse::io::write_npy_f32(&c.join("encoder_S.npy"), &Array2::zeros((3, 3))).unwrap()
    });
    assert!(msg.contains("(3, 3)"), "{msg}");
    corrupt("missing-array", &|c| {
        std::fs::remove_file(c.join("adam_v_encoder_b.npy")).unwrap()
    });
    // a lying carried FISTA step (the step safeguard's; null in this run)
    let msg = corrupt("bad-fista-step", &|c| {
        let p = c.join("model.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(m["fista_step"], serde_json::Value::Null);
        m["fista_step"] = serde_json::json!(-0.5);
        std::fs::write(&p, m.to_string()).unwrap();
    });
    assert!(msg.contains("fista_step is -0.5"), "{msg}");
    assert!(SparseCoder::load(&dir.path().join("nowhere")).is_err());
}

#[test]
fn bad_data_is_an_error() {
    let d = mnist();
    let mut data = d.train_data();
    let tiny = d.train.head(10);
    data.train = tiny.samples(d.pixel_scale);
    let err = ModelParams::preset(Preset::MnistVdl)
        .epochs(1)
        .validate()
        .unwrap()
        .fit(&data, &mut ())
        .err()
        .unwrap();
    assert!(err.to_string().contains("no full batch"), "{err}");
    let mut nan = d.val.head(300).x;
    nan[(7, 3)] = f32::NAN;
    let mut data = d.train_data();
    data.val = varsparse::data::Samples::new(nan.view(), 1.0);
    let err = ModelParams::preset(Preset::MnistVdl)
        .epochs(1)
        .validate()
        .unwrap()
        .fit(&data, &mut ())
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::NonFiniteInput { index: (7, 3), .. }),
        "{err}"
    );
    assert!(
        ModelParams::preset(Preset::MnistVdl)
            .epochs(0)
            .validate()
            .is_err()
    );
    assert!(
        ModelParams::preset(Preset::MnistVdl)
            .batch_size(1)
            .validate()
            .is_err()
    );
}

/// A checkpoint write that fails stops training with a typed error, and the previous `latest/`
/// and `best/` are intact and loadable. The failure is forced by a file where the write's
/// temporary directory must go (this works as root too); a read-only run directory is tried as
/// well where permissions apply (not as root, which CI is).
#[test]
fn a_failed_checkpoint_write_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = mnist().train_data();
    let params = ModelParams::preset(Preset::MnistVdl).seed(4);
    let opts = FitOptions {
        out_dir: Some(dir.path().to_path_buf()),
        ..FitOptions::default()
    };
    params
        .clone()
        .epochs(1)
        .validate()
        .unwrap()
        .fit_with(Cpu, &data, &opts, &mut ())
        .unwrap();
    let before = weights(&SparseCoder::load(&dir.path().join("latest")).unwrap());
    let resume = FitOptions {
        out_dir: Some(dir.path().to_path_buf()),
        resume: Some(dir.path().join("latest")),
        ..FitOptions::default()
    };
    let blocker = dir
        .path()
        .join(format!(".latest.tmp-{}", std::process::id()));
    std::fs::write(&blocker, b"in the way").unwrap();
    let err = params
        .clone()
        .epochs(2)
        .validate()
        .unwrap()
        .fit_with(Cpu, &data, &resume, &mut ())
        .err()
        .unwrap();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    for name in ["latest", "best"] {
        let m = SparseCoder::load(&dir.path().join(name)).unwrap();
        assert_eq!(m.epochs_trained(), 1, "{name}");
        assert_eq!(weights(&m), before, "{name}");
    }
    std::fs::remove_file(&blocker).unwrap();
    assert!(
        !dir.path().join(".lock").exists(),
        "the run's lock is released on error"
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = std::fs::Permissions::from_mode(0o555);
        std::fs::set_permissions(dir.path(), ro).unwrap();
        let writable = std::fs::write(dir.path().join("probe"), b"").is_ok();
        if writable {
            println!(
                "skipped the read-only case: this user (root?) writes into read-only directories"
            );
        } else {
            let err = params
                .clone()
                .epochs(2)
                .validate()
                .unwrap()
                .fit_with(Cpu, &data, &resume, &mut ())
                .err()
                .unwrap();
            assert!(matches!(err, Error::Io { .. }), "{err}");
            for name in ["latest", "best"] {
                assert_eq!(
                    weights(&SparseCoder::load(&dir.path().join(name)).unwrap()),
                    before
                );
            }
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A second run writing into a run directory another live process holds refuses to start.
#[test]
fn a_run_directory_has_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    // pid 1 (init) is alive on Linux
    std::fs::write(dir.path().join(".lock"), "1\n").unwrap();
    let opts = FitOptions {
        out_dir: Some(dir.path().to_path_buf()),
        ..FitOptions::default()
    };
    let r = ModelParams::preset(Preset::MnistSdl)
        .epochs(1)
        .validate()
        .unwrap()
        .fit_with(Cpu, &mnist().train_data(), &opts, &mut ());
    if cfg!(target_os = "linux") {
        let err = r.err().unwrap();
        assert!(matches!(err, Error::RunLocked { pid: 1, .. }), "{err}");
        assert!(err.to_string().contains("process 1"), "{err}");
    }
}

/// A checkpoint of format version 1 (biases stored as `(1, n)`) still loads and gives the codes
/// its version gave.
#[test]
fn a_version_1_checkpoint_loads_and_encodes_as_before() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let m = SparseCoder::load(&fx.join("checkpoint-v1")).unwrap();
    let y = varsparse::io::read_npy_f32(&fx.join("checkpoint-v1-input.npy")).unwrap();
    let want = varsparse::io::read_npy_f32(&fx.join("checkpoint-v1-codes.npy")).unwrap();
    assert_eq!(m.encode(&y).unwrap(), want);
    // FISTA's codes change with a summation meant to change results (as the golden hashes):
    // re-recorded with VARSPARSE_BLESS=1, last for the variance statistics summed in f64
    // (docs/SCALING.md)
    let fista = m.encode_fista(&y).unwrap().0;
    if std::env::var_os("VARSPARSE_BLESS").is_some() {
        varsparse::io::write_npy_f32(&fx.join("checkpoint-v1-fista.npy"), &fista).unwrap();
    }
    let want = varsparse::io::read_npy_f32(&fx.join("checkpoint-v1-fista.npy")).unwrap();
    assert_eq!(fista, want);
    // saved again, it is version 2 and loads to the same model
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path()).unwrap();
    let meta = std::fs::read_to_string(dir.path().join("model.json")).unwrap();
    assert!(meta.contains("\"format_version\": 2"), "{meta}");
    assert_eq!(
        weights(&SparseCoder::load(dir.path()).unwrap()),
        weights(&m)
    );
}

/// The shapes the README documents for numpy users: matrices as in the library, biases as
/// vectors.
#[test]
fn checkpoint_arrays_have_the_documented_shapes() {
    use ndarray::ArrayD;
    use ndarray_npy::ReadNpyExt;
    let dir = tempfile::tempdir().unwrap();
    let data = mnist().train_data();
    let model = ModelParams::preset(Preset::MnistVdlNl)
        .hidden(32)
        .epochs(1)
        .validate()
        .unwrap()
        .fit(&data, &mut ())
        .unwrap();
    model.save(dir.path()).unwrap();
    let shape = |name: &str| {
        let f = std::fs::File::open(dir.path().join(format!("{name}.npy"))).unwrap();
        ArrayD::<f32>::read_npy(f).unwrap().shape().to_vec()
    };
    let (d, l, m) = (784, 128, 32);
    assert_eq!(shape("encoder_U"), [l, d]);
    assert_eq!(shape("encoder_b"), [l]);
    assert_eq!(shape("encoder_S"), [l, l]);
    assert_eq!(shape("decoder_W1"), [m, l]);
    assert_eq!(shape("decoder_b1"), [m]);
    assert_eq!(shape("decoder_W2"), [d, m]);
    assert_eq!(shape("adam_m_decoder_b1"), [m]);
    let linear = ModelParams::preset(Preset::MnistVdl)
        .epochs(1)
        .validate()
        .unwrap()
        .fit(&data, &mut ())
        .unwrap();
    linear.save(dir.path()).unwrap();
    assert_eq!(shape("decoder_W"), [d, l]);
}

#[test]
fn resume_from_a_run_directory_or_a_checkpoint() {
    use varsparse::train::checkpoint::resume_from;
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let opts = FitOptions {
        out_dir: Some(run.clone()),
        ..FitOptions::default()
    };
    let params = ModelParams::preset(Preset::MnistSdl).epochs(1).seed(3);
    params
        .validate()
        .unwrap()
        .fit_with(Cpu, &mnist().train_data(), &opts, &mut ())
        .unwrap();

    // the run directory means its latest/
    let r = resume_from(&run).unwrap();
    assert_eq!(r.checkpoint, run.join("latest"));
    assert_eq!(r.run_dir, run);
    assert_eq!(r.warning, None);
    // a checkpoint directory is itself, in its run
    let r = resume_from(&run.join("latest")).unwrap();
    assert_eq!(
        (r.checkpoint, r.run_dir, r.warning),
        (run.join("latest"), run.clone(), None)
    );
    // best/ resumes, with a warning naming latest/
    let r = resume_from(&run.join("best")).unwrap();
    assert_eq!(r.checkpoint, run.join("best"));
    let w = r.warning.expect("a warning for best/");
    assert!(w.contains("discarded") && w.contains("latest"), "{w}");
    // after a crash between the two renames of a save, latest.old stands in for latest
    std::fs::rename(run.join("latest"), run.join("latest.old")).unwrap();
    assert_eq!(resume_from(&run).unwrap().checkpoint, run.join("latest"));
    // anything else is a typed error
    match resume_from(tmp.path()) {
        Err(Error::Checkpoint { detail, .. }) => assert!(detail.contains("neither"), "{detail}"),
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}
