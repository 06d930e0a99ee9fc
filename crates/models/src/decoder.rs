//! The count decoder the VAE and the GMVAE share: `z -> hidden.. ->` the parameters of a count
//! law ([`scae_dists::CountLaw`]): the log-mean (with the observed library, log-proportion
//! logits scaled by the cell's total count), for the NB laws the log inverse dispersion (one per
//! gene, or per gene and cell), for the zero-inflated laws a zero-inflation logit per gene and
//! cell. Its variables keep the names the VAE has always saved (`decoder/..`, `mean_head`,
//! `log_theta` or `theta_head`, `zi_head`), so saved models load unchanged.

use scae_dists::{CountLaw, Likelihood, Reduction};
use tch::{Kind, Tensor, nn, nn::Module};

use crate::autoencoder::torch_linear_init;
use crate::layers::Hidden;
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
}

#[derive(Debug)]
enum Theta {
    Gene(Tensor),
    Cell(nn::Linear),
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
        } = shape;
        let widths: Vec<usize> = std::iter::once(latent)
            .chain(hidden.iter().copied())
            .collect();
        let out = *widths.last().unwrap_or(&latent);
        let head = |name: &str, to: usize| {
            nn::linear(p / name, out as i64, to as i64, torch_linear_init(out))
        };
        Self {
            hidden: Hidden::stack(&(p / "decoder"), &widths, batch_norm, 0.0, false),
            mean_head: head("mean_head", genes),
            theta: likelihood.has_dispersion().then(|| match dispersion {
                Dispersion::Gene => Theta::Gene(p.zeros("log_theta", &[genes as i64])),
                Dispersion::GeneCell => Theta::Cell(head("theta_head", genes)),
            }),
            zi_head: likelihood
                .has_zero_inflation()
                .then(|| head("zi_head", genes)),
            likelihood,
            library,
            latent: latent as i64,
            genes: genes as i64,
        }
    }

    /// The count law of `p(x | z)`. `z` is `[.., cells, latent]`; `log_library` is `[cells, 1]`
    /// (log total counts), used with the observed library.
    pub(crate) fn law(&self, z: &Tensor, log_library: &Tensor, train: bool) -> CountLaw {
        self.decoded(z, train).law(self.library, log_library)
    }

    /// The raw outputs for `z` (`[.., cells, latent]`).
    fn decoded(&self, z: &Tensor, train: bool) -> Decoded {
        let lead = &z.size()[..z.dim() - 1];
        let flat = z.reshape([-1, self.latent]);
        let h = Hidden::forward(&self.hidden, &flat, train);
        let shape: Vec<i64> = lead.iter().copied().chain([self.genes]).collect();
        let out = |t: Tensor| t.reshape(shape.as_slice());
        Decoded {
            likelihood: self.likelihood,
            logits: self.mean_head.forward(&h),
            log_theta: self.theta.as_ref().map(|t| match t {
                Theta::Gene(t) => t.shallow_clone(),
                Theta::Cell(head) => out(head.forward(&h)),
            }),
            zi_logit: self.zi_head.as_ref().map(|head| out(head.forward(&h))),
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
        train: bool,
        reduction: Reduction,
    ) -> Tensor {
        let d = self.decoded(z, train);
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
