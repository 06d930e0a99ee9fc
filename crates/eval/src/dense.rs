//! Row-major `f64` copies of data matrices and the inner products that the
//! k-means and silhouette hot loops share.
//!
//! Callers hand over `ArrayView2<f32>` in any memory order; the hot loops want
//! one contiguous `f64` row per cell so they can walk `chunks_exact(d)` without
//! index arithmetic or bounds checks, and faer can read the same buffer as a
//! column-major `dims x cells` matrix without copying it (k-means, PCA). The products use four independent
//! accumulators so that the compiler can vectorise them (a single running sum
//! is a dependency chain it may not reorder).

use ndarray::ArrayView2;

/// Cells x dims data as one contiguous row-major `f64` buffer.
#[derive(Debug)]
pub(crate) struct Rows {
    /// `n * d` values, row `i` at `data[i * d..(i + 1) * d]`.
    pub data: Vec<f64>,
    /// Number of rows (cells).
    pub n: usize,
    /// Number of columns (dims); callers guarantee `d > 0`.
    pub d: usize,
}

impl Rows {
    /// Copies `x` into a row-major `f64` buffer (exact: every `f32` is an `f64`).
    pub fn new(x: ArrayView2<'_, f32>) -> Self {
        let (n, d) = x.dim();
        Self {
            data: x.iter().map(|&v| f64::from(v)).collect(),
            n,
            d,
        }
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// Iterator over the rows.
    pub fn rows(&self) -> std::slice::ChunksExact<'_, f64> {
        self.data.chunks_exact(self.d)
    }
}

/// `sum_l a_l * b_l` with four accumulators.
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    sum4(a, b, |x, y| x * y)
}

/// Squared Euclidean distance `sum_l (a_l - b_l)^2` with four accumulators.
#[inline]
pub(crate) fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    sum4(a, b, |x, y| (x - y) * (x - y))
}

/// `sum_l f(a_l, b_l)` over four independent accumulators (so the compiler can vectorise),
/// then the remainder; the summation order is fixed, so results are reproducible.
#[inline(always)]
fn sum4(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> f64 {
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| f(*x, *y))
        .sum();
    let mut acc = [0.0_f64; 4];
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += f(*x, *y);
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::array;

    #[test]
    fn products_match_naive_sums_for_every_tail_length() {
        let a: Vec<f64> = (0..11).map(|i| f64::from(i) * 0.5 - 2.0).collect();
        let b: Vec<f64> = (0..11).map(|i| 1.0 / f64::from(i + 1)).collect();
        for len in 0..=11 {
            let (a, b) = (&a[..len], &b[..len]);
            let naive_dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let naive_sq: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
            assert_abs_diff_eq!(dot(a, b), naive_dot, epsilon = 1e-12);
            assert_abs_diff_eq!(sq_dist(a, b), naive_sq, epsilon = 1e-12);
        }
    }

    #[test]
    fn rows_are_row_major_whatever_the_layout() {
        let x = array![[1.0_f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
        let t = x.t().to_owned(); // 2x3 in memory
        let r = Rows::new(t.t());
        assert_eq!((r.n, r.d), (3, 2));
        assert_eq!(r.row(1), &[3.0, 4.0]);
        assert_eq!(r.rows().count(), 3);
    }
}
