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

/// The order of one epoch's cells: for at most one window of blocks
/// ([`scae_io::Blocks`], 65,536 cells) a seeded permutation of `0..n`
/// ([`shuffled_indices`]); beyond that, the blocks of consecutive cells in a seeded order, and
/// the cells of each window of blocks shuffled together, so a source that reads from a file
/// needs one window's blocks at a time. In memory and from a file, the same seed gives the
/// same order.
pub fn epoch_order(n: usize, seed: u64) -> Vec<usize> {
    use scae_io::Blocks;
    let window = Blocks::CELLS * Blocks::WINDOW;
    if n <= window {
        return shuffled_indices(n, seed);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut blocks: Vec<usize> = (0..n.div_ceil(Blocks::CELLS)).collect();
    blocks.shuffle(&mut rng);
    let mut order = Vec::with_capacity(n);
    for group in blocks.chunks(Blocks::WINDOW) {
        let start = order.len();
        for &b in group {
            order.extend(b * Blocks::CELLS..((b + 1) * Blocks::CELLS).min(n));
        }
        order[start..].shuffle(&mut rng);
    }
    order
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
    fn epoch_order_is_a_seeded_permutation_read_a_window_of_blocks_at_a_time() {
        use scae_io::Blocks;
        let small = 1000;
        assert_eq!(epoch_order(small, 3), shuffled_indices(small, 3));
        let n = Blocks::CELLS * Blocks::WINDOW * 2 + 123;
        let order = epoch_order(n, 3);
        assert_eq!(order, epoch_order(n, 3));
        assert_ne!(order, epoch_order(n, 4));
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        // A block's cells all come within one window's span of the order, so a reader holds
        // about one window of blocks at a time.
        let mut span = vec![(usize::MAX, 0usize); n.div_ceil(Blocks::CELLS)];
        for (i, &p) in order.iter().enumerate() {
            let s = &mut span[p / Blocks::CELLS];
            *s = (s.0.min(i), s.1.max(i));
        }
        assert!(
            span.iter()
                .all(|&(first, last)| last - first < Blocks::CELLS * Blocks::WINDOW),
            "a block spread beyond a window"
        );
    }

    #[test]
    fn bad_fraction_is_a_config_error() {
        assert!(matches!(Split::new(10, 1.0, 0), Err(Error::Config(_))));
        assert!(matches!(Split::new(10, -0.1, 0), Err(Error::Config(_))));
        assert!(matches!(Split::new(1, 0.6, 0), Err(Error::Config(_))));
    }
}
