//! The symmetric fully connected autoencoder of the assignment.
//!
//! Encoder `input -> hidden.. -> latent`, decoder the mirror image
//! (`latent -> hidden reversed.. -> input`). ReLU follows every hidden layer;
//! the input, latent and output layers have no activation (the assignment's
//! hints). Weights and biases are initialised as PyTorch's `nn.Linear` does,
//! uniform in `±1/sqrt(fan_in)` (tch's own default, Kaiming with a ReLU gain,
//! starts `sqrt(6)` times wider and ends training at a measurably worse loss).

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn, nn::Module};

use crate::train::{Losses, Model, TensorBatch};
use crate::{Error, ReconLoss, Result};

/// Shape and loss of an autoencoder (the `[model]` table of a study config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AeConfig {
    /// Widths of the encoder's hidden layers, input side first; the decoder mirrors them.
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
    /// Size of the latent code.
    pub latent: usize,
    /// Reconstruction loss.
    #[serde(default)]
    pub loss: ReconLoss,
}

fn default_hidden() -> Vec<usize> {
    vec![100]
}

impl AeConfig {
    /// The assignment's default shape (`genes -> 100 -> latent`) with MSE.
    pub fn with_latent(latent: usize) -> Self {
        Self {
            hidden: default_hidden(),
            latent,
            loss: ReconLoss::Mse,
        }
    }

    /// Checks every width is positive.
    pub fn validate(&self) -> Result<()> {
        if self.latent == 0 {
            return Err(Error::Config("model.latent must be at least 1".into()));
        }
        if let Some(i) = self.hidden.iter().position(|&w| w == 0) {
            return Err(Error::Config(format!(
                "model.hidden[{i}] is 0: every width must be at least 1"
            )));
        }
        Ok(())
    }

    /// Layer widths of the encoder, from the input to the latent code.
    pub fn encoder_widths(&self, input_dim: usize) -> Vec<usize> {
        std::iter::once(input_dim)
            .chain(self.hidden.iter().copied())
            .chain([self.latent])
            .collect()
    }
}

/// An MSE (or masked-MSE) autoencoder.
#[derive(Debug)]
pub struct Autoencoder {
    encoder: Vec<nn::Linear>,
    decoder: Vec<nn::Linear>,
    loss: ReconLoss,
    input_dim: usize,
}

impl Autoencoder {
    /// Builds the layers under `p / "encoder"` and `p / "decoder"`.
    pub fn new(p: &nn::Path<'_>, input_dim: usize, cfg: &AeConfig) -> Result<Self> {
        cfg.validate()?;
        if input_dim == 0 {
            return Err(Error::Config("the input has no genes".into()));
        }
        let widths = cfg.encoder_widths(input_dim);
        let mirrored: Vec<usize> = widths.iter().rev().copied().collect();
        Ok(Self {
            encoder: layers(&(p / "encoder"), &widths),
            decoder: layers(&(p / "decoder"), &mirrored),
            loss: cfg.loss,
            input_dim,
        })
    }

    /// The latent code of each row of `x`.
    pub fn encode(&self, x: &Tensor) -> Tensor {
        forward(&self.encoder, x)
    }

    /// The reconstruction of each latent code.
    pub fn decode(&self, z: &Tensor) -> Tensor {
        forward(&self.decoder, z)
    }

    /// `decode(encode(x))`.
    pub fn reconstruct(&self, x: &Tensor) -> Tensor {
        self.decode(&self.encode(x))
    }
}

impl Model for Autoencoder {
    fn name(&self) -> &'static str {
        "autoencoder"
    }

    fn input_genes(&self) -> usize {
        self.input_dim
    }

    fn losses(&self, batch: &TensorBatch, _train: bool) -> Result<Losses> {
        let x = &batch.x;
        Ok(Losses::total(self.loss.compute(&self.reconstruct(x), x)))
    }
}

/// One `Linear` per consecutive pair of widths, named `0`, `1`, ...
fn layers(p: &nn::Path<'_>, widths: &[usize]) -> Vec<nn::Linear> {
    widths
        .windows(2)
        .enumerate()
        .map(|(i, w)| nn::linear(p / i, w[0] as i64, w[1] as i64, torch_linear_init(w[0])))
        .collect()
}

/// PyTorch's `nn.Linear` initialisation: weights and biases uniform in `±1/sqrt(fan_in)`.
pub(crate) fn torch_linear_init(fan_in: usize) -> nn::LinearConfig {
    let bound = 1.0 / (fan_in as f64).sqrt();
    let uniform = nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    nn::LinearConfig {
        ws_init: uniform,
        bs_init: Some(uniform),
        bias: true,
    }
}

/// Applies the layers with ReLU between them and none after the last.
fn forward(layers: &[nn::Linear], x: &Tensor) -> Tensor {
    let last = layers.len().saturating_sub(1);
    layers
        .iter()
        .enumerate()
        .fold(x.shallow_clone(), |h, (i, layer)| {
            let h = layer.forward(&h);
            if i < last { h.relu() } else { h }
        })
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, nn::VarStore};

    use super::*;

    #[test]
    fn shapes_follow_the_config() {
        let _rng = crate::torch_rng_lock();
        let vs = VarStore::new(Device::Cpu);
        let cfg = AeConfig {
            hidden: vec![64, 32],
            latent: 5,
            loss: ReconLoss::Mse,
        };
        let ae = Autoencoder::new(&vs.root(), 100, &cfg).expect("valid config");
        let x = Tensor::randn([7, 100], (Kind::Float, Device::Cpu));
        assert_eq!(ae.encode(&x).size(), [7, 5]);
        assert_eq!(ae.reconstruct(&x).size(), [7, 100]);
        // 100*64+64 + 64*32+32 + 32*5+5, mirrored
        let n: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        assert_eq!(
            n,
            2 * (100 * 64 + 32 * 64 + 5 * 32) + (64 + 32 + 5) + (32 + 64 + 100)
        );
    }

    #[test]
    fn latent_and_output_have_no_activation() {
        let _rng = crate::torch_rng_lock();
        // With ReLU on the latent or output layer, no value could be negative.
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let ae = Autoencoder::new(&vs.root(), 20, &AeConfig::with_latent(4)).expect("valid");
        let x = Tensor::randn([256, 20], (Kind::Float, Device::Cpu));
        assert!(ae.encode(&x).min().double_value(&[]) < 0.0);
        assert!(ae.reconstruct(&x).min().double_value(&[]) < 0.0);
    }

    #[test]
    fn initialisation_matches_pytorch_bounds() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let _ae = Autoencoder::new(&vs.root(), 400, &AeConfig::with_latent(8)).expect("valid");
        for (name, t) in vs.variables() {
            let fan_in = *t.size().last().unwrap_or(&1) as f64;
            let fan_in = if name.ends_with("bias") {
                // a bias's bound is set by its layer's weight
                vs.variables()[&name.replace("bias", "weight")].size()[1] as f64
            } else {
                fan_in
            };
            let bound = 1.0 / fan_in.sqrt();
            let max = t.abs().max().double_value(&[]);
            assert!(max <= bound + 1e-7, "{name}: {max} > {bound}");
            assert!(max > 0.5 * bound, "{name}: {max} is far inside {bound}");
        }
    }

    #[test]
    fn zero_width_is_rejected() {
        let _rng = crate::torch_rng_lock();
        let vs = VarStore::new(Device::Cpu);
        let bad = AeConfig {
            hidden: vec![10, 0],
            latent: 2,
            loss: ReconLoss::Mse,
        };
        assert!(matches!(
            Autoencoder::new(&vs.root(), 5, &bad),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Autoencoder::new(&vs.root(), 5, &AeConfig::with_latent(0)),
            Err(Error::Config(_))
        ));
    }
}
