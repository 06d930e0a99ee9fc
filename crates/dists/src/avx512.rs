//! The fused likelihood's two vectorised passes ([`crate::fused`]) in AVX-512, sixteen entries
//! at a time, for CPUs that have it (checked at run time; the build targets AVX2). `wide`,
//! which the AVX2 passes use, has no 16-lane type, so these are written in `std::arch`'s
//! intrinsics: `exp` and `ln` are the same Cephes-style polynomials as `wide`'s `f32x8`, the
//! last row chunk is a masked load rather than a padded copy. On this project's 2-core
//! benchmark machine the closed-form pass of a `128 x 2000` batch runs about twice as fast as
//! in AVX2.
//!
//! Only the laws without zero inflation come here (the bench's and scVI's default); the
//! zero-inflated ones keep the AVX2 pass.

#![allow(unsafe_code)]

use std::arch::x86_64::*;

/// Whether this CPU runs the AVX-512 passes (`std` caches the answer).
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Chunks of sixteen between two flushes of the `f32` lane sums into `f64` (512 entries, as
/// the AVX2 passes flush).
const FLUSH: usize = 32;

/// The lanes of the `n` (at most sixteen) entries from the start of a chunk.
#[inline]
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// `exp(x)`; 0 where `|x| ≥ 87.3` or `x` is not a number, as `wide`'s `f32x8::exp`.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
    let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let t = _mm512_fnmadd_ps(r, _mm512_set1_ps(0.693_359_4), x);
    let t = _mm512_fnmadd_ps(r, _mm512_set1_ps(-2.121_944_4e-4), t);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5f32] {
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(c));
    }
    let z = _mm512_fmadd_ps(_mm512_mul_ps(p, t), t, t);
    let z = _mm512_scalef_ps(_mm512_add_ps(z, _mm512_set1_ps(1.0)), r);
    let in_range = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(x), _mm512_set1_ps(87.3));
    _mm512_maskz_mov_ps(in_range, z)
}

/// `ln(x)` for positive normal `x`; `+∞` and NaN pass through, and smaller `x` give NaN.
#[inline]
#[target_feature(enable = "avx512f")]
fn ln16(x: __m512) -> __m512 {
    let bits = _mm512_castps_si512(x);
    let m = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_and_si512(bits, _mm512_set1_epi32(0x007F_FFFF)),
        _mm512_set1_epi32(0x3F00_0000),
    ));
    let e = _mm512_cvtepi32_ps(_mm512_sub_epi32(
        _mm512_srli_epi32::<23>(bits),
        _mm512_set1_epi32(126),
    ));
    let low = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(m, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let m = _mm512_mask_add_ps(m, low, m, m);
    let e = _mm512_mask_sub_ps(e, low, e, _mm512_set1_ps(1.0));
    let t = _mm512_sub_ps(m, _mm512_set1_ps(1.0));
    let mut p = _mm512_set1_ps(7.037_683_6e-2);
    for c in [
        -1.151_461_1e-1f32,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_5e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ] {
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(c));
    }
    let t2 = _mm512_mul_ps(t, t);
    let r = _mm512_mul_ps(_mm512_mul_ps(t2, t), p);
    let r = _mm512_fmadd_ps(e, _mm512_set1_ps(-2.121_944_4e-4), r);
    let r = _mm512_fnmadd_ps(t2, _mm512_set1_ps(0.5), _mm512_add_ps(r, t));
    let r = _mm512_fmadd_ps(e, _mm512_set1_ps(0.693_359_4), r);
    let special = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, _mm512_set1_ps(f32::INFINITY))
        | _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(f32::MIN_POSITIVE));
    if special == 0 {
        return r;
    }
    let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(f32::MIN_POSITIVE));
    let r = _mm512_mask_mov_ps(r, special & !tiny, x);
    _mm512_mask_mov_ps(r, tiny, _mm512_set1_ps(f32::NAN))
}

/// [`crate::fused`]'s `proportions` in AVX-512. Panics without AVX-512 (see [`available`]).
pub(crate) fn proportions(h: &[f32], log_library: Option<f32>, p: &mut [f32]) -> (f32, f32) {
    assert!(available() && p.len() >= h.len());
    // SAFETY: AVX-512F is present (asserted); `p` holds at least `h.len()` values.
    unsafe { proportions_512(h, log_library, p) }
}

#[target_feature(enable = "avx512f")]
unsafe fn proportions_512(h: &[f32], log_library: Option<f32>, p: &mut [f32]) -> (f32, f32) {
    let g = h.len();
    let max = match log_library {
        Some(_) => {
            let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
            for c in (0..g).step_by(16) {
                let k = lanes(g - c);
                // SAFETY: the mask covers only the entries from `c` below `g`.
                let v = unsafe { _mm512_mask_loadu_ps(m, k, h.as_ptr().add(c)) };
                m = _mm512_max_ps(m, v);
            }
            _mm512_reduce_max_ps(m)
        }
        None => 0.0,
    };
    let max_v = _mm512_set1_ps(max);
    let (mut acc, mut sum) = (_mm512_setzero_ps(), 0.0f64);
    for (chunk, c) in (0..g).step_by(16).enumerate() {
        let k = lanes(g - c);
        // SAFETY: as above, and `p` is at least as long as `h`.
        unsafe {
            let e = exp16(_mm512_sub_ps(
                _mm512_maskz_loadu_ps(k, h.as_ptr().add(c)),
                max_v,
            ));
            _mm512_mask_storeu_ps(p.as_mut_ptr().add(c), k, e);
            acc = _mm512_mask_add_ps(acc, k, acc, e);
        }
        if chunk % FLUSH == FLUSH - 1 {
            sum += f64::from(_mm512_reduce_add_ps(acc));
            acc = _mm512_setzero_ps();
        }
    }
    sum += f64::from(_mm512_reduce_add_ps(acc));
    crate::fused::offset_and_scale(log_library, max, sum)
}

/// The per-gene negative binomial constants: `θ`, `1 / θ`, `log θ`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Nb<'a> {
    pub theta: &'a [f32],
    pub inv_theta: &'a [f32],
    pub log_theta: &'a [f32],
}

/// One row of the closed-form pass: inputs and outputs.
#[derive(Debug)]
pub(crate) struct Pass<'a, 'b> {
    pub x: &'a [f32],
    /// Softmax proportions and logits of the row, `μ = p · scale`, `log μ = h + offset`.
    pub p: &'a [f32],
    pub h: &'a [f32],
    pub scale: f32,
    pub offset: f32,
    pub nb: Option<Nb<'a>>,
    pub grad_scale: f32,
    pub dh: Option<&'b mut [f32]>,
    pub dt: Option<&'b mut [f32]>,
    /// Whether `dt` accumulates (else it is written).
    pub dt_adds: bool,
    /// Receives the genes whose count is not zero.
    pub counted: &'b mut Vec<u32>,
}

/// [`crate::fused`]'s closed-form pass of one row without zero inflation, in AVX-512: the
/// row's closed-form log-likelihood terms and the sum of its `∂/∂log μ`, both summed in
/// `f64`. Panics without AVX-512 or with inputs shorter than `x`.
pub(crate) fn closed_form(pass: Pass<'_, '_>) -> (f64, f64) {
    let g = pass.x.len();
    assert!(available() && pass.p.len() >= g && pass.h.len() >= g);
    if let Some(nb) = pass.nb {
        assert!(nb.theta.len() >= g && nb.inv_theta.len() >= g && nb.log_theta.len() >= g);
    }
    for d in [&pass.dh, &pass.dt].into_iter().flatten() {
        assert!(d.len() >= g);
    }
    // SAFETY: AVX-512F is present and every slice holds at least `g` values (asserted).
    unsafe { closed_form_512(pass) }
}

#[target_feature(enable = "avx512f")]
unsafe fn closed_form_512(pass: Pass<'_, '_>) -> (f64, f64) {
    let Pass {
        x,
        p,
        h,
        scale,
        offset,
        nb,
        grad_scale,
        mut dh,
        mut dt,
        dt_adds,
        counted,
    } = pass;
    let g = x.len();
    let one = _mm512_set1_ps(1.0);
    let (scale, offset, gs) = (
        _mm512_set1_ps(scale),
        _mm512_set1_ps(offset),
        _mm512_set1_ps(grad_scale),
    );
    let (mut total, mut grad_sum) = (0.0f64, 0.0f64);
    let (mut acc, mut grad_acc) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for (chunk, c) in (0..g).step_by(16).enumerate() {
        let k = lanes(g - c);
        // SAFETY (every load and store below): the mask covers only entries from `c` below
        // `g`, and every slice holds at least `g` values.
        let load = |s: &[f32]| unsafe { _mm512_maskz_loadu_ps(k, s.as_ptr().add(c)) };
        let xv = load(x);
        let mu = _mm512_mul_ps(load(p), scale);
        let log_mu = _mm512_add_ps(load(h), offset);
        let (l, lm, lt) = match nb {
            Some(nb) => {
                // Padded lanes take θ = 1, so that they stay finite.
                let theta = unsafe { _mm512_mask_loadu_ps(one, k, nb.theta.as_ptr().add(c)) };
                let inv_theta =
                    unsafe { _mm512_mask_loadu_ps(one, k, nb.inv_theta.as_ptr().add(c)) };
                let log_theta = load(nb.log_theta);
                let y = _mm512_mul_ps(mu, inv_theta);
                let u = _mm512_add_ps(one, y);
                let inv_u = _mm512_div_ps(one, u);
                let sp = _mm512_fnmadd_ps(_mm512_sub_ps(_mm512_sub_ps(u, one), y), inv_u, ln16(u));
                let sig = _mm512_mul_ps(y, inv_u);
                let x_rest = _mm512_mul_ps(xv, inv_u);
                let l = _mm512_fnmadd_ps(
                    theta,
                    sp,
                    _mm512_mul_ps(xv, _mm512_sub_ps(_mm512_sub_ps(log_mu, log_theta), sp)),
                );
                let lm = _mm512_fnmadd_ps(theta, sig, x_rest);
                let lt = _mm512_sub_ps(_mm512_mul_ps(theta, _mm512_sub_ps(sig, sp)), x_rest);
                (l, lm, lt)
            }
            None => (
                _mm512_sub_ps(_mm512_mul_ps(xv, log_mu), mu),
                _mm512_sub_ps(xv, mu),
                _mm512_setzero_ps(),
            ),
        };
        let (lm, lt) = if grad_scale == 1.0 {
            (lm, lt)
        } else {
            (_mm512_mul_ps(lm, gs), _mm512_mul_ps(lt, gs))
        };
        acc = _mm512_mask_add_ps(acc, k, acc, l);
        grad_acc = _mm512_mask_add_ps(grad_acc, k, grad_acc, lm);
        if let Some(dh) = dh.as_deref_mut() {
            unsafe { _mm512_mask_storeu_ps(dh.as_mut_ptr().add(c), k, lm) };
        }
        if let Some(dt) = dt.as_deref_mut() {
            let at = unsafe { dt.as_mut_ptr().add(c) };
            let v = if dt_adds {
                _mm512_add_ps(unsafe { _mm512_maskz_loadu_ps(k, at) }, lt)
            } else {
                lt
            };
            unsafe { _mm512_mask_storeu_ps(at, k, v) };
        }
        // `!(x == 0)`, as the AVX2 pass tests it (NaN counts are noted too).
        let mut bits = u32::from(_mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(xv, _mm512_setzero_ps()) & k);
        while bits != 0 {
            counted.push((c + bits.trailing_zeros() as usize) as u32);
            bits &= bits - 1;
        }
        if chunk % FLUSH == FLUSH - 1 {
            total += f64::from(_mm512_reduce_add_ps(acc));
            grad_sum += f64::from(_mm512_reduce_add_ps(grad_acc));
            (acc, grad_acc) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        }
    }
    total += f64::from(_mm512_reduce_add_ps(acc));
    grad_sum += f64::from(_mm512_reduce_add_ps(grad_acc));
    (total, grad_sum)
}
