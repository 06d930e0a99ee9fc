//! The one seam from a file to the data a model trains on: [`open`] takes a path and
//! [`OpenOptions`] (the matrix, the labels, the `obs` columns, which genes, in memory or read in
//! blocks) and returns one [`CountData`], shaped like AnnData: the counts (in memory or backed,
//! behind [`CountData::rows`]), the labels and `obs` columns as per-cell [`Fields`], `obs` and
//! `var` names, and where it all came from ([`DataSource`]).
//!
//! Every reader sits behind it: a `.npy` matrix (or a folder holding one), a 10x Genomics matrix
//! folder, a Cell Ranger `.h5` (v2 and v3), an AnnData `.h5ad` (current, 0.7 and pre-0.7
//! layouts). The rules that used to be repeated per command live here once:
//!
//! - the format, from the path and the file's signature (not its name);
//! - the labels: [`OpenOptions::labels`] (a file), else the `.h5ad` column
//!   [`H5adOptions::labels_key`], else a `labels.txt` beside the data;
//! - cells without any count are dropped (as scanpy's `filter_cells(min_counts=1)`), in memory
//!   and backed alike;
//! - the genes ([`GeneChoice`]): every one, the most variable, or those a saved model reads;
//! - in memory or backed ([`Reading`]): asked for, or chosen by a memory budget.
//!
//! Options that do not apply to the file (`--layer` for a 10x folder, the most variable genes of
//! a file read in blocks) are refused in one line, never dropped.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::{
    BackedRows, BatchSource, CountMatrix, CountRows, Error, Fields, Fnv, H5adOptions, H5adRows,
    Hdf5File, Hdf5Kind, Labels, ObsColumn, Result, keys,
};

/// Which values [`open`] reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Values {
    /// Raw counts: every value a non-negative integer; a folder of ours holds `counts_raw.npy`.
    #[default]
    Counts,
    /// The matrix as stored: counts where the file holds counts (a 10x matrix, an integer
    /// `.h5ad` matrix), else values taken as already normalised ([`Counts::Values`]); a folder
    /// of ours holds `counts.npy`. Genes are not chosen and no cell is dropped: the caller's
    /// preprocessing normalises over every gene first.
    AsStored,
}

impl Values {
    /// The `.npy` file a folder of ours holds.
    fn npy(self) -> &'static str {
        match self {
            Self::Counts => "counts_raw.npy",
            Self::AsStored => "counts.npy",
        }
    }
}

/// In memory or read from the file in blocks as training goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reading {
    #[default]
    Memory,
    /// Read in blocks (`.h5ad` files with a CSR or dense matrix only).
    Backed,
    /// In memory when the counts fit `budget` bytes (about 24 bytes a stored value), else
    /// backed where the file allows it.
    Auto { budget: u64 },
}

/// The genes [`open`] keeps (of raw counts; [`Values::AsStored`] keeps every one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GeneChoice {
    #[default]
    All,
    /// The `n` genes whose log-normalised values vary most across cells (every gene when the
    /// data have no more).
    Top(usize),
    /// Those a saved model reads, by name and in its order.
    Named(Vec<String>),
}

/// What [`open`] reads from a file, and how.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The `.h5ad` matrix (`--layer`), label column (`--labels-key`) and `obs` columns read as
    /// per-cell fields; refused for any other format.
    pub h5ad: H5adOptions,
    /// A labels file, one label per line of the input's cells (`--labels`).
    pub labels: Option<PathBuf>,
    pub values: Values,
    pub reading: Reading,
    pub genes: GeneChoice,
}

/// Where a data set came from, and a fingerprint of its content (saved with results).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSource {
    pub data: PathBuf,
    pub labels: Option<PathBuf>,
    pub cells: usize,
    pub genes: usize,
    /// `npy`, `10x`, `10x-h5`, `h5ad` (`-counts` when read as raw counts, `-backed` when read
    /// from the file as training goes).
    pub format: String,
    /// The number of genes kept when they were chosen (the most variable, or a model's).
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

/// The matrix of a [`CountData`].
#[derive(Debug, Clone)]
pub enum Counts {
    /// Raw counts in memory, sparse.
    Memory(CountMatrix),
    /// Raw counts read from an `.h5ad` file a block at a time; the kept cells are
    /// [`CountData::cells`], every gene is kept.
    Backed(Arc<H5adRows>),
    /// Values that are not counts (already normalised), dense: only with [`Values::AsStored`].
    Values(Array2<f32>),
}

impl Counts {
    /// The counts when they are in memory.
    pub fn memory(&self) -> Option<&CountMatrix> {
        match self {
            Self::Memory(counts) => Some(counts),
            _ => None,
        }
    }
}

/// A data set as [`open`] returns it: the matrix, per-cell labels and fields of the kept cells,
/// their names, and where it came from.
#[derive(Debug, Clone)]
pub struct CountData {
    pub counts: Counts,
    pub labels: Option<Labels>,
    /// The `obs` columns asked for ([`H5adOptions::obs_keys`]) of the kept cells, by name, as
    /// stored (categorical, numbers, strings).
    pub obs: Vec<(String, ObsColumn)>,
    /// The labels ([`keys::LABELS`]) and each `obs` column as minibatch fields, one per kept cell.
    pub fields: Fields,
    pub source: DataSource,
    /// The input row of each kept cell (cells without any count are dropped), ascending.
    pub cells: Vec<usize>,
    /// The input column of each kept gene, in the order kept.
    pub genes: Vec<usize>,
    /// The input `.h5ad`, still open, for the writer to start from.
    pub file: Option<Hdf5File>,
    /// The names of the kept cells; `None` when backed (read from the file when asked for: a
    /// name can take more memory than a cell's share of everything else).
    obs_names: Option<Vec<String>>,
    /// The names of the kept genes (gene names, `var` names; column numbers for a `.npy`).
    pub var_names: Vec<String>,
}

/// Reads `path` as `options` ask: see the [module](self) for the formats and rules.
///
/// # Errors
/// One line naming the file and the problem: a format reader's error, an option that does not
/// apply to the file, labels that do not fit, no counts at all, genes a model reads that the data
/// lack.
pub fn open(path: &Path, options: &OpenOptions) -> Result<CountData> {
    if options.genes == GeneChoice::Top(0) {
        return Err(refused(path, "--top-genes must be at least 1"));
    }
    let npy = options.values.npy();
    let raw = if path.is_dir() && !path.join(npy).exists() {
        refuse_h5ad_options(path, options, "a 10x Genomics folder")?;
        let files = crate::find_10x(path).map_err(|e| match e {
            Error::TenxMissing { .. } => refused(
                path,
                &format!("neither {npy} nor a 10x Genomics matrix folder"),
            ),
            e => e,
        })?;
        let m = crate::read_10x(&files.dir)?;
        let labels = options.labels.clone().or_else(|| {
            (files.labels.clone()).or_else(|| Some(path.join("labels.txt")).filter(|p| p.exists()))
        });
        Raw {
            counts: Counts::Memory(CountMatrix::new(m.counts, &files.matrix)?),
            data: files.matrix.clone(),
            labels_path: labels,
            file_labels: None,
            obs: Vec::new(),
            names: (m.barcodes, m.gene_names),
            format: "10x",
            file: None,
        }
    } else if let Some((kind, file)) = open_hdf5(path)? {
        match kind {
            Hdf5Kind::TenxH5 => {
                refuse_h5ad_options(path, options, "a Cell Ranger .h5 file")?;
                let m = crate::read_10x_h5_file(&file)?;
                Raw {
                    counts: Counts::Memory(CountMatrix::new(m.counts, path)?),
                    data: path.to_path_buf(),
                    labels_path: options.labels.clone().or(m.files.labels),
                    file_labels: None,
                    obs: Vec::new(),
                    names: (m.barcodes, m.gene_names),
                    format: "10x-h5",
                    file: None,
                }
            }
            Hdf5Kind::H5ad => return open_h5ad(path, file, options),
        }
    } else {
        refuse_h5ad_options(path, options, "a .npy matrix")?;
        let data = if path.is_dir() {
            path.join(npy)
        } else {
            path.to_path_buf()
        };
        let counts = match options.values {
            Values::Counts => Counts::Memory(CountMatrix::from_dense(
                crate::read_counts(&data)?.view(),
                &data,
            )?),
            Values::AsStored => Counts::Values(crate::read_matrix(&data)?),
        };
        let (cells, genes) = shape(&counts);
        let labels = options.labels.clone().or_else(|| {
            (data.parent())
                .map(|dir| dir.join("labels.txt"))
                .filter(|p| p.exists())
        });
        Raw {
            counts,
            labels_path: labels,
            data,
            file_labels: None,
            obs: Vec::new(),
            names: numbered(cells, genes),
            format: "npy",
            file: None,
        }
    };
    raw.finish(options)
}

/// An `.h5ad` file, in memory or backed.
fn open_h5ad(path: &Path, file: Hdf5File, options: &OpenOptions) -> Result<CountData> {
    let rows = H5adRows::from_file(&file, options.h5ad.layer.as_deref())?;
    let backed = match options.reading {
        Reading::Memory => false,
        Reading::Backed => true,
        Reading::Auto { budget } => too_large(&rows, budget)?,
    };
    if backed {
        return open_backed(path, rows, options);
    }
    let m = crate::h5ad::read_rows_of(&rows, &options.h5ad)?;
    let integer = m.x.data().iter().all(|v| *v >= 0.0 && v.fract() == 0.0);
    let counts = if options.values == Values::AsStored && !integer {
        tracing::info!(
            "{}: values are not counts; used as they are",
            path.display()
        );
        Counts::Values(crate::to_dense(&m.x))
    } else {
        let source = PathBuf::from(format!("{}: {}", path.display(), m.element));
        Counts::Memory(CountMatrix::new(m.x, &source)?)
    };
    let labels_path = options.labels.clone().or_else(|| {
        (m.labels.is_none())
            .then(|| path.with_file_name("labels.txt"))
            .filter(|p| p.exists())
    });
    Raw {
        counts,
        data: path.to_path_buf(),
        labels_path,
        file_labels: m.labels,
        obs: m.obs,
        names: (m.obs_names, m.var_names),
        format: "h5ad",
        file: Some(file),
    }
    .finish(options)
}

/// Whether the counts of `rows` would not fit `budget` bytes in memory, and can be read in blocks.
fn too_large(rows: &H5adRows, budget: u64) -> Result<bool> {
    let (n, m) = rows.shape();
    let stored = match rows.row_nnz()? {
        Some(nnz) => nnz.iter().map(|&n| n as u64).sum(),
        None => (n as u64) * (m as u64),
    };
    let need = stored * 24;
    if need > budget && rows.row_readable() {
        tracing::info!(
            need_mib = need >> 20,
            budget_mib = budget >> 20,
            "the counts would not fit in the memory budget: reading them backed from {}",
            rows.path().display()
        );
        return Ok(true);
    }
    Ok(false)
}

/// An `.h5ad` count matrix read from the file as training goes: the non-empty cells (found from
/// the row pointers alone), their labels and fields; no counts in memory.
fn open_backed(path: &Path, rows: H5adRows, options: &OpenOptions) -> Result<CountData> {
    if options.values == Values::AsStored {
        return Err(refused(path, "values as stored are read in memory only"));
    }
    if !rows.row_readable() {
        rows.read_rows(0..0)?;
    }
    let (n, genes) = rows.shape();
    let var_names = rows.var_names()?;
    let nnz = rows.row_nnz()?;
    let cells: Vec<usize> = match &nnz {
        Some(nnz) => (0..n).filter(|&r| nnz[r] > 0).collect(),
        None => (0..n).collect(),
    };
    if cells.is_empty() {
        return Err(Error::NoCounts {
            path: path.into(),
            cells: n,
            genes,
        });
    }
    if cells.len() < n {
        tracing::warn!(
            "{}: dropped {} of {n} cells without any count",
            path.display(),
            n - cells.len()
        );
    }
    let labels_path = options.labels.clone().or_else(|| {
        (options.h5ad.labels_key.is_none())
            .then(|| path.with_file_name("labels.txt"))
            .filter(|p| p.exists())
    });
    let labels = match (&labels_path, options.h5ad.labels_key.as_deref()) {
        (Some(file), _) => Some(crate::read_labels(file, Some(n))?),
        (None, Some(key)) => Some(rows.labels(key)?),
        (None, None) => None,
    }
    .map(|l| l.subset(&cells));
    let obs: Vec<(String, ObsColumn)> = (rows.obs_columns(&options.h5ad.obs_keys)?.into_iter())
        .map(|(key, column)| (key, column.subset(&cells)))
        .collect();
    // Checked now (one per cell), read again when written.
    rows.obs_names()?;
    let kept = match &options.genes {
        GeneChoice::All => None,
        GeneChoice::Top(top) if *top >= genes => None,
        GeneChoice::Top(top) => Some(variable_genes_backed(&rows, &cells, *top)?),
        GeneChoice::Named(model) => {
            let columns = gene_columns(model, &var_names, path)?;
            if columns.windows(2).any(|w| w[0] >= w[1]) {
                return Err(refused(
                    path,
                    "read backed, the model's genes must come in the file's order; read it in \
                     memory to reorder them",
                ));
            }
            Some(columns)
        }
    };
    // The structure and the file's size stand for the content, which is not read up front.
    let mut hash = Fnv::default();
    for v in [
        n as u64,
        genes as u64,
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    ] {
        hash.eat(&v.to_le_bytes());
    }
    for r in nnz.iter().flatten() {
        hash.eat(&(*r as u64).to_le_bytes());
    }
    for code in codes(labels.as_ref(), &obs) {
        hash.eat(&code.to_le_bytes());
    }
    for g in kept.iter().flatten() {
        hash.eat(&(*g as u64).to_le_bytes());
    }
    let fields = fields(labels.as_ref(), &obs, cells.len())?;
    let genes_kept = kept.unwrap_or_else(|| (0..genes).collect());
    let var_names = genes_kept.iter().map(|&g| var_names[g].clone()).collect();
    let source = DataSource {
        data: absolute(path),
        labels: labels_path.as_deref().map(absolute),
        cells: cells.len(),
        genes: genes_kept.len(),
        format: "h5ad-backed".into(),
        top_genes: (genes_kept.len() < genes || options.genes != GeneChoice::All)
            .then_some(genes_kept.len()),
        layer: options.h5ad.layer.clone(),
        labels_key: options.h5ad.labels_key.clone(),
        obs_keys: options.h5ad.obs_keys.clone(),
        unlabelled_cells: unlabelled(labels.as_ref(), path),
        fingerprint: hash.hex(),
    };
    Ok(CountData {
        file: Some(rows.file()),
        counts: Counts::Backed(Arc::new(rows)),
        labels,
        obs,
        fields,
        source,
        cells,
        genes: genes_kept,
        obs_names: None,
        var_names,
    })
}

/// The `n` most variable genes of the kept `cells` of a file read in blocks: one pass over its
/// rows, the same numbers as in memory ([`crate::preprocess::GeneMoments`]).
fn variable_genes_backed(rows: &H5adRows, cells: &[usize], n: usize) -> Result<Vec<usize>> {
    let clock = std::time::Instant::now();
    let (all, genes) = rows.shape();
    tracing::info!(
        cells = cells.len(),
        genes,
        "choosing the {n} most variable genes: one pass over {}",
        rows.path().display()
    );
    let mut moments = crate::preprocess::GeneMoments::new(genes);
    // The rows not kept are those without any count, which the moments leave out.
    for start in (0..all).step_by(crate::Blocks::CELLS) {
        let end = (start + crate::Blocks::CELLS).min(all);
        let block = rows.read_rows(start..end)?;
        crate::backed::check_counts(rows, &block, start)?;
        moments.add(&block);
    }
    let top = moments.top(n);
    tracing::info!(
        genes = top.len(),
        of = genes,
        seconds = format!("{:.1}", clock.elapsed().as_secs_f64()),
        "kept the most variable genes"
    );
    Ok(top)
}

/// A matrix as read, before the rules every format shares.
struct Raw {
    counts: Counts,
    /// The file the matrix came from (`matrix.mtx.gz` of a 10x folder).
    data: PathBuf,
    labels_path: Option<PathBuf>,
    /// Labels read from the file itself (an `.h5ad` column).
    file_labels: Option<Labels>,
    obs: Vec<(String, ObsColumn)>,
    names: (Vec<String>, Vec<String>),
    /// The format, without the `-counts` that raw counts add.
    format: &'static str,
    file: Option<Hdf5File>,
}

impl Raw {
    /// The labels, the empty cells dropped, the genes chosen, the fields and the provenance.
    fn finish(self, options: &OpenOptions) -> Result<CountData> {
        let (n, _) = shape(&self.counts);
        let labels = match self.labels_path.as_deref() {
            Some(path) => Some(crate::read_labels(path, Some(n))?),
            None => self.file_labels,
        };
        let (obs_names, var_names) = self.names;
        let as_stored = options.values == Values::AsStored;
        let (counts, cells) = match self.counts {
            Counts::Memory(counts) if !as_stored => {
                let (counts, cells) = crate::drop_empty_cells(counts, &self.data)?;
                (Counts::Memory(counts), cells)
            }
            other => (other, (0..n).collect()),
        };
        let labels = labels.map(|l| l.subset(&cells));
        let obs: Vec<(String, ObsColumn)> = (self.obs.into_iter())
            .map(|(key, column)| (key, column.subset(&cells)))
            .collect();
        let obs_names = cells.iter().map(|&c| obs_names[c].clone()).collect();
        let format = if as_stored {
            self.format.to_owned()
        } else {
            format!("{}-counts", self.format)
        };
        if let Counts::Memory(counts) = &counts {
            log_counts(counts, &self.data);
        }
        let (_, genes) = shape(&counts);
        let data = absolute(&self.data);
        let fingerprint = match &counts {
            Counts::Memory(c) => c.fingerprint(codes(labels.as_ref(), &obs)),
            // Values are fingerprinted by the caller, after its preprocessing.
            _ => String::new(),
        };
        let fields = fields(labels.as_ref(), &obs, cells.len())?;
        let data = CountData {
            source: DataSource {
                labels: self.labels_path.as_deref().map(absolute),
                cells: cells.len(),
                genes,
                format,
                top_genes: None,
                layer: options.h5ad.layer.clone(),
                labels_key: options.h5ad.labels_key.clone(),
                obs_keys: options.h5ad.obs_keys.clone(),
                unlabelled_cells: unlabelled(labels.as_ref(), &data),
                fingerprint,
                data,
            },
            counts,
            labels,
            obs,
            fields,
            cells,
            genes: (0..genes).collect(),
            file: self.file,
            obs_names: Some(obs_names),
            var_names,
        };
        if as_stored {
            if options.genes != GeneChoice::All {
                return Err(refused(
                    &data.source.data,
                    "values as stored keep every gene: the caller chooses them after normalising",
                ));
            }
            return Ok(data);
        }
        data.keep_genes(&options.genes)
    }
}

impl CountData {
    /// Counts made in memory (a simulation), described by `name` in the provenance; empty cells
    /// are dropped as [`open`] drops them.
    ///
    /// # Errors
    /// [`Error::NoCounts`] when no cell holds a count; labels that are not one per cell.
    pub fn from_counts(counts: CountMatrix, name: &str, labels: Option<Labels>) -> Result<Self> {
        let (cells, genes) = (counts.cells(), counts.genes());
        if let Some(l) = labels.as_ref().filter(|l| l.len() != cells) {
            return Err(refused(
                Path::new(name),
                &format!("{} labels for {cells} cells", l.len()),
            ));
        }
        Raw {
            counts: Counts::Memory(counts),
            data: PathBuf::from(name),
            labels_path: None,
            file_labels: labels,
            obs: Vec::new(),
            names: numbered(cells, genes),
            format: "simulated",
            file: None,
        }
        .finish(&OpenOptions::default())
        .map(|mut data| {
            // A name, not a path: no canonical form.
            data.source.data = PathBuf::from(name);
            data
        })
    }

    /// Number of kept cells.
    pub fn n_cells(&self) -> usize {
        self.cells.len()
    }

    /// Number of kept genes.
    pub fn n_genes(&self) -> usize {
        self.var_names.len()
    }

    /// The counts in memory.
    ///
    /// # Errors
    /// One line when they are read backed (or are not counts): this use needs them in memory.
    pub fn matrix(&self) -> Result<&CountMatrix> {
        self.counts.memory().ok_or_else(|| {
            refused(
                &self.source.data,
                "the counts are read backed (or are not counts), and this needs them in memory",
            )
        })
    }

    /// The names of the kept cells (barcodes, `obs` names; row numbers for a `.npy`).
    ///
    /// # Errors
    /// When backed, a read error of the file's `obs` names.
    pub fn obs_names(&self) -> Result<Cow<'_, [String]>> {
        match (&self.obs_names, &self.counts) {
            (Some(names), _) => Ok(Cow::Borrowed(names)),
            (None, Counts::Backed(file)) => {
                let all = file.obs_names()?;
                Ok(Cow::Owned(
                    self.cells.iter().map(|&c| all[c].clone()).collect(),
                ))
            }
            (None, _) => Ok(Cow::Owned(Vec::new())),
        }
    }

    /// The kept cells at `positions` (a split of them), or all of them, as a minibatch source
    /// whose batches carry [`CountData::fields`]; in memory or backed alike.
    ///
    /// # Errors
    /// When the values are not counts; a position out of range.
    pub fn rows<'a>(&'a self, positions: Option<&'a [usize]>) -> Result<Box<dyn BatchSource + 'a>> {
        let fields = match positions {
            Some(p) => Cow::Owned(self.fields.subset(p)),
            None => Cow::Borrowed(&self.fields),
        };
        Ok(match (&self.counts, positions) {
            (Counts::Memory(counts), Some(p)) => {
                Box::new(CountRows::subset(counts, p)?.with_fields(&fields)?)
            }
            (Counts::Memory(counts), None) => {
                Box::new(CountRows::all(counts).with_fields(&fields)?)
            }
            (Counts::Backed(file), p) => {
                let rows = p.map_or_else(
                    || self.cells.clone(),
                    |p| p.iter().map(|&i| self.cells[i]).collect(),
                );
                let source = BackedRows::new(Arc::clone(file), rows)?.with_fields(&fields)?;
                if self.genes.len() == file.shape().1 {
                    Box::new(source)
                } else {
                    Box::new(source.with_genes(&self.genes)?)
                }
            }
            (Counts::Values(_), _) => {
                return Err(refused(&self.source.data, "the values are not counts"));
            }
        })
    }

    /// The `obs` column `key` (asked for in [`H5adOptions::obs_keys`]) as a covariate a model
    /// conditions on: its categories, and its field recoded into them. With `known` (a saved
    /// model's categories) the codes are those of `known`, so a model trained on other cells
    /// reads the same batch as the same row; else the column's own categories.
    ///
    /// # Errors
    /// One line naming the file: no such column read; cells without a value (a covariate needs
    /// one for every cell); a category `known` does not hold.
    pub fn covariate(&mut self, key: &str, known: Option<&[String]>) -> Result<Vec<String>> {
        let path = self.source.data.clone();
        let Some((_, column)) = self.obs.iter().find(|(k, _)| k == key) else {
            return Err(refused(
                &path,
                &format!("obs column {key} was not read (it is read for --batch-key)"),
            ));
        };
        let labels = column.categories();
        let missing = labels.missing();
        if missing > 0 {
            return Err(refused(
                &path,
                &format!(
                    "obs column {key}: {missing} of {} cells have no value, and a batch key needs \
                     one for every cell",
                    labels.len()
                ),
            ));
        }
        let Some(known) = known else {
            return Ok(labels.names);
        };
        let mut to_known = Vec::with_capacity(labels.names.len());
        for name in &labels.names {
            to_known.push(known.iter().position(|k| k == name));
        }
        let mut codes = Vec::with_capacity(labels.len());
        for code in labels.codes.iter().flatten() {
            match to_known[*code] {
                Some(k) => codes.push(k as i64),
                None => {
                    let name = &labels.names[*code];
                    let cells = labels.codes.iter().filter(|c| **c == Some(*code)).count();
                    return Err(refused(
                        &path,
                        &format!(
                            "obs column {key}: {cells} cells of {key} {name}, which the model \
                             was not trained on (it knows {})",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        self.fields.insert(key, &codes, self.cells.len())?;
        Ok(known.to_vec())
    }

    /// The input `.h5ad` file these cells and genes came from, for the writer to start from;
    /// `None` for any other format.
    pub fn ann_source(&self) -> Option<crate::AnnSource<'_>> {
        self.file.as_ref().map(|file| crate::AnnSource {
            file,
            cells: &self.cells,
            genes: &self.genes,
        })
    }

    /// The same cells with only the genes `genes` (columns of this data, in the order given),
    /// recorded in the provenance as the `top_genes` kept.
    ///
    /// # Errors
    /// When the counts are not in memory.
    pub fn select_genes(&self, genes: &[usize]) -> Result<Self> {
        let counts = self.matrix()?;
        let counts =
            if genes.len() == counts.genes() && genes.iter().enumerate().all(|(i, &g)| i == g) {
                counts.clone()
            } else {
                counts.select_genes(genes)
            };
        let mut source = self.source.clone();
        source.genes = counts.genes();
        source.top_genes = Some(genes.len());
        Ok(Self {
            counts: Counts::Memory(counts),
            source,
            genes: genes.iter().map(|&g| self.genes[g]).collect(),
            var_names: genes.iter().map(|&g| self.var_names[g].clone()).collect(),
            ..self.clone()
        })
    }

    /// The genes `choice` asks for, of counts in memory.
    ///
    /// # Errors
    /// When the counts are not in memory; genes a model reads that the data lack.
    pub fn keep_genes(self, choice: &GeneChoice) -> Result<Self> {
        let genes = match choice {
            GeneChoice::All => return Ok(self),
            GeneChoice::Top(n) => {
                let counts = self.matrix()?;
                let input = counts.genes();
                let genes = if *n >= input {
                    (0..input).collect()
                } else {
                    let mut moments = crate::preprocess::GeneMoments::new(input);
                    moments.add(counts.csr());
                    moments.top(*n)
                };
                tracing::info!(
                    genes = genes.len(),
                    of = input,
                    "kept the most variable genes"
                );
                genes
            }
            GeneChoice::Named(model) => gene_columns(model, &self.var_names, &self.source.data)?,
        };
        self.select_genes(&genes)
    }
}

/// The columns of `var_names` holding each of `genes` (a model's, by name and in its order); a
/// name found twice is matched in order.
///
/// # Errors
/// One line naming `data` and how many of the genes it lacks, with the first few.
pub fn gene_columns(genes: &[String], var_names: &[String], data: &Path) -> Result<Vec<usize>> {
    if var_names == genes {
        return Ok((0..var_names.len()).collect());
    }
    let mut at: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, name) in var_names.iter().enumerate().rev() {
        at.entry(name.as_str()).or_default().push(j);
    }
    let mut missing = Vec::new();
    let mut columns = Vec::with_capacity(genes.len());
    for gene in genes {
        match at.get_mut(gene.as_str()).and_then(Vec::pop) {
            Some(j) => columns.push(j),
            None => missing.push(gene.as_str()),
        }
    }
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(3).copied().collect();
        return Err(refused(
            data,
            &format!(
                "{} of the model's {} genes are missing ({}{})",
                missing.len(),
                genes.len(),
                shown.join(", "),
                if missing.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(columns)
}

/// `Some(kind)` when `data` is an HDF5 file (by its signature, whatever its name), with the
/// file open for the readers (so a command opens its input once); `None` for anything else. An
/// HDF5 file that is neither kind, or a file with an HDF5 name that is not HDF5, is an error.
///
/// # Errors
/// The reader's one-line error for a file with an HDF5 name that it cannot read.
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
            H5adRows::open(data, None)?;
            return Err(refused(data, "not an HDF5 file"));
        }
        Ok(None) => return Ok(None),
        Err(e) => return Err(e),
    };
    match file.kind() {
        Some(kind) => Ok(Some((kind, file))),
        None if is_h5_name => {
            H5adRows::from_file(&file, None)?;
            Err(refused(
                data,
                "neither an AnnData file nor a Cell Ranger matrix",
            ))
        }
        None => Ok(None),
    }
}

/// [`open_hdf5`] without the open file.
///
/// # Errors
/// As [`open_hdf5`].
pub fn hdf5_kind(data: &Path) -> Result<Option<Hdf5Kind>> {
    Ok(open_hdf5(data)?.map(|(kind, _)| kind))
}

/// An error when an `.h5ad` option was given for `data`, which is `what` and not an AnnData
/// file: those options would have nothing to choose from.
fn refuse_h5ad_options(data: &Path, options: &OpenOptions, what: &str) -> Result<()> {
    let h5ad = &options.h5ad;
    if let Some(key) = h5ad.obs_keys.first() {
        return Err(refused(
            data,
            &format!("obs column {key}: this is {what}, not an AnnData .h5ad file"),
        ));
    }
    for (flag, value) in [("--layer", &h5ad.layer), ("--labels-key", &h5ad.labels_key)] {
        if let Some(value) = value {
            return Err(refused(
                data,
                &format!("{flag} {value}: this is {what}, not an AnnData .h5ad file"),
            ));
        }
    }
    if options.reading == Reading::Backed {
        return Err(refused(data, "--backed reads .h5ad files only"));
    }
    Ok(())
}

fn refused(path: &Path, reason: &str) -> Error {
    Error::Inconsistent {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Cells x genes of a matrix as read.
fn shape(counts: &Counts) -> (usize, usize) {
    match counts {
        Counts::Memory(c) => (c.cells(), c.genes()),
        Counts::Backed(file) => file.shape(),
        Counts::Values(x) => x.dim(),
    }
}

/// The labels and `obs` columns of `cells` cells as minibatch fields (a column's
/// [`ObsColumn::categories`]).
fn fields(labels: Option<&Labels>, obs: &[(String, ObsColumn)], cells: usize) -> Result<Fields> {
    let mut fields = Fields::default();
    if let Some(labels) = labels {
        fields.insert(keys::LABELS, &labels.field_codes(), cells)?;
    }
    for (key, column) in obs {
        fields.insert(key, &column.categories().field_codes(), cells)?;
    }
    Ok(fields)
}

/// The label and `obs` codes as the fingerprints hash them: the code, or `u64::MAX` for a cell
/// without one (so fully labelled data keep the fingerprints they had before labels could be
/// missing).
fn codes(labels: Option<&Labels>, obs: &[(String, ObsColumn)]) -> Vec<u64> {
    let word = |l: &Labels| -> Vec<u64> {
        (l.codes.iter())
            .map(|c| c.map_or(u64::MAX, |c| c as u64))
            .collect()
    };
    let mut out: Vec<u64> = labels.map(word).unwrap_or_default();
    for (_, column) in obs {
        out.extend(word(&column.categories()));
    }
    out
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

/// The canonical path (no `..`, links resolved), else the absolute one.
pub fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn open_with(path: &Path, options: OpenOptions) -> Result<CountData> {
        open(path, &options)
    }

    /// A folder of ours: `counts_raw.npy` (cell 1 empty) and a `labels.txt` beside it.
    fn npy_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let x = ndarray::array![[1.0f32, 0.0, 3.0], [0.0, 0.0, 0.0], [0.0, 5.0, 1.0]];
        crate::write_npy(&dir.path().join("counts_raw.npy"), &x.view()).expect("writes");
        std::fs::write(dir.path().join("labels.txt"), "a\nb\nc\n").expect("writes");
        dir
    }

    #[test]
    fn empty_cells_are_dropped_with_their_labels_and_the_labels_beside_are_found() -> Result<()> {
        let dir = npy_folder();
        let data = open_with(dir.path(), OpenOptions::default())?;
        assert_eq!(data.cells, [0, 2]);
        assert_eq!(data.obs_names()?.as_ref(), ["0", "2"]);
        assert_eq!(data.var_names, ["0", "1", "2"]);
        let labels = data.labels.as_ref().expect("labels.txt beside");
        assert_eq!(labels.names, ["a", "c"]);
        assert_eq!(data.fields.get(keys::LABELS).expect("field"), &[0, 1]);
        assert_eq!(data.source.format, "npy-counts");
        assert_eq!(data.source.cells, 2);
        assert!(data.source.labels.is_some());
        assert_eq!(data.rows(None)?.cells(), 2);
        Ok(())
    }

    #[test]
    fn genes_are_found_by_name_in_any_order_and_missing_ones_counted() {
        let names = |n: &[&str]| -> Vec<String> { n.iter().map(|s| (*s).to_owned()).collect() };
        let model = names(&["b", "a", "c"]);
        let data = Path::new("x.h5ad");
        let columns = |var: &[&str]| gene_columns(&model, &names(var), data);
        assert_eq!(columns(&["b", "a", "c"]).expect("found"), [0, 1, 2]);
        assert_eq!(columns(&["a", "z", "c", "b"]).expect("found"), [3, 0, 2]);
        let err = columns(&["a", "z"]).expect_err("refused").to_string();
        assert_eq!(err, "x.h5ad: 2 of the model's 3 genes are missing (b, c)");
        // A name held twice is matched in order of appearance.
        let twice = names(&["a", "a"]);
        assert_eq!(
            gene_columns(&twice, &names(&["x", "a", "a"]), data).expect("found"),
            [1, 2]
        );
    }

    #[test]
    fn a_models_genes_are_taken_in_its_order_and_a_missing_one_is_one_line() -> Result<()> {
        let dir = npy_folder();
        let named = |genes: &[&str]| OpenOptions {
            genes: GeneChoice::Named(genes.iter().map(|g| (*g).to_owned()).collect()),
            ..OpenOptions::default()
        };
        // Every gene, in another order: the columns move with their names.
        let data = open_with(dir.path(), named(&["2", "0", "1"]))?;
        assert_eq!(data.var_names, ["2", "0", "1"]);
        assert_eq!(data.genes, [2, 0, 1]);
        assert_eq!(data.matrix()?.to_dense().row(0).to_vec(), [3.0, 1.0, 0.0]);
        assert_eq!(data.source.top_genes, Some(3));
        let err = open_with(dir.path(), named(&["0", "x", "y"])).expect_err("missing genes");
        let text = err.to_string();
        assert!(
            text.contains("2 of the model's 3 genes are missing (x, y)"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
        Ok(())
    }

    #[test]
    fn options_that_do_not_apply_to_the_file_are_refused_in_one_line() {
        let dir = npy_folder();
        let cases = [
            (
                OpenOptions {
                    h5ad: H5adOptions {
                        layer: Some("counts".into()),
                        ..H5adOptions::default()
                    },
                    ..OpenOptions::default()
                },
                "--layer counts: this is a .npy matrix",
            ),
            (
                OpenOptions {
                    h5ad: H5adOptions {
                        obs_keys: vec!["batch".into()],
                        ..H5adOptions::default()
                    },
                    ..OpenOptions::default()
                },
                "obs column batch: this is a .npy matrix",
            ),
            (
                OpenOptions {
                    reading: Reading::Backed,
                    ..OpenOptions::default()
                },
                "--backed reads .h5ad files only",
            ),
            (
                OpenOptions {
                    genes: GeneChoice::Top(0),
                    ..OpenOptions::default()
                },
                "--top-genes must be at least 1",
            ),
        ];
        for (options, expected) in cases {
            let err = open(dir.path(), &options).expect_err(expected);
            let text = err.to_string();
            assert!(text.contains(expected), "{text}");
            assert!(
                text.starts_with(&dir.path().display().to_string()),
                "{text}"
            );
        }
        let backed_top = OpenOptions {
            reading: Reading::Backed,
            genes: GeneChoice::Top(2),
            ..OpenOptions::default()
        };
        // Read backed, the most variable genes are chosen all the same.
        let data = open(&fixture("csr.h5ad"), &backed_top).expect("backed top genes");
        assert_eq!((data.n_genes(), data.source.top_genes), (2, Some(2)));
        // A model's genes out of the file's order cannot be read backed.
        let backed_named = OpenOptions {
            reading: Reading::Backed,
            genes: GeneChoice::Named(vec![data.var_names[1].clone(), data.var_names[0].clone()]),
            ..OpenOptions::default()
        };
        let err = open(&fixture("csr.h5ad"), &backed_named).expect_err("out of order");
        assert!(err.to_string().contains("in the file's order"), "{err}");
    }

    #[test]
    fn a_covariate_is_recoded_into_a_models_categories_and_refuses_what_it_cannot_code()
    -> Result<()> {
        let options = OpenOptions {
            h5ad: H5adOptions {
                obs_keys: vec!["batch".into(), "maybe".into()],
                ..H5adOptions::default()
            },
            ..OpenOptions::default()
        };
        let mut data = open(&fixture("annotated.h5ad"), &options)?;
        let own = data.fields.get("batch").expect("field").to_vec();
        assert_eq!(data.covariate("batch", None)?, ["a", "b"]);
        assert!(own.iter().all(|&c| c == 0 || c == 1) && own.contains(&0) && own.contains(&1));
        // A model that knows the batches the other way round reads the same cells as its own.
        let known = ["b".to_owned(), "a".to_owned(), "c".to_owned()];
        assert_eq!(data.covariate("batch", Some(&known))?, known);
        let flipped: Vec<i64> = own.iter().map(|&c| 1 - c).collect();
        assert_eq!(data.fields.get("batch").expect("field"), flipped.as_slice());
        let one_line = |e: Error, want: &str| {
            let text = e.to_string();
            assert!(text.contains(want) && !text.contains('\n'), "{text}");
            assert!(text.contains("annotated.h5ad"), "{text}");
        };
        let err = data
            .covariate("batch", Some(&["a".to_owned()]))
            .expect_err("b unknown");
        one_line(
            err,
            "of batch b, which the model was not trained on (it knows a)",
        );
        let err = data.covariate("maybe", None).expect_err("missing values");
        one_line(err, "cells have no value");
        let err = data.covariate("cell_type", None).expect_err("not read");
        one_line(err, "obs column cell_type was not read");
        Ok(())
    }

    #[test]
    fn memory_and_backed_keep_the_same_cells_names_and_fields() -> Result<()> {
        let path = fixture("annotated.h5ad");
        let h5ad = H5adOptions {
            labels_key: Some("cell_type".into()),
            obs_keys: vec!["maybe".into()],
            ..H5adOptions::default()
        };
        let [memory, backed] = [Reading::Memory, Reading::Backed].map(|reading| {
            let options = OpenOptions {
                h5ad: h5ad.clone(),
                reading,
                ..OpenOptions::default()
            };
            open(&path, &options).expect("opens")
        });
        assert!(memory.counts.memory().is_some());
        assert!(matches!(backed.counts, Counts::Backed(_)));
        assert_eq!(memory.cells, backed.cells);
        assert_eq!(memory.genes, backed.genes);
        assert_eq!(memory.var_names, backed.var_names);
        assert_eq!(memory.obs_names()?, backed.obs_names()?);
        assert_eq!(memory.fields, backed.fields);
        assert_eq!(memory.source.unlabelled_cells, 1);
        assert_eq!(backed.source.unlabelled_cells, 1);
        assert_eq!(
            (memory.source.format.as_str(), backed.source.format.as_str()),
            ("h5ad-counts", "h5ad-backed")
        );
        // The most variable genes are the same read either way, and so are the batches.
        let [memory, backed] = [Reading::Memory, Reading::Backed].map(|reading| {
            let options = OpenOptions {
                h5ad: h5ad.clone(),
                reading,
                genes: GeneChoice::Top(7),
                ..OpenOptions::default()
            };
            open(&path, &options).expect("opens")
        });
        assert_eq!(memory.genes.len(), 7);
        assert_eq!(memory.genes, backed.genes);
        assert_eq!(memory.var_names, backed.var_names);
        assert_eq!(backed.source.top_genes, Some(7));
        let positions: Vec<usize> = (0..memory.n_cells()).rev().collect();
        let [a, b] = [&memory, &backed].map(|data| {
            let rows = data.rows(None).expect("rows");
            assert_eq!(rows.genes(), 7);
            rows.batch(&positions).expect("batch")
        });
        assert_eq!(a, b);
        // A budget too small for the counts reads them backed; a large one, in memory.
        for (budget, backed) in [(1, true), (u64::MAX, false)] {
            let options = OpenOptions {
                reading: Reading::Auto { budget },
                ..OpenOptions::default()
            };
            let data = open(&path, &options)?;
            assert_eq!(matches!(data.counts, Counts::Backed(_)), backed, "{budget}");
        }
        Ok(())
    }

    #[test]
    fn values_as_stored_come_back_as_they_are_and_counts_must_be_counts() -> Result<()> {
        let dir = tempfile::tempdir().expect("temp dir");
        let x = ndarray::array![[0.5f32, 0.0], [0.0, 1.5]];
        crate::write_npy(&dir.path().join("counts.npy"), &x.view())?;
        let stored = OpenOptions {
            values: Values::AsStored,
            ..OpenOptions::default()
        };
        let data = open(dir.path(), &stored)?;
        assert!(matches!(&data.counts, Counts::Values(v) if *v == x));
        assert_eq!(data.source.format, "npy");
        assert!(data.rows(None).is_err());
        let as_counts = open(&dir.path().join("counts.npy"), &OpenOptions::default());
        assert!(as_counts.is_err());
        Ok(())
    }
}
