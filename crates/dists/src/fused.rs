//! A fused CPU path for the laws the models train with: Poisson and negative binomial with one
//! `log θ` per gene, each optionally zero-inflated (a logit per cell and gene), whose means come
//! from the decoder's logits, either directly
//! (`log μ = logits`) or as proportions of the cell's total count
//! (`log μ = log_softmax(logits) + log library`, scVI's parameterisation).
//!
//! [`crate::CountLaw::log_prob`] builds the likelihood from a dozen whole-matrix tensor
//! operations (each a pass over `cells x genes` memory, forward and backward). Here one parallel
//! pass per cell computes the log-likelihood and its derivatives with respect to the logits and
//! `log θ` together; autograd receives them through a surrogate, `value + Σ logits · ∂ -
//! stop_gradient(Σ logits · ∂)`, which has the right value and the right gradient. Counts of
//! zero, most entries of single-cell data, need no `lgamma` at all; the others use `statrs`'s
//! `ln_gamma` and `digamma` in `f64`. Per entry, with `d = log μ − log θ`, `s = softplus(d)`,
//! `σ = sigmoid(d)`:
//!
//! * Poisson: `ℓ = x log μ − μ − lgamma(x + 1)`, `∂ℓ/∂log μ = x − μ`.
//! * NB: `ℓ = C(x, θ) − θ s + x (d − s)`, `∂ℓ/∂log μ = x (1 − σ) − θ σ`,
//!   `∂ℓ/∂log θ = θ (ψ(x + θ) − ψ(θ)) − θ s + θ σ − x (1 − σ)`.
//! * Zero inflation with logit `z`, `π = sigmoid(z)`: for `x > 0`, `ℓ = ℓ_base − softplus(z)`,
//!   `∂ℓ/∂z = −π`; for `x = 0`, `ℓ = logaddexp(z, ℓ_base) − softplus(z)`, `∂ℓ/∂z = w_z − π` and the
//!   base law's derivatives scaled by `w_b`, with `w_z + w_b = 1` the weights of the two terms.
//! * Through the softmax: `∂ℓ/∂logit_g = ∂ℓ/∂log μ_g − p_g Σ_h ∂ℓ/∂log μ_h`, `p = softmax(logits)`.
//!
//! The tests compare values and gradients with [`crate::CountLaw`] (golden-tested against scipy).

use rayon::prelude::*;
use statrs::function::gamma::{digamma, ln_gamma};
use tch::{Device, Kind, Tensor};

/// Which fused law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusedLaw {
    Poisson,
    /// Negative binomial with one `log θ` per gene.
    Nb,
}

/// Per-row log-likelihood of counts `x` (`[cells, genes]`) under the law whose log-means are
/// given by `logits` (`[rows, genes]`, `rows` a multiple of `cells`: row `r` scores cell
/// `r % cells`, as when several latent samples per cell are stacked) and, with `log_library`
/// (`[cells, 1]`), `log_softmax(logits) + log_library`. `log_theta` (`[genes]`) is required for
/// [`FusedLaw::Nb`]. Returns `None` when the inputs do not qualify (not CPU `f32`, other
/// shapes), so the caller can use the tensor formulas instead. `zi_logit` (`[rows, genes]`)
/// makes the law zero-inflated. Gradients flow to `logits`, `log_theta` and `zi_logit` when they
/// require them.
pub fn softmax_rows_log_prob(
    law: FusedLaw,
    logits: &Tensor,
    log_library: Option<&Tensor>,
    log_theta: Option<&Tensor>,
    zi_logit: Option<&Tensor>,
    x: &Tensor,
) -> Option<Tensor> {
    let cpu_f32 = |t: &Tensor| t.device() == Device::Cpu && t.kind() == Kind::Float;
    let [rows, genes] = logits.size()[..] else {
        return None;
    };
    let [cells, x_genes] = x.size()[..] else {
        return None;
    };
    if !(cpu_f32(logits) && cpu_f32(x)) || x_genes != genes || cells == 0 || rows % cells != 0 {
        return None;
    }
    if let Some(lib) = log_library
        && (!cpu_f32(lib) || lib.numel() != cells as usize)
    {
        return None;
    }
    let theta_ok = match (law, log_theta) {
        (FusedLaw::Poisson, _) => true,
        (FusedLaw::Nb, Some(t)) => cpu_f32(t) && t.size() == [genes],
        (FusedLaw::Nb, None) => false,
    };
    if !theta_ok {
        return None;
    }
    if let Some(z) = zi_logit
        && !(cpu_f32(z) && z.size() == [rows, genes])
    {
        return None;
    }
    let host = |t: &Tensor| Vec::<f32>::try_from(t.detach().contiguous().view([-1])).ok();
    let h = host(logits)?;
    let xs = host(x)?;
    let lib = match log_library {
        Some(l) => Some(host(l)?),
        None => None,
    };
    let lt = match (law, log_theta) {
        (FusedLaw::Nb, Some(t)) => host(t)?,
        _ => Vec::new(),
    };
    let zi = match zi_logit {
        Some(z) => host(z)?,
        None => Vec::new(),
    };
    let grad_zi = zi_logit.is_some_and(Tensor::requires_grad);
    let grad_logits = logits.requires_grad();
    let grad_theta = law == FusedLaw::Nb && log_theta.is_some_and(Tensor::requires_grad);
    let (g, r) = (genes as usize, rows as usize);
    let theta: Vec<f32> = lt.iter().map(|v| v.exp()).collect();
    let mut dh = if grad_logits {
        vec![0.0f32; r * g]
    } else {
        Vec::new()
    };
    let mut dt = if grad_theta {
        vec![0.0f32; r * g]
    } else {
        Vec::new()
    };
    let mut dz = if grad_zi {
        vec![0.0f32; r * g]
    } else {
        Vec::new()
    };
    let mut ll = vec![0.0f32; r];
    let ctx = Row {
        law,
        genes: g,
        lt: &lt,
        theta: &theta,
    };
    let dh_rows = row_slices(&mut dh, r, g);
    let dt_rows = row_slices(&mut dt, r, g);
    let dz_rows = row_slices(&mut dz, r, g);
    ll.par_iter_mut()
        .zip(dh_rows)
        .zip(dt_rows)
        .zip(dz_rows)
        .enumerate()
        .for_each_init(
            || vec![0.0f32; g],
            |scratch, (row, (((ll, dh), dt), dz))| {
                let cell = row % cells as usize;
                *ll = ctx.run(
                    RowIn {
                        h: &h[row * g..(row + 1) * g],
                        log_library: lib.as_ref().map(|l| l[cell]),
                        x: &xs[cell * g..(cell + 1) * g],
                        zi: (!zi.is_empty()).then(|| &zi[row * g..(row + 1) * g]),
                    },
                    scratch,
                    RowGrads { dh, dt, dz },
                ) as f32;
            },
        );
    let mut out = Tensor::from_slice(&ll);
    if grad_logits {
        let d = Tensor::from_slice(&dh).view([rows, genes]);
        let surrogate = (logits * d).sum_dim_intlist(-1, false, Kind::Float);
        out = out + &surrogate - surrogate.detach();
    }
    if let (true, Some(log_theta)) = (grad_theta, log_theta) {
        let d = Tensor::from_slice(&dt).view([rows, genes]);
        let surrogate = (log_theta.unsqueeze(0) * d).sum_dim_intlist(-1, false, Kind::Float);
        out = out + &surrogate - surrogate.detach();
    }
    if let (true, Some(zi_logit)) = (grad_zi, zi_logit) {
        let d = Tensor::from_slice(&dz).view([rows, genes]);
        let surrogate = (zi_logit * d).sum_dim_intlist(-1, false, Kind::Float);
        out = out + &surrogate - surrogate.detach();
    }
    Some(out)
}

/// `rows` slices of `width` over `v`, or `rows` times `None` when `v` is empty.
fn row_slices(v: &mut [f32], rows: usize, width: usize) -> Vec<Option<&mut [f32]>> {
    if v.is_empty() {
        (0..rows).map(|_| None).collect()
    } else {
        v.chunks_mut(width).map(Some).collect()
    }
}

/// What every row shares.
struct Row<'a> {
    law: FusedLaw,
    genes: usize,
    lt: &'a [f32],
    theta: &'a [f32],
}

impl Row<'_> {
    /// The log-likelihood of one row; fills its derivatives when asked for. `p` is scratch space
    /// of one row: the softmax proportions.
    fn run(&self, input: RowIn<'_>, p: &mut [f32], mut grads: RowGrads<'_>) -> f64 {
        let RowIn {
            h,
            log_library,
            x,
            zi,
        } = input;
        // log μ_g = h_g + offset, and μ_g = p_g * scale with the softmax.
        let (offset, scale) = match log_library {
            Some(lib) => {
                let max = h.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f64;
                for (p, &v) in p.iter_mut().zip(h) {
                    *p = (v - max).exp();
                    sum += f64::from(*p);
                }
                let lse = f64::from(max) + sum.ln();
                let offset = (f64::from(lib) - lse) as f32;
                (offset, (f64::from(lib).exp() / sum) as f32)
            }
            None => {
                for (p, &v) in p.iter_mut().zip(h) {
                    *p = v.exp();
                }
                (0.0, 1.0)
            }
        };
        let mut total = 0.0f64;
        let mut grad_sum = 0.0f64;
        for j in 0..self.genes {
            let mu = p[j] * scale;
            let xj = x[j];
            // The base law: log p(x), its derivatives, and at x = 0 the same for log p(0).
            let (mut l, mut g_lm, mut g_lt) = match self.law {
                FusedLaw::Poisson => {
                    let mut l = f64::from(-mu);
                    if xj > 0.0 {
                        l += f64::from(xj * (h[j] + offset));
                        if xj > 1.0 {
                            l -= ln_gamma(f64::from(xj) + 1.0);
                        }
                    }
                    (l, xj - mu, 0.0)
                }
                FusedLaw::Nb => {
                    // s = softplus(d) = log(1 + μ/θ), σ = sigmoid(d) = μ / (μ + θ)
                    let theta = self.theta[j];
                    let y = mu / theta;
                    let sp = ln_1p(y);
                    let sig = y / (1.0 + y);
                    let mut l = f64::from(-theta * sp);
                    let mut g_lt = theta * (sig - sp);
                    if xj > 0.0 {
                        let (xd, td) = (f64::from(xj), f64::from(theta));
                        let d = h[j] + offset - self.lt[j];
                        l += f64::from(xj * (d - sp));
                        l += ln_gamma(xd + td) - ln_gamma(td) - ln_gamma(xd + 1.0);
                        g_lt += (td * (digamma(xd + td) - digamma(td))) as f32 - xj * (1.0 - sig);
                    }
                    (l, xj * (1.0 - sig) - theta * sig, g_lt)
                }
            };
            if let Some(zi) = zi {
                // log(1 - π) = -softplus(z); at x = 0, log(π + (1 - π) p0) =
                // logaddexp(z, log p0) - softplus(z), whose weight on log p0 is w.
                let z = zi[j];
                let e = (-z.abs()).exp();
                let softplus = z.max(0.0) + e.ln_1p();
                let pi = if z >= 0.0 {
                    1.0 / (1.0 + e)
                } else {
                    e / (1.0 + e)
                };
                let g_z = if xj > 0.0 {
                    l -= f64::from(softplus);
                    -pi
                } else {
                    let base = l as f32;
                    let m = z.max(base);
                    let (ez, eb) = ((z - m).exp(), (base - m).exp());
                    let lse = m + (ez + eb).ln();
                    let w = eb / (ez + eb);
                    l = f64::from(lse - softplus);
                    g_lm *= w;
                    g_lt *= w;
                    ez / (ez + eb) - pi
                };
                if let Some(dz) = grads.dz.as_deref_mut() {
                    dz[j] = g_z;
                }
            }
            total += l;
            grad_sum += f64::from(g_lm);
            if let Some(dh) = grads.dh.as_deref_mut() {
                dh[j] = g_lm;
            }
            if let Some(dt) = grads.dt.as_deref_mut() {
                dt[j] = g_lt;
            }
        }
        if let (Some(dh), Some(lib)) = (grads.dh, log_library) {
            // ∂/∂logit_g = ∂/∂log μ_g − (μ_g / library) Σ_h ∂/∂log μ_h
            let factor = (grad_sum * f64::from(scale) / f64::from(lib).exp()) as f32;
            for (d, &p) in dh.iter_mut().zip(p.iter()) {
                *d -= p * factor;
            }
        }
        total
    }
}

/// One row's inputs.
struct RowIn<'a> {
    h: &'a [f32],
    log_library: Option<f32>,
    x: &'a [f32],
    /// Zero-inflation logits, for ZIP and ZINB.
    zi: Option<&'a [f32]>,
}

/// One row's derivative buffers (each present when its input needs a gradient).
struct RowGrads<'a> {
    dh: Option<&'a mut [f32]>,
    dt: Option<&'a mut [f32]>,
    dz: Option<&'a mut [f32]>,
}

/// `ln(1 + y)` for `y >= 0`: four terms of the series below `1e-2` (relative error under
/// `y^4 / 5`), else `ln` of `1 + y`, whose rounding costs at most `6e-6` relative there, and which
/// is several times faster than `log1pf`.
#[inline]
fn ln_1p(y: f32) -> f32 {
    if y < 1e-2 {
        y * (1.0 - y * (0.5 - y * (1.0 / 3.0 - y * 0.25)))
    } else {
        (1.0 + y).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CountLaw, log_prob_rows};

    /// The log total count of each cell, as the VAE computes it.
    fn log_library(x: &Tensor) -> Tensor {
        x.sum_dim_intlist(-1, true, Kind::Float)
            .clamp_min(1.0)
            .log()
    }

    /// Values and gradients of the fused path against the tensor formulas of [`CountLaw`].
    fn check(law: FusedLaw, zero_inflated: bool, softmax: bool, samples: i64) {
        tch::manual_seed(5);
        let (cells, genes) = (6, 40);
        let opts = (Kind::Float, Device::Cpu);
        let rate = (Tensor::randn([cells, genes], opts) * 1.5).exp();
        let x = rate.poisson() * Tensor::rand([cells, genes], opts).gt(0.5);
        let x = x.to_kind(Kind::Float);
        let lib = log_library(&x);
        let logits = (Tensor::randn([samples * cells, genes], opts) * 2.0).set_requires_grad(true);
        let log_theta = (Tensor::randn([genes], opts) * 2.0).set_requires_grad(true);
        let zi = (Tensor::randn([samples * cells, genes], opts) * 3.0).set_requires_grad(true);
        let fused = softmax_rows_log_prob(
            law,
            &logits,
            softmax.then_some(&lib),
            Some(&log_theta),
            zero_inflated.then_some(&zi),
            &x,
        )
        .expect("qualifies");
        let lead = logits.view([samples, cells, genes]);
        let log_mean = if softmax {
            lead.log_softmax(-1, Kind::Float) + &lib
        } else {
            lead
        };
        let zi_logit = zi.view([samples, cells, genes]);
        let log_theta_ = log_theta.shallow_clone();
        let reference = match (law, zero_inflated) {
            (FusedLaw::Poisson, false) => CountLaw::Poisson { log_rate: log_mean },
            (FusedLaw::Nb, false) => CountLaw::Nb {
                log_mean,
                log_theta: log_theta_,
            },
            (FusedLaw::Poisson, true) => CountLaw::Zip {
                log_rate: log_mean,
                zi_logit,
            },
            (FusedLaw::Nb, true) => CountLaw::Zinb {
                log_mean,
                log_theta: log_theta_,
                zi_logit,
            },
        };
        let reference = log_prob_rows(&reference, &x).view([-1]);
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let scale = b.abs().max().double_value(&[]).max(1.0);
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(
                diff <= 1e-4 * scale,
                "{law:?} zi={zero_inflated} softmax={softmax} {what}: {diff} (scale {scale})"
            );
        };
        close(&fused, &reference, "values");
        let weights = Tensor::rand([samples * cells], opts);
        let grads = |v: &Tensor| {
            let mut inputs = vec![logits.shallow_clone()];
            if law == FusedLaw::Nb {
                inputs.push(log_theta.shallow_clone());
            }
            if zero_inflated {
                inputs.push(zi.shallow_clone());
            }
            Tensor::run_backward(&[(v * &weights).sum(Kind::Float)], &inputs, false, false)
        };
        for (a, b) in grads(&fused).iter().zip(grads(&reference).iter()) {
            close(a, b, "gradients");
        }
    }

    #[test]
    fn fused_laws_match_the_tensor_formulas() {
        for law in [FusedLaw::Poisson, FusedLaw::Nb] {
            for zero_inflated in [false, true] {
                for softmax in [true, false] {
                    for samples in [1, 3] {
                        check(law, zero_inflated, softmax, samples);
                    }
                }
            }
        }
    }

    #[test]
    fn other_inputs_fall_back() {
        let x = Tensor::ones([2, 3], (Kind::Double, Device::Cpu));
        let logits = Tensor::zeros([2, 3], (Kind::Double, Device::Cpu));
        assert!(softmax_rows_log_prob(FusedLaw::Poisson, &logits, None, None, None, &x).is_none());
        let x = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        let logits = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        assert!(softmax_rows_log_prob(FusedLaw::Nb, &logits, None, None, None, &x).is_none());
        let per_cell = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        assert!(
            softmax_rows_log_prob(FusedLaw::Nb, &logits, None, Some(&per_cell), None, &x).is_none()
        );
        assert!(softmax_rows_log_prob(FusedLaw::Poisson, &logits, None, None, None, &x).is_some());
    }
}
