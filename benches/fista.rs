//! FISTA, LISTA, training-step and GEMM throughput on MNIST-shaped batches (n 250, d 784,
//! l 128), on one and on two threads (`backend::threads::with_threads`).
//!
//! Inputs are synthetic (sparse non-negative codes through a random dictionary, plus noise) so
//! that the bench needs no data files; FISTA runs a fixed 50 iterations (`tol = 0`) so the figure
//! is the per-iteration cost, not a convergence speed. The FISTA benches use VDL's energy (hinge
//! and proximity term), except `linear_gram_lasso`, the non-negative lasso, whose iterations
//! are the CPU backend's fused Gram step. Throughput is in samples/s. The `gemm`
//! group compares the product of the codes with the Gram matrix for dense codes (matrixmultiply)
//! and for codes with 12% non-zeros (the sparse path), at the same shape. The one-hidden-layer
//! decoder runs on the direct path and on its hidden-layer Gram path (`G2 = W2^T W2` set up once
//! per solve, included in the time). The `hidden_gram_product_m1024` group times that path's
//! `(rows, 1024) x (1024, 1024)` product through matrixmultiply and through the packed kernel.
//!
//!     cargo bench --bench fista

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array2;
use std::hint::black_box;
use varsparse::backend::cpu::threads::with_threads;
use varsparse::backend::{Backend, Cpu, Trans};
use varsparse::model::decoder::{Decoder, DecoderKind};
use varsparse::model::encoder::Lista;
use varsparse::model::energy::EnergyParams;
use varsparse::rng::{linear_uniform, rng};
use varsparse::solve::fista::{self, FistaParams, FistaWorkspace, GradientPath, StepRule};
use varsparse::train::Trainer;
use varsparse::train::{ModelParams, Preset};

const N: usize = 250;
const D: usize = 784;
const L: usize = 128;
const M: usize = 1024;
const ITERS: usize = 50;
const THREADS: [usize; 2] = [1, 2];

fn inputs() -> Array2<f32> {
    let w = linear_uniform::<f32>(&mut rng(1), D, L, L);
    let z = linear_uniform::<f32>(&mut rng(2), N, L, 1).mapv(|v| (v - 0.8).max(0.0) * 5.0);
    z.dot(&w.t()) + linear_uniform::<f32>(&mut rng(3), N, D, 1) * 0.1
}

fn vdl_energy() -> EnergyParams {
    EnergyParams {
        lambda: 0.02,
        beta: 10.0,
        threshold: 0.5,
        gamma: 5.0,
    }
}

fn bench_fista(c: &mut Criterion) {
    let be = Cpu;
    let y = inputs();
    let e = Array2::<f32>::from_elem((N, L), 0.05);
    let lin = Decoder::<f32, Cpu>::init(&be, DecoderKind::Linear, D, L, &mut rng(4)).unwrap();
    let mlp =
        Decoder::<f32, Cpu>::init(&be, DecoderKind::OneHidden { hidden: M }, D, L, &mut rng(5))
            .unwrap();
    let mut g = c.benchmark_group("fista_n250_d784_l128_50it");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(20);
    // the non-negative lasso (no hinge, no proximity term): the fused Gram step
    let lasso = EnergyParams {
        beta: 0.0,
        gamma: 0.0,
        ..vdl_energy()
    };
    for (name, dec, path, energy) in [
        ("linear_gram", &lin, GradientPath::Gram, vdl_energy()),
        ("linear_gram_lasso", &lin, GradientPath::Gram, lasso),
        ("linear_direct", &lin, GradientPath::Direct, vdl_energy()),
        ("one_hidden_m1024", &mlp, GradientPath::Direct, vdl_energy()),
        (
            "one_hidden_m1024_gram",
            &mlp,
            GradientPath::Gram,
            vdl_energy(),
        ),
    ] {
        let params = FistaParams {
            energy,
            step: StepRule::Constant { eta: 0.5 },
            max_iter: ITERS,
            tol: 0.0,
            path,
            ..FistaParams::default()
        };
        let mut ws = FistaWorkspace::new(&be, dec, N).unwrap();
        for threads in THREADS {
            with_threads(threads, || {
                g.bench_function(format!("{name}/threads_{threads}"), |b| {
                    b.iter(|| {
                        fista::solve(&be, dec, black_box(&y), Some(&e), &params, &mut ws).unwrap()
                    })
                });
            })
            .unwrap();
        }
    }
    g.finish();
}

fn bench_lista(c: &mut Criterion) {
    let be = Cpu;
    let y = inputs();
    let target = Array2::<f32>::from_elem((N, L), 0.05);
    let enc = Lista::<f32, Cpu>::init(&be, D, L, 3, &mut rng(6)).unwrap();
    let mut tape = enc.tape(&be, N).unwrap();
    let mut grads = enc.zeros_like_params(&be).unwrap();
    let mut g = c.benchmark_group("lista_n250_d784_l128_L3");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("forward_backward", |b| {
        b.iter(|| {
            enc.forward(&be, black_box(&y), &mut tape).unwrap();
            enc.loss_grads(&be, &y, &target, &mut tape, &mut grads)
                .unwrap()
        })
    });
    g.finish();
}

fn bench_train_step(c: &mut Criterion) {
    let be = Cpu;
    let y = inputs();
    let mut g = c.benchmark_group("train_step_n250_d784_l128");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    // Each MNIST preset's own configuration (Table 3): FISTA to its tolerance, Adam, the
    // decoder's column normalisation. The model trains on as it is timed, so the FISTA
    // iteration counts drift over a run; compare runs of the same length.
    for preset in [
        Preset::MnistSdl,
        Preset::MnistVdl,
        Preset::MnistSdlNl,
        Preset::MnistVdlNl,
    ] {
        let p = ModelParams::preset(preset);
        let cfg = p.step_config(0.3081);
        let mut r = rng(7);
        let enc = Lista::init(&be, D, p.code_dim, p.encoder_iters, &mut r).unwrap();
        let dec = Decoder::init(&be, p.kind, D, p.code_dim, &mut r).unwrap();
        let mut t: Trainer<f32, Cpu> = Trainer::new(&be, enc, dec, cfg).unwrap();
        for threads in THREADS {
            with_threads(threads, || {
                g.bench_function(format!("{}/threads_{threads}", preset.name()), |b| {
                    b.iter(|| t.step(&be, black_box(&y), 0).unwrap())
                });
            })
            .unwrap();
        }
    }
    g.finish();
}

fn bench_gemm(c: &mut Criterion) {
    let be = Cpu;
    let gram = linear_uniform::<f32>(&mut rng(8), L, L, 1);
    let dense = linear_uniform::<f32>(&mut rng(9), N, L, 1);
    // 12% non-zeros, as trained MNIST codes
    let sparse = dense.mapv(|v| if v > 0.76 { v } else { 0.0 });
    let mut out = Array2::<f32>::zeros((N, L));
    let mut g = c.benchmark_group("gemm_codes_times_gram_n250_l128");
    g.throughput(Throughput::Elements(N as u64));
    for (name, x) in [("dense_codes", &dense), ("sparse_codes_12pct", &sparse)] {
        for threads in THREADS {
            with_threads(threads, || {
                g.bench_function(format!("{name}/threads_{threads}"), |b| {
                    b.iter(|| {
                        be.gemm(1.0, black_box(x), Trans::N, &gram, Trans::N, 0.0, &mut out)
                            .unwrap()
                    })
                });
            })
            .unwrap();
        }
    }
    g.finish();
}

/// The hidden-layer Gram product `H[..rows] G2` `(rows, 1024) x (1024, 1024)` of the
/// one-hidden-layer decoder's FISTA, as `gemm_rows` (matrixmultiply, which packs `G2` on every
/// call) and as `gemm_rows_packed` (`G2` packed once, outside the timing), for a few active rows
/// (the end of a solve) and for most of a batch.
fn bench_packed(c: &mut Criterion) {
    let be = Cpu;
    let h = linear_uniform::<f32>(&mut rng(10), N, M, 1).mapv(|v| v.max(0.0));
    let w2 = linear_uniform::<f32>(&mut rng(11), D, M, M);
    let g2 = w2.t().dot(&w2);
    let mut packed = Default::default();
    be.pack_rhs(&g2, Trans::N, &mut packed).unwrap();
    let mut out = Array2::<f32>::zeros((N, M));
    let mut g = c.benchmark_group("hidden_gram_product_m1024");
    for rows in [4, 25, 237] {
        g.throughput(Throughput::Elements(rows as u64));
        for threads in THREADS {
            with_threads(threads, || {
                g.bench_function(format!("gemm_rows/rows_{rows}/threads_{threads}"), |b| {
                    b.iter(|| {
                        be.gemm_rows(rows, 1.0, black_box(&h), &g2, Trans::N, -1.0, &mut out)
                            .unwrap()
                    })
                });
                g.bench_function(format!("packed/rows_{rows}/threads_{threads}"), |b| {
                    b.iter(|| {
                        be.gemm_rows_packed(rows, 1.0, black_box(&h), &packed, -1.0, &mut out)
                            .unwrap()
                    })
                });
            })
            .unwrap();
        }
    }
    g.finish();
}

/// The Gram paths' setup `G = W^T W` for the hidden layer's `W2` `(784, 1024)` and the linear
/// decoder's `W` `(784, 128)`, as `gemm` (matrixmultiply, the whole product) and as `pack_rhs`
/// of `W` then `packed_gram` (the upper triangle from the panels, mirrored), the packing inside
/// the timing; and the packing alone.
fn bench_gram_setup(c: &mut Criterion) {
    let be = Cpu;
    let mut g = c.benchmark_group("gram_setup");
    g.throughput(Throughput::Elements(1));
    for (name, cols) in [("m1024", M), ("l128", L)] {
        let w = linear_uniform::<f32>(&mut rng(11), D, cols, cols);
        let mut gram = Array2::<f32>::zeros((cols, cols));
        let mut packed = Default::default();
        for threads in THREADS {
            with_threads(threads, || {
                g.bench_function(format!("{name}/gemm/threads_{threads}"), |b| {
                    b.iter(|| {
                        be.gemm(1.0, black_box(&w), Trans::T, &w, Trans::N, 0.0, &mut gram)
                            .unwrap()
                    })
                });
                g.bench_function(format!("{name}/pack/threads_{threads}"), |b| {
                    b.iter(|| be.pack_rhs(black_box(&w), Trans::N, &mut packed).unwrap())
                });
                g.bench_function(
                    format!("{name}/pack_and_packed_gram/threads_{threads}"),
                    |b| {
                        b.iter(|| {
                            be.pack_rhs(black_box(&w), Trans::N, &mut packed).unwrap();
                            be.packed_gram(&packed, &mut gram).unwrap()
                        })
                    },
                );
            })
            .unwrap();
        }
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_fista,
    bench_lista,
    bench_train_step,
    bench_gemm,
    bench_packed,
    bench_gram_setup
);
criterion_main!(benches);
