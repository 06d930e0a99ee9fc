//! Minibatches from a source: how cells reach a model without the whole matrix in memory as a
//! dense array.
//!
//! A [`BatchSource`] hands out the cells at given positions as a [`Batch`], a typed host-side
//! value: the values (sparse CSR rows for counts, dense rows for a log-normalised matrix), each
//! cell's library size when the values are counts, and the per-cell [`Fields`] a study attached
//! by key, as scvi-tools' registry does: the cell's label ([`keys::LABELS`]), the GMVAE's
//! pseudo-labels ([`keys::PSEUDO_LABELS`]), any categorical `obs` column a model asks for. A
//! model reads a field by its key and never learns where it came from, so a new covariate
//! enters at the source and at the model and nowhere between. The training loop decides the
//! order from its seed and asks the source for positions, so the order does not depend on the
//! source; the model crate turns a batch into tensors on its device, where it is made dense.
//!
//! Sources here keep their data in memory ([`CountRows`], [`DenseRows`]), each over a subset of
//! rows (a train or test split) without copying them. A source that reads blocks from a file
//! implements the same trait.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ndarray::ArrayView2;

use crate::{CountMatrix, Error, Result};

/// The values of a minibatch, row-major, `rows x genes`.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchValues {
    /// Every entry, row after row.
    Dense(Vec<f32>),
    /// CSR rows: row `r` holds `values[indptr[r]..indptr[r + 1]]` at columns `indices[..]`.
    Sparse {
        indptr: Vec<i64>,
        indices: Vec<i64>,
        values: Vec<f32>,
    },
}

/// The keys of the per-cell fields scae's own models read.
pub mod keys {
    /// The cell's label (`--labels`, `--labels-key`): label scores, a supervised `q(y | x)`.
    pub const LABELS: &str = "labels";
    /// The GMVAE's start: each cell's cluster in the latent space of a first VAE.
    pub const PSEUDO_LABELS: &str = "pseudo_labels";
}

/// A cell without a value in a categorical field (pandas' missing category, AnnData's `-1`).
pub const MISSING: i64 = -1;

/// Categorical per-cell fields by key: each cell's code into the field's categories, or
/// [`MISSING`]. A source holds them for its positions, a [`Batch`] for its rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(BTreeMap<String, Arc<[i64]>>);

impl Fields {
    /// The codes of field `key`, one per cell, when there is such a field.
    pub fn get(&self, key: &str) -> Option<&[i64]> {
        self.0.get(key).map(|codes| &codes[..])
    }

    /// The keys held, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Each field, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[i64])> {
        self.0.iter().map(|(key, codes)| (key.as_str(), &codes[..]))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds (or replaces) field `key` of a holder of `cells` cells.
    ///
    /// # Errors
    /// [`Error::Inconsistent`] when there is not one code per cell, or a code is below
    /// [`MISSING`].
    pub fn insert(&mut self, key: &str, codes: &[i64], cells: usize) -> Result<()> {
        let inconsistent = |reason: String| Error::Inconsistent {
            path: Path::new("<fields>").into(),
            reason,
        };
        if codes.len() != cells {
            return Err(inconsistent(format!(
                "{} values of `{key}` for a source of {cells} cells",
                codes.len()
            )));
        }
        if let Some(c) = codes.iter().find(|&&c| c < MISSING) {
            return Err(inconsistent(format!("`{key}` has the code {c}")));
        }
        self.0.insert(key.to_owned(), codes.into());
        Ok(())
    }

    /// Cells each field holds (0 without fields).
    pub fn cells(&self) -> usize {
        self.0.values().next().map_or(0, |codes| codes.len())
    }

    /// The fields of the cells at `positions`, in that order.
    ///
    /// # Panics
    /// When a position is out of range.
    pub fn subset(&self, positions: &[usize]) -> Self {
        Self(
            self.0
                .iter()
                .map(|(key, codes)| (key.clone(), positions.iter().map(|&p| codes[p]).collect()))
                .collect(),
        )
    }
}

/// One minibatch of cells, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub genes: usize,
    pub values: BatchValues,
    /// Each cell's total count (count sources only).
    pub library: Option<Vec<f32>>,
    /// The per-cell fields the source carries, one code per row.
    pub fields: Fields,
}

impl Batch {
    /// The batch as a dense row-major matrix (tests, small batches).
    pub fn to_dense(&self) -> Vec<f32> {
        match &self.values {
            BatchValues::Dense(values) => values.clone(),
            BatchValues::Sparse {
                indptr,
                indices,
                values,
            } => {
                let mut out = vec![0.0; self.rows * self.genes];
                for r in 0..self.rows {
                    for k in indptr[r] as usize..indptr[r + 1] as usize {
                        out[r * self.genes + indices[k] as usize] = values[k];
                    }
                }
                out
            }
        }
    }
}

/// Where a trainer's minibatches come from.
pub trait BatchSource: Sync {
    /// Cells this source holds; positions run over `0..cells()`.
    fn cells(&self) -> usize;

    /// Columns of every batch.
    fn genes(&self) -> usize;

    /// Announces a pass: the positions the next calls of [`BatchSource::batch`] will ask for, in
    /// `order`, cut into consecutive batches of the given `lengths` (they add up to the order's
    /// length; the trainer's last batch may be longer than the others, see
    /// `scae_models::batch_ranges`). A source that reads from a file starts reading ahead here
    /// ([`crate::BackedRows`]); sources in memory ignore it. A call that leaves the plan is
    /// still answered, directly.
    fn plan(&self, _order: &[usize], _lengths: &[usize]) {}

    /// The cells at `positions`, in that order.
    ///
    /// # Errors
    /// When the data cannot be read (a file source) or a position is out of range.
    fn batch(&self, positions: &[usize]) -> Result<Batch>;

    /// The cells as rows of one dense matrix in memory, when the source is one: the matrix and,
    /// for a subset, the row of each position. A trainer may then keep those rows on its device
    /// and gather each batch there instead of asking for it (the small dense input of the
    /// autoencoder questions); count sources say `None` and stay sparse.
    fn dense_rows(&self) -> Option<(ArrayView2<'_, f32>, Option<&[usize]>)> {
        None
    }

    /// The keys of the per-cell fields every batch carries.
    fn fields(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// Checks every position is below `cells`.
fn check_positions(positions: &[usize], cells: usize) -> Result<()> {
    match positions.iter().find(|&&p| p >= cells) {
        Some(p) => Err(Error::Inconsistent {
            path: Path::new("<batch>").into(),
            reason: format!("cell position {p} out of range for a source of {cells} cells"),
        }),
        None => Ok(()),
    }
}

/// Another source's cells with further per-cell fields (over the same positions): e.g. the
/// training cells of a split with the pseudo-labels of one phase of training.
pub struct WithFields<'a> {
    inner: &'a dyn BatchSource,
    fields: Fields,
}

impl<'a> WithFields<'a> {
    /// `inner`'s cells with field `key` (one code per position).
    ///
    /// # Errors
    /// As [`Fields::insert`].
    pub fn new(inner: &'a dyn BatchSource, key: &str, codes: &[i64]) -> Result<Self> {
        let mut fields = Fields::default();
        fields.insert(key, codes, inner.cells())?;
        Ok(Self { inner, fields })
    }
}

impl std::fmt::Debug for WithFields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (f.debug_struct("WithFields"))
            .field("cells", &self.inner.cells())
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl BatchSource for WithFields<'_> {
    fn cells(&self) -> usize {
        self.inner.cells()
    }

    fn genes(&self) -> usize {
        self.inner.genes()
    }

    fn plan(&self, order: &[usize], lengths: &[usize]) {
        self.inner.plan(order, lengths);
    }

    fn batch(&self, positions: &[usize]) -> Result<Batch> {
        let mut batch = self.inner.batch(positions)?;
        for (key, codes) in self.fields.subset(positions).iter() {
            batch.fields.insert(key, codes, batch.rows)?;
        }
        Ok(batch)
    }

    fn dense_rows(&self) -> Option<(ArrayView2<'_, f32>, Option<&[usize]>)> {
        self.inner.dense_rows()
    }

    fn fields(&self) -> Vec<&str> {
        let mut keys = self.inner.fields();
        keys.extend(
            self.fields
                .keys()
                .filter(|k| !keys.contains(k))
                .collect::<Vec<_>>(),
        );
        keys.sort_unstable();
        keys
    }
}

/// Counts in memory: some rows of a [`CountMatrix`] (all of them, or a split), sparse batches
/// with library sizes.
#[derive(Debug, Clone)]
pub struct CountRows<'a> {
    counts: &'a CountMatrix,
    /// Matrix row of each position; `None`: position = row.
    rows: Option<Cow<'a, [usize]>>,
    fields: Fields,
}

impl<'a> CountRows<'a> {
    /// Every cell of `counts`.
    pub fn all(counts: &'a CountMatrix) -> Self {
        Self {
            counts,
            rows: None,
            fields: Fields::default(),
        }
    }

    /// The cells at `rows` of `counts` (e.g. a training split), in that order.
    ///
    /// # Errors
    /// [`Error::Inconsistent`] when a row is out of range.
    pub fn subset(counts: &'a CountMatrix, rows: &'a [usize]) -> Result<Self> {
        check_positions(rows, counts.cells())?;
        Ok(Self {
            counts,
            rows: Some(Cow::Borrowed(rows)),
            fields: Fields::default(),
        })
    }

    /// The same cells with field `key` (one code per position, [`MISSING`] for a cell without
    /// a value), carried by every batch.
    ///
    /// # Errors
    /// As [`Fields::insert`].
    pub fn with_field(mut self, key: &str, codes: &[i64]) -> Result<Self> {
        let cells = self.cells();
        self.fields.insert(key, codes, cells)?;
        Ok(self)
    }

    /// The same cells with every field of `fields` (over the same positions).
    ///
    /// # Errors
    /// As [`CountRows::with_field`].
    pub fn with_fields(self, fields: &Fields) -> Result<Self> {
        fields
            .iter()
            .try_fold(self, |rows, (key, codes)| rows.with_field(key, codes))
    }

    fn row_of(&self, position: usize) -> usize {
        self.rows.as_ref().map_or(position, |rows| rows[position])
    }
}

impl BatchSource for CountRows<'_> {
    fn cells(&self) -> usize {
        self.rows.as_ref().map_or(self.counts.cells(), |r| r.len())
    }

    fn genes(&self) -> usize {
        self.counts.genes()
    }

    fn fields(&self) -> Vec<&str> {
        self.fields.keys().collect()
    }

    fn batch(&self, positions: &[usize]) -> Result<Batch> {
        check_positions(positions, self.cells())?;
        let rows: Vec<_> = positions
            .iter()
            .map(|&p| self.counts.row(self.row_of(p)))
            .collect();
        let fields = self.fields.subset(positions);
        Ok(Batch::of_count_rows(self.genes(), &rows, fields))
    }
}

impl Batch {
    /// A sparse batch of count rows (columns and values each), with each row's total as its
    /// library size; stored zeros are left out.
    pub(crate) fn of_count_rows(genes: usize, rows: &[(&[usize], &[f32])], fields: Fields) -> Self {
        let nnz = rows.iter().map(|(cols, _)| cols.len()).sum();
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        let mut indices = Vec::with_capacity(nnz);
        let mut values = Vec::with_capacity(nnz);
        let mut library = Vec::with_capacity(rows.len());
        indptr.push(0);
        for &(cols, counts) in rows {
            // A fold rather than `all`: without the early exit the check runs in SIMD.
            if counts.iter().fold(true, |ok, &v| ok & (v != 0.0)) {
                indices.extend(cols.iter().map(|&j| j as i64));
                values.extend_from_slice(counts);
            } else {
                for (&j, &v) in cols.iter().zip(counts).filter(|&(_, &v)| v != 0.0) {
                    indices.push(j as i64);
                    values.push(v);
                }
            }
            library.push(sum(counts) as f32);
            indptr.push(indices.len() as i64);
        }
        Self {
            rows: rows.len(),
            genes,
            values: BatchValues::Sparse {
                indptr,
                indices,
                values,
            },
            library: Some(library),
            fields,
        }
    }
}

/// `Σ v` in `f64`, over four running sums (one long chain of dependent additions is several
/// times slower); exact for counts.
fn sum(v: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 4];
    let mut quads = v.chunks_exact(4);
    for quad in quads.by_ref() {
        for (lane, &x) in lanes.iter_mut().zip(quad) {
            *lane += f64::from(x);
        }
    }
    let rest: f64 = quads.remainder().iter().map(|&x| f64::from(x)).sum();
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + rest
}

/// A dense matrix in memory (the log-normalised input of the autoencoder questions): some or
/// all of its rows, dense batches without library sizes.
#[derive(Debug, Clone)]
pub struct DenseRows<'a> {
    x: ArrayView2<'a, f32>,
    rows: Option<Cow<'a, [usize]>>,
}

impl<'a> DenseRows<'a> {
    /// Every row of `x`.
    pub fn all(x: ArrayView2<'a, f32>) -> Self {
        Self { x, rows: None }
    }

    /// The rows of `x` at `rows`, in that order.
    ///
    /// # Errors
    /// [`Error::Inconsistent`] when a row is out of range.
    pub fn subset(x: ArrayView2<'a, f32>, rows: &'a [usize]) -> Result<Self> {
        check_positions(rows, x.nrows())?;
        Ok(Self {
            x,
            rows: Some(Cow::Borrowed(rows)),
        })
    }
}

impl BatchSource for DenseRows<'_> {
    fn cells(&self) -> usize {
        self.rows.as_ref().map_or(self.x.nrows(), |r| r.len())
    }

    fn genes(&self) -> usize {
        self.x.ncols()
    }

    fn batch(&self, positions: &[usize]) -> Result<Batch> {
        check_positions(positions, self.cells())?;
        let genes = self.genes();
        let mut values = Vec::with_capacity(positions.len() * genes);
        for &p in positions {
            let row = self.rows.as_ref().map_or(p, |rows| rows[p]);
            values.extend(self.x.row(row).iter().copied());
        }
        Ok(Batch {
            rows: positions.len(),
            genes,
            values: BatchValues::Dense(values),
            library: None,
            fields: Fields::default(),
        })
    }

    fn dense_rows(&self) -> Option<(ArrayView2<'_, f32>, Option<&[usize]>)> {
        Some((self.x.view(), self.rows.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    #[test]
    fn count_batches_are_the_rows_asked_for_with_their_libraries_and_fields() {
        let x = array![[0.0f32, 3.0, 0.0], [1.0, 0.0, 2.0], [0.0, 0.0, 5.0]];
        let counts = CountMatrix::from_dense(x.view(), Path::new("x")).expect("counts");
        let rows = [2, 0];
        let source = CountRows::subset(&counts, &rows)
            .expect("in range")
            .with_field(keys::LABELS, &[7, MISSING])
            .expect("one label per cell")
            .with_field("batch", &[0, 1])
            .expect("one batch per cell");
        assert_eq!((source.cells(), source.genes()), (2, 3));
        let batch = source.batch(&[1, 0, 1]).expect("in range");
        assert_eq!(
            batch.to_dense(),
            [0.0, 3.0, 0.0, 0.0, 0.0, 5.0, 0.0, 3.0, 0.0]
        );
        assert_eq!(batch.library, Some(vec![3.0, 5.0, 3.0]));
        assert_eq!(batch.fields.get(keys::LABELS), Some(&[-1, 7, -1][..]));
        assert_eq!(batch.fields.get("batch"), Some(&[1, 0, 1][..]));
        assert_eq!(source.fields(), ["batch", keys::LABELS]);
        assert!(source.batch(&[2]).is_err());
        assert!(CountRows::subset(&counts, &[3]).is_err());
        assert!(CountRows::all(&counts).with_field("b", &[1]).is_err());
        assert!(
            CountRows::all(&counts)
                .with_field("b", &[0, 0, -2])
                .is_err()
        );
    }

    #[test]
    fn dense_batches_copy_the_rows_asked_for() {
        let x = array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
        let rows = [1, 2];
        let source = DenseRows::subset(x.view(), &rows).expect("in range");
        let batch = source.batch(&[1, 0]).expect("in range");
        assert_eq!(batch.to_dense(), [5.0, 6.0, 3.0, 4.0]);
        assert_eq!(batch.library, None);
        assert_eq!(DenseRows::all(x.view()).cells(), 3);
    }
}
