//! The user's data: a cells x genes matrix and, optionally, one label per cell; raw counts stay
//! sparse ([`CountData`]).
//!
//! `--data` names a `.npy` file, a folder holding `counts.npy`, or a 10x
//! Genomics (Cell Ranger) matrix folder. A 10x folder holds raw counts: they
//! are read sparse and turned into the questions' input by
//! [`scae_io::preprocess`] (each cell scaled to 10,000, `log1p`, the N most
//! variable genes kept). Labels come from `--labels`, else from a `labels.txt`
//! beside the data when one exists. Everything is read and validated before any
//! result is written.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ndarray::Array2;
use scae_io::{CountMatrix, Labels};
use serde::Serialize;

/// A validated expression matrix with its labels.
#[derive(Debug)]
pub struct Dataset {
    pub x: Array2<f32>,
    pub labels: Option<Labels>,
    pub source: DataSource,
}

/// Where a data set came from, and a fingerprint of its content (saved with results).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DataSource {
    pub data: PathBuf,
    pub labels: Option<PathBuf>,
    pub cells: usize,
    pub genes: usize,
    /// `npy` or `10x`.
    pub format: String,
    /// For a 10x folder: the number of most variable genes kept by the preprocessing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_genes: Option<usize>,
    /// FNV-1a (64 bit) of the matrix values and labels, in hex.
    pub fingerprint: String,
}

impl Dataset {
    /// Reads `data` (a `.npy` file or a folder with `counts.npy`) and its labels; a 10x folder
    /// is preprocessed keeping [`scae_io::preprocess::DEFAULT_N_TOP_GENES`] genes.
    pub fn load(data: &Path, labels: Option<&Path>) -> Result<Self> {
        Self::load_with(data, labels, scae_io::preprocess::DEFAULT_N_TOP_GENES)
    }

    /// [`Dataset::load`], keeping the `top_genes` most variable genes of a 10x folder.
    pub fn load_with(data: &Path, labels: Option<&Path>, top_genes: usize) -> Result<Self> {
        if data.is_dir() && !data.join("counts.npy").exists() {
            return Self::load_10x(data, labels, top_genes);
        }
        let data = if data.is_dir() {
            data.join("counts.npy")
        } else {
            data.to_path_buf()
        };
        let x = scae_io::read_matrix(&data)?;
        let labels_path = labels_beside_file(labels, &data);
        Self::finish(x, &data, labels_path, "npy", None)
    }

    /// A 10x matrix folder (at `dir` or up to two levels below), preprocessed; labels from
    /// `labels`, else `labels.txt` beside the matrix or in `dir`.
    fn load_10x(dir: &Path, labels: Option<&Path>, top_genes: usize) -> Result<Self> {
        if top_genes == 0 {
            anyhow::bail!("--top-genes must be at least 1");
        }
        let files = find_10x(dir, "counts.npy")?;
        let matrix = scae_io::read_10x(&files.dir)?;
        let pre = scae_io::preprocess(&matrix.counts, top_genes);
        tracing::info!(
            cells = matrix.n_cells(),
            genes = matrix.n_genes(),
            kept = pre.x.ncols(),
            "read and preprocessed 10x counts from {}",
            files.dir.display()
        );
        let labels_path = labels_for_10x(labels, &files, dir);
        Self::finish(pre.x, &files.matrix, labels_path, "10x", Some(top_genes))
    }

    fn finish(
        x: Array2<f32>,
        data: &Path,
        labels_path: Option<PathBuf>,
        format: &str,
        top_genes: Option<usize>,
    ) -> Result<Self> {
        let labels = labels_path
            .as_deref()
            .map(|path| scae_io::read_labels(path, Some(x.nrows())))
            .transpose()?;
        let fingerprint = fingerprint(&x, labels.as_ref());
        let source = DataSource {
            data: absolute(data),
            labels: labels_path.as_deref().map(absolute),
            cells: x.nrows(),
            genes: x.ncols(),
            format: format.into(),
            top_genes,
            fingerprint,
        };
        Ok(Self { x, labels, source })
    }

    /// The rows of `x` at `rows`, as a new matrix.
    pub fn rows(&self, rows: &[usize]) -> Array2<f32> {
        self.x.select(ndarray::Axis(0), rows)
    }
}

/// The 10x matrix folder at or below `dir`, which holds no `npy` (the file a folder of ours would
/// hold instead).
fn find_10x(dir: &Path, npy: &str) -> Result<scae_io::TenxFiles> {
    scae_io::find_10x(dir).with_context(|| {
        format!(
            "{}: neither {npy} nor a 10x Genomics matrix folder",
            dir.display()
        )
    })
}

/// `labels` when given, else `labels.txt` beside `data` when it exists.
fn labels_beside_file(labels: Option<&Path>, data: &Path) -> Option<PathBuf> {
    match labels {
        Some(path) => Some(path.to_path_buf()),
        None => data
            .parent()
            .map(|dir| dir.join("labels.txt"))
            .filter(|p| p.exists()),
    }
}

/// `labels` when given, else `labels.txt` beside the 10x matrix, else in the folder `dir` named.
fn labels_for_10x(
    labels: Option<&Path>,
    files: &scae_io::TenxFiles,
    dir: &Path,
) -> Option<PathBuf> {
    match labels {
        Some(path) => Some(path.to_path_buf()),
        None => files
            .labels
            .clone()
            .or_else(|| Some(dir.join("labels.txt")).filter(|p| p.exists())),
    }
}

/// The canonical path (no `..`, links resolved), else the absolute one.
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// FNV-1a over the shape, the matrix's f32 bits and the label codes.
fn fingerprint(x: &Array2<f32>, labels: Option<&Labels>) -> String {
    let mut hash = scae_io::Fnv::default();
    hash.eat(&(x.nrows() as u64).to_le_bytes());
    hash.eat(&(x.ncols() as u64).to_le_bytes());
    for v in x {
        hash.eat(&v.to_bits().to_le_bytes());
    }
    for code in labels.map(|l| l.codes.as_slice()).unwrap_or_default() {
        hash.eat(&(*code as u64).to_le_bytes());
    }
    hash.hex()
}

/// Raw counts with their labels: what the count models train on, kept sparse
/// ([`CountMatrix`]) from the file to the minibatch.
#[derive(Debug)]
pub struct CountData {
    pub counts: CountMatrix,
    pub labels: Option<Labels>,
    pub source: DataSource,
    /// The input row of each kept cell (cells without any count are dropped), ascending.
    pub cells: Vec<usize>,
}

impl CountData {
    /// Raw counts: a `.npy` file, a folder holding `counts_raw.npy`, or a 10x folder (every gene,
    /// unnormalised). Every value must be a non-negative integer. Cells without any count are
    /// dropped with a warning (their labels too); a matrix without any count is an error.
    pub fn load(data: &Path, labels: Option<&Path>) -> Result<Self> {
        if data.is_dir() && !data.join("counts_raw.npy").exists() {
            let files = find_10x(data, "counts_raw.npy")?;
            let matrix = scae_io::read_10x(&files.dir)?;
            let counts = CountMatrix::new(matrix.counts, &files.matrix)?;
            tracing::info!(
                cells = counts.cells(),
                genes = counts.genes(),
                zeros = format!("{:.1} %", 100.0 * counts.zero_fraction()),
                "read raw 10x counts from {}",
                files.dir.display()
            );
            let labels_path = labels_for_10x(labels, &files, data);
            return Self::finish(counts, &files.matrix, labels_path, "10x-counts");
        }
        let data = if data.is_dir() {
            data.join("counts_raw.npy")
        } else {
            data.to_path_buf()
        };
        let counts = CountMatrix::from_dense(scae_io::read_counts(&data)?.view(), &data)?;
        let labels_path = labels_beside_file(labels, &data);
        Self::finish(counts, &data, labels_path, "npy-counts")
    }

    /// Counts made in memory (a simulation), described by `name` in the provenance.
    pub fn from_counts(counts: CountMatrix, name: &str, labels: Option<Labels>) -> Result<Self> {
        Self::with_source(counts, Path::new(name), None, labels, "simulated-counts")
    }

    fn finish(
        counts: CountMatrix,
        data: &Path,
        labels_path: Option<PathBuf>,
        format: &str,
    ) -> Result<Self> {
        let labels = labels_path
            .as_deref()
            .map(|path| scae_io::read_labels(path, Some(counts.cells())))
            .transpose()?;
        Self::with_source(
            counts,
            &absolute(data),
            labels_path.as_deref(),
            labels,
            format,
        )
    }

    fn with_source(
        counts: CountMatrix,
        data: &Path,
        labels_path: Option<&Path>,
        labels: Option<Labels>,
        format: &str,
    ) -> Result<Self> {
        let (counts, cells) = scae_io::drop_empty_cells(counts, data)?;
        let labels = labels.map(|l| l.subset(&cells));
        let codes = labels
            .iter()
            .flat_map(|l| l.codes.iter().map(|&c| c as u64));
        let source = DataSource {
            data: data.to_path_buf(),
            labels: labels_path.map(absolute),
            cells: counts.cells(),
            genes: counts.genes(),
            format: format.into(),
            top_genes: None,
            fingerprint: counts.fingerprint(codes),
        };
        Ok(Self {
            counts,
            labels,
            source,
            cells,
        })
    }
}

/// The default raw counts of a project root.
pub fn default_counts(root: &Path) -> PathBuf {
    root.join("data").join("counts_raw.npy")
}

/// The default data folder of a project root.
pub fn default_data(root: &Path) -> PathBuf {
    root.join("data").join("counts.npy")
}
