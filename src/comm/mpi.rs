//! [`MpiComm`]: MPI's world communicator through the `mpi` crate (rsmpi), feature `mpi`.

use std::sync::Mutex;

use mpi::Threading;
use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::CommunicatorCollectives;

use super::{Comm, check_all_to_all};
use crate::error::{Error, Result};

/// The processes started by `mpirun`: MPI's world communicator.
///
/// MPI is initialised with [`Threading::Serialized`] (calls from any thread, never two at once):
/// every call goes through one mutex. Dropping the last `MpiComm` finalises MPI.
pub struct MpiComm {
    world: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    local_rank: usize,
    // dropped after `world` (fields drop in order): MPI_Finalize
    _universe: Universe,
}

// SAFETY: MPI was initialised with at least `Threading::Serialized`, which allows calls from any
// thread as long as no two run at once; every call on `world` holds its mutex, and the universe
// is only finalised on drop.
unsafe impl Send for MpiComm {}
// SAFETY: as above; shared access only reaches MPI through the mutex.
unsafe impl Sync for MpiComm {}

impl std::fmt::Debug for MpiComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiComm")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_rank", &self.local_rank)
            .finish()
    }
}

impl MpiComm {
    /// Initialises MPI (a process started without `mpirun` is rank 0 of 1).
    ///
    /// # Errors
    /// [`Error::Comm`] if MPI is already initialised or offers less than serialized threading.
    pub fn init() -> Result<MpiComm> {
        let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::Comm("MPI is already initialised in this process".into()))?;
        if level < Threading::Serialized {
            return Err(Error::Comm(format!(
                "the MPI library offers threading level {level:?}, varsparse needs Serialized"
            )));
        }
        let world = universe.world();
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        // the rank among the processes of this node: which GPU a rank drives
        let local_rank = world.split_shared(world.rank()).rank() as usize;
        Ok(MpiComm {
            world: Mutex::new(world),
            rank,
            size,
            local_rank,
            _universe: universe,
        })
    }

    /// This process's rank among the ranks on its node (`MPI_COMM_TYPE_SHARED`).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Ends every rank of the job at once with `code` (`MPI_Abort`), after a failure on this
    /// one: no rank is left waiting in a collective.
    ///
    /// It takes no lock, so that it also works from a panic inside a collective.
    pub fn abort(&self, code: i32) -> ! {
        Self::abort_world(code)
    }

    /// [`MpiComm::abort`] without a communicator at hand (e.g. in a panic hook, which must not
    /// keep the communicator alive: MPI is finalised when the last one drops). Call it only
    /// while MPI is initialised.
    ///
    /// It waits a quarter of a second first: `mpirun` forwards each rank's standard error
    /// asynchronously, and an abort right after the message can lose it.
    pub fn abort_world(code: i32) -> ! {
        use std::io::Write;
        let _ = std::io::stderr().flush();
        std::thread::sleep(std::time::Duration::from_millis(250));
        SimpleCommunicator::world().abort(code)
    }

    fn with<T>(&self, f: impl FnOnce(&SimpleCommunicator) -> T) -> T {
        let world = self.world.lock().unwrap_or_else(|p| p.into_inner());
        f(&world)
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_gather_f64(&self, local: &[f64], out: &mut [f64]) -> Result<()> {
        if out.len() != local.len() * self.size {
            return Err(Error::shape(
                "all_gather",
                format!(
                    "{} values from each of {} ranks into a buffer of {}",
                    local.len(),
                    self.size,
                    out.len()
                ),
            ));
        }
        self.with(|w| w.all_gather_into(local, out));
        Ok(())
    }
    fn all_gather_bytes(&self, local: &[u8]) -> Result<Vec<Vec<u8>>> {
        let len = i32::try_from(local.len())
            .map_err(|_| Error::Comm(format!("{} bytes to gather: over 2^31", local.len())))?;
        let mut lens = vec![0i32; self.size];
        self.with(|w| w.all_gather_into(&len, &mut lens[..]));
        let mut displs = Vec::with_capacity(self.size);
        let mut total = 0i64;
        for &l in &lens {
            displs.push(
                i32::try_from(total)
                    .map_err(|_| Error::Comm("gathered bytes exceed 2^31".into()))?,
            );
            total += i64::from(l);
        }
        let mut all = vec![0u8; total as usize];
        {
            let mut part = PartitionMut::new(&mut all[..], &lens[..], &displs[..]);
            self.with(|w| w.all_gather_varcount_into(local, &mut part));
        }
        Ok(lens
            .iter()
            .zip(&displs)
            .map(|(&l, &d)| all[d as usize..(d + l) as usize].to_vec())
            .collect())
    }
    fn all_to_all_bytes(
        &self,
        send: &[u8],
        send_counts: &[usize],
    ) -> Result<(Vec<u8>, Vec<usize>)> {
        check_all_to_all(send, send_counts, self.size)?;
        // the counts first (MPI_Alltoall), then the bytes (MPI_Alltoallv), whose counts and
        // offsets are 32-bit: every rank checks its side and all agree before the exchange, so
        // that a rank over the limit does not leave the others waiting in it
        let counts: Vec<u64> = send_counts.iter().map(|&c| c as u64).collect();
        let mut recv_counts = vec![0u64; self.size];
        self.with(|w| w.all_to_all_into(&counts[..], &mut recv_counts[..]));
        let (send32, recv32) = (i32_counts(&counts), i32_counts(&recv_counts));
        let fits = u8::from(send32.is_some() && recv32.is_some());
        let mut all_fit = vec![0u8; self.size];
        self.with(|w| w.all_gather_into(&fits, &mut all_fit[..]));
        let (Some((sc, sd)), Some((rc, rd))) = (send32, recv32) else {
            return Err(Error::Comm(format!(
                "an all-to-all of {} bytes sent and {} received by rank {}: MPI's counts are \
                 32-bit, at most 2^31 - 1 bytes each way per rank (use more ranks)",
                send.len(),
                recv_counts.iter().sum::<u64>(),
                self.rank
            )));
        };
        if let Some(r) = all_fit.iter().position(|&f| f == 0) {
            return Err(Error::Comm(format!(
                "rank {r}'s part of an all-to-all exceeds MPI's 2^31 - 1 bytes (use more ranks)"
            )));
        }
        // fits in i32, so in usize
        let total: usize = rc.iter().map(|&c| c as usize).sum();
        let mut recv = Vec::new();
        recv.try_reserve_exact(total)
            .map_err(|_| Error::Comm(format!("cannot allocate {total} bytes to receive")))?;
        recv.resize(total, 0u8);
        {
            let part = Partition::new(send, &sc[..], &sd[..]);
            let mut rpart = PartitionMut::new(&mut recv[..], &rc[..], &rd[..]);
            self.with(|w| w.all_to_all_varcount_into(&part, &mut rpart));
        }
        Ok((recv, rc.iter().map(|&c| c as usize).collect()))
    }
    fn barrier(&self) -> Result<()> {
        self.with(|w| w.barrier());
        Ok(())
    }
    fn max_all_to_all_bytes(&self) -> usize {
        i32::MAX as usize
    }
}

/// Counts and their offsets in one buffer as MPI's 32-bit integers, or `None` when the buffer
/// would exceed `i32::MAX` bytes.
fn i32_counts(counts: &[u64]) -> Option<(Vec<i32>, Vec<i32>)> {
    let mut c32 = Vec::with_capacity(counts.len());
    let mut displs = Vec::with_capacity(counts.len());
    let mut total = 0u64;
    for &c in counts {
        displs.push(i32::try_from(total).ok()?);
        c32.push(i32::try_from(c).ok()?);
        total += c;
    }
    i32::try_from(total).ok()?;
    Some((c32, displs))
}
