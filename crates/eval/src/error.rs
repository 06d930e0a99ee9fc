//! The error types of scae-eval: one enum for the whole crate, each message
//! carrying the values that made the input unusable.
//!
//! Parameter errors ([`ParamError`]: a k-means with zero clusters, a PCA with
//! zero components) are kept apart from run-time errors about the data
//! (mismatched lengths, NaN entries, more clusters than cells), so a caller can
//! validate a configuration before any data is loaded.

/// Result alias used throughout scae-eval.
pub type Result<T> = std::result::Result<T, Error>;

/// A parameter that is invalid whatever the data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// k-means asked for zero clusters.
    #[error("n_clusters must be at least 1, got 0")]
    ZeroClusters,
    /// k-means asked for zero restarts.
    #[error("n_init must be at least 1, got 0")]
    ZeroInit,
    /// k-means asked for zero Lloyd iterations.
    #[error("max_iter must be at least 1, got 0")]
    ZeroMaxIter,
    /// The k-means tolerance is negative, NaN or infinite.
    #[error("tol must be finite and >= 0, got {0}")]
    Tolerance(f64),
    /// PCA asked for zero components.
    #[error("n_components must be at least 1, got 0")]
    ZeroComponents,
    /// A t-SNE perplexity that is not a finite positive number.
    #[error("perplexity must be finite and > 0, got {0}")]
    Perplexity(f64),
    /// A t-SNE perplexity too large for the number of cells: every cell needs
    /// `3 * perplexity` neighbours.
    #[error(
        "perplexity {perplexity} is too large for {n_samples} cells: t-SNE needs cells - 1 >= 3 * perplexity, so at most {}",
        (n_samples.saturating_sub(1)) as f64 / 3.0
    )]
    PerplexityTooLarge {
        /// The requested perplexity.
        perplexity: f64,
        /// Cells in the data.
        n_samples: usize,
    },
    /// The Barnes-Hut angle is not finite and > 0 (0 would be exact t-SNE).
    #[error("theta must be finite and > 0, got {0}")]
    Theta(f64),
    /// t-SNE asked for zero iterations.
    #[error("n_iter must be at least 1, got 0")]
    ZeroIterations,
    /// The early-exaggeration phase is longer than the whole run.
    #[error("early_exaggeration_iter ({early}) exceeds n_iter ({total})")]
    ExaggerationIter {
        /// Iterations with exaggerated affinities.
        early: usize,
        /// Total iterations.
        total: usize,
    },
    /// An early-exaggeration factor that is not finite and >= 1.
    #[error("early_exaggeration must be finite and >= 1, got {0}")]
    EarlyExaggeration(f64),
    /// A learning rate that is not finite and > 0.
    #[error("learning_rate must be finite and > 0, got {0}")]
    LearningRate(f64),
    /// A neighbour graph needs the cell itself and at least one other.
    #[error("n_neighbors must be at least 2 (the cell itself and one other), got {0}")]
    NNeighbors(usize),
    /// A Leiden resolution that is not finite and > 0.
    #[error("resolution must be finite and > 0, got {0}")]
    Resolution(f64),
    /// Leiden asked for zero passes.
    #[error("n_iterations must be at least 1 (or unset, to run until no improvement), got 0")]
    ZeroLeidenIterations,
    /// A kBET significance level outside `(0, 1)`.
    #[error("kBET's alpha must be in (0, 1), got {0}")]
    KbetAlpha(f64),
}

/// Everything that can go wrong when computing a metric.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An invalid parameter, see [`ParamError`] (whose message is shown as it is,
    /// so an error chain does not print it twice).
    #[error(transparent)]
    Param(#[from] ParamError),
    /// Truth and prediction matrices have different shapes.
    #[error(
        "shape mismatch: truth is {}x{}, prediction is {}x{}",
        truth.0, truth.1, pred.0, pred.1
    )]
    ShapeMismatch {
        /// Shape of the truth matrix (rows, columns).
        truth: (usize, usize),
        /// Shape of the prediction matrix (rows, columns).
        pred: (usize, usize),
    },
    /// The matrices have no entries (a zero-length axis), so a mean is undefined.
    #[error("empty input: the matrices have no entries")]
    Empty,
    /// The loss history has no epochs.
    #[error("empty loss history: no epochs to summarise")]
    EmptyHistory,
    /// A loss history contains a NaN or infinite value.
    #[error("loss at epoch {epoch} (1-based) is not finite: {value}")]
    NonFiniteLoss {
        /// The 1-based epoch of the offending loss.
        epoch: usize,
        /// The offending value.
        value: f64,
    },
    /// A checkpoint epoch of 0 was requested; epochs are 1-based.
    #[error("checkpoint epoch 0 requested; epochs are 1-based")]
    ZeroCheckpoint,
    /// A data matrix contains a NaN or infinite entry.
    #[error("entry ({row}, {col}) of the data is not finite: {value}")]
    NonFinite {
        /// Row (cell) of the first offending entry.
        row: usize,
        /// Column (gene or latent dimension) of the first offending entry.
        col: usize,
        /// The offending value.
        value: f64,
    },
    /// There are no cells (rows or labels) to score.
    #[error("no samples: the input has no rows")]
    NoSamples,
    /// Two labellings of the same cells differ in length.
    #[error("label vectors differ in length: truth has {truth}, prediction has {pred}")]
    LabelLengthMismatch {
        /// Length of the true labels.
        truth: usize,
        /// Length of the predicted labels.
        pred: usize,
    },
    /// A labelling does not have one label per row of the data.
    #[error("{labels} labels for {rows} rows of data")]
    LabelsForRows {
        /// Rows (cells) of the data matrix.
        rows: usize,
        /// Length of the label vector.
        labels: usize,
    },
    /// k-means asked for more clusters than there are cells.
    #[error("cannot form {n_clusters} clusters from {n_samples} cells")]
    TooManyClusters {
        /// Requested number of clusters.
        n_clusters: usize,
        /// Cells in the data.
        n_samples: usize,
    },
    /// The silhouette is defined only for 2 to `n_samples - 1` clusters.
    #[error("silhouette needs 2 to n_samples - 1 = {} clusters, got {n_clusters}", n_samples.saturating_sub(1))]
    SilhouetteClusters {
        /// Distinct labels among the scored cells.
        n_clusters: usize,
        /// Cells scored.
        n_samples: usize,
    },
    /// PCA asked for more components than the centred data can have.
    #[error(
        "cannot compute {n_components} components from {n_cells} cells x {n_genes} genes: at most min(cells - 1, genes) = {max}"
    )]
    TooManyComponents {
        /// Requested number of components.
        n_components: usize,
        /// Rows of the data.
        n_cells: usize,
        /// Columns of the data.
        n_genes: usize,
        /// The largest valid number of components.
        max: usize,
    },
    /// A neighbour graph asked for as many neighbours as there are cells, or more.
    #[error(
        "n_neighbors = {n_neighbors} (the cell itself included) needs more than {n_neighbors} cells, got {n_samples}"
    )]
    TooManyNeighbors {
        /// Requested neighbours per cell, the cell itself included.
        n_neighbors: usize,
        /// Cells in the data.
        n_samples: usize,
    },
    /// An edge names a node the graph does not have.
    #[error("edge ({}, {}) names a node outside the graph's {n_nodes} nodes", edge.0, edge.1)]
    EdgeNode {
        /// The edge's ends, as given.
        edge: (usize, usize),
        /// Nodes in the graph.
        n_nodes: usize,
    },
    /// An edge weight that is negative, NaN or infinite.
    #[error("edge ({}, {}) has weight {weight}: weights must be finite and >= 0", edge.0, edge.1)]
    EdgeWeight {
        /// The edge's ends, as given.
        edge: (usize, usize),
        /// The offending weight.
        weight: f64,
    },
    /// A clustering does not have one label per node of the graph.
    #[error("{labels} cluster labels for a graph of {nodes} nodes")]
    MembershipLength {
        /// Nodes in the graph.
        nodes: usize,
        /// Length of the label vector.
        labels: usize,
    },
    /// The `leiden-rs` crate refused the graph (not expected: the graph is
    /// validated when it is built).
    #[error("leiden-rs: {0}")]
    Leiden(String),
    /// Neighbour indices and distances of different shapes.
    #[error(
        "neighbour indices are {}x{} but distances {}x{}",
        indices.0, indices.1, distances.0, distances.1
    )]
    NeighborsShape {
        /// Shape of the indices (cells, neighbours).
        indices: (usize, usize),
        /// Shape of the distances.
        distances: (usize, usize),
    },
    /// A neighbour index that is out of range, or breaks the self-first rule.
    #[error(
        "neighbour ({row}, {col}) is cell {index}: each row must name its own cell first and only there, and every index must be below {n_cells}"
    )]
    NeighborIndex {
        /// Cell whose neighbours these are.
        row: usize,
        /// Position in the row.
        col: usize,
        /// The offending index.
        index: usize,
        /// Cells in all.
        n_cells: usize,
    },
    /// A neighbour distance that is negative, NaN, infinite or out of order.
    #[error(
        "neighbour ({row}, {col}) is at distance {value}: distances must be finite, >= 0 and ascending within a row"
    )]
    NeighborDistance {
        /// Cell whose neighbours these are.
        row: usize,
        /// Position in the row.
        col: usize,
        /// The offending distance.
        value: f64,
    },
    /// More neighbours per cell asked of a neighbour list than it holds.
    #[error("{requested} neighbours per cell asked for, only {available} were computed")]
    MoreNeighbors {
        /// Requested neighbours per cell, the cell itself included.
        requested: usize,
        /// Neighbours per cell held, the cell itself included.
        available: usize,
    },
    /// An integration metric that needs cells of at least two batches or labels.
    #[error("{metric} needs at least 2 {groups}, got {found}")]
    TooFewGroups {
        /// The metric, as scib-metrics names it.
        metric: &'static str,
        /// What is counted ("batches", "labels").
        groups: &'static str,
        /// How many there are.
        found: usize,
    },
    /// A per-label integration metric could score no label at all.
    #[error("{metric} can score no label: {reason}")]
    NoLabelScored {
        /// The metric, as scib-metrics names it.
        metric: &'static str,
        /// Why each label was skipped.
        reason: &'static str,
    },
    /// A rayon thread pool could not be built.
    #[error("cannot start a pool of {threads} threads: {reason}")]
    ThreadPool {
        /// Requested threads.
        threads: usize,
        /// What rayon reported.
        reason: String,
    },
    /// The symmetric eigensolver behind PCA did not converge.
    #[error("eigendecomposition of the {dim}x{dim} covariance did not converge")]
    NoConvergence {
        /// Order of the matrix that was decomposed.
        dim: usize,
    },
}

/// Checks that every entry of `x` is finite, naming the first that is not.
pub(crate) fn check_finite(x: ndarray::ArrayView2<'_, f32>) -> Result<()> {
    match x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((row, col), &v)) => Err(Error::NonFinite {
            row,
            col,
            value: f64::from(v),
        }),
        None => Ok(()),
    }
}
