//! The scVAE study's synthetic check (its section 3.2): 2000 samples of 10 independent Poisson
//! features with rates 1, 2, ..., 10; a VAE with one hidden layer of 7 units, latent 3 and a
//! Poisson likelihood, trained with Adam for 150 epochs. Does the decoder recover the rates?
//!
//! Writes `results/vae-synth/`: `history.png`/`.svg` (ELBO, log-likelihood and KL per epoch),
//! `rates.png`/`.svg` (the mean decoded rate per feature next to the true rate and the sample
//! mean), `rates.csv`, the model (`model.json`, `weights.safetensors`, `history.csv`),
//! `metrics.json` and `report.md`.

use std::fmt::Write as _;

use anyhow::{Result, bail};
use serde::Serialize;

use super::vae::{CountSplit, Simulate, VaeStudy, VaeSummary, load_counts, save_history_figure};
use super::{Run, RunArgs};
use crate::config::StudyConfig;
use crate::provenance::{Provenance, RunClock};

/// The acceptance bound: every decoded rate within this relative distance of the true rate.
pub const RATE_TOLERANCE: f64 = 0.05;

/// Latent draws per cell behind each cell's decoded rate.
pub const DECODE_SAMPLES: usize = 100;

/// One feature's rates.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureRate {
    pub feature: usize,
    pub true_rate: f64,
    /// Mean over every cell of the decoded rate, averaged over draws from the cell's posterior.
    pub decoded_rate: f64,
    /// Mean of the simulated counts.
    pub sample_mean: f64,
    /// `(decoded - true) / true`.
    pub relative_error: f64,
}

#[derive(Debug, Serialize)]
struct Metrics<'a> {
    provenance: Provenance,
    config: &'a VaeStudy,
    summary: VaeSummary,
    rates: &'a [FeatureRate],
    max_relative_error: f64,
    tolerance: f64,
    within_tolerance: bool,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let clock = RunClock::start();
    let cfg = VaeStudy::load(&args.config_path("vae-synth"))?;
    let Some(Simulate::IndependentPoisson { rates, .. }) = &cfg.simulate else {
        bail!(
            "{}: vae-synth needs a [simulate] table of kind \"independent-poisson\"",
            args.config_path("vae-synth").display()
        );
    };
    let data = load_counts(
        args,
        cfg.simulate.as_ref(),
        cfg.seed,
        scae_io::GeneChoice::All,
        scae_io::Reading::Memory,
        &[],
    )?;
    let run = Run::start(args, clock, "vae-synth", cfg.device, cfg.threads)?;
    let device = run.device;
    let split = CountSplit::new(data.matrix()?, cfg.test_fraction, cfg.seed)?;
    let model = super::vae::train(
        "synthetic",
        &cfg.model,
        &cfg.train,
        cfg.seed,
        &split,
        device,
    )?;
    let summary = model.summarize(&split, cfg.importance_samples, cfg.seed)?;

    let decoded = model.net.decoded_means(
        &split.all()?,
        model.chunk,
        DECODE_SAMPLES,
        cfg.seed ^ 0xdec0,
        None,
    )?;
    let cells = decoded.nrows() as f64;
    let sample_means = column_means(data.matrix()?);
    let table: Vec<FeatureRate> = rates
        .iter()
        .enumerate()
        .map(|(j, &true_rate)| {
            let decoded_rate = decoded.column(j).iter().map(|&v| f64::from(v)).sum::<f64>() / cells;
            let sample_mean = sample_means[j];
            FeatureRate {
                feature: j + 1,
                true_rate,
                decoded_rate,
                sample_mean,
                relative_error: (decoded_rate - true_rate) / true_rate,
            }
        })
        .collect();
    let max_err = table
        .iter()
        .map(|r| r.relative_error.abs())
        .fold(0.0, f64::max);
    for r in &table {
        tracing::info!(
            feature = r.feature,
            true_rate = r.true_rate,
            decoded = format!("{:.3}", r.decoded_rate),
            "decoded rate"
        );
    }

    model.save(run.path(), &crate::data::column_numbers(model.genes))?;
    let mut csv = String::from("feature,true_rate,decoded_rate,sample_mean,relative_error\n");
    for r in &table {
        let _ = writeln!(
            csv,
            "{},{},{},{},{}",
            r.feature, r.true_rate, r.decoded_rate, r.sample_mean, r.relative_error
        );
    }
    scae_io::write_atomic(&run.path().join("rates.csv"), |w| {
        std::io::Write::write_all(w, csv.as_bytes())
    })?;
    save_history_figure(
        run.path(),
        "history",
        &format!(
            "Synthetic Poisson data: VAE training ({} cells x {} features)",
            data.n_cells(),
            data.n_genes()
        ),
        &[(String::new(), &model.history)],
    )?;
    let categories: Vec<String> = table.iter().map(|r| format!("{}", r.feature)).collect();
    let bars = [
        scae_viz::BarSeries {
            label: "true rate λ".into(),
            values: table.iter().map(|r| r.true_rate).collect(),
            color: 0,
        },
        scae_viz::BarSeries {
            label: "mean decoded rate".into(),
            values: table.iter().map(|r| r.decoded_rate).collect(),
            color: 1,
        },
        scae_viz::BarSeries {
            label: "sample mean of the counts".into(),
            values: table.iter().map(|r| r.sample_mean).collect(),
            color: 2,
        },
    ];
    for ext in ["png", "svg"] {
        scae_viz::bar_figure(
            &run.path().join(format!("rates.{ext}")),
            "Synthetic Poisson data: decoded rate per feature vs the true rate",
            "feature",
            "Poisson rate",
            &categories,
            &bars,
        )?;
    }
    let report = report(&cfg, &summary, &table, max_err);
    run.write_report(&report)?;
    let metrics = Metrics {
        provenance: run.provenance(cfg.seed, &data.source),
        config: &cfg,
        summary,
        rates: &table,
        max_relative_error: max_err,
        tolerance: RATE_TOLERANCE,
        within_tolerance: max_err <= RATE_TOLERANCE,
    };
    let dest = run.finish(&metrics)?;
    eprintln!(
        "vae-synth: largest relative error of a decoded rate {:.2} % (bound {:.0} %); results in {}",
        100.0 * max_err,
        100.0 * RATE_TOLERANCE,
        dest.display()
    );
    Ok(())
}

fn report(cfg: &VaeStudy, s: &VaeSummary, table: &[FeatureRate], max_err: f64) -> String {
    let mut md = String::new();
    let m = &cfg.model;
    let _ = writeln!(md, "# The VAE's synthetic check\n");
    let _ = writeln!(
        md,
        "{} training and {} test cells of {} independent Poisson features. VAE: encoder {:?}, \
         latent {}, decoder {:?}, {} likelihood, Adam (learning rate {}, weight decay {}), {} epochs \
         of batch {}, seed {}.\n",
        s.train_cells,
        s.test_cells,
        table.len(),
        m.hidden,
        m.latent,
        m.decoder_widths(),
        m.likelihood.label(),
        cfg.train.learning_rate,
        cfg.train.weight_decay,
        s.epochs,
        cfg.train.batch_size,
        cfg.seed
    );
    let _ = writeln!(md, "## Decoded rates\n");
    let _ = writeln!(
        md,
        "The decoded rate of a cell is the Poisson rate the decoder gives, averaged over {DECODE_SAMPLES} \
         draws from the cell's posterior q(z | x) (the reconstruction the ELBO scores); the table \
         averages it over every cell.\n"
    );
    let _ = writeln!(
        md,
        "| feature | true rate | mean decoded rate | relative error | sample mean |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|");
    for r in table {
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {:+.2} % | {:.3} |",
            r.feature,
            r.true_rate,
            r.decoded_rate,
            100.0 * r.relative_error,
            r.sample_mean
        );
    }
    let verdict = if max_err <= RATE_TOLERANCE {
        "every decoded rate is within"
    } else {
        "NOT every decoded rate is within"
    };
    let _ = writeln!(
        md,
        "\nThe largest relative error is {:.2} %: {verdict} {:.0} % of its true rate.\n",
        100.0 * max_err,
        100.0 * RATE_TOLERANCE
    );
    let _ = writeln!(md, "![decoded rates](rates.png)\n");
    let _ = writeln!(md, "## Training\n");
    let _ = writeln!(
        md,
        "After {} epochs, per cell: test ELBO {:.4} = log-likelihood {:.4} - KL {:.4}; train ELBO \
         {:.4}.{} {:.3} s per epoch.\n",
        s.epochs,
        s.test_elbo,
        s.test_reconstruction,
        s.test_kl,
        s.final_train_elbo,
        s.test_log_px
            .map(|v| format!(
                " Importance-weighted log p(x) ({} samples): {v:.4}.",
                s.importance_samples
            ))
            .unwrap_or_default(),
        s.seconds_per_epoch
    );
    let _ = writeln!(md, "![history](history.png)");
    md
}

/// The mean count of each gene over every cell.
fn column_means(counts: &scae_io::CountMatrix) -> Vec<f64> {
    let mut sums = vec![0.0; counts.genes()];
    for (&v, (_, j)) in counts.csr() {
        sums[j] += f64::from(v);
    }
    let cells = counts.cells().max(1) as f64;
    sums.iter().map(|s| s / cells).collect()
}
