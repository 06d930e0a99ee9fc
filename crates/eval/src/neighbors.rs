//! scanpy's neighbour graph: `sc.pp.neighbors(adata, n_neighbors=15, use_rep=...)`
//! with its defaults (`method="umap"`, Euclidean), the graph that
//! `sc.tl.leiden` clusters.
//!
//! 1. The `n_neighbors` nearest cells of every cell by exact Euclidean
//!    distance, the cell itself counted as its own first neighbour at distance
//!    0, as scanpy and umap count it (so `n_neighbors = 15` means 14 others).
//!    Brute force, shared with t-SNE (see the `knn` module): `O(n^2 d)`, rows
//!    in parallel on the current rayon pool. scanpy computes these exactly too
//!    below 4096 cells and approximately (pynndescent) above; exact is the
//!    reference either way. With duplicate cells the cell itself stays first.
//! 2. umap's fuzzy simplicial set (`umap.umap_.fuzzy_simplicial_set` with
//!    scanpy's arguments `local_connectivity = 1`, `set_op_mix_ratio = 1`):
//!    per cell, `rho_i` is the distance to its nearest other cell at a
//!    distance > 0 and `sigma_i` solves
//!    `sum_{j=1}^{k-1} exp(-max(d_ij - rho_i, 0) / sigma_i) = log2(k)` by 64
//!    steps of bisection (stopping within `1e-5`; `sigma_i` at least `1e-3`
//!    times the mean distance to the neighbours, or to all neighbours of all
//!    cells when `rho_i = 0`). The directed strength of `i -> j` is
//!    `a_ij = exp(-max(d_ij - rho_i, 0) / sigma_i)` (1 for the nearest, 0 for
//!    the cell itself), and the graph is their fuzzy union
//!    `w_ij = a_ij + a_ji - a_ij a_ji`.
//!
//! Distances, `rho` and `sigma` are rounded to `f32` and the strengths `a_ij`
//! kept as `f32`, where umap keeps them, so the weights agree with scanpy's
//! `obsp["connectivities"]` to a few `f32` ulps (`tests/leiden.rs` checks
//! `1e-4` per edge, same edge set).

use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::error::{Error, ParamError, Result, check_finite};
use crate::graph::WeightedGraph;
use crate::knn::Knn;

/// Bisection steps for `sigma` (umap's `n_iter`).
const SIGMA_STEPS: usize = 64;
/// The bisection stops once the kernel sum is this close to `log2(k)` (umap's `SMOOTH_K_TOLERANCE`).
const SMOOTH_K_TOLERANCE: f64 = 1e-5;
/// Lower bound on `sigma` relative to the mean neighbour distance (umap's `MIN_K_DIST_SCALE`).
const MIN_K_DIST_SCALE: f64 = 1e-3;

/// Checks `n_neighbors` on its own: the cell itself and at least one other.
///
/// # Errors
/// [`ParamError::NNeighbors`] below 2.
pub fn check_n_neighbors(n_neighbors: usize) -> std::result::Result<(), ParamError> {
    if n_neighbors < 2 {
        return Err(ParamError::NNeighbors(n_neighbors));
    }
    Ok(())
}

/// scanpy's default neighbour graph on the rows of `x` (cells x dims), with
/// `n_neighbors` counting the cell itself; see the module docs.
///
/// # Errors
/// [`ParamError::NNeighbors`] for `n_neighbors < 2`; [`Error::NoSamples`] for no
/// rows, [`Error::Empty`] for no columns, [`Error::TooManyNeighbors`] unless
/// `n_neighbors < cells`, [`Error::NonFinite`] for a NaN or infinite entry.
pub fn knn_graph(x: ArrayView2<'_, f32>, n_neighbors: usize) -> Result<WeightedGraph> {
    Ok(fuzzy_graph(&exact_neighbors(x, n_neighbors)?))
}

/// The `n_neighbors - 1` nearest other cells of every row of `x`, after the
/// checks that [`knn_graph`] documents.
pub(crate) fn exact_neighbors(x: ArrayView2<'_, f32>, n_neighbors: usize) -> Result<Knn> {
    check_n_neighbors(n_neighbors)?;
    let (n, d) = x.dim();
    if n == 0 {
        return Err(Error::NoSamples);
    }
    if d == 0 {
        return Err(Error::Empty);
    }
    if n_neighbors >= n || u32::try_from(n).is_err() {
        return Err(Error::TooManyNeighbors {
            n_neighbors,
            n_samples: n,
        });
    }
    check_finite(x)?;

    Ok(crate::knn::exact_knn(x, n_neighbors - 1))
}

/// umap's fuzzy simplicial set of the neighbours `knn` (`knn.k` others per
/// cell, so `n_neighbors = knn.k + 1`); see the module docs.
pub(crate) fn fuzzy_graph(knn: &Knn) -> WeightedGraph {
    let n_neighbors = knn.k + 1;
    let n = knn.indices.len() / knn.k;
    // umap's mean over all distances, the cells' zero distances to themselves included.
    let mean_distance =
        knn.distances.iter().map(|&v| f64::from(v)).sum::<f64>() / (n * n_neighbors) as f64;
    let strengths: Vec<Vec<(u32, f32)>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let (indices, distances) = knn.row(i);
            let (rho, sigma) = smooth_knn_dist(distances, n_neighbors, mean_distance);
            indices
                .iter()
                .zip(distances)
                .map(|(&j, &dist)| {
                    let excess = dist - rho;
                    let a = if excess <= 0.0 || sigma == 0.0 {
                        1.0
                    } else {
                        (-(f64::from(excess) / f64::from(sigma))).exp() as f32
                    };
                    (j, a)
                })
                .collect()
        })
        .collect();

    // The fuzzy union: each unordered pair once, from one or both directions.
    let mut directed: Vec<(u32, u32, f32)> = strengths
        .iter()
        .enumerate()
        .flat_map(|(i, row)| {
            let i = i as u32;
            row.iter().filter(|&&(_, a)| a > 0.0).map(move |&(j, a)| {
                let (lo, hi) = if i < j { (i, j) } else { (j, i) };
                (lo, hi, a)
            })
        })
        .collect();
    directed.sort_unstable_by_key(|&(a, b, _)| (a, b));
    let mut pairs: Vec<(u32, u32, f64)> = Vec::with_capacity(directed.len());
    for chunk in directed.chunk_by(|p, q| (p.0, p.1) == (q.0, q.1)) {
        let (a, b) = (chunk[0].0, chunk[0].1);
        let w = match chunk {
            [one] => f64::from(one.2),
            [one, two] => {
                let (s, t) = (f64::from(one.2), f64::from(two.2));
                s + t - s * t
            }
            _ => unreachable!("a pair appears at most once in each direction"),
        };
        pairs.push((a, b, w));
    }
    WeightedGraph::from_sorted_pairs(n, &pairs)
}

/// umap's `smooth_knn_dist` for one cell with `local_connectivity = 1` and
/// `bandwidth = 1`: `(rho, sigma)` from the distances to its `k - 1` nearest
/// other cells (ascending; the cell itself, at distance 0, is implied first).
fn smooth_knn_dist(distances: &[f32], k: usize, mean_distance: f64) -> (f32, f32) {
    let target = (k as f64).log2();
    let rho = distances.iter().copied().find(|&d| d > 0.0).unwrap_or(0.0);
    let (mut lo, mut hi, mut mid) = (0.0_f64, f64::INFINITY, 1.0_f64);
    for _ in 0..SIGMA_STEPS {
        let psum: f64 = distances
            .iter()
            .map(|&dist| {
                let excess = dist - rho;
                if excess > 0.0 {
                    (-(f64::from(excess) / mid)).exp()
                } else {
                    1.0
                }
            })
            .sum();
        if (psum - target).abs() < SMOOTH_K_TOLERANCE {
            break;
        }
        if psum > target {
            hi = mid;
            mid = (lo + hi) / 2.0;
        } else {
            lo = mid;
            mid = if hi.is_infinite() {
                mid * 2.0
            } else {
                (lo + hi) / 2.0
            };
        }
    }
    let floor = if rho > 0.0 {
        // The mean over all k distances, the zero to itself included.
        MIN_K_DIST_SCALE * distances.iter().map(|&d| f64::from(d)).sum::<f64>() / k as f64
    } else {
        MIN_K_DIST_SCALE * mean_distance
    };
    (rho, mid.max(floor) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::Array2;

    #[test]
    fn sigma_solves_the_kernel_sum() {
        let distances = [0.5_f32, 0.7, 1.0, 1.4, 2.0];
        let k = distances.len() + 1;
        let (rho, sigma) = smooth_knn_dist(&distances, k, 1.0);
        assert_eq!(rho, 0.5);
        let psum: f64 = distances
            .iter()
            .map(|&d| (-(f64::from(d - rho) / f64::from(sigma))).exp())
            .sum();
        assert_abs_diff_eq!(psum, (k as f64).log2(), epsilon = 1e-5);
    }

    #[test]
    fn duplicate_cells_are_fully_connected_to_each_other() -> Result<()> {
        // Cells 0 and 1 coincide; sigma falls back to the floor, rho to the
        // nearest cell at a positive distance.
        let x = Array2::from_shape_vec((4, 1), vec![0.0_f32, 0.0, 1.0, 3.0])
            .map_err(|_| Error::Empty)?;
        let g = knn_graph(x.view(), 3)?;
        let w01 = g.neighbors(0).find(|&(j, _)| j == 1).map(|(_, w)| w);
        assert_eq!(w01, Some(1.0));
        for i in 0..4 {
            assert!(g.neighbors(i).all(|(j, w)| j != i && w > 0.0 && w <= 1.0));
        }
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = Array2::from_shape_fn((5, 2), |(i, j)| (i + j) as f32);
        assert_eq!(
            knn_graph(x.view(), 1),
            Err(Error::Param(ParamError::NNeighbors(1)))
        );
        assert_eq!(
            knn_graph(x.view(), 5),
            Err(Error::TooManyNeighbors {
                n_neighbors: 5,
                n_samples: 5
            })
        );
        let mut bad = x.clone();
        bad[[3, 1]] = f32::INFINITY;
        assert!(matches!(
            knn_graph(bad.view(), 2),
            Err(Error::NonFinite { row: 3, col: 1, .. })
        ));
        assert_eq!(
            knn_graph(Array2::<f32>::zeros((0, 2)).view(), 2),
            Err(Error::NoSamples)
        );
        assert_eq!(
            knn_graph(Array2::<f32>::zeros((5, 0)).view(), 2),
            Err(Error::Empty)
        );
    }
}
