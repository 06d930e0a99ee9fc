//! Seeded train/test splits and shuffles, made on the host.
//!
//! Permutations come from ChaCha8 seeded explicitly, not from libtorch's
//! generator, so a split is the same on every device and every machine.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// Row indices of the training and the test set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

impl Split {
    /// Shuffles `0..n` with `seed` and puts the first `round(n * test_fraction)` rows in the test set.
    /// Both parts keep ascending order so outputs follow the input's cell order.
    pub fn new(n: usize, test_fraction: f64, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&test_fraction) {
            return Err(Error::Config(format!(
                "test_fraction must be in [0, 1), got {test_fraction}"
            )));
        }
        let n_test = (n as f64 * test_fraction).round() as usize;
        if n_test >= n {
            return Err(Error::Config(format!(
                "{n} cells leave no training cell with test_fraction {test_fraction}"
            )));
        }
        let order = shuffled_indices(n, seed);
        let mut test = order[..n_test].to_vec();
        let mut train = order[n_test..].to_vec();
        test.sort_unstable();
        train.sort_unstable();
        Ok(Self { train, test })
    }
}

/// A seeded permutation of `0..n`.
pub fn shuffled_indices(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_a_seeded_partition() {
        let a = Split::new(100, 0.2, 7).expect("valid split");
        assert_eq!(a.test.len(), 20);
        assert_eq!(a.train.len(), 80);
        let mut all: Vec<usize> = a.train.iter().chain(&a.test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(a, Split::new(100, 0.2, 7).expect("valid split"));
        assert_ne!(a, Split::new(100, 0.2, 8).expect("valid split"));
    }

    #[test]
    fn bad_fraction_is_a_config_error() {
        assert!(matches!(Split::new(10, 1.0, 0), Err(Error::Config(_))));
        assert!(matches!(Split::new(10, -0.1, 0), Err(Error::Config(_))));
        assert!(matches!(Split::new(1, 0.6, 0), Err(Error::Config(_))));
    }
}
