//! Adam, as `torch.optim.Adam` computes it (L2 weight decay added to the gradient).
//!
//! On the CPU the update runs as one fused pass over each parameter's memory,
//! which also clears the gradient for the next step. libtorch's C++ Adam makes
//! about ten passes (and two temporaries) per parameter, a noticeable share of
//! a step for the small models this project trains. On other devices, or for
//! parameters that are not contiguous `f32`, libtorch's Adam is used.
//!
//! For each parameter `p` with gradient `g`, at step `t` (1-based):
//!
//! ```text
//! g  = g + weight_decay * p
//! m  = beta1 * m + (1 - beta1) * g
//! v  = beta2 * v + (1 - beta2) * g^2
//! p  = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```

use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::Result;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
/// PyTorch's default `eps`.
pub const DEFAULT_EPS: f64 = 1e-8;

/// Adam over every trainable variable of a `VarStore`.
#[derive(Debug)]
pub enum Adam {
    /// The fused CPU update of this module.
    Fused(FusedAdam),
    /// libtorch's `torch::optim::Adam`.
    Torch(nn::Optimizer),
}

impl Adam {
    /// The fused CPU path when every variable allows it, else libtorch's.
    pub fn new(vs: &nn::VarStore, learning_rate: f64, weight_decay: f64) -> Result<Self> {
        Self::with_eps(vs, learning_rate, weight_decay, DEFAULT_EPS)
    }

    /// [`Adam::new`] with the denominator's `eps` (scvi-tools uses 0.01).
    pub fn with_eps(
        vs: &nn::VarStore,
        learning_rate: f64,
        weight_decay: f64,
        eps: f64,
    ) -> Result<Self> {
        let params = vs.trainable_variables();
        let fusable = params
            .iter()
            .all(|p| p.device() == Device::Cpu && p.kind() == Kind::Float && p.is_contiguous());
        if fusable {
            Ok(Self::Fused(FusedAdam::new(
                params,
                learning_rate,
                weight_decay,
                eps,
            )))
        } else {
            let opt = nn::Adam {
                beta1: BETA1,
                beta2: BETA2,
                wd: weight_decay,
                eps,
                amsgrad: false,
            }
            .build(vs, learning_rate)?;
            Ok(Self::Torch(opt))
        }
    }

    /// Back-propagates `loss`, runs `complete` (which adds the gradients autograd does not
    /// compute, see [`crate::Model::add_sparse_grads`]) and updates every parameter; gradients
    /// start from zero. With `clip`, the gradients are first rescaled so that their global L2
    /// norm is at most `clip` (as `torch.nn.utils.clip_grad_norm_` does, without reading the
    /// norm back to the host).
    pub fn backward_step(&mut self, loss: &Tensor, clip: Option<f64>, complete: impl FnOnce()) {
        self.step_from(Some(loss), clip, complete);
    }

    /// [`Adam::backward_step`] where `loss` may be absent (a data-parallel rank with no rows in
    /// a step: its gradients stay zero until `complete` adds the other ranks').
    pub fn step_from(&mut self, loss: Option<&Tensor>, clip: Option<f64>, complete: impl FnOnce()) {
        match self {
            Self::Fused(adam) => {
                if let Some(loss) = loss {
                    loss.backward();
                }
                complete();
                if let Some(max) = clip {
                    clip_grad_norm(&adam.params, max);
                }
                adam.step();
            }
            Self::Torch(opt) => {
                opt.zero_grad();
                if let Some(loss) = loss {
                    loss.backward();
                }
                complete();
                if let Some(max) = clip {
                    opt.clip_grad_norm(max);
                }
                opt.step();
            }
        }
    }
}

/// Scales the gradients of `params` by `min(1, max / (norm + 1e-6))`, `norm` their global L2 norm.
fn clip_grad_norm(params: &[Tensor], max: f64) {
    let _guard = tch::no_grad_guard();
    let grads: Vec<Tensor> = params
        .iter()
        .map(Tensor::grad)
        .filter(Tensor::defined)
        .collect();
    if grads.is_empty() {
        return;
    }
    let squares: Vec<Tensor> = grads
        .iter()
        .map(|g| g.square().sum(Kind::Float).reshape([1]))
        .collect();
    let norm = Tensor::cat(&squares, 0).sum(Kind::Float).sqrt();
    let scale = ((norm + 1e-6).reciprocal() * max).clamp_max(1.0);
    for mut g in grads {
        let _ = g.g_mul_(&scale);
    }
}

/// Adam state for contiguous `f32` parameters on the CPU.
#[derive(Debug)]
pub struct FusedAdam {
    params: Vec<Tensor>,
    exp_avg: Vec<Vec<f32>>,
    exp_avg_sq: Vec<Vec<f32>>,
    lr: f64,
    weight_decay: f64,
    eps: f64,
    step: i32,
}

impl FusedAdam {
    fn new(params: Vec<Tensor>, lr: f64, weight_decay: f64, eps: f64) -> Self {
        let zeros = |p: &Tensor| vec![0.0f32; p.numel()];
        Self {
            exp_avg: params.iter().map(zeros).collect(),
            exp_avg_sq: params.iter().map(zeros).collect(),
            params,
            lr,
            weight_decay,
            eps,
            step: 0,
        }
    }

    /// One update from the accumulated gradients, which are then set to zero.
    fn step(&mut self) {
        self.step += 1;
        let bias1 = 1.0 - BETA1.powi(self.step);
        let bias2 = 1.0 - BETA2.powi(self.step);
        let coef = Coefficients {
            step_size: (self.lr / bias1) as f32,
            inv_sqrt_bias2: (1.0 / bias2.sqrt()) as f32,
            weight_decay: self.weight_decay as f32,
            eps: self.eps as f32,
        };
        // Every parameter's blocks in one parallel region: one fork and join per step, and
        // small blocks that balance the threads (a parameter split on its own left one thread
        // idle for a third of its update).
        let mut grads: Vec<Tensor> = self.params.iter().map(Tensor::grad).collect();
        let mut blocks = Vec::new();
        for (((p, grad), m), v) in self
            .params
            .iter_mut()
            .zip(&mut grads)
            .zip(&mut self.exp_avg)
            .zip(&mut self.exp_avg_sq)
        {
            if !grad.defined() {
                continue;
            }
            assert!(
                grad.numel() == m.len(),
                "the fused Adam updates gradients of its parameters' shape"
            );
            let (param, grad) = cpu_f32_slices(p, grad);
            blocks.extend(
                param
                    .chunks_mut(BLOCK)
                    .zip(grad.chunks_mut(BLOCK))
                    .zip(m.chunks_mut(BLOCK))
                    .zip(v.chunks_mut(BLOCK)),
            );
        }
        scae_par::for_each(blocks, |(((p, g), m), v)| coef.update(p, g, m, v));
    }
}

/// Values per block of the parallel update.
const BLOCK: usize = 1 << 14;

#[derive(Debug, Clone, Copy)]
struct Coefficients {
    step_size: f32,
    inv_sqrt_bias2: f32,
    weight_decay: f32,
    eps: f32,
}

impl Coefficients {
    /// The Adam update of a block of a parameter, in one pass; clears the gradient.
    fn update(self, param: &mut [f32], grad: &mut [f32], m: &mut [f32], v: &mut [f32]) {
        let (b1, b2, eps) = (BETA1 as f32, BETA2 as f32, self.eps);
        for (((p, g), m), v) in param.iter_mut().zip(grad.iter_mut()).zip(m).zip(v) {
            let gi = *g + self.weight_decay * *p;
            *m = b1 * *m + (1.0 - b1) * gi;
            *v = b2 * *v + (1.0 - b2) * gi * gi;
            *p -= self.step_size * *m / (v.sqrt() * self.inv_sqrt_bias2 + eps);
            *g = 0.0;
        }
    }
}

/// The memory of a parameter and of its gradient, as slices.
///
/// Both must be contiguous `f32` CPU tensors of equal length (checked). They are distinct
/// allocations (a gradient never aliases its parameter), and nothing else reads or writes either
/// while the slices live: they borrow both handles exclusively for one optimiser step, no other
/// handle of the optimiser's touches that memory meanwhile, and autograd is idle between
/// `backward` and the next forward pass.
#[allow(unsafe_code)]
fn cpu_f32_slices<'a>(
    param: &'a mut Tensor,
    grad: &'a mut Tensor,
) -> (&'a mut [f32], &'a mut [f32]) {
    let n = param.numel();
    assert_eq!(grad.numel(), n, "a gradient has its parameter's shape");
    for t in [&*param, &*grad] {
        assert!(
            t.is_contiguous() && t.kind() == Kind::Float && t.device() == Device::Cpu,
            "the fused Adam works on contiguous CPU f32 tensors"
        );
    }
    if n == 0 {
        return (&mut [], &mut []);
    }
    // SAFETY: see the function's documentation; both pointers address `n` f32 values, and the
    // slices live no longer than the borrows of the tensors that own the memory.
    unsafe {
        (
            std::slice::from_raw_parts_mut(param.data_ptr().cast::<f32>(), n),
            std::slice::from_raw_parts_mut(grad.data_ptr().cast::<f32>(), n),
        )
    }
}

#[cfg(test)]
mod tests {
    use tch::nn::Module;

    use super::*;

    /// Trains the same tiny model with the fused update and with libtorch's Adam.
    fn train(fused: bool, weight_decay: f64) -> Vec<f32> {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let layer = nn::linear(vs.root() / "l", 6, 4, Default::default());
        let x = Tensor::randn([32, 6], (Kind::Float, Device::Cpu));
        let y = Tensor::randn([32, 4], (Kind::Float, Device::Cpu));
        let mut opt = if fused {
            Adam::new(&vs, 1e-2, weight_decay).expect("adam")
        } else {
            Adam::Torch(
                nn::Adam {
                    beta1: BETA1,
                    beta2: BETA2,
                    wd: weight_decay,
                    eps: DEFAULT_EPS,
                    amsgrad: false,
                }
                .build(&vs, 1e-2)
                .expect("adam"),
            )
        };
        assert_eq!(matches!(opt, Adam::Fused(_)), fused);
        for _ in 0..25 {
            let loss = layer.forward(&x).mse_loss(&y, tch::Reduction::Mean);
            opt.backward_step(&loss, None, || {});
        }
        Vec::<f32>::try_from(layer.ws.flatten(0, -1)).expect("weights")
    }

    #[test]
    fn fused_adam_matches_libtorch_adam() {
        let _rng = crate::torch_rng_lock();
        for wd in [0.0, 0.05] {
            let a = train(true, wd);
            let b = train(false, wd);
            for (x, y) in a.iter().zip(&b) {
                approx::assert_abs_diff_eq!(x, y, epsilon = 1e-5);
            }
        }
    }
}

#[cfg(test)]
mod clip_tests {
    use super::*;

    #[test]
    fn clipping_caps_the_global_gradient_norm() {
        let _rng = crate::torch_rng_lock();
        let a = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let b = Tensor::ones([4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        // gradients 3 * ones(3) and 4 * ones(4): norm sqrt(27 + 64) = sqrt(91)
        (a.sum(Kind::Float) * 3.0 + b.sum(Kind::Float) * 4.0).backward();
        clip_grad_norm(&[a.shallow_clone(), b.shallow_clone()], 1.0);
        let norm = (a.grad().square().sum(Kind::Float) + b.grad().square().sum(Kind::Float))
            .sqrt()
            .double_value(&[]);
        approx::assert_relative_eq!(norm, 1.0, max_relative = 1e-5);
        // a norm below the bound is left alone
        clip_grad_norm(&[a.shallow_clone(), b.shallow_clone()], 10.0);
        approx::assert_relative_eq!(
            a.grad().double_value(&[0]),
            3.0 / 91f64.sqrt(),
            max_relative = 1e-5
        );
    }
}
