//! Special functions on tensors that the laws share: log-factorial, softplus,
//! and the negative binomial's log-coefficient without cancellation.

use tch::Tensor;

/// `log x! = lgamma(x + 1)`, elementwise.
pub fn log_factorial(x: &Tensor) -> Tensor {
    (x + 1.0).lgamma()
}

/// `softplus(z) = log(1 + exp(z)) = −log σ(−z)`, exact at both ends in both
/// float32 and float64 (libtorch's `softplus` returns `z` itself above 20).
pub(crate) fn softplus(z: &Tensor) -> Tensor {
    -(-z).log_sigmoid()
}

/// At or above this, `lgamma` differences are taken from Stirling's series,
/// whose remainder, truncated after the z⁻⁹ term, is then off by less than
/// 1e-12 (its arguments are at least `STIRLING_MIN − 1`).
const STIRLING_MIN: f64 = 8.0;

/// Stirling's remainder `δ(z) = lgamma(z) − [(z − ½) log z − z + ½ log 2π]`,
/// for `z ≥ 7`: `1/(12z) − 1/(360z³) + 1/(1260z⁵) − 1/(1680z⁷) + 1/(1188z⁹)`.
fn stirling_remainder(z: &Tensor) -> Tensor {
    let r = z.reciprocal();
    let r2 = &r * &r;
    let poly = (((&r2 * (1.0 / 1188.0) - 1.0 / 1680.0) * &r2 + 1.0 / 1260.0) * &r2 - 1.0 / 360.0)
        * &r2
        + 1.0 / 12.0;
    r * poly
}

/// `lgamma(a + b) − lgamma(a)` for `a ≥ STIRLING_MIN` and `b ≥ −1`, without the
/// cancellation of two large `lgamma` values:
/// `b log a + (a + b − ½) log1p(b/a) − b + δ(a + b) − δ(a)`.
///
/// `a` is clamped to `STIRLING_MIN` from below, so that where the caller does
/// not take this branch the value and its gradients stay finite.
fn lgamma_ratio_stirling(a: &Tensor, b: &Tensor) -> Tensor {
    let a = a.clamp_min(STIRLING_MIN);
    let ab = &a + b;
    b * a.log() + (&ab - 0.5) * (b / &a).log1p() - b + stirling_remainder(&ab)
        - stirling_remainder(&a)
}

/// The negative binomial's log-coefficient
/// `C(x, θ) = lgamma(x + θ) − lgamma(θ) − lgamma(x + 1)` for `x ≥ 0`, `θ > 0`.
///
/// Directly while θ and x + 1 are both below `STIRLING_MIN` (then nothing is
/// large enough to cancel, and `C(0, θ) = 0` exactly). Otherwise the larger of
/// θ and x + 1 carries the difference with x + θ through Stirling's series:
/// `C = [lgamma(θ + x) − lgamma(θ)] − lgamma(x + 1)` when θ ≥ x + 1, else
/// `C = [lgamma(x + 1 + (θ − 1)) − lgamma(x + 1)] − lgamma(θ)`.
pub(crate) fn log_nb_coefficient(x: &Tensor, theta: &Tensor) -> Tensor {
    let x1 = x + 1.0;
    let small = theta.lt(STIRLING_MIN).logical_and(&x1.lt(STIRLING_MIN));
    // Clamped so that the direct branch stays finite where it is not taken.
    let (theta_lo, x_lo) = (
        theta.clamp_max(STIRLING_MIN),
        x.clamp_max(STIRLING_MIN - 1.0),
    );
    let direct = (&x_lo + &theta_lo).lgamma() - theta_lo.lgamma() - (&x_lo + 1.0).lgamma();
    let by_theta = lgamma_ratio_stirling(theta, x) - x1.lgamma();
    let by_x = lgamma_ratio_stirling(&x1, &(theta - 1.0)) - theta.lgamma();
    let large = by_theta.where_self(&theta.ge_tensor(&x1), &by_x);
    direct.where_self(&small, &large)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn t(v: &[f64]) -> Tensor {
        Tensor::from_slice(v)
    }

    fn vec(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double)).expect("a 1-D tensor")
    }

    #[test]
    fn nb_coefficient_matches_direct_lgamma_where_that_is_exact() {
        // Moderate values on every branch (direct, θ ≥ x + 1, x + 1 > θ, and the
        // threshold itself), where three lgamma calls lose nothing in float64.
        let x = t(&[0.0, 3.0, 6.0, 7.0, 0.0, 2.0, 30.0, 30.0, 150.0, 40.0, 7.0]);
        let theta = t(&[0.5, 2.0, 7.9, 8.0, 8.0, 20.0, 100.0, 3.0, 0.7, 1e-3, 1.0]);
        let want = vec(&((&x + &theta).lgamma() - theta.lgamma() - (&x + 1.0).lgamma()));
        for (got, want) in vec(&log_nb_coefficient(&x, &theta)).into_iter().zip(want) {
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
        assert_eq!(vec(&log_nb_coefficient(&t(&[0.0]), &t(&[1e-4]))), [0.0]);
    }

    #[test]
    fn softplus_is_exact_at_both_ends() {
        let z = t(&[-50.0, -20.0, 0.0, 20.0, 25.0, 50.0]);
        let got = vec(&softplus(&z));
        let want = [
            (-50f64).exp().ln_1p(),
            (-20f64).exp().ln_1p(),
            2f64.ln(),
            20.0 + (-20f64).exp().ln_1p(),
            25.0 + (-25f64).exp().ln_1p(),
            50.0,
        ];
        for (g, w) in got.into_iter().zip(want) {
            assert!((g - w).abs() <= 1e-15 * w.abs(), "{g} vs {w}");
        }
    }
}
