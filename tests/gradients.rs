//! Every analytic gradient against central finite differences, in f64, with proptest.
//!
//! Tolerance: `|analytic - numeric| <= 1e-6 + 1e-5 |numeric|` with step `h = 1e-6`; the
//! truncation error of a central difference is O(h^2 f''') and the rounding error O(eps f / h),
//! both far below that for the O(1) values used here. Points within `h` of a ReLU kink or of the
//! hinge's threshold would be non-differentiable; with continuous random inputs they have
//! probability ~1e-5 per coordinate, and the generators keep values away from exact zeros.

use ndarray::Array2;
use proptest::prelude::*;
use varsparse::backend::Cpu;
use varsparse::model::decoder::{Decoder, DecoderKind};
use varsparse::model::encoder::Lista;
use varsparse::model::energy;
use varsparse::model::{DecoderParams, ListaParams};

const H: f64 = 1e-6;

fn close(analytic: f64, numeric: f64) -> bool {
    (analytic - numeric).abs() <= 1e-6 + 1e-5 * numeric.abs()
}

/// Central differences of `f` with respect to every element of `x`.
fn numeric_grad(x: &Array2<f64>, mut f: impl FnMut(&Array2<f64>) -> f64) -> Array2<f64> {
    let mut g = Array2::zeros(x.dim());
    let mut xp = x.clone();
    for idx in ndarray::indices(x.dim()) {
        let x0 = xp[idx];
        xp[idx] = x0 + H;
        let fp = f(&xp);
        xp[idx] = x0 - H;
        let fm = f(&xp);
        xp[idx] = x0;
        g[idx] = (fp - fm) / (2.0 * H);
    }
    g
}

fn assert_grad(
    what: &str,
    analytic: &Array2<f64>,
    numeric: &Array2<f64>,
) -> Result<(), TestCaseError> {
    for ((idx, &a), &n) in analytic.indexed_iter().zip(numeric.iter()) {
        prop_assert!(
            close(a, n),
            "{what}{idx:?}: analytic {a:e} vs numeric {n:e}"
        );
    }
    Ok(())
}

/// A `(rows, cols)` matrix with entries in `[-scale, scale]`.
fn mat(rows: usize, cols: usize, scale: f64) -> impl Strategy<Value = Array2<f64>> {
    proptest::collection::vec(-scale..scale, rows * cols)
        .prop_map(move |v| Array2::from_shape_vec((rows, cols), v).expect("shape"))
}

/// Codes with a clear margin from zero (ReLU kinks) in both signs.
fn codes(rows: usize, cols: usize) -> impl Strategy<Value = Array2<f64>> {
    proptest::collection::vec((0.05f64..1.0, any::<bool>()), rows * cols).prop_map(move |v| {
        Array2::from_shape_vec(
            (rows, cols),
            v.into_iter().map(|(a, s)| if s { a } else { -a }).collect(),
        )
        .expect("shape")
    })
}

const N: usize = 5;
const D: usize = 6;
const L: usize = 4;
const M: usize = 7;

fn mlp(be: &Cpu, w1: &Array2<f64>, b1: &Array2<f64>, w2: &Array2<f64>) -> Decoder<f64, Cpu> {
    Decoder::one_hidden(be, w1, b1, w2).expect("decoder")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn recon_linear_wrt_codes(w in mat(D, L, 1.0), y in mat(N, D, 1.0), z in codes(N, L)) {
        let be = Cpu;
        let dec = Decoder::linear(&be, &w).expect("decoder");
        let mut s = dec.scratch(&be, N).expect("scratch");
        let mut g = Array2::zeros((N, L));
        dec.recon(&be, &y, &z, &mut s, Some(&mut g), true).expect("recon");
        let num = numeric_grad(&z, |z| dec.recon(&be, &y, z, &mut s, None, true).expect("recon"));
        assert_grad("dE/dz", &g, &num)?;
    }

    #[test]
    fn recon_one_hidden_wrt_codes(
        w1 in mat(M, L, 1.0), b1 in mat(1, M, 0.5), w2 in mat(D, M, 1.0),
        y in mat(N, D, 1.0), z in codes(N, L),
    ) {
        let be = Cpu;
        let dec = mlp(&be, &w1, &b1, &w2);
        let mut s = dec.scratch(&be, N).expect("scratch");
        let mut g = Array2::zeros((N, L));
        dec.recon(&be, &y, &z, &mut s, Some(&mut g), true).expect("recon");
        let num = numeric_grad(&z, |z| dec.recon(&be, &y, z, &mut s, None, true).expect("recon"));
        assert_grad("dE/dz", &g, &num)?;
    }

    /// Columns scaled so that some stds fall below T and some above; one column constant.
    #[test]
    fn hinge_wrt_codes(z in codes(N, L), scales in proptest::collection::vec(0.05f64..2.0, L),
                       beta in 0.1f64..10.0, zero_col in 0..L) {
        let be = Cpu;
        let mut z = z;
        for (j, s) in scales.iter().enumerate() {
            z.column_mut(j).mapv_inplace(|v| v * s);
        }
        z.column_mut(zero_col).fill(0.3);
        let t = 0.5;
        let mut mean = Array2::zeros((1, L));
        let mut std = Array2::zeros((1, L));
        let mut g = Array2::zeros((N, L));
        energy::hinge(&be, &z, beta, t, &mut mean, &mut std, Some(&mut g), true).expect("hinge");
        // exactly zero on the constant column, and on columns whose std is >= T
        prop_assert!(g.column(zero_col).iter().all(|&v| v == 0.0));
        for j in 0..L {
            if std[(0, j)] >= t {
                prop_assert!(g.column(j).iter().all(|&v| v == 0.0));
            }
        }
        let num = numeric_grad(&z, |z| {
            let mut mean = Array2::zeros((1, L));
            let mut std = Array2::zeros((1, L));
            energy::hinge(&be, z, beta, t, &mut mean, &mut std, None, true).expect("hinge")
        });
        assert_grad("dhinge/dz", &g, &num)?;
    }

    #[test]
    fn proximity_wrt_codes(z in codes(N, L), e in mat(N, L, 1.0), gamma in 0.0f64..100.0) {
        let be = Cpu;
        let mut g = Array2::zeros((N, L));
        energy::proximity(&be, &z, Some(&e), gamma, Some(&mut g), true).expect("prox");
        let num = numeric_grad(&z, |z| energy::proximity(&be, z, Some(&e), gamma, None, true).expect("prox"));
        assert_grad("dprox/dz", &g, &num)?;
    }

    #[test]
    fn decoder_loss_wrt_w(w in mat(D, L, 1.0), y in mat(N, D, 1.0), z in codes(N, L)) {
        let be = Cpu;
        let dec = Decoder::linear(&be, &w).expect("decoder");
        let mut s = dec.scratch(&be, N).expect("scratch");
        let mut grads = dec.zeros_like_params(&be).expect("grads");
        dec.loss_grads(&be, &y, &z, &mut s, &mut grads).expect("loss");
        let num = numeric_grad(&w, |w| {
            let dec = Decoder::linear(&be, w).expect("decoder");
            let mut s = dec.scratch(&be, N).expect("scratch");
            let mut g = dec.zeros_like_params(&be).expect("grads");
            dec.loss_grads(&be, &y, &z, &mut s, &mut g).expect("loss")
        });
        let DecoderParams::Linear { w: gw } = &grads else { unreachable!() };
        assert_grad("dloss/dW", gw, &num)?;
    }

    #[test]
    fn decoder_loss_wrt_w1_b1_w2(
        w1 in mat(M, L, 1.0), b1 in mat(1, M, 0.5), w2 in mat(D, M, 1.0),
        y in mat(N, D, 1.0), z in codes(N, L),
    ) {
        let be = Cpu;
        let dec = mlp(&be, &w1, &b1, &w2);
        let mut s = dec.scratch(&be, N).expect("scratch");
        let mut grads = dec.zeros_like_params(&be).expect("grads");
        dec.loss_grads(&be, &y, &z, &mut s, &mut grads).expect("loss");
        let loss = |w1: &Array2<f64>, b1: &Array2<f64>, w2: &Array2<f64>| {
            let dec = mlp(&be, w1, b1, w2);
            let mut s = dec.scratch(&be, N).expect("scratch");
            let mut g = dec.zeros_like_params(&be).expect("grads");
            dec.loss_grads(&be, &y, &z, &mut s, &mut g).expect("loss")
        };
        let DecoderParams::OneHidden { w1: g1, b1: gb, w2: g2 } = &grads else { unreachable!() };
        assert_grad("dloss/dW1", g1, &numeric_grad(&w1, |p| loss(p, &b1, &w2)))?;
        assert_grad("dloss/db1", gb, &numeric_grad(&b1, |p| loss(&w1, p, &w2)))?;
        assert_grad("dloss/dW2", g2, &numeric_grad(&w2, |p| loss(&w1, &b1, p)))?;
    }

    #[test]
    fn encoder_loss_wrt_u_b_s(
        u in mat(L, D, 1.0), b in mat(1, L, 0.5), s in mat(L, L, 0.5),
        y in mat(N, D, 1.0), target in mat(N, L, 1.0), n_iter in prop::sample::select(vec![0usize, 1, 3]),
    ) {
        let be = Cpu;
        let loss = |u: &Array2<f64>, b: &Array2<f64>, s: &Array2<f64>| {
            let enc = Lista::from_params(&be, &ListaParams { u: u.clone(), b: b.clone(), s: s.clone() }, n_iter).expect("encoder");
            let mut tape = enc.tape(&be, N).expect("tape");
            let mut g = enc.zeros_like_params(&be).expect("grads");
            enc.forward(&be, &y, &mut tape).expect("forward");
            enc.loss_grads(&be, &y, &target, &mut tape, &mut g).expect("loss")
        };
        let enc = Lista::from_params(&be, &ListaParams { u: u.clone(), b: b.clone(), s: s.clone() }, n_iter).expect("encoder");
        let mut tape = enc.tape(&be, N).expect("tape");
        let mut grads = enc.zeros_like_params(&be).expect("grads");
        enc.forward(&be, &y, &mut tape).expect("forward");
        enc.loss_grads(&be, &y, &target, &mut tape, &mut grads).expect("loss");
        assert_grad("dloss/dU", &grads.u, &numeric_grad(&u, |p| loss(p, &b, &s)))?;
        assert_grad("dloss/db", &grads.b, &numeric_grad(&b, |p| loss(&u, p, &s)))?;
        assert_grad("dloss/dS", &grads.s, &numeric_grad(&s, |p| loss(&u, &b, p)))?;
    }
}

/// The hinge's gradient is exactly zero when every latent's std is 0 (e.g. all codes zero).
#[test]
fn hinge_gradient_zero_for_all_zero_codes() {
    let be = Cpu;
    let z = Array2::<f64>::zeros((4, 3));
    let mut mean = Array2::zeros((1, 3));
    let mut std = Array2::zeros((1, 3));
    let mut g = Array2::zeros((4, 3));
    let v = energy::hinge(&be, &z, 10.0, 0.5, &mut mean, &mut std, Some(&mut g), true).unwrap();
    assert_eq!(v, 10.0 * 3.0 * 0.25);
    assert!(g.iter().all(|&x| x == 0.0));
}

/// Kind and shape bookkeeping of the one-hidden-layer decoder.
#[test]
fn one_hidden_kind() {
    let be = Cpu;
    let dec = mlp(
        &be,
        &Array2::zeros((M, L)),
        &Array2::zeros((1, M)),
        &Array2::zeros((D, M)),
    );
    assert_eq!(dec.kind(), DecoderKind::OneHidden { hidden: M });
    assert_eq!(dec.param_names(), ["W1", "b1", "W2"]);
}
