//! Reconstruction error of a predicted count matrix against the truth.
//!
//! Single-cell matrices are mostly zeros, so the overall MSE is dominated by
//! how well a model predicts dropouts. [`reconstruction_error`] therefore also
//! reports the MSE restricted to entries where the truth is non-zero and where
//! it is zero. Squared differences are computed and summed in `f64`.

use ndarray::{ArrayView2, Zip};

use crate::error::{Error, Result};

/// Mean squared errors of a reconstruction, overall and split by the truth.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ReconstructionError {
    /// MSE over all entries.
    pub all: f64,
    /// MSE over entries where the truth is non-zero; `0.0` when there are none.
    pub nonzero: f64,
    /// MSE over entries where the truth is zero; `0.0` when there are none.
    pub zero: f64,
    /// Number of entries where the truth is non-zero.
    pub n_nonzero: usize,
    /// Number of entries where the truth is zero.
    pub n_zero: usize,
}

/// Checks that both matrices have the same, non-empty shape.
fn check_shapes(truth: &ArrayView2<'_, f32>, pred: &ArrayView2<'_, f32>) -> Result<()> {
    if truth.dim() != pred.dim() {
        return Err(Error::ShapeMismatch {
            truth: truth.dim(),
            pred: pred.dim(),
        });
    }
    if truth.is_empty() {
        return Err(Error::Empty);
    }
    Ok(())
}

/// `sum / n`, or `0.0` when `n == 0` (so an empty part never yields NaN).
fn mean_or_zero(sum: f64, n: usize) -> f64 {
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Mean squared error `sum((pred - truth)^2) / n` over all entries, split into
/// entries where `truth != 0` and where `truth == 0`.
///
/// The split is NaN-free by construction: a part with no entries (say, a
/// matrix with no zeros) reports an MSE of `0.0` and a count of `0`; check the
/// count before reading the MSE. A NaN in `truth` counts as non-zero; NaN or
/// infinite values propagate into the MSEs they fall in.
///
/// # Errors
/// [`Error::ShapeMismatch`] if the shapes differ, [`Error::Empty`] if the
/// matrices have no entries.
pub fn reconstruction_error(
    truth: ArrayView2<'_, f32>,
    pred: ArrayView2<'_, f32>,
) -> Result<ReconstructionError> {
    check_shapes(&truth, &pred)?;
    let (mut sum_nonzero, mut sum_zero) = (0.0_f64, 0.0_f64);
    let (mut n_nonzero, mut n_zero) = (0_usize, 0_usize);
    Zip::from(&truth).and(&pred).for_each(|&t, &p| {
        let d = f64::from(p) - f64::from(t);
        if t == 0.0 {
            sum_zero += d * d;
            n_zero += 1;
        } else {
            sum_nonzero += d * d;
            n_nonzero += 1;
        }
    });
    Ok(ReconstructionError {
        all: mean_or_zero(sum_nonzero + sum_zero, n_nonzero + n_zero),
        nonzero: mean_or_zero(sum_nonzero, n_nonzero),
        zero: mean_or_zero(sum_zero, n_zero),
        n_nonzero,
        n_zero,
    })
}

/// Mean squared error `sum((pred - truth)^2) / n` over all entries, in `f64`.
///
/// # Errors
/// [`Error::ShapeMismatch`] if the shapes differ, [`Error::Empty`] if the
/// matrices have no entries.
pub fn mse(truth: ArrayView2<'_, f32>, pred: ArrayView2<'_, f32>) -> Result<f64> {
    check_shapes(&truth, &pred)?;
    let mut sum = 0.0_f64;
    Zip::from(&truth).and(&pred).for_each(|&t, &p| {
        let d = f64::from(p) - f64::from(t);
        sum += d * d;
    });
    Ok(sum / truth.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::{Array2, array};

    // truth = [[0, 2, 0],      pred = [[1, 2, 0.5],
    //          [3, 0, 1]]              [1, 0, 4  ]]
    // squared differences:     [[1, 0, 0.25],
    //                           [4, 0, 9   ]]
    // non-zero truth at (0,1),(1,0),(1,2): 0 + 4 + 9 = 13 over 3 -> 13/3
    // zero truth at (0,0),(0,2),(1,1):     1 + 0.25 + 0 = 1.25 over 3 -> 1.25/3
    // all: 14.25 / 6 = 2.375
    fn example() -> (Array2<f32>, Array2<f32>) {
        (
            array![[0.0, 2.0, 0.0], [3.0, 0.0, 1.0]],
            array![[1.0, 2.0, 0.5], [1.0, 0.0, 4.0]],
        )
    }

    #[test]
    fn hand_computed_split() {
        let (t, p) = example();
        let r = reconstruction_error(t.view(), p.view()).expect("same shapes");
        assert_abs_diff_eq!(r.all, 2.375, epsilon = 1e-12);
        assert_abs_diff_eq!(r.nonzero, 13.0 / 3.0, epsilon = 1e-12);
        assert_abs_diff_eq!(r.zero, 1.25 / 3.0, epsilon = 1e-12);
        assert_eq!((r.n_nonzero, r.n_zero), (3, 3));
    }

    #[test]
    fn mse_matches_all() {
        let (t, p) = example();
        assert_abs_diff_eq!(
            mse(t.view(), p.view()).expect("same shapes"),
            2.375,
            epsilon = 1e-12
        );
    }

    #[test]
    fn non_contiguous_views_are_fine() {
        // Transposed views walk memory in a different order; the result must not change.
        let (t, p) = example();
        let r = reconstruction_error(t.t(), p.t()).expect("same shapes");
        assert_abs_diff_eq!(r.all, 2.375, epsilon = 1e-12);
        assert_eq!((r.n_nonzero, r.n_zero), (3, 3));
    }

    #[test]
    fn empty_part_reports_zero_not_nan() {
        // No zeros in truth: diffs 1 and 2 -> nonzero MSE (1 + 4) / 2 = 2.5.
        let t = array![[1.0_f32, 2.0]];
        let p = array![[2.0_f32, 4.0]];
        let r = reconstruction_error(t.view(), p.view()).expect("same shapes");
        assert_abs_diff_eq!(r.nonzero, 2.5, epsilon = 1e-12);
        assert_abs_diff_eq!(r.all, 2.5, epsilon = 1e-12);
        assert_eq!(r.n_zero, 0);
        assert_abs_diff_eq!(r.zero, 0.0, epsilon = 0.0);

        // All zeros in truth: the non-zero part is the empty one.
        let t = Array2::<f32>::zeros((2, 2));
        let p = array![[1.0_f32, 0.0], [0.0, 1.0]];
        let r = reconstruction_error(t.view(), p.view()).expect("same shapes");
        assert_eq!(r.n_nonzero, 0);
        assert_abs_diff_eq!(r.nonzero, 0.0, epsilon = 0.0);
        assert_abs_diff_eq!(r.zero, 0.5, epsilon = 1e-12);
    }

    #[test]
    fn accumulates_in_f64() {
        // 1e4 entries each off by 1e-4: in f64 the MSE is 1e-8 to ~1e-12 relative.
        let t = Array2::<f32>::from_elem((100, 100), 1.0);
        let p = Array2::<f32>::from_elem((100, 100), 1.0 + 1e-4);
        let d = f64::from(1.0_f32 + 1e-4) - 1.0;
        assert_abs_diff_eq!(
            mse(t.view(), p.view()).expect("same shapes"),
            d * d,
            epsilon = 1e-20
        );
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let t = Array2::<f32>::zeros((2, 3));
        let p = Array2::<f32>::zeros((3, 2));
        let expected = Error::ShapeMismatch {
            truth: (2, 3),
            pred: (3, 2),
        };
        assert_eq!(
            reconstruction_error(t.view(), p.view()),
            Err(expected.clone())
        );
        assert_eq!(mse(t.view(), p.view()), Err(expected.clone()));
        assert_eq!(
            expected.to_string(),
            "shape mismatch: truth is 2x3, prediction is 3x2"
        );
    }

    #[test]
    fn empty_matrix_is_an_error() {
        let t = Array2::<f32>::zeros((0, 3));
        let expected = Err(Error::Empty);
        assert_eq!(reconstruction_error(t.view(), t.view()), expected);
        assert_eq!(mse(t.view(), t.view()), Err(Error::Empty));
    }
}
