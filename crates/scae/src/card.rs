//! One model card for every saved model: `model.json` of a model folder, whatever trained it.
//!
//! The card says what the model is (`kind` with its config: an autoencoder, a VAE or a GMVAE),
//! the genes it reads by name and in the order of its input columns, the covariate categories it
//! knows (the batch key's and any other's, from the model's config), and the card format and
//! scae version that wrote it. `scae embed`, `scae cluster`, `scae evaluate` and the studies that reuse Q1's models
//! load any card through [`ModelCard::read`], and [`ModelCard::columns`] finds the model's genes
//! in new data by name, refusing data that lack some of them in one line.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use scae_models::{AeConfig, Covariate, GmvaeConfig, VaeConfig};
use serde::{Deserialize, Serialize};

/// The card format this scae writes; [`ModelCard::read`] refuses another.
pub const CARD_FORMAT: u32 = 1;

/// The file of a model folder that holds its card.
pub const CARD_FILE: &str = "model.json";

/// What a model is, with the config it was built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "config", rename_all = "lowercase")]
pub enum ModelKind {
    /// An autoencoder on log-normalised values (Q1-Q5, `scae train`).
    Ae(AeConfig),
    /// A VAE on raw counts (`scae vae`, the likelihood studies).
    Vae(VaeConfig),
    /// A Gaussian-mixture VAE on raw counts (`gmvae-real`).
    Gmvae(GmvaeConfig),
}

impl ModelKind {
    /// The kind's name, as the card spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ae(_) => "ae",
            Self::Vae(_) => "vae",
            Self::Gmvae(_) => "gmvae",
        }
    }

    /// The covariates the model conditions on, the batch key first (none for an autoencoder).
    pub fn covariates(&self) -> &[Covariate] {
        match self {
            Self::Ae(_) => &[],
            Self::Vae(config) => &config.covariates,
            Self::Gmvae(config) => &config.vae.covariates,
        }
    }
}

/// The card of a saved model (`model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The card format ([`CARD_FORMAT`]).
    pub card_format: u32,
    /// The scae version that trained the model.
    pub scae_version: String,
    /// What the model is, with its config.
    #[serde(flatten)]
    pub model: ModelKind,
    /// The genes the model reads, by name, in the order of its input columns.
    pub genes: Vec<String>,
    /// Each covariate the model takes (an `obs` column), with the categories it knows in the
    /// order of its one-hot columns; empty for a model without covariates.
    #[serde(default)]
    pub covariates: BTreeMap<String, Vec<String>>,
}

impl ModelCard {
    /// The card of a model of `model` that reads `genes`, written by this scae.
    pub fn new(model: ModelKind, genes: Vec<String>) -> Self {
        let covariates = model
            .covariates()
            .iter()
            .map(|c| (c.key.clone(), c.categories.clone()))
            .collect();
        Self {
            card_format: CARD_FORMAT,
            scae_version: env!("CARGO_PKG_VERSION").into(),
            model,
            genes,
            covariates,
        }
    }

    /// Writes the card as `model.json` in `dir` (atomically).
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::provenance::write_json(&dir.join(CARD_FILE), self)
    }

    /// Reads the card of the model folder `dir`.
    ///
    /// # Errors
    /// When `model.json` is missing, is not a card (the message names the file), was written in
    /// another card format, or names no gene.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(CARD_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: cannot read the model card (is {} a model folder?)",
                path.display(),
                dir.display()
            )
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        match value.get("card_format").and_then(serde_json::Value::as_u64) {
            Some(f) if f == u64::from(CARD_FORMAT) => {}
            Some(f) => bail!(
                "{}: card format {f}, but this scae reads format {CARD_FORMAT}",
                path.display()
            ),
            None => bail!(
                "{}: not a model card of this scae (no card_format; a model saved by an older \
                 scae must be trained again)",
                path.display()
            ),
        }
        let card: Self = serde_json::from_value(value)
            .map_err(|e| anyhow::anyhow!("{}: not a model card: {e}", path.display()))?;
        if card.genes.is_empty() {
            bail!("{}: the card names no gene", path.display());
        }
        Ok(card)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    fn card(genes: &[&str]) -> ModelCard {
        ModelCard::new(
            ModelKind::Vae(VaeConfig::new(2, scae_models::Likelihood::Nb)),
            names(genes),
        )
    }

    #[test]
    fn a_card_reads_back_as_written_and_another_format_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = card(&["g1", "g2"]);
        c.write(dir.path()).expect("write");
        assert_eq!(ModelCard::read(dir.path()).expect("read"), c);
        let text = std::fs::read_to_string(dir.path().join(CARD_FILE)).expect("text");
        assert!(text.contains("\"kind\": \"vae\""), "{text}");
        std::fs::write(dir.path().join(CARD_FILE), r#"{"genes": 5, "model": {}}"#).expect("old");
        let err = ModelCard::read(dir.path())
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("no card_format") && !err.contains('\n'),
            "{err}"
        );
    }
}
