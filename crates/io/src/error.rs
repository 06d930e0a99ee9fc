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
    /// The file is not a MatrixMarket `coordinate integer general` file (another format, field or
    /// symmetry, or no `%%MatrixMarket` header at all).
    #[error(
        "{}: not a MatrixMarket coordinate integer file: header {header:?}, expected \
         \"%%MatrixMarket matrix coordinate integer general\"",
        path.display()
    )]
    NotCoordinateInteger {
        /// The file.
        path: PathBuf,
        /// The first line of the file (at most 100 characters).
        header: String,
    },
    /// A line of a MatrixMarket file cannot be parsed (missing size line, wrong number of fields,
    /// an index that is not a number).
    #[error("{}: line {line}: {reason}", path.display())]
    InvalidMtx {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is malformed.
        reason: String,
    },
    /// An entry lies outside the shape declared in the MatrixMarket size line.
    #[error(
        "{}: line {line}: entry at row {row}, col {col} is outside the declared {} x {} matrix \
         (indices are 1-based)",
        path.display(), shape.0, shape.1
    )]
    MtxIndex {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// 1-based row as written in the file.
        row: u64,
        /// 1-based column as written in the file.
        col: u64,
        /// Rows and columns declared in the size line.
        shape: (usize, usize),
    },
    /// The MatrixMarket size line declares a different number of entries than the file holds.
    #[error(
        "{}: the size line declares {declared} entries, the file has {found}",
        path.display()
    )]
    MtxEntryCount {
        /// The file.
        path: PathBuf,
        /// Entries declared in the size line.
        declared: u64,
        /// Entries found.
        found: u64,
    },
    /// A MatrixMarket entry's value is negative, fractional or not a number.
    #[error(
        "{}: line {line}: value {value:?} is not a count (a non-negative integer)",
        path.display()
    )]
    MtxNotCount {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The value as written in the file (at most 100 characters).
        value: String,
    },
    /// A 10x features (genes) or barcodes file has a different length than its matrix axis.
    #[error(
        "{}: {lines} lines, but {} declares {expected} {axis}",
        path.display(), matrix.display()
    )]
    TenxLength {
        /// The features, genes or barcodes file.
        path: PathBuf,
        /// Lines in it.
        lines: usize,
        /// The matrix file.
        matrix: PathBuf,
        /// Length of the matrix axis.
        expected: usize,
        /// The axis, for the message: "genes (rows)" or "cells (columns)".
        axis: &'static str,
    },
    /// A 10x matrix folder, or one of its files, is missing.
    #[error("{}: not a 10x matrix folder: found no {looked_for}", path.display())]
    TenxMissing {
        /// The folder searched.
        path: PathBuf,
        /// What was looked for, for the message.
        looked_for: String,
    },
    /// More than one 10x matrix folder was found at the same depth, so which to read is unclear.
    #[error(
        "{}: {} 10x matrix folders found ({}); pass the one to read",
        path.display(), found.len(), join_paths(found)
    )]
    TenxAmbiguous {
        /// The folder searched.
        path: PathBuf,
        /// The matrix folders found.
        found: Vec<PathBuf>,
    },
    /// Every cell of a count matrix is empty: there is nothing to train on.
    #[error("{}: the matrix of {cells} cells x {genes} genes holds no counts at all", path.display())]
    NoCounts {
        /// Where the counts came from.
        path: PathBuf,
        /// Cells of the matrix.
        cells: usize,
        /// Genes of the matrix.
        genes: usize,
    },
    /// An HDF5 file (AnnData `.h5ad`, Cell Ranger `.h5`) that is not HDF5, lacks a group or
    /// dataset, or holds one that does not fit (a type, a shape, an encoding, an index).
    #[error("{}: {object}: {reason}", path.display())]
    Hdf5 {
        /// The file.
        path: PathBuf,
        /// The group or dataset inside it, from the root (`/X/indptr`).
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// Parts of a matrix (or a request for part of one) that do not fit together.
    #[error("{}: {reason}", path.display())]
    Inconsistent {
        /// Where the data came from.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
}

/// `a, b, c` for a list of paths.
fn join_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
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

    /// [`Error::Hdf5`] about `object` inside `path`.
    pub(crate) fn hdf5(path: &Path, object: &str, reason: impl Into<String>) -> Self {
        Self::Hdf5 {
            path: path.into(),
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// [`Error::InvalidMtx`] for `path` at 1-based `line`.
    pub(crate) fn invalid_mtx(path: &Path, line: usize, reason: impl Into<String>) -> Self {
        Self::InvalidMtx {
            path: path.into(),
            line,
            reason: reason.into(),
        }
    }
}
