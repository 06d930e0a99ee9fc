//! The hidden layers the VAE and the GMVAE build on: linear (or, for raw counts on the CPU, a
//! sparse `embedding_bag` over the nonzero counts), optional batch norm, ReLU, optional dropout.

use tch::{Kind, Tensor, nn, nn::Module, nn::ModuleT};
use wide::CmpEq;

use crate::autoencoder::torch_linear_init;

/// The linear map of a hidden layer.
#[derive(Debug)]
pub(crate) enum Affine {
    Dense(nn::Linear),
    /// The encoder's first layer, `log1p(counts) W + b` with `W` stored `[genes, width]`: on the
    /// CPU it runs over the nonzero counts only, as an `embedding_bag` sum weighted by
    /// `log1p(count)` (single-cell counts are 90-99 % zeros), forward and backward.
    Counts {
        weight: Tensor,
        bias: Tensor,
    },
}

impl Affine {
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Self::Dense(linear) => linear.forward(x),
            Self::Counts { weight, bias } => {
                if x.device() != tch::Device::Cpu || x.dim() != 2 {
                    return x.log1p().matmul(weight) + bias;
                }
                let bags = NonzeroBags::of(x);
                let (gene, offsets, values) = (
                    Tensor::from_slice(&bags.genes),
                    Tensor::from_slice(&bags.offsets),
                    Tensor::from_slice(&bags.weights),
                );
                let (sum, ..) = Tensor::embedding_bag(
                    weight,
                    &gene,
                    &offsets,
                    false,
                    0,
                    false,
                    Some(&values),
                    false,
                );
                sum + bias
            }
        }
    }
}

/// The nonzero entries of a count matrix, row by row, as `embedding_bag` takes them: the column
/// of each, where each row starts, and `log1p` of each count.
#[derive(Debug, Default)]
struct NonzeroBags {
    genes: Vec<i64>,
    offsets: Vec<i64>,
    weights: Vec<f32>,
}

impl NonzeroBags {
    /// Of a 2-D CPU `f32` matrix, scanned eight entries at a time (most are zero).
    fn of(x: &Tensor) -> Self {
        let x = x.detach().to_kind(Kind::Float).contiguous();
        let [rows, cols] = x.size()[..] else {
            return Self::default();
        };
        let (rows, cols) = (rows as usize, cols as usize);
        let mut bags = Self {
            offsets: Vec::with_capacity(rows),
            ..Self::default()
        };
        with_host_f32(&x, |values| {
            for row in values.chunks_exact(cols.max(1)).take(rows) {
                bags.offsets.push(bags.genes.len() as i64);
                let mut push = |j: usize, v: f32| {
                    bags.genes.push(j as i64);
                    bags.weights.push(v.ln_1p());
                };
                let mut chunks = row.chunks_exact(8);
                for (c, chunk) in chunks.by_ref().enumerate() {
                    let mut lanes = [0.0f32; 8];
                    lanes.copy_from_slice(chunk);
                    let mut nonzero = !wide::f32x8::new(lanes)
                        .cmp_eq(wide::f32x8::ZERO)
                        .move_mask()
                        & 0xff;
                    while nonzero != 0 {
                        let k = nonzero.trailing_zeros() as usize;
                        nonzero &= nonzero - 1;
                        push(c * 8 + k, chunk[k]);
                    }
                }
                let tail = cols - chunks.remainder().len();
                for (k, &v) in chunks.remainder().iter().enumerate() {
                    if v != 0.0 {
                        push(tail + k, v);
                    }
                }
            }
        });
        bags
    }
}

/// Runs `f` on the memory of a contiguous CPU `f32` tensor.
#[allow(unsafe_code)]
fn with_host_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> R {
    assert!(t.is_contiguous() && t.kind() == Kind::Float && t.device() == tch::Device::Cpu);
    let n = t.numel();
    if n == 0 {
        return f(&[]);
    }
    // SAFETY: `t` is a contiguous CPU f32 tensor (checked above), so `data_ptr` addresses `n`
    // f32 values; `t` is borrowed for the whole call and nothing writes to it meanwhile.
    f(unsafe { std::slice::from_raw_parts(t.data_ptr().cast::<f32>(), n) })
}

/// A hidden layer: linear, optional batch norm, ReLU, optional dropout.
#[derive(Debug)]
pub(crate) struct Hidden {
    linear: Affine,
    norm: Option<nn::BatchNorm>,
    dropout: f64,
}

impl Hidden {
    /// Layers between consecutive `widths`; with `counts_input`, the first reads raw counts
    /// (see [`Affine::Counts`]).
    pub(crate) fn stack(
        p: &nn::Path<'_>,
        widths: &[usize],
        batch_norm: bool,
        dropout: f64,
        counts_input: bool,
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
                    }
                } else {
                    Affine::Dense(nn::linear(
                        &p / "linear",
                        w[0] as i64,
                        w[1] as i64,
                        torch_linear_init(w[0]),
                    ))
                };
                Self {
                    linear,
                    // scVI's settings: momentum 0.01, eps 0.001.
                    norm: batch_norm.then(|| {
                        nn::batch_norm1d(
                            &p / "norm",
                            w[1] as i64,
                            nn::BatchNormConfig {
                                momentum: 0.01,
                                eps: 1e-3,
                                ..Default::default()
                            },
                        )
                    }),
                    dropout,
                }
            })
            .collect()
    }

    pub(crate) fn forward(layers: &[Self], x: &Tensor, train: bool) -> Tensor {
        layers.iter().fold(x.shallow_clone(), |h, layer| {
            layer.finish(layer.linear.forward(&h), train)
        })
    }

    /// [`Hidden::forward`] with `offset` (`[k, 1, width]`) added to the first layer's linear
    /// output (`[rows, width]`): `k` stacked copies, `[k * rows, ..]` out. The GMVAE's
    /// `q(z | x, y)` adds each component's embedding this way, so the wide first layer runs once.
    pub(crate) fn forward_offset(
        layers: &[Self],
        x: &Tensor,
        offset: &Tensor,
        train: bool,
    ) -> Tensor {
        let Some((first, rest)) = layers.split_first() else {
            return x.shallow_clone();
        };
        let h = first.linear.forward(x).unsqueeze(0) + offset;
        let width = h.size()[2];
        let h = first.finish(h.reshape([-1, width]), train);
        Self::forward(rest, &h, train)
    }

    /// Batch norm, ReLU and dropout after the linear map.
    fn finish(&self, mut h: Tensor, train: bool) -> Tensor {
        if let Some(norm) = &self.norm {
            h = norm.forward_t(&h, train);
        }
        let h = h.relu();
        if self.dropout > 0.0 {
            h.dropout(self.dropout, train)
        } else {
            h
        }
    }
}
