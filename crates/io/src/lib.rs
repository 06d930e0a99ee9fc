//! Reading and writing the files scae works on: `.npy` matrices, 10x Genomics (Cell Ranger)
//! matrix folders, label files, atomic writes; and the preprocessing that turns counts into the
//! autoencoder's input.
//!
//! This crate knows files, not tensors: everything comes in and goes out as `ndarray` arrays or,
//! for raw counts, which are mostly zeros, a sparse [`CountMatrix`] that a [`BatchSource`] hands
//! out a minibatch at a time, so the models, metrics and plots can be tested without touching the disk
//! or libtorch. Readers validate what they return (a 2-D, non-empty, finite `f32` matrix in
//! standard layout; counts that are non-negative integers; genes, barcodes and labels that match
//! the cells), so callers can trust it. Writers are atomic: a crash mid-write never leaves a
//! half-written result behind.
//!
//! Every error names the file and says what is wrong with it in one line (see [`Error`]).
//!
//! ```no_run
//! # fn main() -> scae_io::Result<()> {
//! use scae_io::preprocess::{DEFAULT_N_TOP_GENES, preprocess, raw_counts};
//!
//! let data = scae_io::read_10x("../shared/data/worm_neuron".as_ref())?;
//! let input = preprocess(&data.counts, DEFAULT_N_TOP_GENES); // cells x 1000, log-normalised
//! let counts = raw_counts(&data.counts, Some(&input.genes), &data.files.matrix)?;
//! # Ok(()) }
//! ```

mod atomic;
pub mod backed;
pub mod batch;
mod counts;
mod dataset;
mod error;
mod h5;
mod h5_copy;
mod h5ad;
mod h5ad_write;
mod labels;
mod mtx;
mod npy;
pub mod preprocess;
mod sparse_h5;
mod tenx;
mod tenx_h5;
#[cfg(test)]
mod test_support;

pub use atomic::{write_atomic, write_atomic_path};
pub use backed::{BackedRows, Blocks};
pub use batch::{
    Batch, BatchSource, BatchValues, CountRows, DenseRows, Fields, MISSING, WithFields, keys,
};
pub use counts::{CountMatrix, Fnv, MAX_COUNT, drop_empty_cells};
pub use dataset::{
    CountData, Counts, DataSource, GeneChoice, OpenOptions, Reading, Values, absolute,
    gene_columns, hdf5_kind, open, open_hdf5,
};
pub use error::{Error, Result};
pub use h5::{Hdf5File, Hdf5Kind};
pub use h5ad::{AnnCounts, AnnMatrix, H5adOptions, H5adRows, ObsColumn, read_h5ad, read_h5ad_file};
pub use h5ad_write::{AnnOutput, AnnSource, write_h5ad};
pub use labels::{Labels, read_labels, write_labels};
pub use npy::{read_counts, read_matrix, write_npy};
pub use preprocess::{Preprocessed, preprocess};
pub use sprs::CsMat;
pub use tenx::{TenxFiles, TenxMatrix, dense_rows, find_10x, read_10x, to_dense};
pub use tenx_h5::{read_10x_h5, read_10x_h5_file};
