//! Errors of model construction and training.

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong when building or training a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter is out of its range (checked before any work starts).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// `--device cuda` on a machine where libtorch sees no GPU.
    #[error(
        "CUDA was requested but libtorch sees no usable GPU (tch::Cuda::is_available() is false)"
    )]
    CudaUnavailable,
    /// A loss became NaN or infinite: training stops at once.
    #[error(
        "epoch {epoch}, batch {batch}: the {split} loss is {value} (not finite); lower the learning rate or check the input"
    )]
    NonFiniteLoss {
        epoch: usize,
        batch: usize,
        split: &'static str,
        value: f64,
    },
    /// An error raised by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
