//! FISTA: the authors' semantics, optimality, backtracking, the Gram path, determinism.

use ndarray::{Array2, Axis};
use varsparse::backend::Cpu;
use varsparse::model::decoder::{Decoder, HiddenGram};
use varsparse::model::energy::EnergyParams;
use varsparse::rng::{linear_uniform, rng};
use varsparse::solve::fista::{self, FistaParams, FistaWorkspace, GradientPath, StepRule};

fn random(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    linear_uniform::<f64>(&mut rng(seed), rows, cols, 1)
}

/// A straightforward host transcription of the released code's `ISTA(..., FISTA=True)` for a
/// linear decoder: written independently of the library's kernels.
#[allow(clippy::too_many_arguments)]
fn reference_fista(
    w: &Array2<f64>,
    y: &Array2<f64>,
    e: &Array2<f64>,
    p: &EnergyParams,
    eta: f64,
    max_iter: usize,
    tol: f64,
) -> (Array2<f64>, f64, usize) {
    let (n, d) = y.dim();
    let l = w.ncols();
    let mut z = e.clone();
    let mut aux = z.clone();
    let mut t_old = 1.0f64;
    let mut flags = vec![0.0f64; n];
    let mut steps = vec![0.0f64; n];
    let mut iterations = 0;
    for step in 0..max_iter {
        // gradient of the smooth part at aux
        let r = aux.dot(&w.t()) - y;
        let mut g = r.dot(w) * (2.0 / d as f64) + (&aux - e) * (2.0 * p.gamma / l as f64);
        if p.beta > 0.0 {
            let mean = aux.mean_axis(Axis(0)).unwrap();
            for j in 0..l {
                let col = aux.column(j);
                let ss: f64 = col.iter().map(|v| (v - mean[j]).powi(2)).sum();
                let s = (ss / (n - 1) as f64).sqrt();
                if s > 0.0 && s < p.threshold {
                    for i in 0..n {
                        g[(i, j)] += -(2.0 * p.beta / (n - 1) as f64) * (p.threshold - s) / s
                            * (aux[(i, j)] - mean[j]);
                    }
                }
            }
        }
        let z_old = z.clone();
        for i in 0..n {
            let a = 1.0 - flags[i];
            for j in 0..l {
                let u = aux[(i, j)] - a * eta * g[(i, j)];
                let shrunk = u.signum() * (u.abs() - a * p.lambda * eta).max(0.0);
                z[(i, j)] = shrunk.max(0.0);
            }
        }
        let t_new = 0.5 * (1.0 + (1.0 + 4.0 * t_old * t_old).sqrt());
        aux = &z + &((&z - &z_old) * ((t_old - 1.0) / t_new));
        t_old = t_new;
        for i in 0..n {
            let diff = (&z_old.row(i) - &z.row(i)).mapv(|v| v * v).sum().sqrt();
            let old = z_old.row(i).mapv(|v| v * v).sum().sqrt();
            flags[i] = if diff / old < tol { 1.0 } else { 0.0 };
            steps[i] += 1.0 - flags[i];
        }
        iterations = step + 1;
        if step < max_iter - 1 && flags.iter().all(|&f| f == 1.0) {
            break;
        }
    }
    (z, steps.iter().sum::<f64>() / n as f64, iterations)
}

fn problem(seed: u64) -> (Array2<f64>, Array2<f64>, Array2<f64>) {
    let (n, d, l) = (12, 20, 8);
    let w = random(d, l, seed);
    let z_true = random(n, l, seed + 1).mapv(|v| v.max(0.0));
    let y = z_true.dot(&w.t()) + random(n, d, seed + 2) * 0.05;
    let e = random(n, l, seed + 3).mapv(|v| v.max(0.0) * 0.5);
    (w, y, e)
}

fn solve(
    w: &Array2<f64>,
    y: &Array2<f64>,
    warm: Option<&Array2<f64>>,
    params: &FistaParams,
) -> varsparse::Result<(Array2<f64>, varsparse::FistaReport)> {
    let be = Cpu;
    let dec = Decoder::linear(&be, w)?;
    let mut ws = FistaWorkspace::new(&be, &dec, y.nrows())?;
    let report = fista::solve(&be, &dec, y, warm, params, &mut ws)?;
    Ok((ws.codes().clone(), report))
}

#[test]
fn matches_the_released_code_loop() {
    let mut early_stops = 0;
    // Steps small enough for the runs to settle: with a step past the hinge's curvature
    // (n = 12 makes it large) FISTA oscillates chaotically and any two float orders drift apart.
    for (seed, beta, gamma, eta) in [
        (10, 0.0, 0.0, 0.5),
        (20, 10.0, 5.0, 0.05),
        (30, 2.0, 0.0, 0.2),
        (40, 0.0, 1.0, 0.5),
    ] {
        let (w, y, e) = problem(seed);
        let energy = EnergyParams {
            lambda: 0.02,
            beta,
            threshold: 0.5,
            gamma,
        };
        let (z_ref, steps_ref, it_ref) = reference_fista(&w, &y, &e, &energy, eta, 200, 1e-3);
        early_stops += (it_ref < 200) as usize;
        for path in [GradientPath::Direct, GradientPath::Gram] {
            let params = FistaParams {
                energy,
                step: StepRule::Constant { eta },
                path,
                ..FistaParams::default()
            };
            let (z, report) = solve(&w, &y, Some(&e), &params).unwrap();
            let err = (&z - &z_ref).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
            assert!(
                err < 1e-10,
                "seed {seed} {path:?}: max |z - z_ref| = {err:e}"
            );
            assert_eq!(report.iterations, it_ref, "seed {seed} {path:?}");
            assert_eq!(report.converged, it_ref < 200);
            assert!((report.mean_steps - steps_ref).abs() < 1e-12);
        }
    }
    assert!(early_stops >= 2, "the all-flagged exit must be exercised");
}

/// KKT conditions of the non-negative lasso (beta = gamma = 0) at a tightly converged solution.
#[test]
fn reaches_kkt_conditions() {
    let (w, y, _) = problem(50);
    let (_, d) = y.dim();
    let lambda = 0.01;
    let params = FistaParams {
        energy: EnergyParams {
            lambda,
            beta: 0.0,
            threshold: 0.5,
            gamma: 0.0,
        },
        step: StepRule::Auto,
        max_iter: 20_000,
        tol: 1e-13,
        ..FistaParams::default()
    };
    let (z, _) = solve(&w, &y, None, &params).unwrap();
    let grad = (z.dot(&w.t()) - &y).dot(&w) * (2.0 / d as f64);
    let mut active = 0;
    for (&zj, &gj) in z.iter().zip(grad.iter()) {
        if zj > 0.0 {
            active += 1;
            assert!(
                (gj + lambda).abs() < 1e-8,
                "active coordinate: grad + lambda = {}",
                gj + lambda
            );
        } else {
            assert!(
                gj + lambda >= -1e-8,
                "inactive coordinate: grad + lambda = {}",
                gj + lambda
            );
        }
    }
    assert!(
        active > 0 && active < z.len(),
        "a non-trivial support ({active} of {})",
        z.len()
    );
}

#[test]
fn backtracking_accepts_only_sufficient_decrease() {
    let (w, y, e) = problem(60);
    let params = FistaParams {
        energy: EnergyParams {
            lambda: 0.02,
            beta: 10.0,
            threshold: 0.5,
            gamma: 1.0,
        },
        step: StepRule::Backtracking {
            initial_step: Some(50.0),
            factor: 2.0,
        },
        record_trace: true,
        ..FistaParams::default()
    };
    for path in [GradientPath::Direct, GradientPath::Gram] {
        let (_, report) = solve(&w, &y, Some(&e), &FistaParams { path, ..params }).unwrap();
        assert!(report.backtracks > 0, "a step of 50 must be reduced");
        assert_eq!(report.trace.len(), report.iterations);
        let mut last_step = f64::INFINITY;
        for rec in &report.trace {
            let (f, q) = (rec.f_trial.unwrap(), rec.model.unwrap());
            assert!(
                f <= q + 1e-9 * q.abs().max(1.0),
                "iteration {}: F(p) = {f} > Q = {q}",
                rec.iteration
            );
            assert!(rec.step <= last_step, "L is carried and only grows");
            last_step = rec.step;
        }
    }
}

#[test]
fn backtracking_converges_where_a_large_constant_step_diverges() {
    let (w, y, _) = problem(70);
    let energy = EnergyParams {
        lambda: 0.01,
        ..EnergyParams::default()
    };
    let big = FistaParams {
        energy,
        step: StepRule::Constant { eta: 200.0 },
        max_iter: 500,
        ..FistaParams::default()
    };
    let err = solve(&w, &y, None, &big).unwrap_err();
    assert!(matches!(err, varsparse::Error::Diverged { .. }), "{err}");
    assert!(err.to_string().contains("smaller step"), "{err}");

    let bt = FistaParams {
        step: StepRule::Backtracking {
            initial_step: None,
            factor: 2.0,
        },
        max_iter: 5000,
        tol: 1e-9,
        ..big
    };
    let auto = FistaParams {
        step: StepRule::Auto,
        ..bt
    };
    let (_, r_bt) = solve(&w, &y, None, &bt).unwrap();
    let (_, r_auto) = solve(&w, &y, None, &auto).unwrap();
    assert!(r_bt.converged);
    assert!((r_bt.total_energy - r_auto.total_energy).abs() < 1e-7 * r_auto.total_energy.abs());
}

/// The Gram path gives the direct path's iterates in f32, within rounding.
#[test]
fn gram_path_equals_direct_path_f32() {
    let (n, d, l) = (64, 100, 32);
    let w = linear_uniform::<f32>(&mut rng(1), d, l, l);
    let z_true = linear_uniform::<f32>(&mut rng(2), n, l, 1).mapv(|v| v.max(0.0));
    let y = z_true.dot(&w.t());
    let e = linear_uniform::<f32>(&mut rng(3), n, l, 1).mapv(|v| v.max(0.0));
    let be = Cpu;
    let dec = Decoder::linear(&be, &w).unwrap();
    let mut ws = FistaWorkspace::new(&be, &dec, n).unwrap();
    let base = FistaParams {
        energy: EnergyParams {
            lambda: 0.005,
            beta: 10.0,
            threshold: 0.5,
            gamma: 5.0,
        },
        step: StepRule::Constant { eta: 0.5 },
        max_iter: 50,
        tol: 0.0,
        ..FistaParams::default()
    };
    let mut out = vec![];
    for path in [GradientPath::Direct, GradientPath::Gram] {
        let r = fista::solve(
            &be,
            &dec,
            &y,
            Some(&e),
            &FistaParams { path, ..base },
            &mut ws,
        )
        .unwrap();
        out.push((ws.codes().clone(), r));
    }
    let scale = out[0].0.iter().fold(0.0f32, |a, &b| a.max(b.abs()));
    let err = (&out[0].0 - &out[1].0)
        .iter()
        .fold(0.0f32, |a, &b| a.max(b.abs()));
    assert!(
        err <= 1e-4 * scale.max(1.0),
        "max |direct - gram| = {err:e} (scale {scale})"
    );
    assert_eq!(out[0].1.path, "direct");
    assert_eq!(out[1].1.path, "gram");
    let (e0, e1) = (out[0].1.total_energy, out[1].1.total_energy);
    assert!((e0 - e1).abs() <= 1e-5 * e0.abs());
}

/// The linear Gram path on mostly-zero codes without the hinge, with and without the proximity
/// term (the CPU backend's fused gradient-and-update step, sparse rows), against the direct
/// path, on 1 and 2 threads.
#[test]
fn gram_path_on_sparse_codes_equals_direct_path() {
    let (n, d, l) = (40, 60, 64);
    let w = random(d, l, 61);
    let z_true = random(n, l, 62).mapv(|v| if v > 0.8 { v } else { 0.0 });
    let y = z_true.dot(&w.t()) + random(n, d, 63) * 0.01;
    let warm = random(n, l, 64).mapv(|v| if v > 0.9 { v } else { 0.0 });
    for (gamma, target) in [(0.0, None), (1.0, None), (1.0, Some(&warm))] {
        let base = FistaParams {
            energy: EnergyParams {
                lambda: 0.02,
                beta: 0.0,
                threshold: 0.5,
                gamma,
            },
            step: StepRule::Auto,
            max_iter: 300,
            tol: 1e-4,
            ..FistaParams::default()
        };
        let what = format!("gamma {gamma}, target {}", target.is_some());
        let run = |path| {
            varsparse::backend::cpu::threads::with_threads(2, || {
                solve(&w, &y, target, &FistaParams { path, ..base })
            })
            .unwrap()
            .unwrap()
        };
        let (z_direct, r_direct) = run(GradientPath::Direct);
        let (z_gram, r_gram) = run(GradientPath::Gram);
        let zeros = z_gram.iter().filter(|&&v| v == 0.0).count() as f64 / z_gram.len() as f64;
        // the CPU's sparse rows need over 75% zeros (at most 25% non-zeros)
        assert!(
            zeros > 0.76,
            "{what}: the codes must be mostly zeros: {zeros}"
        );
        let err = (&z_direct - &z_gram)
            .mapv(f64::abs)
            .fold(0.0f64, |a, &b| a.max(b));
        assert!(err < 1e-9, "{what}: max |direct - gram| = {err:e}");
        assert_eq!(r_direct.iterations, r_gram.iterations, "{what}");
        assert!((r_direct.mean_steps - r_gram.mean_steps).abs() < 1e-12);
        assert!(
            r_gram.converged && r_gram.iterations > 10,
            "{what}: {r_gram:?}"
        );
        // and the same bits on one thread
        let gram = FistaParams {
            path: GradientPath::Gram,
            ..base
        };
        let (z_one, _) = solve(&w, &y, target, &gram).unwrap();
        assert_eq!(z_one, z_gram, "{what}");
    }
}

#[test]
fn same_inputs_give_bit_identical_codes() {
    let (n, d, l) = (50, 40, 16);
    let w = linear_uniform::<f32>(&mut rng(4), d, l, l);
    let y = linear_uniform::<f32>(&mut rng(5), n, d, 1);
    let params = FistaParams {
        energy: EnergyParams {
            lambda: 0.002,
            beta: 10.0,
            threshold: 0.5,
            gamma: 0.0,
        },
        step: StepRule::Constant { eta: 0.5 },
        ..FistaParams::default()
    };
    let be = Cpu;
    let dec = Decoder::linear(&be, &w).unwrap();
    let run = || {
        let mut ws = FistaWorkspace::new(&be, &dec, n).unwrap();
        let r = fista::solve(&be, &dec, &y, None, &params, &mut ws).unwrap();
        (ws.codes().clone(), r)
    };
    let (a, ra) = run();
    let (b, rb) = run();
    assert_eq!(a, b);
    assert_eq!(ra, rb);
}

#[test]
fn signed_codes_can_be_negative_and_nonneg_cannot() {
    let (w, y, _) = problem(80);
    let y = -y; // best explained by negative codes
    let base = FistaParams {
        energy: EnergyParams {
            lambda: 0.005,
            ..EnergyParams::default()
        },
        ..FistaParams::default()
    };
    let (z_pos, _) = solve(&w, &y, None, &base).unwrap();
    assert!(z_pos.iter().all(|&v| v >= 0.0));
    let (z_signed, _) = solve(
        &w,
        &y,
        None,
        &FistaParams {
            nonneg: false,
            ..base
        },
    )
    .unwrap();
    assert!(z_signed.iter().any(|&v| v < 0.0));
}

#[test]
fn one_hidden_decoder_runs_with_backtracking_and_lowers_the_energy() {
    let (n, d, l, m) = (16, 12, 6, 10);
    let be = Cpu;
    let w1 = random(m, l, 90);
    let b1 = random(1, m, 91) * 0.1;
    let w2 = random(d, m, 92);
    let dec = Decoder::one_hidden(&be, &w1, &b1, &w2).unwrap();
    let y = random(n, d, 93);
    let mut ws = FistaWorkspace::new(&be, &dec, n).unwrap();
    let params = FistaParams {
        energy: EnergyParams {
            lambda: 0.01,
            beta: 10.0,
            threshold: 0.5,
            gamma: 0.0,
        },
        step: StepRule::Auto,
        record_trace: true,
        ..FistaParams::default()
    };
    let e0 = {
        let one = FistaParams {
            max_iter: 1,
            ..params
        };
        fista::solve(&be, &dec, &y, None, &one, &mut ws)
            .unwrap()
            .total_energy
    };
    let r = fista::solve(&be, &dec, &y, None, &params, &mut ws).unwrap();
    assert_eq!(r.path, "direct");
    assert!(r.total_energy < e0, "{} !< {e0}", r.total_energy);
    for rec in &r.trace {
        assert!(rec.f_trial.unwrap() <= rec.model.unwrap() + 1e-9);
    }
}

/// The compacted gradient of the active rows equals the full gradient there, and is zero on
/// flagged rows, for both decoders.
#[test]
fn active_row_gradient_equals_the_full_gradient() {
    let be = Cpu;
    let (n, d, l, m) = (9, 12, 5, 7);
    let y = random(n, d, 1);
    let x = random(n, l, 2).mapv(|v| v.max(0.0));
    let mut flags = Array2::<f64>::zeros((n, 1));
    for i in [0, 3, 4, 8] {
        flags[(i, 0)] = 1.0;
    }
    let decs = [
        Decoder::linear(&be, &random(d, l, 3)).unwrap(),
        Decoder::one_hidden(
            &be,
            &random(m, l, 4),
            &(random(1, m, 5) * 0.1),
            &random(d, m, 6),
        )
        .unwrap(),
    ];
    for dec in &decs {
        let mut s = dec.scratch(&be, n).unwrap();
        let mut full = Array2::zeros((n, l));
        dec.recon(&be, &y, &x, &mut s, Some(&mut full), false)
            .unwrap();
        for all_flagged in [false, true] {
            let f = if all_flagged {
                Array2::ones((n, 1))
            } else {
                flags.clone()
            };
            let mut part = Array2::from_elem((n, l), f64::NAN);
            let k = dec
                .recon_grad_active(&be, &y, &x, &f, &mut s, &mut part)
                .unwrap();
            assert_eq!(k, if all_flagged { 0 } else { 5 });
            for i in 0..n {
                for j in 0..l {
                    let want = if f[(i, 0)] == 1.0 { 0.0 } else { full[(i, j)] };
                    assert!(
                        (part[(i, j)] - want).abs() < 1e-12,
                        "{:?} row {i}",
                        dec.kind()
                    );
                }
            }
        }
    }
}

/// The one-hidden-layer decoder's hidden-layer Gram gradient equals the direct one on the active
/// rows and is zero on the flagged rows.
#[test]
fn hidden_gram_gradient_equals_the_direct_gradient() {
    let be = Cpu;
    let (n, d, l, m) = (9, 12, 5, 7);
    let y = random(n, d, 1);
    let x = random(n, l, 2).mapv(|v| v.max(0.0));
    let (w1, b1, w2) = (random(m, l, 4), random(1, m, 5) * 0.1, random(d, m, 6));
    let dec = Decoder::one_hidden(&be, &w1, &b1, &w2).unwrap();
    let g2 = w2.t().dot(&w2);
    let c2 = y.dot(&w2);
    let mut packed = HiddenGram::default();
    dec.pack_hidden_gram(&be, &g2, &mut packed).unwrap();
    let mut s = dec.scratch(&be, n).unwrap();
    let mut q = Array2::zeros((n, m));
    for flagged in [vec![], vec![0, 3, 4, 8], (0..n).collect()] {
        let mut flags = Array2::<f64>::zeros((n, 1));
        for &i in &flagged {
            flags[(i, 0)] = 1.0;
        }
        let mut want = Array2::from_elem((n, l), f64::NAN);
        dec.recon_grad_active(&be, &y, &x, &flags, &mut s, &mut want)
            .unwrap();
        let mut got = Array2::from_elem((n, l), f64::NAN);
        let k = dec
            .hidden_gram_grad_active(&be, &x, &flags, &packed, &c2, &mut q, &mut s, &mut got)
            .unwrap();
        assert_eq!(k, n - flagged.len());
        let err = (&got - &want).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
        assert!(err < 1e-12, "{} flagged: max error {err:e}", flagged.len());
    }
    // operands packed for another shape are refused
    let mut s = dec.scratch(&be, n).unwrap();
    let mut g = Array2::zeros((n, l));
    let flags = Array2::zeros((n, 1));
    let empty = HiddenGram::default();
    assert!(
        dec.hidden_gram_grad_active(&be, &x, &flags, &empty, &c2, &mut q, &mut s, &mut g)
            .is_err()
    );
    assert!(
        dec.pack_hidden_gram(&be, &c2, &mut HiddenGram::default())
            .is_err()
    );
    // a linear decoder has no hidden layer
    let lin = Decoder::linear(&be, &random(d, l, 3)).unwrap();
    let mut s = lin.scratch(&be, n).unwrap();
    assert!(
        lin.hidden_gram_grad_active(&be, &x, &flags, &packed, &c2, &mut q, &mut s, &mut g)
            .is_err()
    );
    assert!(
        lin.pack_hidden_gram(&be, &g2, &mut HiddenGram::default())
            .is_err()
    );
}

/// A seeded one-hidden-layer decoder `(d, l, m)` and FISTA parameters with the hinge and the
/// proximity term on and a constant step, for the gradient-path tests.
fn one_hidden_problem(d: usize, l: usize, m: usize, seed: u64) -> (Decoder<f64, Cpu>, FistaParams) {
    let dec = Decoder::one_hidden(
        &Cpu,
        &(random(m, l, seed) * 0.5),
        &(random(1, m, seed + 1) * 0.1),
        &(random(d, m, seed + 2) * 0.3),
    )
    .unwrap();
    let params = FistaParams {
        energy: EnergyParams {
            lambda: 0.01,
            beta: 5.0,
            threshold: 0.5,
            gamma: 1.0,
        },
        step: StepRule::Constant { eta: 0.05 },
        max_iter: 60,
        tol: 1e-4,
        ..FistaParams::default()
    };
    (dec, params)
}

/// FISTA on a one-hidden-layer decoder: the Gram path from the start, and Auto's switch to it
/// after `HIDDEN_GRAM_AFTER` iterations, give the direct path's codes (f64, to rounding).
#[test]
fn hidden_gram_path_and_auto_switch_equal_the_direct_path() {
    let be = Cpu;
    let (n, d, l, m) = (40, 30, 10, 24);
    let y = random(n, d, 11);
    let e = random(n, l, 12).mapv(|v| v.max(0.0) * 0.5);
    let (dec, base) = one_hidden_problem(d, l, m, 13);
    let mut ws = FistaWorkspace::new(&be, &dec, n).unwrap();
    let mut out = vec![];
    for path in [GradientPath::Direct, GradientPath::Gram, GradientPath::Auto] {
        let r = fista::solve(
            &be,
            &dec,
            &y,
            Some(&e),
            &FistaParams { path, ..base },
            &mut ws,
        )
        .unwrap();
        out.push((ws.codes().clone(), r));
    }
    assert_eq!(out[0].1.path, "direct");
    assert_eq!(out[1].1.path, "gram");
    assert_eq!(
        out[2].1.path,
        format!(
            "direct, then gram from iteration {}",
            fista::HIDDEN_GRAM_AFTER
        )
    );
    assert!(out[0].1.iterations > fista::HIDDEN_GRAM_AFTER + 5);
    for (z, r) in &out[1..] {
        let err = (z - &out[0].0)
            .mapv(f64::abs)
            .fold(0.0f64, |a, &b| a.max(b));
        assert!(err < 1e-9, "{}: max |z - z_direct| = {err:e}", r.path);
        assert_eq!(r.iterations, out[0].1.iterations, "{}", r.path);
    }
    // with backtracking the energy goes through the direct reconstruction: Gram is refused,
    // and Auto stays direct
    let bt = FistaParams {
        step: StepRule::Backtracking {
            initial_step: None,
            factor: 2.0,
        },
        ..base
    };
    let gram_bt = FistaParams {
        path: GradientPath::Gram,
        ..bt
    };
    assert!(fista::solve(&be, &dec, &y, Some(&e), &gram_bt, &mut ws).is_err());
    let r = fista::solve(&be, &dec, &y, Some(&e), &bt, &mut ws).unwrap();
    assert_eq!(r.path, "direct");
}

/// A forecast in the workspace lets Auto run the hidden-layer Gram path from the first iteration
/// when it pays, with the direct path's codes (f64, to rounding); a short forecast leaves Auto's
/// switch after `HIDDEN_GRAM_AFTER` iterations; bad forecasts are errors; and `solve_batches`
/// forecasts each batch from the one before.
#[test]
fn a_forecast_starts_the_hidden_gram_path_at_once() {
    let be = Cpu;
    let (n, d, l, m) = (40, 30, 10, 24);
    let y = random(2 * n, d, 21);
    let e = random(2 * n, l, 22).mapv(|v| v.max(0.0) * 0.5);
    let (dec, params) = one_hidden_problem(d, l, m, 23);
    let direct = FistaParams {
        path: GradientPath::Direct,
        ..params
    };
    let (y0, e0) = (
        y.slice(ndarray::s![..n, ..]).to_owned(),
        e.slice(ndarray::s![..n, ..]).to_owned(),
    );
    let mut ws = FistaWorkspace::new(&be, &dec, n).unwrap();
    assert_eq!(ws.forecast(), None);
    let r_direct = fista::solve(&be, &dec, &y0, Some(&e0), &direct, &mut ws).unwrap();
    let z_direct = ws.codes().clone();
    assert_eq!(r_direct.path, "direct");
    let after = format!(
        "direct, then gram from iteration {}",
        fista::HIDDEN_GRAM_AFTER
    );
    // the setup costs m d (m + n) = 46080 multiply-adds, each sample-step saves m (2d - m) = 864:
    // a forecast above 46080 / 864 / n = 1.33 steps per sample pays
    for (forecast, path) in [
        (Some(10.0), "gram (forecast)"),
        (Some(1.2), after.as_str()),
        (None, after.as_str()),
    ] {
        ws.set_forecast(forecast).unwrap();
        assert_eq!(ws.forecast(), forecast);
        let r = fista::solve(&be, &dec, &y0, Some(&e0), &params, &mut ws).unwrap();
        assert_eq!(r.path, path, "forecast {forecast:?}");
        assert_eq!(r.iterations, r_direct.iterations, "{path}");
        let err = (ws.codes() - &z_direct)
            .mapv(f64::abs)
            .fold(0.0f64, |a, &b| a.max(b));
        assert!(err < 1e-9, "{path}: max |z - z_direct| = {err:e}");
    }
    // a forecast does not take the Gram path where it is not allowed (backtracking, Direct)
    ws.set_forecast(Some(50.0)).unwrap();
    let bt = FistaParams {
        step: StepRule::Backtracking {
            initial_step: None,
            factor: 2.0,
        },
        ..params
    };
    let r = fista::solve(&be, &dec, &y0, Some(&e0), &bt, &mut ws).unwrap();
    assert_eq!(r.path, "direct");
    let r = fista::solve(&be, &dec, &y0, Some(&e0), &direct, &mut ws).unwrap();
    assert_eq!(r.path, "direct");
    // bad forecasts are refused and leave the last good one
    for bad in [f64::NAN, f64::INFINITY, -1.0] {
        assert!(ws.set_forecast(Some(bad)).is_err(), "{bad}");
        assert_eq!(ws.forecast(), Some(50.0));
    }

    // solve_batches: the second batch runs from the first one's forecast
    let (z, reports) = fista::solve_batches(&be, &dec, &y, Some(&e), &params, n).unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0].report.path, after);
    assert!(reports[0].report.mean_steps > 1.33);
    assert_eq!(reports[1].report.path, "gram (forecast)");
    let (y1, e1) = (
        y.slice(ndarray::s![n.., ..]).to_owned(),
        e.slice(ndarray::s![n.., ..]).to_owned(),
    );
    fista::solve(&be, &dec, &y1, Some(&e1), &direct, &mut ws).unwrap();
    let err = (&z.slice(ndarray::s![n.., ..]) - ws.codes())
        .mapv(f64::abs)
        .fold(0.0f64, |a, &b| a.max(b));
    assert!(err < 1e-9, "second batch: max |z - z_direct| = {err:e}");
}

/// A decoder whose energy has a V-shaped minimum at a hidden unit's kink: `d = l = m = 1`,
/// `D(z) = relu(z - 1)`, `y = -1`, proximity `0.5 (z - 2)^2` towards the warm start `e = 2`.
/// Left of `z = 1` the energy's slope is `-1`, right of it `+1`: a constant step bounces across
/// the kink (the 2-cycle of docs/RESULTS.md's VDL-NL stall) and never meets the tolerance.
fn kink_problem() -> (Decoder<f64, Cpu>, Array2<f64>, Array2<f64>, FistaParams) {
    let one = Array2::from_elem((1, 1), 1.0);
    let dec = Decoder::one_hidden(&Cpu, &one, &(-&one), &one).unwrap();
    let params = FistaParams {
        energy: EnergyParams {
            lambda: 0.0,
            beta: 0.0,
            threshold: 0.5,
            gamma: 0.5,
        },
        step: StepRule::Constant { eta: 0.25 },
        path: GradientPath::Direct,
        record_trace: true,
        ..FistaParams::default()
    };
    (dec, -&one, &one * 2.0, params)
}

/// The constant step 2-cycles across the kink until `max_iter`; `Safeguarded` runs the same
/// iterates for its first `after` iterations, then shrinks the sample's step until it meets the
/// sufficient-decrease condition, and converges at the kink with a lower energy.
#[test]
fn safeguarded_step_ends_a_two_cycle_across_a_relu_kink() {
    let be = Cpu;
    let (dec, y, e, constant) = kink_problem();
    let mut ws = FistaWorkspace::new(&be, &dec, 1).unwrap();
    let r_c = fista::solve(&be, &dec, &y, Some(&e), &constant, &mut ws).unwrap();
    let z_c = ws.codes()[[0, 0]];
    assert!(!r_c.converged);
    assert_eq!(r_c.iterations, constant.max_iter);
    assert_eq!(r_c.safeguard_from, None);

    let after = 10;
    let safe = FistaParams {
        step: StepRule::Safeguarded {
            eta: 0.25,
            after,
            factor: 2.0,
        },
        ..constant
    };
    let r_s = fista::solve(&be, &dec, &y, Some(&e), &safe, &mut ws).unwrap();
    let z_s = ws.codes()[[0, 0]];
    assert!(r_s.converged, "{r_s:?}");
    assert!(r_s.iterations < 30, "{} iterations", r_s.iterations);
    assert_eq!(r_s.safeguard_from, Some(after));
    assert!(r_s.backtracks > 0 && r_s.step < 0.25);
    assert_eq!((r_s.safeguard_shrunk, r_c.safeguard_shrunk), (1, 0));
    assert!((z_s - 1.0).abs() < 1e-3, "z = {z_s}, the kink is at 1");
    assert!(
        r_s.total_energy < r_c.total_energy,
        "{} !< {} (constant step, z = {z_c})",
        r_s.total_energy,
        r_c.total_energy
    );
    // the first `after` iterations are the constant step's; then the step only shrinks
    for (a, b) in r_s.trace[..after].iter().zip(&r_c.trace) {
        assert_eq!(a, b);
    }
    for w in r_s.trace[after - 1..].windows(2) {
        assert!(w[1].step <= w[0].step, "{w:?}");
    }
    // from the first iteration on (after = 0) it converges too
    let at_once = FistaParams {
        step: StepRule::Safeguarded {
            eta: 0.25,
            after: 0,
            factor: 2.0,
        },
        ..constant
    };
    let r_0 = fista::solve(&be, &dec, &y, Some(&e), &at_once, &mut ws).unwrap();
    assert!(r_0.converged && r_0.safeguard_from == Some(0), "{r_0:?}");
    assert!((ws.codes()[[0, 0]] - 1.0).abs() < 1e-3);
}

/// Where the loop ends within `after` iterations, `Safeguarded` is the constant step to the
/// bit (one-hidden-layer decoder with the hinge and proximity, and the linear Gram path); with
/// `after = 0` on a smooth problem it converges from a step far too large for the constant rule;
/// bad steps and factors are refused.
#[test]
fn safeguarded_step_is_the_constant_step_until_it_engages() {
    let be = Cpu;
    let (n, d, l, m) = (40, 30, 10, 24);
    let y = random(n, d, 31);
    let e = random(n, l, 32).mapv(|v| v.max(0.0) * 0.5);
    let (dec, base) = one_hidden_problem(d, l, m, 33);
    let lin = Decoder::linear(&be, &(random(d, l, 34) * 0.3)).unwrap();
    for (dec, path) in [
        (&dec, GradientPath::Auto),
        (&dec, GradientPath::Gram),
        (&lin, GradientPath::Auto),
    ] {
        let constant = FistaParams {
            path,
            tol: 1e-3,
            max_iter: 400,
            ..base
        };
        let mut ws = FistaWorkspace::new(&be, dec, n).unwrap();
        let r_c = fista::solve(&be, dec, &y, Some(&e), &constant, &mut ws).unwrap();
        let z_c = ws.codes().clone();
        assert!(r_c.converged && r_c.iterations > 5, "{r_c:?}");
        let safe = FistaParams {
            step: StepRule::Safeguarded {
                eta: 0.05,
                after: r_c.iterations,
                factor: 2.0,
            },
            ..constant
        };
        let r_s = fista::solve(&be, dec, &y, Some(&e), &safe, &mut ws).unwrap();
        assert_eq!(ws.codes(), &z_c, "{path:?}");
        assert_eq!(r_s, r_c, "{path:?}");
    }
    let mut ws = FistaWorkspace::new(&be, &dec, n).unwrap();
    // on a smooth (convex) problem the per-sample test is the descent lemma: from a step far
    // too large for the constant rule, the steps shrink to fit and the loop converges to the
    // small constant step's energy
    let smooth_problem = FistaParams {
        energy: EnergyParams {
            beta: 0.0,
            ..base.energy
        },
        path: GradientPath::Direct,
        max_iter: 2000,
        tol: 1e-6,
        ..base
    };
    let mut ws_lin = FistaWorkspace::new(&be, &lin, n).unwrap();
    let r_small = fista::solve(&be, &lin, &y, Some(&e), &smooth_problem, &mut ws_lin).unwrap();
    let too_large = StepRule::Constant { eta: 50.0 };
    let r_large = fista::solve(
        &be,
        &lin,
        &y,
        Some(&e),
        &FistaParams {
            step: too_large,
            ..smooth_problem
        },
        &mut ws_lin,
    );
    assert!(r_large.is_err() || !r_large.unwrap().converged);
    let at_once = FistaParams {
        step: StepRule::Safeguarded {
            eta: 50.0,
            after: 0,
            factor: 2.0,
        },
        ..smooth_problem
    };
    let r_s = fista::solve(&be, &lin, &y, Some(&e), &at_once, &mut ws_lin).unwrap();
    assert!(r_s.converged && r_s.safeguard_from == Some(0), "{r_s:?}");
    assert!(r_s.backtracks > 0 && r_s.step < 50.0);
    let rel = (r_s.total_energy - r_small.total_energy).abs() / r_small.total_energy;
    assert!(
        rel < 1e-6,
        "{} vs {}",
        r_s.total_energy,
        r_small.total_energy
    );
    // bad factors and steps are refused
    for step in [
        StepRule::Safeguarded {
            eta: 0.0,
            after: 3,
            factor: 2.0,
        },
        StepRule::Safeguarded {
            eta: 0.1,
            after: 3,
            factor: 1.0,
        },
    ] {
        let p = FistaParams { step, ..base };
        assert!(fista::solve(&be, &dec, &y, Some(&e), &p, &mut ws).is_err());
    }
}

/// `FistaReport::flops` counts the products of the rows each iteration computed: with a
/// constant step on the direct path of a linear decoder, `4 d l` per active row and iteration
/// (the reconstruction and its gradient) and `2 d l` per row for the final energy.
#[test]
fn flops_count_the_rows_each_iteration_computed() {
    let be = Cpu;
    let (n, d, l) = (30, 20, 8);
    let w = random(d, l, 41) * 0.3;
    let dec = Decoder::linear(&be, &w).unwrap();
    let y = random(n, d, 42);
    let e = random(n, l, 43).mapv(|v| v.max(0.0));
    let params = FistaParams {
        step: StepRule::Constant { eta: 0.2 },
        path: GradientPath::Direct,
        record_trace: true,
        ..FistaParams::default()
    };
    let mut ws = FistaWorkspace::new(&be, &dec, n).unwrap();
    let r = fista::solve(&be, &dec, &y, Some(&e), &params, &mut ws).unwrap();
    assert!(r.iterations > 3 && r.converged, "{r:?}");
    let mut active_before = n;
    let mut rows = 0;
    for rec in &r.trace {
        rows += active_before;
        active_before = rec.active;
    }
    let (d, l) = (d as f64, l as f64);
    let want = rows as f64 * 4.0 * d * l + n as f64 * 2.0 * d * l;
    assert_eq!(r.flops, want);
    // fewer rows than iterations times the batch: flagged rows cost nothing
    assert!(rows < r.iterations * n);
}

/// [`reference_fista`] with adaptive restart, written independently of the library's kernels:
/// each sample keeps its own momentum weight `t_i`; when `<aux_i - z_i, z_i - z_old_i> > 0` its
/// extrapolation is dropped (`aux_i = z_i`) and `t_i` starts again from 1 (so its next weight
/// is the one after 1). Returns the codes, mean steps, iterations and restarts.
#[allow(clippy::too_many_arguments)]
fn reference_fista_restart(
    w: &Array2<f64>,
    y: &Array2<f64>,
    e: &Array2<f64>,
    p: &EnergyParams,
    eta: f64,
    max_iter: usize,
    tol: f64,
) -> (Array2<f64>, f64, usize, usize) {
    let (n, d) = y.dim();
    let l = w.ncols();
    let next_t = |t: f64| 0.5 * (1.0 + (1.0 + 4.0 * t * t).sqrt());
    let mut z = e.clone();
    let mut aux = z.clone();
    let mut t = vec![1.0f64; n];
    let mut flags = vec![0.0f64; n];
    let mut steps = vec![0.0f64; n];
    let (mut iterations, mut restarts) = (0, 0);
    for step in 0..max_iter {
        assert_eq!(p.beta, 0.0, "the reference has no hinge");
        let r = aux.dot(&w.t()) - y;
        let g = r.dot(w) * (2.0 / d as f64) + (&aux - e) * (2.0 * p.gamma / l as f64);
        let z_old = z.clone();
        for i in 0..n {
            let a = 1.0 - flags[i];
            for j in 0..l {
                let u = aux[(i, j)] - a * eta * g[(i, j)];
                z[(i, j)] = (u - a * p.lambda * eta).max(0.0);
            }
            let along: f64 = (0..l)
                .map(|j| (aux[(i, j)] - z[(i, j)]) * (z[(i, j)] - z_old[(i, j)]))
                .sum();
            if along > 0.0 {
                restarts += 1;
                t[i] = next_t(1.0);
                for j in 0..l {
                    aux[(i, j)] = z[(i, j)];
                }
            } else {
                let t_new = next_t(t[i]);
                for j in 0..l {
                    aux[(i, j)] = z[(i, j)] + (z[(i, j)] - z_old[(i, j)]) * ((t[i] - 1.0) / t_new);
                }
                t[i] = t_new;
            }
            let diff = (&z_old.row(i) - &z.row(i)).mapv(|v| v * v).sum().sqrt();
            let old = z_old.row(i).mapv(|v| v * v).sum().sqrt();
            flags[i] = if diff / old < tol { 1.0 } else { 0.0 };
            steps[i] += 1.0 - flags[i];
        }
        iterations = step + 1;
        if flags.iter().all(|&f| f == 1.0) {
            break;
        }
    }
    (
        z,
        steps.iter().sum::<f64>() / n as f64,
        iterations,
        restarts,
    )
}

/// Adaptive restart follows an independent transcription of the rule, on both gradient paths
/// (the linear Gram path without the hinge is otherwise one fused kernel).
#[test]
fn adaptive_restart_matches_a_reference_loop() {
    let mut restarted = 0;
    for (seed, gamma, eta) in [(110, 0.0, 0.5), (120, 1.0, 0.3), (130, 0.0, 0.2)] {
        let (w, y, e) = problem(seed);
        let energy = EnergyParams {
            lambda: 0.02,
            beta: 0.0,
            threshold: 0.5,
            gamma,
        };
        let (z_ref, steps_ref, it_ref, restarts_ref) =
            reference_fista_restart(&w, &y, &e, &energy, eta, 200, 1e-4);
        restarted += restarts_ref;
        for path in [GradientPath::Direct, GradientPath::Gram] {
            let params = FistaParams {
                energy,
                step: StepRule::Constant { eta },
                tol: 1e-4,
                path,
                restart: true,
                ..FistaParams::default()
            };
            let (z, report) = solve(&w, &y, Some(&e), &params).unwrap();
            let err = (&z - &z_ref).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
            assert!(
                err < 1e-10,
                "seed {seed} {path:?}: max |z - z_ref| = {err:e}"
            );
            assert_eq!(report.iterations, it_ref, "seed {seed} {path:?}");
            assert_eq!(report.restarts, restarts_ref, "seed {seed} {path:?}");
            assert!((report.mean_steps - steps_ref).abs() < 1e-12);
        }
    }
    assert!(restarted > 0, "the restart must be exercised");
}

/// Restart keeps FISTA's fixed point: on the non-negative lasso it reaches the same minimiser,
/// in fewer iterations when the tolerance is tight (where momentum overshoots and oscillates).
#[test]
fn adaptive_restart_reaches_the_same_minimiser_in_fewer_iterations() {
    let (w, y, _) = problem(50);
    let params = FistaParams {
        energy: EnergyParams {
            lambda: 0.01,
            beta: 0.0,
            threshold: 0.5,
            gamma: 0.0,
        },
        step: StepRule::Auto,
        max_iter: 20_000,
        tol: 1e-10,
        ..FistaParams::default()
    };
    let (z0, r0) = solve(&w, &y, None, &params).unwrap();
    let (z1, r1) = solve(
        &w,
        &y,
        None,
        &FistaParams {
            restart: true,
            ..params
        },
    )
    .unwrap();
    assert!(r0.converged && r1.converged);
    assert!(r1.restarts > 0);
    let err = (&z0 - &z1).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
    assert!(err < 1e-7, "max |z - z_restart| = {err:e}");
    assert!(
        (r0.total_energy - r1.total_energy).abs() < 1e-10 * r0.total_energy,
        "{} vs {}",
        r0.total_energy,
        r1.total_energy
    );
    assert!(
        r1.iterations < r0.iterations,
        "restart: {} iterations, without: {}",
        r1.iterations,
        r0.iterations
    );
}

/// With the variance hinge and a one-hidden-layer decoder's hidden Gram path the restart runs
/// too; off, the run is the released code's to the bit; with a backtracking rule it is refused.
#[test]
fn adaptive_restart_runs_with_the_hinge_and_is_refused_with_backtracking() {
    let (w, y, e) = problem(140);
    let base = FistaParams {
        energy: EnergyParams {
            lambda: 0.02,
            beta: 10.0,
            threshold: 0.5,
            gamma: 5.0,
        },
        step: StepRule::Constant { eta: 0.05 },
        tol: 1e-5,
        ..FistaParams::default()
    };
    let (_, r_off) = solve(&w, &y, Some(&e), &base).unwrap();
    assert_eq!(r_off.restarts, 0);
    let on = FistaParams {
        restart: true,
        ..base
    };
    let (z_on, r_on) = solve(&w, &y, Some(&e), &on).unwrap();
    assert!(r_on.restarts > 0 && r_on.converged, "{r_on:?}");
    assert!(z_on.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert!(
        (r_on.total_energy - r_off.total_energy).abs() < 1e-3 * r_off.total_energy,
        "{} vs {}",
        r_on.total_energy,
        r_off.total_energy
    );

    let (dec, params) = one_hidden_problem(30, 8, 16, 150);
    let be = Cpu;
    let yh = random(40, 30, 151);
    let mut ws = FistaWorkspace::new(&be, &dec, 40).unwrap();
    let r = fista::solve(
        &be,
        &dec,
        &yh,
        None,
        &FistaParams {
            restart: true,
            path: GradientPath::Gram,
            ..params
        },
        &mut ws,
    )
    .unwrap();
    assert!(r.total_energy.is_finite() && r.iterations > 1, "{r:?}");

    let bt = FistaParams {
        step: StepRule::Backtracking {
            initial_step: None,
            factor: 2.0,
        },
        restart: true,
        ..base
    };
    let err = solve(&w, &y, Some(&e), &bt).unwrap_err();
    assert!(err.to_string().contains("restart"), "{err}");
}

/// The restart kernel with no row restarting (the first update from `x = z`, where every step
/// is along its momentum-free direction) and every age `k` is `fista_update` with the
/// coefficient `coefs[k]`, to the bit, in f32 and f64, on active and flagged rows.
#[test]
fn restart_kernel_without_restarts_is_the_fused_update() {
    fn check<F: varsparse::Scalar>(nonneg: bool) {
        use varsparse::backend::{Backend, FistaStep};
        let be = Cpu;
        let (n, l) = (37, 21);
        let c = |a: Array2<f64>| a.mapv(F::c);
        let z = c(random(n, l, 160).mapv(|v| v.max(-0.2)));
        let g = c(random(n, l, 161));
        let flags = c(Array2::from_shape_fn((n, 1), |(i, _)| {
            f64::from(u8::from(i % 3 == 0))
        }));
        let coefs: Vec<F> = [0.0, 0.28, 0.43, 0.53].iter().map(|&v| F::c(v)).collect();
        let step = FistaStep {
            eta: F::c(0.3),
            thr: F::c(0.01),
            nonneg,
            coef: coefs[2],
            tol: F::c(1e-2),
        };
        let (mut x0, mut z0, mut zo0, mut f0) = (z.clone(), z.clone(), z.clone(), flags.clone());
        let rc0 = be
            .fista_update(&g, step, &mut x0, &mut z0, &mut zo0, &mut f0)
            .unwrap();
        let (mut x1, mut z1, mut zo1, mut f1) = (z.clone(), z.clone(), z.clone(), flags.clone());
        let mut age = Array2::from_elem((n, 1), F::c(2.0));
        let rc1 = be
            .fista_update_restart(
                &g, step, &coefs, &mut age, &mut x1, &mut z1, &mut zo1, &mut f1,
            )
            .unwrap();
        assert_eq!(rc1.restarts, 0);
        assert_eq!((x0, z0, zo0, f0), (x1, z1, zo1, f1));
        assert_eq!(rc0.converged, rc1.converged);
        assert!(age.iter().all(|&a| a == F::c(3.0)));
    }
    check::<f32>(true);
    check::<f32>(false);
    check::<f64>(true);
    check::<f64>(false);
}
