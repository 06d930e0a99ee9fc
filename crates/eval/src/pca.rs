//! Principal component analysis of a cells x genes matrix, exact, through a
//! symmetric eigendecomposition with faer.
//!
//! With `Xc = X - 1 mean^T` the column-centred data (`n` cells, `p` genes) and
//! `Xc = U S V^T` its thin SVD, the components are the first `k` rows of
//! `V^T`, the scores `Xc V = U S`, the explained variances
//! `lambda_j = s_j^2 / (n - 1)` and the ratios `lambda_j / sum_g Var(x_g)`
//! (`ddof = 1`), as scikit-learn's `PCA(n_components=k)` reports them.
//!
//! Rather than an SVD of `Xc` (slow, `O(n p^2)` with a large constant), faer
//! decomposes the smaller of the two Gram matrices:
//! - `p <= n`: the covariance `Xc^T Xc = V S^2 V^T` (`p x p`), whose top `k`
//!   eigenvectors are the components (scikit-learn's `covariance_eigh`);
//! - `p > n`: `Xc Xc^T = U S^2 U^T` (`n x n`), and `v_j = Xc^T u_j / s_j`.
//!
//! Squaring the singular values costs relative accuracy only in the smallest
//! ones (absolute error about `eps * s_1^2`), far below the components anyone
//! keeps. The cost is one `n p min(n, p)` product plus an `O(min(n, p)^3)`
//! eigendecomposition, both run on faer's global parallelism (all rayon
//! threads by default; results may differ in the last bits between thread
//! counts). Memory: an `f64` copy of the data plus the `min(n, p)^2` Gram
//! matrix and its eigenvectors.
//!
//! **Sign convention**, scikit-learn's `svd_flip(u_based_decision=False)` (the
//! one `PCA` uses since 1.5): each component is negated if needed so that its
//! entry of largest absolute value (the first such on ties) is positive; the
//! scores follow.

use faer::linalg::matmul::{matmul, triangular};
use faer::{Accum, Mat, MatRef, Par, Side};
use ndarray::{Array1, Array2, ArrayView2};

use crate::dense::Rows;
use crate::error::{Error, ParamError, Result, check_finite};

/// A fitted PCA with `k` components.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    /// Principal axes, `k x genes`, orthonormal rows, sign as described in the module docs.
    pub components: Array2<f64>,
    /// Coordinates of the cells, `cells x k`: `(x - mean) components^T`.
    pub scores: Array2<f64>,
    /// Variance along each component, `s_j^2 / (n - 1)`, decreasing.
    pub explained_variance: Array1<f64>,
    /// `explained_variance / total variance`; all zeros if the data are constant.
    pub explained_variance_ratio: Array1<f64>,
    /// Per-gene mean that was subtracted.
    pub mean: Array1<f64>,
}

/// Centred PCA of `x` (cells x genes) keeping `n_components` components.
///
/// `n_components` may be at most `min(cells - 1, genes)`, the largest rank the
/// centred data can have. If the data's rank is lower, the surplus components
/// have zero variance; with `genes > cells` they are returned as zero vectors.
///
/// # Errors
/// [`ParamError::ZeroComponents`] for `n_components == 0`;
/// [`Error::NoSamples`] for no rows; [`Error::TooManyComponents`] above
/// `min(cells - 1, genes)`; [`Error::NonFinite`] for a NaN or infinite entry;
/// [`Error::NoConvergence`] if the eigensolver fails.
pub fn pca(x: ArrayView2<'_, f32>, n_components: usize) -> Result<Pca> {
    let k = n_components;
    if k == 0 {
        return Err(ParamError::ZeroComponents.into());
    }
    let (n, p) = x.dim();
    if n == 0 {
        return Err(Error::NoSamples);
    }
    let max = (n - 1).min(p);
    if k > max {
        return Err(Error::TooManyComponents {
            n_components: k,
            n_cells: n,
            n_genes: p,
            max,
        });
    }
    check_finite(x)?;
    // Row-major cells x genes is column-major genes x cells: the buffer is Xc^T.
    let mut rows = Rows::new(x);
    let mut mean = vec![0.0; p];
    for r in rows.rows() {
        mean.iter_mut().zip(r).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    for r in rows.data.chunks_exact_mut(p) {
        r.iter_mut().zip(&mean).for_each(|(v, m)| *v -= m);
    }
    let xt = MatRef::from_column_major_slice(&rows.data, p, n);
    let par = faer::get_global_parallelism();
    let total_ss = xt.squared_norm_l2();
    let (mut v, eigvals) = if p <= n {
        // Xc^T Xc = V S^2 V^T: the eigenvectors are the components.
        top_eigen(lower_gram(xt, par).as_ref(), k)?
    } else {
        // Xc Xc^T = U S^2 U^T, then v_j = Xc^T u_j / s_j.
        let (u, vals) = top_eigen(lower_gram(xt.transpose(), par).as_ref(), k)?;
        let mut v = Mat::<f64>::zeros(p, k);
        matmul(v.as_mut(), Accum::Replace, xt, u.as_ref(), 1.0, par);
        for (j, &lambda) in vals.iter().enumerate() {
            let s = lambda.max(0.0).sqrt();
            let scale = if s > 0.0 { s.recip() } else { 0.0 };
            v.col_mut(j).iter_mut().for_each(|e| *e *= scale);
        }
        (v, vals)
    };
    for j in 0..k {
        let col = v.col(j);
        let (mut arg, mut best) = (0, 0.0_f64);
        for (g, e) in col.iter().enumerate() {
            if e.abs() > best {
                (arg, best) = (g, e.abs());
            }
        }
        if col[arg] < 0.0 {
            v.col_mut(j).iter_mut().for_each(|e| *e = -*e);
        }
    }
    let mut scores = Mat::<f64>::zeros(n, k);
    matmul(
        scores.as_mut(),
        Accum::Replace,
        xt.transpose(),
        v.as_ref(),
        1.0,
        par,
    );
    tracing::debug!(
        n,
        p,
        k,
        route = if p <= n { "covariance" } else { "gram" },
        "pca"
    );

    let dof = (n - 1) as f64;
    let explained_variance: Array1<f64> = eigvals.iter().map(|&l| l.max(0.0) / dof).collect();
    let ratio = if total_ss > 0.0 {
        explained_variance.mapv(|e| e * dof / total_ss)
    } else {
        Array1::zeros(k)
    };
    Ok(Pca {
        components: Array2::from_shape_fn((k, p), |(j, g)| v[(g, j)]),
        scores: Array2::from_shape_fn((n, k), |(i, j)| scores[(i, j)]),
        explained_variance,
        explained_variance_ratio: ratio,
        mean: Array1::from(mean),
    })
}

/// The lower triangle of `a a^T` (the upper one is left zero), which is all
/// that [`top_eigen`] reads: half the work of the full product.
fn lower_gram(a: MatRef<'_, f64>, par: Par) -> Mat<f64> {
    use triangular::BlockStructure::{Rectangular, TriangularLower};
    let mut g = Mat::<f64>::zeros(a.nrows(), a.nrows());
    triangular::matmul(
        g.as_mut(),
        TriangularLower,
        Accum::Replace,
        a,
        Rectangular,
        a.transpose(),
        Rectangular,
        1.0,
        par,
    );
    g
}

/// The `k` largest eigenpairs of a symmetric matrix whose lower triangle is
/// filled, largest first: eigenvectors as columns, and eigenvalues.
fn top_eigen(a: MatRef<'_, f64>, k: usize) -> Result<(Mat<f64>, Vec<f64>)> {
    let m = a.nrows();
    let evd = a
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| Error::NoConvergence { dim: m })?;
    // faer sorts eigenvalues in non-decreasing order.
    let (u, s) = (evd.U(), evd.S().column_vector());
    let vecs = Mat::from_fn(m, k, |i, j| u[(i, m - 1 - j)]);
    let vals = (0..k).map(|j| s[m - 1 - j]).collect();
    Ok((vecs, vals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::{Array2, array};

    #[test]
    fn hand_computed_line() {
        // Cells on the line y = 2x: one component along (1, 2)/sqrt(5), all variance on it.
        let x = array![[0.0_f32, 0.0], [1.0, 2.0], [2.0, 4.0], [3.0, 6.0]];
        let fit = pca(x.view(), 1).expect("valid");
        let s5 = 5.0_f64.sqrt();
        assert_abs_diff_eq!(fit.components[[0, 0]], 1.0 / s5, epsilon = 1e-12);
        assert_abs_diff_eq!(fit.components[[0, 1]], 2.0 / s5, epsilon = 1e-12);
        assert_abs_diff_eq!(fit.explained_variance_ratio[0], 1.0, epsilon = 1e-12);
        // Var(x) = 5/3, Var(y) = 20/3.
        assert_abs_diff_eq!(fit.explained_variance[0], 25.0 / 3.0, epsilon = 1e-12);
        // Mean (1.5, 3): first cell's score is -1.5 * sqrt(5).
        assert_abs_diff_eq!(fit.scores[[0, 0]], -1.5 * s5, epsilon = 1e-12);
        assert_abs_diff_eq!(fit.mean[1], 3.0, epsilon = 1e-12);
    }

    #[test]
    fn largest_entry_of_each_component_is_positive() {
        // More genes than cells exercises the Gram route as well.
        for (n, p) in [(30, 6), (6, 30)] {
            let x = Array2::from_shape_fn((n, p), |(i, j)| -(((i * 13 + j * 7) % 17) as f32));
            let fit = pca(x.view(), 3).expect("valid");
            for c in fit.components.rows() {
                let big = c
                    .iter()
                    .fold(0.0_f64, |m, &v| if v.abs() > m.abs() { v } else { m });
                assert!(big > 0.0, "{n}x{p}: {c}");
                assert_abs_diff_eq!(c.dot(&c), 1.0, epsilon = 1e-10);
            }
        }
    }

    #[test]
    fn both_routes_agree() {
        // The same data and its transpose-sized twin: x is 8 x 5 (covariance),
        // padding with zero genes to 8 x 12 switches to the Gram route.
        let x = Array2::from_shape_fn((8, 5), |(i, j)| {
            ((i * 5 + j * 3) % 7) as f32 + i as f32 * 0.1
        });
        let mut wide = Array2::<f32>::zeros((8, 12));
        wide.slice_mut(ndarray::s![.., ..5]).assign(&x);
        let (a, b) = (
            pca(x.view(), 4).expect("valid"),
            pca(wide.view(), 4).expect("valid"),
        );
        for (sa, sb) in a.scores.iter().zip(&b.scores) {
            assert_abs_diff_eq!(sa, sb, epsilon = 1e-9);
        }
        assert_abs_diff_eq!(
            a.explained_variance_ratio.sum(),
            b.explained_variance_ratio.sum(),
            epsilon = 1e-12
        );
    }

    #[test]
    fn constant_data_has_zero_ratios() {
        let fit = pca(Array2::<f32>::ones((4, 3)).view(), 2).expect("valid");
        assert!(fit.explained_variance_ratio.iter().all(|&r| r == 0.0));
        assert!(fit.scores.iter().all(|&s| s.abs() < 1e-12));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = Array2::<f32>::zeros((4, 3));
        assert_eq!(pca(x.view(), 0), Err(ParamError::ZeroComponents.into()));
        assert_eq!(
            pca(x.view(), 4),
            Err(Error::TooManyComponents {
                n_components: 4,
                n_cells: 4,
                n_genes: 3,
                max: 3
            })
        );
        assert_eq!(
            pca(Array2::<f32>::zeros((0, 3)).view(), 1),
            Err(Error::NoSamples)
        );
        assert!(matches!(
            pca(Array2::<f32>::zeros((1, 3)).view(), 1),
            Err(Error::TooManyComponents { max: 0, .. })
        ));
        let mut nan = x.clone();
        nan[[1, 2]] = f32::INFINITY;
        assert!(matches!(
            pca(nan.view(), 1),
            Err(Error::NonFinite { row: 1, col: 2, .. })
        ));
    }
}
