//! Convergence summaries of a per-epoch loss history.
//!
//! A history is a `&[f64]` whose entry `i` is the loss after epoch `i + 1`:
//! epochs are 1-based everywhere in this module, matching how training logs and
//! figures number them. "Converged" is measured against the final loss, so the
//! summary answers "how many epochs did it take to get within 5 % (1 %) of
//! where training ended up".

use crate::error::{Error, Result};

/// Convergence summary of a loss history (epochs are 1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct Convergence {
    /// The last loss of the history.
    pub final_loss: f64,
    /// First epoch whose loss is within 5 % of the final loss, see [`first_epoch_within`].
    pub epoch_within_5pct: usize,
    /// First epoch whose loss is within 1 % of the final loss, see [`first_epoch_within`].
    pub epoch_within_1pct: usize,
    /// `(epoch, loss)` for each requested checkpoint epoch that the history reaches,
    /// in the order the checkpoints were given.
    pub loss_at: Vec<(usize, f64)>,
}

/// First epoch `e` (1-based) whose loss satisfies `|loss_e - final| <= frac * |final|`,
/// where `final` is the last entry of `losses`.
///
/// This is the *first* entry into the band, not the epoch after which the
/// curve stays inside it: a noisy curve that dips into the band early and
/// leaves it again reports the early dip.
///
/// Returns `None` for an empty history, a negative `frac`, or when no epoch
/// qualifies (which, for a finite final loss and `frac >= 0`, cannot happen:
/// the last epoch always qualifies). NaN losses never qualify.
pub fn first_epoch_within(losses: &[f64], frac: f64) -> Option<usize> {
    let last = *losses.last()?;
    let tol = frac * last.abs();
    losses
        .iter()
        .position(|&l| (l - last).abs() <= tol)
        .map(|i| i + 1)
}

/// Summarises a loss history: final loss, first epochs within 5 % and 1 % of
/// it, and the loss at each checkpoint epoch (1-based) that is `<= losses.len()`;
/// checkpoints past the end of the history are skipped.
///
/// # Errors
/// [`Error::EmptyHistory`] for an empty history, [`Error::NonFiniteLoss`] if any
/// loss is NaN or infinite (a diverged run has no meaningful convergence
/// epoch), [`Error::ZeroCheckpoint`] if a checkpoint is 0.
pub fn convergence(losses: &[f64], checkpoints: &[usize]) -> Result<Convergence> {
    let &final_loss = losses.last().ok_or(Error::EmptyHistory)?;
    if let Some((i, &value)) = losses.iter().enumerate().find(|(_, l)| !l.is_finite()) {
        return Err(Error::NonFiniteLoss {
            epoch: i + 1,
            value,
        });
    }
    if checkpoints.contains(&0) {
        return Err(Error::ZeroCheckpoint);
    }
    // With all losses finite the last epoch always lies in the band, so the
    // fallback to `losses.len()` is never taken; it keeps this panic-free.
    let within = |frac| first_epoch_within(losses, frac).unwrap_or(losses.len());
    Ok(Convergence {
        final_loss,
        epoch_within_5pct: within(0.05),
        epoch_within_1pct: within(0.01),
        loss_at: checkpoints
            .iter()
            .filter_map(|&e| losses.get(e - 1).map(|&l| (e, l)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    // final = 1.0; 5 % band is [0.95, 1.05], 1 % band is [0.99, 1.01].
    // epoch:  1    2    3     4     5     6
    // loss:   4.0  2.0  1.04  1.02  1.005 1.0
    // |diff|: 3.0  1.0  0.04  0.02  0.005 0
    // first within 5 %: epoch 3; first within 1 %: epoch 5.
    const HISTORY: [f64; 6] = [4.0, 2.0, 1.04, 1.02, 1.005, 1.0];

    #[test]
    fn hand_computed_epochs() {
        assert_eq!(first_epoch_within(&HISTORY, 0.05), Some(3));
        assert_eq!(first_epoch_within(&HISTORY, 0.01), Some(5));
        assert_eq!(first_epoch_within(&HISTORY, 0.0), Some(6));
        assert_eq!(first_epoch_within(&HISTORY, 10.0), Some(1));
    }

    #[test]
    fn band_is_relative_to_absolute_final() {
        // Negative losses (e.g. a log-likelihood) use |final|: final -2, 5 % band is +-0.1.
        let h = [-1.0, -1.85, -1.95, -2.0];
        assert_eq!(first_epoch_within(&h, 0.05), Some(3));
    }

    #[test]
    fn first_epoch_within_edge_cases() {
        assert_eq!(first_epoch_within(&[], 0.05), None);
        assert_eq!(first_epoch_within(&[3.0], 0.05), Some(1));
        assert_eq!(first_epoch_within(&HISTORY, -0.1), None);
        assert_eq!(first_epoch_within(&[1.0, f64::NAN], 0.05), None);
    }

    #[test]
    fn summary_with_checkpoints() {
        let c = convergence(&HISTORY, &[1, 5, 6, 7, 100]).expect("valid history");
        assert_abs_diff_eq!(c.final_loss, 1.0, epsilon = 0.0);
        assert_eq!(c.epoch_within_5pct, 3);
        assert_eq!(c.epoch_within_1pct, 5);
        assert_eq!(c.loss_at.len(), 3, "checkpoints past epoch 6 are skipped");
        for ((e, l), (e_want, l_want)) in c.loss_at.iter().zip([(1, 4.0), (5, 1.005), (6, 1.0)]) {
            assert_eq!(*e, e_want);
            assert_abs_diff_eq!(*l, l_want, epsilon = 0.0);
        }
    }

    #[test]
    fn bad_histories_are_errors() {
        assert_eq!(convergence(&[], &[1]), Err(Error::EmptyHistory));
        let err = convergence(&[1.0, f64::INFINITY, 0.5], &[]);
        assert_eq!(
            err,
            Err(Error::NonFiniteLoss {
                epoch: 2,
                value: f64::INFINITY
            })
        );
        assert!(matches!(
            convergence(&[1.0, f64::NAN], &[]),
            Err(Error::NonFiniteLoss { epoch: 2, .. })
        ));
        assert_eq!(convergence(&HISTORY, &[0, 1]), Err(Error::ZeroCheckpoint));
    }
}
