//! The one training loop every model shares, and the minibatches it feeds them.
//!
//! A model says what its named losses on one minibatch are ([`Model::losses`], which may fail);
//! the [`Trainer`] owns everything else: Adam ([`crate::optim`]) with learning rate and weight
//! decay, minibatches pulled from a [`BatchSource`] in a seeded order, train and test loss per
//! epoch, and a stop with [`Error::NonFiniteLoss`] naming the epoch and batch of the first loss
//! that is not finite. Training in phases (the GMVAE's start) is one trainer run several times:
//! the optimiser state, the epoch count (and so the KL warm-up and the shuffles) and the history
//! go on from one phase to the next.
//!
//! A batch reaches the model as a [`TensorBatch`], made dense on the model's device only then:
//! the counts travel as their nonzeros. Batches from a [`BatchSource`] are read and made tensors
//! on a thread of the epoch's own, [`READ_AHEAD`] batches ahead of the step that trains on them,
//! in the epoch's order, so the numbers do not depend on that thread's timing. On a GPU, loss
//! values stay on the device during an epoch and are read once at its end, so the device is not
//! synchronised after every step; on the CPU they are read as they come (see `BatchLosses`). A libtorch error inside a
//! step (a shape that does not fit, memory running out on a GPU) ends training with
//! [`Error::Step`], naming the model, the phase, the epoch and the batch, instead of a panic.

use std::collections::BTreeMap;
use std::time::Instant;

use ndarray::Array2;
use scae_io::{Batch, BatchSource, BatchValues};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use crate::error::catch_torch;
use crate::layers::SparseRows;
use crate::optim::Adam;
use crate::parallel::{Replicas, Shard, with_shard};
use crate::{Error, Result, batch_ranges, epoch_order};

/// Batches a trainer reads ahead of the step that trains on them.
const READ_AHEAD: usize = 2;

/// A minibatch on the model's device.
#[derive(Debug)]
pub struct TensorBatch {
    /// `[cells, genes]`, dense.
    pub x: Tensor,
    /// Each cell's total count, `[cells, 1]` (count sources).
    pub library: Option<Tensor>,
    /// The source's per-cell fields by key ([`scae_io::Fields`]), each `[cells]` `int64` on the
    /// device: a code, or [`scae_io::MISSING`].
    pub fields: BTreeMap<String, Tensor>,
    /// The nonzero entries of `x` on the host, when a sparse batch came to the CPU: a model's
    /// sparse first layer reads them instead of scanning `x` for them.
    pub sparse: Option<SparseRows>,
}

impl TensorBatch {
    /// A batch of dense rows alone (tests, tensors made in memory).
    pub fn from_tensor(x: Tensor) -> Self {
        Self {
            x,
            library: None,
            fields: BTreeMap::new(),
            sparse: None,
        }
    }

    /// `batch` on `device`: sparse values are sent as their nonzeros and scattered into a zero
    /// matrix there; on the CPU they are scattered on the host and also kept as they came
    /// ([`TensorBatch::sparse`]).
    pub fn from_host(batch: &Batch, device: Device) -> Result<Self> {
        let (rows, genes) = (batch.rows as i64, batch.genes as i64);
        let mut sparse = None;
        let x = match &batch.values {
            BatchValues::Dense(values) => {
                crate::tensor_from_rows(values, batch.rows, batch.genes)?.to_device(device)
            }
            BatchValues::Sparse {
                indptr,
                indices,
                values,
            } if device == Device::Cpu => {
                // Zeroed here rather than by `Tensor::zeros`, whose fill would start an OpenMP
                // team of its own on a reading thread.
                let mut x = Tensor::f_empty([rows, genes], (Kind::Float, device))?;
                crate::layers::with_host_f32_mut(&mut x, |dense| {
                    dense.fill(0.0);
                    for (r, row) in dense.chunks_exact_mut(batch.genes.max(1)).enumerate() {
                        let (from, to) = (indptr[r] as usize, indptr[r + 1] as usize);
                        for (&j, &v) in indices[from..to].iter().zip(&values[from..to]) {
                            row[j as usize] = v;
                        }
                    }
                });
                sparse = Some(SparseRows::from_csr(indptr, indices, values, batch.genes));
                x
            }
            BatchValues::Sparse {
                indptr,
                indices,
                values,
            } => {
                let mut flat = Vec::with_capacity(indices.len());
                for r in 0..batch.rows {
                    let (from, to) = (indptr[r] as usize, indptr[r + 1] as usize);
                    flat.extend(indices[from..to].iter().map(|&j| r as i64 * genes + j));
                }
                let mut x = Tensor::f_zeros([rows * genes], (Kind::Float, device))?;
                if !flat.is_empty() {
                    let index = Tensor::from_slice(&flat).to_device(device);
                    let values = Tensor::from_slice(values).to_device(device);
                    let _ = x.f_index_copy_(0, &index, &values)?;
                }
                x.view([rows, genes])
            }
        };
        let library = batch
            .library
            .as_ref()
            .map(|l| Tensor::from_slice(l).view([rows, 1]).to_device(device));
        let fields = (batch.fields.iter())
            .map(|(key, codes)| (key.to_owned(), Tensor::from_slice(codes).to_device(device)))
            .collect();
        Ok(Self {
            x,
            library,
            fields,
            sparse,
        })
    }

    /// The codes of field `key`, when the batch carries it.
    pub fn field(&self, key: &str) -> Option<&Tensor> {
        self.fields.get(key)
    }

    /// Cells in the batch.
    pub fn rows(&self) -> i64 {
        self.x.size()[0]
    }

    /// Log of each cell's total count (`[cells, 1]`), at least `ln 1` so an empty cell stays
    /// finite: from the library sizes the source gave, else summed from `x`.
    pub fn log_library(&self) -> Tensor {
        match &self.library {
            Some(library) => library.clamp_min(1.0).log(),
            None => self
                .x
                .sum_dim_intlist(-1, true, Kind::Float)
                .clamp_min(1.0)
                .log(),
        }
    }
}

/// The losses of one minibatch: `total` is minimised; the named `terms` are reported beside it.
#[derive(Debug)]
pub struct Losses {
    pub total: Tensor,
    pub terms: Vec<(&'static str, Tensor)>,
}

impl Losses {
    /// A loss with no separate terms.
    pub fn total(total: Tensor) -> Self {
        Self {
            total,
            terms: Vec::new(),
        }
    }
}

/// A model the training loop can drive.
pub trait Model {
    /// What the model is called in errors ("VAE", "GMVAE", "autoencoder").
    fn name(&self) -> &'static str;

    /// The columns every batch must have.
    fn input_genes(&self) -> usize;

    /// The losses on `batch`; `train` selects training behaviour.
    ///
    /// # Errors
    /// When the batch does not suit the model (a missing label column, say); libtorch's own
    /// errors inside a step are caught by the trainer.
    fn losses(&self, batch: &TensorBatch, train: bool) -> Result<Losses>;

    /// Adds the gradients autograd does not compute (a sparse first layer's weight, see
    /// `layers::Affine::Counts`) for the training passes since the last call; the trainer calls
    /// it after `backward`, before the optimiser step.
    fn add_sparse_grads(&self) {}

    /// Called before every epoch (1-based, counted over every phase), for schedules such as KL
    /// warm-up.
    fn begin_epoch(&mut self, _epoch: usize) {}

    /// Figures the model gathered over an epoch's training steps, read once they are done
    /// (name and value; the GMVAE counts the mixture components that hold a cell).
    fn epoch_figures(&mut self) -> Result<Vec<(&'static str, f64)>> {
        Ok(Vec::new())
    }
}

/// Optimisation settings (the `[train]` table of a study config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Rows per forward pass when evaluating (no gradient is kept); fewer for wide inputs, so
    /// that one dense chunk holds at most [`EVAL_VALUES`] values.
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// Adam's `eps` (PyTorch's default 1e-8; scvi-tools trains with 0.01).
    #[serde(default = "default_adam_eps")]
    pub adam_eps: f64,
    /// When set, every step rescales the gradients so that their global L2 norm is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_grad_norm: Option<f64>,
}

/// The most values (cells x genes) one evaluation chunk holds dense: 2^23, 32 MiB of `f32`, so
/// evaluating 28,000 genes takes 299 cells at a time and the decoder's outputs stay small.
pub const EVAL_VALUES: usize = 1 << 23;

fn default_adam_eps() -> f64 {
    crate::optim::DEFAULT_EPS
}

fn default_eval_batch() -> usize {
    8192
}

impl TrainConfig {
    /// Checks every setting is in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.epochs == 0 {
            return bad("train.epochs must be at least 1".into());
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("train.batch_size and train.eval_batch_size must be at least 1".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad(format!(
                "train.learning_rate must be positive, got {}",
                self.learning_rate
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!(
                "train.weight_decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        if !(self.adam_eps > 0.0 && self.adam_eps.is_finite()) {
            return bad(format!(
                "train.adam_eps must be positive, got {}",
                self.adam_eps
            ));
        }
        if let Some(clip) = self.clip_grad_norm
            && !(clip > 0.0 && clip.is_finite())
        {
            return bad(format!("train.clip_grad_norm must be positive, got {clip}"));
        }
        Ok(())
    }

    /// Rows per evaluation chunk for inputs of `genes` columns.
    pub fn eval_chunk(&self, genes: usize) -> usize {
        eval_chunk(self.eval_batch_size, genes)
    }
}

/// At most `chunk` rows, and at most [`EVAL_VALUES`] values, per evaluation chunk.
pub fn eval_chunk(chunk: usize, genes: usize) -> usize {
    chunk.min(EVAL_VALUES / genes.max(1)).max(1)
}

/// Named loss terms, in the order the model gave them; serialised as a map.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Terms(pub Vec<(&'static str, f64)>);

impl Terms {
    /// The value of term `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|&(n, _)| n).collect()
    }
}

impl Serialize for Terms {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// What one epoch measured. Losses are means per minibatch weighted by its rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochStats {
    /// 1-based, counted over every phase of the run.
    pub epoch: usize,
    /// The phase the epoch belongs to (empty for a run of one phase).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub phase: String,
    pub train_loss: f64,
    /// `None` when there is no test set.
    pub test_loss: Option<f64>,
    pub train_terms: Terms,
    pub test_terms: Terms,
    /// Wall time of the epoch, training and test evaluation.
    pub seconds: f64,
    /// Wall time of the training steps alone (the minibatches, without the test evaluation).
    pub train_seconds: f64,
    /// Of `train_seconds`, the time spent summing gradients over the ranks of a data-parallel
    /// job (0 alone).
    #[serde(skip_serializing_if = "is_zero")]
    pub sync_seconds: f64,
    /// [`Model::epoch_figures`] of this epoch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<(&'static str, f64)>,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Every epoch of one training run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct History {
    pub term_names: Vec<&'static str>,
    pub epochs: Vec<EpochStats>,
}

impl History {
    /// Train losses, one per epoch.
    pub fn train_losses(&self) -> Vec<f64> {
        self.epochs.iter().map(|e| e.train_loss).collect()
    }

    /// Test losses, one per epoch (empty without a test set).
    pub fn test_losses(&self) -> Vec<f64> {
        self.epochs.iter().filter_map(|e| e.test_loss).collect()
    }

    /// The last epoch's test value of term `name`.
    pub fn last_test_term(&self, name: &str) -> Option<f64> {
        self.epochs.last()?.test_terms.get(name)
    }

    /// The last epoch's training value of term `name`.
    pub fn last_train_term(&self, name: &str) -> Option<f64> {
        self.epochs.last()?.train_terms.get(name)
    }

    /// The median wall time of an epoch's training steps (the test evaluation left out), 0
    /// without epochs: a figure of the step's cost that a slow first epoch does not sway.
    pub fn median_train_seconds(&self) -> f64 {
        let mut s: Vec<f64> = self.epochs.iter().map(|e| e.train_seconds).collect();
        if s.is_empty() {
            return 0.0;
        }
        s.sort_by(f64::total_cmp);
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            0.5 * (s[n / 2 - 1] + s[n / 2])
        }
    }
}

/// Trains one model: Adam over the variables of its `VarStore`, a seeded minibatch order, and
/// one history over every phase (see the module documentation).
#[derive(Debug)]
pub struct Trainer {
    opt: Adam,
    cfg: TrainConfig,
    seed: u64,
    device: Device,
    history: History,
    /// The other ranks of a data-parallel job (see [`crate::parallel`]); `None` alone.
    replicas: Option<Replicas>,
    /// Optimiser steps taken, over every phase.
    steps: usize,
}

impl Trainer {
    /// A trainer of the variables of `vs`; `seed` seeds the minibatch order of every epoch. In a
    /// data-parallel job ([`crate::parallel::join`]) the variables become rank 0's here, and
    /// every rank must make the same trainers in the same order.
    pub fn new(vs: &nn::VarStore, cfg: &TrainConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let replicas = Replicas::new(vs)?;
        if let Some(r) = &replicas
            && cfg.batch_size < r.group.size()
        {
            return Err(Error::Config(format!(
                "train.batch_size {} is smaller than the {} ranks it is shared among",
                cfg.batch_size,
                r.group.size()
            )));
        }
        Ok(Self {
            opt: Adam::with_eps(vs, cfg.learning_rate, cfg.weight_decay, cfg.adam_eps)?,
            cfg: cfg.clone(),
            seed,
            device: vs.device(),
            history: History::default(),
            replicas,
            steps: 0,
        })
    }

    /// The epochs trained so far.
    pub fn epochs_done(&self) -> usize {
        self.history.epochs.len()
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn into_history(self) -> History {
        self.history
    }

    /// Trains `epochs` more epochs of `model` on `train`, scoring `test` after each (when given);
    /// `phase` names them in the history. `on_epoch` sees each epoch's figures as soon as they are
    /// known (progress bars, logs).
    pub fn run<M: Model>(
        &mut self,
        model: &mut M,
        phase: &str,
        train: &dyn BatchSource,
        test: Option<&dyn BatchSource>,
        epochs: usize,
        mut on_epoch: impl FnMut(&EpochStats),
    ) -> Result<()> {
        let n = train.cells();
        if n == 0 {
            return Err(Error::Config("the training set is empty".into()));
        }
        for source in std::iter::once(train).chain(test) {
            check_width(model, source)?;
        }
        let train_rows = resident(train, self.device)?;
        let test_rows = test
            .map(|t| resident(t, self.device))
            .transpose()?
            .flatten();
        for _ in 0..epochs {
            let epoch = self.epochs_done() + 1;
            let sources = Sources {
                train,
                train_rows: train_rows.as_ref(),
                test,
                test_rows: test_rows.as_ref(),
            };
            let stats = self
                .epoch(model, phase, &sources, epoch)
                .map_err(|e| in_step(e, model.name(), phase, epoch))?;
            on_epoch(&stats);
            if self.history.term_names.is_empty() {
                self.history.term_names = stats.train_terms.names();
            }
            self.history.epochs.push(stats);
        }
        Ok(())
    }

    fn epoch<M: Model>(
        &mut self,
        model: &mut M,
        phase: &str,
        sources: &Sources<'_>,
        epoch: usize,
    ) -> Result<EpochStats> {
        model.begin_epoch(epoch);
        let start = Instant::now();
        let n = sources.train.cells();
        let order = epoch_order(n, epoch_seed(self.seed, epoch));
        let batch_size = self.cfg.batch_size;
        // Each rank's rows of each global batch (all of them for a process alone), as positions
        // into `order`, with where they sit in their batch.
        let (rank, ranks) = self
            .replicas
            .as_ref()
            .map_or((0, 1), |r| (r.group.rank(), r.group.size()));
        // A last batch too small for batch norm is merged into the one before (`batch_ranges`).
        let shards: Vec<(std::ops::Range<usize>, Shard)> = batch_ranges(n, batch_size, ranks)
            .into_iter()
            .map(|batch| {
                let shard = Shard::of(batch.len(), rank, ranks);
                let begin = batch.start + shard.offset;
                (begin..begin + shard.rows, shard)
            })
            .collect();
        let mine: std::borrow::Cow<'_, [usize]> = if ranks == 1 {
            order.as_slice().into()
        } else {
            shards
                .iter()
                .flat_map(|(r, _)| order[r.clone()].iter().copied())
                .collect::<Vec<_>>()
                .into()
        };
        if sources.train_rows.is_none() {
            let lengths: Vec<usize> = shards.iter().map(|(r, _)| r.len()).collect();
            sources.train.plan(&mine, &lengths);
        }
        // With the rows on the device, the epoch's order goes there once and each batch is
        // gathered by its own `index_select`.
        let device_order = sources.train_rows.map(|_| {
            let order: Vec<i64> = order.iter().map(|&i| i as i64).collect();
            Tensor::from_slice(&order).to_device(self.device)
        });
        let mut batches = BatchLosses::default();
        let device = self.device;
        std::thread::scope(|scope| -> Result<()> {
            // Batches from a source are read, made tensors and prepared for the sparse layer's
            // backward pass on a thread of their own, a few ahead of the step that trains on them.
            let ahead = sources.train_rows.is_none().then(|| {
                let (send, receive) = std::sync::mpsc::sync_channel(READ_AHEAD);
                let (train, order, shards) = (sources.train, &order, &shards);
                scope.spawn(move || {
                    for (range, _) in shards.iter().filter(|(r, _)| !r.is_empty()) {
                        let batch = train
                            .batch(&order[range.clone()])
                            .map_err(Error::from)
                            .and_then(|host| {
                                let batch = catch_torch(|| TensorBatch::from_host(&host, device))?;
                                if let Some(sparse) = &batch.sparse {
                                    sparse.prepare_backward();
                                }
                                Ok(batch)
                            });
                        let failed = batch.is_err();
                        // The receiver is gone when a step failed: stop reading.
                        if send.send(batch).is_err() || failed {
                            break;
                        }
                    }
                });
                receive
            });
            for (b, (range, shard)) in shards.iter().enumerate() {
                let host = match &ahead {
                    Some(ahead) if !range.is_empty() => Some(
                        ahead
                            .recv()
                            .map_err(|_| {
                                Error::Config(
                                    "the batch reader stopped before the epoch ended".into(),
                                )
                            })
                            .and_then(|batch| batch)
                            .map_err(|e| at_batch(e, b + 1))?,
                    ),
                    _ => None,
                };
                self.steps += 1;
                let step = self.steps;
                let (opt, replicas, clip) =
                    (&mut self.opt, &mut self.replicas, self.cfg.clip_grad_norm);
                let shard = replicas.is_some().then_some(*shard);
                catch_torch(|| {
                    let batch = match (host, sources.train_rows, &device_order) {
                        _ if range.is_empty() => None,
                        (Some(batch), ..) => Some(batch),
                        (None, Some(rows), Some(order)) => {
                            Some(TensorBatch::from_tensor(rows.f_index_select(
                                0,
                                &order.narrow(0, range.start as i64, range.len() as i64),
                            )?))
                        }
                        _ => unreachable!("a batch comes from the host or from the device rows"),
                    };
                    let losses = batch
                        .as_ref()
                        .map(|batch| with_shard(shard, || model.losses(batch, true)))
                        .transpose()?;
                    let mut summed = Ok(());
                    opt.step_from(losses.as_ref().map(|l| &l.total), clip, || {
                        model.add_sparse_grads();
                        if let (Some(replicas), Some(shard)) = (replicas.as_mut(), shard) {
                            let share = shard.rows as f64 / shard.global as f64;
                            summed = replicas.sum_gradients(share, step);
                        }
                    });
                    summed?;
                    if let Some(losses) = &losses {
                        batches.push(losses, range.len())?;
                    }
                    Ok(())
                })
                .map_err(|e| at_batch(e, b + 1))?;
            }
            Ok(())
        })?;
        let (train_loss, train_terms) = match &self.replicas {
            None => batches.reduce(epoch, "train")?,
            Some(replicas) => batches.reduce_over(replicas, epoch, "train")?,
        };
        let sync_seconds = match self.replicas.as_mut() {
            Some(replicas) => {
                replicas.average_buffers(epoch)?;
                replicas.take_seconds().0
            }
            None => 0.0,
        };
        let figures = catch_torch(|| model.epoch_figures())?;
        let train_seconds = start.elapsed().as_secs_f64();
        let test_eval = match (sources.test, sources.test_rows) {
            (Some(_), Some(rows)) => {
                evaluate_rows(model, rows, self.cfg.eval_chunk(rows.size()[1] as usize))
                    .map_err(|e| with_epoch(e, epoch))?
            }
            (Some(test), None) => {
                evaluate(model, test, self.cfg.eval_chunk(test.genes()), self.device)
                    .map_err(|e| with_epoch(e, epoch))?
            }
            (None, _) => None,
        };
        Ok(EpochStats {
            epoch,
            phase: phase.to_string(),
            train_loss,
            test_loss: test_eval.as_ref().map(|(loss, _)| *loss),
            train_terms,
            test_terms: test_eval.map(|(_, terms)| terms).unwrap_or_default(),
            seconds: start.elapsed().as_secs_f64(),
            train_seconds,
            sync_seconds,
            figures,
        })
    }
}

/// The sources of one epoch, with the rows of dense ones kept on the device.
struct Sources<'a> {
    train: &'a dyn BatchSource,
    train_rows: Option<&'a Tensor>,
    test: Option<&'a dyn BatchSource>,
    test_rows: Option<&'a Tensor>,
}

/// The cells of a dense in-memory source as one tensor on `device`, in position order (see
/// [`BatchSource::dense_rows`]); `None` for any other source.
fn resident(source: &dyn BatchSource, device: Device) -> Result<Option<Tensor>> {
    let Some((x, rows)) = source.dense_rows() else {
        return Ok(None);
    };
    let gathered;
    let x = match rows {
        Some(rows) => {
            gathered = x.select(ndarray::Axis(0), rows);
            gathered.view()
        }
        None => x,
    };
    let x = x.as_standard_layout();
    let values = x
        .as_slice()
        .ok_or_else(|| Error::Config("a dense source that is not in standard layout".into()))?;
    Ok(Some(
        crate::tensor_from_rows(values, x.nrows(), x.ncols())?.to_device(device),
    ))
}

/// [`evaluate`] over rows already on the device, `chunk` at a time.
fn evaluate_rows<M: Model>(model: &M, rows: &Tensor, chunk: usize) -> Result<Option<(f64, Terms)>> {
    let n = usize::try_from(rows.size()[0]).unwrap_or(0);
    evaluate_chunks(model, n, chunk, |from, len| {
        let part = rows.narrow(0, from as i64, len as i64);
        Ok(Box::new(move || Ok(TensorBatch::from_tensor(part))))
    })
}

/// Trains `model`, whose variables live in `vs`, for `cfg.epochs` epochs on `train` in one phase
/// (see [`Trainer::run`]).
pub fn fit<M: Model>(
    model: &mut M,
    vs: &nn::VarStore,
    train: &dyn BatchSource,
    test: Option<&dyn BatchSource>,
    cfg: &TrainConfig,
    shuffle_seed: u64,
    on_epoch: impl FnMut(&EpochStats),
) -> Result<History> {
    let mut trainer = Trainer::new(vs, cfg, shuffle_seed)?;
    trainer.run(model, "", train, test, cfg.epochs, on_epoch)?;
    Ok(trainer.into_history())
}

/// Checks the source's columns are the model's input.
pub(crate) fn check_width<M: Model>(model: &M, source: &dyn BatchSource) -> Result<()> {
    if source.genes() != model.input_genes() {
        return Err(Error::Config(format!(
            "the {} reads {} genes, the data has {}",
            model.name(),
            model.input_genes(),
            source.genes()
        )));
    }
    Ok(())
}

/// Mean loss (and terms) of `model` over the cells of `source`, `chunk` cells at a time, without
/// gradients. `None` when the source has no cells.
pub fn evaluate<M: Model>(
    model: &M,
    source: &dyn BatchSource,
    chunk: usize,
    device: Device,
) -> Result<Option<(f64, Terms)>> {
    let n = source.cells();
    if n == 0 {
        return Ok(None);
    }
    check_width(model, source)?;
    let positions: Vec<usize> = (0..n).collect();
    source.plan(&positions, &chunk_lengths(n, chunk));
    evaluate_chunks(model, n, chunk, |from, len| {
        let positions: Vec<usize> = (from..from + len).collect();
        let host = source.batch(&positions)?;
        Ok(Box::new(move || TensorBatch::from_host(&host, device)))
    })
}

/// The lengths of `n` cells cut `chunk` at a time (evaluation: no batch norm statistics are
/// taken, so a last chunk of one cell is harmless).
fn chunk_lengths(n: usize, chunk: usize) -> Vec<usize> {
    let chunk = chunk.max(1);
    (0..n)
        .step_by(chunk)
        .map(|from| chunk.min(n - from))
        .collect()
}

/// A chunk's batch, made inside the step guard.
type MakeBatch<'a> = Box<dyn FnOnce() -> Result<TensorBatch> + 'a>;

/// The row-weighted mean loss and terms of `model` over `n` cells, `chunk` at a time, without
/// gradients; `chunk_of(from, len)` reads a chunk (outside the step guard, so a read error stays
/// a data error) and returns what makes its batch.
fn evaluate_chunks<'a, M: Model>(
    model: &M,
    n: usize,
    chunk: usize,
    chunk_of: impl Fn(usize, usize) -> Result<MakeBatch<'a>>,
) -> Result<Option<(f64, Terms)>> {
    if n == 0 {
        return Ok(None);
    }
    let _guard = tch::no_grad_guard();
    let mut batches = BatchLosses::default();
    let chunk = chunk.max(1);
    for (b, from) in (0..n).step_by(chunk).enumerate() {
        let len = chunk.min(n - from);
        let make = chunk_of(from, len)?;
        catch_torch(|| {
            let batch = make()?;
            batches.push(&model.losses(&batch, false)?, len)?;
            Ok(())
        })
        .map_err(|e| at_batch(e, b + 1))?;
    }
    batches.reduce(0, "test").map(Some)
}

/// Applies `f` to the cells of `source`, `chunk` at a time, on `device` and without gradients,
/// and gathers the `[cells, k]` results on the host, in the source's order.
pub fn map_cells(
    source: &dyn BatchSource,
    chunk: usize,
    device: Device,
    f: impl Fn(&TensorBatch) -> Result<Tensor>,
) -> Result<Array2<f32>> {
    let _guard = tch::no_grad_guard();
    let positions: Vec<usize> = (0..source.cells()).collect();
    source.plan(&positions, &chunk_lengths(positions.len(), chunk));
    // Each chunk's rows are copied out as they come, so the host holds the result once.
    let (mut values, mut cols) = (Vec::new(), None);
    for part in positions.chunks(chunk.max(1)) {
        let host = source.batch(part)?;
        let out = catch_torch(|| f(&TensorBatch::from_host(&host, device)?))?;
        let (rows, width) = (part.len(), out.size().get(1).copied().unwrap_or(0) as usize);
        if values.is_empty() {
            values.reserve_exact(source.cells() * width);
        }
        let (chunk_values, r, c) = crate::tensor_to_rows(&out)?;
        if r != rows || cols.is_some_and(|w| w != c) {
            return Err(Error::Config(format!(
                "a chunk of {rows} cells gave a {r} x {c} result"
            )));
        }
        cols = Some(c);
        values.extend_from_slice(&chunk_values);
    }
    let Some(cols) = cols else {
        return Ok(Array2::zeros((0, 0)));
    };
    let rows = source.cells();
    Array2::from_shape_vec((rows, cols), values)
        .map_err(|e| Error::Config(format!("a {rows} x {cols} result: {e}")))
}

/// The losses of an epoch's minibatches. On a GPU they stay there until
/// [`BatchLosses::reduce`] (reading one back each step would wait for the device); on the CPU
/// they are read as they come, so that an epoch of millions of cells does not keep a tensor
/// per batch and value alive (tens of thousands of small allocations between the batches' large
/// ones, which kept the heap from being reused: about 100 MiB over 10,000 batches).
#[derive(Debug, Default)]
struct BatchLosses {
    /// `[total, terms..]` of each batch still on a device, detached scalars, batch after batch.
    values: Vec<Tensor>,
    /// `[total, terms..]` of each batch read on the host, batch after batch.
    read: Vec<f64>,
    names: Vec<&'static str>,
    rows: Vec<usize>,
}

impl BatchLosses {
    fn push(&mut self, losses: &Losses, rows: usize) -> Result<()> {
        if self.names.is_empty() {
            self.names = losses.terms.iter().map(|&(n, _)| n).collect();
        }
        let values = std::iter::once(&losses.total).chain(losses.terms.iter().map(|(_, t)| t));
        if losses.total.device() == Device::Cpu && losses.total.dim() == 0 {
            for v in values {
                self.read.push(v.f_double_value(&[])?);
            }
        } else {
            self.values.extend(values.map(Tensor::detach));
        }
        self.rows.push(rows);
        Ok(())
    }

    /// Row-weighted means of total and terms; fails on the first non-finite batch.
    fn reduce(self, epoch: usize, split: &'static str) -> Result<(f64, Terms)> {
        let (names, sums, n) = self.sums(epoch, split)?;
        Ok(means(&names, &sums, n as f64))
    }

    /// [`BatchLosses::reduce`] over every rank's batches: the row-weighted sums are summed over
    /// the ranks, so every rank gets the global means. A non-finite loss on any rank fails every
    /// rank (after the sum, so that no rank is left waiting for it).
    fn reduce_over(
        self,
        replicas: &Replicas,
        epoch: usize,
        split: &'static str,
    ) -> Result<(f64, Terms)> {
        let names = self.names.clone();
        let (own, mut sums, n) = match self.sums(epoch, split) {
            Ok((_, sums, n)) => (None, sums, n),
            Err(err) => (Some(err), vec![f64::NAN; 1 + names.len()], 0),
        };
        sums.push(n as f64);
        replicas.sum(&mut sums, &format!("the loss sums of epoch {epoch}"))?;
        let n = sums.pop().unwrap_or(0.0);
        if let Some(err) = own {
            return Err(err);
        }
        if let Some(&value) = sums.iter().find(|v| !v.is_finite()) {
            return Err(Error::NonFiniteLoss {
                epoch,
                batch: 0,
                split,
                value,
            });
        }
        Ok(means(&names, &sums, n))
    }

    /// The names, the row-weighted sums of total and terms, and the rows.
    fn sums(
        self,
        epoch: usize,
        split: &'static str,
    ) -> Result<(Vec<&'static str>, Vec<f64>, usize)> {
        let width = 1 + self.names.len();
        let mut values = self.read;
        if !self.values.is_empty() {
            // Scalars each (one op per value spared in every step), else flattened here.
            let all = if self.values.iter().all(|v| v.dim() == 0) {
                Tensor::f_stack(&self.values, 0)?
            } else {
                let flat: Vec<Tensor> = self.values.iter().map(|v| v.reshape([-1])).collect();
                Tensor::f_cat(&flat, 0)?
            };
            let all = all.to_kind(Kind::Double).to_device(Device::Cpu);
            values.extend(Vec::<f64>::try_from(&all)?);
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteLoss {
                epoch,
                batch: i / width + 1,
                split,
                value: values[i],
            });
        }
        let mut sums = vec![0.0; width];
        for (row, &rows) in values.chunks(width).zip(&self.rows) {
            for (s, v) in sums.iter_mut().zip(row) {
                *s += v * rows as f64;
            }
        }
        let n: usize = self.rows.iter().sum();
        Ok((self.names, sums, n))
    }
}

/// The means of total and terms from their sums over `n` rows.
fn means(names: &[&'static str], sums: &[f64], n: f64) -> (f64, Terms) {
    let means: Vec<f64> = sums.iter().map(|s| s / n).collect();
    let terms = names.iter().copied().zip(means[1..].iter().copied());
    (means[0], Terms(terms.collect()))
}

fn with_epoch(err: Error, epoch: usize) -> Error {
    match err {
        Error::NonFiniteLoss {
            batch,
            split,
            value,
            ..
        } => Error::NonFiniteLoss {
            epoch,
            batch,
            split,
            value,
        },
        other => other,
    }
}

/// A libtorch error of batch `batch` (1-based) of the step being run.
fn at_batch(err: Error, batch: usize) -> Error {
    match err {
        Error::Torch(err) => Error::Step {
            model: "",
            phase: String::new(),
            epoch: 0,
            batch,
            message: crate::error::first_line(&err.to_string()),
        },
        other => other,
    }
}

/// Names the model, phase and epoch in a step's error.
fn in_step(err: Error, name: &'static str, phase: &str, epoch: usize) -> Error {
    match err {
        Error::Step { batch, message, .. } => Error::Step {
            model: name,
            phase: phase.to_string(),
            epoch,
            batch,
            message,
        },
        Error::Torch(err) => Error::Step {
            model: name,
            phase: phase.to_string(),
            epoch,
            batch: 0,
            message: crate::error::first_line(&err.to_string()),
        },
        other => other,
    }
}

/// A distinct, reproducible seed per epoch (SplitMix64 of seed and epoch).
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    let mut z = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
pub(crate) mod tests {
    use scae_io::DenseRows;
    use tch::nn::VarStore;

    use super::*;
    use crate::{AeConfig, Autoencoder};

    pub(crate) fn cfg(epochs: usize) -> TrainConfig {
        TrainConfig {
            epochs,
            batch_size: 16,
            learning_rate: 1e-2,
            weight_decay: 0.0,
            eval_batch_size: 64,
            clip_grad_norm: None,
            adam_eps: 1e-8,
        }
    }

    /// Rank-2 structure plus noise: an autoencoder with latent 2 can learn it.
    fn data(rows: i64, seed: i64) -> Array2<f32> {
        tch::manual_seed(seed);
        let z = Tensor::randn([rows, 2], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([2, 12], (Kind::Float, Device::Cpu));
        let x = z.matmul(&w) + 0.05 * Tensor::randn([rows, 12], (Kind::Float, Device::Cpu));
        let (v, r, c) = crate::tensor_to_rows(&x).expect("2-D");
        Array2::from_shape_vec((r, c), v).expect("shape")
    }

    fn train_once(seed: i64) -> History {
        let x = data(200, 1);
        let (train_rows, test_rows): (Vec<usize>, Vec<usize>) =
            ((0..160).collect(), (160..200).collect());
        let train = DenseRows::subset(x.view(), &train_rows).expect("rows");
        let test = DenseRows::subset(x.view(), &test_rows).expect("rows");
        tch::manual_seed(seed);
        let vs = VarStore::new(Device::Cpu);
        let mut ae = Autoencoder::new(&vs.root(), 12, &AeConfig::with_latent(2)).expect("valid");
        fit(&mut ae, &vs, &train, Some(&test), &cfg(30), 3, |_| {}).expect("training runs")
    }

    #[test]
    fn loss_decreases_and_runs_repeat_exactly() {
        let _rng = crate::torch_rng_lock();
        tch::set_num_threads(1);
        let a = train_once(5);
        let first = a.epochs[0].test_loss.expect("test set");
        let last = a.epochs[29].test_loss.expect("test set");
        assert!(last < 0.3 * first, "test loss {first} -> {last}");
        let b = train_once(5);
        assert_eq!(a.train_losses(), b.train_losses(), "same seed, same losses");
        assert_eq!(a.test_losses(), b.test_losses());
        assert_ne!(a.train_losses(), train_once(6).train_losses());
    }

    #[test]
    fn phases_continue_one_run() {
        let _rng = crate::torch_rng_lock();
        tch::set_num_threads(1);
        let x = data(64, 4);
        let source = DenseRows::all(x.view());
        let run = |phases: &[usize]| {
            tch::manual_seed(1);
            let vs = VarStore::new(Device::Cpu);
            let mut ae =
                Autoencoder::new(&vs.root(), 12, &AeConfig::with_latent(2)).expect("valid");
            let mut trainer = Trainer::new(&vs, &cfg(1), 9).expect("valid");
            for (i, &epochs) in phases.iter().enumerate() {
                let name = format!("phase {i}");
                trainer
                    .run(&mut ae, &name, &source, None, epochs, |_| {})
                    .expect("trains");
            }
            trainer.into_history()
        };
        let split = run(&[2, 3]);
        let whole = run(&[5]);
        // The same optimiser, epoch count and shuffles: two phases are one run of five epochs.
        assert_eq!(split.train_losses(), whole.train_losses());
        let epochs: Vec<(usize, &str)> = split
            .epochs
            .iter()
            .map(|e| (e.epoch, e.phase.as_str()))
            .collect();
        assert_eq!(
            epochs,
            [
                (1, "phase 0"),
                (2, "phase 0"),
                (3, "phase 1"),
                (4, "phase 1"),
                (5, "phase 1")
            ]
        );
    }

    #[test]
    fn a_non_finite_loss_stops_training_with_epoch_and_batch() {
        let _rng = crate::torch_rng_lock();
        let mut x = data(64, 2);
        x[[40, 3]] = f32::NAN;
        let source = DenseRows::all(x.view());
        let vs = VarStore::new(Device::Cpu);
        let mut ae = Autoencoder::new(&vs.root(), 12, &AeConfig::with_latent(2)).expect("valid");
        let err = fit(&mut ae, &vs, &source, None, &cfg(3), 0, |_| {}).expect_err("NaN input");
        match err {
            Error::NonFiniteLoss {
                epoch,
                batch,
                split,
                ..
            } => {
                assert_eq!((epoch, split), (1, "train"));
                assert!((1..=4).contains(&batch));
            }
            other => panic!("unexpected error {other}"),
        }
    }

    /// A model whose step fails inside libtorch: its weight does not fit the batch.
    struct Misfit {
        w: Tensor,
    }

    impl Model for Misfit {
        fn name(&self) -> &'static str {
            "misfit"
        }
        fn input_genes(&self) -> usize {
            12
        }
        fn losses(&self, batch: &TensorBatch, _train: bool) -> Result<Losses> {
            // [cells, 12] x [5, 1]: libtorch refuses the shapes (a panic in tch's plain ops).
            Ok(Losses::total(batch.x.matmul(&self.w).sum(Kind::Float)))
        }
    }

    #[test]
    fn a_libtorch_error_in_a_step_is_an_error_naming_model_epoch_and_batch() {
        let x = data(32, 3);
        let source = DenseRows::all(x.view());
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().randn("w", &[5, 1], 0.0, 1.0);
        let mut model = Misfit { w };
        let err = fit(&mut model, &vs, &source, None, &cfg(2), 0, |_| {})
            .expect_err("the shapes do not fit");
        let text = err.to_string();
        assert!(
            matches!(
                err,
                Error::Step {
                    model: "misfit",
                    epoch: 1,
                    batch: 1,
                    ..
                }
            ),
            "{text}"
        );
        assert!(!text.contains('\n'), "one line: {text}");
        assert!(
            text.contains("misfit") && text.contains("epoch 1"),
            "{text}"
        );
        assert!(text.contains("shapes cannot be multiplied"), "{text}");
    }

    #[test]
    fn a_source_of_the_wrong_width_is_refused_before_training() {
        let x = data(16, 3);
        let narrow = x.slice(ndarray::s![.., ..5]).to_owned();
        let source = DenseRows::all(narrow.view());
        let vs = VarStore::new(Device::Cpu);
        let mut ae = Autoencoder::new(&vs.root(), 12, &AeConfig::with_latent(2)).expect("valid");
        let err = fit(&mut ae, &vs, &source, None, &cfg(1), 0, |_| {}).expect_err("5 genes");
        assert!(matches!(err, Error::Config(_)), "{err}");
    }

    #[test]
    fn evaluate_weights_chunks_by_rows() {
        let _rng = crate::torch_rng_lock();
        // One model, two chunkings: the row-weighted mean of MSE does not depend on the chunk.
        let x = data(50, 3);
        let source = DenseRows::all(x.view());
        let vs = VarStore::new(Device::Cpu);
        let ae = Autoencoder::new(&vs.root(), 12, &AeConfig::with_latent(2)).expect("valid");
        let (a, _) = evaluate(&ae, &source, 7, Device::Cpu)
            .expect("finite")
            .expect("rows");
        let (b, _) = evaluate(&ae, &source, 50, Device::Cpu)
            .expect("finite")
            .expect("rows");
        approx::assert_relative_eq!(a, b, max_relative = 1e-5);
    }

    #[test]
    fn sparse_batches_arrive_dense_with_their_library() {
        let x = ndarray::array![[0.0f32, 3.0, 0.0], [1.0, 0.0, 2.0]];
        let counts =
            scae_io::CountMatrix::from_dense(x.view(), std::path::Path::new("x")).expect("counts");
        let source = scae_io::CountRows::all(&counts);
        let host = source.batch(&[1, 0]).expect("rows");
        let batch = TensorBatch::from_host(&host, Device::Cpu).expect("tensor");
        let (values, _, _) = crate::tensor_to_rows(&batch.x).expect("2-D");
        assert_eq!(values, [1.0, 0.0, 2.0, 0.0, 3.0, 0.0]);
        let log_lib = Vec::<f32>::try_from(batch.log_library().view([-1])).expect("values");
        assert_eq!(log_lib, [3f32.ln(), 3f32.ln()]);
        assert_eq!(eval_chunk(8192, 1000), 8192);
        assert_eq!(eval_chunk(8192, 28_000), EVAL_VALUES / 28_000);
    }
}
