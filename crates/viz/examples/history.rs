//! Renders a typical training-history figure to `/tmp/history.png` (or the
//! path given as the first argument): train and test loss per epoch for two
//! latent sizes, on a linear and a log y-axis.
//!
//! `cargo run -p scae-viz --example history [-- out.svg]`

use std::path::PathBuf;

use scae_viz::{LinePanel, Series, line_figure};

/// A loss decaying from about `start` towards `floor`, with a little
/// deterministic wiggle so the curves look like real training.
fn curve(epochs: usize, start: f64, floor: f64, rate: f64, wiggle: f64) -> Vec<f64> {
    (1..=epochs)
        .map(|e| {
            let t = e as f64;
            floor
                + (start - floor) * (-rate * (t - 1.0)).exp()
                + wiggle * (1.7 * t).sin() / t.sqrt()
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("/tmp/history.png"), PathBuf::from);
    let n = 50;
    let series = vec![
        Series::per_epoch(
            "latent 10, train",
            &curve(n, 1.0, 0.36, 0.12, 0.004),
            0,
            false,
        ),
        Series::per_epoch(
            "latent 10, test",
            &curve(n, 1.02, 0.40, 0.10, 0.008),
            0,
            true,
        ),
        Series::per_epoch(
            "latent 50, train",
            &curve(n, 1.0, 0.30, 0.15, 0.004),
            1,
            false,
        ),
        Series::per_epoch(
            "latent 50, test",
            &curve(n, 1.03, 0.35, 0.12, 0.008),
            1,
            true,
        ),
    ];
    let linear = LinePanel {
        title: "Reconstruction loss".into(),
        x_label: "epoch".into(),
        y_label: "loss (negative log-likelihood per cell)".into(),
        log_y: false,
        series: series.clone(),
    };
    let log = LinePanel {
        title: "Reconstruction loss, log scale".into(),
        log_y: true,
        ..linear.clone()
    };
    line_figure(
        &path,
        "Autoencoder training history (synthetic example)",
        &[linear, log],
    )?;
    println!("wrote {}", path.display());
    Ok(())
}
