//! Paths of the project and the one way xtask builds and runs the release binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::torch::{self, Libtorch};

/// The workspace root, from this crate's manifest path (never the current directory).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// `cargo`, as the one that runs xtask.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(project_root());
    cmd
}

/// Installs libtorch when needed and builds the release binaries against it.
pub fn build_release() -> Result<Libtorch> {
    let torch = torch::ensure()?;
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--package", "scae", "--bins"]);
    torch.apply(&mut cmd);
    run_status(&mut cmd).context("building the release binaries")?;
    Ok(torch)
}

/// Path of a release binary of the workspace.
pub fn release_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"));
    target.join("release").join(name)
}

/// Runs `cmd`, failing with its exit status when it does not succeed.
pub fn run_status(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} exited with {status}", cmd.get_program());
    }
    Ok(())
}
