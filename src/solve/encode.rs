//! Encoding many samples against a fixed decoder with the best solver that applies:
//! [`encode`] picks the exact active-set lasso ([`crate::solve::lasso`]) when the problem is a
//! lasso (a linear dictionary, no variance hinge, no proximity term: `beta = gamma = 0`) and
//! FISTA otherwise, and says which ran.
//!
//! ```
//! use ndarray::{Array2, ArrayView2, AsArray, Ix2};
//! use varsparse::solve::encode::{Solver, encode};
//! use varsparse::{Cpu, Decoder, EnergyParams, FistaParams};
//!
//! let w = Array2::<f32>::from_shape_fn((6, 3), |(i, j)| if i % 3 == j { 0.7 } else { 0.1 });
//! let y = Array2::<f32>::from_shape_fn((4, 6), |(i, j)| ((i + j) % 3) as f32);
//! let dict = Decoder::linear(&Cpu, &w)?;
//! let params = FistaParams {
//!     energy: EnergyParams { lambda: 0.01, ..EnergyParams::default() },
//!     ..FistaParams::default()
//! };
//! let out = encode(&Cpu, &dict, &y, None, &params, 250, Solver::Auto)?;
//! assert_eq!(out.solver, Solver::Exact); // a plain lasso: solved exactly
//! assert_eq!(out.codes.dim(), (4, 3));
//! # Ok::<(), varsparse::Error>(())
//! ```

use ndarray::{Array2, ArrayView2, AsArray, Ix2};

use crate::backend::Backend;
use crate::comm::Comm;
use crate::error::{Error, Result};
use crate::model::decoder::Decoder;
use crate::model::params::DecoderParams;
use crate::solve::fista::{self, BatchReport, FistaParams};
use crate::solve::lasso::{self, LassoReport};

/// Which solver encodes. Names (`auto`, `exact`, `fista`) are serde's, shared with the CLI's
/// `--solver` (a `clap::ValueEnum` derived from these variants, feature `cli`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Solver {
    /// The exact solver where it applies ([`Solver::applies`]), FISTA otherwise.
    #[default]
    Auto,
    /// The exact active-set lasso; an error where it does not apply.
    Exact,
    /// FISTA, whatever the problem.
    Fista,
}

impl Solver {
    /// The names `auto`, `exact`, `fista`.
    pub const NAMES: [&'static str; 3] = ["auto", "exact", "fista"];

    /// Whether the exact solver applies: a linear dictionary and an energy without the variance
    /// hinge and the proximity term (`beta = gamma = 0`), so that every sample's codes solve an
    /// independent lasso. (The step rule, the tolerance and the warm start are FISTA's and do
    /// not change that problem.)
    pub fn applies<F: crate::scalar::Scalar, B: Backend<F>>(
        decoder: &Decoder<F, B>,
        params: &FistaParams,
    ) -> bool {
        matches!(decoder.params(), DecoderParams::Linear { .. })
            && params.energy.beta == 0.0
            && params.energy.gamma == 0.0
    }
}

impl std::str::FromStr for Solver {
    type Err = Error;

    fn from_str(s: &str) -> Result<Solver> {
        match s {
            "auto" => Ok(Solver::Auto),
            "exact" => Ok(Solver::Exact),
            "fista" => Ok(Solver::Fista),
            _ => Err(Error::param("solver", s, "expected auto, exact or fista")),
        }
    }
}

impl std::fmt::Display for Solver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Solver::Auto => "auto",
            Solver::Exact => "exact",
            Solver::Fista => "fista",
        })
    }
}

/// What [`encode`] did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Encoded {
    /// The codes `(n, l)`.
    #[serde(skip)]
    pub codes: Array2<f32>,
    /// The solver that ran: [`Solver::Exact`] or [`Solver::Fista`].
    pub solver: Solver,
    /// The exact solver's report, when it ran.
    pub lasso: Option<LassoReport>,
    /// FISTA's per-batch reports, when it ran.
    pub batches: Vec<BatchReport>,
}

impl Encoded {
    /// The mean energy per sample at the codes (the lasso objective for the exact solver).
    pub fn mean_energy(&self) -> f64 {
        match &self.lasso {
            Some(r) => r.mean_objective,
            None => {
                let n: usize = self.batches.iter().map(|b| b.end - b.start).sum();
                let e: f64 = self.batches.iter().map(|b| b.report.total_energy).sum();
                e / n.max(1) as f64
            }
        }
    }

    /// The reports of every rank of `comm`, each holding the rows from `start` of one input
    /// (as [`crate::comm::shard_blocks`] splits it), combined as one process encoding the whole
    /// input would report them: FISTA's batches in order with their rows counted from the
    /// input's first, the exact solver's reports combined ([`LassoReport::combine`]). The
    /// codes stay with each rank: the result's are empty `(0, l)`.
    ///
    /// # Errors
    /// A communication error; [`Error::Comm`] if the ranks ran different solvers.
    pub fn gather_reports(&self, start: usize, comm: &dyn Comm) -> Result<Encoded> {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Part {
            solver: Solver,
            lasso: Option<LassoReport>,
            batches: Vec<BatchReport>,
        }
        let mine = Part {
            solver: self.solver,
            lasso: self.lasso,
            batches: self
                .batches
                .iter()
                .map(|b| BatchReport {
                    start: b.start + start,
                    end: b.end + start,
                    ..b.clone()
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&mine)
            .map_err(|e| Error::Comm(format!("encoding this rank's report: {e}")))?;
        let mut parts = Vec::with_capacity(comm.size());
        for (r, b) in comm.all_gather_bytes(&bytes)?.iter().enumerate() {
            let p: Part = serde_json::from_slice(b)
                .map_err(|e| Error::Comm(format!("rank {r}'s report: {e}")))?;
            if p.solver != self.solver {
                return Err(Error::Comm(format!(
                    "rank {r} ran {:?}, this rank {:?}",
                    p.solver, self.solver
                )));
            }
            parts.push(p);
        }
        let lassos: Vec<LassoReport> = parts.iter().filter_map(|p| p.lasso).collect();
        Ok(Encoded {
            codes: Array2::zeros((0, self.codes.ncols())),
            solver: self.solver,
            lasso: (!lassos.is_empty()).then(|| LassoReport::combine(&lassos)),
            batches: parts.into_iter().flat_map(|p| p.batches).collect(),
        })
    }

    /// FISTA's mean steps per sample (0 for the exact solver).
    pub fn mean_steps(&self) -> f64 {
        let n: usize = self.batches.iter().map(|b| b.end - b.start).sum();
        let s: f64 = self
            .batches
            .iter()
            .map(|b| b.report.mean_steps * (b.end - b.start) as f64)
            .sum();
        s / n.max(1) as f64
    }
}

/// Codes of the rows of `y` `(n, d)` for `decoder`, with the solver `solver` selects: the exact
/// lasso (on the host, over the CPU pool's threads; signed codes when `params.nonneg` is false)
/// or [`fista::solve_batches`] in batches of `batch_size` warm-started from `warm`.
///
/// # Errors
/// [`Error::InvalidParameter`] for [`Solver::Exact`] where it does not apply (naming why);
/// otherwise the solver's errors.
pub fn encode<'a, B: Backend<f32>>(
    be: &B,
    decoder: &Decoder<f32, B>,
    y: impl AsArray<'a, f32, Ix2>,
    warm: Option<&Array2<f32>>,
    params: &FistaParams,
    batch_size: usize,
    solver: Solver,
) -> Result<Encoded> {
    let y: ArrayView2<'a, f32> = y.into();
    params.validate()?;
    let exact = match solver {
        Solver::Fista => false,
        Solver::Auto => Solver::applies(decoder, params),
        Solver::Exact => {
            if !Solver::applies(decoder, params) {
                return Err(Error::param(
                    "solver",
                    "exact",
                    "the exact solver needs a linear dictionary and beta = gamma = 0 (a lasso); \
                     use fista or auto",
                ));
            }
            true
        }
    };
    if exact {
        let DecoderParams::Linear { w } = decoder.params() else {
            return Err(Error::param("solver", "exact", "needs a linear dictionary"));
        };
        if let Some(e) = warm
            && e.dim() != (y.nrows(), decoder.code_dim())
        {
            return Err(Error::shape(
                "warm start",
                format!(
                    "is {:?}, expected ({}, {})",
                    e.dim(),
                    y.nrows(),
                    decoder.code_dim()
                ),
            ));
        }
        let w = be.download(w)?;
        let (codes, report) = lasso::lasso(&w, y, params.energy.lambda, params.nonneg)?;
        return Ok(Encoded {
            codes,
            solver: Solver::Exact,
            lasso: Some(report),
            batches: Vec::new(),
        });
    }
    let (codes, batches) = fista::solve_batches(be, decoder, y, warm, params, batch_size)?;
    Ok(Encoded {
        codes,
        solver: Solver::Fista,
        lasso: None,
        batches,
    })
}
