//! Compressed sparse matrices stored as HDF5 datasets (`data`, `indices`, `indptr`), as both
//! AnnData and Cell Ranger write them, read into a cells x genes CSR matrix with every part
//! checked against the others.

use std::ops::Range;

use sprs::CsMat;

use crate::h5::H5;
use crate::{Error, Result};

/// A compressed matrix in a group: `major` pointers over `minor` indices.
#[derive(Debug, Clone)]
pub(crate) struct Compressed {
    /// The group holding `data`, `indices` and `indptr`.
    pub group: String,
    /// Length of the compressed axis (rows of CSR, columns of CSC).
    pub major: usize,
    /// Length of the other axis.
    pub minor: usize,
}

impl Compressed {
    fn part(&self, name: &str) -> String {
        format!("{}/{name}", self.group.trim_end_matches('/'))
    }

    /// `indptr`, checked: `major + 1` non-decreasing pointers from 0 to the length of `data`
    /// and `indices`.
    pub fn indptr(&self, h5: &H5) -> Result<Vec<usize>> {
        let name = self.part("indptr");
        let raw = h5.ints(&name, None)?;
        if raw.len() != self.major + 1 {
            return Err(h5.err(
                &name,
                format!(
                    "{} pointers for {} rows or columns (expected {})",
                    raw.len(),
                    self.major,
                    self.major + 1
                ),
            ));
        }
        let nnz = h5.len_1d(&self.part("data"))?;
        let n_indices = h5.len_1d(&self.part("indices"))?;
        if nnz != n_indices {
            return Err(h5.err(
                &self.group,
                format!("data holds {nnz} values but indices holds {n_indices}"),
            ));
        }
        if raw[0] != 0 {
            return Err(h5.err(&name, format!("starts at {}, not 0", raw[0])));
        }
        let mut out = Vec::with_capacity(raw.len());
        for (i, &p) in raw.iter().enumerate() {
            if i > 0 && p < raw[i - 1] {
                return Err(h5.err(&name, format!("decreases at {i} ({} then {p})", raw[i - 1])));
            }
            out.push(
                usize::try_from(p).map_err(|_| h5.err(&name, format!("negative pointer {p}")))?,
            );
        }
        let last = out[self.major];
        if last != nnz {
            return Err(h5.err(&name, format!("ends at {last} but data holds {nnz} values")));
        }
        Ok(out)
    }

    /// The entries `range` of `indices` and `data`, indices checked against `minor`.
    pub fn entries(&self, h5: &H5, range: Range<usize>) -> Result<(Vec<u32>, Vec<f32>)> {
        let indices = h5.indices(&self.part("indices"), Some(range.clone()), self.minor)?;
        let values = h5.floats(&self.part("data"), Some(range))?;
        Ok((indices, values))
    }

    /// The whole matrix as CSR `major x minor` (CSR storage) or, for CSC storage, its transpose
    /// turned into CSR, so the result is always cells x genes when `csc` says how it is stored.
    pub fn read(&self, h5: &H5, csc: bool) -> Result<CsMat<f32>> {
        let indptr = self.indptr(h5)?;
        let (indices, values) = self.entries(h5, 0..indptr[self.major])?;
        let (indptr, indices, values) = canonical(indptr, indices, values);
        let matrix = CsMat::try_new((self.major, self.minor), indptr, indices, values).map_err(
            |(.., e)| h5.err(&self.group, format!("not a valid compressed matrix: {e}")),
        )?;
        Ok(if csc {
            // Stored as CSC of cells x genes: the compressed axis is genes.
            matrix.transpose_into().to_csr()
        } else {
            matrix
        })
    }
}

/// Rows with strictly increasing indices, as `sprs` requires: rows written unsorted (scipy
/// allows it) are sorted, and duplicate entries summed (as scipy's `sum_duplicates` does).
pub(crate) fn canonical(
    indptr: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f32>,
) -> (Vec<usize>, Vec<usize>, Vec<f32>) {
    let sorted = indptr
        .windows(2)
        .all(|w| indices[w[0]..w[1]].windows(2).all(|p| p[0] < p[1]));
    if sorted {
        return (
            indptr,
            indices.into_iter().map(|j| j as usize).collect(),
            values,
        );
    }
    let mut out_ptr = Vec::with_capacity(indptr.len());
    let mut out_idx = Vec::with_capacity(indices.len());
    let mut out_val = Vec::with_capacity(values.len());
    out_ptr.push(0);
    let mut row: Vec<(u32, f32)> = Vec::new();
    for w in indptr.windows(2) {
        row.clear();
        row.extend(
            indices[w[0]..w[1]]
                .iter()
                .copied()
                .zip(values[w[0]..w[1]].iter().copied()),
        );
        row.sort_by_key(|&(j, _)| j);
        for &(j, v) in &row {
            match out_idx.last() {
                Some(&last)
                    if last == j as usize && out_idx.len() > *out_ptr.last().unwrap_or(&0) =>
                {
                    *out_val.last_mut().expect("a value per index") += v;
                }
                _ => {
                    out_idx.push(j as usize);
                    out_val.push(v);
                }
            }
        }
        out_ptr.push(out_idx.len());
    }
    (out_ptr, out_idx, out_val)
}

/// A dense 2-D dataset as CSR (zeros not stored), `rows` of it or all.
pub(crate) fn read_dense(h5: &H5, name: &str, rows: Option<Range<usize>>) -> Result<CsMat<f32>> {
    let ds = h5.dataset(name)?;
    let shape = ds.shape();
    let [n, m] = shape.as_slice() else {
        return Err(h5.err(
            name,
            format!("expected a 2-D matrix, found shape {shape:?}"),
        ));
    };
    let (n, m) = (*n, *m);
    let ty = crate::h5::descriptor(&ds).map_err(|e| h5.err(name, e))?;
    use hdf5::types::TypeDescriptor as T;
    if !matches!(ty, T::Integer(_) | T::Unsigned(_) | T::Float(_)) {
        return Err(h5.err(
            name,
            format!("expected numbers, found {}", crate::h5::type_name(&ty)),
        ));
    }
    let rows = rows.unwrap_or(0..n);
    if rows.end > n || rows.start > rows.end {
        return Err(h5.err(
            name,
            format!("rows {}..{} requested of {n}", rows.start, rows.end),
        ));
    }
    let block = ds
        .read_slice_2d::<f64, _>(ndarray::s![rows.clone(), ..])
        .map_err(|e| h5.err(name, format!("cannot read: {}", crate::h5::one_line(&e))))?;
    let mut indptr = Vec::with_capacity(rows.len() + 1);
    let mut indices = Vec::new();
    let mut values = Vec::new();
    indptr.push(0);
    for row in block.rows() {
        for (j, &v) in row.iter().enumerate() {
            if v != 0.0 {
                indices.push(j);
                values.push(v as f32);
            }
        }
        indptr.push(indices.len());
    }
    CsMat::try_new((rows.len(), m), indptr, indices, values)
        .map_err(|(.., e)| Error::hdf5(&h5.path, name, format!("cannot convert: {e}")))
}
