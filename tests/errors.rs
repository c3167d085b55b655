//! Bad input gives a typed error with a clear message, never a panic.

use ndarray::Array2;
use varsparse::backend::Cpu;
use varsparse::model::decoder::Decoder;
use varsparse::model::energy::EnergyParams;
use varsparse::rng::{linear_uniform, rng};
use varsparse::solve::fista::{self, FistaParams, FistaWorkspace, StepRule};
use varsparse::{Error, io};

fn w() -> Array2<f32> {
    linear_uniform(&mut rng(1), 10, 4, 4)
}

fn y(n: usize) -> Array2<f32> {
    linear_uniform(&mut rng(2), n, 10, 1)
}

fn run(y: &Array2<f32>, warm: Option<&Array2<f32>>, params: &FistaParams) -> varsparse::Result<()> {
    let be = Cpu;
    let dec = Decoder::linear(&be, &w())?;
    fista::solve_batches(&be, &dec, y, warm, params, 250).map(|_| ())
}

fn vdl() -> FistaParams {
    FistaParams {
        energy: EnergyParams {
            lambda: 0.02,
            beta: 10.0,
            threshold: 0.5,
            gamma: 5.0,
        },
        step: StepRule::Constant { eta: 0.5 },
        ..FistaParams::default()
    }
}

#[test]
fn wrong_shapes_name_both_shapes() {
    let err = run(&Array2::zeros((5, 9)), None, &vdl()).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert!(
        err.to_string().contains("(5, 9)") && err.to_string().contains("10"),
        "{err}"
    );
    let err = run(&y(5), Some(&Array2::zeros((5, 3))), &vdl()).unwrap_err();
    assert!(
        err.to_string().contains("(5, 3)") && err.to_string().contains("(5, 4)"),
        "{err}"
    );
    // a workspace for another batch size
    let be = Cpu;
    let dec = Decoder::linear(&be, &w()).unwrap();
    let mut ws = FistaWorkspace::new(&be, &dec, 3).unwrap();
    let err = fista::solve(&be, &dec, &y(5), None, &vdl(), &mut ws).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let err = Decoder::one_hidden(
        &be,
        &Array2::<f32>::zeros((6, 4)),
        &Array2::zeros((1, 6)),
        &Array2::zeros((10, 5)),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("(6, 4)") && err.to_string().contains("(10, 5)"),
        "{err}"
    );
}

#[test]
fn nan_in_inputs_is_located() {
    let mut yy = y(5);
    yy[(3, 7)] = f32::NAN;
    let err = run(&yy, None, &vdl()).unwrap_err();
    assert!(
        matches!(err, Error::NonFiniteInput { index: (3, 7), .. }),
        "{err}"
    );
    let mut warm = Array2::zeros((5, 4));
    warm[(1, 2)] = f32::INFINITY;
    let err = run(&y(5), Some(&warm), &vdl()).unwrap_err();
    assert!(err.to_string().contains("warm start"), "{err}");
    let mut bad_w = w();
    bad_w[(0, 0)] = f32::NAN;
    assert!(matches!(
        Decoder::linear(&Cpu, &bad_w),
        Err(Error::NonFiniteInput { .. })
    ));
}

#[test]
fn bad_hyper_parameters() {
    let cases: Vec<(FistaParams, &str)> = vec![
        (
            FistaParams {
                energy: EnergyParams {
                    lambda: -0.1,
                    ..vdl().energy
                },
                ..vdl()
            },
            "lambda",
        ),
        (
            FistaParams {
                energy: EnergyParams {
                    threshold: 0.0,
                    ..vdl().energy
                },
                ..vdl()
            },
            "threshold",
        ),
        (
            FistaParams {
                energy: EnergyParams {
                    threshold: -1.0,
                    ..vdl().energy
                },
                ..vdl()
            },
            "threshold",
        ),
        (
            FistaParams {
                energy: EnergyParams {
                    gamma: f64::NAN,
                    ..vdl().energy
                },
                ..vdl()
            },
            "gamma",
        ),
        (
            FistaParams {
                step: StepRule::Constant { eta: 0.0 },
                ..vdl()
            },
            "step",
        ),
        (
            FistaParams {
                step: StepRule::Backtracking {
                    initial_step: None,
                    factor: 1.0,
                },
                ..vdl()
            },
            "factor",
        ),
        (
            FistaParams {
                max_iter: 0,
                ..vdl()
            },
            "max_iter",
        ),
        (FistaParams { tol: -1.0, ..vdl() }, "tol"),
    ];
    for (p, name) in cases {
        let err = run(&y(5), None, &p).unwrap_err();
        assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
        assert!(err.to_string().contains(name), "{err} should name {name}");
    }
    // T <= 0 is fine when the hinge is off
    let p = FistaParams {
        energy: EnergyParams {
            beta: 0.0,
            threshold: 0.0,
            ..vdl().energy
        },
        ..vdl()
    };
    run(&y(5), None, &p).unwrap();
}

#[test]
fn a_batch_of_one_with_the_hinge_is_rejected() {
    let err = run(&y(1), None, &vdl()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                name: "batch size",
                ..
            }
        ),
        "{err}"
    );
    // 251 rows in batches of 250 leave a last batch of one
    let err = run(&y(251), None, &vdl()).unwrap_err();
    assert!(err.to_string().contains("250..251"), "{err}");
    let p = FistaParams {
        energy: EnergyParams {
            beta: 0.0,
            ..vdl().energy
        },
        ..vdl()
    };
    run(&y(1), None, &p).unwrap();
}

#[test]
fn missing_and_malformed_npy() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.npy");
    let err = io::read_npy_f32(&missing).unwrap_err();
    assert!(
        matches!(err, Error::Io { .. }) && err.to_string().contains("nope.npy"),
        "{err}"
    );
    let garbage = dir.path().join("garbage.npy");
    std::fs::write(&garbage, b"not an npy file at all").unwrap();
    let err = io::read_npy_f32(&garbage).unwrap_err();
    assert!(
        matches!(err, Error::Npy { .. }) && err.to_string().contains("garbage.npy"),
        "{err}"
    );
    // a truncated file: a valid header with too little data
    let good = dir.path().join("good.npy");
    io::write_npy_f32(&good, &Array2::ones((4, 4))).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.npy");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    assert!(matches!(io::read_npy_f32(&cut), Err(Error::Npy { .. })));
    // 1-D and integer arrays
    use ndarray_npy::WriteNpyExt;
    let one_d = dir.path().join("one_d.npy");
    ndarray::Array1::<f32>::zeros(3)
        .write_npy(std::fs::File::create(&one_d).unwrap())
        .unwrap();
    let err = io::read_npy_f32(&one_d).unwrap_err();
    assert!(err.to_string().contains("2-D"), "{err}");
    let ints = dir.path().join("ints.npy");
    Array2::<i32>::zeros((2, 2))
        .write_npy(std::fs::File::create(&ints).unwrap())
        .unwrap();
    let err = io::read_npy_f32(&ints).unwrap_err();
    assert!(err.to_string().contains("float32 or float64"), "{err}");
    // float64 is converted
    let f64s = dir.path().join("f64.npy");
    Array2::<f64>::from_elem((2, 3), 0.25)
        .write_npy(std::fs::File::create(&f64s).unwrap())
        .unwrap();
    assert_eq!(
        io::read_npy_f32(&f64s).unwrap(),
        Array2::from_elem((2, 3), 0.25f32)
    );
    // no temporary file is left behind by a successful write
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.iter().all(|n| !n.to_string_lossy().contains(".tmp-")),
        "{names:?}"
    );
}

#[test]
fn diverging_training_names_the_term() {
    use varsparse::model::decoder::DecoderKind;
    use varsparse::model::encoder::Lista;
    use varsparse::train::optim::{AdamParams, LrSchedule};
    use varsparse::train::{StepConfig, Trainer};
    let be = Cpu;
    let mut r = rng(0);
    let enc = Lista::init(&be, 10, 4, 3, &mut r).unwrap();
    let dec = Decoder::init(&be, DecoderKind::Linear, 10, 4, &mut r).unwrap();
    let cfg = StepConfig {
        fista: FistaParams {
            step: StepRule::Constant { eta: 1e6 },
            ..vdl()
        },
        decoder_adam: AdamParams::new(1e-3),
        encoder_adam: AdamParams::new(1e-3),
        decoder_schedule: LrSchedule::Constant,
        encoder_schedule: LrSchedule::Constant,
        column_norm: false,
        pixel_scale: 1.0,
    };
    let mut t: Trainer<f32, Cpu> = Trainer::new(&be, enc, dec, cfg).unwrap();
    let err = t.step(&be, &(y(20) * 100.0), 0).unwrap_err();
    assert!(matches!(err, Error::Diverged { .. }), "{err}");
    assert!(err.to_string().contains("smaller step"), "{err}");
}
