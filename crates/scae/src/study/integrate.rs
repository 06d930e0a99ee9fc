//! `scae integrate`: do the models separate biology from the batch a cell came from?
//!
//! On an `.h5ad` with a batch column (`--batch-key`) and cell types (`--labels-key`), every seed
//! embeds the cells four ways and scores each embedding with scIB's integration metrics
//! ([`scae_eval::integration_scores`]: bio conservation, batch correction, and their total
//! `0.6 bio + 0.4 batch`):
//!
//! * unintegrated PCA: `pca_components` principal components of the log-normalised counts of the
//!   `top_genes` most variable genes (scanpy's baseline; it knows nothing of the batches);
//! * the NB VAE without the batch (`[vae.model]`);
//! * the same VAE with the batch covariate (scVI with `batch_key`: the batch's one-hot code enters
//!   every decoder hidden layer);
//! * the GMVAE with the batch (`[gmvae.model]`, K = the number of cell types), started from that
//!   batch-aware VAE: its latent means are scored like the others, and its own clusters (the
//!   argmax of `q(y | x)`) by their ARI with the cell types beside the ARI of Leiden on the
//!   batch-aware VAE's latent (the scIB metric's, at the resolution with the best NMI).
//!
//! Cells without a cell type are embedded with the others and left out of the scores (the report
//! says how many). The scores use scIB's 90 neighbours per cell (15 for Leiden and graph
//! connectivity, 50 for kBET), fewer when the data hold fewer cells (recorded as `neighbours`).
//!
//! `--embedding NAME=NPY` scores an embedding made elsewhere beside them (scVI's latent, Harmony's
//! PCs: `cargo xtask bench integrate` runs both).
//!
//! Writes `results/integrate/`: `scores.csv` (a row per seed and method, every metric),
//! `metrics.json` (config, provenance, rows, mean and sd per method), `report.md`, `pca.npy`
//! (the baseline's principal components of every kept cell) and `genes.txt` (the genes the
//! models read), and for the
//! first seed each embedding's t-SNE coloured by batch and by cell type, side by side
//! (`embedding_by_batch.png`, `embedding_by_cell_type.png`, with `.svg` and the coordinates).
//! `--all DIR` runs every `.h5ad` under a folder that has both columns and writes one table
//! across them (`table.md`, `table.csv`, `table.json`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ndarray::{Array2, ArrayView2};
use scae_eval::{IntegrationScores, Neighbors, TsneParams};
use scae_models::{ComponentInit, DeviceChoice, GmvaeConfig, GmvaeStart, VaeConfig};
use serde::{Deserialize, Serialize};

use super::embed::{Colouring, ScoreConfig};
use super::gmvae_real::{Recipe, Spread, Trained, prepare_genes, spread};
use super::vae::{BatchArgs, CountSplit, covariates_of, load_counts, validate_with_keys};
use super::{Run, RunArgs};
use crate::config::{StudyConfig, check_run};
use crate::provenance::{RunClock, write_json};

/// `configs/integrate.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrateStudy {
    /// One run of every method per seed; the table gives mean and sd over them.
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub device: DeviceChoice,
    /// Cells held out of training (every cell is embedded and scored).
    pub test_fraction: f64,
    /// The models train on the raw counts of this many most variable genes, which PCA sees
    /// log-normalised; 0 = every gene.
    pub top_genes: usize,
    /// Principal components of the unintegrated baseline.
    pub pca_components: usize,
    /// The VAE, trained without and with the batch (its covariates come from the data).
    pub vae: Trained<VaeConfig>,
    /// The GMVAE with the batch; `model.components` is set to the number of cell types and
    /// `model.vae.covariates` from the data.
    pub gmvae: Trained<GmvaeConfig>,
    /// How the GMVAE starts from the batch-aware VAE.
    pub gmvae_init: ComponentInit,
    #[serde(default)]
    pub tsne: TsneParams,
    #[serde(default)]
    pub scores: ScoreConfig,
}

impl StudyConfig for IntegrateStudy {
    fn validate(&self) -> Result<()> {
        check_run(&self.seeds, self.test_fraction)?;
        let key = ["batch".to_owned()];
        validate_with_keys(&self.vae.model, &key).context("[vae.model]")?;
        validate_with_keys(&self.gmvae.model.vae, &key).context("[gmvae.model.vae]")?;
        let mut gmvae = self.gmvae.model.clone();
        gmvae.components = gmvae.components.max(2);
        gmvae.validate()?;
        self.vae.train.validate()?;
        self.gmvae.train.validate()?;
        if !self.gmvae_init.from_vae {
            bail!("gmvae_init.from_vae must be true: the GMVAE starts from the batch-aware VAE");
        }
        Ok(())
    }
}

/// Options of `scae integrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct IntegrateArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Runs on every .h5ad file under this folder whose obs has the batch key and the labels key
    /// and writes one table across them, in place of --data.
    #[arg(long, value_name = "DIR", conflicts_with = "data")]
    pub all: Option<PathBuf>,
    /// Also score an embedding made elsewhere (scVI's latent, Harmony's PCs, ...): NAME=NPY, a
    /// .npy of one row per cell of the input file, in its order (or of the cells kept, those
    /// with a count); repeatable. Not with --all.
    #[arg(long = "embedding", value_name = "NAME=NPY", conflicts_with = "all")]
    pub embeddings: Vec<String>,
}

/// The `--embedding NAME=NPY` values, parsed.
fn given_embeddings(values: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for value in values {
        let Some((name, path)) = value
            .split_once('=')
            .filter(|(n, p)| !n.is_empty() && !p.is_empty())
        else {
            bail!("--embedding {value}: expected NAME=PATH (a name, then the .npy file)");
        };
        if out.iter().any(|(n, _)| n == name) {
            bail!("--embedding {value}: the name {name} is given twice");
        }
        out.push((name.to_owned(), PathBuf::from(path)));
    }
    Ok(out)
}

/// The rows of the embedding at `path` for the kept cells `cells` (input rows, ascending): the
/// whole matrix when it has one row per kept cell, else those rows of one per input cell.
fn load_given(name: &str, path: &Path, cells: &[usize]) -> Result<Array2<f32>> {
    let x = scae_io::read_matrix(path).with_context(|| format!("--embedding {name}"))?;
    if x.nrows() == cells.len() {
        return Ok(x);
    }
    match cells.last() {
        Some(&last) if x.nrows() > last => Ok(x.select(ndarray::Axis(0), cells)),
        _ => bail!(
            "{}: --embedding {name} has {} rows, but the data have {} cells with a count",
            path.display(),
            x.nrows(),
            cells.len(),
        ),
    }
}

/// The embeddings scored: the study's four, and any given with `--embedding`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Pca,
    Vae,
    VaeBatch,
    GmvaeBatch,
    /// An embedding made elsewhere (`--embedding NAME=NPY`: scVI's, Harmony's, ...).
    Given(String),
}

impl Method {
    pub fn label(&self) -> String {
        match self {
            Self::Pca => "unintegrated PCA (log-normalised)".into(),
            Self::Vae => "NB VAE without the batch".into(),
            Self::VaeBatch => "NB VAE with the batch".into(),
            Self::GmvaeBatch => "GMVAE with the batch".into(),
            Self::Given(name) => format!("{name} (given)"),
        }
    }

    fn short(&self) -> String {
        match self {
            Self::Pca => "PCA".into(),
            Self::Vae => "VAE".into(),
            Self::VaeBatch => "VAE + batch".into(),
            Self::GmvaeBatch => "GMVAE + batch".into(),
            Self::Given(name) => name.clone(),
        }
    }

    /// A file-name part: `pca`, `vaebatch`, `given_scvi`.
    fn file(&self) -> String {
        match self {
            Self::Given(name) => format!("given_{name}"),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

/// One embedding of one seed, scored.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub seed: u64,
    pub method: Method,
    pub total: f64,
    pub bio: f64,
    pub batch: f64,
    pub scores: IntegrationScores,
    /// The GMVAE's own clusters (argmax `q(y | x)`): their ARI with the cell types.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_ari: Option<f64>,
    /// Seconds to make the embedding (training included).
    pub seconds: f64,
}

/// The names of the metrics of a row, in table order, with their values.
fn metric_values(row: &Row) -> Vec<(&'static str, f64)> {
    let (b, c) = (&row.scores.bio, &row.scores.batch);
    vec![
        ("total", row.total),
        ("bio", row.bio),
        ("batch", row.batch),
        ("silhouette_label", b.silhouette_label),
        ("clisi", b.clisi),
        ("leiden_nmi", b.leiden_nmi),
        ("leiden_ari", b.leiden_ari),
        ("silhouette_batch", c.silhouette_batch),
        ("ilisi", c.ilisi),
        ("kbet", c.kbet),
        ("graph_connectivity", c.graph_connectivity),
        ("seconds", row.seconds),
    ]
}

/// One method over the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub method: Method,
    /// Every metric's mean and sd, by name (as [`Row`] names them).
    pub metrics: Vec<(String, Spread)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_ari: Option<Spread>,
}

impl Summary {
    pub fn get(&self, name: &str) -> f64 {
        self.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map_or(f64::NAN, |(_, s)| s.mean)
    }
}

fn summarise(rows: &[Row]) -> Vec<Summary> {
    let mut methods: Vec<&Method> = Vec::new();
    for row in rows {
        if !methods.contains(&&row.method) {
            methods.push(&row.method);
        }
    }
    methods
        .into_iter()
        .filter_map(|method| {
            let mine: Vec<&Row> = rows.iter().filter(|r| &r.method == method).collect();
            let first = mine.first()?;
            let metrics = metric_values(first)
                .iter()
                .enumerate()
                .map(|(i, (name, _))| {
                    let values: Vec<f64> = mine.iter().map(|r| metric_values(r)[i].1).collect();
                    ((*name).to_owned(), spread(&values))
                })
                .collect();
            let aris: Vec<f64> = mine.iter().filter_map(|r| r.cluster_ari).collect();
            Some(Summary {
                method: method.clone(),
                metrics,
                cluster_ari: (!aris.is_empty()).then(|| spread(&aris)),
            })
        })
        .collect()
}

/// What the acceptance of the integration study asks of one dataset, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    /// The batch-aware VAE's total at least unintegrated PCA's ... (see the report).
    pub vae_batch_total: f64,
    pub vae_batch_correction_above_plain_vae: bool,
    pub vae_batch_bio_at_least_pca: bool,
    pub gmvae_clusters_ari_at_least_leiden_on_vae_batch: bool,
}

fn checks(summary: &[Summary]) -> Option<Checks> {
    let find = |m: Method| summary.iter().find(|s| s.method == m);
    let (pca, vae, aware, gmvae) = (
        find(Method::Pca)?,
        find(Method::Vae)?,
        find(Method::VaeBatch)?,
        find(Method::GmvaeBatch)?,
    );
    Some(Checks {
        vae_batch_total: aware.get("total"),
        vae_batch_correction_above_plain_vae: aware.get("batch") > vae.get("batch"),
        vae_batch_bio_at_least_pca: aware.get("bio") >= pca.get("bio"),
        gmvae_clusters_ari_at_least_leiden_on_vae_batch: gmvae
            .cluster_ari
            .is_some_and(|a| a.mean >= aware.get("leiden_ari")),
    })
}

/// scIB's neighbours per cell, fewer for data of 90 cells or fewer.
fn neighbours_for(cells: usize) -> usize {
    scae_eval::LISI_NEIGHBORS.min(cells.saturating_sub(1))
}

/// The integration scores of the labelled rows of `x`: [`scae_eval::integration_scores`], or
/// the same metrics on `neighbours` neighbours when the data are too few for scIB's 90.
fn score(
    x: ArrayView2<'_, f32>,
    batches: &[usize],
    labels: &[usize],
    neighbours: usize,
    seed: u64,
) -> Result<IntegrationScores> {
    if neighbours == scae_eval::LISI_NEIGHBORS {
        return Ok(scae_eval::integration_scores(x, batches, labels, seed)?);
    }
    let nn = Neighbors::exact(x, neighbours)?;
    let graph = nn.truncate(scae_eval::GRAPH_NEIGHBORS.min(neighbours))?;
    let kbet = nn.truncate(scae_eval::KBET_NEIGHBORS.min(neighbours))?;
    let leiden = scae_eval::nmi_ari_cluster_labels_leiden(&graph, labels, seed)?;
    Ok(IntegrationScores {
        bio: scae_eval::BioConservation {
            silhouette_label: scae_eval::silhouette_label(x, labels)?,
            clisi: scae_eval::clisi_knn(&nn, labels)?,
            leiden_nmi: leiden.nmi,
            leiden_ari: leiden.ari,
        },
        batch: scae_eval::BatchCorrection {
            silhouette_batch: scae_eval::silhouette_batch(x, batches, labels)?,
            ilisi: scae_eval::ilisi_knn(&nn, batches)?,
            kbet: scae_eval::kbet_per_label(&kbet, batches, labels, scae_eval::KBET_ALPHA)?.score,
            graph_connectivity: scae_eval::graph_connectivity(&graph, labels)?,
        },
    })
}

/// The metrics file of one dataset.
#[derive(Debug, Serialize)]
struct Metrics<'a> {
    provenance: crate::provenance::Provenance,
    config: &'a IntegrateStudy,
    batch_key: &'a str,
    batches: &'a [String],
    cell_types: &'a [String],
    unlabelled_cells: usize,
    genes: usize,
    neighbours: usize,
    rows: &'a [Row],
    summary: &'a [Summary],
    checks: Option<Checks>,
}

/// One dataset's results, for the table across datasets.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    pub data: PathBuf,
    pub cells: usize,
    pub genes: usize,
    pub batches: usize,
    pub cell_types: usize,
    pub seeds: usize,
    pub summary: Vec<Summary>,
    pub checks: Option<Checks>,
    pub results: PathBuf,
}

/// `scae integrate`: one dataset, or every multi-batch `.h5ad` under `--all`.
pub fn run(args: &IntegrateArgs) -> Result<()> {
    match &args.all {
        Some(dir) => run_all(dir, args),
        None => {
            run_dataset(&args.run, &args.batch, &given_embeddings(&args.embeddings)?).map(|_| ())
        }
    }
}

/// The batch key of a run: the first of `--batch-key` (more keys are further covariates of the
/// batch-aware models).
fn batch_key(batch: &BatchArgs) -> Result<&str> {
    batch
        .batch_keys
        .first()
        .map(String::as_str)
        .context("scae integrate needs --batch-key (the obs column of each cell's batch)")
}

/// The study on the data of `args`; returns its summary for a table across datasets.
pub fn run_dataset(
    args: &RunArgs,
    batch: &BatchArgs,
    given: &[(String, PathBuf)],
) -> Result<DatasetSummary> {
    let clock = RunClock::start();
    let cfg = IntegrateStudy::load(&args.config_path("integrate"))?;
    let key = batch_key(batch)?.to_owned();
    let mut cfg = cfg;
    if let Some(n) = args.top_genes {
        cfg.top_genes = n;
    }
    if args.labels_key.is_none() && args.labels.is_none() {
        bail!(
            "scae integrate scores cell types: give --labels-key (the obs column of each cell's type)"
        );
    }
    let mut data = load_counts(
        args,
        None,
        cfg.seeds[0],
        scae_io::GeneChoice::All,
        scae_io::Reading::Memory,
        &batch.batch_keys,
    )?;
    let covariates = covariates_of(&mut data, &batch.batch_keys)?;
    let batch_names = covariates[0].categories.clone();
    if batch_names.len() < 2 {
        bail!(
            "{}: obs column {key} holds one batch only; integration needs at least two",
            data.source.data.display()
        );
    }
    let Some(labels) = data.labels.clone() else {
        bail!("{}: no cell types were read", data.source.data.display());
    };
    if labels.names.len() < 2 {
        bail!(
            "{}: the labels name a single cell type; integration scores need at least two",
            data.source.data.display()
        );
    }
    let cells = data.n_cells();
    cfg.tsne
        .check_cells(cells)
        .with_context(|| format!("t-SNE of {cells} cells"))?;
    let given: Vec<(String, Array2<f32>)> = given
        .iter()
        .map(|(name, path)| Ok((name.clone(), load_given(name, path, &data.cells)?)))
        .collect::<Result<_>>()?;
    let run = Run::start(args, clock, "integrate", cfg.device, cfg.threads)?;
    let device = run.device;
    let timer = Instant::now();
    let prepared = prepare_genes(&data, cfg.top_genes, cfg.pca_components)?;
    let pca_seconds = timer.elapsed().as_secs_f64();
    let colouring = Colouring::new(Some(&labels), cells);
    let truth = colouring.truth();
    let batch_codes: Vec<usize> = data
        .fields
        .get(&key)
        .context("the batch field")?
        .iter()
        .map(|&c| c as usize)
        .collect();
    let scored_batches = colouring.pick(&batch_codes);
    let neighbours = neighbours_for(truth.len());
    if neighbours < scae_eval::LISI_NEIGHBORS {
        tracing::warn!(
            cells = truth.len(),
            neighbours,
            "fewer labelled cells than scIB's 90 neighbours: the scores use {neighbours}"
        );
    }
    let k = labels.names.len();
    let aware_vae = VaeConfig {
        covariates: covariates.clone(),
        ..cfg.vae.model.clone()
    };
    let mut gmvae_cfg = cfg.gmvae.model.clone();
    gmvae_cfg.components = k;
    gmvae_cfg.vae.covariates = covariates;
    let recipe = Recipe {
        train: &cfg.gmvae.train,
        init: Some(&cfg.gmvae_init),
        scores: &cfg.scores,
    };

    let mut rows = Vec::new();
    let mut first: Vec<(Method, Array2<f32>)> = Vec::new();
    for &seed in &cfg.seeds {
        let mut push = |method: Method,
                        x: ArrayView2<'_, f32>,
                        seconds: f64,
                        cluster_ari: Option<f64>|
         -> Result<()> {
            let labelled = colouring.labelled_rows(x);
            let scores = score(labelled.view(), &scored_batches, &truth, neighbours, seed)
                .with_context(|| format!("scoring {}", method.label()))?;
            let (bio, batch) = (scores.bio.mean(), scores.batch.mean());
            tracing::info!(
                seed,
                total = format!("{:.3}", scores.total()),
                bio = format!("{bio:.3}"),
                batch = format!("{batch:.3}"),
                "{}",
                method.label()
            );
            rows.push(Row {
                seed,
                method,
                total: scores.total(),
                bio,
                batch,
                scores,
                cluster_ari,
                seconds,
            });
            Ok(())
        };
        push(Method::Pca, prepared.pcs.view(), pca_seconds, None)?;
        for (name, x) in &given {
            push(Method::Given(name.clone()), x.view(), f64::NAN, None)?;
        }
        let split = CountSplit::of(&prepared.counts, cfg.test_fraction, seed)?;
        let latent_of = |name: &str, model: &VaeConfig| -> Result<_> {
            let timer = Instant::now();
            let vae = super::vae::train(
                &format!("{name} {seed}"),
                model,
                &cfg.vae.train,
                seed,
                &split,
                device,
            )?;
            let latent = vae.latent_means(&split)?;
            Ok((vae, latent, timer.elapsed().as_secs_f64()))
        };
        let (_, plain, plain_seconds) = latent_of("nb vae", &cfg.vae.model)?;
        push(Method::Vae, plain.view(), plain_seconds, None)?;
        let (aware, aware_latent, aware_seconds) = latent_of("nb vae + batch", &aware_vae)?;
        push(Method::VaeBatch, aware_latent.view(), aware_seconds, None)?;

        // The GMVAE starts from the batch-aware VAE, its components at k-means clusters of
        // that VAE's latent means.
        let timer = Instant::now();
        let kmeans = ScoreConfig {
            seed,
            ..cfg.scores.clone()
        };
        let start_clusters = kmeans.kmeans(aware_latent.view(), k)?;
        let trained = recipe.train(
            &gmvae_cfg,
            seed,
            &split,
            GmvaeStart::Vae {
                vae: &aware.net,
                latent: aware_latent.view(),
                clusters: &start_clusters,
            },
            device,
        )?;
        let all = split.all()?;
        let chunk = cfg.gmvae.train.eval_chunk(split.counts.genes());
        let q_y = trained.net.cluster_probabilities(&all, chunk)?;
        let assigned = scae_models::row_argmax(q_y.view()).to_vec();
        let gmvae_latent = trained.net.latent_means(&all, chunk)?;
        let cluster_ari = scae_eval::adjusted_rand_index(&truth, &colouring.pick(&assigned))?;
        push(
            Method::GmvaeBatch,
            gmvae_latent.view(),
            aware_seconds + timer.elapsed().as_secs_f64(),
            Some(cluster_ari),
        )?;
        if first.is_empty() {
            first = vec![
                (Method::Pca, prepared.pcs.clone()),
                (Method::Vae, plain),
                (Method::VaeBatch, aware_latent),
                (Method::GmvaeBatch, gmvae_latent),
            ];
            first.extend(
                given
                    .iter()
                    .map(|(name, x)| (Method::Given(name.clone()), x.clone())),
            );
        }
    }
    let summary = summarise(&rows);
    let checks = checks(&summary);
    write_scores_csv(run.path(), &rows)?;
    // What a peer needs to see the same input: the PCA scored here (Harmony corrects it) and the
    // genes the models read (scVI trains on them).
    scae_io::write_npy(&run.path().join("pca.npy"), &prepared.pcs.view())?;
    scae_io::write_labels(&run.path().join("genes.txt"), &prepared.counts.var_names)?;
    let batch_colouring = Colouring::groups(batch_names.clone(), batch_codes);
    figures(run.path(), &cfg, &colouring, &batch_colouring, &key, &first)?;
    let report = report(
        &cfg,
        &data,
        &key,
        &batch_names,
        &labels.names,
        neighbours,
        &summary,
        checks.as_ref(),
    );
    run.write_report(&report)?;
    let metrics = Metrics {
        provenance: run.provenance(cfg.seeds[0], &prepared.counts.source),
        config: &cfg,
        batch_key: &key,
        batches: &batch_names,
        cell_types: &labels.names,
        unlabelled_cells: colouring.missing(),
        genes: prepared.genes.len(),
        neighbours,
        rows: &rows,
        summary: &summary,
        checks: checks.clone(),
    };
    let dest = run.finish(&metrics)?;
    for s in &summary {
        eprintln!(
            "{:<36} total {:.3}, bio {:.3}, batch {:.3}{}, {} s",
            s.method.label(),
            s.get("total"),
            s.get("bio"),
            s.get("batch"),
            s.cluster_ari.map_or_else(String::new, |a| format!(
                ", own clusters' ARI {:.3}",
                a.mean
            )),
            seconds(s.get("seconds")),
        );
    }
    eprintln!("integration results written to {}", dest.display());
    Ok(DatasetSummary {
        data: data.source.data.clone(),
        cells,
        genes: prepared.genes.len(),
        batches: batch_names.len(),
        cell_types: labels.names.len(),
        seeds: cfg.seeds.len(),
        summary,
        checks,
        results: dest,
    })
}

/// Seconds as the tables print them: `-` for an embedding made elsewhere.
fn seconds(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "-".into()
    }
}

fn write_scores_csv(dir: &Path, rows: &[Row]) -> Result<()> {
    let mut csv = String::from("seed,method");
    if let Some(first) = rows.first() {
        for (name, _) in metric_values(first) {
            let _ = write!(csv, ",{name}");
        }
    }
    csv.push_str(",cluster_ari\n");
    for row in rows {
        let _ = write!(csv, "{},{}", row.seed, row.method.file());
        for (_, v) in metric_values(row) {
            let _ = write!(csv, ",{v}");
        }
        let _ = writeln!(
            csv,
            ",{}",
            row.cluster_ari.map_or_else(String::new, |v| v.to_string())
        );
    }
    scae_io::write_atomic(&dir.join("scores.csv"), |w| {
        std::io::Write::write_all(w, csv.as_bytes())
    })?;
    Ok(())
}

/// The first seed's embeddings, each by t-SNE (PCA's and the latents'), coloured by batch and
/// by cell type, one figure each with a panel per method.
fn figures(
    dir: &Path,
    cfg: &IntegrateStudy,
    types: &Colouring,
    batches: &Colouring,
    key: &str,
    embeddings: &[(Method, Array2<f32>)],
) -> Result<()> {
    let seed = cfg.seeds[0];
    let mut panels = Vec::new();
    for (method, x) in embeddings {
        let e = super::embed::tsne_embedding(
            &format!("{} (seed {seed})", method.short()),
            x.view(),
            &cfg.tsne,
        )?;
        panels.push((format!("tsne_{}", method.file()), e));
    }
    let refs: Vec<(&str, &super::embed::Embedding)> =
        panels.iter().map(|(f, e)| (f.as_str(), e)).collect();
    super::embed::save_figure(
        dir,
        "embedding_by_batch",
        &format!("t-SNE of each embedding, coloured by batch ({key})"),
        batches,
        &refs,
    )?;
    super::embed::save_figure(
        dir,
        "embedding_by_cell_type",
        "t-SNE of each embedding, coloured by cell type",
        types,
        &refs,
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    cfg: &IntegrateStudy,
    data: &crate::data::CountData,
    key: &str,
    batches: &[String],
    types: &[String],
    neighbours: usize,
    summary: &[Summary],
    checks: Option<&Checks>,
) -> String {
    let mut md = String::from("# Integration: batch effect against biology\n\n");
    let _ = writeln!(
        md,
        "{} cells x {} genes ({}), {} batches in obs column `{key}` ({}), {} cell types; {} \
         seeds ({:?}), scIB metrics on {neighbours} neighbours per cell.\n",
        data.n_cells(),
        data.n_genes(),
        data.source.data.display(),
        batches.len(),
        batches.join(", "),
        types.len(),
        cfg.seeds.len(),
        cfg.seeds,
    );
    super::embed::unlabelled_note(&mut md, &data.source);
    md.push_str(
        "| method | total | bio | batch | batch ASW | iLISI | kBET | graph conn. | label ASW | \
         cLISI | NMI | ARI | own clusters' ARI | seconds |\n|---|---:|---:|---:|---:|---:|---:|\
         ---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in summary {
        let cell = |name: &str| {
            let spread = s.metrics.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            spread.map_or_else(|| "-".into(), |v| format!("{:.3} ± {:.3}", v.mean, v.sd))
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.method.label(),
            cell("total"),
            cell("bio"),
            cell("batch"),
            cell("silhouette_batch"),
            cell("ilisi"),
            cell("kbet"),
            cell("graph_connectivity"),
            cell("silhouette_label"),
            cell("clisi"),
            cell("leiden_nmi"),
            cell("leiden_ari"),
            s.cluster_ari
                .map_or_else(|| "-".into(), |v| format!("{:.3} ± {:.3}", v.mean, v.sd)),
            seconds(s.get("seconds")),
        );
    }
    if let Some(c) = checks {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let _ = write!(
            md,
            "\nThe batch-aware VAE's batch correction above the VAE without the batch: {}; its \
             bio conservation at least unintegrated PCA's: {}; the GMVAE's own clusters' ARI at \
             least Leiden's on the batch-aware VAE latent: {}.\n",
            yes(c.vae_batch_correction_above_plain_vae),
            yes(c.vae_batch_bio_at_least_pca),
            yes(c.gmvae_clusters_ari_at_least_leiden_on_vae_batch),
        );
    }
    md.push_str(
        "\nFigures: `embedding_by_batch.png` and `embedding_by_cell_type.png` (t-SNE of each \
         embedding of the first seed).\n",
    );
    md
}

/// One dataset of the table across datasets.
#[derive(Debug, Serialize)]
struct Entry {
    name: String,
    seconds: f64,
    #[serde(flatten)]
    summary: DatasetSummary,
}

/// Every `.h5ad` file under `dir` (sorted) whose `obs` holds both `batch_key` and `labels_key`.
fn multi_batch_files(
    dir: &Path,
    batch_key: &str,
    labels_key: &str,
) -> Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("{}: cannot list", d.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "h5ad") {
                let file = scae_io::H5adRows::open(&path, None)?;
                if [batch_key, labels_key]
                    .iter()
                    .all(|key| file.obs_column(key).is_ok())
                {
                    let name = path
                        .file_stem()
                        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
                    found.push((name, path));
                }
            }
        }
    }
    found.sort();
    if found.is_empty() {
        bail!(
            "{}: no .h5ad file with obs columns {batch_key} and {labels_key}",
            dir.display()
        );
    }
    Ok(found)
}

/// `scae integrate --all DIR`.
fn run_all(dir: &Path, args: &IntegrateArgs) -> Result<()> {
    let key = batch_key(&args.batch)?;
    let Some(labels_key) = &args.run.labels_key else {
        bail!("--all needs --labels-key (the obs column of each cell's type)");
    };
    let datasets = multi_batch_files(dir, key, labels_key)?;
    let out = args.run.out_dir("integrate-all");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let clock = Instant::now();
    let mut entries = Vec::new();
    for (i, (name, path)) in datasets.iter().enumerate() {
        eprintln!(
            "integrate --all: dataset {} of {}, {name} ({})",
            i + 1,
            datasets.len(),
            path.display()
        );
        let mut run = args.run.clone();
        run.data = Some(path.clone());
        run.out = Some(out.join(name));
        let timer = Instant::now();
        let summary =
            run_dataset(&run, &args.batch, &[]).with_context(|| format!("dataset {name}"))?;
        entries.push(Entry {
            name: name.clone(),
            seconds: timer.elapsed().as_secs_f64(),
            summary,
        });
    }
    let total = clock.elapsed().as_secs_f64();
    let mut md = String::from(
        "# Integration across datasets\n\n| dataset | method | total | bio | batch | own clusters' ARI | seconds |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    let mut csv = String::from("dataset,method,total,bio,batch,cluster_ari,seconds\n");
    for e in &entries {
        for s in &e.summary.summary {
            let ari = s.cluster_ari.map(|a| a.mean);
            let _ = writeln!(
                md,
                "| {} | {} | {:.3} | {:.3} | {:.3} | {} | {:.1} |",
                e.name,
                s.method.label(),
                s.get("total"),
                s.get("bio"),
                s.get("batch"),
                ari.map_or_else(|| "-".into(), |a| format!("{a:.3}")),
                s.get("seconds"),
            );
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{},{}",
                e.name,
                s.method.file(),
                s.get("total"),
                s.get("bio"),
                s.get("batch"),
                ari.map_or_else(String::new, |a| a.to_string()),
                s.get("seconds"),
            );
        }
    }
    scae_io::write_atomic(&out.join("table.md"), |w| {
        std::io::Write::write_all(w, md.as_bytes())
    })?;
    scae_io::write_atomic(&out.join("table.csv"), |w| {
        std::io::Write::write_all(w, csv.as_bytes())
    })?;
    write_json(
        &out.join("table.json"),
        &serde_json::json!({ "seconds": total, "datasets": entries }),
    )?;
    eprintln!("{md}");
    eprintln!(
        "integrate on {} datasets in {total:.0} s: {}",
        entries.len(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses_and_validates() {
        let path = Path::new(crate::config::BUILT_IN_DIR).join("integrate.toml");
        let cfg = IntegrateStudy::load(&path).expect("the shipped integrate.toml");
        assert_eq!(cfg.seeds.len(), 3);
        assert_eq!(cfg.vae.model.likelihood, scae_models::Likelihood::Nb);
        assert!(cfg.vae.model.covariates.is_empty());
        // A config that writes the covariates itself is refused: they come from the data.
        let mut bad = cfg.clone();
        bad.vae.model.covariates = vec![scae_models::Covariate {
            key: "batch".into(),
            categories: vec!["a".into()],
        }];
        assert!(bad.validate().is_err());
    }

    #[test]
    fn the_summary_gives_mean_and_sd_over_seeds_and_the_checks_compare_methods() {
        let scores = |bio: f64, batch: f64| IntegrationScores {
            bio: scae_eval::BioConservation {
                silhouette_label: bio,
                clisi: bio,
                leiden_nmi: bio,
                leiden_ari: bio,
            },
            batch: scae_eval::BatchCorrection {
                silhouette_batch: batch,
                ilisi: batch,
                kbet: batch,
                graph_connectivity: batch,
            },
        };
        let mut rows = Vec::new();
        for (seed, shift) in [(0, 0.0), (1, 0.1)] {
            for (method, bio, batch) in [
                (Method::Pca, 0.7, 0.5),
                (Method::Vae, 0.8, 0.6),
                (Method::VaeBatch, 0.8, 0.8),
                (Method::GmvaeBatch, 0.85, 0.8),
            ] {
                let s = scores(bio + shift, batch);
                let cluster_ari = (method == Method::GmvaeBatch).then_some(0.9);
                rows.push(Row {
                    seed,
                    method,
                    total: s.total(),
                    bio: s.bio.mean(),
                    batch: s.batch.mean(),
                    scores: s,
                    cluster_ari,
                    seconds: 1.0,
                });
            }
        }
        let summary = summarise(&rows);
        assert_eq!(summary.len(), 4);
        let pca = &summary[0];
        assert!((pca.get("bio") - 0.75).abs() < 1e-12);
        let sd = pca
            .metrics
            .iter()
            .find(|(n, _)| n == "bio")
            .expect("bio")
            .1
            .sd;
        assert!((sd - 0.1 / 2f64.sqrt()).abs() < 1e-12, "{sd}");
        assert!((pca.get("total") - (0.6 * 0.75 + 0.4 * 0.5)).abs() < 1e-12);
        let c = checks(&summary).expect("every method");
        assert!(c.vae_batch_correction_above_plain_vae);
        assert!(c.vae_batch_bio_at_least_pca);
        // Leiden's ARI on the batch-aware VAE is its bio value (0.8, 0.9): mean 0.85 < 0.9.
        assert!(c.gmvae_clusters_ari_at_least_leiden_on_vae_batch);
    }
}
