//! What made a result: config, seed, device, data, code revision and time.
//!
//! Every study writes a `metrics.json` whose `provenance` object comes from
//! here, so a number can always be traced to the run that produced it.

use std::path::Path;
use std::time::{Instant, SystemTime};

use anyhow::Result;
use serde::Serialize;

use crate::data::DataSource;

/// The circumstances of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub question: String,
    pub scae_version: &'static str,
    pub git_revision: String,
    pub started_utc: String,
    pub wall_seconds: f64,
    pub device: String,
    pub threads: usize,
    pub seed: u64,
    pub libtorch: &'static str,
    pub command_line: Vec<String>,
    pub data: DataSource,
}

/// Collects provenance while a run goes on.
#[derive(Debug)]
pub struct RunClock {
    started: SystemTime,
    instant: Instant,
}

impl RunClock {
    pub fn start() -> Self {
        Self {
            started: SystemTime::now(),
            instant: Instant::now(),
        }
    }

    /// The provenance of a run that ends now.
    pub fn finish(
        &self,
        question: &str,
        root: &Path,
        device: scae_models::ComputeDevice,
        threads: usize,
        seed: u64,
        data: &DataSource,
    ) -> Provenance {
        Provenance {
            question: question.to_owned(),
            scae_version: env!("CARGO_PKG_VERSION"),
            git_revision: git_revision(root),
            started_utc: humantime::format_rfc3339_seconds(self.started).to_string(),
            wall_seconds: self.instant.elapsed().as_secs_f64(),
            device: device.to_string(),
            threads,
            seed,
            libtorch: "2.11.0",
            command_line: std::env::args().collect(),
            data: data.clone(),
        }
    }
}

/// `git rev-parse HEAD` of the project, `+dirty` when it has uncommitted changes, or `unknown`.
pub fn git_revision(root: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(rev) if !rev.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{rev}+dirty") } else { rev }
        }
        _ => "unknown".into(),
    }
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    scae_io::write_atomic(path, |w| {
        use std::io::Write;
        w.write_all(text.as_bytes())?;
        w.write_all(b"\n")
    })?;
    Ok(())
}
