//! Log-normalisation of a count matrix, the transform that made the assignment's `counts.npy`.
//!
//! `x'_cg = ln(1 + x_cg · T / n_c)` with `n_c = Σ_g x_cg` the cell's total and `T` the target sum
//! (10,000 in the assignment): scanpy's `normalize_total(target_sum=T)` followed by `log1p`.
//! It lives beside the simulator so that the data files and any test fixture are made by the same
//! code.

use ndarray::{Array2, ArrayView2, Zip};

/// Scale each cell (row) to `target_sum` total counts and take `ln(1 + x)`:
///
/// `out_cg = ln(1 + x_cg · target_sum / Σ_g' x_cg')`
///
/// computed in `f64` and stored as `f32`. A cell whose total is 0 stays all zeros (there is
/// nothing to scale). For a non-zero row, `Σ_g expm1(out_cg) = target_sum` up to `f32` rounding.
/// `target_sum` should be finite and positive (the assignment uses 10,000); other values are not
/// rejected, and give `ln(1 + x·t/n)` as written (NaN where that is undefined).
pub fn log_normalize(counts: ArrayView2<'_, u32>, target_sum: f64) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros(counts.raw_dim());
    Zip::from(out.rows_mut())
        .and(counts.rows())
        .for_each(|mut out_row, row| {
            let total: f64 = row.iter().map(|&x| x as f64).sum();
            if total > 0.0 {
                let factor = target_sum / total;
                Zip::from(&mut out_row).and(&row).for_each(|o, &x| {
                    // Zeros stay 0 (ln 1); skipping them saves most of the work on sparse data.
                    if x > 0 {
                        *o = (x as f64 * factor).ln_1p() as f32;
                    }
                });
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::array;

    #[test]
    fn hand_checked_tiny_matrix() {
        // Row 0: total 4, factor 10/4 = 2.5 -> ln(1 + 2.5), ln(1 + 0), ln(1 + 7.5).
        // Row 1: total 0 -> stays 0.
        // Row 2: total 5, factor 2 -> ln(1 + 10), 0, 0.
        let counts = array![[1u32, 0, 3], [0, 0, 0], [5, 0, 0]];
        let out = log_normalize(counts.view(), 10.0);
        let expected = array![
            [3.5f64.ln(), 0.0, 8.5f64.ln()],
            [0.0, 0.0, 0.0],
            [11.0f64.ln(), 0.0, 0.0]
        ];
        for (o, e) in out.iter().zip(expected.iter()) {
            assert_abs_diff_eq!(*o as f64, *e, epsilon = 1e-6);
        }
    }

    #[test]
    fn rows_expm1_sum_to_target() {
        let counts = array![[3u32, 17, 0, 250, 1], [0, 0, 9, 0, 0], [1, 1, 1, 1, 1]];
        let target = 1e4;
        let out = log_normalize(counts.view(), target);
        for row in out.rows() {
            let s: f64 = row.iter().map(|&v| (v as f64).exp_m1()).sum();
            // f32 storage: relative error about 1e-7 per entry, amplified by exp; 1e-5 relative.
            assert_abs_diff_eq!(s, target, epsilon = target * 1e-5);
        }
    }

    #[test]
    fn shape_is_kept_and_empty_matrix_is_fine() {
        let counts = Array2::<u32>::zeros((0, 4));
        assert_eq!(log_normalize(counts.view(), 1e4).dim(), (0, 4));
    }
}
