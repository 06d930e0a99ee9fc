//! Errors of the simulator.
//!
//! Every error is a parameter error found by [`SimParams::validate`](crate::SimParams::validate)
//! before any random number is drawn: once the parameters are valid, simulation cannot fail.
//! Messages carry the offending values so a bad configuration can be fixed from the message alone.

use thiserror::Error;

/// Why a [`SimParams`](crate::SimParams) was rejected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SimError {
    /// `n_cells` was 0.
    #[error("n_cells must be at least 1, got 0")]
    ZeroCells,
    /// `n_genes` was 0.
    #[error("n_genes must be at least 1, got 0")]
    ZeroGenes,
    /// `group_proportions` was empty.
    #[error("group_proportions must name at least one group, got an empty list")]
    NoGroups,
    /// A group proportion was not a finite number in (0, 1].
    #[error("group_proportions[{index}] must be finite and in (0, 1], got {value}")]
    BadProportion {
        /// Position of the proportion in `group_proportions`.
        index: usize,
        /// The rejected value.
        value: f64,
    },
    /// The group proportions do not sum to 1 within `1e-6`.
    #[error("group_proportions must sum to 1 (within 1e-6), got {sum} from {proportions:?}")]
    ProportionsSum {
        /// Their sum.
        sum: f64,
        /// The proportions as given.
        proportions: Vec<f64>,
    },
    /// A scalar parameter is outside its domain.
    #[error("parameter `{name}` must be {requirement}, got {value}")]
    InvalidParam {
        /// Field name in [`SimParams`](crate::SimParams) (dotted for nested fields).
        name: &'static str,
        /// The rejected value.
        value: f64,
        /// What the value must be, e.g. "finite and > 0".
        requirement: &'static str,
    },
    /// A parameter of the plain count simulations ([`crate::sparse_counts`],
    /// [`crate::independent_poisson`]) is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, SimError>;
