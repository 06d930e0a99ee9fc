//! `cargo xtask fuzz <target|all> [--seconds N]`: runs the cargo-fuzz targets in `fuzz/`.
//!
//! Each target runs for a fixed time from a fresh copy of its committed seed corpus
//! (`fuzz/corpus/<target>/`), so the seeds stay as committed and every run starts from the same
//! place, with the target's dictionary (`fuzz/dict/<target>.dict`) when it has one; what libFuzzer finds goes to `fuzz/artifacts/<target>/` (ignored by git), its output to
//! a log under `fuzz/target/xtask/<target>/`. The targets are built once first, with cargo-fuzz's
//! defaults (optimised, debug assertions and overflow checks on, AddressSanitizer), and need
//! the nightly toolchain and `cargo install cargo-fuzz`. scae-io links HDF5, which the set-up's
//! CMake builds, so the build gets `CMAKE` as every other build does ([`crate::torch`]).
//!
//! One line per target sums up the run: seconds, executions, executions per second, corpus
//! growth and whether it crashed (a panic, a sanitizer report, a timeout or a runaway
//! allocation; an `Err` from a reader is never a failure). The task fails if any target did.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::project::{self, project_root};
use crate::torch;

/// The fuzz targets, one per reader (binaries of `fuzz/Cargo.toml`): `h5` is Cell Ranger's
/// `.h5`, `h5ad` AnnData (both structure-aware: the input chooses a file's content).
pub const TARGETS: [&str; 5] = ["npy", "labels", "mtx", "h5", "h5ad"];

/// libFuzzer's options: a hang is an input that takes over 10 s, a runaway allocation one that
/// takes over 2 GiB (libFuzzer's malloc limit defaults to the RSS limit).
const LIBFUZZER_ARGS: [&str; 3] = ["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"];

/// Lines of the log shown when a target fails.
const TAIL_LINES: usize = 40;

/// What one run of one target did.
#[derive(Debug)]
struct Summary {
    target: &'static str,
    seconds: f64,
    executions: Option<u64>,
    exec_per_sec: Option<u64>,
    seeds: usize,
    corpus: usize,
    /// Why it failed, with the input that made it fail; `None` when it ran clean.
    failure: Option<String>,
}

/// `cargo xtask fuzz`: builds the targets, then runs `target` (or all of them) for `seconds` each.
pub fn run(target: &str, seconds: u64) -> Result<()> {
    let targets: Vec<&'static str> = match target {
        "all" => TARGETS.to_vec(),
        name => match TARGETS.iter().find(|&&t| t == name) {
            Some(&t) => vec![t],
            None => bail!(
                "no fuzz target {name:?}; the targets: {}, or all",
                TARGETS.join(", ")
            ),
        },
    };
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    let cmake = torch::ensure()?.cmake();
    let mut build = cargo_fuzz(&cmake);
    build.arg("build");
    project::run_status(&mut build).context(
        "building the fuzz targets (needs the nightly toolchain and `cargo install cargo-fuzz --locked`)",
    )?;
    let mut summaries = Vec::new();
    for target in targets {
        let summary = run_target(&cmake, target, seconds)?;
        println!("{}", summary.line());
        summaries.push(summary);
    }
    let failed: Vec<&str> = (summaries.iter())
        .filter(|s| s.failure.is_some())
        .map(|s| s.target)
        .collect();
    if !failed.is_empty() {
        bail!("fuzz target(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

/// `cargo +nightly fuzz` in `fuzz/`, with the set-up's CMake.
fn cargo_fuzz(cmake: &Path) -> Command {
    // `rustup run nightly` is `cargo +nightly` without relying on the `cargo` on PATH being
    // rustup's proxy; `CARGO` names the stable cargo that runs xtask, so it goes.
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "fuzz"])
        .current_dir(project_root().join("fuzz"))
        .env("CMAKE", cmake)
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

/// Runs one target for `seconds` from a fresh copy of its seeds, its output in a log file.
fn run_target(cmake: &Path, target: &'static str, seconds: u64) -> Result<Summary> {
    let fuzz = project_root().join("fuzz");
    let work = fuzz.join("target").join("xtask").join(target);
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let corpus = work.join("corpus");
    let seeds = copy_files(&fuzz.join("corpus").join(target), &corpus)?;
    // The targets write their input to files under $TMPDIR; this folder goes after the run.
    let tmp = work.join("tmp");
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let log_path = work.join("fuzz.log");
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    eprintln!(
        "fuzzing {target} for {seconds} s from {seeds} seeds (log: {})",
        log_path.display()
    );
    let mut cmd = cargo_fuzz(cmake);
    cmd.args(["run", target])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .args(LIBFUZZER_ARGS);
    let dict = fuzz.join("dict").join(format!("{target}.dict"));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    cmd.env("TMPDIR", &tmp)
        .stdout(log.try_clone().context("duplicating the log handle")?)
        .stderr(log);
    let start = Instant::now();
    let status = cmd
        .status()
        .context("could not start `rustup run nightly cargo fuzz`")?;
    let elapsed = start.elapsed().as_secs_f64();
    fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    let text =
        fs::read_to_string(&log_path).with_context(|| format!("reading {}", log_path.display()))?;
    let failure = (!status.success()).then(|| {
        let tail: Vec<&str> = text.lines().rev().take(TAIL_LINES).collect();
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
        failure_reason(&text, &status.to_string())
    });
    Ok(Summary {
        target,
        seconds: elapsed,
        executions: final_stat(&text, "stat::number_of_executed_units"),
        exec_per_sec: final_stat(&text, "stat::average_exec_per_sec"),
        seeds,
        corpus: count_files(&corpus)?,
        failure,
    })
}

impl Summary {
    fn line(&self) -> String {
        let show = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        format!(
            "{:<8} {:>6.0} s {:>12} execs {:>8} exec/s  corpus {} -> {}  {}",
            self.target,
            self.seconds,
            show(self.executions),
            show(self.exec_per_sec),
            self.seeds,
            self.corpus,
            self.failure
                .as_deref()
                .map_or_else(|| "ok".to_owned(), |f| format!("FAILED: {f}")),
        )
    }
}

/// The value of libFuzzer's final `name: value` statistic (`-print_final_stats=1`).
fn final_stat(log: &str, name: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.starts_with(name))?;
    line[name.len()..]
        .trim_start_matches(':')
        .trim()
        .parse()
        .ok()
}

/// libFuzzer's (or the sanitizer's) one-line verdict and the input it saved, from the log.
fn failure_reason(log: &str, status: &str) -> String {
    let verdict = (log.lines())
        .find(|l| l.contains("ERROR: libFuzzer:") || l.contains("ERROR: AddressSanitizer:"))
        .or_else(|| log.lines().find(|l| l.contains("panicked at")))
        .map_or_else(|| format!("exited with {status}"), |l| l.trim().to_owned());
    let artifact = (log.lines())
        .find_map(|l| l.split_once("Test unit written to "))
        .map(|(_, path)| path.trim());
    match artifact {
        Some(path) => format!("{verdict}; input: {path}"),
        None => verdict,
    }
}

/// Copies the files of `from` into a new folder `to`; returns how many.
fn copy_files(from: &Path, to: &Path) -> Result<usize> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let mut n = 0;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path: PathBuf = entry
            .with_context(|| format!("reading {}", from.display()))?
            .path();
        if path.is_file() {
            let dest = to.join(path.file_name().unwrap_or_default());
            fs::copy(&path, &dest).with_context(|| format!("copying {}", path.display()))?;
            n += 1;
        }
    }
    Ok(n)
}

fn count_files(dir: &Path) -> Result<usize> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut n = 0;
    for entry in entries {
        n += usize::from(
            entry
                .with_context(|| format!("reading {}", dir.display()))?
                .path()
                .is_file(),
        );
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log = "#65536\tpulse  cov: 10 ft: 20 corp: 5/1Kb exec/s: 3000 rss: 40Mb\n\
                   Done 180001 runs in 61 second(s)\n\
                   stat::number_of_executed_units: 180001\n\
                   stat::average_exec_per_sec:     2950\n\
                   stat::new_units_added:          17\n";
        assert_eq!(
            final_stat(log, "stat::number_of_executed_units"),
            Some(180_001)
        );
        assert_eq!(final_stat(log, "stat::average_exec_per_sec"), Some(2950));
        assert_eq!(final_stat(log, "stat::peak_rss_mb"), None);
    }

    #[test]
    fn names_the_failure_and_its_input() {
        let log = "thread '<unnamed>' panicked at crates/io/src/mtx.rs:10:5:\nboom\n\
                   ==1== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='/f/artifacts/mtx/'; Test unit written to /f/artifacts/mtx/crash-ab\n";
        assert_eq!(
            failure_reason(log, "exit status: 77"),
            "==1== ERROR: libFuzzer: deadly signal; input: /f/artifacts/mtx/crash-ab"
        );
        assert_eq!(
            failure_reason("", "exit status: 1"),
            "exited with exit status: 1"
        );
    }

    #[test]
    fn every_target_has_seeds_and_a_binary() {
        let fuzz = project_root().join("fuzz");
        let manifest = fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
        for target in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{target}\"")),
                "{target}: no [[bin]]"
            );
            let seeds = count_files(&fuzz.join("corpus").join(target)).expect("seed corpus");
            assert!(seeds > 0, "{target}: no seeds");
        }
    }
}
