//! Paths of the project and the one way xtask builds and runs the release binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::mpi::Mpi;
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
    build_release_with(None)
}

/// [`build_release`], with data-parallel training over `mpi` when given (the `mpi` feature;
/// see [`crate::mpi`]).
pub fn build_release_with(mpi: Option<&Mpi>) -> Result<Libtorch> {
    let torch = torch::ensure()?;
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--package", "scae", "--bins"]);
    torch.apply(&mut cmd);
    if let Some(mpi) = mpi {
        cmd.args(["--features", "mpi"]);
        mpi.apply(&mut cmd);
    }
    run_status(&mut cmd).context("building the release binaries")?;
    Ok(torch)
}

/// The x86-64 micro-architecture level the workspace is compiled for when the building CPU has
/// it: `x86-64-v3` (AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE), which doubles the width of the
/// fused likelihood's SIMD. Every x86-64 CPU since 2015 has it, the accelerator machines
/// included. Set `SCAE_PORTABLE=1` for a baseline x86-64 build (a binary for an older CPU); a
/// `RUSTFLAGS` of the user's own is left alone.
const X86_64_LEVEL: &str = "x86-64-v3";

/// Sets the compile target's CPU level on `cmd` (a cargo build or test) when this machine
/// supports [`X86_64_LEVEL`].
pub fn apply_cpu_level(cmd: &mut Command) {
    let own_flags = ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "SCAE_PORTABLE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if !own_flags && host_has_x86_64_v3() {
        // The flags as `RUSTFLAGS="-C target-cpu=.."` would pass them (0x1f separates them).
        cmd.env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("-C\u{1f}target-cpu={X86_64_LEVEL}"),
        );
    }
}

#[cfg(target_arch = "x86_64")]
fn host_has_x86_64_v3() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx2")
        && has!("fma")
        && has!("bmi1")
        && has!("bmi2")
        && has!("f16c")
        && has!("lzcnt")
        && has!("movbe")
}

#[cfg(not(target_arch = "x86_64"))]
fn host_has_x86_64_v3() -> bool {
    false
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
