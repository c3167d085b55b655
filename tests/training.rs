//! The training step, Adam, the schedule, determinism.

use ndarray::{Array2, Axis};
use varsparse::backend::{Backend, Cpu};
use varsparse::model::DecoderParams;
use varsparse::model::decoder::{Decoder, DecoderKind};
use varsparse::model::encoder::Lista;
use varsparse::model::energy::EnergyParams;
use varsparse::rng::{linear_uniform, rng};
use varsparse::solve::fista::{FistaParams, StepRule};
use varsparse::train::optim::{AdamParams, AdamState, LrSchedule, adam_step};
use varsparse::train::{StepConfig, Trainer};

const N: usize = 40;
const D: usize = 30;
const L: usize = 12;

fn config(sdl: bool) -> StepConfig {
    StepConfig {
        fista: FistaParams {
            energy: EnergyParams {
                lambda: 0.01,
                beta: if sdl { 0.0 } else { 10.0 },
                threshold: 0.5,
                gamma: if sdl { 1.0 } else { 5.0 },
            },
            step: StepRule::Constant { eta: 0.5 },
            ..FistaParams::default()
        },
        decoder_adam: AdamParams::new(1e-3),
        encoder_adam: AdamParams::new(3e-4),
        decoder_schedule: LrSchedule::Constant,
        encoder_schedule: LrSchedule::Constant,
        column_norm: sdl,
        pixel_scale: 1.0,
    }
}

fn trainer(kind: DecoderKind, sdl: bool, seed: u64) -> Trainer<f32, Cpu> {
    let be = Cpu;
    let mut r = rng(seed);
    let enc = Lista::init(&be, D, L, 3, &mut r).unwrap();
    let dec = Decoder::init(&be, kind, D, L, &mut r).unwrap();
    Trainer::new(&be, enc, dec, config(sdl)).unwrap()
}

fn batch(seed: u64) -> Array2<f32> {
    linear_uniform::<f32>(&mut rng(seed), N, D, 1)
}

fn decoder_loss(t: &Trainer<f32, Cpu>, y: &Array2<f32>, z: &Array2<f32>) -> f32 {
    let be = Cpu;
    let mut s = t.decoder.scratch(&be, N).unwrap();
    let mut g = t.decoder.zeros_like_params(&be).unwrap();
    t.decoder.loss_grads(&be, y, z, &mut s, &mut g).unwrap()
}

#[test]
fn a_step_lowers_the_decoder_loss_on_its_batch() {
    let y = batch(100);
    for kind in [DecoderKind::Linear, DecoderKind::OneHidden { hidden: 20 }] {
        for sdl in [false, true] {
            let mut t = trainer(kind, sdl, 1);
            let stats = t.step(&Cpu, &y, 0).unwrap();
            let z = t.last_codes().unwrap().clone();
            let after = decoder_loss(&t, &y, &z);
            assert!(
                (after as f64) < stats.decoder_loss,
                "{kind:?} sdl={sdl}: {after} !< {}",
                stats.decoder_loss
            );
            assert!(stats.psnr.is_finite() && stats.inference_steps > 0.0);
            assert!((0.0..=1.0).contains(&stats.sparsity));
            assert!(z.iter().all(|&v| v >= 0.0));
        }
    }
}

#[test]
fn sdl_columns_have_unit_norm_after_a_step() {
    let y = batch(101);
    for kind in [DecoderKind::Linear, DecoderKind::OneHidden { hidden: 20 }] {
        let mut t = trainer(kind, true, 2);
        t.step(&Cpu, &y, 0).unwrap();
        let params = t.decoder.to_host(&Cpu).unwrap();
        let weights: Vec<&Array2<f32>> = match &params {
            DecoderParams::Linear { w } => vec![w],
            DecoderParams::OneHidden { w1, w2, .. } => vec![w1, w2],
        };
        for w in weights {
            for c in w.axis_iter(Axis(1)) {
                let norm = c.dot(&c).sqrt();
                assert!((norm - 1.0).abs() < 1e-5, "column norm {norm}");
            }
        }
    }
}

#[test]
fn training_is_bit_identical_for_a_seed() {
    let run = |seed| {
        let mut t = trainer(DecoderKind::OneHidden { hidden: 16 }, false, seed);
        for b in 0..3 {
            t.step(&Cpu, &batch(200 + b), 0).unwrap();
        }
        (
            t.decoder.to_host(&Cpu).unwrap(),
            t.encoder.to_host(&Cpu).unwrap(),
        )
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5).0, run(6).0);
}

/// Adam against values worked out by hand (PyTorch's formula, f64): see the comments.
#[test]
fn adam_matches_a_hand_computed_two_step_example() {
    let be = Cpu;
    // p0 = 1, lr 0.1, no decay, g = 0.5 then -0.25:
    //   t=1: m = 0.05, v = 2.5e-4, step = 0.1/0.1 = 1, denom = 0.5 + 1e-8 -> p = 0.900000002
    //   t=2: m = 0.02, v = 3.1225e-4, step = 0.1/0.19, denom = sqrt(v/0.001999) + 1e-8
    //        -> p = 0.8733662987078463
    // p0 = -2, lr 0.01, weight decay 0.5, g = 0.3 then 0.7 (decay adds 0.5 p to g):
    //   -> -1.990000000142857, then -1.9809347105541943
    let cases = [
        (
            1.0,
            0.1,
            0.0,
            [0.5, -0.25],
            [0.900000002, 0.8733662987078463],
        ),
        (
            -2.0,
            0.01,
            0.5,
            [0.3, 0.7],
            [-1.990000000142857, -1.9809347105541943],
        ),
    ];
    for (p0, lr, wd, gs, want) in cases {
        let hp = AdamParams::new(lr).with_weight_decay("W", wd);
        let one = |v: f64| DecoderParams::Linear {
            w: Array2::from_elem((1, 1), v),
        };
        let mut p = one(p0);
        let mut st = AdamState::new(one(0.0), one(0.0));
        for (g, w) in gs.iter().zip(want) {
            adam_step(&be, &hp, lr, &mut p, &one(*g), &mut st).unwrap();
            let DecoderParams::Linear { w: got } = &p else {
                unreachable!()
            };
            assert!((got[(0, 0)] - w).abs() < 1e-15, "{} vs {w}", got[(0, 0)]);
        }
        assert_eq!(st.step, 2);
    }
}

#[test]
fn step_halving_schedule() {
    let s = LrSchedule::StepHalving { every: 30 };
    assert_eq!(s.lr_at(3e-4, 0), 3e-4);
    assert_eq!(s.lr_at(3e-4, 29), 3e-4);
    assert_eq!(s.lr_at(3e-4, 30), 1.5e-4);
    assert_eq!(s.lr_at(3e-4, 95), 3e-4 / 8.0);
    assert_eq!(LrSchedule::Constant.lr_at(1e-3, 1000), 1e-3);
}

#[test]
fn atoms_of_both_decoders() {
    let be = Cpu;
    let mut r = rng(3);
    let lin: Decoder<f32, Cpu> = Decoder::init(&be, DecoderKind::Linear, D, L, &mut r).unwrap();
    let atoms = lin.atoms(&be, 1.0).unwrap();
    let DecoderParams::Linear { w } = lin.params() else {
        unreachable!()
    };
    assert_eq!(atoms, be.download(w).unwrap().t().to_owned());
    let mlp: Decoder<f64, Cpu> =
        Decoder::init(&be, DecoderKind::OneHidden { hidden: 9 }, D, L, &mut r).unwrap();
    let atoms = mlp.atoms(&be, 2.0).unwrap();
    assert_eq!(atoms.dim(), (L, D));
    // D(2 e_3) - D(0) by hand
    let DecoderParams::OneHidden { w1, b1, w2 } = mlp.to_host(&be).unwrap() else {
        unreachable!()
    };
    let h = |z: &Array2<f64>| (z.dot(&w1.t()) + &b1).mapv(|v| v.max(0.0)).dot(&w2.t());
    let mut e3 = Array2::zeros((1, L));
    e3[(0, 3)] = 2.0;
    let want = h(&e3) - h(&Array2::zeros((1, L)));
    for (a, b) in atoms.row(3).iter().zip(want.iter()) {
        assert!((a - b).abs() < 1e-12);
    }
}

/// The MNIST VDL-NL preset, and only it, safeguards FISTA's constant step (its loops stall late
/// in training otherwise; docs/RESULTS.md); `--safeguard-after off` and `N` override it.
#[test]
fn only_the_mnist_vdl_nl_preset_safeguards_its_step() {
    use varsparse::train::params::{ParamOverrides, Safeguard};
    use varsparse::{ModelParams, Preset};
    for p in Preset::ALL {
        let params = ModelParams::preset(p);
        let want = (p == Preset::MnistVdlNl).then_some(varsparse::solve::fista::SAFEGUARD_AFTER);
        assert_eq!(params.step_safeguard, want, "{p:?}");
        match (params.fista().step, want) {
            (StepRule::Constant { eta }, None) => assert_eq!(eta, params.eta),
            (StepRule::Safeguarded { eta, after, factor }, Some(k)) => {
                assert_eq!((eta, after, factor), (params.eta, k, 2.0));
            }
            (s, _) => panic!("{p:?}: {s:?}"),
        }
    }
    let mut p = ModelParams::preset(Preset::MnistVdlNl);
    for (given, want) in [
        ("off", None),
        ("0", Some(0)),
        ("25", Some(25)),
        ("OFF", None),
    ] {
        ParamOverrides {
            safeguard_after: Some(given.parse::<Safeguard>().unwrap()),
            ..ParamOverrides::default()
        }
        .apply(&mut p);
        assert_eq!(p.step_safeguard, want, "{given}");
    }
    assert!("-1".parse::<Safeguard>().is_err());
    // a checkpoint's parameters written before the field existed read as None
    let mut v = serde_json::to_value(ModelParams::preset(Preset::MnistVdlNl)).unwrap();
    v.as_object_mut().unwrap().remove("step_safeguard");
    let old: ModelParams = serde_json::from_value(v).unwrap();
    assert_eq!(old.step_safeguard, None);
}

/// Adaptive restart is off in every preset; `--adaptive-restart` sets it, it reaches FISTA's
/// parameters, and checkpoints written before it existed read as off.
#[test]
fn adaptive_restart_is_off_in_every_preset_and_overridable() {
    use varsparse::train::params::ParamOverrides;
    use varsparse::{ModelParams, Preset};
    for p in Preset::ALL {
        let params = ModelParams::preset(p);
        assert!(!params.fista_restart && !params.fista().restart, "{p:?}");
    }
    let mut p = ModelParams::preset(Preset::MnistSdlNl);
    ParamOverrides {
        adaptive_restart: Some(true),
        ..ParamOverrides::default()
    }
    .apply(&mut p);
    assert!(p.fista_restart && p.fista().restart);
    let mut v = serde_json::to_value(&p).unwrap();
    v.as_object_mut().unwrap().remove("fista_restart");
    let old: ModelParams = serde_json::from_value(v).unwrap();
    assert!(!old.fista_restart);
}

/// With the step safeguard, the trainer carries a smaller starting step to the next batches
/// once more than half of a batch's samples needed one (and never grows it back); with a step
/// the samples accept, it stays the configured one.
#[test]
fn the_safeguard_carries_a_smaller_step_when_most_samples_need_one() {
    let be = Cpu;
    let with_step = |eta: f64| {
        let mut c = config(false);
        c.fista.step = StepRule::Safeguarded {
            eta,
            after: 0,
            factor: 2.0,
        };
        let mut r = rng(5);
        let enc = Lista::init(&be, D, L, 3, &mut r).unwrap();
        let dec = Decoder::init(&be, DecoderKind::OneHidden { hidden: 20 }, D, L, &mut r).unwrap();
        Trainer::new(&be, enc, dec, c).unwrap()
    };
    let y = batch(6);
    // far too large: most samples' steps shrink, and the next batch starts smaller
    let mut t = with_step(400.0);
    assert_eq!(t.fista_step(), Some(400.0));
    let s = t.step(&be, &y, 0).unwrap();
    assert_eq!(s.fista_step, Some(400.0));
    let after_one = t.fista_step().unwrap();
    assert_eq!(after_one, 200.0);
    let s = t.step(&be, &y, 0).unwrap();
    assert_eq!(s.fista_step, Some(after_one));
    assert!(t.fista_step().unwrap() <= after_one);
    // small enough for every sample: it stays
    let mut t = with_step(1e-3);
    for _ in 0..2 {
        t.step(&be, &y, 0).unwrap();
    }
    assert_eq!(t.fista_step(), Some(1e-3));
}
