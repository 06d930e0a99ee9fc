//! scIB's integration metrics (Luecken et al. 2022) as scib-metrics 0.5.10
//! computes them: how well an embedding of cells from several batches keeps
//! the cell types apart (bio conservation) while it mixes the batches (batch
//! correction). Every score is in `[0, 1]`, higher is better.
//!
//! Bio conservation:
//! - [`silhouette_label`]: `(mean_i s_i + 1) / 2`, the silhouette of every cell
//!   by its label, rescaled.
//! - [`clisi_knn`]: `(L - median_i lisi_i) / (L - 1)` for `L` labels, LISI by label.
//! - [`nmi_ari_cluster_labels_leiden`]: NMI and ARI of the labels against Leiden
//!   clusters at the resolution, of `0.2, 0.4, .., 2.0`, with the best NMI.
//!
//! Batch correction:
//! - [`silhouette_batch`]: per label, `1 - |s_i|` with `s_i` the silhouette of
//!   the label's cells by batch, averaged over the label's cells, then over the
//!   labels; a label with cells of one batch only, or of as many batches as
//!   cells, is left out (scib-metrics' `continue`).
//! - [`ilisi_knn`]: `(median_i lisi_i - 1) / (B - 1)` for `B` batches, LISI by batch.
//! - [`kbet_per_label`]: kBET's acceptance rate per label on diffusion-map
//!   neighbours, averaged over the labels it can score (see that function).
//! - [`graph_connectivity`]: per label, the share of its cells in the largest
//!   strongly connected component of the kNN graph restricted to the label,
//!   averaged over labels.
//!
//! **LISI** (Korsunsky et al. 2019, scib-metrics' `compute_simpson_index`):
//! for each cell, over its neighbours other than itself at distances `d_j`, a
//! bisection on `beta` (start 1, doubling or halving until bracketed, at most
//! 50 steps) makes the entropy `H = ln sum_j P_j + beta sum_j d_j P_j / sum_j P_j`
//! of `P_j ∝ exp(-beta d_j)` equal `ln(perplexity)` within `1e-5`, the
//! perplexity `floor(n_neighbors / 3)` (the cell itself counted, so 30 for 90);
//! then `lisi = 1 / sum_c (sum_{j in c} P_j)^2`, or `-1` where `H = 0` (all
//! weights underflowed), as scib-metrics returns it.
//!
//! **Neighbours.** The kNN metrics take a [`Neighbors`]: per cell, its nearest
//! cells, itself first, as scib-metrics' `NeighborsResults`. The Benchmarker
//! computes 90 and keeps the first [`GRAPH_NEIGHBORS`] (15) for Leiden and
//! graph connectivity, [`KBET_NEIGHBORS`] (50) for kBET and all
//! [`LISI_NEIGHBORS`] (90) for LISI; [`integration_scores`] does the same with
//! exact neighbours (the Benchmarker's default, pynndescent, is approximate).
//! Leiden and kBET work on [`Neighbors::graph`], umap's fuzzy simplicial set
//! of the neighbours, scib-metrics' `knn_graph_connectivities`; graph
//! connectivity on the directed neighbour lists themselves.
//!
//! **Aggregation** ([`IntegrationScores`]): the Benchmarker's plain means of
//! its metric rows per kind and `total = 0.6 bio + 0.4 batch`, over the eight
//! metrics here: bio = mean(silhouette_label, cLISI, Leiden NMI, Leiden ARI),
//! batch = mean(silhouette_batch, iLISI, kBET, graph connectivity). This is
//! not the Benchmarker's default set: that adds isolated labels and k-means
//! NMI/ARI (and leaves Leiden out) on the bio side, and puts BRAS in place of
//! silhouette_batch and adds PCR comparison on the batch side; both are
//! outside this crate.
//!
//! Deviations from scib-metrics, all of precision or search, none of
//! definition: sums are in `f64` (scib-metrics runs silhouette, LISI and the
//! chi-square test in jax's `float32`); Leiden is this crate's
//! ([`crate::leiden()`], two passes as igraph's `community_leiden` runs), which
//! finds different, equally good partitions than igraph for the same seed;
//! kBET's diffusion map is built in `f64` (scib-metrics builds the transition
//! matrix in `float32`; both round the eigenpairs to `f32`), its eigenpairs
//! come from a dense decomposition or, above 2,000 cells, a block solver
//! (scib-metrics: ARPACK), and its neighbours are exact where scib-metrics
//! uses pynndescent. `tests/integration.rs` states the tolerance of each.

use std::collections::BTreeMap;
use std::time::Instant;

use faer::sparse::linalg::matmul::sparse_dense_matmul;
use faer::sparse::{SparseRowMat, Triplet};
use faer::{Accum, Mat, MatRef, Side};
use ndarray::{Array2, ArrayView2, Axis, s};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use statrs::distribution::{ChiSquared, ContinuousCDF};

use crate::error::{Error, ParamError, Result};
use crate::graph::WeightedGraph;
use crate::knn::{Knn, exact_knn};
use crate::leiden::{LeidenParams, leiden};
use crate::metrics::{adjusted_rand_index, encode, normalized_mutual_info, silhouette_samples};
use crate::neighbors::{check_n_neighbors, exact_neighbors, fuzzy_graph};

/// Neighbours per cell (the cell itself included) for LISI, the Benchmarker's.
pub const LISI_NEIGHBORS: usize = 90;
/// Neighbours per cell (the cell itself included) for kBET's graph, the Benchmarker's.
pub const KBET_NEIGHBORS: usize = 50;
/// Neighbours per cell (the cell itself included) for Leiden and graph
/// connectivity, the Benchmarker's.
pub const GRAPH_NEIGHBORS: usize = 15;
/// kBET's significance level, scib-metrics' default.
pub const KBET_ALPHA: f64 = 0.05;

/// LISI's bisection stops once `|H - ln(perplexity)|` is below this.
const LISI_TOL: f64 = 1e-5;
/// LISI's bisection takes at most this many steps.
const LISI_MAX_STEPS: usize = 50;
/// Labels with fewer cells are not scored by kBET.
const KBET_MIN_CELLS: usize = 10;
/// Diffusion components kBET starts from (scib-metrics' `diffusion_n_comps`).
const DIFFUSION_N_COMPS: usize = 100;
/// Added to every diffusion eigenvalue in `f32` (scib-metrics' `_EPS`).
const DIFFUSION_EPS: f32 = 1e-8;
/// Up to this many cells a label's diffusion map is a dense eigendecomposition,
/// above it a partial one by Chebyshev-filtered subspace iteration (ARPACK's
/// Lanczos in scib-metrics).
const DENSE_EIGEN_MAX: usize = 2_000;
/// Columns beyond the `k` wanted in the partial eigensolver's block.
const EIGEN_BLOCK_EXTRA: usize = 32;
/// Filter-and-Ritz cycles the partial eigensolver runs at most.
const EIGEN_MAX_CYCLES: usize = 500;
/// Residual `||T u - theta u||` at which a Ritz pair counts as converged
/// (`||T|| <= 1`; ARPACK's default asks for machine precision relative to theta).
const EIGEN_TOL: f64 = 1e-10;
/// Highest degree of the Chebyshev filter.
const CHEBYSHEV_MAX_DEGREE: usize = 16;
/// Largest growth `T_q(1 / c)` the filter may give the top eigenvalue.
const CHEBYSHEV_MAX_GROWTH: f64 = 1e6;
/// Smallest cut-off `c` of the filter.
const CHEBYSHEV_MIN_CUTOFF: f64 = 1e-3;
/// A new column of the eigensolver's block is deficient below this fraction of the block's largest norm.
const EIGEN_RANK_TOL: f64 = 1e-10;
/// Times a deficient block is refilled with random columns.
const EIGEN_REFILLS: usize = 3;
/// kBET's bound on `k0 * cells` (scib-metrics' `size_max`, `2^31 - 1`).
const KBET_SIZE_MAX: usize = (1 << 31) - 1;

/// Each cell's nearest cells, itself first, as scib-metrics' `NeighborsResults`.
///
/// Held as the crate's neighbour lists of the other cells (the cell itself
/// implied first at distance 0), so [`Neighbors::n_neighbors`] counts the
/// cell itself, as scanpy and scib-metrics do.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbors {
    /// The `n_neighbors - 1` nearest other cells of each cell.
    knn: Knn,
}

impl Neighbors {
    /// The exact Euclidean neighbours of the rows of `x`, `n_neighbors` per
    /// cell counting itself (brute force, as [`crate::knn_graph`] finds them).
    ///
    /// # Errors
    /// As [`crate::knn_graph`]: [`ParamError::NNeighbors`] below 2,
    /// [`Error::NoSamples`], [`Error::Empty`], [`Error::TooManyNeighbors`]
    /// unless `n_neighbors < cells`, [`Error::NonFinite`].
    pub fn exact(x: ArrayView2<'_, f32>, n_neighbors: usize) -> Result<Self> {
        Ok(Self {
            knn: exact_neighbors(x, n_neighbors)?,
        })
    }

    /// Neighbours computed elsewhere: `indices[i][j]` the `j`-th nearest cell
    /// of cell `i` at `distances[i][j]`, cells x `n_neighbors`, with
    /// `indices[i][0] = i` (at distance 0, as a kNN search of the data
    /// against itself returns it).
    ///
    /// # Errors
    /// [`Error::NeighborsShape`] if the two shapes differ;
    /// [`ParamError::NNeighbors`] for fewer than 2 columns; [`Error::NoSamples`]
    /// for no rows; [`Error::NeighborIndex`] for an index `>= cells`, a row
    /// that does not start with its own cell or names it again;
    /// [`Error::NeighborDistance`] for a distance that is negative, not finite
    /// or smaller than the one before it.
    pub fn from_arrays(
        indices: ArrayView2<'_, u32>,
        distances: ArrayView2<'_, f32>,
    ) -> Result<Self> {
        if indices.dim() != distances.dim() {
            return Err(Error::NeighborsShape {
                indices: indices.dim(),
                distances: distances.dim(),
            });
        }
        let (n, k) = indices.dim();
        check_n_neighbors(k)?;
        if n == 0 {
            return Err(Error::NoSamples);
        }
        for ((row, col), &index) in indices.indexed_iter() {
            let index = index as usize;
            if index >= n || (col == 0) != (index == row) {
                return Err(Error::NeighborIndex {
                    row,
                    col,
                    index,
                    n_cells: n,
                });
            }
        }
        for (row, d) in distances.rows().into_iter().enumerate() {
            let mut previous = 0.0_f32;
            for (col, &value) in d.iter().enumerate() {
                if !(value.is_finite() && value >= previous) {
                    return Err(Error::NeighborDistance {
                        row,
                        col,
                        value: f64::from(value),
                    });
                }
                previous = value;
            }
        }
        Ok(Self {
            knn: Knn {
                k: k - 1,
                indices: indices.slice(s![.., 1..]).iter().copied().collect(),
                distances: distances.slice(s![.., 1..]).iter().copied().collect(),
            },
        })
    }

    /// Number of cells.
    pub fn n_cells(&self) -> usize {
        self.knn.indices.len() / self.knn.k
    }

    /// Neighbours per cell, the cell itself included.
    pub fn n_neighbors(&self) -> usize {
        self.knn.k + 1
    }

    /// The other cells among cell `i`'s neighbours and their distances,
    /// ascending (the cell itself, first in the full list, left out). Panics
    /// if `i >= n_cells`, like slice indexing.
    pub fn others(&self, i: usize) -> (&[u32], &[f32]) {
        self.knn.row(i)
    }

    /// The first `n_neighbors` of every cell's neighbours (scib-metrics'
    /// `subset_neighbors`).
    ///
    /// # Errors
    /// [`ParamError::NNeighbors`] below 2, [`Error::MoreNeighbors`] above
    /// [`Neighbors::n_neighbors`].
    pub fn truncate(&self, n_neighbors: usize) -> Result<Self> {
        check_n_neighbors(n_neighbors)?;
        if n_neighbors > self.n_neighbors() {
            return Err(Error::MoreNeighbors {
                requested: n_neighbors,
                available: self.n_neighbors(),
            });
        }
        let (k, width) = (n_neighbors - 1, self.knn.k);
        Ok(Self {
            knn: Knn {
                k,
                indices: first_columns(&self.knn.indices, width, k),
                distances: first_columns(&self.knn.distances, width, k),
            },
        })
    }

    /// umap's fuzzy simplicial set of these neighbours (scanpy's
    /// connectivities, scib-metrics' `knn_graph_connectivities`); see
    /// [`crate::neighbors`].
    pub fn graph(&self) -> WeightedGraph {
        fuzzy_graph(&self.knn)
    }
}

/// Cell-type ASW: `(mean_i s_i + 1) / 2` over the silhouettes of all cells by
/// label ([`silhouette_samples`], exact: no subsampling), scib-metrics'
/// `silhouette_label` with `rescale=True`.
///
/// # Errors
/// As [`silhouette_samples`] (one label per row, 2 to `cells - 1` labels, finite data).
pub fn silhouette_label(x: ArrayView2<'_, f32>, labels: &[usize]) -> Result<f64> {
    Ok((mean(&silhouette_samples(x, labels)?) + 1.0) / 2.0)
}

/// Batch ASW, scib-metrics' `silhouette_batch` with `rescale=True`: for each
/// label with cells of 2 to `cells - 1` batches, the mean of `1 - |s_i|` over
/// its cells, `s_i` the silhouette of cell `i` by batch among the label's
/// cells; then the mean over those labels.
///
/// # Errors
/// [`Error::NoSamples`] for no rows, [`Error::LabelsForRows`] unless `batches`
/// and `labels` have one entry per row, [`Error::NoLabelScored`] if every
/// label is left out, and those of [`silhouette_samples`] (e.g. NaN entries).
pub fn silhouette_batch(
    x: ArrayView2<'_, f32>,
    batches: &[usize],
    labels: &[usize],
) -> Result<f64> {
    let n = x.nrows();
    if n == 0 {
        return Err(Error::NoSamples);
    }
    check_len(n, batches)?;
    check_len(n, labels)?;
    let mut per_label = Vec::new();
    for cells in by_label(labels).into_values() {
        let sub: Vec<usize> = cells.iter().map(|&i| batches[i]).collect();
        let n_batches = encode(&sub).1;
        if n_batches == 1 || n_batches == cells.len() {
            continue;
        }
        let s = silhouette_samples(x.select(Axis(0), &cells).view(), &sub)?;
        let rescaled: Vec<f64> = s.iter().map(|v| 1.0 - v.abs()).collect();
        per_label.push(mean(&rescaled));
    }
    if per_label.is_empty() {
        return Err(Error::NoLabelScored {
            metric: "silhouette_batch",
            reason: "every label has cells of one batch only, or of as many batches as cells",
        });
    }
    Ok(mean(&per_label))
}

/// LISI of every cell by `labels` (see the module docs), scib-metrics'
/// `lisi_knn`: between 1 (one label around the cell) and the number of
/// labels (all equally present), or -1 where every kernel weight underflowed.
/// `perplexity` defaults to `floor(n_neighbors / 3)`.
///
/// # Errors
/// [`Error::LabelsForRows`] unless there is one label per cell;
/// [`ParamError::Perplexity`] for a perplexity that is not finite and > 0
/// (the default is 0 below 3 neighbours).
pub fn lisi_knn(
    neighbors: &Neighbors,
    labels: &[usize],
    perplexity: Option<f64>,
) -> Result<Vec<f64>> {
    let n = neighbors.n_cells();
    check_len(n, labels)?;
    let perplexity = perplexity.unwrap_or((neighbors.n_neighbors() / 3) as f64);
    if !(perplexity.is_finite() && perplexity > 0.0) {
        return Err(ParamError::Perplexity(perplexity).into());
    }
    let (codes, n_labels) = encode(labels);
    let target = perplexity.ln();
    Ok((0..n)
        .into_par_iter()
        .map(|i| {
            let (indices, distances) = neighbors.others(i);
            1.0 / simpson_index(indices, distances, &codes, n_labels, target)
        })
        .collect())
}

/// iLISI, scib-metrics' `ilisi_knn` with `scale=True`:
/// `(median_i lisi_i - 1) / (B - 1)` with LISI by batch and `B` batches.
///
/// # Errors
/// Those of [`lisi_knn`]; [`Error::TooFewGroups`] for fewer than 2 batches.
pub fn ilisi_knn(neighbors: &Neighbors, batches: &[usize]) -> Result<f64> {
    let lisi = lisi_knn(neighbors, batches, None)?;
    let b = at_least_two(batches, "ilisi_knn", "batches")?;
    Ok((median(lisi) - 1.0) / (b - 1) as f64)
}

/// cLISI, scib-metrics' `clisi_knn` with `scale=True`:
/// `(L - median_i lisi_i) / (L - 1)` with LISI by label and `L` labels.
///
/// # Errors
/// Those of [`lisi_knn`]; [`Error::TooFewGroups`] for fewer than 2 labels.
pub fn clisi_knn(neighbors: &Neighbors, labels: &[usize]) -> Result<f64> {
    let lisi = lisi_knn(neighbors, labels, None)?;
    let l = at_least_two(labels, "clisi_knn", "labels")? as f64;
    Ok((l - median(lisi)) / (l - 1.0))
}

/// Graph connectivity, scib-metrics' `graph_connectivity`: for each label, the
/// share of its cells in the largest strongly connected component of the
/// directed graph `i -> j` for every neighbour `j` of `i` with the same label;
/// the mean over labels.
///
/// # Errors
/// [`Error::LabelsForRows`] unless there is one label per cell.
pub fn graph_connectivity(neighbors: &Neighbors, labels: &[usize]) -> Result<f64> {
    let n = neighbors.n_cells();
    check_len(n, labels)?;
    let shares: Vec<f64> = by_label(labels)
        .into_values()
        .map(|cells| {
            let (local, members) = (&local_ids(n, &cells), &cells);
            let component = strong_components(cells.len(), move |v| {
                let (others, _) = neighbors.others(members[v]);
                others
                    .iter()
                    .map(move |&j| local[j as usize])
                    .filter(|&w| w != usize::MAX)
            });
            *component_sizes(&component).iter().max().unwrap_or(&0) as f64 / cells.len() as f64
        })
        .collect();
    Ok(mean(&shares))
}

/// kBET per label: the mean acceptance rate and each label's own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kbet {
    /// Mean acceptance rate over the labels that could be scored.
    pub score: f64,
    /// Every label (increasing) with its acceptance rate, `None` where it was
    /// not scored (fewer than 10 cells, or one batch only).
    pub per_label: Vec<(usize, Option<f64>)>,
}

/// kBET (Büttner et al. 2019) per label as scib-metrics' `kbet_per_label`
/// computes it on `neighbors` ([`KBET_NEIGHBORS`] in the Benchmarker).
///
/// For each label, in increasing order, on the subgraph of
/// [`Neighbors::graph`] induced by its cells:
/// 1. Not scored with fewer than 10 cells or cells of one batch only. Else
///    `k0 = min(70, max(10, floor(mean cells per batch / 4)))`.
/// 2. If the subgraph is connected all its cells are used; otherwise the
///    cells of the components of at least `3 k0` cells, if they are 75 % of
///    the label, and the label scores 0 if they are not.
/// 3. Diffusion map: with `q` the degrees, `K = Q^-1 W Q^-1`, `z_i = sqrt(sum_j K_ij)`,
///    `T = Z^-1 K Z^-1`; the `c` eigenpairs of `T` of largest magnitude, each
///    eigenvector scaled by `e / (1 - e)` for its eigenvalue `e`, rounded to
///    `f32` with `1e-8` added, or by 1 where that rounds to 1 (the top one).
///    `c` starts at 100 and, as in scib-metrics, is lowered to `cells - 1` by
///    each label that reaches this step and never raised again, so a small
///    label caps the components of every later one.
/// 4. Each cell's `k0` nearest other cells in the map (exact; scib-metrics
///    asks pynndescent), and Pearson's chi-square test of the batch counts
///    among them and the cell itself against the label's batch proportions,
///    `B - 1` degrees of freedom for the `B` batches of the cells used: the
///    label's score is the fraction of cells with p-value `>= alpha`. With
///    fewer than `k0` other cells (only a label of exactly 10 cells, one
///    component, `k0 = 10`), pynndescent fills each list up with index `-1`,
///    which numpy reads as the last cell: the neighbourhood is then every
///    cell used plus `k0 + 1 - cells` copies of the last one, as here.
///
/// # Errors
/// [`ParamError::KbetAlpha`] unless `0 < alpha < 1`; [`Error::LabelsForRows`]
/// unless `batches` and `labels` have one entry per cell;
/// [`Error::NoLabelScored`] if no label is scored; [`Error::NoConvergence`]
/// if an eigensolver fails.
pub fn kbet_per_label(
    neighbors: &Neighbors,
    batches: &[usize],
    labels: &[usize],
    alpha: f64,
) -> Result<Kbet> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(ParamError::KbetAlpha(alpha).into());
    }
    let n = neighbors.n_cells();
    check_len(n, batches)?;
    check_len(n, labels)?;
    let graph = neighbors.graph();
    let mut n_comps = DIFFUSION_N_COMPS;
    let per_label = by_label(labels)
        .into_iter()
        .map(|(label, cells)| {
            Ok((
                label,
                kbet_label(&graph, &cells, batches, alpha, &mut n_comps)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let scored: Vec<f64> = per_label.iter().filter_map(|&(_, s)| s).collect();
    if scored.is_empty() {
        return Err(Error::NoLabelScored {
            metric: "kbet_per_label",
            reason: "every label has fewer than 10 cells or cells of one batch only",
        });
    }
    Ok(Kbet {
        score: mean(&scored),
        per_label,
    })
}

/// Leiden clusters scored against the labels at the resolution with the best NMI.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeidenNmiAri {
    /// Normalised mutual information with the labels (arithmetic normalisation).
    pub nmi: f64,
    /// Adjusted Rand index with the labels.
    pub ari: f64,
    /// The resolution that gave the best NMI (the first on ties).
    pub resolution: f64,
    /// Clusters at that resolution.
    pub n_clusters: usize,
}

/// scib-metrics' `nmi_ari_cluster_labels_leiden` with `optimize_resolution=True`:
/// Leiden on [`Neighbors::graph`] ([`GRAPH_NEIGHBORS`] in the Benchmarker) at
/// resolutions `0.2, 0.4, .., 2.0`, two passes each (igraph's
/// `community_leiden` default), seeded by `seed`; the NMI and ARI of the
/// resolution with the largest NMI. The resolutions run in parallel on the
/// current rayon pool, each one sequential, so the result is thread-count free.
///
/// # Errors
/// [`Error::LabelsForRows`] unless there is one label per cell.
pub fn nmi_ari_cluster_labels_leiden(
    neighbors: &Neighbors,
    labels: &[usize],
    seed: u64,
) -> Result<LeidenNmiAri> {
    check_len(neighbors.n_cells(), labels)?;
    let graph = neighbors.graph();
    let fits = (1..=10_u32)
        .into_par_iter()
        .map(|i| {
            let resolution = f64::from(2 * i) / 10.0;
            let params = LeidenParams {
                resolution,
                n_iterations: Some(2),
                seed,
            };
            let fit = leiden(&graph, &params)?;
            Ok(LeidenNmiAri {
                nmi: normalized_mutual_info(labels, &fit.membership)?,
                ari: adjusted_rand_index(labels, &fit.membership)?,
                resolution,
                n_clusters: fit.n_clusters,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let best = fits
        .into_iter()
        .reduce(|best, next| if next.nmi > best.nmi { next } else { best });
    best.ok_or(Error::NoSamples)
}

/// The bio-conservation metrics of [`IntegrationScores`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BioConservation {
    /// [`silhouette_label`].
    pub silhouette_label: f64,
    /// [`clisi_knn`].
    pub clisi: f64,
    /// NMI of [`nmi_ari_cluster_labels_leiden`].
    pub leiden_nmi: f64,
    /// ARI of [`nmi_ari_cluster_labels_leiden`].
    pub leiden_ari: f64,
}

impl BioConservation {
    /// The plain mean of the four, as the Benchmarker averages its rows.
    pub fn mean(&self) -> f64 {
        mean(&[
            self.silhouette_label,
            self.clisi,
            self.leiden_nmi,
            self.leiden_ari,
        ])
    }
}

/// The batch-correction metrics of [`IntegrationScores`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchCorrection {
    /// [`silhouette_batch`].
    pub silhouette_batch: f64,
    /// [`ilisi_knn`].
    pub ilisi: f64,
    /// [`kbet_per_label`]'s score.
    pub kbet: f64,
    /// [`graph_connectivity`].
    pub graph_connectivity: f64,
}

impl BatchCorrection {
    /// The plain mean of the four, as the Benchmarker averages its rows.
    pub fn mean(&self) -> f64 {
        mean(&[
            self.silhouette_batch,
            self.ilisi,
            self.kbet,
            self.graph_connectivity,
        ])
    }
}

/// scIB's integration scores of one embedding; see the module docs for what
/// the means cover.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntegrationScores {
    /// Bio conservation.
    pub bio: BioConservation,
    /// Batch correction.
    pub batch: BatchCorrection,
}

impl IntegrationScores {
    /// scIB's overall score, `0.6 bio + 0.4 batch` (the Benchmarker's `Total`).
    pub fn total(&self) -> f64 {
        0.6 * self.bio.mean() + 0.4 * self.batch.mean()
    }
}

/// All eight metrics of the embedding `x` (cells x dims) as the Benchmarker
/// runs them: exact [`LISI_NEIGHBORS`] neighbours, the first
/// [`GRAPH_NEIGHBORS`] for Leiden (seeded by `seed`) and graph connectivity,
/// [`KBET_NEIGHBORS`] for kBET at [`KBET_ALPHA`], all of them for LISI.
///
/// # Errors
/// [`Error::LabelsForRows`] unless `batches` and `labels` have one entry per
/// row; [`Error::TooManyNeighbors`] for 90 cells or fewer; and those of each
/// metric (fewer than two batches or labels, no label kBET or batch ASW can
/// score, non-finite data).
pub fn integration_scores(
    x: ArrayView2<'_, f32>,
    batches: &[usize],
    labels: &[usize],
    seed: u64,
) -> Result<IntegrationScores> {
    check_len(x.nrows(), batches)?;
    check_len(x.nrows(), labels)?;
    let clock = Instant::now();
    let nn = Neighbors::exact(x, LISI_NEIGHBORS)?;
    let (nn_graph, nn_kbet) = (nn.truncate(GRAPH_NEIGHBORS)?, nn.truncate(KBET_NEIGHBORS)?);
    let leiden = nmi_ari_cluster_labels_leiden(&nn_graph, labels, seed)?;
    let scores = IntegrationScores {
        bio: BioConservation {
            silhouette_label: silhouette_label(x, labels)?,
            clisi: clisi_knn(&nn, labels)?,
            leiden_nmi: leiden.nmi,
            leiden_ari: leiden.ari,
        },
        batch: BatchCorrection {
            silhouette_batch: silhouette_batch(x, batches, labels)?,
            ilisi: ilisi_knn(&nn, batches)?,
            kbet: kbet_per_label(&nn_kbet, batches, labels, KBET_ALPHA)?.score,
            graph_connectivity: graph_connectivity(&nn_graph, labels)?,
        },
    };
    tracing::info!(
        n = x.nrows(),
        dims = x.ncols(),
        bio = scores.bio.mean(),
        batch = scores.batch.mean(),
        total = scores.total(),
        leiden_resolution = leiden.resolution,
        seconds = clock.elapsed().as_secs_f64(),
        "integration scores"
    );
    Ok(scores)
}

/// The first `k` of every row of `width` values.
fn first_columns<T: Copy>(v: &[T], width: usize, k: usize) -> Vec<T> {
    v.chunks_exact(width)
        .flat_map(|r| &r[..k])
        .copied()
        .collect()
}

/// `Err(LabelsForRows)` unless `labels` has `n` entries.
fn check_len(n: usize, labels: &[usize]) -> Result<()> {
    if labels.len() != n {
        return Err(Error::LabelsForRows {
            rows: n,
            labels: labels.len(),
        });
    }
    Ok(())
}

/// The number of distinct values of `groups`, or [`Error::TooFewGroups`] below 2.
fn at_least_two(groups: &[usize], metric: &'static str, what: &'static str) -> Result<usize> {
    match encode(groups).1 {
        found @ 0..=1 => Err(Error::TooFewGroups {
            metric,
            groups: what,
            found,
        }),
        found => Ok(found),
    }
}

/// The cells of each label, labels in increasing order (numpy's `np.unique`).
fn by_label(labels: &[usize]) -> BTreeMap<usize, Vec<usize>> {
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        groups.entry(l).or_default().push(i);
    }
    groups
}

/// `local[i]`: the position of cell `i` in `cells`, `usize::MAX` if absent.
fn local_ids(n: usize, cells: &[usize]) -> Vec<usize> {
    let mut local = vec![usize::MAX; n];
    for (v, &i) in cells.iter().enumerate() {
        local[i] = v;
    }
    local
}

/// Arithmetic mean; NaN for an empty slice (callers never pass one).
fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// numpy's median: the middle value, or the mean of the two middle ones.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Simpson's index `sum_c (sum_{j in c} P_j)^2` of one cell's neighbours, with
/// `P` from LISI's bisection (module docs), or -1 where the entropy is 0.
fn simpson_index(
    indices: &[u32],
    distances: &[f32],
    codes: &[usize],
    n_labels: usize,
    log_perplexity: f64,
) -> f64 {
    let d: Vec<f64> = distances.iter().map(|&v| f64::from(v)).collect();
    let mut p = vec![0.0; d.len()];
    let (mut beta, mut lo, mut hi) = (1.0_f64, f64::NEG_INFINITY, f64::INFINITY);
    let mut h = kernel_entropy(&d, beta, &mut p);
    let mut diff = h - log_perplexity;
    for _ in 0..LISI_MAX_STEPS {
        if diff.abs() < LISI_TOL {
            break;
        }
        if diff > 0.0 {
            lo = beta;
            beta = if hi == f64::INFINITY {
                beta * 2.0
            } else {
                (beta + hi) / 2.0
            };
        } else {
            hi = beta;
            beta = if lo == f64::NEG_INFINITY {
                beta / 2.0
            } else {
                (beta + lo) / 2.0
            };
        }
        h = kernel_entropy(&d, beta, &mut p);
        diff = h - log_perplexity;
    }
    if h == 0.0 {
        return -1.0;
    }
    let mut per_label = vec![0.0_f64; n_labels];
    for (&j, &pj) in indices.iter().zip(&p) {
        per_label[codes[j as usize]] += pj;
    }
    per_label.iter().map(|s| s * s).sum()
}

/// Writes `P_j = exp(-beta d_j) / sum` into `p` and returns the entropy
/// `H = ln(sum) + beta sum_j d_j P_j`; `H = 0` and `P = 0` if every weight underflows.
fn kernel_entropy(d: &[f64], beta: f64, p: &mut [f64]) -> f64 {
    for (pj, &dj) in p.iter_mut().zip(d) {
        *pj = (-dj * beta).exp();
    }
    let sum: f64 = p.iter().sum();
    if sum == 0.0 {
        return 0.0;
    }
    let h = sum.ln() + beta * d.iter().zip(&*p).map(|(a, b)| a * b).sum::<f64>() / sum;
    p.iter_mut().for_each(|pj| *pj /= sum);
    h
}

/// Strongly connected components of the directed graph on `0..m` whose node
/// `v` points to `successors(v)`, as a component id per node (Kosaraju's two
/// passes, iterative: pathfinding's recursive search would overflow the
/// stack on a label of some hundred thousand cells).
fn strong_components<I: IntoIterator<Item = usize>>(
    m: usize,
    successors: impl Fn(usize) -> I,
) -> Vec<usize> {
    let out: Vec<Vec<usize>> = (0..m)
        .map(|v| successors(v).into_iter().collect())
        .collect();
    // 1. The order in which a depth-first search finishes the nodes.
    let mut finished = Vec::with_capacity(m);
    let mut seen = vec![false; m];
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in 0..m {
        if seen[root] {
            continue;
        }
        seen[root] = true;
        stack.push((root, 0));
        while let Some(top) = stack.last_mut() {
            let (v, next) = *top;
            if let Some(&w) = out[v].get(next) {
                top.1 += 1;
                if !seen[w] {
                    seen[w] = true;
                    stack.push((w, 0));
                }
            } else {
                finished.push(v);
                stack.pop();
            }
        }
    }
    // 2. On the reversed graph, each node not yet placed, latest finished
    //    first, collects its component.
    let mut into = vec![Vec::new(); m];
    for (v, ws) in out.iter().enumerate() {
        ws.iter().for_each(|&w| into[w].push(v));
    }
    let mut component = vec![usize::MAX; m];
    let mut count = 0;
    for &root in finished.iter().rev() {
        if component[root] != usize::MAX {
            continue;
        }
        component[root] = count;
        let mut todo = vec![root];
        while let Some(v) = todo.pop() {
            for &w in &into[v] {
                if component[w] == usize::MAX {
                    component[w] = count;
                    todo.push(w);
                }
            }
        }
        count += 1;
    }
    component
}

/// Cells per component id.
fn component_sizes(component: &[usize]) -> Vec<usize> {
    let mut sizes = vec![0; component.iter().max().map_or(0, |&c| c + 1)];
    component.iter().for_each(|&c| sizes[c] += 1);
    sizes
}

/// The subgraph of `graph` induced by `cells`, as local adjacency lists.
fn induced(graph: &WeightedGraph, cells: &[usize]) -> Vec<Vec<(usize, f64)>> {
    let local = local_ids(graph.n_nodes(), cells);
    cells
        .iter()
        .map(|&i| {
            graph
                .neighbors(i)
                .filter(|&(j, _)| local[j] != usize::MAX)
                .map(|(j, w)| (local[j], w))
                .collect()
        })
        .collect()
}

/// One label's kBET acceptance rate, steps 1 to 4 of [`kbet_per_label`];
/// `n_comps` carries the diffusion components from label to label.
fn kbet_label(
    graph: &WeightedGraph,
    cells: &[usize],
    batches: &[usize],
    alpha: f64,
    n_comps: &mut usize,
) -> Result<Option<f64>> {
    let n_obs = cells.len();
    let sub_batches: Vec<usize> = cells.iter().map(|&i| batches[i]).collect();
    let n_batches = encode(&sub_batches).1;
    if n_obs < KBET_MIN_CELLS || n_batches == 1 {
        return Ok(None);
    }
    let mut k0 = (n_obs / (4 * n_batches)).clamp(10, 70);
    if k0 * n_obs >= KBET_SIZE_MAX {
        k0 = KBET_SIZE_MAX / n_obs;
    }
    let mut sub = induced(graph, cells);
    let adjacency = &sub;
    let component = strong_components(n_obs, move |v| adjacency[v].iter().map(|&(w, _)| w));
    let sizes = component_sizes(&component);
    let mut used = sub_batches;
    if sizes.len() > 1 {
        let keep: Vec<usize> = (0..n_obs)
            .filter(|&v| sizes[component[v]] >= 3 * k0)
            .collect();
        if 4 * keep.len() < 3 * n_obs {
            return Ok(Some(0.0));
        }
        sub = {
            let local = local_ids(n_obs, &keep);
            keep.iter()
                .map(|&v| {
                    sub[v]
                        .iter()
                        .filter(|&&(w, _)| local[w] != usize::MAX)
                        .map(|&(w, x)| (local[w], x))
                        .collect()
                })
                .collect()
        };
        used = keep.iter().map(|&v| used[v]).collect();
    }
    let m = sub.len();
    *n_comps = (*n_comps).min(m - 1);
    let knn = if k0 < m {
        exact_knn(diffusion_map(&sub, *n_comps)?.view(), k0)
    } else {
        every_cell_padded(m, k0)
    };
    let score = kbet_acceptance(&knn, &used, alpha);
    tracing::debug!(
        cells = n_obs,
        used = m,
        k0,
        n_comps = *n_comps,
        score,
        "kBET label"
    );
    Ok(Some(score))
}

/// Neighbour lists of `k >= m` entries on `m` cells as pynndescent returns
/// them when asked for more neighbours than there are cells: every other
/// cell, then index `-1` (numpy's last cell, `m - 1`) for the rest.
fn every_cell_padded(m: usize, k: usize) -> Knn {
    let indices = (0..m)
        .flat_map(|i| {
            let others = (0..m).filter(move |&j| j != i);
            others
                .chain(std::iter::repeat(m - 1))
                .take(k)
                .map(|j| j as u32)
        })
        .collect();
    Knn {
        k,
        indices,
        distances: vec![f32::INFINITY; m * k],
    }
}

/// scib-metrics' diffusion map of a symmetric weighted graph (local adjacency
/// lists, every node with an edge): `m x n_comps` in `f32`, step 3 of
/// [`kbet_per_label`].
fn diffusion_map(adjacency: &[Vec<(usize, f64)>], n_comps: usize) -> Result<Array2<f32>> {
    let m = adjacency.len();
    let t = transitions(adjacency);
    let (vectors, values) = if m <= DENSE_EIGEN_MAX {
        dense_top_magnitude(&dense_matrix(&t), n_comps)?
    } else {
        partial_top_magnitude(&sparse_matrix(&t)?, n_comps)?
    };
    let scale: Vec<f32> = values
        .iter()
        .map(|&e| {
            let e = e as f32 + DIFFUSION_EPS;
            if e == 1.0 { 1.0 } else { e / (1.0 - e) }
        })
        .collect();
    Ok(Array2::from_shape_fn((m, n_comps), |(i, c)| {
        vectors[(i, c)] as f32 * scale[c]
    }))
}

/// scanpy's symmetric transition matrix of a weighted graph (local adjacency
/// lists, every node with an edge), row by row: with `q` the degrees,
/// `K = Q^-1 W Q^-1`, `z_i = sqrt(sum_j K_ij)`, `T = Z^-1 K Z^-1`.
fn transitions(adjacency: &[Vec<(usize, f64)>]) -> Vec<Vec<(usize, f64)>> {
    let q: Vec<f64> = adjacency
        .iter()
        .map(|r| r.iter().map(|&(_, w)| w).sum())
        .collect();
    let z: Vec<f64> = adjacency
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.iter()
                .map(|&(j, w)| w / (q[i] * q[j]))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    adjacency
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.iter()
                .map(|&(j, w)| (j, w / (q[i] * q[j] * z[i] * z[j])))
                .collect()
        })
        .collect()
}

/// Rows of `(column, value)` entries as a dense square matrix.
fn dense_matrix(rows: &[Vec<(usize, f64)>]) -> Mat<f64> {
    let mut dense = Mat::<f64>::zeros(rows.len(), rows.len());
    for (i, r) in rows.iter().enumerate() {
        r.iter().for_each(|&(j, v)| dense[(i, j)] = v);
    }
    dense
}

/// Rows of `(column, value)` entries as a sparse square matrix.
fn sparse_matrix(rows: &[Vec<(usize, f64)>]) -> Result<SparseRowMat<usize, f64>> {
    let m = rows.len();
    let triplets: Vec<Triplet<usize, usize, f64>> = rows
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.iter().map(move |&(j, v)| Triplet::new(i, j, v)))
        .collect();
    SparseRowMat::<usize, f64>::try_new_from_triplets(m, m, &triplets)
        .map_err(|_| Error::NoConvergence { dim: m })
}

/// The `k` eigenpairs of largest magnitude of a dense symmetric matrix
/// (ARPACK's `which="LM"`), by a full decomposition.
fn dense_top_magnitude(a: &Mat<f64>, k: usize) -> Result<(Mat<f64>, Vec<f64>)> {
    let m = a.nrows();
    let evd = a
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| Error::NoConvergence { dim: m })?;
    let (u, s) = (evd.U(), evd.S().column_vector());
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| s[b].abs().total_cmp(&s[a].abs()));
    order.truncate(k);
    let vectors = Mat::from_fn(m, k, |i, c| u[(i, order[c])]);
    Ok((vectors, order.iter().map(|&c| s[c]).collect()))
}

/// The `k` eigenpairs of largest magnitude of a sparse symmetric matrix `a`
/// with `||a|| <= 1` (the diffusion operator), by Chebyshev-filtered subspace
/// iteration (Zhou and Saad 2007) with Rayleigh-Ritz, filtered for magnitude:
/// on a block of `b = k + EIGEN_BLOCK_EXTRA` orthonormal columns (seeded random at
/// first), the Ritz pairs of `X^T a X` ordered by `|theta|`; while the `k`
/// largest have residuals `||a u - theta u|| > EIGEN_TOL`, the block becomes
/// `T_q(a / c) X` orthonormalised, with `T_q` the Chebyshev polynomial of even
/// degree `q` (so `+lambda` and `-lambda` alike) and `c` the smallest
/// `|theta|` of the block: eigenvalues inside `[-c, c]` stay within `[-1, 1]`
/// while those outside grow as `cosh(q acosh(|lambda| / c))`. `q` is the
/// largest even degree (at most `CHEBYSHEV_MAX_DEGREE`) that keeps
/// `T_q(1 / c)` within `CHEBYSHEV_MAX_GROWTH`, so the weakest wanted
/// directions are not lost to rounding next to the strongest.
///
/// A block method because the diffusion operator has repeated eigenvalues
/// (1 once per connected component, and near-ties in its tail), which a
/// single-vector Lanczos iteration (ARPACK, faer's Krylov-Schur) finds only
/// through rounding errors: faer 0.24's `partial_self_adjoint_eigen` missed
/// one copy of a fourfold eigenvalue and returned a ghost copy of another
/// on the ring of `dense_and_partial_eigensolvers_agree`. A block of `b`
/// columns finds eigenvalues of multiplicity up to `b`, and the Ritz vectors
/// are orthonormal by construction.
fn partial_top_magnitude(a: &SparseRowMat<usize, f64>, k: usize) -> Result<(Mat<f64>, Vec<f64>)> {
    let m = a.nrows();
    let b = (k + EIGEN_BLOCK_EXTRA).min(m);
    if k == 0 || k >= m {
        return Err(Error::NoConvergence { dim: m });
    }
    let par = faer::get_global_parallelism();
    let apply = |x: MatRef<'_, f64>| {
        let mut y = Mat::<f64>::zeros(m, x.ncols());
        sparse_dense_matmul(y.as_mut(), Accum::Replace, a.as_ref(), x, 1.0, par);
        y
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let start = Mat::<f64>::from_fn(m, b, |_, _| rng.random::<f64>() - 0.5);
    let mut x = orthonormal_block(start, &mut rng);
    for _ in 0..EIGEN_MAX_CYCLES {
        // Rayleigh-Ritz on the block.
        let ax = apply(x.as_ref());
        let mut h = x.transpose() * &ax;
        for j in 0..b {
            for i in j + 1..b {
                let mean = (h[(i, j)] + h[(j, i)]) / 2.0;
                h[(i, j)] = mean;
                h[(j, i)] = mean;
            }
        }
        let (ritz, theta) = dense_top_magnitude(&h, b)?;
        let u = &x * &ritz;
        let au = &ax * &ritz;
        let converged = (0..k).all(|c| {
            let r: f64 = (0..m)
                .map(|i| (au[(i, c)] - theta[c] * u[(i, c)]).powi(2))
                .sum();
            r.sqrt() <= EIGEN_TOL
        });
        if converged {
            return Ok((u.subcols(0, k).to_owned(), theta[..k].to_vec()));
        }
        // The filter: T_q(a / c) u by the three-term recurrence.
        let c = theta[b - 1].abs().max(CHEBYSHEV_MIN_CUTOFF);
        let growth = (1.0 / c).acosh();
        let q = ((CHEBYSHEV_MAX_GROWTH.acosh() / growth) as usize / 2 * 2)
            .clamp(2, CHEBYSHEV_MAX_DEGREE);
        let (mut previous, mut current) = (u, au * (1.0 / c));
        for _ in 1..q {
            let next = apply(current.as_ref()) * (2.0 / c) - &previous;
            previous = current;
            current = next;
        }
        x = orthonormal_block(current, &mut rng);
    }
    Err(Error::NoConvergence { dim: m })
}

/// An orthonormal basis of the columns of `block` by a thin QR; columns that
/// lie (numerically) in the span of the ones before them are replaced by
/// random ones and the QR done again.
fn orthonormal_block(block: Mat<f64>, rng: &mut ChaCha8Rng) -> Mat<f64> {
    let mut w = block;
    for _ in 0..EIGEN_REFILLS {
        let scale = (0..w.ncols())
            .map(|c| w.col(c).norm_l2())
            .fold(0.0, f64::max);
        let qr = w.qr();
        let r = qr.thin_R();
        let deficient: Vec<usize> = (0..w.ncols())
            .filter(|&c| r[(c, c)].is_nan() || r[(c, c)].abs() <= EIGEN_RANK_TOL * scale)
            .collect();
        if deficient.is_empty() {
            return qr.compute_thin_Q();
        }
        for &c in &deficient {
            w.col_mut(c)
                .iter_mut()
                .for_each(|v| *v = rng.random::<f64>() - 0.5);
        }
    }
    // Random columns are never deficient in practice; keep the last QR.
    w.qr().compute_thin_Q()
}

/// kBET's test on neighbour lists (scib-metrics' `kbet`): the fraction of
/// cells whose batch counts among themselves and their `knn.k` neighbours pass
/// Pearson's chi-square test against the batch proportions of all cells at
/// level `alpha`; 0 with a single batch (every test degenerate, none passed).
fn kbet_acceptance(knn: &Knn, batches: &[usize], alpha: f64) -> f64 {
    let (codes, n_batches) = encode(batches);
    let Ok(chi2) = ChiSquared::new((n_batches as f64) - 1.0) else {
        return 0.0;
    };
    let n = codes.len();
    let mut expected = vec![0.0_f64; n_batches];
    codes.iter().for_each(|&c| expected[c] += 1.0);
    let size = (knn.k + 1) as f64;
    expected.iter_mut().for_each(|e| *e *= size / n as f64);
    let accepted = (0..n)
        .filter(|&i| {
            let mut observed = vec![0.0_f64; n_batches];
            observed[codes[i]] += 1.0;
            knn.row(i)
                .0
                .iter()
                .for_each(|&j| observed[codes[j as usize]] += 1.0);
            let stat: f64 = observed
                .iter()
                .zip(&expected)
                .map(|(o, e)| (o - e) * (o - e) / e)
                .sum();
            chi2.sf(stat) >= alpha
        })
        .count();
    accepted as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::array;

    /// Neighbours from rows of (index, distance) pairs, each row after its own cell.
    fn lists(rows: &[&[(u32, f32)]]) -> Result<Neighbors> {
        let k = rows[0].len() + 1;
        let idx = Array2::from_shape_fn((rows.len(), k), |(i, c)| {
            if c == 0 { i as u32 } else { rows[i][c - 1].0 }
        });
        let dist =
            Array2::from_shape_fn(
                (rows.len(), k),
                |(i, c)| if c == 0 { 0.0 } else { rows[i][c - 1].1 },
            );
        Neighbors::from_arrays(idx.view(), dist.view())
    }

    #[test]
    fn strong_components_of_a_cycle_and_a_tail() {
        // 0 -> 1 -> 2 -> 0, 2 -> 3, 3 -> 4, 4 -> 3, 5 alone.
        let out = [vec![1], vec![2], vec![0, 3], vec![4], vec![3], vec![]];
        let c = strong_components(6, |v| out[v].clone());
        assert!(c[0] == c[1] && c[1] == c[2]);
        assert!(c[3] == c[4] && c[3] != c[0]);
        assert!(c[5] != c[0] && c[5] != c[3]);
        let mut sizes = component_sizes(&c);
        sizes.sort_unstable();
        assert_eq!(sizes, [1, 2, 3]);
    }

    #[test]
    fn lisi_of_an_even_mix_is_the_number_of_labels() -> Result<()> {
        // Every cell sees the three others at the same distance: P is uniform.
        let rows: Vec<Vec<(u32, f32)>> = (0..4_u32)
            .map(|i| (0..4).filter(|&j| j != i).map(|j| (j, 1.0)).collect())
            .collect();
        let refs: Vec<&[(u32, f32)]> = rows.iter().map(|r| r.as_slice()).collect();
        let nn = lists(&refs)?;
        // Cell 0 sees one cell of label 0 and two of label 1: 1 / ((1/3)^2 + (2/3)^2).
        let lisi = lisi_knn(&nn, &[0, 0, 1, 1], Some(2.0))?;
        assert_abs_diff_eq!(lisi[0], 9.0 / 5.0, epsilon = 1e-12);
        Ok(())
    }

    #[test]
    fn lisi_bisection_reaches_the_perplexity() {
        let d: Vec<f32> = (1..=20).map(|j| j as f32 * 0.3).collect();
        let idx: Vec<u32> = (1..=20).collect();
        let codes = vec![0; 21];
        let target = 5.0_f64.ln();
        let simpson = simpson_index(&idx, &d, &codes, 1, target);
        assert_abs_diff_eq!(simpson, 1.0, epsilon = 1e-12);
        // The kernel at the beta the bisection stops at has entropy ln 5.
        let d64: Vec<f64> = d.iter().map(|&v| f64::from(v)).collect();
        let mut p = vec![0.0; 20];
        let (mut lo, mut hi) = (0.0, 100.0);
        for _ in 0..200 {
            let mid = (lo + hi) / 2.0;
            if kernel_entropy(&d64, mid, &mut p) > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        assert_abs_diff_eq!(kernel_entropy(&d64, lo, &mut p), target, epsilon = 1e-9);
    }

    #[test]
    fn median_is_numpys() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn graph_connectivity_of_two_one_way_chains() -> Result<()> {
        // Label 0: 0 <-> 1, 2 -> 0 only (2 is its own strong component): 2/3.
        // Label 1: 3 <-> 4: 1.
        let nn = lists(&[
            &[(1, 1.0)],
            &[(0, 1.0)],
            &[(0, 1.0)],
            &[(4, 1.0)],
            &[(3, 1.0)],
        ])?;
        let gc = graph_connectivity(&nn, &[0, 0, 0, 1, 1])?;
        assert_abs_diff_eq!(gc, (2.0 / 3.0 + 1.0) / 2.0, epsilon = 1e-12);
        Ok(())
    }

    #[test]
    fn kbet_accepts_mixed_and_rejects_split_neighbourhoods() {
        // 20 cells alternating between two batches; neighbours of the same parity.
        let n = 20;
        let batches: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let knn = |mixed: bool| Knn {
            k: 9,
            indices: (0..n)
                .flat_map(|i| {
                    (1..=9).map(move |s| (if mixed { (i + s) % n } else { (i + 2 * s) % n }) as u32)
                })
                .collect(),
            distances: vec![1.0; n * 9],
        };
        assert_eq!(kbet_acceptance(&knn(true), &batches, 0.05), 1.0);
        assert_eq!(kbet_acceptance(&knn(false), &batches, 0.05), 0.0);
        assert_eq!(kbet_acceptance(&knn(true), &vec![0; n], 0.05), 0.0);
    }

    #[test]
    fn dense_and_partial_eigensolvers_agree() -> Result<()> {
        // A ring of 300 nodes with chords, normalised as the diffusion map does.
        let m = 300;
        let adjacency: Vec<Vec<(usize, f64)>> = (0..m)
            .map(|i| {
                let mut r = vec![((i + 1) % m, 1.0), ((i + m - 1) % m, 1.0)];
                let chord = (i * 7 + 3) % m;
                let back = (0..m).filter(|&j| (j * 7 + 3) % m == i);
                r.extend(
                    std::iter::once(chord)
                        .chain(back)
                        .filter(|&j| j != i)
                        .map(|j| (j, 0.5)),
                );
                r.sort_by_key(|&(j, _)| j);
                r.dedup_by(|a, b| {
                    let same = a.0 == b.0;
                    if same {
                        b.1 += a.1;
                    }
                    same
                });
                r
            })
            .collect();
        let k = 20;
        let dense = dense_matrix(&adjacency);
        let sparse = sparse_matrix(&adjacency)?;
        let (_, want) = dense_top_magnitude(&dense, k)?;
        let (vectors, got) = partial_top_magnitude(&sparse, k)?;
        // The ring's eigenvalues come in pairs and fours: every copy must be
        // found, none twice (orthonormal vectors).
        for (g, w) in got.iter().zip(&want) {
            assert_abs_diff_eq!(g.abs(), w.abs(), epsilon = 1e-9);
        }
        assert_eigenpairs(&dense, &vectors, &got);
        Ok(())
    }

    /// `vectors` orthonormal and each `(vectors[c], values[c])` an eigenpair of `a`.
    fn assert_eigenpairs(a: &Mat<f64>, vectors: &Mat<f64>, values: &[f64]) {
        let gram = vectors.transpose() * vectors;
        for i in 0..values.len() {
            for j in 0..values.len() {
                let identity = if i == j { 1.0 } else { 0.0 };
                assert_abs_diff_eq!(gram[(i, j)], identity, epsilon = 1e-9);
            }
            let v = vectors.col(i);
            let av = a * v;
            let residual = (0..a.nrows())
                .map(|r| (av[r] - values[i] * v[r]).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(
                residual < 1e-8,
                "residual {residual} for eigenvalue {}",
                values[i]
            );
        }
    }

    #[test]
    fn partial_eigensolver_finds_every_component_of_a_diffusion_operator() -> Result<()> {
        // Two far-apart blobs of 300 cells: their 50-neighbour graph has two
        // components, so the diffusion operator has eigenvalue 1 twice.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x = Array2::from_shape_fn((600, 5), |(i, j)| {
            let centre = if i < 300 || j > 0 { 0.0 } else { 100.0 };
            centre + rng.random::<f32>() - 0.5
        });
        let graph = Neighbors::exact(x.view(), 50)?.graph();
        let t = transitions(&induced(&graph, &(0..600).collect::<Vec<_>>()));
        let dense = dense_matrix(&t);
        let k = 100;
        let (_, want) = dense_top_magnitude(&dense, k)?;
        let (vectors, got) = partial_top_magnitude(&sparse_matrix(&t)?, k)?;
        assert_abs_diff_eq!(want[0], 1.0, epsilon = 1e-12);
        assert_abs_diff_eq!(want[1], 1.0, epsilon = 1e-12);
        assert!(want[2] < 1.0 - 1e-3, "a third eigenvalue {}", want[2]);
        for (g, w) in got.iter().zip(&want) {
            assert_abs_diff_eq!(g.abs(), w.abs(), epsilon = 1e-9);
        }
        assert_eigenpairs(&dense, &vectors, &got);
        Ok(())
    }

    #[test]
    fn neighbour_lists_are_validated() {
        let idx = array![[0_u32, 1], [1, 0], [2, 1]];
        let dist = array![[0.0_f32, 1.0], [0.0, 1.0], [0.0, 2.0]];
        assert!(Neighbors::from_arrays(idx.view(), dist.view()).is_ok());
        let bad = array![[0_u32, 1], [0, 1], [2, 1]];
        assert_eq!(
            Neighbors::from_arrays(bad.view(), dist.view()),
            Err(Error::NeighborIndex {
                row: 1,
                col: 0,
                index: 0,
                n_cells: 3
            })
        );
        let bad = array![[0_u32, 3], [1, 0], [2, 1]];
        assert!(matches!(
            Neighbors::from_arrays(bad.view(), dist.view()),
            Err(Error::NeighborIndex {
                row: 0,
                col: 1,
                index: 3,
                ..
            })
        ));
        let bad = array![[0.0_f32, 1.0], [0.0, f32::NAN], [0.0, 2.0]];
        assert!(matches!(
            Neighbors::from_arrays(idx.view(), bad.view()),
            Err(Error::NeighborDistance { row: 1, col: 1, .. })
        ));
        assert_eq!(
            Neighbors::from_arrays(idx.view(), dist.slice(s![.., ..1])),
            Err(Error::NeighborsShape {
                indices: (3, 2),
                distances: (3, 1)
            })
        );
        assert_eq!(
            Neighbors::from_arrays(idx.slice(s![.., ..1]), dist.slice(s![.., ..1])),
            Err(Error::Param(ParamError::NNeighbors(1)))
        );
    }
}
