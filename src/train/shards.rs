//! Training on sharded data (docs/SCALING.md, "Each rank holds a shard of the training set"):
//! every rank holds a contiguous shard of the training rows ([`RowShard`]); at the start of each
//! epoch all ranks compute the same global order ([`crate::train::epoch_order`]), and one
//! all-to-all ([`Comm::all_to_all_bytes`]) brings every rank the rows of its blocks of all the
//! epoch's batches that other ranks hold ([`EpochRows`]); each batch is then copied together from
//! those and the rank's own shard. The batches are those of one process holding the whole set.

use std::ops::Range;

use ndarray::Array2;

use crate::comm::{Comm, SHARD_ALIGN, shard_blocks};
use crate::data::{PixelScale, RowShard, Samples, TrainData};
use crate::error::{Error, Result};

/// Where the training rows are: on every rank, or in shards that follow each other in rank
/// order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Every rank holds the whole set (one process, or ranks without [`RowShard`]s).
    Whole,
    /// Rank `r` holds rows `starts[r]..starts[r + 1]`; `starts` has `ranks + 1` entries, the
    /// last the set's size.
    Sharded { starts: Vec<usize> },
}

impl Layout {
    /// The rows of the whole set.
    pub(crate) fn n_total(&self, local_rows: usize) -> usize {
        match self {
            Layout::Whole => local_rows,
            Layout::Sharded { starts } => starts.last().copied().unwrap_or(0),
        }
    }

    /// The rank holding row `i` of a sharded set.
    fn owner(starts: &[usize], i: usize) -> usize {
        // the last rank whose shard starts at or before i (empty shards are skipped)
        starts.partition_point(|&s| s <= i).saturating_sub(1)
    }
}

/// Works out, collectively, how the ranks hold the training rows, and checks that they agree.
///
/// With one rank, a [`RowShard`] must be the whole set. With several, every rank contributes its
/// shard's place, row count, width and scale kind (one all-gather); every rank then reaches the
/// same verdict, so that an inconsistent call fails on all of them instead of leaving some in a
/// collective.
///
/// # Errors
/// [`Error::Shape`] / [`Error::Comm`] when the shards do not tile the set in rank order, their
/// widths or scale kinds differ, or some ranks pass shards and others not.
pub(crate) fn layout(comm: &dyn Comm, data: &TrainData<'_>) -> Result<Layout> {
    let (rank, ranks) = (comm.rank(), comm.size());
    let (n, d) = data.train.x.dim();
    let per_element = matches!(data.train.scale, PixelScale::PerElement(_));
    if ranks == 1 {
        return match data.train_shard {
            None => Ok(Layout::Whole),
            Some(RowShard { offset: 0, n_total }) if n_total == n => Ok(Layout::Whole),
            Some(s) => Err(Error::shape(
                "training samples",
                format!(
                    "a shard of rows {}..{} of {} on a single process: it needs the whole set",
                    s.offset,
                    s.offset + n,
                    s.n_total
                ),
            )),
        };
    }
    // (has a shard, offset, rows, n_total, width, per-element map) from every rank; exact in
    // f64 below 2^53
    let (has, offset, n_total) = match data.train_shard {
        Some(s) => (1.0, s.offset as f64, s.n_total as f64),
        None => (0.0, 0.0, n as f64),
    };
    let mine = [
        has,
        offset,
        n as f64,
        n_total,
        d as f64,
        f64::from(u8::from(per_element)),
    ];
    let mut all = vec![0.0; 6 * ranks];
    comm.all_gather_f64(&mine, &mut all)?;
    let field = |r: usize, k: usize| all[6 * r + k] as usize;
    let sharded = (0..ranks).filter(|&r| field(r, 0) == 1).count();
    if (0..ranks).any(|r| field(r, 4) != d || field(r, 5) != usize::from(per_element)) {
        return Err(Error::Comm(format!(
            "the ranks' training samples differ in width or pixel-scale kind (rank {rank}: {d} \
             columns, {} scale)",
            if per_element {
                "per-element"
            } else {
                "constant"
            }
        )));
    }
    if sharded == 0 {
        return Ok(Layout::Whole);
    }
    if sharded < ranks {
        return Err(Error::Comm(format!(
            "{sharded} of {ranks} ranks pass a shard of the training set (TrainData::train_shard) \
             and the others the whole set: all or none"
        )));
    }
    let total = field(0, 3);
    let mut starts = Vec::with_capacity(ranks + 1);
    let mut next = 0usize;
    for r in 0..ranks {
        if field(r, 1) != next || field(r, 3) != total {
            return Err(Error::shape(
                "training shards",
                format!(
                    "rank {r} holds rows {}.. of {}, but the shards must follow each other in \
                     rank order from row 0 (rank {r} should start at row {next} of {total})",
                    field(r, 1),
                    field(r, 3)
                ),
            ));
        }
        starts.push(next);
        next += field(r, 2);
    }
    if next != total {
        return Err(Error::shape(
            "training shards",
            format!("the ranks' shards cover {next} rows of a set of {total}"),
        ));
    }
    starts.push(total);
    Ok(Layout::Sharded { starts })
}

/// Where one row of a batch comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// This rank's shard, at this row.
    Local(usize),
    /// The received bytes, at this offset.
    Received(usize),
}

/// One rank's rows of every batch of an epoch: the rows received from the other ranks (as they
/// came) and, for every row of this rank's blocks of the epoch's batches in batch order, where
/// it is. [`EpochRows::fill`] copies batch `b`'s rows out, as the whole-set path copies them from
/// the whole set.
#[derive(Debug)]
pub(crate) struct EpochRows {
    recv: Vec<u8>,
    rows: Vec<Source>,
    /// The batches these rows are for.
    batches: Range<usize>,
    /// Rows per batch on this rank.
    block: usize,
    /// Bytes of a received row: its samples, then its scale map's row when there is one.
    row_bytes: usize,
}

impl EpochRows {
    /// The batches whose rows these are.
    pub(crate) fn batches(&self) -> Range<usize> {
        self.batches.clone()
    }

    /// Copies batch `b`'s rows (`b` in [`EpochRows::batches`]) into `x` (`(block, d)`) and
    /// their scale-map rows into `map`; `train` is this rank's shard, as given to [`exchange`].
    pub(crate) fn fill(
        &self,
        b: usize,
        train: &Samples<'_>,
        x: &mut Array2<f32>,
        mut map: Option<&mut Array2<f32>>,
    ) {
        let src_map = match train.scale {
            PixelScale::PerElement(m) => Some(m),
            PixelScale::Constant(_) => None,
        };
        let xb = 4 * train.x.ncols();
        let at = (b - self.batches.start) * self.block;
        for (k, &src) in self.rows[at..at + self.block].iter().enumerate() {
            match src {
                Source::Local(i) => {
                    x.row_mut(k).assign(&train.x.row(i));
                    if let (Some(m), Some(s)) = (map.as_deref_mut(), src_map) {
                        m.row_mut(k).assign(&s.row(i));
                    }
                }
                Source::Received(at) => {
                    get_row(x.row_mut(k), &self.recv[at..at + xb]);
                    if let Some(m) = map.as_deref_mut() {
                        get_row(m.row_mut(k), &self.recv[at + xb..at + self.row_bytes]);
                    }
                }
            }
        }
    }
}

/// The global rows of rank `q`'s blocks of the epoch's batches `batches`, in batch order.
fn needs(
    order: &[usize],
    batch_size: usize,
    batches: Range<usize>,
    q: usize,
    ranks: usize,
) -> impl Iterator<Item = usize> + '_ {
    let blk: Range<usize> = shard_blocks(batch_size, SHARD_ALIGN, q, ranks);
    batches.flat_map(move |b| {
        order[b * batch_size..(b + 1) * batch_size][blk.clone()]
            .iter()
            .copied()
    })
}

/// Appends a row's floats to `buf` in native byte order (the ranks of a job share it).
fn put_row(buf: &mut Vec<u8>, row: ndarray::ArrayView1<'_, f32>) {
    match row.as_slice() {
        Some(s) => buf.extend_from_slice(bytemuck::cast_slice(s)),
        None => row
            .iter()
            .for_each(|v| buf.extend_from_slice(&v.to_ne_bytes())),
    }
}

/// Copies `bytes` (one row, native byte order) into `row` of a standard-layout array.
fn get_row(mut row: ndarray::ArrayViewMut1<'_, f32>, bytes: &[u8]) {
    match row.as_slice_mut() {
        Some(s) => bytemuck::cast_slice_mut::<f32, u8>(s).copy_from_slice(bytes),
        None => row
            .iter_mut()
            .zip(bytes.chunks_exact(4))
            .for_each(|(v, c)| *v = f32::from_ne_bytes([c[0], c[1], c[2], c[3]])),
    }
}

/// Bytes of one training row in an exchange: its samples, and its scale map's row when there
/// is one (`f32`).
///
/// # Errors
/// [`Error::Comm`] if that overflows.
pub(crate) fn row_bytes(train: &Samples<'_>) -> Result<usize> {
    let d = train.x.ncols();
    let floats = match train.scale {
        PixelScale::PerElement(_) => d.checked_mul(2),
        PixelScale::Constant(_) => Some(d),
    };
    floats
        .and_then(|f| f.checked_mul(4))
        .ok_or_else(|| Error::Comm(format!("training rows of {d} columns: bytes overflow")))
}

/// The epoch's batches in consecutive groups, one exchange each: a single group (one
/// all-to-all per epoch) unless some rank would send or receive more than
/// [`Comm::max_all_to_all_bytes`] in it. Every rank computes the same groups from the same
/// order, without communicating.
///
/// # Errors
/// [`Error::Comm`] if one batch alone is over the limit.
pub(crate) fn groups(
    comm: &dyn Comm,
    starts: &[usize],
    order: &[usize],
    batch_size: usize,
    n_batches: usize,
    row_bytes: usize,
) -> Result<Vec<Range<usize>>> {
    let ranks = comm.size();
    let limit = comm.max_all_to_all_bytes();
    let blocks: Vec<Range<usize>> = (0..ranks)
        .map(|q| shard_blocks(batch_size, SHARD_ALIGN, q, ranks))
        .collect();
    // rows each rank sends and receives, in the group so far and in one batch
    let (mut sent, mut got) = (vec![0usize; ranks], vec![0usize; ranks]);
    let (mut bs, mut bg) = (vec![0usize; ranks], vec![0usize; ranks]);
    let fits = |rows: usize| rows.checked_mul(row_bytes).is_some_and(|b| b <= limit);
    let mut groups = Vec::new();
    let mut first = 0;
    for b in 0..n_batches {
        bs.fill(0);
        bg.fill(0);
        let batch = &order[b * batch_size..(b + 1) * batch_size];
        for (q, blk) in blocks.iter().enumerate() {
            for &i in &batch[blk.clone()] {
                let p = Layout::owner(starts, i);
                if p != q {
                    bs[p] += 1;
                    bg[q] += 1;
                }
            }
        }
        if !(bs.iter().all(|&r| fits(r)) && bg.iter().all(|&r| fits(r))) {
            return Err(Error::Comm(format!(
                "one batch's training rows exceed the {limit} bytes one all-to-all may move"
            )));
        }
        let grown = |acc: &[usize], add: &[usize]| acc.iter().zip(add).all(|(a, c)| fits(a + c));
        if b > first && !(grown(&sent, &bs) && grown(&got, &bg)) {
            groups.push(first..b);
            first = b;
            sent.fill(0);
            got.fill(0);
        }
        for q in 0..ranks {
            sent[q] += bs[q];
            got[q] += bg[q];
        }
    }
    groups.push(first..n_batches);
    Ok(groups)
}

/// The exchange for the epoch's batches `batches` (all of them unless [`groups`] splits them):
/// this rank sends every other rank the rows of its shard that the other's blocks of those
/// batches need (one [`Comm::all_to_all_bytes`]), and returns the rows it received with where
/// each row of its blocks is. `train` is this rank's shard, `starts` the shards' first rows
/// ([`Layout::Sharded`]), `order` the epoch's global order.
///
/// # Errors
/// [`Error::Comm`]: a communication error, sizes that overflow or cannot be allocated, or a rank
/// that sent other bytes than this one expects.
pub(crate) fn exchange(
    comm: &dyn Comm,
    starts: &[usize],
    train: &Samples<'_>,
    order: &[usize],
    batch_size: usize,
    batches: Range<usize>,
) -> Result<EpochRows> {
    let (rank, ranks) = (comm.rank(), comm.size());
    let map = match train.scale {
        PixelScale::PerElement(m) => Some(m),
        PixelScale::Constant(_) => None,
    };
    let row_bytes = row_bytes(train)?;
    let n_batches = batches.len();
    let mine = starts[rank]..starts[rank + 1];
    let block = shard_blocks(batch_size, SHARD_ALIGN, rank, ranks).len();

    // what this rank sends: for each other rank, in that rank's order, the rows it holds
    let mut send_rows = vec![0usize; ranks];
    for (q, c) in send_rows.iter_mut().enumerate() {
        if q != rank {
            *c = needs(order, batch_size, batches.clone(), q, ranks)
                .filter(|i| mine.contains(i))
                .count();
        }
    }
    let send_counts = send_rows
        .iter()
        .map(|&r| r.checked_mul(row_bytes))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| Error::Comm("the epoch's training rows to send: bytes overflow".into()))?;
    let send_total = send_counts
        .iter()
        .try_fold(0usize, |t, &c| t.checked_add(c))
        .ok_or_else(|| Error::Comm("the epoch's training rows to send: bytes overflow".into()))?;
    let mut send = Vec::new();
    send.try_reserve_exact(send_total).map_err(|_| {
        Error::Comm(format!(
            "cannot allocate {send_total} bytes for the epoch's training rows to send"
        ))
    })?;
    for q in (0..ranks).filter(|&q| q != rank) {
        for i in needs(order, batch_size, batches.clone(), q, ranks).filter(|i| mine.contains(i)) {
            put_row(&mut send, train.x.row(i - mine.start));
            if let Some(m) = map {
                put_row(&mut send, m.row(i - mine.start));
            }
        }
    }
    let (recv, recv_counts) = comm.all_to_all_bytes(&send, &send_counts)?;
    drop(send);

    // what this rank expects from each rank, and where each rank's rows start in `recv`
    let mut expect = vec![0usize; ranks];
    for i in needs(order, batch_size, batches.clone(), rank, ranks) {
        let p = Layout::owner(starts, i);
        if p != rank {
            expect[p] += 1;
        }
    }
    if recv_counts.len() != ranks {
        return Err(Error::Comm(format!(
            "an all-to-all returned {} counts for {ranks} ranks",
            recv_counts.len()
        )));
    }
    let mut cursor = Vec::with_capacity(ranks);
    let mut at = 0usize;
    for (p, (&rows, &got)) in expect.iter().zip(&recv_counts).enumerate() {
        if rows.checked_mul(row_bytes) != Some(got) {
            return Err(Error::Comm(format!(
                "rank {p} sent {got} bytes of training rows, rank {rank} expected {rows} rows of \
                 {row_bytes} bytes (do the ranks train with the same seed and batch size?)"
            )));
        }
        cursor.push(at);
        at += got;
    }
    if at != recv.len() {
        return Err(Error::Comm(format!(
            "received {} bytes, counts say {at}",
            recv.len()
        )));
    }

    let mut rows = Vec::new();
    rows.try_reserve_exact(n_batches * block).map_err(|_| {
        Error::Comm(format!(
            "cannot allocate the index of the epoch's {} training rows",
            n_batches * block
        ))
    })?;
    for i in needs(order, batch_size, batches.clone(), rank, ranks) {
        let p = Layout::owner(starts, i);
        if p == rank {
            rows.push(Source::Local(i - mine.start));
        } else {
            rows.push(Source::Received(cursor[p]));
            cursor[p] += row_bytes;
        }
    }
    Ok(EpochRows {
        recv,
        rows,
        batches,
        block,
        row_bytes,
    })
}
