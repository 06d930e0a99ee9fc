//! The Gaussian-mixture VAE (scVAE's GMVAE, or VaDE's): the mixture components are cell clusters.
//!
//! With scVAE's posterior ([`MixturePosterior::PerComponent`]):
//!
//! * `q(y | x)`: an MLP on `log1p(counts)` with a softmax over `K` components.
//! * `q(z | x, y)`: an MLP on `[x, one-hot y]` to the mean and log-variance of `z`. Its first
//!   layer is `W_x log1p(x) + W_y onehot(y) + b`, so the wide counts part runs once per cell and
//!   each component adds its own column of `W_y` ([`Hidden::forward_offset`]).
//!
//! With VaDE's ([`MixturePosterior::Shared`]), one `q(z | x)` serves every component and
//! `q(y | x)` is the ELBO's optimum given it, `q(k | x) ∝ p(k) exp(−KL(q(z | x) ‖ p(z | k)))`: the
//! two KL terms below then add up to `−log Σ_k p(k) exp(−KL_k)`, and `E log p(x | z)` is the same
//! for every component, so the decoder runs once per cell, as a VAE's. Both share:
//!
//! * `p(z | y)`: a learned mean per component and unit variances (learned too with
//!   `learn_prior_variance`); `p(y)` uniform, or learned logits with `learn_prior`.
//! * `p(x | z)`: the VAE's count decoder ([`CountDecoder`]), any `scae-dists` law.
//!
//! The ELBO marginalises `y` exactly by enumerating the components, weighted by `q(y | x)`:
//!
//! ```text
//! ELBO = Σ_k q(k | x) [ E_q(z|x,k) log p(x | z) − KL(q(z | x, k) ‖ p(z | k)) ] − KL(q(y | x) ‖ p(y))
//! ```
//!
//! with the Gaussian KL analytic and the expectation over `z` from `mc_samples` reparameterised
//! draws per cell and component. Nothing is sampled for `y`, so one backward pass per step
//! suffices: no graph is kept across steps. Training minimises `−ELBO` with both KL terms
//! weighted by the warm-up's `beta`; the `y` term can be dropped (`y_regulariser = "none"`) or
//! replaced by the cross-entropy of `q(y | x)` against known labels (`"supervised"`, for the
//! study's ablation and the k-means start: the labels come with the batch as a per-cell field,
//! [`TensorBatch::field`]). Evaluation always reports the ELBO with the KL term and `beta = 1`.
//! After each epoch the model reports how many components were the most probable for at least
//! one training cell ([`Model::epoch_figures`]); the count is kept on the device until then.

use scae_dists::{Likelihood, Reduction};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn, nn::Module};

use crate::SparseRows;
use crate::autoencoder::torch_linear_init;
use crate::covariates::Codes;
use crate::decoder::CountDecoder;
use crate::layers::Hidden;
use crate::train::{Losses, Model, TensorBatch};
use crate::vae::{VaeConfig, kl_weight_at};
use crate::{Error, Result};

/// What regularises `q(y | x)` in the training objective.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum YRegulariser {
    /// `KL(q(y | x) ‖ p(y))`, the ELBO's own term.
    #[default]
    Kl,
    /// Nothing.
    None,
    /// The cross-entropy of `q(y | x)` against the cell's known label (the batch field
    /// [`scae_io::keys::LABELS`], or the one [`Gmvae::supervise_on`] names); a cell without one
    /// ([`scae_io::MISSING`]) takes the ELBO's own term.
    Supervised,
}

/// How the GMVAE's posterior is parameterised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MixturePosterior {
    /// scVAE's: `q(y | x)` a network of its own, `q(z | x, y)` one Gaussian per component, so
    /// the decoder runs once per component.
    #[default]
    PerComponent,
    /// VaDE's mean field: one `q(z | x)` for every component, and `q(y | x)` the ELBO's optimum
    /// given it, `q(k | x) ∝ p(k) exp(−KL(q(z | x) ‖ p(z | k)))`, with no network of its own. The
    /// decoder runs once per cell, as a VAE's.
    Shared,
}

/// A GMVAE (the `[model]` table of a GMVAE study config): the mixture, and the VAE it extends
/// (its `[model.vae]` table, every key of a VAE's `[model]`: encoder widths, used by both
/// `q(y | x)` and `q(z | x, y)`, latent size, decoder, likelihood, warm-up, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmvaeConfig {
    /// Mixture components `K` (at least 2). Left out of a study config whose `K` comes from
    /// the data (e.g. the number of labels), it reads as 0 until the study sets it.
    #[serde(default)]
    pub components: usize,
    /// Learn `p(y)` (logits) instead of keeping it uniform.
    #[serde(default)]
    pub learn_prior: bool,
    /// Learn the log-variances of `p(z | y)` instead of keeping them at 0 (unit variance).
    #[serde(default)]
    pub learn_prior_variance: bool,
    #[serde(default)]
    pub y_regulariser: YRegulariser,
    /// Per component (scVAE, the default) or shared (VaDE).
    #[serde(default)]
    pub posterior: MixturePosterior,
    /// Weight of an extra training term, `y_balance · KL(q̄(y) ‖ p(y))`, with `q̄(y)` the mean of
    /// `q(y | x)` over the minibatch: it penalises leaving components empty without pushing each
    /// cell's `q(y | x)` towards `p(y)` as the ELBO's per-cell term does. 0 (the default) trains
    /// on the ELBO alone; the reported ELBO never includes it.
    #[serde(default)]
    pub y_balance: f64,
    /// The VAE the GMVAE extends; its encoder needs at least one hidden layer here.
    pub vae: VaeConfig,
}

impl GmvaeConfig {
    /// One hidden layer of 128, no batch norm, with `components`, `latent` and `likelihood`.
    pub fn new(components: usize, latent: usize, likelihood: Likelihood) -> Self {
        Self {
            components,
            learn_prior: false,
            learn_prior_variance: false,
            y_regulariser: YRegulariser::Kl,
            posterior: MixturePosterior::PerComponent,
            y_balance: 0.0,
            vae: VaeConfig::new(latent, likelihood),
        }
    }

    /// Checks every setting is in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.components < 2 {
            return bad(format!(
                "model.components must be at least 2, got {}",
                self.components
            ));
        }
        if self.vae.hidden.is_empty() {
            return bad("model.vae.hidden needs at least one layer for the GMVAE".into());
        }
        if !(self.y_balance.is_finite() && self.y_balance >= 0.0) {
            return bad(format!(
                "model.y_balance must be finite and at least 0, got {}",
                self.y_balance
            ));
        }
        self.vae.validate()
    }
}

/// The GMVAE (see the module documentation).
#[derive(Debug)]
pub struct Gmvae {
    cfg: GmvaeConfig,
    genes: i64,
    /// `q(y | x)`'s network: empty layers and no head with a shared posterior.
    y_encoder: Vec<Hidden>,
    y_head: Option<nn::Linear>,
    z_encoder: Vec<Hidden>,
    /// `[K, width]`: each component's column of `W_y`; none with a shared posterior.
    y_embedding: Option<Tensor>,
    z_mean: nn::Linear,
    z_log_var: nn::Linear,
    /// `[K, latent]` each.
    prior_mean: Tensor,
    prior_log_var: Tensor,
    /// `[K]` logits of `p(y)` when learned.
    prior_y: Option<Tensor>,
    decoder: CountDecoder,
    beta: f64,
    /// Training cells assigned (argmax of `q(y | x)`) to each component so far this epoch, `[K]`
    /// on the device.
    assigned: std::cell::RefCell<Option<Tensor>>,
    /// The batch field a supervised `q(y | x)` is trained against.
    supervision: String,
}

/// Per cell (`[cells]` each): the ELBO and its terms, every one a mean over `q(y | x)`.
#[derive(Debug)]
pub struct GmvaeTerms {
    pub elbo: Tensor,
    /// `Σ_k q(k | x) E log p(x | z)`.
    pub log_likelihood: Tensor,
    /// `Σ_k q(k | x) KL(q(z | x, k) ‖ p(z | k))`.
    pub kl_z: Tensor,
    /// `KL(q(y | x) ‖ p(y))`.
    pub kl_y: Tensor,
    /// `log q(y | x)`, `[cells, K]`.
    pub log_q_y: Tensor,
}

impl Gmvae {
    /// Builds the layers under `p` for `genes` input genes.
    pub fn new(p: &nn::Path<'_>, genes: usize, cfg: &GmvaeConfig) -> Result<Self> {
        cfg.validate()?;
        if genes == 0 {
            return Err(Error::Config("the input has no genes".into()));
        }
        let k = cfg.components as i64;
        let widths: Vec<usize> = std::iter::once(genes)
            .chain(cfg.vae.hidden.iter().copied())
            .collect();
        let out = *cfg.vae.hidden.last().unwrap_or(&genes);
        let head = |name: &str, to: usize| {
            nn::linear(p / name, out as i64, to as i64, torch_linear_init(out))
        };
        let stack = |name: &str| {
            Hidden::stack(
                &(p / name),
                &widths,
                cfg.vae.batch_norm,
                cfg.vae.dropout,
                true,
                cfg.vae.encoder_covariate_rows(),
            )
        };
        let per_component = cfg.posterior == MixturePosterior::PerComponent;
        let (y_encoder, y_head) = if per_component {
            (stack("y_encoder"), Some(head("y_head", cfg.components)))
        } else {
            (Vec::new(), None)
        };
        let z_encoder = stack("z_encoder");
        // W_y of the first layer of q(z | x, y), initialised as that layer's other weights.
        let y_embedding = per_component.then(|| {
            p.var(
                "y_embedding",
                &[k, cfg.vae.hidden[0] as i64],
                torch_linear_init(genes + cfg.components).ws_init,
            )
        });
        let z_mean = head("z_mean", cfg.vae.latent);
        let z_log_var = head("z_log_var", cfg.vae.latent);
        // Component means start apart (unit normal draws), variances at 1.
        let latent = cfg.vae.latent as i64;
        let prior_mean = p.var(
            "prior_mean",
            &[k, latent],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        );
        // Unit variances unless learned: a component free to widen can cover two clusters with
        // its neighbour splitting them with it (the mixture test found ARI 0.51 that way).
        let prior_log_var = if cfg.learn_prior_variance {
            p.zeros("prior_log_var", &[k, latent])
        } else {
            Tensor::zeros([k, latent], (Kind::Float, p.device()))
        };
        let prior_y = cfg.learn_prior.then(|| p.zeros("prior_y", &[k]));
        let decoder_widths = cfg.vae.decoder_widths();
        let decoder = CountDecoder::new(p, cfg.vae.decoder_shape(genes, &decoder_widths));
        Ok(Self {
            y_encoder,
            y_head,
            z_encoder,
            y_embedding,
            z_mean,
            z_log_var,
            prior_mean,
            prior_log_var,
            prior_y,
            decoder,
            genes: genes as i64,
            beta: if cfg.vae.kl_warmup_epochs == 0 {
                1.0
            } else {
                0.0
            },
            assigned: std::cell::RefCell::new(None),
            supervision: scae_io::keys::LABELS.to_owned(),
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &GmvaeConfig {
        &self.cfg
    }

    /// Changes what regularises `q(y | x)` from the next training step on; a supervised one
    /// reads the cells' labels ([`scae_io::keys::LABELS`]).
    pub fn set_y_regulariser(&mut self, y_regulariser: YRegulariser) {
        self.cfg.y_regulariser = y_regulariser;
        scae_io::keys::LABELS.clone_into(&mut self.supervision);
    }

    /// Supervises `q(y | x)` with the batch field `key` from the next training step on (e.g. a
    /// phase on [`scae_io::keys::PSEUDO_LABELS`] before the ELBO's own term).
    pub fn supervise_on(&mut self, key: &str) {
        self.cfg.y_regulariser = YRegulariser::Supervised;
        key.clone_into(&mut self.supervision);
    }

    /// Moves the means of `p(z | y)` to `means` (`[K, latent]`), e.g. to cluster centres found
    /// in the latent space.
    pub fn set_prior_means(&mut self, means: &Tensor) -> Result<()> {
        let want = [self.cfg.components as i64, self.cfg.vae.latent as i64];
        if means.size() != want {
            return Err(Error::Config(format!(
                "prior means of shape {:?}, expected {want:?}",
                means.size()
            )));
        }
        tch::no_grad(|| {
            self.prior_mean.copy_(
                &means
                    .to_kind(Kind::Float)
                    .to_device(self.prior_mean.device()),
            );
        });
        Ok(())
    }

    /// Sets a learned `p(y)` to `weights` (`[K]`, positive; normalised here), e.g. to the sizes of
    /// clusters found in the latent space. A uniform `p(y)` (`learn_prior = false`) stays uniform.
    pub fn set_prior_weights(&mut self, weights: &[f64]) -> Result<()> {
        if weights.len() != self.cfg.components
            || weights.iter().any(|w| !w.is_finite() || *w <= 0.0)
        {
            return Err(Error::Config(format!(
                "prior weights must be {} positive numbers, got {weights:?}",
                self.cfg.components
            )));
        }
        if let Some(logits) = &mut self.prior_y {
            let log_w: Vec<f32> = weights.iter().map(|w| w.ln() as f32).collect();
            let t = Tensor::from_slice(&log_w).to_device(logits.device());
            tch::no_grad(|| {
                logits.copy_(&t);
            });
        }
        Ok(())
    }

    /// The current KL weight of the training objective.
    pub fn kl_weight(&self) -> f64 {
        self.beta
    }

    /// `log q(y | x)`, `[cells, K]`, of a model without covariates.
    pub fn log_q_y(&self, x: &Tensor, train: bool) -> Tensor {
        self.log_q_y_counts(x, None, &Codes::none(), train)
    }

    /// `log q(y | x, s)` of a batch, `[cells, K]`, with its covariates `s`.
    ///
    /// # Errors
    /// When the batch lacks a covariate the model conditions on, or holds a code outside it.
    pub fn log_q_y_batch(&self, batch: &TensorBatch, train: bool) -> Result<Tensor> {
        let codes = self.codes(batch)?;
        Ok(self.log_q_y_counts(&batch.x, batch.sparse.as_ref(), &codes, train))
    }

    /// The covariate codes of `batch`.
    fn codes(&self, batch: &TensorBatch) -> Result<Codes> {
        Codes::of(batch, &self.cfg.vae.covariates)
    }

    /// [`Gmvae::log_q_y`] of counts whose nonzero entries `sparse` holds, when given.
    fn log_q_y_counts(
        &self,
        x: &Tensor,
        sparse: Option<&SparseRows>,
        codes: &Codes,
        train: bool,
    ) -> Tensor {
        match &self.y_head {
            Some(head) => {
                let h = Hidden::forward_counts(&self.y_encoder, x, sparse, codes, train);
                head.forward(&h).log_softmax(-1, Kind::Float)
            }
            None => {
                let (mean, log_var) = self.z_posterior(x, sparse, codes, train);
                self.shared_log_q_y(&self.kl_to_components(&mean, &log_var))
            }
        }
    }

    /// The shared posterior's `log q(y | x)`, `[cells, K]`: `log p(y) − KL_k` normalised over
    /// the components, for `kl` of `[K, cells]`.
    fn shared_log_q_y(&self, kl: &Tensor) -> Tensor {
        (self.log_p_y().unsqueeze(1) - kl)
            .log_softmax(0, Kind::Float)
            .transpose(0, 1)
    }

    /// `log p(y)`, `[K]`.
    fn log_p_y(&self) -> Tensor {
        match &self.prior_y {
            Some(logits) => logits.log_softmax(-1, Kind::Float),
            None => Tensor::full(
                [self.cfg.components as i64],
                -(self.cfg.components as f64).ln(),
                (Kind::Float, self.prior_mean.device()),
            ),
        }
    }

    /// `KL(N(mean, exp(log_var)) ‖ p(z | k))` summed over latent dimensions, `[K, cells]`, for a
    /// posterior of `[K, cells, latent]` (one per component) or `[cells, latent]` (shared).
    fn kl_to_components(&self, mean: &Tensor, log_var: &Tensor) -> Tensor {
        let prior_mean = self.prior_mean.unsqueeze(1);
        let prior_log_var = self.prior_log_var.unsqueeze(1);
        ((&prior_log_var - log_var)
            + (log_var.exp() + (mean - &prior_mean).square()) * (-&prior_log_var).exp()
            - 1.0)
            .sum_dim_intlist(-1, false, Kind::Float)
            * 0.5
    }

    /// The ELBO of each cell of counts `x` (`[cells, genes]`) and its terms, with `samples`
    /// latent draws per cell and component.
    ///
    /// # Errors
    /// As [`Gmvae::log_q_y_batch`].
    pub fn terms(&self, batch: &TensorBatch, samples: usize, train: bool) -> Result<GmvaeTerms> {
        self.terms_with(batch, samples, train, Reduction::Rows)
    }

    /// [`Gmvae::terms`]; with [`Reduction::Mean`] and a shared posterior, `log_likelihood` is
    /// the mean over cells (a scalar, which lets a training step take the decoder's fast path)
    /// and `elbo` broadcasts it.
    fn terms_with(
        &self,
        batch: &TensorBatch,
        samples: usize,
        train: bool,
        reduction: Reduction,
    ) -> Result<GmvaeTerms> {
        let x = &batch.x;
        let sparse = batch.sparse.as_ref();
        let codes = self.codes(batch)?;
        let (k, latent) = (self.cfg.components as i64, self.cfg.vae.latent as i64);
        let cells = x.size()[0];
        let (mean, log_var) = self.z_posterior(x, sparse, &codes, train);
        let kl_z = self.kl_to_components(&mean, &log_var);
        let (log_q_y, lead) = match self.cfg.posterior {
            MixturePosterior::PerComponent => {
                (self.log_q_y_counts(x, sparse, &codes, train), vec![k])
            }
            MixturePosterior::Shared => (self.shared_log_q_y(&kl_z), vec![]),
        };
        let q_y = log_q_y.exp();
        let shape: Vec<i64> = std::iter::once(samples as i64)
            .chain(lead.iter().copied())
            .chain([cells, latent])
            .collect();
        let eps =
            crate::parallel::normal_for_cells(&shape, shape.len() - 2, mean.kind(), mean.device());
        let z = &mean + eps * (&log_var * 0.5).exp();
        let weighted =
            |t: &Tensor| (t.transpose(0, 1) * &q_y).sum_dim_intlist(-1, false, Kind::Float);
        let log_likelihood = match self.cfg.posterior {
            // E log p(x | z) per component and cell, [K, cells], weighted by q(y | x).
            MixturePosterior::PerComponent => weighted(
                &self
                    .decoder
                    .log_lik(&z, x, &batch.log_library(), &codes, train, Reduction::Rows)
                    .mean_dim(0, false, Kind::Float),
            ),
            // One z for every component: the same term whatever y.
            MixturePosterior::Shared => {
                let ll =
                    self.decoder
                        .log_lik(&z, x, &batch.log_library(), &codes, train, reduction);
                match reduction {
                    Reduction::Rows => ll.mean_dim(0, false, Kind::Float),
                    Reduction::Mean => ll,
                }
            }
        };
        let kl_z = weighted(&kl_z);
        let kl_y = (&q_y * (&log_q_y - self.log_p_y().unsqueeze(0))).sum_dim_intlist(
            -1,
            false,
            Kind::Float,
        );
        Ok(GmvaeTerms {
            elbo: &log_likelihood - &kl_z - &kl_y,
            log_likelihood,
            kl_z,
            kl_y,
            log_q_y,
        })
    }

    /// The mean and log-variance of `q(z | x, k)`: `[K, cells, latent]` each for a posterior per
    /// component, `[cells, latent]` for a shared one.
    fn z_posterior(
        &self,
        x: &Tensor,
        sparse: Option<&SparseRows>,
        codes: &Codes,
        train: bool,
    ) -> (Tensor, Tensor) {
        let latent = self.cfg.vae.latent as i64;
        let (h, lead) = match &self.y_embedding {
            Some(embedding) => {
                let offset = embedding.unsqueeze(1);
                let h = Hidden::forward_offset(&self.z_encoder, x, sparse, &offset, codes, train);
                (h, vec![self.cfg.components as i64])
            }
            None => (
                Hidden::forward_counts(&self.z_encoder, x, sparse, codes, train),
                vec![],
            ),
        };
        let shape: Vec<i64> = lead.into_iter().chain([x.size()[0], latent]).collect();
        let [lo, hi] = self.cfg.vae.log_var_range;
        let mean = self.z_mean.forward(&h).view(shape.as_slice());
        let log_var = self
            .z_log_var
            .forward(&h)
            .clamp(lo, hi)
            .view(shape.as_slice());
        (mean, log_var)
    }

    /// The posterior mean of `z`, `E_q(y|x) E_q(z|x,y) z = Σ_k q(k | x) mean_k(x)`, of the cells
    /// of `batch` (`[cells, latent]`), in evaluation mode.
    ///
    /// # Errors
    /// As [`Gmvae::log_q_y_batch`].
    pub fn latent_means(&self, batch: &TensorBatch) -> Result<Tensor> {
        let codes = self.codes(batch)?;
        let (x, sparse) = (&batch.x, batch.sparse.as_ref());
        let (mean, _) = self.z_posterior(x, sparse, &codes, false);
        if self.y_embedding.is_none() {
            return Ok(mean);
        }
        let q_y = self.log_q_y_counts(x, sparse, &codes, false).exp();
        Ok((mean * q_y.transpose(0, 1).unsqueeze(-1)).sum_dim_intlist(0, false, Kind::Float))
    }

    /// `q(y | x)` of the cells of `batch` (`[cells, K]`), in evaluation mode.
    ///
    /// # Errors
    /// As [`Gmvae::log_q_y_batch`].
    pub fn cluster_probabilities(&self, batch: &TensorBatch) -> Result<Tensor> {
        Ok(self.log_q_y_batch(batch, false)?.exp())
    }
}

impl Model for Gmvae {
    fn name(&self) -> &'static str {
        "GMVAE"
    }

    fn add_sparse_grads(&self) {
        Hidden::add_sparse_grads(&self.y_encoder);
        Hidden::add_sparse_grads(&self.z_encoder);
        self.decoder.add_head_grads();
    }

    fn input_genes(&self) -> usize {
        self.genes as usize
    }

    fn losses(&self, batch: &TensorBatch, train: bool) -> Result<Losses> {
        let reduction = if train {
            Reduction::Mean
        } else {
            Reduction::Rows
        };
        let t = self.terms_with(batch, self.cfg.vae.mc_samples, train, reduction)?;
        let beta = if train { self.beta } else { 1.0 };
        let y_term = match (self.cfg.y_regulariser, batch.field(&self.supervision)) {
            (YRegulariser::Kl, _) => &t.kl_y * beta,
            (YRegulariser::None, _) => t.kl_y.zeros_like(),
            // Evaluation reports the ELBO, whatever trains `q(y | x)`.
            (YRegulariser::Supervised, _) if !train => &t.kl_y * beta,
            (YRegulariser::Supervised, Some(labels)) => {
                let nll = -t
                    .log_q_y
                    .gather(1, &labels.clamp_min(0).unsqueeze(1), false)
                    .squeeze_dim(1);
                nll.where_self(&labels.ge(0), &(&t.kl_y * beta))
            }
            (YRegulariser::Supervised, None) => {
                return Err(Error::Config(format!(
                    "the supervised q(y | x) regulariser needs batches with the field `{}`",
                    self.supervision
                )));
            }
        };
        let mut total = (-&t.log_likelihood + &t.kl_z * beta + y_term).mean(Kind::Float);
        if train && self.cfg.y_balance > 0.0 {
            let log_mean_q = t.log_q_y.logsumexp([0], false) - (t.log_q_y.size()[0] as f64).ln();
            let balance = (log_mean_q.exp() * (&log_mean_q - self.log_p_y())).sum(Kind::Float);
            total += balance * self.cfg.y_balance;
        }
        if train {
            // Counted on the device; read once, when the epoch ends.
            let k = self.cfg.components as i64;
            let counts = t
                .log_q_y
                .argmax(-1, false)
                .detach()
                .bincount::<Tensor>(None, k);
            let mut assigned = self.assigned.borrow_mut();
            *assigned = Some(match assigned.take() {
                Some(sum) => sum + counts,
                None => counts,
            });
        }
        let mean = |v: &Tensor| v.mean(Kind::Float);
        Ok(Losses {
            total,
            terms: vec![
                ("elbo", mean(&t.elbo)),
                ("log_likelihood", mean(&t.log_likelihood)),
                ("kl_z", mean(&t.kl_z)),
                ("kl_y", mean(&t.kl_y)),
            ],
        })
    }

    /// `components_used`: the components that were the most probable for at least one
    /// training cell during the epoch.
    fn epoch_figures(&mut self) -> Result<Vec<(&'static str, f64)>> {
        let used = match self.assigned.borrow_mut().take() {
            Some(counts) => i64::try_from(counts.gt(0).sum(Kind::Int64))?,
            None => 0,
        };
        Ok(vec![("components_used", used as f64)])
    }

    fn begin_epoch(&mut self, epoch: usize) {
        self.beta = kl_weight_at(epoch, self.cfg.vae.kl_warmup_epochs);
    }
}

#[cfg(test)]
mod tests {
    use scae_io::DenseRows;
    use tch::{Device, nn::VarStore};

    use super::*;
    use crate::{Library, TrainConfig, fit};

    fn batch(x: &Tensor) -> TensorBatch {
        TensorBatch::from_tensor(x.shallow_clone())
    }

    /// Counts from a mixture of `k` Poisson components over `genes` genes: component `c` has rate
    /// 20 on its own block of genes and 1 elsewhere. Returns the counts and each cell's component.
    fn mixture(cells: i64, genes: i64, k: i64, seed: i64) -> (Tensor, Vec<usize>) {
        tch::manual_seed(seed);
        let opts = (Kind::Float, Device::Cpu);
        let component = Tensor::randint(k, [cells], (Kind::Int64, Device::Cpu));
        let block = Tensor::arange(genes, (Kind::Int64, Device::Cpu)).remainder(k);
        let own = component.unsqueeze(1).eq_tensor(&block.unsqueeze(0));
        let rate = own.to_kind(Kind::Float) * 19.0 + Tensor::ones([cells, genes], opts);
        let labels = Vec::<i64>::try_from(&component)
            .expect("labels")
            .into_iter()
            .map(|c| c as usize)
            .collect();
        (rate.poisson(), labels)
    }

    fn train_cfg(epochs: usize) -> TrainConfig {
        TrainConfig {
            epochs,
            batch_size: 64,
            learning_rate: 1e-2,
            weight_decay: 0.0,
            eval_batch_size: 256,
            clip_grad_norm: Some(50.0),
            adam_eps: 1e-8,
        }
    }

    /// 3 components over 9 genes, a latent of 2 and a learned p(y).
    fn small(vs: &VarStore, posterior: MixturePosterior) -> Gmvae {
        let mut cfg = GmvaeConfig::new(3, 2, Likelihood::Poisson);
        cfg.vae.hidden = vec![8];
        cfg.learn_prior = true;
        cfg.posterior = posterior;
        Gmvae::new(&vs.root(), 9, &cfg).expect("valid")
    }

    #[test]
    fn the_elbo_is_the_q_y_weighted_sum_of_its_components() {
        let _rng = crate::torch_rng_lock();
        let (x, _) = mixture(12, 9, 3, 1);
        let vs = VarStore::new(Device::Cpu);
        let model = small(&vs, MixturePosterior::PerComponent);
        tch::manual_seed(4);
        let t = model.terms(&batch(&x), 1, false).expect("no covariates");
        let q_y = t.log_q_y.exp();
        // Probabilities over components sum to one, and every term is finite.
        let sums = q_y.sum_dim_intlist(-1, false, Kind::Float);
        assert!(f64::try_from((sums - 1.0).abs().max()).expect("scalar") < 1e-5);
        for v in [&t.elbo, &t.log_likelihood, &t.kl_z, &t.kl_y] {
            assert!(bool::try_from(v.isfinite().all()).expect("scalar"));
        }
        // KL(q(y|x) || p(y)) against its definition, with p(y) the learned softmax.
        let log_p = model.log_p_y();
        let kl_y =
            (&q_y * (&t.log_q_y - log_p.unsqueeze(0))).sum_dim_intlist(-1, false, Kind::Float);
        let diff = f64::try_from((&kl_y - &t.kl_y).abs().max()).expect("scalar");
        assert!(diff < 1e-5, "kl_y differs by {diff}");
        assert!(f64::try_from(t.kl_y.min()).expect("scalar") >= -1e-6);
        // ELBO = E_q(y) [ll - KL_z] - KL_y.
        let diff = f64::try_from(
            (&t.elbo - (&t.log_likelihood - &t.kl_z - &t.kl_y))
                .abs()
                .max(),
        )
        .expect("scalar");
        assert!(diff < 1e-4);
    }

    #[test]
    fn the_shared_posterior_puts_q_y_at_the_elbos_optimum() {
        let _rng = crate::torch_rng_lock();
        let (x, _) = mixture(12, 9, 3, 1);
        let vs = VarStore::new(Device::Cpu);
        let mut model = small(&vs, MixturePosterior::Shared);
        model.set_prior_weights(&[3.0, 0.5, 1.5]).expect("valid");
        tch::manual_seed(4);
        let t = model.terms(&batch(&x), 1, false).expect("no covariates");
        // With one q(z | x), q(k | x) ∝ p(k) exp(-KL_k), and the two KL terms together are
        // -log Σ_k p(k) exp(-KL_k): the ELBO is E log p(x | z) + logsumexp_k(log p(k) - KL_k).
        let (mean, log_var) = model.z_posterior(&x, None, &Codes::none(), false);
        assert_eq!(mean.size(), [12, 2]);
        let kl = model.kl_to_components(&mean, &log_var);
        let bound = (model.log_p_y().unsqueeze(1) - &kl).logsumexp([0], false);
        let diff = f64::try_from((&t.kl_z + &t.kl_y + &bound).abs().max()).expect("scalar");
        assert!(diff < 1e-4, "KL terms differ from -logsumexp by {diff}");
        // Any other q(y | x) gives a smaller bound: uniform, for one.
        let uniform =
            kl.mean_dim(0, false, Kind::Float) - model.log_p_y().mean(Kind::Float) + (-(3f64).ln());
        assert!(bool::try_from((-&uniform).le_tensor(&bound).all()).expect("scalar"));
        // No network of its own for q(y | x), and the decoder runs once per cell.
        assert!(model.y_head.is_none() && model.y_embedding.is_none());
        assert!(vs.variables().keys().all(|name| !name.starts_with("y_")));
        // The latent mean is the shared posterior's.
        let means = model.latent_means(&batch(&x)).expect("no covariates");
        assert!(means.allclose(&mean, 1e-6, 1e-6, false));
    }

    #[test]
    fn the_gaussian_kl_matches_its_closed_form() {
        let _rng = crate::torch_rng_lock();
        // One latent dimension: KL(N(m, v) || N(m2, v2)) = ln(s2/s) + (v + (m - m2)^2) / (2 v2) - 1/2.
        let (x, _) = mixture(4, 6, 2, 2);
        let vs = VarStore::new(Device::Cpu);
        let mut cfg = GmvaeConfig::new(2, 1, Likelihood::Poisson);
        cfg.vae.hidden = vec![4];
        let model = Gmvae::new(&vs.root(), 6, &cfg).expect("valid");
        let h = Hidden::forward_offset(
            &model.z_encoder,
            &x,
            None,
            &model
                .y_embedding
                .as_ref()
                .expect("per component")
                .unsqueeze(1),
            &Codes::none(),
            false,
        );
        let mean = Vec::<f32>::try_from(model.z_mean.forward(&h).flatten(0, -1)).expect("mean");
        let log_var =
            Vec::<f32>::try_from(model.z_log_var.forward(&h).clamp(-12.0, 8.0).flatten(0, -1))
                .expect("log var");
        let pm = Vec::<f32>::try_from(model.prior_mean.flatten(0, -1)).expect("prior mean");
        let t = model.terms(&batch(&x), 1, false).expect("no covariates");
        let q_y = Vec::<f32>::try_from(t.log_q_y.exp().flatten(0, -1)).expect("q");
        let kl_z = Vec::<f32>::try_from(&t.kl_z).expect("kl");
        for cell in 0..4 {
            let mut expected = 0.0f64;
            for k in 0..2 {
                let i = k * 4 + cell;
                let (m, v) = (f64::from(mean[i]), f64::from(log_var[i]).exp());
                let kl = -0.5 * v.ln() + (v + (m - f64::from(pm[k])).powi(2)) / 2.0 - 0.5;
                expected += f64::from(q_y[cell * 2 + k]) * kl;
            }
            approx::assert_relative_eq!(f64::from(kl_z[cell]), expected, max_relative = 1e-4);
        }
    }

    #[test]
    fn training_finds_the_mixture_components() {
        finds_the_mixture_components(MixturePosterior::PerComponent);
    }

    #[test]
    fn training_with_a_shared_posterior_finds_the_mixture_components() {
        finds_the_mixture_components(MixturePosterior::Shared);
    }

    fn finds_the_mixture_components(posterior: MixturePosterior) {
        let _rng = crate::torch_rng_lock();
        tch::set_num_threads(1);
        let (x, truth) = mixture(600, 30, 3, 3);
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let mut cfg = GmvaeConfig::new(3, 2, Likelihood::Poisson);
        cfg.vae.hidden = vec![32];
        cfg.vae.library = Library::None;
        cfg.posterior = posterior;
        let mut model = Gmvae::new(&vs.root(), 30, &cfg).expect("valid");
        let (values, rows, cols) = crate::tensor_to_rows(&x).expect("2-D");
        let host = ndarray::Array2::from_shape_vec((rows, cols), values).expect("shape");
        let source = DenseRows::all(host.view());
        let history =
            fit(&mut model, &vs, &source, None, &train_cfg(80), 1, |_| {}).expect("training runs");
        let used = history.epochs.last().expect("epochs").figures.clone();
        assert_eq!(used, vec![("components_used", 3.0)]);
        let first = history.epochs[0].train_terms.get("elbo").expect("elbo");
        let last = history.last_train_term("elbo").expect("elbo");
        assert!(last > first, "ELBO {first} -> {last}");
        let probs = model
            .cluster_probabilities(&batch(&x))
            .expect("no covariates");
        let assigned: Vec<usize> = Vec::<i64>::try_from(probs.argmax(-1, false))
            .expect("argmax")
            .into_iter()
            .map(|c| c as usize)
            .collect();
        let ari = scae_eval::adjusted_rand_index(&truth, &assigned).expect("ari");
        assert!(ari > 0.9, "ARI {ari}");
    }

    #[test]
    fn the_balance_term_is_the_kl_of_the_batch_mean_of_q_y() {
        let _rng = crate::torch_rng_lock();
        let (x, _) = mixture(16, 9, 3, 5);
        let vs = VarStore::new(Device::Cpu);
        let mut cfg = GmvaeConfig::new(3, 2, Likelihood::Poisson);
        cfg.vae.hidden = vec![8];
        cfg.vae.library = Library::None;
        let mut model = Gmvae::new(&vs.root(), 9, &cfg).expect("valid");
        model.begin_epoch(0);
        tch::manual_seed(7);
        let plain =
            f64::try_from(model.losses(&batch(&x), true).expect("step").total).expect("scalar");
        model.cfg.y_balance = 2.5;
        tch::manual_seed(7);
        let balanced =
            f64::try_from(model.losses(&batch(&x), true).expect("step").total).expect("scalar");
        // KL(q̄ || uniform) = Σ q̄ ln q̄ + ln K, with q̄ the mean of q(y | x) over the batch.
        let q_mean = model
            .log_q_y(&x, true)
            .exp()
            .mean_dim(0, false, Kind::Double);
        let kl =
            f64::try_from((&q_mean * q_mean.log()).sum(Kind::Double)).expect("scalar") + 3f64.ln();
        assert!(kl > 0.0);
        approx::assert_relative_eq!(balanced - plain, 2.5 * kl, max_relative = 1e-3);
        // Evaluation never includes it.
        tch::manual_seed(7);
        let eval =
            f64::try_from(model.losses(&batch(&x), false).expect("step").total).expect("scalar");
        model.cfg.y_balance = 0.0;
        tch::manual_seed(7);
        let eval_plain =
            f64::try_from(model.losses(&batch(&x), false).expect("step").total).expect("scalar");
        assert_eq!(eval, eval_plain);
    }

    #[test]
    fn supervision_reads_the_field_it_is_told_and_a_cell_without_a_code_takes_the_elbo_term() {
        let _rng = crate::torch_rng_lock();
        let (x, _) = mixture(12, 9, 3, 5);
        let vs = VarStore::new(Device::Cpu);
        let mut cfg = GmvaeConfig::new(3, 2, Likelihood::Poisson);
        cfg.vae.hidden = vec![8];
        cfg.vae.kl_warmup_epochs = 0;
        let mut model = Gmvae::new(&vs.root(), 9, &cfg).expect("valid");
        model.begin_epoch(0);
        let total = |model: &Gmvae, codes: Option<&[i64]>| {
            let mut b = batch(&x);
            if let Some(codes) = codes {
                let field = Tensor::from_slice(codes);
                b.fields.insert(scae_io::keys::PSEUDO_LABELS.into(), field);
            }
            tch::manual_seed(7);
            model
                .losses(&b, true)
                .map(|l| f64::try_from(l.total).expect("scalar"))
        };
        let elbo = total(&model, None).expect("step");
        model.supervise_on(scae_io::keys::PSEUDO_LABELS);
        let missing = [scae_io::MISSING; 12];
        assert_eq!(total(&model, Some(&missing)).expect("step"), elbo);
        let mut some = missing;
        some[..6].copy_from_slice(&[0, 1, 2, 0, 1, 2]);
        let half = total(&model, Some(&some)).expect("step");
        let all = total(&model, Some(&[0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])).expect("step");
        assert!(half != elbo && half != all, "{elbo} {half} {all}");
        let err = total(&model, None).expect_err("no field").to_string();
        assert!(err.contains(scae_io::keys::PSEUDO_LABELS), "{err}");
        // Back to the labels, which this batch does not carry either.
        model.set_y_regulariser(YRegulariser::Supervised);
        let err = total(&model, Some(&some))
            .expect_err("no labels")
            .to_string();
        assert!(err.contains(scae_io::keys::LABELS), "{err}");
    }

    #[test]
    fn prior_means_can_be_set_and_the_regulariser_changed() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = GmvaeConfig::new(3, 2, Likelihood::Nb);
        let mut model = Gmvae::new(&vs.root(), 5, &cfg).expect("valid");
        let means = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([3, 2]);
        model.set_prior_means(&means).expect("right shape");
        assert!(model.prior_mean.allclose(&means, 0.0, 0.0, false));
        assert!(matches!(
            model.set_prior_means(&means.view([2, 3])),
            Err(Error::Config(_))
        ));
        model.set_y_regulariser(YRegulariser::Supervised);
        assert_eq!(model.config().y_regulariser, YRegulariser::Supervised);
        // A uniform p(y) stays uniform; a learned one takes the weights, normalised.
        model.set_prior_weights(&[1.0, 2.0, 1.0]).expect("valid");
        let uniform = Vec::<f32>::try_from(model.log_p_y().exp()).expect("p(y)");
        assert!(uniform.iter().all(|p| (p - 1.0 / 3.0).abs() < 1e-6));
        let mut learned_cfg = cfg.clone();
        learned_cfg.learn_prior = true;
        let vs = VarStore::new(Device::Cpu);
        let mut learned = Gmvae::new(&vs.root(), 5, &learned_cfg).expect("valid");
        learned.set_prior_weights(&[1.0, 2.0, 1.0]).expect("valid");
        let p = Vec::<f32>::try_from(learned.log_p_y().exp()).expect("p(y)");
        for (got, want) in p.iter().zip([0.25f32, 0.5, 0.25]) {
            assert!((got - want).abs() < 1e-6, "{p:?}");
        }
        assert!(learned.set_prior_weights(&[1.0, 0.0, 1.0]).is_err());
        assert!(learned.set_prior_weights(&[1.0, 1.0]).is_err());
    }

    #[test]
    fn bad_configs_are_rejected() {
        let mut cfg = GmvaeConfig::new(1, 2, Likelihood::Nb);
        assert!(matches!(cfg.validate(), Err(Error::Config(_))));
        cfg.components = 3;
        cfg.vae.hidden.clear();
        assert!(matches!(cfg.validate(), Err(Error::Config(_))));
        cfg.vae.hidden = vec![8];
        assert!(cfg.validate().is_ok());
        cfg.y_balance = -1.0;
        assert!(matches!(cfg.validate(), Err(Error::Config(_))));
    }
}
