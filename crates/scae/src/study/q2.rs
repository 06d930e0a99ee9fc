//! Q2: reconstruction error and convergence of Q1's models.
//!
//! Reuses `results/q1` when its config and data fingerprint match the current
//! ones (else trains the models here, saying so). Writes `results/q2/`:
//! `metrics.json`, `summary.csv`, `convergence.png`/`.svg` and `report.md`,
//! whose every statement is computed from the measured numbers.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use scae_eval::ReconstructionError;
use serde::Serialize;

use super::ae::TrainedAe;
use super::{Prepared, RunArgs, parameter_count};
use crate::config::{AeStudy, Q2Config, StudyConfig};
use crate::data::Dataset;
use crate::provenance::{Provenance, RunClock};

/// Loss at one epoch.
#[derive(Debug, Clone, Serialize)]
pub struct Checkpoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub test_loss: f64,
}

/// First epoch within a fraction of the final test loss.
#[derive(Debug, Clone, Serialize)]
pub struct Within {
    pub fraction: f64,
    pub epoch: Option<usize>,
}

/// Everything Q2 measures of one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    pub latent: usize,
    pub parameters: usize,
    pub epochs: usize,
    pub train: ReconstructionError,
    pub test: ReconstructionError,
    pub final_test_loss: f64,
    pub within: Vec<Within>,
    pub checkpoints: Vec<Checkpoint>,
    /// (test loss 10 epochs before the end - final test loss) / final test loss.
    pub last10_relative_drop: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Metrics<'a> {
    provenance: Provenance,
    config: &'a Q2Config,
    models_config: &'a AeStudy,
    reused_q1: bool,
    reuse_note: String,
    models: &'a [ModelReport],
}

pub fn run(args: &RunArgs) -> Result<()> {
    let clock = RunClock::start();
    let cfg_path = args.config_path("q2");
    let cfg = Q2Config::load(&cfg_path)?;
    let models_path = cfg_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(&cfg.models);
    let study = AeStudy::load(&models_path)?;
    let started = super::Started::new(args, clock, ("q2", "q2"), &study, false)?;
    let (data, prepared, out, device) = (
        &started.data,
        &started.prepared,
        &started.run,
        started.run.device,
    );

    let q1_dir = args.root.join("results").join("q1");
    let (models, reused, note) =
        match super::reusable_q1(&q1_dir, &study, &study.latents, data, device) {
            Ok(models) => (
                models,
                true,
                format!("models reused from {}", q1_dir.display()),
            ),
            Err(why) => {
                tracing::info!("training Q1's models here: {why:#}");
                let models = super::q1::train_models(&study, prepared, &data.var_names, device)?;
                (models, false, format!("models trained by Q2 ({why:#})"))
            }
        };

    let reports = models
        .iter()
        .map(|m| measure(m, prepared, data, &cfg))
        .collect::<Result<Vec<_>>>()?;
    let panels = [
        train_or_test_panel(&models, true, study.loss.name()),
        train_or_test_panel(&models, false, study.loss.name()),
    ];
    for ext in ["png", "svg"] {
        scae_viz::line_figure(
            &out.path().join(format!("convergence.{ext}")),
            "Q2: convergence of the autoencoders by latent size",
            &panels,
        )?;
    }
    write_summary_csv(&out.path().join("summary.csv"), &reports)?;
    let report = report_markdown(&reports, &note, &study);
    scae_io::write_atomic(&out.path().join("report.md"), |w| {
        std::io::Write::write_all(w, report.as_bytes())
    })?;
    let metrics = Metrics {
        provenance: started.provenance(study.seed),
        config: &cfg,
        models_config: &study,
        reused_q1: reused,
        reuse_note: note,
        models: &reports,
    };
    let dest = started.run.finish(&metrics)?;
    eprintln!("Q2 results written to {}", dest.display());
    Ok(())
}

fn measure(
    m: &TrainedAe,
    prepared: &Prepared,
    data: &Dataset,
    cfg: &Q2Config,
) -> Result<ModelReport> {
    let train = scae_eval::reconstruction_error(
        data.rows(&prepared.split.train).view(),
        m.reconstruct(&prepared.train()?)?.view(),
    )?;
    let test = scae_eval::reconstruction_error(
        data.rows(&prepared.split.test).view(),
        m.reconstruct(&prepared.test()?)?.view(),
    )?;
    let tests = m.history.test_losses();
    let trains = m.history.train_losses();
    let final_test_loss = tests.last().copied().unwrap_or(f64::NAN);
    let within = cfg
        .within
        .iter()
        .map(|&fraction| Within {
            fraction,
            epoch: scae_eval::first_epoch_within(&tests, fraction),
        })
        .collect();
    let checkpoints = cfg
        .checkpoints
        .iter()
        .filter(|&&e| e <= tests.len())
        .map(|&epoch| Checkpoint {
            epoch,
            train_loss: trains[epoch - 1],
            test_loss: tests[epoch - 1],
        })
        .collect();
    let last10_relative_drop =
        (tests.len() > 10).then(|| (tests[tests.len() - 11] - final_test_loss) / final_test_loss);
    Ok(ModelReport {
        latent: m.meta.model.latent,
        parameters: parameter_count(&m.meta.model.encoder_widths(m.meta.input_dim)),
        epochs: tests.len(),
        train,
        test,
        final_test_loss,
        within,
        checkpoints,
        last10_relative_drop,
    })
}

fn train_or_test_panel(models: &[TrainedAe], train: bool, loss: &str) -> scae_viz::LinePanel {
    let series = models
        .iter()
        .enumerate()
        .map(|(i, m)| scae_viz::Series {
            label: format!("latent {}", m.meta.model.latent),
            x: m.history.epochs.iter().map(|e| e.epoch as f64).collect(),
            y: if train {
                m.history.train_losses()
            } else {
                m.history.test_losses()
            },
            color: i,
            dashed: !train,
        })
        .collect();
    let which = if train { "Training" } else { "Test" };
    scae_viz::LinePanel {
        title: format!("{which} loss"),
        x_label: "epoch".into(),
        y_label: format!("{loss} (log scale)"),
        log_y: true,
        series,
    }
}

fn write_summary_csv(path: &Path, reports: &[ModelReport]) -> Result<()> {
    let mut text = String::from(
        "latent,parameters,train_mse,test_mse,train_mse_nonzero,test_mse_nonzero,train_mse_zero,test_mse_zero\n",
    );
    for r in reports {
        let _ = writeln!(
            text,
            "{},{},{},{},{},{},{},{}",
            r.latent,
            r.parameters,
            r.train.all,
            r.test.all,
            r.train.nonzero,
            r.test.nonzero,
            r.train.zero,
            r.test.zero
        );
    }
    scae_io::write_atomic(path, |w| std::io::Write::write_all(w, text.as_bytes()))?;
    Ok(())
}

fn epoch_text(epoch: Option<usize>) -> String {
    epoch.map_or_else(|| "never".into(), |e| format!("epoch {e}"))
}

/// First epoch within the tightest fraction on which the models differ (falls back to the loosest).
fn speed_key(r: &ModelReport, fraction_index: usize) -> usize {
    r.within
        .get(fraction_index)
        .and_then(|w| w.epoch)
        .unwrap_or(usize::MAX)
}

/// The report: a table, then each discussion point answered from the numbers.
pub fn report_markdown(reports: &[ModelReport], note: &str, study: &AeStudy) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Q2: reconstruction error and convergence\n");
    let _ = writeln!(
        md,
        "Autoencoders genes -> {} -> latent -> {} -> genes with latent sizes {:?}, trained {} epochs with {} \
         (batch {}, learning rate {}), seed {}; {note}.\n",
        study
            .hidden
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(" -> "),
        study
            .hidden
            .iter()
            .rev()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(" -> "),
        study.latents,
        study.train.epochs,
        study.loss.name(),
        study.train.batch_size,
        study.train.learning_rate,
        study.seed,
    );
    let _ = writeln!(md, "![convergence](convergence.png)\n");
    let _ = writeln!(
        md,
        "## Reconstruction MSE (full reconstruction, every entry)\n"
    );
    let _ = writeln!(
        md,
        "| latent | parameters | train MSE | test MSE | test MSE, nonzero entries | test MSE, zero entries |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        let _ = writeln!(
            md,
            "| {} | {} | {:.5} | {:.5} | {:.5} | {:.5} |",
            r.latent, r.parameters, r.train.all, r.test.all, r.test.nonzero, r.test.zero
        );
    }
    let _ = writeln!(md, "\n## Convergence (test loss)\n");
    let mut header = String::from("| latent |");
    let mut rule = String::from("|---:|");
    for w in reports
        .first()
        .map(|r| r.within.as_slice())
        .unwrap_or_default()
    {
        let _ = write!(header, " within {:.0} % of final |", w.fraction * 100.0);
        rule.push_str("---:|");
    }
    for c in reports
        .first()
        .map(|r| r.checkpoints.as_slice())
        .unwrap_or_default()
    {
        let _ = write!(header, " test loss, epoch {} |", c.epoch);
        rule.push_str("---:|");
    }
    header.push_str(" final test loss | drop over last 10 epochs |");
    rule.push_str("---:|---:|");
    let _ = writeln!(md, "{header}\n{rule}");
    for r in reports {
        let mut row = format!("| {} |", r.latent);
        for w in &r.within {
            let _ = write!(row, " {} |", epoch_text(w.epoch));
        }
        for c in &r.checkpoints {
            let _ = write!(row, " {:.5} |", c.test_loss);
        }
        let drop = r
            .last10_relative_drop
            .map_or_else(|| "-".into(), |d| format!("{:.2} %", d * 100.0));
        let _ = write!(row, " {:.5} | {drop} |", r.final_test_loss);
        let _ = writeln!(md, "{row}");
    }
    if let (Some(small), Some(large)) = (
        reports.iter().min_by_key(|r| r.latent),
        reports.iter().max_by_key(|r| r.latent),
    ) && small.latent != large.latent
    {
        discuss(&mut md, small, large);
    }
    md
}

fn discuss(md: &mut String, small: &ModelReport, large: &ModelReport) {
    let (s, l) = (small.latent, large.latent);
    let _ = writeln!(md, "\n## Convergence speed\n");
    // Compare on the loosest threshold first, then tighter ones until the models differ.
    let n = small.within.len().min(large.within.len());
    let decisive = (0..n).find(|&i| speed_key(small, i) != speed_key(large, i));
    for i in 0..n {
        let _ = writeln!(
            md,
            "- Within {:.0} % of its own final test loss: latent {s} at {}, latent {l} at {}.",
            small.within[i].fraction * 100.0,
            epoch_text(small.within[i].epoch),
            epoch_text(large.within[i].epoch),
        );
    }
    for (cs, cl) in small.checkpoints.iter().zip(&large.checkpoints) {
        let lower = if cs.test_loss < cl.test_loss { s } else { l };
        let _ = writeln!(
            md,
            "- Epoch {}: test loss {:.5} (latent {s}) vs {:.5} (latent {l}); latent {lower} is lower.",
            cs.epoch, cs.test_loss, cl.test_loss
        );
    }
    let faster = decisive.map(|i| {
        if speed_key(small, i) < speed_key(large, i) {
            s
        } else {
            l
        }
    });
    match faster {
        Some(f) => {
            let slower = if f == s { l } else { s };
            let _ = writeln!(
                md,
                "\nMeasured relative to its own final value, latent {f} converges faster than latent {slower}."
            );
        }
        None => {
            let _ = writeln!(
                md,
                "\nBoth models reach every threshold at the same epoch: neither converges faster."
            );
        }
    }
    for r in [small, large] {
        if let Some(d) = r.last10_relative_drop {
            let moved = if d >= 0.0 { "still fell" } else { "rose" };
            let _ = writeln!(
                md,
                "Over its last 10 epochs the test loss of latent {} {moved} by {:.2} % of its final value.",
                r.latent,
                d.abs() * 100.0
            );
        }
    }

    let _ = writeln!(md, "\n## Latent size and reconstruction error\n");
    let better = if large.test.all < small.test.all {
        large
    } else {
        small
    };
    let worse = if better.latent == l { small } else { large };
    let gap = (worse.test.all - better.test.all) / worse.test.all * 100.0;
    let _ = writeln!(
        md,
        "Latent {} reaches the lower final test MSE: {:.5} against {:.5} for latent {} ({gap:.1} % lower); \
         on the training cells {:.5} against {:.5}.",
        better.latent,
        better.test.all,
        worse.test.all,
        worse.latent,
        better.train.all,
        worse.train.all
    );
    let _ = writeln!(
        md,
        "Generalisation gap (test minus train MSE): latent {s} {:+.5}, latent {l} {:+.5}.",
        small.test.all - small.train.all,
        large.test.all - large.train.all
    );
    let _ = writeln!(
        md,
        "\n*Capacity.* The code is the bottleneck: every reconstruction is a function of {s} numbers in one model \
         and {l} in the other. A linear autoencoder with a k-dimensional code can do no better than the best rank-k \
         approximation of the data (PCA with k components), so a wider code can keep more directions of variation \
         (cell-group structure first, then finer gene-gene covariation and part of the noise). Latent {l} has {} \
         parameters against {} for latent {s}.",
        large.parameters, small.parameters
    );
    let slower_but_better = faster.is_some_and(|f| f != better.latent);
    let _ = writeln!(
        md,
        "\n*Optimisation.* {}The extra latent dimensions capture directions of small variance, whose gradients are \
         small, so the last part of the error falls slowly; and a model whose final loss is lower has further to go, \
         so a threshold set relative to its own final value is reached later. A model with a narrower code saturates \
         its few directions early and then stops improving: it converges quickly, to a higher floor.",
        if slower_but_better {
            format!(
                "Here latent {} reaches the lower final MSE although it converges more slowly, as the assignment anticipates. ",
                better.latent
            )
        } else {
            format!(
                "Here latent {} both converges at least as fast and reaches the lower final MSE; the trade-off the \
                 assignment anticipates does not show in these runs. ",
                better.latent
            )
        }
    );
}
