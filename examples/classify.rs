//! Low-data classification with the library API: a linear softmax classifier on raw MNIST pixels
//! from the first N training images of each class, the epoch of lowest validation loss kept
//! (the paper's `raw` baseline of Figure 9, small: N = 1, 10; 2 seeds; 20 epochs; 1,000
//! validation and 2,000 test images).
//!
//!     cargo run --release --example classify

use ndarray::Axis;
use varsparse::data::DataSpec;
use varsparse::experiments::classify::{ClassifyParams, first_per_class, train_linear};

fn main() -> varsparse::Result<()> {
    let data = DataSpec::Mnist {
        dir: DataSpec::default_dir().join("mnist"),
        split_seed: varsparse::data::DEFAULT_SPLIT_SEED,
        train_limit: None,
    }
    .load()?;
    let labels = |s: &varsparse::data::Split| -> Vec<usize> {
        s.labels
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|&l| usize::from(l))
            .collect()
    };
    let val = data.val.head(1000);
    let test = data.split("test")?.head(2000);
    let (val_y, test_y) = (labels(&val), labels(&test));
    let train_labels = data.train.labels.as_deref().unwrap_or_default();
    for n in [1, 10] {
        let idx = first_per_class(train_labels, n)?;
        let x = data.train.x.select(Axis(0), &idx);
        let y: Vec<usize> = idx.iter().map(|&i| usize::from(train_labels[i])).collect();
        for seed in 0..2 {
            let params = ClassifyParams {
                epochs: 20,
                seed,
                ..ClassifyParams::default()
            };
            let fit = train_linear(x.view(), &y, val.x.view(), &val_y, 10, &params)?;
            let top1 = fit.model.accuracy_topk(test.x.view(), &test_y, 1)?;
            println!(
                "N = {n:>2} per class, seed {seed}: best epoch {:>2}, top-1 test accuracy {:.1}%",
                fit.history.best_epoch,
                100.0 * top1
            );
        }
    }
    Ok(())
}
