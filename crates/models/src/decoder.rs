//! The count decoder the VAE and the GMVAE share: `z -> hidden.. ->` the parameters of a count
//! law ([`scae_dists::CountLaw`]): the log-mean (with the observed library, log-proportion
//! logits scaled by the cell's total count), for the NB laws the log inverse dispersion (one per
//! gene, or per gene and cell), for the zero-inflated laws a zero-inflation logit per gene and
//! cell. Its variables keep the names the VAE has always saved (`decoder/..`, `mean_head`,
//! `log_theta` or `theta_head`, `zi_head`), so saved models load unchanged.

use std::sync::{Mutex, PoisonError};

use scae_dists::{CountLaw, FusedLaw, Likelihood, Reduction};
use tch::{Device, Kind, Tensor, nn, nn::Module};

use crate::autoencoder::torch_linear_init;
use crate::covariates::Codes;
use crate::layers::{Hidden, grad_of};
use crate::vae::{Dispersion, Library};

/// `p(x | z)` (see the module documentation).
#[derive(Debug)]
pub(crate) struct CountDecoder {
    likelihood: Likelihood,
    library: Library,
    latent: i64,
    genes: i64,
    hidden: Vec<Hidden>,
    /// Log-mean (or log-proportion logits with the observed library).
    mean_head: nn::Linear,
    /// `[genes]` log-theta, or a head for per-cell dispersion.
    theta: Option<Theta>,
    zi_head: Option<nn::Linear>,
    /// The training passes whose mean-head gradients are still to be added (see
    /// [`CountDecoder::add_head_grads`]).
    head_passes: Mutex<Vec<HeadPass>>,
}

/// A training pass of the mean head outside autograd: its input, the derivatives of the mean
/// log-likelihood with respect to its output, and a leaf that gets a gradient when the loss is
/// back-propagated through the pass.
#[derive(Debug)]
struct HeadPass {
    h: Tensor,
    d_logits: Tensor,
    probe: Tensor,
}

/// What shapes a [`CountDecoder`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecoderShape<'a> {
    pub genes: usize,
    pub latent: usize,
    /// Hidden widths, latent side first.
    pub hidden: &'a [usize],
    pub likelihood: Likelihood,
    pub dispersion: Dispersion,
    pub library: Library,
    pub batch_norm: bool,
    /// Stacked covariate categories injected into every hidden layer (0: none).
    pub covariate_rows: usize,
    /// The first covariate's categories, for a dispersion per gene and batch.
    pub batch_categories: usize,
}

#[derive(Debug)]
enum Theta {
    Gene(Tensor),
    Cell(nn::Linear),
    /// `[batches, genes]`, a row per category of the first covariate.
    GeneBatch(Tensor),
}

impl CountDecoder {
    /// The layers under `p` (the decoder's own layers under `p / "decoder"`).
    pub(crate) fn new(p: &nn::Path<'_>, shape: DecoderShape<'_>) -> Self {
        let DecoderShape {
            genes,
            latent,
            hidden,
            likelihood,
            dispersion,
            library,
            batch_norm,
            covariate_rows,
            batch_categories,
        } = shape;
        let widths: Vec<usize> = std::iter::once(latent)
            .chain(hidden.iter().copied())
            .collect();
        let out = *widths.last().unwrap_or(&latent);
        let head = |name: &str, to: usize| {
            nn::linear(p / name, out as i64, to as i64, torch_linear_init(out))
        };
        Self {
            hidden: Hidden::stack(
                &(p / "decoder"),
                &widths,
                batch_norm,
                0.0,
                false,
                covariate_rows,
            ),
            mean_head: head("mean_head", genes),
            theta: likelihood.has_dispersion().then(|| match dispersion {
                Dispersion::Gene => Theta::Gene(p.zeros("log_theta", &[genes as i64])),
                Dispersion::GeneCell => Theta::Cell(head("theta_head", genes)),
                Dispersion::GeneBatch => Theta::GeneBatch(
                    p.zeros("log_theta_batch", &[batch_categories as i64, genes as i64]),
                ),
            }),
            zi_head: likelihood
                .has_zero_inflation()
                .then(|| head("zi_head", genes)),
            likelihood,
            library,
            latent: latent as i64,
            genes: genes as i64,
            head_passes: Mutex::new(Vec::new()),
        }
    }

    /// The count law of `p(x | z)`. `z` is `[.., cells, latent]`; `log_library` is `[cells, 1]`
    /// (log total counts), used with the observed library; `codes` are the cells' covariates.
    pub(crate) fn law(
        &self,
        z: &Tensor,
        log_library: &Tensor,
        codes: &Codes,
        train: bool,
    ) -> CountLaw {
        self.decoded(z, codes, train).law(self.library, log_library)
    }

    /// The raw outputs for `z` (`[.., cells, latent]`).
    fn decoded(&self, z: &Tensor, codes: &Codes, train: bool) -> Decoded {
        let lead = &z.size()[..z.dim() - 1];
        let h = self.hidden_of(z, codes, train);
        self.decoded_from(&h, lead, codes)
    }

    /// The last hidden layer's output for `z`, `[rows, width]`.
    fn hidden_of(&self, z: &Tensor, codes: &Codes, train: bool) -> Tensor {
        Hidden::forward(&self.hidden, &z.reshape([-1, self.latent]), codes, train)
    }

    /// The raw outputs from the last hidden layer's output `h`; `lead` are `z`'s leading sizes.
    fn decoded_from(&self, h: &Tensor, lead: &[i64], codes: &Codes) -> Decoded {
        let shape: Vec<i64> = lead.iter().copied().chain([self.genes]).collect();
        let out = |t: Tensor| t.reshape(shape.as_slice());
        Decoded {
            likelihood: self.likelihood,
            logits: self.mean_head.forward(h),
            log_theta: self.theta.as_ref().map(|t| match t {
                Theta::Gene(t) => t.shallow_clone(),
                Theta::Cell(head) => out(head.forward(h)),
                // `[cells, genes]`, broadcast over the leading sizes.
                Theta::GeneBatch(t) => match codes.first() {
                    Some(batch) => t.index_select(0, batch),
                    None => t.narrow(0, 0, 1),
                },
            }),
            zi_logit: self.zi_head.as_ref().map(|head| out(head.forward(h))),
            shape,
        }
    }

    /// `log p(x | z)` summed over genes, `[.., cells]` for `z` of `[.., cells, latent]`, or with
    /// [`Reduction::Mean`] its mean over every sample and cell (a scalar). Poisson, per-gene NB
    /// and their zero-inflated forms on the CPU take the fused path
    /// ([`scae_dists::softmax_rows_log_prob`]); everything else the tensor formulas of
    /// [`CountLaw`].
    pub(crate) fn log_lik(
        &self,
        z: &Tensor,
        x: &Tensor,
        log_library: &Tensor,
        codes: &Codes,
        train: bool,
        reduction: Reduction,
    ) -> Tensor {
        let pass = Pass {
            train,
            reduction,
            manual_head: true,
        };
        self.log_lik_with(z, x, log_library, codes, pass)
    }

    /// [`CountDecoder::log_lik`] of a [`Pass`].
    fn log_lik_with(
        &self,
        z: &Tensor,
        x: &Tensor,
        log_library: &Tensor,
        codes: &Codes,
        pass: Pass,
    ) -> Tensor {
        let Pass {
            train,
            reduction,
            manual_head,
        } = pass;
        let lead = &z.size()[..z.dim() - 1];
        let h = self.hidden_of(z, codes, train);
        if manual_head
            && train
            && reduction == Reduction::Mean
            && let Some(ll) = self.manual_head(&h, x, log_library)
        {
            return ll;
        }
        let d = self.decoded_from(&h, lead, codes);
        let lead = &d.shape[..d.shape.len() - 1];
        let fused = match (d.likelihood, &d.log_theta) {
            (Likelihood::Poisson | Likelihood::Zip, _) => Some(scae_dists::FusedLaw::Poisson),
            (Likelihood::Nb | Likelihood::Zinb, Some(t)) if t.dim() == 1 => {
                Some(scae_dists::FusedLaw::Nb)
            }
            _ => None,
        };
        let zi = d.zi_logit.as_ref().map(|z| z.reshape([-1, self.genes]));
        let library = (self.library == Library::Observed).then_some(log_library);
        if let Some(law) = fused
            && let Some(ll) = scae_dists::softmax_rows_log_prob(
                law,
                &d.logits,
                library,
                d.log_theta.as_ref(),
                zi.as_ref(),
                x,
                reduction,
            )
        {
            return match reduction {
                Reduction::Rows => ll.reshape(lead),
                Reduction::Mean => ll,
            };
        }
        let rows = scae_dists::log_prob_rows(&d.law(self.library, log_library), x);
        match reduction {
            Reduction::Rows => rows,
            Reduction::Mean => rows.mean(Kind::Float),
        }
    }
}

impl CountDecoder {
    /// The mean log-likelihood of a training pass through the fused path with the mean head
    /// (the `width x genes` layer, the step's largest) outside autograd: its logits computed
    /// without a graph, the fused pass's `∂/∂logits` turned into the head's input gradient here
    /// (`∂h = ∂logits W`, handed to autograd through the surrogate `Σ h ∂h`) and, after
    /// `backward`, into its weight and bias gradients by [`CountDecoder::add_head_grads`]
    /// (`∂W += ∂logitsᵀ h` in place). Autograd's route for the same gradients multiplied the
    /// `rows x genes` derivatives by the loss's unit gradient, kept `W`'s gradient in a new
    /// tensor and then added it to the old one: three passes over `rows x genes` or `genes x
    /// width` memory per step that this one does not make. `None` where the fused path does
    /// not apply (zero inflation, per-cell dispersion, off the CPU).
    fn manual_head(&self, h: &Tensor, x: &Tensor, log_library: &Tensor) -> Option<Tensor> {
        let (law, log_theta) = match (self.likelihood, &self.theta) {
            (Likelihood::Poisson, _) => (FusedLaw::Poisson, None),
            (Likelihood::Nb, Some(Theta::Gene(t))) => (FusedLaw::Nb, Some(t)),
            _ => return None,
        };
        let head = &self.mean_head;
        let trains = std::iter::once(&head.ws)
            .chain(head.bs.as_ref())
            .all(|t| t.requires_grad() && t.device() == Device::Cpu && t.kind() == Kind::Float);
        if self.zi_head.is_some() || !trains || h.dim() != 2 || h.device() != Device::Cpu {
            return None;
        }
        let logits = tch::no_grad(|| head.forward(h));
        let library = (self.library == Library::Observed).then_some(log_library);
        let (ll, d_logits) = scae_dists::softmax_rows_log_prob_logit_grad(
            law,
            &logits,
            library,
            log_theta,
            None,
            x,
            Reduction::Mean,
        )?;
        let d_h = tch::no_grad(|| d_logits.mm(&head.ws));
        let surrogate = (h * d_h).sum(Kind::Float);
        let probe = Tensor::zeros([], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        self.head_passes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(HeadPass {
                h: h.detach(),
                d_logits,
                probe: probe.shallow_clone(),
            });
        Some(ll + &surrogate - surrogate.detach() + probe)
    }

    /// Adds the mean head's weight and bias gradients of every [`CountDecoder::manual_head`]
    /// pass that was back-propagated since the last call; after `backward`, before the
    /// optimiser step.
    pub(crate) fn add_head_grads(&self) {
        let passes = std::mem::take(
            &mut *self
                .head_passes
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let _guard = tch::no_grad_guard();
        for HeadPass { h, d_logits, probe } in passes {
            // The loss's gradient with respect to the log-likelihood (the probe is added to
            // it): the factor autograd would have applied.
            let upstream = probe.grad();
            if !upstream.defined() {
                continue;
            }
            let _ = grad_of(&self.mean_head.ws).addmm_(&d_logits.tr(), &(h * &upstream));
            if let Some(b) = &self.mean_head.bs {
                let _ = grad_of(b)
                    .g_add_(&(d_logits.sum_dim_intlist(0, false, Kind::Float) * &upstream));
            }
        }
    }
}

/// How [`CountDecoder::log_lik_with`] runs: a training pass or not, the reduction, and whether a
/// training mean over the fused path takes the mean head out of autograd
/// ([`CountDecoder::manual_head`]).
#[derive(Debug, Clone, Copy)]
struct Pass {
    train: bool,
    reduction: Reduction,
    manual_head: bool,
}

/// The decoder's outputs before they become a [`CountLaw`].
#[derive(Debug)]
struct Decoded {
    likelihood: Likelihood,
    /// `[rows, genes]`, rows = the product of `shape`'s leading sizes.
    logits: Tensor,
    log_theta: Option<Tensor>,
    zi_logit: Option<Tensor>,
    /// `[.., cells, genes]`.
    shape: Vec<i64>,
}

impl Decoded {
    fn law(self, library: Library, log_library: &Tensor) -> CountLaw {
        let raw = self.logits.reshape(self.shape.as_slice());
        let log_mean = match library {
            Library::Observed => raw.log_softmax(-1, Kind::Float) + log_library,
            Library::None => raw,
        };
        match (self.likelihood, self.log_theta, self.zi_logit) {
            (Likelihood::Nb, Some(log_theta), _) => CountLaw::Nb {
                log_mean,
                log_theta,
            },
            (Likelihood::Zip, _, Some(zi_logit)) => CountLaw::Zip {
                log_rate: log_mean,
                zi_logit,
            },
            (Likelihood::Zinb, Some(log_theta), Some(zi_logit)) => CountLaw::Zinb {
                log_mean,
                log_theta,
                zi_logit,
            },
            _ => CountLaw::Poisson { log_rate: log_mean },
        }
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, nn::VarStore};

    use super::*;

    /// The mean head outside autograd against autograd's route: the same log-likelihood and
    /// the same gradients of every decoder parameter and of `z`, for Poisson and NB, with and
    /// without the observed library, two samples per cell, over two passes (the second adds to
    /// the gradients of the first); a pass that is not back-propagated adds nothing.
    #[test]
    fn the_manual_mean_head_matches_autograd() {
        let _rng = crate::torch_rng_lock();
        let opts = (Kind::Float, Device::Cpu);
        for likelihood in [Likelihood::Poisson, Likelihood::Nb] {
            for library in [Library::Observed, Library::None] {
                let run = |manual: bool| {
                    tch::manual_seed(13);
                    let vs = VarStore::new(Device::Cpu);
                    let decoder = CountDecoder::new(
                        &vs.root(),
                        DecoderShape {
                            genes: 37,
                            latent: 3,
                            hidden: &[11],
                            likelihood,
                            dispersion: Dispersion::Gene,
                            library,
                            batch_norm: true,
                            covariate_rows: 0,
                            batch_categories: 0,
                        },
                    );
                    let x = (Tensor::rand([5, 37], opts) * 6.0).floor();
                    let log_library = x
                        .sum_dim_intlist(-1, true, Kind::Float)
                        .clamp_min(1.0)
                        .log();
                    let z = Tensor::randn([2, 5, 3], opts).set_requires_grad(true);
                    let pass = Pass {
                        train: true,
                        reduction: Reduction::Mean,
                        manual_head: manual,
                    };
                    let mut values = Vec::new();
                    for _ in 0..2 {
                        let ll = decoder.log_lik_with(&z, &x, &log_library, &Codes::none(), pass);
                        (-&ll).backward();
                        decoder.add_head_grads();
                        values.push(ll.detach());
                    }
                    // Not back-propagated: no gradient from it.
                    let _ = decoder.log_lik_with(&z, &x, &log_library, &Codes::none(), pass);
                    decoder.add_head_grads();
                    let mut grads: Vec<(String, Tensor)> = vs
                        .variables()
                        .into_iter()
                        .filter(|(_, t)| t.requires_grad())
                        .map(|(name, t)| (name, t.grad()))
                        .collect();
                    grads.sort_by(|a, b| a.0.cmp(&b.0));
                    grads.push(("z".into(), z.grad()));
                    (values, grads)
                };
                let (values, grads) = run(true);
                let (values_ref, grads_ref) = run(false);
                let close = |a: &Tensor, b: &Tensor, what: &str| {
                    let diff = (a - b).abs().max().double_value(&[]);
                    let scale = b.abs().max().double_value(&[]).max(1e-3);
                    assert!(
                        diff <= 1e-4 * scale,
                        "{likelihood:?} {library:?} {what}: {diff} of {scale}"
                    );
                };
                for (v, r) in values.iter().zip(&values_ref) {
                    close(v, r, "log-likelihood");
                }
                assert_eq!(grads.len(), grads_ref.len());
                for ((name, g), (_, r)) in grads.iter().zip(&grads_ref) {
                    assert!(g.defined() && r.defined(), "{name}: no gradient");
                    close(g, r, name);
                }
            }
        }
    }
}
