//! Parameters of the simulator, and their validation into a trusted type.
//!
//! [`SimParams`] is plain data with public fields (easy to build from a config or a test); its
//! [`Default`] is the project's default data set. [`SimParams::validate`] checks every field once
//! and returns a [`ValidSimParams`], the only thing the sampler accepts, so the sampler itself never
//! meets a bad parameter (parse, then validate: linfa `Params` -> `ValidParams`).
//!
//! The meaning of each field is given as the formula it enters; the full generative model is in
//! the [`simulate`](crate::simulate) docs and in `data/README.md`.

use crate::error::{Result, SimError};

/// Splatter-style logistic dropout: an entry is zeroed with probability
///
/// `p_drop(λ) = 1 / (1 + exp(shape · (ln λ − midpoint)))`
///
/// where `λ` is the entry's dispersed mean (see [`simulate`](crate::simulate)). A positive `shape`
/// makes dropout fall as expression rises; `p_drop(exp(midpoint)) = 0.5`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogisticDropout {
    /// `x0`: the log-mean at which half of the entries are dropped (any finite number).
    pub midpoint: f64,
    /// `k`: steepness of the logistic in log-mean units (finite, `> 0`).
    pub shape: f64,
}

/// Gene programs: modules of co-varying genes (cell cycle, stress, ribosomal, interferon, ...)
/// whose activity varies continuously from cell to cell, on top of the groups.
///
/// Program `j` (`0..n_programs`) owns a module `M_j` of `round(module_frac · n_genes)` genes (at
/// least 1), drawn without replacement independently of the other programs, so modules may
/// overlap. Gene `g ∈ M_j` has the loading `w_gj = ±|w|`, `|w| ~ LN(0, loading_scale)`, negative
/// with probability `down_prob`; `w_gj = 0` outside the module. Program `j` has the strength
/// `s_j = strength · decay^j`. Cell `c` in group `k` has the activity
///
/// `a_cj = m_jk + z_cj`, `z_cj ~ N(0, 1)`,
///
/// with a group-dependent mean `m_jk ~ N(0, group_shift_scale²)` for the first `n_group_programs`
/// programs and `m_jk = 0` for the others. The programs multiply the cell's gene means by
/// `exp(η_cg)`, `η_cg = Σ_j s_j w_gj a_cj`, before the mean is renormalised to the cell's library
/// size (see [`simulate`](crate::simulate)). The decay gives every dimension count its own share of
/// structure: the strongest programs dominate the first principal components, and the weaker ones
/// still stand above the noise between 10 and 50 components.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenePrograms {
    /// Number of programs (`0` is the same as no programs). Default 40.
    pub n_programs: usize,
    /// Fraction of the genes in each program's module, in `(0, 1]`. Default 0.04 (40 of 1000).
    pub module_frac: f64,
    /// Strength `s_0` of the first program (finite, `>= 0`). Default 0.8.
    pub strength: f64,
    /// Factor `ρ` between consecutive strengths, `s_j = s_0 ρ^j` (finite, `> 0`). Default 0.98
    /// (`s_9 ≈ 0.67`, `s_39 ≈ 0.36`).
    pub decay: f64,
    /// Log-scale of the loading magnitude `|w| ~ LN(0, loading_scale)` (finite, `>= 0`).
    /// Default 0.3.
    pub loading_scale: f64,
    /// Probability that a loading is negative (the gene goes down when the program is active),
    /// in `[0, 1]`. Default 0.2.
    pub down_prob: f64,
    /// Number of programs (the first ones) whose mean activity depends on the group, at most
    /// `n_programs`. Default 3.
    pub n_group_programs: usize,
    /// Standard deviation of those group-dependent mean activities `m_jk` (finite, `>= 0`).
    /// Default 1.0.
    pub group_shift_scale: f64,
}

impl Default for GenePrograms {
    fn default() -> Self {
        GenePrograms {
            n_programs: 40,
            module_frac: 0.04,
            strength: 0.8,
            decay: 0.98,
            loading_scale: 0.3,
            down_prob: 0.2,
            n_group_programs: 3,
            group_shift_scale: 1.0,
        }
    }
}

/// Every parameter of the generative model. `SimParams::default()` is the project's default data.
///
/// Notation: `c` cell, `g` gene, `k` group; `LN(m, s)` is the log-normal whose log has mean `m` and
/// standard deviation `s`; `Gamma(a, rate b)` has mean `a / b`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimParams {
    /// Number of cells (rows). Default 5000.
    pub n_cells: usize,
    /// Number of genes (columns). Default 1000.
    pub n_genes: usize,
    /// Fraction of cells in each group; one entry per group, each in (0, 1], summing to 1 within
    /// `1e-6`. Group sizes are these fractions of `n_cells` rounded by largest remainder, so they
    /// are exact rather than sampled. Default `[0.45, 0.35, 0.20]` (2250, 1750 and 1000 cells).
    pub group_proportions: Vec<f64>,
    /// Seed of the ChaCha8 generator (`ChaCha8Rng::seed_from_u64`). Default 42.
    pub seed: u64,

    /// Shape `a` of the base gene means `μ_g ~ Gamma(a, rate b)` (finite, `> 0`). Default 0.6.
    pub mean_shape: f64,
    /// Rate `b` of the base gene means `μ_g ~ Gamma(a, rate b)` (finite, `> 0`). Default 0.3.
    pub mean_rate: f64,
    /// Probability that a gene is a high-expression outlier, in `[0, 1]`. An outlier's base mean
    /// is replaced by `median_g(μ_g) · LN(outlier_loc, outlier_scale)`. Default 0.02.
    pub outlier_prob: f64,
    /// Log-location of the outlier factor (finite). Default 3.0 (about 20 times the median).
    pub outlier_loc: f64,
    /// Log-scale of the outlier factor (finite, `>= 0`). Default 0.5.
    pub outlier_scale: f64,

    /// Log-location `m` of the library size `L_c ~ LN(m, s)`, the expected total count of cell `c`
    /// before dropout (finite). Default `ln 4000` ≈ 8.294.
    pub lib_loc: f64,
    /// Log-scale `s` of the library size `L_c ~ LN(m, s)` (finite, `>= 0`). Default 0.2.
    pub lib_scale: f64,

    /// Probability that a gene is differentially expressed (DE) in a given group, in `[0, 1]`,
    /// drawn independently for every (gene, group). Default 0.18.
    pub de_prob: f64,
    /// Probability that a DE gene goes down (its factor is inverted), in `[0, 1]`. Default 0.5.
    pub de_down_prob: f64,
    /// Log-location of the DE factor `f ~ LN(de_fac_loc, de_fac_scale)` (finite). Default 0.6.
    pub de_fac_loc: f64,
    /// Log-scale of the DE factor (finite, `>= 0`). Default 0.4.
    pub de_fac_scale: f64,

    /// Common biological coefficient of variation `φ₀` (finite, `> 0`): the gene's inverse
    /// dispersion is `θ_g = 1 / (φ₀² · ν / X_g)` with `X_g ~ χ²(ν)`, so `E[1/θ_g] = φ₀² · ν/(ν−2)`.
    /// Default 0.5 (`θ ≈ 4`).
    pub bcv_common: f64,
    /// Degrees of freedom `ν` of the gene-wise BCV scatter (`> 0`; `f64::INFINITY` gives every gene
    /// the common `θ = 1/φ₀²`). Default 60.
    pub bcv_df: f64,

    /// Gene programs (continuous gene-gene covariation within and across groups), or `None` for
    /// none (genes are then independent given the group and the library size). Default
    /// [`GenePrograms::default()`].
    pub programs: Option<GenePrograms>,

    /// Logistic dropout, or `None` for no dropout. Default midpoint 1.5, shape 1.0.
    pub dropout: Option<LogisticDropout>,
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            n_cells: 5000,
            n_genes: 1000,
            group_proportions: vec![0.45, 0.35, 0.20],
            seed: 42,
            mean_shape: 0.6,
            mean_rate: 0.3,
            outlier_prob: 0.02,
            outlier_loc: 3.0,
            outlier_scale: 0.5,
            lib_loc: 4000f64.ln(),
            lib_scale: 0.2,
            de_prob: 0.18,
            de_down_prob: 0.5,
            de_fac_loc: 0.6,
            de_fac_scale: 0.4,
            bcv_common: 0.5,
            bcv_df: 60.0,
            programs: Some(GenePrograms::default()),
            dropout: Some(LogisticDropout {
                midpoint: 1.5,
                shape: 1.0,
            }),
        }
    }
}

/// A [`SimParams`] whose every field has been checked; only [`SimParams::validate`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSimParams(SimParams);

impl ValidSimParams {
    /// The checked parameters.
    pub fn params(&self) -> &SimParams {
        &self.0
    }

    /// Number of groups.
    pub fn n_groups(&self) -> usize {
        self.0.group_proportions.len()
    }
}

impl std::ops::Deref for ValidSimParams {
    type Target = SimParams;
    fn deref(&self) -> &SimParams {
        &self.0
    }
}

fn positive(name: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(SimError::InvalidParam {
            name,
            value,
            requirement: "finite and > 0",
        })
    }
}

fn non_negative(name: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(SimError::InvalidParam {
            name,
            value,
            requirement: "finite and >= 0",
        })
    }
}

fn finite(name: &'static str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(SimError::InvalidParam {
            name,
            value,
            requirement: "finite",
        })
    }
}

fn probability(name: &'static str, value: f64) -> Result<()> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(SimError::InvalidParam {
            name,
            value,
            requirement: "in [0, 1]",
        })
    }
}

impl SimParams {
    /// Check every field against the domain stated in its doc; the first violation is returned.
    pub fn validate(&self) -> Result<ValidSimParams> {
        if self.n_cells == 0 {
            return Err(SimError::ZeroCells);
        }
        if self.n_genes == 0 {
            return Err(SimError::ZeroGenes);
        }
        if self.group_proportions.is_empty() {
            return Err(SimError::NoGroups);
        }
        for (index, &value) in self.group_proportions.iter().enumerate() {
            if !(value.is_finite() && value > 0.0 && value <= 1.0) {
                return Err(SimError::BadProportion { index, value });
            }
        }
        let sum: f64 = self.group_proportions.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return Err(SimError::ProportionsSum {
                sum,
                proportions: self.group_proportions.clone(),
            });
        }
        positive("mean_shape", self.mean_shape)?;
        positive("mean_rate", self.mean_rate)?;
        probability("outlier_prob", self.outlier_prob)?;
        finite("outlier_loc", self.outlier_loc)?;
        non_negative("outlier_scale", self.outlier_scale)?;
        finite("lib_loc", self.lib_loc)?;
        non_negative("lib_scale", self.lib_scale)?;
        probability("de_prob", self.de_prob)?;
        probability("de_down_prob", self.de_down_prob)?;
        finite("de_fac_loc", self.de_fac_loc)?;
        non_negative("de_fac_scale", self.de_fac_scale)?;
        positive("bcv_common", self.bcv_common)?;
        if self.bcv_df.is_nan() || self.bcv_df <= 0.0 {
            return Err(SimError::InvalidParam {
                name: "bcv_df",
                value: self.bcv_df,
                requirement: "> 0 (or +infinity)",
            });
        }
        if let Some(g) = self.programs {
            if !(g.module_frac > 0.0 && g.module_frac <= 1.0) {
                return Err(SimError::InvalidParam {
                    name: "programs.module_frac",
                    value: g.module_frac,
                    requirement: "in (0, 1]",
                });
            }
            non_negative("programs.strength", g.strength)?;
            positive("programs.decay", g.decay)?;
            non_negative("programs.loading_scale", g.loading_scale)?;
            probability("programs.down_prob", g.down_prob)?;
            if g.n_group_programs > g.n_programs {
                return Err(SimError::InvalidParam {
                    name: "programs.n_group_programs",
                    value: g.n_group_programs as f64,
                    requirement: "at most programs.n_programs",
                });
            }
            non_negative("programs.group_shift_scale", g.group_shift_scale)?;
        }
        if let Some(d) = self.dropout {
            finite("dropout.midpoint", d.midpoint)?;
            positive("dropout.shape", d.shape)?;
        }
        Ok(ValidSimParams(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert!(SimParams::default().validate().is_ok());
    }

    #[test]
    fn zero_sizes_are_rejected() {
        let p = SimParams {
            n_cells: 0,
            ..SimParams::default()
        };
        assert_eq!(p.validate(), Err(SimError::ZeroCells));
        let p = SimParams {
            n_genes: 0,
            ..SimParams::default()
        };
        assert_eq!(p.validate(), Err(SimError::ZeroGenes));
        let p = SimParams {
            group_proportions: vec![],
            ..SimParams::default()
        };
        assert_eq!(p.validate(), Err(SimError::NoGroups));
    }

    #[test]
    fn proportions_must_sum_to_one() {
        let p = SimParams {
            group_proportions: vec![0.5, 0.4],
            ..SimParams::default()
        };
        assert!(matches!(p.validate(), Err(SimError::ProportionsSum { .. })));
        // Within tolerance is accepted.
        let p = SimParams {
            group_proportions: vec![0.5, 0.5 + 1e-8],
            ..SimParams::default()
        };
        assert!(p.validate().is_ok());
        let p = SimParams {
            group_proportions: vec![0.6, -0.2, 0.6],
            ..SimParams::default()
        };
        assert!(matches!(
            p.validate(),
            Err(SimError::BadProportion { index: 1, .. })
        ));
        let p = SimParams {
            group_proportions: vec![f64::NAN, 1.0],
            ..SimParams::default()
        };
        assert!(matches!(
            p.validate(),
            Err(SimError::BadProportion { index: 0, .. })
        ));
    }

    #[test]
    fn scalar_domains_are_checked() {
        let cases: Vec<(SimParams, &str)> = vec![
            (
                SimParams {
                    mean_shape: 0.0,
                    ..SimParams::default()
                },
                "mean_shape",
            ),
            (
                SimParams {
                    mean_rate: -1.0,
                    ..SimParams::default()
                },
                "mean_rate",
            ),
            (
                SimParams {
                    outlier_prob: 1.5,
                    ..SimParams::default()
                },
                "outlier_prob",
            ),
            (
                SimParams {
                    lib_scale: f64::NAN,
                    ..SimParams::default()
                },
                "lib_scale",
            ),
            (
                SimParams {
                    lib_loc: f64::INFINITY,
                    ..SimParams::default()
                },
                "lib_loc",
            ),
            (
                SimParams {
                    de_prob: -0.1,
                    ..SimParams::default()
                },
                "de_prob",
            ),
            (
                SimParams {
                    bcv_common: 0.0,
                    ..SimParams::default()
                },
                "bcv_common",
            ),
            (
                SimParams {
                    bcv_df: 0.0,
                    ..SimParams::default()
                },
                "bcv_df",
            ),
            (
                SimParams {
                    dropout: Some(LogisticDropout {
                        midpoint: 0.0,
                        shape: -1.0,
                    }),
                    ..SimParams::default()
                },
                "dropout.shape",
            ),
        ];
        for (p, expected) in cases {
            match p.validate() {
                Err(SimError::InvalidParam { name, .. }) => assert_eq!(name, expected),
                other => panic!("{expected}: expected InvalidParam, got {other:?}"),
            }
        }
    }

    #[test]
    fn program_domains_are_checked() {
        let with = |g: GenePrograms| SimParams {
            programs: Some(g),
            ..SimParams::default()
        };
        let d = GenePrograms::default();
        let cases: Vec<(GenePrograms, &str)> = vec![
            (
                GenePrograms {
                    module_frac: 0.0,
                    ..d
                },
                "programs.module_frac",
            ),
            (
                GenePrograms {
                    module_frac: 1.5,
                    ..d
                },
                "programs.module_frac",
            ),
            (
                GenePrograms {
                    strength: -0.1,
                    ..d
                },
                "programs.strength",
            ),
            (GenePrograms { decay: 0.0, ..d }, "programs.decay"),
            (
                GenePrograms {
                    loading_scale: f64::NAN,
                    ..d
                },
                "programs.loading_scale",
            ),
            (
                GenePrograms {
                    down_prob: 2.0,
                    ..d
                },
                "programs.down_prob",
            ),
            (
                GenePrograms {
                    n_programs: 2,
                    n_group_programs: 3,
                    ..d
                },
                "programs.n_group_programs",
            ),
            (
                GenePrograms {
                    group_shift_scale: f64::INFINITY,
                    ..d
                },
                "programs.group_shift_scale",
            ),
        ];
        for (g, expected) in cases {
            match with(g).validate() {
                Err(SimError::InvalidParam { name, .. }) => assert_eq!(name, expected),
                other => panic!("{expected}: expected InvalidParam, got {other:?}"),
            }
        }
        // No programs, zero programs and zero strength are all valid.
        assert!(
            SimParams {
                programs: None,
                ..SimParams::default()
            }
            .validate()
            .is_ok()
        );
        for g in [
            GenePrograms {
                n_programs: 0,
                n_group_programs: 0,
                ..d
            },
            GenePrograms { strength: 0.0, ..d },
        ] {
            assert!(with(g).validate().is_ok());
        }
    }

    #[test]
    fn infinite_df_and_no_dropout_are_allowed() {
        let p = SimParams {
            bcv_df: f64::INFINITY,
            dropout: None,
            ..SimParams::default()
        };
        assert!(p.validate().is_ok());
    }

    #[test]
    fn error_message_carries_values() {
        let p = SimParams {
            group_proportions: vec![0.5, 0.4],
            ..SimParams::default()
        };
        let msg = p
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("0.9"), "{msg}");
    }
}
