//! AnnData `.h5ad` files: the matrix (`X`, a layer or `raw/X`; CSR, CSC or dense), cell and gene
//! names, and a cell-label column of `obs`, in the current encoding (`encoding-type`
//! attributes), the 0.7 layout (`obs/__categories`) and the pre-0.7 one that scanpy still ships
//! (`obs` and `var` as compound datasets, categories in `uns/<column>_categories`, sparse
//! matrices marked `h5sparse_format`).
//!
//! [`read_h5ad`] reads the whole matrix; [`H5adRows`] reads row blocks of a CSR or dense matrix
//! on demand, for data larger than memory. Values come as they are stored (`f32`); whether they
//! must be counts is the caller's business ([`crate::CountMatrix`] checks).

use std::ops::Range;
use std::path::Path;

use hdf5::types::TypeDescriptor;
use sprs::CsMat;

use crate::h5::{H5, Hdf5File, field, one_line, type_name};
use crate::sparse_h5::{Compressed, canonical, read_dense};
use crate::{Labels, Result};

/// What to read from an `.h5ad` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct H5adOptions {
    /// The matrix: `None` for `X`, `"raw"` (or `"raw/X"`) for `raw/X`, else `layers/<name>`.
    pub layer: Option<String>,
    /// The `obs` column holding each cell's label (categorical, strings or integers).
    pub labels_key: Option<String>,
    /// Further `obs` columns read as categorical per-cell fields (a model's covariates, e.g. the
    /// sample each cell came from), each keyed by its column name; a cell without a value is a
    /// value of its own ([`crate::MISSING`]), not an error.
    pub obs_keys: Vec<String>,
}

/// An AnnData matrix with its names and, when asked for, labels.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnMatrix {
    /// The values, cells x genes, CSR.
    pub x: CsMat<f32>,
    /// `obs` names, one per cell.
    pub obs_names: Vec<String>,
    /// `var` names, one per gene (of `raw/var` for `raw/X`).
    pub var_names: Vec<String>,
    /// The labels of `labels_key`.
    pub labels: Option<Labels>,
    /// The columns of `obs_keys`, by name, in that order, as stored.
    pub obs: Vec<(String, ObsColumn)>,
    /// The matrix read, from the root (`/X`, `/layers/counts`, `/raw/X`).
    pub element: String,
}

/// An AnnData matrix checked to hold counts, with its names and labels.
#[derive(Debug, Clone)]
pub struct AnnCounts {
    pub counts: crate::CountMatrix,
    pub obs_names: Vec<String>,
    pub var_names: Vec<String>,
    pub labels: Option<Labels>,
    pub obs: Vec<(String, ObsColumn)>,
    pub element: String,
}

/// An `obs` column as it is stored: categories (a categorical column, booleans), numbers
/// (integers, floats, pandas' nullable integers) or strings; a missing value is `None` (`NaN`
/// for a number). Columns of the pre-0.7 compound `obs` that are not categorical come as
/// strings.
#[derive(Debug, Clone, PartialEq)]
pub enum ObsColumn {
    Categorical(Labels),
    Numbers(Vec<f64>),
    Strings(Vec<Option<String>>),
}

impl ObsColumn {
    /// Number of cells.
    pub fn len(&self) -> usize {
        match self {
            Self::Categorical(l) => l.len(),
            Self::Numbers(v) => v.len(),
            Self::Strings(v) => v.len(),
        }
    }

    /// Whether the column has no cells.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values of the cells at `cells`, in that order.
    ///
    /// # Panics
    /// If a cell index is out of range.
    pub fn subset(&self, cells: &[usize]) -> Self {
        match self {
            Self::Categorical(l) => Self::Categorical(l.subset(cells)),
            Self::Numbers(v) => Self::Numbers(cells.iter().map(|&c| v[c]).collect()),
            Self::Strings(v) => Self::Strings(cells.iter().map(|&c| v[c].clone()).collect()),
        }
    }

    /// The column as categories (what a per-cell field and a label score read): a number's
    /// category is its value written out (`3`, `0.5`), a missing value none.
    pub fn categories(&self) -> Labels {
        match self {
            Self::Categorical(l) => l.clone(),
            Self::Numbers(v) => {
                let text: Vec<Option<String>> = v.iter().map(|&v| number_text(v)).collect();
                let refs: Vec<Option<&str>> = text.iter().map(Option::as_deref).collect();
                Labels::from_optional(&refs)
            }
            Self::Strings(v) => {
                let refs: Vec<Option<&str>> = v.iter().map(Option::as_deref).collect();
                Labels::from_optional(&refs)
            }
        }
    }
}

/// A number as a category: integral values without a fraction, others as `f32` writes them (the
/// precision `obs` floats are read at); `None` for NaN.
fn number_text(v: f64) -> Option<String> {
    if v.is_nan() {
        None
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Some(format!("{}", v as i64))
    } else {
        Some((v as f32).to_string())
    }
}

impl AnnMatrix {
    /// The matrix as raw counts; a value that is not a count is an error naming the file and the
    /// matrix (`counts.h5ad: /X: value 0.5 at row 2, col 7 is not a count ...`).
    ///
    /// # Errors
    /// [`crate::Error::NotCount`] (see [`crate::CountMatrix::new`]).
    pub fn into_counts(self, path: &Path) -> Result<AnnCounts> {
        let source = Path::new(&format!("{}: {}", path.display(), self.element)).to_path_buf();
        Ok(AnnCounts {
            counts: crate::CountMatrix::new(self.x, &source)?,
            obs_names: self.obs_names,
            var_names: self.var_names,
            labels: self.labels,
            obs: self.obs,
            element: self.element,
        })
    }
}

/// Reads an `.h5ad` file's matrix, names and labels.
///
/// # Errors
/// [`crate::Error::Hdf5`] naming the file and the object: not HDF5, a missing matrix, layer or column
/// (the message lists what exists), an unknown encoding, parts of a sparse matrix that do not
/// fit, names or labels of the wrong length.
pub fn read_h5ad(path: &Path, options: &H5adOptions) -> Result<AnnMatrix> {
    read_h5ad_file(
        &Hdf5File {
            h5: H5::open(path)?,
        },
        options,
    )
}

/// [`read_h5ad`] of a file already open.
///
/// # Errors
/// As [`read_h5ad`].
pub fn read_h5ad_file(file: &Hdf5File, options: &H5adOptions) -> Result<AnnMatrix> {
    read_rows_of(
        &H5adRows::from_file(file, options.layer.as_deref())?,
        options,
    )
}

/// [`read_h5ad`] of the matrix `rows` found (its layer chosen), read whole.
pub(crate) fn read_rows_of(rows: &H5adRows, options: &H5adOptions) -> Result<AnnMatrix> {
    let x = match &rows.layout {
        Layout::Dense => read_dense(&rows.h5, &rows.element, None)?,
        Layout::Sparse { matrix, csc } => matrix.read(&rows.h5, *csc)?,
    };
    let (obs_names, var_names) = (rows.obs_names()?, rows.var_names()?);
    let labels = options
        .labels_key
        .as_deref()
        .map(|key| rows.labels(key))
        .transpose()?;
    let obs = rows.obs_columns(&options.obs_keys)?;
    Ok(AnnMatrix {
        x,
        obs_names,
        var_names,
        labels,
        obs,
        element: format!("/{}", rows.element),
    })
}

/// How the matrix is stored.
#[derive(Debug, Clone)]
enum Layout {
    Dense,
    Sparse { matrix: Compressed, csc: bool },
}

/// An `.h5ad` file open for reading rows of its matrix a block at a time: the row pointers of a
/// CSR matrix are held (8 bytes a cell), values and indices are read per block.
#[derive(Debug)]
pub struct H5adRows {
    h5: H5,
    /// The matrix, from the root without the leading slash.
    element: String,
    layout: Layout,
    shape: (usize, usize),
    /// CSR row pointers, read on the first block.
    indptr: std::sync::OnceLock<Vec<usize>>,
}

impl H5adRows {
    /// The open file these rows are read from.
    pub fn file(&self) -> Hdf5File {
        Hdf5File {
            h5: self.h5.clone(),
        }
    }

    /// Opens `path` and finds the matrix `layer` (see [`H5adOptions::layer`]).
    ///
    /// # Errors
    /// As [`read_h5ad`].
    pub fn open(path: &Path, layer: Option<&str>) -> Result<Self> {
        Self::from_file(
            &Hdf5File {
                h5: H5::open(path)?,
            },
            layer,
        )
    }

    /// [`H5adRows::open`] on a file already open.
    ///
    /// # Errors
    /// As [`read_h5ad`].
    pub fn from_file(file: &Hdf5File, layer: Option<&str>) -> Result<Self> {
        let h5 = file.h5.clone();
        if !h5.has("obs") || !h5.has("var") {
            return Err(h5.err("/", "not an AnnData file: no `obs` and `var`"));
        }
        let element = match layer {
            None => "X".to_owned(),
            // `raw.X` is the pre-0.7 name.
            Some("raw" | "raw/X" | "raw.X") if !h5.has("raw/X") && h5.has("raw.X") => {
                "raw.X".to_owned()
            }
            Some("raw" | "raw/X" | "raw.X") => "raw/X".to_owned(),
            Some(name) => {
                let element = format!("layers/{name}");
                if !h5.has(&element) {
                    let have = if h5.is_group("layers") {
                        h5.group("layers")?.member_names().unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    let have = if h5.has("raw/X") || h5.has("raw.X") {
                        [have, vec!["raw".into()]].concat()
                    } else {
                        have
                    };
                    return Err(h5.err(
                        &element,
                        format!(
                            "missing; the file has layers: {}",
                            if have.is_empty() {
                                "none".into()
                            } else {
                                have.join(", ")
                            }
                        ),
                    ));
                }
                element
            }
        };
        if !h5.has(&element) {
            return Err(h5.err(&element, "missing (the file has no matrix there)"));
        }
        let (layout, shape) = layout(&h5, &element)?;
        Ok(Self {
            h5,
            element,
            layout,
            shape,
            indptr: std::sync::OnceLock::new(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.h5.path
    }

    /// The matrix read, from the root (`/X`).
    pub fn element(&self) -> String {
        format!("/{}", self.element)
    }

    /// Cells x genes.
    pub fn shape(&self) -> (usize, usize) {
        self.shape
    }

    /// Whether rows can be read a block at a time (CSR or dense; CSC must be read whole).
    pub fn row_readable(&self) -> bool {
        !matches!(self.layout, Layout::Sparse { csc: true, .. })
    }

    /// Stored entries of each row (CSR), or `None` for a dense or CSC matrix.
    pub fn row_nnz(&self) -> Result<Option<Vec<usize>>> {
        match &self.layout {
            Layout::Sparse { csc: false, .. } => {
                let p = self.indptr()?;
                Ok(Some(p.windows(2).map(|w| w[1] - w[0]).collect()))
            }
            _ => Ok(None),
        }
    }

    fn indptr(&self) -> Result<&[usize]> {
        if let Some(p) = self.indptr.get() {
            return Ok(p);
        }
        let Layout::Sparse { matrix, .. } = &self.layout else {
            return Err(self.h5.err(&self.element, "has no row pointers"));
        };
        let p = matrix.indptr(&self.h5)?;
        Ok(self.indptr.get_or_init(|| p))
    }

    /// Rows `rows` as CSR (`rows.len() x genes`), entries sorted within each row.
    ///
    /// # Errors
    /// [`crate::Error::Hdf5`] when the range is out of bounds, the matrix is CSC, or the file's parts do
    /// not fit together.
    pub fn read_rows(&self, rows: Range<usize>) -> Result<CsMat<f32>> {
        if rows.start > rows.end || rows.end > self.shape.0 {
            return Err(self.h5.err(
                &self.element,
                format!(
                    "rows {}..{} requested of {}",
                    rows.start, rows.end, self.shape.0
                ),
            ));
        }
        match &self.layout {
            Layout::Dense => read_dense(&self.h5, &self.element, Some(rows)),
            Layout::Sparse { csc: true, .. } => Err(self.h5.err(
                &self.element,
                "is stored as CSC, which cannot be read by rows; read it whole, or convert it \
                 (`adata.X = adata.X.tocsr()`)",
            )),
            Layout::Sparse { matrix, csc: false } => {
                let indptr = self.indptr()?;
                let (from, to) = (indptr[rows.start], indptr[rows.end]);
                let (indices, values) = matrix.entries(&self.h5, from..to)?;
                let local: Vec<usize> = indptr[rows.start..=rows.end]
                    .iter()
                    .map(|&p| p - from)
                    .collect();
                let (indptr, indices, values) = canonical(local, indices, values);
                CsMat::try_new((rows.len(), self.shape.1), indptr, indices, values).map_err(
                    |(.., e)| {
                        self.h5.err(
                            &self.element,
                            format!("rows {}..{}: {e}", rows.start, rows.end),
                        )
                    },
                )
            }
        }
    }

    /// The `obs` names.
    pub fn obs_names(&self) -> Result<Vec<String>> {
        let names = frame_index(&self.h5, "obs")?;
        self.h5
            .check_len("obs", names.len(), self.shape.0, "cells")?;
        Ok(names)
    }

    /// The `var` names of the matrix (`raw/var` for `raw/X`).
    pub fn var_names(&self) -> Result<Vec<String>> {
        let frame = match self.element.as_str() {
            "raw/X" => "raw/var",
            "raw.X" => "raw.var",
            _ => "var",
        };
        let names = frame_index(&self.h5, frame)?;
        self.h5
            .check_len(frame, names.len(), self.shape.1, "genes")?;
        Ok(names)
    }

    /// The labels in the `obs` column `key`, one per cell.
    ///
    /// # Errors
    /// [`crate::Error::Hdf5`] when there is no such column (the message lists the columns), a code
    /// is outside the categories, or the column is not categorical, strings or numbers.
    pub fn labels(&self, key: &str) -> Result<Labels> {
        let column = self.obs_column(key)?;
        if let ObsColumn::Numbers(v) = &column
            && let Some(bad) = v.iter().find(|v| v.is_infinite())
        {
            return Err(self
                .h5
                .err(&format!("obs/{key}"), format!("value {bad} is not a label")));
        }
        Ok(column.categories())
    }

    /// The `obs` column `key` as it is stored, one value per cell.
    ///
    /// # Errors
    /// [`crate::Error::Hdf5`] when there is no such column (the message lists the columns), a
    /// code is outside the categories, or the column is of an encoding scae does not read.
    pub fn obs_column(&self, key: &str) -> Result<ObsColumn> {
        let column = obs_column(&self.h5, key)?;
        self.h5
            .check_len(&format!("obs/{key}"), column.len(), self.shape.0, "cells")?;
        Ok(column)
    }

    /// The `obs` columns `keys`, each as [`H5adRows::obs_column`], by name.
    ///
    /// # Errors
    /// As [`H5adRows::obs_column`].
    pub fn obs_columns(&self, keys: &[String]) -> Result<Vec<(String, ObsColumn)>> {
        keys.iter()
            .map(|key| Ok((key.clone(), self.obs_column(key)?)))
            .collect()
    }
}

/// How the matrix at `element` is stored, and its shape.
fn layout(h5: &H5, element: &str) -> Result<(Layout, (usize, usize))> {
    if !h5.is_group(element) {
        let ds = h5.dataset(element)?;
        return match ds.shape().as_slice() {
            [n, m] => Ok((Layout::Dense, (*n, *m))),
            shape => Err(h5.err(
                element,
                format!("expected a 2-D matrix, found shape {shape:?}"),
            )),
        };
    }
    let encoding = match h5.attr_string(element, "encoding-type")? {
        Some(e) => e,
        None => match h5.attr_string(element, "h5sparse_format")? {
            Some(f) => format!("{f}_matrix"),
            None => return Err(h5.err(element, "a group without an `encoding-type` attribute")),
        },
    };
    let csc = match encoding.as_str() {
        "csr_matrix" => false,
        "csc_matrix" => true,
        other => {
            return Err(h5.err(
                element,
                format!("unknown encoding {other:?} (scae reads csr_matrix, csc_matrix and dense arrays)"),
            ));
        }
    };
    let shape = match h5.attr_ints(element, "shape")? {
        Some(s) => s,
        None => h5
            .attr_ints(element, "h5sparse_shape")?
            .ok_or_else(|| h5.err(element, "a sparse matrix without a `shape` attribute"))?,
    };
    let [n, m] = shape.as_slice() else {
        return Err(h5.err(element, format!("shape {shape:?} is not 2-D")));
    };
    let (n, m) = match (usize::try_from(*n), usize::try_from(*m)) {
        (Ok(n), Ok(m)) => (n, m),
        _ => return Err(h5.err(element, format!("negative shape {shape:?}"))),
    };
    let matrix = Compressed {
        group: element.to_owned(),
        major: if csc { m } else { n },
        minor: if csc { n } else { m },
    };
    Ok((Layout::Sparse { matrix, csc }, (n, m)))
}

/// The index (row names) of the dataframe `frame` (`obs`, `var`, `raw/var`).
fn frame_index(h5: &H5, frame: &str) -> Result<Vec<String>> {
    if h5.is_group(frame) {
        let key = h5
            .attr_string(frame, "_index")?
            .unwrap_or_else(|| "_index".into());
        let name = format!("{frame}/{key}");
        return h5.strings(&name);
    }
    // Pre-0.7: a compound dataset with an `index` field.
    compound_field(h5, frame, "index")
}

/// The column `key` of `obs` as it is stored ([`ObsColumn`]); a missing value (categorical code
/// -1, a masked entry of a nullable array, a NaN number) is missing.
fn obs_column(h5: &H5, key: &str) -> Result<ObsColumn> {
    let name = format!("obs/{key}");
    if !h5.is_group("obs") {
        // Pre-0.7: a field of the compound `obs`, categorical when `uns/<key>_categories` exists.
        let values = compound_field(h5, "obs", key)?;
        let categories = format!("uns/{key}_categories");
        if !h5.has(&categories) {
            return Ok(ObsColumn::Strings(values.into_iter().map(Some).collect()));
        }
        let codes: Vec<i64> = values
            .iter()
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    h5.err("obs", format!("field {key}: code {v:?} is not an integer"))
                })
            })
            .collect::<Result<_>>()?;
        let decoded = decode(h5, &format!("obs/{key}"), &codes, &h5.strings(&categories)?)?;
        return Ok(categorical(&decoded));
    }
    if !h5.has(&name) {
        let columns = h5
            .group("obs")?
            .member_names()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| !c.starts_with('_'))
            .collect::<Vec<_>>();
        return Err(h5.err(
            &name,
            format!(
                "missing; obs has the columns: {}",
                if columns.is_empty() {
                    "none".into()
                } else {
                    columns.join(", ")
                }
            ),
        ));
    }
    if h5.is_group(&name) {
        let encoding = h5.attr_string(&name, "encoding-type")?.unwrap_or_default();
        if matches!(
            encoding.as_str(),
            "nullable-integer" | "nullable-boolean" | "nullable-string-array"
        ) {
            // pandas' nullable arrays: the values, and a mask that is true where one is missing.
            let values = column_typed(h5, &format!("{name}/values"))?;
            let mask = h5.floats(&format!("{name}/mask"), None)?;
            h5.check_len(&format!("{name}/mask"), mask.len(), values.len(), "values")?;
            return Ok(masked(values, &mask));
        }
        if encoding != "categorical" {
            return Err(h5.err(
                &name,
                format!("unknown encoding {encoding:?} for a label column (scae reads categorical, nullable, strings, booleans and numbers)"),
            ));
        }
        let codes = h5.ints(&format!("{name}/codes"), None)?;
        let categories = category_strings(h5, &format!("{name}/categories"))?;
        return Ok(categorical(&decode(
            h5,
            &format!("{name}/codes"),
            &codes,
            &categories,
        )?));
    }
    // 0.7: codes in the column, categories in `obs/__categories/<key>`.
    let legacy = format!("obs/__categories/{key}");
    if h5.has(&legacy) {
        let codes = h5.ints(&name, None)?;
        let decoded = decode(h5, &name, &codes, &category_strings(h5, &legacy)?)?;
        return Ok(categorical(&decoded));
    }
    column_typed(h5, &name)
}

/// Decoded categories as a categorical column.
fn categorical(values: &[Option<String>]) -> ObsColumn {
    let refs: Vec<Option<&str>> = values.iter().map(Option::as_deref).collect();
    ObsColumn::Categorical(Labels::from_optional(&refs))
}

/// `values` with the entries whose `mask` is true (non-zero) missing.
fn masked(values: ObsColumn, mask: &[f32]) -> ObsColumn {
    let keep = |i: usize| mask[i] == 0.0;
    match values {
        ObsColumn::Numbers(v) => ObsColumn::Numbers(
            (v.into_iter().enumerate())
                .map(|(i, v)| if keep(i) { v } else { f64::NAN })
                .collect(),
        ),
        ObsColumn::Strings(v) => ObsColumn::Strings(
            (v.into_iter().enumerate())
                .map(|(i, v)| v.filter(|_| keep(i)))
                .collect(),
        ),
        ObsColumn::Categorical(l) => {
            let values: Vec<Option<String>> = (l.codes.iter().enumerate())
                .map(|(i, c)| c.filter(|_| keep(i)).map(|c| l.names[c].clone()))
                .collect();
            categorical(&values)
        }
    }
}

/// A 1-D dataset of `obs` values, typed: booleans as the categories `True` and `False` (as
/// pandas writes them), integers and floats as numbers, anything else as strings.
fn column_typed(h5: &H5, name: &str) -> Result<ObsColumn> {
    let ds = h5.dataset(name)?;
    let ty = crate::h5::descriptor(&ds).map_err(|e| h5.err(name, e))?;
    Ok(match ty {
        TypeDescriptor::Boolean => {
            let values: Vec<Option<String>> = (h5.floats(name, None)?.iter())
                .map(|&v| Some(if v != 0.0 { "True" } else { "False" }.to_owned()))
                .collect();
            categorical(&values)
        }
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => {
            ObsColumn::Numbers((h5.ints(name, None)?.iter()).map(|&v| v as f64).collect())
        }
        TypeDescriptor::Float(_) => ObsColumn::Numbers(
            (h5.floats(name, None)?.iter())
                .map(|&v| f64::from(v))
                .collect(),
        ),
        _ => ObsColumn::Strings(h5.strings(name)?.into_iter().map(Some).collect()),
    })
}

/// Categories: strings, or numbers written as text; none may be missing.
fn category_strings(h5: &H5, name: &str) -> Result<Vec<String>> {
    (column_values(h5, name)?.into_iter().enumerate())
        .map(|(i, v)| v.ok_or_else(|| h5.err(name, format!("category {i} is NaN"))))
        .collect()
}

/// A 1-D dataset of strings or numbers as strings (integral floats without a fraction); a NaN
/// is a missing value.
fn column_values(h5: &H5, name: &str) -> Result<Vec<Option<String>>> {
    let ds = h5.dataset(name)?;
    let ty = crate::h5::descriptor(&ds).map_err(|e| h5.err(name, e))?;
    match ty {
        // pandas' spelling of a boolean, as `str(True)` writes it.
        TypeDescriptor::Boolean => Ok(h5
            .floats(name, None)?
            .iter()
            .map(|&v| Some(if v != 0.0 { "True" } else { "False" }.to_owned()))
            .collect()),
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => Ok(h5
            .ints(name, None)?
            .iter()
            .map(|v| Some(v.to_string()))
            .collect()),
        TypeDescriptor::Float(_) => h5
            .floats(name, None)?
            .iter()
            .map(|&v| {
                if v.is_nan() {
                    Ok(None)
                } else if !v.is_finite() {
                    Err(h5.err(name, format!("value {v} is not a label")))
                } else if v.fract() == 0.0 {
                    Ok(Some(format!("{}", v as i64)))
                } else {
                    Ok(Some(v.to_string()))
                }
            })
            .collect(),
        _ => Ok(h5.strings(name)?.into_iter().map(Some).collect()),
    }
}

/// Category names of `codes`; -1 (pandas' missing value) is `None`, any other code outside the
/// categories an error.
fn decode(
    h5: &H5,
    name: &str,
    codes: &[i64],
    categories: &[String],
) -> Result<Vec<Option<String>>> {
    codes
        .iter()
        .enumerate()
        .map(|(cell, &c)| {
            if c == -1 {
                return Ok(None);
            }
            usize::try_from(c)
                .ok()
                .and_then(|c| categories.get(c).cloned())
                .map(Some)
                .ok_or_else(|| {
                    h5.err(
                        name,
                        format!(
                            "cell {cell} has code {c}, outside the {} categories",
                            categories.len()
                        ),
                    )
                })
        })
        .collect()
}

/// The field `field` of the compound dataset `name` (pre-0.7 `obs` and `var`) as strings.
fn compound_field(h5: &H5, name: &str, field_name: &str) -> Result<Vec<String>> {
    let ds = h5.dataset(name)?;
    let ty = crate::h5::descriptor(&ds).map_err(|e| h5.err(name, e))?;
    let TypeDescriptor::Compound(compound) = ty else {
        return Err(h5.err(
            name,
            format!(
                "expected a dataframe (a group or a compound dataset), found {}",
                type_name(&ty)
            ),
        ));
    };
    let Some(f) = compound.fields.iter().find(|f| f.name == field_name) else {
        let names: Vec<&str> = compound.fields.iter().map(|f| f.name.as_str()).collect();
        return Err(h5.err(
            &format!("{name}/{field_name}"),
            format!("missing; {name} has the columns: {}", names.join(", ")),
        ));
    };
    let err = |e: hdf5::Error| h5.err(name, format!("field {field_name}: {}", one_line(&e)));
    use hdf5::types::{FixedAscii, VarLenUnicode};
    Ok(match &f.ty {
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) | TypeDescriptor::Boolean => {
            field::read::<i64>(&ds, field_name)
                .map_err(err)?
                .iter()
                .map(i64::to_string)
                .collect()
        }
        TypeDescriptor::Float(_) => field::read::<f64>(&ds, field_name)
            .map_err(err)?
            .iter()
            .map(|v| {
                if v.fract() == 0.0 && v.is_finite() {
                    format!("{}", *v as i64)
                } else {
                    v.to_string()
                }
            })
            .collect(),
        TypeDescriptor::FixedAscii(n) | TypeDescriptor::FixedUnicode(n) if *n <= 256 => {
            field::read::<FixedAscii<256>>(&ds, field_name)
                .map_err(err)?
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect()
        }
        TypeDescriptor::VarLenUnicode | TypeDescriptor::VarLenAscii => {
            field::read::<VarLenUnicode>(&ds, field_name)
                .map_err(err)?
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect()
        }
        other => {
            return Err(h5.err(
                name,
                format!(
                    "field {field_name} holds {}, not names or labels",
                    type_name(other)
                ),
            ));
        }
    })
}
