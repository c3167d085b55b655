//! The active-set non-negative lasso gives FISTA's optimum (to rounding) and satisfies KKT.

use ndarray::Array2;
use varsparse::backend::Cpu;
use varsparse::backend::cpu::threads::with_threads;
use varsparse::model::decoder::Decoder;
use varsparse::model::energy::EnergyParams;
use varsparse::rng::{linear_uniform, rng};
use varsparse::solve::fista::{self, FistaParams, StepRule};
use varsparse::solve::lasso::{lasso, nonneg_lasso, objective};

fn problem(n: usize, d: usize, l: usize, seed: u64) -> (Array2<f32>, Array2<f32>) {
    let mut w: Array2<f32> = linear_uniform(&mut rng(seed), d, l, 1);
    for mut c in w.columns_mut() {
        let norm = c.dot(&c).sqrt();
        c.mapv_inplace(|v| v / norm);
    }
    let z = linear_uniform::<f32>(&mut rng(seed + 1), n, l, 1).mapv(|v| (v - 0.6).max(0.0) * 3.0);
    let y = z.dot(&w.t()) + linear_uniform::<f32>(&mut rng(seed + 2), n, d, 1) * 0.05;
    (w, y)
}

#[test]
fn active_set_matches_a_converged_fista() {
    // atom counts on and off the solver's 8-wide lanes, supports on and off its 4-row blocks
    for (d, l, lambda) in [(60, 24, 0.002), (50, 37, 0.001), (12, 5, 0.0005)] {
        matches_fista(d, l, lambda);
    }
}

fn matches_fista(d: usize, l: usize, lambda: f64) {
    let (w, y) = problem(200, d, l, 1);
    let (z, report) = with_threads(2, || nonneg_lasso(&w, &y, lambda))
        .unwrap()
        .unwrap();
    assert!(z.iter().all(|&v| v >= 0.0));
    assert!(report.max_kkt_violation < 1e-6, "{report:?}");
    assert!(report.mean_support > 1.0, "{report:?}");
    let params = FistaParams {
        energy: EnergyParams {
            lambda,
            ..EnergyParams::default()
        },
        step: StepRule::Auto,
        max_iter: 20_000,
        tol: 0.0,
        ..FistaParams::default()
    };
    let dec = Decoder::linear(&Cpu, &w).unwrap();
    let (zf, _) = fista::solve_batches(&Cpu, &dec, &y, None, &params, 200).unwrap();
    let (a, b) = (
        objective(&w, &y, &z, lambda),
        objective(&w, &y, &zf, lambda),
    );
    assert!(a <= b * (1.0 + 1e-6), "l {l}: active set {a} vs FISTA {b}");
    assert!(
        (a - b).abs() <= 1e-5 * b,
        "l {l}: active set {a} vs FISTA {b}"
    );
    assert!(
        (report.mean_objective - a / 200.0).abs() < 1e-6 * a / 200.0,
        "{report:?} vs {a}"
    );
}

#[test]
fn thread_count_does_not_change_the_codes() {
    let (w, y) = problem(101, 40, 16, 5);
    let (a, _) = with_threads(1, || nonneg_lasso(&w, &y, 0.003))
        .unwrap()
        .unwrap();
    let (b, _) = with_threads(3, || nonneg_lasso(&w, &y, 0.003))
        .unwrap()
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn degenerate_dictionaries_and_bad_input() {
    // duplicate atoms make G singular: still an optimum, no hang, no panic
    let (mut w, y) = problem(30, 20, 8, 9);
    let c0 = w.column(0).to_owned();
    w.column_mut(1).assign(&c0);
    let (z, r) = nonneg_lasso(&w, &y, 0.001).unwrap();
    assert!(z.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert!(r.max_kkt_violation < 1e-5, "{r:?}");
    // a huge lambda gives all zeros
    let (z, _) = nonneg_lasso(&w, &y, 1e6).unwrap();
    assert!(z.iter().all(|&v| v == 0.0));
    assert!(nonneg_lasso(&w, &Array2::zeros((3, 7)), 0.1).is_err());
    assert!(nonneg_lasso(&w, &y, -1.0).is_err());
}

/// Signed codes: the exact solver reaches FISTA's optimum with soft thresholding, its codes take
/// both signs, and they satisfy the lasso's optimality conditions (in the authors' scaling,
/// `(2/d) w_j^T (y - W z) = lambda sign(z_j)` on the support, at most `lambda` in size off it).
#[test]
fn signed_codes_match_a_converged_signed_fista() {
    let (w, y0) = problem(150, 40, 17, 7);
    // signed targets: half of the samples negated
    let mut y = y0.clone();
    for (i, mut r) in y.rows_mut().into_iter().enumerate() {
        if i % 2 == 1 {
            r.mapv_inplace(|v| -v);
        }
    }
    let lambda = 0.002;
    let (z, report) = with_threads(2, || lasso(&w, &y, lambda, false))
        .unwrap()
        .unwrap();
    assert!(z.iter().any(|&v| v < 0.0) && z.iter().any(|&v| v > 0.0));
    assert!(report.max_kkt_violation < 1e-6, "{report:?}");
    let d = w.nrows() as f64;
    let r = &y - &z.dot(&w.t());
    let corr = r.dot(&w).mapv(|v| 2.0 * v as f64 / d);
    for ((i, j), &c) in corr.indexed_iter() {
        let zj = z[(i, j)] as f64;
        if zj != 0.0 {
            assert!(
                (c - lambda * zj.signum()).abs() < 1e-4,
                "({i}, {j}): {c} vs {zj}"
            );
        } else {
            assert!(c.abs() <= lambda + 1e-4, "({i}, {j}): {c}");
        }
    }
    let params = FistaParams {
        energy: EnergyParams {
            lambda,
            ..EnergyParams::default()
        },
        step: StepRule::Auto,
        max_iter: 20_000,
        tol: 0.0,
        nonneg: false,
        ..FistaParams::default()
    };
    let dec = Decoder::linear(&Cpu, &w).unwrap();
    let (zf, _) = fista::solve_batches(&Cpu, &dec, &y, None, &params, 150).unwrap();
    let (a, b) = (
        objective(&w, &y, &z, lambda),
        objective(&w, &y, &zf, lambda),
    );
    assert!(
        a <= b * (1.0 + 1e-6) && (a - b).abs() <= 1e-5 * b,
        "{a} vs {b}"
    );
    // the mean objective of the report is the objective's
    assert!(
        (report.mean_objective * 150.0 - a).abs() <= 1e-6 * a,
        "{report:?} vs {a}"
    );
    // and non-negative data gives the non-negative solver's codes where no code wants a sign
    let (zp, _) = nonneg_lasso(&w, &y0, lambda).unwrap();
    let (zs, _) = lasso(&w, &y0, lambda, false).unwrap();
    let (op, os) = (
        objective(&w, &y0, &zp, lambda),
        objective(&w, &y0, &zs, lambda),
    );
    assert!(os <= op * (1.0 + 1e-6), "signed {os} vs non-negative {op}");
}
