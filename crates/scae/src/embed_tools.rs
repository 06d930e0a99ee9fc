//! `scae pca` and `scae tsne`: the linear and non-linear 2-D views of any
//! matrix (expression, latent codes) as standalone commands on `.npy` files.
//!
//! Both read the matrix with `scae-io` (errors name the file), run the
//! `scae-eval` routine on a rayon pool of `--threads` threads, write the result
//! atomically, and print one JSON line on stdout with the seconds of the
//! computation alone (reading and writing excluded), so benchmarks can compare
//! it with other tools'.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use ndarray::Array2;
use scae_eval::{TsneInit, TsneMethod, TsneParams};
use serde_json::json;

use crate::config::resolve_threads;

#[derive(Debug, Clone, clap::Args)]
pub struct PcaArgs {
    /// Matrix to decompose (.npy, cells x features).
    pub input: PathBuf,
    /// Principal components to keep.
    #[arg(long, short = 'k', default_value_t = 50)]
    pub components: usize,
    /// Where to write the scores (.npy, cells x components, float32).
    #[arg(long)]
    pub out: PathBuf,
    /// CPU threads; 0 means every core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// `scae pca`: principal-component scores, with the explained-variance ratios.
pub fn pca(args: &PcaArgs) -> Result<()> {
    let x = scae_io::read_matrix(&args.input)?;
    let threads = resolve_threads(args.threads);
    let clock = Instant::now();
    let fit = scae_eval::with_threads(threads, || scae_eval::pca(x.view(), args.components))?
        .with_context(|| context(&args.input, "PCA", &x))?;
    let seconds = clock.elapsed().as_secs_f64();
    let scores: Array2<f32> = fit.scores.mapv(|v| v as f32);
    scae_io::write_npy(&args.out, &scores.view())?;
    let ratio = &fit.explained_variance_ratio;
    eprintln!(
        "{} components explain {:.1} % of the variance (first: {:.1} %); scores written to {}",
        ratio.len(),
        ratio.sum() * 100.0,
        ratio.first().copied().unwrap_or(0.0) * 100.0,
        args.out.display()
    );
    let line = json!({
        "command": "pca",
        "input": args.input,
        "cells": x.nrows(),
        "features": x.ncols(),
        "components": args.components,
        "threads": threads,
        "seconds": seconds,
        "explained_variance_ratio": ratio.to_vec(),
    });
    println!("{line}");
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct TsneArgs {
    /// Matrix to embed (.npy, cells x features); wider than --pca-components is reduced by PCA first.
    pub input: PathBuf,
    /// Where to write the embedding (.npy, cells x 2, float32).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = TsneParams::default().perplexity)]
    pub perplexity: f64,
    /// Repulsion approximation: barnes-hut or fft.
    #[arg(long, default_value_t = TsneParams::default().method)]
    pub method: TsneMethod,
    /// Barnes-Hut angle (barnes-hut only).
    #[arg(long, default_value_t = TsneParams::default().theta)]
    pub theta: f64,
    /// Total iterations, the early-exaggeration ones included.
    #[arg(long, default_value_t = TsneParams::default().n_iter)]
    pub n_iter: usize,
    /// Iterations with early exaggeration.
    #[arg(long, default_value_t = TsneParams::default().early_exaggeration_iter)]
    pub early_exaggeration_iter: usize,
    /// Learning rate (scikit-learn's units); default: the size-scaled "auto".
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// Inputs with more columns are reduced to this many principal components (0: never).
    #[arg(long, default_value_t = TsneParams::default().pca_components)]
    pub pca_components: usize,
    /// Start from random noise instead of the first two principal components.
    #[arg(long)]
    pub random_init: bool,
    /// Seed of the random start.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads; 0 means every core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Optimise on every thread too: faster, but runs are no longer bit-identical.
    #[arg(long)]
    pub nondeterministic: bool,
}

impl TsneArgs {
    fn params(&self) -> TsneParams {
        TsneParams {
            perplexity: self.perplexity,
            theta: self.theta,
            method: self.method,
            n_iter: self.n_iter,
            early_exaggeration_iter: self.early_exaggeration_iter,
            learning_rate: self.learning_rate,
            pca_components: self.pca_components,
            init: if self.random_init {
                TsneInit::Random
            } else {
                TsneInit::Pca
            },
            seed: self.seed,
            deterministic: !self.nondeterministic,
            ..TsneParams::default()
        }
    }
}

/// `scae tsne`: a 2-D t-SNE embedding of every row.
pub fn tsne(args: &TsneArgs) -> Result<()> {
    let params = args.params();
    params.validate().context("invalid t-SNE settings")?;
    let x = scae_io::read_matrix(&args.input)?;
    let threads = resolve_threads(args.threads);
    let clock = Instant::now();
    let fit = scae_eval::with_threads(threads, || scae_eval::tsne(x.view(), &params))?
        .with_context(|| context(&args.input, "t-SNE", &x))?;
    let seconds = clock.elapsed().as_secs_f64();
    scae_io::write_npy(&args.out, &fit.embedding.view())?;
    eprintln!(
        "t-SNE ({}) of {} cells in {seconds:.2} s; embedding written to {}",
        params.method,
        x.nrows(),
        args.out.display()
    );
    let line = json!({
        "command": "tsne",
        "input": args.input,
        "cells": x.nrows(),
        "features": x.ncols(),
        "threads": threads,
        "seconds": seconds,
        "params": params,
        "fit": fit,
    });
    println!("{line}");
    Ok(())
}

fn context(path: &Path, what: &str, x: &Array2<f32>) -> String {
    format!(
        "{}: {what} of the {} x {} matrix failed",
        path.display(),
        x.nrows(),
        x.ncols()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        tsne: TsneArgs,
    }

    #[test]
    fn tsne_defaults_are_the_library_defaults() {
        let args = Wrap::try_parse_from(["tsne", "x.npy", "--out", "y.npy"]).expect("parses");
        assert_eq!(args.tsne.params(), TsneParams::default());
    }

    #[test]
    fn tsne_flags_reach_the_params() {
        let args = Wrap::try_parse_from([
            "tsne",
            "x.npy",
            "--out",
            "y.npy",
            "--method",
            "fft",
            "--perplexity",
            "10",
            "--random-init",
            "--seed",
            "3",
            "--nondeterministic",
        ])
        .expect("parses");
        let p = args.tsne.params();
        assert_eq!(p.method, TsneMethod::Fft);
        assert_eq!(p.init, TsneInit::Random);
        assert_eq!((p.perplexity, p.seed, p.deterministic), (10.0, 3, false));
        assert!(
            Wrap::try_parse_from(["tsne", "x.npy", "--out", "y.npy", "--method", "exact"]).is_err()
        );
    }
}
