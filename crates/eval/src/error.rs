//! The error type of scae-eval: one enum for the whole crate, each message
//! carrying the values that made the input unusable.

/// Result alias used throughout scae-eval.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong when computing a metric.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
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
}
