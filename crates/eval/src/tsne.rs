//! t-SNE (van der Maaten & Hinton 2008) of a cells x features matrix into 2-D,
//! the non-linear view of the study's latent spaces.
//!
//! The recipe is scikit-learn's and openTSNE's, the defaults too:
//! 1. inputs wider than [`TsneParams::pca_components`] columns are first reduced
//!    to that many principal components ([`crate::pca()`]), as scanpy does;
//! 2. the `k = floor(3 * perplexity)` exact nearest neighbours of every cell
//!    (Euclidean), found by blocked brute force: one `block x n` matrix product
//!    per block of rows, `|a|^2 + |b|^2 - 2 a.b` to pick candidates, and the
//!    distances of the chosen ones recomputed from the differences (the search
//!    that [`crate::knn_graph`] uses too). In 10 to 50
//!    dimensions this beats `bhtsne`'s vantage-point tree, which degenerates to
//!    a scan with extra bookkeeping there (5000 cells, 2 threads: 0.2 s against
//!    0.5 s on 10 PCs and 1.2 s on 50 PCs);
//! 3. Gaussian affinities calibrated to the perplexity on those neighbours,
//!    symmetrised, and the 2-D embedding optimised by gradient descent with
//!    momentum and gains: `early_exaggeration_iter` iterations with the
//!    affinities multiplied by `early_exaggeration` (momentum 0.5), then the
//!    rest (momentum 0.8), each phase with fresh gains and its own learning
//!    rate (see [`TsneParams::learning_rate`]). The repulsive forces are approximated either by a
//!    Barnes-Hut tree ([`TsneMethod::BarnesHut`], angle `theta`) or by FFT
//!    interpolation on a grid ([`TsneMethod::Fft`], FIt-SNE, openTSNE's
//!    default). Steps 3 and the optimisation are the `bhtsne` crate's.
//!
//! The initial embedding is always made here, never by `bhtsne` (whose random
//! start is unseeded): the first two principal components scaled so that the
//! first has standard deviation `1e-4` ([`TsneInit::Pca`], the convention of
//! scikit-learn and openTSNE), or seeded `N(0, 1e-4^2)` noise
//! ([`TsneInit::Random`]). Parameters are validated here too, so `bhtsne`'s
//! assertions never fire.
//!
//! **Threads and determinism.** Everything runs on the current rayon pool
//! (the global one, or the one a caller `install`s; see [`crate::with_threads`]).
//! The neighbour search is deterministic whatever the thread count. The
//! optimisation is deterministic with one thread; with more, `bhtsne` reduces a
//! few sums (the embedding's mean, the repulsion normaliser) in an order that
//! depends on rayon's work stealing, so repeated runs can differ in the last
//! bits, and t-SNE's iterations amplify that into visibly different (equally
//! good) layouts. [`TsneParams::deterministic`] (on by default) therefore runs
//! the optimisation on a one-thread pool: the same input and parameters give
//! the same bytes on every run, and on every thread count unless the PCA
//! reduction runs (faer's products may differ in the last bits between thread
//! counts). Turn it off to optimise on every thread of the pool, about 1.5
//! times faster on two cores, when bit-identical output matters less.

use std::time::Instant;

use bhtsne::{Neighbor, tSNE};
use ndarray::{Array2, ArrayView2, s};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ParamError, Result, check_finite};

/// How the repulsive forces are approximated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TsneMethod {
    /// A Barnes-Hut space-partitioning tree, accuracy set by [`TsneParams::theta`]
    /// (scikit-learn's `method="barnes_hut"`), `O(n log n)` per iteration. The
    /// default: on 5000 cells (`cargo xtask bench tsne`) it is 5-15 % faster
    /// than [`Self::Fft`] with a silhouette as good or better.
    #[default]
    BarnesHut,
    /// FFT-accelerated interpolation on a grid (FIt-SNE; openTSNE's default),
    /// `O(n)` per iteration plus a grid that grows with the embedding's extent;
    /// `bhtsne` finds it faster than Barnes-Hut beyond about 50,000 cells.
    Fft,
}

impl std::fmt::Display for TsneMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BarnesHut => "barnes_hut",
            Self::Fft => "fft",
        })
    }
}

impl std::str::FromStr for TsneMethod {
    type Err = String;

    /// `barnes_hut` (or `barnes-hut`, `bh`) and `fft`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "barnes_hut" | "barnes-hut" | "bh" => Ok(Self::BarnesHut),
            "fft" => Ok(Self::Fft),
            other => Err(format!(
                "unknown t-SNE method {other:?} (expected barnes-hut or fft)"
            )),
        }
    }
}

/// How the embedding starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TsneInit {
    /// The first two principal components, scaled so the first has standard deviation `1e-4`.
    #[default]
    Pca,
    /// `N(0, 1e-4^2)` noise from `ChaCha8Rng::seed_from_u64(seed)`.
    Random,
}

/// Settings of [`tsne`]; `Default` gives scikit-learn's and openTSNE's.
///
/// In a TOML config this is a `[tsne]` table; every key is optional and an
/// unknown key is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TsneParams {
    /// Effective number of neighbours of each cell; `k = floor(3 * perplexity)`
    /// neighbours are used, so the data need `cells - 1 >= 3 * perplexity`.
    pub perplexity: f64,
    /// Barnes-Hut angle (only for [`TsneMethod::BarnesHut`]); larger is faster and coarser.
    pub theta: f64,
    /// Repulsion approximation.
    pub method: TsneMethod,
    /// Total gradient-descent iterations, early exaggeration included (750 =
    /// scikit-learn's 250 + 500 at `max_iter=750`, openTSNE's defaults).
    pub n_iter: usize,
    /// Iterations with exaggerated affinities and momentum 0.5.
    pub early_exaggeration_iter: usize,
    /// Factor on the affinities during the first `early_exaggeration_iter` iterations.
    pub early_exaggeration: f64,
    /// Gradient-descent step in scikit-learn's units (its gradient carries the
    /// factor 4 of the t-SNE gradient, `bhtsne`'s does not, so `bhtsne` is
    /// given 4 times this), for both phases. `None` ("auto", openTSNE's rule):
    /// `max(cells / exaggeration / 4, 50)` with the phase's exaggeration, i.e.
    /// scikit-learn's `learning_rate="auto"` during early exaggeration and
    /// `early_exaggeration` times that after it. scikit-learn keeps the first
    /// value throughout; with `bhtsne`, which caps the adaptive gains at 2
    /// (scikit-learn and openTSNE do not cap them), that leaves 750 iterations
    /// far from converged (KL 3.6 instead of 3.3 on the bench data), while
    /// openTSNE's rule reaches the peers' KL.
    pub learning_rate: Option<f64>,
    /// Inputs with more columns are reduced to this many principal components
    /// first; 0 never reduces.
    pub pca_components: usize,
    pub init: TsneInit,
    /// Seeds the random initialisation (unused by [`TsneInit::Pca`]).
    pub seed: u64,
    /// Run the optimisation on one thread so the output is bit-identical
    /// between runs and thread counts (see the module docs).
    pub deterministic: bool,
}

impl Default for TsneParams {
    fn default() -> Self {
        Self {
            perplexity: 30.0,
            theta: 0.5,
            method: TsneMethod::default(),
            n_iter: 750,
            early_exaggeration_iter: 250,
            early_exaggeration: 12.0,
            learning_rate: None,
            pca_components: 50,
            init: TsneInit::Pca,
            seed: 0,
            deterministic: true,
        }
    }
}

impl TsneParams {
    /// Checks everything that does not depend on the data.
    ///
    /// # Errors
    /// The [`ParamError`] naming the first bad field.
    pub fn validate(&self) -> std::result::Result<(), ParamError> {
        if !(self.perplexity.is_finite() && self.perplexity > 0.0) {
            return Err(ParamError::Perplexity(self.perplexity));
        }
        if !(self.theta.is_finite() && self.theta > 0.0) {
            return Err(ParamError::Theta(self.theta));
        }
        if self.n_iter == 0 {
            return Err(ParamError::ZeroIterations);
        }
        if self.early_exaggeration_iter > self.n_iter {
            return Err(ParamError::ExaggerationIter {
                early: self.early_exaggeration_iter,
                total: self.n_iter,
            });
        }
        if !(self.early_exaggeration.is_finite() && self.early_exaggeration >= 1.0) {
            return Err(ParamError::EarlyExaggeration(self.early_exaggeration));
        }
        if let Some(lr) = self.learning_rate
            && !(lr.is_finite() && lr > 0.0)
        {
            return Err(ParamError::LearningRate(lr));
        }
        Ok(())
    }

    /// Checks that `n_samples` cells are enough for the perplexity (`cells - 1 >= 3 *
    /// perplexity`), so a pipeline can refuse bad settings before any work is done.
    ///
    /// # Errors
    /// [`ParamError::PerplexityTooLarge`].
    pub fn check_cells(&self, n_samples: usize) -> std::result::Result<(), ParamError> {
        let too_large = n_samples == 0
            || ((n_samples - 1) as f64) < 3.0 * self.perplexity
            || n_samples - 1 < self.n_neighbors();
        if too_large {
            return Err(ParamError::PerplexityTooLarge {
                perplexity: self.perplexity,
                n_samples,
            });
        }
        Ok(())
    }

    /// Neighbours per cell, `max(floor(3 * perplexity), 1)`.
    pub fn n_neighbors(&self) -> usize {
        ((3.0 * self.perplexity).floor() as usize).max(1)
    }
}

/// A fitted t-SNE embedding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tsne {
    /// `cells x 2` coordinates.
    #[serde(skip)]
    pub embedding: Array2<f32>,
    /// Exact Kullback-Leibler divergence `KL(P || Q)` of the final embedding
    /// (`None` above [`KL_MAX_CELLS`] cells).
    pub kl_divergence: Option<f64>,
    /// Whether the input was first reduced to principal components.
    pub pca_applied: bool,
    /// Columns the neighbour search saw (after any PCA).
    pub input_dims: usize,
    /// Neighbours per cell used for the affinities.
    pub n_neighbors: usize,
    /// The learning rates used during and after early exaggeration, in
    /// scikit-learn's units (resolved when `auto`).
    pub learning_rate: [f64; 2],
    /// Seconds in the PCA reduction and initialisation, the neighbour search,
    /// and the optimisation (affinities included).
    pub seconds: TsneSeconds,
}

/// Where the time of a [`tsne`] call went.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TsneSeconds {
    pub pca: f64,
    pub knn: f64,
    pub optimise: f64,
}

/// 2-D t-SNE of `x` (cells x features); see the module docs for the recipe.
///
/// # Errors
/// [`ParamError`]s from [`TsneParams::validate`];
/// [`ParamError::PerplexityTooLarge`] unless `cells - 1 >= 3 * perplexity`;
/// [`Error::NoSamples`] for no rows, [`Error::Empty`] for no columns,
/// [`Error::NonFinite`] for a NaN or infinite entry; with [`TsneInit::Pca`],
/// [`Error::TooManyComponents`] for fewer than 2 columns or 3 cells.
pub fn tsne(x: ArrayView2<'_, f32>, params: &TsneParams) -> Result<Tsne> {
    params.validate()?;
    let (n, d) = x.dim();
    if n == 0 {
        return Err(Error::NoSamples);
    }
    if d == 0 {
        return Err(Error::Empty);
    }
    params.check_cells(n)?;
    let k = params.n_neighbors();
    check_finite(x)?;

    let clock = Instant::now();
    let pca_applied = params.pca_components > 0 && d > params.pca_components;
    let (input, init_pcs) = if pca_applied {
        let scores = crate::pca(x, params.pca_components)?
            .scores
            .mapv(|v| v as f32);
        // The first two PCs of the scores are their first two columns.
        let pcs = scores
            .slice(s![.., ..2.min(params.pca_components)])
            .to_owned();
        (scores, Some(pcs))
    } else {
        (x.as_standard_layout().into_owned(), None)
    };
    let init = initial_embedding(input.view(), init_pcs, params)?;
    let pca_seconds = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let neighbors = exact_knn(input.view(), k);
    let knn_seconds = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let auto_rate = |exaggeration: f64| (n as f64 / exaggeration / 4.0).max(50.0);
    let early_rate = params
        .learning_rate
        .unwrap_or_else(|| auto_rate(params.early_exaggeration));
    let late_rate = params.learning_rate.unwrap_or_else(|| auto_rate(1.0));
    let optimise = || {
        optimise(
            input.view(),
            &neighbors,
            init,
            params,
            early_rate,
            late_rate,
        )
    };
    let (embedding, affinities) = if params.deterministic {
        crate::with_threads(1, optimise)?
    } else {
        optimise()
    };
    let optimise_seconds = clock.elapsed().as_secs_f64();
    let embedding = Array2::from_shape_vec((n, 2), embedding)
        .unwrap_or_else(|_| unreachable!("n x 2 coordinates"));
    let kl_divergence = (n <= KL_MAX_CELLS)
        .then(|| kl_divergence(embedding.view(), &affinities))
        .flatten();
    tracing::info!(
        n,
        dims = input.ncols(),
        k,
        method = %params.method,
        pca_s = pca_seconds,
        knn_s = knn_seconds,
        optimise_s = optimise_seconds,
        kl = kl_divergence,
        "t-SNE"
    );
    Ok(Tsne {
        embedding,
        kl_divergence,
        pca_applied,
        input_dims: input.ncols(),
        n_neighbors: k,
        learning_rate: [early_rate, late_rate],
        seconds: TsneSeconds {
            pca: pca_seconds,
            knn: knn_seconds,
            optimise: optimise_seconds,
        },
    })
}

/// Exact KL divergence is reported up to this many cells (its normaliser costs `n^2` distances).
pub const KL_MAX_CELLS: usize = 20_000;

/// The sparse symmetric affinities `P` (summing to 1), CSR.
struct Affinities {
    rows: Vec<usize>,
    columns: Vec<u32>,
    values: Vec<f32>,
}

/// The two phases of gradient descent through `bhtsne`: early exaggeration
/// with momentum 0.5, then the rest with momentum 0.8, each with its learning
/// rate (scikit-learn units, given to `bhtsne` times 4). Each phase starts with
/// fresh gains and velocities, as openTSNE's do. Returns the embedding
/// (row-major) and the affinities.
fn optimise(
    input: ArrayView2<'_, f32>,
    neighbors: &[Vec<Neighbor<f32>>],
    init: Array2<f32>,
    params: &TsneParams,
    early_rate: f64,
    late_rate: f64,
) -> (Vec<f32>, Affinities) {
    // Given neighbours, bhtsne only counts the samples: empty rows will do.
    let samples: Vec<&[f32]> = vec![&[][..]; input.nrows()];
    let mut fit = tSNE::<f32, &[f32], 2>::new(&samples);
    let mut y = init.into_raw_vec_and_offset().0;
    let phases = [
        (
            params.early_exaggeration_iter,
            params.early_exaggeration,
            0.5,
            early_rate,
        ),
        (
            params.n_iter - params.early_exaggeration_iter,
            1.0,
            0.8,
            late_rate,
        ),
    ];
    for (epochs, exaggeration, momentum, rate) in phases {
        if epochs == 0 {
            continue;
        }
        fit.perplexity(params.perplexity as f32)
            .epochs(epochs)
            .early_exaggeration(exaggeration as f32)
            // Exaggerate for the whole phase (the stop epoch is never reached),
            // or, for exaggeration 1, not at all.
            .stop_lying_epoch(if exaggeration > 1.0 { epochs } else { 0 })
            .momentum(momentum)
            .final_momentum(momentum)
            .momentum_switch_epoch(epochs)
            .learning_rate((4.0 * rate) as f32)
            .initial_embedding(std::mem::take(&mut y));
        match params.method {
            TsneMethod::BarnesHut => fit.barnes_hut_with_neighbors(params.theta as f32, neighbors),
            TsneMethod::Fft => fit.fit_sne_with_neighbors(neighbors),
        };
        y = fit.embedding();
    }
    let p = fit
        .affinities()
        .unwrap_or_else(|| unreachable!("a fit has run: n_iter >= 1"));
    let total: f32 = p.values().iter().sum();
    let affinities = Affinities {
        rows: p.rows().to_vec(),
        columns: p.columns().to_vec(),
        values: p.values().iter().map(|v| v / total).collect(),
    };
    (y, affinities)
}

/// `KL(P || Q) = sum_ij p_ij ln(p_ij / q_ij)` with `q_ij = (1 + |y_i - y_j|^2)^-1 / Z`
/// and `Z = sum_{i != j} (1 + |y_i - y_j|^2)^-1`, computed exactly (rows in
/// parallel, each summed in order, so the value is thread-count free).
fn kl_divergence(y: ArrayView2<'_, f32>, p: &Affinities) -> Option<f64> {
    let n = y.nrows();
    let pts: Vec<[f64; 2]> = y
        .rows()
        .into_iter()
        .map(|r| [f64::from(r[0]), f64::from(r[1])])
        .collect();
    let kernel =
        |a: [f64; 2], b: [f64; 2]| 1.0 / (1.0 + (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2));
    let row_sums: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| {
            (0..n)
                .filter(|&j| j != i)
                .map(|j| kernel(pts[i], pts[j]))
                .sum()
        })
        .collect();
    let z: f64 = row_sums.iter().sum();
    let mut kl = 0.0;
    for i in 0..n {
        for e in p.rows[i]..p.rows[i + 1] {
            let pij = f64::from(p.values[e]);
            if pij > 0.0 {
                let q = kernel(pts[i], pts[p.columns[e] as usize]) / z;
                kl += pij * (pij / q).ln();
            }
        }
    }
    kl.is_finite().then_some(kl)
}

/// The starting coordinates, `n x 2`, row-major.
fn initial_embedding(
    x: ArrayView2<'_, f32>,
    pcs: Option<Array2<f32>>,
    params: &TsneParams,
) -> Result<Array2<f32>> {
    const STD: f64 = 1e-4;
    let n = x.nrows();
    let random = || {
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        let normal = Normal::new(0.0, STD).unwrap_or_else(|_| unreachable!("1e-4 is a valid std"));
        Array2::from_shape_simple_fn((n, 2), || normal.sample(&mut rng) as f32)
    };
    if params.init == TsneInit::Random {
        return Ok(random());
    }
    let pcs = match pcs {
        Some(p) if p.ncols() == 2 => p.mapv(f64::from),
        _ => crate::pca(x, 2)?.scores,
    };
    let col = pcs.column(0);
    let mean = col.sum() / n as f64;
    let std = (col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    if std > 0.0 {
        let scale = STD / std;
        Ok(pcs.mapv(|v| (v * scale) as f32))
    } else {
        // Constant data: no direction to start along.
        Ok(random())
    }
}

/// The `k` nearest other cells of every cell as `bhtsne` takes them
/// ([`crate::knn::exact_knn`]: ascending, ties by index, thread-count free).
fn exact_knn(x: ArrayView2<'_, f32>, k: usize) -> Vec<Vec<Neighbor<f32>>> {
    let knn = crate::knn::exact_knn(x, k);
    (0..x.nrows())
        .map(|i| {
            let (indices, distances) = knn.row(i);
            indices
                .iter()
                .zip(distances)
                .map(|(&j, &distance)| Neighbor {
                    index: j as usize,
                    distance,
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_parameters_are_param_errors() {
        let ok = TsneParams::default();
        assert_eq!(ok.validate(), Ok(()));
        let check = |p: TsneParams| p.validate();
        assert_eq!(
            check(TsneParams {
                perplexity: 0.0,
                ..ok.clone()
            }),
            Err(ParamError::Perplexity(0.0))
        );
        assert_eq!(
            check(TsneParams {
                theta: -1.0,
                ..ok.clone()
            }),
            Err(ParamError::Theta(-1.0))
        );
        assert_eq!(
            check(TsneParams {
                n_iter: 0,
                ..ok.clone()
            }),
            Err(ParamError::ZeroIterations)
        );
        assert_eq!(
            check(TsneParams {
                n_iter: 100,
                ..ok.clone()
            }),
            Err(ParamError::ExaggerationIter {
                early: 250,
                total: 100
            })
        );
        assert_eq!(
            check(TsneParams {
                learning_rate: Some(f64::NAN),
                ..ok.clone()
            })
            .map_err(|e| e.to_string()),
            Err("learning_rate must be finite and > 0, got NaN".into())
        );
    }

    #[test]
    fn method_names_parse() {
        assert_eq!("barnes-hut".parse(), Ok(TsneMethod::BarnesHut));
        assert_eq!("fft".parse(), Ok(TsneMethod::Fft));
        assert!("exact".parse::<TsneMethod>().is_err());
    }
}
