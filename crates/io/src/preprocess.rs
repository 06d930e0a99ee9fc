//! From raw counts to the autoencoder's input: library-size normalisation, `log1p`, and the most
//! variable genes; and raw counts checked for the count likelihoods.
//!
//! [`preprocess`] is the standard recipe in its simplest form:
//!
//! 1. scale each cell to [`TARGET_SUM`] (10,000) counts in total, `x * 10_000 / total` (a cell
//!    with no counts stays all zeros, where scanpy would divide by zero);
//! 2. take `ln(1 + x)`;
//! 3. keep the `n` genes whose log-normalised values vary most across cells
//!    ([`DEFAULT_N_TOP_GENES`] = 1000 by default), in their original order.
//!
//! The gene criterion is the plain variance of the log-normalised values, ties broken by the lower
//! gene index. It is *not* scanpy's `highly_variable_genes` (whose default `seurat` flavor ranks
//! genes by a dispersion normalised within bins of mean expression), so the selected genes overlap
//! with scanpy's but are not the same set.
//!
//! Everything stays sparse until the last step, which densifies only the kept genes, so a matrix
//! of many genes costs memory in proportion to its nonzeros, plus the cells x `n` result.

use std::convert::Infallible;
use std::path::Path;

use ndarray::Array2;
use sprs::CsMat;

use crate::npy::is_count;
use crate::{Error, Result};

/// The total every cell is scaled to before `log1p`.
pub const TARGET_SUM: f64 = 10_000.0;

/// How many genes [`preprocess`] keeps unless told otherwise.
pub const DEFAULT_N_TOP_GENES: usize = 1000;

/// The output of [`preprocess`].
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    /// Log-normalised values of the kept genes, cells x genes, standard layout.
    pub x: Array2<f32>,
    /// Column indices of the kept genes in the input matrix, ascending; column `j` of `x` is gene
    /// `genes[j]`.
    pub genes: Vec<usize>,
}

/// Normalises, log-transforms and keeps the `n_top_genes` most variable genes (all of them if
/// there are fewer); see the [module docs](self) for the recipe.
///
/// `counts` is cells x genes, CSR (a CSC matrix is converted first), and should hold counts:
/// negative values make the logarithm meaningless (check with [`raw_counts`]).
pub fn preprocess(counts: &CsMat<f32>, n_top_genes: usize) -> Preprocessed {
    let lognorm = log_normalize(counts);
    let genes = top_variable_genes(&lognorm, n_top_genes);
    let Ok(x) = dense_columns(&lognorm, &genes, |_, _, v| Ok::<_, Infallible>(v));
    tracing::debug!(
        cells = x.nrows(),
        genes_in = counts.cols(),
        genes_kept = x.ncols(),
        "preprocessed counts"
    );
    Preprocessed { x, genes }
}

/// Normalises and log-transforms as [`preprocess`] does, then keeps the columns `genes` (in that
/// order, each once): the input of a model trained on those genes, for new data.
///
/// # Panics
/// If a column index is out of range or repeated.
pub fn preprocess_genes(counts: &CsMat<f32>, genes: &[usize]) -> Preprocessed {
    let lognorm = log_normalize(counts);
    let Ok(x) = dense_columns(&lognorm, genes, |_, _, v| Ok::<_, Infallible>(v));
    Preprocessed {
        x,
        genes: genes.to_vec(),
    }
}

/// `ln(1 + x * TARGET_SUM / total)` for every stored value, `total` being its cell's (row's) sum;
/// the values of a cell whose total is 0 stay 0. Returns CSR with the sparsity of `counts`.
///
/// The scaling and logarithm are computed in `f64`, then stored as `f32`.
pub fn log_normalize(counts: &CsMat<f32>) -> CsMat<f32> {
    let mut out = counts.to_csr();
    for mut row in out.outer_iterator_mut() {
        let total: f64 = row.data().iter().map(|&v| f64::from(v)).sum();
        let scale = if total > 0.0 { TARGET_SUM / total } else { 0.0 };
        row.map_inplace(|&v| (f64::from(v) * scale).ln_1p() as f32);
    }
    out
}

/// The variance of each gene (column) across all cells (rows), zeros included: the population
/// variance `mean(x^2) - mean(x)^2`, accumulated in `f64` (the ranking would be the same with
/// Bessel's correction).
pub fn gene_variances(x: &CsMat<f32>) -> Vec<f64> {
    let mut sum = vec![0.0_f64; x.cols()];
    let mut sum_sq = vec![0.0_f64; x.cols()];
    for (&v, (_, gene)) in x {
        let v = f64::from(v);
        sum[gene] += v;
        sum_sq[gene] += v * v;
    }
    variances(&sum, &sum_sq, x.rows())
}

/// The population variance of each gene from its sum and sum of squares over `cells` cells.
fn variances(sum: &[f64], sum_sq: &[f64], cells: usize) -> Vec<f64> {
    let n = cells.max(1) as f64;
    (sum.iter().zip(sum_sq))
        .map(|(&s, &sq)| ((sq - s * s / n) / n).max(0.0))
        .collect()
}

/// Indices of the `n` genes of highest [`gene_variances`] (all genes if there are fewer than
/// `n`), ties broken by the lower index, returned in ascending order.
pub fn top_variable_genes(x: &CsMat<f32>, n: usize) -> Vec<usize> {
    top_of(&gene_variances(x), n)
}

/// Indices of the `n` highest `variances`, ties broken by the lower index, ascending.
fn top_of(variances: &[f64], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..variances.len()).collect();
    order.sort_unstable_by(|&a, &b| variances[b].total_cmp(&variances[a]).then(a.cmp(&b)));
    order.truncate(n);
    order.sort_unstable();
    order
}

/// Each gene's log-normalised values summed over cells as they come, a block of rows at a time:
/// [`top_variable_genes`] of [`log_normalize`]d counts without holding them (the same numbers,
/// in the same order, so the same genes in memory and read from a file). Cells without any count
/// are left out, as the count commands drop them.
#[derive(Debug, Clone)]
pub struct GeneMoments {
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    cells: usize,
}

impl GeneMoments {
    /// No cells yet, of `genes` genes.
    pub fn new(genes: usize) -> Self {
        Self {
            sum: vec![0.0; genes],
            sum_sq: vec![0.0; genes],
            cells: 0,
        }
    }

    /// Adds the cells (rows, CSR) of raw counts `counts`.
    ///
    /// # Panics
    /// If `counts` has more genes than [`GeneMoments::new`] was given.
    pub fn add(&mut self, counts: &CsMat<f32>) {
        for row in counts.outer_iterator() {
            let total: f64 = row.data().iter().map(|&v| f64::from(v)).sum();
            if total <= 0.0 {
                continue;
            }
            let scale = TARGET_SUM / total;
            for (gene, &v) in row.iter() {
                let x = f64::from((f64::from(v) * scale).ln_1p() as f32);
                self.sum[gene] += x;
                self.sum_sq[gene] += x * x;
            }
            self.cells += 1;
        }
    }

    /// The `n` genes of highest variance (every gene when there are at most `n`), ascending.
    pub fn top(&self, n: usize) -> Vec<usize> {
        top_of(&variances(&self.sum, &self.sum_sq, self.cells), n)
    }
}

/// The raw counts, dense, of the given genes (columns, in that order, e.g.
/// [`Preprocessed::genes`] so that the counts line up with the preprocessed input) or of all
/// genes, checked to be non-negative integers as the count likelihoods (Poisson, negative
/// binomial and their zero-inflated kin) require.
///
/// `source` is the file the counts were read from (e.g. `TenxMatrix::files.matrix`), named in the
/// error. `counts` is cells x genes, CSR (a CSC matrix is converted first).
///
/// # Errors
/// [`Error::NotCount`] for the first value (in row-major order) among the returned ones that is
/// negative, fractional or not finite, with its cell (row) and gene (column of `counts`).
///
/// # Panics
/// If a gene index is out of range or repeated.
pub fn raw_counts(
    counts: &CsMat<f32>,
    genes: Option<&[usize]>,
    source: &Path,
) -> Result<Array2<f32>> {
    let all: Vec<usize>;
    let genes = match genes {
        Some(genes) => genes,
        None => {
            all = (0..counts.cols()).collect();
            &all
        }
    };
    dense_columns(counts, genes, |row, col, value| {
        if is_count(value) && value.is_finite() {
            Ok(value)
        } else {
            Err(Error::NotCount {
                path: source.into(),
                row,
                col,
                value,
            })
        }
    })
}

/// The given columns of `matrix`, dense, each stored value passed through `check(row, col, v)`
/// (`col` being the column in `matrix`).
///
/// # Panics
/// If a column index is out of range or repeated.
fn dense_columns<E>(
    matrix: &CsMat<f32>,
    columns: &[usize],
    mut check: impl FnMut(usize, usize, f32) -> std::result::Result<f32, E>,
) -> std::result::Result<Array2<f32>, E> {
    if matrix.is_csc() {
        return dense_columns(&matrix.to_csr(), columns, check);
    }
    // For each column of `matrix`, its position in the output, or `usize::MAX` if not kept.
    let mut position = vec![usize::MAX; matrix.cols()];
    for (k, &c) in columns.iter().enumerate() {
        assert!(
            c < matrix.cols(),
            "gene {c} out of range for {} genes",
            matrix.cols()
        );
        assert!(position[c] == usize::MAX, "gene {c} is selected twice");
        position[c] = k;
    }
    let mut out = Array2::zeros((matrix.rows(), columns.len()));
    for (i, (mut dst, row)) in (out.rows_mut().into_iter().zip(matrix.outer_iterator())).enumerate()
    {
        for (&j, &v) in row.indices().iter().zip(row.data()) {
            let k = position[j];
            if k != usize::MAX {
                dst[k] = check(i, j, v)?;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_10x;
    use crate::test_support::shared_data;
    use approx::assert_abs_diff_eq;
    use ndarray::{Zip, array};
    use std::time::Instant;

    /// 3 cells x 4 genes: totals 4, 0 and 4.
    fn tiny() -> CsMat<f32> {
        CsMat::new(
            (3, 4),
            vec![0, 2, 2, 4],
            vec![0, 2, 1, 2],
            vec![1.0, 3.0, 2.0, 2.0],
        )
    }

    fn assert_close(actual: &Array2<f32>, expected: &Array2<f32>) {
        assert_eq!(actual.shape(), expected.shape());
        Zip::from(actual)
            .and(expected)
            .for_each(|&a, &e| assert_abs_diff_eq!(a, e, epsilon = 1e-5));
    }

    #[test]
    fn tiny_matrix_by_hand() {
        // Cell 0 is scaled by 10000 / 4 = 2500: counts 1 and 3 become 2500 and 7500; cell 2's
        // counts 2 and 2 become 5000 and 5000; cell 1 has no counts and stays 0.
        let (a, b, c) = (2501.0_f64.ln(), 5001.0_f64.ln(), 7501.0_f64.ln());
        let lognorm = log_normalize(&tiny());
        let dense = crate::to_dense(&lognorm);
        let expected = array![[a, 0., c, 0.], [0., 0., 0., 0.], [0., b, b, 0.]].mapv(|v| v as f32);
        assert_close(&dense, &expected);

        // Population variances over the 3 cells: gene 0 has one value a, so 2a^2/9; gene 1
        // 2b^2/9; gene 2 (c^2 + b^2)/3 - ((c + b)/3)^2; gene 3 none.
        let var = gene_variances(&lognorm);
        let expected = [
            2. * a * a / 9.,
            2. * b * b / 9.,
            (c * c + b * b) / 3. - ((c + b) / 3.).powi(2),
            0.,
        ];
        for (v, e) in var.iter().zip(expected) {
            assert_abs_diff_eq!(*v, e, epsilon = 1e-4); // the values are f32
        }
        // 16.93 > 16.12 > 13.60 > 0: genes 2 and 1 are kept, in their original order.
        let p = preprocess(&tiny(), 2);
        assert_eq!(p.genes, [1, 2]);
        let expected = array![[0., c], [0., 0.], [b, b]].mapv(|v| v as f32);
        assert_close(&p.x, &expected);
    }

    #[test]
    fn ties_go_to_the_lower_index_and_n_is_capped() {
        // Cell 0 holds 8, 1, 0, 1 (total 10), cell 1 holds 0, 1, 0, 1 (total 2): genes 1 and 3
        // are identical, so tied; gene 0 varies most, gene 2 not at all.
        let counts = CsMat::new(
            (2, 4),
            vec![0, 3, 5],
            vec![0, 1, 3, 1, 3],
            vec![8.0, 1.0, 1.0, 1.0, 1.0],
        );
        assert_eq!(top_variable_genes(&log_normalize(&counts), 2), [0, 1]);
        assert_eq!(
            top_variable_genes(&log_normalize(&counts), 10),
            [0, 1, 2, 3]
        );
        let p = preprocess(&counts, 0);
        assert_eq!((p.x.shape(), p.genes.len()), ([2, 0].as_slice(), 0));
    }

    #[test]
    fn csc_input_gives_the_same_result() {
        assert_eq!(preprocess(&tiny().to_csc(), 3), preprocess(&tiny(), 3));
    }

    #[test]
    fn raw_counts_checks_and_selects() -> Result<()> {
        let source = Path::new("matrix.mtx.gz");
        let all = raw_counts(&tiny(), None, source)?;
        assert_eq!(
            all,
            array![[1.0_f32, 0., 3., 0.], [0., 0., 0., 0.], [0., 2., 2., 0.]]
        );
        let some = raw_counts(&tiny(), Some(&[2, 0]), source)?;
        assert_eq!(some, array![[3.0_f32, 1.], [0., 0.], [2., 0.]]);

        let bad = CsMat::new((2, 3), vec![0, 1, 3], vec![0, 0, 2], vec![1.0, 2.0, -1.5]);
        let err = raw_counts(&bad, None, source).expect_err("-1.5");
        assert!(
            matches!(err, Error::NotCount { row: 1, col: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("matrix.mtx.gz"), "{err}");
        // The bad value is in a gene that is not asked for.
        assert_eq!(
            raw_counts(&bad, Some(&[0]), source)?,
            array![[1.0_f32], [2.0]]
        );
        for value in [f32::NAN, f32::INFINITY] {
            let m = CsMat::new((1, 1), vec![0, 1], vec![0], vec![value]);
            let err = raw_counts(&m, None, source).expect_err("not finite");
            assert!(matches!(err, Error::NotCount { .. }), "{err:?}");
        }
        Ok(())
    }

    #[test]
    fn shared_worm_neuron_preprocessed() -> Result<()> {
        let Some(dir) = shared_data("worm_neuron") else {
            return Ok(());
        };
        let m = read_10x(&dir)?;
        let start = Instant::now();
        let p = preprocess(&m.counts, DEFAULT_N_TOP_GENES);
        eprintln!(
            "preprocessed worm_neuron in {:.3} s",
            start.elapsed().as_secs_f64()
        );
        assert_eq!(p.x.shape(), [4186, 1000]);
        assert!(p.x.is_standard_layout());
        assert!(p.x.iter().all(|v| v.is_finite() && *v >= 0.0));
        assert!(p.genes.windows(2).all(|w| w[0] < w[1]));
        assert!(p.x.iter().any(|&v| v > 0.0));

        // Every cell with counts sums to TARGET_SUM after normalisation, before the selection.
        let lognorm = log_normalize(&m.counts);
        for row in lognorm.outer_iterator().take(50) {
            let total: f64 = row.data().iter().map(|&v| f64::from(v).exp_m1()).sum();
            assert_abs_diff_eq!(total, TARGET_SUM, epsilon = 1e-2);
        }

        let raw = raw_counts(&m.counts, Some(&p.genes), &m.files.matrix)?;
        assert_eq!(raw.shape(), [4186, 1000]);
        Zip::from(&raw)
            .and(&p.x)
            .for_each(|&r, &x| assert_eq!(r == 0.0, x == 0.0));
        Ok(())
    }
}
