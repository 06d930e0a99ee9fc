//! What the VAE studies share: their config, raw-count data (a file, a 10x folder or a
//! simulation), training one VAE, its held-out figures, and `scae vae`, which trains one VAE and
//! saves it (the command behind `cargo xtask bench vae` and the full-size benchmark).
//!
//! `scae vae` writes `<out>/`: `metrics.json` (config, provenance, summary, history),
//! `history.csv`, `history.png`/`.svg` (ELBO, log-likelihood and KL per epoch),
//! `latent.npy` (the latent mean of every cell, input order), `test_cells.txt` (0-based indices
//! of the held-out cells), `model.json` and `weights.safetensors`; with `--h5ad`, an AnnData
//! file of the cells with their latent means (`obsm["X_scae"]`) and, with `--denoised`, the
//! decoded means as a layer. With `--backed` (automatic for an `.h5ad` file whose counts would
//! not fit in the memory budget, see [`memory_budget`]) the counts are read from the file in
//! blocks as training goes ([`scae_io::BackedRows`]) and never held whole.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ndarray::Array2;
use scae_io::{BatchSource, CountMatrix, CountRows, Fields, GeneChoice, OpenOptions, Reading};
use scae_models::{
    ComputeDevice, Covariate, History, Likelihood, Net, Split, TrainConfig, Vae, VaeConfig,
};
use scae_viz::{LinePanel, Series};
use serde::{Deserialize, Serialize};

use super::ae::write_history;
use super::{Run, RunArgs};
use crate::card::{ModelCard, ModelKind};
use crate::config::{StudyConfig, check_run};
use crate::data::CountData;
use crate::progress::EpochProgress;
use crate::provenance::{Provenance, RunClock};

/// Counts simulated in memory instead of read from `--data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Simulate {
    /// `cells` rows of independent Poisson counts, one rate per feature.
    IndependentPoisson { cells: usize, rates: Vec<f64> },
    /// [`scae_sim::sparse_counts`]: a sparse matrix with a chosen fraction of zeros.
    Sparse {
        cells: usize,
        genes: usize,
        zero_fraction: f64,
        high_genes: usize,
        high_rate: [f64; 2],
    },
}

impl Simulate {
    /// Draws the counts with `seed`.
    pub fn draw(&self, seed: u64) -> Result<(CountMatrix, String)> {
        let name = Path::new("simulated counts");
        match self {
            Self::IndependentPoisson { cells, rates } => Ok((
                CountMatrix::from_dense(
                    scae_sim::independent_poisson(*cells, rates, seed)?.view(),
                    name,
                )?,
                format!("simulated: {cells} cells of independent Poisson counts, rates {rates:?}"),
            )),
            Self::Sparse {
                cells,
                genes,
                zero_fraction,
                high_genes,
                high_rate,
            } => {
                let started = Instant::now();
                let sim = scae_sim::sparse_counts(&scae_sim::SparseParams {
                    cells: *cells,
                    genes: *genes,
                    zero_fraction: *zero_fraction,
                    high_genes: *high_genes,
                    high_rate: (high_rate[0], high_rate[1]),
                    seed,
                })?;
                tracing::info!(
                    zero_fraction = format!("{:.4}", sim.zero_fraction),
                    max_rate = format!("{:.0}", sim.max_rate),
                    seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
                    "simulated {cells} x {genes} sparse counts"
                );
                Ok((
                    CountMatrix::new(sim.counts, name)?,
                    format!(
                        "simulated: {cells} x {genes} sparse Poisson counts, {:.2} % zeros, largest rate {:.0}",
                        100.0 * sim.zero_fraction,
                        sim.max_rate
                    ),
                ))
            }
        }
    }
}

/// One VAE on raw counts (configs/vae*.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeStudy {
    /// Seeds the split, the weights, the minibatch order and every latent sample.
    pub seed: u64,
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub device: scae_models::DeviceChoice,
    /// Fraction of cells held out (the scVAE study: 19 %).
    pub test_fraction: f64,
    /// Samples per cell of the importance-weighted `log p(x)` on the test set (0: skip it).
    #[serde(default = "default_importance_samples")]
    pub importance_samples: usize,
    /// Train on the raw counts of this many most variable genes ([`top_genes`], in memory or
    /// backed); 0 (the default) = every gene. `--top-genes` overrides it.
    #[serde(default)]
    pub top_genes: usize,
    /// The `obs` columns of an `.h5ad` input the model conditions on, the batch key first
    /// (scvi-tools' `batch_key` and `categorical_covariate_keys`); `--batch-key` overrides it.
    /// Their categories become `model.covariates`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch_keys: Vec<String>,
    pub model: VaeConfig,
    pub train: TrainConfig,
    /// When present and `--data` is not given, the counts are simulated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulate: Option<Simulate>,
}

fn default_importance_samples() -> usize {
    100
}

impl StudyConfig for VaeStudy {
    fn validate(&self) -> Result<()> {
        check_run(&[self.seed], self.test_fraction)?;
        validate_with_keys(&self.model, &self.batch_keys)?;
        self.train.validate()?;
        Ok(())
    }
}

/// Checks `model` as it will be once the covariates of `batch_keys` are read from the data
/// (one placeholder category each): a config key that needs a batch key is refused before any
/// file is read. `model.covariates` itself is the data's to set.
pub fn validate_with_keys(model: &VaeConfig, batch_keys: &[String]) -> Result<()> {
    if !model.covariates.is_empty() {
        bail!(
            "model.covariates is set from the data: name the obs columns with batch_keys (or \
             --batch-key) instead"
        );
    }
    let mut shaped = model.clone();
    shaped.covariates = batch_keys
        .iter()
        .map(|key| Covariate {
            key: key.clone(),
            categories: vec![String::new()],
        })
        .collect();
    shaped.validate()?;
    Ok(())
}

/// The covariates of `keys`, read from `data` (their categories as the data hold them), for a
/// model to be trained.
///
/// # Errors
/// When a column has cells without a value (see [`scae_io::CountData::covariate`]).
pub fn covariates_of(data: &mut CountData, keys: &[String]) -> Result<Vec<Covariate>> {
    keys.iter()
        .map(|key| {
            Ok(Covariate {
                key: key.clone(),
                categories: data.covariate(key, None)?,
            })
        })
        .collect()
}

/// Recodes `data`'s covariate fields into the categories of a saved model's `covariates`.
///
/// # Errors
/// One line when the data hold a category the model does not know, or cells without a value.
pub fn code_as_model(data: &mut CountData, covariates: &[Covariate]) -> Result<()> {
    for c in covariates {
        data.covariate(&c.key, Some(&c.categories))?;
    }
    Ok(())
}

/// Raw counts for a VAE study: `--data` (any format [`scae_io::open`] reads), else the config's
/// simulation, else the default data's `counts_raw.npy`; the genes `genes` kept, read as
/// `reading` says, with the `obs` columns `obs_keys` (covariates) as per-cell fields.
pub fn load_counts(
    args: &RunArgs,
    simulate: Option<&Simulate>,
    seed: u64,
    genes: GeneChoice,
    reading: Reading,
    obs_keys: &[String],
) -> Result<CountData> {
    let mut h5ad = args.h5ad_options();
    h5ad.obs_keys = obs_keys.to_vec();
    let options = OpenOptions {
        h5ad,
        labels: args.labels.clone(),
        reading,
        genes,
        ..OpenOptions::default()
    };
    if let Some(data) = &args.data {
        return Ok(scae_io::open(data, &options)?);
    }
    if reading == Reading::Backed {
        bail!("--backed reads an .h5ad file given with --data");
    }
    if let Some(key) = obs_keys.first() {
        bail!("--batch-key {key}: batch keys are obs columns of an .h5ad file given with --data");
    }
    if let Some(sim) = simulate {
        let (counts, name) = sim.draw(seed)?;
        return Ok(CountData::from_counts(counts, &name, None)?.keep_genes(&options.genes)?);
    }
    let data = crate::data::default_counts(&args.root);
    if !data.exists() {
        bail!(
            "{}: the default raw counts are missing; pass your own with --data, or make the default \
             (simulated) data set with `scae data`",
            data.display()
        );
    }
    Ok(scae_io::open(&data, &options)?)
}

/// The genes a config's `top_genes` keeps: every one for 0, else the `n` most variable.
pub fn top_genes(n: usize) -> GeneChoice {
    if n == 0 {
        GeneChoice::All
    } else {
        GeneChoice::Top(n)
    }
}

/// How `--backed` asks for the counts to be read: backed, or in memory while they fit
/// [`memory_budget`].
pub fn reading(backed: bool) -> Reading {
    if backed {
        Reading::Backed
    } else {
        Reading::Auto {
            budget: memory_budget(),
        }
    }
}

/// The train and test cells of a count matrix, with the per-cell fields of its cells.
#[derive(Debug)]
pub struct CountSplit<'a> {
    pub counts: &'a CountMatrix,
    pub split: Split,
    /// The fields of every cell of `counts`, carried by the batches of any split.
    pub fields: Fields,
}

impl<'a> CountSplit<'a> {
    pub fn new(counts: &'a CountMatrix, test_fraction: f64, seed: u64) -> Result<Self> {
        let split = Split::new(counts.cells(), test_fraction, seed)?;
        if split.train.is_empty() || split.test.is_empty() {
            bail!(
                "{} cells are too few to hold out {} % of them",
                counts.cells(),
                100.0 * test_fraction
            );
        }
        Ok(Self {
            counts,
            split,
            fields: Fields::default(),
        })
    }

    /// The split of `data`'s cells, whose batches carry its fields ([`CountData::fields`]).
    pub fn of(data: &'a CountData, test_fraction: f64, seed: u64) -> Result<Self> {
        Ok(Self {
            fields: data.fields.clone(),
            ..Self::new(data.matrix()?, test_fraction, seed)?
        })
    }

    /// The training cells.
    pub fn train(&self) -> Result<CountRows<'_>> {
        self.rows(&self.split.train)
    }

    /// The held-out cells.
    pub fn test(&self) -> Result<CountRows<'_>> {
        self.rows(&self.split.test)
    }

    fn rows<'b>(&'b self, rows: &'b [usize]) -> Result<CountRows<'b>> {
        let source = CountRows::subset(self.counts, rows)?;
        Ok(source.with_fields(&self.fields.subset(rows))?)
    }

    /// Every cell, in input order.
    pub fn all(&self) -> Result<CountRows<'_>> {
        Ok(CountRows::all(self.counts).with_fields(&self.fields)?)
    }
}

/// A trained VAE with its history.
#[derive(Debug)]
pub struct TrainedVae {
    pub config: VaeConfig,
    pub genes: usize,
    pub net: Net<Vae>,
    pub history: History,
    /// Cells per forward pass when evaluating.
    pub chunk: usize,
}

/// Trains one VAE; `seed` seeds the weights, the minibatch order and the latent samples.
pub fn train(
    name: &str,
    config: &VaeConfig,
    train_cfg: &TrainConfig,
    seed: u64,
    data: &CountSplit<'_>,
    device: ComputeDevice,
) -> Result<TrainedVae> {
    train_on(
        name,
        config,
        train_cfg,
        seed,
        &data.train()?,
        &data.test()?,
        device,
    )
}

/// [`train`] on any pair of sources (in memory or read from a file).
pub fn train_on(
    name: &str,
    config: &VaeConfig,
    train_cfg: &TrainConfig,
    seed: u64,
    train: &dyn BatchSource,
    test: &dyn BatchSource,
    device: ComputeDevice,
) -> Result<TrainedVae> {
    let genes = train.genes();
    let mut net = Net::<Vae>::new(genes, config, device, seed)?;
    let progress = EpochProgress::new(name, train_cfg.epochs);
    let history = net
        .fit(train_cfg, seed, train, Some(test), |e| progress.epoch(e))
        .with_context(|| format!("training {name}"))?;
    progress.finish();
    Ok(TrainedVae {
        config: config.clone(),
        genes,
        net,
        history,
        chunk: train_cfg.eval_chunk(genes),
    })
}

fn one() -> usize {
    1
}

/// Held-out figures of a trained VAE, per cell (means over the test cells).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaeSummary {
    pub likelihood: Likelihood,
    pub hidden: Vec<usize>,
    pub latent: usize,
    pub epochs: usize,
    /// ELBO (full KL weight) of the last epoch's model on the test cells.
    pub test_elbo: f64,
    pub test_reconstruction: f64,
    pub test_kl: f64,
    /// Importance-weighted `log p(x)`; `None` when `importance_samples` is 0.
    pub test_log_px: Option<f64>,
    pub importance_samples: usize,
    pub final_train_elbo: f64,
    /// Wall time per epoch: training steps and the test cells' ELBO.
    pub seconds_per_epoch: f64,
    /// Wall time per epoch of the training steps alone (what scvi-tools times without a
    /// validation set).
    pub train_seconds_per_epoch: f64,
    /// The ranks of the data-parallel job that trained the model (1: one process).
    #[serde(default = "one")]
    pub ranks: usize,
    /// Of `train_seconds_per_epoch`, the time spent summing gradients over the ranks.
    #[serde(default)]
    pub sync_seconds_per_epoch: f64,
    pub train_cells: usize,
    pub test_cells: usize,
    pub genes: usize,
}

impl TrainedVae {
    /// The summary, with the importance-weighted `log p(x)` of the test cells (`k` samples).
    pub fn summarize(&self, data: &CountSplit<'_>, k: usize, seed: u64) -> Result<VaeSummary> {
        self.summarize_on(&data.test()?, data.split.train.len(), k, seed)
    }

    /// [`TrainedVae::summarize`] on the held-out cells of `test`, after `train_cells` trained.
    pub fn summarize_on(
        &self,
        test: &dyn BatchSource,
        train_cells: usize,
        k: usize,
        seed: u64,
    ) -> Result<VaeSummary> {
        let last = self
            .history
            .epochs
            .last()
            .context("the model trained for no epoch")?;
        let term = |terms: &scae_models::Terms, name: &str| terms.get(name).unwrap_or(f64::NAN);
        let test_log_px = if k > 0 {
            let started = Instant::now();
            let mean = self.net.importance_log_px(test, k, seed ^ 0x5eed)?;
            if !mean.is_finite() {
                bail!("the importance-weighted log p(x) of the test cells is {mean}");
            }
            tracing::info!(
                log_px = format!("{mean:.3}"),
                seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
                "importance-weighted log p(x), {k} samples per test cell"
            );
            Some(mean)
        } else {
            None
        };
        let epochs = self.history.epochs.len().max(1) as f64;
        let seconds: f64 = self.history.epochs.iter().map(|e| e.seconds).sum();
        let train_seconds: f64 = self.history.epochs.iter().map(|e| e.train_seconds).sum();
        Ok(VaeSummary {
            likelihood: self.config.likelihood,
            hidden: self.config.hidden.clone(),
            latent: self.config.latent,
            epochs: self.history.epochs.len(),
            test_elbo: term(&last.test_terms, "elbo"),
            test_reconstruction: term(&last.test_terms, "log_likelihood"),
            test_kl: term(&last.test_terms, "kl"),
            test_log_px,
            importance_samples: k,
            final_train_elbo: term(&last.train_terms, "elbo"),
            seconds_per_epoch: seconds / epochs,
            train_seconds_per_epoch: train_seconds / epochs,
            ranks: scae_models::parallel::group().size(),
            sync_seconds_per_epoch: self
                .history
                .epochs
                .iter()
                .map(|e| e.sync_seconds)
                .sum::<f64>()
                / epochs,
            train_cells,
            test_cells: test.cells(),
            genes: self.genes,
        })
    }

    /// The latent mean of every cell, in input order.
    pub fn latent_means(&self, data: &CountSplit<'_>) -> Result<Array2<f32>> {
        Ok(self.net.latent_means(&data.all()?, self.chunk)?)
    }

    /// Writes `model.json` (the model card: config and `genes`, the name of each input column),
    /// `weights.safetensors` and `history.csv`.
    pub fn save(&self, dir: &Path, genes: &[String]) -> Result<()> {
        if genes.len() != self.genes {
            bail!(
                "{}: {} gene names for a VAE of {} genes",
                dir.display(),
                genes.len(),
                self.genes
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // The card records the covariates' categories from the config.
        ModelCard::new(ModelKind::Vae(self.config.clone()), genes.to_vec()).write(dir)?;
        self.net.save_weights(&dir.join("weights.safetensors"))?;
        write_history(&dir.join("history.csv"), &self.history)
    }
}

/// ELBO, log-likelihood and KL per epoch (train solid, test dashed), one panel each; one colour
/// per named history. A GMVAE's history (terms `elbo, log_likelihood, kl_z, kl_y`) gets a panel
/// for each of its two KL terms.
pub fn history_panels(runs: &[(String, &History)]) -> Vec<LinePanel> {
    let mut names = vec![
        ("ELBO per cell", "ELBO (nats)"),
        (
            "reconstruction log-likelihood per cell",
            "log p(x | z) (nats)",
        ),
        ("KL divergence per cell", "KL (nats)"),
    ];
    // The GMVAE's terms: the KL of z given the component, then the KL of the component.
    if runs.iter().any(|(_, h)| h.term_names.contains(&"kl_y")) {
        names[2] = (
            "KL(q(z | x, y) || p(z | y)) per cell, mean over q(y | x)",
            "KL (nats)",
        );
        names.push(("KL(q(y | x) || p(y)) per cell", "KL (nats)"));
    }
    let terms = ["elbo", "log_likelihood", "kl", "kl_y"];
    let gmvae = names.len() == 4;
    names
        .iter()
        .enumerate()
        .map(|(i, (title, y_label))| {
            // The GMVAE's third panel is its KL of z.
            let term = if gmvae && i == 2 { "kl_z" } else { terms[i] };
            let mut series = Vec::new();
            for (color, (name, history)) in runs.iter().enumerate() {
                let epochs: Vec<f64> = history.epochs.iter().map(|e| e.epoch as f64).collect();
                let pick = |f: &dyn Fn(&scae_models::EpochStats) -> Option<f64>| {
                    history.epochs.iter().filter_map(f).collect::<Vec<f64>>()
                };
                let train = pick(&|e| e.train_terms.get(term));
                let test = pick(&|e| e.test_terms.get(term));
                let sep = if name.is_empty() { "" } else { ", " };
                series.push(Series {
                    label: format!("{name}{sep}train"),
                    x: epochs.clone(),
                    y: train,
                    color,
                    dashed: false,
                });
                if test.len() == epochs.len() {
                    series.push(Series {
                        label: format!("{name}{sep}test"),
                        x: epochs,
                        y: test,
                        color,
                        dashed: true,
                    });
                }
            }
            LinePanel {
                title: (*title).into(),
                x_label: "epoch".into(),
                y_label: (*y_label).into(),
                log_y: false,
                series,
            }
        })
        .collect()
}

/// Draws [`history_panels`] as `<stem>.png` and `<stem>.svg` under `dir`.
pub fn save_history_figure(
    dir: &Path,
    stem: &str,
    title: &str,
    runs: &[(String, &History)],
) -> Result<()> {
    let panels = history_panels(runs);
    for ext in ["png", "svg"] {
        scae_viz::line_figure(&dir.join(format!("{stem}.{ext}")), title, &panels)?;
    }
    Ok(())
}

/// Writes the held-out cells' 0-based indices, one per line.
pub fn write_test_cells(path: &Path, split: &Split) -> Result<()> {
    let text: String = split.test.iter().map(|i| format!("{i}\n")).collect();
    scae_io::write_atomic(path, |w| std::io::Write::write_all(w, text.as_bytes()))?;
    Ok(())
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), when the system reports it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Options of `scae vae`.
#[derive(Debug, Clone, clap::Args)]
pub struct VaeArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Epochs (default: the config's).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Likelihood: poisson, nb, zip or zinb (default: the config's).
    #[arg(long)]
    pub likelihood: Option<Likelihood>,
    #[command(flatten)]
    pub output: H5adArgs,
    /// With --h5ad: also the decoded means (denoised expression) as layers["scae_denoised"]
    /// (dense: cells x genes x 4 bytes).
    #[arg(long, requires = "h5ad")]
    pub denoised: bool,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// With --denoised: decode every cell as if it came from this batch (a category of the
    /// first --batch-key), as scvi-tools' transform_batch does.
    #[arg(long, value_name = "BATCH", requires = "denoised")]
    pub transform_batch: Option<String>,
    /// Read the counts of an .h5ad file from the file in blocks as training goes, never whole
    /// (automatic when they would not fit in the memory budget: SCAE_MEMORY_BUDGET_MIB, default
    /// half of the available memory).
    #[arg(long)]
    pub backed: bool,
}

/// Batch covariates, as scvi-tools' `setup_anndata(batch_key=...)`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BatchArgs {
    /// The obs column(s) of the .h5ad input whose categories the model conditions on (the
    /// sample, donor, technology or condition of each cell), comma-separated, the batch key
    /// first: one-hot codes enter every hidden layer of the decoder (and of the encoder with
    /// model.encode_covariates). Overrides the config's batch_keys.
    #[arg(long = "batch-key", value_name = "KEY", value_delimiter = ',')]
    pub batch_keys: Vec<String>,
}

/// Writing results back as AnnData.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct H5adArgs {
    /// Also write the cells with their results as an AnnData file: at this path, or `adata.h5ad`
    /// in the results folder when no path is given. It holds the input's obs and var names, the
    /// counts as X (not when --backed), the latent means in obsm["X_scae"] and, for a GMVAE,
    /// q(y | x) in obsm["scae_q_y"] and the clusters in obs["scae_cluster"].
    #[arg(long, value_name = "OUT")]
    #[allow(clippy::option_option)]
    pub h5ad: Option<Option<PathBuf>>,
}

impl H5adArgs {
    /// Where to write the AnnData file while `results` is staged: `adata.h5ad` in it when no
    /// path was given, else the path (moved into the staging folder when it lies inside the
    /// results folder), checked to be writable now, before any training.
    pub fn place(&self, results: &super::Staging) -> Result<Option<PathBuf>> {
        match &self.h5ad {
            None => Ok(None),
            Some(None) => Ok(Some(results.path().join("adata.h5ad"))),
            Some(Some(path)) => results.place(path).map(Some),
        }
    }
}

#[derive(Debug, Serialize)]
struct VaeMetrics<'a> {
    provenance: Provenance,
    config: &'a VaeStudy,
    summary: VaeSummary,
    peak_rss_mib: Option<f64>,
    history: &'a History,
}

/// The memory `scae vae` may use for counts held whole, in bytes: `SCAE_MEMORY_BUDGET_MIB`, else
/// half of the memory the system reports available. An `.h5ad` file whose counts would need
/// more (about 24 bytes per stored value while reading, 12 once held) is read backed.
pub fn memory_budget() -> u64 {
    if let Some(mib) = std::env::var("SCAE_MEMORY_BUDGET_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return mib << 20;
    }
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
    available.map_or(u64::MAX, |kib| kib * 1024 / 2)
}

/// `scae vae`: train one VAE on raw counts and save it with its held-out figures.
pub fn run(args: &VaeArgs) -> Result<()> {
    let clock = RunClock::start();
    let config_path = args.run.config_path("vae");
    let mut cfg = VaeStudy::load(&config_path)?;
    if let Some(epochs) = args.epochs {
        cfg.train.epochs = epochs;
    }
    if let Some(likelihood) = args.likelihood {
        cfg.model.likelihood = likelihood;
    }
    if let Some(n) = args.run.top_genes {
        cfg.top_genes = n;
    }
    if !args.batch.batch_keys.is_empty() {
        cfg.batch_keys.clone_from(&args.batch.batch_keys);
    }
    cfg.validate()?;
    if args.transform_batch.is_some() && cfg.batch_keys.is_empty() {
        bail!("--transform-batch decodes as a category of the batch key: give --batch-key");
    }
    // The input is opened here, once: the readers and the `.h5ad` writer share the handle.
    let mut data = load_counts(
        &args.run,
        cfg.simulate.as_ref(),
        cfg.seed,
        top_genes(cfg.top_genes),
        reading(args.backed),
        &cfg.batch_keys,
    )?;
    cfg.model.covariates = covariates_of(&mut data, &cfg.batch_keys)?;
    let decode_as = match (&args.transform_batch, cfg.model.covariates.first()) {
        (Some(name), Some(batch)) => Some(
            batch
                .categories
                .iter()
                .position(|c| c == name)
                .with_context(|| {
                    format!(
                        "--transform-batch {name}: {} has no such batch (it has {})",
                        batch.key,
                        batch.categories.join(", ")
                    )
                })?,
        ),
        _ => None,
    };
    let run = Run::start(&args.run, clock, "vae", cfg.device, cfg.threads)?;
    let h5ad_path = args.output.place(run.staging())?;
    let split = Split::new(data.n_cells(), cfg.test_fraction, cfg.seed)?;
    if split.train.is_empty() || split.test.is_empty() {
        bail!(
            "{} cells are too few to hold out {} % of them",
            data.n_cells(),
            100.0 * cfg.test_fraction
        );
    }
    let name = cfg.model.likelihood.name();
    let (train_cells, test_cells) = (
        data.rows(Some(&split.train))?,
        data.rows(Some(&split.test))?,
    );
    let model = train_on(
        name,
        &cfg.model,
        &cfg.train,
        cfg.seed,
        &*train_cells,
        &*test_cells,
        run.device,
    )?;
    if !crate::writes_results() {
        // The other ranks of a data-parallel job trained with rank 0, which writes the results.
        return Ok(());
    }
    let summary = model.summarize_on(
        &*test_cells,
        split.train.len(),
        cfg.importance_samples,
        cfg.seed,
    )?;
    drop((train_cells, test_cells));
    model.save(run.path(), &data.var_names)?;
    let all = data.rows(None)?;
    let latent = model.net.latent_means(&*all, model.chunk)?;
    scae_io::write_npy(&run.path().join("latent.npy"), &latent.view())?;
    write_test_cells(&run.path().join("test_cells.txt"), &split)?;
    save_history_figure(
        run.path(),
        "history",
        &format!(
            "VAE ({}), {} cells x {} genes",
            cfg.model.likelihood.label(),
            data.n_cells(),
            data.n_genes()
        ),
        &[(String::new(), &model.history)],
    )?;
    let provenance = run.provenance(cfg.seed, &data.source);
    if let Some(path) = h5ad_path {
        let denoised = args
            .denoised
            .then(|| {
                model
                    .net
                    .decoded_means(&*all, model.chunk, 0, cfg.seed, decode_as)
            })
            .transpose()?;
        let obs_names = data.obs_names()?;
        let out = scae_io::AnnOutput {
            obs_names: &obs_names,
            var_names: &data.var_names,
            x: data.counts.memory().map(CountMatrix::csr),
            obsm: vec![("X_scae", latent.view())],
            layers: denoised
                .iter()
                .map(|d| ("scae_denoised", d.view()))
                .collect(),
            uns: vec![(
                "scae",
                serde_json::to_string(
                    &serde_json::json!({"config": &cfg, "provenance": &provenance}),
                )?,
            )],
            source: data.ann_source(),
            ..Default::default()
        };
        scae_io::write_h5ad(&path, &out)?;
        tracing::info!("wrote {}", path.display());
    }
    let peak = peak_rss_mib();
    eprintln!(
        "{}: {:.3} s per epoch ({:.3} s of training steps), test ELBO {:.3}, log p(x) {}, peak memory {}",
        name,
        summary.seconds_per_epoch,
        summary.train_seconds_per_epoch,
        summary.test_elbo,
        summary
            .test_log_px
            .map_or_else(|| "-".into(), |v| format!("{v:.3}")),
        peak.map_or_else(|| "-".into(), |m| format!("{m:.0} MiB")),
    );
    let metrics = VaeMetrics {
        provenance,
        config: &cfg,
        summary,
        peak_rss_mib: peak,
        history: &model.history,
    };
    let dest = run.finish(&metrics)?;
    eprintln!("VAE results written to {}", dest.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_vae_configs_parse_and_validate() {
        for (name, text) in [
            ("vae", include_str!("../../../../configs/vae.toml")),
            (
                "bench-vae",
                include_str!("../../../../configs/bench-vae.toml"),
            ),
            (
                "bench-fullsize",
                include_str!("../../../../configs/bench-fullsize.toml"),
            ),
            (
                "bench-scale",
                include_str!("../../../../configs/bench-scale.toml"),
            ),
            (
                "vae-synth",
                include_str!("../../../../configs/vae-synth.toml"),
            ),
        ] {
            let cfg: VaeStudy = toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let synth: VaeStudy =
            toml::from_str(include_str!("../../../../configs/vae-synth.toml")).expect("parses");
        assert_eq!(synth.model.hidden, [7]);
        assert_eq!((synth.model.latent, synth.train.epochs), (3, 150));
        assert_eq!(synth.model.likelihood, Likelihood::Poisson);
        let Some(Simulate::IndependentPoisson { cells, rates }) = synth.simulate else {
            panic!("vae-synth simulates independent Poisson counts");
        };
        assert_eq!(cells, 2000);
        assert_eq!(rates, (1..=10).map(f64::from).collect::<Vec<_>>());
        let full: VaeStudy =
            toml::from_str(include_str!("../../../../configs/bench-fullsize.toml")).expect("ok");
        assert!(matches!(
            full.simulate,
            Some(Simulate::Sparse {
                cells: 20_000,
                genes: 27_998,
                ..
            })
        ));
    }

    #[test]
    fn batches_in_memory_and_backed_carry_the_same_labels_and_obs_columns() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../io/tests/fixtures/annotated.h5ad");
        let options = scae_io::H5adOptions {
            labels_key: Some("cell_type".into()),
            obs_keys: vec!["flag".into(), "maybe".into()],
            ..Default::default()
        };
        let open = |reading| {
            let options = OpenOptions {
                h5ad: options.clone(),
                reading,
                ..OpenOptions::default()
            };
            scae_io::open(&data, &options).expect("reads")
        };
        let loaded = open(Reading::Memory);
        let obs = loaded.obs.clone();
        let names = |key: &str, codes: &[i64]| -> Vec<String> {
            let column = obs
                .iter()
                .find(|(k, _)| k == key)
                .expect("column")
                .1
                .categories();
            (codes.iter())
                .map(|&c| usize::try_from(c).map_or("-".into(), |c| column.names[c].clone()))
                .collect()
        };
        let backed = open(Reading::Backed);
        assert!(matches!(backed.counts, scae_io::Counts::Backed(_)));
        // Cell 3 has no count and is dropped: positions 0, 3, 6, 7, 38 are file rows 0, 4, 7, 8, 39.
        let positions = [0, 3, 6, 7, 38];
        let batches = [backed, loaded].map(|input| {
            let rows = input.rows(Some(&positions)).expect("rows");
            assert_eq!(rows.fields(), ["flag", scae_io::keys::LABELS, "maybe"]);
            rows.batch(&[4, 0, 1, 2, 3]).expect("batch")
        });
        assert_eq!(batches[0], batches[1]);
        // make_annotated.py: `maybe` is the row number, missing on every fifth row; `flag` is
        // true on every third; `cell_type` is missing on row 7.
        let fields = &batches[0].fields;
        let maybe = names("maybe", fields.get("maybe").expect("maybe"));
        assert_eq!(maybe, ["39", "-", "4", "7", "8"]);
        let flag = names("flag", fields.get("flag").expect("flag"));
        assert_eq!(flag, ["True", "True", "False", "False", "False"]);
        let labels = fields.get(scae_io::keys::LABELS).expect("labels");
        assert_eq!(labels[3], scae_io::MISSING);
        assert_eq!(labels.iter().filter(|&&c| c >= 0).count(), 4);
    }

    #[test]
    fn an_unknown_key_or_likelihood_is_an_error() {
        let text = include_str!("../../../../configs/vae.toml");
        let typo = text.replace("kl_warmup_epochs", "kl_warmup");
        assert!(toml::from_str::<VaeStudy>(&typo).is_err());
        let bad = text.replace("likelihood = \"nb\"", "likelihood = \"gaussian\"");
        let err = toml::from_str::<VaeStudy>(&bad).expect_err("unknown likelihood");
        assert!(err.to_string().contains("gaussian"), "{err}");
    }
}
