//! `scae gmvae-ablation --all DIR`: what each choice of the GMVAE's recipe adds, measured on
//! every labelled dataset under a folder over the study's seeds.
//!
//! `configs/gmvae-ablation.toml` names a `gmvae-real` config (`study`) and variants of it, each
//! a change to its `gmvae` and `gmvae_init` tables only. On each dataset and seed one split, one
//! NB VAE (baseline (c), and the start of every variant with `from_vae`) and one PCA serve every
//! variant, so the variants differ in their own choices alone. Each variant's GMVAE is scored
//! by the ARI of its own assignment (argmax `q(y | x)`, K = the number of labels) and of the
//! clusters it started from. Writes `results/gmvae-ablation/`: `ablation.csv` (one row per
//! dataset, seed and variant), `report.md` (variants x datasets, mean ± sd), `metrics.json`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::embed::ScoreConfig;
use super::gmvae_real::{
    GmvaeRealStudy, Spread, distinct, labels_and_k, prepare, seed_baseline, spread, start_of,
    train_gmvae,
};
use super::gmvae_table::labelled_datasets;
use super::vae::load_counts;
use super::{Run, RunArgs};
use crate::config::{StudyConfig, read_toml};
use crate::provenance::RunClock;
use scae_models::GmvaeConfig;

/// Options of `scae gmvae-ablation`.
#[derive(Debug, Clone, clap::Args)]
pub struct GmvaeAblationArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Every labelled dataset under this folder (see `scae gmvae-real --all`); without it, the
    /// one dataset of --data.
    #[arg(long, value_name = "DIR", conflicts_with = "data")]
    pub all: Option<PathBuf>,
}

/// `configs/gmvae-ablation.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AblationConfig {
    /// The `gmvae-real` config the variants change, relative to this file's folder.
    pub study: String,
    pub variants: Vec<Variant>,
}

/// One variant: a name and its change to the study config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    /// Keys of the study's `gmvae` and `gmvae_init` tables, merged into them.
    #[serde(default)]
    pub change: toml::Table,
}

/// One variant's GMVAE on one dataset and seed.
#[derive(Debug, Clone, Serialize)]
struct AblationRow {
    dataset: String,
    seed: u64,
    variant: String,
    /// Own assignment, and the clusters it started from (none without a start).
    ari: f64,
    start_ari: Option<f64>,
    components_used: usize,
    /// The median epoch's training steps.
    epoch_seconds: f64,
    seconds: f64,
}

/// Baselines on one dataset and seed.
#[derive(Debug, Clone, Serialize)]
struct BaselineRow {
    dataset: String,
    seed: u64,
    vae_kmeans_ari: f64,
    pca_kmeans_ari: f64,
    vae_epoch_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Metrics<'a> {
    provenance: crate::provenance::Provenance,
    config: &'a AblationConfig,
    studies: &'a [(String, GmvaeRealStudy)],
    rows: &'a [AblationRow],
    baselines: &'a [BaselineRow],
}

/// Every leaf of `table` as `` `a.b.key = value` ``, in order.
fn dotted(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        match value {
            toml::Value::Table(t) => dotted(t, &format!("{path}."), out),
            leaf => out.push(format!("`{path} = {leaf}`")),
        }
    }
}

/// Merges `change` into `base`, table by table.
fn merge(base: &mut toml::Table, change: &toml::Table) {
    for (key, value) in change {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(c)) => merge(b, c),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

impl AblationConfig {
    /// Each variant's study config, checked.
    fn studies(&self, path: &std::path::Path) -> Result<Vec<(String, GmvaeRealStudy)>> {
        if self.variants.is_empty() {
            bail!("{}: name at least one variant", path.display());
        }
        let study_path = path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(&self.study);
        let base: toml::Table = read_toml(&study_path)?;
        let mut out = Vec::new();
        for v in &self.variants {
            if let Some(key) = v
                .change
                .keys()
                .find(|k| !["gmvae", "gmvae_init"].contains(&k.as_str()))
            {
                bail!(
                    "{}: variant {:?} changes {key}; variants change gmvae and gmvae_init only",
                    path.display(),
                    v.name
                );
            }
            if out.iter().any(|(name, _)| name == &v.name) {
                bail!("{}: two variants are named {:?}", path.display(), v.name);
            }
            let mut table = base.clone();
            // The ablation runs the GMVAE with K given alone.
            table.remove("leiden");
            merge(&mut table, &v.change);
            let study: GmvaeRealStudy = table.try_into().map_err(|e: toml::de::Error| {
                anyhow::anyhow!("{}: variant {:?}: {}", path.display(), v.name, e.message())
            })?;
            study
                .validate()
                .with_context(|| format!("{}: variant {:?}", path.display(), v.name))?;
            out.push((v.name.clone(), study));
        }
        Ok(out)
    }
}

/// `scae gmvae-ablation`.
pub fn run(args: &GmvaeAblationArgs) -> Result<()> {
    let clock = RunClock::start();
    let path = args.run.config_path("gmvae-ablation");
    let cfg: AblationConfig = read_toml(&path)?;
    let mut studies = cfg.studies(&path)?;
    if let Some(n) = args.run.top_genes {
        for (_, study) in &mut studies {
            study.top_genes = n;
        }
    }
    let base = &studies[0].1;
    let datasets: Vec<(String, Option<PathBuf>)> = match &args.all {
        Some(dir) => labelled_datasets(dir, args.run.labels_key.is_some())?
            .into_iter()
            .map(|(n, p)| (n, Some(p)))
            .collect(),
        None => vec![("data".into(), args.run.data.clone())],
    };
    let run = Run::start(
        &args.run,
        clock,
        "gmvae-ablation",
        base.device,
        base.threads,
    )?;
    let device = run.device;
    let mut rows = Vec::new();
    let mut baselines = Vec::new();
    let mut sources = Vec::new();
    for (name, path) in &datasets {
        let mut run_args = args.run.clone();
        run_args.data = path.clone();
        let data = load_counts(
            &run_args,
            None,
            base.seeds[0],
            scae_io::GeneChoice::All,
            scae_io::Reading::Memory,
            &[],
        )
        .with_context(|| format!("dataset {name}"))?;
        let (labels, k) = labels_and_k(&data, base)?;
        let prepared = prepare(&data, base)?;
        let truth = &labels.known_codes();
        for &seed in &base.seeds {
            let scores = ScoreConfig {
                seed,
                ..base.scores.clone()
            };
            let baseline = seed_baseline(base, &prepared, k, seed, name, device)?;
            let (split, vae) = (&baseline.split, &baseline.vae);
            let (vae_latent, vae_kmeans) = (&baseline.latent, &baseline.kmeans);
            let pca_kmeans = scores.kmeans(prepared.pcs.view(), k)?;
            baselines.push(BaselineRow {
                dataset: name.clone(),
                seed,
                vae_kmeans_ari: scae_eval::adjusted_rand_index(truth, &labels.pick(vae_kmeans))?,
                pca_kmeans_ari: scae_eval::adjusted_rand_index(truth, &labels.pick(&pca_kmeans))?,
                vae_epoch_seconds: vae.history.median_train_seconds(),
            });
            for (variant, study) in &studies {
                let gmvae_cfg = GmvaeConfig {
                    components: k,
                    ..study.gmvae.model.clone()
                };
                let start = start_of(study, vae, vae_latent, vae_kmeans);
                let trained = train_gmvae(study, &gmvae_cfg, seed, split, start, device)
                    .with_context(|| format!("dataset {name}, variant {variant:?}"))?;
                let chunk = study.gmvae.train.eval_chunk(split.counts.genes());
                let q_y = trained.net.cluster_probabilities(&split.all()?, chunk)?;
                let assigned = scae_models::row_argmax(q_y.view()).to_vec();
                let row = AblationRow {
                    dataset: name.clone(),
                    seed,
                    variant: variant.clone(),
                    ari: scae_eval::adjusted_rand_index(truth, &labels.pick(&assigned))?,
                    start_ari: match &trained.start {
                        Some((clusters, _)) => Some(scae_eval::adjusted_rand_index(
                            truth,
                            &labels.pick(clusters),
                        )?),
                        None => None,
                    },
                    components_used: distinct(&assigned),
                    epoch_seconds: trained.history.median_train_seconds(),
                    seconds: trained.seconds,
                };
                tracing::info!(
                    dataset = name.as_str(),
                    seed,
                    variant = variant.as_str(),
                    ari = format!("{:.3}", row.ari),
                    start = row.start_ari.map(|a| format!("{a:.3}")),
                    "ablation"
                );
                rows.push(row);
            }
        }
        sources.push(prepared.counts.source.clone());
    }
    let md = report(&cfg, &datasets, &rows, &baselines);
    run.write_report(&md)?;
    let mut csv =
        String::from("dataset,seed,variant,ari,start_ari,components_used,epoch_seconds,seconds\n");
    for r in &rows {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{:.4},{:.2}",
            r.dataset,
            r.seed,
            r.variant,
            r.ari,
            r.start_ari.map_or_else(String::new, |a| a.to_string()),
            r.components_used,
            r.epoch_seconds,
            r.seconds
        );
    }
    scae_io::write_atomic(&run.path().join("ablation.csv"), |w| {
        std::io::Write::write_all(w, csv.as_bytes())
    })?;
    let metrics = Metrics {
        provenance: run.provenance(base.seeds[0], &sources[0]),
        config: &cfg,
        studies: &studies,
        rows: &rows,
        baselines: &baselines,
    };
    let dest = run.finish(&metrics)?;
    eprintln!("{md}");
    eprintln!("GMVAE ablation written to {}", dest.display());
    Ok(())
}

fn report(
    cfg: &AblationConfig,
    datasets: &[(String, Option<PathBuf>)],
    rows: &[AblationRow],
    baselines: &[BaselineRow],
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# GMVAE ablation\n");
    let _ = writeln!(
        md,
        "Each variant changes `{}` as below. ARI of the GMVAE's own assignment (K = the number \
         of labels), mean ± sd over the seeds; in brackets, the mean ARI of the clusters it \
         started from, and the mean change from them.\n",
        cfg.study
    );
    let fmt = |s: Spread| format!("{:.3} ± {:.3}", s.mean, s.sd);
    let _ = write!(md, "| variant |");
    for (name, _) in datasets {
        let _ = write!(md, " {name} |");
    }
    let _ = writeln!(md, " mean over datasets |");
    let _ = writeln!(md, "|---|{}---:|", "---:|".repeat(datasets.len()));
    for v in &cfg.variants {
        let _ = write!(md, "| {} |", v.name);
        let mut means = Vec::new();
        for (name, _) in datasets {
            let of: Vec<&AblationRow> = rows
                .iter()
                .filter(|r| &r.dataset == name && r.variant == v.name)
                .collect();
            let ari = spread(&of.iter().map(|r| r.ari).collect::<Vec<_>>());
            means.push(ari.mean);
            let starts: Vec<f64> = of.iter().filter_map(|r| r.start_ari).collect();
            if starts.is_empty() {
                let _ = write!(md, " {} |", fmt(ari));
            } else {
                let start = spread(&starts).mean;
                let _ = write!(
                    md,
                    " {} (start {start:.3}, {:+.3}) |",
                    fmt(ari),
                    ari.mean - start
                );
            }
        }
        let _ = writeln!(md, " {:.3} |", spread(&means).mean);
    }
    for (label, f) in [
        (
            "(c) k-means on the NB VAE latent",
            (|b: &BaselineRow| b.vae_kmeans_ari) as fn(&BaselineRow) -> f64,
        ),
        ("(d) k-means on PCA", |b: &BaselineRow| b.pca_kmeans_ari),
    ] {
        let _ = write!(md, "| {label} |");
        let mut means = Vec::new();
        for (name, _) in datasets {
            let v: Vec<f64> = baselines
                .iter()
                .filter(|b| &b.dataset == name)
                .map(f)
                .collect();
            let s = spread(&v);
            means.push(s.mean);
            let _ = write!(md, " {} |", fmt(s));
        }
        let _ = writeln!(md, " {:.3} |", spread(&means).mean);
    }
    let _ = writeln!(md, "\n## Epoch cost against the VAE's\n");
    let _ = writeln!(
        md,
        "Median epoch's training steps, GMVAE / NB VAE, mean over seeds.\n"
    );
    let _ = write!(md, "| variant |");
    for (name, _) in datasets {
        let _ = write!(md, " {name} |");
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "|---|{}", "---:|".repeat(datasets.len()));
    for v in &cfg.variants {
        let _ = write!(md, "| {} |", v.name);
        for (name, _) in datasets {
            let ratios: Vec<f64> = rows
                .iter()
                .filter(|r| &r.dataset == name && r.variant == v.name)
                .filter_map(|r| {
                    baselines
                        .iter()
                        .find(|b| &b.dataset == name && b.seed == r.seed)
                        .map(|b| r.epoch_seconds / b.vae_epoch_seconds)
                })
                .collect();
            let _ = write!(md, " {:.2} |", spread(&ratios).mean);
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "\n## Variants\n");
    for v in &cfg.variants {
        let mut keys = Vec::new();
        dotted(&v.change, "", &mut keys);
        let change = if keys.is_empty() {
            "the study config as it is".to_owned()
        } else {
            keys.join(", ")
        };
        let _ = writeln!(md, "- **{}**: {change}", v.name);
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_ablation_parses_into_valid_studies() {
        let path = std::path::Path::new(crate::config::BUILT_IN_DIR).join("gmvae-ablation.toml");
        let cfg: AblationConfig = read_toml(&path).expect("parses");
        let studies = cfg.studies(&path).expect("valid variants");
        assert!(studies.len() >= 3);
        assert_eq!(studies[0].0, "shipped");
        let mut shipped: GmvaeRealStudy =
            read_toml(&std::path::Path::new(crate::config::BUILT_IN_DIR).join("gmvae-real.toml"))
                .expect("study");
        shipped.leiden = None;
        assert_eq!(
            studies[0].1, shipped,
            "the first variant is the study itself"
        );
        assert!(studies[1..].iter().all(|(_, s)| s != &shipped));
        let mut keys = Vec::new();
        dotted(&cfg.variants[1].change, "", &mut keys);
        assert_eq!(keys, ["`gmvae_init.pseudo_label_epochs = 10`"]);
    }

    #[test]
    fn the_posterior_ablation_parses_into_valid_studies() {
        let path =
            std::path::Path::new(crate::config::BUILT_IN_DIR).join("gmvae-ablation-posterior.toml");
        let cfg: AblationConfig = read_toml(&path).expect("parses");
        let studies = cfg.studies(&path).expect("valid variants");
        assert_eq!(studies.len(), 2);
        assert_eq!(
            studies[1].1.gmvae.model.posterior,
            scae_models::MixturePosterior::PerComponent
        );
    }

    #[test]
    fn a_variant_may_change_only_the_gmvae() {
        let dir = tempfile::tempdir().expect("temp dir");
        let study = dir.path().join("study.toml");
        std::fs::write(&study, include_str!("../../../../configs/gmvae-real.toml")).expect("file");
        let write = |text: &str| {
            let path = dir.path().join("ablation.toml");
            std::fs::write(&path, text).expect("file");
            let cfg: AblationConfig = read_toml(&path).expect("parses");
            cfg.studies(&path)
        };
        let ok = write(
            "study = \"study.toml\"\n[[variants]]\nname = \"a\"\n[variants.change.gmvae.train]\nepochs = 3\n",
        )
        .expect("valid");
        assert_eq!(ok[0].1.gmvae.train.epochs, 3);
        let err = write(
            "study = \"study.toml\"\n[[variants]]\nname = \"a\"\n[variants.change]\nseeds = [1]\n",
        )
        .expect_err("seeds");
        assert!(err.to_string().contains("changes seeds"), "{err}");
        let err = write(
            "study = \"study.toml\"\n[[variants]]\nname = \"a\"\n[variants.change.gmvae.train]\nepoch = 3\n",
        )
        .expect_err("typo");
        assert!(err.to_string().contains("variant \"a\""), "{err}");
        let err = write("study = \"study.toml\"\nvariants = []\n").expect_err("none");
        assert!(err.to_string().contains("at least one variant"), "{err}");
    }
}
