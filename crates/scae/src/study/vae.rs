//! What the VAE studies share: their config, raw-count data (a file, a 10x folder or a
//! simulation), training one VAE, its held-out figures, and `scae vae`, which trains one VAE and
//! saves it (the command behind `cargo xtask bench vae` and the full-size benchmark).
//!
//! `scae vae` writes `<out>/`: `metrics.json` (config, provenance, summary, history),
//! `history.csv`, `history.png`/`.svg` (ELBO, log-likelihood and KL per epoch),
//! `latent.npy` (the latent mean of every cell, input order), `test_cells.txt` (0-based indices
//! of the held-out cells), `model.json` and `weights.safetensors`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ndarray::Array2;
use scae_io::{CountMatrix, CountRows};
use scae_models::{ComputeDevice, History, Likelihood, Net, Split, TrainConfig, Vae, VaeConfig};
use scae_viz::{LinePanel, Series};
use serde::{Deserialize, Serialize};

use super::ae::write_history;
use super::{Run, RunArgs};
use crate::config::{StudyConfig, check_run};
use crate::data::CountData;
use crate::progress::EpochProgress;
use crate::provenance::{Provenance, RunClock, write_json};

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
        self.model.validate()?;
        self.train.validate()?;
        Ok(())
    }
}

/// Raw counts for a VAE study: `--data` (a `.npy`, a folder with `counts_raw.npy`, or a 10x
/// folder), else the config's simulation, else the default data's `counts_raw.npy`.
pub fn load_counts(args: &RunArgs, simulate: Option<&Simulate>, seed: u64) -> Result<CountData> {
    if let Some(data) = &args.data {
        return CountData::load(data, args.labels.as_deref());
    }
    if let Some(sim) = simulate {
        let (counts, name) = sim.draw(seed)?;
        return CountData::from_counts(counts, &name, None);
    }
    let data = crate::data::default_counts(&args.root);
    if !data.exists() {
        bail!(
            "{}: the default raw counts are missing; generate them with `cargo xtask data` (or `scae data`)",
            data.display()
        );
    }
    CountData::load(&data, args.labels.as_deref())
}

/// The raw counts of the most variable genes.
#[derive(Debug)]
pub struct VariableGenes {
    /// Raw counts of the kept genes (cells x kept genes), sparse, with the input's labels.
    pub counts: CountData,
    /// Column indices of the kept genes in the input, ascending.
    pub genes: Vec<usize>,
}

/// Keeps the `n` genes whose log-normalised values vary most across cells (every gene when `n`
/// is 0 or at least the number of genes), as the autoencoder questions do for a 10x folder. The
/// counts stay sparse throughout.
pub fn variable_genes(data: &CountData, n: usize) -> VariableGenes {
    let input = data.counts.genes();
    let genes = if n == 0 || n >= input {
        (0..input).collect()
    } else {
        let lognorm = scae_io::preprocess::log_normalize(data.counts.csr());
        scae_io::preprocess::top_variable_genes(&lognorm, n)
    };
    tracing::info!(
        genes = genes.len(),
        of = input,
        "kept the most variable genes"
    );
    let counts = if genes.len() == input {
        data.counts.clone()
    } else {
        data.counts.select_genes(&genes)
    };
    let mut source = data.source.clone();
    source.genes = counts.genes();
    source.top_genes = Some(genes.len());
    VariableGenes {
        counts: CountData {
            counts,
            labels: data.labels.clone(),
            source,
            cells: data.cells.clone(),
        },
        genes,
    }
}

/// The train and test cells of a count matrix.
#[derive(Debug)]
pub struct CountSplit<'a> {
    pub counts: &'a CountMatrix,
    pub split: Split,
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
        Ok(Self { counts, split })
    }

    /// The training cells.
    pub fn train(&self) -> Result<CountRows<'_>> {
        Ok(CountRows::subset(self.counts, &self.split.train)?)
    }

    /// The held-out cells.
    pub fn test(&self) -> Result<CountRows<'_>> {
        Ok(CountRows::subset(self.counts, &self.split.test)?)
    }

    /// Every cell, in input order.
    pub fn all(&self) -> CountRows<'_> {
        CountRows::all(self.counts)
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
    let genes = data.counts.genes();
    let mut net = Net::<Vae>::new(genes, config, device, seed)?;
    let progress = EpochProgress::new(name, train_cfg.epochs);
    let history = net
        .fit(train_cfg, seed, &data.train()?, Some(&data.test()?), |e| {
            progress.epoch(e)
        })
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
    pub train_cells: usize,
    pub test_cells: usize,
    pub genes: usize,
}

impl TrainedVae {
    /// The summary, with the importance-weighted `log p(x)` of the test cells (`k` samples).
    pub fn summarize(&self, data: &CountSplit<'_>, k: usize, seed: u64) -> Result<VaeSummary> {
        let last = self
            .history
            .epochs
            .last()
            .context("the model trained for no epoch")?;
        let term = |terms: &scae_models::Terms, name: &str| terms.get(name).unwrap_or(f64::NAN);
        let test_log_px = if k > 0 {
            let started = Instant::now();
            let mean = self
                .net
                .importance_log_px(&data.test()?, k, seed ^ 0x5eed)?;
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
            train_cells: data.split.train.len(),
            test_cells: data.split.test.len(),
            genes: self.genes,
        })
    }

    /// The latent mean of every cell, in input order.
    pub fn latent_means(&self, data: &CountSplit<'_>) -> Result<Array2<f32>> {
        Ok(self.net.latent_means(&data.all(), self.chunk)?)
    }

    /// Writes `model.json` (config and genes), `weights.safetensors` and `history.csv`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_json(
            &dir.join("model.json"),
            &serde_json::json!({"genes": self.genes, "model": self.config}),
        )?;
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
}

#[derive(Debug, Serialize)]
struct VaeMetrics<'a> {
    provenance: Provenance,
    config: &'a VaeStudy,
    summary: VaeSummary,
    peak_rss_mib: Option<f64>,
    history: &'a History,
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
    cfg.validate()?;
    let data = load_counts(&args.run, cfg.simulate.as_ref(), cfg.seed)?;
    let run = Run::start(&args.run, clock, "vae", cfg.device, cfg.threads)?;
    let split = CountSplit::new(&data.counts, cfg.test_fraction, cfg.seed)?;
    let name = cfg.model.likelihood.name();
    let model = train(name, &cfg.model, &cfg.train, cfg.seed, &split, run.device)?;
    let summary = model.summarize(&split, cfg.importance_samples, cfg.seed)?;
    model.save(run.path())?;
    scae_io::write_npy(
        &run.path().join("latent.npy"),
        &model.latent_means(&split)?.view(),
    )?;
    write_test_cells(&run.path().join("test_cells.txt"), &split.split)?;
    save_history_figure(
        run.path(),
        "history",
        &format!(
            "VAE ({}), {} cells x {} genes",
            cfg.model.likelihood.label(),
            data.counts.cells(),
            data.counts.genes()
        ),
        &[(String::new(), &model.history)],
    )?;
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
        provenance: run.provenance(cfg.seed, &data.source),
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
    fn an_unknown_key_or_likelihood_is_an_error() {
        let text = include_str!("../../../../configs/vae.toml");
        let typo = text.replace("kl_warmup_epochs", "kl_warmup");
        assert!(toml::from_str::<VaeStudy>(&typo).is_err());
        let bad = text.replace("likelihood = \"nb\"", "likelihood = \"gaussian\"");
        let err = toml::from_str::<VaeStudy>(&bad).expect_err("unknown likelihood");
        assert!(err.to_string().contains("gaussian"), "{err}");
    }
}
