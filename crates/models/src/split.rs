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

/// The fewest cells the last minibatch of an epoch may hold on each rank of a job before it is
/// merged into the one before: batch norm in training normalises a batch by its own variance,
/// which one cell does not have (its running variance, `0 / 0`, would make every later
/// evaluation NaN). scvi-tools moves such cells out of the last batch for the same reason.
pub const MIN_LAST_BATCH_PER_RANK: usize = 2;

/// The fewest cells of a last minibatch left on its own in one process; scvi-tools warns below 3.
pub const MIN_LAST_BATCH: usize = 3;

/// The minibatches of an epoch of `n` cells, as ranges of positions into its order: `size` at a
/// time, with a short last batch (fewer than [`MIN_LAST_BATCH`] cells, or fewer than
/// [`MIN_LAST_BATCH_PER_RANK`] on some of `ranks` ranks) merged into the one before, so no
/// batch a model trains on is too small for batch norm. A single batch is kept whatever its size.
pub fn batch_ranges(n: usize, size: usize, ranks: usize) -> Vec<std::ops::Range<usize>> {
    let size = size.max(1);
    let mut ranges: Vec<std::ops::Range<usize>> = (0..n)
        .step_by(size)
        .map(|from| from..(from + size).min(n))
        .collect();
    let least = MIN_LAST_BATCH.max(MIN_LAST_BATCH_PER_RANK * ranks.max(1));
    if ranges.len() > 1 && ranges.last().is_some_and(|last| last.len() < least) {
        let last = ranges.pop().expect("more than one batch");
        if let Some(previous) = ranges.last_mut() {
            previous.end = last.end;
        }
    }
    ranges
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
    fn a_last_batch_too_small_for_batch_norm_joins_the_one_before() {
        let lens = |n, size, ranks| {
            batch_ranges(n, size, ranks)
                .iter()
                .map(std::ops::Range::len)
                .collect::<Vec<_>>()
        };
        // 897 cells at 128: the shared chr21 file's training cells, a last batch of one cell.
        assert_eq!(lens(897, 128, 1), [vec![128; 6], vec![129]].concat());
        assert_eq!(lens(898, 128, 1), [vec![128; 6], vec![130]].concat());
        assert_eq!(lens(899, 128, 1), [vec![128; 7], vec![3]].concat());
        assert_eq!(lens(896, 128, 1), vec![128; 7]);
        // On 3 ranks a last batch of 5 would leave one rank a single cell.
        assert_eq!(lens(261, 128, 3), vec![128, 133]);
        assert_eq!(lens(262, 128, 3), vec![128, 128, 6]);
        // A single batch stays, however small; nothing is lost.
        assert_eq!(lens(1, 128, 1), vec![1]);
        assert!(batch_ranges(0, 128, 1).is_empty());
        for (n, size, ranks) in [(1000, 7, 1), (13, 1, 1), (1000, 33, 4)] {
            let r = batch_ranges(n, size, ranks);
            assert_eq!(r.first().map(|r| r.start), Some(0));
            assert_eq!(r.last().map(|r| r.end), Some(n));
            assert!(r.windows(2).all(|w| w[0].end == w[1].start));
        }
    }

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
