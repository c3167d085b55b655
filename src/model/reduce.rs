//! Gradients of a batch whose rows are split between the ranks of a [`Comm`]
//! (docs/SCALING.md): each rank computes its rows' contribution, already scaled for the whole
//! batch, and one reduction adds the contributions in rank order in `f64`.
//!
//! A bias's gradient is a column sum over the batch's rows. One process adds its rows in `f64`
//! and rounds once ([`Backend::col_sums`]); here each rank's `f64` column sums are reduced
//! *before* rounding, so the result is the one-process value (to the last bit, unless the two
//! `f64` sums round to different sides of an `F` boundary). The weights' gradients are
//! products over the rows (one GEMM per rank, rounded to `F`, then added): they differ from one
//! process by the order of their sums.

use crate::backend::Backend;
use crate::comm::Comm;
use crate::error::Result;
use crate::scalar::Scalar;

/// One gradient's contribution from this rank's rows.
pub(crate) enum Part<'a, M> {
    /// A matrix already computed from this rank's rows; replaced by the sum over the ranks.
    Sum(&'a mut M),
    /// `out = alpha * (column sums of src over every rank's rows)`, a row vector.
    ColSums {
        /// The scale applied after the sum (as [`Backend::col_sums`]'s `alpha`).
        alpha: f64,
        /// This rank's rows.
        src: &'a M,
        /// The whole batch's column sums.
        out: &'a mut M,
    },
}

/// Fills every [`Part`] with the whole batch's value and replaces each of `scalars` (this rank's
/// contributions) by its sum over the ranks, in one reduction. On one process: the column sums
/// through [`Backend::col_sums`], everything else unchanged.
///
/// # Errors
/// A backend or communication error.
pub(crate) fn sum_over_ranks<F: Scalar, B: Backend<F>>(
    be: &B,
    comm: &dyn Comm,
    parts: &mut [Part<'_, B::Mat>],
    scalars: &mut [f64],
) -> Result<()> {
    if comm.size() == 1 {
        for p in parts.iter_mut() {
            if let Part::ColSums { alpha, src, out } = p {
                be.col_sums(F::c(*alpha), src, F::zero(), out)?;
            }
        }
        return Ok(());
    }
    let mut buf = Vec::new();
    let mut shapes = Vec::with_capacity(parts.len());
    for p in parts.iter() {
        match p {
            Part::Sum(m) => {
                let h = be.download(m)?;
                shapes.push(h.dim());
                buf.extend(h.iter().map(|v| v.f()));
            }
            Part::ColSums { src, .. } => {
                let h = be.download(src)?;
                let at = buf.len();
                buf.resize(at + h.ncols(), 0.0);
                for row in h.rows() {
                    for (s, &v) in buf[at..].iter_mut().zip(row.iter()) {
                        *s += v.f();
                    }
                }
                shapes.push((1, h.ncols()));
            }
        }
    }
    let at_scalars = buf.len();
    buf.extend_from_slice(scalars);
    comm.sum_f64(&mut buf)?;
    scalars.copy_from_slice(&buf[at_scalars..]);
    let mut at = 0;
    for (p, &(r, c)) in parts.iter_mut().zip(&shapes) {
        let vals = &buf[at..at + r * c];
        at += r * c;
        let (host, out) = match p {
            Part::Sum(m) => (
                ndarray::Array2::from_shape_fn((r, c), |(i, j)| F::c(vals[i * c + j])),
                m,
            ),
            // as Backend::col_sums: the f64 sum rounded, then scaled
            Part::ColSums { alpha, out, .. } => {
                let a = F::c(*alpha);
                (
                    ndarray::Array2::from_shape_fn((1, c), |(_, j)| a * F::c(vals[j])),
                    out,
                )
            }
        };
        **out = be.upload(host.view())?;
    }
    Ok(())
}
