//! Checkpoints: a directory with one `.npy` per array and a `model.json` manifest.
//!
//! ```text
//! model.json                    kind, dimensions, hyper-parameters, epoch, metrics, seeds, version
//! encoder_U.npy  encoder_b.npy  encoder_S.npy
//! decoder_W.npy                 (linear)   or decoder_W1.npy decoder_b1.npy decoder_W2.npy
//! adam_m_encoder_U.npy ...      Adam's first moments, one per parameter
//! adam_v_encoder_U.npy ...      Adam's second moments
//! ```
//!
//! Arrays are float32, C order, shaped as in the library (`W` `(d, l)` with atoms as columns),
//! biases as vectors `(m,)` (format version 2; version 1 stored them as `(1, m)` and still
//! loads). From numpy, in three lines:
//!
//! ```python
//! import json, numpy as np
//! meta = json.load(open("run/best/model.json"))
//! W = np.load("run/best/decoder_W.npy")      # (784, 128): atom i is W[:, i]
//! ```
//!
//! A checkpoint is written into a temporary sibling directory, then renamed into place (the
//! previous one is renamed aside first and removed after), so an interrupted write never leaves a
//! half-written checkpoint under the final name. Should a crash fall between the two renames,
//! [`load`] finds the previous checkpoint under its aside name.
//!
//! The random state needs no saving: the training order of epoch `k` is drawn from the ChaCha8
//! stream `k` of the run's seed ([`crate::train::epoch_order`]).

use std::path::{Path, PathBuf};

use ndarray::Array2;

use crate::backend::Backend;
use crate::data::DataSpec;
use crate::error::{Error, Result};
use crate::io::{
    read_npy_f32, read_npy_vector_f32, write_json, write_npy_f32, write_npy_vector_f32,
};
use crate::model::decoder::{Decoder, DecoderKind};
use crate::model::encoder::Lista;
use crate::model::params::{DecoderParams, ListaParams, ParamSet};
use crate::train::Trainer;
use crate::train::optim::AdamState;
use crate::train::{BestEpoch, EpochSummary, ModelParams, SparseCoder};

/// The manifest's format name.
pub const FORMAT: &str = "varsparse-checkpoint";
/// The manifest's format version.
pub const FORMAT_VERSION: u32 = 2;

/// The format versions [`load`] reads: 1 stored biases as `(1, n)` matrices, 2 as `(n,)`
/// vectors (what numpy and PyTorch users expect).
pub const READABLE_VERSIONS: [u32; 2] = [1, 2];

/// The contents of `model.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The crate version that wrote it.
    pub crate_version: String,
    /// The decoder's kind and hidden width.
    pub kind: DecoderKind,
    /// Input dimension `d`.
    pub input_dim: usize,
    /// Code dimension `l`.
    pub code_dim: usize,
    /// Image shape of a sample, when known.
    pub image_shape: Option<(usize, usize)>,
    /// Every hyper-parameter.
    pub params: ModelParams,
    /// The PSNR pixel scale of the training data.
    pub pixel_scale: f64,
    /// Epochs completed.
    pub epochs_done: usize,
    /// Adam steps taken by the encoder and decoder groups.
    pub adam_steps: [u64; 2],
    /// The FISTA step carried between batches by the step safeguard, once it differs from the
    /// configured one ([`Trainer::fista_step`](crate::train::Trainer::fista_step)). Absent in
    /// checkpoints written before it existed: `None`.
    #[serde(default)]
    pub fista_step: Option<f64>,
    /// The best epoch so far.
    pub best: Option<BestEpoch>,
    /// The last epoch's summary (training and validation metrics).
    pub metrics: Option<EpochSummary>,
    /// How the random streams are derived (informational).
    pub rng: String,
    /// A description of the training data.
    pub data: Option<String>,
    /// The array files, in the order they are read.
    pub files: Vec<String>,
}

/// A model's arrays on the host, by name: the parameters and, when the checkpoint has them,
/// Adam's first and second moments.
struct HostArrays {
    encoder: ListaParams<Array2<f32>>,
    decoder: DecoderParams<Array2<f32>>,
    /// `(m, v)` of the encoder and decoder groups.
    moments: Option<(HostGroup, HostGroup)>,
}

type HostGroup = (ListaParams<Array2<f32>>, DecoderParams<Array2<f32>>);

/// The file stems of the parameters of a group pair, each prefixed: `encoder_U`, ...,
/// `decoder_W`, ... (the names of [`ListaParams`] and [`DecoderParams`]).
fn group_entries<'a>(
    prefix: &str,
    (encoder, decoder): (&'a ListaParams<Array2<f32>>, &'a DecoderParams<Array2<f32>>),
) -> Vec<Entry<'a>> {
    let enc = encoder.named().into_iter().map(|(n, a)| Entry {
        stem: format!("{prefix}encoder_{n}"),
        array: a,
        vector: ListaParams::<()>::VECTORS.contains(&n),
    });
    let dec = decoder.named().into_iter().map(|(n, a)| Entry {
        stem: format!("{prefix}decoder_{n}"),
        array: a,
        vector: DecoderParams::<()>::VECTORS.contains(&n),
    });
    enc.chain(dec).collect()
}

/// One array of a checkpoint: its file stem, and whether it is stored as a vector.
struct Entry<'a> {
    stem: String,
    array: &'a Array2<f32>,
    vector: bool,
}

impl HostArrays {
    /// Every array with its file stem: parameters, then first moments, then second moments.
    fn entries(&self) -> Vec<Entry<'_>> {
        let mut all = group_entries("", (&self.encoder, &self.decoder));
        if let Some(((me, md), (ve, vd))) = &self.moments {
            all.extend(group_entries("adam_m_", (me, md)));
            all.extend(group_entries("adam_v_", (ve, vd)));
        }
        all
    }
}

/// Reads a group pair whose files are `{prefix}encoder_*` and `{prefix}decoder_*`.
fn read_group(dir: &Path, prefix: &str, kind: DecoderKind) -> Result<HostGroup> {
    // biases are (n,) vectors from version 2 on, (1, n) matrices before; both read as (1, n)
    let read = |stem: String, vector: bool| {
        let path = dir.join(format!("{stem}.npy"));
        let a = if vector {
            read_npy_vector_f32(&path).map(|v| v.insert_axis(ndarray::Axis(0)))
        } else {
            read_npy_f32(&path)
        };
        a.map_err(|e| ckpt_err(&path, e.to_string()))
    };
    Ok((
        ListaParams::try_build(|n| {
            read(
                format!("{prefix}encoder_{n}"),
                ListaParams::<()>::VECTORS.contains(&n),
            )
        })?,
        DecoderParams::try_build(kind, |n| {
            read(
                format!("{prefix}decoder_{n}"),
                DecoderParams::<()>::VECTORS.contains(&n),
            )
        })?,
    ))
}

/// The file stems of a checkpoint of `kind`: parameters, then first and second moments.
fn file_stems(kind: DecoderKind) -> (Vec<String>, Vec<String>) {
    let stems = |prefix: &str| -> Vec<String> {
        let enc = ListaParams::<()>::NAMES
            .iter()
            .map(|n| format!("{prefix}encoder_{n}"));
        let dec = DecoderParams::<()>::names(kind)
            .iter()
            .map(|n| format!("{prefix}decoder_{n}"));
        enc.chain(dec).collect()
    };
    let mut moments = stems("adam_m_");
    moments.extend(stems("adam_v_"));
    (stems(""), moments)
}

fn ckpt_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Writes `model` to `dir` atomically.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn save<B: Backend<f32>>(model: &SparseCoder<B>, dir: &Path) -> Result<()> {
    let be = &model.be;
    let t = &model.trainer;
    let kind = t.decoder.kind();
    let download = |p: &DecoderParams<B::Mat>| p.try_map(|x| be.download(x));
    let download_e = |p: &ListaParams<B::Mat>| p.try_map(|x| be.download(x));
    let host = HostArrays {
        encoder: t.encoder.to_host(be)?,
        decoder: t.decoder.to_host(be)?,
        moments: Some((
            (download_e(&t.encoder_opt.m)?, download(&t.decoder_opt.m)?),
            (download_e(&t.encoder_opt.v)?, download(&t.decoder_opt.v)?),
        )),
    };
    let entries = host.entries();

    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        crate_version: env!("CARGO_PKG_VERSION").into(),
        kind,
        input_dim: model.input_dim,
        code_dim: t.decoder.code_dim(),
        image_shape: model.image_shape,
        params: model.params.clone(),
        pixel_scale: model.pixel_scale,
        epochs_done: model.epochs_done,
        adam_steps: [t.encoder_opt.step, t.decoder_opt.step],
        fista_step: t.carried_step(),
        best: model.best,
        metrics: model.last.clone(),
        rng: "ChaCha8: initialisation from seed_from_u64(seed); epoch k's order from stream k"
            .into(),
        data: model.data_description.clone(),
        files: entries.iter().map(|e| format!("{}.npy", e.stem)).collect(),
    };

    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|source| Error::Io {
        action: "creating",
        path: parent.to_path_buf(),
        source,
    })?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let aside = parent.join(format!("{name}.old"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|source| Error::Io {
        action: "creating",
        path: tmp.clone(),
        source,
    })?;
    let written = (|| {
        for e in &entries {
            let path = tmp.join(format!("{}.npy", e.stem));
            if e.vector {
                write_npy_vector_f32(&path, &e.array.iter().copied().collect())?;
            } else {
                write_npy_f32(&path, e.array)?;
            }
        }
        write_json(&tmp.join("model.json"), &manifest)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&aside);
        std::fs::rename(dir, &aside).map_err(io("moving aside", dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io("renaming into place", dir))?;
    let _ = std::fs::remove_dir_all(&aside);
    Ok(())
}

/// Reads the manifest of a checkpoint directory.
///
/// # Errors
/// [`Error::Checkpoint`] if it is missing, not JSON, or not a varsparse checkpoint.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("model.json");
    let m: Manifest = crate::io::read_json(&path).map_err(|e| match e {
        Error::Json { detail, .. } => ckpt_err(&path, format!("corrupt manifest: {detail}")),
        other => ckpt_err(
            dir,
            format!(
                "cannot read model.json ({other}); is this a varsparse checkpoint directory (e.g. RUN/best)?"
            ),
        ),
    })?;
    if m.format != FORMAT || !READABLE_VERSIONS.contains(&m.format_version) {
        return Err(ckpt_err(
            &path,
            format!(
                "format {} v{} is not {FORMAT} v1 or v2 (this build of varsparse writes v{FORMAT_VERSION})",
                m.format, m.format_version
            ),
        ));
    }
    Ok(m)
}

/// The data a checkpoint records (the [`DataSpec`] a run was trained on, as the CLI's `train`
/// writes it into [`FitOptions::data_description`](crate::train::FitOptions)).
///
/// # Errors
/// [`Error::Checkpoint`] for an unreadable manifest; [`Error::InvalidParameter`] when the
/// checkpoint records no data; [`Error::Json`] when what it records is not a [`DataSpec`].
pub fn recorded_data(dir: &Path) -> Result<DataSpec> {
    let m = read_manifest(dir)?;
    let text = m.data.ok_or_else(|| {
        Error::param(
            "data",
            "unknown",
            "the checkpoint does not record its data; pass --input or the data flags",
        )
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: dir.join("model.json"),
        detail: format!("recorded data spec: {e}"),
    })
}

/// Where a run resumes from ([`resume_from`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeFrom {
    /// The checkpoint directory to load.
    pub checkpoint: PathBuf,
    /// The run directory it belongs to (its parent), where training continues by default.
    pub run_dir: PathBuf,
    /// A warning for the user, when resuming from this checkpoint discards work (a `best/`
    /// checkpoint: the epochs after the best one are trained again, differently).
    pub warning: Option<String>,
}

/// Resolves what a user names to resume: a run directory `RUN` (resumes from `RUN/latest`, the
/// only checkpoint that continues a run bit-identically), or a checkpoint directory
/// (`RUN/latest`, `RUN/best`, or any other). Resuming from a directory named `best` gives a
/// warning: the epochs trained after the best one are discarded.
///
/// # Errors
/// [`Error::Checkpoint`] when `path` is neither a run directory with a `latest/` checkpoint
/// nor a checkpoint directory.
pub fn resume_from(path: &Path) -> Result<ResumeFrom> {
    let has_ckpt = |d: &Path| {
        d.join("model.json").is_file()
            || d.file_name()
                .map(|n| {
                    d.with_file_name(format!("{}.old", n.to_string_lossy()))
                        .join("model.json")
                        .is_file()
                })
                .unwrap_or(false)
    };
    let parent = |d: &Path| match d.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !path.join("model.json").is_file() && has_ckpt(&path.join("latest")) {
        return Ok(ResumeFrom {
            checkpoint: path.join("latest"),
            run_dir: path.to_path_buf(),
            warning: None,
        });
    }
    if !has_ckpt(path) {
        return Err(ckpt_err(
            path,
            "is neither a run directory with a latest/ checkpoint nor a checkpoint directory \
             (model.json); resume with --resume RUN or --resume RUN/latest",
        ));
    }
    let warning = (path.file_name().is_some_and(|n| n == "best")).then(|| {
        let epoch = read_manifest(path)
            .map(|m| format!(" (epoch {})", m.epochs_done))
            .unwrap_or_default();
        format!(
            "resuming from the best checkpoint {}{epoch}: the epochs trained after it are \
             discarded and trained again; resume from {} to continue the run",
            path.display(),
            parent(path).join("latest").display()
        )
    });
    Ok(ResumeFrom {
        checkpoint: path.to_path_buf(),
        run_dir: parent(path),
        warning,
    })
}

/// Loads a checkpoint onto backend `be`; falls back to the `NAME.old` sibling a crash between
/// [`save`]'s two renames may leave.
///
/// # Errors
/// [`Error::Checkpoint`] naming the file for a missing, corrupt or inconsistent checkpoint.
pub fn load<B: Backend<f32>>(be: B, dir: &Path) -> Result<SparseCoder<B>> {
    let dir: PathBuf = if !dir.exists() {
        let aside = dir.with_file_name(format!(
            "{}.old",
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        if aside.join("model.json").exists() {
            aside
        } else {
            return Err(ckpt_err(dir, "no such directory"));
        }
    } else {
        dir.to_path_buf()
    };
    let m = read_manifest(&dir)?;
    if m.kind != m.params.kind || m.code_dim != m.params.code_dim {
        return Err(ckpt_err(
            &dir,
            "manifest's kind or code dimension contradicts its parameters",
        ));
    }
    // The Adam moments are optional as a group: a checkpoint stripped of them (weights only,
    // e.g. for shipping a trained model) loads for inference but cannot be resumed.
    let (_, moment_files) = file_stems(m.kind);
    let moments_present = moment_files
        .iter()
        .filter(|n| dir.join(format!("{n}.npy")).exists())
        .count();
    let optimizer_state = match moments_present {
        0 => false,
        n if n == moment_files.len() => true,
        _ => {
            return Err(ckpt_err(
                &dir,
                format!(
                    "only {moments_present} of the {} Adam moment files are present (keep all or none)",
                    moment_files.len()
                ),
            ));
        }
    };
    if let Some(step) = m.fista_step
        && !(step.is_finite() && step > 0.0)
    {
        return Err(ckpt_err(
            &dir,
            format!("model.json: fista_step is {step}; it must be finite and > 0"),
        ));
    }
    let (encoder, decoder) = read_group(&dir, "", m.kind)?;
    let moments = if optimizer_state {
        Some((
            read_group(&dir, "adam_m_", m.kind)?,
            read_group(&dir, "adam_v_", m.kind)?,
        ))
    } else {
        None
    };
    let host = HostArrays {
        encoder,
        decoder,
        moments,
    };
    let wrap = |e: Error| ckpt_err(&dir, e.to_string());
    let encoder = Lista::from_params(&be, &host.encoder, m.params.encoder_iters).map_err(wrap)?;
    let decoder = Decoder::from_params(&be, &host.decoder).map_err(wrap)?;
    if encoder.input_dim() != m.input_dim
        || decoder.input_dim() != m.input_dim
        || encoder.code_dim() != m.code_dim
        || decoder.kind() != m.kind
    {
        return Err(ckpt_err(
            &dir,
            "array shapes contradict the manifest's dimensions",
        ));
    }
    let same_shapes = |a: Vec<(&str, &Array2<f32>)>, b: Vec<(&str, &Array2<f32>)>| {
        a.iter().zip(&b).all(|(x, y)| x.1.dim() == y.1.dim())
    };
    let upload_e = |p: &ListaParams<Array2<f32>>| p.try_map(|x| be.upload(x.view()));
    let upload_d = |p: &DecoderParams<Array2<f32>>| p.try_map(|x| be.upload(x.view()));
    let (enc_opt, dec_opt) = match &host.moments {
        Some(((me, md), (ve, vd))) => {
            for (e, d) in [(me, md), (ve, vd)] {
                if !same_shapes(e.named(), host.encoder.named())
                    || !same_shapes(d.named(), host.decoder.named())
                {
                    return Err(ckpt_err(
                        &dir,
                        "an Adam moment's shape differs from its parameter's",
                    ));
                }
            }
            (
                AdamState {
                    m: upload_e(me)?,
                    v: upload_e(ve)?,
                    step: m.adam_steps[0],
                },
                AdamState {
                    m: upload_d(md)?,
                    v: upload_d(vd)?,
                    step: m.adam_steps[1],
                },
            )
        }
        None => (
            AdamState {
                m: encoder.zeros_like_params(&be)?,
                v: encoder.zeros_like_params(&be)?,
                step: m.adam_steps[0],
            },
            AdamState {
                m: decoder.zeros_like_params(&be)?,
                v: decoder.zeros_like_params(&be)?,
                step: m.adam_steps[1],
            },
        ),
    };
    let mut trainer = Trainer::from_parts(
        encoder,
        decoder,
        enc_opt,
        dec_opt,
        m.params.step_config(m.pixel_scale),
    )
    .map_err(wrap)?;
    trainer.set_carried_step(m.fista_step);
    Ok(SparseCoder {
        be,
        params: m.params,
        trainer,
        input_dim: m.input_dim,
        pixel_scale: m.pixel_scale,
        image_shape: m.image_shape,
        epochs_done: m.epochs_done,
        best: m.best,
        last: m.metrics,
        data_description: m.data,
        optimizer_state,
    })
}
