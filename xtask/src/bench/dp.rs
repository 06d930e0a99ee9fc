//! `bench dp`: data-parallel training on this machine's cores, 2 MPI ranks of 1 thread each
//! against 1 process of 2 threads (the peer: what the same cores give without MPI), same binary,
//! same data, same global batch of 128.
//!
//! Data: bench scale's simulated 130,000 cells x 2,000 genes (`xtask/peers/scale_data.py`, made
//! once into `results/bench/cache/`; 2,000 variable genes, the usual setting) and worm_neuron
//! (`../shared/data`, 4,186 cells x 13,488 genes: every gene, a 6.7 times larger gradient), or
//! the one file or folder `--data` names. Model and training: `configs/bench-scale.toml` (scVI's
//! shape, batch norm and dropout on, 1 % held out). Each configuration runs `--runs` times,
//! alternating; a run's speed is its training cells over its median epoch's training time, and
//! the figure is the median run. The all-reduce time is what the trainer measures around the
//! gradient sums (`sync_seconds`: flattening, MPI, copying back, and waiting for the slower rank).
//! Prints one line per dataset, `bench dp (<data>): 1 rank x 2 threads C1 cells/s; 2 ranks x 1
//! thread C2 cells/s, all-reduce M ms per step (S % of training); ratio R` with R = C2 / C1, and
//! writes `results/bench/dp.json`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{median, provenance, read_json, write_report};
use crate::mpi::Mpi;
use crate::project::{self, project_root};
use crate::torch::Libtorch;

/// Global batch of `configs/bench-scale.toml`.
const BATCH: f64 = 128.0;

/// One configuration's run.
#[derive(Debug)]
struct Run {
    cells_per_second: f64,
    sync_ms_per_step: f64,
    sync_share: f64,
    test_elbo: f64,
}

pub fn run(data: Option<PathBuf>, epochs: Option<usize>, runs: usize) -> Result<()> {
    let mpi = crate::mpi::ensure()?;
    let torch = project::build_release_with(Some(&mpi))?;
    let root = project_root();
    let mut sets: Vec<(String, PathBuf, usize)> = Vec::new();
    match data {
        Some(path) => {
            if !path.exists() {
                bail!("bench dp: {} does not exist", path.display());
            }
            let name = super::stem(&path);
            sets.push((name, path, epochs.unwrap_or(2)));
        }
        None => {
            let simulated = super::scale::simulate(&torch, 130_000, 2)?;
            sets.push((
                "simulated 130,000 x 2,000".into(),
                simulated.path,
                epochs.unwrap_or(1),
            ));
            let worm = root.join("../shared/data/worm_neuron");
            if worm.is_dir() {
                sets.push((
                    "worm_neuron 4,186 x 13,488".into(),
                    worm,
                    epochs.unwrap_or(5),
                ));
            } else {
                eprintln!("bench dp: {} is absent; skipped", worm.display());
            }
        }
    }
    let work = root.join("target/bench/dp");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let mut results = Vec::new();
    let mut lines = Vec::new();
    for (i, (name, path, epochs)) in sets.iter().enumerate() {
        let (mut single, mut ranks) = (Vec::new(), Vec::new());
        for r in 0..runs.max(1) {
            eprintln!("bench dp: {name}, run {} of {runs}", r + 1);
            let out = work.join(format!("set{i}-single-{r}"));
            single.push(train(&torch, &mpi, path, *epochs, 1, &out)?);
            let out = work.join(format!("set{i}-ranks-{r}"));
            ranks.push(train(&torch, &mpi, path, *epochs, 2, &out)?);
        }
        let summary = |runs: &[Run]| -> Result<Value> {
            Ok(json!({
                "cells_per_second": median(runs.iter().map(|r| Some(r.cells_per_second)))?,
                "allreduce_ms_per_step": median(runs.iter().map(|r| Some(r.sync_ms_per_step)))?,
                "allreduce_share": median(runs.iter().map(|r| Some(r.sync_share)))?,
                "test_elbo": median(runs.iter().map(|r| Some(r.test_elbo)))?,
                "runs": runs.iter().map(|r| r.cells_per_second).collect::<Vec<_>>(),
            }))
        };
        let (one, two) = (summary(&single)?, summary(&ranks)?);
        let figure = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
        let ratio = figure(&two, "cells_per_second") / figure(&one, "cells_per_second");
        let line = format!(
            "bench dp ({name}): 1 rank x 2 threads {:.0} cells/s; 2 ranks x 1 thread {:.0} cells/s, \
             all-reduce {:.2} ms per step ({:.1} % of training); ratio {ratio:.2}",
            figure(&one, "cells_per_second"),
            figure(&two, "cells_per_second"),
            figure(&two, "allreduce_ms_per_step"),
            100.0 * figure(&two, "allreduce_share"),
        );
        lines.push(line);
        results.push(json!({
            "data": name,
            "path": path,
            "epochs": epochs,
            "one_rank_two_threads": one,
            "two_ranks_one_thread": two,
            "ratio": ratio,
        }));
    }
    write_report(
        "dp",
        &json!({
            "provenance": provenance(),
            "mpi": mpi.origin,
            "config": "configs/bench-scale.toml",
            "datasets": results,
        }),
    )?;
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// `scae vae` on `data` for `epochs` epochs, alone on 2 threads (`ranks` 1) or as `ranks` MPI
/// ranks of 1 thread each.
fn train(
    torch: &Libtorch,
    mpi: &Mpi,
    data: &Path,
    epochs: usize,
    ranks: usize,
    out: &Path,
) -> Result<Run> {
    let threads = if ranks == 1 { 2 } else { 1 };
    let mut cmd = if ranks == 1 {
        Command::new(project::release_bin("scae"))
    } else {
        let mut cmd = Command::new(mpi.mpiexec());
        cmd.args(["-n", &ranks.to_string()])
            .arg(project::release_bin("scae"));
        cmd
    };
    cmd.arg("vae")
        .arg("--config")
        .arg(project_root().join("configs/bench-scale.toml"))
        .args(["--device", "cpu", "--threads", &threads.to_string()])
        .args(["--epochs", &epochs.to_string()])
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .env("RUST_LOG", "warn");
    torch.apply(&mut cmd);
    mpi.apply(&mut cmd);
    project::run_status(&mut cmd)
        .with_context(|| format!("{ranks} rank(s) on {}", data.display()))?;
    let path = out.join("metrics.json");
    let metrics = read_json(&path)?;
    let epochs = metrics["history"]["epochs"]
        .as_array()
        .with_context(|| format!("{}: no history.epochs", path.display()))?;
    let field = |e: &Value, key: &str| e[key].as_f64().unwrap_or(0.0);
    let train_seconds = median(epochs.iter().map(|e| e["train_seconds"].as_f64()))?;
    let total_train: f64 = epochs.iter().map(|e| field(e, "train_seconds")).sum();
    let total_sync: f64 = epochs.iter().map(|e| field(e, "sync_seconds")).sum();
    let summary = &metrics["summary"];
    let cells = summary["train_cells"]
        .as_f64()
        .with_context(|| format!("{}: no summary.train_cells", path.display()))?;
    if summary["ranks"].as_u64() != Some(ranks as u64) {
        bail!(
            "{}: trained on {} ranks, {ranks} expected",
            path.display(),
            summary["ranks"]
        );
    }
    let steps = (cells / BATCH).ceil() * epochs.len() as f64;
    Ok(Run {
        cells_per_second: cells / train_seconds,
        sync_ms_per_step: 1e3 * total_sync / steps,
        sync_share: total_sync / total_train,
        test_elbo: summary["test_elbo"].as_f64().unwrap_or(f64::NAN),
    })
}
