//! MatrixMarket `coordinate integer general` files: the count matrices Cell Ranger writes.
//!
//! Only the one flavour 10x Genomics uses is read: sparse coordinates (`row col value`, 1-based)
//! with non-negative integer values and no symmetry. Everything else (dense `array` files, `real`
//! or `pattern` fields, symmetric matrices) is rejected up front with the header in the message,
//! rather than half-understood. The text is streamed line by line through one reused buffer and
//! parsed as bytes, so a file of millions of entries costs no allocation per entry and only the
//! compact triplets stay in memory.
//!
//! The result is returned in CSC storage (compressed by column, the file's columns being 10x
//! cells), so the 10x reader transposes it into cells x genes CSR without copying. Entries may
//! come in any order; duplicates are summed, as scipy does when it converts coordinates to a
//! compressed matrix. Explicit zeros are kept.

use std::io::BufRead;
use std::path::Path;

use sprs::CsMat;

use crate::{Error, Result};

/// Longest field or header quoted in an error message, in characters.
const MAX_QUOTE: usize = 100;

/// Entries reserved up front at most, whatever the size line declares, so that a corrupt size
/// line cannot make us allocate gigabytes before reading a single entry.
const MAX_RESERVE: usize = 1 << 20;

/// Reads a MatrixMarket `coordinate integer general` matrix from `reader` (plain text, already
/// decompressed) into CSC storage with the file's shape; `path` is named in errors.
///
/// `check_shape` sees the `(rows, cols)` of the size line before anything is allocated for them:
/// the compressed storage costs a word per column, so a size line that declares billions of
/// columns must be refused there (the 10x reader compares the shape with its genes and barcodes
/// files), not after a multi-gigabyte allocation.
///
/// Values are stored as `f32`, exact up to 2^24 = 16,777,216 (beyond that they are rounded).
///
/// # Errors
/// [`Error::Io`] if reading fails; [`Error::NotCoordinateInteger`] for another kind of file;
/// [`Error::InvalidMtx`] for a missing or malformed size line or entry; [`Error::EmptyMatrix`]
/// for a shape with no rows or no columns; [`Error::MtxIndex`] for an entry outside the shape;
/// [`Error::MtxNotCount`] for a value that is not a non-negative integer;
/// [`Error::MtxEntryCount`] if the number of entries differs from the size line; whatever
/// `check_shape` returns.
pub(crate) fn read_coordinate_counts(
    path: &Path,
    mut reader: impl BufRead,
    check_shape: impl FnOnce((usize, usize)) -> Result<()>,
) -> Result<CsMat<f32>> {
    let mut lines = Lines {
        path,
        line: Vec::with_capacity(64),
        number: 0,
    };
    check_header(path, lines.next_line(&mut reader)?.map(|(_, line)| line))?;
    let (shape, declared) = read_size_line(&mut lines, &mut reader)?;
    check_shape(shape)?;
    let (rows, cols) = shape;
    let mut entries =
        Vec::with_capacity(usize::try_from(declared).map_or(0, |n| n.min(MAX_RESERVE)));
    while let Some((number, line)) = lines.next_line(&mut reader)? {
        if is_blank_or_comment(line) {
            continue;
        }
        let mut tokens = fields(line);
        let (Some(r), Some(c), Some(v), None) =
            (tokens.next(), tokens.next(), tokens.next(), tokens.next())
        else {
            let n = fields(line).count();
            return Err(Error::invalid_mtx(
                path,
                number,
                format!("expected 3 fields `row col value`, found {n}"),
            ));
        };
        let row = parse_index(path, number, "row", r)?;
        let col = parse_index(path, number, "col", c)?;
        if row == 0 || row > rows as u64 || col == 0 || col > cols as u64 {
            return Err(Error::MtxIndex {
                path: path.into(),
                line: number,
                row,
                col,
                shape,
            });
        }
        let value = parse_uint(v).ok_or_else(|| Error::MtxNotCount {
            path: path.into(),
            line: number,
            value: quote(v),
        })?;
        // Both indices fit in u32: `read_size_line` checked the shape.
        entries.push(((row - 1) as u32, (col - 1) as u32, value as f32));
    }
    if entries.len() as u64 != declared {
        return Err(Error::MtxEntryCount {
            path: path.into(),
            declared,
            found: entries.len() as u64,
        });
    }
    Ok(compress_by_column(shape, &entries))
}

/// Lines of the file, read one at a time into a reused buffer.
struct Lines<'a> {
    path: &'a Path,
    line: Vec<u8>,
    /// Lines read so far.
    number: usize,
}

impl Lines<'_> {
    /// The next line's 1-based number and text without its line end; `None` at the end of the
    /// file.
    fn next_line(&mut self, reader: &mut impl BufRead) -> Result<Option<(usize, &[u8])>> {
        self.line.clear();
        let n =
            (reader.read_until(b'\n', &mut self.line)).map_err(|err| Error::io(self.path, err))?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        let end = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
        Ok(Some((self.number, end.strip_suffix(b"\r").unwrap_or(end))))
    }
}

/// Checks the `%%MatrixMarket matrix coordinate integer general` banner (case-insensitively, as
/// the format allows).
fn check_header(path: &Path, line: Option<&[u8]>) -> Result<()> {
    let line = line.unwrap_or_default();
    let mut tokens = fields(line);
    let expected: [&[u8]; 5] = [
        b"%%MatrixMarket",
        b"matrix",
        b"coordinate",
        b"integer",
        b"general",
    ];
    let ok = expected
        .iter()
        .all(|e| tokens.next().is_some_and(|t| t.eq_ignore_ascii_case(e)))
        && tokens.next().is_none();
    if ok {
        Ok(())
    } else {
        Err(Error::NotCoordinateInteger {
            path: path.into(),
            header: quote(line),
        })
    }
}

/// Skips comments and blank lines, then reads `rows cols entries`.
fn read_size_line(
    lines: &mut Lines<'_>,
    reader: &mut impl BufRead,
) -> Result<((usize, usize), u64)> {
    let path = lines.path;
    let (number, line) = loop {
        match lines.next_line(reader)? {
            Some((_, line)) if is_blank_or_comment(line) => {}
            Some(numbered) => break numbered,
            None => {
                let after = lines.number + 1;
                return Err(Error::invalid_mtx(
                    path,
                    after,
                    "the file ends before the size line",
                ));
            }
        }
    };
    let values: Vec<Option<u64>> = fields(line).map(parse_uint).collect();
    let [Some(rows), Some(cols), Some(entries)] = values[..] else {
        return Err(Error::invalid_mtx(
            path,
            number,
            format!("size line {:?} is not `rows cols entries`", quote(line)),
        ));
    };
    if rows == 0 || cols == 0 {
        return Err(Error::EmptyMatrix {
            path: path.into(),
            shape: vec![rows as usize, cols as usize],
        });
    }
    if rows > u64::from(u32::MAX) || cols > u64::from(u32::MAX) {
        return Err(Error::invalid_mtx(
            path,
            number,
            format!(
                "shape {rows} x {cols} is too large (at most {} per axis)",
                u32::MAX
            ),
        ));
    }
    Ok(((rows as usize, cols as usize), entries))
}

/// CSC storage of the triplets `(row, col, value)`: a stable counting sort by column, then each
/// column sorted by row (a no-op when the file was already ordered) with duplicates summed.
fn compress_by_column(shape: (usize, usize), entries: &[(u32, u32, f32)]) -> CsMat<f32> {
    let (rows, cols) = shape;
    let mut indptr = vec![0_usize; cols + 1];
    for &(_, c, _) in entries {
        indptr[c as usize + 1] += 1;
    }
    for c in 0..cols {
        indptr[c + 1] += indptr[c];
    }
    let mut next = indptr.clone();
    let mut slots = vec![(0_u32, 0_f32); entries.len()];
    for &(r, c, v) in entries {
        let at = &mut next[c as usize];
        slots[*at] = (r, v);
        *at += 1;
    }
    let mut indices = Vec::with_capacity(entries.len());
    let mut data = Vec::with_capacity(entries.len());
    let mut start = 0;
    for c in 0..cols {
        let column = &mut slots[start..indptr[c + 1]];
        start = indptr[c + 1];
        if !column.is_sorted_by_key(|&(r, _)| r) {
            column.sort_unstable_by_key(|&(r, _)| r);
        }
        let first = indices.len();
        for &(r, v) in &*column {
            let r = r as usize;
            if indices.len() > first && indices.last() == Some(&r) {
                if let Some(last) = data.last_mut() {
                    *last += v;
                }
            } else {
                indices.push(r);
                data.push(v);
            }
        }
        indptr[c + 1] = indices.len();
    }
    // Cannot panic: indices are in range (checked while parsing), strictly increasing within
    // each column (sorted, duplicates merged) and `indptr` counts them.
    CsMat::new_csc((rows, cols), indptr, indices, data)
}

/// The whitespace-separated fields of a line.
fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty())
}

fn is_blank_or_comment(line: &[u8]) -> bool {
    line.first() == Some(&b'%') || line.iter().all(u8::is_ascii_whitespace)
}

/// A 1-based row or column index.
fn parse_index(path: &Path, line: usize, axis: &str, field: &[u8]) -> Result<u64> {
    parse_uint(field).ok_or_else(|| {
        Error::invalid_mtx(
            path,
            line,
            format!("{axis} index {:?} is not a positive integer", quote(field)),
        )
    })
}

/// A non-negative decimal integer of at most 19 digits (so it cannot overflow `u64`).
fn parse_uint(field: &[u8]) -> Option<u64> {
    if field.is_empty() || field.len() > 19 {
        return None;
    }
    field.iter().try_fold(0_u64, |n, &b| {
        let digit = b.wrapping_sub(b'0');
        (digit < 10).then(|| n * 10 + u64::from(digit))
    })
}

/// `bytes` as text for a message, cut to [`MAX_QUOTE`] characters.
fn quote(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(MAX_QUOTE)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<CsMat<f32>> {
        read_coordinate_counts(Path::new("m.mtx"), text.as_bytes(), |_| Ok(()))
    }

    const HEADER: &str = "%%MatrixMarket matrix coordinate integer general\n";

    #[test]
    fn unordered_entries_with_duplicates_and_comments() -> Result<()> {
        let text = format!("{HEADER}%comment\n\n3 2 5\n3 1 4\n1 1 2\r\n\n2 2 7\n3 1 1\n1 2 0\n");
        let m = read(&text)?;
        assert!(m.is_csc());
        assert_eq!(m.shape(), (3, 2));
        assert_eq!(m.indptr().raw_storage(), [0, 2, 4]);
        assert_eq!(m.indices(), [0, 2, 0, 1]);
        assert_eq!(m.data(), [2.0, 5.0, 0.0, 7.0]);
        Ok(())
    }

    #[test]
    fn banner_is_case_insensitive_and_zero_entries_is_fine() -> Result<()> {
        let m = read("%%matrixmarket MATRIX Coordinate Integer GENERAL\n2 3 0\n")?;
        assert_eq!((m.shape(), m.nnz()), ((2, 3), 0));
        Ok(())
    }

    #[test]
    fn parse_uint_accepts_only_plain_digits() {
        assert_eq!(parse_uint(b"0"), Some(0));
        assert_eq!(parse_uint(b"0042"), Some(42));
        assert_eq!(
            parse_uint(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1.0",
            b"1e3",
            b"12345678901234567890",
            b"x",
        ] {
            assert_eq!(parse_uint(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let cases = [
            (
                format!("{HEADER}%only comments\n"),
                3,
                "ends before the size line",
            ),
            (format!("{HEADER}2 2\n"), 2, "is not `rows cols entries`"),
            (format!("{HEADER}2 2 1\n1 1\n"), 3, "found 2"),
            (format!("{HEADER}2 2 1\n1 x 1\n"), 3, "col index \"x\""),
        ];
        for (text, line, needle) in cases {
            let err = read(&text).expect_err(needle);
            assert!(
                matches!(err, Error::InvalidMtx { line: l, .. } if l == line),
                "{err:?}"
            );
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    /// Found by fuzzing `read_10x`: a 64-byte file declaring 1 x 4294967295 made the reader
    /// allocate a 32 GiB column pointer; the shape now goes to `check_shape` first.
    #[test]
    fn shape_is_checked_before_it_is_allocated() {
        let text = format!("{HEADER}1 4294967295 0\n");
        let refuse = |shape| {
            Err(Error::Inconsistent {
                path: "m.mtx".into(),
                reason: format!("shape {shape:?}"),
            })
        };
        let err = read_coordinate_counts(Path::new("m.mtx"), text.as_bytes(), refuse)
            .expect_err("refused");
        assert!(err.to_string().contains("(1, 4294967295)"), "{err}");
    }

    #[test]
    fn empty_shape_is_rejected() {
        let err = read(&format!("{HEADER}0 5 0\n")).expect_err("empty");
        assert!(matches!(err, Error::EmptyMatrix { .. }), "{err:?}");
    }
}
