//! `scae gmvae-real --all DIR`: the GMVAE study on every labelled dataset under a folder, and
//! one table across them.
//!
//! A labelled dataset is a folder holding `labels.txt` beside a 10x matrix (`matrix.mtx` or
//! `matrix.mtx.gz`), as `../shared/data` keeps them, or, with `--labels-key`, an `.h5ad` file.
//! Each dataset gets the study's own results folder (`<out>/<name>/`, `--out` defaulting to
//! `results/gmvae-real-all`), and `<out>/table.md`, `table.csv` and `table.json` set the
//! datasets side by side: per method, mean and sd over the seeds of the ARI and NMI, the number
//! of clusters (given or found) and the seconds it took, with the acceptance checks of the
//! GMVAE's own clusters against its start and the baselines.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::gmvae_real::{DatasetSummary, GmvaeRealArgs, Method, Summary, run_dataset};
use crate::provenance::write_json;

/// One dataset of the table.
#[derive(Debug, Serialize)]
struct Entry {
    name: String,
    seconds: f64,
    #[serde(flatten)]
    summary: DatasetSummary,
}

/// Runs the study on every labelled dataset under `dir` and writes the table.
pub fn run_all(dir: &Path, args: &GmvaeRealArgs) -> Result<()> {
    let datasets = labelled_datasets(dir, args.run.labels_key.is_some())?;
    if args.output.h5ad.as_ref().is_some_and(Option::is_some) {
        bail!("--h5ad with --all takes no path: each dataset writes adata.h5ad in its folder");
    }
    let out = args.run.out_dir("gmvae-real-all");
    if crate::writes_results() {
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    }
    let clock = Instant::now();
    let mut entries = Vec::new();
    for (i, (name, path)) in datasets.iter().enumerate() {
        eprintln!(
            "gmvae-real --all: dataset {} of {}, {name} ({})",
            i + 1,
            datasets.len(),
            path.display()
        );
        let mut run = args.run.clone();
        run.data = Some(path.clone());
        run.out = Some(out.join(name));
        let timer = Instant::now();
        let summary = run_dataset(&run, &args.output, &args.batch)
            .with_context(|| format!("dataset {name}"))?;
        entries.push(Entry {
            name: name.clone(),
            seconds: timer.elapsed().as_secs_f64(),
            summary,
        });
    }
    let total = clock.elapsed().as_secs_f64();
    if !crate::writes_results() {
        // Rank 0 of a data-parallel job writes the table.
        return Ok(());
    }
    let md = table_md(&entries, total);
    scae_io::write_atomic(&out.join("table.md"), |w| {
        std::io::Write::write_all(w, md.as_bytes())
    })?;
    let csv = table_csv(&entries);
    scae_io::write_atomic(&out.join("table.csv"), |w| {
        std::io::Write::write_all(w, csv.as_bytes())
    })?;
    write_json(
        &out.join("table.json"),
        &serde_json::json!({ "seconds": total, "datasets": entries }),
    )?;
    eprintln!("{md}");
    eprintln!(
        "gmvae-real on {} datasets in {total:.0} s: {}",
        entries.len(),
        out.join("table.md").display()
    );
    Ok(())
}

/// The labelled datasets directly under `dir`, by name: folders with `labels.txt` beside a 10x
/// matrix, and `.h5ad` files when their labels come from an obs column.
pub(super) fn labelled_datasets(dir: &Path, h5ad: bool) -> Result<Vec<(String, PathBuf)>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list the datasets", dir.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("{}: cannot list the datasets", dir.display()))?
            .path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let tenx = path.is_dir()
            && path.join("labels.txt").is_file()
            && ["matrix.mtx", "matrix.mtx.gz"]
                .iter()
                .any(|m| path.join(m).is_file());
        let anndata = h5ad && path.is_file() && path.extension().is_some_and(|e| e == "h5ad");
        if tenx || anndata {
            let name = name.strip_suffix(".h5ad").unwrap_or(&name).to_owned();
            found.push((name, path));
        }
    }
    found.sort();
    if found.is_empty() {
        bail!(
            "{}: no labelled dataset found (a folder with labels.txt beside matrix.mtx or \
             matrix.mtx.gz{})",
            dir.display(),
            if h5ad { ", or an .h5ad file" } else { "" }
        );
    }
    Ok(found)
}

fn find(summary: &[Summary], method: Method) -> Option<&Summary> {
    summary.iter().find(|s| s.method == method)
}

fn table_md(entries: &[Entry], total: f64) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# GMVAE clusters across datasets\n");
    let _ = writeln!(
        md,
        "{} datasets in {:.1} minutes. ARI, mean ± sd over the seeds; K is the number of \
         clusters (given: the number of labels; found: from the data, mean over the seeds).\n",
        entries.len(),
        total / 60.0
    );
    let _ = write!(md, "| method |");
    for e in entries {
        let _ = write!(
            md,
            " {} ({} cells, {} labels) |",
            e.name, e.summary.cells, e.summary.labels
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "|---|{}", "---:|".repeat(entries.len()));
    for method in Method::ALL {
        if entries
            .iter()
            .all(|e| find(&e.summary.summary, method).is_none())
        {
            continue;
        }
        let _ = write!(md, "| {} |", method.label().replace('|', "\\|"));
        for e in entries {
            match find(&e.summary.summary, method) {
                Some(s) => {
                    let _ = write!(
                        md,
                        " {:.3} ± {:.3}, K {:.1}, {:.0} s |",
                        s.ari.mean, s.ari.sd, s.clusters.mean, s.seconds.mean
                    );
                }
                None => {
                    let _ = write!(md, " - |");
                }
            }
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "\n## Checks\n");
    for e in entries {
        let s = &e.summary.summary;
        let ari = |m: Method| find(s, m).map(|s| s.ari.mean);
        let mut checks = Vec::new();
        if let Some(own) = ari(Method::GmvaeAssignment) {
            let best = [Method::VaeLatentKmeans, Method::PcaKmeans]
                .into_iter()
                .filter_map(ari)
                .fold(f64::NEG_INFINITY, f64::max);
            checks.push(verdict("(a) ≥ the best of (c) and (d)", own, best));
            if let Some(start) = ari(Method::GmvaeStart) {
                checks.push(verdict("(a) ≥ its start (a0)", own, start));
            }
        }
        if let (Some(own), Some(leiden)) = (ari(Method::GmvaeFoundK), ari(Method::LeidenPca)) {
            checks.push(verdict("(e) ≥ (f)", own, leiden));
        }
        let runs = &e.summary.runs;
        let ratio = runs
            .iter()
            .map(|r| r.gmvae_epoch_seconds / r.vae_epoch_seconds)
            .sum::<f64>()
            / runs.len().max(1) as f64;
        let _ = writeln!(
            md,
            "- **{}** ({:.0} s): {}; GMVAE epoch / VAE epoch {ratio:.2}.",
            e.name,
            e.seconds,
            checks.join("; ")
        );
    }
    let _ = writeln!(
        md,
        "\nEach dataset's report, figures and per-seed scores are in its folder beside this table."
    );
    md
}

fn verdict(what: &str, value: f64, bound: f64) -> String {
    format!(
        "{what}: {value:.3} against {bound:.3}, {}",
        if value >= bound { "holds" } else { "FAILS" }
    )
}

fn table_csv(entries: &[Entry]) -> String {
    let mut csv = String::from(
        "dataset,cells,genes,labels,method,clusters_mean,clusters_sd,ari_mean,ari_sd,nmi_mean,\
         nmi_sd,seconds_mean,seconds_sd\n",
    );
    for e in entries {
        for s in &e.summary.summary {
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                e.name,
                e.summary.cells,
                e.summary.genes,
                e.summary.labels,
                s.method.name(),
                s.clusters.mean,
                s.clusters.sd,
                s.ari.mean,
                s.ari.sd,
                s.nmi.mean,
                s.nmi.sd,
                s.seconds.mean,
                s.seconds.sd
            );
        }
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_datasets_are_found_by_layout() {
        let dir = tempfile::tempdir().expect("temp dir");
        let make = |name: &str, files: &[&str]| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).expect("dir");
            for f in files {
                std::fs::write(d.join(f), "").expect("file");
            }
        };
        make("b_ten", &["matrix.mtx.gz", "labels.txt"]);
        make("a_plain", &["matrix.mtx", "labels.txt"]);
        make("unlabelled", &["matrix.mtx.gz"]);
        make("labels_only", &["labels.txt"]);
        std::fs::write(dir.path().join("cells.h5ad"), "").expect("file");
        let found = labelled_datasets(dir.path(), false).expect("two");
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a_plain", "b_ten"]);
        let found = labelled_datasets(dir.path(), true).expect("three");
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a_plain", "b_ten", "cells"]);
        let empty = tempfile::tempdir().expect("temp dir");
        let err = labelled_datasets(empty.path(), false).expect_err("none");
        assert!(
            err.to_string().contains("no labelled dataset found"),
            "{err}"
        );
        let err = labelled_datasets(&empty.path().join("missing"), false).expect_err("none");
        assert!(err.to_string().contains("cannot list"), "{err}");
    }
}
