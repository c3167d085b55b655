//! Dense products: [`mat_mul`] (ndarray's GEMM, split over the thread pool at multiples of the
//! kernel tile, or the sparse path of [`super::sparse`] when the left operand is mostly zeros),
//! the blocked transpose, and OpenBLAS's thread count.

use ndarray::{ArrayView2, Axis};

use super::sparse::{SparseJob, mostly_zero, run_sparse_job};
use super::threads;
use crate::scalar::Scalar;

/// Sets OpenBLAS's thread count (a no-op without the `openblas` feature).
///
/// matrixmultiply, the default GEMM, runs on the calling thread; varsparse's own pool
/// ([`threads::with_threads`]) splits the work between threads.
pub fn set_blas_threads(n: usize) {
    #[cfg(feature = "openblas")]
    {
        unsafe extern "C" {
            fn openblas_set_num_threads(n: std::ffi::c_int);
        }
        let n = n.clamp(1, std::ffi::c_int::MAX as usize) as std::ffi::c_int;
        // SAFETY: a plain C call taking an int; OpenBLAS is linked by the `openblas` feature.
        unsafe { openblas_set_num_threads(n) };
    }
    #[cfg(not(feature = "openblas"))]
    let _ = n;
}

/// The dense path splits rows and columns at multiples of this, so that every part's kernel tiles
/// are the whole product's. matrixmultiply computes a full `MR x NR` tile of `c` as
/// `alpha AB + beta C` in its kernel, but a tile cut by the edge of `c` through a buffer (`alpha
/// AB` into it, then `beta C + buffer`), which rounds differently when `beta != 0`. Its tiles are
/// at most 16 by 16 (AVX-512 f32), 8 by 8 on AVX2. With aligned splits only the tiles at the edge
/// of the whole product are cut, so the result is the same for every thread count.
pub(super) const GEMM_TILE: usize = 16;

/// `c <- alpha a b + beta c`, through a dense GEMM or, when `a` is mostly zeros, by gathering the
/// rows of `b` that the non-zeros of each row of `a` select.
///
/// The sparse path needs `a` and `c` in standard (row-major, contiguous) layout, as [`Cpu`]
/// stores them (so `a` not transposed), `b` with at least 8 columns, and `a` with at most
/// [`SPARSE_DENSITY`] non-zeros; a transposed `b` is first copied into row-major order. It computes, for each
/// row `i` and block of columns, `acc = sum_j a[i,j] b[j,..]` over the non-zeros `j` in
/// ascending order, then `c[i,..] = alpha acc + beta c[i,..]` (`beta = 0` ignores `c`). The
/// result equals the dense product up to the order of rounding; unlike a dense product, a zero
/// of `a` does not propagate an infinity or NaN of `b` (callers check `b` for finiteness).
pub(crate) fn mat_mul<F: Scalar>(
    alpha: F,
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    beta: F,
    mut c: ndarray::ArrayViewMut2<'_, F>,
) {
    let (m, (k, n)) = (a.nrows(), b.dim());
    let parts = threads::parts(m, m * k * n);
    let rows_per = m.div_ceil(parts).max(1);
    if n >= 8 && k > 0 {
        let cl = c.view_mut().into_slice();
        if let (Some(asl), Some(csl)) = (a.as_slice(), cl)
            && mostly_zero(asl)
        {
            // a transposed `b` (`Trans::T`) is copied once into row-major order, which costs
            // far less than the dense product it replaces
            let transposed;
            let bsl = match (b.as_slice(), b.t().to_slice()) {
                (Some(bsl), _) => bsl,
                (None, Some(stored)) => {
                    transposed = transpose(stored, n, k);
                    &transposed[..]
                }
                (None, None) => {
                    transposed = b.iter().copied().collect::<Vec<F>>();
                    &transposed[..]
                }
            };
            let work = asl.chunks(rows_per * k).zip(csl.chunks_mut(rows_per * n));
            threads::for_each_part(work, |(ap, cp)| {
                run_sparse_job(SparseJob::Product {
                    alpha,
                    a: ap,
                    b: bsl,
                    beta,
                    c: cp,
                    k,
                    n,
                });
            });
            return;
        }
    }
    if n > m {
        // Split the columns: each part packs all of `a` and its share of `b`, where a split of
        // the rows would have every part pack all of the larger `b`.
        let parts = threads::parts(n, m * k * n);
        let cols_per = n.div_ceil(parts).max(1).next_multiple_of(GEMM_TILE);
        let work = b
            .axis_chunks_iter(Axis(1), cols_per)
            .zip(c.axis_chunks_iter_mut(Axis(1), cols_per));
        threads::for_each_part(work, |(bp, mut cp)| {
            ndarray::linalg::general_mat_mul(alpha, &a, &bp, beta, &mut cp);
        });
        return;
    }
    let rows_per = rows_per.next_multiple_of(GEMM_TILE);
    let work = a
        .axis_chunks_iter(Axis(0), rows_per)
        .zip(c.axis_chunks_iter_mut(Axis(0), rows_per));
    threads::for_each_part(work, |(ap, mut cp)| {
        ndarray::linalg::general_mat_mul(alpha, &ap, &b, beta, &mut cp);
    });
}

/// The row-major `(cols, rows)` transpose of the row-major `(rows, cols)` matrix `src`.
///
/// In 8 by 8 blocks read into registers: eight rows in, eight columns out. Element-wise tiles
/// were 2.5 times slower on a 1024 by 128 matrix, whose columns are 4 KiB apart in the output.
/// The output's rows are split over the thread pool in multiples of 8.
pub(super) fn transpose<F: Scalar>(src: &[F], rows: usize, cols: usize) -> Vec<F> {
    let mut dst = vec![F::zero(); rows * cols];
    if rows == 0 || cols == 0 {
        return dst;
    }
    let per = cols
        .div_ceil(threads::parts(cols, rows * cols))
        .next_multiple_of(8);
    threads::for_each_part(dst.chunks_mut(per * rows).enumerate(), |(p, out)| {
        transpose_cols(src, rows, cols, p * per, out);
    });
    dst
}

/// The rows `j0..` of [`transpose`]'s output (the columns `j0..` of `src`) into `out`; `j0` is
/// a multiple of 8.
#[allow(clippy::needless_range_loop)] // `b` indexes a column of the block
pub(super) fn transpose_cols<F: Scalar>(
    src: &[F],
    rows: usize,
    cols: usize,
    j0: usize,
    out: &mut [F],
) {
    const B: usize = 8;
    let j1 = j0 + out.len() / rows;
    let (rb, cb) = (rows / B * B, j0 + (j1 - j0) / B * B);
    for i0 in (0..rb).step_by(B) {
        for jb in (j0..cb).step_by(B) {
            let mut blk = [[F::zero(); B]; B];
            for (a, r) in blk.iter_mut().enumerate() {
                let at = (i0 + a) * cols + jb;
                r.copy_from_slice(&src[at..at + B]);
            }
            for b in 0..B {
                let at = (jb - j0 + b) * rows + i0;
                for (a, o) in out[at..at + B].iter_mut().enumerate() {
                    *o = blk[a][b];
                }
            }
        }
    }
    // the ragged right and bottom edges
    for i in 0..rows {
        let from = if i < rb { cb } else { j0 };
        for j in from..j1 {
            out[(j - j0) * rows + i] = src[i * cols + j];
        }
    }
}
