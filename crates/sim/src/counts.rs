//! Plain count simulations for the VAE studies: independent Poisson features (the scVAE
//! study's synthetic check), a known mixture of Poisson components (the GMVAE's synthetic
//! check) and a large sparse matrix with a chosen fraction of zeros and a few
//! very highly expressed genes (the study's MB-20k scale, for stability tests and benchmarks).
//!
//! Each cell draws from its own ChaCha8 stream (seeded from the seed and the cell's index), so
//! the matrix does not depend on how many threads draw it.

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Poisson};
use rayon::prelude::*;
use sprs::CsMat;

use crate::error::{Result, SimError};

/// `cells` rows of independent Poisson counts, column `j` with rate `rates[j]`.
///
/// # Errors
/// [`SimError::Invalid`] when `cells` is 0, `rates` is empty or a rate is not positive and finite.
pub fn independent_poisson(cells: usize, rates: &[f64], seed: u64) -> Result<Array2<f32>> {
    if cells == 0 || rates.is_empty() {
        return Err(SimError::Invalid(format!(
            "independent Poisson counts need at least one cell and one rate, got {cells} cells and {} rates",
            rates.len()
        )));
    }
    if let Some(bad) = rates.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
        return Err(SimError::Invalid(format!(
            "every Poisson rate must be positive and finite, got {bad}"
        )));
    }
    let mut x = vec![0.0f32; cells * rates.len()];
    x.par_chunks_mut(rates.len())
        .enumerate()
        .for_each(|(cell, row)| {
            let mut rng = cell_rng(seed, cell);
            for (v, &rate) in row.iter_mut().zip(rates) {
                *v = poisson(&mut rng, rate) as f32;
            }
        });
    Ok(Array2::from_shape_vec((cells, rates.len()), x).expect("cells x rates values"))
}

/// Counts from a known mixture of Poisson components: each of `cells` rows picks component `c`
/// with probability `weights[c]` (normalised), then draws feature `j` from Poisson(`rates[c][j]`).
/// Returns the counts and each row's component, the truth a clustering is scored against.
///
/// # Errors
/// [`SimError::Invalid`] when there is no cell or component, the components have different
/// numbers of features, a rate is not positive and finite, or the weights are not positive
/// and finite (one per component).
pub fn poisson_mixture(
    cells: usize,
    rates: &[Vec<f64>],
    weights: &[f64],
    seed: u64,
) -> Result<(Array2<f32>, Vec<usize>)> {
    let invalid = |msg: String| Err(SimError::Invalid(msg));
    let features = rates.first().map_or(0, Vec::len);
    if cells == 0 || features == 0 {
        return invalid(format!(
            "a Poisson mixture needs at least one cell, component and feature, got {cells} cells and {} components of {features} features",
            rates.len()
        ));
    }
    if let Some(c) = rates.iter().position(|r| r.len() != features) {
        return invalid(format!(
            "component {c} has {} rates, component 0 has {features}",
            rates[c].len()
        ));
    }
    if let Some(bad) = rates
        .iter()
        .flatten()
        .find(|r| !(r.is_finite() && **r > 0.0))
    {
        return invalid(format!(
            "every Poisson rate must be positive and finite, got {bad}"
        ));
    }
    if weights.len() != rates.len() || weights.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
        return invalid(format!(
            "a Poisson mixture needs one positive, finite weight per component: {} components, weights {weights:?}",
            rates.len()
        ));
    }
    let total: f64 = weights.iter().sum();
    let mut x = vec![0.0f32; cells * features];
    let mut component = vec![0usize; cells];
    x.par_chunks_mut(features)
        .zip(component.par_iter_mut())
        .enumerate()
        .for_each(|(cell, (row, comp))| {
            let mut rng = cell_rng(seed, cell);
            let u = rng.random::<f64>() * total;
            let mut acc = 0.0;
            *comp = weights
                .iter()
                .position(|w| {
                    acc += w;
                    u < acc
                })
                .unwrap_or(weights.len() - 1);
            for (v, &rate) in row.iter_mut().zip(&rates[*comp]) {
                *v = poisson(&mut rng, rate) as f32;
            }
        });
    let x = Array2::from_shape_vec((cells, features), x).expect("cells x features values");
    Ok((x, component))
}

/// A sparse count matrix at a chosen scale (see [`sparse_counts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SparseParams {
    pub cells: usize,
    pub genes: usize,
    /// Expected fraction of zero entries, in (0, 1).
    pub zero_fraction: f64,
    /// Genes whose mean is drawn log-uniformly from `[high_rate.0, high_rate.1]`.
    pub high_genes: usize,
    pub high_rate: (f64, f64),
    pub seed: u64,
}

impl SparseParams {
    /// The scVAE study's MB-20k shape: 20,000 cells x 27,998 genes, 92.8 % zeros.
    pub fn mb20k() -> Self {
        Self {
            cells: 20_000,
            genes: 27_998,
            zero_fraction: 0.928,
            high_genes: 20,
            high_rate: (400.0, 1000.0),
            seed: 20,
        }
    }
}

/// What [`sparse_counts`] drew.
#[derive(Debug, Clone)]
pub struct SparseCounts {
    /// Cells x genes, CSR, integer values stored as `f32` (zeros not stored).
    pub counts: CsMat<f32>,
    /// The largest Poisson rate of any entry.
    pub max_rate: f64,
    /// The fraction of entries that are zero.
    pub zero_fraction: f64,
}

/// Poisson counts with rate `exp(g_j) * c_i`: gene log-means `g_j ~ N(m, 2^2)` except
/// `high_genes` genes set log-uniformly in `high_rate`, cell factors `c_i ~ LogNormal(0, 0.5)`
/// scaled to mean 1. `m` is found by bisection so that the expected zero fraction (over the
/// first 256 cells) equals `zero_fraction`.
///
/// # Errors
/// [`SimError::Invalid`] for an empty shape, a zero fraction outside (0, 1) or a bad rate range.
pub fn sparse_counts(p: &SparseParams) -> Result<SparseCounts> {
    if p.cells == 0 || p.genes == 0 || p.high_genes > p.genes {
        return Err(SimError::Invalid(format!(
            "sparse counts need cells, genes >= 1 and high_genes <= genes, got {} x {} with {} high",
            p.cells, p.genes, p.high_genes
        )));
    }
    if !(p.zero_fraction > 0.0 && p.zero_fraction < 1.0) {
        return Err(SimError::Invalid(format!(
            "zero_fraction must be in (0, 1), got {}",
            p.zero_fraction
        )));
    }
    let (lo, hi) = p.high_rate;
    if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
        return Err(SimError::Invalid(format!(
            "high_rate must satisfy 0 < low <= high, got ({lo}, {hi})"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let normal = Normal::new(0.0, 1.0).map_err(|e| SimError::Invalid(e.to_string()))?;
    let z: Vec<f64> = (0..p.genes).map(|_| normal.sample(&mut rng)).collect();
    let high: Vec<usize> = rand::seq::index::sample(&mut rng, p.genes, p.high_genes).into_vec();
    let mut high_log = vec![None; p.genes];
    for &g in &high {
        high_log[g] = Some(rng.random_range(lo.ln()..=hi.ln()));
    }
    let mut cell_factor: Vec<f64> = (0..p.cells)
        .map(|_| (0.5 * normal.sample(&mut rng)).exp())
        .collect();
    let mean = cell_factor.iter().sum::<f64>() / p.cells as f64;
    cell_factor.iter_mut().for_each(|c| *c /= mean);

    let log_means = |m: f64| -> Vec<f64> {
        z.iter()
            .zip(&high_log)
            .map(|(z, h)| h.unwrap_or(m + 2.0 * z))
            .collect()
    };
    let probe = &cell_factor[..p.cells.min(256)];
    let zeros_at = |m: f64| -> f64 {
        let g = log_means(m);
        let total: f64 = probe
            .iter()
            .map(|c| g.iter().map(|g| (-g.exp() * c).exp()).sum::<f64>())
            .sum();
        total / (probe.len() * p.genes) as f64
    };
    let (mut a, mut b) = (-30.0, 10.0);
    for _ in 0..60 {
        let m = 0.5 * (a + b);
        if zeros_at(m) > p.zero_fraction {
            a = m;
        } else {
            b = m;
        }
    }
    let gene_rate: Vec<f64> = log_means(0.5 * (a + b)).iter().map(|g| g.exp()).collect();
    let max_factor = cell_factor.iter().copied().fold(0.0, f64::max);
    let max_rate = gene_rate.iter().copied().fold(0.0, f64::max) * max_factor;

    // Row by row, keeping the nonzeros only: the same draws as a dense matrix, in a fraction of
    // its memory. Cells are drawn in parallel a block at a time and appended in order, so only
    // one block is held twice.
    let draw_row = |cell: usize| {
        let mut rng = cell_rng(p.seed, cell);
        let mut genes = Vec::new();
        let mut values = Vec::new();
        for (gene, &rate) in gene_rate.iter().enumerate() {
            let v = poisson(&mut rng, rate * cell_factor[cell]);
            if v > 0 {
                genes.push(gene);
                values.push(v as f32);
            }
        }
        (genes, values)
    };
    let mut indptr = Vec::with_capacity(p.cells + 1);
    // The expected number of nonzeros, with room to spare, so the buffers rarely grow (a grown
    // buffer is briefly held twice).
    let expected = (1.05 * (1.0 - p.zero_fraction) * (p.cells * p.genes) as f64) as usize;
    let mut indices = Vec::with_capacity(expected);
    let mut data = Vec::with_capacity(expected);
    indptr.push(0);
    for start in (0..p.cells).step_by(1024) {
        let block: Vec<(Vec<usize>, Vec<f32>)> = (start..p.cells.min(start + 1024))
            .into_par_iter()
            .map(draw_row)
            .collect();
        for (genes, values) in block {
            indices.extend(genes);
            data.extend(values);
            indptr.push(indices.len());
        }
    }
    let nnz = indices.len();
    let counts = CsMat::new((p.cells, p.genes), indptr, indices, data);
    Ok(SparseCounts {
        zero_fraction: 1.0 - nnz as f64 / (p.cells * p.genes) as f64,
        counts,
        max_rate,
    })
}

/// One Poisson draw: inversion below a rate of 10 (cheap for the many tiny rates), else
/// `rand_distr`'s sampler.
fn poisson(rng: &mut ChaCha8Rng, rate: f64) -> u64 {
    if rate < 10.0 {
        let u: f64 = rng.random();
        let mut p = (-rate).exp();
        let mut cdf = p;
        let mut k = 0u64;
        while u > cdf && k < 1000 {
            k += 1;
            p *= rate / k as f64;
            cdf += p;
        }
        k
    } else {
        Poisson::new(rate).map_or(0, |d| d.sample(rng) as u64)
    }
}

/// The random stream of one cell.
fn cell_rng(seed: u64, cell: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(cell as u64 + 1);
    rng
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_poisson_mixture_draws_each_component_at_its_weight_and_rates() {
        let rates = vec![vec![1.0, 20.0], vec![20.0, 1.0], vec![5.0, 5.0]];
        let (x, comp) = poisson_mixture(30_000, &rates, &[1.0, 2.0, 1.0], 7).expect("valid");
        assert_eq!(x.dim(), (30_000, 2));
        for (c, want) in [(0usize, 0.25), (1, 0.5), (2, 0.25)] {
            let rows: Vec<usize> = (0..comp.len()).filter(|&i| comp[i] == c).collect();
            let share = rows.len() as f64 / 30_000.0;
            assert!((share - want).abs() < 0.01, "component {c}: share {share}");
            for (j, &rate) in rates[c].iter().enumerate() {
                let mean =
                    rows.iter().map(|&i| f64::from(x[[i, j]])).sum::<f64>() / rows.len() as f64;
                // Standard error sqrt(rate / n) is under 0.05 here.
                assert!(
                    (mean - rate).abs() < 0.2,
                    "component {c} feature {j}: {mean} vs {rate}"
                );
            }
        }
        let again = poisson_mixture(30_000, &rates, &[1.0, 2.0, 1.0], 7).expect("valid");
        assert_eq!(again.1, comp, "same seed, same draws");
        assert!(poisson_mixture(10, &[vec![1.0], vec![1.0, 2.0]], &[1.0, 1.0], 0).is_err());
        assert!(poisson_mixture(10, &rates, &[1.0, 1.0], 0).is_err());
        assert!(poisson_mixture(10, &[vec![0.0]], &[1.0], 0).is_err());
    }

    use super::*;

    #[test]
    fn independent_poisson_has_the_rates_as_means() {
        let rates: Vec<f64> = (1..=10).map(f64::from).collect();
        let x = independent_poisson(4000, &rates, 1).expect("valid");
        for (j, &rate) in rates.iter().enumerate() {
            let col = x.column(j);
            let mean = col.iter().map(|&v| f64::from(v)).sum::<f64>() / 4000.0;
            // 5 standard errors of the mean.
            let tol = 5.0 * (rate / 4000.0).sqrt();
            assert!((mean - rate).abs() < tol, "rate {rate}: mean {mean}");
        }
        assert_eq!(x, independent_poisson(4000, &rates, 1).expect("valid"));
        assert!(independent_poisson(10, &[1.0, 0.0], 1).is_err());
    }

    #[test]
    fn sparse_counts_hit_the_zero_fraction_and_the_high_rates() {
        let p = SparseParams {
            cells: 300,
            genes: 5000,
            zero_fraction: 0.92,
            high_genes: 5,
            high_rate: (400.0, 600.0),
            seed: 3,
        };
        let s = sparse_counts(&p).expect("valid");
        assert!((s.zero_fraction - 0.92).abs() < 0.01, "{}", s.zero_fraction);
        assert!(s.max_rate > 400.0);
        assert!(s.counts.data().iter().any(|&v| v > 300.0));
        assert!(s.counts.is_csr() && s.counts.data().iter().all(|&v| v >= 1.0));
        assert_eq!(s.counts, sparse_counts(&p).expect("valid").counts);
    }
}
