//! The one training loop every model shares.
//!
//! A model says what its losses on one minibatch are ([`Model::losses`]);
//! [`fit`] owns everything else: Adam ([`crate::optim`]) with learning rate and weight decay,
//! minibatches from a seeded shuffle (one `index_select` per minibatch), train and test loss per epoch, and a stop with [`Error::NonFiniteLoss`]
//! naming the epoch and batch of the first loss that is not finite.
//!
//! Loss values stay on the device during an epoch and are read once at its
//! end, so a GPU is not synchronised after every step.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use crate::optim::Adam;
use crate::{Error, Result, shuffled_indices};

/// The losses of one minibatch: `total` is minimised; `terms` are reported beside it.
#[derive(Debug)]
pub struct Losses {
    pub total: Tensor,
    pub terms: Vec<Tensor>,
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
    /// The losses on minibatch `x` (rows are cells); `train` selects training behaviour.
    fn losses(&self, x: &Tensor, train: bool) -> Losses;

    /// Names of the entries of [`Losses::terms`], in order.
    fn term_names(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Called before every epoch (1-based), for schedules such as KL warm-up.
    fn begin_epoch(&mut self, _epoch: usize) {}

    /// Figures the model gathered over an epoch's training steps, read once they are done
    /// (name and value; the GMVAE counts the mixture components that hold a cell).
    fn epoch_figures(&mut self) -> Vec<(&'static str, f64)> {
        Vec::new()
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
    /// Rows per forward pass when evaluating (no gradient is kept).
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// Adam's `eps` (PyTorch's default 1e-8; scvi-tools trains with 0.01).
    #[serde(default = "default_adam_eps")]
    pub adam_eps: f64,
    /// When set, every step rescales the gradients so that their global L2 norm is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_grad_norm: Option<f64>,
}

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
}

/// What one epoch measured. Losses are means per minibatch weighted by its rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochStats {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    /// `None` when there is no test set.
    pub test_loss: Option<f64>,
    pub train_terms: Vec<f64>,
    pub test_terms: Vec<f64>,
    /// Wall time of the epoch, training and test evaluation.
    pub seconds: f64,
    /// Wall time of the training steps alone (the minibatches, without the test evaluation).
    pub train_seconds: f64,
    /// [`Model::epoch_figures`] of this epoch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<(&'static str, f64)>,
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
}

/// Trains `model`, whose variables live in `vs`, on the rows of `train`.
///
/// `shuffle_seed` seeds the minibatch order of every epoch; `on_epoch` sees each
/// epoch's figures as soon as they are known (progress bars, logs).
pub fn fit<M: Model>(
    model: &mut M,
    vs: &nn::VarStore,
    train: &Tensor,
    test: &Tensor,
    cfg: &TrainConfig,
    shuffle_seed: u64,
    mut on_epoch: impl FnMut(&EpochStats),
) -> Result<History> {
    cfg.validate()?;
    let n = usize::try_from(train.size()[0]).unwrap_or(0);
    if n == 0 {
        return Err(Error::Config("the training set is empty".into()));
    }
    let mut opt = Adam::with_eps(vs, cfg.learning_rate, cfg.weight_decay, cfg.adam_eps)?;
    let mut history = History {
        term_names: model.term_names(),
        epochs: Vec::with_capacity(cfg.epochs),
    };
    let device = train.device();
    for epoch in 1..=cfg.epochs {
        model.begin_epoch(epoch);
        let start = Instant::now();
        let order: Vec<i64> = shuffled_indices(n, epoch_seed(shuffle_seed, epoch))
            .into_iter()
            .map(|i| i as i64)
            .collect();
        let order = Tensor::from_slice(&order).to_device(device);
        let mut batches = BatchLosses::default();
        for begin in (0..n).step_by(cfg.batch_size) {
            let rows = cfg.batch_size.min(n - begin);
            // One batch's rows at a time: a shuffled copy of the whole matrix each epoch costs
            // as much memory again and, for wide count matrices, fresh pages every epoch.
            let batch = train.index_select(0, &order.narrow(0, begin as i64, rows as i64));
            let losses = model.losses(&batch, true);
            opt.backward_step(&losses.total, cfg.clip_grad_norm);
            batches.push(&losses, rows);
        }
        let (train_loss, train_terms) = batches.reduce(epoch, "train")?;
        let figures = model.epoch_figures();
        let train_seconds = start.elapsed().as_secs_f64();
        let test_eval =
            evaluate(model, test, cfg.eval_batch_size).map_err(|e| with_epoch(e, epoch))?;
        let stats = EpochStats {
            epoch,
            train_loss,
            test_loss: test_eval.as_ref().map(|(loss, _)| *loss),
            train_terms,
            test_terms: test_eval.map(|(_, terms)| terms).unwrap_or_default(),
            seconds: start.elapsed().as_secs_f64(),
            train_seconds,
            figures,
        };
        on_epoch(&stats);
        history.epochs.push(stats);
    }
    Ok(history)
}

/// Mean loss (and terms) of `model` over the rows of `x`, in chunks, without gradients.
/// `None` when `x` has no rows.
pub fn evaluate<M: Model>(model: &M, x: &Tensor, chunk: usize) -> Result<Option<(f64, Vec<f64>)>> {
    let n = usize::try_from(x.size()[0]).unwrap_or(0);
    if n == 0 {
        return Ok(None);
    }
    let _guard = tch::no_grad_guard();
    let mut batches = BatchLosses::default();
    for begin in (0..n).step_by(chunk.max(1)) {
        let rows = chunk.min(n - begin);
        batches.push(
            &model.losses(&x.narrow(0, begin as i64, rows as i64), false),
            rows,
        );
    }
    batches.reduce(0, "test").map(Some)
}

/// Applies `f` to the rows of `x` in chunks without gradients and concatenates the results.
pub fn map_rows(x: &Tensor, chunk: usize, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    let n = x.size()[0];
    let parts: Vec<Tensor> = (0..n)
        .step_by(chunk.max(1))
        .map(|begin| f(&x.narrow(0, begin, (chunk as i64).min(n - begin))))
        .collect();
    Tensor::cat(&parts, 0)
}

/// The losses of an epoch's minibatches, kept on the device until [`BatchLosses::reduce`].
#[derive(Debug, Default)]
struct BatchLosses {
    /// `[total, terms..]` of each batch, detached scalars, batch after batch.
    values: Vec<Tensor>,
    rows: Vec<usize>,
    width: usize,
}

impl BatchLosses {
    fn push(&mut self, losses: &Losses, rows: usize) {
        self.width = 1 + losses.terms.len();
        self.values.extend(
            std::iter::once(&losses.total)
                .chain(&losses.terms)
                .map(|t| t.detach().reshape([1])),
        );
        self.rows.push(rows);
    }

    /// Row-weighted means of total and terms; fails on the first non-finite batch.
    fn reduce(self, epoch: usize, split: &'static str) -> Result<(f64, Vec<f64>)> {
        let all = Tensor::cat(&self.values, 0)
            .to_kind(Kind::Double)
            .to_device(tch::Device::Cpu);
        let values = Vec::<f64>::try_from(&all)?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteLoss {
                epoch,
                batch: i / self.width + 1,
                split,
                value: values[i],
            });
        }
        let mut sums = vec![0.0; self.width];
        for (row, &rows) in values.chunks(self.width).zip(&self.rows) {
            for (s, v) in sums.iter_mut().zip(row) {
                *s += v * rows as f64;
            }
        }
        let n: usize = self.rows.iter().sum();
        let means: Vec<f64> = sums.iter().map(|s| s / n as f64).collect();
        Ok((means[0], means[1..].to_vec()))
    }
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

/// A distinct, reproducible seed per epoch (SplitMix64 of seed and epoch).
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    let mut z = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use tch::{Device, nn::VarStore};

    use super::*;
    use crate::{AeConfig, Autoencoder};

    fn cfg(epochs: usize) -> TrainConfig {
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

    fn data(rows: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        // Rank-2 structure plus noise: an autoencoder with latent 2 can learn it.
        let z = Tensor::randn([rows, 2], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([2, 12], (Kind::Float, Device::Cpu));
        z.matmul(&w) + 0.05 * Tensor::randn([rows, 12], (Kind::Float, Device::Cpu))
    }

    fn train_once(seed: i64) -> History {
        let x = data(200, 1);
        tch::manual_seed(seed);
        let vs = VarStore::new(Device::Cpu);
        let mut ae = Autoencoder::new(&vs.root(), 12, &AeConfig::with_latent(2)).expect("valid");
        let (train, test) = (x.narrow(0, 0, 160), x.narrow(0, 160, 40));
        fit(&mut ae, &vs, &train, &test, &cfg(30), 3, |_| {}).expect("training runs")
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
    fn a_non_finite_loss_stops_training_with_epoch_and_batch() {
        let _rng = crate::torch_rng_lock();
        let x = data(64, 2);
        let _ = x.get(40).get(3).fill_(f64::NAN);
        let vs = VarStore::new(Device::Cpu);
        let mut ae = Autoencoder::new(&vs.root(), 12, &AeConfig::with_latent(2)).expect("valid");
        let empty = x.narrow(0, 0, 0);
        let err = fit(&mut ae, &vs, &x, &empty, &cfg(3), 0, |_| {}).expect_err("NaN input");
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

    #[test]
    fn evaluate_weights_chunks_by_rows() {
        let _rng = crate::torch_rng_lock();
        // One model, two chunkings: the row-weighted mean of MSE does not depend on the chunk.
        let x = data(50, 3);
        let vs = VarStore::new(Device::Cpu);
        let ae = Autoencoder::new(&vs.root(), 12, &AeConfig::with_latent(2)).expect("valid");
        let (a, _) = evaluate(&ae, &x, 7).expect("finite").expect("rows");
        let (b, _) = evaluate(&ae, &x, 50).expect("finite").expect("rows");
        approx::assert_relative_eq!(a, b, max_relative = 1e-5);
    }
}
