//! A GEMM whose right operand is packed once and reused: [`Cpu`](super::Cpu)'s
//! [`Backend::pack_rhs`](super::Backend::pack_rhs) and
//! [`Backend::gemm_rows_packed`](super::Backend::gemm_rows_packed).
//!
//! FISTA with the one-hidden-layer decoder multiplies the active rows of the hidden layer by the
//! same `(m, m)` matrix `G2 = W2^T W2` in every iteration of a solve. A GEMM library packs its
//! right operand into cache-friendly panels on every call: for `m = 1024` that is 4 MiB of f32
//! copied per iteration. On two threads of the development machine, matrixmultiply took about
//! 0.5 ms for 4 rows and 0.8 ms for 25, against 0.1 ms and 0.45 ms here. Late in a solve only a
//! few samples are still active: in an MNIST SDL-NL epoch, a quarter of the 22,000 iterations had
//! fewer than 25 active rows. For a full batch of 237 rows the two take about the same time.
//!
//! Here the operand is packed once (`B` of `(k, n)` into panels of `NR` columns, `k` rows of `NR`
//! contiguous values each, the last panel padded with zeros), and every product streams the
//! panels through an `MR x NR` register tile: `MR = 6` rows of `a`, read in place, and
//! `NR = 16` (f32) or 8 (f64) columns, two 256-bit registers wide.
//!
//! # Rounding and threads
//!
//! Every element of the result is `alpha * acc + beta * c` (`c` ignored when `beta = 0`), where
//! `acc` is a chain of fused multiply-adds over `k` in ascending order, started at zero. Nothing
//! else enters it: no blocking of `k`, no dependence on where the element sits in its tile. The
//! panels are split over the thread pool, so the result is the same for every thread count.
//!
//! The kernel needs AVX2 and FMA (checked at run time). Without them, the product goes through
//! the ordinary GEMM on `op(b)` in standard layout, which [`PackedRhs`] keeps. So does a
//! mostly-zero left operand (codes): it takes [`Cpu`](super::Cpu)'s sparse path, as in every
//! other product, without the transpose a transposed `b` would otherwise cost on every call.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};

use super::threads;
use crate::scalar::Scalar;

/// Rows of `a` per register tile.
const MR: usize = 6;

/// Bytes of `b` per panel row: two 256-bit registers.
const PANEL_BYTES: usize = 64;

/// Bytes of packed `b` that one pass over the rows of `a` streams: the panels of a group are
/// reused by every row tile, so the group should stay in the L2 cache (512 KiB per core on the
/// development machine, 256 KiB or more on most x86 cores).
const GROUP_BYTES: usize = 192 * 1024;

/// The right operand `op(b)` `(k, n)` of a product, prepared for many products with
/// [`Backend::gemm_rows_packed`](super::Backend::gemm_rows_packed): `op(b)` in standard layout,
/// for the sparse path of a mostly-zero left operand (which would otherwise transpose a
/// transposed `b` on every call), and the panels of the packed kernel where it runs.
#[derive(Clone, Debug)]
pub struct PackedRhs<F> {
    /// Columns per panel (0 without panels).
    nr: usize,
    /// The panels: `n.div_ceil(nr)` blocks of `k * nr`.
    panels: Vec<F>,
    /// `op(b)` in standard layout.
    plain: Array2<F>,
}

impl<F> Default for PackedRhs<F> {
    fn default() -> Self {
        PackedRhs {
            nr: 0,
            panels: Vec::new(),
            plain: Array2::from_shape_vec((0, 0), Vec::new()).expect("an empty shape"),
        }
    }
}

impl<F: Scalar> PackedRhs<F> {
    /// `(k, n)`: the shape of `op(b)`.
    pub fn dim(&self) -> (usize, usize) {
        self.plain.dim()
    }

    /// Packs `b` `(k, n)` (any layout), reusing the buffers.
    pub(crate) fn pack(&mut self, b: ArrayView2<'_, F>) {
        let (k, n) = b.dim();
        if self.plain.dim() == (k, n) {
            self.plain.assign(&b);
        } else {
            self.plain = b.as_standard_layout().into_owned();
        }
        if !kernel_available() {
            self.nr = 0;
            self.panels = Vec::new();
            return;
        }
        let nr = PANEL_BYTES / std::mem::size_of::<F>();
        let PackedRhs { panels, plain, .. } = self;
        self.nr = nr;
        let np = n.div_ceil(nr);
        panels.clear();
        panels.resize(np * k * nr, F::zero());
        let Some(src) = plain.as_slice().filter(|_| k > 0) else {
            return;
        };
        let per = np.div_ceil(threads::parts(np, k * n)).max(1);
        let work = panels.chunks_mut(per * k * nr).enumerate();
        threads::for_each_part(work, |(part, out)| {
            let p0 = part * per;
            for (kk, row) in src.chunks_exact(n).enumerate() {
                for (i, panel) in out.chunks_exact_mut(k * nr).enumerate() {
                    let j0 = (p0 + i) * nr;
                    let j1 = (j0 + nr).min(n);
                    panel[kk * nr..kk * nr + (j1 - j0)].copy_from_slice(&row[j0..j1]);
                }
            }
        });
    }
}

/// Whether the packed kernel runs on this CPU.
fn kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The accumulated term of [`gemm_packed`] from another matrix: row `r` of the product takes
/// row `rows[r]` of the matrix.
pub(crate) type Base<'a, F> = (ArrayView2<'a, F>, &'a [usize]);

/// `c <- alpha a b + beta c` with `b` packed, or with `base = Some((m, rows))`
/// `c <- alpha a b + beta m[rows]` (row `r` of `c` from row `rows[r]` of `m`); `a` `(rows, k)`
/// and `c` `(rows, n)` (the caller checks the shapes). Operands whose rows are not contiguous
/// are copied first.
pub(crate) fn gemm_packed<F: Scalar>(
    alpha: F,
    a: ArrayView2<'_, F>,
    b: &PackedRhs<F>,
    beta: F,
    base: Option<Base<'_, F>>,
    mut c: ArrayViewMut2<'_, F>,
) {
    let (rows, (k, n)) = (a.nrows(), b.dim());
    let plain = b.nr == 0
        || k == 0
        || a.as_slice()
            .is_some_and(|a| n >= 8 && super::mostly_zero(a));
    let strided_base = base.is_some_and(|(m, _)| m.ncols() > 1 && m.strides()[1] != 1);
    if plain || strided_base || (c.ncols() > 1 && c.strides()[1] != 1) {
        if let Some((m, idx)) = base {
            for (r, &i) in idx.iter().enumerate() {
                c.row_mut(r).assign(&m.row(i));
            }
        }
        if plain {
            super::mat_mul(alpha, a, b.plain.view(), beta, c);
        } else {
            let mut dense = c.as_standard_layout().into_owned();
            gemm_packed(alpha, a, b, beta, None, dense.view_mut());
            c.assign(&dense);
        }
        return;
    }
    let a = a.as_standard_layout();
    let a = a.view();
    if rows == 0 || n == 0 {
        return;
    }
    let nr = b.nr;
    let np = n.div_ceil(nr);
    let per = np.div_ceil(threads::parts(np, rows * k * n)).max(1);
    // each part's columns of `base`, sliced as the parts are handed out (no allocation)
    let work = b
        .panels
        .chunks(per * k * nr)
        .zip(c.axis_chunks_iter_mut(Axis(1), per * nr))
        .enumerate()
        .map(|(p, (panels, cp))| {
            let base = base.map(|(m, idx)| {
                let c0 = p * per * nr;
                let cols = m.slice_move(ndarray::s![.., c0..(c0 + per * nr).min(n)]);
                (cols, idx)
            });
            ((panels, base), cp)
        });
    let arow = |i: usize| a.row(i).to_slice().expect("rows of a have unit stride");
    threads::for_each_part(work, |((panels, base), cp)| {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `PackedRhs::pack` makes panels (`nr > 0`) only where the CPU has
            // AVX2 and FMA.
            unsafe { panel_rows_fma::<F, 1>(alpha, &arow, panels, k, nr, beta, base, cp, None) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (panels, base, cp);
            unreachable!("panels are made only where the packed kernel runs");
        }
    });
}

/// `c <- op(b)^T op(b)` `(n, n)` for `b` packed `(k, n)` (the caller checks the shape): the Gram
/// matrix of the columns of `op(b)`.
///
/// With panels, the left operand needs no copy: row `i` of `op(b)^T` is column `i` of `op(b)`,
/// `k` values `nr` apart in panel `i / nr`. Only the tiles that reach the upper triangle are
/// computed (a bit over half the multiply-adds; the panels are split over the pool by that
/// share), and the lower triangle is then mirrored from the upper one. Element `(i, j)` is the
/// same chain of fused multiply-adds as element `(j, i)` (a product rounds the same either way
/// round), so the mirror holds what the full product would: the result is symmetric to the bit
/// and the same on every thread count. Without panels, the ordinary GEMM computes the whole
/// product, and its upper triangle is mirrored all the same.
pub(crate) fn gram_packed<F: Scalar>(b: &PackedRhs<F>, mut c: ArrayViewMut2<'_, F>) {
    let (k, n) = b.dim();
    if !c.is_standard_layout() {
        let mut dense = Array2::zeros(c.dim());
        gram_packed(b, dense.view_mut());
        c.assign(&dense);
        return;
    }
    if b.nr == 0 || k == 0 {
        super::mat_mul(
            F::one(),
            b.plain.t(),
            b.plain.view(),
            F::zero(),
            c.view_mut(),
        );
        if let Some(c) = c.as_slice_mut() {
            mirror_lower(c, n);
        }
        return;
    }
    if n == 0 {
        return;
    }
    let nr = b.nr;
    let np = n.div_ceil(nr);
    // panel p computes the row tiles that start above its last column
    let tiles = |p: usize| ((p + 1) * nr).min(n).div_ceil(MR);
    let total: usize = (0..np).map(tiles).sum();
    let parts = threads::parts(np, total * MR * k * nr);
    let mut bounds = vec![0];
    let mut done = 0;
    for p in 0..np {
        done += tiles(p);
        if p + 1 == np || done * parts >= total * bounds.len() {
            bounds.push(p + 1);
        }
    }
    let mut items = Vec::with_capacity(bounds.len() - 1);
    let mut rest = c.view_mut();
    for w in bounds.windows(2) {
        let (p0, p1) = (w[0], w[1]);
        let (left, right) = rest.split_at(Axis(1), (p1 * nr).min(n) - p0 * nr);
        items.push((&b.panels[p0 * k * nr..p1 * k * nr], p0 * nr, left));
        rest = right;
    }
    let arow = |i: usize| &b.panels[(i / nr) * k * nr + i % nr..];
    threads::for_each_part(items.into_iter(), |(panels, col0, cp)| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `PackedRhs::pack` makes panels (`nr > 0`) only where the CPU has AVX2 and
        // FMA; `arow(i)` holds `(k - 1) nr + 1` values or more.
        unsafe {
            let (one, zero, upper) = (F::one(), F::zero(), Some(col0));
            match nr {
                16 => panel_rows_fma::<F, 16>(one, &arow, panels, k, nr, zero, None, cp, upper),
                _ => panel_rows_fma::<F, 8>(one, &arow, panels, k, nr, zero, None, cp, upper),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (panels, col0, cp, &arow);
            unreachable!("panels are made only where the packed kernel runs");
        }
    });
    if let Some(c) = c.as_slice_mut() {
        mirror_lower(c, n);
    }
}

/// Copies the upper triangle of the square `(n, n)` matrix `c` (standard layout) onto its
/// lower triangle, in blocks that fit the L1 cache.
fn mirror_lower<F: Copy>(c: &mut [F], n: usize) {
    const BLOCK: usize = 32;
    for i0 in (0..n).step_by(BLOCK) {
        for j0 in (0..=i0).step_by(BLOCK) {
            for i in i0..(i0 + BLOCK).min(n) {
                for j in j0..(j0 + BLOCK).min(i) {
                    c[i * n + j] = c[j * n + i];
                }
            }
        }
    }
}

/// [`panel_rows`] compiled with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn panel_rows_fma<'a, F: Scalar, const SA: usize>(
    alpha: F,
    arow: &impl Fn(usize) -> &'a [F],
    panels: &[F],
    k: usize,
    nr: usize,
    beta: F,
    base: Option<Base<'_, F>>,
    c: ArrayViewMut2<'_, F>,
    upper: Option<usize>,
) {
    match nr {
        16 => panel_rows::<F, 16, SA>(alpha, arow, panels, k, beta, base, c, upper),
        8 => panel_rows::<F, 8, SA>(alpha, arow, panels, k, beta, base, c, upper),
        _ => unreachable!("panel width {nr}"),
    }
}

/// The columns of `c` that `panels` cover, for every row `i` of `c`, whose left operand is
/// `arow(i)` (`k` values `SA` apart): groups of panels that fit [`GROUP_BYTES`], and within a
/// group, each tile of [`MR`] rows against each panel, over all of `k` at once. With
/// `upper = Some(j)` (`c`'s first column is column `j` of a square result) only the tiles that
/// reach the upper triangle are computed.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn panel_rows<'a, F: Scalar, const NR: usize, const SA: usize>(
    alpha: F,
    arow: &impl Fn(usize) -> &'a [F],
    panels: &[F],
    k: usize,
    beta: F,
    base: Option<Base<'_, F>>,
    mut c: ArrayViewMut2<'_, F>,
    upper: Option<usize>,
) {
    let group = (GROUP_BYTES / (k * NR * std::mem::size_of::<F>())).max(1);
    let ncols = c.ncols();
    for (g, gpanels) in panels.chunks(group * k * NR).enumerate() {
        for (t, mut ct) in c.axis_chunks_iter_mut(Axis(0), MR).enumerate() {
            let mr = ct.nrows();
            let mut arows: [&[F]; MR] = [&[]; MR];
            for (r, ar) in arows.iter_mut().enumerate().take(mr) {
                *ar = arow(t * MR + r);
            }
            // the tile's rows of `c` (and of `base`), in arrays: no allocation per tile
            let mut crows: [&mut [F]; MR] = Default::default();
            for (cr, row) in crows.iter_mut().zip(ct.outer_iter_mut()) {
                *cr = row.into_slice().expect("rows of c have unit stride");
            }
            let crows = &mut crows[..mr];
            let base_rows: Option<[&[F]; MR]> = base.map(|(m, idx)| {
                let mut rows: [&[F]; MR] = [&[]; MR];
                for (br, &i) in rows.iter_mut().zip(&idx[t * MR..t * MR + mr]) {
                    *br = m
                        .index_axis_move(Axis(0), i)
                        .to_slice()
                        .expect("rows of base have unit stride");
                }
                rows
            });
            for (p, panel) in gpanels.chunks_exact(k * NR).enumerate() {
                let j0 = (g * group + p) * NR;
                let j1 = (j0 + NR).min(ncols);
                if upper.is_some_and(|col0| t * MR >= col0 + j1) {
                    // the whole tile lies below the diagonal
                    continue;
                }
                prefetch_tile(crows, j0, j1);
                if let Some(rows) = &base_rows {
                    prefetch_tile(&rows[..mr], j0, j1);
                }
                let acc = tile::<F, NR, SA>(mr, &arows, panel, k);
                for (r, (crow, acc_row)) in crows.iter_mut().zip(&acc).enumerate() {
                    let out = &mut crow[j0..j1];
                    if beta == F::zero() {
                        for (o, &v) in out.iter_mut().zip(acc_row) {
                            *o = alpha * v;
                        }
                    } else if let Some(rows) = &base_rows {
                        for ((o, &v), &b) in out.iter_mut().zip(acc_row).zip(&rows[r][j0..j1]) {
                            *o = alpha * v + beta * b;
                        }
                    } else {
                        for (o, &v) in out.iter_mut().zip(acc_row) {
                            *o = alpha * v + beta * *o;
                        }
                    }
                }
            }
        }
    }
}

/// Asks for the lines of `c` that a tile will update at columns `j0..j1`, so that they arrive
/// while the tile computes (otherwise each store of a tile waits for them: the rows of `c` are
/// far apart, and 6% of the product's time went to these misses). Both ends of the range: rows
/// are not 64-byte aligned (the allocator aligns to 16), so `NR` values span two lines.
#[inline(always)]
fn prefetch_tile<F, R: AsRef<[F]>>(crows: &[R], j0: usize, j1: usize) {
    #[cfg(target_arch = "x86_64")]
    for row in crows {
        let row = row.as_ref();
        for v in [row.get(j0), row.get(j1.saturating_sub(1))]
            .into_iter()
            .flatten()
        {
            // SAFETY: a prefetch is only a hint; the address is inside `row`.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    std::ptr::from_ref(v).cast::<i8>(),
                );
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (crows, j0, j1);
}

/// The register tile: `acc[r][j] = sum_k arows[r][k SA] panel[k][j]` for the first `mr` rows,
/// a chain of fused multiply-adds in ascending `k` from zero (the other rows are zero).
#[inline(always)]
fn tile<F: Scalar, const NR: usize, const SA: usize>(
    mr: usize,
    arows: &[&[F]; MR],
    panel: &[F],
    k: usize,
) -> [[F; NR]; MR] {
    assert!(panel.len() >= k * NR && arows[..mr].iter().all(|r| k == 0 || r.len() > (k - 1) * SA));
    let mut acc = [[F::zero(); NR]; MR];
    #[cfg(target_arch = "x86_64")]
    {
        use std::any::TypeId;
        if TypeId::of::<F>() == TypeId::of::<f32>() && NR == 16 {
            // SAFETY: F is f32 (same layout), the lengths are checked above, and the caller
            // runs with AVX2 and FMA enabled.
            unsafe {
                let io = std::ptr::from_mut(&mut acc).cast::<[[f32; 16]; MR]>();
                let ap = arows.map(|r| r.as_ptr().cast::<f32>());
                let bp = panel.as_ptr().cast::<f32>();
                match mr {
                    6 => avx::tile_f32::<6, SA>(ap, bp, k, &mut *io),
                    5 => avx::tile_f32::<5, SA>(ap, bp, k, &mut *io),
                    4 => avx::tile_f32::<4, SA>(ap, bp, k, &mut *io),
                    3 => avx::tile_f32::<3, SA>(ap, bp, k, &mut *io),
                    2 => avx::tile_f32::<2, SA>(ap, bp, k, &mut *io),
                    _ => avx::tile_f32::<1, SA>(ap, bp, k, &mut *io),
                }
            }
            return acc;
        }
        if TypeId::of::<F>() == TypeId::of::<f64>() && NR == 8 {
            // SAFETY: as for f32.
            unsafe {
                let io = std::ptr::from_mut(&mut acc).cast::<[[f64; 8]; MR]>();
                let ap = arows.map(|r| r.as_ptr().cast::<f64>());
                let bp = panel.as_ptr().cast::<f64>();
                match mr {
                    6 => avx::tile_f64::<6, SA>(ap, bp, k, &mut *io),
                    5 => avx::tile_f64::<5, SA>(ap, bp, k, &mut *io),
                    4 => avx::tile_f64::<4, SA>(ap, bp, k, &mut *io),
                    3 => avx::tile_f64::<3, SA>(ap, bp, k, &mut *io),
                    2 => avx::tile_f64::<2, SA>(ap, bp, k, &mut *io),
                    _ => avx::tile_f64::<1, SA>(ap, bp, k, &mut *io),
                }
            }
            return acc;
        }
    }
    for (kk, b) in panel.chunks_exact(NR).enumerate().take(k) {
        for (r, acc_row) in acc.iter_mut().enumerate().take(mr) {
            let av = arows[r][kk * SA];
            for (x, &bv) in acc_row.iter_mut().zip(b) {
                *x = av.mul_add(bv, *x);
            }
        }
    }
    acc
}

/// The register tiles in AVX2 and FMA intrinsics: `R` rows of `a` (pointers to `k` values
/// each) against a panel of `k` rows of two 256-bit registers.
#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::{
        __m256, __m256d, _mm256_broadcast_sd, _mm256_broadcast_ss, _mm256_fmadd_pd,
        _mm256_fmadd_ps, _mm256_loadu_pd, _mm256_loadu_ps, _mm256_storeu_pd, _mm256_storeu_ps,
    };

    use super::MR;

    /// f32, 16 columns.
    ///
    /// # Safety
    /// AVX2 and FMA; `a[..R]` point to `k` readable values `SA` apart, `b` to `16 k`. Continues the
    /// accumulators in the first `R` rows of `acc_io`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_f32<const R: usize, const SA: usize>(
        a: [*const f32; MR],
        b: *const f32,
        k: usize,
        acc_io: &mut [[f32; 16]; MR],
    ) {
        // SAFETY: each row of `acc_io` holds 16 values.
        let mut acc: [[__m256; 2]; R] = std::array::from_fn(|r| unsafe {
            [
                _mm256_loadu_ps(acc_io[r].as_ptr()),
                _mm256_loadu_ps(acc_io[r].as_ptr().add(8)),
            ]
        });
        for kk in 0..k {
            // SAFETY: `kk < k`, within the caller's bounds.
            unsafe {
                let b0 = _mm256_loadu_ps(b.add(16 * kk));
                let b1 = _mm256_loadu_ps(b.add(16 * kk + 8));
                for r in 0..R {
                    let av = _mm256_broadcast_ss(&*a[r].add(kk * SA));
                    acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
                }
            }
        }
        for r in 0..R {
            // SAFETY: each row of `acc_io` holds 16 values.
            unsafe {
                _mm256_storeu_ps(acc_io[r].as_mut_ptr(), acc[r][0]);
                _mm256_storeu_ps(acc_io[r].as_mut_ptr().add(8), acc[r][1]);
            }
        }
    }

    /// f64, 8 columns.
    ///
    /// # Safety
    /// AVX2 and FMA; `a[..R]` point to `k` readable values `SA` apart, `b` to `8 k`. Continues the
    /// accumulators in the first `R` rows of `acc_io`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_f64<const R: usize, const SA: usize>(
        a: [*const f64; MR],
        b: *const f64,
        k: usize,
        acc_io: &mut [[f64; 8]; MR],
    ) {
        // SAFETY: each row of `acc_io` holds 8 values.
        let mut acc: [[__m256d; 2]; R] = std::array::from_fn(|r| unsafe {
            [
                _mm256_loadu_pd(acc_io[r].as_ptr()),
                _mm256_loadu_pd(acc_io[r].as_ptr().add(4)),
            ]
        });
        for kk in 0..k {
            // SAFETY: `kk < k`, within the caller's bounds.
            unsafe {
                let b0 = _mm256_loadu_pd(b.add(8 * kk));
                let b1 = _mm256_loadu_pd(b.add(8 * kk + 4));
                for r in 0..R {
                    let av = _mm256_broadcast_sd(&*a[r].add(kk * SA));
                    acc[r][0] = _mm256_fmadd_pd(av, b0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_pd(av, b1, acc[r][1]);
                }
            }
        }
        for r in 0..R {
            // SAFETY: each row of `acc_io` holds 8 values.
            unsafe {
                _mm256_storeu_pd(acc_io[r].as_mut_ptr(), acc[r][0]);
                _mm256_storeu_pd(acc_io[r].as_mut_ptr().add(4), acc[r][1]);
            }
        }
    }
}
