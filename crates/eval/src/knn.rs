//! Exact Euclidean nearest neighbours by blocked brute force, shared by t-SNE's
//! affinities and the UMAP-style graph that Leiden clusters.
//!
//! One `block x n` matrix product per block of rows gives `|a|^2 + |b|^2 - 2 a.b`
//! for every pair, from which `k + KNN_SLACK` candidates are picked; their
//! distances are then recomputed in `f64` from the differences, so rounding in
//! the Gram-matrix shortcut cannot push a true neighbour out or leave a
//! cancellation error in a reported distance. In 10 to 50 dimensions this beats
//! a vantage-point tree, which degenerates to a scan with extra bookkeeping
//! there. Rows run in parallel on the current rayon pool, each computed by one
//! thread in a fixed order, so the result does not depend on the thread count.

use ndarray::{ArrayView2, Axis, s};
use rayon::prelude::*;

/// Candidates kept per cell beyond `k`, rescored from exact differences.
const KNN_SLACK: usize = 8;
/// Rows per block of the brute-force search: a `256 x n` block of products.
const KNN_BLOCK: usize = 256;

/// The `k` nearest other cells of each of `n` cells, row-major `n x k`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Knn {
    /// Neighbours per cell.
    pub k: usize,
    /// Indices of the neighbours, row `i` at `indices[i * k..(i + 1) * k]`.
    pub indices: Vec<u32>,
    /// Their Euclidean distances (computed in `f64`, rounded to `f32`), ascending per row.
    pub distances: Vec<f32>,
}

impl Knn {
    /// Neighbours of cell `i` and their distances.
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let range = i * self.k..(i + 1) * self.k;
        (&self.indices[range.clone()], &self.distances[range])
    }
}

/// The `k` nearest other cells of every cell (the cell itself excluded),
/// ascending by Euclidean distance, ties by index. Callers guarantee
/// `1 <= k < x.nrows()`, `x.nrows() < 2^32` and finite entries.
pub(crate) fn exact_knn(x: ArrayView2<'_, f32>, k: usize) -> Knn {
    let n = x.nrows();
    debug_assert!(k >= 1 && k < n, "1 <= k = {k} < n = {n}");
    let norms: Vec<f32> = x.rows().into_iter().map(|r| r.dot(&r)).collect();
    let mut indices = vec![0_u32; n * k];
    let mut distances = vec![0_f32; n * k];
    indices
        .par_chunks_mut(KNN_BLOCK * k)
        .zip(distances.par_chunks_mut(KNN_BLOCK * k))
        .enumerate()
        .for_each(|(b, (block_indices, block_distances))| {
            let start = b * KNN_BLOCK;
            let rows = block_indices.len() / k;
            let block = x.slice(s![start..start + rows, ..]);
            let gram = block.dot(&x.t());
            let mut cand: Vec<(f32, u32)> = Vec::with_capacity(n);
            let keep = (k + KNN_SLACK).min(n - 1);
            let rows_out = block_indices
                .chunks_exact_mut(k)
                .zip(block_distances.chunks_exact_mut(k));
            for (r, ((row_indices, row_distances), g)) in
                rows_out.zip(gram.axis_iter(Axis(0))).enumerate()
            {
                let i = start + r;
                cand.clear();
                cand.extend(
                    g.iter()
                        .zip(&norms)
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .map(|(j, (&dot, &nj))| (norms[i] + nj - 2.0 * dot, j as u32)),
                );
                let by_dist =
                    |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
                if keep < cand.len() {
                    cand.select_nth_unstable_by(keep, by_dist);
                    cand.truncate(keep);
                }
                let xi = x.row(i);
                let mut exact: Vec<(f32, u32)> = cand
                    .iter()
                    .map(|&(_, j)| {
                        let d2: f64 = xi
                            .iter()
                            .zip(x.row(j as usize))
                            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                            .sum();
                        (d2.sqrt() as f32, j)
                    })
                    .collect();
                exact.sort_unstable_by(by_dist);
                for ((index, distance), &(d, j)) in
                    row_indices.iter_mut().zip(row_distances).zip(&exact)
                {
                    *index = j;
                    *distance = d;
                }
            }
        });
    Knn {
        k,
        indices,
        distances,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn knn_matches_a_naive_scan() {
        let x = Array2::from_shape_fn((300, 5), |(i, j)| ((i * 37 + j * 11) % 29) as f32 * 0.1);
        let k = 7;
        let fast = exact_knn(x.view(), k);
        for i in [0, 1, 150, 299] {
            let mut all: Vec<(f64, usize)> = (0..300)
                .filter(|&j| j != i)
                .map(|j| {
                    let d: f64 = (0..5)
                        .map(|c| (f64::from(x[[i, c]]) - f64::from(x[[j, c]])).powi(2))
                        .sum();
                    (d.sqrt(), j)
                })
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let want: Vec<usize> = all.iter().take(k).map(|&(_, j)| j).collect();
            let (indices, distances) = fast.row(i);
            let got: Vec<usize> = indices.iter().map(|&j| j as usize).collect();
            assert_eq!(got, want, "row {i}");
            for (&d, &(want_d, _)) in distances.iter().zip(&all) {
                approx::assert_abs_diff_eq!(f64::from(d), want_d, epsilon = 1e-6);
            }
        }
    }

    #[test]
    fn every_cell_can_take_all_others() {
        let x = Array2::from_shape_fn((5, 2), |(i, j)| (i * 3 + j) as f32);
        let knn = exact_knn(x.view(), 4);
        let (indices, _) = knn.row(2);
        assert_eq!(indices, &[1, 3, 0, 4]);
    }
}
