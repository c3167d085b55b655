//! FISTA over many rows in consecutive batches ([`solve_batches`](crate::solve::fista::solve_batches)), each batch's length the
//! next one's forecast.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::decoder::Decoder;
use crate::scalar::Scalar;

use super::params::FistaParams;
use super::report::BatchReport;
use super::solve;
use super::workspace::FistaWorkspace;

/// FISTA over the rows of `y` `(N, d)` in consecutive batches of `batch_size` (the last may be
/// smaller; the variance hinge is computed per batch), warm-started from the matching rows of
/// `warm`. Returns the codes `(N, l)` and one report per batch. Each batch's
/// [`FistaReport::mean_steps`](crate::solve::fista::FistaReport::mean_steps) is the next one's forecast ([`FistaWorkspace::set_forecast`](crate::solve::fista::FistaWorkspace::set_forecast)).
///
/// # Errors
/// As [`solve`](crate::solve::fista::solve); also [`Error::InvalidParameter`] for `batch_size = 0`, [`Error::Shape`] if
/// `warm` does not have `N` rows, and [`Error::NonFiniteInput`] naming the row and column of the
/// first NaN or infinity in `y` or `warm`.
pub fn solve_batches<'a, F: Scalar, B: Backend<F>>(
    be: &B,
    decoder: &Decoder<F, B>,
    y: impl ndarray::AsArray<'a, F, ndarray::Ix2>,
    warm: Option<&ndarray::Array2<F>>,
    params: &FistaParams,
    batch_size: usize,
) -> Result<(ndarray::Array2<F>, Vec<BatchReport>)> {
    let y: ndarray::ArrayView2<'a, F> = y.into();
    params.validate()?;
    if batch_size == 0 {
        return Err(Error::param("batch size", 0, "must be at least 1"));
    }
    let (n, d) = y.dim();
    let l = decoder.code_dim();
    if d != decoder.input_dim() {
        return Err(Error::shape(
            "input Y",
            format!(
                "Y is {:?} but the decoder's atoms have {} entries (d)",
                y.dim(),
                decoder.input_dim()
            ),
        ));
    }
    if let Some(e) = warm
        && e.dim() != (n, l)
    {
        return Err(Error::shape(
            "warm start",
            format!("is {:?}, expected ({n}, {l})", e.dim()),
        ));
    }
    crate::scalar::check_finite("Y", &y)?;
    if let Some(e) = warm {
        crate::scalar::check_finite("warm start", e)?;
    }
    let mut codes = ndarray::Array2::<F>::zeros((n, l));
    let mut reports = Vec::with_capacity(n.div_ceil(batch_size));
    let mut ws: Option<FistaWorkspace<F, B>> = None;
    let mut forecast = None;
    let mut start = 0;
    while start < n {
        let end = (start + batch_size).min(n);
        let rows = end - start;
        if ws.as_ref().map(|w| w.batch_size()) != Some(rows) {
            ws = Some(FistaWorkspace::new(be, decoder, rows)?);
        }
        let ws = ws
            .as_mut()
            .ok_or_else(|| Error::shape("FISTA", "no workspace"))?;
        let yb = be.upload(y.slice(ndarray::s![start..end, ..]))?;
        let eb = match warm {
            Some(e) => Some(be.upload(e.slice(ndarray::s![start..end, ..]))?),
            None => None,
        };
        // each batch forecasts the next one's length (the Gram path's choice, see
        // FistaWorkspace::set_forecast)
        ws.set_forecast(forecast)?;
        let report = solve(be, decoder, &yb, eb.as_ref(), params, ws).map_err(|e| match e {
            Error::InvalidParameter {
                name: "batch size",
                value,
                reason,
            } => Error::InvalidParameter {
                name: "batch size",
                value,
                reason: format!("{reason} (rows {start}..{end} form a batch of {rows})"),
            },
            other => other,
        })?;
        codes
            .slice_mut(ndarray::s![start..end, ..])
            .assign(&be.download(ws.codes())?);
        forecast = Some(report.mean_steps);
        reports.push(BatchReport { start, end, report });
        start = end;
    }
    Ok((codes, reports))
}
