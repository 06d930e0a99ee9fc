//! Data-parallel training over a [`Collective`] (MPI, NCCL or one process, `scae-dp`).
//!
//! A process joins its job once ([`join`]); every [`crate::Trainer`] made afterwards trains in
//! it: the variables start as rank 0's (broadcast), every rank walks the same seeded epoch order
//! and takes its own slice of each global minibatch ([`Shard`]: disjoint, so each rank reads
//! only its cells), the gradients (each rank's mean weighted by its share of the batch) are
//! summed in one flat buffer per step before the optimiser step, batch norm's running
//! statistics are averaged at the end of each epoch, and the losses of an epoch are summed over
//! the ranks, so every rank reports the global means. The test cells are scored whole on every
//! rank: the ranks stay identical (weights, statistics, random streams) at no collective cost.
//!
//! **The same numbers as one process.** The random draws of a step are those of the whole
//! global batch, each rank keeping its rows: latent noise is drawn for the global batch and
//! narrowed ([`normal_for_cells`]), and the dropout generators skip the words of the rows before
//! and after the rank's own ([`dropout_words`]). With batch norm off, N ranks therefore train to
//! the weights one process reaches on the same global batch, up to the order of float sums.
//! With batch norm on, each rank normalises by its own rows' statistics (as PyTorch's DDP does
//! without `SyncBatchNorm`).

use std::cell::Cell;
use std::sync::{Arc, OnceLock};

use scae_dp::{Collective, Single, Values};
use tch::{Device, Kind, Tensor, nn};

use crate::layers::{with_host_f32, with_host_f32_mut};
use crate::{Error, Result};

static GROUP: OnceLock<Arc<dyn Collective>> = OnceLock::new();

/// Makes `group` the job every trainer of this process trains in. Call it once, before training.
///
/// # Errors
/// When a group was already joined.
pub fn join(group: Arc<dyn Collective>) -> Result<()> {
    GROUP
        .set(group)
        .map_err(|_| Error::Config("this process already joined a data-parallel job".into()))
}

/// The job this process trains in ([`Single`] until [`join`]).
pub fn group() -> Arc<dyn Collective> {
    GROUP.get().cloned().unwrap_or_else(|| Arc::new(Single))
}

/// A rank's rows of one global minibatch: `rows` rows from `offset` of `global`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shard {
    pub offset: usize,
    pub rows: usize,
    pub global: usize,
}

impl Shard {
    /// Rank `rank`'s share of a batch of `global` rows over `size` ranks: the first
    /// `global % size` ranks take one row more than the others, so every full batch gives a rank
    /// the same number of rows.
    pub fn of(global: usize, rank: usize, size: usize) -> Self {
        let (base, extra) = (global / size, global % size);
        Self {
            offset: rank * base + rank.min(extra),
            rows: base + usize::from(rank < extra),
            global,
        }
    }
}

thread_local! {
    static SHARD: Cell<Option<Shard>> = const { Cell::new(None) };
}

/// Runs `f` with `shard` as the rows of the global batch the current step sees (kept only when
/// it is part of a larger batch: a shard of the whole batch draws as one process does).
pub(crate) fn with_shard<R>(shard: Option<Shard>, f: impl FnOnce() -> R) -> R {
    let shard = shard.filter(|s| s.rows != s.global);
    let before = SHARD.with(|s| s.replace(shard));
    let out = f();
    SHARD.with(|s| s.set(before));
    out
}

fn current() -> Option<Shard> {
    SHARD.with(Cell::get)
}

/// Whether the current step is one rank's share of a larger batch.
pub(crate) fn in_shard() -> bool {
    current().is_some()
}

/// Standard normal draws of `shape`, whose dimension `cells_dim` runs over the batch's cells:
/// in a data-parallel step, the draws of the global batch, narrowed to this rank's rows.
pub(crate) fn normal_for_cells(
    shape: &[i64],
    cells_dim: usize,
    kind: Kind,
    device: Device,
) -> Tensor {
    match current() {
        Some(shard) if shape.get(cells_dim) == Some(&(shard.rows as i64)) => {
            let mut global = shape.to_vec();
            global[cells_dim] = shard.global as i64;
            Tensor::randn(global.as_slice(), (kind, device)).narrow(
                cells_dim as i64,
                shard.offset as i64,
                shard.rows as i64,
            )
        }
        _ => Tensor::randn(shape, (kind, device)),
    }
}

/// For a dropout mask of `n` entries over the batch's rows, the generator words to skip before
/// it and after it, so that the rank's rows get the draws one process gives them and every
/// rank's generator ends where one process's would: `(0, 0)` outside a data-parallel step.
pub(crate) fn dropout_words(n: usize) -> (u128, u128) {
    match current() {
        Some(shard) if shard.rows > 0 && n.is_multiple_of(shard.rows) => {
            let width = (n / shard.rows) as u128;
            let before = shard.offset as u128 * width;
            let after = (shard.global - shard.offset - shard.rows) as u128 * width;
            (before, after)
        }
        _ => (0, 0),
    }
}

/// A dropout keep-mask of `shape` on a GPU (`1 / (1 − p)` kept, else 0), drawn for the global
/// batch in a data-parallel step and narrowed to the rank's rows.
pub(crate) fn dropout_mask_on_device(shape: &[i64], p: f64, kind: Kind, device: Device) -> Tensor {
    let draw =
        |shape: &[i64]| Tensor::empty(shape, (kind, device)).bernoulli_float_(1.0 - p) / (1.0 - p);
    match current() {
        Some(shard) if shape.first() == Some(&(shard.rows as i64)) => {
            let mut global = shape.to_vec();
            global[0] = shard.global as i64;
            draw(&global).narrow(0, shard.offset as i64, shard.rows as i64)
        }
        _ => draw(shape),
    }
}

/// What a trainer keeps to train in a job of several ranks.
#[derive(Debug)]
pub(crate) struct Replicas {
    pub group: Arc<dyn Collective>,
    params: Vec<Tensor>,
    /// Batch norm's running statistics, in name order.
    buffers: Vec<Tensor>,
    flat: Vec<f32>,
    /// Seconds spent in gradient sums since the last [`Replicas::take_seconds`].
    seconds: f64,
    steps: usize,
}

impl Replicas {
    /// `None` for a process alone; else starts every rank from rank 0's variables.
    pub fn new(vs: &nn::VarStore) -> Result<Option<Self>> {
        let group = group();
        if group.size() == 1 {
            return Ok(None);
        }
        let params = vs.trainable_variables();
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        // Batch norm's running statistics: what each rank changes alone (other fixed
        // variables stay rank 0's from the broadcast).
        let buffers = named
            .iter()
            .filter(|(name, t)| {
                !t.requires_grad()
                    && (name.ends_with("running_mean") || name.ends_with("running_var"))
            })
            .map(|(_, t)| t.shallow_clone())
            .collect();
        let mut replicas = Self {
            group,
            params,
            buffers,
            flat: Vec::new(),
            seconds: 0.0,
            steps: 0,
        };
        let all: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
        replicas.broadcast(&all)?;
        // Gradients exist from the start (zero), so a rank with no rows in a step adds zeros.
        if replicas.params.iter().any(|p| !p.grad().defined()) {
            let zero = replicas
                .params
                .iter()
                .map(|p| (p * 0.0).sum(Kind::Float))
                .reduce(|a, b| a + b);
            if let Some(zero) = zero {
                zero.backward();
            }
        }
        Ok(Some(replicas))
    }

    /// Replaces `tensors` by rank 0's.
    fn broadcast(&mut self, tensors: &[Tensor]) -> Result<()> {
        self.gather(tensors, 1.0)?;
        let what = "the broadcast of the starting weights";
        self.group
            .broadcast(Values::F32(&mut self.flat), 0, what)
            .map_err(dp_error)?;
        self.scatter(tensors)
    }

    /// Copies `tensors`, times `scale`, into `self.flat`, one after the other.
    fn gather(&mut self, tensors: &[Tensor], scale: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let total: usize = tensors.iter().map(Tensor::numel).sum();
        self.flat.clear();
        self.flat.reserve(total);
        let scale32 = scale as f32;
        for t in tensors {
            if on_host(t) {
                // Read in place: one pass over the memory.
                with_host_f32(t, |values| {
                    if scale == 1.0 {
                        self.flat.extend_from_slice(values);
                    } else {
                        self.flat.extend(values.iter().map(|v| v * scale32));
                    }
                });
                continue;
            }
            let host = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
            let host = if scale == 1.0 { host } else { host * scale };
            let values = Vec::<f32>::try_from(host.view([-1]))?;
            self.flat.extend_from_slice(&values);
        }
        Ok(())
    }

    /// Copies `self.flat` back into `tensors`, in place.
    fn scatter(&self, tensors: &[Tensor]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let mut at = 0;
        for t in tensors {
            let n = t.numel();
            let part = &self.flat[at..at + n];
            at += n;
            let mut t = t.shallow_clone();
            if on_host(&t) {
                // The gradient or statistic is not in use between backward and the step.
                with_host_f32_mut(&mut t, |values| values.copy_from_slice(part));
                continue;
            }
            let values = Tensor::from_slice(part)
                .view(t.size().as_slice())
                .to_kind(t.kind())
                .to_device(t.device());
            t.f_copy_(&values)?;
        }
        Ok(())
    }

    /// Sums every rank's gradients, each rank's weighted by `share` (its rows over the global
    /// batch's), in place: step `step` of the run.
    pub fn sum_gradients(&mut self, share: f64, step: usize) -> Result<()> {
        let start = std::time::Instant::now();
        let grads: Vec<Tensor> = self.params.iter().map(Tensor::grad).collect();
        if grads.iter().any(|g| !g.defined()) {
            return Err(Error::Config(
                "a parameter has no gradient in a data-parallel step".into(),
            ));
        }
        let what = format!("the gradient sum of step {step}");
        match grads.first().map(Tensor::device) {
            Some(Device::Cuda(ordinal)) if self.group.sums_device_memory() => {
                self.sum_on_gpu(&grads, share, ordinal, &what)?;
            }
            _ => {
                self.gather(&grads, share)?;
                self.group
                    .all_reduce_sum(Values::F32(&mut self.flat), &what)
                    .map_err(dp_error)?;
                self.scatter(&grads)?;
            }
        }
        self.seconds += start.elapsed().as_secs_f64();
        self.steps += 1;
        Ok(())
    }

    /// The gradients flattened into one buffer in GPU memory and summed there by NCCL, then
    /// copied back: no trip through the host.
    fn sum_on_gpu(&self, grads: &[Tensor], share: f64, ordinal: usize, what: &str) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let flat: Vec<Tensor> = grads.iter().map(|g| g.reshape([-1])).collect();
        let flat = (Tensor::f_cat(&flat, 0)? * share).contiguous();
        // NCCL runs on a stream of its own: libtorch's work on the gradients must be done.
        tch::Cuda::synchronize(ordinal as i64);
        let buffer = scae_dp::DeviceBuffer {
            address: flat.data_ptr() as usize,
            len: flat.numel(),
            ordinal,
        };
        self.group
            .all_reduce_sum_device(buffer, what)
            .map_err(dp_error)?;
        let mut at = 0;
        for g in grads {
            let n = g.numel() as i64;
            let mut g = g.shallow_clone();
            g.f_copy_(&flat.narrow(0, at, n).view(g.size().as_slice()))?;
            at += n;
        }
        Ok(())
    }

    /// Averages batch norm's running statistics over the ranks.
    pub fn average_buffers(&mut self, epoch: usize) -> Result<()> {
        if self.buffers.is_empty() {
            return Ok(());
        }
        let buffers: Vec<Tensor> = self.buffers.iter().map(Tensor::shallow_clone).collect();
        self.gather(&buffers, 1.0 / self.group.size() as f64)?;
        self.group
            .all_reduce_sum(
                Values::F32(&mut self.flat),
                &format!("the batch norm statistics of epoch {epoch}"),
            )
            .map_err(dp_error)?;
        self.scatter(&buffers)
    }

    /// Sums `values` (loss sums and row counts) over the ranks.
    pub fn sum(&self, values: &mut [f64], what: &str) -> Result<()> {
        self.group
            .all_reduce_sum(Values::F64(values), what)
            .map_err(dp_error)
    }

    /// Seconds spent summing gradients, and the steps, since the last call.
    pub fn take_seconds(&mut self) -> (f64, usize) {
        let out = (self.seconds, self.steps);
        self.seconds = 0.0;
        self.steps = 0;
        out
    }
}

/// A contiguous `f32` tensor in host memory, read and written in place.
fn on_host(t: &Tensor) -> bool {
    t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous()
}

fn dp_error(err: scae_dp::Error) -> Error {
    Error::Config(format!("data-parallel training: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_a_batch_once_and_full_batches_give_a_rank_one_size() {
        for global in [1usize, 7, 128, 130] {
            for size in 1..=5 {
                let shards: Vec<Shard> = (0..size).map(|r| Shard::of(global, r, size)).collect();
                let mut next = 0;
                for s in &shards {
                    assert_eq!(s.offset, next);
                    next += s.rows;
                }
                assert_eq!(next, global);
                let max = shards.iter().map(|s| s.rows).max().unwrap_or(0);
                let min = shards.iter().map(|s| s.rows).min().unwrap_or(0);
                assert!(max - min <= 1);
                // A smaller batch never gives a rank more rows than a full one.
                for (r, s) in shards.iter().enumerate() {
                    assert!(s.rows <= Shard::of(global + size, r, size).rows);
                }
            }
        }
    }

    #[test]
    fn a_ranks_noise_is_its_rows_of_the_global_batchs() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(5);
        let whole = Tensor::randn([2, 10, 3], (Kind::Float, Device::Cpu));
        for (rank, size) in [(0, 3), (1, 3), (2, 3)] {
            tch::manual_seed(5);
            let shard = Shard::of(10, rank, size);
            let part = with_shard(Some(shard), || {
                normal_for_cells(&[2, shard.rows as i64, 3], 1, Kind::Float, Device::Cpu)
            });
            let expected = whole.narrow(1, shard.offset as i64, shard.rows as i64);
            assert!(part.equal(&expected), "rank {rank}");
        }
        let shard = Shard::of(10, 1, 3);
        let words = with_shard(Some(shard), || dropout_words(shard.rows * 4));
        assert_eq!(words, (4 * 4, 3 * 4));
        assert_eq!(dropout_words(12), (0, 0));
    }
}
