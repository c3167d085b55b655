//! Files: `.npy` arrays (read as `f32`, converting `f64`) and atomic writes.
//!
//! Every write goes to a temporary file in the destination's directory and is renamed into place,
//! so an interrupted write never leaves a half-written file under the final name.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use ndarray::Array2;
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};

use crate::error::{Error, Result};

/// Reads a 2-D `.npy` array of `float32` or `float64` (converted to `f32`), C or Fortran order.
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened; [`Error::Npy`] if it is not a 2-D float array.
pub fn read_npy_f32(path: &Path) -> Result<Array2<f32>> {
    let open = || {
        File::open(path)
            .map(BufReader::new)
            .map_err(|source| Error::Io {
                action: "reading",
                path: path.to_path_buf(),
                source,
            })
    };
    match Array2::<f32>::read_npy(open()?) {
        Ok(a) => Ok(a),
        Err(ReadNpyError::WrongDescriptor(_)) => match Array2::<f64>::read_npy(open()?) {
            Ok(a) => Ok(a.mapv(|v| v as f32)),
            Err(e) => Err(npy_error(path, e)),
        },
        Err(e) => Err(npy_error(path, e)),
    }
}

fn npy_error(path: &Path, e: ReadNpyError) -> Error {
    let detail = match e {
        ReadNpyError::WrongDescriptor(d) => {
            format!("expected a 2-D float32 or float64 array, found descriptor {d}")
        }
        ReadNpyError::WrongNdim(expected, found) => {
            format!("expected a 2-D array, found {found} dimensions (expected {expected:?})")
        }
        other => other.to_string(),
    };
    Error::Npy {
        path: path.to_path_buf(),
        detail,
    }
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, then rename).
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_path(path);
    let io = |source| Error::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes a 2-D `f32` array as `.npy`, atomically.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_npy_f32(path: &Path, a: &Array2<f32>) -> Result<()> {
    write_atomic(path, |w| a.write_npy(w).map_err(std::io::Error::other))
}

/// Writes a value as pretty JSON, atomically.
///
/// # Errors
/// [`Error::Json`] if serialisation fails; [`Error::Io`] naming the file.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    write_atomic(path, |w| {
        w.write_all(text.as_bytes())?;
        w.write_all(b"\n")
    })
}
