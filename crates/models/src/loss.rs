//! Reconstruction losses of the autoencoder.
//!
//! `nonzero_mse` is the assignment's loss exactly as written there (a
//! TensorFlow snippet):
//!
//! ```text
//! mask = (y_true != 0)
//! nonzero_mse = sum((y_true - y_pred * mask)^2) / sum(mask)
//! ```
//!
//! Entries where `y_true == 0` contribute `(0 - 0)^2 = 0`, so the loss puts no
//! constraint at all on the reconstruction of zeros. A batch with no nonzero
//! entry has `0 / 0` in the original; here the count is clamped to 1 so such a
//! batch gives a loss of 0 and a zero gradient, never NaN.

use serde::{Deserialize, Serialize};
use tch::{Reduction, Tensor};

/// The reconstruction loss an autoencoder is trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconLoss {
    /// Mean squared error over every entry.
    #[default]
    Mse,
    /// Squared error over the entries where the target is nonzero, divided by their count.
    NonzeroMse,
}

impl ReconLoss {
    /// The loss of `pred` against `target` (a scalar tensor).
    pub fn compute(self, pred: &Tensor, target: &Tensor) -> Tensor {
        match self {
            Self::Mse => mse_loss(pred, target),
            Self::NonzeroMse => nonzero_mse_loss(pred, target),
        }
    }

    /// The name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mse => "mse",
            Self::NonzeroMse => "nonzero_mse",
        }
    }
}

/// `mean((target - pred)^2)` over every entry.
pub fn mse_loss(pred: &Tensor, target: &Tensor) -> Tensor {
    pred.mse_loss(target, Reduction::Mean)
}

/// `sum((target - pred * mask)^2) / max(sum(mask), 1)` with `mask = (target != 0)`.
pub fn nonzero_mse_loss(pred: &Tensor, target: &Tensor) -> Tensor {
    let mask = target.ne(0.0).to_kind(pred.kind());
    let count = mask.sum(pred.kind()).clamp_min(1.0);
    (target - pred * &mask).square().sum(pred.kind()) / count
}

#[cfg(test)]
mod tests {
    use approx::assert_abs_diff_eq;
    use tch::{Kind, Tensor};

    use super::*;

    fn t(rows: &[[f32; 3]]) -> Tensor {
        Tensor::from_slice(rows.as_flattened()).view([rows.len() as i64, 3])
    }

    fn value(x: &Tensor) -> f64 {
        x.double_value(&[])
    }

    #[test]
    fn nonzero_mse_matches_hand_computation() {
        // Three nonzero targets, worked out by hand:
        // row 0: target [1, 0, 2], pred [0.5, 9, 2.5] -> (1-0.5)^2 + 0 + (2-2.5)^2 = 0.5
        // row 1: target [0, 3, 0], pred [7, 1, -4]     -> (3-1)^2 = 4
        // sum 4.5 over 3 nonzero entries = 1.5
        let target = t(&[[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]);
        let pred = t(&[[0.5, 9.0, 2.5], [7.0, 1.0, -4.0]]);
        assert_abs_diff_eq!(
            value(&nonzero_mse_loss(&pred, &target)),
            1.5,
            epsilon = 1e-6
        );
        // plain MSE counts every entry: (0.25 + 81 + 0.25 + 49 + 4 + 16) / 6
        assert_abs_diff_eq!(
            value(&mse_loss(&pred, &target)),
            150.5 / 6.0,
            epsilon = 1e-5
        );
    }

    #[test]
    fn nonzero_mse_ignores_predictions_at_zeros() {
        let target = t(&[[0.0, 1.0, 0.0]]);
        let a = nonzero_mse_loss(&t(&[[5.0, 1.0, -5.0]]), &target);
        let b = nonzero_mse_loss(&t(&[[0.0, 1.0, 0.0]]), &target);
        assert_abs_diff_eq!(value(&a), 0.0, epsilon = 1e-7);
        assert_abs_diff_eq!(value(&b), 0.0, epsilon = 1e-7);
    }

    #[test]
    fn all_zero_batch_gives_zero_loss_and_zero_gradient() {
        let target = Tensor::zeros([4, 3], (Kind::Float, tch::Device::Cpu));
        let pred = Tensor::ones([4, 3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let loss = nonzero_mse_loss(&pred, &target);
        assert_eq!(value(&loss), 0.0);
        loss.backward();
        let grad = pred.grad();
        assert!(bool::try_from(grad.isfinite().all()).unwrap_or(false));
        assert_abs_diff_eq!(
            grad.abs().sum(Kind::Float).double_value(&[]),
            0.0,
            epsilon = 0.0
        );
    }

    #[test]
    fn gradient_of_nonzero_mse_is_hand_computed() {
        // d/dpred of (t - p)^2 / n over nonzero t: -2 (t - p) / n, 0 where t = 0
        let target = t(&[[2.0, 0.0, 4.0]]);
        let pred = t(&[[1.0, 3.0, 1.0]]).set_requires_grad(true);
        nonzero_mse_loss(&pred, &target).backward();
        let grad = Vec::<f32>::try_from(pred.grad().view([-1])).unwrap_or_default();
        assert_eq!(grad.len(), 3);
        for (g, want) in grad.iter().zip([-1.0f32, 0.0, -3.0]) {
            assert_abs_diff_eq!(*g, want, epsilon = 1e-6);
        }
    }
}
