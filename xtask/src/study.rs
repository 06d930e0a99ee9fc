//! The study tasks: default data, then `scae qN` run by its release binary.
//!
//! xtask passes `--root` (the project root) so the binary finds `configs/`,
//! `data/` and `results/` from any working directory; paths the user gives
//! stay relative to where they ran `cargo xtask`.

use std::process::Command;

use anyhow::{Context, Result};

use crate::project::{self, project_root, release_bin};
use crate::torch::Libtorch;

/// An error already reported by the child process: exit with its code, print nothing more.
#[derive(Debug)]
pub struct ChildFailed(pub i32);

impl std::fmt::Display for ChildFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the command failed with exit code {}", self.0)
    }
}

impl std::error::Error for ChildFailed {}

/// `cargo xtask data`: write the default data set under `data/`.
pub fn run_data(args: &[String]) -> Result<()> {
    let torch = project::build_release()?;
    scae(&torch, "data", args)
}

/// `cargo xtask q1|q2 ...`: default data when needed, then the question.
pub fn run(question: &str, args: &[String]) -> Result<()> {
    let torch = project::build_release()?;
    ensure_default_data(&torch, args)?;
    scae(&torch, question, args)
}

/// A study that simulates its own data: build, then run.
pub fn run_synthetic(study: &str, args: &[String]) -> Result<()> {
    let torch = project::build_release()?;
    scae(&torch, study, args)
}

/// The questions `cargo xtask all` runs, in order.
pub const QUESTIONS: [&str; 5] = ["q1", "q2", "q3", "q4", "q5"];

/// `cargo xtask all`: every question, one build, then `results/REPORT.md`.
pub fn run_all(args: &[String]) -> Result<()> {
    let torch = project::build_release()?;
    ensure_default_data(&torch, args)?;
    let started = std::time::Instant::now();
    for question in QUESTIONS {
        scae(&torch, question, args)?;
    }
    scae(&torch, "report", &[])?;
    eprintln!(
        "the whole study ran in {:.1} s; open results/REPORT.md",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Generates the default data when the run uses it and it is missing.
pub fn ensure_default_data(torch: &Libtorch, args: &[String]) -> Result<()> {
    let uses_default = !args
        .iter()
        .any(|a| a == "--data" || a.starts_with("--data="));
    let data = project_root().join("data");
    let missing = ["counts.npy", "counts_raw.npy", "labels.txt"]
        .iter()
        .any(|f| !data.join(f).exists());
    if uses_default && missing {
        eprintln!(
            "default data not found under {}: generating it",
            data.display()
        );
        scae(torch, "data", &[])?;
    }
    Ok(())
}

/// Runs `scae <sub> --root <project> <args>` with the libtorch environment.
pub fn scae(torch: &Libtorch, sub: &str, args: &[String]) -> Result<()> {
    let bin = release_bin("scae");
    let mut cmd = Command::new(&bin);
    cmd.arg(sub).arg("--root").arg(project_root()).args(args);
    torch.apply(&mut cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", bin.display()))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(ChildFailed(code).into()),
        None => anyhow::bail!("{} was killed by a signal ({status})", bin.display()),
    }
}
