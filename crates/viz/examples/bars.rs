//! Renders the two bar charts the studies draw, to `/tmp/bars.png` and
//! `/tmp/bars_elbo.png` (or `PATH` and `PATH` with `_elbo` before the
//! extension, given as the first argument): the mean decoded Poisson rate of
//! ten features beside the true rate, and a (negative) ELBO per likelihood.
//!
//! `cargo run -p scae-viz --example bars [-- out.svg]`

use std::path::PathBuf;

use scae_viz::{BarSeries, bar_figure};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("/tmp/bars.png"), PathBuf::from);
    let features: Vec<String> = (1..=10).map(|i| format!("feature {i}")).collect();
    let truth: Vec<f64> = (0..10).map(|i| 0.5 * 1.45f64.powi(i)).collect();
    // A deterministic misfit of a few per cent, as a trained decoder shows.
    let decoded = truth
        .iter()
        .enumerate()
        .map(|(i, l)| l * (1.0 + 0.08 * (1.9 * i as f64).sin()))
        .collect();
    bar_figure(
        &path,
        "Mean decoded Poisson rate per feature (synthetic example)",
        "feature",
        "rate λ (counts per cell)",
        &features,
        &[
            BarSeries {
                label: "true λ".into(),
                values: truth,
                color: 0,
            },
            BarSeries {
                label: "decoded mean rate".into(),
                values: decoded,
                color: 1,
            },
        ],
    )?;
    println!("wrote {}", path.display());

    let stem = path
        .file_stem()
        .map_or_else(Default::default, |s| s.to_string_lossy());
    let ext = path
        .extension()
        .map_or_else(Default::default, |s| s.to_string_lossy());
    let elbo_path = path.with_file_name(format!("{stem}_elbo.{ext}"));
    let likelihoods: Vec<String> = ["Poisson", "NB", "ZIP", "ZINB"].map(String::from).into();
    bar_figure(
        &elbo_path,
        "Test ELBO per likelihood (synthetic example)",
        "likelihood",
        "ELBO per cell",
        &likelihoods,
        &[
            BarSeries {
                label: "latent 10".into(),
                values: vec![-1043.2, -987.5, -1012.9, -979.4],
                color: 0,
            },
            BarSeries {
                label: "latent 50".into(),
                values: vec![-1030.8, -975.1, -1001.3, -970.6],
                color: 1,
            },
        ],
    )?;
    println!("wrote {}", elbo_path.display());
    Ok(())
}
