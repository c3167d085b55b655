//! The processes of this run: one, or MPI's ranks when the tool is built with the `mpi` feature
//! and started by `mpirun` (docs/SCALING.md). `train`, `infer` and `encode` share their work
//! between the ranks; the other commands refuse more than one.

use std::sync::Arc;

use varsparse::backend::Device;
use varsparse::comm::{Comm, Solo};
use varsparse::{Error, Result};

/// The ranks of this run and where this one computes.
#[derive(Clone, Debug)]
pub struct Ranks {
    /// The communicator ([`Solo`] for one process).
    pub comm: Arc<dyn Comm>,
    /// This rank among the ranks of its node (the GPU it drives).
    pub local_rank: usize,
    #[cfg(feature = "mpi")]
    mpi: Option<Arc<varsparse::comm::MpiComm>>,
}

impl Ranks {
    /// One process.
    #[cfg_attr(feature = "mpi", allow(dead_code))]
    pub fn solo() -> Ranks {
        Ranks {
            comm: Arc::new(Solo),
            local_rank: 0,
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    /// MPI's world (a process started without `mpirun` is one rank of one).
    #[cfg(feature = "mpi")]
    pub fn mpi() -> Result<Ranks> {
        let m = Arc::new(varsparse::comm::MpiComm::init()?);
        Ok(Ranks {
            comm: m.clone(),
            local_rank: m.local_rank(),
            mpi: Some(m),
        })
    }

    /// Whether several processes share the work.
    pub fn distributed(&self) -> bool {
        self.comm.size() > 1
    }

    /// Whether this rank writes the outputs and prints progress (rank 0).
    pub fn is_root(&self) -> bool {
        self.comm.rank() == 0
    }

    /// The device of this rank: `cuda:N` means GPU `N + local rank`, so that the ranks of a
    /// node drive one GPU each.
    pub fn device(&self, d: Device) -> Device {
        match d {
            Device::Cuda { ordinal } if self.distributed() => Device::Cuda {
                ordinal: ordinal + self.local_rank,
            },
            d => d,
        }
    }

    /// An error for a command that runs on one process only.
    pub fn single(&self, command: &str) -> Result<()> {
        if self.distributed() {
            return Err(Error::Comm(format!(
                "`varsparse {command}` runs on one process; under mpirun only train, infer and \
                 encode share their work (start it without mpirun or with -np 1)"
            )));
        }
        Ok(())
    }

    /// Ends the whole job after `err` on this rank: with several ranks, every rank is stopped
    /// at once (`MPI_Abort`), so that none waits in a collective for this one.
    pub fn fail(&self, err: &Error) -> std::process::ExitCode {
        if self.distributed() {
            // one write, so that other ranks' output does not interleave with it
            say(&format!(
                "error on rank {} of {}: {err}\n",
                self.comm.rank(),
                self.comm.size()
            ));
            #[cfg(feature = "mpi")]
            if let Some(m) = &self.mpi {
                m.abort(1);
            }
        } else {
            eprintln!("error: {err}");
        }
        std::process::ExitCode::FAILURE
    }

    /// Fault injection for the tests of a job's failure (docs/SCALING.md): with
    /// `VARSPARSE_FAULT=panic@R` in the environment, rank R panics once the job has started
    /// (only in a build with the `mpi` feature, and only with several ranks).
    pub fn inject_fault(&self) {
        #[cfg(feature = "mpi")]
        if let (true, Ok(f)) = (self.distributed(), std::env::var("VARSPARSE_FAULT"))
            && f.strip_prefix("panic@")
                .and_then(|r| r.parse::<usize>().ok())
                == Some(self.comm.rank())
        {
            panic!("VARSPARSE_FAULT={f}: an injected failure");
        }
    }

    /// With several ranks, a panic on one ends the job at once (after its message).
    pub fn abort_on_panic(&self) {
        #[cfg(feature = "mpi")]
        if let (true, Some(_)) = (self.distributed(), &self.mpi) {
            let (rank, size) = (self.comm.rank(), self.comm.size());
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                say(&format!("panic on rank {rank} of {size}:\n"));
                default(info);
                varsparse::comm::MpiComm::abort_world(101);
            }));
        }
    }
}

/// Writes `text` to standard error in one call.
fn say(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
