//! Count likelihoods for single-cell RNA-seq on tch tensors, computed in log space.
//!
//! A decoder hands out unconstrained parameters: a log mean `log μ` (a log rate
//! for Poisson), a log inverse dispersion `log θ` and a zero-inflation logit `l`
//! (π = sigmoid(l)). [`CountLaw`] holds them and gives the per-entry
//! log-probability of counts `x`, the mean, the variance and a seeded draw.
//! Nothing here exponentiates a parameter only to take its log again, and
//! factorials are `lgamma(x + 1)` ([`log_factorial`]). The formulas, with
//! `d = log μ − log θ` and `log σ` the log-sigmoid (`log σ(z) = −softplus(−z)`,
//! computed as `min(z, 0) − log1p(exp(−|z|))`, exact at both ends):
//!
//! * Poisson: `log p(x) = x log μ − exp(log μ) − lgamma(x + 1)`.
//! * Negative binomial (mean μ, variance μ + μ²/θ):
//!   `log p(x) = C(x, θ) + θ log σ(−d) + x log σ(d)`, where
//!   `log σ(−d) = log θ/(θ+μ)`, `log σ(d) = log μ/(θ+μ)` and
//!   `C(x, θ) = lgamma(x + θ) − lgamma(θ) − lgamma(x + 1)`. `C` is computed
//!   without cancellation: the larger of θ and x + 1, call it `a`, carries the
//!   difference `lgamma(a + b) − lgamma(a)`, which for `a ≥ 8` is taken from
//!   Stirling's series as `b log a + (a + b − ½) log1p(b/a) − b + δ(a + b) − δ(a)`
//!   (δ the series remainder), so a small count with θ = 1e4, or a large count
//!   with θ = 1e-4, keeps its digits in float32.
//! * Zero inflation (ZIP, ZINB) over a base law with `p₀ = p(0)`:
//!   for `x > 0`, `log p(x) = log σ(−l) + log p_base(x)`;
//!   for `x = 0`, `log p(0) = log(π + (1 − π) p₀)`, taken as
//!   `log1p(−(1 − π)(1 − p₀))` with `1 − π = σ(−l)` and `1 − p₀ = −expm1(log p₀)`
//!   while that product is below ½ (accurate when `log p(0)` is near 0), else as
//!   `logaddexp(l, log p₀) − softplus(l)`.
//!
//! Branches are chosen with `where`, and every branch is evaluated on inputs
//! clamped to its own domain, so the branch not taken has finite gradients and
//! cannot poison the one taken with `0 · ∞ = NaN`. Values and gradients are
//! finite for finite parameters in float32 and float64, as long as `exp(log μ)`
//! and `exp(log θ)` are representable and positive. The golden tests compare with
//! scipy and with mpmath at 50 digits (`tests/fixtures/make_fixtures.py`).

#[cfg(target_arch = "x86_64")]
mod avx512;
mod fused;
mod law;
mod likelihood;
mod special;

pub use fused::{FusedLaw, Reduction, softmax_rows_log_prob, softmax_rows_log_prob_logit_grad};
pub use law::{CountLaw, log_prob_rows};
pub use likelihood::{Likelihood, ParseLikelihoodError};
pub use special::log_factorial;
