//! Writing results back as an AnnData `.h5ad` file (the current on-disk encoding, which anndata
//! 0.8 and later read): cell and gene names, the matrix as CSR when given, embeddings in `obsm`,
//! categorical `obs` columns, dense layers and string entries of `uns`.
//!
//! The file is built under a temporary name beside the target and renamed into place, so a
//! failed write leaves nothing behind.

use std::path::Path;
use std::str::FromStr;

use hdf5::types::VarLenUnicode;
use hdf5::{Group, H5Type, Location};
use ndarray::ArrayView2;
use sprs::CsMat;

use crate::h5::one_line;
use crate::{Error, Result};

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
    let file = hdf5::File::create(tmp).map_err(err("/"))?;
    encoding(&file, "anndata", "0.1.0").map_err(err("/"))?;
    frame(&file, "obs", out.obs_names).map_err(err("/obs"))?;
    frame(&file, "var", out.var_names).map_err(err("/var"))?;
    let obs = file.group("obs").map_err(err("/obs"))?;
    let mut columns = Vec::new();
    for (name, codes, categories) in &out.obs_categorical {
        categorical(&obs, name, codes, categories).map_err(err(&format!("/obs/{name}")))?;
        columns.push((*name).to_owned());
    }
    string_array_attr(&obs, "column-order", &columns).map_err(err("/obs"))?;
    if let Some(x) = out.x {
        csr(&file, "X", x).map_err(err("/X"))?;
    }
    let obsm = dict(&file, "obsm").map_err(err("/obsm"))?;
    for (name, a) in &out.obsm {
        dense(&obsm, name, a).map_err(err(&format!("/obsm/{name}")))?;
    }
    let layers = dict(&file, "layers").map_err(err("/layers"))?;
    for (name, a) in &out.layers {
        dense(&layers, name, a).map_err(err(&format!("/layers/{name}")))?;
    }
    let uns = dict(&file, "uns").map_err(err("/uns"))?;
    for (name, value) in &out.uns {
        string_scalar(&uns, name, value).map_err(err(&format!("/uns/{name}")))?;
    }
    for name in ["obsp", "varm", "varp"] {
        dict(&file, name).map_err(err(&format!("/{name}")))?;
    }
    file.close().map_err(err("/"))?;
    Ok(())
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
    if name == "var" {
        string_array_attr(&g, "column-order", &[])?;
    }
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
