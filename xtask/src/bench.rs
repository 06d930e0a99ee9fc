//! Benchmarks: scae against the named peer, measured side by side in one run.
//!
//! `bench ae`: Q1's latent-10 autoencoder (50 epochs, batch 128, the same
//! split, loss, optimiser and thread count) trained by the release `scae`
//! binary and by PyTorch eager (`xtask/peers/ae_pytorch.py`, run by the
//! set-up's Python), alternating, several runs of each. Prints cells per
//! second of both, their ratio, and scae's GFLOP/s against this machine's
//! matrix-multiply rate measured in the same run. Writes `results/bench/ae.json`.
//!
//! `bench tsne`: t-SNE of 5000 cells of the default data, on its first 10 and
//! first 50 principal components (made once by `scae pca`), by `scae tsne`
//! (Barnes-Hut and FFT; deterministic, and with the optimisation parallel too), scikit-learn (`barnes_hut`, angle 0.5) and openTSNE
//! (its default, FFT) through `xtask/peers/tsne_peers.py`: perplexity 30, 750
//! iterations (250 exaggerated), PCA start, the same thread count. Every
//! embedding is scored by the same scikit-learn silhouette by label. Prints
//! seconds, the ratio to scae's default method and silhouettes; writes
//! `results/bench/tsne.json`.
//!
//! `bench pca`: `scae pca` against scikit-learn's PCA (`svd_solver` "auto" and
//! "full") on the 5000 x 1000 default data, same components and threads, with
//! the largest score difference up to sign; writes `results/bench/pca.json`.
//!
//! `bench vae`: the negative-binomial VAE of `configs/bench-vae.toml` (scVI's
//! default shape: one hidden layer of 128, latent 10, one dispersion per gene,
//! observed library size, batch 128, Adam 1e-3) trained by `scae vae` on every
//! gene of the raw counts of a 10x folder (default `../shared/data/worm_neuron`
//! beside the project), then scvi-tools' `SCVI(gene_likelihood="nb")` through
//! `xtask/peers/vae_scvi.py` on scae's own train/test split, the same epochs and
//! threads (scvi-tools is pip-installed into the set-up's Python when missing).
//! Both report seconds per epoch and, on the test cells with the full KL, the
//! ELBO, its reconstruction and KL terms and the importance-weighted log p(x),
//! per cell, higher is better. Prints the speed ratio (scvi-tools over scae)
//! and the ELBO gap; writes `results/bench/vae.json`.
//!
//! `bench vae-full`: the scVAE study's full size, simulated, trained by `scae vae` alone
//! (`configs/bench-fullsize.toml`); seconds per epoch and peak memory, in
//! `results/bench/vae-full.json`.
//!
//! `bench integrate`: on every multi-batch `.h5ad` of `../shared/data/batches`, `scae integrate`
//! (3 seeds: unintegrated PCA, the NB VAE without and with the batch, the GMVAE with it), then
//! scvi-tools' `SCVI` with `batch_key` on the same cells and genes and Harmony (`harmonypy`) on
//! the same PCA (`xtask/peers/integrate_peers.py`), both embeddings scored beside scae's by the
//! same scIB metrics in a second `scae integrate --embedding ...`; prints total, bio and batch
//! per method and seconds; writes `results/bench/integrate.json`.
//!
//! `bench scale` ([`scale`]): one epoch of the same NB VAE over 1.3 M simulated 10x-like cells x
//! 2,000 genes (about 90 % zeros, median library about 490) read from an `.h5ad`: `scae vae
//! --backed` against scvi-tools, with both sides' peak memory, scae's peak on 1.3 M against 130,000
//! cells, and `scae info` against `anndata.read_h5ad`; writes `results/bench/scale.json`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::project::{self, project_root};
use crate::study;
use crate::torch::{Libtorch, TORCH_VERSION};

mod dp;
mod scale;

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
    /// t-SNE of 5000 cells (10 and 50 PCs): scae (Barnes-Hut, FFT) vs scikit-learn and openTSNE.
    Tsne {
        /// Runs of each tool on each input (the fastest is reported).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Threads for every tool.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// PCA, 50 components of the 5000 x 1000 default data: scae vs scikit-learn.
    Pca {
        /// Runs of each side (the fastest is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Threads for both sides.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Components to keep.
        #[arg(long, default_value_t = 50)]
        components: usize,
    },
    /// NB VAE on the raw counts of a 10x folder: scae vs scvi-tools' SCVI, same split.
    Vae {
        /// Threads for both sides.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Training epochs of both sides.
        #[arg(long, default_value_t = 20)]
        epochs: usize,
        /// The 10x folder (default: ../shared/data/worm_neuron, relative to the project root).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// The scVAE study's full size, simulated (20,000 x 27,998, 92.8 % zeros): a Poisson VAE for
    /// 5 epochs (configs/bench-fullsize.toml); seconds per epoch and peak memory.
    VaeFull {
        /// libtorch threads (0: every core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// auto, cpu or cuda.
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Data-parallel training on this machine: 2 MPI ranks x 1 thread against 1 process x 2
    /// threads (cells per second, the all-reduce's time per step), on bench scale's simulated
    /// 130,000 x 2,000 cells and on worm_neuron (every gene).
    Dp {
        /// One file or 10x folder instead of the two default datasets.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Epochs per run (default: 1 on the simulated cells, 5 on worm_neuron, 2 on --data).
        #[arg(long)]
        epochs: Option<usize>,
        /// Runs of each configuration; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Batch integration on every multi-batch .h5ad of ../shared/data/batches: `scae integrate`
    /// (PCA, the VAE without and with the batch, the GMVAE with it) beside scvi-tools' SCVI with
    /// batch_key and Harmony on the same PCA, all scored by scae's scIB metrics in one run.
    Integrate {
        /// Threads for both sides.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// scVI's epochs (default: scvi-tools' own rule, 400 for these sizes).
        #[arg(long)]
        scvi_epochs: Option<usize>,
        /// A folder of multi-batch .h5ad files (obs `batch` and `cell_type`) instead of
        /// ../shared/data/batches.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// 1.3 M simulated 10x-like cells x 2,000 genes as .h5ad: one backed epoch of the NB VAE,
    /// scae vs scvi-tools' SCVI, with peak memory and the time to read the file.
    Scale {
        /// Cells of the large file (results/bench/cache/, simulated once).
        #[arg(long, default_value_t = 1_300_000)]
        cells: usize,
        /// Cells of the small file (the large one's first cells): scae's peak on it is the
        /// baseline of the peak comparison, and scvi-tools' slice when it is sliced.
        #[arg(long, default_value_t = 130_000)]
        small_cells: usize,
        /// Threads for both sides (default: every core).
        #[arg(long)]
        threads: Option<usize>,
        /// scvi-tools' epoch: the whole file, the small slice, or auto (the slice when a probe
        /// says the whole file would take over 15 minutes).
        #[arg(long, value_enum, default_value = "auto")]
        scvi: scale::ScviCells,
    },
}

pub fn run(which: Which) -> Result<()> {
    match which {
        Which::Ae {
            runs,
            threads,
            epochs,
        } => ae(runs, threads, epochs),
        Which::Tsne { runs, threads } => tsne(runs.max(1), threads),
        Which::Pca {
            runs,
            threads,
            components,
        } => pca(runs.max(1), threads, components),
        Which::Vae {
            threads,
            epochs,
            data,
        } => vae(threads.max(1), epochs.max(1), data),
        Which::VaeFull { threads, device } => vae_full(threads, &device),
        Which::Integrate {
            threads,
            scvi_epochs,
            data,
        } => integrate(threads, scvi_epochs, data),
        Which::Dp { data, epochs, runs } => dp::run(data, epochs, runs),
        Which::Scale {
            cells,
            small_cells,
            threads,
            scvi,
        } => scale::run(
            cells,
            small_cells,
            threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .max(1),
            scvi,
        ),
    }
}

/// `bench vae-full`: `scae vae` on the simulated full-size data; its summary goes to
/// `results/bench/vae-full.json`.
fn vae_full(threads: usize, device: &str) -> Result<()> {
    let torch = project::build_release()?;
    let out = project_root().join("target/bench/vae-full");
    let args: Vec<String> = [
        "--config",
        "configs/bench-fullsize.toml",
        "--device",
        device,
        "--threads",
        &threads.to_string(),
        "--out",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    study::scae(&torch, "vae", &args)?;
    let metrics = read_json(&out.join("metrics.json"))?;
    let summary = &metrics["summary"];
    let epochs: Vec<f64> = metrics["history"]["epochs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["seconds"].as_f64())
        .collect();
    let finite = metrics["history"]["epochs"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| e["train_loss"].as_f64().is_some_and(f64::is_finite));
    println!(
        "full size ({} cells x {} genes, {}): {:.2} s per epoch (epochs: {}), peak memory {} MiB, \
         every loss finite: {finite}",
        metrics["provenance"]["data"]["cells"],
        metrics["provenance"]["data"]["genes"],
        metrics["provenance"]["device"].as_str().unwrap_or("?"),
        summary["seconds_per_epoch"].as_f64().unwrap_or(f64::NAN),
        epochs
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        metrics["peak_rss_mib"]
            .as_f64()
            .map_or_else(|| "?".into(), |m| format!("{m:.0}")),
    );
    write_report(
        "vae-full",
        &json!({
            "provenance": provenance(),
            "data": metrics["provenance"]["data"],
            "device": metrics["provenance"]["device"],
            "threads": metrics["provenance"]["threads"],
            "summary": summary,
            "epoch_seconds": epochs,
            "peak_rss_mib": metrics["peak_rss_mib"],
            "every_loss_finite": finite,
        }),
    )
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
    // The model card lists the genes the autoencoder reads.
    let genes = read_json(&work.join("scae-run1/model.json"))?["genes"]
        .as_array()
        .context("model.json: genes")?
        .len() as f64;
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

/// scae's t-SNE runs: table label, method, extra flags. The first is scae's
/// default (`TsneMethod`'s default, deterministic: the optimisation on one
/// thread); the `parallel` ones optimise on every thread of `--threads` too.
const SCAE_TSNE_RUNS: [(&str, &str, &[&str]); 4] = [
    ("scae barnes-hut", "barnes-hut", &[]),
    ("scae fft", "fft", &[]),
    ("scae barnes-hut par", "barnes-hut", &["--nondeterministic"]),
    ("scae fft par", "fft", &["--nondeterministic"]),
];

fn tsne(runs: usize, threads: usize) -> Result<()> {
    let torch = project::build_release()?;
    study::ensure_default_data(&torch, &[])?;
    ensure_python_peers(&torch)?;
    let root = project_root();
    let work = root.join("target/bench/tsne");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let counts = root.join("data/counts.npy");
    let labels = root.join("data/labels.txt");
    let threads_arg = threads.to_string();

    // The inputs: the first 10 and 50 principal components, written once.
    let mut inputs = Vec::new();
    for k in [10, 50] {
        let path = work.join(format!("pcs{k}.npy"));
        scae_json(
            &torch,
            &[
                "pca".as_ref(),
                counts.as_os_str(),
                "--components".as_ref(),
                k.to_string().as_ref(),
                "--threads".as_ref(),
                threads_arg.as_ref(),
                "--out".as_ref(),
                path.as_os_str(),
            ],
        )?;
        inputs.push((format!("{k} PCs"), path));
    }

    // (tool, input, seconds of each run, embedding file, extra figures)
    let mut rows: Vec<(String, String, Vec<f64>, std::path::PathBuf, Value)> = Vec::new();
    for (name, input) in &inputs {
        for (label, method, flags) in SCAE_TSNE_RUNS {
            let out = work.join(format!("{}-{}.npy", label.replace(' ', "-"), stem(input)));
            let mut secs = Vec::new();
            let mut last = Value::Null;
            for run in 1..=runs {
                eprintln!("{name}: {label}, run {run}");
                last = scae_json(
                    &torch,
                    &[
                        "tsne".as_ref(),
                        input.as_os_str(),
                        "--method".as_ref(),
                        method.as_ref(),
                        "--threads".as_ref(),
                        threads_arg.as_ref(),
                        "--out".as_ref(),
                        out.as_os_str(),
                    ]
                    .into_iter()
                    .chain(flags.iter().map(|f| f.as_ref()))
                    .collect::<Vec<_>>(),
                )?;
                secs.push(
                    last["seconds"]
                        .as_f64()
                        .context("scae reported no seconds")?,
                );
            }
            rows.push((
                label.to_string(),
                name.clone(),
                secs,
                out,
                last["fit"].clone(),
            ));
        }
        for tool in ["opentsne", "sklearn"] {
            let out = work.join(format!("{tool}-{}.npy", stem(input)));
            let mut secs = Vec::new();
            let mut last = Value::Null;
            for run in 1..=runs {
                eprintln!("{name}: {tool}, run {run}");
                let mut py = python_peer(&torch, "tsne_peers.py", threads);
                py.args(["tsne", "--tool", tool, "--threads", &threads_arg])
                    .arg("--input")
                    .arg(input)
                    .arg("--out")
                    .arg(&out);
                last = json_output(&mut py)?;
                secs.push(
                    last["seconds"]
                        .as_f64()
                        .context("the peer reported no seconds")?,
                );
            }
            let label = if tool == "sklearn" {
                "scikit-learn"
            } else {
                "openTSNE"
            };
            rows.push((label.to_string(), name.clone(), secs, out, last));
        }
    }

    eprintln!("scoring {} embeddings", rows.len());
    let mut score = python_peer(&torch, "tsne_peers.py", threads);
    score
        .args(["score", "--threads", &threads_arg, "--labels"])
        .arg(&labels)
        .args(rows.iter().map(|r| &r.3));
    let scores = json_output(&mut score)?;
    let silhouette = |path: &Path| scores["silhouette"][path.display().to_string()].as_f64();

    println!(
        "\nbench tsne: 5000 cells, perplexity 30, 750 iterations (250 exaggerated), PCA start, \
         {threads} threads, fastest of {runs} run(s); ratio = seconds / {}'s (scae's default)",
        SCAE_TSNE_RUNS[0].0
    );
    println!(
        "{:<20} {:<7} {:>9} {:>8} {:>11} {:>7}",
        "tool", "input", "seconds", "ratio", "silhouette", "KL"
    );
    let mut table = Vec::new();
    for (name, _) in &inputs {
        let ours = rows
            .iter()
            .find(|r| &r.1 == name && r.0 == SCAE_TSNE_RUNS[0].0)
            .map(|r| fastest(&r.2))
            .context("scae's run")?;
        for (tool, input, secs, out, extra) in rows.iter().filter(|r| &r.1 == name) {
            let seconds = fastest(secs);
            let sil = silhouette(out);
            let kl = extra["kl_divergence"].as_f64();
            println!(
                "{tool:<20} {input:<7} {seconds:>9.2} {:>7.2}x {:>11.4} {:>7.3}",
                seconds / ours,
                sil.unwrap_or(f64::NAN),
                kl.unwrap_or(f64::NAN)
            );
            table.push(json!({
                "tool": tool, "input": input, "seconds": seconds, "runs": secs,
                "ratio_to_scae": seconds / ours, "silhouette": sil, "kl_divergence": kl,
                "embedding": out, "details": extra,
            }));
        }
    }
    // The acceptance comparison: openTSNE's time over scae's at the same thread count (scae's
    // optimisation on every thread), and over scae's deterministic default (optimisation on one
    // thread, bit-identical between runs).
    let mut verdicts = Vec::new();
    for (name, _) in &inputs {
        let time = |tool: &str| {
            rows.iter()
                .find(|r| &r.1 == name && r.0 == tool)
                .map(|r| fastest(&r.2))
        };
        let sil = |tool: &str| {
            rows.iter()
                .find(|r| &r.1 == name && r.0 == tool)
                .and_then(|r| silhouette(&r.3))
        };
        let (Some(open), Some(sk), Some(par), Some(default)) = (
            time("openTSNE"),
            time("scikit-learn"),
            time(SCAE_TSNE_RUNS[2].0),
            time(SCAE_TSNE_RUNS[0].0),
        ) else {
            continue;
        };
        let gap = (sil(SCAE_TSNE_RUNS[2].0).unwrap_or(f64::NAN)
            - sil("openTSNE").unwrap_or(f64::NAN))
        .abs();
        println!(
            "{name}: at {threads} threads scae is {:.1}x faster than openTSNE (target 5x) and {:.1}x faster than \
             scikit-learn; silhouette differs from openTSNE's by {gap:.3} (target 0.05). Deterministic default: \
             {:.1}x openTSNE.",
            open / par,
            sk / par,
            open / default,
        );
        verdicts.push(json!({
            "input": name, "opentsne_over_scae_same_threads": open / par,
            "sklearn_over_scae_same_threads": sk / par, "opentsne_over_scae_deterministic": open / default,
            "silhouette_gap_to_opentsne": gap,
        }));
    }
    let report = json!({
        "benchmark": "tsne",
        "verdicts": verdicts,
        "cells": 5000, "perplexity": 30, "n_iter": 750, "early_exaggeration_iter": 250,
        "init": "pca", "threads": threads, "runs": runs,
        "scae_default": SCAE_TSNE_RUNS[0].0,
        "silhouette": "sklearn.metrics.silhouette_score by label, Euclidean, all cells",
        "provenance": provenance(),
        "results": table,
    });
    write_report("tsne", &report)
}

fn pca(runs: usize, threads: usize, components: usize) -> Result<()> {
    let torch = project::build_release()?;
    study::ensure_default_data(&torch, &[])?;
    ensure_python_peers(&torch)?;
    let root = project_root();
    let work = root.join("target/bench/pca");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let counts = root.join("data/counts.npy");
    let scores = work.join("scae-scores.npy");
    let mut secs = Vec::new();
    for run in 1..=runs {
        eprintln!("scae pca, run {run}");
        let line = scae_json(
            &torch,
            &[
                "pca".as_ref(),
                counts.as_os_str(),
                "--components".as_ref(),
                components.to_string().as_ref(),
                "--threads".as_ref(),
                threads.to_string().as_ref(),
                "--out".as_ref(),
                scores.as_os_str(),
            ],
        )?;
        secs.push(
            line["seconds"]
                .as_f64()
                .context("scae reported no seconds")?,
        );
    }
    let ours = fastest(&secs);
    eprintln!("scikit-learn PCA, {runs} runs per solver");
    let mut py = python_peer(&torch, "tsne_peers.py", threads);
    py.args(["pca", "--threads", &threads.to_string()])
        .args([
            "--components",
            &components.to_string(),
            "--runs",
            &runs.to_string(),
        ])
        .arg("--input")
        .arg(&counts)
        .arg("--scae-scores")
        .arg(&scores);
    let peer = json_output(&mut py)?;

    println!(
        "\nbench pca: 5000 x 1000 default data, {components} components, {threads} threads, fastest of {runs} runs; \
         ratio = seconds / scae's"
    );
    println!(
        "{:<32} {:>9} {:>8} {:>18} {:>18}",
        "tool", "seconds", "ratio", "max|diff| 50 PCs", "max|diff| 10 PCs"
    );
    println!(
        "{:<32} {ours:>9.3} {:>7.2}x {:>18} {:>18}",
        "scae (exact, faer eigh)", 1.0, "-", "-"
    );
    let mut sk = Vec::new();
    for solver in ["auto", "full"] {
        let entry = &peer[solver];
        let seconds = entry["seconds"].as_f64().context("peer seconds")?;
        let used = entry["solver_used"].as_str().unwrap_or(solver);
        println!(
            "{:<32} {seconds:>9.3} {:>7.2}x {:>18.2e} {:>18.2e}",
            format!("scikit-learn {solver} ({used})"),
            seconds / ours,
            entry["max_abs_diff"].as_f64().unwrap_or(f64::NAN),
            entry["max_abs_diff_first10"].as_f64().unwrap_or(f64::NAN)
        );
        sk.push(json!({"svd_solver": solver, "ratio_to_scae": seconds / ours, "result": entry}));
    }
    let report = json!({
        "benchmark": "pca",
        "data": "data/counts.npy (5000 x 1000, log-normalised)",
        "components": components, "threads": threads, "runs": runs,
        "scae": {"seconds": ours, "runs": secs},
        "scikit_learn": sk,
        "max_abs_diff": "largest |sklearn score - scae score| after matching each component's sign",
        "provenance": provenance(),
    });
    write_report("pca", &report)
}

fn vae(threads: usize, epochs: usize, data: Option<PathBuf>) -> Result<()> {
    let root = project_root();
    let data = data.unwrap_or_else(|| root.join("../shared/data/worm_neuron"));
    if !data.is_dir() {
        bail!(
            "bench vae needs the 10x folder {} (matrix.mtx.gz, features.tsv.gz, barcodes.tsv.gz), \
             which does not exist; pass another with --data DIR",
            data.display()
        );
    }
    let data = data.canonicalize().unwrap_or(data);
    let torch = project::build_release()?;
    ensure_scvi(&torch)?;
    let work = root.join("target/bench/vae");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let out = work.join("scae");
    let (threads_arg, epochs_arg) = (threads.to_string(), epochs.to_string());

    eprintln!("scae vae: {epochs} epochs, {threads} threads");
    let args: Vec<String> = [
        "--config",
        "configs/bench-vae.toml",
        "--device",
        "cpu",
        "--threads",
        &threads_arg,
        "--epochs",
        &epochs_arg,
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--data".into(),
        data.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ])
    .collect();
    study::scae(&torch, "vae", &args)?;
    let ours = read_json(&out.join("metrics.json"))?["summary"].clone();
    let test_cells = out.join("test_cells.txt");
    if !test_cells.is_file() {
        bail!("{}: scae vae wrote no test split", test_cells.display());
    }

    eprintln!(
        "scvi-tools: {epochs} epochs, {threads} threads, then log p(x) of the test cells (a few minutes)"
    );
    let peer_out = work.join("scvi.json");
    let mut py = python_peer(&torch, "vae_scvi.py", threads);
    py.arg("--data")
        .arg(&data)
        .arg("--test-cells")
        .arg(&test_cells)
        .args(["--epochs", &epochs_arg, "--threads", &threads_arg])
        .arg("--out")
        .arg(&peer_out);
    let theirs = json_output(&mut py)?;

    for key in ["train_cells", "test_cells", "genes"] {
        if ours[key].as_u64() != theirs[key].as_u64() {
            bail!(
                "the two sides did not see the same data: {key} is {} for scae and {} for scvi-tools",
                ours[key],
                theirs[key]
            );
        }
    }
    let figure = |side: &Value, key: &str| side[key].as_f64();
    let need = |side: &Value, key: &str, who: &str| {
        figure(side, key).with_context(|| format!("{who} reported no {key}"))
    };
    // Like for like: scvi-tools trains without a validation set here, so its epochs are training
    // steps alone; scae's epochs also score the test cells, which is timed apart.
    let (our_spe, their_spe) = (
        need(&ours, "train_seconds_per_epoch", "scae")?,
        need(&theirs, "seconds_per_epoch", "scvi-tools")?,
    );
    let (our_elbo, their_elbo) = (
        need(&ours, "test_elbo", "scae")?,
        need(&theirs, "test_elbo", "scvi-tools")?,
    );
    let ratio = their_spe / our_spe;
    let gap = (our_elbo - their_elbo) / their_elbo.abs();

    println!(
        "\nbench vae: {} ({} genes; {} train, {} test cells), NB, latent 10, hidden 128, batch 128, \
         {epochs} epochs, {threads} threads; test figures per cell, full KL, higher is better",
        data.display(),
        ours["genes"],
        ours["train_cells"],
        ours["test_cells"]
    );
    println!(
        "{:<12} {:>10} {:>12} {:>12} {:>9} {:>12}",
        "tool", "s/epoch", "test ELBO", "recon", "KL", "log p(x)"
    );
    for (name, side, key) in [
        ("scae", &ours, "train_seconds_per_epoch"),
        ("scvi-tools", &theirs, "seconds_per_epoch"),
    ] {
        let f = |key: &str| figure(side, key).unwrap_or(f64::NAN);
        println!(
            "{name:<12} {:>10.3} {:>12.2} {:>12.2} {:>9.2} {:>12.2}",
            f(key),
            f("test_elbo"),
            f("test_reconstruction"),
            f("test_kl"),
            f("test_log_px")
        );
    }
    println!(
        "s/epoch: training steps only (scae with its per-epoch test ELBO: {:.3} s)",
        figure(&ours, "seconds_per_epoch").unwrap_or(f64::NAN)
    );
    println!(
        "speed: scvi-tools' seconds per epoch / scae's = {ratio:.2}x (target >= 5x); \
         test ELBO gap (scae - scvi) / |scvi| = {:+.3} % (target >= -1 %)",
        gap * 100.0
    );
    println!(
        "scvi-tools trained with its default KL warm-up ({} epochs; weight {} in its last epoch)",
        theirs["kl_warmup_epochs"], theirs["kl_weight_last_epoch"]
    );
    let report = json!({
        "benchmark": "vae",
        "data": data, "epochs": epochs, "threads": threads,
        "config": "configs/bench-vae.toml",
        "ratio_seconds_per_epoch_scvi_over_scae": ratio,
        "ratio_basis": "training steps per epoch: scae's train_seconds_per_epoch (its per-epoch test ELBO timed apart) over scvi-tools' epoch time (no validation set)",
        "test_elbo_gap_relative": gap,
        "targets": {
            "ratio_at_least": 5.0, "ratio_met": ratio >= 5.0,
            "elbo_gap_at_least": -0.01, "elbo_gap_met": gap >= -0.01,
        },
        "scae": ours,
        "scae_metrics": out.join("metrics.json"),
        "scvi_tools": theirs,
        "provenance": provenance(),
    });
    write_report("vae", &report)
}

/// `bench integrate` (see [`Which::Integrate`]).
fn integrate(threads: usize, scvi_epochs: Option<usize>, data: Option<PathBuf>) -> Result<()> {
    let root = project_root();
    let dir = data.unwrap_or_else(|| root.join("../shared/data/batches"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("bench integrate reads the .h5ad files of {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "h5ad"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no .h5ad file to integrate", dir.display());
    }
    let torch = project::build_release()?;
    ensure_scvi(&torch)?;
    ensure_harmony(&torch)?;
    let work = root.join("target/bench/integrate");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let threads_arg = threads.to_string();
    let mut datasets = Vec::new();
    for file in &files {
        let name = stem(file);
        let here = work.join(&name);
        let scae_args = |out: &Path, extra: &[String]| -> Vec<String> {
            let mut args: Vec<String> = [
                "--data",
                &file.display().to_string(),
                "--batch-key",
                "batch",
                "--labels-key",
                "cell_type",
                "--device",
                "cpu",
                "--threads",
                &threads_arg,
                "--out",
                &out.display().to_string(),
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.extend_from_slice(extra);
            args
        };
        // scae's own run first: it writes the genes and the PCA the peers start from.
        eprintln!("bench integrate {name}: scae integrate");
        let first = here.join("scae");
        study::scae(&torch, "integrate", &scae_args(&first, &[]))?;
        eprintln!("bench integrate {name}: scVI with batch_key, then Harmony (minutes)");
        let peers = here.join("peers");
        let mut py = python_peer(&torch, "integrate_peers.py", threads);
        py.arg("--data")
            .arg(file)
            .arg("--scae")
            .arg(&first)
            .args(["--batch-key", "batch", "--threads", &threads_arg])
            .arg("--out")
            .arg(&peers);
        if let Some(e) = scvi_epochs {
            py.args(["--epochs", &e.to_string()]);
        }
        let timing = json_output(&mut py)?;
        // The peers' embeddings scored beside scae's, seed by seed, by the same metrics.
        let scored = here.join("scored");
        let given = [
            "--embedding".to_owned(),
            format!("scvi={}", peers.join("scvi.npy").display()),
            "--embedding".to_owned(),
            format!("harmony={}", peers.join("harmony.npy").display()),
        ];
        study::scae(&torch, "integrate", &scae_args(&scored, &given))?;
        let metrics = read_json(&scored.join("metrics.json"))?;
        datasets.push((name, metrics, timing));
    }
    let mut report = Vec::new();
    println!(
        "\nbench integrate: scae's scIB scores (mean of 3 seeds) beside scvi-tools' SCVI (batch_key) \
         and Harmony on the same PCA, {threads} threads"
    );
    for (name, metrics, timing) in &datasets {
        println!(
            "{name}: {} cells x {} genes",
            metrics["provenance"]["data"]["cells"], metrics["genes"]
        );
        println!(
            "  {:<36} {:>7} {:>7} {:>7} {:>9}",
            "method", "total", "bio", "batch", "seconds"
        );
        let summary = metrics["summary"].as_array().cloned().unwrap_or_default();
        let mean = |s: &Value, key: &str| -> f64 {
            s["metrics"]
                .as_array()
                .and_then(|m| m.iter().find(|p| p[0] == key))
                .and_then(|p| p[1]["mean"].as_f64())
                .unwrap_or(f64::NAN)
        };
        let mut totals = serde_json::Map::new();
        for s in &summary {
            let method = match &s["method"] {
                Value::String(m) => m.clone(),
                other => other["given"].as_str().unwrap_or("?").to_owned(),
            };
            let seconds = match method.as_str() {
                "scvi" => timing["scvi"]["seconds"].as_f64().unwrap_or(f64::NAN),
                "harmony" => timing["harmony"]["seconds"].as_f64().unwrap_or(f64::NAN),
                _ => mean(s, "seconds"),
            };
            println!(
                "  {:<36} {:>7.3} {:>7.3} {:>7.3} {:>9.1}",
                method,
                mean(s, "total"),
                mean(s, "bio"),
                mean(s, "batch"),
                seconds
            );
            totals.insert(method, json!({"total": mean(s, "total"), "bio": mean(s, "bio"), "batch": mean(s, "batch"), "seconds": seconds}));
        }
        let get = |m: &str| {
            totals
                .get(m)
                .and_then(|v| v["total"].as_f64())
                .unwrap_or(f64::NAN)
        };
        println!(
            "  VAE with the batch / scVI with batch_key (total): {:.3} / {:.3}; / Harmony: {:.3} \
             (target: at least both)",
            get("vae_batch"),
            get("scvi"),
            get("harmony")
        );
        report.push(json!({
            "dataset": name,
            "methods": totals,
            "scvi": timing["scvi"],
            "versions": timing["versions"],
            "scae_metrics": scored_path(&work, name),
        }));
    }
    let speed = integrate_speed(&torch, &work, threads)?;
    write_report(
        "integrate",
        &json!({"benchmark": "integrate", "threads": threads, "datasets": report, "speed": speed, "provenance": provenance()}),
    )
}

/// Cells, genes, batches and epochs of `bench integrate`'s speed part.
const SPEED_SHAPE: (usize, usize, usize, usize) = (50_000, 2_000, 4, 3);

/// `bench integrate`'s speed part: the batch-aware NB VAE (`configs/bench-vae.toml` with
/// `--batch-key`) against scvi-tools' SCVI with `batch_key`, training cells per second on a
/// simulated multi-batch dataset (`xtask/peers/integrate_speed.py`, made once).
fn integrate_speed(torch: &Libtorch, work: &Path, threads: usize) -> Result<Value> {
    let (cells, genes, batches, epochs) = SPEED_SHAPE;
    let data = work.join(format!("speed-{cells}x{genes}-b{batches}.h5ad"));
    let threads_arg = threads.to_string();
    if !data.is_file() {
        eprintln!("bench integrate: simulating {cells} x {genes} counts in {batches} batches");
        let mut py = python_peer(torch, "integrate_speed.py", threads);
        py.arg("--simulate").arg(&data).args([
            "--cells",
            &cells.to_string(),
            "--genes",
            &genes.to_string(),
            "--batches",
            &batches.to_string(),
        ]);
        project::run_status(&mut py).context("simulating the multi-batch dataset")?;
    }
    // bench vae's model and training, without the importance-weighted log p(x) (not timed).
    let config = work.join("speed-vae.toml");
    let shipped = std::fs::read_to_string(project_root().join("configs/bench-vae.toml"))?;
    std::fs::write(
        &config,
        shipped.replace("importance_samples = 100", "importance_samples = 0"),
    )?;
    let need = |side: &Value, key: &str, who: &str| {
        side[key]
            .as_f64()
            .with_context(|| format!("{who} reported no {key}"))
    };
    let out = work.join("speed-scae");
    eprintln!("bench integrate: scae vae --batch-key batch, {epochs} epochs");
    let args: Vec<String> = [
        "--config",
        &config.display().to_string(),
        "--data",
        &data.display().to_string(),
        "--batch-key",
        "batch",
        "--device",
        "cpu",
        "--threads",
        &threads_arg,
        "--epochs",
        &epochs.to_string(),
        "--out",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    study::scae(torch, "vae", &args)?;
    let ours = read_json(&out.join("metrics.json"))?["summary"].clone();
    let ours_rate =
        need(&ours, "train_cells", "scae")? / need(&ours, "train_seconds_per_epoch", "scae")?;
    eprintln!("bench integrate: scvi-tools SCVI with batch_key, {epochs} epochs");
    let mut py = python_peer(torch, "integrate_speed.py", threads);
    py.arg("--time")
        .arg(&data)
        .args(["--epochs", &epochs.to_string(), "--threads", &threads_arg]);
    let theirs = json_output(&mut py)?;
    let theirs_rate =
        need(&theirs, "cells", "scvi-tools")? / need(&theirs, "seconds_per_epoch", "scvi-tools")?;
    let ratio = ours_rate / theirs_rate;
    println!(
        "speed ({cells} simulated cells x {genes} genes, {batches} batches, {epochs} epochs, \
         {threads} threads): scae's batch-aware VAE {ours_rate:.0} training cells/s, scvi-tools' \
         SCVI with batch_key {theirs_rate:.0}: {ratio:.2}x"
    );
    Ok(json!({
        "cells": cells, "genes": genes, "batches": batches, "epochs": epochs,
        "scae_cells_per_second": ours_rate, "scvi_cells_per_second": theirs_rate, "ratio": ratio,
        "scae": ours, "scvi_tools": theirs,
    }))
}

fn scored_path(work: &Path, name: &str) -> String {
    work.join(name)
        .join("scored/metrics.json")
        .display()
        .to_string()
}

/// Installs harmonypy into the set-up's venv when it is missing.
fn ensure_harmony(torch: &Libtorch) -> Result<()> {
    let present = Command::new(&torch.python)
        .args(["-c", "import harmonypy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !present {
        eprintln!("installing harmonypy into {}", torch.python.display());
        let mut pip = Command::new(&torch.python);
        pip.args(["-m", "pip", "install", "--disable-pip-version-check"])
            .args(["harmonypy", &format!("torch=={TORCH_VERSION}")]);
        project::run_status(&mut pip).context("pip could not install harmonypy")?;
    }
    Ok(())
}

/// Installs scvi-tools into the set-up's venv when it is missing, keeping its torch.
fn ensure_scvi(torch: &Libtorch) -> Result<()> {
    let present = Command::new(&torch.python)
        .args(["-c", "import scvi, scanpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !present {
        eprintln!("installing scvi-tools into {}", torch.python.display());
        let mut pip = Command::new(&torch.python);
        pip.args(["-m", "pip", "install", "--disable-pip-version-check"])
            .args(["scvi-tools", "scanpy", &format!("torch=={TORCH_VERSION}")]);
        project::run_status(&mut pip).context("pip could not install scvi-tools")?;
    }
    Ok(())
}

/// Installs scikit-learn and openTSNE into the set-up's venv when they are missing.
fn ensure_python_peers(torch: &Libtorch) -> Result<()> {
    let present = Command::new(&torch.python)
        .args(["-c", "import sklearn, openTSNE, threadpoolctl"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !present {
        eprintln!(
            "installing scikit-learn and openTSNE into {}",
            torch.python.display()
        );
        let mut pip = Command::new(&torch.python);
        pip.args(["-m", "pip", "install", "--disable-pip-version-check"])
            .args(["scikit-learn", "openTSNE", "threadpoolctl"]);
        project::run_status(&mut pip).context("pip could not install the Python peers")?;
    }
    Ok(())
}

/// A peer script under `xtask/peers/`, run by the set-up's Python with its
/// native thread pools (OpenMP, BLAS) pinned to `threads`.
fn python_peer(torch: &Libtorch, script: &str, threads: usize) -> Command {
    let mut cmd = Command::new(&torch.python);
    cmd.arg(project_root().join("xtask/peers").join(script));
    for var in [
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMBA_NUM_THREADS",
    ] {
        cmd.env(var, threads.to_string());
    }
    cmd
}

/// Runs the release `scae` with `args` and parses the JSON line it prints.
fn scae_json(torch: &Libtorch, args: &[&std::ffi::OsStr]) -> Result<Value> {
    let mut cmd = Command::new(project::release_bin("scae"));
    cmd.args(args);
    torch.apply(&mut cmd);
    json_output(&mut cmd)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Git revision, time and machine, written beside the figures.
fn provenance() -> Value {
    let git = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(project_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "git_revision": git,
        "unix_time": unix,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

fn write_report(name: &str, report: &Value) -> Result<()> {
    let path = project_root().join(format!("results/bench/{name}.json"));
    std::fs::create_dir_all(path.parent().context("results/bench")?)?;
    std::fs::write(&path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("written to {}", path.display());
    Ok(())
}

/// The PyTorch peer script run by the set-up's Python.
fn peer(torch: &Libtorch) -> Command {
    let mut cmd = Command::new(&torch.python);
    cmd.arg(project_root().join("xtask/peers/ae_pytorch.py"));
    cmd
}

/// Runs `cmd` and parses the last line of its stdout; a failure names the program, its status
/// and its stderr (when captured: a caller may show it instead, `Stdio::inherit`).
fn json_output(cmd: &mut Command) -> Result<Value> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .last()
        .with_context(|| format!("{:?} printed nothing", cmd.get_program()))?;
    serde_json::from_str(last).with_context(|| format!("{:?} printed {last:?}", cmd.get_program()))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

/// The shortest time of several runs: the one least disturbed by the rest of the machine.
fn fastest(seconds: &[f64]) -> f64 {
    seconds.iter().copied().fold(f64::INFINITY, f64::min)
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
