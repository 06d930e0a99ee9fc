//! The GMVAE on real labelled counts: do its mixture components find the cell types?
//!
//! For each seed, on one train/test split of the cells, four clusterings of every cell are
//! scored against the labels (ARI, NMI, accuracy after Hungarian matching, and the silhouette by
//! label of the representation they were found in):
//!
//! * (a) the GMVAE's own assignment, the argmax of `q(y | x)`;
//! * (b) k-means on the GMVAE's latent means `E_q(y|x) E_q(z|x,y) z`;
//! * (c) k-means on the latent means of an NB VAE trained on the same cells and genes;
//! * (d) k-means on 50 principal components of the log-normalised counts of the most variable
//!   genes: the scanpy-style baseline, computed here.
//!
//! The models see the raw counts of the `top_genes` genes whose log-normalised values vary most
//! ([`scae_io::preprocess`]); the PCA sees those genes' log-normalised values. k-means always
//! has k = number of labels; the GMVAE has as many components unless `components` says
//! otherwise. Every seed reseeds the split, the weights, the minibatch order, the latent samples
//! and k-means.
//!
//! Writes `results/gmvae-real/`: `scores.csv` (one row per seed and method), `seed_<s>/gmvae/`
//! (the model, `q_y.npy` with each cell's `q(y | x)`, `clusters.csv` with its argmax),
//! `history.png`/`.svg`, the first seed's latent t-SNE coloured by label and by assigned cluster
//! (`tsne_by_label.png`, `tsne_by_cluster.png`, coordinates in `tsne.npy`), its confusion matrix
//! (`confusion.png`, `confusion.csv`), `metrics.json` (config, provenance, every score, mean and
//! sd) and `report.md`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ndarray::{Array2, ArrayView2};
use scae_eval::TsneParams;
use scae_io::Labels;
use scae_models::{
    ComponentInit, ComputeDevice, DeviceChoice, Gmvae, GmvaeConfig, GmvaeStart, History,
    MixturePosterior, Net, RecipeCells, TrainConfig, TrainedGmvae, VaeConfig,
};
use serde::{Deserialize, Serialize};

use super::embed::{Colouring, ScoreConfig, Scores};
use super::vae::{CountSplit, TrainedVae, load_counts, save_history_figure};
use super::{Run, RunArgs};
use crate::config::{StudyConfig, check_run};
use crate::data::CountData;
use crate::progress::EpochProgress;
use crate::provenance::{Provenance, RunClock};

/// The acceptance bound of the GMVAE's mean ARI on worm_neuron.
pub const ARI_TARGET: f64 = 0.57;

/// A model and how it trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trained<M> {
    pub model: M,
    pub train: TrainConfig,
}

/// How the GMVAE's components are started off before training on the ELBO (VaDE's recipe,
/// adapted to a GMVAE whose `q(y | x)` is a network of its own).
/// K from the data: Leiden on a k-nearest-neighbour graph, scanpy's `sc.pp.neighbors` then
/// `sc.tl.leiden`. It clusters PCA (f) and the NB VAE latent (g), and starts a second GMVAE (e)
/// with as many components as it finds in one of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeidenConfig {
    /// Neighbours of each cell, itself included (scanpy's `n_neighbors`).
    pub neighbours: usize,
    /// RBConfiguration resolution (scanpy's `resolution`).
    pub resolution: f64,
    /// The clusters (e) starts from: of the PCA graph (f) or of the NB VAE latent's (g).
    pub start: LeidenStart,
}

/// Which Leiden clustering the GMVAE with K found starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeidenStart {
    Pca,
    Vae,
}

impl LeidenConfig {
    /// The clusters of the rows of `x`.
    fn cluster(&self, x: ArrayView2<'_, f32>, seed: u64) -> Result<Vec<usize>> {
        let params = scae_eval::LeidenParams {
            resolution: self.resolution,
            seed,
            ..scae_eval::LeidenParams::default()
        };
        Ok(scae_eval::leiden_knn(x, self.neighbours, &params)?.membership)
    }
}

/// `configs/gmvae-real.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmvaeRealStudy {
    /// One run of every method per seed; the table gives mean and sd over them.
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub device: DeviceChoice,
    /// Cells held out of training (their test ELBO is reported; every cell is clustered).
    pub test_fraction: f64,
    /// The GMVAE's K; 0 = the number of labels.
    #[serde(default)]
    pub components: usize,
    /// The models train on the raw counts of this many most variable genes, which the PCA
    /// baseline sees log-normalised; 0 = every gene.
    pub top_genes: usize,
    /// Principal components of baseline (d).
    pub pca_components: usize,
    /// `model.components` is replaced by `components` (or the number of labels).
    pub gmvae: Trained<GmvaeConfig>,
    /// Starts the components at k-means clusters of a pretrained latent space; without it the
    /// GMVAE trains on the ELBO from random weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmvae_init: Option<ComponentInit>,
    /// With K not given: Leiden baselines (f), (g) and the GMVAE (e) started from (g).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leiden: Option<LeidenConfig>,
    /// Baseline (c): `model.likelihood` should be `nb`.
    pub vae: Trained<VaeConfig>,
    #[serde(default)]
    pub tsne: TsneParams,
    #[serde(default)]
    pub scores: ScoreConfig,
}

impl StudyConfig for GmvaeRealStudy {
    fn validate(&self) -> Result<()> {
        check_run(&self.seeds, self.test_fraction)?;
        if self.components == 1 {
            bail!("components must be 0 (the number of labels) or at least 2");
        }
        if self.pca_components == 0 {
            bail!("pca_components must be at least 1");
        }
        // Checked with a placeholder K when K comes from the labels.
        GmvaeConfig {
            components: self.components.max(2),
            ..self.gmvae.model.clone()
        }
        .validate()?;
        self.gmvae.train.validate()?;
        if let Some(init) = &self.gmvae_init
            && init.from_vae
        {
            if init.pretrain_epochs > 0 {
                bail!(
                    "gmvae_init.pretrain_epochs must be 0 with from_vae: the VAE is the pretraining"
                );
            }
            if self.gmvae.model.posterior != MixturePosterior::Shared {
                bail!("gmvae_init.from_vae needs gmvae.model.posterior = \"shared\"");
            }
            let (g, v) = (&self.gmvae.model.vae, &self.vae.model);
            if (
                &g.hidden,
                g.latent,
                g.likelihood,
                g.dispersion,
                g.library,
                g.batch_norm,
            ) != (
                &v.hidden,
                v.latent,
                v.likelihood,
                v.dispersion,
                v.library,
                v.batch_norm,
            ) {
                bail!(
                    "gmvae_init.from_vae needs gmvae.model.vae and vae.model of one shape (hidden, \
                     latent, likelihood, dispersion, library, batch_norm)"
                );
            }
        }
        if let Some(leiden) = &self.leiden
            && (leiden.neighbours < 2
                || !(leiden.resolution.is_finite() && leiden.resolution > 0.0))
        {
            bail!(
                "leiden.neighbours must be at least 2 and leiden.resolution above 0, got {} and {}",
                leiden.neighbours,
                leiden.resolution
            );
        }
        self.vae.model.validate()?;
        self.vae.train.validate()?;
        self.tsne.validate()?;
        Ok(())
    }
}

/// The clusterings compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// (a) argmax of the GMVAE's `q(y | x)`, K given.
    GmvaeAssignment,
    /// The clusters (a) started from.
    GmvaeStart,
    /// (b) k-means on the GMVAE's latent means.
    GmvaeLatentKmeans,
    /// (c) k-means on the NB VAE's latent means.
    VaeLatentKmeans,
    /// (d) k-means on principal components of the log-normalised counts.
    PcaKmeans,
    /// (e) argmax of `q(y | x)` of a GMVAE with as many components as Leiden found in (f) or
    /// (g), started from those clusters.
    GmvaeFoundK,
    /// (f) Leiden on the neighbour graph of the principal components.
    LeidenPca,
    /// (g) Leiden on the neighbour graph of the NB VAE latent.
    LeidenVae,
}

impl Method {
    pub const ALL: [Self; 8] = [
        Self::GmvaeAssignment,
        Self::GmvaeStart,
        Self::GmvaeLatentKmeans,
        Self::VaeLatentKmeans,
        Self::PcaKmeans,
        Self::GmvaeFoundK,
        Self::LeidenPca,
        Self::LeidenVae,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::GmvaeAssignment => "gmvae_assignment",
            Self::GmvaeStart => "gmvae_start",
            Self::GmvaeLatentKmeans => "gmvae_latent_kmeans",
            Self::VaeLatentKmeans => "vae_latent_kmeans",
            Self::PcaKmeans => "pca_kmeans",
            Self::GmvaeFoundK => "gmvae_found_k",
            Self::LeidenPca => "leiden_pca",
            Self::LeidenVae => "leiden_vae",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::GmvaeAssignment => "(a) GMVAE assignment, argmax q(y | x), K given",
            Self::GmvaeStart => "(a0) the k-means start of (a)",
            Self::GmvaeLatentKmeans => "(b) k-means on the GMVAE latent",
            Self::VaeLatentKmeans => "(c) k-means on the NB VAE latent",
            Self::PcaKmeans => "(d) k-means on PCA of log-normalised counts",
            Self::GmvaeFoundK => "(e) GMVAE assignment, K found",
            Self::LeidenPca => "(f) Leiden on the PCA neighbour graph",
            Self::LeidenVae => "(g) Leiden on the NB VAE latent graph",
        }
    }
}

/// One method's scores on one seed.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub seed: u64,
    pub method: Method,
    /// Clusters holding at least one cell.
    pub clusters: usize,
    /// Wall time of everything the clustering needed, training included.
    pub seconds: f64,
    #[serde(flatten)]
    pub scores: Scores,
}

/// What one seed's GMVAEs did besides their scores.
#[derive(Debug, Clone, Serialize)]
pub struct SeedRun {
    pub seed: u64,
    /// Last epoch, per test cell, full KL weight.
    pub gmvae_test_elbo: f64,
    pub vae_test_elbo: f64,
    /// Components that hold at least one cell (argmax of `q(y | x)` over every cell).
    pub components_used: usize,
    /// ARI of the clusters the components started from, on every cell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_ari: Option<f64>,
    /// With `[leiden]`: the K Leiden found in the clusters (e) starts from, and the components
    /// of the GMVAE (e) that still hold a cell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_components_used: Option<usize>,
    /// Training (and starting) the GMVAE alone, without the VAE it may start from.
    pub gmvae_seconds: f64,
    pub vae_seconds: f64,
    /// The median epoch's training steps, in seconds, of the GMVAE (a) and of the VAE.
    pub gmvae_epoch_seconds: f64,
    pub vae_epoch_seconds: f64,
}

/// Mean and sample standard deviation of one score of one method over the seeds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub sd: f64,
}

/// One method's scores over the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub method: Method,
    pub clusters: Spread,
    pub seconds: Spread,
    pub ari: Spread,
    pub nmi: Spread,
    pub accuracy: Spread,
    pub silhouette: Spread,
}

#[derive(Debug, Serialize)]
struct Metrics<'a> {
    provenance: Provenance,
    config: &'a GmvaeRealStudy,
    components: usize,
    genes: usize,
    runs: &'a [SeedRun],
    scores: &'a [Row],
    summary: &'a [Summary],
    ari_target: f64,
}

/// The counts the models see and the baseline's principal components.
pub(super) struct Prepared {
    pub(super) counts: CountData,
    /// Column indices of the kept genes in the input.
    pub(super) genes: Vec<usize>,
    pub(super) pcs: Array2<f32>,
    pub(super) input_genes: usize,
}

/// Options of `scae gmvae-real`.
#[derive(Debug, Clone, clap::Args)]
pub struct GmvaeRealArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The first seed's GMVAE as AnnData (see `--h5ad` of `scae vae`): the counts of the genes it
    /// read as X, its latent means, q(y | x) and clusters.
    #[command(flatten)]
    pub output: super::vae::H5adArgs,
    /// Runs on every labelled dataset under this folder (each a 10x folder with labels.txt, or
    /// an .h5ad with --labels-key) and writes one table across them, in place of --data.
    #[arg(long, value_name = "DIR", conflicts_with = "data")]
    pub all: Option<std::path::PathBuf>,
    /// The NB VAE baseline and every GMVAE condition on these obs columns of an .h5ad (see
    /// `scae vae --batch-key`): the mixture stays on z, so its components are cell types across
    /// batches.
    #[command(flatten)]
    pub batch: super::vae::BatchArgs,
}

/// `scae gmvae-real`: one dataset, or every labelled dataset under `--all`.
pub fn run(args: &GmvaeRealArgs) -> Result<()> {
    match &args.all {
        Some(dir) => super::gmvae_table::run_all(dir, args),
        None => run_dataset(&args.run, &args.output, &args.batch).map(|_| ()),
    }
}

/// The study on the data of `args`; returns its summary for a table across datasets.
pub fn run_dataset(
    args: &RunArgs,
    output: &super::vae::H5adArgs,
    batch: &super::vae::BatchArgs,
) -> Result<DatasetSummary> {
    let clock = RunClock::start();
    let mut cfg = GmvaeRealStudy::load(&args.config_path("gmvae-real"))?;
    if let Some(n) = args.top_genes {
        cfg.top_genes = n;
    }
    super::vae::validate_with_keys(&cfg.vae.model, &batch.batch_keys).context("[vae.model]")?;
    super::vae::validate_with_keys(&cfg.gmvae.model.vae, &batch.batch_keys)
        .context("[gmvae.model.vae]")?;
    let mut data = load_counts(
        args,
        None,
        cfg.seeds[0],
        scae_io::GeneChoice::All,
        scae_io::Reading::Memory,
        &batch.batch_keys,
    )?;
    let covariates = super::vae::covariates_of(&mut data, &batch.batch_keys)?;
    cfg.vae.model.covariates.clone_from(&covariates);
    cfg.gmvae.model.vae.covariates = covariates;
    let (labels, k) = labels_and_k(&data, &cfg)?;
    let cells = data.n_cells();
    cfg.tsne
        .check_cells(cells)
        .with_context(|| format!("t-SNE of {cells} cells"))?;
    let run = Run::start(args, clock, "gmvae-real", cfg.device, cfg.threads)?;
    let h5ad_path = output.place(run.staging())?;
    let device = run.device;
    let started = std::time::Instant::now();
    let prepared = prepare(&data, &cfg)?;
    let pca_seconds = started.elapsed().as_secs_f64();
    let colouring = Colouring::new(Some(&labels), cells);
    let truth = &colouring.truth();
    let gmvae_cfg = GmvaeConfig {
        components: k,
        ..cfg.gmvae.model.clone()
    };

    let mut rows = Vec::new();
    let mut runs = Vec::new();
    let mut histories: Vec<(String, History)> = Vec::new();
    let mut first: Option<(Array2<f32>, Vec<usize>)> = None;
    for &seed in &cfg.seeds {
        let scores = ScoreConfig {
            seed,
            ..cfg.scores.clone()
        };
        let base = seed_baseline(&cfg, &prepared, k, seed, "", device)?;
        let (split, vae, vae_latent, vae_kmeans) =
            (&base.split, &base.vae, &base.latent, &base.kmeans);
        let (vae_seconds, vae_kmeans_seconds) = (base.vae_seconds, base.kmeans_seconds);
        let mut push = |method: Method, clusters: &[usize], x: ArrayView2<'_, f32>, seconds| {
            let row = scored(seed, method, &colouring, clusters, x, seconds)?;
            tracing::info!(
                seed,
                clusters = row.clusters,
                ari = format!("{:.3}", row.scores.ari),
                nmi = format!("{:.3}", row.scores.nmi),
                "{}",
                method.label()
            );
            rows.push(row);
            anyhow::Ok(())
        };

        // (c) and (d): k-means on the NB VAE latent and on PCA.
        push(
            Method::VaeLatentKmeans,
            vae_kmeans,
            vae_latent.view(),
            vae_kmeans_seconds,
        )?;
        let timer = std::time::Instant::now();
        let pca_kmeans = scores.kmeans(prepared.pcs.view(), k)?;
        push(
            Method::PcaKmeans,
            &pca_kmeans,
            prepared.pcs.view(),
            pca_seconds + timer.elapsed().as_secs_f64(),
        )?;

        // (f) and (g): Leiden on the neighbour graphs of PCA and of the NB VAE latent.
        let mut found_start = None;
        if let Some(leiden) = &cfg.leiden {
            let timer = std::time::Instant::now();
            let pca = leiden.cluster(prepared.pcs.view(), seed)?;
            let pca_seconds = pca_seconds + timer.elapsed().as_secs_f64();
            push(Method::LeidenPca, &pca, prepared.pcs.view(), pca_seconds)?;
            let timer = std::time::Instant::now();
            let vae = leiden.cluster(vae_latent.view(), seed)?;
            let vae_seconds = vae_seconds + timer.elapsed().as_secs_f64();
            push(Method::LeidenVae, &vae, vae_latent.view(), vae_seconds)?;
            found_start = Some(match leiden.start {
                LeidenStart::Pca => (pca, pca_seconds),
                LeidenStart::Vae => (vae, vae_seconds),
            });
        }

        // (a): the GMVAE with K given, started from (c)'s clusters or from its own pretraining.
        let from_vae = cfg.gmvae_init.as_ref().is_some_and(|i| i.from_vae);
        let start = start_of(&cfg, vae, vae_latent, vae_kmeans);
        let given = train_gmvae(&cfg, &gmvae_cfg, seed, split, start, device)?;
        // Seconds of what (a) and (e) start from: the VAE when they start from its weights.
        let before = if from_vae { vae_kmeans_seconds } else { 0.0 };
        let chunk = cfg.gmvae.train.eval_chunk(split.counts.genes());
        let all = split.all()?;
        let q_y = given.net.cluster_probabilities(&all, chunk)?;
        let assigned = scae_models::row_argmax(q_y.view()).to_vec();
        let latent = given.net.latent_means(&all, chunk)?;
        let dir = run.path().join(format!("seed_{seed}")).join("gmvae");
        save_gmvae(
            &dir,
            &given.net,
            &gmvae_cfg,
            &prepared,
            &given.history,
            &q_y,
            &assigned,
        )?;
        if seed == cfg.seeds[0]
            && let Some(path) = &h5ad_path
        {
            write_clusters_h5ad(path, &prepared.counts, &latent, &q_y, &assigned)?;
        }
        push(
            Method::GmvaeAssignment,
            &assigned,
            latent.view(),
            before + given.seconds,
        )?;
        let init_ari = match &given.start {
            Some((clusters, latent)) => {
                push(
                    Method::GmvaeStart,
                    clusters,
                    latent.view(),
                    before + given.start_seconds,
                )?;
                Some(scae_eval::adjusted_rand_index(
                    truth,
                    &colouring.pick(clusters),
                )?)
            }
            None => None,
        };
        let timer = std::time::Instant::now();
        let gmvae_kmeans = scores.kmeans(latent.view(), k)?;
        push(
            Method::GmvaeLatentKmeans,
            &gmvae_kmeans,
            latent.view(),
            before + given.seconds + timer.elapsed().as_secs_f64(),
        )?;

        // (e): the GMVAE with as many components as Leiden found.
        let mut found = None;
        if let Some((clusters, leiden_seconds)) = &found_start {
            let found_k = distinct(clusters);
            let cfg_found = GmvaeConfig {
                components: found_k.max(2),
                ..gmvae_cfg.clone()
            };
            let start = if from_vae {
                GmvaeStart::Vae {
                    vae: &vae.net,
                    latent: vae_latent.view(),
                    clusters,
                }
            } else {
                GmvaeStart::Own {
                    clusters: Some(clusters),
                }
            };
            let trained = train_gmvae(&cfg, &cfg_found, seed, split, start, device)?;
            let q_y = trained.net.cluster_probabilities(&all, chunk)?;
            let assigned = scae_models::row_argmax(q_y.view()).to_vec();
            let latent = trained.net.latent_means(&all, chunk)?;
            let dir = run
                .path()
                .join(format!("seed_{seed}"))
                .join("gmvae_found_k");
            save_gmvae(
                &dir,
                &trained.net,
                &cfg_found,
                &prepared,
                &trained.history,
                &q_y,
                &assigned,
            )?;
            let vae_part = if from_vae { vae_seconds } else { 0.0 };
            push(
                Method::GmvaeFoundK,
                &assigned,
                latent.view(),
                leiden_seconds.max(vae_part) + trained.seconds,
            )?;
            histories.push((format!("GMVAE K found, seed {seed}"), trained.history));
            found = Some((found_k, distinct(&assigned)));
        }

        let test_elbo = |h: &History| h.last_test_term("elbo").unwrap_or(f64::NAN);
        runs.push(SeedRun {
            seed,
            gmvae_test_elbo: test_elbo(&given.history),
            vae_test_elbo: test_elbo(&vae.history),
            components_used: distinct(&assigned),
            init_ari,
            found_k: found.map(|f| f.0),
            found_components_used: found.map(|f| f.1),
            gmvae_seconds: given.seconds,
            vae_seconds,
            gmvae_epoch_seconds: given.history.median_train_seconds(),
            vae_epoch_seconds: vae.history.median_train_seconds(),
        });
        histories.push((format!("GMVAE seed {seed}"), given.history));
        if first.is_none() {
            first = Some((latent, assigned));
        }
    }
    let summary = summarise(&rows);

    write_scores_csv(run.path(), &rows)?;
    let history_runs: Vec<(String, &History)> =
        histories.iter().map(|(n, h)| (n.clone(), h)).collect();
    save_history_figure(
        run.path(),
        "history",
        &format!(
            "GMVAE (K = {k}) on {} cells x {} genes: training history",
            data.n_cells(),
            prepared.genes.len()
        ),
        &history_runs,
    )?;
    if let Some((latent, assigned)) = &first {
        figures(run.path(), &cfg, &colouring, latent.view(), assigned, k)?;
    }
    let report = report(&cfg, &data, &prepared, k, &runs, &rows, &summary);
    run.write_report(&report)?;
    let metrics = Metrics {
        provenance: run.provenance(cfg.seeds[0], &prepared.counts.source),
        config: &cfg,
        components: k,
        genes: prepared.genes.len(),
        runs: &runs,
        scores: &rows,
        summary: &summary,
        ari_target: ARI_TARGET,
    };
    let dest = run.finish(&metrics)?;
    for s in &summary {
        eprintln!(
            "{:<52} ARI {:.3} ± {:.3}, NMI {:.3} ± {:.3}, clusters {:.1}, {:.1} s",
            s.method.label(),
            s.ari.mean,
            s.ari.sd,
            s.nmi.mean,
            s.nmi.sd,
            s.clusters.mean,
            s.seconds.mean,
        );
    }
    eprintln!("GMVAE on real data written to {}", dest.display());
    Ok(DatasetSummary {
        data: data.source.data.clone(),
        cells,
        genes: prepared.genes.len(),
        labels: labels.names.len(),
        seeds: cfg.seeds.len(),
        runs,
        summary,
        results: dest,
    })
}

/// The labels of `data`, which must name at least two cell types, and the GMVAE's K: the
/// config's `components`, else the number of labels.
pub(super) fn labels_and_k(data: &CountData, cfg: &GmvaeRealStudy) -> Result<(Labels, usize)> {
    let Some(labels) = data.labels.clone() else {
        bail!(
            "{}: gmvae-real scores clusters against known labels, and none were found (put a \
             labels.txt beside the data or pass --labels)",
            data.source.data.display()
        );
    };
    if labels.names.len() < 2 {
        bail!(
            "{}: the labels name a single cell type; clusters need at least two",
            data.source.data.display()
        );
    }
    let k = if cfg.components == 0 {
        labels.names.len()
    } else {
        cfg.components
    };
    Ok((labels, k))
}

/// One dataset's results, for the table across datasets.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    pub data: std::path::PathBuf,
    pub cells: usize,
    pub genes: usize,
    pub labels: usize,
    pub seeds: usize,
    pub runs: Vec<SeedRun>,
    pub summary: Vec<Summary>,
    pub results: std::path::PathBuf,
}

/// How many distinct clusters `clusters` holds.
pub(super) fn distinct(clusters: &[usize]) -> usize {
    let mut seen = clusters.to_vec();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

/// The scores of `clusters` (one per cell) against the labels of `colouring`, with the silhouette
/// of `x` by label; cells without a label are left out of every score.
fn scored(
    seed: u64,
    method: Method,
    colouring: &Colouring,
    clusters: &[usize],
    x: ArrayView2<'_, f32>,
    seconds: f64,
) -> Result<Row> {
    let truth = &colouring.truth();
    let picked = &colouring.pick(clusters);
    let silhouette = scae_eval::silhouette_score(colouring.labelled_rows(x).view(), truth, seed)?;
    Ok(Row {
        seed,
        method,
        clusters: distinct(clusters),
        seconds,
        scores: Scores {
            silhouette,
            ari: scae_eval::adjusted_rand_index(truth, picked)?,
            nmi: scae_eval::normalized_mutual_info(truth, picked)?,
            accuracy: scae_eval::hungarian_accuracy(truth, picked)?,
        },
    })
}

/// Keeps the most variable genes: their raw counts for the models, their log-normalised values'
/// principal components for baseline (d).
pub(super) fn prepare(data: &CountData, cfg: &GmvaeRealStudy) -> Result<Prepared> {
    prepare_genes(data, cfg.top_genes, cfg.pca_components)
}

/// The counts of the `top_genes` most variable genes (0: every gene) and `pca_components`
/// principal components of their log-normalised values.
pub(super) fn prepare_genes(
    data: &CountData,
    top_genes: usize,
    pca_components: usize,
) -> Result<Prepared> {
    let input = data.n_genes();
    let n = if top_genes == 0 {
        input
    } else {
        top_genes.min(input)
    };
    // The lognormalised values of the kept genes (dense, cells x at most `top_genes`) and which
    // genes they are; the counts of those genes stay sparse.
    let pre = scae_io::preprocess(data.matrix()?.csr(), n);
    let lognorm = pre.x;
    if pca_components > lognorm.ncols().min(lognorm.nrows()) {
        bail!(
            "pca_components is {} but the data have only {} cells x {} genes",
            pca_components,
            lognorm.nrows(),
            lognorm.ncols()
        );
    }
    let pca = super::embed::fit_pca(lognorm.view(), pca_components)?;
    tracing::info!(
        genes = pre.genes.len(),
        of = input,
        "kept the most variable genes"
    );
    Ok(Prepared {
        counts: data.select_genes(&pre.genes)?,
        genes: pre.genes,
        pcs: super::embed::scores_f32(&pca),
        input_genes: input,
    })
}

/// One seed's split of the prepared cells and its NB VAE baseline (c), which every GMVAE of the
/// seed starts from or is compared with: the VAE, every cell's latent means, their k-means
/// clusters (k = `k`), and the seconds until the VAE was trained and until its clusters were
/// found.
pub(super) struct SeedBaseline<'a> {
    pub(super) split: CountSplit<'a>,
    pub(super) vae: TrainedVae,
    pub(super) latent: Array2<f32>,
    pub(super) kmeans: Vec<usize>,
    pub(super) vae_seconds: f64,
    pub(super) kmeans_seconds: f64,
}

/// [`SeedBaseline`] of seed `seed`; `name` (a dataset's, or empty) leads the VAE's progress.
pub(super) fn seed_baseline<'a>(
    cfg: &GmvaeRealStudy,
    prepared: &'a Prepared,
    k: usize,
    seed: u64,
    name: &str,
    device: ComputeDevice,
) -> Result<SeedBaseline<'a>> {
    let split = CountSplit::of(&prepared.counts, cfg.test_fraction, seed)?;
    let timer = std::time::Instant::now();
    let vae = super::vae::train(
        format!("{name} nb vae {seed}").trim_start(),
        &cfg.vae.model,
        &cfg.vae.train,
        seed,
        &split,
        device,
    )?;
    let vae_seconds = timer.elapsed().as_secs_f64();
    let latent = vae.latent_means(&split)?;
    let timer = std::time::Instant::now();
    let scores = ScoreConfig {
        seed,
        ..cfg.scores.clone()
    };
    let kmeans = scores.kmeans(latent.view(), k)?;
    let kmeans_seconds = vae_seconds + timer.elapsed().as_secs_f64();
    Ok(SeedBaseline {
        split,
        vae,
        latent,
        kmeans,
        vae_seconds,
        kmeans_seconds,
    })
}

/// The start `cfg` asks for: from the VAE (its weights, the clusters of its latent space)
/// with `gmvae_init.from_vae`, else the GMVAE's own.
pub(super) fn start_of<'a>(
    cfg: &GmvaeRealStudy,
    vae: &'a TrainedVae,
    latent: &'a Array2<f32>,
    clusters: &'a [usize],
) -> GmvaeStart<'a> {
    if cfg.gmvae_init.as_ref().is_some_and(|i| i.from_vae) {
        GmvaeStart::Vae {
            vae: &vae.net,
            latent: latent.view(),
            clusters,
        }
    } else {
        GmvaeStart::Own { clusters: None }
    }
}

/// What the recipe asks of this study: k-means with the study's restarts, progress and the
/// GMVAE's name around each phase.
struct Hooks<'a> {
    scores: &'a ScoreConfig,
    k: usize,
    seed: u64,
}

impl scae_models::RecipeHooks for Hooks<'_> {
    type Error = anyhow::Error;

    fn cluster(&mut self, latent: ArrayView2<'_, f32>, k: usize) -> Result<Vec<usize>> {
        let scores = ScoreConfig {
            seed: self.seed,
            kmeans_restarts: self.scores.kmeans_restarts,
        };
        scores.kmeans(latent, k)
    }

    fn phase(
        &mut self,
        name: &str,
        epochs: usize,
        train: &mut scae_models::PhaseTraining<'_>,
    ) -> Result<()> {
        let (k, seed) = (self.k, self.seed);
        let progress = EpochProgress::new(&format!("gmvae K={k} {seed} {name}"), epochs);
        train(&mut |e| progress.epoch(e))
            .with_context(|| format!("training the GMVAE (K = {k}, seed {seed}, {name})"))?;
        progress.finish();
        Ok(())
    }
}

/// Trains one GMVAE by `scae_models::train_gmvae` (on the ELBO, or with `gmvae_init` in
/// phases) on the cells of `split`.
pub(super) fn train_gmvae(
    study: &GmvaeRealStudy,
    cfg: &GmvaeConfig,
    seed: u64,
    split: &CountSplit<'_>,
    start: GmvaeStart<'_>,
    device: ComputeDevice,
) -> Result<TrainedGmvae> {
    let recipe = Recipe {
        train: &study.gmvae.train,
        init: study.gmvae_init.as_ref(),
        scores: &study.scores,
    };
    recipe.train(cfg, seed, split, start, device)
}

/// How a study trains its GMVAEs: the training settings, the start, and the k-means the start
/// clusters with.
pub(super) struct Recipe<'a> {
    pub(super) train: &'a TrainConfig,
    pub(super) init: Option<&'a ComponentInit>,
    pub(super) scores: &'a ScoreConfig,
}

impl Recipe<'_> {
    /// The GMVAE of `cfg` trained on `split` from `start` ([`scae_models::train_gmvae`]).
    pub(super) fn train(
        &self,
        cfg: &GmvaeConfig,
        seed: u64,
        split: &CountSplit<'_>,
        start: GmvaeStart<'_>,
        device: ComputeDevice,
    ) -> Result<TrainedGmvae> {
        let (train, test, all) = (split.train()?, split.test()?, split.all()?);
        let cells = RecipeCells {
            train: &train,
            train_cells: &split.split.train,
            test: &test,
            all: &all,
        };
        let mut hooks = Hooks {
            scores: self.scores,
            k: cfg.components,
            seed,
        };
        scae_models::train_gmvae(
            cfg, self.train, self.init, seed, device, cells, start, &mut hooks,
        )
    }
}

/// The config and genes (by name, in input order) of the GMVAE model folder `dir`, from its
/// card.
///
/// # Errors
/// A card that is not readable, not a GMVAE's, or holds an invalid config.
pub fn read_gmvae(dir: &Path) -> Result<(GmvaeConfig, Vec<String>)> {
    let card = crate::card::ModelCard::read(dir)?;
    let path = dir.join(crate::card::CARD_FILE);
    let crate::card::ModelKind::Gmvae(model) = card.model else {
        bail!(
            "{}: a model of kind {}, not a GMVAE",
            path.display(),
            card.model.name()
        );
    };
    model
        .validate()
        .with_context(|| format!("{}: invalid model", path.display()))?;
    Ok((model, card.genes))
}

fn save_gmvae(
    dir: &Path,
    net: &Net<Gmvae>,
    cfg: &GmvaeConfig,
    prepared: &Prepared,
    history: &History,
    q_y: &Array2<f32>,
    assigned: &[usize],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::card::ModelCard::new(
        crate::card::ModelKind::Gmvae(cfg.clone()),
        prepared.counts.var_names.clone(),
    )
    .write(dir)?;
    net.save_weights(&dir.join("weights.safetensors"))?;
    super::ae::write_history(&dir.join("history.csv"), history)?;
    write_clusters(dir, &prepared.counts.cells, q_y, assigned)
}

/// The clustered cells as AnnData: their counts as X, names, latent means (`obsm["X_scae"]`),
/// `q(y | x)` (`obsm["scae_q_y"]`) and clusters (`obs["scae_cluster"]`, categorical).
pub fn write_clusters_h5ad(
    path: &Path,
    data: &CountData,
    latent: &Array2<f32>,
    q_y: &Array2<f32>,
    assigned: &[usize],
) -> Result<()> {
    if !crate::writes_results() {
        // Rank 0 of a data-parallel job writes the results.
        return Ok(());
    }
    let categories = (0..q_y.ncols()).map(|k| k.to_string()).collect();
    let out = scae_io::AnnOutput {
        obs_names: &data.obs_names()?,
        var_names: &data.var_names,
        x: Some(data.matrix()?.csr()),
        obsm: vec![("X_scae", latent.view()), ("scae_q_y", q_y.view())],
        obs_categorical: vec![("scae_cluster", assigned.to_vec(), categories)],
        source: data.ann_source(),
        ..Default::default()
    };
    scae_io::write_h5ad(path, &out)?;
    tracing::info!("wrote {}", path.display());
    Ok(())
}

/// `q_y.npy` (cells x K) and `clusters.csv` (the cell's row in the input, its cluster, and the
/// cluster's probability); `cells` holds the input row of each clustered cell.
pub fn write_clusters(
    dir: &Path,
    cells: &[usize],
    q_y: &Array2<f32>,
    assigned: &[usize],
) -> Result<()> {
    scae_io::write_npy(&dir.join("q_y.npy"), &q_y.view())?;
    let mut csv = String::from("cell,cluster,probability\n");
    for ((&cell, &c), row) in cells.iter().zip(assigned).zip(q_y.rows()) {
        let _ = writeln!(csv, "{cell},{c},{}", row[c]);
    }
    scae_io::write_atomic(&dir.join("clusters.csv"), |w| {
        std::io::Write::write_all(w, csv.as_bytes())
    })?;
    Ok(())
}

fn summarise(rows: &[Row]) -> Vec<Summary> {
    Method::ALL
        .iter()
        .filter(|&&method| rows.iter().any(|r| r.method == method))
        .map(|&method| {
            let of = |f: fn(&Scores) -> f64| {
                let v: Vec<f64> = rows
                    .iter()
                    .filter(|r| r.method == method)
                    .map(|r| f(&r.scores))
                    .collect();
                spread(&v)
            };
            let of_row = |f: fn(&Row) -> f64| {
                let v: Vec<f64> = rows.iter().filter(|r| r.method == method).map(f).collect();
                spread(&v)
            };
            Summary {
                method,
                clusters: of_row(|r| r.clusters as f64),
                seconds: of_row(|r| r.seconds),
                ari: of(|s| s.ari),
                nmi: of(|s| s.nmi),
                accuracy: of(|s| s.accuracy),
                silhouette: of(|s| s.silhouette),
            }
        })
        .collect()
}

/// Mean and sample standard deviation (0 for a single value).
pub(super) fn spread(v: &[f64]) -> Spread {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Spread { mean, sd }
}

fn write_scores_csv(dir: &Path, rows: &[Row]) -> Result<()> {
    let mut csv = String::from("seed,method,clusters,seconds,ari,nmi,accuracy,silhouette\n");
    for r in rows {
        let s = &r.scores;
        let _ = writeln!(
            csv,
            "{},{},{},{:.2},{},{},{},{}",
            r.seed,
            r.method.name(),
            r.clusters,
            r.seconds,
            s.ari,
            s.nmi,
            s.accuracy,
            s.silhouette
        );
    }
    scae_io::write_atomic(&dir.join("scores.csv"), |w| {
        std::io::Write::write_all(w, csv.as_bytes())
    })?;
    Ok(())
}

/// The first seed's latent t-SNE by label and by cluster, and its confusion matrix.
fn figures(
    dir: &Path,
    cfg: &GmvaeRealStudy,
    colouring: &Colouring,
    latent: ArrayView2<'_, f32>,
    assigned: &[usize],
    k: usize,
) -> Result<()> {
    let seed = cfg.seeds[0];
    let tsne = super::embed::tsne_embedding(
        &format!("the GMVAE latent means (seed {seed})"),
        latent,
        &cfg.tsne,
    )?;
    super::embed::save_figure(
        dir,
        "tsne_by_label",
        "GMVAE latent, coloured by true label",
        colouring,
        &[("tsne", &tsne)],
    )?;
    let clusters = Colouring::groups(
        (0..k).map(|c| format!("cluster {c}")).collect(),
        assigned.to_vec(),
    );
    super::embed::save_figure(
        dir,
        "tsne_by_cluster",
        "GMVAE latent, coloured by assigned cluster (argmax q(y | x))",
        &clusters,
        &[("tsne", &tsne)],
    )?;

    // Confusion matrix, clusters ordered by their Hungarian match to the labels, then the rest.
    // Cells without a label are left out (the report says how many).
    let truth = &colouring.truth();
    let assigned = &colouring.pick(assigned);
    let labels = colouring.classes();
    let mut counts = vec![vec![0.0; k]; labels];
    for (&t, &c) in truth.iter().zip(assigned) {
        counts[t][c] += 1.0;
    }
    let matching = scae_eval::hungarian_matching(truth, assigned)?;
    let mut order: Vec<usize> = matching.iter().map(|&(_, c)| c).collect();
    let unmatched: Vec<usize> = (0..k).filter(|c| !order.contains(c)).collect();
    order.extend(unmatched);
    let values: Vec<Vec<f64>> = counts
        .iter()
        .map(|row| order.iter().map(|&c| row[c]).collect())
        .collect();
    let col_names: Vec<String> = order.iter().map(|c| format!("{c}")).collect();
    let mut csv = String::from("label");
    for c in &col_names {
        let _ = write!(csv, ",cluster_{c}");
    }
    csv.push('\n');
    for (name, row) in colouring.names[..labels].iter().zip(&values) {
        let _ = write!(csv, "{name}");
        for v in row {
            let _ = write!(csv, ",{v}");
        }
        csv.push('\n');
    }
    scae_io::write_atomic(&dir.join("confusion.csv"), |w| {
        std::io::Write::write_all(w, csv.as_bytes())
    })?;
    let heatmap = scae_viz::Heatmap {
        title: format!("GMVAE clusters against the labels, seed {seed}"),
        x_label: "assigned cluster, argmax q(y | x), in Hungarian-matched order".into(),
        y_label: "true label".into(),
        row_names: colouring.names[..labels].to_vec(),
        col_names,
        values,
        value_label: "cells".into(),
    };
    for ext in ["png", "svg"] {
        scae_viz::heatmap_figure(&dir.join(format!("confusion.{ext}")), &heatmap)?;
    }
    Ok(())
}

fn report(
    cfg: &GmvaeRealStudy,
    data: &CountData,
    prepared: &Prepared,
    k: usize,
    runs: &[SeedRun],
    rows: &[Row],
    summary: &[Summary],
) -> String {
    let mut md = String::new();
    let m = &cfg.gmvae.model;
    let t = &cfg.gmvae.train;
    let _ = writeln!(md, "# Do the GMVAE's components find the cell types?\n");
    let _ = writeln!(
        md,
        "Data: `{}`, {} cells x {} genes of raw counts with {} labels. The models train on the raw \
         counts of the {} genes whose log-normalised values vary most; {} % of the cells are held \
         out of training; every cell is clustered. Seeds: {:?}.\n",
        data.source.data.display(),
        data.n_cells(),
        prepared.input_genes,
        data.labels.as_ref().map_or(0, |l| l.names.len()),
        prepared.genes.len(),
        (100.0 * cfg.test_fraction).round(),
        cfg.seeds,
    );
    let _ = writeln!(
        md,
        "GMVAE: K = {k}, {} posterior, encoders {:?}, latent {}, decoder {:?}, {} likelihood, \
         p(y) {}, {} epochs of batch {}, Adam (learning rate {}, eps {}), KL warm-up over {} epochs. NB VAE \
         baseline: encoder {:?}, latent {}, {} epochs. PCA baseline: {} components. k-means: \
         k = {}, {} seeded restarts, lowest inertia kept.\n",
        match m.posterior {
            MixturePosterior::Shared => "shared (VaDE)",
            MixturePosterior::PerComponent => "per-component (scVAE)",
        },
        m.vae.hidden,
        m.vae.latent,
        m.vae.decoder_widths(),
        m.vae.likelihood.label(),
        if m.learn_prior { "learned" } else { "uniform" },
        match &cfg.gmvae_init {
            Some(init) if init.from_vae => format!(
                "a start from the NB VAE of (c) (its encoder and decoder, the means of p(z | y) at \
                 the centres of (c)'s k-means clusters, p(y) at their sizes), {} epochs of q(y | x) \
                 on those clusters, then {}",
                init.pseudo_label_epochs, t.epochs
            ),
            Some(init) => format!(
                "{} epochs on the ELBO, then a k-means start (k-means on every cell's latent \
                 means: its centres become the means of p(z | y) and q(y | x) learns its \
                 clusters for {} epochs), then {}",
                init.pretrain_epochs, init.pseudo_label_epochs, t.epochs
            ),
            None => t.epochs.to_string(),
        },
        t.batch_size,
        t.learning_rate,
        t.adam_eps,
        m.vae.kl_warmup_epochs,
        cfg.vae.model.hidden,
        cfg.vae.model.latent,
        cfg.vae.train.epochs,
        cfg.pca_components,
        data.labels.as_ref().map_or(0, |l| l.names.len()),
        cfg.scores.kmeans_restarts,
    );
    if let Some(leiden) = &cfg.leiden {
        let _ = writeln!(
            md,
            "K found: Leiden (RBConfiguration, resolution {}) on the {}-nearest-neighbour graph \
             (UMAP connectivities, as scanpy's sc.pp.neighbors) of the principal components (f) \
             and of the NB VAE latent (g); the GMVAE (e) has as many components as {} found and \
             starts from them as (a) starts from (c).\n",
            leiden.resolution,
            leiden.neighbours,
            match leiden.start {
                LeidenStart::Pca => "(f)",
                LeidenStart::Vae => "(g)",
            }
        );
    }
    let _ = writeln!(md, "## Scores, mean ± sd over {} seeds\n", cfg.seeds.len());
    super::embed::unlabelled_note(&mut md, &data.source);
    let _ = writeln!(
        md,
        "| method | clusters | ARI | NMI | accuracy (Hungarian) | silhouette by label | seconds |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    for s in summary {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.3} ± {:.3} | {:.3} ± {:.3} | {:.3} ± {:.3} | {:.3} ± {:.3} | {:.1} |",
            s.method.label().replace('|', "\\|"),
            s.clusters.mean,
            s.ari.mean,
            s.ari.sd,
            s.nmi.mean,
            s.nmi.sd,
            s.accuracy.mean,
            s.accuracy.sd,
            s.silhouette.mean,
            s.silhouette.sd,
            s.seconds.mean
        );
    }
    let _ = writeln!(
        md,
        "\nThe silhouette is that of the representation the clusters were found in, grouped by \
         the true labels: (a) and (b) share the GMVAE latent. Seconds count everything a \
         clustering needed: (a) includes the VAE it starts from.\n"
    );
    let mean = |method: Method| {
        summary
            .iter()
            .find(|s| s.method == method)
            .map_or(f64::NAN, |s| s.ari.mean)
    };
    let own = mean(Method::GmvaeAssignment);
    let compare = |what: &str, value: f64, other: Method| {
        let bound = mean(other);
        format!(
            "{what} {} {} ({bound:.3})",
            if value >= bound {
                "is at least"
            } else {
                "is NOT at least"
            },
            other.label()
        )
    };
    let mut checks = vec![
        compare("its own assignment", own, Method::VaeLatentKmeans),
        compare("it", own, Method::PcaKmeans),
    ];
    if summary.iter().any(|s| s.method == Method::GmvaeStart) {
        checks.push(compare("it", own, Method::GmvaeStart));
    }
    if summary.iter().any(|s| s.method == Method::GmvaeFoundK) {
        checks.push(compare(
            "with K found, the GMVAE's assignment",
            mean(Method::GmvaeFoundK),
            Method::LeidenPca,
        ));
    }
    let _ = writeln!(
        md,
        "The GMVAE's own assignment reaches a mean ARI of {own:.3} (worm_neuron's bound is \
         {ARI_TARGET}): {}.\n",
        checks.join("; ")
    );
    let _ = writeln!(md, "## Per seed\n");
    let _ = writeln!(
        md,
        "| seed | GMVAE test ELBO | components used | start ARI | GMVAE s | epoch s | NB VAE test ELBO | NB VAE s | epoch s | (a) ARI | (b) ARI | (c) ARI | (d) ARI | K found | (e) ARI |"
    );
    let _ = writeln!(
        md,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in runs {
        let ari = |method: Method| {
            rows.iter()
                .find(|x| x.seed == r.seed && x.method == method)
                .map_or(f64::NAN, |x| x.scores.ari)
        };
        let _ = writeln!(
            md,
            "| {} | {:.2} | {} | {} | {:.1} | {:.3} | {:.2} | {:.1} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {:.3} |",
            r.seed,
            r.gmvae_test_elbo,
            r.components_used,
            r.init_ari.map_or_else(|| "-".into(), |a| format!("{a:.3}")),
            r.gmvae_seconds,
            r.gmvae_epoch_seconds,
            r.vae_test_elbo,
            r.vae_seconds,
            r.vae_epoch_seconds,
            ari(Method::GmvaeAssignment),
            ari(Method::GmvaeLatentKmeans),
            ari(Method::VaeLatentKmeans),
            ari(Method::PcaKmeans),
            r.found_k.map_or_else(|| "-".into(), |k| k.to_string()),
            ari(Method::GmvaeFoundK),
        );
    }
    let _ = writeln!(
        md,
        "\n![confusion](confusion.png)\n\n![t-SNE by label](tsne_by_label.png)\n\n\
         ![t-SNE by cluster](tsne_by_cluster.png)\n\n![history](history.png)"
    );
    md
}

#[cfg(test)]
mod tests {
    use scae_models::Likelihood;

    use super::*;

    #[test]
    fn the_shipped_config_parses() {
        let cfg: GmvaeRealStudy =
            toml::from_str(include_str!("../../../../configs/gmvae-real.toml"))
                .expect("configs/gmvae-real.toml parses");
        cfg.validate().expect("and is valid");
        assert_eq!(cfg.seeds.len(), 3, "three seeds by default");
        assert_eq!(cfg.components, 0, "K = the number of labels");
        assert_eq!(cfg.vae.model.likelihood, Likelihood::Nb);
        assert_eq!(cfg.pca_components, 50);
        assert_eq!(cfg.top_genes, 2000, "(d): PCA of the top 2000 genes");
        assert!(
            cfg.gmvae_init.is_some(),
            "the k-means start is on by default"
        );
    }

    #[test]
    fn spread_is_the_sample_sd() {
        let s = spread(&[1.0, 2.0, 3.0]);
        assert!((s.mean - 2.0).abs() < 1e-12);
        assert!((s.sd - 1.0).abs() < 1e-12);
        assert_eq!(spread(&[0.5]).sd, 0.0);
    }
}
