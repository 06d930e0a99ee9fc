//! Cell Ranger's HDF5 matrix (`filtered_feature_bc_matrix.h5`), both layouts:
//!
//! - version 3: group `matrix/` with `data`, `indices`, `indptr`, `shape`, `barcodes` and
//!   `features/{id, name, feature_type, genome}`;
//! - version 2: one group per genome (`hg19/`) with the same matrix datasets, `genes` and
//!   `gene_names`.
//!
//! The matrix is stored genes x cells in CSC, which is cells x genes in CSR: it is read as that,
//! without a transpose, and gives the same [`TenxMatrix`] as the `.mtx` folder of the same run.

use std::path::Path;

use crate::h5::{H5, Hdf5File};
use crate::sparse_h5::Compressed;
use crate::{Result, TenxFiles, TenxMatrix};

/// Reads a Cell Ranger `.h5` matrix (version 2 or 3) into raw counts, cells x genes; labels from
/// a `labels.txt` beside the file when there is one.
///
/// # Errors
/// [`crate::Error::Hdf5`] naming the file and the dataset when the file is not HDF5, a dataset is
/// missing, or the parts of the matrix do not fit together; the errors of
/// [`crate::read_labels`] for a bad `labels.txt`.
pub fn read_10x_h5(path: &Path) -> Result<TenxMatrix> {
    read_10x_h5_file(&Hdf5File {
        h5: H5::open(path)?,
    })
}

/// [`read_10x_h5`] of a file already open.
///
/// # Errors
/// As [`read_10x_h5`].
pub fn read_10x_h5_file(file: &Hdf5File) -> Result<TenxMatrix> {
    let h5 = file.h5.clone();
    let path = h5.path.as_path();
    let group = matrix_group(&h5)?;
    let part = |name: &str| format!("{group}/{name}");
    let shape = h5.ints(&part("shape"), None)?;
    let [genes, cells] = shape.as_slice() else {
        return Err(h5.err(
            &part("shape"),
            format!("expected 2 values, found {shape:?}"),
        ));
    };
    let (genes, cells) = (
        dim(&h5, &part("shape"), *genes)?,
        dim(&h5, &part("shape"), *cells)?,
    );
    let matrix = Compressed {
        group: group.clone(),
        major: cells,
        minor: genes,
    };
    let counts = matrix.read(&h5, false)?;
    let barcodes = h5.strings(&part("barcodes"))?;
    h5.check_len(&part("barcodes"), barcodes.len(), cells, "cells")?;
    let (gene_ids, gene_names, feature_types) = if group == "matrix" {
        let ids = h5.strings(&part("features/id"))?;
        let names = h5.strings(&part("features/name"))?;
        let types = h5.strings(&part("features/feature_type"))?;
        h5.check_len(&part("features/id"), ids.len(), genes, "genes")?;
        h5.check_len(&part("features/name"), names.len(), genes, "genes")?;
        h5.check_len(&part("features/feature_type"), types.len(), genes, "genes")?;
        (ids, names, Some(types))
    } else {
        let ids = h5.strings(&part("genes"))?;
        h5.check_len(&part("genes"), ids.len(), genes, "genes")?;
        let names = if h5.has(&part("gene_names")) {
            let names = h5.strings(&part("gene_names"))?;
            h5.check_len(&part("gene_names"), names.len(), genes, "genes")?;
            names
        } else {
            ids.clone()
        };
        (ids, names, None)
    };
    let labels_path = path.with_file_name("labels.txt");
    let labels = labels_path
        .exists()
        .then(|| crate::read_labels(&labels_path, Some(cells)))
        .transpose()?;
    Ok(TenxMatrix {
        counts,
        gene_ids,
        gene_names,
        feature_types,
        barcodes,
        labels,
        files: TenxFiles {
            dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            matrix: path.to_path_buf(),
            features: path.to_path_buf(),
            barcodes: path.to_path_buf(),
            labels: labels_path.exists().then_some(labels_path),
        },
    })
}

/// `matrix` (version 3) or the one genome group (version 2).
pub(crate) fn matrix_group(h5: &H5) -> Result<String> {
    if h5.is_group("matrix") {
        return Ok("matrix".into());
    }
    let names = h5
        .file
        .member_names()
        .map_err(|e| h5.err("/", format!("cannot list: {}", crate::h5::one_line(&e))))?;
    let genomes: Vec<&String> = names
        .iter()
        .filter(|n| {
            h5.is_group(n) && h5.has(&format!("{n}/indptr")) && h5.has(&format!("{n}/genes"))
        })
        .collect();
    match genomes.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(h5.err(
            "/",
            "not a Cell Ranger matrix: no group `matrix` (version 3) and no genome group with `indptr` and `genes` (version 2)",
        )),
        many => Err(h5.err(
            "/",
            format!(
                "{} genome groups ({}); scae reads files with one",
                many.len(),
                many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// A length from a `shape` dataset.
fn dim(h5: &H5, name: &str, value: i64) -> Result<usize> {
    usize::try_from(value).map_err(|_| h5.err(name, format!("negative size {value}")))
}
