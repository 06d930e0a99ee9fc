//! Minibatches from a source: how cells reach a model without the whole matrix in memory as a
//! dense array.
//!
//! A [`BatchSource`] hands out the cells at given positions as a [`Batch`], a typed host-side
//! value: the values (sparse CSR rows for counts, dense rows for a log-normalised matrix), each
//! cell's library size when the values are counts, and its label when a study attached labels
//! (the supervised `q(y | x)` of the GMVAE takes them from here). The training loop decides the
//! order from its seed and asks the source for positions, so the order does not depend on the
//! source; the model crate turns a batch into tensors on its device, where it is made dense.
//!
//! Sources here keep their data in memory ([`CountRows`], [`DenseRows`]), each over a subset of
//! rows (a train or test split) without copying them. A source that reads blocks from a file
//! implements the same trait.

use std::borrow::Cow;
use std::path::Path;

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

/// One minibatch of cells, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub genes: usize,
    pub values: BatchValues,
    /// Each cell's total count (count sources only).
    pub library: Option<Vec<f32>>,
    /// Each cell's label, when the source carries labels.
    pub labels: Option<Vec<i64>>,
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

    /// Whether batches carry labels.
    fn has_labels(&self) -> bool {
        false
    }

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

/// Labels, one per row of a source, checked against its length.
fn check_labels(labels: &[usize], cells: usize) -> Result<Vec<i64>> {
    if labels.len() != cells {
        return Err(Error::Inconsistent {
            path: Path::new("<labels>").into(),
            reason: format!("{} labels for a source of {cells} cells", labels.len()),
        });
    }
    Ok(labels.iter().map(|&l| l as i64).collect())
}

/// Counts in memory: some rows of a [`CountMatrix`] (all of them, or a split), sparse batches
/// with library sizes.
#[derive(Debug, Clone)]
pub struct CountRows<'a> {
    counts: &'a CountMatrix,
    /// Matrix row of each position; `None`: position = row.
    rows: Option<Cow<'a, [usize]>>,
    labels: Option<Vec<i64>>,
}

impl<'a> CountRows<'a> {
    /// Every cell of `counts`.
    pub fn all(counts: &'a CountMatrix) -> Self {
        Self {
            counts,
            rows: None,
            labels: None,
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
            labels: None,
        })
    }

    /// The same cells with a label each (in position order), carried by every batch.
    ///
    /// # Errors
    /// [`Error::Inconsistent`] when the number of labels is not the number of cells.
    pub fn with_labels(mut self, labels: &[usize]) -> Result<Self> {
        self.labels = Some(check_labels(labels, self.cells())?);
        Ok(self)
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

    fn has_labels(&self) -> bool {
        self.labels.is_some()
    }

    fn batch(&self, positions: &[usize]) -> Result<Batch> {
        check_positions(positions, self.cells())?;
        let rows: Vec<_> = positions
            .iter()
            .map(|&p| self.counts.row(self.row_of(p)))
            .collect();
        let labels = self
            .labels
            .as_ref()
            .map(|l| positions.iter().map(|&p| l[p]).collect());
        Ok(Batch::of_count_rows(self.genes(), &rows, labels))
    }
}

impl Batch {
    /// A sparse batch of count rows (columns and values each), with each row's total as its
    /// library size; stored zeros are left out.
    pub(crate) fn of_count_rows(
        genes: usize,
        rows: &[(&[usize], &[f32])],
        labels: Option<Vec<i64>>,
    ) -> Self {
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
            labels,
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
            labels: None,
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
    fn count_batches_are_the_rows_asked_for_with_their_libraries_and_labels() {
        let x = array![[0.0f32, 3.0, 0.0], [1.0, 0.0, 2.0], [0.0, 0.0, 5.0]];
        let counts = CountMatrix::from_dense(x.view(), Path::new("x")).expect("counts");
        let rows = [2, 0];
        let source = CountRows::subset(&counts, &rows)
            .expect("in range")
            .with_labels(&[7, 8])
            .expect("one label per cell");
        assert_eq!((source.cells(), source.genes()), (2, 3));
        let batch = source.batch(&[1, 0, 1]).expect("in range");
        assert_eq!(
            batch.to_dense(),
            [0.0, 3.0, 0.0, 0.0, 0.0, 5.0, 0.0, 3.0, 0.0]
        );
        assert_eq!(batch.library, Some(vec![3.0, 5.0, 3.0]));
        assert_eq!(batch.labels, Some(vec![8, 7, 8]));
        assert!(source.batch(&[2]).is_err());
        assert!(CountRows::subset(&counts, &[3]).is_err());
        assert!(CountRows::all(&counts).with_labels(&[1]).is_err());
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
