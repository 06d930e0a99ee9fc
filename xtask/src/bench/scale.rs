//! `bench scale`: one epoch of the NB VAE over 1.3 M cells read from an `.h5ad`, scae (backed,
//! row blocks from the file) against scvi-tools (in memory), with peak memory and the time to
//! read the file.
//!
//! The data are simulated once by `xtask/peers/scale_data.py` into `results/bench/cache/`
//! (git-ignored; the parameters are in the file name and a sidecar JSON, so a file is reused only
//! with the same ones): 1,300,000 cells x 2,000 genes (a 10x matrix after selecting 2,000
//! variable genes), counts NB(l_c p_g, theta_g) with log p_g ~ N(0, 2^2) (heavy-tailed: the top
//! gene holds about 4 % of a cell's counts), theta_g ~ LogNormal(log 0.5, 1) and library sizes
//! l_c ~ LogNormal(log 500, 0.5^2): measured 90.2 % zeros and a median of 492 counts per cell
//! (each file's sidecar records its own figures); 2.1 GB, about 3 minutes to write. `X` is CSR
//! with float32 data and int32 indices and indptr, as anndata writes a matrix of this size. A
//! 130,000-cell file, the same cells as the first 130,000 of the large one, gives the small run
//! of the peak comparison.
//!
//! Steps, all at the same thread count: `scae info` (the whole matrix read into memory) against
//! `anndata.read_h5ad`, both with the file already in the page cache; `scae vae --backed` with
//! `configs/bench-scale.toml` (scVI's architecture, 1 epoch, 1 % held out) on 130,000 and on
//! 1,300,000 cells, peak memory from each run's `metrics.json` (the process's own maximum
//! resident set, as `bench vae-full` reports it); scvi-tools' `SCVI` through
//! `xtask/peers/scale_scvi.py` on the same file and split fraction, one epoch, batch 128. The
//! peer times a probe epoch on the first 20,000 cells and, when its full epoch would pass 15
//! minutes, trains on the first 130,000 cells instead and reports cells per second of that slice
//! (`--scvi full|slice` forces a side). Cells per second are training cells over the timed
//! training pass of the epoch on both sides. Writes `results/bench/scale.json`; the last line
//! printed is `bench scale: scae C1 cells/s, P1 MiB peak; scvi-tools C2 cells/s, P2 MiB peak;
//! ratio R` with R = C1 / C2.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use super::{ensure_scvi, json_output, provenance, python_peer, read_json, write_report};
use crate::project::{self, project_root};
use crate::study;
use crate::torch::Libtorch;

/// The acceptance targets of issue 13.
const MAX_PEAK_MIB: f64 = 2048.0;
const MAX_PEAK_GROWTH: f64 = 1.2;
const MIN_SPEED_RATIO: f64 = 5.0;

/// How scvi-tools' epoch is sized.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ScviCells {
    /// The whole file unless a probe epoch says it would pass 15 minutes, then the slice.
    Auto,
    /// The whole file.
    Full,
    /// The first `--small-cells` cells.
    Slice,
}

impl ScviCells {
    fn arg(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Full => "full",
            Self::Slice => "slice",
        }
    }
}

/// One simulated file, as its generator's sidecar describes it.
pub(super) struct Data {
    pub path: PathBuf,
    pub meta: Value,
}

/// One `scae vae --backed` run.
struct ScaeRun {
    train_cells: f64,
    train_seconds: f64,
    peak_mib: f64,
    metrics: PathBuf,
    test_fraction: f64,
}

impl ScaeRun {
    fn cells_per_second(&self) -> f64 {
        self.train_cells / self.train_seconds
    }
}

pub fn run(cells: usize, small_cells: usize, threads: usize, scvi: ScviCells) -> Result<()> {
    ensure!(
        small_cells > 0 && small_cells < cells,
        "--small-cells ({small_cells}) must be positive and below --cells ({cells})"
    );
    let torch = project::build_release()?;
    ensure_scvi(&torch)?;
    let root = project_root();
    let work = root.join("target/bench/scale");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let large = simulate(&torch, cells, threads)?;
    let small = simulate(&torch, small_cells, threads)?;
    let genes = large.meta["genes"].as_u64().context("sidecar: genes")?;

    // Reading: both readers find the file in the page cache, so neither pays for the disk.
    warm_page_cache(&large.path)?;
    eprintln!("scae info: reading {} into memory", large.path.display());
    let info = scae_info(&torch, &large.path, threads)?;
    for key in ["cells", "genes", "nnz"] {
        ensure!(
            info[key].as_u64() == large.meta[key].as_u64(),
            "scae info read {key} = {}, the generator wrote {}",
            info[key],
            large.meta[key]
        );
    }
    let scae_read = info["read_seconds"]
        .as_f64()
        .context("scae info printed no read_seconds")?;

    let small_run = scae_backed(&torch, &small, &work, threads)?;
    let large_run = scae_backed(&torch, &large, &work, threads)?;

    eprintln!("scvi-tools: read with anndata, then one epoch ({threads} threads)");
    let peer_out = work.join("scvi.json");
    let mut py = python_peer(&torch, "scale_scvi.py", threads);
    py.arg("--data")
        .arg(&large.path)
        .args(["--threads", &threads.to_string()])
        .args(["--test-fraction", &large_run.test_fraction.to_string()])
        .args(["--mode", scvi.arg()])
        .args(["--slice-cells", &small_cells.to_string()])
        .arg("--out")
        .arg(&peer_out);
    let theirs = json_stdout(&mut py)?;
    let need = |key: &str| {
        theirs[key]
            .as_f64()
            .with_context(|| format!("scvi-tools reported no {key}"))
    };
    let (their_cps, their_peak, their_read) = (
        need("cells_per_second")?,
        need("peak_rss_mib")?,
        need("read_seconds")?,
    );
    let sliced = theirs["sliced"].as_bool().unwrap_or(false);

    let our_cps = large_run.cells_per_second();
    let ratio = our_cps / their_cps;
    let growth = large_run.peak_mib / small_run.peak_mib;
    let fmt = |v: f64| format!("{v:.0}");
    println!(
        "\nbench scale: {cells} x {genes} simulated 10x-like counts ({:.1} % zeros, median library \
         {:.0}), {:.2} GiB .h5ad; NB VAE (scVI's architecture), one epoch, batch 128, \
         {threads} threads",
        100.0 * large.meta["zero_fraction"].as_f64().unwrap_or(f64::NAN),
        large.meta["median_library"].as_f64().unwrap_or(f64::NAN),
        large.meta["bytes"].as_f64().unwrap_or(f64::NAN) / f64::from(1u32 << 30),
    );
    println!(
        "reading the whole file into memory: scae info {scae_read:.2} s, anndata.read_h5ad \
         {their_read:.2} s ({:.2}x)",
        their_read / scae_read
    );
    println!(
        "scae backed: {} cells/s on {} cells, {} cells/s on {small_cells}; peak {} MiB on {cells} \
         cells, {} MiB on {small_cells}: {growth:.2}x (targets: <= {MAX_PEAK_MIB:.0} MiB, <= \
         {MAX_PEAK_GROWTH}x)",
        fmt(our_cps),
        large_run.train_cells,
        fmt(small_run.cells_per_second()),
        fmt(large_run.peak_mib),
        fmt(small_run.peak_mib),
    );
    if sliced {
        println!(
            "scvi-tools trained on the first {} cells (its full epoch was estimated at {:.0} s, \
             over 15 minutes): its cells/s are the slice's, scaled per cell; its peak includes \
             the whole file in memory",
            theirs["trained_cells"],
            theirs["probe_full_epoch_estimate_seconds"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
    } else {
        println!(
            "scvi-tools trained on all {} cells, from memory ({} training cells in {:.0} s)",
            theirs["trained_cells"],
            theirs["train_cells"],
            need("epoch_seconds")?
        );
    }
    println!("speed ratio scae / scvi-tools: {ratio:.2}x (target >= {MIN_SPEED_RATIO}x)");

    let report = json!({
        "benchmark": "scale",
        "config": "configs/bench-scale.toml",
        "threads": threads,
        "data": {"large": large.meta, "small": small.meta},
        "reading": {
            "scae_info_seconds": scae_read,
            "anndata_read_h5ad_seconds": their_read,
            "ratio_anndata_over_scae": their_read / scae_read,
            "scae_info": info,
            "note": "both read the whole matrix into memory, the file already in the page cache",
        },
        "scae": {
            "large": scae_summary(&large_run),
            "small": scae_summary(&small_run),
            "peak_growth_large_over_small": growth,
        },
        "scvi_tools": theirs,
        "cells_per_second": {"scae": our_cps, "scvi_tools": their_cps},
        "peak_rss_mib": {"scae": large_run.peak_mib, "scvi_tools": their_peak},
        "ratio_cells_per_second_scae_over_scvi": ratio,
        "scvi_tools_sliced": sliced,
        "targets": {
            "peak_mib_at_most": MAX_PEAK_MIB, "peak_met": large_run.peak_mib <= MAX_PEAK_MIB,
            "peak_growth_at_most": MAX_PEAK_GROWTH, "peak_growth_met": growth <= MAX_PEAK_GROWTH,
            "ratio_at_least": MIN_SPEED_RATIO, "ratio_met": ratio >= MIN_SPEED_RATIO,
        },
        "provenance": provenance(),
    });
    write_report("scale", &report)?;
    println!(
        "bench scale: scae {} cells/s, {} MiB peak; scvi-tools {} cells/s, {} MiB peak; \
         ratio {ratio:.2}",
        fmt(our_cps),
        fmt(large_run.peak_mib),
        fmt(their_cps),
        fmt(their_peak),
    );
    Ok(())
}

/// The simulated file of `cells` cells, generated once into the cache.
pub(super) fn simulate(torch: &Libtorch, cells: usize, threads: usize) -> Result<Data> {
    let cache = project_root().join("results/bench/cache");
    let mut py = python_peer(torch, "scale_data.py", threads);
    py.args(["--cells", &cells.to_string()])
        .arg("--out-dir")
        .arg(&cache);
    let meta = json_stdout(&mut py)?;
    let path = PathBuf::from(
        meta["path"]
            .as_str()
            .context("the generator printed no path")?,
    );
    eprintln!(
        "data: {} ({}; {:.1} % zeros, median library {:.0})",
        path.display(),
        if meta["reused"].as_bool() == Some(true) {
            "cached"
        } else {
            "generated"
        },
        100.0 * meta["zero_fraction"].as_f64().unwrap_or(f64::NAN),
        meta["median_library"].as_f64().unwrap_or(f64::NAN),
    );
    Ok(Data { path, meta })
}

/// Reads `path` once, so that the timed readers after it find it in the page cache.
fn warm_page_cache(path: &Path) -> Result<()> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::io::copy(&mut file, &mut std::io::sink())
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(())
}

/// `scae info --data FILE`: the whole matrix read into memory, one JSON object.
fn scae_info(torch: &Libtorch, data: &Path, threads: usize) -> Result<Value> {
    let mut cmd = Command::new(project::release_bin("scae"));
    cmd.arg("info")
        .arg("--data")
        .arg(data)
        .env("OMP_NUM_THREADS", threads.to_string());
    torch.apply(&mut cmd);
    json_stdout(&mut cmd)
}

/// One backed epoch of `configs/bench-scale.toml` on `data`.
fn scae_backed(torch: &Libtorch, data: &Data, work: &Path, threads: usize) -> Result<ScaeRun> {
    let cells = data.meta["cells"].as_u64().context("sidecar: cells")?;
    let out = work.join(format!("scae-{cells}"));
    eprintln!("scae vae --backed: {cells} cells, one epoch, {threads} threads");
    let args: Vec<String> = vec![
        "--config".into(),
        project_root()
            .join("configs/bench-scale.toml")
            .display()
            .to_string(),
        "--device".into(),
        "cpu".into(),
        "--threads".into(),
        threads.to_string(),
        "--data".into(),
        data.path.display().to_string(),
        "--backed".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    study::scae(torch, "vae", &args)?;
    let path = out.join("metrics.json");
    let metrics = read_json(&path)?;
    let epochs = metrics["history"]["epochs"]
        .as_array()
        .with_context(|| format!("{}: no history.epochs", path.display()))?;
    let [epoch] = epochs.as_slice() else {
        bail!(
            "{}: expected one epoch, found {}",
            path.display(),
            epochs.len()
        );
    };
    let figure = |v: &Value, what: &str| {
        v.as_f64()
            .with_context(|| format!("{}: no {what}", path.display()))
    };
    let run = ScaeRun {
        train_cells: figure(&metrics["summary"]["train_cells"], "summary.train_cells")?,
        train_seconds: figure(&epoch["train_seconds"], "history.epochs[0].train_seconds")?,
        peak_mib: figure(&metrics["peak_rss_mib"], "peak_rss_mib")?,
        test_fraction: figure(&metrics["config"]["test_fraction"], "config.test_fraction")?,
        metrics: path,
    };
    eprintln!(
        "scae: {:.0} cells/s, peak {:.0} MiB",
        run.cells_per_second(),
        run.peak_mib
    );
    Ok(run)
}

fn scae_summary(run: &ScaeRun) -> Value {
    json!({
        "train_cells": run.train_cells,
        "train_seconds": run.train_seconds,
        "cells_per_second": run.cells_per_second(),
        "peak_rss_mib": run.peak_mib,
        "metrics": run.metrics,
    })
}

/// Runs `cmd` with its stderr shown (progress, errors) and parses the last line of its stdout.
fn json_stdout(cmd: &mut Command) -> Result<Value> {
    json_output(cmd.stderr(Stdio::inherit()))
}
