//! The CUDA backend against the CPU backend: every kernel and every algorithm.
//!
//! Skips (with a printed reason) when no GPU is usable; fails instead with
//! `VARSPARSE_REQUIRE_CUDA=1`. Tolerance: `|gpu - cpu| <= 2e-5 sqrt(k) (1 + max |cpu|)` for a
//! result that sums `k` terms (f32 rounding grows like sqrt(k) for sums in a different order);
//! algorithms that iterate compare with 1e-3 relative.
#![cfg(feature = "cuda")]

use ndarray::Array2;
use varsparse::backend::{AdamUpdate, Backend, Cpu, Cuda, FistaStep, Trans};
use varsparse::model::ParamSet;
use varsparse::model::decoder::{Decoder, DecoderKind};
use varsparse::model::encoder::Lista;
use varsparse::model::energy::EnergyParams;
use varsparse::rng::{linear_uniform, rng};
use varsparse::solve::fista::{self, FistaParams, FistaWorkspace, GradientPath, StepRule};
use varsparse::train::optim::{AdamParams, LrSchedule};
use varsparse::train::{StepConfig, Trainer};

fn gpu() -> Option<Cuda> {
    match Cuda::new(0) {
        Ok(g) => Some(g),
        Err(e) => {
            if std::env::var("VARSPARSE_REQUIRE_CUDA").as_deref() == Ok("1") {
                panic!("VARSPARSE_REQUIRE_CUDA=1 but {e}");
            }
            eprintln!("skipping the CUDA tests: {e}");
            None
        }
    }
}

fn m(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    linear_uniform(&mut rng(seed), rows, cols, 1)
}

#[track_caller]
fn close(what: &str, cpu: &Array2<f32>, gpu: &Array2<f32>, k: usize) {
    assert_eq!(cpu.dim(), gpu.dim(), "{what}");
    let scale = 1.0 + cpu.iter().fold(0.0f32, |a, &b| a.max(b.abs()));
    let tol = 2e-5 * (k.max(1) as f32).sqrt() * scale;
    let err = cpu
        .iter()
        .zip(gpu.iter())
        .fold(0.0f32, |a, (&x, &y)| a.max((x - y).abs()));
    assert!(err <= tol, "{what}: max |gpu - cpu| = {err:e} > {tol:e}");
}

#[track_caller]
fn close_scalar(what: &str, cpu: f32, gpu: f32, k: usize) {
    let tol = 2e-5 * (k.max(1) as f32).sqrt() * (1.0 + cpu.abs());
    assert!((cpu - gpu).abs() <= tol, "{what}: cpu {cpu} gpu {gpu}");
}

#[test]
fn kernels_agree_with_the_cpu() {
    let Some(g) = gpu() else { return };
    let c = Cpu;
    let (r, k, n) = (37, 29, 23);
    let a = m(r, k, 1);
    let b = m(k, n, 2);
    let bt = m(n, k, 3);
    let ga = g.upload(a.view()).unwrap();
    let gb = g.upload(b.view()).unwrap();
    let gbt = g.upload(bt.view()).unwrap();
    // GEMM, all transposes, accumulate
    let c0 = m(r, n, 4);
    for (tb, bb, gbb) in [(Trans::N, &b, &gb), (Trans::T, &bt, &gbt)] {
        let mut cc = c0.clone();
        let mut gc = g.upload(c0.view()).unwrap();
        c.gemm(0.7, &a, Trans::N, bb, tb, 0.3, &mut cc).unwrap();
        g.gemm(0.7, &ga, Trans::N, gbb, tb, 0.3, &mut gc).unwrap();
        close("gemm", &cc, &g.download(&gc).unwrap(), k);
        // leading rows only
        let mut cc = c0.clone();
        let mut gc = g.upload(c0.view()).unwrap();
        c.gemm_rows(11, 1.0, &a, bb, tb, 0.0, &mut cc).unwrap();
        g.gemm_rows(11, 1.0, &ga, gbb, tb, 0.0, &mut gc).unwrap();
        close("gemm_rows", &cc, &g.download(&gc).unwrap(), k);
    }
    let at = m(k, r, 5);
    let gat = g.upload(at.view()).unwrap();
    let mut cc = Array2::zeros((r, n));
    let mut gc = g.zeros(r, n).unwrap();
    c.gemm(1.0, &at, Trans::T, &bt, Trans::T, 0.0, &mut cc)
        .unwrap();
    g.gemm(1.0, &gat, Trans::T, &gbt, Trans::T, 0.0, &mut gc)
        .unwrap();
    close("gemm TT", &cc, &g.download(&gc).unwrap(), k);

    // element-wise
    let x = m(r, k, 6);
    let y0 = m(r, k, 7);
    let gx = g.upload(x.view()).unwrap();
    let check = |what: &str,
                 f_cpu: &dyn Fn(&mut Array2<f32>),
                 f_gpu: &dyn Fn(&mut varsparse::backend::cuda::CudaMat)| {
        let mut y = y0.clone();
        let mut gy = g.upload(y0.view()).unwrap();
        f_cpu(&mut y);
        f_gpu(&mut gy);
        close(what, &y, &g.download(&gy).unwrap(), 1);
    };
    check("axpby", &|y| c.axpby(0.5, &x, -2.0, y).unwrap(), &|y| {
        g.axpby(0.5, &gx, -2.0, y).unwrap()
    });
    check(
        "axpby beta 0",
        &|y| c.axpby(0.5, &x, 0.0, y).unwrap(),
        &|y| g.axpby(0.5, &gx, 0.0, y).unwrap(),
    );
    let x2 = m(r, k, 8);
    let gx2 = g.upload(x2.view()).unwrap();
    check(
        "add_scaled_diff",
        &|y| c.add_scaled_diff(1.5, &x, &x2, y).unwrap(),
        &|y| g.add_scaled_diff(1.5, &gx, &gx2, y).unwrap(),
    );
    check("mul_assign", &|y| c.mul_assign(&x, y).unwrap(), &|y| {
        g.mul_assign(&gx, y).unwrap()
    });
    check("scale", &|y| c.scale(3.0, y).unwrap(), &|y| {
        g.scale(3.0, y).unwrap()
    });
    check("fill", &|y| c.fill(0.25, y).unwrap(), &|y| {
        g.fill(0.25, y).unwrap()
    });
    check("relu", &|y| c.relu(y).unwrap(), &|y| g.relu(y).unwrap());
    check("relu_mask", &|y| c.relu_mask(&x, y).unwrap(), &|y| {
        g.relu_mask(&gx, y).unwrap()
    });
    let bias = m(1, k, 9);
    let gbias = g.upload(bias.view()).unwrap();
    check(
        "add_row_bias",
        &|y| c.add_row_bias(&bias, y).unwrap(),
        &|y| g.add_row_bias(&gbias, y).unwrap(),
    );
    check(
        "momentum",
        &|y| c.momentum(&x, &x2, 0.4, y).unwrap(),
        &|y| g.momentum(&gx, &gx2, 0.4, y).unwrap(),
    );
    let mut flags = Array2::<f32>::zeros((r, 1));
    for i in (0..r).step_by(3) {
        flags[(i, 0)] = 1.0;
    }
    let gflags = g.upload(flags.view()).unwrap();
    for nonneg in [true, false] {
        check(
            "shrink_step",
            &|y| c.shrink_step(&x, &x2, &flags, 0.5, 0.1, nonneg, y).unwrap(),
            &|y| {
                g.shrink_step(&gx, &gx2, &gflags, 0.5, 0.1, nonneg, y)
                    .unwrap()
            },
        );
    }
    // column statistics, hinge (one constant column, some stds above T)
    let mut xs = x.clone();
    xs.column_mut(3).fill(0.7);
    xs.column_mut(5).mapv_inplace(|v| v * 4.0);
    let gxs = g.upload(xs.view()).unwrap();
    let (mut mu, mut sd) = (Array2::zeros((1, k)), Array2::zeros((1, k)));
    let (mut gmu, mut gsd) = (g.zeros(1, k).unwrap(), g.zeros(1, k).unwrap());
    c.col_mean_std(&xs, &mut mu, &mut sd).unwrap();
    g.col_mean_std(&gxs, &mut gmu, &mut gsd).unwrap();
    close("col mean", &mu, &g.download(&gmu).unwrap(), r);
    close("col std", &sd, &g.download(&gsd).unwrap(), r);
    assert_eq!(
        g.download(&gsd).unwrap()[(0, 3)],
        0.0,
        "a constant column has std exactly 0"
    );
    close_scalar(
        "hinge_value",
        c.hinge_value(&sd, 0.5).unwrap(),
        g.hinge_value(&gsd, 0.5).unwrap(),
        k,
    );
    let mut hg = y0.clone();
    let mut ghg = g.upload(y0.view()).unwrap();
    c.hinge_grad(&xs, &mu, &sd, 10.0, 0.5, xs.nrows(), &mut hg)
        .unwrap();
    g.hinge_grad(&gxs, &gmu, &gsd, 10.0, 0.5, xs.nrows(), &mut ghg)
        .unwrap();
    close("hinge_grad", &hg, &g.download(&ghg).unwrap(), 1);
    let mut cs = m(1, k, 10);
    let mut gcs = g.upload(cs.view()).unwrap();
    c.col_sums(2.0, &x, 0.5, &mut cs).unwrap();
    g.col_sums(2.0, &gx, 0.5, &mut gcs).unwrap();
    close("col_sums", &cs, &g.download(&gcs).unwrap(), r);
    let mut nc = x.clone();
    let mut gnc = g.upload(x.view()).unwrap();
    c.normalize_columns(&mut nc).unwrap();
    g.normalize_columns(&mut gnc).unwrap();
    close("normalize_columns", &nc, &g.download(&gnc).unwrap(), r);

    // reductions
    let xz = x.mapv(|v| if v < 0.0 { 0.0 } else { v });
    let gxz = g.upload(xz.view()).unwrap();
    let len = r * k;
    close_scalar("sum_sq", c.sum_sq(&x).unwrap(), g.sum_sq(&gx).unwrap(), len);
    close_scalar(
        "sum_sq_diff",
        c.sum_sq_diff(&x, &x2).unwrap(),
        g.sum_sq_diff(&gx, &gx2).unwrap(),
        len,
    );
    close_scalar(
        "dot",
        c.dot(&x, &x2).unwrap(),
        g.dot(&gx, &gx2).unwrap(),
        len,
    );
    close_scalar(
        "sum_abs",
        c.sum_abs(&x).unwrap(),
        g.sum_abs(&gx).unwrap(),
        len,
    );
    assert_eq!(c.count_zeros(&xz).unwrap(), g.count_zeros(&gxz).unwrap());
    assert!(g.all_finite(&gx).unwrap());
    let mut bad = x.clone();
    bad[(2, 2)] = f32::NAN;
    assert!(!g.all_finite(&g.upload(bad.view()).unwrap()).unwrap());
    close_scalar(
        "psnr_sum",
        c.psnr_sum(&x, 0.3081, 1e-4).unwrap(),
        g.psnr_sum(&gx, 0.3081, 1e-4).unwrap(),
        len,
    );
    let (l1, s1) = c.step_model_terms(&x, &x2, &y0).unwrap();
    let (l2, s2) = g
        .step_model_terms(&gx, &gx2, &g.upload(y0.view()).unwrap())
        .unwrap();
    close_scalar("step_model lin", l1, l2, len);
    close_scalar("step_model sq", s1, s2, len);

    // convergence test, fused update, gather/scatter
    let zo = xz.clone();
    let mut zn = xz.clone();
    zn.row_mut(1).mapv_inplace(|v| v * 1.5);
    zn.row_mut(4).fill(0.0);
    let (mut f1, mut gf1) = (flags.clone(), g.upload(flags.view()).unwrap());
    let rc = c.converged_rows(&zo, &zn, 1e-3, &mut f1).unwrap();
    let grc = g
        .converged_rows(&gxz, &g.upload(zn.view()).unwrap(), 1e-3, &mut gf1)
        .unwrap();
    assert_eq!(rc, grc);
    assert_eq!(f1, g.download(&gf1).unwrap());
    let (mut xc, mut zc, mut zoc, mut fc) =
        (x.clone(), xz.clone(), Array2::zeros((r, k)), flags.clone());
    let (mut gxc, mut gzc, mut gzoc, mut gfc) = (
        g.upload(x.view()).unwrap(),
        g.upload(xz.view()).unwrap(),
        g.zeros(r, k).unwrap(),
        g.upload(flags.view()).unwrap(),
    );
    let step = FistaStep {
        eta: 0.5,
        thr: 0.01,
        nonneg: true,
        coef: 0.3,
        tol: 1e-3,
    };
    let r1 = c
        .fista_update(&x2, step, &mut xc, &mut zc, &mut zoc, &mut fc)
        .unwrap();
    let r2 = g
        .fista_update(&gx2, step, &mut gxc, &mut gzc, &mut gzoc, &mut gfc)
        .unwrap();
    assert_eq!(r1, r2);
    close("fista_update x", &xc, &g.download(&gxc).unwrap(), 1);
    close("fista_update z", &zc, &g.download(&gzc).unwrap(), 1);
    assert_eq!(fc, g.download(&gfc).unwrap());
    let mut dst = Array2::zeros((r, k));
    let mut gdst = g.zeros(r, k).unwrap();
    assert_eq!(
        c.gather_active_rows(&flags, &x, &mut dst).unwrap(),
        g.gather_active_rows(&gflags, &gx, &mut gdst).unwrap()
    );
    let kk = c.gather_active_rows(&flags, &x, &mut dst).unwrap();
    close(
        "gather",
        &dst.slice(ndarray::s![..kk, ..]).to_owned(),
        &g.download(&gdst)
            .unwrap()
            .slice(ndarray::s![..kk, ..])
            .to_owned(),
        1,
    );
    let mut back = y0.clone();
    let mut gback = g.upload(y0.view()).unwrap();
    c.scatter_active_rows(&flags, &dst, &mut back).unwrap();
    g.scatter_active_rows(&gflags, &gdst, &mut gback).unwrap();
    close("scatter", &back, &g.download(&gback).unwrap(), 1);

    // Adam
    let (mut p, mut mm, mut vv) = (x.clone(), Array2::zeros((r, k)), Array2::zeros((r, k)));
    let (mut gp, mut gm, mut gv) = (
        g.upload(x.view()).unwrap(),
        g.zeros(r, k).unwrap(),
        g.zeros(r, k).unwrap(),
    );
    for step in 1..=3u64 {
        let hp = AdamUpdate {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            step,
        };
        c.adam_update(&mut p, &x2, &mut mm, &mut vv, &hp).unwrap();
        g.adam_update(&mut gp, &gx2, &mut gm, &mut gv, &hp).unwrap();
    }
    close("adam", &p, &g.download(&gp).unwrap(), 1);
}

fn energy() -> EnergyParams {
    EnergyParams {
        lambda: 0.02,
        beta: 10.0,
        threshold: 0.5,
        gamma: 5.0,
    }
}

fn fista_on<B: Backend<f32>>(
    be: &B,
    kind: DecoderKind,
    path: GradientPath,
    step: StepRule,
) -> Array2<f32> {
    let (n, d, l) = (64, 100, 32);
    let mut r = rng(11);
    let dec_host: Decoder<f32, Cpu> = Decoder::init(&Cpu, kind, d, l, &mut r).unwrap();
    let params = dec_host.to_host(&Cpu).unwrap();
    let dec = Decoder::from_params(be, &params).unwrap();
    let y = be.upload(m(n, d, 12).view()).unwrap();
    let e = be.upload(m(n, l, 13).mapv(|v| v.max(0.0)).view()).unwrap();
    let mut ws = FistaWorkspace::new(be, &dec, n).unwrap();
    let p = FistaParams {
        energy: energy(),
        step,
        max_iter: 30,
        tol: 1e-3,
        path,
        ..FistaParams::default()
    };
    fista::solve(be, &dec, &y, Some(&e), &p, &mut ws).unwrap();
    be.download(ws.codes()).unwrap()
}

#[track_caller]
fn close_rel(what: &str, a: &Array2<f32>, b: &Array2<f32>, rel: f32) {
    let scale = a.iter().fold(0.0f32, |x, &y| x.max(y.abs())).max(1e-6);
    let err = a
        .iter()
        .zip(b.iter())
        .fold(0.0f32, |x, (&p, &q)| x.max((p - q).abs()));
    assert!(
        err <= rel * scale,
        "{what}: max |gpu - cpu| = {err:e}, scale {scale}"
    );
}

#[test]
fn fista_agrees_with_the_cpu() {
    let Some(g) = gpu() else { return };
    let cases = [
        (
            "reference mode, direct",
            DecoderKind::Linear,
            GradientPath::Direct,
            StepRule::Constant { eta: 0.05 },
        ),
        (
            "Gram path",
            DecoderKind::Linear,
            GradientPath::Gram,
            StepRule::Constant { eta: 0.05 },
        ),
        (
            "one hidden layer",
            DecoderKind::OneHidden { hidden: 48 },
            GradientPath::Direct,
            StepRule::Constant { eta: 0.05 },
        ),
        (
            "backtracking",
            DecoderKind::Linear,
            GradientPath::Direct,
            StepRule::Backtracking {
                initial_step: Some(1.0),
                factor: 2.0,
            },
        ),
    ];
    for (what, kind, path, step) in cases {
        let a = fista_on(&Cpu, kind, path, step);
        let b = fista_on(&g, kind, path, step);
        close_rel(what, &a, &b, 1e-3);
    }
}

fn lista_and_step_on<B: Backend<f32>>(
    be: &B,
    kind: DecoderKind,
) -> (Vec<Array2<f32>>, Vec<Array2<f32>>, f64) {
    let (n, d, l) = (50, 40, 16);
    let mut r = rng(21);
    let enc_h: Lista<f32, Cpu> = Lista::init(&Cpu, d, l, 3, &mut r).unwrap();
    let dec_h: Decoder<f32, Cpu> = Decoder::init(&Cpu, kind, d, l, &mut r).unwrap();
    let enc = Lista::from_params(be, &enc_h.to_host(&Cpu).unwrap(), 3).unwrap();
    let dec = Decoder::from_params(be, &dec_h.to_host(&Cpu).unwrap()).unwrap();
    let cfg = StepConfig {
        fista: FistaParams {
            energy: energy(),
            step: StepRule::Constant { eta: 0.1 },
            ..FistaParams::default()
        },
        decoder_adam: AdamParams::new(1e-3),
        encoder_adam: AdamParams::new(1e-3),
        decoder_schedule: LrSchedule::Constant,
        encoder_schedule: LrSchedule::Constant,
        column_norm: kind == DecoderKind::Linear,
        pixel_scale: 0.3081,
    };
    let mut t = Trainer::new(be, enc, dec, cfg).unwrap();
    let y = be.upload(m(n, d, 22).view()).unwrap();
    let stats = t.step(be, &y, 0).unwrap();
    let flat = |named: Vec<(&str, &Array2<f32>)>| named.into_iter().map(|p| p.1.clone()).collect();
    (
        flat(t.encoder.to_host(be).unwrap().named()),
        flat(t.decoder.to_host(be).unwrap().named()),
        stats.psnr,
    )
}

#[test]
fn lista_adam_and_a_training_step_agree_with_the_cpu() {
    let Some(g) = gpu() else { return };
    // LISTA forward and backward
    let (n, d, l) = (30, 20, 12);
    let mut r = rng(31);
    let enc_h: Lista<f32, Cpu> = Lista::init(&Cpu, d, l, 3, &mut r).unwrap();
    let y = m(n, d, 32);
    let target = m(n, l, 33);
    let mut tape = enc_h.tape(&Cpu, n).unwrap();
    let mut grads = enc_h.zeros_like_params(&Cpu).unwrap();
    let out_c = enc_h.forward(&Cpu, &y, &mut tape).unwrap().clone();
    enc_h
        .loss_grads(&Cpu, &y, &target, &mut tape, &mut grads)
        .unwrap();
    let enc_g = Lista::from_params(&g, &enc_h.to_host(&Cpu).unwrap(), 3).unwrap();
    let gy = g.upload(y.view()).unwrap();
    let gt = g.upload(target.view()).unwrap();
    let mut gtape = enc_g.tape(&g, n).unwrap();
    let mut ggrads = enc_g.zeros_like_params(&g).unwrap();
    let out_g = g
        .download(enc_g.forward(&g, &gy, &mut gtape).unwrap())
        .unwrap();
    enc_g
        .loss_grads(&g, &gy, &gt, &mut gtape, &mut ggrads)
        .unwrap();
    close("LISTA forward", &out_c, &out_g, d);
    for ((name, a), (_, b)) in grads.named().into_iter().zip(ggrads.named()) {
        close(name, a, &g.download(b).unwrap(), n * l);
    }
    // a whole training step
    for kind in [DecoderKind::Linear, DecoderKind::OneHidden { hidden: 24 }] {
        let (ec, dc, pc) = lista_and_step_on(&Cpu, kind);
        let (eg, dg, pg) = lista_and_step_on(&g, kind);
        for (a, b) in ec.iter().zip(&eg).chain(dc.iter().zip(&dg)) {
            close_rel("training step weights", a, b, 1e-3);
        }
        assert!((pc - pg).abs() < 1e-2, "PSNR {pc} vs {pg}");
    }
}

/// The kernel seam checks on the device what the CPU checks: a `flags` vector of the wrong
/// length is a shape error (it would read out of bounds on the device), and a matrix whose
/// element count overflows the kernels' 32-bit index is refused at allocation. The same calls
/// fail the same way on the CPU backend.
#[test]
fn shapes_are_checked_as_on_the_cpu() {
    fn check<B: Backend<f32>>(be: &B) {
        let src = be.zeros(6, 4).unwrap();
        let mut dst = be.zeros(6, 4).unwrap();
        let short = be.zeros(5, 1).unwrap();
        assert!(matches!(
            be.gather_active_rows(&short, &src, &mut dst),
            Err(varsparse::Error::Shape { .. })
        ));
        assert!(matches!(
            be.scatter_active_rows(&short, &src, &mut dst),
            Err(varsparse::Error::Shape { .. })
        ));
    }
    check(&Cpu);
    let Some(g) = gpu() else { return };
    check(&g);
    assert!(matches!(
        g.zeros(1 << 16, 1 << 16),
        Err(varsparse::Error::Shape { .. })
    ));
}
