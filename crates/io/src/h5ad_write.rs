//! Writing results back as an AnnData `.h5ad` file (the current on-disk encoding, which anndata
//! 0.8 and later read): cell and gene names, the matrix as CSR when given, embeddings in `obsm`,
//! categorical `obs` columns, dense layers and string entries of `uns`.
//!
//! Given the AnnData file the results are for ([`AnnSource`]), the writer starts from it, as
//! scanpy and scvi-tools add their fields to the object a user passes in: every `obs` and `var`
//! column, `obsm` and `varm` entry and everything in `uns` comes across in its own encoding, cut
//! to the cells and genes written, and `raw` cut to the cells; `layers` come across when no gene
//! was dropped, `obsp` when no cell was, `varp` when no gene was, and (when no matrix is given)
//! `X` when neither was. Categories are kept whole, so `uns["<column>_colors"]` still matches. An entry scae writes replaces the
//! input's entry of the same name. What cannot be carried is named in one warning.
//!
//! The file is built under a temporary name beside the target and renamed into place, so a
//! failed write leaves nothing behind.

use std::path::Path;
use std::str::FromStr;

use hdf5::types::VarLenUnicode;
use hdf5::{Group, H5Type, Location};
use ndarray::ArrayView2;
use sprs::CsMat;

use crate::h5::{H5, attr_string, one_line};
use crate::h5_copy::{Reason, copy_rows, copy_whole};
use crate::{Error, Result};

/// The AnnData file the results are for, and which of its cells and genes they cover.
#[derive(Debug, Clone, Copy)]
pub struct AnnSource<'a> {
    /// The input, still open from when it was read.
    pub file: &'a crate::Hdf5File,
    /// The input row of each written cell, in the order written.
    pub cells: &'a [usize],
    /// The input column of each written gene, in the order written.
    pub genes: &'a [usize],
}

/// What to write: every array has one row per cell (`obs_names`) or, for the matrix and layers,
/// one column per gene (`var_names`).
#[derive(Debug, Default)]
pub struct AnnOutput<'a> {
    pub obs_names: &'a [String],
    pub var_names: &'a [String],
    /// `X`, cells x genes; written as CSR (float32 values, int32 indices, int64 pointers).
    pub x: Option<&'a CsMat<f32>>,
    /// `obsm` entries, cells x k.
    pub obsm: Vec<(&'a str, ArrayView2<'a, f32>)>,
    /// Categorical `obs` columns: name, each cell's code, the categories.
    pub obs_categorical: Vec<(&'a str, Vec<usize>, Vec<String>)>,
    /// Dense `layers`, cells x genes.
    pub layers: Vec<(&'a str, ArrayView2<'a, f32>)>,
    /// String entries of `uns` (e.g. the config and provenance as JSON).
    pub uns: Vec<(&'a str, String)>,
    /// The input whose annotations the file starts from.
    pub source: Option<AnnSource<'a>>,
}

/// Writes `out` to `path` atomically.
///
/// # Errors
/// [`Error::Inconsistent`] when an array does not have one row per cell (or one column per gene);
/// [`Error::Hdf5`] naming the object when the library fails to write it.
pub fn write_h5ad(path: &Path, out: &AnnOutput<'_>) -> Result<()> {
    check(path, out)?;
    crate::atomic::write_atomic_path(path, |tmp| write_to(tmp, path, out))
}

fn check(path: &Path, out: &AnnOutput<'_>) -> Result<()> {
    let (n, m) = (out.obs_names.len(), out.var_names.len());
    let bad = |what: String| {
        Err(Error::Inconsistent {
            path: path.into(),
            reason: what,
        })
    };
    if let Some(x) = out.x
        && x.shape() != (n, m)
    {
        return bad(format!("X is {:?} for {n} cells x {m} genes", x.shape()));
    }
    for (name, a) in &out.obsm {
        if a.nrows() != n {
            return bad(format!("obsm {name} has {} rows for {n} cells", a.nrows()));
        }
    }
    for (name, a) in &out.layers {
        if a.dim() != (n, m) {
            return bad(format!(
                "layer {name} is {:?} for {n} cells x {m} genes",
                a.dim()
            ));
        }
    }
    if let Some(src) = &out.source
        && (src.cells.len() != n || src.genes.len() != m)
    {
        return bad(format!(
            "the input rows and columns are {} x {} for {n} cells x {m} genes",
            src.cells.len(),
            src.genes.len()
        ));
    }
    for (name, codes, categories) in &out.obs_categorical {
        if codes.len() != n || codes.iter().any(|&c| c >= categories.len()) {
            return bad(format!(
                "obs column {name} needs one code below {} per cell",
                categories.len()
            ));
        }
    }
    Ok(())
}

/// The file, written at `tmp` (errors name `path`, the file the user asked for).
fn write_to(tmp: &Path, path: &Path, out: &AnnOutput<'_>) -> Result<()> {
    let err = |object: &str| {
        let object = object.to_owned();
        move |e: hdf5::Error| Error::hdf5(path, &object, format!("cannot write: {}", one_line(&e)))
    };
    let carry_err = |object: &str| {
        let object = object.to_owned();
        move |reason: Reason| Error::hdf5(path, &object, format!("cannot carry: {reason}"))
    };
    let source = out.source.map(|s| Source::open(s, path)).transpose()?;
    let file = hdf5::File::create(tmp).map_err(err("/"))?;
    crate::h5::close_on_exec(&file);
    encoding(&file, "anndata", "0.1.0").map_err(err("/"))?;
    let mut left_out = Vec::new();
    let ours: Vec<&str> = out.obs_categorical.iter().map(|c| c.0).collect();
    let obs_source = source.as_ref().and_then(|s| s.frame("obs", &mut left_out));
    let var_source = source.as_ref().and_then(|s| s.frame("var", &mut left_out));
    let mut obs_columns = match (&source, obs_source) {
        (Some(s), Some(g)) => carry_frame(
            &file,
            "obs",
            out.obs_names,
            &g,
            s.cells(),
            &ours,
            &mut left_out,
        )
        .map_err(carry_err("/obs"))?,
        _ => {
            frame(&file, "obs", out.obs_names).map_err(err("/obs"))?;
            Vec::new()
        }
    };
    let var_columns = match (&source, var_source) {
        (Some(s), Some(g)) => carry_frame(
            &file,
            "var",
            out.var_names,
            &g,
            s.genes(),
            &[],
            &mut left_out,
        )
        .map_err(carry_err("/var"))?,
        _ => {
            frame(&file, "var", out.var_names).map_err(err("/var"))?;
            Vec::new()
        }
    };
    let obs = file.group("obs").map_err(err("/obs"))?;
    for (name, codes, categories) in &out.obs_categorical {
        categorical(&obs, name, codes, categories).map_err(err(&format!("/obs/{name}")))?;
        obs_columns.push((*name).to_owned());
    }
    set_column_order(&obs, &obs_columns).map_err(err("/obs"))?;
    let var = file.group("var").map_err(err("/var"))?;
    set_column_order(&var, &var_columns).map_err(err("/var"))?;
    if let Some(x) = out.x {
        csr(&file, "X", x).map_err(err("/X"))?;
    } else if let Some(s) = &source
        && s.file.has("X")
    {
        if s.all_cells && s.all_genes {
            copy_whole(&s.file.file, "X", &file).map_err(carry_err("/X"))?;
        } else {
            left_out.push("X (cells or genes were dropped)".into());
        }
    }
    let obsm = dict(&file, "obsm").map_err(err("/obsm"))?;
    let layers = dict(&file, "layers").map_err(err("/layers"))?;
    let uns = dict(&file, "uns").map_err(err("/uns"))?;
    let mut mapping = vec![
        (
            obsm.clone(),
            "obsm",
            out.obsm.iter().map(|e| e.0).collect::<Vec<_>>(),
        ),
        (
            layers.clone(),
            "layers",
            out.layers.iter().map(|e| e.0).collect(),
        ),
        (uns.clone(), "uns", out.uns.iter().map(|e| e.0).collect()),
    ];
    for name in ["obsp", "varm", "varp"] {
        mapping.push((
            dict(&file, name).map_err(err(&format!("/{name}")))?,
            name,
            Vec::new(),
        ));
    }
    if let Some(s) = &source {
        for (group, name, replaced) in &mapping {
            s.carry(name, group, replaced, &mut left_out)
                .map_err(carry_err(&format!("/{name}")))?;
        }
        if s.file.has("raw") {
            s.carry_raw(&file, &mut left_out)
                .map_err(carry_err("/raw"))?;
        }
    }
    for (name, a) in &out.obsm {
        dense(&obsm, name, a).map_err(err(&format!("/obsm/{name}")))?;
    }
    for (name, a) in &out.layers {
        dense(&layers, name, a).map_err(err(&format!("/layers/{name}")))?;
    }
    for (name, value) in &out.uns {
        string_scalar(&uns, name, value).map_err(err(&format!("/uns/{name}")))?;
    }
    file.close().map_err(err("/"))?;
    if let Some(s) = &source
        && !left_out.is_empty()
    {
        tracing::warn!(
            "not carried from {} into the results' .h5ad: {}",
            s.file.path.display(),
            left_out.join("; ")
        );
    }
    Ok(())
}

/// The input file, open for reading, and how the written cells and genes map onto its own.
struct Source<'a> {
    file: H5,
    spec: AnnSource<'a>,
    all_cells: bool,
    all_genes: bool,
}

impl<'a> Source<'a> {
    /// Opens the input and checks the written cells and genes are rows and columns of it.
    fn open(spec: AnnSource<'a>, out: &Path) -> Result<Self> {
        let file = spec.file.h5.clone();
        let (n_obs, n_vars) = (file.frame_len("obs")?, file.frame_len("var")?);
        let fits = |rows: &[usize], n: Option<usize>| n.is_none_or(|n| rows.iter().all(|&r| r < n));
        if !fits(spec.cells, n_obs) || !fits(spec.genes, n_vars) {
            return Err(Error::Inconsistent {
                path: out.into(),
                reason: format!(
                    "the results are for cells or genes that {} does not have (it changed \
                     since it was read?)",
                    file.path.display()
                ),
            });
        }
        let identity = |rows: &[usize], n: Option<usize>| {
            n == Some(rows.len()) && rows.iter().enumerate().all(|(i, &r)| i == r)
        };
        Ok(Self {
            all_cells: identity(spec.cells, n_obs),
            all_genes: identity(spec.genes, n_vars),
            file,
            spec,
        })
    }

    /// The input rows of the written cells, or `None` when they are every cell in order.
    fn cells(&self) -> Option<&[usize]> {
        (!self.all_cells).then_some(self.spec.cells)
    }

    fn genes(&self) -> Option<&[usize]> {
        (!self.all_genes).then_some(self.spec.genes)
    }

    /// The input's `obs` or `var` when it is a data frame in the current encoding; otherwise
    /// why not, in `left_out`.
    fn frame(&self, name: &str, left_out: &mut Vec<String>) -> Option<Group> {
        let g = self.file.file.group(name).ok()?;
        match attr_string(&g, "encoding-type") {
            Ok(Some(e)) if e == "dataframe" => Some(g),
            _ => {
                left_out.push(format!(
                    "{name} columns (not a data frame in anndata's current encoding)"
                ));
                None
            }
        }
    }

    /// Every entry of the input's `name` (`obsm`, `uns`, ...) not in `replaced`, into `dst`: cut
    /// by cells (`obsm`) or genes (`varm`), whole (`uns`), or whole when nothing was dropped.
    fn carry(
        &self,
        name: &str,
        dst: &Group,
        replaced: &[&str],
        left_out: &mut Vec<String>,
    ) -> std::result::Result<(), Reason> {
        let Ok(src) = self.file.file.group(name) else {
            return Ok(());
        };
        // How the entries are cut: `Ok(None)` whole, `Ok(Some(rows))` by rows, `Err` not at all.
        let cut: std::result::Result<Option<&[usize]>, &str> = match name {
            "obsm" => Ok(self.cells()),
            "varm" => Ok(self.genes()),
            "uns" => Ok(None),
            "obsp" if self.all_cells => Ok(None),
            "varp" if self.all_genes => Ok(None),
            "layers" if self.all_genes => Ok(self.cells()),
            "obsp" => Err("cells were dropped"),
            _ => Err("genes were dropped"),
        };
        for member in src.member_names().map_err(|e| one_line(&e))? {
            if replaced.contains(&member.as_str()) {
                continue;
            }
            let reason = match cut {
                Ok(None) => copy_whole(&src, &member, dst).map(|()| None)?,
                Ok(Some(rows)) => copy_rows(&src, &member, dst, rows)?,
                Err(why) => Some(why.to_owned()),
            };
            if let Some(reason) = reason {
                left_out.push(format!("{name}/{member} ({reason})"));
            }
        }
        Ok(())
    }
}

impl Source<'_> {
    /// `raw`: its matrix cut to the cells written, its genes (`var`, `varm`) whole.
    fn carry_raw(
        &self,
        dst: &Group,
        left_out: &mut Vec<String>,
    ) -> std::result::Result<(), Reason> {
        let Some(rows) = self.cells() else {
            return copy_whole(&self.file.file, "raw", dst);
        };
        let e = |e: hdf5::Error| one_line(&e);
        let src = self.file.file.group("raw").map_err(e)?;
        let out = dst.create_group("raw").map_err(e)?;
        crate::h5_copy::copy_attrs(&src, &out)?;
        for member in src.member_names().map_err(e)? {
            if member != "X" {
                copy_whole(&src, &member, &out)?;
            } else if let Some(reason) = copy_rows(&src, &member, &out, rows)? {
                dst.unlink("raw").map_err(e)?;
                left_out.push(format!("raw (its X: {reason})"));
                return Ok(());
            }
        }
        Ok(())
    }
}

/// `obs` or `var` from the input's frame `src`: its attributes, the index `names` (under the
/// input's index name), and every column not in `replaced`, cut to `rows` (`None`: whole). Returns
/// the carried columns, in the input's column order.
fn carry_frame(
    parent: &Group,
    name: &str,
    names: &[String],
    src: &Group,
    rows: Option<&[usize]>,
    replaced: &[&str],
    left_out: &mut Vec<String>,
) -> std::result::Result<Vec<String>, Reason> {
    let e = |e: hdf5::Error| one_line(&e);
    let g = parent.create_group(name).map_err(e)?;
    crate::h5_copy::copy_attrs(src, &g)?;
    let index = attr_string(src, "_index")?.unwrap_or_else(|| "_index".into());
    strings(&g, &index, names).map_err(e)?;
    let order = crate::h5::attr_strings(src, "column-order")?;
    let mut carried = Vec::new();
    for member in src.member_names().map_err(e)? {
        if member == index || replaced.contains(&member.as_str()) {
            continue;
        }
        let reason = match rows {
            None => copy_whole(src, &member, &g).map(|()| None)?,
            Some(rows) => copy_rows(src, &member, &g, rows)?,
        };
        match reason {
            Some(reason) => left_out.push(format!("{name}/{member} ({reason})")),
            None => carried.push(member),
        }
    }
    // The input's order first; members it does not list (there should be none) after them.
    let mut columns: Vec<String> = order.into_iter().filter(|c| carried.contains(c)).collect();
    for c in carried {
        if !columns.contains(&c) {
            columns.push(c);
        }
    }
    Ok(columns)
}

/// Sets `column-order`, replacing the one copied from the input.
fn set_column_order(g: &Group, columns: &[String]) -> hdf5::Result<()> {
    if g.attr_names()?.iter().any(|a| a == "column-order") {
        g.delete_attr("column-order")?;
    }
    string_array_attr(g, "column-order", columns)
}

/// `encoding-type` and `encoding-version` attributes.
fn encoding(loc: &Location, kind: &str, version: &str) -> hdf5::Result<()> {
    string_attr(loc, "encoding-type", kind)?;
    string_attr(loc, "encoding-version", version)
}

fn string_attr(loc: &Location, name: &str, value: &str) -> hdf5::Result<()> {
    loc.new_attr::<VarLenUnicode>()
        .create(name)?
        .write_scalar(&vlen(value)?)
}

fn string_array_attr(loc: &Location, name: &str, values: &[String]) -> hdf5::Result<()> {
    let values: Vec<VarLenUnicode> = values
        .iter()
        .map(|v| vlen(v))
        .collect::<hdf5::Result<_>>()?;
    loc.new_attr::<VarLenUnicode>()
        .shape([values.len()])
        .create(name)?
        .write_raw(&values)
}

fn vlen(s: &str) -> hdf5::Result<VarLenUnicode> {
    VarLenUnicode::from_str(s).map_err(|e| format!("{s:?}: {e}").into())
}

/// An empty `dict` group.
fn dict(parent: &Group, name: &str) -> hdf5::Result<Group> {
    let g = parent.create_group(name)?;
    encoding(&g, "dict", "0.1.0")?;
    Ok(g)
}

/// A dataframe with only its index (`_index`); columns are added by the caller.
fn frame(parent: &Group, name: &str, index: &[String]) -> hdf5::Result<()> {
    let g = parent.create_group(name)?;
    encoding(&g, "dataframe", "0.2.0")?;
    string_attr(&g, "_index", "_index")?;
    strings(&g, "_index", index)
}

/// A `string-array` dataset.
fn strings(parent: &Group, name: &str, values: &[String]) -> hdf5::Result<()> {
    let values: Vec<VarLenUnicode> = values
        .iter()
        .map(|v| vlen(v))
        .collect::<hdf5::Result<_>>()?;
    let ds = parent
        .new_dataset_builder()
        .with_data(&values)
        .create(name)?;
    encoding(&ds, "string-array", "0.2.0")
}

fn string_scalar(parent: &Group, name: &str, value: &str) -> hdf5::Result<()> {
    let ds = parent.new_dataset::<VarLenUnicode>().create(name)?;
    ds.write_scalar(&vlen(value)?)?;
    encoding(&ds, "string", "0.2.0")
}

/// A numeric `array` dataset.
fn array<T: H5Type>(parent: &Group, name: &str, values: &[T]) -> hdf5::Result<()> {
    let ds = parent
        .new_dataset_builder()
        .with_data(values)
        .create(name)?;
    encoding(&ds, "array", "0.2.0")
}

fn dense(parent: &Group, name: &str, a: &ArrayView2<'_, f32>) -> hdf5::Result<()> {
    let a = a.as_standard_layout();
    let ds = parent.new_dataset_builder().with_data(&a).create(name)?;
    encoding(&ds, "array", "0.2.0")
}

/// A `categorical` column: codes in the smallest signed type that holds them.
fn categorical(
    parent: &Group,
    name: &str,
    codes: &[usize],
    categories: &[String],
) -> hdf5::Result<()> {
    let g = parent.create_group(name)?;
    encoding(&g, "categorical", "0.2.0")?;
    g.new_attr::<bool>()
        .create("ordered")?
        .write_scalar(&false)?;
    strings(&g, "categories", categories)?;
    if categories.len() <= i8::MAX as usize {
        array(
            &g,
            "codes",
            &codes.iter().map(|&c| c as i8).collect::<Vec<_>>(),
        )
    } else {
        array(
            &g,
            "codes",
            &codes.iter().map(|&c| c as i32).collect::<Vec<_>>(),
        )
    }
}

/// A `csr_matrix` group.
fn csr(parent: &Group, name: &str, x: &CsMat<f32>) -> hdf5::Result<()> {
    let g = parent.create_group(name)?;
    encoding(&g, "csr_matrix", "0.1.0")?;
    g.new_attr::<i64>()
        .shape([2])
        .create("shape")?
        .write_raw(&[x.rows() as i64, x.cols() as i64])?;
    let x = if x.is_csr() { x.clone() } else { x.to_csr() };
    g.new_dataset_builder().with_data(x.data()).create("data")?;
    let indices: Vec<i32> = x.indices().iter().map(|&j| j as i32).collect();
    g.new_dataset_builder()
        .with_data(&indices)
        .create("indices")?;
    let indptr: Vec<i64> = x.indptr().raw_storage().iter().map(|&p| p as i64).collect();
    g.new_dataset_builder()
        .with_data(&indptr)
        .create("indptr")?;
    Ok(())
}
