//! Q1: train symmetric MSE autoencoders with each latent size of the config
//! (10 and 50 by default) and report their training and test histories.
//!
//! Writes `results/q1/`: `latent<N>/` per model (weights, `history.csv`,
//! `latent.npy` of every cell in input order), `history.png` and `.svg`, and
//! `metrics.json` with the resolved config and provenance.

use anyhow::Result;
use scae_viz::{LinePanel, Series};
use serde::Serialize;

use super::ae::{ModelMeta, TrainedAe};
use scae_models::ComputeDevice;

use super::{Prepared, RunArgs, parameter_count};
use crate::config::{AeStudy, StudyConfig};
use crate::provenance::{Provenance, RunClock};

/// One model's line in `metrics.json`.
#[derive(Debug, Serialize)]
pub struct ModelSummary {
    pub latent: usize,
    pub parameters: usize,
    pub final_train_loss: f64,
    pub final_test_loss: Option<f64>,
    pub train_seconds: f64,
    /// Training cells processed per second, over every epoch.
    pub cells_per_second: f64,
}

#[derive(Debug, Serialize)]
struct Metrics<'a> {
    provenance: Provenance,
    config: &'a AeStudy,
    test_cells: usize,
    train_cells: usize,
    models: Vec<ModelSummary>,
}

/// Trains one model per latent size of `cfg`.
pub fn train_models(
    cfg: &AeStudy,
    prepared: &Prepared,
    genes: &[String],
    device: ComputeDevice,
) -> Result<Vec<TrainedAe>> {
    let (train, test) = (prepared.train()?, prepared.test()?);
    cfg.latents
        .iter()
        .map(|&latent| {
            let meta = ModelMeta::new(cfg.model(latent), genes);
            super::ae::train(
                &format!("latent {latent}"),
                meta,
                &cfg.train,
                cfg.seed,
                &train,
                &test,
                device,
            )
        })
        .collect()
}

/// The summary of a trained model.
pub fn summarize(model: &TrainedAe, train_cells: usize) -> ModelSummary {
    let history = &model.history;
    let seconds: f64 = history.epochs.iter().map(|e| e.seconds).sum();
    let last = history.epochs.last();
    ModelSummary {
        latent: model.meta.model.latent,
        parameters: parameter_count(&model.meta.model.encoder_widths(model.meta.input_dim)),
        final_train_loss: last.map_or(f64::NAN, |e| e.train_loss),
        final_test_loss: last.and_then(|e| e.test_loss),
        train_seconds: seconds,
        cells_per_second: (history.epochs.len() * train_cells) as f64 / seconds.max(f64::EPSILON),
    }
}

/// The training (solid) and test (dashed) loss of every model, one colour per model.
pub fn history_panel(models: &[TrainedAe], title: &str, y_label: &str) -> LinePanel {
    let mut series = Vec::new();
    for (i, m) in models.iter().enumerate() {
        let epochs: Vec<f64> = m.history.epochs.iter().map(|e| e.epoch as f64).collect();
        let latent = m.meta.model.latent;
        series.push(Series {
            label: format!("latent {latent}, train"),
            x: epochs.clone(),
            y: m.history.train_losses(),
            color: i,
            dashed: false,
        });
        series.push(Series {
            label: format!("latent {latent}, test"),
            x: epochs,
            y: m.history.test_losses(),
            color: i,
            dashed: true,
        });
    }
    LinePanel {
        title: title.into(),
        x_label: "epoch".into(),
        y_label: y_label.into(),
        log_y: true,
        series,
    }
}

pub fn run(args: &RunArgs) -> Result<()> {
    let clock = RunClock::start();
    let cfg = AeStudy::load(&args.config_path("q1"))?;
    let started = super::Started::new(args, clock, ("q1", "q1"), &cfg, false)?;
    let (data, prepared, out) = (&started.data, &started.prepared, &started.run);
    let models = train_models(&cfg, prepared, &data.var_names, out.device)?;
    for m in &models {
        let dir = out.path().join(format!("latent{}", m.meta.model.latent));
        m.save_with_latent(&dir, &prepared.all())?;
    }
    super::write_test_indices(out.path(), &prepared.split)?;
    let loss = cfg.loss.name();
    let panel = history_panel(
        &models,
        &format!("{loss} loss per epoch"),
        &format!("{loss} (log scale)"),
    );
    let title = format!(
        "Q1: training and test history, {} cells x {} genes",
        data.x.nrows(),
        data.x.ncols()
    );
    for ext in ["png", "svg"] {
        scae_viz::line_figure(
            &out.path().join(format!("history.{ext}")),
            &title,
            std::slice::from_ref(&panel),
        )?;
    }
    let summaries: Vec<ModelSummary> = models
        .iter()
        .map(|m| summarize(m, prepared.split.train.len()))
        .collect();
    for s in &summaries {
        tracing::info!(
            latent = s.latent,
            train_loss = format!("{:.6}", s.final_train_loss),
            test_loss = format!("{:.6}", s.final_test_loss.unwrap_or(f64::NAN)),
            cells_per_second = format!("{:.0}", s.cells_per_second),
            "trained"
        );
    }
    let metrics = Metrics {
        provenance: started.provenance(cfg.seed),
        config: &cfg,
        train_cells: prepared.split.train.len(),
        test_cells: prepared.split.test.len(),
        models: summaries,
    };
    let dest = started.run.finish(&metrics)?;
    eprintln!("Q1 results written to {}", dest.display());
    Ok(())
}
