//! GPU benchmark: FISTA throughput and MNIST epoch times on the CUDA backend, next to the CPU
//! backend on the same machine.
//!
//!     cargo run --release --features cuda --example cuda_bench
//!
//! FISTA: synthetic MNIST-shaped batches (n 250, d 784, l 128), a fixed 50 iterations with every
//! sample active, medians of 7 runs after one warm-up (the GPU is synchronised before the clock
//! is read). Epochs: one epoch of `mnist-vdl` and `mnist-vdl-nl` on the full 55,000 images.

use std::time::Instant;

use ndarray::Array2;
use varsparse::backend::{Backend, Cpu, Cuda};
use varsparse::data::DataSpec;
use varsparse::model::decoder::{Decoder, DecoderKind};
use varsparse::model::energy::EnergyParams;
use varsparse::rng::{linear_uniform, rng};
use varsparse::solve::fista::{self, FistaParams, FistaWorkspace, GradientPath, StepRule};
use varsparse::train::FitOptions;
use varsparse::{ModelParams, Preset};

fn fista_rate<B: Backend<f32>>(
    be: &B,
    kind: DecoderKind,
    sync: &dyn Fn(),
) -> varsparse::Result<f64> {
    let (n, d, l) = (250, 784, 128);
    let host: Decoder<f32, Cpu> = Decoder::init(&Cpu, kind, d, l, &mut rng(4))?;
    let dec = Decoder::from_params(be, &host.to_host(&Cpu)?)?;
    let w = linear_uniform::<f32>(&mut rng(1), d, l, l);
    let z = linear_uniform::<f32>(&mut rng(2), n, l, 1).mapv(|v| (v - 0.8).max(0.0) * 5.0);
    let y: Array2<f32> = z.dot(&w.t()) + linear_uniform::<f32>(&mut rng(3), n, d, 1) * 0.1;
    let y = be.upload(y.view())?;
    let e = be.upload(Array2::<f32>::from_elem((n, l), 0.05).view())?;
    let params = FistaParams {
        energy: EnergyParams {
            lambda: 0.02,
            beta: 10.0,
            threshold: 0.5,
            gamma: 5.0,
        },
        step: StepRule::Constant { eta: 0.5 },
        max_iter: 50,
        tol: 0.0,
        path: GradientPath::Auto,
        ..FistaParams::default()
    };
    let mut ws = FistaWorkspace::new(be, &dec, n)?;
    fista::solve(be, &dec, &y, Some(&e), &params, &mut ws)?;
    sync();
    let mut times = vec![];
    for _ in 0..7 {
        let t0 = Instant::now();
        fista::solve(be, &dec, &y, Some(&e), &params, &mut ws)?;
        sync();
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(n as f64 / times[3])
}

fn main() -> varsparse::Result<()> {
    let gpu = Cuda::new(0)?;
    let sync = || gpu.synchronize().expect("synchronize");
    println!("| FISTA, 50 iterations, n 250 | CPU samples/s | GPU samples/s |");
    println!("|---|---|---|");
    for (name, kind) in [
        ("linear (Gram path)", DecoderKind::Linear),
        (
            "one hidden layer, m 1024",
            DecoderKind::OneHidden { hidden: 1024 },
        ),
    ] {
        let c = fista_rate(&Cpu, kind, &|| {})?;
        let g = fista_rate(&gpu, kind, &sync)?;
        println!("| {name} | {c:.0} | {g:.0} |");
    }
    let data = DataSpec::Mnist {
        dir: DataSpec::default_dir().join("mnist"),
        split_seed: 0,
        train_limit: None,
    }
    .load()?;
    println!(
        "| epoch (55,000 images, validation included) | CPU s | GPU s | GPU val PSNR | CPU val PSNR |"
    );
    println!("|---|---|---|---|---|");
    for p in [Preset::MnistVdl, Preset::MnistVdlNl] {
        let params = ModelParams::preset(p).epochs(1).validate()?;
        let t0 = Instant::now();
        let mc = params.fit_with(Cpu, &data.train_data(), &FitOptions::default(), &mut ())?;
        let tc = t0.elapsed().as_secs_f64();
        let g = Cuda::new(0)?;
        let t1 = Instant::now();
        let mg = params.fit_with(g, &data.train_data(), &FitOptions::default(), &mut ())?;
        mg.backend().synchronize()?;
        let tg = t1.elapsed().as_secs_f64();
        let (pc, pg) = (
            mc.last_epoch().map_or(f64::NAN, |s| s.val.psnr),
            mg.last_epoch().map_or(f64::NAN, |s| s.val.psnr),
        );
        println!("| {} | {tc:.2} | {tg:.2} | {pg:.2} | {pc:.2} |", p.name());
    }
    Ok(())
}
