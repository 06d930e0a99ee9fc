//! Cell labels: one label per line, read into class names plus one class code per cell.
//!
//! Labels (cell types, clusters, simulated groups) arrive as plain text from many tools, so
//! reading forgives what is harmless (CRLF, surrounding whitespace, a byte-order mark, trailing
//! blank lines) and rejects what would silently misalign labels and cells (a blank line in the
//! middle, a count that differs from the number of cells). Class names are sorted so that codes
//! do not depend on the order cells appear in: numerically when every label is an integer
//! (`2` before `10`), lexicographically otherwise.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use crate::{Error, Result, write_atomic};

/// Labels of the cells, encoded as codes into a sorted list of distinct names. A cell may have
/// no label (pandas' missing category, code -1 in an AnnData file): its code is `None`, and
/// label scores leave it out ([`Labels::labelled_cells`], [`Labels::pick`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Labels {
    /// The distinct labels, sorted (numerically if all are integers, else lexicographically).
    pub names: Vec<String>,
    /// For each cell, the index of its label in `names`; `None` for a cell without a label.
    pub codes: Vec<Option<usize>>,
}

impl Labels {
    /// Encodes labels given in cell order; `None` is a cell without a label.
    fn encode(labels: &[Option<&str>]) -> Self {
        let mut names: Vec<&str> = labels.iter().flatten().copied().collect();
        names.sort_unstable();
        names.dedup();
        if names.iter().all(|n| n.parse::<i64>().is_ok()) {
            // `(number, text)` keeps distinct spellings of one number ("1", "01") apart.
            names.sort_by_cached_key(|n| (n.parse::<i64>().unwrap_or_default(), *n));
        }
        let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        Self {
            codes: labels.iter().map(|l| l.map(|l| index[l])).collect(),
            names: names.into_iter().map(str::to_owned).collect(),
        }
    }

    /// Encodes labels given in cell order (an AnnData column, a list made in memory).
    pub fn from_strings(labels: &[&str]) -> Self {
        let labels: Vec<Option<&str>> = labels.iter().copied().map(Some).collect();
        Self::encode(&labels)
    }

    /// Encodes labels given in cell order, `None` for a cell without one.
    pub fn from_optional(labels: &[Option<&str>]) -> Self {
        Self::encode(labels)
    }

    /// Number of distinct labels.
    pub fn n_classes(&self) -> usize {
        self.names.len()
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Whether there are no cells.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// Number of cells without a label.
    pub fn missing(&self) -> usize {
        self.codes.iter().filter(|c| c.is_none()).count()
    }

    /// Each cell's code as a per-cell field of a minibatch ([`crate::Fields`]): the code, or
    /// [`crate::MISSING`] for a cell without a label.
    pub fn field_codes(&self) -> Vec<i64> {
        (self.codes.iter())
            .map(|c| c.map_or(crate::MISSING, |c| c as i64))
            .collect()
    }

    /// The positions of the cells that have a label, ascending.
    pub fn labelled_cells(&self) -> Vec<usize> {
        (self.codes.iter().enumerate())
            .filter_map(|(i, c)| c.map(|_| i))
            .collect()
    }

    /// The codes of the cells that have a label, in cell order: the truth that label scores
    /// compare [`Labels::pick`] of a per-cell result with.
    pub fn known_codes(&self) -> Vec<usize> {
        self.codes.iter().flatten().copied().collect()
    }

    /// The entries of the per-cell `values` at the cells that have a label.
    ///
    /// # Panics
    /// If `values` does not hold one entry per cell.
    pub fn pick<T: Clone>(&self, values: &[T]) -> Vec<T> {
        assert_eq!(values.len(), self.codes.len(), "one value per cell");
        (values.iter().zip(&self.codes))
            .filter(|(_, c)| c.is_some())
            .map(|(v, _)| v.clone())
            .collect()
    }

    /// The labels of the cells at `cells` (e.g. those kept by a filter), encoded anew: a class
    /// no kept cell has is gone.
    ///
    /// # Panics
    /// If a cell index is out of range.
    pub fn subset(&self, cells: &[usize]) -> Self {
        if cells.len() == self.codes.len() && cells.iter().enumerate().all(|(i, &c)| i == c) {
            return self.clone();
        }
        let names: Vec<Option<&str>> = cells
            .iter()
            .map(|&c| self.codes[c].map(|code| self.names[code].as_str()))
            .collect();
        Self::encode(&names)
    }
}

/// Reads one label per line (integers or strings) and, if `n_cells` is given, checks that there
/// is exactly one label per cell.
///
/// Whitespace around each label, CRLF line ends, a UTF-8 byte-order mark and blank lines at the
/// end are ignored.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read or is not UTF-8; [`Error::EmptyLabels`] if it holds no
/// label; [`Error::BlankLine`] for a blank line before the last label; [`Error::LabelCount`] if
/// the number of labels differs from `n_cells`.
pub fn read_labels(path: &Path, n_cells: Option<usize>) -> Result<Labels> {
    let text = fs::read_to_string(path).map_err(|err| Error::io(path, err))?;
    let lines = parse_lines(path, &text)?;
    if let Some(cells) = n_cells.filter(|&cells| cells != lines.len()) {
        return Err(Error::LabelCount {
            path: path.into(),
            labels: lines.len(),
            cells,
        });
    }
    let labels = Labels::from_strings(&lines);
    tracing::debug!(
        path = %path.display(),
        cells = labels.len(),
        classes = labels.n_classes(),
        "read labels"
    );
    Ok(labels)
}

/// Writes one label per line with a trailing newline, atomically (see [`write_atomic`]).
///
/// An empty slice writes an empty file, which [`read_labels`] rejects.
///
/// # Errors
/// [`Error::BadLabel`] for a label that would not read back as itself (blank, with surrounding
/// whitespace, or spanning lines), before anything is written; [`Error::Write`] if the file
/// cannot be written.
pub fn write_labels(path: &Path, labels: &[String]) -> Result<()> {
    let bad = labels
        .iter()
        .position(|l| l.is_empty() || l.trim() != l || l.contains(['\n', '\r']));
    if let Some(index) = bad {
        return Err(Error::BadLabel {
            path: path.into(),
            index,
            label: labels[index].clone(),
        });
    }
    write_atomic(path, |w| labels.iter().try_for_each(|l| writeln!(w, "{l}")))
}

/// The trimmed labels, with trailing blank lines dropped and any other blank line an error.
fn parse_lines<'a>(path: &Path, text: &'a str) -> Result<Vec<&'a str>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<&str> = text.lines().map(str::trim).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    if lines.is_empty() {
        return Err(Error::EmptyLabels { path: path.into() });
    }
    match lines.iter().position(|l| l.is_empty()) {
        Some(i) => Err(Error::BlankLine {
            path: path.into(),
            line: i + 1,
        }),
        None => Ok(lines),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subset_is_encoded_anew() {
        let all = Labels::from_strings(&["b", "a", "c", "a"]);
        let some = all.subset(&[0, 3]);
        assert_eq!(some.names, ["a", "b"]);
        assert_eq!(some.known_codes(), [1, 0]);
        assert_eq!(all.subset(&[0, 1, 2, 3]), all);
    }

    #[test]
    fn cells_without_a_label_are_kept_apart_from_every_class() {
        let all = Labels::from_optional(&[Some("b"), None, Some("a"), None, Some("b")]);
        assert_eq!(all.names, ["a", "b"]);
        assert_eq!(all.codes, [Some(1), None, Some(0), None, Some(1)]);
        assert_eq!((all.missing(), all.len()), (2, 5));
        assert_eq!(all.labelled_cells(), [0, 2, 4]);
        assert_eq!(all.known_codes(), [1, 0, 1]);
        assert_eq!(all.pick(&["x", "y", "z", "u", "v"]), ["x", "z", "v"]);
        let some = all.subset(&[1, 4]);
        assert_eq!(
            (some.names.as_slice(), some.codes.as_slice()),
            (&["b".to_owned()][..], &[None, Some(0)][..])
        );
    }
    use std::path::PathBuf;

    fn fixture(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("labels.txt");
        fs::write(&path, text).expect("write fixture");
        path
    }

    fn read(text: &str, n_cells: Option<usize>) -> Result<Labels> {
        let dir = tempfile::tempdir().expect("tempdir");
        read_labels(&fixture(&dir, text), n_cells)
    }

    fn assert_names_file(err: &Error) {
        let msg = err.to_string();
        assert!(msg.contains("labels.txt") && !msg.contains('\n'), "{msg}");
    }

    #[test]
    fn integer_labels_sort_numerically() -> Result<()> {
        let labels = read("10\n2\n-1\n2\n", Some(4))?;
        assert_eq!(labels.names, ["-1", "2", "10"]);
        assert_eq!(labels.known_codes(), [2, 1, 0, 1]);
        assert_eq!(
            (labels.len(), labels.n_classes(), labels.is_empty()),
            (4, 3, false)
        );
        Ok(())
    }

    #[test]
    fn string_labels_sort_lexicographically() -> Result<()> {
        let labels = read("T cell\nB cell\n10\nT cell\n2", None)?;
        assert_eq!(labels.names, ["10", "2", "B cell", "T cell"]);
        assert_eq!(labels.known_codes(), [3, 2, 0, 3, 1]);
        Ok(())
    }

    #[test]
    fn crlf_whitespace_bom_and_trailing_blank_lines_are_ignored() -> Result<()> {
        let labels = read("\u{feff}b\r\n  a\t\r\nb \r\n\r\n  \n\n", Some(3))?;
        assert_eq!(labels.names, ["a", "b"]);
        assert_eq!(labels.known_codes(), [1, 0, 1]);
        Ok(())
    }

    #[test]
    fn blank_line_in_the_middle_names_its_line() {
        let err = read("a\nb\n\nc\n", None).expect_err("blank line");
        assert!(matches!(err, Error::BlankLine { line: 3, .. }), "{err:?}");
        assert_names_file(&err);
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn empty_or_blank_file_has_no_labels() {
        for text in ["", "\n \r\n\t\n"] {
            let err = read(text, None).expect_err("empty");
            assert!(matches!(err, Error::EmptyLabels { .. }), "{err:?}");
            assert_names_file(&err);
        }
    }

    #[test]
    fn count_mismatch_gives_both_counts() {
        let err = read("a\nb\n", Some(3)).expect_err("mismatch");
        assert!(
            matches!(
                err,
                Error::LabelCount {
                    labels: 2,
                    cells: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .ends_with("labels.txt has 2 labels for 3 cells"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_io() {
        let err = read_labels(Path::new("nowhere/labels.txt"), None).expect_err("missing");
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert_names_file(&err);
    }

    #[test]
    fn write_then_read_round_trips() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out/labels.txt");
        let labels: Vec<String> = ["b", "a", "b"].map(String::from).to_vec();
        write_labels(&path, &labels)?;
        assert_eq!(fs::read_to_string(&path).expect("read back"), "b\na\nb\n");
        assert_eq!(read_labels(&path, Some(3))?.known_codes(), [1, 0, 1]);
        Ok(())
    }

    #[test]
    fn write_rejects_labels_that_would_not_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("labels.txt");
        for bad in ["", " a", "a\nb"] {
            let labels = vec!["ok".to_owned(), bad.to_owned()];
            let err = write_labels(&path, &labels).expect_err("bad label");
            assert!(matches!(err, Error::BadLabel { index: 1, .. }), "{err:?}");
            assert_names_file(&err);
        }
        assert!(!path.exists());
    }
}
