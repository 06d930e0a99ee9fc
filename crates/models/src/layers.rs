//! The hidden layers the VAE and the GMVAE build on: linear (or, for raw counts on the CPU, this
//! module's sparse kernels over the nonzero counts), optional batch norm, ReLU, optional dropout
//! (its mask drawn here on the CPU).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor, nn, nn::Module, nn::ModuleT};
use wide::CmpEq;

use crate::autoencoder::torch_linear_init;
use crate::covariates::{Codes, Injection};

/// The linear map of a hidden layer.
#[derive(Debug)]
pub(crate) enum Affine {
    Dense(nn::Linear),
    /// The encoder's first layer, `log1p(counts) W + b` with `W` stored `[genes, width]`: on the
    /// CPU it runs over the nonzero counts only (single-cell counts are 90-99 % zeros), forward
    /// and backward, in this module's own sparse kernels. Autograd sees the product `log1p(x) W`
    /// of a training pass as a leaf, whose gradient `∂` [`Affine::add_weight_grad`] turns into
    /// `W`'s, `log1p(x)ᵀ ∂`, after `backward`. libtorch's `embedding_bag`, which computes the
    /// same, sorts every nonzero's gene in its backward pass: with its dense gradient that took
    /// a third of a training step of scVI's model.
    Counts {
        weight: Tensor,
        bias: Tensor,
        /// The training passes whose weight gradient is still to be added.
        pending: Mutex<Vec<Pending>>,
    },
}

/// A training pass of [`Affine::Counts`]: its sparse input and the leaf autograd ends at.
#[derive(Debug)]
pub(crate) struct Pending {
    input: Arc<SparseLog1p>,
    product: Tensor,
}

/// A batch's nonzero counts as the sparse first layer of a counts encoder reads them: `log1p`
/// of each, row by row and, for the backward pass, gene by gene. Built once per batch (see
/// [`crate::TensorBatch::from_host`]), off the training thread when a trainer reads ahead, and
/// shared by every layer that reads the batch (the GMVAE's two encoders); cloning is cheap.
#[derive(Debug, Clone)]
pub struct SparseRows(Arc<SparseLog1p>);

impl SparseRows {
    /// The rows of a `cols`-column matrix given as CSR: row `r` holds the values
    /// `values[indptr[r]..indptr[r + 1]]` at the columns `indices[indptr[r]..indptr[r + 1]]`, each
    /// below `cols`.
    pub fn from_csr(indptr: &[i64], indices: &[i64], values: &[f32], cols: usize) -> Self {
        let table = log1p_table();
        Self(Arc::new(SparseLog1p {
            rows: indptr.len().saturating_sub(1),
            cols,
            starts: indptr.iter().map(|&k| k as usize).collect(),
            genes: indices.iter().map(|&j| j as u32).collect(),
            values: values.iter().map(|&v| log1p_count(v, table)).collect(),
            by_gene: OnceLock::new(),
        }))
    }

    /// Builds now what a training pass's backward reads later (the entries gene by gene), so
    /// that a batch made on a reading thread spares the training thread that work.
    pub fn prepare_backward(&self) {
        let _ = self.0.by_gene();
    }
}

impl Affine {
    /// The map of `x`, whose nonzero entries `sparse` holds when given; `train` marks a pass
    /// whose loss will be back-propagated.
    pub(crate) fn forward(&self, x: &Tensor, sparse: Option<&SparseRows>, train: bool) -> Tensor {
        match self {
            Self::Dense(linear) => linear.forward(x),
            Self::Counts {
                weight,
                bias,
                pending,
            } => {
                if x.device() != tch::Device::Cpu || x.dim() != 2 || weight.kind() != Kind::Float {
                    return x.log1p().matmul(weight) + bias;
                }
                let input = SparseLog1p::of_batch(x, sparse);
                let product = with_host_f32(&weight.detach().contiguous(), |w| {
                    input.times(w, weight.size()[1] as usize)
                });
                if !(train && weight.requires_grad()) {
                    return product + bias;
                }
                let product = product.set_requires_grad(true);
                let out = &product + bias;
                pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Pending { input, product });
                out
            }
        }
    }

    /// Adds the weight gradient of every training pass since the last call (see
    /// [`Affine::Counts`]); to be called after `backward`, before the optimiser step.
    pub(crate) fn add_weight_grad(&self) {
        let Self::Counts {
            weight, pending, ..
        } = self
        else {
            return;
        };
        let passes = std::mem::take(&mut *pending.lock().unwrap_or_else(PoisonError::into_inner));
        for Pending { input, product } in passes {
            let upstream = product.grad();
            if !upstream.defined() {
                continue;
            }
            let upstream = upstream.to_kind(Kind::Float).contiguous();
            let width = weight.size()[1] as usize;
            with_host_f32(&upstream, |d| {
                add_grad(weight, |g| input.add_transpose_times(d, width, g));
            });
        }
    }
}

/// `param`'s gradient, which autograd creates (zeros, from `∂/∂p Σ 0 p`) where it is missing.
/// Called between `backward` and the optimiser step.
pub(crate) fn grad_of(param: &Tensor) -> Tensor {
    let grad = param.grad();
    if grad.defined() {
        return grad;
    }
    tch::with_grad(|| (param * 0.0).sum(Kind::Float).backward());
    param.grad()
}

/// Adds to `param`'s gradient what `add` adds to a buffer of its shape: in place in the
/// gradient ([`grad_of`]) when it is contiguous `f32`, else (one set aside by another
/// optimiser) through autograd, from `∂/∂p Σ p ⊙ G = G`. Called between `backward` and the
/// optimiser step.
fn add_grad(param: &Tensor, add: impl FnOnce(&mut [f32])) {
    let mut grad = grad_of(param);
    if grad.is_contiguous() && grad.kind() == Kind::Float {
        with_host_f32_mut(&mut grad, add);
    } else {
        let mut g = vec![0.0f32; param.numel()];
        add(&mut g);
        let g = Tensor::from_slice(&g).view_(param.size());
        (param * g).sum(Kind::Float).backward();
    }
}

/// `log1p` of the nonzero counts of a matrix, row by row (CSR).
#[derive(Debug, Default)]
struct SparseLog1p {
    rows: usize,
    cols: usize,
    /// Where each row starts in `genes` and `values`, and their length at the end.
    starts: Vec<usize>,
    genes: Vec<u32>,
    values: Vec<f32>,
    /// The same entries gene by gene (the transpose), made when first needed.
    by_gene: OnceLock<ByGene>,
}

/// The entries of a [`SparseLog1p`] gene by gene (CSC).
#[derive(Debug)]
struct ByGene {
    /// Where each gene starts in `rows` and `values`, and their length at the end.
    starts: Vec<usize>,
    rows: Vec<u32>,
    values: Vec<f32>,
}

/// Rows (or genes) per part of the parallel kernels.
const PART: usize = 16;
/// SIMD width.
const LANES: usize = 8;
/// Columns a kernel keeps in registers at once: eight `f32x8` accumulators.
const PANEL: usize = 8 * LANES;

impl SparseLog1p {
    /// Of the 2-D CPU matrix `x`, from its nonzero entries `sparse` when given (shared, not
    /// rebuilt), else by a scan of its memory.
    fn of_batch(x: &Tensor, sparse: Option<&SparseRows>) -> Arc<Self> {
        match sparse {
            Some(rows) if rows.0.cols == x.size()[1] as usize => Arc::clone(&rows.0),
            _ => Arc::new(Self::of(x)),
        }
    }

    /// Of a 2-D CPU matrix, in two passes: the nonzero lanes of every eight entries as a bit
    /// mask (most entries are zero), then the entries of the masks' set bits.
    fn of(x: &Tensor) -> Self {
        let x = x.detach().to_kind(Kind::Float).contiguous();
        let [rows, cols] = x.size()[..] else {
            return Self::default();
        };
        let (rows, cols) = (rows as usize, cols as usize);
        let chunks = cols.div_ceil(LANES);
        let mut masks = vec![0u8; rows * chunks];
        let mut starts = Vec::with_capacity(rows + 1);
        starts.push(0);
        with_host_f32(&x, |values| {
            for (row, masks) in values
                .chunks_exact(cols.max(1))
                .zip(masks.chunks_exact_mut(chunks.max(1)))
            {
                let mut count = 0;
                for (mask, chunk) in masks.iter_mut().zip(row.chunks(LANES)) {
                    *mask = nonzero_mask(chunk);
                    count += mask.count_ones() as usize;
                }
                starts.push(starts.last().copied().unwrap_or(0) + count);
            }
            let nnz = starts[rows];
            let (mut genes, mut logs) = (vec![0u32; nnz], vec![0.0f32; nnz]);
            let table = log1p_table();
            let mut k = 0;
            for (row, masks) in values
                .chunks_exact(cols.max(1))
                .zip(masks.chunks_exact(chunks.max(1)))
            {
                for (c, &mask) in masks.iter().enumerate() {
                    let mut bits = u32::from(mask);
                    while bits != 0 {
                        let j = c * LANES + bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        genes[k] = j as u32;
                        logs[k] = log1p_count(row[j], table);
                        k += 1;
                    }
                }
            }
            Self {
                rows,
                cols,
                starts,
                genes,
                values: logs,
                by_gene: OnceLock::new(),
            }
        })
    }

    /// `self · w` for `w` (`[cols, width]`, row-major): a `[rows, width]` tensor.
    fn times(&self, w: &[f32], width: usize) -> Tensor {
        let out = self.times_host(w, width);
        Tensor::from_slice(&out).view([self.rows as i64, width as i64])
    }

    /// [`SparseLog1p::times`] in host memory, row-major.
    fn times_host(&self, w: &[f32], width: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * width];
        if width > 0 {
            let parts: Vec<_> = out.chunks_mut(PART * width).enumerate().collect();
            scae_par::for_each(parts, |(part, out)| {
                for (k, out) in out.chunks_exact_mut(width).enumerate() {
                    let r = part * PART + k;
                    let (from, to) = (self.starts[r], self.starts[r + 1]);
                    add_weighted_rows(&self.genes[from..to], &self.values[from..to], w, out);
                }
            });
        }
        out
    }

    /// The entries gene by gene, by a counting sort on the gene (made once).
    fn by_gene(&self) -> &ByGene {
        self.by_gene.get_or_init(|| {
            let mut starts = vec![0usize; self.cols + 1];
            for &g in &self.genes {
                starts[g as usize + 1] += 1;
            }
            for g in 0..self.cols {
                starts[g + 1] += starts[g];
            }
            let mut fill = starts.clone();
            let nnz = self.genes.len();
            let (mut rows, mut values) = (vec![0u32; nnz], vec![0.0f32; nnz]);
            for r in 0..self.rows {
                for k in self.starts[r]..self.starts[r + 1] {
                    let slot = &mut fill[self.genes[k] as usize];
                    rows[*slot] = r as u32;
                    values[*slot] = self.values[k];
                    *slot += 1;
                }
            }
            ByGene {
                starts,
                rows,
                values,
            }
        })
    }

    /// `grad += selfᵀ · d` for `d` (`[rows, width]`) and `grad` (`[cols, width]`), both
    /// row-major: per gene, the sum of its nonzeros times their rows of `d`.
    fn add_transpose_times(&self, d: &[f32], width: usize, grad: &mut [f32]) {
        if width == 0 {
            return;
        }
        let ByGene {
            starts,
            rows,
            values,
        } = self.by_gene();
        let parts: Vec<_> = grad.chunks_mut(PART * width).enumerate().collect();
        scae_par::for_each(parts, |(part, grad)| {
            for (k, grad) in grad.chunks_exact_mut(width).enumerate() {
                let g = part * PART + k;
                let (from, to) = (starts[g], starts[g + 1]);
                if from < to {
                    add_weighted_rows(&rows[from..to], &values[from..to], d, grad);
                }
            }
        });
    }
}

/// The nonzero lanes of up to eight values, as bits.
#[inline]
fn nonzero_mask(chunk: &[f32]) -> u8 {
    if let Ok(lanes) = <[f32; LANES]>::try_from(chunk) {
        !(wide::f32x8::new(lanes)
            .cmp_eq(wide::f32x8::ZERO)
            .move_mask() as u8)
    } else {
        chunk
            .iter()
            .enumerate()
            .fold(0u8, |m, (k, &v)| m | (u8::from(v != 0.0) << k))
    }
}

/// `out += Σ_k values[k] · m[index[k]]`, `m` row-major with `out.len()` columns: a panel of
/// 64 columns at a time stays in eight SIMD registers while the rows stream past (128 columns
/// in eight AVX-512 registers where the CPU has them, [`add_weighted_rows_512`]: the same
/// products and sums per entry, so the same values to the bit).
#[allow(unsafe_code)]
fn add_weighted_rows(index: &[u32], values: &[f32], m: &[f32], out: &mut [f32]) {
    let width = out.len();
    #[cfg(target_arch = "x86_64")]
    if width >= PANEL_512 && std::arch::is_x86_feature_detected!("avx512f") {
        let bulk = width / PANEL_512 * PANEL_512;
        let rows = index.iter().map(|&i| i as usize + 1).max().unwrap_or(0);
        assert!(index.len() == values.len() && rows * width <= m.len());
        // SAFETY: AVX-512F is present, and every row `index[k]` of `m` holds `width` values
        // (asserted), of which the kernel reads the first `bulk`.
        unsafe { add_weighted_rows_512(index, values, m, width, &mut out[..bulk]) };
        add_weighted_rows_from(index, values, m, width, bulk, out);
        return;
    }
    add_weighted_rows_from(index, values, m, width, 0, out);
}

/// Columns of one AVX-512 panel: eight registers of sixteen.
#[cfg(target_arch = "x86_64")]
const PANEL_512: usize = 128;

/// [`add_weighted_rows`] over the columns of `out` (`bulk`, a multiple of [`PANEL_512`], of
/// the `width` columns of `m`), 128 at a time in AVX-512.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f")]
unsafe fn add_weighted_rows_512(
    index: &[u32],
    values: &[f32],
    m: &[f32],
    width: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    for p in (0..out.len()).step_by(PANEL_512) {
        let mut acc = [_mm512_setzero_ps(); PANEL_512 / 16];
        for (&i, &v) in index.iter().zip(values) {
            let v = _mm512_set1_ps(v);
            // SAFETY: the caller guarantees `width` values in row `i`; `p + 128 <= bulk`.
            let row = unsafe { m.as_ptr().add(i as usize * width + p) };
            for (l, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(unsafe { _mm512_loadu_ps(row.add(16 * l)) }, v, *a);
            }
        }
        for (l, a) in acc.iter().enumerate() {
            // SAFETY: `p + 16 l + 16 <= out.len()`.
            unsafe {
                let at = out.as_mut_ptr().add(p + 16 * l);
                _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), *a));
            }
        }
    }
}

/// [`add_weighted_rows`] over the columns of `out` from `from`, in AVX2.
fn add_weighted_rows_from(
    index: &[u32],
    values: &[f32],
    m: &[f32],
    width: usize,
    from: usize,
    out: &mut [f32],
) {
    use wide::f32x8;
    let mut p = from;
    while p + PANEL <= width {
        let mut acc = [f32x8::ZERO; PANEL / LANES];
        for (&i, &v) in index.iter().zip(values) {
            let v = f32x8::splat(v);
            let row = &m[i as usize * width + p..][..PANEL];
            for (a, lanes) in acc.iter_mut().zip(row.chunks_exact(LANES)) {
                let lanes: [f32; LANES] = lanes.try_into().unwrap_or([0.0; LANES]);
                *a = f32x8::new(lanes).mul_add(v, *a);
            }
        }
        for (a, o) in acc.iter().zip(out[p..p + PANEL].chunks_exact_mut(LANES)) {
            for (o, a) in o.iter_mut().zip(a.to_array()) {
                *o += a;
            }
        }
        p += PANEL;
    }
    if p < width {
        for (&i, &v) in index.iter().zip(values) {
            let row = &m[i as usize * width + p..(i as usize + 1) * width];
            for (o, x) in out[p..].iter_mut().zip(row) {
                *o += v * x;
            }
        }
    }
}

/// `ln(1 + k)` for the integer counts `k` below 1024.
fn log1p_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| (0..1024).map(|k| (k as f32).ln_1p()).collect())
}

/// `ln(1 + v)`, from `table` for the small integer counts most entries have.
#[inline]
fn log1p_count(v: f32, table: &[f32]) -> f32 {
    match table.get(v as usize) {
        Some(&t) if v == v.trunc() && v >= 0.0 => t,
        _ => v.ln_1p(),
    }
}

/// Batch norm in training mode of `h` (rows of `width`), in place, as libtorch computes it:
/// each column normalised by its batch mean and biased variance, then scaled and shifted; the
/// running mean and (unbiased) variance move by [`NORM_MOMENTUM`]. Returns the normalised
/// entries and each column's `1 / σ`.
fn normalise(norm: &nn::BatchNorm, h: &mut [f32], width: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = h.len() / width.max(1);
    let (mut sum, mut squares) = (vec![0.0f64; width], vec![0.0f64; width]);
    for row in h.chunks_exact(width) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += f64::from(v);
        }
    }
    let n = rows as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    for row in h.chunks_exact(width) {
        for ((q, &v), m) in squares.iter_mut().zip(row).zip(&mean) {
            *q += (f64::from(v) - m).powi(2);
        }
    }
    let var: Vec<f64> = squares.iter().map(|q| q / n).collect();
    let inv_std: Vec<f32> = var
        .iter()
        .map(|v| (1.0 / (v + NORM_EPS).sqrt()) as f32)
        .collect();
    let param = |t: &Option<Tensor>| {
        t.as_ref()
            .map(|t| with_host_f32(&t.detach().contiguous(), <[f32]>::to_vec))
    };
    let (scale, shift) = (param(&norm.ws), param(&norm.bs));
    let mut normed = vec![0.0f32; h.len()];
    for (row, out) in h
        .chunks_exact_mut(width)
        .zip(normed.chunks_exact_mut(width))
    {
        for c in 0..width {
            let x_hat = ((f64::from(row[c]) - mean[c]) * f64::from(inv_std[c])) as f32;
            out[c] = x_hat;
            let gamma = scale.as_ref().map_or(1.0, |s| s[c]);
            let beta = shift.as_ref().map_or(0.0, |s| s[c]);
            row[c] = gamma * x_hat + beta;
        }
    }
    let _guard = tch::no_grad_guard();
    let unbiased = n / (n - 1.0);
    for (stat, batch) in [
        (&norm.running_mean, mean.clone()),
        (
            &norm.running_var,
            var.iter().map(|v| v * unbiased).collect(),
        ),
    ] {
        let mut stat = stat.shallow_clone();
        with_host_f32_mut(&mut stat, |s| {
            for (s, b) in s.iter_mut().zip(&batch) {
                *s = ((1.0 - NORM_MOMENTUM) * f64::from(*s) + NORM_MOMENTUM * b) as f32;
            }
        });
    }
    (normed, inv_std)
}

/// Runs `f` on the memory of a contiguous CPU `f32` tensor.
#[allow(unsafe_code)]
pub(crate) fn with_host_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> R {
    assert!(t.is_contiguous() && t.kind() == Kind::Float && t.device() == tch::Device::Cpu);
    let n = t.numel();
    if n == 0 {
        return f(&[]);
    }
    // SAFETY: `t` is a contiguous CPU f32 tensor (checked above), so `data_ptr` addresses `n`
    // f32 values; `t` is borrowed for the whole call and nothing writes to it meanwhile.
    f(unsafe { std::slice::from_raw_parts(t.data_ptr().cast::<f32>(), n) })
}

/// Runs `f` on the memory of a contiguous CPU `f32` tensor, to write it, while no other handle
/// reads or writes it: a tensor just made, a parameter's gradient between `backward` and the
/// optimiser step, when autograd is idle, or a batch norm's running statistics during the
/// forward pass that updates them.
#[allow(unsafe_code)]
pub(crate) fn with_host_f32_mut<R>(t: &mut Tensor, f: impl FnOnce(&mut [f32]) -> R) -> R {
    assert!(t.is_contiguous() && t.kind() == Kind::Float && t.device() == tch::Device::Cpu);
    let n = t.numel();
    if n == 0 {
        return f(&mut []);
    }
    // SAFETY: `t` is a contiguous CPU f32 tensor (checked above), so `data_ptr` addresses `n`
    // f32 values; the caller holds the only handle in use (see above) for the whole call.
    f(unsafe { std::slice::from_raw_parts_mut(t.data_ptr().cast::<f32>(), n) })
}

/// A hidden layer: linear, optional batch norm, ReLU, optional dropout.
#[derive(Debug)]
pub(crate) struct Hidden {
    linear: Affine,
    /// The covariates' rows added to the linear output (see [`crate::covariates`]).
    covariates: Option<Injection>,
    norm: Option<nn::BatchNorm>,
    dropout: f64,
    /// The dropout masks' generator on the CPU (see [`Hidden::finish`]), seeded from
    /// libtorch's generator when the layer is made, so the run's seed fixes it.
    masks: Mutex<ChaCha8Rng>,
    /// The training passes of [`Hidden::counts_block`] whose gradients are still to be added.
    block: Mutex<Vec<BlockPass>>,
}

/// scVI's batch norm: momentum 0.01, eps 0.001.
const NORM_MOMENTUM: f64 = 0.01;
const NORM_EPS: f64 = 1e-3;

/// A training pass of a counts layer's whole block (see [`Hidden::counts_block`]): what its
/// backward pass needs.
#[derive(Debug)]
struct BlockPass {
    input: Arc<SparseLog1p>,
    /// The block's output, the leaf autograd ends at.
    out: Tensor,
    /// Batch-normalised entries before scale and shift (empty without batch norm).
    normed: Vec<f32>,
    /// `1 / σ` of each column (empty without batch norm).
    inv_std: Vec<f32>,
    /// `∂out / ∂(normalised and shifted entry)`: 0 where ReLU or dropout cut the entry, else 1
    /// or the dropout scale.
    pass: Vec<f32>,
}

impl Hidden {
    /// Layers between consecutive `widths`; with `counts_input`, the first reads raw counts
    /// (see [`Affine::Counts`]); with `covariate_rows` above 0, each layer also takes that many
    /// stacked covariate categories ([`Injection`]).
    pub(crate) fn stack(
        p: &nn::Path<'_>,
        widths: &[usize],
        batch_norm: bool,
        dropout: f64,
        counts_input: bool,
        covariate_rows: usize,
    ) -> Vec<Self> {
        widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let p = p / i;
                let linear = if counts_input && i == 0 {
                    let init = torch_linear_init(w[0]);
                    let q = &p / "linear";
                    Affine::Counts {
                        weight: q.var("weight_t", &[w[0] as i64, w[1] as i64], init.ws_init),
                        bias: q.var(
                            "bias",
                            &[w[1] as i64],
                            init.bs_init.unwrap_or(nn::Init::Const(0.0)),
                        ),
                        pending: Mutex::default(),
                    }
                } else {
                    Affine::Dense(nn::linear(
                        &p / "linear",
                        w[0] as i64,
                        w[1] as i64,
                        torch_linear_init(w[0]),
                    ))
                };
                let covariates = (covariate_rows > 0)
                    .then(|| Injection::new(&(&p / "linear"), covariate_rows, w[0], w[1]));
                Self {
                    linear,
                    covariates,
                    // scVI's settings: momentum 0.01, eps 0.001.
                    norm: batch_norm.then(|| {
                        nn::batch_norm1d(
                            &p / "norm",
                            w[1] as i64,
                            nn::BatchNormConfig {
                                momentum: NORM_MOMENTUM,
                                eps: NORM_EPS,
                                ..Default::default()
                            },
                        )
                    }),
                    dropout,
                    masks: Mutex::new(ChaCha8Rng::seed_from_u64(
                        Tensor::randint(i64::MAX, [1], (Kind::Int64, tch::Device::Cpu))
                            .int64_value(&[0]) as u64,
                    )),
                    block: Mutex::default(),
                }
            })
            .collect()
    }

    pub(crate) fn forward(layers: &[Self], x: &Tensor, codes: &Codes, train: bool) -> Tensor {
        Self::forward_counts(layers, x, None, codes, train)
    }

    /// [`Hidden::forward`] of a batch whose nonzero entries `sparse` holds, when given.
    pub(crate) fn forward_counts(
        layers: &[Self],
        x: &Tensor,
        sparse: Option<&SparseRows>,
        codes: &Codes,
        train: bool,
    ) -> Tensor {
        let Some((first, rest)) = layers.split_first() else {
            return x.shallow_clone();
        };
        let block = train && (first.covariates.is_none() || codes.is_empty());
        let h = match block.then(|| first.counts_block(x, sparse)).flatten() {
            Some(h) => h,
            None => first.finish(first.linear_of(x, sparse, codes, train), train),
        };
        Self::forward_rest(rest, h, codes, train)
    }

    /// The layers after the first, on the first's output `h`.
    fn forward_rest(layers: &[Self], h: Tensor, codes: &Codes, train: bool) -> Tensor {
        layers.iter().fold(h, |h, layer| {
            layer.finish(layer.linear_of(&h, None, codes, train), train)
        })
    }

    /// The layer's linear map of `x` with the covariates' rows added.
    fn linear_of(
        &self,
        x: &Tensor,
        sparse: Option<&SparseRows>,
        codes: &Codes,
        train: bool,
    ) -> Tensor {
        let h = self.linear.forward(x, sparse, train);
        match &self.covariates {
            Some(injection) => injection.add(&h, codes),
            None => h,
        }
    }

    /// [`Hidden::forward`] with `offset` (`[k, 1, width]`) added to the first layer's linear
    /// output (`[rows, width]`): `k` stacked copies, `[k * rows, ..]` out. The GMVAE's
    /// `q(z | x, y)` adds each component's embedding this way, so the wide first layer runs once.
    pub(crate) fn forward_offset(
        layers: &[Self],
        x: &Tensor,
        sparse: Option<&SparseRows>,
        offset: &Tensor,
        codes: &Codes,
        train: bool,
    ) -> Tensor {
        let Some((first, rest)) = layers.split_first() else {
            return x.shallow_clone();
        };
        let h = first.linear_of(x, sparse, codes, train).unsqueeze(0) + offset;
        let width = h.size()[2];
        let h = first.finish(h.reshape([-1, width]), train);
        Self::forward_rest(rest, h, codes, train)
    }

    /// Adds the gradients autograd leaves to the layers (see [`Affine::Counts`]): after
    /// `backward`, before the optimiser step.
    pub(crate) fn add_sparse_grads(layers: &[Self]) {
        for layer in layers {
            layer.linear.add_weight_grad();
            layer.add_block_grads();
        }
    }

    /// A training pass of a counts layer's whole block, linear map, batch norm, ReLU and
    /// dropout, on the host: its output is a leaf for autograd, and [`Hidden::add_block_grads`]
    /// turns that leaf's gradient into the gradients of the weight, the bias and the batch
    /// norm's scale and shift after `backward`. The same values as [`Affine::forward`] then
    /// [`Hidden::finish`] (batch statistics, running statistics updated as libtorch does, the
    /// same dropout draws), without their eight libtorch operations and parallel regions forward
    /// and back on a `128 x 128` matrix. `None` where the block does not qualify (not a counts
    /// layer on the CPU, a weight without gradient, a single row).
    fn counts_block(&self, x: &Tensor, sparse: Option<&SparseRows>) -> Option<Tensor> {
        let Affine::Counts { weight, bias, .. } = &self.linear else {
            return None;
        };
        let rows = usize::try_from(x.size().first().copied()?).ok()?;
        if x.device() != tch::Device::Cpu
            || x.dim() != 2
            || weight.kind() != Kind::Float
            || !weight.requires_grad()
            || rows < 2
            || self.dropout >= 1.0
        {
            return None;
        }
        let input = SparseLog1p::of_batch(x, sparse);
        let width = weight.size()[1] as usize;
        let mut h = with_host_f32(&weight.detach().contiguous(), |w| {
            input.times_host(w, width)
        });
        with_host_f32(&bias.detach().contiguous(), |b| {
            for row in h.chunks_exact_mut(width) {
                for (v, b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        });
        let (normed, inv_std) = match &self.norm {
            Some(norm) => normalise(norm, &mut h, width),
            None => (Vec::new(), Vec::new()),
        };
        let keep = if self.dropout > 0.0 {
            self.dropout_mask(h.len())
        } else {
            vec![1.0; h.len()]
        };
        let mut pass = vec![0.0f32; h.len()];
        // Selects, not branches: about half the entries are positive, so a branch here was
        // mispredicted every other entry; the selects vectorise.
        for ((v, p), &keep) in h.iter_mut().zip(&mut pass).zip(&keep) {
            let positive = *v > 0.0;
            *p = if positive { keep } else { 0.0 };
            *v = if positive { *v * keep } else { 0.0 };
        }
        let out = Tensor::from_slice(&h)
            .view([rows as i64, width as i64])
            .set_requires_grad(true);
        self.block
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(BlockPass {
                input,
                out: out.shallow_clone(),
                normed,
                inv_std,
                pass,
            });
        Some(out)
    }

    /// The gradients of every [`Hidden::counts_block`] pass since the last call: back through
    /// dropout and ReLU (`pass`), batch norm (`∂β = Σ g`, `∂γ = Σ g x̂`, `∂h = γ / (σ n) (n g −
    /// ∂β − x̂ ∂γ)`), the bias (`Σ ∂h`) and the sparse product (`log1p(x)ᵀ ∂h`).
    fn add_block_grads(&self) {
        let Affine::Counts { weight, bias, .. } = &self.linear else {
            return;
        };
        let passes =
            std::mem::take(&mut *self.block.lock().unwrap_or_else(PoisonError::into_inner));
        let width = weight.size()[1] as usize;
        for BlockPass {
            input,
            out,
            normed,
            inv_std,
            pass,
        } in passes
        {
            let upstream = out.grad();
            if !upstream.defined() {
                continue;
            }
            let upstream = upstream.to_kind(Kind::Float).contiguous();
            let mut g: Vec<f32> = with_host_f32(&upstream, |d| {
                d.iter().zip(&pass).map(|(d, p)| d * p).collect()
            });
            let rows = g.len() / width.max(1);
            if let Some(norm) = &self.norm {
                let (mut d_shift, mut d_scale) = (vec![0.0f64; width], vec![0.0f64; width]);
                for (row, x_hat) in g.chunks_exact(width).zip(normed.chunks_exact(width)) {
                    for c in 0..width {
                        d_shift[c] += f64::from(row[c]);
                        d_scale[c] += f64::from(row[c] * x_hat[c]);
                    }
                }
                let scale = norm
                    .ws
                    .as_ref()
                    .map(|w| with_host_f32(&w.detach().contiguous(), <[f32]>::to_vec));
                let n = rows as f64;
                for (row, x_hat) in g.chunks_exact_mut(width).zip(normed.chunks_exact(width)) {
                    for c in 0..width {
                        let gamma = scale.as_ref().map_or(1.0, |s| f64::from(s[c]));
                        let factor = gamma * f64::from(inv_std[c]) / n;
                        row[c] = (factor
                            * (n * f64::from(row[c])
                                - d_shift[c]
                                - f64::from(x_hat[c]) * d_scale[c]))
                            as f32;
                    }
                }
                if let Some(w) = &norm.ws {
                    add_grad(w, |grad| {
                        for (g, d) in grad.iter_mut().zip(&d_scale) {
                            *g += *d as f32;
                        }
                    });
                }
                if let Some(b) = &norm.bs {
                    add_grad(b, |grad| {
                        for (g, d) in grad.iter_mut().zip(&d_shift) {
                            *g += *d as f32;
                        }
                    });
                }
            }
            add_grad(bias, |grad| {
                for row in g.chunks_exact(width) {
                    for (g, d) in grad.iter_mut().zip(row) {
                        *g += d;
                    }
                }
            });
            add_grad(weight, |grad| input.add_transpose_times(&g, width, grad));
        }
    }

    /// A dropout mask of `n` entries: `1 / (1 − p)` with probability `1 − p`, else 0.
    fn dropout_mask(&self, n: usize) -> Vec<f32> {
        let keep = 1.0 - self.dropout;
        // A 32-bit draw below `threshold` keeps its entry.
        let threshold = (keep * 4_294_967_296.0).min(u32::MAX as f64) as u32;
        let scale = (1.0 / keep) as f32;
        let mut mask = vec![0.0f32; n];
        let mut rng = self.masks.lock().unwrap_or_else(PoisonError::into_inner);
        // In a data-parallel step, the draws of the rows of the other ranks are skipped (one
        // 32-bit word each), so this rank's rows get one process's draws.
        let (before, after) = crate::parallel::dropout_words(n);
        let skip = |rng: &mut ChaCha8Rng, words: u128| {
            if words > 0 {
                let at = rng.get_word_pos();
                rng.set_word_pos(at + words);
            }
        };
        skip(&mut rng, before);
        for m in &mut mask {
            if rng.random::<u32>() < threshold {
                *m = scale;
            }
        }
        skip(&mut rng, after);
        mask
    }

    /// Batch norm, ReLU and dropout after the linear map. On the CPU the dropout mask is drawn
    /// here (`1 / (1 − p)` with probability `1 − p`, else 0), not by libtorch's `bernoulli_`,
    /// which draws one 64-bit number per entry on one thread: a tenth of a VAE training step.
    fn finish(&self, mut h: Tensor, train: bool) -> Tensor {
        if let Some(norm) = &self.norm {
            h = norm.forward_t(&h, train);
        }
        let h = h.relu();
        if !(train && self.dropout > 0.0) {
            return h;
        }
        if h.device() != tch::Device::Cpu || h.kind() != Kind::Float || self.dropout >= 1.0 {
            if crate::parallel::in_shard() && self.dropout < 1.0 {
                let mask = crate::parallel::dropout_mask_on_device(
                    &h.size(),
                    self.dropout,
                    h.kind(),
                    h.device(),
                );
                return h * mask;
            }
            return h.dropout(self.dropout, train);
        }
        let mask = Tensor::from_slice(&self.dropout_mask(h.numel())).view_(h.size());
        h * mask
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, nn::VarStore};

    use super::*;

    /// Counts with about one entry in five nonzero, some above the `log1p` table and one
    /// fractional, over 70 genes (a 64-column panel and a tail) and `width` 70. The caller holds
    /// [`crate::torch_rng_lock`] (as long as it draws from libtorch's generator: weights too).
    fn counts() -> Tensor {
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        let x =
            (Tensor::rand([9, 70], opts) * 6.0).exp().floor() * Tensor::rand([9, 70], opts).lt(0.2);
        let _ = x.get(0).get(1).fill_(2500.0);
        let _ = x.get(1).get(2).fill_(0.5);
        x
    }

    fn sparse_rows(x: &Tensor) -> SparseRows {
        let (values, rows, cols) = crate::tensor_to_rows(x).expect("2-D");
        let (mut indptr, mut indices, mut nonzeros) = (vec![0i64], Vec::new(), Vec::new());
        for row in values.chunks(cols).take(rows) {
            for (j, &v) in row.iter().enumerate().filter(|&(_, &v)| v != 0.0) {
                indices.push(j as i64);
                nonzeros.push(v);
            }
            indptr.push(indices.len() as i64);
        }
        SparseRows::from_csr(&indptr, &indices, &nonzeros, cols)
    }

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let diff = (a - b).abs().max().double_value(&[]);
        let scale = b.abs().max().double_value(&[]).max(1.0);
        assert!(diff <= 1e-5 * scale, "{what}: {diff} (scale {scale})");
    }

    #[test]
    fn the_sparse_first_layer_matches_the_dense_formula_and_its_gradients() {
        let _rng = crate::torch_rng_lock();
        let x = counts();
        let rows = sparse_rows(&x);
        let vs = VarStore::new(Device::Cpu);
        let layer = &Hidden::stack(&vs.root(), &[70, 70], false, 0.0, true, 0)[0];
        let Affine::Counts { weight, bias, .. } = &layer.linear else {
            panic!("the first layer of a counts encoder is sparse");
        };
        let upstream = Tensor::randn([9, 70], (Kind::Float, Device::Cpu));
        // The reference: the dense formula through autograd, on copies of the parameters.
        let w = weight.detach().copy().set_requires_grad(true);
        let b = bias.detach().copy().set_requires_grad(true);
        let dense = x.log1p().matmul(&w) + &b;
        (&dense * &upstream).sum(Kind::Float).backward();
        for sparse in [None, Some(&rows)] {
            let out = layer.linear.forward(&x, sparse, false);
            close(&out, &dense, "evaluation");
            // Two training passes: the first creates the gradient, the second adds to it.
            for pass in 1..=2 {
                let out = layer.linear.forward(&x, sparse, true);
                close(&out, &dense, "training");
                (&out * &upstream).sum(Kind::Float).backward();
                layer.linear.add_weight_grad();
                close(&weight.grad(), &(w.grad() * pass as f64), "weight gradient");
                close(&bias.grad(), &(b.grad() * pass as f64), "bias gradient");
            }
            let (mut wg, mut bg) = (weight.grad(), bias.grad());
            let _ = wg.zero_();
            let _ = bg.zero_();
        }
    }

    /// The weighted row sums in AVX-512 (where the CPU has it) against the AVX2 kernel: the
    /// same values to the bit, on widths of one and two 128-column panels and with a tail.
    #[test]
    fn the_weighted_row_sums_agree_to_the_bit_across_kernels() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(17);
        for width in [128usize, 200, 256] {
            let m: Vec<f32> = Vec::try_from(Tensor::randn(
                [50 * width as i64],
                (Kind::Float, tch::Device::Cpu),
            ))
            .expect("f32");
            let index: Vec<u32> = (0..37u32).map(|k| (k * 7) % 50).collect();
            let values: Vec<f32> = (0..37).map(|k| 0.25 + k as f32 * 0.37).collect();
            let (mut out, mut reference) = (vec![0.5f32; width], vec![0.5f32; width]);
            add_weighted_rows(&index, &values, &m, &mut out);
            add_weighted_rows_from(&index, &values, &m, width, 0, &mut reference);
            assert!(
                out.iter()
                    .zip(&reference)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "width {width}"
            );
        }
    }

    #[test]
    fn a_pass_without_backward_adds_no_gradient() {
        let _rng = crate::torch_rng_lock();
        let x = counts();
        let vs = VarStore::new(Device::Cpu);
        let layer = &Hidden::stack(&vs.root(), &[70, 5], false, 0.0, true, 0)[0];
        let _ = layer.linear.forward(&x, None, true);
        layer.linear.add_weight_grad();
        let Affine::Counts {
            weight, pending, ..
        } = &layer.linear
        else {
            panic!("the first layer of a counts encoder is sparse");
        };
        assert!(!weight.grad().defined());
        assert!(pending.lock().expect("unpoisoned").is_empty());
    }

    #[test]
    fn dropout_keeps_one_minus_p_of_the_entries_scaled_and_repeats_on_the_same_seed() {
        let _rng = crate::torch_rng_lock();
        let layer = |seed| {
            tch::manual_seed(seed);
            let vs = VarStore::new(Device::Cpu);
            Hidden::stack(&vs.root(), &[4, 4], false, 0.25, false, 0)
                .pop()
                .expect("one layer")
        };
        let h = Tensor::ones([200, 50], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let (a, b) = (layer(7), layer(7));
        let out = a.finish(h.shallow_clone(), true);
        let values = Vec::<f32>::try_from(out.view([-1])).expect("values");
        assert!(values.iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
        // 10,000 entries: the kept share's standard deviation is 0.0043.
        let kept = values.iter().filter(|&&v| v > 0.0).count() as f64 / values.len() as f64;
        assert!((kept - 0.75).abs() < 0.02, "kept {kept}");
        let again =
            Vec::<f32>::try_from(b.finish(h.shallow_clone(), true).view([-1])).expect("values");
        assert_eq!(values, again);
        let other = layer(8).finish(h.shallow_clone(), true);
        assert!(!other.equal(&out));
        out.sum(Kind::Float).backward();
        let grad = Vec::<f32>::try_from(h.grad().view([-1])).expect("gradient");
        assert_eq!(grad, values);
        assert!(a.finish(h.shallow_clone(), false).equal(&h));
    }

    #[test]
    fn the_counts_block_matches_libtorchs_layers_values_gradients_and_running_statistics() {
        let _rng = crate::torch_rng_lock();
        let x = counts();
        let layer = || {
            tch::manual_seed(11);
            let vs = VarStore::new(Device::Cpu);
            let layer = Hidden::stack(&vs.root(), &[70, 70], true, 0.2, true, 0)
                .pop()
                .expect("one layer");
            (vs, layer)
        };
        let ((_a_vs, a), (_b_vs, b)) = (layer(), layer());
        let upstream = Tensor::randn([9, 70], (Kind::Float, Device::Cpu));
        // The reference: libtorch's batch norm, ReLU and the same dropout draws, through autograd.
        let reference = a.finish(a.linear.forward(&x, None, true), true);
        (&reference * &upstream).sum(Kind::Float).backward();
        a.linear.add_weight_grad();
        let out = b
            .counts_block(&x, None)
            .expect("a counts layer on the CPU qualifies");
        close(&out, &reference, "values");
        (&out * &upstream).sum(Kind::Float).backward();
        Hidden::add_sparse_grads(std::slice::from_ref(&b));
        let params = |h: &Hidden| {
            let (Affine::Counts { weight, bias, .. }, Some(norm)) = (&h.linear, &h.norm) else {
                panic!("a counts layer with batch norm");
            };
            [
                weight.grad(),
                bias.grad(),
                norm.ws.as_ref().expect("scale").grad(),
                norm.bs.as_ref().expect("shift").grad(),
                norm.running_mean.shallow_clone(),
                norm.running_var.shallow_clone(),
            ]
        };
        let names = [
            "weight gradient",
            "bias gradient",
            "scale gradient",
            "shift gradient",
            "running mean",
            "running variance",
        ];
        for ((got, want), name) in params(&b).iter().zip(params(&a).iter()).zip(names) {
            let diff = (got - want).abs().max().double_value(&[]);
            // The bias gradient is zero under batch norm up to rounding (of order 1e-6 here).
            let floor = if name == "bias gradient" { 0.1 } else { 1e-3 };
            let scale = want.abs().max().double_value(&[]).max(floor);
            assert!(diff <= 1e-4 * scale, "{name}: {diff} (scale {scale})");
        }
        // Evaluation and single rows go through libtorch.
        assert!(b.counts_block(&x.narrow(0, 0, 1), None).is_none());
    }
}
