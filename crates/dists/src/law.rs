//! [`CountLaw`]: one count law with its unconstrained parameters, and what can be
//! asked of it (log-probability, mean, variance, a draw).

use tch::Tensor;

use crate::likelihood::Likelihood;
use crate::special::{log_factorial, log_nb_coefficient, softplus};

/// One count law with its parameters, all as tensors broadcastable against the
/// counts (e.g. `log_mean` `[cells, genes]`, `log_theta` `[genes]` or `[cells, genes]`,
/// `zi_logit` [cells, genes]). Parameters are unconstrained: μ = exp(log_mean),
/// θ = exp(log_theta), π = sigmoid(zi_logit).
#[derive(Debug)]
pub enum CountLaw {
    Poisson {
        log_rate: Tensor,
    },
    Nb {
        log_mean: Tensor,
        log_theta: Tensor,
    },
    Zip {
        log_rate: Tensor,
        zi_logit: Tensor,
    },
    Zinb {
        log_mean: Tensor,
        log_theta: Tensor,
        zi_logit: Tensor,
    },
}

impl CountLaw {
    /// Which law this is.
    pub fn kind(&self) -> Likelihood {
        match self {
            CountLaw::Poisson { .. } => Likelihood::Poisson,
            CountLaw::Nb { .. } => Likelihood::Nb,
            CountLaw::Zip { .. } => Likelihood::Zip,
            CountLaw::Zinb { .. } => Likelihood::Zinb,
        }
    }

    /// The log mean (log rate) parameter.
    fn log_mu(&self) -> &Tensor {
        match self {
            CountLaw::Poisson { log_rate } | CountLaw::Zip { log_rate, .. } => log_rate,
            CountLaw::Nb { log_mean, .. } | CountLaw::Zinb { log_mean, .. } => log_mean,
        }
    }

    /// Per-entry log-probability of counts `x`, elementwise with broadcasting.
    ///
    /// `x` holds non-negative counts as floats; it is cast to the parameters'
    /// dtype (float32 or float64) when it differs. The formulas are in the crate
    /// documentation.
    pub fn log_prob(&self, x: &Tensor) -> Tensor {
        let kind = self.log_mu().kind();
        let x = if x.kind() == kind {
            x.shallow_clone()
        } else {
            x.to_kind(kind)
        };
        match self {
            CountLaw::Poisson { log_rate } => poisson_log_prob(&x, log_rate),
            CountLaw::Nb {
                log_mean,
                log_theta,
            } => nb_log_prob(&x, log_mean, log_theta),
            CountLaw::Zip { log_rate, zi_logit } => zero_inflated(
                &x,
                zi_logit,
                &poisson_log_prob(&x, log_rate),
                &poisson_log_p0(log_rate),
            ),
            CountLaw::Zinb {
                log_mean,
                log_theta,
                zi_logit,
            } => zero_inflated(
                &x,
                zi_logit,
                &nb_log_prob(&x, log_mean, log_theta),
                &nb_log_p0(log_mean, log_theta),
            ),
        }
    }

    /// The mean: μ, or (1 − π) μ for the zero-inflated laws.
    pub fn mean(&self) -> Tensor {
        match self {
            CountLaw::Poisson { log_rate } => log_rate.exp(),
            CountLaw::Nb { log_mean, .. } => log_mean.exp(),
            CountLaw::Zip { log_rate, zi_logit } => (log_rate + (-zi_logit).log_sigmoid()).exp(),
            CountLaw::Zinb {
                log_mean, zi_logit, ..
            } => (log_mean + (-zi_logit).log_sigmoid()).exp(),
        }
    }

    /// The variance: Poisson μ; NB μ + μ²/θ; ZIP (1 − π) μ (1 + π μ);
    /// ZINB (1 − π) μ (1 + π μ + μ/θ).
    pub fn variance(&self) -> Tensor {
        match self {
            CountLaw::Poisson { log_rate } => log_rate.exp(),
            CountLaw::Nb {
                log_mean,
                log_theta,
            } => log_mean.exp() + (log_mean * 2.0 - log_theta).exp(),
            CountLaw::Zip { log_rate, zi_logit } => {
                self.mean() * (zi_logit.sigmoid() * log_rate.exp() + 1.0)
            }
            CountLaw::Zinb {
                log_mean,
                log_theta,
                zi_logit,
            } => {
                self.mean()
                    * (zi_logit.sigmoid() * log_mean.exp() + (log_mean - log_theta).exp() + 1.0)
            }
        }
    }

    /// One draw per entry (the parameters' broadcast shape), as a float tensor of
    /// counts, from libtorch's global generator (seed it with `tch::manual_seed`).
    ///
    /// NB is drawn as a gamma-Poisson mixture, `Poisson(G · μ/θ)` with
    /// `G ~ Gamma(θ, 1)`; the zero-inflated laws replace the draw by 0 with
    /// probability π. The draw carries no gradient.
    pub fn sample(&self) -> Tensor {
        tch::no_grad(|| match self {
            CountLaw::Poisson { log_rate } => log_rate.exp().poisson(),
            CountLaw::Nb {
                log_mean,
                log_theta,
            } => nb_sample(log_mean, log_theta),
            CountLaw::Zip { log_rate, zi_logit } => {
                let b = Tensor::broadcast_tensors(&[log_rate, zi_logit]);
                b[0].exp().poisson() * (-&b[1]).sigmoid().bernoulli()
            }
            CountLaw::Zinb {
                log_mean,
                log_theta,
                zi_logit,
            } => {
                let b = Tensor::broadcast_tensors(&[log_mean, log_theta, zi_logit]);
                nb_sample(&b[0], &b[1]) * (-&b[2]).sigmoid().bernoulli()
            }
        })
    }
}

/// Sum over genes (the last dimension) of [`CountLaw::log_prob`]: one value per cell.
pub fn log_prob_rows(law: &CountLaw, x: &Tensor) -> Tensor {
    law.log_prob(x).sum_dim_intlist(-1, false, None)
}

/// `x log λ − λ − lgamma(x + 1)`.
fn poisson_log_prob(x: &Tensor, log_rate: &Tensor) -> Tensor {
    x * log_rate - log_rate.exp() - log_factorial(x)
}

/// `log p(0) = −λ`.
fn poisson_log_p0(log_rate: &Tensor) -> Tensor {
    -log_rate.exp()
}

/// `C(x, θ) + θ log σ(−d) + x log σ(d)` with `d = log μ − log θ`.
fn nb_log_prob(x: &Tensor, log_mean: &Tensor, log_theta: &Tensor) -> Tensor {
    let theta = log_theta.exp();
    let d = log_mean - log_theta;
    log_nb_coefficient(x, &theta) + &theta * (-&d).log_sigmoid() + x * d.log_sigmoid()
}

/// `log p(0) = θ log σ(−d) = −θ log(1 + μ/θ)`.
fn nb_log_p0(log_mean: &Tensor, log_theta: &Tensor) -> Tensor {
    log_theta.exp() * (log_theta - log_mean).log_sigmoid()
}

/// Zero inflation over a base law: `log σ(−l) + log p_base(x)` for `x > 0`, and
/// `log(π + (1 − π) p₀)` at `x = 0`, as `log1p(−(1 − π)(1 − p₀))` while that
/// product is below ½, else `logaddexp(l, log p₀) − softplus(l)`.
fn zero_inflated(x: &Tensor, zi_logit: &Tensor, base: &Tensor, base_p0: &Tensor) -> Tensor {
    let log_keep = (-zi_logit).log_sigmoid(); // log(1 − π)
    let positive = &log_keep + base;
    // y = (1 − π)(1 − p₀) = P(the zero is missed), in [0, 1].
    let y = (-zi_logit).sigmoid() * (-base_p0.expm1());
    let small = y.lt(0.5);
    let near_one = (-y.clamp_max(0.5)).log1p();
    let far = zi_logit.logaddexp(base_p0) - softplus(zi_logit);
    let zero = near_one.where_self(&small, &far);
    zero.where_self(&x.eq(0.0), &positive)
}

/// `Poisson(G · μ/θ)`, `G ~ Gamma(θ, 1)`, on the broadcast shape of the parameters.
fn nb_sample(log_mean: &Tensor, log_theta: &Tensor) -> Tensor {
    let b = Tensor::broadcast_tensors(&[log_mean, log_theta]);
    let gamma = b[1].exp().internal_standard_gamma();
    (gamma * (&b[0] - &b[1]).exp()).poisson()
}
