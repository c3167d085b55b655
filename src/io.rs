//! Files: `.npy` arrays (read as `f32`, converting `f64`; every header checked against its file
//! before allocation) and atomic writes.
//!
//! Every write goes to a temporary file in the destination's directory and is renamed into place,
//! so an interrupted write never leaves a half-written file under the final name.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ShapeBuilder};
use ndarray_npy::WriteNpyExt;

use crate::comm::Comm;
use crate::error::{Error, Result};

/// The most elements an `.npy` array may hold when varsparse reads it (2^32, 16 GiB of `f32`):
/// a header asking for more is refused before anything is allocated, with a message saying so.
pub const MAX_NPY_ELEMENTS: u64 = 1 << 32;

/// The most bytes [`NpyFile::read_row_indices`] reads at once: wanted rows closer together
/// than this are read in one span, the rows between them skipped after reading.
pub const ROW_SPAN_BYTES: usize = 4 << 20;

/// The longest `.npy` header varsparse reads (numpy writes a few hundred bytes).
const MAX_NPY_HEADER: usize = 1 << 20;

/// The element type of an `.npy` array varsparse reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyDtype {
    /// `float32`.
    F32,
    /// `float64` (converted to `f32` on reading).
    F64,
}

impl NpyDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            NpyDtype::F32 => 4,
            NpyDtype::F64 => 8,
        }
    }
}

/// What an `.npy` header says, checked against the file it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// The element type.
    pub dtype: NpyDtype,
    /// Whether the elements are big-endian.
    pub big_endian: bool,
    /// Whether the data is in Fortran (column-major) order.
    pub fortran_order: bool,
    /// The shape (any rank; readers then ask for the rank they need).
    pub shape: Vec<usize>,
    /// The offset of the data in the file.
    pub data_offset: u64,
}

impl NpyHeader {
    /// The number of elements (checked not to overflow when the header was parsed).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses and checks a header from the first bytes of a file of `file_len` bytes: the magic
    /// string, a version 1, 2 or 3 header, a `descr` of float32 or float64 in either byte
    /// order, the order flag, a shape whose element count does not overflow and is at most
    /// [`MAX_NPY_ELEMENTS`], and a data size that the file holds exactly. `bytes` needs only
    /// hold the header (a missing part is reported as a truncated file).
    ///
    /// # Errors
    /// A message naming what is wrong (the caller adds the file's name).
    pub fn parse(bytes: &[u8], file_len: u64) -> std::result::Result<NpyHeader, String> {
        const MAGIC: &[u8] = b"\x93NUMPY";
        if bytes.len() < 10 || &bytes[..6] != MAGIC {
            return Err(if bytes.len() < 6 {
                format!("{} bytes: too short for an .npy file", bytes.len())
            } else {
                "not an .npy file (the magic string \\x93NUMPY is missing)".into()
            });
        }
        let (major, minor) = (bytes[6], bytes[7]);
        let (len_bytes, header_len) = match major {
            1 => (2usize, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
            2 | 3 => {
                if bytes.len() < 12 {
                    return Err("truncated .npy header".into());
                }
                let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
                (4usize, n as usize)
            }
            _ => return Err(format!("unsupported .npy format version {major}.{minor}")),
        };
        if header_len > MAX_NPY_HEADER {
            return Err(format!(
                "the header claims {header_len} bytes, more than the {MAX_NPY_HEADER} varsparse reads"
            ));
        }
        let start = 8 + len_bytes;
        let end = start + header_len;
        if (end as u64) > file_len || end > bytes.len() {
            return Err(format!(
                "truncated: the header claims {header_len} bytes, the file has {file_len} in all"
            ));
        }
        let text = std::str::from_utf8(&bytes[start..end])
            .map_err(|_| "the header is not text".to_string())?;
        let field = |key: &str| -> std::result::Result<&str, String> {
            let pat = format!("'{key}':");
            let at = text
                .find(&pat)
                .ok_or_else(|| format!("the header has no '{key}' field: {}", text.trim()))?;
            Ok(text[at + pat.len()..].trim_start())
        };
        let descr = field("descr")?;
        let quote = descr
            .chars()
            .next()
            .filter(|c| *c == '\'' || *c == '"')
            .ok_or_else(|| format!("unreadable 'descr' in {}", text.trim()))?;
        let descr = descr[1..]
            .split(quote)
            .next()
            .ok_or_else(|| format!("unreadable 'descr' in {}", text.trim()))?;
        let (dtype, big_endian) = match descr {
            "<f4" | "=f4" => (NpyDtype::F32, false),
            ">f4" => (NpyDtype::F32, true),
            "<f8" | "=f8" => (NpyDtype::F64, false),
            ">f8" => (NpyDtype::F64, true),
            other => {
                return Err(format!(
                    "expected a float32 or float64 array, found descriptor '{other}'"
                ));
            }
        };
        let order = field("fortran_order")?;
        let fortran_order = if order.starts_with("True") {
            true
        } else if order.starts_with("False") {
            false
        } else {
            return Err(format!("unreadable 'fortran_order' in {}", text.trim()));
        };
        let shape_text = field("shape")?;
        let inner = shape_text
            .strip_prefix('(')
            .and_then(|s| s.split(')').next())
            .ok_or_else(|| format!("unreadable 'shape' in {}", text.trim()))?;
        let mut shape = Vec::new();
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let part = part.trim_end_matches('L');
            shape.push(
                part.parse::<usize>()
                    .map_err(|_| format!("unreadable dimension '{part}' in the shape"))?,
            );
        }
        let mut count: u64 = 1;
        for &d in &shape {
            count = count
                .checked_mul(d as u64)
                .filter(|&c| c <= MAX_NPY_ELEMENTS)
                .ok_or_else(|| {
                    format!(
                        "the shape {shape:?} holds more than {MAX_NPY_ELEMENTS} elements, the \
                         most varsparse reads"
                    )
                })?;
        }
        let data_len = count * dtype.size() as u64;
        let have = file_len - end as u64;
        if have != data_len {
            return Err(format!(
                "the header's shape {shape:?} of {} needs {data_len} bytes of data, the file \
                 has {have} ({})",
                if dtype == NpyDtype::F32 {
                    "float32"
                } else {
                    "float64"
                },
                if have < data_len {
                    "truncated"
                } else {
                    "trailing bytes"
                }
            ));
        }
        Ok(NpyHeader {
            dtype,
            big_endian,
            fortran_order,
            shape,
            data_offset: end as u64,
        })
    }
}

/// An `.npy` file whose header has been read and checked; its data is read on demand, whole or
/// by rows, so that no more than what is asked for is read (or allocated).
#[derive(Debug)]
pub struct NpyFile {
    path: PathBuf,
    file: File,
    header: NpyHeader,
}

impl NpyFile {
    /// Opens `path` and checks its header ([`NpyHeader::parse`]) against the file's size.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened; [`Error::Npy`] naming the file and what is
    /// wrong with it.
    pub fn open(path: &Path) -> Result<NpyFile> {
        let io = |source| Error::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut head = vec![0u8; (file_len.min(4096)) as usize];
        file.read_exact(&mut head).map_err(io)?;
        let header = match NpyHeader::parse(&head, file_len) {
            Err(e) if e.starts_with("truncated") && file_len > head.len() as u64 => {
                // a long header: read as much as it claims (bounded by MAX_NPY_HEADER)
                let want = (file_len.min((MAX_NPY_HEADER + 16) as u64)) as usize;
                head.resize(want, 0);
                file.seek(SeekFrom::Start(0)).map_err(io)?;
                file.read_exact(&mut head).map_err(io)?;
                NpyHeader::parse(&head, file_len)
            }
            other => other,
        }
        .map_err(|detail| npy_err(path, detail))?;
        Ok(NpyFile {
            path: path.to_path_buf(),
            file,
            header,
        })
    }

    /// The checked header.
    pub fn header(&self) -> &NpyHeader {
        &self.header
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `(rows, cols)` of a 2-D array.
    ///
    /// # Errors
    /// [`Error::Npy`] for another rank.
    pub fn dim2(&self) -> Result<(usize, usize)> {
        match self.header.shape[..] {
            [r, c] => Ok((r, c)),
            _ => Err(npy_err(
                &self.path,
                format!(
                    "expected a 2-D array, found shape {:?} ({} dimensions)",
                    self.header.shape,
                    self.header.shape.len()
                ),
            )),
        }
    }

    /// Reads elements `start..start + n` of the stored order, converted to `f32`.
    fn read_elements(&mut self, start: usize, n: usize) -> Result<Vec<f32>> {
        let size = self.header.dtype.size();
        let io = |source| Error::Io {
            action: "reading",
            path: self.path.clone(),
            source,
        };
        self.file
            .seek(SeekFrom::Start(
                self.header.data_offset + (start * size) as u64,
            ))
            .map_err(io)?;
        // read straight into the typed buffer (no intermediate bytes), then fix the byte order
        // where the file's differs from this machine's
        let swap = self.header.big_endian != cfg!(target_endian = "big");
        Ok(match self.header.dtype {
            NpyDtype::F32 => {
                let mut v = vec![0f32; n];
                self.file
                    .read_exact(bytemuck::cast_slice_mut(&mut v))
                    .map_err(io)?;
                if swap {
                    for x in &mut v {
                        *x = f32::from_bits(x.to_bits().swap_bytes());
                    }
                }
                v
            }
            NpyDtype::F64 => {
                let mut v = vec![0f64; n];
                self.file
                    .read_exact(bytemuck::cast_slice_mut(&mut v))
                    .map_err(io)?;
                v.iter()
                    .map(|&x| {
                        (if swap {
                            f64::from_bits(x.to_bits().swap_bytes())
                        } else {
                            x
                        }) as f32
                    })
                    .collect()
            }
        })
    }

    /// The whole 2-D array as `f32`, in row-major order.
    ///
    /// # Errors
    /// [`Error::Npy`] for another rank; [`Error::Io`].
    pub fn read_2d(&mut self) -> Result<Array2<f32>> {
        let (r, c) = self.dim2()?;
        let v = self.read_elements(0, r * c)?;
        let a = if self.header.fortran_order {
            Array2::from_shape_vec((r, c).f(), v).map(|a| a.as_standard_layout().into_owned())
        } else {
            Array2::from_shape_vec((r, c), v)
        };
        a.map_err(|e| npy_err(&self.path, e.to_string()))
    }

    /// Rows `rows` of a 2-D array as `f32`; a C-order file reads only those rows.
    ///
    /// # Errors
    /// [`Error::Npy`] for another rank or rows out of range; [`Error::Io`].
    pub fn read_rows(&mut self, rows: std::ops::Range<usize>) -> Result<Array2<f32>> {
        let (r, c) = self.dim2()?;
        if rows.start > rows.end || rows.end > r {
            return Err(npy_err(
                &self.path,
                format!("rows {rows:?} asked of an array of {r} rows"),
            ));
        }
        if self.header.fortran_order {
            return Ok(self.read_2d()?.slice(ndarray::s![rows, ..]).to_owned());
        }
        let v = self.read_elements(rows.start * c, (rows.end - rows.start) * c)?;
        Array2::from_shape_vec((rows.end - rows.start, c), v)
            .map_err(|e| npy_err(&self.path, e.to_string()))
    }

    /// The rows `idx` of a 2-D array, in that order, as `f32` (an index may repeat). A C-order
    /// file is read in increasing row order, in spans of at most [`ROW_SPAN_BYTES`] bytes that
    /// cover nearby wanted rows and skip long gaps, so the memory is the rows asked for and one
    /// span; a Fortran-order file is read whole.
    ///
    /// # Errors
    /// [`Error::Npy`] for another rank or an index out of range (before anything is read or
    /// allocated); [`Error::Io`].
    pub fn read_row_indices(&mut self, idx: &[usize]) -> Result<Array2<f32>> {
        let (r, c) = self.dim2()?;
        if let Some(&bad) = idx.iter().find(|&&i| i >= r) {
            return Err(npy_err(
                &self.path,
                format!("row {bad} asked of an array of {r} rows"),
            ));
        }
        if self.header.fortran_order {
            return Ok(self.read_2d()?.select(ndarray::Axis(0), idx));
        }
        if c == 0 || idx.is_empty() {
            return Ok(Array2::zeros((idx.len(), c)));
        }
        if (idx.len() as u64).saturating_mul(c as u64) > MAX_NPY_ELEMENTS {
            return Err(npy_err(
                &self.path,
                format!(
                    "{} rows of {c} columns hold more than {MAX_NPY_ELEMENTS} elements",
                    idx.len()
                ),
            ));
        }
        let mut out = Array2::<f32>::zeros((idx.len(), c));
        let mut order: Vec<usize> = (0..idx.len()).collect();
        order.sort_by_key(|&k| idx[k]);
        let span_rows = (ROW_SPAN_BYTES / (c * self.header.dtype.size())).max(1);
        let mut k = 0;
        while k < order.len() {
            // the span: from this wanted row to the last wanted row within span_rows of it
            let first = idx[order[k]];
            let mut end = k;
            while end < order.len() && idx[order[end]] < first + span_rows {
                end += 1;
            }
            let last = idx[order[end - 1]];
            let v = self.read_elements(first * c, (last + 1 - first) * c)?;
            for &pos in &order[k..end] {
                let at = (idx[pos] - first) * c;
                out.row_mut(pos)
                    .assign(&ndarray::ArrayView1::from(&v[at..at + c]));
            }
            k = end;
        }
        Ok(out)
    }

    /// A vector: shape `(n,)`, or `(1, n)` / `(n, 1)` as older files store one.
    ///
    /// # Errors
    /// [`Error::Npy`] for any other shape; [`Error::Io`].
    pub fn read_vector(&mut self) -> Result<Array1<f32>> {
        let n = match self.header.shape[..] {
            [n] | [1, n] | [n, 1] => n,
            _ => {
                return Err(npy_err(
                    &self.path,
                    format!(
                        "expected a vector, shape (n,) (or (1, n) / (n, 1)), found {:?}",
                        self.header.shape
                    ),
                ));
            }
        };
        Ok(Array1::from(self.read_elements(0, n)?))
    }
}

fn npy_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::Npy {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Reads a 2-D `.npy` array of `float32` or `float64` (converted to `f32`), either byte order,
/// C or Fortran order. The header is checked against the file before anything is allocated
/// ([`NpyHeader::parse`]): a damaged or lying file is an error, never an abort.
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened; [`Error::Npy`] naming the file and what is wrong
/// (not an `.npy`, another type or rank, truncated, a shape larger than the file or than
/// [`MAX_NPY_ELEMENTS`]).
pub fn read_npy_f32(path: &Path) -> Result<Array2<f32>> {
    NpyFile::open(path)?.read_2d()
}

/// Reads a vector `.npy` (`(n,)`, or `(1, n)` / `(n, 1)`) of `float32` or `float64` as `f32`.
///
/// # Errors
/// As [`read_npy_f32`], for any shape other than a vector's.
pub fn read_npy_vector_f32(path: &Path) -> Result<Array1<f32>> {
    NpyFile::open(path)?.read_vector()
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

/// Writes a vector as a 1-D `f32` `.npy` (shape `(n,)`), atomically.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_npy_vector_f32(path: &Path, a: &Array1<f32>) -> Result<()> {
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

/// The largest JSON file varsparse reads (a checkpoint's `model.json`, a run's `config.json`, a
/// sweep's `result.json` are a few KiB): 16 MiB.
pub const MAX_JSON_BYTES: u64 = 16 << 20;

/// Reads a JSON file of at most [`MAX_JSON_BYTES`] and deserialises it.
///
/// # Errors
/// [`Error::Io`] if it cannot be read or is larger than the bound (checked before reading);
/// [`Error::Json`] naming the file and what is wrong with its content.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let io = |source| Error::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > MAX_JSON_BYTES {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{len} bytes, more than the {MAX_JSON_BYTES} a varsparse JSON file may have"),
        )));
    }
    let mut text = String::with_capacity(len as usize);
    file.take(MAX_JSON_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// The `.npy` header (format 1.0) of a C-order little-endian `float32` array of shape
/// `(rows, cols)`: the bytes [`write_npy_f32`] writes before the data.
pub fn npy_f32_header(rows: usize, cols: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols})}}");
    // magic (6) + version (2) + header length (2) + dict + padding + '\n', a multiple of 64
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let header_len = total - 10;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    // the dict of a 2-D float32 array is far below 65,535 bytes
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// Writes one `(rows, cols)` `float32` `.npy` from the ranks of `comm`, each holding a block of
/// its rows (`part`, starting at row `start`; the blocks in rank order cover every row once):
/// the file is the one [`write_npy_f32`] would write for the whole array. Rank 0 creates a
/// temporary file of the final size next to `path`, every rank writes its rows at their
/// offset (no rank holds more than its block), and rank 0 renames it into place once every
/// rank has written: a failure on any rank (reported on every rank) leaves no file behind. On
/// one process this is [`write_npy_f32`].
///
/// # Errors
/// [`Error::Shape`] if the blocks do not tile the array; [`Error::Io`] naming the file (on
/// every rank when one fails); a communication error.
pub fn write_npy_f32_sharded(
    path: &Path,
    rows: usize,
    start: usize,
    part: &Array2<f32>,
    comm: &dyn Comm,
) -> Result<()> {
    if comm.size() == 1 {
        if start != 0 || part.nrows() != rows {
            return Err(Error::shape(
                "sharded .npy",
                format!(
                    "one process holds rows {start}.. of {} but the array has {rows}",
                    part.nrows()
                ),
            ));
        }
        return write_npy_f32(path, part);
    }
    let cols = part.ncols();
    // every rank's (start, rows, cols), to check the tiling before anything is written
    let mut all = vec![0.0; 3 * comm.size()];
    comm.all_gather_f64(&[start as f64, part.nrows() as f64, cols as f64], &mut all)?;
    let mut next = 0usize;
    for (r, b) in all.chunks(3).enumerate() {
        let (s, n, c) = (b[0] as usize, b[1] as usize, b[2] as usize);
        if s != next || c != cols {
            return Err(Error::shape(
                "sharded .npy",
                format!(
                    "rank {r} holds rows {s}..{} with {c} columns, expected rows from {next} with {cols}",
                    s + n
                ),
            ));
        }
        next = s + n;
    }
    if next != rows {
        return Err(Error::shape(
            "sharded .npy",
            format!("the ranks hold {next} rows of an array of {rows}"),
        ));
    }
    let header = npy_f32_header(rows, cols);
    // rank 0's temporary name, known to every rank
    let tmp = {
        let name = temp_path(path)
            .into_os_string()
            .into_string()
            .unwrap_or_default();
        let names = comm.all_gather_bytes(name.as_bytes())?;
        PathBuf::from(String::from_utf8_lossy(&names[0]).into_owned())
    };
    let io = |source: std::io::Error| Error::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    };
    let failed = |what: &str| Error::Comm(format!("writing {}: {what}", path.display()));
    // 1. rank 0 creates the file at its final size
    let created = if comm.rank() == 0 {
        (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&header)?;
            f.set_len((header.len() + rows * cols * 4) as u64)
        })()
    } else {
        Ok(())
    };
    let ok = created.is_ok();
    if comm.any(!ok)? {
        if comm.rank() == 0 {
            let _ = std::fs::remove_file(&tmp);
        }
        return match created {
            Err(e) => Err(io(e)),
            Ok(()) => Err(failed("rank 0 could not create the file")),
        };
    }
    // 2. every rank writes its rows
    let written = (|| {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&tmp)?;
        let block = part.as_standard_layout();
        let data: &[f32] = block.as_slice().unwrap_or(&[]);
        f.write_all_at(
            bytemuck::cast_slice(data),
            (header.len() + start * cols * 4) as u64,
        )?;
        f.sync_all()
    })();
    let any_failed = comm.any(written.is_err())?;
    // 3. rank 0 renames it into place, or removes it
    let renamed = if comm.rank() == 0 {
        if any_failed {
            let _ = std::fs::remove_file(&tmp);
            Ok(())
        } else {
            std::fs::rename(&tmp, path).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        }
    } else {
        Ok(())
    };
    let rename_failed = comm.any(renamed.is_err())?;
    written.map_err(io)?;
    renamed.map_err(io)?;
    if any_failed {
        return Err(failed("another rank could not write its rows"));
    }
    if rename_failed {
        return Err(failed("rank 0 could not move the file into place"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_the_one_ndarray_npy_writes() {
        for (r, c) in [(0, 5), (3, 4), (10_000, 128), (123_456_789, 7), (1, 1)] {
            // a (r, c) array with r capped: the header is compared with the shape patched in
            let a = Array2::<f32>::zeros((r.min(3), c));
            let mut bytes = Vec::new();
            a.write_npy(&mut bytes).unwrap();
            let theirs = &bytes[..bytes.len() - 4 * a.len()];
            assert_eq!(npy_f32_header(r.min(3), c), theirs, "({r}, {c})");
            // and the full-size header parses back to the shape
            let h = npy_f32_header(r, c);
            let parsed = NpyHeader::parse(&h, (h.len() + 4 * r * c) as u64).unwrap();
            assert_eq!(parsed.shape, vec![r, c]);
            assert_eq!(parsed.data_offset, h.len() as u64);
        }
    }

    #[test]
    fn one_process_sharded_write_is_the_plain_write() {
        let dir = tempfile::tempdir().unwrap();
        let a = Array2::from_shape_fn((5, 3), |(i, j)| (i * 3 + j) as f32 - 2.5);
        write_npy_f32(&dir.path().join("a.npy"), &a).unwrap();
        write_npy_f32_sharded(&dir.path().join("b.npy"), 5, 0, &a, &crate::comm::Solo).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("a.npy")).unwrap(),
            std::fs::read(dir.path().join("b.npy")).unwrap()
        );
        assert!(
            write_npy_f32_sharded(&dir.path().join("c.npy"), 6, 0, &a, &crate::comm::Solo).is_err()
        );
        assert!(!dir.path().join("c.npy").exists());
    }
}
