//! 10x Genomics (Cell Ranger) matrix folders: sparse counts with their genes and barcodes.
//!
//! Cell Ranger writes a count matrix as a folder of three files in one of two layouts:
//!
//! - version 2 (and 1.2): `matrix.mtx`, `genes.tsv` (gene id, gene name), `barcodes.tsv`;
//! - version 3 and later: `matrix.mtx.gz`, `features.tsv.gz` (id, name, feature type),
//!   `barcodes.tsv.gz`.
//!
//! Any of these files may be plain or gzipped whatever its name says: the gzip magic bytes
//! decide. The matrix is MatrixMarket `coordinate integer` in genes x cells; it is returned
//! transposed, as cells x genes like every other matrix in scae, and kept sparse (CSR, a
//! [`sprs::CsMat`]), since 10x counts are mostly zeros; [`dense_rows`] densifies one minibatch
//! at a time. A `labels.txt` beside the matrix (one label per cell, as [`read_labels`] reads it)
//! is read too.
//!
//! Cell Ranger nests the folder (`outs/filtered_feature_bc_matrix/`, or
//! `filtered_gene_bc_matrices/<genome>/` in version 2), so [`read_10x`] accepts the folder that
//! holds the matrix or one up to two levels above it; it refuses to guess when that finds more
//! than one (the raw and the filtered matrix side by side, or two genomes).
//!
//! Everything the files say is checked against the matrix (lengths, indices, the entry count)
//! so that genes, cells and labels can never silently misalign. The genes and barcodes are read
//! first, so a size line that disagrees with them is refused before anything is allocated for the
//! shape it declares.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;
use ndarray::{Array2, ArrayViewMut1};
use sprs::{CsMat, CsVecView};

use crate::{Error, Labels, Result, mtx, read_labels};

/// Names of the matrix file, in order of preference.
const MATRIX: [&str; 2] = ["matrix.mtx.gz", "matrix.mtx"];
/// Names of the genes file, in order of preference: version 3, then version 2.
const FEATURES: [&str; 4] = [
    "features.tsv.gz",
    "features.tsv",
    "genes.tsv.gz",
    "genes.tsv",
];
/// Names of the barcodes file, in order of preference.
const BARCODES: [&str; 2] = ["barcodes.tsv.gz", "barcodes.tsv"];
/// The optional labels file beside the matrix.
const LABELS: &str = "labels.txt";
/// How many folder levels below the given one are searched for the matrix.
const MAX_DEPTH: usize = 2;
/// Read buffer size: the matrix is read in one sequential pass.
const BUFFER: usize = 1 << 16;

/// The files of one 10x matrix folder, as found by [`find_10x`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenxFiles {
    /// The folder that holds them.
    pub dir: PathBuf,
    /// `matrix.mtx.gz` or `matrix.mtx`.
    pub matrix: PathBuf,
    /// `features.tsv[.gz]` (version 3) or `genes.tsv[.gz]` (version 2).
    pub features: PathBuf,
    /// `barcodes.tsv[.gz]`.
    pub barcodes: PathBuf,
    /// `labels.txt`, if there is one.
    pub labels: Option<PathBuf>,
}

/// A 10x count matrix with its annotations, cells x genes.
#[derive(Debug, Clone, PartialEq)]
pub struct TenxMatrix {
    /// Counts, cells x genes, in CSR storage: non-negative integers stored as `f32` (exact up to
    /// 2^24), duplicate entries of the file summed, explicit zeros kept.
    pub counts: CsMat<f32>,
    /// Gene (feature) ids, one per column, e.g. Ensembl ids.
    pub gene_ids: Vec<String>,
    /// Gene names, one per column; the id where the file has no name column.
    pub gene_names: Vec<String>,
    /// Feature types ("Gene Expression", "Antibody Capture", ...) when every line of the features
    /// file has a third column (version 3); `None` otherwise (version 2).
    pub feature_types: Option<Vec<String>>,
    /// Cell barcodes, one per row.
    pub barcodes: Vec<String>,
    /// Labels from `labels.txt`, one per cell, when the folder has that file.
    pub labels: Option<Labels>,
    /// Where all this was read from.
    pub files: TenxFiles,
}

impl TenxMatrix {
    /// Number of cells (rows).
    pub fn n_cells(&self) -> usize {
        self.counts.rows()
    }

    /// Number of genes (columns).
    pub fn n_genes(&self) -> usize {
        self.counts.cols()
    }
}

/// Finds the 10x matrix folder at `path` or up to two folder levels below it, and its files.
///
/// The shallowest level holding a `matrix.mtx.gz` or `matrix.mtx` wins; folders are visited in
/// name order. Within the folder, gzipped names are preferred to plain ones and version-3 names
/// (`features.tsv`) to version-2 ones (`genes.tsv`).
///
/// # Errors
/// [`Error::Io`] if a folder cannot be listed (`path` missing or not a folder);
/// [`Error::TenxAmbiguous`] if one level holds several matrix folders; [`Error::TenxMissing`]
/// if there is no matrix, or the matrix has no genes or barcodes file beside it.
pub fn find_10x(path: &Path) -> Result<TenxFiles> {
    let mut level = vec![path.to_path_buf()];
    for depth in 0..=MAX_DEPTH {
        let mut found: Vec<PathBuf> = (level.iter())
            .filter(|dir| first_file(dir, &MATRIX).is_some())
            .cloned()
            .collect();
        match found.len() {
            0 => {}
            1 => return files_in(found.swap_remove(0)),
            _ => {
                return Err(Error::TenxAmbiguous {
                    path: path.into(),
                    found,
                });
            }
        }
        if depth < MAX_DEPTH {
            level = subfolders(&level)?;
        }
    }
    Err(Error::TenxMissing {
        path: path.into(),
        looked_for: format!(
            "{} in it or up to {MAX_DEPTH} folder levels below",
            or_list(&MATRIX)
        ),
    })
}

/// Reads a 10x matrix folder (see [`find_10x`] for where it is looked for): the counts as cells x
/// genes CSR, the genes, the barcodes and, if present, `labels.txt`.
///
/// # Errors
/// Those of [`find_10x`]; for the matrix, those of a MatrixMarket file that is not a
/// `coordinate integer general` matrix of counts ([`Error::NotCoordinateInteger`],
/// [`Error::InvalidMtx`], [`Error::MtxIndex`], [`Error::MtxNotCount`],
/// [`Error::MtxEntryCount`], [`Error::EmptyMatrix`]); [`Error::TenxLength`] if the genes or
/// barcodes file does not have one line per gene or cell; [`Error::BlankLine`] for a blank line
/// in them before the last; those of [`read_labels`]; [`Error::Io`] if a file cannot be read, is
/// corrupt gzip, or is not UTF-8 text.
pub fn read_10x(path: &Path) -> Result<TenxMatrix> {
    let files = find_10x(path)?;
    let features_text = read_text(&files.features)?;
    let features = text_lines(&files.features, &features_text)?;
    let barcodes_text = read_text(&files.barcodes)?;
    let barcodes = text_lines(&files.barcodes, &barcodes_text)?;
    // The genes and barcodes are read first so that the size line is checked against them
    // before the matrix reader allocates for it: a corrupt size line must not cost gigabytes.
    let check_shape = |(genes, cells)| {
        check_length(
            &files,
            &files.features,
            features.len(),
            genes,
            "genes (rows)",
        )?;
        check_length(
            &files,
            &files.barcodes,
            barcodes.len(),
            cells,
            "cells (columns)",
        )
    };
    let counts = mtx::read_coordinate_counts(&files.matrix, open(&files.matrix)?, check_shape)?
        .transpose_into();
    let (n_cells, n_genes) = counts.shape();
    let (gene_ids, gene_names, feature_types) = parse_features(&features);
    let barcodes = barcodes
        .iter()
        .map(|l| first_column(l).to_owned())
        .collect();

    let labels = (files.labels.as_deref())
        .map(|p| read_labels(p, Some(n_cells)))
        .transpose()?;
    tracing::debug!(
        dir = %files.dir.display(),
        cells = n_cells,
        genes = n_genes,
        nonzeros = counts.nnz(),
        labelled = labels.is_some(),
        "read 10x matrix"
    );
    Ok(TenxMatrix {
        counts,
        gene_ids,
        gene_names,
        feature_types,
        barcodes,
        labels,
        files,
    })
}

/// The given rows (a minibatch of cells) of a sparse matrix as a dense matrix, in the given order
/// (repeats allowed).
///
/// Meant for CSR (as [`read_10x`] returns); a CSC matrix is first converted, which costs a copy.
///
/// # Panics
/// If a row index is out of range, like indexing a slice.
pub fn dense_rows(matrix: &CsMat<f32>, rows: &[usize]) -> Array2<f32> {
    if matrix.is_csc() {
        return dense_rows(&matrix.to_csr(), rows);
    }
    let mut out = Array2::zeros((rows.len(), matrix.cols()));
    for (dst, &r) in out.rows_mut().into_iter().zip(rows) {
        let Some(row) = matrix.outer_view(r) else {
            panic!(
                "row {r} out of range for a matrix of {} rows",
                matrix.rows()
            );
        };
        scatter(dst, row);
    }
    out
}

/// The whole sparse matrix as a dense one (cells x genes; mind the memory: 4 bytes per entry).
pub fn to_dense(matrix: &CsMat<f32>) -> Array2<f32> {
    if matrix.is_csc() {
        return to_dense(&matrix.to_csr());
    }
    let mut out = Array2::zeros(matrix.shape());
    for (dst, row) in out.rows_mut().into_iter().zip(matrix.outer_iterator()) {
        scatter(dst, row);
    }
    out
}

/// Writes the nonzeros of `row` into the dense `dst` (zeros elsewhere already).
fn scatter(mut dst: ArrayViewMut1<'_, f32>, row: CsVecView<'_, f32>) {
    for (&j, &v) in row.indices().iter().zip(row.data()) {
        dst[j] = v;
    }
}

/// The first of `names` that is a file in `dir`.
fn first_file(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// The files of the matrix folder `dir`.
fn files_in(dir: PathBuf) -> Result<TenxFiles> {
    let matrix = first_file(&dir, &MATRIX).ok_or_else(|| Error::TenxMissing {
        path: dir.clone(),
        looked_for: or_list(&MATRIX),
    })?;
    let beside = |names: &[&str]| {
        first_file(&dir, names).ok_or_else(|| Error::TenxMissing {
            path: dir.clone(),
            looked_for: format!(
                "{} beside {}",
                or_list(names),
                matrix.file_name().unwrap_or_default().to_string_lossy()
            ),
        })
    };
    let features = beside(&FEATURES)?;
    let barcodes = beside(&BARCODES)?;
    let labels = Some(dir.join(LABELS)).filter(|p| p.is_file());
    Ok(TenxFiles {
        dir,
        matrix,
        features,
        barcodes,
        labels,
    })
}

/// The subfolders of every folder in `dirs`, each folder's in name order.
fn subfolders(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for dir in dirs {
        let io_err = |err| Error::io(dir, err);
        let mut subs = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            if path.is_dir() {
                subs.push(path);
            }
        }
        subs.sort();
        out.append(&mut subs);
    }
    Ok(out)
}

/// `a, b or c`.
fn or_list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Opens `path` for buffered reading, decompressing it if it starts with the gzip magic bytes.
///
/// Concatenated gzip members (as `bgzip` and some pipelines write) are read as one stream.
fn open(path: &Path) -> Result<Box<dyn BufRead>> {
    let io_err = |err| Error::io(path, err);
    let mut reader = BufReader::with_capacity(BUFFER, File::open(path).map_err(io_err)?);
    let gzipped = reader
        .fill_buf()
        .map_err(io_err)?
        .starts_with(&[0x1f, 0x8b]);
    Ok(if gzipped {
        Box::new(BufReader::with_capacity(
            BUFFER,
            MultiGzDecoder::new(reader),
        ))
    } else {
        Box::new(reader)
    })
}

/// The whole (decompressed) text of `path`.
fn read_text(path: &Path) -> Result<String> {
    let mut text = String::new();
    (open(path)?.read_to_string(&mut text)).map_err(|err| Error::io(path, err))?;
    Ok(text)
}

/// The lines of a `.tsv` file: a byte-order mark, CRLF line ends and blank lines at the end are
/// ignored; any other blank line is an error, since it would shift every later gene or cell.
fn text_lines<'a>(path: &Path, text: &'a str) -> Result<Vec<&'a str>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<&str> = text.lines().collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    match lines.iter().position(|l| l.trim().is_empty()) {
        Some(i) => Err(Error::BlankLine {
            path: path.into(),
            line: i + 1,
        }),
        None => Ok(lines),
    }
}

/// [`Error::TenxLength`] unless the annotation file `path` has `lines` lines for `expected`.
fn check_length(
    files: &TenxFiles,
    path: &Path,
    lines: usize,
    expected: usize,
    axis: &'static str,
) -> Result<()> {
    if lines == expected {
        return Ok(());
    }
    Err(Error::TenxLength {
        path: path.into(),
        lines,
        matrix: files.matrix.clone(),
        expected,
        axis,
    })
}

/// Gene ids, names and, if every line has them, feature types from the tab-separated columns.
fn parse_features(lines: &[&str]) -> (Vec<String>, Vec<String>, Option<Vec<String>>) {
    let mut ids = Vec::with_capacity(lines.len());
    let mut names = Vec::with_capacity(lines.len());
    let mut types = Some(Vec::with_capacity(lines.len()));
    for line in lines {
        let mut columns = line.split('\t');
        let id = columns.next().unwrap_or_default();
        ids.push(id.to_owned());
        names.push(columns.next().unwrap_or(id).to_owned());
        match (columns.next(), types.as_mut()) {
            (Some(t), Some(types)) => types.push(t.to_owned()),
            _ => types = None,
        }
    }
    (ids, names, types)
}

fn first_column(line: &str) -> &str {
    line.split('\t').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::shared_data;
    use approx::assert_abs_diff_eq;
    use flate2::{Compression, write::GzEncoder};
    use ndarray::array;
    use std::io::Write;
    use std::time::Instant;

    const HEADER: &str = "%%MatrixMarket matrix coordinate integer general\n";

    /// 3 genes x 2 cells in the file, so 2 cells x 3 genes once read; entries out of order.
    fn mtx_3x2() -> String {
        format!("{HEADER}%metadata\n3 2 4\n3 1 5\n1 1 2\n2 2 7\n3 2 1\n")
    }

    const FEATURES_V3: &str = "G1\tA\tGene Expression\nG2\tB\tGene Expression\n\
                               G3\tC\tAntibody Capture\n";
    const GENES_V2: &str = "G1\tA\nG2\tB\nG3\tC\n";
    const BARCODES_2: &str = "AAAC-1\nTTTG-1\n";

    /// Writes `text` to `dir/name`, gzipped when the name ends in `.gz`.
    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::create_dir_all(dir).expect("create fixture dir");
        if name.ends_with(".gz") {
            let mut gz = GzEncoder::new(File::create(&path).expect("create"), Compression::fast());
            gz.write_all(text.as_bytes()).expect("gzip");
            gz.finish().expect("finish gzip");
        } else {
            fs::write(&path, text).expect("write fixture");
        }
        path
    }

    /// A version-3 (gzipped) or version-2 (plain) folder holding the three files.
    fn folder(dir: &Path, v3: bool, matrix: &str, features: &str, barcodes: &str) {
        let [m, f, b] = if v3 {
            ["matrix.mtx.gz", "features.tsv.gz", "barcodes.tsv.gz"]
        } else {
            ["matrix.mtx", "genes.tsv", "barcodes.tsv"]
        };
        write(dir, m, matrix);
        write(dir, f, features);
        write(dir, b, barcodes);
    }

    /// Reads a folder built by [`folder`] in a fresh tempdir.
    fn read_folder(v3: bool, matrix: &str, features: &str, barcodes: &str) -> Result<TenxMatrix> {
        let dir = tempfile::tempdir().expect("tempdir");
        folder(dir.path(), v3, matrix, features, barcodes);
        read_10x(dir.path())
    }

    fn assert_names_file(err: &Error, name: &str) {
        let msg = err.to_string();
        assert!(msg.contains(name), "message does not name {name}: {msg}");
        assert!(!msg.contains('\n'), "message is not one line: {msg}");
    }

    #[test]
    fn reads_v3_gzipped_transposed_to_cells_by_genes() -> Result<()> {
        let m = read_folder(true, &mtx_3x2(), FEATURES_V3, BARCODES_2)?;
        assert!(m.counts.is_csr());
        assert_eq!((m.n_cells(), m.n_genes(), m.counts.nnz()), (2, 3, 4));
        assert_eq!(m.counts.indptr().raw_storage(), [0, 2, 4]);
        assert_eq!(m.counts.indices(), [0, 2, 1, 2]);
        assert_eq!(
            to_dense(&m.counts),
            array![[2.0_f32, 0.0, 5.0], [0.0, 7.0, 1.0]]
        );
        assert_eq!(m.gene_ids, ["G1", "G2", "G3"]);
        assert_eq!(m.gene_names, ["A", "B", "C"]);
        let types = m.feature_types.as_deref().expect("v3 has feature types");
        assert_eq!(types[2], "Antibody Capture");
        assert_eq!(m.barcodes, ["AAAC-1", "TTTG-1"]);
        assert_eq!(m.labels, None);
        assert!(m.files.matrix.ends_with("matrix.mtx.gz"));
        Ok(())
    }

    #[test]
    fn reads_v2_plain_with_the_same_counts() -> Result<()> {
        let v2 = read_folder(false, &mtx_3x2(), GENES_V2, BARCODES_2)?;
        let v3 = read_folder(true, &mtx_3x2(), FEATURES_V3, BARCODES_2)?;
        assert_eq!(v2.counts, v3.counts);
        assert_eq!((v2.gene_names, v2.feature_types), (v3.gene_names, None));
        assert!(v2.files.features.ends_with("genes.tsv"));
        Ok(())
    }

    #[test]
    fn compression_is_told_by_content_not_name() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = write(dir.path(), "x.txt", &mtx_3x2());
        fs::rename(&plain, dir.path().join("matrix.mtx.gz")).expect("rename");
        write(dir.path(), "features.tsv.gz", FEATURES_V3);
        let gz = write(dir.path(), "b.gz", BARCODES_2);
        fs::rename(&gz, dir.path().join("barcodes.tsv")).expect("rename");
        let m = read_10x(dir.path())?;
        assert_eq!((m.n_cells(), m.n_genes()), (2, 3));
        assert_eq!(m.barcodes, ["AAAC-1", "TTTG-1"]);
        Ok(())
    }

    #[test]
    fn one_column_features_and_crlf_and_trailing_blank_lines() -> Result<()> {
        let m = read_folder(
            false,
            &mtx_3x2(),
            "G1\r\nG2\r\nG3\r\n\r\n",
            "AAAC-1\tx\nTTTG-1\n\n",
        )?;
        assert_eq!(m.gene_names, ["G1", "G2", "G3"]);
        assert_eq!(m.barcodes, ["AAAC-1", "TTTG-1"]);
        Ok(())
    }

    #[test]
    fn finds_the_matrix_two_levels_down() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = dir.path().join("filtered_gene_bc_matrices/hg19");
        folder(&inner, false, &mtx_3x2(), GENES_V2, BARCODES_2);
        write(dir.path(), "other.h5", "not a folder");
        let files = find_10x(dir.path())?;
        assert_eq!(files.dir, inner);
        assert_eq!(
            read_10x(&dir.path().join("filtered_gene_bc_matrices"))?.n_cells(),
            2
        );
        Ok(())
    }

    #[test]
    fn two_matrix_folders_at_one_level_are_ambiguous() {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["raw_feature_bc_matrix", "filtered_feature_bc_matrix"] {
            folder(
                &dir.path().join(sub),
                true,
                &mtx_3x2(),
                FEATURES_V3,
                BARCODES_2,
            );
        }
        let err = read_10x(dir.path()).expect_err("ambiguous");
        assert!(
            matches!(&err, Error::TenxAmbiguous { found, .. } if found.len() == 2),
            "{err:?}"
        );
        assert_names_file(&err, "raw_feature_bc_matrix");
        assert_names_file(&err, "filtered_feature_bc_matrix");
    }

    #[test]
    fn labels_beside_the_matrix_are_read_and_counted() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        folder(dir.path(), true, &mtx_3x2(), FEATURES_V3, BARCODES_2);
        write(dir.path(), "labels.txt", "T\nB\n");
        let labels = read_10x(dir.path())?.labels.expect("labels");
        assert_eq!(
            (labels.names, labels.codes),
            (vec!["B".into(), "T".into()], vec![Some(1), Some(0)])
        );
        write(dir.path(), "labels.txt", "T\nB\nB\n");
        let err = read_10x(dir.path()).expect_err("3 labels for 2 cells");
        assert!(
            matches!(
                err,
                Error::LabelCount {
                    labels: 3,
                    cells: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_names_file(&err, "labels.txt");
        Ok(())
    }

    #[test]
    fn index_out_of_range_gives_line_entry_and_shape() {
        for (v3, name) in [(true, "matrix.mtx.gz"), (false, "matrix.mtx")] {
            let text = format!("{HEADER}3 2 2\n1 1 1\n4 2 1\n");
            let err = read_folder(v3, &text, GENES_V2, BARCODES_2).expect_err("row 4 of 3");
            assert!(
                matches!(
                    err,
                    Error::MtxIndex {
                        line: 4,
                        row: 4,
                        col: 2,
                        shape: (3, 2),
                        ..
                    }
                ),
                "{err:?}"
            );
            assert_names_file(&err, name);
            assert!(err.to_string().contains("3 x 2"), "{err}");
        }
        let text = format!("{HEADER}3 2 1\n1 0 1\n");
        let err = read_folder(true, &text, GENES_V2, BARCODES_2).expect_err("col 0");
        assert!(matches!(err, Error::MtxIndex { col: 0, .. }), "{err:?}");
    }

    #[test]
    fn entry_count_must_match_the_size_line() {
        for (v3, declared, name) in [(true, 5, "matrix.mtx.gz"), (false, 3, "matrix.mtx")] {
            let text = format!("{HEADER}3 2 {declared}\n1 1 1\n2 2 1\n3 1 1\n1 2 1\n");
            let err = read_folder(v3, &text, GENES_V2, BARCODES_2).expect_err("count");
            assert!(
                matches!(err, Error::MtxEntryCount { declared: d, found: 4, .. } if d == declared),
                "{err:?}"
            );
            assert_names_file(&err, name);
        }
    }

    #[test]
    fn negative_or_fractional_values_are_not_counts() {
        let cases = [
            (true, "-1", "matrix.mtx.gz"),
            (false, "2.5", "matrix.mtx"),
            (false, "1e3", "matrix.mtx"),
        ];
        for (v3, value, name) in cases {
            let text = format!("{HEADER}3 2 2\n1 1 1\n2 2 {value}\n");
            let err = read_folder(v3, &text, GENES_V2, BARCODES_2).expect_err(value);
            assert!(
                matches!(&err, Error::MtxNotCount { line: 4, value: v, .. } if v == value),
                "{err:?}"
            );
            assert_names_file(&err, name);
        }
    }

    #[test]
    fn other_matrix_market_flavours_are_rejected() {
        let cases = [
            (
                true,
                "%%MatrixMarket matrix coordinate real general\n3 2 0\n",
            ),
            (false, "%%MatrixMarket matrix array integer general\n3 2\n"),
            (
                false,
                "%%MatrixMarket matrix coordinate integer symmetric\n3 2 0\n",
            ),
            (
                true,
                "%%MatrixMarket matrix coordinate pattern general\n3 2 0\n",
            ),
            (false, "3 2 0\n"),
            (false, ""),
        ];
        for (v3, text) in cases {
            let err = read_folder(v3, text, GENES_V2, BARCODES_2).expect_err(text);
            assert!(
                matches!(&err, Error::NotCoordinateInteger { header, .. } if text.starts_with(header.as_str())),
                "{err:?}"
            );
            assert_names_file(&err, if v3 { "matrix.mtx.gz" } else { "matrix.mtx" });
        }
    }

    #[test]
    fn features_or_barcodes_of_the_wrong_length() {
        let err = read_folder(true, &mtx_3x2(), "G1\nG2\n", BARCODES_2).expect_err("2 genes");
        assert!(
            matches!(
                err,
                Error::TenxLength {
                    lines: 2,
                    expected: 3,
                    axis: "genes (rows)",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_names_file(&err, "features.tsv.gz");
        assert!(
            err.to_string().contains("matrix.mtx.gz declares 3 genes"),
            "{err}"
        );

        let err = read_folder(false, &mtx_3x2(), GENES_V2, "A\nB\nC\n").expect_err("3 cells");
        assert!(
            matches!(
                err,
                Error::TenxLength {
                    lines: 3,
                    expected: 2,
                    axis: "cells (columns)",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_names_file(&err, "barcodes.tsv");
    }

    /// A size line declaring 4294967295 cells used to cost a 32 GiB allocation before the
    /// barcodes were counted (found while fuzzing `read_10x`); now the barcodes refuse it first.
    #[test]
    fn huge_declared_shape_is_refused_before_it_is_allocated() {
        let text = format!("{HEADER}1 4294967295 0\n");
        let err = read_folder(false, &text, "G1\n", BARCODES_2).expect_err("4294967295 cells");
        assert!(
            matches!(
                err,
                Error::TenxLength {
                    lines: 2,
                    expected: 4_294_967_295,
                    axis: "cells (columns)",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_names_file(&err, "barcodes.tsv");
    }

    #[test]
    fn blank_line_inside_features_is_an_error() {
        let err = read_folder(false, &mtx_3x2(), "G1\n\nG3\n", BARCODES_2).expect_err("blank");
        assert!(matches!(err, Error::BlankLine { line: 2, .. }), "{err:?}");
        assert_names_file(&err, "genes.tsv");
    }

    #[test]
    fn missing_files_say_what_was_looked_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("a/b/c")).expect("mkdir");
        let err = read_10x(dir.path()).expect_err("no matrix");
        assert!(matches!(err, Error::TenxMissing { .. }), "{err:?}");
        assert_names_file(&err, "matrix.mtx.gz or matrix.mtx");

        write(dir.path(), "matrix.mtx.gz", &mtx_3x2());
        write(dir.path(), "genes.tsv", GENES_V2);
        let err = read_10x(dir.path()).expect_err("no barcodes");
        assert!(matches!(err, Error::TenxMissing { .. }), "{err:?}");
        assert_names_file(&err, "barcodes.tsv.gz or barcodes.tsv beside matrix.mtx.gz");

        let err = read_10x(&dir.path().join("nowhere")).expect_err("no folder");
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert_names_file(&err, "nowhere");
    }

    #[test]
    fn corrupt_gzip_is_an_io_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        folder(dir.path(), true, &mtx_3x2(), FEATURES_V3, BARCODES_2);
        let path = dir.path().join("matrix.mtx.gz");
        let bytes = fs::read(&path).expect("read");
        fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
        let err = read_10x(dir.path()).expect_err("truncated gzip");
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert_names_file(&err, "matrix.mtx.gz");
    }

    #[test]
    fn dense_rows_picks_a_minibatch_in_order() -> Result<()> {
        let m = read_folder(true, &mtx_3x2(), FEATURES_V3, BARCODES_2)?;
        let batch = dense_rows(&m.counts, &[1, 0, 1]);
        assert_eq!(
            batch,
            array![[0.0_f32, 7.0, 1.0], [2.0, 0.0, 5.0], [0.0, 7.0, 1.0]]
        );
        assert_eq!(dense_rows(&m.counts, &[]).shape(), [0, 3]);
        let csc = m.counts.to_csc();
        assert_eq!(dense_rows(&csc, &[1]), batch.slice(ndarray::s![..1, ..]));
        assert_eq!(to_dense(&csc), to_dense(&m.counts));
        Ok(())
    }

    #[test]
    #[should_panic(expected = "row 2 out of range")]
    fn dense_rows_panics_on_a_bad_row() {
        let m = CsMat::<f32>::zero((2, 3));
        let _ = dense_rows(&m, &[2]);
    }

    #[test]
    fn shared_v3_fixture() -> Result<()> {
        let Some(dir) = shared_data("10x/v3_grch38_chr21") else {
            return Ok(());
        };
        let m = read_10x(&dir)?;
        assert!(m.files.dir.ends_with("filtered_feature_bc_matrix"));
        assert_eq!(
            (m.n_cells(), m.n_genes(), m.counts.nnz()),
            (1107, 507, 23866)
        );
        assert_eq!(m.gene_ids[0], "ENSG00000279493");
        assert_eq!(m.gene_names[457], "ITGB2");
        let types = m.feature_types.as_deref().expect("v3 has feature types");
        assert!(types.iter().all(|t| t == "Gene Expression"));
        assert_eq!(
            (m.barcodes[0].as_str(), m.barcodes[1106].as_str()),
            ("AAACCCAAGGAGAGTA-1", "TTTGGTTGTAGAATAC-1")
        );
        let dense = to_dense(&m.counts);
        assert_abs_diff_eq!(dense[[0, 457]], 3.0);
        assert_abs_diff_eq!(dense[[1106, 457]], 6.0);
        assert_abs_diff_eq!(dense[[575, 335]], 36.0);
        assert_abs_diff_eq!(dense.sum(), 41549.0);
        Ok(())
    }

    #[test]
    fn shared_v2_fixture() -> Result<()> {
        let Some(dir) = shared_data("10x/v2_hg19_chr21") else {
            return Ok(());
        };
        let m = read_10x(&dir)?;
        assert!(
            m.files
                .dir
                .ends_with("filtered_gene_bc_matrices/hg19_chr21")
        );
        assert_eq!((m.n_cells(), m.n_genes(), m.counts.nnz()), (12, 343, 12));
        assert_eq!(
            (m.gene_ids[200].as_str(), m.gene_names[342].as_str()),
            ("LINC00649", "S100B")
        );
        assert_eq!(m.feature_types, None);
        assert_eq!(m.barcodes[11], "TTTATGCCATCCGTGG-1");
        let dense = to_dense(&m.counts);
        assert_abs_diff_eq!(dense[[0, 200]], 1.0);
        assert_abs_diff_eq!(dense[[11, 126]], 1.0);
        assert_abs_diff_eq!(dense.sum(), 12.0);
        Ok(())
    }

    #[test]
    fn shared_worm_neuron() -> Result<()> {
        let Some(dir) = shared_data("worm_neuron") else {
            return Ok(());
        };
        let start = Instant::now();
        let m = read_10x(&dir)?;
        eprintln!("read worm_neuron in {:.3} s", start.elapsed().as_secs_f64());
        assert_eq!(
            (m.n_cells(), m.n_genes(), m.counts.nnz()),
            (4186, 13488, 780212)
        );
        assert_eq!(
            (m.gene_ids[13487].as_str(), m.gene_names[13487].as_str()),
            ("WORMG13488", "gene_13488")
        );
        assert_eq!(m.barcodes[4185], "WORMC04186-1");
        let batch = dense_rows(&m.counts, &[146, 1000, 1554, 4113]);
        assert_abs_diff_eq!(batch[[0, 0]], 1.0);
        assert_abs_diff_eq!(batch[[1, 0]], 2.0);
        assert_abs_diff_eq!(batch[[2, 10553]], 219.0);
        assert_abs_diff_eq!(batch[[3, 13486]], 1.0);
        let total: f64 = m.counts.data().iter().map(|&v| f64::from(v)).sum();
        assert_abs_diff_eq!(total, 1_376_141.0);
        let labels = m.labels.expect("worm_neuron has labels.txt");
        assert_eq!(
            labels.names,
            ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]
        );
        let mut sizes = vec![0; labels.n_classes()];
        for c in labels.known_codes() {
            sizes[c] += 1;
        }
        assert_eq!(sizes, [842, 334, 1015, 443, 400, 314, 305, 224, 239, 70]);
        Ok(())
    }
}
