//! Counts read from the file as training goes, for data larger than memory.
//!
//! A [`BackedRows`] source holds no counts: it keeps the `.h5ad` file open and, when the trainer
//! announces a pass ([`BatchSource::plan`]: the positions it will ask for, in order), starts a
//! reader thread that walks the same order, reads each block of [`Blocks::CELLS`] consecutive
//! cells from the file the first time a batch needs it, assembles the batches and queues them
//! while the model trains on the previous ones. A block is dropped after the last batch that
//! needs it, so memory is bounded by the blocks one shuffling window spans plus the queue
//! ([`Blocks`]), whatever the number of cells. Batches are the same values, in the same order,
//! as [`crate::CountRows`] gives over the same rows in memory, so training reads the same numbers
//! either way.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use sprs::CsMat;

use crate::batch::{Batch, BatchSource, Fields};
use crate::h5ad::H5adRows;
use crate::{Error, MAX_COUNT, Result};

/// How a large data set is shuffled and read: the trainer's epoch order permutes blocks of
/// [`Blocks::CELLS`] consecutive cells, then shuffles the cells within each window of
/// [`Blocks::WINDOW`] blocks, so a reader needs one window's blocks at a time; a data set of at
/// most one window is shuffled whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks;

impl Blocks {
    /// Cells per block: one read from the file.
    pub const CELLS: usize = 4096;
    /// Blocks per shuffling window (65,536 cells).
    pub const WINDOW: usize = 16;
    /// Cells of minibatches a reader thread may hold ready ahead of the trainer.
    pub const QUEUE_CELLS: usize = 16_384;
}

/// Some rows of an `.h5ad` count matrix, read a block at a time from the file (see the module
/// documentation).
#[derive(Debug)]
pub struct BackedRows {
    shared: Arc<Shared>,
    ahead: Mutex<Option<Ahead>>,
}

/// What the reader thread and the source share.
#[derive(Debug)]
struct Shared {
    file: Arc<H5adRows>,
    /// The file row of each position, ascending.
    rows: Vec<usize>,
    fields: Fields,
    /// The genes kept: each file column's column in the batches (`u32::MAX` when dropped), and
    /// their number; `None` for every gene.
    genes: Option<(Vec<u32>, usize)>,
}

/// A pass being read ahead: its order, how far the trainer got, the queue of batches and the
/// reader thread.
#[derive(Debug)]
struct Ahead {
    order: Arc<Vec<usize>>,
    next: usize,
    queue: Option<Receiver<Result<Batch>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Ahead {
    /// Stops the reader and waits for it: closing the queue makes its next send fail (a send
    /// waiting on a full queue fails at once), so it ends after the block it is reading, and no
    /// thread outlives the pass (found by the `h5ad` fuzz target's leak check).
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl BackedRows {
    /// The cells at file rows `rows` (ascending, e.g. a training split of the non-empty cells).
    ///
    /// # Errors
    /// [`Error::Inconsistent`] when the rows are not ascending or out of range, or the matrix
    /// cannot be read by rows (CSC).
    pub fn new(file: Arc<H5adRows>, rows: Vec<usize>) -> Result<Self> {
        let inconsistent = |reason: String| Error::Inconsistent {
            path: file.path().into(),
            reason,
        };
        if rows.windows(2).any(|w| w[0] >= w[1])
            || rows.last().is_some_and(|&r| r >= file.shape().0)
        {
            return Err(inconsistent(
                "backed rows must be ascending and inside the matrix".into(),
            ));
        }
        if !file.row_readable() {
            // Reading one block of a CSC matrix returns the explanation.
            file.read_rows(0..0)?;
        }
        Ok(Self {
            shared: Arc::new(Shared {
                file,
                rows,
                fields: Fields::default(),
                genes: None,
            }),
            ahead: Mutex::new(None),
        })
    }

    /// The same cells with field `key` (one code per position, [`crate::MISSING`] for a cell
    /// without a value), carried by every batch.
    ///
    /// # Errors
    /// As [`Fields::insert`], and when a pass has already been planned.
    pub fn with_field(mut self, key: &str, codes: &[i64]) -> Result<Self> {
        let path = self.shared.file.path().to_path_buf();
        let Some(shared) = Arc::get_mut(&mut self.shared) else {
            return Err(Error::Inconsistent {
                path,
                reason: format!("the field `{key}` came after a pass was planned"),
            });
        };
        let cells = shared.rows.len();
        shared.fields.insert(key, codes, cells)?;
        Ok(self)
    }

    /// The same cells with only the file's columns `genes` (ascending), in that order.
    ///
    /// # Errors
    /// [`Error::Inconsistent`] when they are not ascending or out of range, or a pass has
    /// already been planned.
    pub fn with_genes(mut self, genes: &[usize]) -> Result<Self> {
        let path = self.shared.file.path().to_path_buf();
        let all = self.shared.file.shape().1;
        if genes.windows(2).any(|w| w[0] >= w[1]) || genes.last().is_some_and(|&g| g >= all) {
            return Err(Error::Inconsistent {
                path,
                reason: "backed genes must be ascending and inside the matrix".into(),
            });
        }
        let Some(shared) = Arc::get_mut(&mut self.shared) else {
            return Err(Error::Inconsistent {
                path,
                reason: "the genes came after a pass was planned".into(),
            });
        };
        let mut map = vec![u32::MAX; all];
        for (new, &g) in genes.iter().enumerate() {
            map[g] = u32::try_from(new).unwrap_or(u32::MAX);
        }
        shared.genes = Some((map, genes.len()));
        Ok(self)
    }

    /// The same cells with every field of `fields` (over the same positions).
    ///
    /// # Errors
    /// As [`BackedRows::with_field`].
    pub fn with_fields(self, fields: &Fields) -> Result<Self> {
        fields
            .iter()
            .try_fold(self, |rows, (key, codes)| rows.with_field(key, codes))
    }
}

impl BatchSource for BackedRows {
    fn cells(&self) -> usize {
        self.shared.rows.len()
    }

    fn genes(&self) -> usize {
        self.shared.genes()
    }

    fn fields(&self) -> Vec<&str> {
        self.shared.fields.keys().collect()
    }

    fn plan(&self, order: &[usize], lengths: &[usize]) {
        let order = Arc::new(order.to_vec());
        let lengths = cut(order.len(), lengths);
        let typical = lengths.first().copied().unwrap_or(1).max(1);
        let depth = (Blocks::QUEUE_CELLS / typical).max(2);
        let (tx, rx) = sync_channel(depth);
        let shared = Arc::clone(&self.shared);
        let thread_order = Arc::clone(&order);
        let spawned = std::thread::Builder::new()
            .name("scae-read-ahead".into())
            .spawn(move || read_ahead(&shared, &thread_order, &lengths, &tx));
        // Without a thread, batches are read when asked for.
        let ahead = spawned.ok().map(|thread| Ahead {
            order,
            next: 0,
            queue: Some(rx),
            thread: Some(thread),
        });
        let mut slot = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        // The previous pass's reader is stopped and joined before the new one is kept.
        *slot = None;
        *slot = ahead;
    }

    fn batch(&self, positions: &[usize]) -> Result<Batch> {
        let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = ahead.as_mut() {
            let end = a.next + positions.len();
            if a.order.get(a.next..end) == Some(positions) {
                a.next = end;
                if let Some(Ok(batch)) = a.queue.as_ref().map(Receiver::recv) {
                    return batch;
                }
            }
        }
        // Not the planned pass (or its reader stopped): read these cells directly.
        *ahead = None;
        drop(ahead);
        let mut blocks = HashMap::new();
        self.shared.assemble(positions, &mut blocks)
    }
}

/// The reader thread: the batches of `order`, `batch` positions each, in order, until the source
/// stops listening or a read fails.
/// `lengths` as the cuts of `n` positions: the given lengths (zeros left out) while they fit,
/// the rest of the positions as one more batch when they fall short.
fn cut(n: usize, lengths: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(lengths.len() + 1);
    let mut left = n;
    for &len in lengths.iter().filter(|&&l| l > 0) {
        let len = len.min(left);
        if len == 0 {
            break;
        }
        out.push(len);
        left -= len;
    }
    if left > 0 {
        out.push(left);
    }
    out
}

/// The consecutive pieces of `order` of the given `lengths` (which add up to its length).
fn pieces<'a>(order: &'a [usize], lengths: &'a [usize]) -> impl Iterator<Item = &'a [usize]> + 'a {
    lengths.iter().scan(0, move |from, &len| {
        let piece = &order[*from..*from + len];
        *from += len;
        Some(piece)
    })
}

fn read_ahead(shared: &Shared, order: &[usize], lengths: &[usize], tx: &SyncSender<Result<Batch>>) {
    // The last chunk that needs each block, so a block is dropped as soon as it is done with.
    let mut last_use = HashMap::new();
    for (c, chunk) in pieces(order, lengths).enumerate() {
        for &p in chunk {
            last_use.insert(p / Blocks::CELLS, c);
        }
    }
    let mut blocks = HashMap::new();
    for (c, chunk) in pieces(order, lengths).enumerate() {
        let result = shared.assemble(chunk, &mut blocks);
        let failed = result.is_err();
        if tx.send(result).is_err() || failed {
            return;
        }
        blocks.retain(|b, _| last_use.get(b).is_some_and(|&last| last > c));
    }
}

/// A block of consecutive positions, read from the file.
#[derive(Debug)]
struct Block {
    start: usize,
    /// The matrices the block's rows are in: runs of consecutive file rows as they were read,
    /// and the rows copied out of sparser runs.
    pieces: Vec<CsMat<f32>>,
    /// Position `start + i` is row `rows[i].1` of piece `rows[i].0`.
    rows: Vec<(usize, usize)>,
}

impl Block {
    /// The columns and values of position `p`'s row.
    fn row(&self, p: usize) -> (&[usize], &[f32]) {
        let (piece, row) = self.rows[p - self.start];
        self.pieces[piece]
            .outer_view(row)
            .expect("a block holds a row per position")
            .into_raw_storage()
    }
}

/// File rows at most this far apart are read in one piece (the rows between are read and
/// dropped); farther apart, separately. A training split's rows are nearly contiguous and read
/// in one piece; a held-out split's are scattered and read run by run, so a block never holds
/// more than its own cells.
const GAP: usize = 32;

impl Shared {
    /// The batch of `positions`, reading the blocks it needs that `blocks` lacks.
    fn assemble(&self, positions: &[usize], blocks: &mut HashMap<usize, Block>) -> Result<Batch> {
        let cells = self.rows.len();
        if let Some(&p) = positions.iter().find(|&&p| p >= cells) {
            return Err(Error::Inconsistent {
                path: self.file.path().into(),
                reason: format!("cell position {p} out of range for a source of {cells} cells"),
            });
        }
        for &p in positions {
            let b = p / Blocks::CELLS;
            if let std::collections::hash_map::Entry::Vacant(e) = blocks.entry(b) {
                e.insert(self.read_block(b)?);
            }
        }
        let rows: Vec<_> = positions
            .iter()
            .map(|&p| blocks[&(p / Blocks::CELLS)].row(p))
            .collect();
        let fields = self.fields.subset(positions);
        Ok(Batch::of_count_rows(self.genes(), &rows, fields))
    }

    /// Genes per batch row.
    fn genes(&self) -> usize {
        self.genes.as_ref().map_or(self.file.shape().1, |(_, n)| *n)
    }

    /// `piece` with only the kept genes, renumbered (itself when every gene is kept).
    fn keep_genes(&self, piece: CsMat<f32>) -> CsMat<f32> {
        let Some((map, n)) = &self.genes else {
            return piece;
        };
        let (mut indptr, mut indices, mut values) = (vec![0usize], Vec::new(), Vec::new());
        for row in piece.outer_iterator() {
            for (g, &v) in row.iter() {
                let new = map[g];
                if new != u32::MAX {
                    indices.push(new as usize);
                    values.push(v);
                }
            }
            indptr.push(indices.len());
        }
        CsMat::new((piece.rows(), *n), indptr, indices, values)
    }

    /// Block `b`: the file rows of its positions, every value checked to be a count. A run
    /// that is mostly the block's own rows is kept as read; the rows of sparser runs are copied
    /// out, so that a block holds little more than its own cells.
    fn read_block(&self, b: usize) -> Result<Block> {
        let start = b * Blocks::CELLS;
        let end = (start + Blocks::CELLS).min(self.rows.len());
        let rows = &self.rows[start..end];
        let genes = self.genes();
        let mut pieces = Vec::new();
        let mut at = Vec::with_capacity(rows.len());
        // The copied rows, one more piece at the end.
        let (mut indptr, mut indices, mut values) = (vec![0usize], Vec::new(), Vec::new());
        let mut i = 0;
        while i < rows.len() {
            // A run of file rows with gaps of at most GAP, read in one piece.
            let mut j = i + 1;
            while j < rows.len() && rows[j] - rows[j - 1] <= GAP {
                j += 1;
            }
            let (first, last) = (rows[i], rows[j - 1]);
            let piece = self.file.read_rows(first..last + 1)?;
            check_counts(&self.file, &piece, first)?;
            let piece = self.keep_genes(piece);
            if (j - i) * 8 >= (last + 1 - first) * 7 {
                at.extend(rows[i..j].iter().map(|&row| (pieces.len(), row - first)));
                pieces.push(piece);
            } else {
                for &row in &rows[i..j] {
                    let view = piece
                        .outer_view(row - first)
                        .expect("a piece holds the rows from its first to its last");
                    indices.extend_from_slice(view.indices());
                    values.extend_from_slice(view.data());
                    at.push((usize::MAX, indptr.len() - 1));
                    indptr.push(indices.len());
                }
            }
            i = j;
        }
        if indptr.len() > 1 {
            let copied = CsMat::try_new((indptr.len() - 1, genes), indptr, indices, values)
                .map_err(|(.., e)| Error::Inconsistent {
                    path: self.file.path().into(),
                    reason: format!("block {b}: {e}"),
                })?;
            for (piece, _) in &mut at {
                if *piece == usize::MAX {
                    *piece = pieces.len();
                }
            }
            pieces.push(copied);
        }
        Ok(Block {
            start,
            pieces,
            rows: at,
        })
    }
}

/// Every value of `piece` (rows of `file` from `first`) a count: a non-negative integer at most
/// [`MAX_COUNT`].
///
/// # Errors
/// [`Error::Hdf5`] naming the first value that is not, with its row and column.
pub(crate) fn check_counts(file: &H5adRows, piece: &CsMat<f32>, first: usize) -> Result<()> {
    let is_count = |v: f32| v >= 0.0 && v == v.trunc() && v <= MAX_COUNT;
    // A fold rather than `all`: without the early exit the check runs in SIMD.
    if piece.data().iter().fold(true, |ok, &v| ok & is_count(v)) {
        return Ok(());
    }
    for (r, row) in piece.outer_iterator().enumerate() {
        if let Some((col, &v)) = row.iter().find(|&(_, &v)| !is_count(v)) {
            return Err(Error::Hdf5 {
                path: file.path().into(),
                object: file.element(),
                reason: format!(
                    "value {v} at row {}, col {col} is not a count (a non-negative integer below 2^24)",
                    first + r
                ),
            });
        }
    }
    Ok(())
}
