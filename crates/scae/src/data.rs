//! The user's data: a cells x genes matrix and, optionally, one label per cell.
//!
//! Files become data in one place, [`scae_io::open`] (re-exported here as [`CountData`] for the
//! count models); this module holds what the autoencoder questions add to it: [`Dataset`], the
//! log-normalised input (each cell scaled to 10,000, `log1p`, the N most variable genes kept, by
//! [`scae_io::preprocess`]); an `.h5ad` matrix that is not integer, or a `.npy` matrix, is taken
//! as already normalised.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use ndarray::Array2;
use scae_io::{Counts, H5adOptions, Labels, OpenOptions, Values};

pub use scae_io::{CountData, DataSource, Hdf5Kind, hdf5_kind, open_hdf5};

/// A validated expression matrix with its labels.
#[derive(Debug)]
pub struct Dataset {
    pub x: Array2<f32>,
    pub labels: Option<Labels>,
    /// The name of each column of `x` (gene names; column numbers for a `.npy`).
    pub var_names: Vec<String>,
    pub source: DataSource,
}

impl Dataset {
    /// Reads `data` (a `.npy` file or a folder with `counts.npy`) and its labels; a 10x folder
    /// is preprocessed keeping [`scae_io::preprocess::DEFAULT_N_TOP_GENES`] genes.
    pub fn load(data: &Path, labels: Option<&Path>) -> Result<Self> {
        Self::load_with(data, labels, scae_io::preprocess::DEFAULT_N_TOP_GENES)
    }

    /// [`Dataset::load`], keeping the `top_genes` most variable genes of a 10x folder.
    pub fn load_with(data: &Path, labels: Option<&Path>, top_genes: usize) -> Result<Self> {
        Self::load_from(data, labels, top_genes, &H5adOptions::default())
    }

    /// [`Dataset::load_with`], with what to read from an `.h5ad` file.
    pub fn load_from(
        data: &Path,
        labels: Option<&Path>,
        top_genes: usize,
        options: &H5adOptions,
    ) -> Result<Self> {
        Self::load_genes(data, labels, Genes::Top(top_genes), options)
    }

    /// The input of a model that reads `genes` (by name, in that order) from `data`: raw counts
    /// are log-normalised over every gene, then those columns kept; a log-normalised matrix
    /// keeps them as it is.
    ///
    /// # Errors
    /// As [`Dataset::load_from`], and one line when `data` lack some of `genes`.
    pub fn load_for_model(data: &Path, genes: &[String], options: &H5adOptions) -> Result<Self> {
        Self::load_genes(data, None, Genes::Named(genes), options)
    }

    fn load_genes(
        data: &Path,
        labels: Option<&Path>,
        genes: Genes<'_>,
        options: &H5adOptions,
    ) -> Result<Self> {
        if let Genes::Top(0) = genes {
            bail!("--top-genes must be at least 1");
        }
        let read = scae_io::open(
            data,
            &OpenOptions {
                h5ad: options.clone(),
                labels: labels.map(Path::to_path_buf),
                values: Values::AsStored,
                ..OpenOptions::default()
            },
        )?;
        let (x, var_names, top) = match read.counts {
            Counts::Memory(counts) => {
                let (pre, names) = genes.preprocess(counts.csr(), &read.var_names, data)?;
                tracing::info!(
                    cells = counts.cells(),
                    genes = counts.genes(),
                    kept = pre.x.ncols(),
                    "preprocessed raw counts from {}",
                    data.display()
                );
                (pre.x, names, genes.top())
            }
            Counts::Values(x) => {
                let (x, names) = genes.keep_dense(x, read.var_names, data)?;
                (x, names, None)
            }
            Counts::Backed(_) => bail!("{}: read backed, not in memory", data.display()),
        };
        let mut source = read.source;
        source.cells = x.nrows();
        source.genes = x.ncols();
        source.top_genes = top;
        source.fingerprint = fingerprint(&x, read.labels.as_ref());
        Ok(Self {
            x,
            labels: read.labels,
            var_names,
            source,
        })
    }

    /// The rows of `x` at `rows`, as a new matrix.
    pub fn rows(&self, rows: &[usize]) -> Array2<f32> {
        self.x.select(ndarray::Axis(0), rows)
    }
}

/// Which genes a [`Dataset`] keeps.
#[derive(Debug, Clone, Copy)]
enum Genes<'a> {
    /// Of raw counts, the most variable (every gene of a log-normalised matrix).
    Top(usize),
    /// Those a model reads, by name and in its order.
    Named(&'a [String]),
}

impl Genes<'_> {
    /// The `top_genes` a dataset's source records.
    fn top(self) -> Option<usize> {
        match self {
            Self::Top(n) => Some(n),
            Self::Named(_) => None,
        }
    }

    /// Log-normalised values of the chosen genes of `counts` (genes named `names`), with their
    /// names.
    fn preprocess(
        self,
        counts: &scae_io::CsMat<f32>,
        names: &[String],
        data: &Path,
    ) -> Result<(scae_io::Preprocessed, Vec<String>)> {
        let pre = match self {
            Self::Top(n) => scae_io::preprocess(counts, n),
            Self::Named(genes) => {
                let columns = scae_io::gene_columns(genes, names, data)?;
                scae_io::preprocess::preprocess_genes(counts, &columns)
            }
        };
        let kept = pre.genes.iter().map(|&g| names[g].clone()).collect();
        Ok((pre, kept))
    }

    /// The chosen columns of the log-normalised `x`, whose columns are named `all`: every one for
    /// `Top`, those named for `Named`.
    fn keep_dense(
        self,
        x: Array2<f32>,
        all: Vec<String>,
        data: &Path,
    ) -> Result<(Array2<f32>, Vec<String>)> {
        match self {
            Self::Top(_) => Ok((x, all)),
            Self::Named(genes) => {
                let columns = scae_io::gene_columns(genes, &all, data)?;
                Ok((x.select(ndarray::Axis(1), &columns), genes.to_vec()))
            }
        }
    }
}

/// The names of `n` columns that have none: their numbers, from 0.
pub fn column_numbers(n: usize) -> Vec<String> {
    (0..n).map(|j| j.to_string()).collect()
}

/// FNV-1a over the shape, the matrix's f32 bits and the label codes.
/// A label code as the fingerprints hash it: the code, or `u64::MAX` for a cell without a label
/// (so fully labelled data keep the fingerprints they had before labels could be missing).
fn label_word(code: Option<usize>) -> u64 {
    code.map_or(u64::MAX, |c| c as u64)
}

fn fingerprint(x: &Array2<f32>, labels: Option<&Labels>) -> String {
    let mut hash = scae_io::Fnv::default();
    hash.eat(&(x.nrows() as u64).to_le_bytes());
    hash.eat(&(x.ncols() as u64).to_le_bytes());
    for v in x {
        hash.eat(&v.to_bits().to_le_bytes());
    }
    for code in labels.map(|l| l.codes.as_slice()).unwrap_or_default() {
        hash.eat(&label_word(*code).to_le_bytes());
    }
    hash.hex()
}

/// The default raw counts of a project root.
pub fn default_counts(root: &Path) -> PathBuf {
    root.join("data").join("counts_raw.npy")
}

/// The default data folder of a project root.
pub fn default_data(root: &Path) -> PathBuf {
    root.join("data").join("counts.npy")
}
