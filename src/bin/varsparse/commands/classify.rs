//! `varsparse classify`: the low-data classification protocol on MNIST
//! (`varsparse::experiments::classify`). The models' encoders run on `--device`; the small
//! linear classifiers train on the CPU.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use ndarray::Array2;
use varsparse::backend::{Backend, Device, OnBackend};
use varsparse::data::mnist::Split;
use varsparse::data::spec::resolve_data_dir;
use varsparse::experiments::classify::{
    ClassifyParams, ClassifyReport, ClassifyRow, EncodeFn, LabelledSplit, ListaDims, Method,
    ProtocolData, ProtocolSpec, run_protocol, shared_mnist_split,
};
use varsparse::io::{write_atomic, write_json};
use varsparse::{Error, Result, SparseCoder};

use crate::args::{create_dir, model_data, parent_dir};

/// `classify`'s flags.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint directory whose encoder gives the codes (e.g. runs/mnist-vdl/best);
    /// optional when only baselines are asked for. Repeat it to compare several encoders in one
    /// table and plot (their rows are labelled by preset, lambda and epochs trained, or by directory); they must share the
    /// MNIST split.
    #[arg(long, value_name = "DIR")]
    model: Vec<PathBuf>,
    /// With several models: keep, for each model kind (preset) and N, only the encoder with the
    /// best mean validation accuracy (the paper's Figure 9 protocol over a lambda sweep).
    #[arg(long)]
    select_best: bool,
    /// Training images per class, N.
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        default_value = "1,2,5,10,20,50,100"
    )]
    per_class: Vec<usize>,
    /// Seeds per N (seed, seed + 1, ...).
    #[arg(long, value_name = "N", default_value_t = 5)]
    seeds: usize,
    /// The first seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// A baseline to run as well: raw (pixels) or lista-raw (random LISTA + linear layer trained
    /// jointly on pixels, with the model's encoder dimensions, or l 128, L 3 without a model);
    /// may be repeated.
    #[arg(long = "baseline", value_enum, value_name = "NAME")]
    baselines: Vec<Method>,
    /// Training epochs (the epoch of lowest validation loss is kept).
    #[arg(long, value_name = "N", default_value_t = 100)]
    epochs: usize,
    /// Adam's learning rate.
    #[arg(long, value_name = "F", default_value_t = 1e-3)]
    lr: f64,
    /// Training batch size.
    #[arg(long, value_name = "N", default_value_t = 250)]
    batch_size: usize,
    /// The data directory holding mnist/ (default: the one the model was trained with, else
    /// $VARSPARSE_DATA, else the crate's data/).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Seed of the 55,000 / 5,000 train/validation split (default: the model's, or 0).
    #[arg(long, value_name = "S")]
    split_seed: Option<u64>,
    /// Where to write classify.csv and classify.json (default: the model directory's parent, or
    /// the current directory).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// The methods asked for: the codes with a model, then the baselines in order.
fn methods(a: &Args) -> Result<Vec<Method>> {
    let mut methods = Vec::new();
    if !a.model.is_empty() {
        methods.push(Method::Codes);
    }
    for &m in &a.baselines {
        if m == Method::Codes {
            return Err(Error::param(
                "baseline",
                m.name(),
                "expected raw or lista-raw (the codes come from --model)",
            ));
        }
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    if methods.is_empty() {
        return Err(Error::param(
            "model",
            "missing",
            "give --model DIR and/or --baseline raw / --baseline lista-raw",
        ));
    }
    Ok(methods)
}

fn labelled(s: &Split) -> LabelledSplit<'_> {
    LabelledSplit {
        x: s.images.view(),
        labels: &s.labels,
    }
}

/// The whole protocol; the models live on the job's backend.
struct Job<'a>(&'a Args, Device);

impl OnBackend for Job<'_> {
    type Output = ();

    fn run<B: Backend<f32>>(self, make: &dyn Fn() -> Result<B>) -> Result<()> {
        let (a, device) = (self.0, self.1);
        let methods = methods(a)?;
        let models = a
            .model
            .iter()
            .map(|m| SparseCoder::load_on(make()?, m))
            .collect::<Result<Vec<_>>>()?;
        if !models.is_empty() && device != Device::Cpu {
            eprintln!(
                "note: the encoders run on {device}; the linear classifiers (and the lista-raw \
                 baseline) train on the CPU"
            );
        }
        if models.is_empty() {
            // only baselines: they train on the CPU, but a device asked for must exist
            make()?;
        }
        let defaults = ProtocolSpec::default();
        let spec = ProtocolSpec {
            methods,
            per_class: a.per_class.clone(),
            seeds: a.seeds,
            params: ClassifyParams {
                lr: a.lr,
                batch_size: a.batch_size,
                epochs: a.epochs,
                seed: a.seed,
            },
            lista: match models.first() {
                Some(m) => ListaDims {
                    code_dim: m.encoder().code_dim(),
                    n_iter: m.encoder().n_iter(),
                },
                None => defaults.lista,
            },
        };
        spec.validate()?;

        // The models' own MNIST split (their data specs record the split seed), without any
        // training limit: the first N images per class come from the training split in order.
        let recorded = a
            .model
            .iter()
            .map(|m| Ok((m.clone(), model_data(m, a.data_dir.as_deref())?)))
            .collect::<Result<Vec<_>>>()?;
        let (dir, recorded_seed) = match shared_mnist_split(&recorded)? {
            Some((dir, seed)) => (dir, Some(seed)),
            None => (resolve_data_dir(a.data_dir.as_deref())?.join("mnist"), None),
        };
        let split_seed = a
            .split_seed
            .or(recorded_seed)
            .unwrap_or(varsparse::data::DEFAULT_SPLIT_SEED);
        let t0 = Instant::now();
        let mnist = varsparse::data::load_mnist(&dir, split_seed)?;
        eprintln!(
            "data: MNIST from {} (split seed {split_seed}): {} training, {} validation, {} test images ({:.1} s)",
            dir.display(),
            mnist.train.len(),
            mnist.val.len(),
            mnist.test.len(),
            t0.elapsed().as_secs_f64()
        );
        let data = ProtocolData {
            train: labelled(&mnist.train),
            val: labelled(&mnist.val),
            test: labelled(&mnist.test),
            n_classes: 10,
        };
        let t1 = Instant::now();
        let mut on_row = |r: &ClassifyRow| {
            eprintln!(
                "{} N = {}: top-1 {:.2}% ± {:.2}, top-3 {:.2}% ± {:.2} ({} seeds, {:.1} s)",
                r.method.name(),
                r.per_class,
                100.0 * r.top1_mean,
                100.0 * r.top1_std,
                100.0 * r.top3_mean,
                100.0 * r.top3_std,
                r.seeds.len(),
                r.seconds
            );
        };
        let baselines = ProtocolSpec {
            methods: spec
                .methods
                .iter()
                .copied()
                .filter(|m| *m != Method::Codes)
                .collect(),
            ..spec.clone()
        };
        let mut report: Option<ClassifyReport> = None;
        for (m, path) in models.iter().zip(&a.model) {
            if models.len() > 1 {
                eprintln!("codes of {}", path.display());
            }
            let encode = |y: &Array2<f32>| m.encode(y);
            let one = ProtocolSpec {
                methods: vec![Method::Codes],
                ..spec.clone()
            };
            let mut r = run_protocol(&data, Some(&encode as EncodeFn<'_>), &one, &mut on_row)?;
            if models.len() > 1 {
                r.label_encoder(m, path);
            }
            match &mut report {
                None => report = Some(r),
                Some(all) => all.rows.extend(r.rows),
            }
        }
        if !baselines.methods.is_empty() {
            let r = run_protocol(&data, None, &baselines, &mut on_row)?;
            match &mut report {
                None => report = Some(r),
                Some(all) => all.rows.extend(r.rows),
            }
        }
        let mut report =
            report.ok_or_else(|| Error::param("model", "missing", "nothing to run"))?;
        report.spec = spec.clone();
        eprintln!("done in {:.1} s", t1.elapsed().as_secs_f64());
        if a.select_best {
            // one line per model kind: for each N, the encoder of that kind with the best mean
            // validation accuracy (the paper's Figure 9 protocol over its Figure 4 models)
            report.select_best_by_kind();
            for r in report.rows.iter().filter(|r| r.selected.is_some()) {
                eprintln!(
                    "{} N = {}: chose {} (validation top-1 {:.2}%)",
                    r.series(),
                    r.per_class,
                    r.selected.as_deref().unwrap_or(""),
                    100.0 * r.val_top1_mean
                );
            }
        }
        print!("{}", report.to_markdown());

        let out = a.out.clone().unwrap_or_else(|| match a.model.first() {
            Some(m) => parent_dir(m),
            None => PathBuf::from("."),
        });
        create_dir(&out)?;
        let csv_path = out.join("classify.csv");
        let csv = report.to_csv();
        write_atomic(&csv_path, |w| w.write_all(csv.as_bytes()))?;
        let png = out.join("classify.png");
        varsparse::experiments::figures::save_plot(
            &report.plot("Low-data classification on frozen codes (MNIST test)"),
            &png,
        )?;
        let json =
            serde_json::json!({ "models": a.model, "split_seed": split_seed, "report": report });
        write_json(&out.join("classify.json"), &json)?;
        eprintln!(
            "wrote {}, {} and {}",
            csv_path.display(),
            out.join("classify.json").display(),
            png.display()
        );
        Ok(())
    }
}

/// Runs `classify`.
pub fn run(a: Args, device: Device) -> Result<()> {
    device.run(Job(&a, device))
}
