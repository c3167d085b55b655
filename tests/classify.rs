//! Low-data linear classification (docs/CONVENTIONS.md §8): the classifier, the joint LISTA baseline, the
//! protocol and `varsparse classify`.

use std::cell::Cell;
use std::path::Path;

use assert_cmd::Command;
use ndarray::{Array2, Axis};
use rand_chacha::ChaCha8Rng;
use varsparse::data::DataSpec;
use varsparse::experiments::classify::{
    ClassifyParams, LabelledSplit, LinearClassifier, ListaClassifier, ListaDims, Method,
    ProtocolData, ProtocolSpec, accuracy_topk, first_per_class, run_protocol, train_linear,
    train_lista_linear,
};
use varsparse::model::{ListaParams, ParamSet};
use varsparse::rng::{linear_uniform, rng, unit_f64};
use varsparse::train::FitOptions;
use varsparse::{Cpu, Error, Lista, ModelParams, Preset};

/// A standard normal draw (Box–Muller).
fn normal(r: &mut ChaCha8Rng) -> f64 {
    let u = 1.0 - unit_f64(r);
    let v = unit_f64(r);
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// `per_class` points of each of `k` Gaussian blobs (unit variance) in `d` dimensions whose
/// centres are `spread` times random unit-variance vectors; the centres come from `seed`, the
/// points from `seed + sample_seed`. Rows cycle through the classes.
fn blobs(
    k: usize,
    per_class: usize,
    d: usize,
    spread: f64,
    sample_seed: u64,
) -> (Array2<f32>, Vec<usize>) {
    let mut r = rng(1000);
    let centres: Vec<Vec<f64>> = (0..k)
        .map(|_| (0..d).map(|_| spread * normal(&mut r)).collect())
        .collect();
    let mut r = rng(sample_seed);
    let n = k * per_class;
    let mut x = Array2::zeros((n, d));
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % k;
        for j in 0..d {
            x[(i, j)] = (centres[c][j] + normal(&mut r)) as f32;
        }
        y.push(c);
    }
    (x, y)
}

fn fast() -> ClassifyParams {
    ClassifyParams {
        lr: 1e-2,
        ..ClassifyParams::default()
    }
}

#[test]
fn a_linear_classifier_separates_gaussian_blobs() {
    let (x, y) = blobs(3, 12, 20, 1.5, 1);
    let (vx, vy) = blobs(3, 10, 20, 1.5, 2);
    let (tx, ty) = blobs(3, 40, 20, 1.5, 3);
    let fit = train_linear(x.view(), &y, vx.view(), &vy, 3, &fast()).unwrap();
    let m = &fit.model;
    assert_eq!(m.weight().dim(), (3, 20));
    assert_eq!(m.bias().dim(), (1, 3));
    assert_eq!(m.accuracy_topk(x.view(), &y, 1).unwrap(), 1.0);
    assert_eq!(m.accuracy_topk(tx.view(), &ty, 1).unwrap(), 1.0);
    assert_eq!(m.predict(tx.view()).unwrap(), ty);
    assert_eq!(m.accuracy_topk(tx.view(), &ty, 3).unwrap(), 1.0);
    let h = &fit.history;
    assert_eq!(h.val_loss.len(), 100);
    assert_eq!(h.train_loss.len(), 100);
    assert!(h.val_loss[99] < 0.5 * h.val_loss[0], "{:?}", h.val_loss);
}

#[test]
fn the_protocol_defaults_also_separate_blobs() {
    // lr 1e-3, batch 250, 100 epochs: 100 Adam steps on a set smaller than a batch
    let (x, y) = blobs(3, 12, 20, 3.0, 1);
    let (vx, vy) = blobs(3, 10, 20, 3.0, 2);
    let (tx, ty) = blobs(3, 40, 20, 3.0, 3);
    let fit = train_linear(x.view(), &y, vx.view(), &vy, 3, &ClassifyParams::default()).unwrap();
    assert_eq!(fit.model.accuracy_topk(x.view(), &y, 1).unwrap(), 1.0);
    assert_eq!(fit.model.accuracy_topk(tx.view(), &ty, 1).unwrap(), 1.0);
}

#[test]
fn a_jointly_trained_lista_classifier_separates_blobs() {
    let (x, y) = blobs(3, 12, 20, 1.5, 1);
    let (vx, vy) = blobs(3, 10, 20, 1.5, 2);
    let (tx, ty) = blobs(3, 40, 20, 1.5, 3);
    let dims = ListaDims {
        code_dim: 16,
        n_iter: 3,
    };
    let fit = train_lista_linear(x.view(), &y, vx.view(), &vy, 3, dims, &fast()).unwrap();
    let m = &fit.model;
    assert_eq!(m.encoder().code_dim(), 16);
    assert_eq!(m.encoder().n_iter(), 3);
    assert_eq!(m.codes(tx.view()).unwrap().dim(), (120, 16));
    assert_eq!(m.accuracy_topk(x.view(), &y, 1).unwrap(), 1.0);
    assert_eq!(m.accuracy_topk(tx.view(), &ty, 1).unwrap(), 1.0);
    assert_eq!(m.predict(tx.view()).unwrap(), ty);
}

#[test]
fn first_per_class_takes_the_first_n_of_each_class_in_order() {
    let labels = [2u8, 0, 1, 0, 2, 2, 1, 0, 1, 1];
    assert_eq!(first_per_class(&labels, 1).unwrap(), vec![0, 1, 2]);
    assert_eq!(first_per_class(&labels, 2).unwrap(), vec![0, 1, 2, 3, 4, 6]);
    assert_eq!(
        first_per_class(&labels, 3).unwrap(),
        vec![0, 1, 2, 3, 4, 5, 6, 7, 8]
    );
    let err = first_per_class(&labels, 4).unwrap_err();
    assert!(
        matches!(err, Error::InvalidParameter { .. }) && err.to_string().contains("class 0"),
        "{err}"
    );
    // a class between 0 and the largest label with no sample at all
    let err = first_per_class(&[0, 2, 0, 2], 1).unwrap_err();
    assert!(err.to_string().contains("class 1 has only 0"), "{err}");
    assert!(matches!(
        first_per_class(&labels, 0),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(first_per_class(&[], 1), Err(Error::Shape { .. })));
    // an absurd N is an error, not an allocation failure
    assert!(first_per_class(&labels, usize::MAX).is_err());
}

/// Pure noise with random labels: a large step overfits the few training points, so the
/// validation loss rises after its minimum.
fn overfitting_case() -> (Array2<f32>, Vec<usize>, Array2<f32>, Vec<usize>) {
    let mut r = rng(5);
    let mut noise = |n: usize| -> (Array2<f32>, Vec<usize>) {
        let x = Array2::from_shape_simple_fn((n, 30), || normal(&mut r) as f32);
        let y = (0..n).map(|i| (i * 7 + 3) % 5 % 2).collect();
        (x, y)
    };
    let (x, y) = noise(8);
    let (vx, vy) = noise(200);
    (x, y, vx, vy)
}

fn overfit_params() -> ClassifyParams {
    ClassifyParams {
        lr: 0.05,
        epochs: 60,
        ..ClassifyParams::default()
    }
}

#[test]
fn the_weights_of_the_lowest_validation_loss_are_kept() {
    let (x, y, vx, vy) = overfitting_case();
    let fit = train_linear(x.view(), &y, vx.view(), &vy, 2, &overfit_params()).unwrap();
    let h = &fit.history;
    let min = h.val_loss.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(h.best_val_loss, min);
    assert_eq!(h.val_loss[h.best_epoch - 1], min);
    assert!(
        h.best_epoch < h.val_loss.len() && h.val_loss[h.val_loss.len() - 1] > min + 0.05,
        "the case must overfit: {:?}",
        h.val_loss
    );
    // the returned weights are that epoch's, not the last epoch's
    assert_eq!(fit.model.loss(vx.view(), &vy).unwrap(), min);
    // and the training loss did keep falling
    assert!(h.train_loss[h.train_loss.len() - 1] < h.train_loss[h.best_epoch - 1]);

    let dims = ListaDims {
        code_dim: 16,
        n_iter: 2,
    };
    let fit = train_lista_linear(x.view(), &y, vx.view(), &vy, 2, dims, &overfit_params()).unwrap();
    let h = &fit.history;
    let min = h.val_loss.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(h.best_val_loss, min);
    assert!(
        h.best_epoch < h.val_loss.len() && h.val_loss[h.val_loss.len() - 1] > min,
        "{:?}",
        h.val_loss
    );
    assert_eq!(fit.model.loss(vx.view(), &vy).unwrap(), min);
}

#[test]
fn the_same_seed_gives_bit_identical_weights() {
    let (x, y) = blobs(3, 30, 20, 1.0, 1);
    let (vx, vy) = blobs(3, 10, 20, 1.0, 2);
    let p = ClassifyParams {
        batch_size: 16, // several shuffled batches per epoch
        epochs: 20,
        seed: 7,
        ..ClassifyParams::default()
    };
    let a = train_linear(x.view(), &y, vx.view(), &vy, 3, &p).unwrap();
    let b = train_linear(x.view(), &y, vx.view(), &vy, 3, &p).unwrap();
    assert_eq!(a.model, b.model);
    assert_eq!(a.history, b.history);
    let c = train_linear(
        x.view(),
        &y,
        vx.view(),
        &vy,
        3,
        &ClassifyParams {
            seed: 8,
            ..p.clone()
        },
    )
    .unwrap();
    assert_ne!(a.model.weight(), c.model.weight());

    let dims = ListaDims {
        code_dim: 8,
        n_iter: 2,
    };
    let a = train_lista_linear(x.view(), &y, vx.view(), &vy, 3, dims, &p).unwrap();
    let b = train_lista_linear(x.view(), &y, vx.view(), &vy, 3, dims, &p).unwrap();
    assert_eq!(a.history, b.history);
    assert_eq!(
        a.model.encoder().to_host(&Cpu).unwrap(),
        b.model.encoder().to_host(&Cpu).unwrap()
    );
    assert_eq!(a.model.head(), b.model.head());
}

#[test]
fn bad_inputs_are_typed_errors() {
    let (x, y) = blobs(3, 4, 5, 2.0, 1);
    let (vx, vy) = blobs(3, 2, 5, 2.0, 2);
    let p = ClassifyParams {
        epochs: 2,
        ..ClassifyParams::default()
    };
    fn train(
        x: &Array2<f32>,
        y: &[usize],
        vx: &Array2<f32>,
        vy: &[usize],
        k: usize,
        p: &ClassifyParams,
    ) -> varsparse::Result<varsparse::experiments::classify::Fit<LinearClassifier>> {
        train_linear(x.view(), y, vx.view(), vy, k, p)
    }
    // labels and rows disagree
    let err = train(&x, &y[..11], &vx, &vy, 3, &p).unwrap_err();
    assert!(
        matches!(&err, Error::Shape { context, .. } if context == "training set")
            && err.to_string().contains("12 rows but there are 11 labels"),
        "{err}"
    );
    let err = train(&x, &y, &vx, &vy[..5], 3, &p).unwrap_err();
    assert!(err.to_string().contains("validation set"), "{err}");
    // a label out of range, located
    let mut bad = y.clone();
    bad[4] = 3;
    let err = train(&x, &bad, &vx, &vy, 3, &p).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidLabel {
                index: 4,
                label: 3,
                n_classes: 3,
                ..
            }
        ),
        "{err}"
    );
    // NaN / infinite features, located
    let mut nan = x.clone();
    nan[(2, 3)] = f32::NAN;
    let err = train(&nan, &y, &vx, &vy, 3, &p).unwrap_err();
    assert!(
        matches!(&err, Error::NonFiniteInput { index: (2, 3), what, .. } if what.contains("training set")),
        "{err}"
    );
    let mut inf = vx.clone();
    inf[(1, 0)] = f32::INFINITY;
    let err = train(&x, &y, &inf, &vy, 3, &p).unwrap_err();
    assert!(
        matches!(&err, Error::NonFiniteInput { index: (1, 0), what, .. } if what.contains("validation")),
        "{err}"
    );
    // empty sets
    let empty = Array2::<f32>::zeros((0, 5));
    assert!(matches!(
        train(&empty, &[], &vx, &vy, 3, &p),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        train(&x, &y, &empty, &[], 3, &p),
        Err(Error::Shape { .. })
    ));
    // validation features of another width
    let narrow = vx.select(Axis(1), &[0, 1, 2]);
    let err = train(&x, &y, &narrow, &vy, 3, &p).unwrap_err();
    assert!(err.to_string().contains("expected 5 columns"), "{err}");
    // bad hyper-parameters
    for (q, name) in [
        (
            ClassifyParams {
                lr: 0.0,
                ..p.clone()
            },
            "lr",
        ),
        (
            ClassifyParams {
                lr: f64::NAN,
                ..p.clone()
            },
            "lr",
        ),
        (
            ClassifyParams {
                batch_size: 0,
                ..p.clone()
            },
            "batch_size",
        ),
        (
            ClassifyParams {
                epochs: 0,
                ..p.clone()
            },
            "epochs",
        ),
    ] {
        let err = train(&x, &y, &vx, &vy, 3, &q).unwrap_err();
        assert!(
            matches!(err, Error::InvalidParameter { name: n, .. } if n == name),
            "{name}: {err}"
        );
        assert!(q.validate().is_err());
    }
    assert!(matches!(
        train(&x, &[0; 12], &vx, &[0; 6], 1, &p),
        Err(Error::InvalidParameter {
            name: "n_classes",
            ..
        })
    ));
    let dims = ListaDims {
        code_dim: 0,
        n_iter: 2,
    };
    assert!(matches!(
        train_lista_linear(x.view(), &y, vx.view(), &vy, 3, dims, &p),
        Err(Error::InvalidParameter { .. })
    ));

    // a fitted model's methods
    let m = train(&x, &y, &vx, &vy, 3, &p).unwrap().model;
    assert!(matches!(m.predict(narrow.view()), Err(Error::Shape { .. })));
    assert!(matches!(
        m.accuracy_topk(x.view(), &y, 0),
        Err(Error::InvalidParameter { name: "k", .. })
    ));
    assert!(matches!(
        m.accuracy_topk(x.view(), &bad, 1),
        Err(Error::InvalidLabel { index: 4, .. })
    ));
    assert!(matches!(
        m.loss(nan.view(), &y),
        Err(Error::NonFiniteInput { .. })
    ));
    assert!(matches!(
        accuracy_topk(Array2::<f32>::zeros((3, 4)).view(), &[0, 1], 1),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        LinearClassifier::from_params(Array2::<f32>::zeros((3, 4)), Array2::zeros((1, 2))),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn the_protocol_rejects_bad_specs_and_data() {
    let (x, y) = blobs(3, 4, 5, 2.0, 1);
    let labels: Vec<u8> = y.iter().map(|&c| c as u8).collect();
    let split = LabelledSplit {
        x: x.view(),
        labels: &labels,
    };
    let data = ProtocolData {
        train: split,
        val: split,
        test: split,
        n_classes: 3,
    };
    let spec = ProtocolSpec {
        methods: vec![Method::Raw],
        per_class: vec![1, 2],
        seeds: 1,
        params: ClassifyParams {
            epochs: 1,
            ..ClassifyParams::default()
        },
        ..ProtocolSpec::default()
    };
    let run = |d: &ProtocolData<'_>, s: &ProtocolSpec| run_protocol(d, None, s, &mut |_| {});
    assert!(run(&data, &spec).is_ok());
    // codes without an encoder
    let codes = ProtocolSpec {
        methods: vec![Method::Codes],
        ..spec.clone()
    };
    assert!(matches!(
        run(&data, &codes),
        Err(Error::InvalidParameter { name: "method", .. })
    ));
    // more per class than a class has
    let many = ProtocolSpec {
        per_class: vec![5],
        ..spec.clone()
    };
    let err = run(&data, &many).unwrap_err();
    assert!(err.to_string().contains("has only 4"), "{err}");
    for bad in [
        ProtocolSpec {
            per_class: vec![0],
            ..spec.clone()
        },
        ProtocolSpec {
            per_class: vec![],
            ..spec.clone()
        },
        ProtocolSpec {
            seeds: 0,
            ..spec.clone()
        },
        ProtocolSpec {
            methods: vec![],
            ..spec.clone()
        },
    ] {
        assert!(matches!(
            run(&data, &bad),
            Err(Error::InvalidParameter { .. })
        ));
    }
    // a test label out of range, named by split
    let mut wrong = labels.clone();
    wrong[7] = 9;
    let bad_data = ProtocolData {
        test: LabelledSplit {
            x: x.view(),
            labels: &wrong,
        },
        ..data
    };
    let err = run(&bad_data, &spec).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidLabel { index: 7, label: 9, what, .. } if what.contains("test")),
        "{err}"
    );
    // an encoder whose codes do not fit
    let codes_bad = |y: &Array2<f32>| Ok::<_, Error>(Array2::<f32>::zeros((y.nrows() + 1, 4)));
    let err = run_protocol(&data, Some(&codes_bad), &codes, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    assert_eq!(Method::from_name("lista-raw").unwrap(), Method::ListaRaw);
    assert!(Method::from_name("pixels").is_err());
}

#[test]
fn the_protocol_reports_every_method_n_and_seed() {
    let (x, y) = blobs(3, 8, 12, 1.5, 1);
    let (vx, vy) = blobs(3, 5, 12, 1.5, 2);
    let (tx, ty) = blobs(3, 20, 12, 1.5, 3);
    let u8s = |v: &[usize]| v.iter().map(|&c| c as u8).collect::<Vec<_>>();
    let (ly, lvy, lty) = (u8s(&y), u8s(&vy), u8s(&ty));
    let data = ProtocolData {
        train: LabelledSplit {
            x: x.view(),
            labels: &ly,
        },
        val: LabelledSplit {
            x: vx.view(),
            labels: &lvy,
        },
        test: LabelledSplit {
            x: tx.view(),
            labels: &lty,
        },
        n_classes: 3,
    };
    let proj: Array2<f32> = linear_uniform(&mut rng(9), 12, 6, 12);
    let calls = Cell::new(0);
    let rows_seen = Cell::new(0);
    let encode = |y: &Array2<f32>| {
        calls.set(calls.get() + 1);
        Ok::<_, Error>(y.dot(&proj).mapv(|v| v.max(0.0)))
    };
    let spec = ProtocolSpec {
        methods: vec![Method::Codes, Method::Raw, Method::ListaRaw],
        per_class: vec![1, 3],
        seeds: 2,
        params: ClassifyParams {
            epochs: 5,
            seed: 10,
            ..ClassifyParams::default()
        },
        lista: ListaDims {
            code_dim: 6,
            n_iter: 2,
        },
    };
    let report = run_protocol(&data, Some(&encode), &spec, &mut |_| {
        rows_seen.set(rows_seen.get() + 1)
    })
    .unwrap();
    assert_eq!(calls.get(), 3, "one encoding per split");
    assert_eq!(rows_seen.get(), 6);
    assert_eq!((report.n_classes, report.n_val, report.n_test), (3, 15, 60));
    let names: Vec<(Method, usize)> = report
        .rows
        .iter()
        .map(|r| (r.method, r.per_class))
        .collect();
    assert_eq!(
        names,
        vec![
            (Method::Codes, 1),
            (Method::Codes, 3),
            (Method::Raw, 1),
            (Method::Raw, 3),
            (Method::ListaRaw, 1),
            (Method::ListaRaw, 3)
        ]
    );
    for r in &report.rows {
        assert_eq!(r.seeds, vec![10, 11]);
        assert_eq!(r.train_size, 3 * r.per_class);
        assert_eq!(r.top1.len(), 2);
        let mean = (r.top1[0] + r.top1[1]) / 2.0;
        assert!((r.top1_mean - mean).abs() < 1e-15);
        let std = (r.top1[0] - r.top1[1]).abs() / 2f64.sqrt();
        assert!((r.top1_std - std).abs() < 1e-12, "{r:?}");
        assert!(
            r.top3.iter().all(|&a| a == 1.0),
            "3 classes: top-3 is everything"
        );
        assert!(r.best_epoch.iter().all(|&e| (1..=5).contains(&e)));
    }
    // the raw rows are train_linear on the first N per class, seed by seed
    let fit = train_linear(
        x.select(Axis(0), &[0, 1, 2]).view(),
        &[0, 1, 2],
        vx.view(),
        &vy,
        3,
        &spec.params,
    )
    .unwrap();
    assert_eq!(
        report.rows[2].top1[0],
        fit.model.accuracy_topk(tx.view(), &ty, 1).unwrap()
    );
    assert_eq!(report.rows[2].best_val_loss[0], fit.history.best_val_loss);

    let csv = report.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 7);
    assert!(lines[0].starts_with("method,per_class,train_size,seeds,top1_mean,top1_std"));
    assert!(lines[5].starts_with("lista-raw,1,3,2,"), "{}", lines[5]);
    assert_eq!(lines[3].split(',').count(), 14);
    let md = report.to_markdown();
    assert!(md.contains("| raw | 3 |"), "{md}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["rows"][4]["method"], "lista-raw");
    assert_eq!(json["rows"][0]["top1"].as_array().unwrap().len(), 2);
}

// ---- gradients (f64, central differences) -------------------------------------------------

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn the_softmax_regression_gradient_matches_finite_differences() {
    let mut r = rng(3);
    let (n, d, c) = (7, 5, 4);
    let x = Array2::from_shape_simple_fn((n, d), || normal(&mut r));
    let labels: Vec<usize> = (0..n).map(|i| (i * 3) % c).collect();
    let w = Array2::from_shape_simple_fn((c, d), || normal(&mut r));
    let b = Array2::from_shape_simple_fn((1, c), || normal(&mut r));
    let m = LinearClassifier::from_params(w.clone(), b.clone()).unwrap();
    let (loss, dw, db) = m.loss_grads(x.view(), &labels).unwrap();
    assert_eq!(loss, m.loss(x.view(), &labels).unwrap());
    let h = 1e-6;
    let f = |w: &Array2<f64>, b: &Array2<f64>| {
        LinearClassifier::from_params(w.clone(), b.clone())
            .unwrap()
            .loss(x.view(), &labels)
            .unwrap()
    };
    for i in 0..c {
        for j in 0..d {
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[(i, j)] += h;
            wm[(i, j)] -= h;
            let fd = (f(&wp, &b) - f(&wm, &b)) / (2.0 * h);
            assert!(
                rel_close(dw[(i, j)], fd, 1e-7),
                "dW[{i},{j}] {} vs {fd}",
                dw[(i, j)]
            );
        }
        let (mut bp, mut bm) = (b.clone(), b.clone());
        bp[(0, i)] += h;
        bm[(0, i)] -= h;
        let fd = (f(&w, &bp) - f(&w, &bm)) / (2.0 * h);
        assert!(
            rel_close(db[(0, i)], fd, 1e-7),
            "db[{i}] {} vs {fd}",
            db[(0, i)]
        );
    }
}

/// Central differences of `loss` with respect to every entry of `params[k]`, compared with
/// `grads[k]`.
fn check_params(
    params: &[Array2<f64>],
    grads: &[Array2<f64>],
    names: &[&str],
    loss: &dyn Fn(&[Array2<f64>]) -> f64,
    tol: f64,
) {
    let h = 1e-6;
    for (k, name) in names.iter().enumerate() {
        assert_eq!(grads[k].dim(), params[k].dim(), "{name}");
        for idx in 0..params[k].len() {
            let (r, c) = (idx / params[k].ncols(), idx % params[k].ncols());
            let mut p = params.to_vec();
            p[k][(r, c)] += h;
            let up = loss(&p);
            p[k][(r, c)] -= 2.0 * h;
            let down = loss(&p);
            let fd = (up - down) / (2.0 * h);
            assert!(
                rel_close(grads[k][(r, c)], fd, tol),
                "d{name}[{r},{c}]: analytic {} vs central difference {fd}",
                grads[k][(r, c)]
            );
        }
    }
}

fn flat(p: &ListaParams<Array2<f64>>) -> Vec<Array2<f64>> {
    p.named().into_iter().map(|(_, a)| a.clone()).collect()
}

fn unflat(v: &[Array2<f64>]) -> ListaParams<Array2<f64>> {
    ListaParams {
        u: v[0].clone(),
        b: v[1].clone(),
        s: v[2].clone(),
    }
}

#[test]
fn lista_backward_from_matches_finite_differences() {
    let mut r = rng(11);
    let (n, d, l, iters) = (6, 7, 5, 3);
    let mut enc = Lista::<f64, Cpu>::init(&Cpu, d, l, iters, &mut r).unwrap();
    // a non-zero bias so that units sit away from the ReLU's kink on both sides
    enc.params_mut().b = Array2::from_shape_simple_fn((1, l), || 0.3 * normal(&mut r));
    let y = Array2::from_shape_simple_fn((n, d), || normal(&mut r));
    let g = Array2::from_shape_simple_fn((n, l), || normal(&mut r));
    let mut tape = enc.tape(&Cpu, n).unwrap();
    let out = enc.forward(&Cpu, &y, &mut tape).unwrap().clone();
    assert!(out.iter().any(|&v| v > 0.0) && out.iter().any(|&v| v == 0.0));
    let mut grads = enc.zeros_like_params(&Cpu).unwrap();
    enc.backward_from(&Cpu, &y, &mut tape, &g, &mut grads)
        .unwrap();
    let params = flat(&enc.to_host(&Cpu).unwrap());
    let loss = |p: &[Array2<f64>]| {
        let e = Lista::<f64, Cpu>::from_params(&Cpu, &unflat(p), iters).unwrap();
        let mut t = e.tape(&Cpu, n).unwrap();
        (e.forward(&Cpu, &y, &mut t).unwrap() * &g).sum()
    };
    check_params(&params, &flat(&grads), &["U", "b", "S"], &loss, 1e-6);

    // shapes are checked
    let wrong = Array2::<f64>::zeros((n, l + 1));
    assert!(matches!(
        enc.backward_from(&Cpu, &y, &mut tape, &wrong, &mut grads),
        Err(Error::Shape { .. })
    ));
    let short_y = Array2::<f64>::zeros((n - 1, d));
    assert!(matches!(
        enc.backward_from(&Cpu, &short_y, &mut tape, &g, &mut grads),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn the_joint_lista_classifier_gradient_matches_finite_differences() {
    let mut r = rng(12);
    let (n, d, l, iters, c) = (6, 7, 5, 2, 3);
    let labels: Vec<usize> = (0..n).map(|i| i % c).collect();
    let x = Array2::from_shape_simple_fn((n, d), || normal(&mut r));
    let mut params = ListaClassifier::<f64>::init(
        d,
        ListaDims {
            code_dim: l,
            n_iter: iters,
        },
        c,
        &mut r,
    )
    .unwrap()
    .encoder()
    .to_host(&Cpu)
    .unwrap();
    params.b = Array2::from_shape_simple_fn((1, l), || 0.3 * normal(&mut r));
    let mut params = flat(&params);
    params.push(Array2::from_shape_simple_fn((c, l), || normal(&mut r)));
    params.push(Array2::from_shape_simple_fn((1, c), || normal(&mut r)));
    let build = |p: &[Array2<f64>]| {
        ListaClassifier::from_parts(
            Lista::from_params(&Cpu, &unflat(&p[..3]), iters).unwrap(),
            LinearClassifier::from_params(p[3].clone(), p[4].clone()).unwrap(),
        )
        .unwrap()
    };
    let m = build(&params);
    let (loss, (g_enc, g_head)) = m.loss_grads(x.view(), &labels).unwrap();
    let mut grads = flat(&g_enc);
    grads.extend([g_head.weight, g_head.bias]);
    assert_eq!(loss, m.loss(x.view(), &labels).unwrap());
    let f = |p: &[Array2<f64>]| build(p).loss(x.view(), &labels).unwrap();
    check_params(&params, &grads, &["U", "b", "S", "W", "b_out"], &f, 1e-6);
}

// ---- the command line ---------------------------------------------------------------------

fn varsparse() -> Command {
    Command::cargo_bin("varsparse").unwrap()
}

fn data_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

#[test]
fn cli_classify_raw_baseline_writes_csv_and_json() {
    let out = tempfile::tempdir().unwrap();
    varsparse()
        .args(["--threads", "1", "classify", "--baseline", "raw"])
        .args(["--per-class", "1,2", "--seeds", "2", "--epochs", "3"])
        .arg("--data-dir")
        .arg(data_dir())
        .arg("--out")
        .arg(out.path())
        .assert()
        .success()
        .stdout(predicates::str::contains("| raw | 2 |"));
    let csv = std::fs::read_to_string(out.path().join("classify.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("method,per_class,train_size,seeds,top1_mean"));
    assert!(lines[1].starts_with("raw,1,10,2,"), "{csv}");
    assert!(lines[2].starts_with("raw,2,20,2,"), "{csv}");
    for line in &lines[1..] {
        let top1: f64 = line.split(',').nth(4).unwrap().parse().unwrap();
        assert!(top1 > 0.15 && top1 <= 1.0, "{line}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("classify.json")).unwrap())
            .unwrap();
    assert_eq!(json["report"]["n_test"], 10_000);
    assert_eq!(json["report"]["n_val"], 5_000);
    assert_eq!(json["report"]["rows"].as_array().unwrap().len(), 2);
    let png = image::open(out.path().join("classify.png")).unwrap();
    assert_eq!((png.width(), png.height()), (800, 560));
}

#[test]
fn cli_classify_with_a_model_runs_codes_and_lista_raw() {
    let run = tempfile::tempdir().unwrap();
    let spec = DataSpec::Mnist {
        dir: data_dir().join("mnist"),
        split_seed: 0,
        train_limit: Some(500),
    };
    let mut data = spec.load().unwrap();
    data.val = data.val.head(250);
    let opts = FitOptions {
        out_dir: Some(run.path().to_path_buf()),
        data_description: serde_json::to_string(&spec).ok(),
        ..FitOptions::default()
    };
    ModelParams::preset(Preset::MnistVdl)
        .epochs(1)
        .code_dim(16)
        .validate()
        .unwrap()
        .fit_with(Cpu, &data.train_data(), &opts, &mut ())
        .unwrap();
    varsparse()
        .args(["--threads", "1", "classify", "--model"])
        .arg(run.path().join("best"))
        .args([
            "--baseline",
            "lista-raw",
            "--per-class",
            "1",
            "--seeds",
            "1",
        ])
        .args(["--epochs", "2"])
        .assert()
        .success()
        .stdout(predicates::str::contains("| codes | 1 |"))
        .stdout(predicates::str::contains("| lista-raw | 1 |"));
    // OUT defaults to the model directory's parent
    let csv = std::fs::read_to_string(run.path().join("classify.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with("codes,1,10,1,"), "{csv}");
    assert!(lines[2].starts_with("lista-raw,1,10,1,"), "{csv}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.path().join("classify.json")).unwrap())
            .unwrap();
    assert_eq!(json["report"]["spec"]["lista"]["code_dim"], 16);
    assert_eq!(json["report"]["spec"]["lista"]["n_iter"], 3);

    // several encoders in one report: their rows are labelled, the plot has a line each
    let out = run.path().join("two");
    varsparse()
        .args(["--threads", "1", "classify", "--model"])
        .arg(run.path().join("best"))
        .arg("--model")
        .arg(run.path().join("latest"))
        .args(["--per-class", "1", "--seeds", "1", "--epochs", "2", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "| codes (mnist-vdl λ=0.02 ep1) | 1 |",
        ));
    let csv = std::fs::read_to_string(out.join("classify.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].contains(",encoder,"), "{csv}");
    assert!(
        lines[1].contains(",mnist-vdl λ=0.02 ep1,") && lines[2].contains(",mnist-vdl λ=0.02 ep1,"),
        "{csv}"
    );
    // identical weights (best = latest after one epoch), identical accuracies
    let acc = |l: &str| l.split(',').nth(4).unwrap().to_string();
    assert_eq!(acc(lines[1]), acc(lines[2]));
}

#[test]
fn cli_classify_needs_a_model_or_a_baseline() {
    varsparse()
        .arg("classify")
        .assert()
        .failure()
        .stderr(predicates::str::contains("--model"));
    varsparse()
        .args(["classify", "--baseline", "codes"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("raw or lista-raw"));
    varsparse()
        .args(["classify", "--baseline", "pixels"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("pixels"));
    varsparse()
        .args(["classify", "--baseline", "raw", "--per-class", "0"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("per_class"));
}

#[test]
fn selecting_the_best_encoder_by_validation_keeps_one_row_per_kind_and_n() {
    use varsparse::experiments::classify::{ClassifyReport, ClassifyRow, Method, ProtocolSpec};
    let row = |method, encoder: Option<&str>, n, val: f64| ClassifyRow {
        method,
        encoder: encoder.map(String::from),
        encoder_kind: encoder.map(|e| e.split(' ').next().unwrap().to_string()),
        selected: None,
        per_class: n,
        train_size: 10 * n,
        seeds: vec![0],
        top1_mean: val,
        top1_std: 0.0,
        top3_mean: val,
        top3_std: 0.0,
        top1: vec![val],
        top3: vec![val],
        best_epoch: vec![1],
        best_val_loss: vec![1.0],
        val_top1: vec![val],
        val_top1_mean: val,
        seconds: 0.0,
    };
    let mut report = ClassifyReport {
        spec: ProtocolSpec::default(),
        n_classes: 10,
        n_val: 1,
        n_test: 1,
        rows: vec![
            row(Method::Codes, Some("a λ=1"), 1, 0.5),
            row(Method::Codes, Some("a λ=1"), 2, 0.9),
            row(Method::Codes, Some("a λ=2"), 1, 0.7),
            row(Method::Codes, Some("a λ=2"), 2, 0.8),
            row(Method::Codes, Some("b λ=1"), 1, 0.1),
            row(Method::Raw, None, 1, 0.3),
        ],
    };
    report.select_best_by_kind();
    let got: Vec<(String, usize, Option<&str>, f64)> = report
        .rows
        .iter()
        .map(|r| {
            (
                r.series(),
                r.per_class,
                r.selected.as_deref(),
                r.val_top1_mean,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("codes (a)".to_string(), 1, Some("a λ=2"), 0.7),
            ("codes (a)".to_string(), 2, Some("a λ=1"), 0.9),
            ("codes (b)".to_string(), 1, Some("b λ=1"), 0.1),
            ("raw".to_string(), 1, None, 0.3),
        ]
    );
    assert_eq!(report.plot("t").series.len(), 3);
}

#[test]
fn models_compared_in_one_report_share_an_mnist_split() {
    use std::path::PathBuf;
    use varsparse::experiments::classify::shared_mnist_split;
    let mnist = |seed| DataSpec::Mnist {
        dir: PathBuf::from("/d/mnist"),
        split_seed: seed,
        train_limit: Some(500),
    };
    assert_eq!(shared_mnist_split(&[]).unwrap(), None);
    assert_eq!(
        shared_mnist_split(&[("a".into(), mnist(7)), ("b".into(), mnist(7))]).unwrap(),
        Some((PathBuf::from("/d/mnist"), 7))
    );
    let e = shared_mnist_split(&[("a".into(), mnist(7)), ("b".into(), mnist(8))]).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidParameter { value, .. } if value == "b"),
        "{e}"
    );
    assert!(e.to_string().contains("split seed 8"), "{e}");
    let patches = DataSpec::Patches {
        dir: PathBuf::from("/d/natural"),
        n_train: 1,
        n_val: 1,
        n_test: 1,
        seed: 0,
    };
    let e = shared_mnist_split(&[("p".into(), patches)]).unwrap_err();
    assert!(e.to_string().contains("MNIST's labels"), "{e}");
}
