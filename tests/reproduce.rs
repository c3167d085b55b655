//! The paper's section-4 tools: denoising, atom grids, plots, the sweep, weights-only checkpoints.

use std::path::Path;
use std::sync::OnceLock;

use ndarray::{Array2, s};
use varsparse::data::Samples;
use varsparse::data::{DataSpec, LoadedData};
use varsparse::experiments::denoise::{denoise, denoise_figure, gaussian_noise};
use varsparse::experiments::figures::{
    GridLayout, LinePlot, Series, TileScale, atoms_image, render_plot, save_gray_png, tile_grid,
};
use varsparse::experiments::sweep::{SweepConfig, SweepEvent, run_sweep};
use varsparse::train::FitOptions;
use varsparse::{Cpu, Error, ModelParams, Preset, SparseCoder};

fn mnist() -> &'static LoadedData {
    static DATA: OnceLock<LoadedData> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut d = DataSpec::Mnist {
            dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"),
            split_seed: 0,
            train_limit: Some(500),
        }
        .load()
        .expect("bundled MNIST");
        d.val = d.val.head(250);
        d.test = d.test.map(|t| t.head(300));
        d
    })
}

/// A model trained for one epoch on 500 images (2 batches).
fn trained(dir: Option<&Path>) -> SparseCoder {
    let params = ModelParams::preset(Preset::MnistVdl).epochs(1).seed(5);
    params
        .validate()
        .unwrap()
        .fit_with(
            Cpu,
            &mnist().train_data(),
            &FitOptions {
                out_dir: dir.map(Path::to_path_buf),
                ..FitOptions::default()
            },
            &mut (),
        )
        .unwrap()
}

#[test]
fn denoise_at_sigma_zero_equals_the_clean_numbers() {
    let model = trained(None);
    let test = mnist().test.as_ref().unwrap();
    let r = denoise(&model, &test.samples(mnist().pixel_scale), &[0.0, 1.0], 7).unwrap();
    let (zero, one) = (&r.rows[0], &r.rows[1]);
    assert_eq!(zero.samples, 300);
    assert_eq!(zero.psnr_recon_noisy, zero.psnr_recon_clean);
    assert_eq!(zero.sparsity_noisy, zero.sparsity_clean);
    // y_0 = y: every image's MSE is floored at 1e-4, i.e. 40 dB.
    assert!((zero.psnr_noisy_input - 40.0).abs() < 1e-9);
    // the clean numbers are those of `evaluate`
    let stats = model.evaluate(&test.samples(mnist().pixel_scale)).unwrap();
    assert!(
        (zero.psnr_recon_clean - stats.psnr).abs() < 1e-3,
        "{zero:?} vs {stats:?}"
    );
    assert!((zero.sparsity_clean - stats.sparsity).abs() < 1e-9);
    // sigma = 1 in normalised MNIST units is 10.2 dB of noise (docs/CONVENTIONS.md §6)
    assert!((one.psnr_noisy_input - 10.23).abs() < 0.05, "{one:?}");
    assert!(one.psnr_recon_noisy < one.psnr_recon_clean);
    // same seed, same numbers; another seed, other noise
    let again = denoise(&model, &test.samples(mnist().pixel_scale), &[1.0], 7).unwrap();
    assert_eq!(again.rows[0], *one);
    let other = denoise(&model, &test.samples(mnist().pixel_scale), &[1.0], 8).unwrap();
    assert_ne!(other.rows[0].psnr_recon_noisy, one.psnr_recon_noisy);
}

#[test]
fn noise_is_standard_normal() {
    let e = gaussian_noise(400, 250, 1);
    let n = e.len() as f64;
    let mean = e.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = e
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!((var - 1.0).abs() < 0.01, "variance {var}");
}

#[test]
fn denoise_rejects_bad_input() {
    let model = trained(None);
    let x = mnist()
        .test
        .as_ref()
        .unwrap()
        .x
        .slice(s![..10, ..])
        .to_owned();
    let ok = Samples::new(x.view(), 1.0);
    assert!(matches!(
        denoise(&model, &ok, &[-1.0], 0),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        denoise(&model, &ok, &[f64::NAN], 0),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        denoise(&model, &ok, &[], 0),
        Err(Error::InvalidParameter { .. })
    ));
    let mut bad = x.clone();
    bad[(3, 4)] = f32::INFINITY;
    assert!(matches!(
        denoise(&model, &Samples::new(bad.view(), 1.0), &[1.0], 0),
        Err(Error::NonFiniteInput { index: (3, 4), .. })
    ));
    let narrow = Array2::<f32>::zeros((4, 10));
    assert!(matches!(
        denoise(&model, &Samples::new(narrow.view(), 1.0), &[1.0], 0),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn denoise_figure_has_four_rows() {
    let model = trained(None);
    let x = &mnist().test.as_ref().unwrap().x;
    let img = denoise_figure(&model, x.view(), (28, 28), 1.0, 0, 6).unwrap();
    let layout = GridLayout::new((28, 28), 6);
    assert_eq!((img.width(), img.height()), layout.size(24));
    assert!(denoise_figure(&model, x.view(), (28, 28), 1.0, 0, 0).is_err());
    assert!(denoise_figure(&model, x.slice(s![..3, ..]), (28, 28), 1.0, 0, 6).is_err());
}

#[test]
fn atoms_image_has_the_expected_size_and_grid() {
    let model = trained(None);
    let img = atoms_image(&model, 16).unwrap();
    // 128 atoms of 28x28 at zoom 2, 16 per row: 8 rows, 2-pixel gaps
    assert_eq!(img.width(), 16 * (56 + 2) + 2);
    assert_eq!(img.height(), 8 * (56 + 2) + 2);
    // the gaps are background, every atom spans black to white
    assert!((0..img.height()).all(|y| img.get_pixel(0, y)[0] == 255));
    assert!((0..img.width()).all(|x| img.get_pixel(x, 59)[0] == 255));
    let tile: Vec<u8> = (2..58)
        .flat_map(|y| (2..58).map(move |x| (x, y)))
        .map(|(x, y)| img.get_pixel(x, y)[0])
        .collect();
    assert_eq!(tile.iter().min(), Some(&0));
    assert_eq!(tile.iter().max(), Some(&255));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atoms.png");
    save_gray_png(&img, &path).unwrap();
    let back = image::open(&path).unwrap().to_luma8();
    assert_eq!(back, img);
}

#[test]
fn tile_grid_checks_its_input() {
    let tiles = Array2::<f32>::from_shape_fn((5, 6), |(i, j)| (i * 6 + j) as f32);
    let img = tile_grid(tiles.view(), GridLayout::new((2, 3), 2), TileScale::PerTile).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (2 * (6 + 2) + 2, 3 * (4 + 2) + 2)
    );
    assert!(tile_grid(tiles.view(), GridLayout::new((2, 2), 2), TileScale::PerTile).is_err());
    assert!(tile_grid(tiles.view(), GridLayout::new((2, 3), 0), TileScale::PerTile).is_err());
    let fixed = TileScale::Fixed { lo: 1.0, hi: 1.0 };
    assert!(tile_grid(tiles.view(), GridLayout::new((2, 3), 2), fixed).is_err());
    let mut nan = tiles.clone();
    nan[(1, 2)] = f32::NAN;
    assert!(matches!(
        tile_grid(nan.view(), GridLayout::new((2, 3), 2), TileScale::PerTile),
        Err(Error::NonFiniteInput { index: (1, 2), .. })
    ));
}

#[test]
fn plots_render_and_reject_bad_points() {
    let mut plot = LinePlot::new("t", "x", "y");
    plot.series.push(Series {
        label: "a".into(),
        points: vec![(1.0, 2.0), (2.0, 3.0), (5.0, 2.5)],
        err: Some(vec![0.1, 0.2, 0.0]),
    });
    let img = render_plot(&plot).unwrap();
    assert_eq!((img.width(), img.height()), (800, 560));
    // something other than the white background was drawn, in the series' colour too
    assert!(img.pixels().any(|p| p.0 == [31, 119, 180]));
    plot.log_x = true;
    render_plot(&plot).unwrap();
    plot.series[0].points[0].0 = 0.0;
    assert!(matches!(
        render_plot(&plot),
        Err(Error::InvalidParameter { .. })
    ));
    plot.log_x = false;
    plot.series[0].points[1].1 = f64::NAN;
    assert!(matches!(
        render_plot(&plot),
        Err(Error::NonFiniteInput { .. })
    ));
    plot.series[0].points[1].1 = 1.0;
    plot.series[0].err = Some(vec![0.1]);
    assert!(matches!(render_plot(&plot), Err(Error::Shape { .. })));
    assert!(matches!(
        render_plot(&LinePlot::new("empty", "x", "y")),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn the_sweep_skips_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SweepConfig {
        presets: vec![Preset::MnistSdl, Preset::MnistVdl],
        lambdas: vec![5e-3, 2e-2],
        seeds: vec![1],
        epochs: Some(1),
        out: dir.path().to_path_buf(),
        data_description: None,
    };
    let mut trained_runs = 0;
    let first = run_sweep(&cfg, mnist(), None, |e| {
        if matches!(e, SweepEvent::Training { .. }) {
            trained_runs += 1;
        }
    })
    .unwrap();
    assert_eq!(trained_runs, 4);
    assert_eq!(first.len(), 4);
    assert!(first.iter().all(|r| r.epochs == 1 && r.best_epoch == 1));
    // each lambda trains its own model
    assert_ne!(first[0].test_psnr, first[1].test_psnr, "{first:?}");
    let csv = varsparse::experiments::sweep::to_csv(&first);
    assert_eq!(csv.lines().count(), 5);
    assert!(csv.starts_with("preset,lambda,seed,"));

    let mut events = vec![];
    let second = run_sweep(&cfg, mnist(), None, |e| {
        events.push(matches!(e, SweepEvent::Skipped(_)))
    })
    .unwrap();
    assert_eq!(events, vec![true; 4]);
    assert_eq!(second, first);

    // a run whose result is lost but whose training finished is evaluated, not retrained
    std::fs::remove_file(cfg.run_dir(Preset::MnistVdl, 2e-2, 1).join("result.json")).unwrap();
    let mut retrained = 0;
    let third = run_sweep(&cfg, mnist(), None, |e| {
        if matches!(e, SweepEvent::Training { .. }) {
            retrained += 1;
        }
    })
    .unwrap();
    assert_eq!(retrained, 0);
    assert_eq!(third[3].test_psnr, first[3].test_psnr);

    // more epochs asked for: the run continues from its checkpoint
    let cfg2 = SweepConfig {
        presets: vec![Preset::MnistVdl],
        lambdas: vec![2e-2],
        epochs: Some(2),
        ..cfg.clone()
    };
    let mut from = vec![];
    run_sweep(&cfg2, mnist(), None, |e| {
        if let SweepEvent::Training { from: f, .. } = e {
            from.push(*f);
        }
    })
    .unwrap();
    assert_eq!(from, vec![1]);

    let plot = varsparse::experiments::sweep::plot(&first, "sweep");
    assert_eq!(plot.series.len(), 2);
    render_plot(&plot).unwrap();
}

#[test]
fn a_weights_only_checkpoint_loads_but_does_not_resume() {
    let dir = tempfile::tempdir().unwrap();
    let model = trained(Some(dir.path()));
    let best = dir.path().join("best");
    for entry in std::fs::read_dir(&best).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("adam_")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    let loaded = SparseCoder::load(&best).unwrap();
    let x = mnist()
        .test
        .as_ref()
        .unwrap()
        .x
        .slice(s![..20, ..])
        .to_owned();
    assert_eq!(loaded.encode(&x).unwrap(), model.encode(&x).unwrap());
    let err = ModelParams::preset(Preset::MnistVdl)
        .epochs(2)
        .seed(5)
        .validate()
        .unwrap()
        .fit_with(
            Cpu,
            &mnist().train_data(),
            &FitOptions {
                resume: Some(best.clone()),
                ..FitOptions::default()
            },
            &mut (),
        )
        .err()
        .expect("resuming without Adam moments must fail");
    assert!(err.to_string().contains("Adam"), "{err}");

    // some but not all moments: corrupt
    let latest = dir.path().join("latest");
    std::fs::remove_file(latest.join("adam_m_decoder_W.npy")).unwrap();
    let err = SparseCoder::load(&latest).err().expect("partial moments");
    assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
}
