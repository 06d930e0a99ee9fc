//! k-means clustering: greedy k-means++ seeding, Lloyd iterations, the best of
//! several seeded restarts.
//!
//! The algorithm follows scikit-learn's `KMeans(algorithm="lloyd")` so that
//! results are comparable with the reference implementation:
//!
//! - **Seeding** (greedy k-means++, Arthur & Vassilvitskii 2007): the first
//!   centre is a uniformly drawn cell; each further centre is the best of
//!   `2 + floor(ln k)` candidates drawn with probability `D(x)^2 / sum D^2`,
//!   where `D(x)` is the distance of `x` to its closest chosen centre, "best"
//!   meaning the candidate that minimises the new potential `sum_x D(x)^2`.
//! - **Lloyd iterations**: assign every cell to its nearest centre, move every
//!   centre to the mean of its cells, until the labels no longer change, or
//!   the total squared centre shift `sum_c ||c_new - c_old||^2` is at most
//!   `tol * mean_j Var(x_j)` (scikit-learn's relative tolerance), or `max_iter`
//!   iterations have run. A cluster that loses all its cells is re-seeded at
//!   the cell farthest from its centre, as scikit-learn does.
//! - **Restarts**: `n_init` independent runs; the one with the lowest inertia
//!   `sum_i ||x_i - c_{l_i}||^2` wins (the first on ties). Restarts run in
//!   parallel on rayon's global pool (install a smaller pool to limit them);
//!   the result does not depend on the number of threads.
//!
//! Input is `ArrayView2<f32>` (cells x dims, any memory order), the element
//! type the rest of scae hands over; it is copied once into a row-major `f64`
//! buffer and all arithmetic is `f64`. Nearest centres are found with
//! `||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2`, all dot products of one
//! iteration in a single matrix product `C X^T` (faer, sequential); the
//! reported inertia is summed directly from `(x - c)^2`, free of that trick's
//! cancellation. Restart `r` draws from `ChaCha8Rng` seeded with `seed` on
//! stream `r`, so the same seed gives the same result, whatever the thread
//! count. (Across CPUs the product may differ in the last bits, as faer picks
//! its SIMD kernels at run time; that can only matter for exact ties.)

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::dense::{Rows, dot, sq_dist};
use crate::error::{Error, ParamError, Result, check_finite};

/// Parameters of a k-means fit; build with [`KMeansParams::new`] and adjust
/// fields with struct-update syntax:
/// `KMeansParams { n_init: 4, ..KMeansParams::new(10) }`.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansParams {
    /// Number of clusters `k`.
    pub n_clusters: usize,
    /// Number of seeded restarts; the lowest inertia is kept. Default 10.
    pub n_init: usize,
    /// Maximum Lloyd iterations per restart. Default 300.
    pub max_iter: usize,
    /// Relative tolerance on the centre shift, scaled by the mean per-dimension
    /// variance of the data. Default `1e-4`.
    pub tol: f64,
    /// Seed of the restarts' random streams. Default 0.
    pub seed: u64,
}

/// A fitted k-means clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    /// Cluster of each cell, in `0..n_clusters`.
    pub labels: Vec<usize>,
    /// Centroids, `n_clusters x dims`.
    pub centroids: Array2<f64>,
    /// `sum_i ||x_i - centroid_{labels_i}||^2`.
    pub inertia: f64,
    /// Lloyd iterations run by the winning restart.
    pub n_iter: usize,
}

impl KMeansParams {
    /// `n_clusters` clusters with scikit-learn's defaults: 10 restarts, at most
    /// 300 iterations, relative tolerance `1e-4`; seed 0.
    pub fn new(n_clusters: usize) -> Self {
        Self {
            n_clusters,
            n_init: 10,
            max_iter: 300,
            tol: 1e-4,
            seed: 0,
        }
    }

    /// Checks the parameters on their own, before any data is seen.
    ///
    /// # Errors
    /// [`ParamError::ZeroClusters`], [`ParamError::ZeroInit`],
    /// [`ParamError::ZeroMaxIter`], or [`ParamError::Tolerance`] for a negative
    /// or non-finite `tol`.
    pub fn validate(&self) -> std::result::Result<(), ParamError> {
        if self.n_clusters == 0 {
            return Err(ParamError::ZeroClusters);
        }
        if self.n_init == 0 {
            return Err(ParamError::ZeroInit);
        }
        if self.max_iter == 0 {
            return Err(ParamError::ZeroMaxIter);
        }
        if !(self.tol.is_finite() && self.tol >= 0.0) {
            return Err(ParamError::Tolerance(self.tol));
        }
        Ok(())
    }

    /// Clusters the rows of `x` (cells x dims).
    ///
    /// # Errors
    /// [`Error::Param`] for invalid parameters (see [`Self::validate`]);
    /// [`Error::NoSamples`] if `x` has no rows, [`Error::Empty`] if it has no
    /// columns, [`Error::TooManyClusters`] if `n_clusters` exceeds the rows,
    /// [`Error::NonFinite`] for a NaN or infinite entry.
    pub fn fit(&self, x: ArrayView2<'_, f32>) -> Result<KMeans> {
        self.validate()?;
        let (n, d) = x.dim();
        if n == 0 {
            return Err(Error::NoSamples);
        }
        if d == 0 {
            return Err(Error::Empty);
        }
        if self.n_clusters > n {
            return Err(Error::TooManyClusters {
                n_clusters: self.n_clusters,
                n_samples: n,
            });
        }
        check_finite(x)?;
        let data = Rows::new(x);
        let norms: Vec<f64> = data.rows().map(|r| dot(r, r)).collect();
        let tol = self.tol * mean_variance(&data);
        let restart = |init: usize| {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(init as u64);
            let centers = plus_plus(&data, &norms, self.n_clusters, &mut rng);
            let run = lloyd(
                &data,
                &norms,
                centers,
                self.n_clusters,
                self.max_iter,
                tol,
                init,
            );
            tracing::debug!(
                init,
                inertia = run.inertia,
                n_iter = run.n_iter,
                "k-means restart"
            );
            run
        };
        // Restarts run in parallel on rayon's pool; (inertia, restart index) is
        // a total order, so the winner does not depend on the thread count.
        let best = (0..self.n_init)
            .into_par_iter()
            .map(restart)
            .min_by(|a, b| a.inertia.total_cmp(&b.inertia).then(a.init.cmp(&b.init)))
            .ok_or(ParamError::ZeroInit)?;
        Ok(KMeans {
            labels: best.labels,
            centroids: Array2::from_shape_fn((self.n_clusters, d), |(c, j)| {
                best.centers[c * d + j]
            }),
            inertia: best.inertia,
            n_iter: best.n_iter,
        })
    }
}

/// One restart's outcome; `centers` is row-major `k x d`.
#[derive(Debug)]
struct Run {
    labels: Vec<usize>,
    centers: Vec<f64>,
    inertia: f64,
    n_iter: usize,
    /// Index of the restart that produced it.
    init: usize,
}

/// `mean_j Var(x_j)`, population variances (numpy's `np.var(x, axis=0).mean()`).
fn mean_variance(data: &Rows) -> f64 {
    let n = data.n as f64;
    let mut mean = vec![0.0; data.d];
    for r in data.rows() {
        mean.iter_mut().zip(r).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let ss: f64 = data.rows().map(|r| sq_dist(r, &mean)).sum();
    ss / (n * data.d as f64)
}

/// Greedy k-means++ seeding; returns `k x d` row-major centres.
fn plus_plus(data: &Rows, norms: &[f64], k: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let n = data.n;
    // Writes min(closest_i, ||x_i - x_c||^2) into `out` and returns its sum,
    // the potential if cell `c` joins the centres; distances via
    // ||a||^2 + ||b||^2 - 2 a.b, clamped at 0.
    let dist_to = |c: usize, closest: &[f64], out: &mut [f64]| -> f64 {
        let (xc, nc) = (data.row(c), norms[c]);
        let mut pot = 0.0;
        for (((o, x), nx), cl) in out.iter_mut().zip(data.rows()).zip(norms).zip(closest) {
            *o = (nx + nc - 2.0 * dot(x, xc)).max(0.0).min(*cl);
            pot += *o;
        }
        pot
    };
    let n_trials = 2 + (k as f64).ln() as usize;
    let first = rng.random_range(0..n);
    let mut centers = Vec::with_capacity(k * data.d);
    centers.extend_from_slice(data.row(first));
    let (mut closest, mut trial, mut best) = (vec![f64::INFINITY; n], vec![0.0; n], vec![0.0; n]);
    let mut pot = dist_to(first, &closest, &mut best);
    std::mem::swap(&mut closest, &mut best);
    let mut cumsum = vec![0.0; n];
    for _ in 1..k {
        let mut acc = 0.0;
        for (c, d2) in cumsum.iter_mut().zip(&closest) {
            acc += d2;
            *c = acc;
        }
        let mut chosen = (0, f64::INFINITY);
        for _ in 0..n_trials {
            // scikit-learn's searchsorted(cumsum, u * pot): the first cell whose
            // cumulative potential reaches the draw.
            let u = rng.random::<f64>() * pot;
            let cand = cumsum.partition_point(|&c| c < u).min(n - 1);
            let cand_pot = dist_to(cand, &closest, &mut trial);
            if cand_pot < chosen.1 {
                chosen = (cand, cand_pot);
                std::mem::swap(&mut trial, &mut best);
            }
        }
        std::mem::swap(&mut closest, &mut best);
        pot = chosen.1;
        centers.extend_from_slice(data.row(chosen.0));
    }
    centers
}

/// Assigns each cell to its nearest centre; writes labels and squared distances.
///
/// The `k x n` scores `||c||^2 - 2 c.x` come from one matrix product
/// `-2 C X^T` (faer's SIMD kernels, chosen at run time), so each cell's `k`
/// scores are contiguous; `scores` is the caller's `k * n` scratch buffer.
fn assign(
    data: &Rows,
    norms: &[f64],
    centers: &[f64],
    scores: &mut [f64],
    labels: &mut [usize],
    d2: &mut [f64],
) {
    let (n, d) = (data.n, data.d);
    let k = centers.len() / d;
    let c = MatRef::from_row_major_slice(centers, k, d);
    let xt = MatRef::from_column_major_slice(&data.data, d, n);
    matmul(
        MatMut::from_column_major_slice_mut(scores, k, n),
        Accum::Replace,
        c,
        xt,
        -2.0,
        Par::Seq,
    );
    let cnorm: Vec<f64> = centers.chunks_exact(d).map(|c| dot(c, c)).collect();
    for (((s, nx), l), dd) in scores.chunks_exact(k).zip(norms).zip(labels).zip(d2) {
        let mut best = (0, f64::INFINITY);
        for (j, (s, nc)) in s.iter().zip(&cnorm).enumerate() {
            if s + nc < best.1 {
                best = (j, s + nc);
            }
        }
        *l = best.0;
        *dd = (best.1 + nx).max(0.0);
    }
}

/// Moves each centre to the mean of its cells, writing into `new`; empty
/// clusters take the cells farthest from their centres (scikit-learn's
/// `_relocate_empty_clusters_dense`); a cluster left with no cell keeps `old`.
fn update(data: &Rows, labels: &[usize], d2: &[f64], old: &[f64], new: &mut [f64], k: usize) {
    let d = data.d;
    new.fill(0.0);
    let mut counts = vec![0_usize; k];
    for (x, &l) in data.rows().zip(labels) {
        counts[l] += 1;
        new[l * d..(l + 1) * d]
            .iter_mut()
            .zip(x)
            .for_each(|(c, v)| *c += v);
    }
    let empty: Vec<usize> = (0..k).filter(|&c| counts[c] == 0).collect();
    if !empty.is_empty() {
        let mut far: Vec<usize> = (0..data.n).collect();
        far.sort_by(|&a, &b| d2[b].total_cmp(&d2[a]));
        for (&e, &i) in empty.iter().zip(&far) {
            let (donor, x) = (labels[i], data.row(i));
            new[donor * d..(donor + 1) * d]
                .iter_mut()
                .zip(x)
                .for_each(|(c, v)| *c -= v);
            new[e * d..(e + 1) * d].copy_from_slice(x);
            counts[donor] -= 1;
            counts[e] = 1;
        }
    }
    for ((c, o), &m) in new
        .chunks_exact_mut(d)
        .zip(old.chunks_exact(d))
        .zip(&counts)
    {
        if m == 0 {
            c.copy_from_slice(o);
        } else {
            c.iter_mut().for_each(|v| *v /= m as f64);
        }
    }
}

/// Lloyd iterations from `centers` (scikit-learn's `_kmeans_single_lloyd`).
fn lloyd(
    data: &Rows,
    norms: &[f64],
    mut centers: Vec<f64>,
    k: usize,
    max_iter: usize,
    tol: f64,
    init: usize,
) -> Run {
    let n = data.n;
    let (mut labels, mut prev) = (vec![0; n], vec![usize::MAX; n]);
    let mut d2 = vec![0.0; n];
    let mut next = vec![0.0; centers.len()];
    let mut scores = vec![0.0; k * n];
    let (mut n_iter, mut strict) = (0, false);
    for it in 0..max_iter {
        assign(data, norms, &centers, &mut scores, &mut labels, &mut d2);
        update(data, &labels, &d2, &centers, &mut next, k);
        let shift = sq_dist(&centers, &next);
        std::mem::swap(&mut centers, &mut next);
        n_iter = it + 1;
        if labels == prev {
            strict = true;
            break;
        }
        if shift <= tol {
            break;
        }
        prev.copy_from_slice(&labels);
    }
    if !strict {
        // The centres moved after the last assignment: relabel once more.
        assign(data, norms, &centers, &mut scores, &mut labels, &mut d2);
    }
    let inertia = data
        .rows()
        .zip(&labels)
        .map(|(x, &l)| sq_dist(x, &centers[l * data.d..(l + 1) * data.d]))
        .sum();
    Run {
        labels,
        centers,
        inertia,
        n_iter,
        init,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::{Array2, array};

    /// Two tight pairs far apart: {(0,0),(0,1)} and {(10,0),(10,1)}.
    fn two_pairs() -> Array2<f32> {
        array![[0.0, 0.0], [10.0, 0.0], [0.0, 1.0], [10.0, 1.0]]
    }

    #[test]
    fn hand_computed_two_clusters() {
        let fit = KMeansParams::new(2)
            .fit(two_pairs().view())
            .expect("valid input");
        assert_eq!(fit.labels[0], fit.labels[2]);
        assert_eq!(fit.labels[1], fit.labels[3]);
        assert_ne!(fit.labels[0], fit.labels[1]);
        // Each point is 0.5 from its centroid: inertia 4 * 0.25 = 1.
        assert_abs_diff_eq!(fit.inertia, 1.0, epsilon = 1e-12);
        let c = fit.centroids.row(fit.labels[1]);
        assert_abs_diff_eq!(c[0], 10.0, epsilon = 1e-12);
        assert_abs_diff_eq!(c[1], 0.5, epsilon = 1e-12);
    }

    #[test]
    fn single_cluster_is_the_mean() {
        let fit = KMeansParams::new(1)
            .fit(two_pairs().view())
            .expect("valid input");
        assert_eq!(fit.labels, vec![0; 4]);
        assert_abs_diff_eq!(fit.centroids[[0, 0]], 5.0, epsilon = 1e-12);
        assert_abs_diff_eq!(fit.centroids[[0, 1]], 0.5, epsilon = 1e-12);
        // 4 * (25 + 0.25)
        assert_abs_diff_eq!(fit.inertia, 101.0, epsilon = 1e-9);
    }

    #[test]
    fn k_equal_n_and_duplicates_give_zero_inertia() {
        let x = two_pairs();
        let fit = KMeansParams::new(4).fit(x.view()).expect("k = n is valid");
        assert_abs_diff_eq!(fit.inertia, 0.0, epsilon = 1e-12);
        let mut l = fit.labels.clone();
        l.sort_unstable();
        assert_eq!(l, vec![0, 1, 2, 3]);
        // All cells identical: every cluster but one is empty after seeding.
        let same = Array2::<f32>::ones((5, 3));
        let fit = KMeansParams::new(3).fit(same.view()).expect("valid input");
        assert_abs_diff_eq!(fit.inertia, 0.0, epsilon = 1e-12);
        assert!(fit.centroids.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn same_seed_same_result_and_layout_does_not_matter() {
        let x = Array2::from_shape_fn((60, 3), |(i, j)| ((i * 7 + j * 3) % 11) as f32);
        let p = KMeansParams {
            seed: 7,
            ..KMeansParams::new(4)
        };
        let a = p.fit(x.view()).expect("valid input");
        let b = p.fit(x.view()).expect("valid input");
        assert_eq!(a, b);
        let xt = x.t().to_owned();
        assert_eq!(p.fit(xt.t()).expect("valid input"), a);
    }

    #[test]
    fn thread_count_does_not_change_the_result() {
        let x = Array2::from_shape_fn((200, 4), |(i, j)| ((i * 31 + j * 17) % 23) as f32);
        let p = KMeansParams::new(5);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a pool");
        let serial = one.install(|| p.fit(x.view())).expect("valid input");
        assert_eq!(p.fit(x.view()).expect("valid input"), serial);
    }

    #[test]
    fn bad_parameters_are_param_errors() {
        let x = two_pairs();
        let fit = |p: KMeansParams| p.fit(x.view());
        assert_eq!(
            fit(KMeansParams::new(0)),
            Err(ParamError::ZeroClusters.into())
        );
        let p = KMeansParams::new(2);
        assert_eq!(
            fit(KMeansParams {
                n_init: 0,
                ..p.clone()
            }),
            Err(ParamError::ZeroInit.into())
        );
        assert_eq!(
            fit(KMeansParams {
                max_iter: 0,
                ..p.clone()
            }),
            Err(ParamError::ZeroMaxIter.into())
        );
        assert!(matches!(
            fit(KMeansParams {
                tol: f64::NAN,
                ..p.clone()
            }),
            Err(Error::Param(ParamError::Tolerance(_)))
        ));
        assert_eq!(
            fit(KMeansParams { tol: -1.0, ..p }),
            Err(ParamError::Tolerance(-1.0).into())
        );
    }

    #[test]
    fn bad_data_are_run_time_errors() {
        let x = two_pairs();
        let err = KMeansParams::new(5).fit(x.view());
        assert_eq!(
            err,
            Err(Error::TooManyClusters {
                n_clusters: 5,
                n_samples: 4
            })
        );
        assert_eq!(
            Error::TooManyClusters {
                n_clusters: 5,
                n_samples: 4
            }
            .to_string(),
            "cannot form 5 clusters from 4 cells"
        );
        let mut nan = x.clone();
        nan[[2, 1]] = f32::NAN;
        assert!(matches!(
            KMeansParams::new(2).fit(nan.view()),
            Err(Error::NonFinite { row: 2, col: 1, .. })
        ));
        assert_eq!(
            KMeansParams::new(1).fit(Array2::<f32>::zeros((0, 2)).view()),
            Err(Error::NoSamples)
        );
        assert_eq!(
            KMeansParams::new(1).fit(Array2::<f32>::zeros((3, 0)).view()),
            Err(Error::Empty)
        );
    }
}
