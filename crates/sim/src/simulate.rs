//! The sampler: a Splatter-like gamma-Poisson model with group-wise differential expression, gene
//! programs and logistic dropout.
//!
//! It is one function over validated parameters, organised as the model reads: groups, gene means,
//! differential expression, dispersion, library sizes, gene programs, then counts. Each stage
//! draws from its own ChaCha8 stream (same seed, stream number = stage), so the gene-level draws
//! (means, DE, dispersion, program modules and loadings) depend only on the seed and `n_genes`,
//! not on `n_cells`, and a change to one stage's parameters leaves the other stages' draws alone.
//! The program activities of all cells come from one more stage stream, drawn cell by cell.
//!
//! The count stage (5 million entries for the default data) gives every cell its own stream, which
//! lets rows be filled on several threads (`std::thread::scope`, up to the available parallelism)
//! while the result stays independent of the number of threads. Each cell combines its program
//! activities into the log-effect `η_c·` (about 1,600 multiply-adds for the defaults) just before
//! its counts are drawn, so the programs add no cells x genes buffer.

use ndarray::{Array2, ArrayViewMut2, Axis};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Bernoulli, ChiSquared, Distribution, Gamma, LogNormal, Poisson, StandardNormal};

use crate::error::{Result, SimError};
use crate::params::{GenePrograms, SimParams, ValidSimParams};

/// A simulated data set.
#[derive(Debug, Clone, PartialEq)]
pub struct SimData {
    /// Raw counts, cells x genes, after dropout. Cells are in shuffled order (not grouped).
    pub counts: Array2<u32>,
    /// Group of each cell (`0..n_groups`), in the row order of `counts`.
    pub labels: Vec<usize>,
    /// The true relative means `μ_gk = μ_g · f_gk`, groups x genes, before the gene programs.
    /// The expected count of gene `g` in cell `c` of group `k` before dispersion and dropout is
    /// `L_c · μ_gk e^{η_cg} / Σ_g' μ_g'k e^{η_cg'}` (`η = 0` without programs).
    pub group_means: Array2<f64>,
    /// The programs' effective loadings `s_j · w_gj`, programs x genes (zero outside each
    /// program's module); 0 rows without programs.
    pub program_loadings: Array2<f64>,
    /// The programs' activities `a_cj`, cells x programs, in the row order of `counts`; 0 columns
    /// without programs. The programs' log-effect is `η = program_activity · program_loadings`.
    pub program_activity: Array2<f64>,
}

impl SimData {
    /// Number of cells in each group, indexed by group.
    pub fn group_sizes(&self) -> Vec<usize> {
        let n_groups = self.group_means.nrows();
        let mut sizes = vec![0; n_groups];
        for &l in &self.labels {
            if let Some(s) = sizes.get_mut(l) {
                *s += 1;
            }
        }
        sizes
    }

    /// Fraction of entries of `counts` that are zero (0 for an empty matrix).
    pub fn sparsity(&self) -> f64 {
        let n = self.counts.len();
        if n == 0 {
            return 0.0;
        }
        self.counts.iter().filter(|&&x| x == 0).count() as f64 / n as f64
    }
}

/// Stream numbers of the stages (see the module docs).
mod stream {
    pub const LABELS: u64 = 0;
    pub const GENE_MEANS: u64 = 1;
    pub const DE: u64 = 2;
    pub const DISPERSION: u64 = 3;
    pub const LIBRARY: u64 = 4;
    pub const PROGRAMS: u64 = 5;
    pub const ACTIVITY: u64 = 6;
    /// Cell `c` draws its counts from stream `COUNTS + c`.
    pub const COUNTS: u64 = 1 << 32;
}

/// Bounds on the per-gene inverse dispersion `θ_g`, so that an extreme χ² draw cannot make the
/// gamma noise degenerate.
const THETA_MIN: f64 = 1e-6;
const THETA_MAX: f64 = 1e6;

fn stage_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Turn a `rand_distr` constructor error into a parameter error. Validation rules these out; the
/// mapping keeps the sampler free of panics for values at the edge of `f64` (e.g. a rate so small
/// that its reciprocal overflows).
fn dist<D, E>(r: std::result::Result<D, E>, name: &'static str, value: f64) -> Result<D> {
    r.map_err(|_| SimError::InvalidParam {
        name,
        value,
        requirement: "a value the sampler can use (it overflowed)",
    })
}

/// Simulate a data set. Validates `params` first ([`SimParams::validate`]).
///
/// The generative model (`c` cell, `g` gene, `k` group, `LN(m, s)` log-normal):
///
/// 1. Groups: `n_k = round(π_k · n_cells)` (largest remainder), labels shuffled.
/// 2. Base means: `μ_g ~ Gamma(mean_shape, rate mean_rate)`; with probability `outlier_prob`,
///    `μ_g ← median(μ) · LN(outlier_loc, outlier_scale)`.
/// 3. DE: for each (g, k), with probability `de_prob`, `f_gk ~ LN(de_fac_loc, de_fac_scale)`,
///    inverted with probability `de_down_prob`; otherwise `f_gk = 1`. `μ_gk = μ_g · f_gk`.
/// 4. Dispersion: `θ_g = X_g / (bcv_common² · bcv_df)` with `X_g ~ χ²(bcv_df)`
///    (`θ_g = 1 / bcv_common²` when `bcv_df = ∞`), clamped to `[1e-6, 1e6]`.
/// 5. Library size: `L_c ~ LN(lib_loc, lib_scale)`.
/// 6. Gene programs ([`GenePrograms`], `j` the program): module `M_j` of
///    `round(module_frac · n_genes)` genes drawn without replacement (modules may overlap),
///    loadings `w_gj = ±LN(0, loading_scale)` on `M_j` (negative with probability `down_prob`),
///    0 elsewhere; strength `s_j = strength · decay^j`; activity `a_cj = m_jk + z_cj`,
///    `z_cj ~ N(0, 1)`, `m_jk ~ N(0, group_shift_scale²)` for `j < n_group_programs`, else 0.
///    Log-effect `η_cg = Σ_j s_j w_gj a_cj` (`η = 0` without programs).
/// 7. Dispersed mean: `λ_cg = L_c · μ_gk e^{η_cg} / (Σ_g' μ_g'k e^{η_cg'}) · G_cg`,
///    `G_cg ~ Gamma(θ_g, scale 1/θ_g)` (mean 1), for `k` the group of `c`: the programs reshape
///    each cell's expression profile and leave its expected total at `L_c`.
/// 8. Dropout: with probability `1 / (1 + exp(k_d · (ln λ_cg − x0)))` the entry is 0.
/// 9. Count: otherwise `Y_cg ~ Poisson(λ_cg)`, saturating at `u32::MAX`.
///
/// Given the cell's group, library size and program activities, steps 7 and 9 make `Y_cg`
/// negative binomial with mean `m_cg = L_c μ_gk e^{η_cg} / Σ_g' μ_g'k e^{η_cg'}` and variance
/// `m_cg + m_cg²/θ_g` before dropout.
pub fn simulate(params: &SimParams) -> Result<SimData> {
    let valid = params.validate()?;
    simulate_valid(&valid)
}

/// Simulate from already validated parameters (see [`simulate`] for the model).
///
/// Returns an error only if a derived quantity overflows `f64` (e.g. `1 / mean_rate` for a rate
/// below `1e-308`), which no realistic parameter reaches.
pub fn simulate_valid(p: &ValidSimParams) -> Result<SimData> {
    let n_cells = p.n_cells;
    let n_genes = p.n_genes;
    let n_groups = p.n_groups();

    // 1. Groups.
    let sizes = group_sizes(n_cells, &p.group_proportions);
    let mut labels: Vec<usize> = sizes
        .iter()
        .enumerate()
        .flat_map(|(k, &n)| std::iter::repeat_n(k, n))
        .collect();
    labels.shuffle(&mut stage_rng(p.seed, stream::LABELS));

    // 2. Base means with outliers.
    let mut rng = stage_rng(p.seed, stream::GENE_MEANS);
    let base = dist(
        Gamma::new(p.mean_shape, 1.0 / p.mean_rate),
        "mean_rate",
        p.mean_rate,
    )?;
    let mut mu: Vec<f64> = (0..n_genes).map(|_| base.sample(&mut rng)).collect();
    let median = median(&mu);
    let is_outlier = dist(
        Bernoulli::new(p.outlier_prob),
        "outlier_prob",
        p.outlier_prob,
    )?;
    let outlier_fac = dist(
        LogNormal::new(p.outlier_loc, p.outlier_scale),
        "outlier_scale",
        p.outlier_scale,
    )?;
    for m in &mut mu {
        // Draw both for every gene so the stream position does not depend on the outcome.
        let out = is_outlier.sample(&mut rng);
        let fac = outlier_fac.sample(&mut rng);
        if out {
            *m = median * fac;
        }
    }

    // 3. Differential expression.
    let mut rng = stage_rng(p.seed, stream::DE);
    let is_de = dist(Bernoulli::new(p.de_prob), "de_prob", p.de_prob)?;
    let is_down = dist(
        Bernoulli::new(p.de_down_prob),
        "de_down_prob",
        p.de_down_prob,
    )?;
    let de_fac = dist(
        LogNormal::new(p.de_fac_loc, p.de_fac_scale),
        "de_fac_scale",
        p.de_fac_scale,
    )?;
    let mut group_means = Array2::<f64>::zeros((n_groups, n_genes));
    for k in 0..n_groups {
        for (g, &m) in mu.iter().enumerate() {
            let de = is_de.sample(&mut rng);
            let down = is_down.sample(&mut rng);
            let f = de_fac.sample(&mut rng);
            let fc = match (de, down) {
                (false, _) => 1.0,
                (true, false) => f,
                (true, true) => 1.0 / f,
            };
            group_means[[k, g]] = m * fc;
        }
    }

    // 4. Gene-wise dispersion.
    let noise = gene_noise(p)?;

    // 5. Library sizes.
    let lib_size = library_sizes(p)?;

    // 6. Gene programs.
    let (program_loadings, shifts) = program_loadings(p)?;
    let program_activity = program_activity(p, &labels, &shifts);
    let modules = sparse_modules(&program_loadings);

    // 7-9. Counts, one ChaCha8 stream per cell, rows filled in parallel.
    let mut counts = Array2::<u32>::zeros((n_cells, n_genes));
    let sampler = CountSampler {
        seed: p.seed,
        labels: &labels,
        lib_size: &lib_size,
        group_means: &group_means,
        modules: &modules,
        activity: &program_activity,
        noise: &noise,
        dropout: p.dropout.map(|d| (d.shape, (-d.midpoint).exp())),
    };
    let n_threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    sampler.fill_all(&mut counts, n_threads);

    Ok(SimData {
        counts,
        labels,
        group_means,
        program_loadings,
        program_activity,
    })
}

/// The programs of `p`, or `None` when there are none (`programs: None` or `n_programs = 0`).
fn active_programs(p: &ValidSimParams) -> Option<GenePrograms> {
    p.programs.filter(|g| g.n_programs > 0)
}

/// Step 6, gene level: the effective loadings `s_j w_gj` (programs x genes) and the mean
/// activities `m_jk` (programs x groups).
///
/// Draw order, for each program `j`: the module (`rand::seq::index::sample`), then for each of
/// its genes in the order drawn a sign and a magnitude, then `m_jk` for every group `k` when
/// `j < n_group_programs`.
fn program_loadings(p: &ValidSimParams) -> Result<(Array2<f64>, Array2<f64>)> {
    let n_groups = p.n_groups();
    let Some(g) = active_programs(p) else {
        return Ok((Array2::zeros((0, p.n_genes)), Array2::zeros((0, n_groups))));
    };
    let mut rng = stage_rng(p.seed, stream::PROGRAMS);
    let module_size = ((g.module_frac * p.n_genes as f64).round() as usize).clamp(1, p.n_genes);
    let is_down = dist(
        Bernoulli::new(g.down_prob),
        "programs.down_prob",
        g.down_prob,
    )?;
    let magnitude = dist(
        LogNormal::new(0.0, g.loading_scale),
        "programs.loading_scale",
        g.loading_scale,
    )?;
    let mut loadings = Array2::<f64>::zeros((g.n_programs, p.n_genes));
    let mut shifts = Array2::<f64>::zeros((g.n_programs, n_groups));
    for j in 0..g.n_programs {
        let s_j = g.strength * g.decay.powi(j as i32);
        for gene in rand::seq::index::sample(&mut rng, p.n_genes, module_size) {
            let down = is_down.sample(&mut rng);
            let w = magnitude.sample(&mut rng);
            loadings[[j, gene]] = if down { -s_j * w } else { s_j * w };
        }
        if j < g.n_group_programs {
            for k in 0..n_groups {
                let z: f64 = rng.sample(StandardNormal);
                shifts[[j, k]] = g.group_shift_scale * z;
            }
        }
    }
    Ok((loadings, shifts))
}

/// Step 6, cell level: the activities `a_cj = m_j,label(c) + z_cj`, cells x programs, drawn cell
/// by cell (so the first cells do not depend on `n_cells`).
fn program_activity(p: &ValidSimParams, labels: &[usize], shifts: &Array2<f64>) -> Array2<f64> {
    let n_programs = shifts.nrows();
    let mut rng = stage_rng(p.seed, stream::ACTIVITY);
    let mut activity = Array2::<f64>::zeros((labels.len(), n_programs));
    for (mut row, &k) in activity.rows_mut().into_iter().zip(labels) {
        for (a, &m) in row.iter_mut().zip(shifts.column(k)) {
            let z: f64 = rng.sample(StandardNormal);
            *a = m + z;
        }
    }
    activity
}

/// The non-zero loadings of each program as `(gene, s_j w_gj)`, the form the count stage uses.
fn sparse_modules(loadings: &Array2<f64>) -> Vec<Vec<(usize, f64)>> {
    loadings
        .rows()
        .into_iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .filter(|&(_, &w)| w != 0.0)
                .map(|(g, &w)| (g, w))
                .collect()
        })
        .collect()
}

/// Step 5: the library size `L_c ~ LN(lib_loc, lib_scale)` of each cell.
fn library_sizes(p: &ValidSimParams) -> Result<Vec<f64>> {
    let mut rng = stage_rng(p.seed, stream::LIBRARY);
    let lib = dist(
        LogNormal::new(p.lib_loc, p.lib_scale),
        "lib_scale",
        p.lib_scale,
    )?;
    Ok((0..p.n_cells).map(|_| lib.sample(&mut rng)).collect())
}

/// Step 4: the mean-one gamma noise of each gene, `Gamma(θ_g, scale 1/θ_g)`.
fn gene_noise(p: &ValidSimParams) -> Result<Vec<Gamma<f64>>> {
    let mut rng = stage_rng(p.seed, stream::DISPERSION);
    let phi0 = p.bcv_common * p.bcv_common;
    let chi2 = if p.bcv_df.is_finite() {
        Some(dist(ChiSquared::new(p.bcv_df), "bcv_df", p.bcv_df)?)
    } else {
        None
    };
    (0..p.n_genes)
        .map(|_| {
            let theta = match &chi2 {
                Some(chi2) => chi2.sample(&mut rng) / (phi0 * p.bcv_df),
                None => 1.0 / phi0,
            };
            let theta = if theta.is_nan() {
                THETA_MAX
            } else {
                theta.clamp(THETA_MIN, THETA_MAX)
            };
            dist(Gamma::new(theta, 1.0 / theta), "bcv_common", p.bcv_common)
        })
        .collect()
}

/// Upper bound on the threads that fill the count matrix.
const MAX_THREADS: usize = 16;

/// Everything the count stage (steps 6-8) needs, shared read-only by the threads.
struct CountSampler<'a> {
    seed: u64,
    labels: &'a [usize],
    lib_size: &'a [f64],
    group_means: &'a Array2<f64>,
    /// `(gene, s_j w_gj)` of each program's module.
    modules: &'a [Vec<(usize, f64)>],
    /// `a_cj`, cells x programs.
    activity: &'a Array2<f64>,
    noise: &'a [Gamma<f64>],
    /// `(k, exp(-x0))` of the logistic dropout.
    dropout: Option<(f64, f64)>,
}

impl CountSampler<'_> {
    /// Fill every row of `counts` using up to `n_threads` threads (clamped to `1..=MAX_THREADS`).
    fn fill_all(&self, counts: &mut Array2<u32>, n_threads: usize) {
        let n_threads = n_threads.clamp(1, MAX_THREADS);
        let rows_per_thread = counts.nrows().div_ceil(n_threads).max(1);
        if n_threads == 1 {
            self.fill(0, counts.view_mut());
            return;
        }
        std::thread::scope(|scope| {
            for (i, chunk) in counts
                .axis_chunks_iter_mut(Axis(0), rows_per_thread)
                .enumerate()
            {
                scope.spawn(move || self.fill(i * rows_per_thread, chunk));
            }
        });
    }

    /// Fill `rows`, whose first row is cell `first_cell`. Cell `c` draws from its own stream
    /// `stream::COUNTS + c`, so the result does not depend on how rows are split among threads.
    fn fill(&self, first_cell: usize, mut rows: ArrayViewMut2<'_, u32>) {
        let n_genes = self.group_means.ncols();
        // Per-cell scratch: η_cg, then the relative means μ_gk e^{η_cg − max_g η_cg}.
        let mut eta = vec![0.0f64; n_genes];
        let mut rel = vec![0.0f64; n_genes];
        for (i, mut row) in rows.rows_mut().into_iter().enumerate() {
            let c = first_cell + i;
            let (Some(&k), Some(&l)) = (self.labels.get(c), self.lib_size.get(c)) else {
                continue;
            };
            let mut rng = stage_rng(self.seed, stream::COUNTS + c as u64);
            eta.fill(0.0);
            for (module, &a) in self.modules.iter().zip(self.activity.row(c)) {
                for &(g, w) in module {
                    if let Some(e) = eta.get_mut(g) {
                        *e += w * a;
                    }
                }
            }
            // Subtracting the maximum keeps exp from overflowing; the renormalisation below
            // cancels it.
            let eta_max = eta.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            for ((r, &e), &m) in rel.iter_mut().zip(&eta).zip(self.group_means.row(k)) {
                *r = m * (e - eta_max).exp();
            }
            let total: f64 = rel.iter().sum();
            let scale = if total > 0.0 && total.is_finite() {
                l / total
            } else {
                0.0
            };
            for ((y, &m), gamma) in row.iter_mut().zip(&rel).zip(self.noise) {
                let lambda = scale * m * gamma.sample(&mut rng);
                if let Some((shape, c0)) = self.dropout {
                    // p_drop = 1 / (1 + exp(k (ln λ − x0))) = 1 / (1 + (λ e^{−x0})^k); λ = 0 gives
                    // p_drop = 1. Drop iff u < p_drop, i.e. u (1 + t) < 1.
                    let t = if shape == 1.0 {
                        lambda * c0
                    } else {
                        (lambda * c0).powf(shape)
                    };
                    if rng.random::<f64>() * (1.0 + t) < 1.0 {
                        continue;
                    }
                }
                *y = poisson(lambda, &mut rng);
            }
        }
    }
}

/// One Poisson draw, 0 for a non-positive or NaN mean, saturating at `u32::MAX`.
fn poisson<R: Rng + ?Sized>(lambda: f64, rng: &mut R) -> u32 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 0;
    }
    if lambda >= u32::MAX as f64 {
        return u32::MAX;
    }
    match Poisson::new(lambda) {
        // `as` saturates: a draw above u32::MAX becomes u32::MAX.
        Ok(d) => d.sample(rng) as u32,
        Err(_) => 0,
    }
}

/// Split `n` into parts proportional to `proportions` by largest remainder: each part is
/// `floor(n π_k)` plus one for the groups with the largest fractional parts (ties to the lower
/// index) until the parts sum to `n`.
fn group_sizes(n: usize, proportions: &[f64]) -> Vec<usize> {
    let total: f64 = proportions.iter().sum();
    let exact: Vec<f64> = proportions.iter().map(|&q| n as f64 * q / total).collect();
    let mut sizes: Vec<usize> = exact.iter().map(|&x| x.floor() as usize).collect();
    let assigned: usize = sizes.iter().sum();
    let mut order: Vec<usize> = (0..proportions.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = exact[a] - exact[a].floor();
        let fb = exact[b] - exact[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &k in order.iter().cycle().take(n.saturating_sub(assigned)) {
        sizes[k] += 1;
    }
    sizes
}

/// Median of a non-empty slice (mean of the two middle values for an even length); 0 if empty.
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_normalize;
    use crate::params::LogisticDropout;
    use approx::assert_abs_diff_eq;

    fn small() -> SimParams {
        SimParams {
            n_cells: 300,
            n_genes: 200,
            ..SimParams::default()
        }
    }

    #[test]
    fn same_seed_same_counts_different_seed_different_counts() -> Result<()> {
        let a = simulate(&small())?;
        let b = simulate(&small())?;
        assert_eq!(a, b);
        let c = simulate(&SimParams {
            seed: 43,
            ..small()
        })?;
        assert_ne!(a.counts, c.counts);
        assert_ne!(a.labels, c.labels);
        Ok(())
    }

    #[test]
    fn shapes() -> Result<()> {
        let d = simulate(&small())?;
        assert_eq!(d.counts.dim(), (300, 200));
        assert_eq!(d.labels.len(), 300);
        assert_eq!(d.group_means.dim(), (3, 200));
        Ok(())
    }

    #[test]
    fn gene_level_draws_do_not_depend_on_n_cells() -> Result<()> {
        let a = simulate(&small())?;
        let b = simulate(&SimParams {
            n_cells: 50,
            ..small()
        })?;
        assert_eq!(a.group_means, b.group_means);
        assert_eq!(a.program_loadings, b.program_loadings);
        Ok(())
    }

    #[test]
    fn no_programs_and_zero_programs_agree() -> Result<()> {
        let none = simulate(&SimParams {
            programs: None,
            ..small()
        })?;
        let zero = simulate(&SimParams {
            programs: Some(GenePrograms {
                n_programs: 0,
                n_group_programs: 0,
                ..GenePrograms::default()
            }),
            ..small()
        })?;
        assert_eq!(none, zero);
        assert_eq!(none.program_loadings.dim(), (0, 200));
        assert_eq!(none.program_activity.dim(), (300, 0));
        // Programs reshape the counts; labels and group means come from other streams.
        let with = simulate(&small())?;
        assert_eq!(with.labels, none.labels);
        assert_eq!(with.group_means, none.group_means);
        assert_ne!(with.counts, none.counts);
        assert_eq!(with.program_activity.dim(), (300, 40));
        Ok(())
    }

    #[test]
    fn program_modules_and_strengths_follow_the_parameters() -> Result<()> {
        // Unit magnitudes and no signs: every loading of program j is exactly s_0 ρ^j.
        let g = GenePrograms {
            loading_scale: 0.0,
            down_prob: 0.0,
            ..GenePrograms::default()
        };
        let d = simulate(&SimParams {
            programs: Some(g),
            ..small()
        })?;
        assert_eq!(d.program_loadings.dim(), (g.n_programs, 200));
        for (j, row) in d.program_loadings.rows().into_iter().enumerate() {
            let loadings: Vec<f64> = row.iter().copied().filter(|&w| w != 0.0).collect();
            // round(0.04 · 200) genes per module.
            assert_eq!(loadings.len(), 8, "program {j}");
            let s_j = g.strength * g.decay.powi(j as i32);
            for w in loadings {
                assert_abs_diff_eq!(w, s_j, epsilon = 1e-12);
            }
        }
        Ok(())
    }

    /// Mean activity of each program (column) in each group, programs x groups.
    fn group_mean_activity(d: &SimData) -> Array2<f64> {
        let sizes = d.group_sizes();
        let mut means = Array2::<f64>::zeros((d.program_activity.ncols(), sizes.len()));
        for (row, &k) in d.program_activity.rows().into_iter().zip(&d.labels) {
            for (j, &a) in row.iter().enumerate() {
                means[[j, k]] += a / sizes[k] as f64;
            }
        }
        means
    }

    #[test]
    fn only_group_programs_have_group_dependent_activity() -> Result<()> {
        // 3000 cells (at least 600 per group): a group's mean of N(0, 1) activities has standard
        // error at most 1/√600 ≈ 0.04, so 0.2 is five standard errors.
        let p = SimParams {
            n_cells: 3000,
            n_genes: 20,
            programs: Some(GenePrograms {
                n_programs: 6,
                n_group_programs: 2,
                group_shift_scale: 3.0,
                ..GenePrograms::default()
            }),
            ..SimParams::default()
        };
        let means = group_mean_activity(&simulate(&p)?);
        for j in 0..6 {
            let row = means.row(j);
            let range = row.fold(f64::NEG_INFINITY, |m, &v| m.max(v))
                - row.fold(f64::INFINITY, |m, &v| m.min(v));
            if j < 2 {
                // Three draws of N(0, 9): a range under 0.5 is very unlikely (and the seed is fixed).
                assert!(range > 0.5, "program {j}: group means {row}");
            } else {
                assert!(row.iter().all(|m| m.abs() < 0.2), "program {j}: {row}");
            }
        }
        Ok(())
    }

    /// Pearson correlation of two equally long columns (0 if either is constant).
    fn correlation(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
        for (&x, &y) in a.iter().zip(b) {
            sab += (x - ma) * (y - mb);
            saa += (x - ma) * (x - ma);
            sbb += (y - mb) * (y - mb);
        }
        if saa > 0.0 && sbb > 0.0 {
            sab / (saa * sbb).sqrt()
        } else {
            0.0
        }
    }

    /// Mean pairwise correlation, over cells, of the log-normalised columns `genes`.
    fn mean_pairwise_correlation(x: &Array2<f32>, genes: &[usize]) -> f64 {
        let cols: Vec<Vec<f64>> = genes
            .iter()
            .map(|&g| x.column(g).iter().map(|&v| v as f64).collect())
            .collect();
        let (mut sum, mut n) = (0.0, 0);
        for i in 0..cols.len() {
            for j in 0..i {
                sum += correlation(&cols[i], &cols[j]);
                n += 1;
            }
        }
        sum / n.max(1) as f64
    }

    #[test]
    fn a_program_makes_its_genes_covary() -> Result<()> {
        // One program, all loadings +1 on 20 of 200 genes, no DE and no dropout. Without the
        // program the genes already covary a little (library size acts through the zeros), so
        // the same genes are compared with the program switched off.
        let program = GenePrograms {
            n_programs: 1,
            module_frac: 0.1,
            strength: 1.0,
            loading_scale: 0.0,
            down_prob: 0.0,
            n_group_programs: 0,
            ..GenePrograms::default()
        };
        let p = SimParams {
            n_cells: 1000,
            n_genes: 200,
            de_prob: 0.0,
            dropout: None,
            programs: Some(program),
            ..SimParams::default()
        };
        let with = simulate(&p)?;
        let without = simulate(&SimParams {
            programs: None,
            ..p
        })?;
        let x_with = log_normalize(with.counts.view(), 1e4);
        let x_without = log_normalize(without.counts.view(), 1e4);
        let (module, rest): (Vec<usize>, Vec<usize>) =
            (0..200).partition(|&g| with.program_loadings[[0, g]] != 0.0);
        assert_eq!(module.len(), 20);
        let inside = (
            mean_pairwise_correlation(&x_with, &module),
            mean_pairwise_correlation(&x_without, &module),
        );
        let outside = (
            mean_pairwise_correlation(&x_with, &rest[..40]),
            mean_pairwise_correlation(&x_without, &rest[..40]),
        );
        // Measured: inside 0.54 with vs 0.00 without; outside 0.03 vs 0.00. The renormalisation
        // scales all other genes of a cell by one factor, a weak compositional covariation.
        assert!(inside.0 > inside.1 + 0.3, "within the module: {inside:?}");
        assert!(
            outside.0 - outside.1 < 0.1,
            "outside the module: {outside:?}"
        );
        Ok(())
    }

    #[test]
    fn labels_cover_groups_in_requested_proportions_and_are_shuffled() -> Result<()> {
        // Default cells and groups; few genes keep the test fast (labels do not depend on genes).
        let d = simulate(&SimParams {
            n_genes: 5,
            ..SimParams::default()
        })?;
        assert_eq!(d.group_sizes(), vec![2250, 1750, 1000]);
        // Shuffled: not sorted by group.
        assert!(d.labels.windows(2).any(|w| w[0] > w[1]));
        // Each half of the rows holds each group in roughly its proportion (within 3 points).
        let half = &d.labels[..2500];
        for (k, &q) in [0.45, 0.35, 0.20].iter().enumerate() {
            let frac = half.iter().filter(|&&l| l == k).count() as f64 / half.len() as f64;
            assert!((frac - q).abs() < 0.03, "group {k}: {frac} vs {q}");
        }
        Ok(())
    }

    #[test]
    fn largest_remainder_sizes_sum_to_n() {
        assert_eq!(group_sizes(10, &[1.0 / 3.0; 3]), vec![4, 3, 3]);
        assert_eq!(group_sizes(7, &[0.5, 0.5]), vec![4, 3]);
        assert_eq!(group_sizes(1, &[0.2, 0.8]), vec![0, 1]);
        assert_eq!(
            group_sizes(5000, &[0.45, 0.35, 0.20]),
            vec![2250, 1750, 1000]
        );
    }

    #[test]
    fn default_sparsity_and_library_size_are_realistic() -> Result<()> {
        // Default genes (so the same gene means), 500 of the 5000 cells to keep the test fast.
        let d = simulate(&SimParams {
            n_cells: 500,
            ..SimParams::default()
        })?;
        let s = d.sparsity();
        assert!((0.60..=0.85).contains(&s), "sparsity {s}");
        let mean_total = d.counts.iter().map(|&x| x as f64).sum::<f64>() / d.counts.nrows() as f64;
        assert!(
            (1000.0..=10000.0).contains(&mean_total),
            "mean total {mean_total}"
        );
        Ok(())
    }

    #[test]
    fn dropout_adds_zeros() -> Result<()> {
        let with = simulate(&small())?;
        let without = simulate(&SimParams {
            dropout: None,
            ..small()
        })?;
        assert!(with.sparsity() > without.sparsity());
        let heavy = simulate(&SimParams {
            dropout: Some(LogisticDropout {
                midpoint: 3.0,
                shape: 1.0,
            }),
            ..small()
        })?;
        assert!(heavy.sparsity() > with.sparsity());
        Ok(())
    }

    #[test]
    fn no_de_means_identical_groups() -> Result<()> {
        let d = simulate(&SimParams {
            de_prob: 0.0,
            ..small()
        })?;
        for k in 1..3 {
            assert_eq!(d.group_means.row(k), d.group_means.row(0));
        }
        Ok(())
    }

    #[test]
    fn mean_count_follows_the_model_without_dropout() -> Result<()> {
        // Without dropout, E[Y_cg] = L_c μ_gk e^{η_cg} / Σ μ_g'k e^{η_cg'}, so a cell's expected
        // total is L_c whatever its program activities, and the mean total over cells is
        // E[L] = exp(m + s²/2). 2000 cells: relative error well under 3 %.
        let p = SimParams {
            n_cells: 2000,
            n_genes: 300,
            dropout: None,
            ..SimParams::default()
        };
        let d = simulate(&p)?;
        let mean_total = d.counts.iter().map(|&x| x as f64).sum::<f64>() / 2000.0;
        let expected = (p.lib_loc + p.lib_scale * p.lib_scale / 2.0).exp();
        approx::assert_relative_eq!(mean_total, expected, max_relative = 0.03);
        Ok(())
    }

    #[test]
    fn invalid_params_error_before_sampling() {
        let p = SimParams {
            group_proportions: vec![0.3, 0.3],
            ..small()
        };
        assert!(matches!(simulate(&p), Err(SimError::ProportionsSum { .. })));
        let p = SimParams {
            mean_shape: -0.6,
            ..small()
        };
        assert!(matches!(
            simulate(&p),
            Err(SimError::InvalidParam {
                name: "mean_shape",
                ..
            })
        ));
    }

    #[test]
    fn counts_do_not_depend_on_the_number_of_threads() -> Result<()> {
        let d = simulate(&small())?;
        let p = small().validate()?;
        // Rebuild the count stage's inputs: labels and means from the output, library sizes and
        // noise redrawn from their own streams.
        let lib_size = library_sizes(&p)?;
        let noise = gene_noise(&p)?;
        let modules = sparse_modules(&d.program_loadings);
        let sampler = CountSampler {
            seed: p.seed,
            labels: &d.labels,
            lib_size: &lib_size,
            group_means: &d.group_means,
            modules: &modules,
            activity: &d.program_activity,
            noise: &noise,
            dropout: p.dropout.map(|dr| (dr.shape, (-dr.midpoint).exp())),
        };
        for n_threads in [1, 3, 7] {
            let mut counts = Array2::<u32>::zeros((p.n_cells, p.n_genes));
            sampler.fill_all(&mut counts, n_threads);
            assert_eq!(counts, d.counts, "{n_threads} threads");
        }
        Ok(())
    }

    #[test]
    fn median_of_even_and_odd() {
        approx::assert_abs_diff_eq!(median(&[3.0, 1.0, 2.0]), 2.0, epsilon = 1e-12);
        approx::assert_abs_diff_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5, epsilon = 1e-12);
    }
}
