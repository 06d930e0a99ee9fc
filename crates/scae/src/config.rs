//! Study configurations: TOML files under `configs/`, parsed strictly and validated.
//!
//! The shipped `configs/*.toml` are compiled into the binary ([`BUILT_IN`]), so `scae` runs from
//! any folder: a study reads `--config` when given, else `configs/<study>.toml` under `--root`
//! when that file exists (a checkout, as xtask runs it), else its built-in copy, which appears
//! under the made-up folder [`BUILT_IN_DIR`] in paths and messages. Every table denies unknown
//! keys, so a typo is an error rather than a silent default. [`AeStudy::load`] returns a
//! validated config; the resolved config is saved beside every result (see
//! [`crate::provenance`]).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use scae_models::{DeviceChoice, ReconLoss, TrainConfig};
use serde::{Deserialize, Serialize};

/// An autoencoder study: one model per latent size, same data, split and training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AeStudy {
    /// Seeds weight initialisation, the train/test split and the minibatch order.
    pub seed: u64,
    /// CPU threads for libtorch; 0 means every core.
    #[serde(default)]
    pub threads: usize,
    /// `auto`, `cpu` or `cuda` (the command line's `--device` overrides it).
    #[serde(default)]
    pub device: DeviceChoice,
    /// Fraction of cells held out as the test set.
    pub test_fraction: f64,
    /// One model is trained per latent size.
    pub latents: Vec<usize>,
    /// Encoder hidden widths (decoder mirrors them).
    pub hidden: Vec<usize>,
    pub loss: ReconLoss,
    pub train: TrainConfig,
}

/// A study's config: read strictly from TOML, then checked for what serde cannot check.
pub trait StudyConfig: serde::de::DeserializeOwned {
    /// Checks the ranges serde cannot.
    fn validate(&self) -> Result<()>;

    /// Reads and validates a config file.
    fn load(path: &Path) -> Result<Self> {
        let cfg: Self = read_toml(path)?;
        cfg.validate()
            .with_context(|| format!("{}: invalid config", path.display()))?;
        Ok(cfg)
    }
}

/// The checks of the run settings every study shares: at least one seed, and a test fraction
/// that leaves cells on both sides.
pub fn check_run(seeds: &[u64], test_fraction: f64) -> Result<()> {
    if seeds.is_empty() {
        bail!("seeds must name at least one seed");
    }
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        bail!("test_fraction must be in (0, 1), got {test_fraction}");
    }
    Ok(())
}

impl StudyConfig for AeStudy {
    fn validate(&self) -> Result<()> {
        if self.latents.is_empty() {
            bail!("latents is empty: name at least one latent size");
        }
        check_run(&[self.seed], self.test_fraction)?;
        for &latent in &self.latents {
            self.model(latent).validate()?;
        }
        self.train.validate()?;
        Ok(())
    }
}

impl AeStudy {
    /// The model config for one latent size.
    pub fn model(&self, latent: usize) -> scae_models::AeConfig {
        scae_models::AeConfig {
            hidden: self.hidden.clone(),
            latent,
            loss: self.loss,
        }
    }

    /// The thread count to use (resolving 0 to every core).
    pub fn resolved_threads(&self) -> usize {
        resolve_threads(self.threads)
    }
}

/// `0` means every core the process may use.
pub fn resolve_threads(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        // The ranks of a data-parallel job on one machine share its cores.
        let ranks = scae_models::parallel::group().local_size().max(1);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        (cores / ranks).max(1)
    }
}

/// The settings of Q2's analysis (the models themselves come from Q1's config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Q2Config {
    /// Config of the models analysed, relative to this file's folder.
    pub models: String,
    /// Epochs at which the losses are reported.
    pub checkpoints: Vec<usize>,
    /// Relative distances to the final test loss whose first epoch is reported.
    pub within: Vec<f64>,
}

impl Q2Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg: Self = read_toml(path)?;
        if cfg.within.iter().any(|w| !(*w > 0.0 && *w < 1.0)) {
            bail!(
                "{}: every `within` fraction must be in (0, 1)",
                path.display()
            );
        }
        if cfg.checkpoints.contains(&0) {
            bail!("{}: checkpoints are 1-based epochs", path.display());
        }
        Ok(cfg)
    }
}

/// The Q1 config another question builds on, named relative to that question's config file.
pub fn base_study(config_path: &Path, models: &str) -> Result<AeStudy> {
    AeStudy::load(&config_path.parent().unwrap_or(Path::new(".")).join(models))
}

/// Q3: PCA and t-SNE of the original data and of one Q1 model's reconstruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Q3Config {
    /// Config of the models (Q1's), relative to this file's folder.
    pub models: String,
    /// Latent size of the model whose reconstruction is shown.
    pub latent: usize,
    /// Principal components kept for the scores of the full matrices.
    #[serde(default = "default_score_components")]
    pub score_components: usize,
    #[serde(default)]
    pub tsne: scae_eval::TsneParams,
    #[serde(default)]
    pub scores: crate::study::embed::ScoreConfig,
}

/// Q4: retrain Q1's autoencoder with a 2-D latent space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Q4Config {
    /// Training settings (Q1's config), relative to this file's folder; only the latent changes.
    pub models: String,
    pub latent: usize,
    #[serde(default = "default_score_components")]
    pub score_components: usize,
    #[serde(default)]
    pub scores: crate::study::embed::ScoreConfig,
}

/// Q5: Q1's autoencoder trained with another loss, compared with Q1's MSE model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Q5Config {
    /// Training settings and the MSE models compared with (Q1's config), relative to this file.
    pub models: String,
    pub latent: usize,
    /// The loss the new model is trained with.
    pub loss: ReconLoss,
    #[serde(default = "default_score_components")]
    pub score_components: usize,
    #[serde(default)]
    pub tsne: scae_eval::TsneParams,
    #[serde(default)]
    pub scores: crate::study::embed::ScoreConfig,
}

fn default_score_components() -> usize {
    50
}

/// Reads a question's config, rejecting a zero latent size or component count.
pub fn load_question<T: serde::de::DeserializeOwned>(
    path: &Path,
    latent: impl Fn(&T) -> usize,
    components: impl Fn(&T) -> usize,
) -> Result<T> {
    let cfg: T = read_toml(path)?;
    if latent(&cfg) == 0 {
        bail!("{}: latent must be at least 1", path.display());
    }
    if components(&cfg) == 0 {
        bail!("{}: score_components must be at least 1", path.display());
    }
    Ok(cfg)
}

/// `(file name, text)` of each named file of `configs/`, compiled in.
macro_rules! configs {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("../../../configs/", $name)))),*]
    };
}

/// The shipped configs, by file name: `configs/` of the source tree is their one source.
pub const BUILT_IN: [(&str, &str); 13] = configs![
    "q1.toml",
    "q2.toml",
    "q3.toml",
    "q4.toml",
    "q5.toml",
    "vae.toml",
    "vae-synth.toml",
    "vae-likelihoods.toml",
    "gmvae-synth.toml",
    "integrate.toml",
    "gmvae-real.toml",
    "gmvae-ablation.toml",
    "gmvae-ablation-posterior.toml",
];

/// The folder the built-in configs appear in: `<built-in>/configs/q1.toml` names the compiled-in
/// copy of `configs/q1.toml`, and a config's relative reference (Q2-Q5's `models = "q1.toml"`)
/// resolves to a built-in one too.
pub const BUILT_IN_DIR: &str = "<built-in>/configs";

/// The config of `study`: `explicit` (`--config`) when given, else `configs/<study>.toml` under
/// `root` when that file exists, else the built-in copy.
pub fn config_path(explicit: Option<&Path>, root: &Path, study: &str) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    let name = format!("{study}.toml");
    let on_disk = root.join("configs").join(&name);
    if on_disk.is_file() {
        on_disk
    } else {
        Path::new(BUILT_IN_DIR).join(name)
    }
}

/// The text of the built-in config a path names, if it names one.
fn built_in(path: &Path) -> Option<&'static str> {
    let name = path.strip_prefix(BUILT_IN_DIR).ok()?.to_str()?;
    BUILT_IN
        .iter()
        .find(|(file, _)| *file == name)
        .map(|(_, text)| *text)
}

/// Reads a TOML file (or a built-in config) into `T`; errors name the file and fit on one line.
pub(crate) fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = match built_in(path) {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(
            std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read the config", path.display()))?,
        ),
    };
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), one_line(&e.to_string())))
}

/// toml's messages span several lines with a source excerpt; keep them on one.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q1: &str = include_str!("../../../configs/q1.toml");

    #[test]
    fn the_shipped_q1_config_parses() {
        let cfg: AeStudy = toml::from_str(Q1).expect("configs/q1.toml parses");
        cfg.validate().expect("and is valid");
        assert_eq!(cfg.latents, [10, 50]);
        assert_eq!(cfg.train.epochs, 50);
    }

    #[test]
    fn the_shipped_q3_to_q5_configs_parse() {
        let q3: Q3Config = toml::from_str(include_str!("../../../configs/q3.toml")).expect("q3");
        assert_eq!((q3.latent, q3.tsne.perplexity), (10, 30.0));
        q3.tsne.validate().expect("valid t-SNE settings");
        let q4: Q4Config = toml::from_str(include_str!("../../../configs/q4.toml")).expect("q4");
        assert_eq!(q4.latent, 2);
        let q5: Q5Config = toml::from_str(include_str!("../../../configs/q5.toml")).expect("q5");
        assert_eq!((q5.latent, q5.loss), (10, ReconLoss::NonzeroMse));
        assert_eq!(q5.tsne, q3.tsne, "Q3 and Q5 draw t-SNE the same way");
    }

    /// Where a study finds its built-in config.
    fn built_in_path(study: &str) -> PathBuf {
        config_path(None, Path::new("/nonexistent-root"), study)
    }

    #[test]
    fn every_built_in_config_parses_and_validates() {
        use crate::study::{gmvae_real, gmvae_synth, vae, vae_likelihoods};

        let q1 = AeStudy::load(&built_in_path("q1")).expect("q1");
        let path = built_in_path("q2");
        let q2 = Q2Config::load(&path).expect("q2");
        let models = path.parent().expect("a folder").join(&q2.models);
        assert_eq!(AeStudy::load(&models).expect("q2's models"), q1);
        let path = built_in_path("q3");
        let q3: Q3Config =
            load_question(&path, |c: &Q3Config| c.latent, |c| c.score_components).expect("q3");
        assert_eq!(base_study(&path, &q3.models).expect("q3's models"), q1);
        q3.tsne.validate().expect("q3's t-SNE settings");
        assert!(q3.scores.kmeans_restarts > 0, "q3's k-means restarts");
        let path = built_in_path("q4");
        let q4: Q4Config =
            load_question(&path, |c: &Q4Config| c.latent, |c| c.score_components).expect("q4");
        assert_eq!(base_study(&path, &q4.models).expect("q4's models"), q1);
        let path = built_in_path("q5");
        let q5: Q5Config =
            load_question(&path, |c: &Q5Config| c.latent, |c| c.score_components).expect("q5");
        assert_eq!(base_study(&path, &q5.models).expect("q5's models"), q1);
        q5.tsne.validate().expect("q5's t-SNE settings");
        vae::VaeStudy::load(&built_in_path("vae")).expect("vae");
        vae::VaeStudy::load(&built_in_path("vae-synth")).expect("vae-synth");
        vae_likelihoods::LikelihoodStudy::load(&built_in_path("vae-likelihoods"))
            .expect("vae-likelihoods");
        gmvae_synth::GmvaeSynthStudy::load(&built_in_path("gmvae-synth")).expect("gmvae-synth");
        gmvae_real::GmvaeRealStudy::load(&built_in_path("gmvae-real")).expect("gmvae-real");
    }

    #[test]
    fn every_shipped_study_config_is_built_in() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut shipped: Vec<String> = std::fs::read_dir(&dir)
            .expect("configs/")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.ends_with(".toml") && !name.starts_with("bench-"))
            .collect();
        shipped.sort();
        let mut built_in: Vec<String> = BUILT_IN.iter().map(|(n, _)| n.to_string()).collect();
        built_in.sort();
        assert_eq!(shipped, built_in, "configs/ and config::BUILT_IN differ");
        for (name, text) in BUILT_IN {
            let on_disk = std::fs::read_to_string(dir.join(name)).expect("readable");
            assert_eq!(text, on_disk, "{name} is compiled from configs/{name}");
        }
    }

    #[test]
    fn a_config_on_disk_or_named_overrides_the_built_in_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("configs")).expect("configs dir");
        assert!(built_in_path("q1").starts_with(BUILT_IN_DIR));
        assert_eq!(
            config_path(None, root, "q1"),
            Path::new(BUILT_IN_DIR).join("q1.toml")
        );
        std::fs::write(root.join("configs/q1.toml"), Q1).expect("write");
        assert_eq!(config_path(None, root, "q1"), root.join("configs/q1.toml"));
        let mine = Path::new("mine.toml");
        assert_eq!(config_path(Some(mine), root, "q1"), mine);
        let err = AeStudy::load(&Path::new(BUILT_IN_DIR).join("q9.toml")).expect_err("no q9");
        assert!(
            format!("{err:#}").contains("q9.toml: cannot read"),
            "{err:#}"
        );
    }

    #[test]
    fn an_unknown_key_is_an_error() {
        let typo = Q1.replace("batch_size", "batchsize");
        let err = toml::from_str::<AeStudy>(&typo).expect_err("typo must fail");
        assert!(err.to_string().contains("batchsize"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_errors() {
        let mut cfg: AeStudy = toml::from_str(Q1).expect("parses");
        cfg.test_fraction = 1.0;
        assert!(cfg.validate().is_err());
        cfg.test_fraction = 0.2;
        cfg.latents = vec![0];
        assert!(cfg.validate().is_err());
    }
}
