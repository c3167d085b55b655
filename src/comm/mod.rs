//! Collective operations between the processes of a data-parallel run (docs/SCALING.md).
//!
//! A [`Comm`] joins the ranks that share one global batch. Code that must see the whole batch
//! (FISTA's variance statistics, convergence test and backtracking sums; the gradients of a
//! training step; validation) reduces through it. [`Solo`] is the one-process communicator: its
//! reductions are the identity, and code written against [`Comm`] checks [`Comm::size`] to keep
//! its one-process path exactly as it was. `MpiComm` (feature `mpi`) is MPI's world.
//!
//! Every sum is taken in a fixed order: each rank's contribution is gathered to every rank
//! ([`Comm::all_gather_f64`]) and added in rank order, in `f64`, so that the result depends
//! neither on timing nor on the MPI library's reduction algorithm, and is the same on every rank.

use std::fmt;
use std::ops::Range;

use crate::error::Result;

#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "mpi")]
pub use self::mpi::MpiComm;

/// The processes of one run, and the collectives varsparse needs between them. Every rank must
/// make the same calls in the same order with the same lengths.
pub trait Comm: fmt::Debug + Send + Sync {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Every rank's `local` (the same length on every rank), concatenated in rank order, into
    /// `out` (`size * local.len()` long) on every rank.
    ///
    /// # Errors
    /// [`crate::Error::Shape`] if `out` has the wrong length.
    fn all_gather_f64(&self, local: &[f64], out: &mut [f64]) -> Result<()>;
    /// Every rank's bytes (any length per rank), in rank order, on every rank.
    ///
    /// # Errors
    /// A communication error.
    fn all_gather_bytes(&self, local: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Personalised exchange (`MPI_Alltoallv`): `send` is the concatenation of the bytes for
    /// ranks `0, 1, …, size - 1`, `send_counts[q]` bytes for rank `q` (any length, 0 too). The
    /// result is the concatenation of what every rank sent to this one, in rank order, with the
    /// byte count from each rank. This rank's own part comes back as it is. The training loop
    /// moves each epoch's rows between the ranks' shards with one call (docs/SCALING.md).
    ///
    /// # Errors
    /// [`crate::Error::Shape`] if `send_counts` does not have [`Comm::size`] entries adding up
    /// to `send.len()`; a communication error (with MPI: more than 2^31 - 1 bytes sent or
    /// received by one rank, on every rank of the call).
    fn all_to_all_bytes(&self, send: &[u8], send_counts: &[usize])
    -> Result<(Vec<u8>, Vec<usize>)>;
    /// Waits until every rank has called it.
    ///
    /// # Errors
    /// A communication error.
    fn barrier(&self) -> Result<()>;

    /// The most bytes one rank may send, or receive, in one [`Comm::all_to_all_bytes`] (with
    /// MPI 2^31 - 1: its counts are 32-bit); unlimited by default. Callers that may move more
    /// split their exchange (the training loop does: docs/SCALING.md).
    fn max_all_to_all_bytes(&self) -> usize {
        usize::MAX
    }

    /// Element-wise sums over the ranks, added in rank order in `f64`; the result replaces `buf`
    /// on every rank. The identity on one process.
    ///
    /// # Errors
    /// A communication error.
    fn sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let size = self.size();
        if size == 1 {
            return Ok(());
        }
        let mut all = vec![0.0f64; size * buf.len()];
        self.all_gather_f64(buf, &mut all)?;
        let n = buf.len();
        buf.copy_from_slice(&all[..n]);
        for r in 1..size {
            for (b, v) in buf.iter_mut().zip(&all[r * n..(r + 1) * n]) {
                *b += v;
            }
        }
        Ok(())
    }

    /// The sum of a count over the ranks.
    ///
    /// # Errors
    /// A communication error.
    fn sum_count(&self, local: usize) -> Result<usize> {
        let mut v = [local as f64];
        self.sum_f64(&mut v)?;
        // counts are far below 2^53: exact in f64
        Ok(v[0] as usize)
    }

    /// Whether any rank says `true`.
    ///
    /// # Errors
    /// A communication error.
    fn any(&self, local: bool) -> Result<bool> {
        Ok(self.sum_count(usize::from(local))? > 0)
    }
}

/// The communicator of a single process: rank 0 of 1.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Comm for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_gather_f64(&self, local: &[f64], out: &mut [f64]) -> Result<()> {
        if out.len() != local.len() {
            return Err(crate::Error::shape(
                "all_gather",
                format!("{} values into a buffer of {}", local.len(), out.len()),
            ));
        }
        out.copy_from_slice(local);
        Ok(())
    }
    fn all_gather_bytes(&self, local: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![local.to_vec()])
    }
    fn all_to_all_bytes(
        &self,
        send: &[u8],
        send_counts: &[usize],
    ) -> Result<(Vec<u8>, Vec<usize>)> {
        check_all_to_all(send, send_counts, 1)?;
        Ok((send.to_vec(), send_counts.to_vec()))
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// A communicator that counts its collectives and the time spent in them (waiting for the other
/// ranks included): the communication share of a run (docs/SCALING.md).
#[derive(Debug)]
pub struct Timed<C> {
    inner: C,
    totals: std::sync::Mutex<CommTotals>,
}

/// What a [`Timed`] communicator has counted.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CommTotals {
    /// Seconds inside collectives.
    pub seconds: f64,
    /// Collectives called.
    pub calls: u64,
    /// Bytes this rank contributed.
    pub bytes: u64,
}

impl<C: Comm> Timed<C> {
    /// Wraps `inner`.
    pub fn new(inner: C) -> Self {
        Timed {
            inner,
            totals: std::sync::Mutex::new(CommTotals::default()),
        }
    }

    /// The totals so far.
    pub fn totals(&self) -> CommTotals {
        *self.totals.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn timed<T>(&self, bytes: usize, f: impl FnOnce() -> T) -> T {
        let t0 = std::time::Instant::now();
        let out = f();
        let mut t = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        t.seconds += t0.elapsed().as_secs_f64();
        t.calls += 1;
        t.bytes += bytes as u64;
        out
    }
}

impl<C: Comm> Comm for Timed<C> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn all_gather_f64(&self, local: &[f64], out: &mut [f64]) -> Result<()> {
        self.timed(8 * local.len(), || self.inner.all_gather_f64(local, out))
    }
    fn all_gather_bytes(&self, local: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.timed(local.len(), || self.inner.all_gather_bytes(local))
    }
    fn all_to_all_bytes(
        &self,
        send: &[u8],
        send_counts: &[usize],
    ) -> Result<(Vec<u8>, Vec<usize>)> {
        // the bytes that leave this rank (its own part stays)
        let own = send_counts.get(self.inner.rank()).copied().unwrap_or(0);
        let out = send.len().saturating_sub(own);
        self.timed(out, || self.inner.all_to_all_bytes(send, send_counts))
    }
    fn barrier(&self) -> Result<()> {
        self.timed(0, || self.inner.barrier())
    }
    fn max_all_to_all_bytes(&self) -> usize {
        self.inner.max_all_to_all_bytes()
    }
}

impl<C: Comm + ?Sized> Comm for std::sync::Arc<C> {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn size(&self) -> usize {
        (**self).size()
    }
    fn all_gather_f64(&self, local: &[f64], out: &mut [f64]) -> Result<()> {
        (**self).all_gather_f64(local, out)
    }
    fn all_gather_bytes(&self, local: &[u8]) -> Result<Vec<Vec<u8>>> {
        (**self).all_gather_bytes(local)
    }
    fn all_to_all_bytes(
        &self,
        send: &[u8],
        send_counts: &[usize],
    ) -> Result<(Vec<u8>, Vec<usize>)> {
        (**self).all_to_all_bytes(send, send_counts)
    }
    fn barrier(&self) -> Result<()> {
        (**self).barrier()
    }
    fn max_all_to_all_bytes(&self) -> usize {
        (**self).max_all_to_all_bytes()
    }
}

/// Checks the arguments of [`Comm::all_to_all_bytes`] (for its implementations): one count
/// per rank, adding up to the buffer's length.
///
/// # Errors
/// [`crate::Error::Shape`] otherwise.
pub fn check_all_to_all(send: &[u8], send_counts: &[usize], size: usize) -> Result<()> {
    let total = send_counts
        .iter()
        .try_fold(0usize, |t, &c| t.checked_add(c));
    if send_counts.len() != size || total != Some(send.len()) {
        return Err(crate::Error::shape(
            "all_to_all",
            format!(
                "{} counts for {size} ranks, adding up to {total:?} for a buffer of {} bytes",
                send_counts.len(),
                send.len()
            ),
        ));
    }
    Ok(())
}

/// The granularity of a batch's split between ranks in training: 16 rows, the CPU GEMM's
/// largest tile. A GEMM rounds a tile cut by the matrix's edge differently from a whole one, so
/// each row's products (and FISTA's iterates) are the one-process run's bits only when every
/// rank's block starts at a multiple of the tile (the thread pool splits rows the same way).
pub const SHARD_ALIGN: usize = 16;

/// Rank `rank`'s part of `n` items split over `size` ranks in contiguous blocks: the first
/// `n % size` ranks take one item more. Ranks past the items get an empty range.
pub fn shard(n: usize, rank: usize, size: usize) -> Range<usize> {
    let size = size.max(1);
    let base = n / size;
    let extra = n % size;
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    start.min(n)..(start + len).min(n)
}

/// Rank `rank`'s rows of `n` rows processed in blocks of `block` rows: whole blocks are split
/// over the ranks ([`shard`] of the blocks), so that no block is cut between two ranks (the last
/// block may be short).
pub fn shard_blocks(n: usize, block: usize, rank: usize, size: usize) -> Range<usize> {
    let block = block.max(1);
    let blocks = shard(n.div_ceil(block), rank, size);
    (blocks.start * block).min(n)..(blocks.end * block).min(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_item_once_in_order() {
        for n in [0, 1, 5, 250, 251] {
            for size in 1..5 {
                let parts: Vec<_> = (0..size).map(|r| shard(n, r, size)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, n);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<_> = parts.iter().map(|p| p.len()).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
            }
        }
        assert_eq!(shard(250, 0, 3), 0..84);
        assert_eq!(shard(250, 2, 3), 167..250);
    }

    #[test]
    fn block_shards_never_cut_a_block() {
        for (n, b, size) in [(1000, 250, 3), (1001, 250, 2), (10, 250, 2), (0, 4, 3)] {
            let parts: Vec<_> = (0..size).map(|r| shard_blocks(n, b, r, size)).collect();
            assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), n);
            for p in &parts {
                assert!(p.start % b == 0 || p.is_empty(), "{p:?}");
            }
        }
    }

    #[test]
    fn solo_reductions_are_the_identity() {
        let mut v = [1.5, -2.0];
        Solo.sum_f64(&mut v).unwrap();
        assert_eq!(v, [1.5, -2.0]);
        assert_eq!(Solo.sum_count(7).unwrap(), 7);
        assert!(Solo.any(true).unwrap() && !Solo.any(false).unwrap());
        assert_eq!(Solo.all_gather_bytes(b"ab").unwrap(), vec![b"ab".to_vec()]);
        assert_eq!(
            Solo.all_to_all_bytes(b"cd", &[2]).unwrap(),
            (b"cd".to_vec(), vec![2])
        );
        assert!(Solo.all_to_all_bytes(b"cd", &[1, 1]).is_err());
        assert!(Solo.all_to_all_bytes(b"cd", &[3]).is_err());
    }
}
