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
use scae_models::{History, Likelihood, Split, TrainConfig, Vae, VaeConfig};
use scae_viz::{LinePanel, Series};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor, nn::VarStore};

use super::ae::{to_array, write_history};
use super::{RunArgs, Staging};
use crate::config::read_toml;
use crate::data::Dataset;
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
    pub fn draw(&self, seed: u64) -> Result<(Array2<f32>, String)> {
        match self {
            Self::IndependentPoisson { cells, rates } => Ok((
                scae_sim::independent_poisson(*cells, rates, seed)?,
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
                    sim.counts,
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

impl VaeStudy {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg: Self = read_toml(path)?;
        cfg.validate()
            .with_context(|| format!("{}: invalid config", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            bail!(
                "test_fraction must be in (0, 1), got {}",
                self.test_fraction
            );
        }
        self.model.validate()?;
        self.train.validate()?;
        Ok(())
    }
}

/// Raw counts for a VAE study: `--data` (a `.npy`, a folder with `counts_raw.npy`, or a 10x
/// folder), else the config's simulation, else the default data's `counts_raw.npy`.
pub fn load_counts(args: &RunArgs, simulate: Option<&Simulate>, seed: u64) -> Result<Dataset> {
    if let Some(data) = &args.data {
        return Dataset::load_counts(data, args.labels.as_deref());
    }
    if let Some(sim) = simulate {
        let (x, name) = sim.draw(seed)?;
        return Ok(Dataset::from_counts(x, &name, None));
    }
    let data = crate::data::default_counts(&args.root);
    if !data.exists() {
        bail!(
            "{}: the default raw counts are missing; generate them with `cargo xtask data` (or `scae data`)",
            data.display()
        );
    }
    Dataset::load_counts(&data, args.labels.as_deref())
}

/// The raw counts of the most variable genes, with those genes' log-normalised values.
#[derive(Debug)]
pub struct VariableGenes {
    /// Raw counts of the kept genes (cells x kept genes), with the input's labels.
    pub counts: Dataset,
    /// Column indices of the kept genes in the input, ascending.
    pub genes: Vec<usize>,
    /// Their values scaled to 10,000 per cell and `log1p`-transformed
    /// ([`scae_io::preprocess::preprocess`]).
    pub lognorm: Array2<f32>,
}

/// Keeps the `n` genes whose log-normalised values vary most across cells (every gene when `n`
/// is 0 or at least the number of genes), as the autoencoder questions do for a 10x folder.
pub fn variable_genes(data: &Dataset, n: usize) -> VariableGenes {
    let input = data.x.ncols();
    let n = if n == 0 { input } else { n.min(input) };
    let sparse = sprs::CsMat::csr_from_dense(data.x.view(), 0.0);
    let pre = scae_io::preprocess::preprocess(&sparse, n);
    // `select` along columns gives a column-major array; tensors need rows contiguous.
    let x = data
        .x
        .select(ndarray::Axis(1), &pre.genes)
        .as_standard_layout()
        .into_owned();
    tracing::info!(
        genes = pre.genes.len(),
        of = input,
        "kept the most variable genes"
    );
    let mut source = data.source.clone();
    source.genes = x.ncols();
    source.top_genes = Some(pre.genes.len());
    VariableGenes {
        counts: Dataset {
            x,
            labels: data.labels.clone(),
            source,
        },
        genes: pre.genes,
        lognorm: pre.x,
    }
}

/// The train and test counts on the device.
#[derive(Debug)]
pub struct CountSplit {
    pub split: Split,
    pub train: Tensor,
    pub test: Tensor,
}

impl CountSplit {
    pub fn new(data: &Dataset, test_fraction: f64, seed: u64, device: Device) -> Result<Self> {
        let split = Split::new(data.x.nrows(), test_fraction, seed)?;
        if split.train.is_empty() || split.test.is_empty() {
            bail!(
                "{} cells are too few to hold out {} % of them",
                data.x.nrows(),
                100.0 * test_fraction
            );
        }
        Ok(Self {
            train: Dataset::tensor(&data.rows(&split.train), device)?,
            test: Dataset::tensor(&data.rows(&split.test), device)?,
            split,
        })
    }

    /// The rows of `train` and `test` results put back in the cells' input order.
    pub fn merge(&self, train: &Array2<f32>, test: &Array2<f32>) -> Array2<f32> {
        let mut all = Array2::zeros((
            self.split.train.len() + self.split.test.len(),
            train.ncols(),
        ));
        for (rows, part) in [(&self.split.train, train), (&self.split.test, test)] {
            for (&i, row) in rows.iter().zip(part.rows()) {
                all.row_mut(i).assign(&row);
            }
        }
        all
    }
}

/// A trained VAE with its history.
#[derive(Debug)]
pub struct TrainedVae {
    pub config: VaeConfig,
    pub genes: usize,
    pub vae: Vae,
    pub vs: VarStore,
    pub history: History,
}

/// Trains one VAE; `seed` seeds the weights, the minibatch order and the latent samples.
pub fn train(
    name: &str,
    config: &VaeConfig,
    train_cfg: &TrainConfig,
    seed: u64,
    data: &CountSplit,
) -> Result<TrainedVae> {
    tch::manual_seed(seed as i64);
    let genes = data.train.size()[1] as usize;
    let vs = VarStore::new(data.train.device());
    let mut vae = Vae::new(&vs.root(), genes, config)?;
    let progress = EpochProgress::new(name, train_cfg.epochs);
    let history = scae_models::fit(
        &mut vae,
        &vs,
        &data.train,
        &data.test,
        train_cfg,
        seed,
        |e| progress.epoch(e),
    )
    .with_context(|| format!("training {name}"))?;
    progress.finish();
    Ok(TrainedVae {
        config: config.clone(),
        genes,
        vae,
        vs,
        history,
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
    pub fn summarize(&self, data: &CountSplit, k: usize, seed: u64) -> Result<VaeSummary> {
        let last = self
            .history
            .epochs
            .last()
            .context("the model trained for no epoch")?;
        let term = |terms: &[f64], i: usize| terms.get(i).copied().unwrap_or(f64::NAN);
        let test_log_px = if k > 0 {
            tch::manual_seed(seed as i64 ^ 0x5eed);
            let started = Instant::now();
            let per_cell = self.vae.importance_log_px(&data.test, k)?;
            let mean = per_cell.mean(tch::Kind::Double).double_value(&[]);
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
            test_elbo: term(&last.test_terms, 0),
            test_reconstruction: term(&last.test_terms, 1),
            test_kl: term(&last.test_terms, 2),
            test_log_px,
            importance_samples: k,
            final_train_elbo: term(&last.train_terms, 0),
            seconds_per_epoch: seconds / epochs,
            train_seconds_per_epoch: train_seconds / epochs,
            train_cells: data.split.train.len(),
            test_cells: data.split.test.len(),
            genes: self.genes,
        })
    }

    /// The latent mean of every cell, in input order.
    pub fn latent_means(&self, data: &CountSplit) -> Result<Array2<f32>> {
        let train = to_array(&self.vae.latent_means(&data.train, 4096))?;
        let test = to_array(&self.vae.latent_means(&data.test, 4096))?;
        Ok(data.merge(&train, &test))
    }

    /// Writes `model.json` (config and genes), `weights.safetensors` and `history.csv`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_json(
            &dir.join("model.json"),
            &serde_json::json!({"genes": self.genes, "model": self.config}),
        )?;
        super::ae::save_weights(&self.vs, dir)?;
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
    if runs
        .iter()
        .any(|(_, h)| h.term_names.get(3) == Some(&"kl_y"))
    {
        names[2] = (
            "KL(q(z | x, y) || p(z | y)) per cell, mean over q(y | x)",
            "KL (nats)",
        );
        names.push(("KL(q(y | x) || p(y)) per cell", "KL (nats)"));
    }
    names
        .iter()
        .enumerate()
        .map(|(term, (title, y_label))| {
            let mut series = Vec::new();
            for (color, (name, history)) in runs.iter().enumerate() {
                let epochs: Vec<f64> = history.epochs.iter().map(|e| e.epoch as f64).collect();
                let pick = |f: &dyn Fn(&scae_models::EpochStats) -> Option<f64>| {
                    history.epochs.iter().filter_map(f).collect::<Vec<f64>>()
                };
                let train = pick(&|e| e.train_terms.get(term).copied());
                let test = pick(&|e| e.test_terms.get(term).copied());
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
    let run = &args.run;
    let config_path = run.config_path("vae");
    let mut cfg = VaeStudy::load(&config_path)?;
    if let Some(epochs) = args.epochs {
        cfg.train.epochs = epochs;
    }
    if let Some(likelihood) = args.likelihood {
        cfg.model.likelihood = likelihood;
    }
    cfg.validate()?;
    let data = load_counts(run, cfg.simulate.as_ref(), cfg.seed)?;
    let (device, threads) = run.setup_torch(cfg.device, cfg.threads)?;
    let out = Staging::new(&run.out_dir("vae"))?;
    let split = CountSplit::new(&data, cfg.test_fraction, cfg.seed, device)?;
    let name = cfg.model.likelihood.name();
    let model = train(name, &cfg.model, &cfg.train, cfg.seed, &split)?;
    let summary = model.summarize(&split, cfg.importance_samples, cfg.seed)?;
    model.save(out.path())?;
    scae_io::write_npy(
        &out.path().join("latent.npy"),
        &model.latent_means(&split)?.view(),
    )?;
    write_test_cells(&out.path().join("test_cells.txt"), &split.split)?;
    save_history_figure(
        out.path(),
        "history",
        &format!(
            "VAE ({}), {} cells x {} genes",
            cfg.model.likelihood.label(),
            data.x.nrows(),
            data.x.ncols()
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
        provenance: clock.finish("vae", &run.root, device, threads, cfg.seed, &data.source),
        config: &cfg,
        summary,
        peak_rss_mib: peak,
        history: &model.history,
    };
    write_json(&out.path().join("metrics.json"), &metrics)?;
    let dest = out.commit()?;
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

    #[test]
    fn merge_puts_rows_back_in_input_order() {
        let split = CountSplit {
            split: Split {
                train: vec![0, 2, 3],
                test: vec![1, 4],
            },
            train: Tensor::zeros([3, 1], (tch::Kind::Float, Device::Cpu)),
            test: Tensor::zeros([2, 1], (tch::Kind::Float, Device::Cpu)),
        };
        let train = Array2::from_shape_vec((3, 1), vec![0.0, 2.0, 3.0]).expect("shape");
        let test = Array2::from_shape_vec((2, 1), vec![1.0, 4.0]).expect("shape");
        let all = split.merge(&train, &test);
        assert_eq!(all.column(0).to_vec(), [0.0, 1.0, 2.0, 3.0, 4.0]);
    }
}
