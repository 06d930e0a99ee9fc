//! The user's data: a cells x genes matrix and, optionally, one label per cell; raw counts stay
//! sparse ([`CountData`]).
//!
//! `--data` names a `.npy` file, a folder holding `counts.npy`, a 10x
//! Genomics (Cell Ranger) matrix folder or `.h5` file, or an AnnData `.h5ad` file
//! (`--layer` picks `X`, a layer or `raw`; `--labels-key` an `obs` column of labels). Raw counts
//! are read sparse and turned into the questions' input by
//! [`scae_io::preprocess`] (each cell scaled to 10,000, `log1p`, the N most
//! variable genes kept); an `.h5ad` matrix that is not integer is taken as already normalised.
//! Labels come from `--labels`, else `--labels-key`, else from a `labels.txt`
//! beside the data when one exists. Everything is read and validated before any
//! result is written. [`BackedCounts`] opens an `.h5ad` file for training that reads row blocks
//! as it goes, for data larger than memory.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use ndarray::Array2;
use scae_io::{CountMatrix, Fields, H5adOptions, H5adRows, Hdf5File, Labels, keys};
use serde::Serialize;

/// A validated expression matrix with its labels.
#[derive(Debug)]
pub struct Dataset {
    pub x: Array2<f32>,
    pub labels: Option<Labels>,
    /// The name of each column of `x` (gene names; column numbers for a `.npy`).
    pub var_names: Vec<String>,
    pub source: DataSource,
}

/// Where a data set came from, and a fingerprint of its content (saved with results).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DataSource {
    pub data: PathBuf,
    pub labels: Option<PathBuf>,
    pub cells: usize,
    pub genes: usize,
    /// `npy`, `10x`, `10x-h5`, `h5ad` (`-counts` when read as raw counts, `-backed` when read
    /// from the file as training goes).
    pub format: String,
    /// For a 10x folder: the number of most variable genes kept by the preprocessing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_genes: Option<usize>,
    /// For an `.h5ad` file: the matrix read (`--layer`), when not `X`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// For an `.h5ad` file: the `obs` column of the labels (`--labels-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_key: Option<String>,
    /// For an `.h5ad` file: the further `obs` columns read as per-cell fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub obs_keys: Vec<String>,
    /// The cells without a label (a missing category of `--labels-key`), left out of every
    /// label score.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unlabelled_cells: usize,
    /// FNV-1a (64 bit) of the matrix values and labels, in hex.
    pub fingerprint: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The number of cells in `labels` without a label, said once in the log when there are any.
fn unlabelled(labels: Option<&Labels>, data: &Path) -> usize {
    let missing = labels.map_or(0, Labels::missing);
    if missing > 0 {
        tracing::warn!(
            "{}: {missing} of {} cells have no label; they are left out of the label scores",
            data.display(),
            labels.map_or(0, Labels::len)
        );
    }
    missing
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
        if data.is_dir() && !data.join("counts.npy").exists() {
            refuse_h5ad_options(data, options, "a 10x Genomics folder")?;
            return Self::load_10x(data, labels, genes);
        }
        if let Some((kind, file)) = open_hdf5(data)? {
            return Self::load_hdf5(data, kind, &file, labels, genes, options);
        }
        refuse_h5ad_options(data, options, "a .npy matrix")?;
        let data = if data.is_dir() {
            data.join("counts.npy")
        } else {
            data.to_path_buf()
        };
        let x = scae_io::read_matrix(&data)?;
        let labels_path = labels_beside_file(labels, &data);
        let (x, names) = genes.keep_dense(x, column_numbers, &data)?;
        Self::finish(x, names, &data, labels_path, "npy", None)
    }

    /// A 10x matrix folder (at `dir` or up to two levels below), preprocessed; labels from
    /// `labels`, else `labels.txt` beside the matrix or in `dir`.
    fn load_10x(dir: &Path, labels: Option<&Path>, genes: Genes<'_>) -> Result<Self> {
        let files = find_10x(dir, "counts.npy")?;
        let matrix = scae_io::read_10x(&files.dir)?;
        let (pre, names) = genes.preprocess(&matrix.counts, &matrix.gene_names, &files.dir)?;
        tracing::info!(
            cells = matrix.n_cells(),
            genes = matrix.n_genes(),
            kept = pre.x.ncols(),
            "read and preprocessed 10x counts from {}",
            files.dir.display()
        );
        let labels_path = labels_for_10x(labels, &files, dir);
        Self::finish(pre.x, names, &files.matrix, labels_path, "10x", genes.top())
    }

    /// A Cell Ranger `.h5` (raw counts, preprocessed as a 10x folder) or an `.h5ad` file: integer
    /// values are counts and preprocessed, others are taken as the input as they are.
    fn load_hdf5(
        data: &Path,
        kind: Hdf5Kind,
        file: &Hdf5File,
        labels: Option<&Path>,
        genes: Genes<'_>,
        options: &H5adOptions,
    ) -> Result<Self> {
        let (x, file_labels, var_names, format) = match kind {
            Hdf5Kind::TenxH5 => {
                refuse_h5ad_options(data, options, "a Cell Ranger .h5 file")?;
                let m = scae_io::read_10x_h5_file(file)?;
                (m.counts, m.labels, m.gene_names, "10x-h5")
            }
            Hdf5Kind::H5ad => {
                let m = scae_io::read_h5ad_file(file, options)?;
                (m.x, m.labels, m.var_names, "h5ad")
            }
        };
        let integer = x.data().iter().all(|v| *v >= 0.0 && v.fract() == 0.0);
        let (x, var_names, top) = if integer {
            let counts = CountMatrix::new(x, data)?;
            let (pre, names) = genes.preprocess(counts.csr(), &var_names, data)?;
            tracing::info!(
                cells = counts.cells(),
                genes = counts.genes(),
                kept = pre.x.ncols(),
                "read and preprocessed raw counts from {}",
                data.display()
            );
            (pre.x, names, genes.top())
        } else {
            tracing::info!(
                "{}: values are not counts; used as they are",
                data.display()
            );
            let (x, names) = genes.keep_dense(scae_io::to_dense(&x), |_| var_names, data)?;
            (x, names, None)
        };
        let labels_path = labels.map(Path::to_path_buf).or_else(|| {
            file_labels
                .is_none()
                .then(|| data.with_file_name("labels.txt"))
                .filter(|p| p.exists())
        });
        let mut dataset =
            Self::finish_with(x, var_names, data, labels_path, file_labels, format, top)?;
        dataset.source.layer = options.layer.clone();
        dataset.source.labels_key = options.labels_key.clone();
        Ok(dataset)
    }

    fn finish(
        x: Array2<f32>,
        var_names: Vec<String>,
        data: &Path,
        labels_path: Option<PathBuf>,
        format: &str,
        top_genes: Option<usize>,
    ) -> Result<Self> {
        Self::finish_with(x, var_names, data, labels_path, None, format, top_genes)
    }

    fn finish_with(
        x: Array2<f32>,
        var_names: Vec<String>,
        data: &Path,
        labels_path: Option<PathBuf>,
        file_labels: Option<Labels>,
        format: &str,
        top_genes: Option<usize>,
    ) -> Result<Self> {
        let labels = match labels_path.as_deref() {
            Some(path) => Some(scae_io::read_labels(path, Some(x.nrows()))?),
            None => file_labels,
        };
        let fingerprint = fingerprint(&x, labels.as_ref());
        let source = DataSource {
            data: absolute(data),
            labels: labels_path.as_deref().map(absolute),
            cells: x.nrows(),
            genes: x.ncols(),
            format: format.into(),
            top_genes,
            layer: None,
            labels_key: None,
            obs_keys: Vec::new(),
            unlabelled_cells: unlabelled(labels.as_ref(), data),
            fingerprint,
        };
        Ok(Self {
            x,
            labels,
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
                let columns = crate::card::gene_columns(genes, names, data)?;
                scae_io::preprocess::preprocess_genes(counts, &columns)
            }
        };
        let kept = pre.genes.iter().map(|&g| names[g].clone()).collect();
        Ok((pre, kept))
    }

    /// The chosen columns of the log-normalised `x`, whose names `names(n)` gives: every one for
    /// `Top`, those named for `Named`.
    fn keep_dense(
        self,
        x: Array2<f32>,
        names: impl FnOnce(usize) -> Vec<String>,
        data: &Path,
    ) -> Result<(Array2<f32>, Vec<String>)> {
        let all = names(x.ncols());
        match self {
            Self::Top(_) => Ok((x, all)),
            Self::Named(genes) => {
                let columns = crate::card::gene_columns(genes, &all, data)?;
                Ok((x.select(ndarray::Axis(1), &columns), genes.to_vec()))
            }
        }
    }
}

/// The names of `n` columns that have none: their numbers, from 0.
pub fn column_numbers(n: usize) -> Vec<String> {
    (0..n).map(|j| j.to_string()).collect()
}

/// An error when `--layer` or `--labels-key` was given for `data`, which is `what` and not an
/// AnnData file: those options would have nothing to choose from.
fn refuse_h5ad_options(data: &Path, options: &H5adOptions, what: &str) -> Result<()> {
    if let Some(key) = options.obs_keys.first() {
        bail!(
            "obs column {key}: {} is {what}, not an AnnData .h5ad file",
            data.display()
        );
    }
    for (flag, value) in [
        ("--layer", &options.layer),
        ("--labels-key", &options.labels_key),
    ] {
        if let Some(value) = value {
            bail!(
                "{flag} {value}: {} is {what}, not an AnnData .h5ad file",
                data.display()
            );
        }
    }
    Ok(())
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

/// Raw counts with their labels: what the count models train on, kept sparse
/// ([`CountMatrix`]) from the file to the minibatch.
#[derive(Debug)]
pub struct CountData {
    pub counts: CountMatrix,
    pub labels: Option<Labels>,
    /// The `obs` columns asked for ([`H5adOptions::obs_keys`]) of the kept cells, by name.
    pub obs: Vec<(String, Labels)>,
    pub source: DataSource,
    /// The input row of each kept cell (cells without any count are dropped), ascending.
    pub cells: Vec<usize>,
    /// The input column of each kept gene (every gene until [`CountData::select_genes`]).
    pub genes: Vec<usize>,
    /// The input `.h5ad`, still open, for the writer to start from.
    pub file: Option<Hdf5File>,
    /// The names of the kept cells (barcodes, `obs` names; row numbers for a `.npy`).
    pub obs_names: Vec<String>,
    /// The names of the genes (gene names, `var` names; column numbers for a `.npy`).
    pub var_names: Vec<String>,
}

impl CountData {
    /// The same cells with only the genes `genes` (columns of this data, in the order given),
    /// recorded in the provenance as the `top_genes` kept.
    pub fn select_genes(&self, genes: &[usize]) -> Self {
        let counts = if genes.len() == self.counts.genes() {
            self.counts.clone()
        } else {
            self.counts.select_genes(genes)
        };
        let mut source = self.source.clone();
        source.genes = counts.genes();
        source.top_genes = Some(genes.len());
        Self {
            counts,
            labels: self.labels.clone(),
            obs: self.obs.clone(),
            source,
            cells: self.cells.clone(),
            genes: genes.iter().map(|&g| self.genes[g]).collect(),
            file: self.file.clone(),
            obs_names: self.obs_names.clone(),
            var_names: genes.iter().map(|&g| self.var_names[g].clone()).collect(),
        }
    }

    /// The per-cell fields of every kept cell, for the minibatches: the labels
    /// ([`scae_io::keys::LABELS`]) and each `obs` column read, by its name.
    pub fn fields(&self) -> Result<Fields> {
        fields(self.labels.as_ref(), &self.obs, self.counts.cells())
    }

    /// The input `.h5ad` file these cells and genes came from, for the writer to start from;
    /// `None` for any other format.
    pub fn ann_source(&self) -> Option<scae_io::AnnSource<'_>> {
        self.file.as_ref().map(|file| scae_io::AnnSource {
            file,
            cells: &self.cells,
            genes: &self.genes,
        })
    }

    /// Raw counts: a `.npy` file, a folder holding `counts_raw.npy`, a 10x folder or `.h5` file,
    /// or an `.h5ad` file (the matrix of `options.layer`, labels from `options.labels_key`);
    /// every gene, unnormalised. Every value must be a non-negative integer. Cells without any
    /// count are dropped with a warning (their labels too); a matrix without any count is an
    /// error.
    pub fn load(data: &Path, labels: Option<&Path>, options: &H5adOptions) -> Result<Self> {
        Self::load_opened(data, open_hdf5(data)?, labels, options)
    }

    /// [`CountData::load`] of `data`, whose HDF5 file (if it is one) `opened` already holds
    /// ([`open_hdf5`]); an `.h5ad` stays open in [`CountData::file`] for the writer.
    pub fn load_opened(
        data: &Path,
        opened: Option<(Hdf5Kind, Hdf5File)>,
        labels: Option<&Path>,
        options: &H5adOptions,
    ) -> Result<Self> {
        if data.is_dir() && !data.join("counts_raw.npy").exists() {
            refuse_h5ad_options(data, options, "a 10x Genomics folder")?;
            let files = find_10x(data, "counts_raw.npy")?;
            let matrix = scae_io::read_10x(&files.dir)?;
            let counts = CountMatrix::new(matrix.counts, &files.matrix)?;
            log_counts(&counts, &files.dir);
            let labels_path = labels_for_10x(labels, &files, data);
            let names = (matrix.barcodes, matrix.gene_names);
            return Self::finish(
                counts,
                &files.matrix,
                labels_path,
                None,
                names,
                "10x-counts",
            );
        }
        match opened {
            Some((Hdf5Kind::TenxH5, file)) => {
                refuse_h5ad_options(data, options, "a Cell Ranger .h5 file")?;
                let matrix = scae_io::read_10x_h5_file(&file)?;
                let counts = CountMatrix::new(matrix.counts, data)?;
                log_counts(&counts, data);
                let labels_path = labels.map(Path::to_path_buf).or(matrix.files.labels);
                let names = (matrix.barcodes, matrix.gene_names);
                return Self::finish(counts, data, labels_path, None, names, "10x-h5-counts");
            }
            Some((Hdf5Kind::H5ad, file)) => {
                let m = scae_io::read_h5ad_file(&file, options)?.into_counts(data)?;
                log_counts(&m.counts, data);
                let labels_path = labels.map(Path::to_path_buf).or_else(|| {
                    m.labels
                        .is_none()
                        .then(|| data.with_file_name("labels.txt"))
                        .filter(|p| p.exists())
                });
                let names = (m.obs_names, m.var_names);
                let mut out =
                    Self::finish(m.counts, data, labels_path, m.labels, names, "h5ad-counts")?;
                out.source.layer = options.layer.clone();
                out.source.labels_key = options.labels_key.clone();
                out.source.obs_keys = options.obs_keys.clone();
                out.obs = (m.obs.into_iter())
                    .map(|(key, column)| (key, column.subset(&out.cells)))
                    .collect();
                if !out.obs.is_empty() {
                    // The fields read are part of what a model sees.
                    let codes = (out.labels.iter().map(|l| &l.codes))
                        .chain(out.obs.iter().map(|(_, column)| &column.codes))
                        .flat_map(|codes| codes.iter().map(|&c| label_word(c)));
                    out.source.fingerprint = out.counts.fingerprint(codes);
                }
                out.file = Some(file);
                return Ok(out);
            }
            None => {}
        }
        refuse_h5ad_options(data, options, "a .npy matrix")?;
        let data = if data.is_dir() {
            data.join("counts_raw.npy")
        } else {
            data.to_path_buf()
        };
        let counts = CountMatrix::from_dense(scae_io::read_counts(&data)?.view(), &data)?;
        let labels_path = labels_beside_file(labels, &data);
        let names = numbered(counts.cells(), counts.genes());
        Self::finish(counts, &data, labels_path, None, names, "npy-counts")
    }

    /// Counts made in memory (a simulation), described by `name` in the provenance.
    pub fn from_counts(counts: CountMatrix, name: &str, labels: Option<Labels>) -> Result<Self> {
        let names = numbered(counts.cells(), counts.genes());
        Self::with_source(
            counts,
            Path::new(name),
            None,
            labels,
            names,
            "simulated-counts",
        )
    }

    fn finish(
        counts: CountMatrix,
        data: &Path,
        labels_path: Option<PathBuf>,
        file_labels: Option<Labels>,
        names: (Vec<String>, Vec<String>),
        format: &str,
    ) -> Result<Self> {
        let labels = match labels_path.as_deref() {
            Some(path) => Some(scae_io::read_labels(path, Some(counts.cells()))?),
            None => file_labels,
        };
        Self::with_source(
            counts,
            &absolute(data),
            labels_path.as_deref(),
            labels,
            names,
            format,
        )
    }

    fn with_source(
        counts: CountMatrix,
        data: &Path,
        labels_path: Option<&Path>,
        labels: Option<Labels>,
        (obs_names, var_names): (Vec<String>, Vec<String>),
        format: &str,
    ) -> Result<Self> {
        let (counts, cells) = scae_io::drop_empty_cells(counts, data)?;
        let labels = labels.map(|l| l.subset(&cells));
        let obs_names = cells.iter().map(|&c| obs_names[c].clone()).collect();
        let codes = labels
            .iter()
            .flat_map(|l| l.codes.iter().map(|&c| label_word(c)));
        let source = DataSource {
            data: data.to_path_buf(),
            labels: labels_path.map(absolute),
            cells: counts.cells(),
            genes: counts.genes(),
            format: format.into(),
            top_genes: None,
            layer: None,
            labels_key: None,
            obs_keys: Vec::new(),
            unlabelled_cells: unlabelled(labels.as_ref(), data),
            fingerprint: counts.fingerprint(codes),
        };
        Ok(Self {
            genes: (0..counts.genes()).collect(),
            file: None,
            counts,
            labels,
            obs: Vec::new(),
            source,
            cells,
            obs_names,
            var_names,
        })
    }
}

/// The labels and `obs` columns of `cells` cells as minibatch fields.
fn fields(labels: Option<&Labels>, obs: &[(String, Labels)], cells: usize) -> Result<Fields> {
    let mut fields = Fields::default();
    for (key, column) in labels
        .map(|l| (keys::LABELS, l))
        .into_iter()
        .chain(obs.iter().map(|(key, column)| (key.as_str(), column)))
    {
        fields.insert(key, &column.field_codes(), cells)?;
    }
    Ok(fields)
}

fn log_counts(counts: &CountMatrix, from: &Path) {
    tracing::info!(
        cells = counts.cells(),
        genes = counts.genes(),
        zeros = format!("{:.1} %", 100.0 * counts.zero_fraction()),
        "read raw counts from {}",
        from.display()
    );
}

/// `0, 1, ...` as names of `cells` rows and `genes` columns.
fn numbered(cells: usize, genes: usize) -> (Vec<String>, Vec<String>) {
    (
        (0..cells).map(|i| i.to_string()).collect(),
        (0..genes).map(|j| j.to_string()).collect(),
    )
}

pub use scae_io::Hdf5Kind;

/// `Some(kind)` when `data` is an HDF5 file (by its signature, whatever its name), `None` for
/// anything else; an HDF5 file that is neither kind is an error. Opens the file to look.
pub fn hdf5_kind(data: &Path) -> Result<Option<Hdf5Kind>> {
    Ok(open_hdf5(data)?.map(|(kind, _)| kind))
}

/// [`hdf5_kind`], with the open file for the readers (so a command opens its input once).
pub fn open_hdf5(data: &Path) -> Result<Option<(Hdf5Kind, Hdf5File)>> {
    if !data.is_file() {
        return Ok(None);
    }
    let is_h5_name = data
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("h5ad") || e.eq_ignore_ascii_case("h5"));
    let file = match Hdf5File::open(data) {
        Ok(Some(file)) => file,
        // Not HDF5 (or refused by the library): with an HDF5 name, the reader's own one-line
        // error (not HDF5, no obs, ...); otherwise another format's reader takes it.
        Ok(None) | Err(_) if is_h5_name => {
            scae_io::H5adRows::open(data, None)?;
            bail!("{}: not an HDF5 file", data.display());
        }
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match file.kind() {
        Some(kind) => Ok(Some((kind, file))),
        None if is_h5_name => {
            scae_io::H5adRows::from_file(&file, None)?;
            bail!(
                "{}: neither an AnnData file nor a Cell Ranger matrix",
                data.display()
            );
        }
        None => Ok(None),
    }
}

/// An `.h5ad` count matrix read from the file as training goes (`--backed`): the non-empty
/// cells (found from the row pointers alone), their names and labels; no counts in memory.
#[derive(Debug)]
pub struct BackedCounts {
    pub file: Arc<H5adRows>,
    /// The file row of each kept cell, ascending.
    pub cells: Vec<usize>,
    pub labels: Option<Labels>,
    /// The `obs` columns asked for ([`H5adOptions::obs_keys`]) of the kept cells, by name.
    pub obs: Vec<(String, Labels)>,
    pub source: DataSource,
    pub var_names: Vec<String>,
}

impl BackedCounts {
    /// The names of the kept cells, read from the file when asked for (they are not held while
    /// training: a name can take more memory than a cell's share of everything else).
    pub fn obs_names(&self) -> Result<Vec<String>> {
        let all = self.file.obs_names()?;
        Ok(self.cells.iter().map(|&c| all[c].clone()).collect())
    }

    /// The per-cell fields of every kept cell, as [`CountData::fields`].
    pub fn fields(&self) -> Result<Fields> {
        fields(self.labels.as_ref(), &self.obs, self.cells.len())
    }

    /// Opens `data` (an `.h5ad` file with a CSR or dense matrix) without reading its counts.
    ///
    /// # Errors
    /// When the file is not AnnData, its matrix is CSC, or its names or labels do not fit.
    pub fn open(data: &Path, labels: Option<&Path>, options: &H5adOptions) -> Result<Self> {
        Self::open_opened(data, open_hdf5(data)?, labels, options)
    }

    /// [`BackedCounts::open`] of `data`, whose HDF5 file (if it is one) `opened` already holds.
    ///
    /// # Errors
    /// As [`BackedCounts::open`].
    pub fn open_opened(
        data: &Path,
        opened: Option<(Hdf5Kind, Hdf5File)>,
        labels: Option<&Path>,
        options: &H5adOptions,
    ) -> Result<Self> {
        let Some((Hdf5Kind::H5ad, file)) = opened else {
            bail!("{}: --backed reads .h5ad files only", data.display());
        };
        let file = H5adRows::from_file(&file, options.layer.as_deref())?;
        if !file.row_readable() {
            file.read_rows(0..0)?;
        }
        let (n, genes) = file.shape();
        let nnz = file.row_nnz()?;
        let cells: Vec<usize> = match &nnz {
            Some(nnz) => (0..n).filter(|&r| nnz[r] > 0).collect(),
            None => (0..n).collect(),
        };
        if cells.is_empty() {
            return Err(scae_io::Error::NoCounts {
                path: data.into(),
                cells: n,
                genes,
            }
            .into());
        }
        if cells.len() < n {
            tracing::warn!(
                "{}: dropped {} of {n} cells without any count",
                data.display(),
                n - cells.len()
            );
        }
        let labels_path = labels.map(absolute);
        let labels = match (labels, options.labels_key.as_deref()) {
            (Some(path), _) => Some(scae_io::read_labels(path, Some(n))?),
            (None, Some(key)) => Some(file.labels(key)?),
            (None, None) => None,
        }
        .map(|l| l.subset(&cells));
        let obs: Vec<(String, Labels)> = (file.obs_columns(&options.obs_keys)?.into_iter())
            .map(|(key, column)| (key, column.subset(&cells)))
            .collect();
        // Checked now (one per cell), read again when written.
        file.obs_names()?;
        let var_names = file.var_names()?;
        // The structure and the file's size stand for the content, which is not read up front.
        let mut hash = scae_io::Fnv::default();
        for v in [
            n as u64,
            genes as u64,
            std::fs::metadata(data).map(|m| m.len()).unwrap_or(0),
        ] {
            hash.eat(&v.to_le_bytes());
        }
        for r in nnz.iter().flatten() {
            hash.eat(&(*r as u64).to_le_bytes());
        }
        for code in labels.iter().flat_map(|l| l.codes.iter()) {
            hash.eat(&label_word(*code).to_le_bytes());
        }
        for code in obs.iter().flat_map(|(_, column)| column.codes.iter()) {
            hash.eat(&label_word(*code).to_le_bytes());
        }
        let source = DataSource {
            data: absolute(data),
            labels: labels_path,
            cells: cells.len(),
            genes,
            format: "h5ad-backed".into(),
            top_genes: None,
            layer: options.layer.clone(),
            labels_key: options.labels_key.clone(),
            obs_keys: options.obs_keys.clone(),
            unlabelled_cells: unlabelled(labels.as_ref(), data),
            fingerprint: hash.hex(),
        };
        Ok(Self {
            file: Arc::new(file),
            cells,
            labels,
            obs,
            source,
            var_names,
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
