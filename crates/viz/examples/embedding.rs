//! Renders a typical embedding figure to `/tmp/embedding.png` (or the path
//! given as the first argument): the first two principal components of
//! synthetic cells in labelled clusters, original beside reconstructed, and
//! prints how long rendering took.
//!
//! `cargo run --release -p scae-viz --example embedding [-- out.png [points per panel [labels]]]`
//! (defaults: 2000 points, 3 labels named "group 0", "group 1", ...).

use std::path::PathBuf;
use std::time::Instant;

use scae_viz::{ScatterPanel, scatter_figure};

/// A splitmix64 stream of standard normal draws (Box-Muller), seeded.
fn normal(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (((z ^ (z >> 31)) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    move || (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .map_or_else(|| PathBuf::from("/tmp/embedding.png"), PathBuf::from);
    let n: usize = args.next().map_or(Ok(2000), |a| a.parse())?;
    let k: usize = args.next().map_or(Ok(3), |a| a.parse())?;

    // Clusters of unequal size and spread around a ring, sorted by label as
    // data often arrives; the reconstruction pulls cells towards their centre.
    let mut draw = normal(42);
    let mut original = ScatterPanel {
        title: "original".into(),
        x_label: "PC1 (23.4 % of variance)".into(),
        y_label: "PC2 (11.2 % of variance)".into(),
        ..ScatterPanel::default()
    };
    let mut reconstructed = ScatterPanel {
        title: "reconstructed".into(),
        ..original.clone()
    };
    let weights: Vec<f64> = (0..k).map(|i| 1.0 + (i % 3) as f64).collect();
    let total: f64 = weights.iter().sum();
    for j in 0..n {
        let mut cum = 0.0;
        let at = j as f64 / n as f64 * total;
        let label = weights
            .iter()
            .position(|w| {
                cum += w;
                at < cum
            })
            .unwrap_or(k - 1);
        let angle = std::f64::consts::TAU * label as f64 / k as f64;
        let (cx, cy) = (8.0 * angle.cos(), 5.0 * angle.sin());
        let spread = 1.0 + 0.5 * (label % 2) as f64;
        let (dx, dy) = (spread * draw(), spread * draw());
        original.x.push(cx + dx);
        original.y.push(cy + dy);
        original.labels.push(label);
        reconstructed.x.push(cx + 0.6 * dx + 0.3 * draw());
        reconstructed.y.push(cy + 0.6 * dy + 0.3 * draw());
        reconstructed.labels.push(label);
    }
    let names: Vec<String> = (0..k).map(|i| format!("group {i}")).collect();

    let start = Instant::now();
    scatter_figure(
        &path,
        "PCA of test cells (synthetic example)",
        &names,
        &[original, reconstructed],
    )?;
    println!(
        "wrote {} ({n} points per panel, {k} labels) in {:.0} ms",
        path.display(),
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
