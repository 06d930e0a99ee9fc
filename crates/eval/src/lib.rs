//! Metrics for scae on plain `ndarray` matrices: reconstruction error of a
//! count matrix and convergence summaries of a loss history.
//!
//! This crate never touches tch: models hand over `ArrayView2<f32>` (cells x genes)
//! or `&[f64]` loss histories, so the metrics can be tested on tiny hand-made
//! inputs and reused by every study without a GPU. All sums are accumulated in
//! `f64` whatever the element type, so a 10k x 20k matrix loses no precision.
//!
//! - [`reconstruction`]: mean squared error over all entries, and split by
//!   whether the true count is zero (dropout-heavy single-cell data makes the
//!   split the interesting part).
//! - [`mod@convergence`]: when did a loss curve reach its final value.

pub mod convergence;
pub mod error;
pub mod reconstruction;

pub use convergence::{Convergence, convergence, first_epoch_within};
pub use error::{Error, Result};
pub use reconstruction::{ReconstructionError, mse, reconstruction_error};
