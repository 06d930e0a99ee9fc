//! Reading and writing the files scae works on: `.npy` matrices, label files, atomic writes.
//!
//! This crate knows files, not tensors: everything comes in and goes out as `ndarray` arrays, so
//! the models, metrics and plots can be tested without touching the disk or libtorch. Readers
//! validate what they return (a 2-D, non-empty, finite `f32` matrix in standard layout; counts
//! that are non-negative integers; labels that match the cells), so callers can trust it.
//! Writers are atomic: a crash mid-write never leaves a half-written result behind.
//!
//! Every error names the file and says what is wrong with it in one line (see [`Error`]).

mod atomic;
mod error;
mod labels;
mod npy;

pub use atomic::write_atomic;
pub use error::{Error, Result};
pub use labels::{Labels, read_labels, write_labels};
pub use npy::{read_counts, read_matrix, write_npy};
