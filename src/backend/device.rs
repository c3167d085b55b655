//! Choosing a backend at run time: [`Device`] names one (`cpu`, `cuda`, `cuda:1`), and
//! [`Device::run`] calls code written once, generic over [`Backend`], with it.
//!
//! Rust closures cannot be generic, so the code to run is a type implementing [`OnBackend`]:
//!
//! ```
//! use varsparse::backend::{Backend, Device, OnBackend};
//! use varsparse::Result;
//!
//! /// Uploads a matrix and reads back its sum of squares, on whichever device.
//! struct SumSq(ndarray::Array2<f32>);
//!
//! impl OnBackend for SumSq {
//!     type Output = f32;
//!     fn run<B: Backend<f32>>(self, make: &dyn Fn() -> Result<B>) -> Result<f32> {
//!         let be = make()?;
//!         let a = be.upload(self.0.view())?;
//!         be.sum_sq(&a)
//!     }
//! }
//!
//! let a = ndarray::array![[1.0f32, 2.0], [3.0, 4.0]];
//! assert_eq!(Device::Cpu.run(SumSq(a.clone()))?, 30.0);
//! // Without the `cuda` feature or a GPU this is a typed error, never a panic:
//! let gpu: Device = "cuda".parse()?;
//! if let Err(e) = gpu.run(SumSq(a)) {
//!     assert!(matches!(e, varsparse::Error::CudaUnavailable(_)));
//! }
//! # Ok::<(), varsparse::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use super::{Backend, Cpu};
use crate::error::{Error, Result};

/// Where to compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "device")]
pub enum Device {
    /// The CPU backend ([`Cpu`]), threads from the enclosing
    /// [`with_threads`](super::cpu::threads::with_threads).
    #[default]
    Cpu,
    /// An NVIDIA GPU through the CUDA backend (feature `cuda`).
    Cuda {
        /// The device's ordinal (0 for the first GPU).
        ordinal: usize,
    },
}

/// Code written once against [`Backend`], run by [`Device::run`] on the device chosen at run
/// time.
pub trait OnBackend {
    /// What the code returns.
    type Output;
    /// Runs with backends made by `make`: call it once for one backend, or once per model for
    /// code that keeps several (each model owns its backend).
    ///
    /// # Errors
    /// Whatever the code returns; `make`'s error when the device cannot start.
    fn run<B: Backend<f32>>(self, make: &dyn Fn() -> Result<B>) -> Result<Self::Output>;
}

impl Device {
    /// Runs `job` on this device.
    ///
    /// # Errors
    /// [`Error::CudaUnavailable`] for a CUDA device in a build without the `cuda` feature, or
    /// when the driver, cuBLAS, NVRTC or the device is missing; otherwise `job`'s errors.
    pub fn run<J: OnBackend>(self, job: J) -> Result<J::Output> {
        match self {
            Device::Cpu => job.run(&|| Ok(Cpu)),
            #[cfg(feature = "cuda")]
            Device::Cuda { ordinal } => job.run(&|| super::Cuda::new(ordinal)),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda { .. } => Err(Error::CudaUnavailable(
                "this build has no CUDA backend: rebuild with --features cuda".into(),
            )),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda { ordinal: 0 } => f.write_str("cuda"),
            Device::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl FromStr for Device {
    type Err = Error;

    /// `cpu`, `cuda` (the first GPU) or `cuda:N`.
    fn from_str(s: &str) -> Result<Device> {
        let bad = || Error::param("device", s, "expected cpu, cuda or cuda:N");
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda { ordinal: 0 }),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
                Ok(Device::Cuda {
                    ordinal: n.parse().map_err(|_| bad())?,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in [
            Device::Cpu,
            Device::Cuda { ordinal: 0 },
            Device::Cuda { ordinal: 3 },
        ] {
            assert_eq!(d.to_string().parse::<Device>().unwrap(), d);
        }
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            assert!(bad.parse::<Device>().is_err(), "{bad}");
        }
    }
}
