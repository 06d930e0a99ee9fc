//! Metrics for scae on plain `ndarray` matrices: reconstruction error of a
//! count matrix, convergence summaries of a loss history, and the clustering
//! and embedding toolkit used to judge latent spaces (k-means, agreement
//! scores, silhouette, PCA as the linear baseline, Leiden clusters on a
//! neighbour graph as scanpy makes them, and scIB's integration metrics for
//! embeddings of several batches).
//!
//! This crate never touches tch: models hand over `ArrayView2<f32>` (cells x genes
//! or cells x latent dims) or `&[f64]` loss histories, so the metrics can be
//! tested on tiny hand-made inputs and reused by every study without a GPU. All
//! sums are accumulated in `f64` whatever the element type, so a 10k x 20k
//! matrix loses no precision. Where scikit-learn defines a metric, this crate
//! follows its conventions and `tests/golden.rs` checks it against values that
//! `tests/fixtures/make_fixtures.py` computed with scikit-learn.
//!
//! - [`reconstruction`]: mean squared error over all entries, and split by
//!   whether the true count is zero (dropout-heavy single-cell data makes the
//!   split the interesting part).
//! - [`mod@convergence`]: when did a loss curve reach its final value.
//! - [`kmeans`]: k-means with greedy k-means++ seeding and seeded restarts.
//! - [`metrics`]: adjusted Rand index, normalised mutual information,
//!   Hungarian-matched accuracy, and the silhouette score.
//! - [`mod@pca`]: exact centred PCA (faer eigendecomposition) with
//!   scikit-learn's sign convention.
//! - [`mod@tsne`]: 2-D t-SNE (Barnes-Hut or FFT-interpolated repulsion, exact
//!   neighbours, PCA start), the non-linear view of an embedding.
//! - [`mod@graph`]: [`WeightedGraph`], an undirected weighted graph in
//!   compressed sparse rows.
//! - [`neighbors`]: [`knn_graph`], scanpy's `pp.neighbors` graph (exact
//!   Euclidean neighbours, umap's fuzzy simplicial set).
//! - [`mod@leiden`]: Leiden clustering with leidenalg's RBConfiguration
//!   quality (scanpy's `tl.leiden`), through the `leiden-rs` crate;
//!   [`leiden_knn`] goes from a cells x dims matrix to clusters in one call.
//! - [`integration`]: scIB's integration metrics as scib-metrics computes
//!   them (batch and label silhouettes, iLISI and cLISI, graph connectivity,
//!   kBET, Leiden NMI/ARI) on [`Neighbors`], and their bio-conservation,
//!   batch-correction and total scores ([`integration_scores`]).
//! - [`error`]: the crate's [`Error`], with parameter errors apart in
//!   [`ParamError`].

pub mod convergence;
mod dense;
pub mod error;
pub mod graph;
pub mod integration;
pub mod kmeans;
mod knn;
pub mod leiden;
pub mod metrics;
pub mod neighbors;
pub mod pca;
pub mod reconstruction;
pub mod tsne;

pub use convergence::{Convergence, convergence, first_epoch_within};
pub use error::{Error, ParamError, Result};
pub use graph::WeightedGraph;
pub use integration::{
    BatchCorrection, BioConservation, GRAPH_NEIGHBORS, IntegrationScores, KBET_ALPHA,
    KBET_NEIGHBORS, Kbet, LISI_NEIGHBORS, LeidenNmiAri, Neighbors, clisi_knn, graph_connectivity,
    ilisi_knn, integration_scores, kbet_per_label, lisi_knn, nmi_ari_cluster_labels_leiden,
    silhouette_batch, silhouette_label,
};
pub use kmeans::{KMeans, KMeansParams};
pub use leiden::{Leiden, LeidenParams, leiden, leiden_knn, rb_configuration_quality};
pub use metrics::{
    SILHOUETTE_MAX_CELLS, adjusted_rand_index, hungarian_accuracy, hungarian_matching,
    normalized_mutual_info, silhouette_samples, silhouette_score,
};
pub use neighbors::{check_n_neighbors, knn_graph};
pub use pca::{Pca, pca};
pub use reconstruction::{ReconstructionError, mse, reconstruction_error};
pub use tsne::{Tsne, TsneInit, TsneMethod, TsneParams, tsne};

/// Runs `f` on a rayon pool of `threads` threads (0: one per core), so the
/// parallel metrics, PCA and t-SNE inside use that many and no more.
///
/// # Errors
/// [`Error::ThreadPool`] if the pool cannot be started.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::ThreadPool {
            threads,
            reason: e.to_string(),
        })?;
    Ok(pool.install(f))
}
