//! Training, saving and loading the autoencoders the questions share.
//!
//! A trained model is a folder: `model.json` (its card: config and the genes it reads),
//! `weights.safetensors`, `history.csv` and `latent.npy`. `scae embed` and
//! `scae evaluate` read the same layout, so any model a question trains can be
//! reused on new data.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ndarray::Array2;
use scae_io::BatchSource;
use scae_models::{AeConfig, Autoencoder, ComputeDevice, History, Net, TrainConfig};

use crate::card::{ModelCard, ModelKind};
use crate::progress::EpochProgress;

/// What an autoencoder is: its input width, config and the genes of its input columns (saved as
/// the model card, [`crate::card::ModelCard`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMeta {
    pub input_dim: usize,
    pub model: AeConfig,
    /// The name of each input column.
    pub genes: Vec<String>,
}

impl ModelMeta {
    /// The autoencoder `model` on the columns `genes`.
    pub fn new(model: AeConfig, genes: &[String]) -> Self {
        Self {
            input_dim: genes.len(),
            model,
            genes: genes.to_vec(),
        }
    }
}

/// A trained (or loaded) autoencoder.
#[derive(Debug)]
pub struct TrainedAe {
    pub meta: ModelMeta,
    pub net: Net<Autoencoder>,
    pub history: History,
}

/// Cells per forward pass when encoding or reconstructing.
const CHUNK: usize = 8192;

/// Trains one autoencoder; `seed` seeds the weights and the minibatch order.
pub fn train(
    name: &str,
    meta: ModelMeta,
    train_cfg: &TrainConfig,
    seed: u64,
    train: &dyn BatchSource,
    test: &dyn BatchSource,
    device: ComputeDevice,
) -> Result<TrainedAe> {
    let mut net = Net::<Autoencoder>::new(meta.input_dim, &meta.model, device, seed)?;
    let progress = EpochProgress::new(name, train_cfg.epochs);
    let history = net
        .fit(train_cfg, seed, train, Some(test), |e| progress.epoch(e))
        .with_context(|| format!("training {name}"))?;
    progress.finish();
    Ok(TrainedAe { meta, net, history })
}

impl TrainedAe {
    /// Latent codes of every cell of `source`.
    pub fn encode(&self, source: &dyn BatchSource) -> Result<Array2<f32>> {
        Ok(self.net.encode(source, CHUNK)?)
    }

    /// Reconstructions of every cell of `source`.
    pub fn reconstruct(&self, source: &dyn BatchSource) -> Result<Array2<f32>> {
        Ok(self.net.reconstruct(source, CHUNK)?)
    }

    /// Writes `model.json`, `weights.safetensors` and `history.csv` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        ModelCard::new(
            ModelKind::Ae(self.meta.model.clone()),
            self.meta.genes.clone(),
        )
        .write(dir)?;
        self.net.save_weights(&dir.join("weights.safetensors"))?;
        write_history(&dir.join("history.csv"), &self.history)
    }

    /// [`TrainedAe::save`], plus `latent.npy`: the latent code of every cell of `all`.
    pub fn save_with_latent(&self, dir: &Path, all: &dyn BatchSource) -> Result<()> {
        self.save(dir)?;
        scae_io::write_npy(&dir.join("latent.npy"), &self.encode(all)?.view())?;
        Ok(())
    }

    /// Reads a model folder written by [`TrainedAe::save`] onto `device`.
    pub fn load(dir: &Path, device: ComputeDevice) -> Result<Self> {
        let card = ModelCard::read(dir)?;
        let ModelKind::Ae(model) = card.model else {
            bail!(
                "{}: a model of kind {}, not an autoencoder",
                dir.join(crate::card::CARD_FILE).display(),
                card.model.name()
            );
        };
        let meta = ModelMeta::new(model, &card.genes);
        let net = Net::<Autoencoder>::load(
            &dir.join("weights.safetensors"),
            meta.input_dim,
            &meta.model,
            device,
        )?;
        let history = read_history(&dir.join("history.csv")).unwrap_or_default();
        Ok(Self { meta, net, history })
    }
}

/// `epoch,train_loss,test_loss,seconds[,train_<term>,test_<term>..]`, full precision.
pub fn write_history(path: &Path, history: &History) -> Result<()> {
    let mut text = String::from("epoch,train_loss,test_loss,seconds");
    for name in &history.term_names {
        text.push_str(&format!(",train_{name},test_{name}"));
    }
    text.push('\n');
    for e in &history.epochs {
        let test = e.test_loss.map(|t| t.to_string()).unwrap_or_default();
        text.push_str(&format!(
            "{},{},{},{:.6}",
            e.epoch, e.train_loss, test, e.seconds
        ));
        for name in &history.term_names {
            let value = |v: Option<f64>| v.map(|t| t.to_string()).unwrap_or_default();
            text.push_str(&format!(
                ",{},{}",
                value(e.train_terms.get(name)),
                value(e.test_terms.get(name))
            ));
        }
        text.push('\n');
    }
    scae_io::write_atomic(path, |w| std::io::Write::write_all(w, text.as_bytes()))?;
    Ok(())
}

/// Reads the four leading columns of a history written by [`write_history`].
pub fn read_history(path: &Path) -> Result<History> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let mut epochs = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let bad = || anyhow::anyhow!("{}: line {}: not a history row", path.display(), i + 1);
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 4 {
            return Err(bad());
        }
        epochs.push(scae_models::EpochStats {
            epoch: f[0].parse().map_err(|_| bad())?,
            train_loss: f[1].parse().map_err(|_| bad())?,
            test_loss: if f[2].is_empty() {
                None
            } else {
                Some(f[2].parse().map_err(|_| bad())?)
            },
            phase: String::new(),
            train_terms: Default::default(),
            test_terms: Default::default(),
            seconds: f[3].parse().map_err(|_| bad())?,
            // The history file keeps whole-epoch times only.
            train_seconds: f64::NAN,
            sync_seconds: 0.0,
            figures: Vec::new(),
        });
    }
    Ok(History {
        term_names: Vec::new(),
        epochs,
    })
}
