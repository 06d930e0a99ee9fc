//! The variational autoencoder on raw counts (scVAE's model, scVI's library handling).
//!
//! Encoder: `log1p(counts) -> hidden.. ->` the mean and log-variance of each latent
//! dimension (the log-variance clamped to `log_var_range`). A reparameterised sample
//! `z = mean + exp(log_var / 2) * eps` (`mc_samples` per cell) goes through the decoder
//! `z -> hidden.. ->` the parameters of the count law ([`scae_dists::CountLaw`]): the log-mean,
//! and for the NB laws the log inverse dispersion (one per gene, or per gene and cell), and for
//! the zero-inflated laws the zero-inflation logit per gene and cell. With
//! `library = "observed"` the decoder predicts proportions (a log-softmax over genes) scaled by
//! the cell's observed total count, as scVI and scVAE do; with `library = "none"` it predicts
//! the log-mean directly. The prior is a standard normal and the KL divergence is analytic.
//!
//! The training objective per cell is `-log p(x | z) + beta * KL`, `beta` rising linearly from 0
//! to 1 over `kl_warmup_epochs` (scVI's schedule: `beta = (epoch - 1) / warm-up`, capped at 1);
//! evaluation always uses `beta = 1`, so the reported test loss is the negative ELBO. Every
//! reported term is a mean over cells of a sum over genes.

use scae_dists::{CountLaw, Likelihood, Reduction};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn, nn::Module};

use crate::SparseRows;
use crate::autoencoder::torch_linear_init;
use crate::covariates::{Codes, Covariate};
use crate::decoder::{CountDecoder, DecoderShape};
use crate::layers::Hidden;
use crate::train::{Losses, Model, TensorBatch};
use crate::{Error, Result};

/// How the NB laws' inverse dispersion `theta` is parameterised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dispersion {
    /// One free parameter per gene (scVI's default).
    #[default]
    Gene,
    /// A decoder output per gene and cell.
    GeneCell,
    /// One free parameter per gene and category of the first covariate (the batch key):
    /// scVI's `dispersion = "gene-batch"`.
    GeneBatch,
}

/// How the decoder's mean relates to the cell's sequencing depth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Library {
    /// Proportions (softmax over genes) times the cell's observed total count.
    #[default]
    Observed,
    /// The decoder predicts each gene's log-mean directly.
    None,
}

/// Shape and likelihood of a VAE (the `[model]` table of a VAE study config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeConfig {
    /// Widths of the encoder's hidden layers, input side first.
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
    /// Widths of the decoder's hidden layers, latent side first (default: `hidden` reversed).
    #[serde(default)]
    pub decoder_hidden: Option<Vec<usize>>,
    /// Size of the latent code.
    pub latent: usize,
    /// The count law of `p(x | z)` (default: negative binomial).
    #[serde(default = "default_likelihood")]
    pub likelihood: Likelihood,
    #[serde(default)]
    pub dispersion: Dispersion,
    #[serde(default)]
    pub library: Library,
    /// Batch normalisation after every hidden linear layer (before the ReLU).
    #[serde(default)]
    pub batch_norm: bool,
    /// Dropout after every hidden layer of the encoder (scVI: 0.1).
    #[serde(default)]
    pub dropout: f64,
    /// Epochs over which the KL weight rises linearly from 0 to 1 (0: always 1).
    #[serde(default)]
    pub kl_warmup_epochs: usize,
    /// Latent samples per cell in each evaluation of the ELBO.
    #[serde(default = "one")]
    pub mc_samples: usize,
    /// The encoder's log-variance is clamped to this range.
    #[serde(default = "default_log_var_range")]
    pub log_var_range: [f64; 2],
    /// Categorical covariates (the batch key first) injected into every hidden layer of the
    /// decoder ([`crate::covariates`]); set by a study from the data, not written by hand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covariates: Vec<Covariate>,
    /// Inject the covariates into the encoder's hidden layers too (scVI's `encode_covariates`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub encode_covariates: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn default_hidden() -> Vec<usize> {
    vec![128]
}

pub(crate) fn default_likelihood() -> Likelihood {
    Likelihood::Nb
}

pub(crate) fn one() -> usize {
    1
}

pub(crate) fn default_log_var_range() -> [f64; 2] {
    [-12.0, 8.0]
}

impl VaeConfig {
    /// scVI's default shape (one hidden layer of 128, no batch norm) with `latent` and `likelihood`.
    pub fn new(latent: usize, likelihood: Likelihood) -> Self {
        Self {
            hidden: default_hidden(),
            decoder_hidden: None,
            latent,
            likelihood,
            dispersion: Dispersion::Gene,
            library: Library::Observed,
            batch_norm: false,
            dropout: 0.0,
            kl_warmup_epochs: 0,
            mc_samples: 1,
            log_var_range: default_log_var_range(),
            covariates: Vec::new(),
            encode_covariates: false,
        }
    }

    /// Checks every setting is in range.
    pub fn validate(&self) -> Result<()> {
        validate_shape(
            self.latent,
            &self.hidden,
            &self.decoder_widths(),
            self.dropout,
            self.mc_samples,
            self.log_var_range,
        )?;
        crate::covariates::validate(&self.covariates)?;
        let bad = |msg: &str| Err(Error::Config(msg.into()));
        if self.covariates.is_empty() {
            if self.dispersion == Dispersion::GeneBatch {
                return bad("model.dispersion = \"gene-batch\" needs a batch key (--batch-key)");
            }
            if self.encode_covariates {
                return bad("model.encode_covariates needs a batch key (--batch-key)");
            }
        } else {
            if self.decoder_widths().is_empty() {
                return bad(
                    "covariates enter the decoder's hidden layers: model.decoder_hidden needs at least one",
                );
            }
            if self.encode_covariates && self.hidden.is_empty() {
                return bad("model.encode_covariates needs at least one encoder hidden layer");
            }
        }
        Ok(())
    }

    /// The stacked covariate categories each decoder hidden layer takes.
    pub(crate) fn covariate_rows(&self) -> usize {
        crate::covariates::total_categories(&self.covariates)
    }

    /// The stacked covariate categories each encoder hidden layer takes.
    pub(crate) fn encoder_covariate_rows(&self) -> usize {
        if self.encode_covariates {
            self.covariate_rows()
        } else {
            0
        }
    }

    /// The decoder of this configuration for `genes` genes.
    pub(crate) fn decoder_shape<'a>(&self, genes: usize, widths: &'a [usize]) -> DecoderShape<'a> {
        DecoderShape {
            genes,
            latent: self.latent,
            hidden: widths,
            likelihood: self.likelihood,
            dispersion: self.dispersion,
            library: self.library,
            batch_norm: self.batch_norm,
            covariate_rows: self.covariate_rows(),
            batch_categories: self.covariates.first().map_or(0, |c| c.categories.len()),
        }
    }

    /// The decoder's hidden widths, latent side first.
    pub fn decoder_widths(&self) -> Vec<usize> {
        self.decoder_hidden
            .clone()
            .unwrap_or_else(|| self.hidden.iter().rev().copied().collect())
    }
}
/// The checks the VAE and the GMVAE share: latent size, hidden widths, dropout, Monte Carlo
/// samples and the log-variance clamp.
pub(crate) fn validate_shape(
    latent: usize,
    hidden: &[usize],
    decoder: &[usize],
    dropout: f64,
    mc_samples: usize,
    log_var_range: [f64; 2],
) -> Result<()> {
    let bad = |msg: String| Err(Error::Config(msg));
    if latent == 0 {
        return bad("model.latent must be at least 1".into());
    }
    for (name, widths) in [("hidden", hidden), ("decoder_hidden", decoder)] {
        if let Some(i) = widths.iter().position(|&w| w == 0) {
            return bad(format!(
                "model.{name}[{i}] is 0: every width must be at least 1"
            ));
        }
    }
    if !(0.0..1.0).contains(&dropout) {
        return bad(format!("model.dropout must be in [0, 1), got {dropout}"));
    }
    if mc_samples == 0 {
        return bad("model.mc_samples must be at least 1".into());
    }
    let [lo, hi] = log_var_range;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return bad(format!(
            "model.log_var_range must be two finite numbers, low < high, got [{lo}, {hi}]"
        ));
    }
    Ok(())
}

/// The KL weight of epoch `epoch` (1-based) under a linear warm-up over `warmup` epochs
/// (scVI's schedule: `(epoch - 1) / warmup`, capped at 1; 1 without a warm-up).
pub(crate) fn kl_weight_at(epoch: usize, warmup: usize) -> f64 {
    if warmup == 0 {
        1.0
    } else {
        ((epoch.saturating_sub(1)) as f64 / warmup as f64).min(1.0)
    }
}

/// The posterior `q(z | x)` of a batch of cells: mean and log-variance, `[cells, latent]`.
#[derive(Debug)]
pub struct Posterior {
    pub mean: Tensor,
    pub log_var: Tensor,
}

/// The VAE (see the module documentation).
#[derive(Debug)]
pub struct Vae {
    cfg: VaeConfig,
    genes: i64,
    encoder: Vec<Hidden>,
    z_mean: nn::Linear,
    z_log_var: nn::Linear,
    decoder: CountDecoder,
    beta: f64,
}

impl Vae {
    /// Builds the layers under `p` for `genes` input genes.
    pub fn new(p: &nn::Path<'_>, genes: usize, cfg: &VaeConfig) -> Result<Self> {
        cfg.validate()?;
        if genes == 0 {
            return Err(Error::Config("the input has no genes".into()));
        }
        let enc_widths: Vec<usize> = std::iter::once(genes)
            .chain(cfg.hidden.iter().copied())
            .collect();
        let enc_out = *enc_widths.last().unwrap_or(&genes);
        let head = |name: &str, from: usize, to: usize| {
            nn::linear(p / name, from as i64, to as i64, torch_linear_init(from))
        };
        // Creation order fixes the draws of the initialisation: encoder, heads, decoder.
        let encoder = Hidden::stack(
            &(p / "encoder"),
            &enc_widths,
            cfg.batch_norm,
            cfg.dropout,
            true,
            cfg.encoder_covariate_rows(),
        );
        let z_mean = head("z_mean", enc_out, cfg.latent);
        let z_log_var = head("z_log_var", enc_out, cfg.latent);
        let widths = cfg.decoder_widths();
        let decoder = CountDecoder::new(p, cfg.decoder_shape(genes, &widths));
        Ok(Self {
            encoder,
            z_mean,
            z_log_var,
            decoder,
            genes: genes as i64,
            beta: if cfg.kl_warmup_epochs == 0 { 1.0 } else { 0.0 },
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// The current KL weight of the training objective.
    pub fn kl_weight(&self) -> f64 {
        self.beta
    }

    /// `q(z | x)` for counts `x` (`[cells, genes]`) of a model without covariates (the
    /// covariates of a batch enter through [`Vae::encode_batch`]).
    pub fn encode(&self, x: &Tensor, train: bool) -> Posterior {
        self.encode_counts(x, None, &Codes::none(), train)
    }

    /// `q(z | x, s)` of a batch, with its covariates `s` and, where it has them on the host, its
    /// nonzero entries.
    ///
    /// # Errors
    /// When the batch lacks a covariate the model conditions on, or holds a code outside it.
    pub fn encode_batch(&self, batch: &TensorBatch, train: bool) -> Result<Posterior> {
        let codes = self.codes(batch)?;
        Ok(self.encode_counts(&batch.x, batch.sparse.as_ref(), &codes, train))
    }

    /// The covariate codes of `batch`.
    fn codes(&self, batch: &TensorBatch) -> Result<Codes> {
        Codes::of(batch, &self.cfg.covariates)
    }

    /// [`Vae::encode`] of counts whose nonzero entries `sparse` holds, when given.
    fn encode_counts(
        &self,
        x: &Tensor,
        sparse: Option<&SparseRows>,
        codes: &Codes,
        train: bool,
    ) -> Posterior {
        let h = if self.encoder.is_empty() {
            x.log1p()
        } else {
            Hidden::forward_counts(&self.encoder, x, sparse, codes, train)
        };
        let [lo, hi] = self.cfg.log_var_range;
        Posterior {
            mean: self.z_mean.forward(&h),
            log_var: self.z_log_var.forward(&h).clamp(lo, hi),
        }
    }

    /// The count law of `p(x | z)` of a model without covariates. `z` is `[.., cells, latent]`;
    /// `log_library` is `[cells, 1]` (log total counts), used with the observed library.
    pub fn decode(&self, z: &Tensor, log_library: &Tensor, train: bool) -> CountLaw {
        self.decoder.law(z, log_library, &Codes::none(), train)
    }

    /// Log of each cell's total count (`[cells, 1]`), at least `ln 1` so an empty cell stays finite.
    pub fn log_library(x: &Tensor) -> Tensor {
        x.sum_dim_intlist(-1, true, Kind::Float)
            .clamp_min(1.0)
            .log()
    }

    /// The log-likelihood averaged over `samples` latent draws and over cells (a scalar), and
    /// the KL of each cell (`[cells]`).
    fn terms(&self, batch: &TensorBatch, samples: usize, train: bool) -> Result<(Tensor, Tensor)> {
        let x = &batch.x;
        let codes = self.codes(batch)?;
        let q = self.encode_counts(x, batch.sparse.as_ref(), &codes, train);
        let std = (&q.log_var * 0.5).exp();
        let (cells, latent) = (x.size()[0], self.cfg.latent as i64);
        let eps = crate::parallel::normal_for_cells(
            &[samples as i64, cells, latent],
            1,
            q.mean.kind(),
            q.mean.device(),
        );
        let z = &q.mean + eps * &std;
        let ll = self
            .decoder
            .log_lik(&z, x, &batch.log_library(), &codes, train, Reduction::Mean);
        let kl = (q.mean.square() + q.log_var.exp() - &q.log_var - 1.0).sum_dim_intlist(
            -1,
            false,
            Kind::Float,
        ) * 0.5;
        Ok((ll, kl))
    }

    /// The mean of `p(x | z, s)` of each cell of `batch` (`[cells, genes]`): at the posterior
    /// mean when `samples` is 0, else averaged over `samples` draws from `q(z | x, s)` (the
    /// reconstruction the ELBO scores, whose average over cells matches the data's means).
    /// With `decode_as`, every cell is decoded as if it came from that category of the first
    /// covariate (scvi-tools' `transform_batch`); its own covariates still encode it.
    ///
    /// # Errors
    /// As [`Vae::encode_batch`]; `decode_as` outside the first covariate's categories, or given
    /// to a model without covariates.
    pub fn decoded_means(
        &self,
        batch: &TensorBatch,
        samples: usize,
        decode_as: Option<usize>,
    ) -> Result<Tensor> {
        let codes = self.codes(batch)?;
        let decode_codes = match decode_as {
            None => None,
            Some(code) => match self.cfg.covariates.first() {
                Some(c) if code < c.categories.len() => Some(codes.with_first(code as i64)),
                Some(c) => {
                    return Err(Error::Config(format!(
                        "decode as category {code} of {}, which has {}",
                        c.key,
                        c.categories.len()
                    )));
                }
                None => {
                    return Err(Error::Config(
                        "the model has no batch covariate to decode as".into(),
                    ));
                }
            },
        };
        let x = &batch.x;
        let q = self.encode_counts(x, batch.sparse.as_ref(), &codes, false);
        let log_library = Self::log_library(x);
        let codes = decode_codes.as_ref().unwrap_or(&codes);
        if samples == 0 {
            return Ok(self.decoder.law(&q.mean, &log_library, codes, false).mean());
        }
        let eps = Tensor::randn(
            [samples as i64, x.size()[0], self.cfg.latent as i64],
            (q.mean.kind(), q.mean.device()),
        );
        let z = &q.mean + eps * (&q.log_var * 0.5).exp();
        Ok(self
            .decoder
            .law(&z, &log_library, codes, false)
            .mean()
            .mean_dim(0, false, Kind::Float))
    }

    /// Per cell of `batch` (`[cells]`), the importance-weighted estimate of `log p(x)` with `k`
    /// samples from `q(z | x)`: `logsumexp_k(log p(x | z_k) + log p(z_k) - log q(z_k | x)) -
    /// ln k`. The caller sizes the batch (it decodes `k` times its cells).
    ///
    /// # Errors
    /// `k` of 0; as [`Vae::encode_batch`].
    pub fn importance_log_px(&self, batch: &TensorBatch, k: usize) -> Result<Tensor> {
        if k == 0 {
            return Err(Error::Config(
                "importance sampling needs at least 1 sample".into(),
            ));
        }
        let log_2pi = (2.0 * std::f64::consts::PI).ln();
        let x = &batch.x;
        let codes = self.codes(batch)?;
        let q = self.encode_counts(x, batch.sparse.as_ref(), &codes, false);
        let std = (&q.log_var * 0.5).exp();
        let eps = Tensor::randn(
            [k as i64, x.size()[0], self.cfg.latent as i64],
            (q.mean.kind(), q.mean.device()),
        );
        let z = &q.mean + &eps * &std;
        let ll = self
            .decoder
            .log_lik(&z, x, &Self::log_library(x), &codes, false, Reduction::Rows);
        let sum = |t: Tensor| t.sum_dim_intlist(-1, false, Kind::Float);
        let log_pz = sum(z.square() + log_2pi) * -0.5;
        let log_qz = sum(eps.square() + &q.log_var + log_2pi) * -0.5;
        Ok((ll + log_pz - log_qz).logsumexp(0, false) - (k as f64).ln())
    }
}

impl Model for Vae {
    fn name(&self) -> &'static str {
        "VAE"
    }

    fn input_genes(&self) -> usize {
        self.genes as usize
    }

    fn losses(&self, batch: &TensorBatch, train: bool) -> Result<Losses> {
        let (ll, kl) = self.terms(batch, self.cfg.mc_samples, train)?;
        let kl = kl.mean(Kind::Float);
        let beta = if train { self.beta } else { 1.0 };
        let total = &kl * beta - &ll;
        let elbo = &ll - &kl;
        Ok(Losses {
            total,
            terms: vec![("elbo", elbo), ("log_likelihood", ll), ("kl", kl)],
        })
    }

    fn add_sparse_grads(&self) {
        Hidden::add_sparse_grads(&self.encoder);
        self.decoder.add_head_grads();
    }

    fn begin_epoch(&mut self, epoch: usize) {
        self.beta = kl_weight_at(epoch, self.cfg.kl_warmup_epochs);
    }
}

#[cfg(test)]
mod tests {
    use scae_io::DenseRows;
    use tch::{Device, nn::VarStore};

    use super::*;
    use crate::{TrainConfig, fit};

    fn host(x: &Tensor) -> ndarray::Array2<f32> {
        let (v, r, c) = crate::tensor_to_rows(x).expect("2-D");
        ndarray::Array2::from_shape_vec((r, c), v).expect("shape")
    }

    /// Counts of two cell groups that differ in which half of the genes they express.
    fn counts(cells: i64, genes: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        let group = Tensor::arange(cells, (Kind::Float, Device::Cpu))
            .remainder(2)
            .unsqueeze(1);
        let half = Tensor::arange(genes, (Kind::Float, Device::Cpu))
            .lt(genes as f64 / 2.0)
            .to_kind(Kind::Float)
            .unsqueeze(0);
        let other = (-&group + 1.0) * (-&half + 1.0);
        let rate: Tensor = (&group * &half + other) * 8.0 + 0.5;
        rate.poisson()
    }

    fn train_cfg(epochs: usize) -> TrainConfig {
        TrainConfig {
            epochs,
            batch_size: 32,
            learning_rate: 1e-2,
            weight_decay: 0.0,
            eval_batch_size: 64,
            clip_grad_norm: Some(50.0),
            adam_eps: 1e-8,
        }
    }

    #[test]
    fn every_likelihood_decodes_to_its_law_with_the_right_shapes() {
        let _rng = crate::torch_rng_lock();
        let x = counts(6, 20, 0);
        for likelihood in Likelihood::ALL {
            for dispersion in [Dispersion::Gene, Dispersion::GeneCell] {
                let vs = VarStore::new(Device::Cpu);
                let cfg = VaeConfig {
                    dispersion,
                    batch_norm: true,
                    dropout: 0.1,
                    ..VaeConfig::new(3, likelihood)
                };
                let vae = Vae::new(&vs.root(), 20, &cfg).expect("valid");
                let q = vae.encode(&x, false);
                assert_eq!(q.mean.size(), [6, 3]);
                let z = Tensor::randn([2, 6, 3], (Kind::Float, Device::Cpu));
                let law = vae.decode(&z, &Vae::log_library(&x), false);
                assert_eq!(law.kind(), likelihood);
                assert_eq!(law.log_prob(&x).size(), [2, 6, 20]);
                let losses = vae
                    .losses(&TensorBatch::from_tensor(x.shallow_clone()), true)
                    .expect("a step");
                assert_eq!(losses.terms.len(), 3);
                assert!(losses.total.double_value(&[]).is_finite());
            }
        }
    }

    #[test]
    fn the_observed_library_scales_proportions_to_the_cell_total() {
        let _rng = crate::torch_rng_lock();
        let x = counts(5, 12, 1);
        let vs = VarStore::new(Device::Cpu);
        let vae = Vae::new(&vs.root(), 12, &VaeConfig::new(2, Likelihood::Poisson)).expect("ok");
        let means = vae
            .decoded_means(&TensorBatch::from_tensor(x.shallow_clone()), 0, None)
            .expect("no covariates");
        let totals = x.sum_dim_intlist(-1, false, Kind::Float);
        let got = means.sum_dim_intlist(-1, false, Kind::Float);
        let diff = (got - &totals).abs().max().double_value(&[]);
        assert!(diff < 1e-3 * totals.max().double_value(&[]), "{diff}");
    }

    #[test]
    fn kl_weight_rises_linearly_over_the_warm_up() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = VaeConfig {
            kl_warmup_epochs: 4,
            ..VaeConfig::new(2, Likelihood::Nb)
        };
        let mut vae = Vae::new(&vs.root(), 5, &cfg).expect("valid");
        let weights: Vec<f64> = (1..=6)
            .map(|e| {
                vae.begin_epoch(e);
                vae.kl_weight()
            })
            .collect();
        assert_eq!(weights, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]);
    }

    #[test]
    fn kl_term_is_the_analytic_gaussian_kl() {
        let _rng = crate::torch_rng_lock();
        // KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - ln s^2 - 1) / 2 per dimension; checked by
        // Monte Carlo through the encoder's own posterior.
        tch::manual_seed(4);
        let x = counts(4, 10, 2);
        let vs = VarStore::new(Device::Cpu);
        let vae = Vae::new(&vs.root(), 10, &VaeConfig::new(3, Likelihood::Poisson)).expect("ok");
        let (_, kl) = vae
            .terms(&TensorBatch::from_tensor(x.shallow_clone()), 1, false)
            .expect("no covariates");
        let q = vae.encode(&x, false);
        let std = (&q.log_var * 0.5).exp();
        let eps = Tensor::randn([200_000, 4, 3], (Kind::Double, Device::Cpu));
        let z = q.mean.to_kind(Kind::Double) + &eps * std.to_kind(Kind::Double);
        let log_q = (eps.square() + q.log_var.to_kind(Kind::Double)) * -0.5;
        let log_p = z.square() * -0.5;
        let mc = (log_q - log_p)
            .sum_dim_intlist(-1, false, Kind::Double)
            .mean_dim(0, false, Kind::Double);
        let diff = (mc - kl.to_kind(Kind::Double))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 0.01, "Monte Carlo KL differs by {diff}");
    }

    #[test]
    fn training_raises_the_elbo_and_the_importance_bound_lies_above_it() {
        let _rng = crate::torch_rng_lock();
        tch::set_num_threads(1);
        let x = host(&counts(256, 30, 3));
        let (train_rows, test_rows): (Vec<usize>, Vec<usize>) =
            ((0..200).collect(), (200..256).collect());
        let train = DenseRows::subset(x.view(), &train_rows).expect("rows");
        let test_source = DenseRows::subset(x.view(), &test_rows).expect("rows");
        let test = crate::tensor_from_rows(
            x.slice(ndarray::s![200.., ..])
                .to_owned()
                .as_slice()
                .expect("standard"),
            56,
            30,
        )
        .expect("test tensor");
        for likelihood in Likelihood::ALL {
            tch::manual_seed(7);
            let vs = VarStore::new(Device::Cpu);
            let mut vae = Vae::new(&vs.root(), 30, &VaeConfig::new(2, likelihood)).expect("ok");
            let (_, untrained) = crate::evaluate(&vae, &test_source, 64, Device::Cpu)
                .expect("finite")
                .expect("rows");
            let history = fit(
                &mut vae,
                &vs,
                &train,
                Some(&test_source),
                &train_cfg(40),
                1,
                |_| {},
            )
            .expect("finite losses");
            let first = untrained.get("elbo").expect("elbo");
            let last = history.epochs[39].test_terms.get("elbo").expect("elbo");
            assert!(
                last > first + 10.0,
                "{likelihood}: test ELBO {first} -> {last}"
            );
            // loss = -ELBO on the test set (KL weight 1 when evaluating)
            let e = &history.epochs[39];
            let term = |name: &str| e.test_terms.get(name).expect("term");
            approx::assert_relative_eq!(
                e.test_loss.expect("test"),
                -term("elbo"),
                max_relative = 1e-5
            );
            approx::assert_relative_eq!(
                term("elbo"),
                term("log_likelihood") - term("kl"),
                max_relative = 1e-5
            );
            let log_px = vae
                .importance_log_px(&TensorBatch::from_tensor(test.shallow_clone()), 200)
                .expect("k >= 1")
                .mean(Kind::Double)
                .double_value(&[]);
            assert!(log_px.is_finite());
            // log p(x) >= IWAE(k) >= ELBO in expectation; the single-sample test ELBO is noisy,
            // so allow 1 nat.
            assert!(
                log_px > last - 1.0,
                "{likelihood}: log p(x) {log_px} < ELBO {last}"
            );
        }
    }

    #[test]
    fn bad_configs_are_rejected() {
        let vs = VarStore::new(Device::Cpu);
        let base = VaeConfig::new(2, Likelihood::Nb);
        for bad in [
            VaeConfig {
                latent: 0,
                ..base.clone()
            },
            VaeConfig {
                hidden: vec![0],
                ..base.clone()
            },
            VaeConfig {
                dropout: 1.0,
                ..base.clone()
            },
            VaeConfig {
                mc_samples: 0,
                ..base.clone()
            },
            VaeConfig {
                log_var_range: [1.0, -1.0],
                ..base.clone()
            },
        ] {
            assert!(matches!(
                Vae::new(&vs.root(), 5, &bad),
                Err(Error::Config(_))
            ));
        }
    }
}
