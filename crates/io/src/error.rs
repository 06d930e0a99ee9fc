//! The error type of scae-io: one enum for the whole crate.
//!
//! Every variant carries the path of the file it is about, and every message is one line that
//! starts with that path and then says what is wrong with the values that show it, so a user can
//! fix the file from the message alone. Underlying I/O errors are part of the message (not a
//! `source()`), so printing the error with `anyhow`'s `{:#}` does not repeat them.

use std::io;
use std::path::{Path, PathBuf};

/// Result alias used throughout scae-io.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong reading or writing a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read (missing, unreadable, not UTF-8 text).
    #[error("{}: cannot read: {err}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        err: io::Error,
    },
    /// The file (or its temporary sibling) could not be written or renamed into place.
    #[error("{}: cannot write: {err}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system (or the encoder) said.
        err: io::Error,
    },
    /// The file is not a well-formed `.npy` file (bad magic string, bad header, extra bytes).
    #[error("{}: not a valid .npy file: {reason}", path.display())]
    InvalidNpy {
        /// The file.
        path: PathBuf,
        /// What is malformed.
        reason: String,
    },
    /// The `.npy` header promises more data than the file holds.
    #[error(
        "{}: truncated: shape {shape:?} of {dtype} needs {expected} data bytes, the file has {found}",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The shape in the header.
        shape: Vec<usize>,
        /// The element type in the header.
        dtype: &'static str,
        /// Data bytes the header promises.
        expected: u64,
        /// Data bytes after the header.
        found: u64,
    },
    /// The `.npy` element type is not one scae reads.
    #[error("{}: unsupported dtype {dtype}; supported: {supported}", path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The type descriptor from the header, as numpy wrote it.
        dtype: String,
        /// The supported types, for the message.
        supported: &'static str,
    },
    /// The array is not 2-D.
    #[error("{}: expected a 2-D matrix (cells x genes), found shape {shape:?}", path.display())]
    NotMatrix {
        /// The file.
        path: PathBuf,
        /// The shape in the header.
        shape: Vec<usize>,
    },
    /// The matrix has no cells or no genes.
    #[error("{}: empty matrix: shape {shape:?} has no cells or no genes", path.display())]
    EmptyMatrix {
        /// The file.
        path: PathBuf,
        /// The shape in the header.
        shape: Vec<usize>,
    },
    /// A float value is NaN or infinite, or too large for `f32`.
    #[error(
        "{}: value {value:?} at row {row}, col {col} is not a finite float32",
        path.display()
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// 0-based row (cell).
        row: usize,
        /// 0-based column (gene).
        col: usize,
        /// The value as stored in the file.
        value: f64,
    },
    /// A count is negative or not a whole number.
    #[error(
        "{}: value {value:?} at row {row}, col {col} is not a count (a non-negative integer)",
        path.display()
    )]
    NotCount {
        /// The file.
        path: PathBuf,
        /// 0-based row (cell).
        row: usize,
        /// 0-based column (gene).
        col: usize,
        /// The offending value.
        value: f32,
    },
    /// The labels file has no labels at all.
    #[error("{}: no labels: the file is empty or blank", path.display())]
    EmptyLabels {
        /// The file.
        path: PathBuf,
    },
    /// A blank line comes before the last label.
    #[error(
        "{}: line {line} is blank; blank lines are allowed only at the end",
        path.display()
    )]
    BlankLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The number of labels differs from the number of cells.
    #[error("{} has {labels} labels for {cells} cells", path.display())]
    LabelCount {
        /// The file.
        path: PathBuf,
        /// Labels in the file.
        labels: usize,
        /// Cells expected.
        cells: usize,
    },
    /// A label to be written would not read back as itself.
    #[error(
        "{}: cannot write label {index} ({label:?}): labels must be non-blank single lines \
         without surrounding whitespace",
        path.display()
    )]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// 0-based index into the labels.
        index: usize,
        /// The offending label.
        label: String,
    },
}

impl Error {
    /// [`Error::Io`] for `path`.
    pub(crate) fn io(path: &Path, err: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            err,
        }
    }

    /// [`Error::InvalidNpy`] for `path`.
    pub(crate) fn invalid_npy(path: &Path, reason: impl Into<String>) -> Self {
        Self::InvalidNpy {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
