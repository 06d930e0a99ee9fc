//! `.npy` matrices: cells x genes, read into a validated `f32` matrix, written atomically.
//!
//! Count matrices come from numpy, scanpy exports and our own simulator in whatever dtype and
//! memory order the writer chose, so reading accepts the common numeric dtypes in either byte
//! order and either layout and always returns a standard-layout (C-order) `Array2<f32>`, the one
//! shape the models and metrics expect. The header (its own length, then the data it describes)
//! is checked against the file's length before anything is read for it, so a corrupt or
//! truncated file is an error naming the file, never a panic or a huge allocation; the data is
//! then read straight into the array, with no intermediate buffer.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use ndarray::{Array2, ArrayView, Dimension, Zip};
use ndarray_npy::npy::header::{Header, ReadHeaderError};
use ndarray_npy::{ReadNpyExt, ReadableElement, WritableElement, WriteNpyError, WriteNpyExt};

use crate::{Error, Result, write_atomic};

/// The element types [`read_matrix`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    F32,
    F64,
    I32,
    I64,
    U16,
    U32,
}

impl Dtype {
    const SUPPORTED: &'static str =
        "float32, float64, int32, int64, uint16, uint32 (little- or big-endian)";

    /// Parses a numpy type descriptor such as `<f4` or `>u2`.
    fn from_descr(descr: &str) -> Option<Self> {
        Some(match descr.strip_prefix(['<', '>'])? {
            "f4" => Self::F32,
            "f8" => Self::F64,
            "i4" => Self::I32,
            "i8" => Self::I64,
            "u2" => Self::U16,
            "u4" => Self::U32,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::U16 => 2,
            Self::F32 | Self::I32 | Self::U32 => 4,
            Self::F64 | Self::I64 => 8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F64 => "float64",
            Self::I32 => "int32",
            Self::I64 => "int64",
            Self::U16 => "uint16",
            Self::U32 => "uint32",
        }
    }
}

/// Reads a 2-D `.npy` file (cells x genes) as a standard-layout `f32` matrix.
///
/// Accepts float32, float64, int32, int64, uint16 and uint32, little- or big-endian, in C or
/// Fortran order. Integers are converted with `as f32`, so integers above 2^24 may be rounded.
///
/// # Errors
/// The file cannot be read ([`Error::Io`]); is not a valid `.npy` file ([`Error::InvalidNpy`]) or
/// is shorter than its header says ([`Error::Truncated`]); has another dtype
/// ([`Error::UnsupportedDtype`]); is not 2-D ([`Error::NotMatrix`]) or has no cells or no genes
/// ([`Error::EmptyMatrix`]); holds a NaN, an infinity, or a float64 too large for float32
/// ([`Error::NonFinite`]).
pub fn read_matrix(path: &Path) -> Result<Array2<f32>> {
    let io_err = |err| Error::io(path, err);
    let file = File::open(path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut reader = BufReader::new(file);
    let dtype = check_header(path, &mut reader, file_len)?;
    reader.rewind().map_err(io_err)?;
    let matrix = decode(path, dtype, reader)?;
    tracing::debug!(
        path = %path.display(),
        dtype = dtype.name(),
        cells = matrix.nrows(),
        genes = matrix.ncols(),
        "read matrix"
    );
    Ok(matrix)
}

/// Reads a count matrix: [`read_matrix`], then checks that every value is a non-negative integer.
///
/// # Errors
/// Those of [`read_matrix`], and [`Error::NotCount`] naming the first offending row, column and
/// value.
pub fn read_counts(path: &Path) -> Result<Array2<f32>> {
    let counts = read_matrix(path)?;
    match first_where(&counts, |v| !is_count(v)) {
        Some((row, col, value)) => Err(Error::NotCount {
            path: path.into(),
            row,
            col,
            value,
        }),
        None => Ok(counts),
    }
}

/// Writes `array` to `path` as `.npy`, atomically (see [`write_atomic`]).
///
/// Standard and Fortran layouts are written as they are; other views are written in C order.
///
/// # Errors
/// [`Error::Write`] if the file cannot be written.
pub fn write_npy<A: WritableElement, D: Dimension>(
    path: &Path,
    array: &ArrayView<'_, A, D>,
) -> Result<()> {
    write_atomic(path, |w| {
        array.write_npy(w).map_err(|err| match err {
            WriteNpyError::Io(err) => err,
            other => io::Error::other(other),
        })
    })
}

/// Whether `v` is a non-negative integer.
///
/// Every f32 from 2^23 up is an integer; below that, adding and subtracting 2^23 rounds `v` to an
/// integer, which leaves it unchanged iff it is one. Unlike `fract` (a libm call on baseline
/// x86-64) this vectorises, which makes the check on a 5000 x 1000 matrix about 10x faster.
pub(crate) fn is_count(v: f32) -> bool {
    const TWO_POW_23: f32 = 8_388_608.0;
    v >= 0.0 && (v >= TWO_POW_23 || (v + TWO_POW_23) - TWO_POW_23 == v)
}

/// Parses the header, checks it against the length of the data and returns the element type.
///
/// This runs before decoding so that a bad shape or dtype gets its own message and a header
/// promising more data than the file holds is caught before anything is allocated for it.
fn check_header(path: &Path, reader: &mut (impl Read + Seek), file_len: u64) -> Result<Dtype> {
    check_raw_header(path, reader, file_len)?;
    reader.rewind().map_err(|err| Error::io(path, err))?;
    let header = Header::from_reader(reader).map_err(|err| match err {
        ReadHeaderError::Io(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
            Error::invalid_npy(path, "the file ends inside the header")
        }
        ReadHeaderError::Io(err) => Error::io(path, err),
        ReadHeaderError::Parse(err) => Error::invalid_npy(path, err.to_string()),
    })?;
    let data_start = reader
        .stream_position()
        .map_err(|err| Error::io(path, err))?;
    let shape = header.shape;
    if shape.len() != 2 {
        return Err(Error::NotMatrix {
            path: path.into(),
            shape,
        });
    }
    if shape.contains(&0) {
        return Err(Error::EmptyMatrix {
            path: path.into(),
            shape,
        });
    }
    let descr = &header.type_descriptor;
    let dtype = descr
        .as_string()
        .and_then(|s| Dtype::from_descr(s))
        .ok_or_else(|| Error::UnsupportedDtype {
            path: path.into(),
            dtype: descr.to_string(),
            supported: Dtype::SUPPORTED,
        })?;
    let expected = (shape[0].checked_mul(shape[1]))
        .and_then(|n| n.checked_mul(dtype.size()))
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| Error::invalid_npy(path, format!("shape {shape:?} is too large")))?;
    match file_len.saturating_sub(data_start) {
        found if found < expected => Err(Error::Truncated {
            path: path.into(),
            shape,
            dtype: dtype.name(),
            expected,
            found,
        }),
        found if found > expected => {
            let extra = found - expected;
            Err(Error::invalid_npy(
                path,
                format!("{extra} unexpected bytes after the data"),
            ))
        }
        _ => Ok(dtype),
    }
}

/// Opening brackets (`{`, `[`, `(`) a matrix's header needs: its dictionary's and its shape's.
const HEADER_BRACKETS: usize = 2;
/// Opening brackets a header may hold, quoted ones included (see [`check_raw_header`]).
const MAX_HEADER_BRACKETS: usize = 4;

/// Checks the raw header (preamble and dictionary text) for what would make ndarray-npy, which
/// parses it next, allocate or work without bound.
///
/// ndarray-npy allocates the header's buffer before reading it, and versions 2 and 3 store the
/// length in 4 bytes, so a corrupt length would allocate up to 4 GiB: the length is checked
/// against the file's. Its parser (py_literal's PEG grammar) backtracks into nested brackets and
/// takes 2 to 4 times longer with each level (20 nested lists take minutes), so the brackets are
/// counted first. A preamble that is not one of a `.npy` file is left to ndarray-npy, which
/// says what is wrong with it. Leaves the reader anywhere.
fn check_raw_header(path: &Path, reader: &mut (impl Read + Seek), file_len: u64) -> Result<()> {
    let io_err = |err| Error::io(path, err);
    let mut preamble = Vec::with_capacity(12);
    (reader.by_ref().take(12).read_to_end(&mut preamble)).map_err(io_err)?;
    if !preamble.starts_with(b"\x93NUMPY") {
        return Ok(());
    }
    let (start, header_len) = match preamble.get(6..8) {
        Some([1, 0]) if preamble.len() >= 10 => (
            10,
            u64::from(u16::from_le_bytes([preamble[8], preamble[9]])),
        ),
        Some([2 | 3, 0]) if preamble.len() == 12 => {
            let len = [preamble[8], preamble[9], preamble[10], preamble[11]];
            (12, u64::from(u32::from_le_bytes(len)))
        }
        _ => return Ok(()),
    };
    let left = file_len.saturating_sub(start);
    if header_len > left {
        return Err(Error::invalid_npy(
            path,
            format!("the header claims {header_len} bytes, the file has {left} after the preamble"),
        ));
    }
    reader.seek(SeekFrom::Start(start)).map_err(io_err)?;
    // At most the file's length, and what ndarray-npy allocates for the header right after.
    let mut header = Vec::new();
    (reader.by_ref().take(header_len).read_to_end(&mut header)).map_err(io_err)?;
    let brackets = (header.iter())
        .filter(|&b| matches!(b, b'{' | b'[' | b'('))
        .count();
    if brackets > MAX_HEADER_BRACKETS {
        return Err(Error::invalid_npy(
            path,
            format!(
                "the header holds {brackets} opening brackets; a matrix's holds \
                 {HEADER_BRACKETS} (its dictionary and its shape)"
            ),
        ));
    }
    Ok(())
}

/// Decodes the data of a file whose header [`check_header`] accepted.
fn decode(path: &Path, dtype: Dtype, reader: impl Read) -> Result<Array2<f32>> {
    Ok(match dtype {
        Dtype::F32 => {
            let m = standard_layout(read_as::<f32>(path, reader)?);
            check_finite(path, &m, |_, _, v| f64::from(v))?;
            m
        }
        Dtype::F64 => {
            let src = read_as::<f64>(path, reader)?;
            let m = to_f32(&src, |x| x as f32);
            check_finite(path, &m, |row, col, _| src[[row, col]])?;
            m
        }
        Dtype::I32 => to_f32(&read_as::<i32>(path, reader)?, |x| x as f32),
        Dtype::I64 => to_f32(&read_as::<i64>(path, reader)?, |x| x as f32),
        Dtype::U16 => to_f32(&read_as::<u16>(path, reader)?, f32::from),
        Dtype::U32 => to_f32(&read_as::<u32>(path, reader)?, |x| x as f32),
    })
}

/// Reads the whole file (header included) with ndarray-npy. Errors here mean the file changed
/// since [`check_header`] looked at it.
fn read_as<T: ReadableElement>(path: &Path, reader: impl Read) -> Result<Array2<T>> {
    Array2::<T>::read_npy(reader).map_err(|err| Error::invalid_npy(path, err.to_string()))
}

fn standard_layout(m: Array2<f32>) -> Array2<f32> {
    if m.is_standard_layout() {
        m
    } else {
        m.as_standard_layout().into_owned()
    }
}

/// Converts element-wise into a new standard-layout matrix, in one pass whatever `src`'s layout.
fn to_f32<T: Copy>(src: &Array2<T>, cast: impl Fn(T) -> f32) -> Array2<f32> {
    let mut out = Array2::zeros(src.raw_dim());
    Zip::from(&mut out).and(src).for_each(|o, &x| *o = cast(x));
    out
}

/// Fails on the first non-finite value of `m`; `original` recovers the value as stored in the file.
fn check_finite(
    path: &Path,
    m: &Array2<f32>,
    original: impl Fn(usize, usize, f32) -> f64,
) -> Result<()> {
    match first_where(m, |v| !v.is_finite()) {
        Some((row, col, v)) => Err(Error::NonFinite {
            path: path.into(),
            row,
            col,
            value: original(row, col, v),
        }),
        None => Ok(()),
    }
}

/// Row, column and value of the first element (in row-major order) that satisfies `pred`.
///
/// Each chunk is tested with a branch-free `fold` that the compiler vectorises; only a chunk that
/// holds a match is searched element by element.
fn first_where(m: &Array2<f32>, pred: impl Fn(f32) -> bool) -> Option<(usize, usize, f32)> {
    const CHUNK: usize = 1024;
    let cols = m.ncols();
    let Some(values) = m.as_slice() else {
        let (i, &v) = m.iter().enumerate().find(|&(_, &v)| pred(v))?;
        return Some((i / cols, i % cols, v));
    };
    let (c, chunk) = (values.chunks(CHUNK).enumerate())
        .find(|(_, chunk)| chunk.iter().fold(false, |hit, &v| hit | pred(v)))?;
    let j = chunk.iter().position(|&v| pred(v))?;
    let i = c * CHUNK + j;
    Some((i / cols, i % cols, chunk[j]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::Axis;
    use ndarray::{Array, Array1, ArrayBase, ArrayD, Ix2, IxDyn, ShapeBuilder, Slice, array};
    use std::fs;
    use std::path::PathBuf;

    /// Writes a fixture with ndarray-npy itself.
    fn save<A: WritableElement, D: Dimension>(
        dir: &tempfile::TempDir,
        name: &str,
        a: &Array<A, D>,
    ) -> PathBuf {
        let path = dir.path().join(name);
        ndarray_npy::write_npy(&path, a).expect("write fixture");
        path
    }

    /// Same shape and the same values (exactly: these are integers or round-tripped floats).
    fn assert_same<S: ndarray::Data<Elem = f32>>(
        actual: &Array2<f32>,
        expected: &ArrayBase<S, Ix2>,
    ) {
        assert_eq!(actual.shape(), expected.shape());
        Zip::from(actual)
            .and(expected)
            .for_each(|&a, &e| assert_abs_diff_eq!(a, e, epsilon = 0.0));
    }

    fn expected() -> Array2<f32> {
        array![[0., 1., 2.], [3., 40., 65535.]]
    }

    fn assert_names_file(err: &Error, name: &str) {
        let msg = err.to_string();
        assert!(msg.contains(name), "message does not name {name}: {msg}");
        assert!(!msg.contains('\n'), "message is not one line: {msg}");
    }

    /// Rewrites a little-endian v1 `.npy` file as big-endian: descriptor `'<..'` -> `'>..'` and
    /// every element byte-swapped.
    fn to_big_endian(bytes: &[u8], size: usize) -> Vec<u8> {
        let start = 10 + usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        let mut out = bytes[..start].to_vec();
        let at = out
            .windows(2)
            .position(|w| w == b"'<")
            .expect("little-endian descr");
        out[at + 1] = b'>';
        for chunk in bytes[start..].chunks(size) {
            out.extend(chunk.iter().rev());
        }
        out
    }

    #[test]
    fn reads_every_supported_dtype() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = expected();
        let paths = [
            save(&dir, "f32.npy", &e),
            save(&dir, "f64.npy", &e.mapv(f64::from)),
            save(&dir, "i32.npy", &e.mapv(|x| x as i32)),
            save(&dir, "i64.npy", &e.mapv(|x| x as i64)),
            save(&dir, "u16.npy", &e.mapv(|x| x as u16)),
            save(&dir, "u32.npy", &e.mapv(|x| x as u32)),
        ];
        for path in &paths {
            let m = read_matrix(path)?;
            assert!(m.is_standard_layout());
            assert_same(&m, &e);
        }
        Ok(())
    }

    #[test]
    fn float_values_round_trip() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let f64s = array![[0.1, -2.5e-7], [1e30, -0.0]];
        let m = read_matrix(&save(&dir, "f64.npy", &f64s))?;
        assert_same(&m, &f64s.mapv(|x| x as f32));
        let f32s = f64s.mapv(|x| x as f32);
        assert_same(&read_matrix(&save(&dir, "f32.npy", &f32s))?, &f32s);
        Ok(())
    }

    #[test]
    fn reads_fortran_order() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = expected();
        let fortran = |e: &Array2<f32>| {
            Array2::from_shape_vec(e.raw_dim().f(), e.t().iter().copied().collect()).expect("shape")
        };
        let f = fortran(&e);
        assert_same(&f, &e);
        assert!(!f.is_standard_layout());
        let f32_path = save(&dir, "f32.npy", &f);
        let i64_path = save(&dir, "i64.npy", &f.mapv(|x| x as i64));
        let header = fs::read(&f32_path).expect("read fixture");
        assert!(String::from_utf8_lossy(&header[..128]).contains("'fortran_order': True"));
        for path in [f32_path, i64_path] {
            let m = read_matrix(&path)?;
            assert!(m.is_standard_layout());
            assert_same(&m, &e);
        }
        Ok(())
    }

    #[test]
    fn reads_big_endian() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = expected();
        let cases = [
            (save(&dir, "f32.npy", &e), 4),
            (save(&dir, "f64.npy", &e.mapv(f64::from)), 8),
            (save(&dir, "u16.npy", &e.mapv(|x| x as u16)), 2),
            (save(&dir, "i64.npy", &e.mapv(|x| x as i64)), 8),
        ];
        for (path, size) in cases {
            let big = to_big_endian(&fs::read(&path).expect("read fixture"), size);
            assert!(String::from_utf8_lossy(&big[..64]).contains("'>"));
            fs::write(&path, big).expect("write fixture");
            assert_same(&read_matrix(&path)?, &e);
        }
        Ok(())
    }

    #[test]
    fn missing_file_is_io() {
        let err = read_matrix(Path::new("no/such/counts.npy")).expect_err("missing");
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert_names_file(&err, "no/such/counts.npy");
    }

    #[test]
    fn garbage_is_invalid_npy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("garbage.npy");
        fs::write(&path, "cell,gene\n1,2\n").expect("write fixture");
        let err = read_matrix(&path).expect_err("garbage");
        assert!(matches!(err, Error::InvalidNpy { .. }), "{err:?}");
        assert_names_file(&err, "garbage.npy");
    }

    #[test]
    fn file_cut_inside_header_is_invalid_npy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = save(&dir, "cut.npy", &expected());
        let bytes = fs::read(&path).expect("read fixture");
        fs::write(&path, &bytes[..40]).expect("write fixture");
        let err = read_matrix(&path).expect_err("cut header");
        assert!(matches!(err, Error::InvalidNpy { .. }), "{err:?}");
        assert_names_file(&err, "cut.npy");
    }

    /// Found by `cargo fuzz run npy`: a version-2 header whose length field claims 3.3 GB made
    /// ndarray-npy allocate that much before reading a byte of it.
    #[test]
    fn header_length_beyond_the_file_is_invalid_npy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("huge_header.npy");
        let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
        bytes.extend(0xc300_0074_u32.to_le_bytes());
        bytes.extend(b"{'descr': '<u4', 'fortran_order': False, 'shape': (3, 4), }\n");
        fs::write(&path, bytes).expect("write fixture");
        let err = read_matrix(&path).expect_err("huge header length");
        assert!(matches!(err, Error::InvalidNpy { .. }), "{err:?}");
        assert_names_file(&err, "huge_header.npy");
        assert!(
            err.to_string()
                .contains("claims 3271557236 bytes, the file has 60"),
            "{err}"
        );
    }

    /// Found while fuzzing: ndarray-npy's header parser backtracks into nested brackets, so a
    /// 100-byte header with 20 nested lists took minutes to reject.
    #[test]
    fn deeply_nested_header_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested.npy");
        let dict = format!(
            "{{'descr': {}{}, 'fortran_order': False, 'shape': (1, 1), }}\n",
            "[".repeat(20),
            "]".repeat(20)
        );
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend(
            u16::try_from(dict.len())
                .expect("short header")
                .to_le_bytes(),
        );
        bytes.extend(dict.as_bytes());
        bytes.extend([0; 4]);
        fs::write(&path, bytes).expect("write fixture");
        let start = std::time::Instant::now();
        let err = read_matrix(&path).expect_err("nested header");
        assert!(start.elapsed().as_secs_f64() < 1.0, "{:?}", start.elapsed());
        assert!(matches!(err, Error::InvalidNpy { .. }), "{err:?}");
        assert_names_file(&err, "nested.npy");
        assert!(err.to_string().contains("22 opening brackets"), "{err}");
    }

    #[test]
    fn file_cut_in_half_is_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = save(&dir, "half.npy", &Array2::<f32>::ones((50, 20)));
        let bytes = fs::read(&path).expect("read fixture");
        fs::write(&path, &bytes[..bytes.len() / 2]).expect("write fixture");
        let err = read_matrix(&path).expect_err("truncated");
        assert!(
            matches!(err, Error::Truncated { expected: 4000, found, .. } if found < 4000),
            "{err:?}"
        );
        assert_names_file(&err, "half.npy");
    }

    #[test]
    fn trailing_bytes_are_invalid_npy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = save(&dir, "long.npy", &expected());
        let mut bytes = fs::read(&path).expect("read fixture");
        bytes.extend([0; 3]);
        fs::write(&path, bytes).expect("write fixture");
        let err = read_matrix(&path).expect_err("trailing bytes");
        assert!(matches!(err, Error::InvalidNpy { .. }), "{err:?}");
        assert_names_file(&err, "long.npy");
    }

    #[test]
    fn unsupported_dtype_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, descr) in [
            (save(&dir, "u8.npy", &expected().mapv(|x| x as u8)), "|u1"),
            (save(&dir, "i16.npy", &expected().mapv(|x| x as i16)), "<i2"),
            (save(&dir, "bool.npy", &expected().mapv(|x| x > 1.0)), "|b1"),
        ] {
            let err = read_matrix(&path).expect_err("unsupported");
            assert!(matches!(err, Error::UnsupportedDtype { .. }), "{err:?}");
            assert_names_file(
                &err,
                path.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            );
            let msg = err.to_string();
            assert!(
                msg.contains(descr) && msg.contains("float32, float64"),
                "{msg}"
            );
        }
    }

    #[test]
    fn one_dimensional_is_not_a_matrix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = save(&dir, "vec.npy", &Array1::<f32>::zeros(5000));
        let err = read_matrix(&path).expect_err("1-D");
        assert!(
            matches!(err, Error::NotMatrix { ref shape, .. } if shape == &[5000]),
            "{err:?}"
        );
        assert_names_file(&err, "vec.npy");
        assert!(err.to_string().contains("found shape [5000]"), "{err}");
    }

    #[test]
    fn three_dimensional_is_not_a_matrix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = save(&dir, "cube.npy", &ArrayD::<f32>::zeros(IxDyn(&[2, 3, 4])));
        let err = read_matrix(&path).expect_err("3-D");
        assert!(matches!(err, Error::NotMatrix { .. }), "{err:?}");
        assert!(err.to_string().contains("[2, 3, 4]"), "{err}");
    }

    #[test]
    fn zero_cells_or_genes_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, shape) in [("no_cells.npy", (0, 4)), ("no_genes.npy", (3, 0))] {
            let path = save(&dir, name, &Array2::<f32>::zeros(shape));
            let err = read_matrix(&path).expect_err("empty");
            assert!(matches!(err, Error::EmptyMatrix { .. }), "{err:?}");
            assert_names_file(&err, name);
            assert!(
                err.to_string()
                    .contains(&format!("[{}, {}]", shape.0, shape.1)),
                "{err}"
            );
        }
    }

    #[test]
    fn nan_is_rejected_with_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = expected();
        m[[1, 2]] = f32::NAN;
        let err = read_matrix(&save(&dir, "nan.npy", &m)).expect_err("NaN");
        assert!(matches!(err, Error::NonFinite { row: 1, col: 2, value, .. } if value.is_nan()));
        assert_names_file(&err, "nan.npy");
    }

    #[test]
    fn infinity_in_fortran_float64_is_rejected_with_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = Array2::<f64>::zeros((3, 2).f());
        m[[2, 0]] = f64::NEG_INFINITY;
        let err = read_matrix(&save(&dir, "inf.npy", &m)).expect_err("inf");
        assert!(
            matches!(err, Error::NonFinite { row: 2, col: 0, value, .. } if value.is_infinite())
        );
        assert_names_file(&err, "inf.npy");
    }

    #[test]
    fn float64_too_large_for_float32_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_matrix(&save(&dir, "big.npy", &array![[1.0, 1e300]])).expect_err("1e300");
        assert!(matches!(err, Error::NonFinite { row: 0, col: 1, value, .. } if value == 1e300));
        assert!(
            err.to_string().contains("value 1e300 at row 0, col 1"),
            "{err}"
        );
    }

    #[test]
    fn counts_accept_integers_of_any_dtype() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = expected();
        assert_same(&read_counts(&save(&dir, "f32.npy", &e))?, &e);
        let u16s = e.mapv(|x| x as u16);
        assert_same(&read_counts(&save(&dir, "u16.npy", &u16s))?, &e);
        Ok(())
    }

    #[test]
    fn fractional_count_is_rejected_with_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = expected();
        m[[0, 1]] = 1.5;
        let err = read_counts(&save(&dir, "frac.npy", &m)).expect_err("1.5");
        assert!(
            matches!(
                err,
                Error::NotCount {
                    row: 0,
                    col: 1,
                    value: 1.5,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_names_file(&err, "frac.npy");
        assert!(err.to_string().contains("row 0, col 1"), "{err}");
    }

    #[test]
    fn is_count_is_exact_near_float_precision_limits() {
        for v in [
            0.0,
            -0.0,
            1.0,
            65535.0,
            8_388_607.0,
            8_388_608.0,
            16_777_217.0,
            1e10,
        ] {
            assert!(is_count(v), "{v} is a count");
        }
        for v in [0.5, 1e-30, 8_388_607.5, -1.0, -8_388_608.0, f32::NAN] {
            assert!(!is_count(v), "{v} is not a count");
        }
    }

    #[test]
    fn position_is_found_past_the_first_chunk() {
        let mut m = Array2::<f32>::zeros((40, 50));
        m[[30, 7]] = 2.5;
        m[[35, 0]] = 3.5;
        assert_eq!(first_where(&m, |v| !is_count(v)), Some((30, 7, 2.5)));
        let mut f = Array2::<f32>::zeros((40, 50).f());
        f.assign(&m);
        assert!(!f.is_standard_layout());
        assert_eq!(first_where(&f, |v| !is_count(v)), Some((30, 7, 2.5)));
        assert_eq!(
            first_where(&Array2::zeros((40, 50)), |v| !is_count(v)),
            None
        );
    }

    #[test]
    fn negative_count_is_rejected_with_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = array![[1, 2], [3, -4]];
        let err = read_counts(&save(&dir, "neg.npy", &m)).expect_err("-4");
        assert!(
            matches!(
                err,
                Error::NotCount {
                    row: 1,
                    col: 1,
                    value: -4.0,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_names_file(&err, "neg.npy");
    }

    #[test]
    fn write_npy_round_trips_views_and_leaves_no_temp() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = expected();
        let path = dir.path().join("out/m.npy");
        for view in [
            e.view(),
            e.t(),
            e.slice_axis(Axis(1), Slice::from(..).step_by(2)),
        ] {
            write_npy(&path, &view)?;
            assert_same(&read_matrix(&path)?, &view);
        }
        let names: Vec<_> = fs::read_dir(dir.path().join("out"))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["m.npy"]);
        Ok(())
    }
}
