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
//! zero, most entries of single-cell data, need no `lgamma` at all: each row is first computed
//! without the `lgamma` and `digamma` terms, eight entries at a time with `wide`'s SIMD `exp`
//! and `ln`; those terms of the entries with a count are then added, eight entries at a time as
//! finite sums for the small integer counts most of them have, else with `statrs`'s `ln_gamma`
//! and `digamma` in `f64`. Rows run on
//! libtorch's own OpenMP threads ([`scae_par`]), and the inputs and outputs are read and
//! written in place in tensor memory. Per entry, with `d = log μ − log θ`, `s = softplus(d)`,
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

use statrs::function::gamma::{digamma, ln_gamma};
use tch::{Device, Kind, Tensor};
use wide::{CmpEq, CmpLt, f32x8};

/// Which fused law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusedLaw {
    Poisson,
    /// Negative binomial with one `log θ` per gene.
    Nb,
}

/// What [`softmax_rows_log_prob`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// One log-likelihood per row.
    Rows,
    /// Their mean, a scalar: what a training loss needs. The gradient of `log θ` is then summed
    /// over rows inside the pass instead of kept per row, which saves a `rows x genes` buffer
    /// and two passes over it.
    Mean,
}

/// SIMD width of the vectorised passes.
const LANES: usize = 8;

/// Per-row log-likelihood of counts `x` (`[cells, genes]`) under the law whose log-means are
/// given by `logits` (`[rows, genes]`, `rows` a multiple of `cells`: row `r` scores cell
/// `r % cells`, as when several latent samples per cell are stacked) and, with `log_library`
/// (`[cells, 1]`), `log_softmax(logits) + log_library`. `log_theta` (`[genes]`) is required for
/// [`FusedLaw::Nb`]. Returns `None` when the inputs do not qualify (not CPU `f32`, other
/// shapes), so the caller can use the tensor formulas instead. `zi_logit` (`[rows, genes]`)
/// makes the law zero-inflated. Gradients flow to `logits`, `log_theta` and `zi_logit` when they
/// require them. With [`Reduction::Mean`] the result is the mean over rows.
pub fn softmax_rows_log_prob(
    law: FusedLaw,
    logits: &Tensor,
    log_library: Option<&Tensor>,
    log_theta: Option<&Tensor>,
    zi_logit: Option<&Tensor>,
    x: &Tensor,
    reduction: Reduction,
) -> Option<Tensor> {
    fused(
        law,
        logits,
        log_library,
        log_theta,
        zi_logit,
        x,
        reduction,
        false,
    )
    .map(|(ll, _)| ll)
}

/// [`softmax_rows_log_prob`] with the derivatives with respect to `logits` returned
/// (`[rows, genes]`, carrying [`Reduction::Mean`]'s `1 / rows`) rather than handed to
/// autograd, for a caller that back-propagates through the layer making the logits itself;
/// `logits` need not require grad. Gradients still flow to `log_theta` and `zi_logit`.
pub fn softmax_rows_log_prob_logit_grad(
    law: FusedLaw,
    logits: &Tensor,
    log_library: Option<&Tensor>,
    log_theta: Option<&Tensor>,
    zi_logit: Option<&Tensor>,
    x: &Tensor,
    reduction: Reduction,
) -> Option<(Tensor, Tensor)> {
    match fused(
        law,
        logits,
        log_library,
        log_theta,
        zi_logit,
        x,
        reduction,
        true,
    )? {
        (ll, Some(d_logits)) => Some((ll, d_logits)),
        (_, None) => None,
    }
}

/// The fused pass; with `return_d_logits` the logits' derivatives are returned, not passed to
/// autograd.
#[allow(clippy::too_many_arguments)]
fn fused(
    law: FusedLaw,
    logits: &Tensor,
    log_library: Option<&Tensor>,
    log_theta: Option<&Tensor>,
    zi_logit: Option<&Tensor>,
    x: &Tensor,
    reduction: Reduction,
    return_d_logits: bool,
) -> Option<(Tensor, Option<Tensor>)> {
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
    // Contiguous views of the inputs; they own (or share) the memory the slices below read.
    let dense = |t: &Tensor| {
        if t.is_contiguous() {
            t.shallow_clone()
        } else {
            t.detach().contiguous()
        }
    };
    let (h_t, x_t) = (dense(logits), dense(x));
    let lib_t = log_library.map(dense);
    let lt_t = log_theta.filter(|_| law == FusedLaw::Nb).map(dense);
    let zi_t = zi_logit.map(dense);
    let (h, xs) = (host(&h_t), host(&x_t));
    let lib = lib_t.as_ref().map(host);
    let zi = zi_t.as_ref().map(host);
    let grad_zi = zi_logit.is_some_and(Tensor::requires_grad);
    let grad_logits = return_d_logits || logits.requires_grad();
    let grad_theta = law == FusedLaw::Nb && log_theta.is_some_and(Tensor::requires_grad);
    let (g, r) = (genes as usize, rows as usize);
    let genes_ctx = lt_t.as_ref().map(|t| PerGene::new(host(t)));
    let buffer =
        |wanted: bool| wanted.then(|| Tensor::empty([rows, genes], (Kind::Float, Device::Cpu)));
    let mean = reduction == Reduction::Mean;
    let (mut dh_t, mut dz_t) = (buffer(grad_logits), buffer(grad_zi));
    // Per row, or (for the mean) summed over rows by each block into `dt_sum`.
    let mut dt_t = buffer(grad_theta && !mean);
    let dt_sum = std::sync::Mutex::new(vec![0.0f64; if grad_theta && mean { g } else { 0 }]);
    let mut ll_t = Tensor::empty([rows], (Kind::Float, Device::Cpu));
    let ctx = Row {
        genes: g,
        nb: genes_ctx.as_ref(),
        // The mean's derivatives carry its 1 / rows.
        grad_scale: if mean { (1.0 / r as f64) as f32 } else { 1.0 },
        avx512: avx512_available(),
    };
    {
        let ll = host_mut(&mut ll_t);
        let dh_rows = row_slices(dh_t.as_mut().map(host_mut), r, g);
        let dt_rows = row_slices(dt_t.as_mut().map(host_mut), r, g);
        let dz_rows = row_slices(dz_t.as_mut().map(host_mut), r, g);
        // Blocks of rows, a few per thread, each with its own scratch row.
        let parts: Vec<_> = ll
            .iter_mut()
            .zip(dh_rows)
            .zip(dt_rows)
            .zip(dz_rows)
            .enumerate()
            .collect();
        let block = r.div_ceil(16).max(1);
        let mut blocks = Vec::with_capacity(r.div_ceil(block));
        let mut parts = parts.into_iter().peekable();
        while parts.peek().is_some() {
            blocks.push(parts.by_ref().take(block).collect::<Vec<_>>());
        }
        let summed_theta = grad_theta && mean;
        scae_par::for_each(blocks, |block| {
            let mut scratch = Scratch::new(g);
            // The block's sum of its rows' `log θ` derivatives, for the mean.
            let mut dt_block = vec![0.0f32; if summed_theta { g } else { 0 }];
            for (row, (((ll, dh), dt), dz)) in block {
                let cell = row % cells as usize;
                let dt = if summed_theta {
                    Some(dt_block.as_mut_slice())
                } else {
                    dt
                };
                *ll = ctx.run(
                    RowIn {
                        h: &h[row * g..(row + 1) * g],
                        log_library: lib.map(|l| l[cell]),
                        x: &xs[cell * g..(cell + 1) * g],
                        zi: zi.map(|z| &z[row * g..(row + 1) * g]),
                    },
                    &mut scratch,
                    RowGrads {
                        dh,
                        dt,
                        dz,
                        dt_adds: summed_theta,
                    },
                ) as f32;
            }
            if summed_theta {
                let mut total = dt_sum
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (t, d) in total.iter_mut().zip(&dt_block) {
                    *t += f64::from(*d);
                }
            }
        });
    }
    if mean {
        // One surrogate, Σ input · ∂ over every input (the derivatives already carry the mean's
        // 1 / rows); its value cancels.
        let mut surrogate: Option<Tensor> = None;
        let mut add = |s: Tensor| {
            surrogate = Some(match surrogate.take() {
                Some(t) => t + s,
                None => s,
            });
        };
        let dot = |input: &Tensor, d: &Tensor| input.reshape([-1]).dot(&d.view([-1]));
        if let (false, Some(d)) = (return_d_logits, &dh_t) {
            add(dot(logits, d));
        }
        if let (true, Some(log_theta)) = (grad_theta, log_theta) {
            let sum: Vec<f32> = dt_sum
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|&d| d as f32)
                .collect();
            add(log_theta.dot(&Tensor::from_slice(&sum)));
        }
        if let (Some(d), Some(zi_logit)) = (&dz_t, zi_logit) {
            add(dot(zi_logit, d));
        }
        let out = ll_t.mean(Kind::Float);
        let out = match surrogate {
            Some(s) => out + &s - s.detach(),
            None => out,
        };
        return Some((out, dh_t.filter(|_| return_d_logits)));
    }
    let mut out = ll_t;
    // Σ_g input_g ∂_g per row, as a batched dot product; its value is cancelled below.
    let dot = |input: &Tensor, d: &Tensor| {
        input
            .reshape([rows, 1, genes])
            .bmm(&d.view([rows, genes, 1]))
            .view([rows])
    };
    if let (false, Some(d)) = (return_d_logits, &dh_t) {
        let surrogate = dot(logits, d);
        out = out + &surrogate - surrogate.detach();
    }
    if let (Some(d), Some(log_theta)) = (&dt_t, log_theta) {
        let surrogate = d.mv(log_theta);
        out = out + &surrogate - surrogate.detach();
    }
    if let (Some(d), Some(zi_logit)) = (&dz_t, zi_logit) {
        let surrogate = dot(zi_logit, d);
        out = out + &surrogate - surrogate.detach();
    }
    Some((out, dh_t.filter(|_| return_d_logits)))
}

/// The memory of a contiguous CPU `f32` tensor.
#[allow(unsafe_code)]
fn host(t: &Tensor) -> &[f32] {
    let n = t.numel();
    if n == 0 {
        return &[];
    }
    assert!(
        t.is_contiguous() && t.kind() == Kind::Float && t.device() == Device::Cpu,
        "the fused likelihood reads contiguous CPU f32 tensors"
    );
    // SAFETY: the callers pass contiguous CPU f32 tensors, so `data_ptr` addresses `n` f32
    // values; the slice borrows `t`, which keeps the storage alive, and nothing writes to it
    // while the kernel runs.
    unsafe { std::slice::from_raw_parts(t.data_ptr().cast::<f32>(), n) }
}

/// The memory of a contiguous CPU `f32` tensor this module allocated and alone holds.
#[allow(unsafe_code)]
fn host_mut(t: &mut Tensor) -> &mut [f32] {
    let n = t.numel();
    if n == 0 {
        return &mut [];
    }
    assert!(
        t.is_contiguous() && t.kind() == Kind::Float && t.device() == Device::Cpu,
        "the fused likelihood reads contiguous CPU f32 tensors"
    );
    // SAFETY: `t` comes from `Tensor::empty` in this module (contiguous CPU f32, `n` values)
    // and has no other handle, so the exclusive borrow of `t` is exclusive access to its memory.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr().cast::<f32>(), n) }
}

/// `rows` slices of `width` over `v`, or `rows` times `None` without `v`.
fn row_slices(v: Option<&mut [f32]>, rows: usize, width: usize) -> Vec<Option<&mut [f32]>> {
    match v {
        Some(v) => v.chunks_mut(width).map(Some).collect(),
        None => (0..rows).map(|_| None).collect(),
    }
}

/// The negative binomial's per-gene constants of one call.
struct PerGene<'a> {
    lt: &'a [f32],
    theta: Vec<f32>,
    inv_theta: Vec<f32>,
}

impl<'a> PerGene<'a> {
    fn new(lt: &'a [f32]) -> Self {
        let theta: Vec<f32> = lt.iter().map(|v| v.exp()).collect();
        Self {
            lt,
            inv_theta: theta.iter().map(|t| t.recip()).collect(),
            theta,
        }
    }
}

/// Counts up to this use the exact finite sums of [`rising_log_and_harmonic`]; larger ones
/// `lgamma` and `digamma`.
const SMALL_COUNT: f64 = 16.0;

/// `lgamma(x + θ) − lgamma(θ)` and `ψ(x + θ) − ψ(θ)` for a count `x`: for small integer `x`
/// the finite sums `Σ_{k<x} ln(θ + k)` (as the log of the product) and `Σ_{k<x} 1 / (θ + k)`,
/// exact up to rounding and several times faster than `lgamma` and `digamma`, which serve the
/// other counts.
#[inline]
fn rising_log_and_harmonic(x: f64, theta: f64) -> (f64, f64) {
    if x <= SMALL_COUNT && x.fract() == 0.0 && theta < 1e15 {
        let (mut product, mut harmonic) = (1.0f64, 0.0f64);
        let mut t = theta;
        for _ in 0..x as usize {
            product *= t;
            harmonic += t.recip();
            t += 1.0;
        }
        (product.ln(), harmonic)
    } else {
        (
            ln_gamma(x + theta) - ln_gamma(theta),
            digamma(x + theta) - digamma(theta),
        )
    }
}

/// `lgamma(x + 1)`, from a table for the small integer counts most entries have.
#[inline]
fn ln_factorial(x: f32) -> f64 {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..1024)
            .scan(0.0f64, |acc, k: u32| {
                let value = *acc;
                *acc += f64::from(k + 1).ln();
                Some(value)
            })
            .collect()
    });
    match table.get(x as usize) {
        Some(&v) if x.fract() == 0.0 && x >= 0.0 => v,
        _ => ln_gamma(f64::from(x) + 1.0),
    }
}

/// What every row shares.
struct Row<'a> {
    genes: usize,
    /// Present for [`FusedLaw::Nb`].
    nb: Option<&'a PerGene<'a>>,
    /// The factor every derivative is written with.
    grad_scale: f32,
    /// Whether the vectorised passes run in AVX-512 ([`crate::avx512`]) rather than AVX2.
    avx512: bool,
}

/// Whether this CPU runs the AVX-512 passes.
fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::avx512::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Entries' log-likelihood (`L`) and derivatives (`T`) with respect to `log μ`, `log θ` and
/// the zero-inflation logit: one entry (`f64`, `f32`) or eight lanes (`f32x8` both).
#[derive(Clone, Copy)]
struct Entry<L, T> {
    l: L,
    lm: T,
    lt: T,
    z: T,
}

impl Row<'_> {
    /// The log-likelihood of one row; fills its derivatives when asked for. `scratch` holds the
    /// softmax proportions and the row's counted entries.
    ///
    /// One vectorised pass computes every entry's terms that have a closed form (eight at a
    /// time, the last `genes % 8` padded) and notes the entries with a count; a second pass adds
    /// their `lgamma` and `digamma` parts ([`Row::add_counted`]).
    fn run(&self, input: RowIn<'_>, scratch: &mut Scratch, mut grads: RowGrads<'_>) -> f64 {
        let RowIn {
            h, log_library, x, ..
        } = input;
        let Scratch { p, counted } = scratch;
        let (offset, scale) = self.proportions(h, log_library, p);
        counted.clear();
        let mu = (offset, scale);
        let (mut total, grad_sum) = self
            .closed_form_512(input, p, mu, &mut grads, counted)
            .unwrap_or_else(|| self.closed_form(input, p, mu, &mut grads, counted));
        total += self.add_counted(x, counted, &mut grads.dt);
        if let (Some(dh), Some(lib)) = (grads.dh, log_library) {
            // ∂/∂logit_g = ∂/∂log μ_g − (μ_g / library) Σ_h ∂/∂log μ_h
            let factor = (grad_sum * f64::from(scale) / f64::from(lib).exp()) as f32;
            for (d, &p) in dh.iter_mut().zip(p.iter()) {
                *d -= p * factor;
            }
        }
        total
    }

    /// `exp(h − max h)` into `p`, and `log μ`'s offset and `μ`'s scale (see [`proportions`]).
    fn proportions(&self, h: &[f32], log_library: Option<f32>, p: &mut [f32]) -> (f32, f32) {
        #[cfg(target_arch = "x86_64")]
        if self.avx512 {
            return crate::avx512::proportions(h, log_library, p);
        }
        proportions(h, log_library, p)
    }

    /// The closed-form pass of [`Row::run`] in AVX-512 where it applies (the CPU has it, no
    /// zero inflation), else `None`.
    fn closed_form_512(
        &self,
        input: RowIn<'_>,
        p: &[f32],
        (offset, scale): (f32, f32),
        grads: &mut RowGrads<'_>,
        counted: &mut Vec<u32>,
    ) -> Option<(f64, f64)> {
        #[cfg(target_arch = "x86_64")]
        if self.avx512 && input.zi.is_none() && grads.dz.is_none() {
            use crate::avx512::{Nb, Pass, closed_form};
            return Some(closed_form(Pass {
                x: &input.x[..self.genes],
                p,
                h: input.h,
                scale,
                offset,
                nb: self.nb.map(|nb| Nb {
                    theta: &nb.theta,
                    inv_theta: &nb.inv_theta,
                    log_theta: nb.lt,
                }),
                grad_scale: self.grad_scale,
                dh: grads.dh.as_deref_mut(),
                dt: grads.dt.as_deref_mut(),
                dt_adds: grads.dt_adds,
                counted,
            }));
        }
        let _ = (input, p, offset, scale, grads, counted);
        None
    }

    /// The closed-form pass of [`Row::run`], eight entries at a time: every entry's terms
    /// that have a closed form, their sums (the log-likelihood's and `∂/∂log μ`'s), and the
    /// entries with a count noted in `counted`.
    fn closed_form(
        &self,
        input: RowIn<'_>,
        p: &[f32],
        (offset, scale): (f32, f32),
        grads: &mut RowGrads<'_>,
        counted: &mut Vec<u32>,
    ) -> (f64, f64) {
        let RowIn { h, x, zi, .. } = input;
        let (mut total, mut grad_sum) = (0.0f64, 0.0f64);
        let (mut acc, mut grad_acc) = (f32x8::ZERO, f32x8::ZERO);
        for (chunk, c) in (0..self.genes).step_by(LANES).enumerate() {
            let n = LANES.min(self.genes - c);
            let lanes = Lanes { c, n };
            let xv = lanes.load(x, 0.0);
            let mu = lanes.load(p, 0.0) * f32x8::splat(scale);
            let log_mu = lanes.load(h, 0.0) + f32x8::splat(offset);
            let mut e = match self.nb {
                Some(nb) => nb_entries(
                    xv,
                    mu,
                    log_mu,
                    lanes.load(&nb.theta, 1.0),
                    lanes.load(&nb.inv_theta, 1.0),
                    lanes.load(nb.lt, 0.0),
                ),
                None => Entry {
                    l: xv * log_mu - mu,
                    lm: xv - mu,
                    lt: f32x8::ZERO,
                    z: f32x8::ZERO,
                },
            };
            let zero = xv.cmp_eq(f32x8::ZERO);
            if let Some(zi) = zi {
                e = zero_inflated(e, lanes.load(zi, 0.0), zero);
            }
            if self.grad_scale != 1.0 {
                let c = f32x8::splat(self.grad_scale);
                (e.lm, e.lt, e.z) = (e.lm * c, e.lt * c, e.z * c);
            }
            if n == LANES {
                acc += e.l;
                grad_acc += e.lm;
            } else {
                let valid = lanes.valid();
                acc += valid.blend(e.l, f32x8::ZERO);
                grad_acc += valid.blend(e.lm, f32x8::ZERO);
            }
            lanes.store(&mut grads.dh, e.lm);
            if grads.dt_adds {
                lanes.add(&mut grads.dt, e.lt);
            } else {
                lanes.store(&mut grads.dt, e.lt);
            }
            lanes.store(&mut grads.dz, e.z);
            let mut bits = !zero.move_mask() & ((1 << n) - 1);
            while bits != 0 {
                counted.push((c + bits.trailing_zeros() as usize) as u32);
                bits &= bits - 1;
            }
            // Flush the f32 lanes into the f64 total now and then, to bound rounding.
            if chunk % 64 == 63 {
                total += f64::from(acc.reduce_add());
                grad_sum += f64::from(grad_acc.reduce_add());
                (acc, grad_acc) = (f32x8::ZERO, f32x8::ZERO);
            }
        }
        total += f64::from(acc.reduce_add());
        grad_sum += f64::from(grad_acc.reduce_add());
        (total, grad_sum)
    }

    /// The terms of the entries `counted` (counts above zero) that the vectorised pass left
    /// out: `−lgamma(x + 1)`, and for the negative binomial `lgamma(x + θ) − lgamma(θ)` and,
    /// in the `log θ` derivative, `θ (ψ(x + θ) − ψ(θ))`. Small integer counts (most of them)
    /// take eight at a time through [`rising_v`]; other counts, and extreme `θ`, `lgamma` and
    /// `digamma` in `f64`. Returns the log-likelihood part.
    fn add_counted(&self, x: &[f32], counted: &[u32], dt: &mut Option<&mut [f32]>) -> f64 {
        let mut total = 0.0f64;
        for group in counted.chunks(LANES) {
            let (mut xs, mut thetas) = ([0.0f32; LANES], [1.0f32; LANES]);
            for (lane, &j) in group.iter().enumerate() {
                let (j, xj) = (j as usize, x[j as usize]);
                total -= ln_factorial(xj);
                let Some(nb) = self.nb else { continue };
                let theta = nb.theta[j];
                if f64::from(xj) <= SMALL_COUNT
                    && xj.fract() == 0.0
                    && (1e-30..1e8).contains(&theta)
                {
                    (xs[lane], thetas[lane]) = (xj, theta);
                } else {
                    let (rising, harmonic) =
                        rising_log_and_harmonic(f64::from(xj), f64::from(theta));
                    total += rising;
                    if let Some(dt) = dt.as_deref_mut() {
                        dt[j] += (f64::from(theta) * harmonic) as f32 * self.grad_scale;
                    }
                }
            }
            if self.nb.is_none() || xs == [0.0; LANES] {
                continue;
            }
            let (rising, harmonic) = rising_v(xs, thetas);
            total += rising.to_array().iter().map(|&r| f64::from(r)).sum::<f64>();
            if let Some(dt) = dt.as_deref_mut() {
                let terms =
                    (harmonic * f32x8::new(thetas) * f32x8::splat(self.grad_scale)).to_array();
                for ((&j, &xj), term) in group.iter().zip(&xs).zip(terms) {
                    if xj > 0.0 {
                        dt[j as usize] += term;
                    }
                }
            }
        }
        total
    }
}

/// A row's working memory, kept from row to row.
struct Scratch {
    /// The softmax proportions.
    p: Vec<f32>,
    /// The genes whose count is not zero.
    counted: Vec<u32>,
}

impl Scratch {
    fn new(genes: usize) -> Self {
        Self {
            p: vec![0.0; genes],
            counted: Vec::with_capacity(genes),
        }
    }
}

/// The `n` (at most eight) entries of a row from column `c`.
#[derive(Clone, Copy)]
struct Lanes {
    c: usize,
    n: usize,
}

impl Lanes {
    /// The entries of `s`; lanes past `n` hold `fill`.
    #[inline]
    fn load(self, s: &[f32], fill: f32) -> f32x8 {
        if self.n == LANES {
            load(&s[self.c..])
        } else {
            let mut a = [fill; LANES];
            a[..self.n].copy_from_slice(&s[self.c..self.c + self.n]);
            f32x8::new(a)
        }
    }

    /// Adds the first `n` lanes of `v` to `d`, when present.
    #[inline]
    fn add(self, d: &mut Option<&mut [f32]>, v: f32x8) {
        if let Some(d) = d.as_deref_mut() {
            let d = &mut d[self.c..self.c + self.n];
            if let Ok(lanes) = <&mut [f32; LANES]>::try_from(&mut *d) {
                *lanes = (f32x8::new(*lanes) + v).to_array();
            } else {
                for (d, v) in d.iter_mut().zip(v.to_array()) {
                    *d += v;
                }
            }
        }
    }

    /// Writes the first `n` lanes of `v` into `d`, when present.
    #[inline]
    fn store(self, d: &mut Option<&mut [f32]>, v: f32x8) {
        if let Some(d) = d.as_deref_mut() {
            d[self.c..self.c + self.n].copy_from_slice(&v.to_array()[..self.n]);
        }
    }

    /// All bits set in the first `n` lanes.
    fn valid(self) -> f32x8 {
        let mut a = [0.0f32; LANES];
        a[..self.n].fill(f32::from_bits(u32::MAX));
        f32x8::new(a)
    }
}

/// Fills `p` with `exp(h − max h)` (or `exp(h)` without a library) and returns the offset and
/// scale with `log μ = h + offset` and `μ = p · scale`.
fn proportions(h: &[f32], log_library: Option<f32>, p: &mut [f32]) -> (f32, f32) {
    let bulk = h.len() / LANES * LANES;
    let max = match log_library {
        Some(_) => {
            let mut m = f32x8::splat(f32::NEG_INFINITY);
            for c in (0..bulk).step_by(LANES) {
                m = m.fast_max(load(&h[c..]));
            }
            h[bulk..].iter().copied().fold(
                m.to_array().into_iter().fold(f32::NEG_INFINITY, f32::max),
                f32::max,
            )
        }
        None => 0.0,
    };
    let max_v = f32x8::splat(max);
    let mut acc = f32x8::ZERO;
    let mut sum = 0.0f64;
    for (chunk, c) in (0..bulk).step_by(LANES).enumerate() {
        let e = (load(&h[c..]) - max_v).exp();
        p[c..c + LANES].copy_from_slice(&e.to_array());
        acc += e;
        if chunk % 64 == 63 {
            sum += f64::from(acc.reduce_add());
            acc = f32x8::ZERO;
        }
    }
    sum += f64::from(acc.reduce_add());
    for j in bulk..h.len() {
        p[j] = (h[j] - max).exp();
        sum += f64::from(p[j]);
    }
    offset_and_scale(log_library, max, sum)
}

/// `log μ`'s offset and `μ`'s scale for proportions `exp(h − max)` summing to `sum` (see
/// [`proportions`]).
pub(crate) fn offset_and_scale(log_library: Option<f32>, max: f32, sum: f64) -> (f32, f32) {
    match log_library {
        Some(lib) => {
            let lse = f64::from(max) + sum.ln();
            let offset = (f64::from(lib) - lse) as f32;
            (offset, (f64::from(lib).exp() / sum) as f32)
        }
        None => (0.0, 1.0),
    }
}

/// The negative binomial's closed-form terms, eight entries at once, with `d = log μ − log θ`:
/// `ℓ = −θ s + x (d − s)`, `∂ℓ/∂log μ = x (1 − σ) − θ σ`, `∂ℓ/∂log θ = θ (σ − s) − x (1 − σ)`;
/// [`Row::add_counted`] adds the `lgamma` and `digamma` parts of the entries with a count.
#[inline]
fn nb_entries(
    x: f32x8,
    mu: f32x8,
    log_mu: f32x8,
    theta: f32x8,
    inv_theta: f32x8,
    log_theta: f32x8,
) -> Entry<f32x8, f32x8> {
    let y = mu * inv_theta;
    // s = ln(1 + y) from ln(u), u = 1 + y rounded, corrected by the rounding of u (exact to a
    // few ulp for every y >= 0); 1 − σ = 1 / u.
    let u = f32x8::ONE + y;
    let inv_u = f32x8::ONE / u;
    let sp = u.ln() - ((u - f32x8::ONE) - y) * inv_u;
    let sig = y * inv_u;
    let x_rest = x * inv_u;
    Entry {
        l: x * (log_mu - log_theta - sp) - theta * sp,
        lm: x_rest - theta * sig,
        lt: theta * (sig - sp) - x_rest,
        z: f32x8::ZERO,
    }
}

/// Zero inflation of a base law's entries `e`, eight at once; `zero` marks the lanes whose
/// count is zero (see the module's formulas).
#[inline]
fn zero_inflated(e: Entry<f32x8, f32x8>, z: f32x8, zero: f32x8) -> Entry<f32x8, f32x8> {
    let ez = (-z.abs()).exp();
    let softplus = z.max(f32x8::ZERO) + ln_1p_v(ez);
    let non_negative = !z.cmp_lt(f32x8::ZERO);
    let pi = non_negative.blend(f32x8::ONE, ez) / (f32x8::ONE + ez);
    let m = z.max(e.l);
    let (ez, eb) = ((z - m).exp(), (e.l - m).exp());
    // Not `recip`, which is a 12-bit approximation on x86.
    let inv = f32x8::ONE / (ez + eb);
    let w = zero.blend(eb * inv, f32x8::ONE);
    Entry {
        l: zero.blend(m + (ez + eb).ln(), e.l) - softplus,
        lm: e.lm * w,
        lt: e.lt * w,
        z: zero.blend(ez * inv, f32x8::ZERO) - pi,
    }
}

/// `lgamma(x + θ) − lgamma(θ)` and `ψ(x + θ) − ψ(θ)` for eight small integer counts `x`
/// (lanes of zero give zero): the finite sums `Σ_{k<x} ln(θ + k)` (the log of each product
/// of four terms) and `Σ_{k<x} 1 / (θ + k)`. `θ` within `[1e-30, 1e8)` keeps every product of
/// four terms within `f32`'s range.
#[inline]
fn rising_v(x: [f32; LANES], theta: [f32; LANES]) -> (f32x8, f32x8) {
    let most = x.iter().copied().fold(0.0f32, f32::max) as usize;
    let (x, theta) = (f32x8::new(x), f32x8::new(theta));
    let (mut rising, mut harmonic, mut product) = (f32x8::ZERO, f32x8::ZERO, f32x8::ONE);
    for k in 0..most {
        let k_v = f32x8::splat(k as f32);
        let active = k_v.cmp_lt(x);
        let term = theta + k_v;
        product *= active.blend(term, f32x8::ONE);
        harmonic += active.blend(f32x8::ONE / term, f32x8::ZERO);
        if k % 4 == 3 {
            rising += product.ln();
            product = f32x8::ONE;
        }
    }
    (rising + product.ln(), harmonic)
}

#[inline]
fn load(s: &[f32]) -> f32x8 {
    let mut a = [0.0f32; LANES];
    a.copy_from_slice(&s[..LANES]);
    f32x8::new(a)
}

/// One row's inputs.
#[derive(Clone, Copy)]
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
    /// Whether the row's `log θ` derivatives are added to `dt` (a sum over rows) rather than
    /// written.
    dt_adds: bool,
}

/// `ln(1 + y)` for `y >= 0`, eight at once: four terms of the series below `1e-2` (relative
/// error under `y^4 / 5`), else `ln` of `1 + y`, whose rounding costs at most `6e-6` relative
/// there, and which is several times faster than `log1pf`.
#[inline]
fn ln_1p_v(y: f32x8) -> f32x8 {
    let series = y
        * (f32x8::ONE
            - y * (f32x8::splat(0.5) - y * (f32x8::splat(1.0 / 3.0) - y * f32x8::splat(0.25))));
    y.cmp_lt(f32x8::splat(1e-2))
        .blend(series, (f32x8::ONE + y).ln())
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
        // 43 genes: five vectorised chunks of eight and a scalar tail of three.
        let (cells, genes) = (6, 43);
        let opts = (Kind::Float, Device::Cpu);
        let rate = (Tensor::randn([cells, genes], opts) * 1.5).exp();
        let x = rate.poisson() * Tensor::rand([cells, genes], opts).gt(0.5);
        let x = x.to_kind(Kind::Float);
        let lib = log_library(&x);
        let logits = (Tensor::randn([samples * cells, genes], opts) * 2.0).set_requires_grad(true);
        let log_theta = (Tensor::randn([genes], opts) * 2.0).set_requires_grad(true);
        let zi = (Tensor::randn([samples * cells, genes], opts) * 3.0).set_requires_grad(true);
        let fused_with = |reduction| {
            softmax_rows_log_prob(
                law,
                &logits,
                softmax.then_some(&lib),
                Some(&log_theta),
                zero_inflated.then_some(&zi),
                &x,
                reduction,
            )
            .expect("qualifies")
        };
        let (fused, fused_mean) = (fused_with(Reduction::Rows), fused_with(Reduction::Mean));
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
            // The reference's graph is kept for the mean's gradients below.
            Tensor::run_backward(&[(v * &weights).sum(Kind::Float)], &inputs, true, false)
        };
        for (a, b) in grads(&fused).iter().zip(grads(&reference).iter()) {
            close(a, b, "gradients");
        }
        // The mean: its value, and gradients (uniform weights) against the reference's mean.
        let reference_mean = reference.mean(Kind::Float);
        close(&fused_mean, &reference_mean, "mean");
        let mean_grads = |v: &Tensor| {
            let mut inputs = vec![logits.shallow_clone()];
            if law == FusedLaw::Nb {
                inputs.push(log_theta.shallow_clone());
            }
            if zero_inflated {
                inputs.push(zi.shallow_clone());
            }
            Tensor::run_backward(&[v * 3.0], &inputs, false, false)
        };
        for (a, b) in mean_grads(&fused_mean)
            .iter()
            .zip(mean_grads(&reference_mean).iter())
        {
            close(a, b, "gradients of the mean");
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

    /// The AVX-512 passes against the AVX2 ones, row by row, on a width that is no multiple
    /// of sixteen, counts from 0 to 3,000, `θ` from 1e-3 to 1e4 and logits over a wide range:
    /// the same log-likelihood and derivatives to 1e-5 relative (each row's scale).
    #[test]
    fn the_avx512_passes_match_the_avx2_passes() {
        if !avx512_available() {
            eprintln!("no AVX-512 on this CPU: nothing to compare");
            return;
        }
        tch::manual_seed(9);
        let (rows, genes) = (12usize, 1_001usize);
        let opts = (Kind::Float, Device::Cpu);
        let logits = Tensor::randn([rows as i64, genes as i64], opts) * 4.0;
        let rate = (Tensor::randn([rows as i64, genes as i64], opts) * 2.5).exp();
        let x = rate.poisson().clamp_max(3000.0)
            * Tensor::rand([rows as i64, genes as i64], opts).gt(0.6);
        let lt = (Tensor::rand([genes as i64], opts) * 16.1 - 6.9).to_kind(Kind::Float);
        let (h, xs, lt) = (host(&logits), host(&x), host(&lt));
        let nb = PerGene::new(lt);
        for law in [Some(&nb), None] {
            for (log_library, grad_scale) in [(Some(6.5f32), 0.25f32), (None, 1.0)] {
                let run = |avx512: bool| {
                    let row = Row {
                        genes,
                        nb: law,
                        grad_scale,
                        avx512,
                    };
                    let mut scratch = Scratch::new(genes);
                    let (mut dh, mut dt) = (vec![0.0f32; rows * genes], vec![0.5f32; genes]);
                    let ll: Vec<f64> = dh
                        .chunks_mut(genes)
                        .enumerate()
                        .map(|(r, dh)| {
                            row.run(
                                RowIn {
                                    h: &h[r * genes..(r + 1) * genes],
                                    log_library,
                                    x: &xs[r * genes..(r + 1) * genes],
                                    zi: None,
                                },
                                &mut scratch,
                                RowGrads {
                                    dh: Some(dh),
                                    dt: Some(&mut dt),
                                    dz: None,
                                    dt_adds: true,
                                },
                            )
                        })
                        .collect();
                    (ll, dh, dt)
                };
                let (ll, dh, dt) = run(true);
                let (ll_ref, dh_ref, dt_ref) = run(false);
                for (a, b) in ll.iter().zip(&ll_ref) {
                    assert!(
                        (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                        "log-likelihood {a} vs {b}"
                    );
                }
                for (what, a, b) in [("dh", &dh, &dh_ref), ("dt", &dt, &dt_ref)] {
                    for (a, b) in a.chunks(genes).zip(b.chunks(genes)) {
                        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                        let diff = a
                            .iter()
                            .zip(b)
                            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                        assert!(diff <= 1e-5 * scale, "{what}: {diff} of {scale}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_pass_runs_on_libtorchs_openmp_team() {
        // libtorch (PyTorch's Linux wheels) runs its CPU ops on GNU OpenMP; the fused pass must
        // share that team rather than start a second pool on the same cores.
        let _ = Tensor::ones([2], (Kind::Float, Device::Cpu)).sum(Kind::Float);
        assert!(scae_par::on_openmp());
    }

    #[test]
    fn other_inputs_fall_back() {
        let x = Tensor::ones([2, 3], (Kind::Double, Device::Cpu));
        let logits = Tensor::zeros([2, 3], (Kind::Double, Device::Cpu));
        let rows = Reduction::Rows;
        assert!(
            softmax_rows_log_prob(FusedLaw::Poisson, &logits, None, None, None, &x, rows).is_none()
        );
        let x = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        let logits = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        assert!(softmax_rows_log_prob(FusedLaw::Nb, &logits, None, None, None, &x, rows).is_none());
        let per_cell = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        assert!(
            softmax_rows_log_prob(FusedLaw::Nb, &logits, None, Some(&per_cell), None, &x, rows)
                .is_none()
        );
        assert!(
            softmax_rows_log_prob(FusedLaw::Poisson, &logits, None, None, None, &x, rows).is_some()
        );
    }
}
