//! `scae-sim`: a seeded simulator of single-cell RNA-seq count matrices, the project's default data.
//!
//! The assignment's `counts.npy` (5000 cells x 1000 genes, log-normalised) and `labels.txt`
//! (3 cell groups) are not available, so the project generates a documented stand-in. Later parts
//! of the project fit count likelihoods (Poisson, NB, ZINB), so the simulator produces raw integer
//! counts first, from a Splatter-like model (Zappia et al., 2017): gamma-distributed gene means
//! with outliers, log-normal library sizes, group-wise differential expression, gamma-Poisson
//! (negative binomial) noise and logistic dropout. On top of the groups, [`GenePrograms`] add
//! continuous gene-gene covariation (modules of genes whose activity varies from cell to cell,
//! with decaying strengths), so the data have low-rank structure beyond the 3 group means and a
//! latent space of 50 dimensions has more to capture than one of 10. [`log_normalize`] then gives
//! the assignment's `ln(1 + x · 10⁴ / total)` matrix.
//!
//! Shape of the crate: [`SimParams`] (plain data, `Default` = the project data) is validated into
//! [`ValidSimParams`] by [`SimParams::validate`]; [`simulate`] draws a [`SimData`]; every bad
//! parameter is a [`SimError`], never a panic. Randomness is ChaCha8 (`seed_from_u64`), which is
//! specified bit for bit, so a seed fixes the output; the float transforms on top of it (`ln`,
//! `exp`) come from the platform's math library, so bytes are identical across runs and machines
//! of the same platform and could differ in rare last-bit cases across platforms.
//!
//! ```
//! use scae_sim::{log_normalize, simulate, SimParams};
//! let data = simulate(&SimParams { n_cells: 100, n_genes: 50, ..SimParams::default() })?;
//! let x = log_normalize(data.counts.view(), 1e4);
//! assert_eq!(x.dim(), (100, 50));
//! # Ok::<(), scae_sim::SimError>(())
//! ```

mod counts;
mod error;
mod normalize;
mod params;
mod simulate;

pub use counts::{SparseCounts, SparseParams, independent_poisson, poisson_mixture, sparse_counts};
pub use error::{Result, SimError};
pub use normalize::log_normalize;
pub use params::{GenePrograms, LogisticDropout, SimParams, ValidSimParams};
pub use simulate::{SimData, simulate, simulate_valid};
