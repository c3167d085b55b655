//! Threads and the sparse GEMM path of the CPU backend: every fast path equals the plain one.
//!
//! * The kernels split over a `with_threads` pool give bit-identical results for 1, 2 and 3
//!   threads (each part computes what the one-thread loop computes for its rows).
//! * The sparse GEMM path (taken when the left operand is mostly zeros) equals an f64 reference
//!   product, as the dense path does.
//! * A whole training run is bit-identical on 1 and 2 threads.
//!
//! With the `openblas` feature, OpenBLAS chooses its blocking by shape, so a dense GEMM on a part
//! of the rows may round differently: there the GEMM results (and the training run) are compared
//! to a tolerance instead of bit for bit.

use ndarray::Array2;
use varsparse::backend::cpu::threads::{current_threads, with_threads};
use varsparse::backend::{
    Backend, Cpu, FistaStep, RowMomentum, Trans, gram_fista_step_composed,
    gram_grad_active_composed,
};
use varsparse::model::decoder::{Decoder, DecoderKind};
use varsparse::model::encoder::Lista;
use varsparse::model::energy::EnergyParams;
use varsparse::model::{DecoderParams, ListaParams, ParamSet};
use varsparse::rng::{linear_uniform, rng, unit_f64};
use varsparse::scalar::Scalar;
use varsparse::solve::fista::{FistaParams, StepRule};
use varsparse::train::optim::{AdamParams, LrSchedule};
use varsparse::train::{StepConfig, Trainer};

/// A seeded `(rows, cols)` matrix in [-1, 1) with about `density` of its entries non-zero.
fn sparse<F: Scalar>(seed: u64, rows: usize, cols: usize, density: f64) -> Array2<F> {
    let mut r = rng(seed);
    Array2::from_shape_fn((rows, cols), |_| {
        let keep = unit_f64(&mut r) < density;
        let v = 2.0 * unit_f64(&mut r) - 1.0;
        F::c(if keep { v } else { 0.0 })
    })
}

fn reference(
    alpha: f64,
    a: &Array2<f64>,
    ta: Trans,
    b: &Array2<f64>,
    tb: Trans,
    beta: f64,
    c: &Array2<f64>,
) -> Array2<f64> {
    let a = if ta == Trans::T { a.t() } else { a.view() };
    let b = if tb == Trans::T { b.t() } else { b.view() };
    let mut out = c.clone() * beta;
    for i in 0..a.nrows() {
        for j in 0..b.ncols() {
            let s: f64 = (0..a.ncols()).map(|p| a[(i, p)] * b[(p, j)]).sum();
            out[(i, j)] += alpha * s;
        }
    }
    out
}

#[test]
fn sparse_and_dense_gemm_equal_a_reference_product() {
    let be = Cpu;
    // densities on both sides of the sparse path's threshold; b used as stored and transposed
    for (density, seed) in [(0.05, 1), (0.2, 2), (0.6, 3), (0.0, 4)] {
        let a = sparse::<f64>(seed, 97, 70, density);
        let b = sparse::<f64>(seed + 10, 70, 45, 1.0);
        let bt = b.t().as_standard_layout().to_owned();
        let c0 = sparse::<f64>(seed + 20, 97, 45, 1.0);
        for (alpha, beta) in [(1.0, 0.0), (0.7, -1.3), (2.0, 1.0)] {
            let want = reference(alpha, &a, Trans::N, &b, Trans::N, beta, &c0);
            for (bm, tb) in [(&b, Trans::N), (&bt, Trans::T)] {
                let mut c = c0.clone();
                be.gemm(alpha, &a, Trans::N, bm, tb, beta, &mut c).unwrap();
                let err = (&c - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
                assert!(err < 1e-12, "density {density} {tb:?}: error {err}");
            }
            // the leading-rows form
            let mut c = c0.clone();
            be.gemm_rows(60, alpha, &a, &b, Trans::N, beta, &mut c)
                .unwrap();
            let err = (&c.slice(ndarray::s![..60, ..]) - &want.slice(ndarray::s![..60, ..]))
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(err < 1e-12, "gemm_rows, density {density}: error {err}");
            assert_eq!(
                c.slice(ndarray::s![60.., ..]),
                c0.slice(ndarray::s![60.., ..])
            );
        }
    }
}

#[test]
fn beta_zero_ignores_nan_in_c_on_the_sparse_path() {
    let be = Cpu;
    let a = sparse::<f32>(5, 40, 64, 0.1);
    let b = sparse::<f32>(6, 64, 32, 1.0);
    let mut c = Array2::from_elem((40, 32), f32::NAN);
    be.gemm(1.0, &a, Trans::N, &b, Trans::N, 0.0, &mut c)
        .unwrap();
    assert!(c.iter().all(|v| v.is_finite()));
}

/// The CPU backend's one-pass Gram gradient on the active rows equals the gather, GEMM and
/// scatter composition bit for bit, on both sides of the sparse threshold, for every pattern of
/// converged rows and every thread count.
fn gram_grad_active_equals_the_composition<F: Scalar>() {
    let be = Cpu;
    let (n, l) = (61, 40);
    let g = sparse::<F>(11, l, l, 1.0);
    let c = sparse::<F>(12, n, l, 1.0);
    let dense = sparse::<F>(13, n, l, 1.0);
    let alpha = F::c(2.0 / 784.0);
    for (density, seed) in [(0.05, 21), (0.2, 22), (0.25, 23), (0.3, 24), (0.7, 25)] {
        let x = sparse::<F>(seed, n, l, density);
        let flag_sets: [Box<dyn Fn(usize) -> bool>; 4] = [
            Box::new(|_| false),
            Box::new(|i| i % 2 == 1),
            Box::new(|i| i % 7 != 3),
            Box::new(|_| true),
        ];
        for (p, flagged) in flag_sets.iter().enumerate() {
            let flags =
                Array2::from_shape_fn((n, 1), |(i, _)| F::c(f64::from(u8::from(flagged(i)))));
            // converged rows dense: only the active rows' density may decide the path
            let mut x = x.clone();
            for i in (0..n).filter(|&i| flagged(i)) {
                x.row_mut(i).assign(&dense.row(i));
            }
            let run = |fused: bool| {
                let mut grad = Array2::from_elem((n, l), F::c(7.0));
                let (mut xc, mut cc) = (Array2::zeros((n, l)), Array2::zeros((n, l)));
                if fused {
                    be.gram_grad_active(&flags, &x, &g, &c, alpha, &mut grad, &mut xc, &mut cc)
                        .unwrap();
                } else {
                    gram_grad_active_composed(
                        &be, &flags, &x, &g, &c, alpha, &mut grad, &mut xc, &mut cc,
                    )
                    .unwrap();
                }
                grad
            };
            let want = with_threads(1, || run(false)).unwrap();
            same_on_every_thread_count_by(
                "gram_grad_active",
                || run(true),
                |got, _| gemm_equal(std::slice::from_ref(got), std::slice::from_ref(&want)),
            );
            assert!(
                gemm_equal(&[with_threads(2, || run(true)).unwrap()], &[want]),
                "density {density}, flags {p}"
            );
        }
    }
}

#[test]
fn gram_grad_active_equals_the_composition_f32_and_f64() {
    gram_grad_active_equals_the_composition::<f32>();
    gram_grad_active_equals_the_composition::<f64>();
}

/// The CPU backend's fused Gram step equals its kernels (`gram_grad_active`, the proximity
/// term, `fista_update`) bit for bit: on both sides of the sparse threshold, for every pattern of
/// converged rows, both shrinkages, without and with a proximity term (to zero or to a target),
/// with and without the caller's count of non-zeros, on every thread count; and the count it
/// returns is the count of the new `x`.
fn gram_fista_step_equals_its_two_kernels<F: Scalar>() {
    let be = Cpu;
    // rows that restarted their momentum, over every case with the adaptive restart
    let mut restarted = 0;
    // 37 columns: chunks of 8 and 32 with a tail
    for (n, l) in [(61, 40), (33, 37)] {
        let g = sparse::<F>(31, l, l, 1.0);
        let c = sparse::<F>(32, n, l, 1.0);
        let dense = sparse::<F>(33, n, l, 1.0);
        let z0 = sparse::<F>(34, n, l, 0.3);
        let target = sparse::<F>(35, n, l, 0.5);
        let alpha = F::c(2.0 / 784.0);
        for (density, seed) in [(0.0, 40), (0.05, 41), (0.2, 42), (0.3, 43), (0.7, 44)] {
            let x0 = sparse::<F>(seed, n, l, density);
            let flag_sets: [fn(usize) -> bool; 3] = [|_| false, |i| i % 3 == 1, |_| true];
            for (p, flagged) in flag_sets.iter().enumerate() {
                let flags0 =
                    Array2::from_shape_fn((n, 1), |(i, _)| F::c(f64::from(u8::from(flagged(i)))));
                // converged rows dense: only the active rows' density may decide the path
                let mut x0 = x0.clone();
                for i in (0..n).filter(|&i| flagged(i)) {
                    x0.row_mut(i).assign(&dense.row(i));
                }
                let active_nnz = (0..n)
                    .filter(|&i| !flagged(i))
                    .map(|i| x0.row(i).iter().filter(|&&v| v != F::zero()).count())
                    .sum::<usize>();
                let proximities = [(0.0, None), (0.3, None), (0.3, Some(&target))];
                for (nonneg, (prox, target)) in [true, false]
                    .into_iter()
                    .flat_map(|nn| proximities.map(|p| (nn, p)))
                {
                    let prox = F::c(prox);
                    let step = FistaStep {
                        eta: F::c(0.7),
                        thr: F::c(0.01),
                        nonneg,
                        coef: F::c(0.4),
                        tol: F::c(0.3),
                    };
                    // adaptive restart's momentum: a coefficient by each row's age
                    let coefs: Vec<F> = [0.0, 0.28, 0.43, 0.53, 0.6]
                        .iter()
                        .map(|&v| F::c(v))
                        .collect();
                    let run = |fused: bool, hint: Option<usize>, restart: bool| {
                        let (mut x, mut z, mut zo, mut flags) =
                            (x0.clone(), z0.clone(), dense.clone(), flags0.clone());
                        let mut grad = Array2::from_elem((n, l), F::c(7.0));
                        let (mut xc, mut cc) = (Array2::zeros((n, l)), Array2::zeros((n, l)));
                        let mut age = Array2::from_shape_fn((n, 1), |(i, _)| F::c((i % 5) as f64));
                        let momentum = restart.then_some(RowMomentum {
                            coefs: &coefs,
                            age: &mut age,
                        });
                        let rc = if fused {
                            be.gram_fista_step(
                                &g, &c, alpha, prox, target, step, momentum, hint, &mut x, &mut z,
                                &mut zo, &mut flags, &mut grad, &mut xc, &mut cc,
                            )
                            .unwrap()
                        } else {
                            gram_fista_step_composed(
                                &be, &g, &c, alpha, prox, target, step, momentum, &mut x, &mut z,
                                &mut zo, &mut flags, &mut grad, &mut xc, &mut cc,
                            )
                            .unwrap()
                        };
                        (vec![x, z, zo, flags, grad, age], rc)
                    };
                    let what = format!(
                        "{n}x{l}, density {density}, flags {p}, nonneg {nonneg}, \
                         prox {prox} {}",
                        target.is_some()
                    );
                    for (t, restart) in [1, 2, 3].into_iter().flat_map(|t| [(t, false), (t, true)])
                    {
                        let want = with_threads(t, || run(false, None, restart)).unwrap();
                        if restart {
                            restarted += want.1.restarts;
                        } else {
                            assert_eq!(want.1.restarts, 0);
                        }
                        for hint in [None, Some(active_nnz)] {
                            let (got, rc) = with_threads(t, || run(true, hint, restart)).unwrap();
                            let what = format!("{what}, restart {restart}");
                            assert_eq!(got, want.0, "{what}, hint {hint:?}, {t} threads");
                            assert_eq!(
                                (rc.converged, rc.non_finite, rc.restarts),
                                (want.1.converged, want.1.non_finite, want.1.restarts),
                                "{what}"
                            );
                            // where it counted: the non-zeros of the unflagged rows of the new x
                            if let Some(k) = rc.active_nonzeros {
                                let (x, flags) = (&got[0], &got[3]);
                                let count = (0..n)
                                    .filter(|&i| flags[(i, 0)] == F::zero())
                                    .map(|i| x.row(i).iter().filter(|&&v| v != F::zero()).count())
                                    .sum::<usize>();
                                assert_eq!(k, count, "{what}");
                            }
                        }
                        // a wrong count may pick the other path: the result within rounding
                        for hint in [Some(0), Some(n * l)] {
                            let (got, _) = with_threads(t, || run(true, hint, restart)).unwrap();
                            assert!(
                                got.iter().zip(&want.0).all(|(a, b)| {
                                    a.iter().zip(b).all(|(&u, &v)| {
                                        (u - v).abs().f() <= 1e3 * F::EPS * (1.0 + u.abs().f())
                                    })
                                }),
                                "{what}, wrong hint {hint:?}"
                            );
                        }
                    }
                    same_on_every_thread_count_by(
                        "gram_fista_step",
                        || run(true, None, true).0,
                        |a, b| gemm_equal(a, b),
                    );
                }
            }
        }
    }
    assert!(restarted > 0, "the restart must be exercised");
}

#[test]
fn gram_fista_step_equals_its_two_kernels_f32_and_f64() {
    gram_fista_step_equals_its_two_kernels::<f32>();
    gram_fista_step_equals_its_two_kernels::<f64>();
}

/// Runs `f` on 1, 2 and 3 threads and checks that the three results are equal.
fn same_on_every_thread_count<T: PartialEq + std::fmt::Debug>(what: &str, f: impl Fn() -> T) {
    same_on_every_thread_count_by(what, f, |a, b| a == b);
}

/// [`same_on_every_thread_count`] with the comparison `same`.
fn same_on_every_thread_count_by<T>(what: &str, f: impl Fn() -> T, same: impl Fn(&T, &T) -> bool) {
    let one = with_threads(1, &f).unwrap();
    for t in [2, 3] {
        let got = with_threads(t, || {
            assert_eq!(current_threads(), t);
            f()
        })
        .unwrap();
        assert!(same(&got, &one), "{what}: {t} threads differ from 1");
    }
}

/// Whether GEMM results must match bit for bit across thread counts (see the module docs).
const GEMM_BITWISE: bool = !cfg!(feature = "openblas");

/// Equal, or (without [`GEMM_BITWISE`]) equal to a relative `1e3` epsilons.
fn gemm_equal<F: Scalar>(a: &[Array2<F>], b: &[Array2<F>]) -> bool {
    if GEMM_BITWISE {
        return a == b;
    }
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.dim() == y.dim()
                && x.iter().zip(y).all(|(&u, &v)| {
                    (u - v).abs().f() <= 1e3 * F::EPS * (1.0 + u.abs().f().max(v.abs().f()))
                })
        })
}

fn kernels_on_every_thread_count<F: Scalar>() {
    let be = Cpu;
    let (n, l, d) = (250, 128, 96);
    let z = sparse::<F>(1, n, l, 0.12);
    let dense = sparse::<F>(2, n, l, 1.0);
    let w = sparse::<F>(3, d, l, 1.0);
    let g = sparse::<F>(4, l, l, 1.0);
    let y = sparse::<F>(5, n, d, 1.0);
    let gemms = || {
        let mut out = Vec::new();
        for (a, ta, b, tb, shape) in [
            (&z, Trans::N, &g, Trans::N, (n, l)),
            (&dense, Trans::N, &g, Trans::N, (n, l)),
            (&z, Trans::N, &w, Trans::T, (n, d)),
            (&y, Trans::N, &w, Trans::N, (n, l)),
            (&y, Trans::T, &z, Trans::N, (d, l)),
        ] {
            let mut c = sparse::<F>(9, shape.0, shape.1, 1.0);
            be.gemm(F::c(0.5), a, ta, b, tb, F::c(-1.0), &mut c)
                .unwrap();
            out.push(c);
        }
        let mut c = dense.clone();
        be.gemm_rows(137, F::one(), &z, &g, Trans::N, F::zero(), &mut c)
            .unwrap();
        out.push(c);
        // dense, with parts whose row and column counts are not multiples of the kernel's tile
        // (split by rows, then by columns)
        for (m, k2, n2) in [(61, 40, 40), (21, 30, 77)] {
            let (a, b) = (sparse::<F>(6, m, k2, 1.0), sparse::<F>(7, k2, n2, 1.0));
            let mut c = sparse::<F>(8, m, n2, 1.0);
            be.gemm(F::c(0.7), &a, Trans::N, &b, Trans::N, F::c(-1.3), &mut c)
                .unwrap();
            out.push(c);
        }
        out
    };
    same_on_every_thread_count_by("gemm", gemms, |a, b| gemm_equal(a, b));

    let stats = || {
        let (mut mean, mut std) = (Array2::zeros((1, l)), Array2::zeros((1, l)));
        be.col_mean_std(&z, &mut mean, &mut std).unwrap();
        let mut grad = dense.clone();
        be.hinge_grad(&z, &mean, &std, F::c(3.0), F::c(0.5), z.nrows(), &mut grad)
            .unwrap();
        (mean, std, grad)
    };
    same_on_every_thread_count("col_mean_std and hinge_grad", stats);

    // the element-wise kernels of the one-hidden-layer decoder, against plain loops
    let signed = dense.mapv(|v| v - F::c(0.5));
    let bias = sparse::<F>(10, 1, l, 1.0);
    let elementwise = || {
        let mut h = signed.clone();
        be.add_row_bias(&bias, &mut h).unwrap();
        let pre = h.clone();
        be.relu(&mut h).unwrap();
        let mut dh = dense.clone();
        be.relu_mask(&pre, &mut dh).unwrap();
        (pre, h, dh)
    };
    let (pre, h, dh) = with_threads(2, elementwise).unwrap();
    for i in 0..n {
        for j in 0..l {
            assert_eq!(pre[(i, j)], signed[(i, j)] + bias[(0, j)]);
            let p = pre[(i, j)];
            assert_eq!(h[(i, j)], if p > F::zero() { p } else { F::zero() });
            assert_eq!(
                dh[(i, j)],
                if p > F::zero() {
                    dense[(i, j)]
                } else {
                    F::zero()
                }
            );
        }
    }
    same_on_every_thread_count("add_row_bias, relu and relu_mask", elementwise);

    // gather and scatter of the active rows, against a plain copy loop
    let flags = Array2::from_shape_fn((n, 1), |(i, _)| F::c(f64::from(u8::from(i % 3 == 1))));
    let active: Vec<usize> = (0..n).filter(|i| i % 3 != 1).collect();
    let moved = || {
        let mut packed = Array2::from_elem((n, l), F::c(9.0));
        let k = be.gather_active_rows(&flags, &dense, &mut packed).unwrap();
        let mut back = Array2::from_elem((n, l), F::c(9.0));
        be.scatter_active_rows(&flags, &packed, &mut back).unwrap();
        (k, packed, back)
    };
    let (k, packed, back) = with_threads(2, moved).unwrap();
    assert_eq!(k, active.len());
    for (p, &i) in active.iter().enumerate() {
        assert_eq!(packed.row(p), dense.row(i));
    }
    for i in 0..n {
        if i % 3 == 1 {
            assert!(back.row(i).iter().all(|&v| v == F::zero()));
        } else {
            assert_eq!(back.row(i), dense.row(i));
        }
    }
    same_on_every_thread_count("gather and scatter", moved);

    let update = || {
        let (mut x, mut zz, mut zo) = (dense.clone(), z.clone(), Array2::zeros((n, l)));
        // every other row flagged, so both kinds of row are in each part
        let mut flags = Array2::from_shape_fn((n, 1), |(i, _)| F::c((i % 2) as f64));
        let mut counts = Vec::new();
        for k in 0..3 {
            let step = FistaStep {
                eta: F::c(0.1),
                thr: F::c(0.01),
                nonneg: k != 1,
                coef: F::c(0.3),
                tol: F::c(0.5),
            };
            let rc = be
                .fista_update(&dense, step, &mut x, &mut zz, &mut zo, &mut flags)
                .unwrap();
            counts.push((rc.converged, rc.non_finite));
        }
        (x, zz, zo, flags, counts)
    };
    same_on_every_thread_count("fista_update", update);
}

#[test]
fn kernels_are_bit_identical_on_every_thread_count_f32() {
    kernels_on_every_thread_count::<f32>();
}

#[test]
fn kernels_are_bit_identical_on_every_thread_count_f64() {
    kernels_on_every_thread_count::<f64>();
}

#[test]
fn threads_outside_and_inside_a_pool() {
    assert_eq!(current_threads(), 1);
    assert!(with_threads(0, || ()).is_err());
    let nested = with_threads(2, || {
        let inner = with_threads(3, current_threads).unwrap();
        (inner, current_threads())
    })
    .unwrap();
    assert_eq!(nested, (3, 2));
    assert_eq!(current_threads(), 1);
    // a kernel called from another thread does not use this thread's pool
    with_threads(2, || {
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(current_threads(), 1));
        });
    })
    .unwrap();
}

#[test]
fn a_vdl_training_run_is_bit_identical_on_one_and_two_threads() {
    let (n, d, l) = (250, 64, 64);
    let run = || {
        let be = Cpu;
        let mut r = rng(3);
        let enc = Lista::init(&be, d, l, 3, &mut r).unwrap();
        let dec = Decoder::init(&be, DecoderKind::Linear, d, l, &mut r).unwrap();
        let config = StepConfig {
            fista: FistaParams {
                energy: EnergyParams {
                    lambda: 0.02,
                    beta: 10.0,
                    threshold: 0.5,
                    gamma: 5.0,
                },
                step: StepRule::Constant { eta: 0.5 },
                ..FistaParams::default()
            },
            decoder_adam: AdamParams::new(1e-3),
            encoder_adam: AdamParams::new(3e-4),
            decoder_schedule: LrSchedule::Constant,
            encoder_schedule: LrSchedule::Constant,
            column_norm: false,
            pixel_scale: 1.0,
        };
        let mut t = Trainer::new(&be, enc, dec, config).unwrap();
        for b in 0..3 {
            let y = linear_uniform::<f32>(&mut rng(100 + b), n, d, 1);
            t.step(&be, &y, 0).unwrap();
        }
        (
            t.decoder.to_host(&be).unwrap(),
            t.encoder.to_host(&be).unwrap(),
        )
    };
    let one = with_threads(1, run).unwrap();
    let two = with_threads(2, run).unwrap();
    if GEMM_BITWISE {
        assert_eq!(one, two);
    } else {
        let flat = |r: &(DecoderParams<Array2<f32>>, ListaParams<Array2<f32>>)| {
            let mut v: Vec<Array2<f32>> = r.0.named().into_iter().map(|p| p.1.clone()).collect();
            v.extend(r.1.named().into_iter().map(|p| p.1.clone()));
            v
        };
        assert!(gemm_equal(&flat(&one), &flat(&two)));
    }
}

/// `gemm_rows_packed` against the f64 reference: both layouts of `b`, `beta = 0` (a NaN in `c`
/// is ignored) and not, the leading rows only, dense and mostly-zero `a` (the sparse path), and
/// shapes with ragged row tiles, ragged panels and several panel groups.
fn packed_gemm_equals_the_reference<F: Scalar>() {
    let be = Cpu;
    let tol = if F::NAME == "f32" { 1e-4 } else { 1e-12 };
    for (seed, rows, k, n, density) in [
        (1, 1, 1, 1, 1.0),
        (6, 3, 0, 9, 1.0),
        (2, 7, 13, 5, 1.0),
        (3, 13, 1024, 100, 1.0),
        (4, 20, 40, 33, 0.05),
        (5, 6, 64, 16, 1.0),
    ] {
        let a = sparse::<f64>(seed, rows + 2, k, density);
        let b = sparse::<f64>(seed + 10, k, n, 1.0);
        let bt = b.t().as_standard_layout().to_owned();
        let mut c0 = sparse::<f64>(seed + 20, rows + 2, n, 1.0);
        for (alpha, beta) in [(1.0, 0.0), (0.7, -1.3)] {
            c0[(0, 0)] = if beta == 0.0 { f64::NAN } else { 0.5 };
            let mut want = reference(alpha, &a, Trans::N, &b, Trans::N, beta, &c0);
            want.slice_mut(ndarray::s![rows.., ..])
                .assign(&c0.slice(ndarray::s![rows.., ..]));
            for (bm, tb) in [(&b, Trans::N), (&bt, Trans::T)] {
                let cast = |m: &Array2<f64>| m.mapv(F::c);
                let mut packed = Default::default();
                be.pack_rhs(&cast(bm), tb, &mut packed).unwrap();
                assert_eq!(be.packed_shape(&packed), (k, n));
                let mut c = cast(&c0);
                be.gemm_rows_packed(rows, F::c(alpha), &cast(&a), &packed, F::c(beta), &mut c)
                    .unwrap();
                for ((i, j), &v) in c.indexed_iter() {
                    let w = want[(i, j)];
                    assert!(
                        (v.f() - w).abs() <= tol * (1.0 + w.abs())
                            || (i, j) == (0, 0) && w.is_nan(),
                        "{rows}x{k}x{n} {tb:?} alpha {alpha} beta {beta}: ({i}, {j}) {v} != {w}"
                    );
                }
            }
        }
    }
    // shapes are checked
    let mut packed = Default::default();
    let b = sparse::<F>(1, 8, 9, 1.0);
    be.pack_rhs(&b, Trans::N, &mut packed).unwrap();
    let mut c = Array2::<F>::zeros((4, 9));
    let bad_a = Array2::<F>::zeros((4, 7));
    assert!(
        be.gemm_rows_packed(4, F::one(), &bad_a, &packed, F::zero(), &mut c)
            .is_err()
    );
    let a = Array2::<F>::zeros((4, 8));
    assert!(
        be.gemm_rows_packed(5, F::one(), &a, &packed, F::zero(), &mut c)
            .is_err()
    );
    let mut bad_c = Array2::<F>::zeros((4, 10));
    assert!(
        be.gemm_rows_packed(4, F::one(), &a, &packed, F::zero(), &mut bad_c)
            .is_err()
    );
}

#[test]
fn packed_gemm_equals_the_reference_f32() {
    packed_gemm_equals_the_reference::<f32>();
}

#[test]
fn packed_gemm_equals_the_reference_f64() {
    packed_gemm_equals_the_reference::<f64>();
}

/// The packed product (and the packing) give the same bits on 1, 2 and 3 threads, for the
/// hidden-layer Gram shape of a batch and for shapes whose panels do not split evenly.
fn packed_gemm_on_every_thread_count<F: Scalar>() {
    let be = Cpu;
    let cases = [
        (250, 256, 256, 1.0),
        (37, 200, 81, 1.0),
        (250, 128, 256, 0.1),
    ];
    let run = || {
        let mut out = Vec::new();
        for (i, &(rows, k, n, density)) in cases.iter().enumerate() {
            let seed = 10 * i as u64;
            let a = sparse::<F>(seed + 1, rows, k, density);
            let b = sparse::<F>(seed + 2, n, k, 1.0);
            let mut packed = Default::default();
            be.pack_rhs(&b, Trans::T, &mut packed).unwrap();
            let mut c = sparse::<F>(seed + 3, rows, n, 1.0);
            be.gemm_rows_packed(rows - 3, F::c(0.5), &a, &packed, F::c(-1.0), &mut c)
                .unwrap();
            out.push(c);
        }
        out
    };
    same_on_every_thread_count("gemm_rows_packed", run);
}

#[test]
fn packed_gemm_on_every_thread_count_f32() {
    packed_gemm_on_every_thread_count::<f32>();
}

#[test]
fn packed_gemm_on_every_thread_count_f64() {
    packed_gemm_on_every_thread_count::<f64>();
}

/// `gemm_rows_packed_active_base` (the CPU backend reads the active rows of `base` in place)
/// equals its definition, a gather into `c` and `gemm_rows_packed`, to the bit, for several flag
/// patterns, dense and mostly-zero `a`, on 1, 2 and 3 threads; a wrong row count is an error.
fn packed_active_base_equals_gather_then_product<F: Scalar>() {
    let be = Cpu;
    let (n, k, m) = (40, 64, 70);
    let b = sparse::<F>(1, k, m, 1.0);
    let base = sparse::<F>(2, n, m, 1.0);
    for (density, flagged) in [
        (1.0, vec![]),
        (1.0, vec![0, 5, 6, 7, 39]),
        (0.1, vec![1, 2, 3]),
        (1.0, (0..n).collect::<Vec<_>>()),
    ] {
        let mut flags = Array2::<F>::zeros((n, 1));
        for &i in &flagged {
            flags[(i, 0)] = F::one();
        }
        let rows = n - flagged.len();
        let a = sparse::<F>(3, n, k, density);
        let run = |fused: bool| {
            let mut packed = Default::default();
            be.pack_rhs(&b, Trans::N, &mut packed).unwrap();
            let mut c = Array2::from_elem((n, m), F::c(7.0));
            if fused {
                be.gemm_rows_packed_active_base(
                    &flags,
                    rows,
                    F::c(0.5),
                    &a,
                    &packed,
                    F::c(-0.25),
                    &base,
                    &mut c,
                )
                .unwrap();
            } else {
                assert_eq!(be.gather_active_rows(&flags, &base, &mut c).unwrap(), rows);
                be.gemm_rows_packed(rows, F::c(0.5), &a, &packed, F::c(-0.25), &mut c)
                    .unwrap();
            }
            c.slice(ndarray::s![..rows, ..]).to_owned()
        };
        let want = run(false);
        same_on_every_thread_count("gemm_rows_packed_active_base", || {
            let got = run(true);
            assert_eq!(got, want, "{} flagged, density {density}", flagged.len());
            got
        });
    }
    let mut packed = Default::default();
    be.pack_rhs(&b, Trans::N, &mut packed).unwrap();
    let mut c = Array2::<F>::zeros((n, m));
    let (flags, a) = (Array2::<F>::zeros((n, 1)), sparse::<F>(3, n, k, 1.0));
    assert!(
        be.gemm_rows_packed_active_base(
            &flags,
            n - 1,
            F::one(),
            &a,
            &packed,
            F::one(),
            &base,
            &mut c
        )
        .is_err()
    );
}

#[test]
fn packed_active_base_equals_gather_then_product_f32_and_f64() {
    packed_active_base_equals_gather_then_product::<f32>();
    packed_active_base_equals_gather_then_product::<f64>();
}

/// Whether this CPU runs the packed kernel (AVX2 and FMA); otherwise the packed products go
/// through the ordinary GEMM.
fn packed_kernel_runs() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `packed_gram` (upper triangle from the panels, then mirrored) against the f64 reference, for
/// both layouts of the packed operand and shapes with ragged tiles, ragged panels, several panel
/// groups, `k = 0` and one column. It is symmetric to the bit, equal to the bit to the packed
/// product `op(b)^T op(b)` it replaces, the same on 1, 2 and 3 threads, and a wrong shape of
/// `g` is an error.
fn packed_gram_equals_the_product<F: Scalar>() {
    let be = Cpu;
    let tol = if F::NAME == "f32" { 1e-4 } else { 1e-12 };
    let cases = [
        (1, 1, 1),
        (2, 0, 7),
        (3, 5, 1),
        (4, 13, 37),
        (5, 784, 100),
        (6, 300, 270),
    ];
    for (seed, k, n) in cases {
        let b = sparse::<f64>(seed, k, n, 1.0);
        let bt = b.t().as_standard_layout().to_owned();
        let want = reference(1.0, &b, Trans::T, &b, Trans::N, 0.0, &Array2::zeros((n, n)));
        for (bm, tb) in [(&b, Trans::N), (&bt, Trans::T)] {
            let run = || {
                let mut packed = Default::default();
                be.pack_rhs(&bm.mapv(F::c), tb, &mut packed).unwrap();
                let mut g = Array2::from_elem((n, n), F::c(f64::NAN));
                be.packed_gram(&packed, &mut g).unwrap();
                // the product it replaces: op(b)^T as a standard-layout left operand
                let a = b.t().mapv(F::c).as_standard_layout().to_owned();
                let mut prod = Array2::from_elem((n, n), F::c(f64::NAN));
                be.gemm_rows_packed(n, F::one(), &a, &packed, F::zero(), &mut prod)
                    .unwrap();
                (g, prod)
            };
            let (g, prod) = with_threads(2, run).unwrap();
            for ((i, j), &v) in g.indexed_iter() {
                let w = want[(i, j)];
                assert!(
                    (v.f() - w).abs() <= tol * (1.0 + w.abs()),
                    "{k}x{n} {tb:?}: ({i}, {j}) {v} != {w}"
                );
                assert!(v == g[(j, i)], "{k}x{n}: not symmetric");
            }
            if packed_kernel_runs() {
                assert!(gemm_equal(&[g], &[prod]), "{k}x{n} {tb:?}: gram != product");
            }
            same_on_every_thread_count_by(
                &format!("packed_gram {k}x{n}"),
                || run().0,
                |a, b| gemm_equal(std::slice::from_ref(a), std::slice::from_ref(b)),
            );
        }
    }
    let mut packed = Default::default();
    be.pack_rhs(&sparse::<F>(1, 8, 9, 1.0), Trans::N, &mut packed)
        .unwrap();
    for shape in [(9, 8), (8, 8), (10, 10)] {
        let mut g = Array2::<F>::zeros(shape);
        assert!(be.packed_gram(&packed, &mut g).is_err(), "{shape:?}");
    }
}

#[test]
fn packed_gram_equals_the_product_f32_and_f64() {
    packed_gram_equals_the_product::<f32>();
    packed_gram_equals_the_product::<f64>();
}
