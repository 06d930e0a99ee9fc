//! Benchmarks: scae against the named peer, measured side by side in one run.
//!
//! `bench ae`: Q1's latent-10 autoencoder (50 epochs, batch 128, the same
//! split, loss, optimiser and thread count) trained by the release `scae`
//! binary and by PyTorch eager (`xtask/peers/ae_pytorch.py`, run by the
//! set-up's Python), alternating, several runs of each. Prints cells per
//! second of both, their ratio, and scae's GFLOP/s against this machine's
//! matrix-multiply rate measured in the same run. Writes `results/bench/ae.json`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::project::{self, project_root};
use crate::study;
use crate::torch::Libtorch;

#[derive(Debug, Subcommand)]
pub enum Which {
    /// Q1's latent-10 autoencoder, 50 epochs, batch 128: scae vs PyTorch eager.
    Ae {
        /// Runs of each side (alternating).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Threads for both sides (default: every core).
        #[arg(long)]
        threads: Option<usize>,
        /// Epochs per run.
        #[arg(long, default_value_t = 50)]
        epochs: usize,
    },
}

pub fn run(which: Which) -> Result<()> {
    match which {
        Which::Ae {
            runs,
            threads,
            epochs,
        } => ae(runs, threads, epochs),
    }
}

fn ae(runs: usize, threads: Option<usize>, epochs: usize) -> Result<()> {
    let torch = project::build_release()?;
    study::ensure_default_data(&torch, &[])?;
    let root = project_root();
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let work = root.join("target").join("bench").join("ae");
    let (latent, hidden, batch) = (10, 100, 128);
    let mut scae_runs = Vec::new();
    let mut torch_runs = Vec::new();
    for i in 1..=runs.max(1) {
        let out = work.join(format!("scae-run{i}"));
        let args: Vec<String> = [
            "--config",
            "configs/q1.toml",
            "--latent",
            "10",
            "--device",
            "cpu",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--epochs".into(),
            epochs.to_string(),
            "--threads".into(),
            threads.to_string(),
            "--out".into(),
            out.display().to_string(),
        ])
        .collect();
        eprintln!("run {i}: scae");
        study::scae(&torch, "train", &args)?;
        let metrics = read_json(&out.join("metrics.json"))?;
        scae_runs.push(metrics["summary"].clone());
        eprintln!("run {i}: PyTorch eager");
        let mut py = peer(&torch);
        py.arg("--data")
            .arg(root.join("data/counts.npy"))
            .arg("--test-indices")
            .arg(out.join("test_indices.npy"))
            .args([
                "--epochs",
                &epochs.to_string(),
                "--batch-size",
                &batch.to_string(),
            ])
            .args([
                "--latent",
                &latent.to_string(),
                "--hidden",
                &hidden.to_string(),
            ])
            .args(["--threads", &threads.to_string()]);
        torch_runs.push(json_output(&mut py)?);
    }
    let mut mm = peer(&torch);
    mm.args(["--matmul", "--threads", &threads.to_string()]);
    let matmul = json_output(&mut mm)?["matmul_gflops"]
        .as_f64()
        .context("matmul rate")?;

    let scae_cps = median(scae_runs.iter().map(|r| r["cells_per_second"].as_f64()))?;
    let torch_cps = median(torch_runs.iter().map(|r| r["cells_per_second"].as_f64()))?;
    let scae_mse = median(scae_runs.iter().map(|r| r["final_test_loss"].as_f64()))?;
    let torch_mse = median(torch_runs.iter().map(|r| r["final_test_loss"].as_f64()))?;
    let genes = read_json(&work.join("scae-run1/model.json"))?["input_dim"]
        .as_f64()
        .context("input_dim")?;
    // Multiply-adds of the weight matrices per cell: genes*hidden + hidden*latent, twice (encoder, decoder).
    let macs = 2.0 * (genes * hidden as f64 + (hidden * latent) as f64);
    // Training a cell costs a forward (2 FLOP per MAC) and a backward (4 FLOP per MAC).
    let scae_gflops = scae_cps * 6.0 * macs / 1e9;
    let torch_gflops = torch_cps * 6.0 * macs / 1e9;

    println!(
        "\nbench ae: latent {latent}, hidden {hidden}, batch {batch}, {epochs} epochs, {threads} threads, {} runs each",
        scae_runs.len()
    );
    println!(
        "{:>6} {:>16} {:>16} {:>14} {:>14}",
        "run", "scae cells/s", "torch cells/s", "scae test MSE", "torch test MSE"
    );
    for (i, (s, t)) in scae_runs.iter().zip(&torch_runs).enumerate() {
        println!(
            "{:>6} {:>16.0} {:>16.0} {:>14.6} {:>14.6}",
            i + 1,
            s["cells_per_second"].as_f64().unwrap_or(f64::NAN),
            t["cells_per_second"].as_f64().unwrap_or(f64::NAN),
            s["final_test_loss"].as_f64().unwrap_or(f64::NAN),
            t["final_test_loss"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!(
        "median  scae {scae_cps:.0} cells/s, PyTorch eager {torch_cps:.0} cells/s: ratio {:.2}x",
        scae_cps / torch_cps
    );
    println!(
        "final test MSE: scae {scae_mse:.6}, PyTorch {torch_mse:.6} ({:+.2} %)",
        (scae_mse - torch_mse) / torch_mse * 100.0
    );
    println!(
        "training arithmetic: scae {scae_gflops:.1} GFLOP/s, PyTorch {torch_gflops:.1} GFLOP/s; \
         matrix multiply (2048^3 sgemm) on this machine {matmul:.1} GFLOP/s: scae reaches {:.0} % of it",
        scae_gflops / matmul * 100.0
    );
    let report = json!({
        "benchmark": "ae",
        "latent": latent, "hidden": hidden, "batch_size": batch, "epochs": epochs, "threads": threads,
        "scae": scae_runs, "pytorch": torch_runs,
        "median_cells_per_second": {"scae": scae_cps, "pytorch": torch_cps},
        "ratio": scae_cps / torch_cps,
        "median_final_test_mse": {"scae": scae_mse, "pytorch": torch_mse},
        "gflops": {"scae": scae_gflops, "pytorch": torch_gflops, "matmul": matmul},
    });
    let path = root.join("results/bench/ae.json");
    std::fs::create_dir_all(path.parent().context("results/bench")?)?;
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("written to {}", path.display());
    Ok(())
}

/// The PyTorch peer script run by the set-up's Python.
fn peer(torch: &Libtorch) -> Command {
    let mut cmd = Command::new(&torch.python);
    cmd.arg(project_root().join("xtask/peers/ae_pytorch.py"));
    cmd
}

fn json_output(cmd: &mut Command) -> Result<Value> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "the PyTorch peer failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .last()
        .context("the PyTorch peer printed nothing")?;
    serde_json::from_str(last).with_context(|| format!("the PyTorch peer printed {last:?}"))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

fn median(values: impl Iterator<Item = Option<f64>>) -> Result<f64> {
    let mut v: Vec<f64> = values
        .collect::<Option<_>>()
        .context("a run reported no figure")?;
    if v.is_empty() {
        bail!("no runs");
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}
