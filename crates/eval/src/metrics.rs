//! Clustering scores: agreement of a clustering with known labels (adjusted
//! Rand index, normalised mutual information, accuracy after Hungarian
//! matching) and the label-free silhouette score.
//!
//! Labels are `&[usize]` with arbitrary values: only equality matters, so
//! `[7, 7, 3]` and `[0, 0, 1]` are the same labelling. The three agreement
//! scores are computed from the contingency table `n_ij` (cells with true
//! class `i` and predicted cluster `j`), its row sums `a_i`, column sums `b_j`
//! and `N = sum_ij n_ij`; only its non-zero entries are stored, so a labelling
//! with thousands of distinct values costs no `classes x clusters` memory
//! (except for [`hungarian_accuracy`], which needs the dense table). Every
//! convention, edge cases included, is scikit-learn's (1.9), against which
//! `tests/golden.rs` checks these functions.

use ndarray::{ArrayView2, Axis};
use pathfinding::prelude::{Matrix, kuhn_munkres};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::dense::{Rows, sq_dist};
use crate::error::{Error, Result, check_finite};

/// Above this many cells [`silhouette_score`] scores a seeded random subsample
/// of this size (the exact score costs `O(n^2)` distances).
pub const SILHOUETTE_MAX_CELLS: usize = 10_000;

/// Labels recoded to `0..k` in order of value; returns the codes and `k`.
pub(crate) fn encode(labels: &[usize]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_unstable_by_key(|&i| labels[i]);
    let mut codes = vec![0; labels.len()];
    let mut k = 0;
    for (pos, &i) in order.iter().enumerate() {
        if pos > 0 && labels[i] != labels[order[pos - 1]] {
            k += 1;
        }
        codes[i] = k;
    }
    (codes, if labels.is_empty() { 0 } else { k + 1 })
}

/// The sparse contingency table of two labellings of the same `n` cells.
#[derive(Debug)]
struct Contingency {
    /// Non-zero cells `(class, cluster, count)`.
    entries: Vec<(usize, usize, u64)>,
    /// Row sums `a_i`: cells per true class.
    classes: Vec<u64>,
    /// Column sums `b_j`: cells per predicted cluster.
    clusters: Vec<u64>,
    /// Number of cells `N`.
    n: u64,
}

impl Contingency {
    fn new(truth: &[usize], pred: &[usize]) -> Result<Self> {
        if truth.len() != pred.len() {
            return Err(Error::LabelLengthMismatch {
                truth: truth.len(),
                pred: pred.len(),
            });
        }
        if truth.is_empty() {
            return Err(Error::NoSamples);
        }
        let ((t, nt), (p, np)) = (encode(truth), encode(pred));
        let mut pairs: Vec<(usize, usize)> = t.into_iter().zip(p).collect();
        pairs.sort_unstable();
        let mut entries: Vec<(usize, usize, u64)> = Vec::new();
        let (mut classes, mut clusters) = (vec![0; nt], vec![0; np]);
        for (i, j) in pairs {
            classes[i] += 1;
            clusters[j] += 1;
            match entries.last_mut() {
                Some((a, b, c)) if (*a, *b) == (i, j) => *c += 1,
                _ => entries.push((i, j, 1)),
            }
        }
        Ok(Self {
            entries,
            classes,
            clusters,
            n: truth.len() as u64,
        })
    }
}

/// Adjusted Rand index (Hubert & Arabie 1985) of a clustering against the truth.
///
/// From the pair-confusion counts over ordered pairs of distinct cells
/// (scikit-learn's `pair_confusion_matrix`), with `S = sum_ij n_ij^2`:
/// `tp = S - N`, `fp = sum_j b_j^2 - S`, `fn = sum_i a_i^2 - S`,
/// `tn = N^2 - fp - fn - S`, and
///
/// `ARI = 2 (tp tn - fn fp) / ((tp + fn)(fn + tn) + (tp + fp)(fp + tn))`,
///
/// which is 1 for identical partitions, about 0 for independent ones and can
/// be negative. When `fn = fp = 0` (identical partitions, including a single
/// cell or both labellings constant) it is 1. Counts are exact (`i128`).
///
/// # Errors
/// [`Error::LabelLengthMismatch`] if the lengths differ, [`Error::NoSamples`]
/// if they are empty.
pub fn adjusted_rand_index(truth: &[usize], pred: &[usize]) -> Result<f64> {
    let c = Contingency::new(truth, pred)?;
    let sq = |v: &[u64]| v.iter().map(|&x| i128::from(x).pow(2)).sum::<i128>();
    let s: i128 = c
        .entries
        .iter()
        .map(|&(_, _, x)| i128::from(x).pow(2))
        .sum();
    let n = i128::from(c.n);
    let tp = s - n;
    let fp = sq(&c.clusters) - s;
    let fn_ = sq(&c.classes) - s;
    let tn = n * n - fp - fn_ - s;
    if fn_ == 0 && fp == 0 {
        return Ok(1.0);
    }
    let num = 2 * (tp * tn - fn_ * fp);
    let den = (tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn);
    Ok(num as f64 / den as f64)
}

/// Entropy `H = -sum_i (a_i / N) ln(a_i / N)` of a labelling's class sizes, in nats.
fn entropy(counts: &[u64], n: u64) -> f64 {
    let ln_n = (n as f64).ln();
    -counts
        .iter()
        .map(|&a| (a as f64 / n as f64) * ((a as f64).ln() - ln_n))
        .sum::<f64>()
}

/// Normalised mutual information with arithmetic normalisation (scikit-learn's
/// default `average_method="arithmetic"`):
///
/// `MI = sum_ij (n_ij / N) ln(N n_ij / (a_i b_j))`,
/// `NMI = MI / ((H(truth) + H(pred)) / 2)`,
///
/// with natural logarithms and `H = -sum_i (a_i / N) ln(a_i / N)`. Edge cases as in
/// scikit-learn: 1 when both labellings are constant, 0 when exactly one is
/// (then `MI = 0`); terms of `MI` below `f64::EPSILON` in magnitude count as 0.
///
/// # Errors
/// [`Error::LabelLengthMismatch`] if the lengths differ, [`Error::NoSamples`]
/// if they are empty.
pub fn normalized_mutual_info(truth: &[usize], pred: &[usize]) -> Result<f64> {
    let c = Contingency::new(truth, pred)?;
    match (c.classes.len(), c.clusters.len()) {
        (1, 1) => return Ok(1.0),
        (1, _) | (_, 1) => return Ok(0.0),
        _ => {}
    }
    let n = c.n as f64;
    let mi: f64 = c
        .entries
        .iter()
        .map(|&(i, j, x)| {
            let (x, a, b) = (x as f64, c.classes[i] as f64, c.clusters[j] as f64);
            let term = (x / n) * (n.ln() + x.ln() - a.ln() - b.ln());
            if term.abs() < f64::EPSILON { 0.0 } else { term }
        })
        .sum::<f64>()
        .max(0.0);
    if mi == 0.0 {
        return Ok(0.0);
    }
    let h = (entropy(&c.classes, c.n) + entropy(&c.clusters, c.n)) / 2.0;
    Ok(mi / h)
}

/// Clustering accuracy: the fraction of cells whose cluster maps to their true
/// class under the one-to-one map of clusters to classes that maximises it,
///
/// `acc = max_sigma sum_j n_{sigma(j), j} / N`,
///
/// found with the Hungarian algorithm (`pathfinding::kuhn_munkres`, `O(m^3)`
/// for `m = max(#classes, #clusters)`). With more clusters than classes the
/// surplus clusters map to nothing and their cells count as wrong; with fewer,
/// the surplus classes are never predicted. 1 means a perfect relabelling.
///
/// # Errors
/// [`Error::LabelLengthMismatch`] if the lengths differ, [`Error::NoSamples`]
/// if they are empty.
pub fn hungarian_accuracy(truth: &[usize], pred: &[usize]) -> Result<f64> {
    let m = hungarian(truth, pred)?;
    Ok(m.matched as f64 / m.n as f64)
}

/// The one-to-one matching of true classes to predicted clusters that [`hungarian_accuracy`]
/// scores: `(class, cluster)` pairs of label values, sorted by class. With more clusters than
/// classes the surplus clusters appear in no pair, with fewer the surplus classes.
///
/// # Errors
/// As [`hungarian_accuracy`].
pub fn hungarian_matching(truth: &[usize], pred: &[usize]) -> Result<Vec<(usize, usize)>> {
    let pairs = hungarian(truth, pred)?.pairs;
    let values = |labels: &[usize]| {
        let mut v = labels.to_vec();
        v.sort_unstable();
        v.dedup();
        v
    };
    let (classes, clusters) = (values(truth), values(pred));
    Ok(pairs
        .into_iter()
        .map(|(i, j)| (classes[i], clusters[j]))
        .collect())
}

/// The best one-to-one matching of a contingency table.
struct Matching {
    /// Cells on the matched diagonal.
    matched: i64,
    /// Cells in all.
    n: u64,
    /// Matched `(class, cluster)` codes, sorted by class.
    pairs: Vec<(usize, usize)>,
}

fn hungarian(truth: &[usize], pred: &[usize]) -> Result<Matching> {
    let c = Contingency::new(truth, pred)?;
    let (nt, np) = (c.classes.len(), c.clusters.len());
    // kuhn_munkres needs rows <= columns: put the shorter side on the rows.
    let (rows, cols) = (nt.min(np), nt.max(np));
    let mut w = Matrix::new(rows, cols, 0_i64);
    for &(i, j, x) in &c.entries {
        let (r, k) = if nt <= np { (i, j) } else { (j, i) };
        w[(r, k)] = x as i64;
    }
    let (matched, assignment) = kuhn_munkres(&w);
    let mut pairs: Vec<(usize, usize)> = assignment
        .into_iter()
        .enumerate()
        .map(|(r, k)| if nt <= np { (r, k) } else { (k, r) })
        .collect();
    pairs.sort_unstable();
    Ok(Matching {
        matched,
        n: c.n,
        pairs,
    })
}

/// Silhouette of every cell (Rousseeuw 1987), Euclidean distances, exact:
///
/// `s_i = (b_i - a_i) / max(a_i, b_i)`, where `a_i` is the mean distance from
/// cell `i` to the other cells of its cluster and `b_i` the smallest mean
/// distance from `i` to the cells of another cluster. As in scikit-learn,
/// `s_i = 0` for a cell alone in its cluster, and when `a_i = b_i = 0`.
///
/// Costs `n^2` distances (`O(n^2 d)` time, spread over rayon's pool; `O(n k)`
/// memory); distances are computed directly from the `f64` differences, free
/// of the cancellation in `||a||^2 + ||b||^2 - 2 a.b`.
///
/// # Errors
/// [`Error::LabelsForRows`] unless there is one label per row,
/// [`Error::NoSamples`] for no rows, [`Error::Empty`] for no columns,
/// [`Error::SilhouetteClusters`] unless there are 2 to `n - 1` clusters,
/// [`Error::NonFinite`] for a NaN or infinite entry.
pub fn silhouette_samples(x: ArrayView2<'_, f32>, labels: &[usize]) -> Result<Vec<f64>> {
    let (n, d) = x.dim();
    if labels.len() != n {
        return Err(Error::LabelsForRows {
            rows: n,
            labels: labels.len(),
        });
    }
    if n == 0 {
        return Err(Error::NoSamples);
    }
    if d == 0 {
        return Err(Error::Empty);
    }
    let (codes, k) = encode(labels);
    if !(2..n).contains(&k) {
        return Err(Error::SilhouetteClusters {
            n_clusters: k,
            n_samples: n,
        });
    }
    check_finite(x)?;
    let rows = Rows::new(x);
    let mut sizes = vec![0_usize; k];
    codes.iter().for_each(|&c| sizes[c] += 1);
    // sums[i * k + c]: total distance from cell i to the cells of cluster c
    // (its own zero distance included). Rows are independent, so they run in
    // parallel, each summing over j in order: the result is thread-count free.
    let mut sums = vec![0.0_f64; n * k];
    sums.par_chunks_mut(k).enumerate().for_each(|(i, own)| {
        let xi = rows.row(i);
        for (xj, &cj) in rows.rows().zip(&codes) {
            own[cj] += sq_dist(xi, xj).sqrt();
        }
    });
    Ok(sums
        .chunks_exact(k)
        .zip(&codes)
        .map(|(s, &ci)| {
            if sizes[ci] == 1 {
                return 0.0;
            }
            let a = s[ci] / (sizes[ci] - 1) as f64;
            let b = (0..k)
                .filter(|&c| c != ci)
                .map(|c| s[c] / sizes[c] as f64)
                .fold(f64::INFINITY, f64::min);
            let m = a.max(b);
            if m == 0.0 { 0.0 } else { (b - a) / m }
        })
        .collect())
}

/// Mean silhouette `mean_i s_i` (see [`silhouette_samples`]), scikit-learn's
/// `silhouette_score`.
///
/// Exact for up to [`SILHOUETTE_MAX_CELLS`] cells. Above that it is the mean
/// over a subsample of exactly `SILHOUETTE_MAX_CELLS` distinct cells drawn
/// uniformly without replacement by `ChaCha8Rng::seed_from_u64(seed)`, and the
/// silhouettes are computed within the subsample, as scikit-learn's
/// `sample_size` does; `seed` is ignored for smaller inputs.
///
/// # Errors
/// As [`silhouette_samples`]; with a subsample, the cluster count is that of
/// the subsample.
pub fn silhouette_score(x: ArrayView2<'_, f32>, labels: &[usize], seed: u64) -> Result<f64> {
    let n = x.nrows();
    let s = if n > SILHOUETTE_MAX_CELLS && labels.len() == n {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut idx = rand::seq::index::sample(&mut rng, n, SILHOUETTE_MAX_CELLS).into_vec();
        idx.sort_unstable();
        let sub: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
        silhouette_samples(x.select(Axis(0), &idx).view(), &sub)?
    } else {
        silhouette_samples(x, labels)?
    };
    Ok(s.iter().sum::<f64>() / s.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::{Array2, array};

    #[test]
    fn encode_is_order_of_value() {
        assert_eq!(encode(&[7, 3, 7, 9]), (vec![1, 0, 1, 2], 3));
        assert_eq!(encode(&[]), (vec![], 0));
    }

    #[test]
    fn perfect_and_relabelled_agreement() {
        let t = [0, 0, 1, 1, 2, 2];
        let p = [5, 5, 9, 9, 1, 1];
        for score in [
            adjusted_rand_index,
            normalized_mutual_info,
            hungarian_accuracy,
        ] {
            assert_abs_diff_eq!(score(&t, &p).expect("same length"), 1.0, epsilon = 1e-12);
        }
    }

    #[test]
    fn hungarian_matching_pairs_label_values() {
        // Classes 10, 20, 30; clusters 5 (mostly 20), 9 (mostly 10), 1 (mostly 30), 7 (one cell).
        let t = [10, 10, 10, 20, 20, 30, 30, 30, 30];
        let p = [9, 9, 5, 5, 5, 1, 1, 1, 7];
        let pairs = hungarian_matching(&t, &p).expect("same length");
        assert_eq!(pairs, vec![(10, 9), (20, 5), (30, 1)]);
        // More classes than clusters: the surplus class is left out.
        let pairs = hungarian_matching(&p, &t).expect("same length");
        assert_eq!(pairs, vec![(1, 30), (5, 20), (9, 10)]);
        assert_abs_diff_eq!(
            hungarian_accuracy(&t, &p).expect("ok"),
            7.0 / 9.0,
            epsilon = 1e-12
        );
    }

    #[test]
    fn hand_computed_small_case() {
        // truth [0,0,1,1], pred [0,0,0,1]: contingency [[2,0],[1,1]], a=(2,2), b=(3,1).
        // S = 4+1+1 = 6, N = 4: tp = 2, fp = 9+1-6 = 4, fn = 4+4-6 = 2, tn = 16-4-2-6 = 4.
        // ARI = 2(2*4 - 2*4) / (...) = 0.
        let (t, p) = ([0, 0, 1, 1], [0, 0, 0, 1]);
        assert_abs_diff_eq!(
            adjusted_rand_index(&t, &p).expect("ok"),
            0.0,
            epsilon = 1e-12
        );
        // MI = 1/2 ln(4*2/(2*3)) + 1/4 ln(4/(2*3)) + 1/4 ln(4/(2*1))
        let mi = 0.5 * (4.0_f64 / 3.0).ln() + 0.25 * (2.0_f64 / 3.0).ln() + 0.25 * 2.0_f64.ln();
        let h_t = 2.0_f64.ln();
        let h_p = -(0.75 * 0.75_f64.ln() + 0.25 * 0.25_f64.ln());
        assert_abs_diff_eq!(
            normalized_mutual_info(&t, &p).expect("ok"),
            mi / ((h_t + h_p) / 2.0),
            epsilon = 1e-12
        );
        // Best map: cluster 0 -> class 0 (2 cells), cluster 1 -> class 1 (1 cell).
        assert_abs_diff_eq!(
            hungarian_accuracy(&t, &p).expect("ok"),
            0.75,
            epsilon = 1e-12
        );
    }

    #[test]
    fn single_cluster_conventions() {
        let t = [0, 0, 1, 1];
        let one = [3, 3, 3, 3];
        assert_abs_diff_eq!(
            adjusted_rand_index(&one, &one).expect("ok"),
            1.0,
            epsilon = 0.0
        );
        assert_abs_diff_eq!(
            normalized_mutual_info(&one, &one).expect("ok"),
            1.0,
            epsilon = 0.0
        );
        assert_abs_diff_eq!(
            adjusted_rand_index(&t, &one).expect("ok"),
            0.0,
            epsilon = 1e-12
        );
        assert_abs_diff_eq!(
            normalized_mutual_info(&t, &one).expect("ok"),
            0.0,
            epsilon = 0.0
        );
        assert_abs_diff_eq!(
            hungarian_accuracy(&t, &one).expect("ok"),
            0.5,
            epsilon = 1e-12
        );
        assert_abs_diff_eq!(
            adjusted_rand_index(&[4], &[2]).expect("ok"),
            1.0,
            epsilon = 0.0
        );
    }

    #[test]
    fn hungarian_handles_unequal_counts() {
        // More clusters than classes: clusters 2 and 3 split class 1; one of them is unmatched.
        let t = [0, 0, 1, 1, 1, 1];
        let p = [0, 0, 1, 1, 1, 2];
        assert_abs_diff_eq!(
            hungarian_accuracy(&t, &p).expect("ok"),
            5.0 / 6.0,
            epsilon = 1e-12
        );
        // Fewer clusters than classes: the transpose gives the same matching.
        assert_abs_diff_eq!(
            hungarian_accuracy(&p, &t).expect("ok"),
            5.0 / 6.0,
            epsilon = 1e-12
        );
    }

    #[test]
    fn label_errors() {
        let expected = Err(Error::LabelLengthMismatch { truth: 3, pred: 2 });
        for score in [
            adjusted_rand_index,
            normalized_mutual_info,
            hungarian_accuracy,
        ] {
            assert_eq!(score(&[0, 1, 1], &[0, 1]), expected);
            assert_eq!(score(&[], &[]), Err(Error::NoSamples));
        }
    }

    #[test]
    fn hand_computed_silhouette() {
        // Cells on a line at 0, 1 (cluster 0) and 4 (cluster 1, a singleton).
        // cell 0: a = 1, b = 4 -> 3/4; cell 1: a = 1, b = 3 -> 2/3; cell 2: singleton -> 0.
        let x = array![[0.0_f32], [1.0], [4.0]];
        let s = silhouette_samples(x.view(), &[0, 0, 1]).expect("valid");
        for (got, want) in s.iter().zip([0.75, 2.0 / 3.0, 0.0]) {
            assert_abs_diff_eq!(*got, want, epsilon = 1e-12);
        }
        let mean = silhouette_score(x.view(), &[0, 0, 1], 0).expect("valid");
        assert_abs_diff_eq!(mean, (0.75 + 2.0 / 3.0) / 3.0, epsilon = 1e-12);
    }

    #[test]
    fn silhouette_errors() {
        let x = Array2::<f32>::zeros((4, 2));
        assert_eq!(
            silhouette_score(x.view(), &[0, 0, 0, 0], 0),
            Err(Error::SilhouetteClusters {
                n_clusters: 1,
                n_samples: 4
            })
        );
        assert_eq!(
            silhouette_score(x.view(), &[0, 1, 2, 3], 0),
            Err(Error::SilhouetteClusters {
                n_clusters: 4,
                n_samples: 4
            })
        );
        assert_eq!(
            silhouette_score(x.view(), &[0, 1], 0),
            Err(Error::LabelsForRows { rows: 4, labels: 2 })
        );
        let mut nan = x.clone();
        nan[[3, 0]] = f32::NAN;
        assert!(matches!(
            silhouette_score(nan.view(), &[0, 0, 1, 1], 0),
            Err(Error::NonFinite { row: 3, col: 0, .. })
        ));
        // Identical cells: a = b = 0 everywhere gives 0, not NaN.
        assert_abs_diff_eq!(
            silhouette_score(x.view(), &[0, 0, 1, 1], 0).expect("valid"),
            0.0,
            epsilon = 0.0
        );
    }

    #[test]
    fn silhouette_subsample_is_seeded() {
        // Two well-separated lines of cells, more than the exact limit.
        let n = SILHOUETTE_MAX_CELLS + 500;
        let x = Array2::from_shape_fn((n, 2), |(i, j)| {
            if j == 0 {
                (i % 2) as f32 * 100.0
            } else {
                (i / 2) as f32 * 1e-3
            }
        });
        let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let a = silhouette_score(x.view(), &labels, 1).expect("valid");
        assert_eq!(a, silhouette_score(x.view(), &labels, 1).expect("valid"));
        assert!(a > 0.9, "well separated, got {a}");
    }
}
