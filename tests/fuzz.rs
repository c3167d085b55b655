//! Every file reader, fed damaged files derived from valid ones (truncations, bit flips,
//! overwritten bytes, lying headers) and random bytes: each must return a typed error or a
//! correct value, never panic or abort (an abort on a huge allocation would end this process).
//!
//! Regression cases found by this test live in `tests/fuzz.proptest-regressions` and run first.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use ndarray_npy::WriteNpyExt;
use proptest::prelude::*;
use varsparse::data::mnist::{read_idx_images, read_idx_labels};
use varsparse::io::{read_npy_f32, read_npy_vector_f32};

/// A way to damage a file.
#[derive(Clone, Debug)]
enum Damage {
    /// Keep the first `len` bytes (as a fraction of the length).
    Truncate(f64),
    /// Flip one bit at a fraction of the length.
    Flip(f64, u8),
    /// Overwrite bytes at a fraction of the length.
    Overwrite(f64, Vec<u8>),
    /// Replace the whole file by random bytes.
    Random(Vec<u8>),
    /// Write a lying header (reader-specific), keeping the data.
    Lie(u64, u64),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0f64..1.0).prop_map(Damage::Truncate),
        (0.0f64..1.0, 0u8..8).prop_map(|(a, b)| Damage::Flip(a, b)),
        (0.0f64..1.0, prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(a, b)| Damage::Overwrite(a, b)),
        prop::collection::vec(any::<u8>(), 0..256).prop_map(Damage::Random),
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| Damage::Lie(a, b)),
    ]
}

fn at(frac: f64, len: usize) -> usize {
    ((frac * len as f64) as usize).min(len.saturating_sub(1))
}

/// `bytes` damaged by `d`; `lie` writes a lying header from two numbers.
fn apply(bytes: &[u8], d: &Damage, lie: impl Fn(&[u8], u64, u64) -> Vec<u8>) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match d {
        Damage::Truncate(f) => b.truncate(at(*f, b.len())),
        Damage::Flip(f, bit) => {
            let i = at(*f, b.len());
            b[i] ^= 1 << bit;
        }
        Damage::Overwrite(f, new) => {
            let i = at(*f, b.len());
            for (k, v) in new.iter().enumerate() {
                if let Some(x) = b.get_mut(i + k) {
                    *x = *v;
                }
            }
        }
        Damage::Random(r) => b = r.clone(),
        Damage::Lie(x, y) => b = lie(&b, *x, *y),
    }
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn npy_bytes<A: WriteNpyExt>(a: &A) -> Vec<u8> {
    let mut v = Vec::new();
    a.write_npy(&mut v).unwrap();
    v
}

/// An `.npy` whose header claims the shape `(x, y)` (perhaps far larger than the file).
fn npy_lie(bytes: &[u8], x: u64, y: u64) -> Vec<u8> {
    // a version 1.0 header: 10 bytes of magic, version and length, then the text to a newline
    let Some(nl) = bytes.iter().position(|&c| c == b'\n') else {
        return bytes.to_vec();
    };
    let Ok(text) = std::str::from_utf8(&bytes[10..nl]) else {
        return bytes.to_vec();
    };
    let (Some(s), Some(e)) = (text.find("'shape': ("), text.rfind(')')) else {
        return bytes.to_vec();
    };
    let mut head = format!("{}'shape': ({x}, {y}{}", &text[..s], &text[e..]).into_bytes();
    // keep the header's length: pad with spaces (or cut)
    head.resize(nl - 10, b' ');
    let mut out = bytes[..10].to_vec();
    out.extend(head);
    out.extend_from_slice(&bytes[nl..]);
    out
}

fn valid_npys() -> Vec<(Vec<u8>, Array2<f32>)> {
    let a = Array2::from_shape_fn((5, 3), |(i, j)| i as f32 - 0.5 * j as f32);
    let f64s = a.mapv(f64::from);
    vec![
        (npy_bytes(&a), a.clone()),
        (npy_bytes(&f64s), a.clone()),
        (npy_bytes(&a.t().to_owned()), a.t().to_owned()),
        (npy_bytes(&a.clone().reversed_axes()), a.t().to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn npy_reader_never_panics(which in 0usize..4, d in damage()) {
        let tmp = tempfile::tempdir().unwrap();
        let (bytes, want) = &valid_npys()[which];
        let bad = apply(bytes, &d, npy_lie);
        let p = write(tmp.path(), "a.npy", &bad);
        match read_npy_f32(&p) {
            Ok(a) => {
                // an undamaged header reads the shape it states; an untouched file, the values
                if bad == *bytes {
                    prop_assert_eq!(&a, want);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("a.npy"), "{msg}");
            }
        }
        let _ = read_npy_vector_f32(&p);
    }

    #[test]
    fn idx_readers_never_panic(gz in any::<bool>(), labels in any::<bool>(), d in damage()) {
        let tmp = tempfile::tempdir().unwrap();
        let (n, rows, cols) = (4u32, 3u32, 2u32);
        let mut raw = if labels { vec![0, 0, 8, 1] } else { vec![0, 0, 8, 3] };
        raw.extend(n.to_be_bytes());
        if !labels {
            raw.extend(rows.to_be_bytes());
            raw.extend(cols.to_be_bytes());
        }
        let len = if labels { n } else { n * rows * cols };
        raw.extend((0..len).map(|i| (i % 10) as u8));
        let lie = |b: &[u8], x: u64, y: u64| {
            let mut b = b.to_vec();
            b[4..8].copy_from_slice(&(x as u32).to_be_bytes());
            if b.len() >= 12 {
                b[8..12].copy_from_slice(&(y as u32).to_be_bytes());
            }
            b
        };
        let bad = apply(&raw, &d, lie);
        let (name, bytes) = if gz {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&bad).unwrap();
            // damage the compressed stream too, half of the time
            let z = e.finish().unwrap();
            let z = if matches!(d, Damage::Flip(..)) { apply(&z, &d, |b, _, _| b.to_vec()) } else { z };
            ("x.idx.gz", z)
        } else {
            ("x.idx", bad.clone())
        };
        let p = write(tmp.path(), name, &bytes);
        if labels {
            match read_idx_labels(&p) {
                Ok(l) if bad == raw && !gz => prop_assert_eq!(l.len(), n as usize),
                Ok(_) => {}
                Err(e) => prop_assert!(e.to_string().contains("x.idx"), "{e}"),
            }
        } else {
            match read_idx_images(&p) {
                Ok(im) if bad == raw && !gz => prop_assert_eq!(im.pixels.dim(), (4, 6)),
                Ok(_) => {}
                Err(e) => prop_assert!(e.to_string().contains("x.idx"), "{e}"),
            }
        }
    }
}

/// The abort of issue 16: a header claiming 12,544,000,000,000 bytes.
#[test]
fn a_header_larger_than_the_file_is_an_error_not_an_abort() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Array2::<f32>::zeros((10, 784));
    let bytes = npy_lie(&npy_bytes(&a), 4_000_000, 784_000);
    let p = write(tmp.path(), "Y.npy", &bytes);
    let e = read_npy_f32(&p).unwrap_err().to_string();
    assert!(e.contains("Y.npy") && e.contains("more than"), "{e}");
    let bytes = npy_lie(&npy_bytes(&a), 20, 784);
    let p = write(tmp.path(), "Y.npy", &bytes);
    let e = read_npy_f32(&p).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn vectors_read_from_every_shape_numpy_users_write() {
    let tmp = tempfile::tempdir().unwrap();
    let v = Array1::from(vec![1.0f32, -2.0, 3.5]);
    for bytes in [
        npy_bytes(&v),
        npy_bytes(&v.clone().insert_axis(ndarray::Axis(0))),
        npy_bytes(&v.clone().insert_axis(ndarray::Axis(1))),
        npy_bytes(&v.mapv(f64::from)),
    ] {
        let p = write(tmp.path(), "b.npy", &bytes);
        assert_eq!(read_npy_vector_f32(&p).unwrap(), v);
    }
    let p = write(
        tmp.path(),
        "m.npy",
        &npy_bytes(&Array2::<f32>::zeros((2, 2))),
    );
    assert!(read_npy_vector_f32(&p).is_err());
}

#[test]
fn big_endian_files_read_as_little_endian_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let vals = [1.5f32, -2.25, 3.0, 4.0, 0.0, -0.5];
    for (descr, bytes) in [
        (
            "'>f4'",
            vals.iter()
                .flat_map(|v| v.to_be_bytes())
                .collect::<Vec<u8>>(),
        ),
        (
            "'>f8'",
            vals.iter()
                .flat_map(|v| f64::from(*v).to_be_bytes())
                .collect::<Vec<u8>>(),
        ),
    ] {
        let mut head =
            format!("{{'descr': {descr}, 'fortran_order': False, 'shape': (2, 3), }}").into_bytes();
        while (10 + head.len() + 1) % 64 != 0 {
            head.push(b' ');
        }
        head.push(b'\n');
        let mut file = b"\x93NUMPY\x01\x00".to_vec();
        file.extend((head.len() as u16).to_le_bytes());
        file.extend(head);
        file.extend(bytes);
        let p = write(tmp.path(), "be.npy", &file);
        let a = read_npy_f32(&p).unwrap();
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), vals);
    }
}

/// The committed version-1 checkpoint copied into `dst`, with `file` replaced by `bytes`.
fn damaged_checkpoint(dst: &Path, file: &str, bytes: &[u8]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint-v1");
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    std::fs::write(dst.join(file), bytes).unwrap();
}

const CHECKPOINT_FILES: [&str; 7] = [
    "model.json",
    "decoder_W1.npy",
    "decoder_b1.npy",
    "decoder_W2.npy",
    "encoder_U.npy",
    "encoder_b.npy",
    "encoder_S.npy",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// A damaged `model.json` or weight file of a checkpoint: a typed error naming the
    /// checkpoint, or a model that loads (and then encodes without panicking).
    #[test]
    fn checkpoint_loader_never_panics(which in 0usize..CHECKPOINT_FILES.len(), d in damage()) {
        let tmp = tempfile::tempdir().unwrap();
        let file = CHECKPOINT_FILES[which];
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint-v1");
        let bytes = std::fs::read(src.join(file)).unwrap();
        let lie = if file.ends_with(".npy") { npy_lie } else { |b: &[u8], _: u64, _: u64| b.to_vec() };
        let bad = apply(&bytes, &d, lie);
        let dir = tmp.path().join("ckpt");
        damaged_checkpoint(&dir, file, &bad);
        match varsparse::SparseCoder::load(&dir) {
            Ok(m) => {
                let y = Array2::<f32>::zeros((2, m.input_dim()));
                let _ = m.encode(&y);
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("ckpt"), "{msg}");
            }
        }
    }

}

/// A JSON file far larger than any varsparse writes is refused before it is read.
#[test]
fn huge_json_files_are_refused_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("model.json");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(varsparse::io::MAX_JSON_BYTES + 1).unwrap();
    let e = varsparse::io::read_json::<serde_json::Value>(&p).unwrap_err();
    assert!(e.to_string().contains("model.json"), "{e}");
    assert!(e.to_string().contains("more than"), "{e}");
}

#[cfg(feature = "images")]
mod images {
    use super::*;

    /// A small grey PNG or JPEG made here (the `image` crate is the decoder under test too).
    fn image_bytes(png: bool) -> Vec<u8> {
        let img =
            image::GrayImage::from_fn(60, 56, |x, y| image::Luma([((x * 7 + y * 3) % 256) as u8]));
        let mut out = std::io::Cursor::new(Vec::new());
        let format = if png {
            image::ImageFormat::Png
        } else {
            image::ImageFormat::Jpeg
        };
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    /// A lying image header: PNG's IHDR width and height (bytes 16..24), or JPEG's SOF0 height and
    /// width (after the `FF C0` marker).
    fn image_lie(bytes: &[u8], x: u64, y: u64) -> Vec<u8> {
        let mut b = bytes.to_vec();
        let (w, h) = ((x as u32).to_be_bytes(), (y as u32).to_be_bytes());
        if b.starts_with(b"\x89PNG") && b.len() >= 24 {
            b[16..20].copy_from_slice(&w);
            b[20..24].copy_from_slice(&h);
        } else if let Some(i) = b.windows(2).position(|p| p == [0xFF, 0xC0])
            && b.len() >= i + 9
        {
            b[i + 5..i + 7].copy_from_slice(&h[2..]);
            b[i + 7..i + 9].copy_from_slice(&w[2..]);
        }
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// A damaged PNG or JPEG behind the natural patches: an error naming the file, or an image.
        #[test]
        fn image_loader_never_panics(png in any::<bool>(), d in damage()) {
            let tmp = tempfile::tempdir().unwrap();
            let bytes = image_bytes(png);
            let bad = apply(&bytes, &d, image_lie);
            let name = if png { "x.png" } else { "x.jpg" };
            let p = write(tmp.path(), name, &bad);
            match varsparse::data::patches::load_natural_image(&p) {
                Ok(img) => {
                    let (h, w) = img.pixels.dim();
                    prop_assert!(h.min(w) == 256 && h.max(w) <= 256 * 4096, "{h} x {w}");
                }
                Err(e) => prop_assert!(e.to_string().contains(name), "{e}"),
            }
        }
    }

    /// An image header claiming 2^31 x 2^31 pixels is refused before decoding allocates.
    #[test]
    fn a_huge_image_header_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        for png in [true, false] {
            let bad = image_lie(&image_bytes(png), 1 << 31, 1 << 31);
            let bad = if png {
                bad
            } else {
                image_lie(&image_bytes(false), 65_000, 65_000)
            };
            let p = write(tmp.path(), "big.img", &bad);
            let e = varsparse::data::patches::load_natural_image(&p).unwrap_err();
            assert!(e.to_string().contains("big.img"), "{e}");
        }
    }
}

#[cfg(feature = "experiments")]
mod sweep {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

        /// A damaged sweep `result.json` is read as "not finished" (the run is trained again), or as
        /// a result.
        #[test]
        fn sweep_result_reader_never_panics(d in damage()) {
            let tmp = tempfile::tempdir().unwrap();
            let r = varsparse::experiments::sweep::SweepResult {
                preset: "mnist-vdl".into(),
                lambda: 0.005,
                seed: 1,
                epochs: 2,
                best_epoch: 2,
                test_psnr: 14.5,
                test_sparsity: 0.9,
                seconds: 3.0,
            };
            let bytes = serde_json::to_vec_pretty(&r).unwrap();
            let bad = apply(&bytes, &d, |b, _, _| b.to_vec());
            let p = write(tmp.path(), "result.json", &bad);
            let got = varsparse::experiments::sweep::read_result(&p);
            if bad == bytes {
                prop_assert_eq!(got, Some(r));
            }
        }
    }
}
