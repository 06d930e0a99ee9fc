//! `cargo xtask test`: formatting and lints, set-up, the release build, then
//! `cargo test --workspace --release`.
//!
//! What CI runs (`.ci/run`), so a fault of any kind fails it: `cargo fmt --check`, then
//! `cargo clippy --workspace --all-targets -- -D warnings`, then the tests. Tests run in the
//! release profile so the dependency graph (libtorch's wrappers included) is compiled once and
//! shared with the binaries the smoke tests run; a debug build would double the build time on a
//! 2-core machine. Clippy runs in the same profile and with the same flags for the same reason.

use anyhow::{Context, Result};

use crate::project;

pub fn run(args: &[String]) -> Result<()> {
    let mut fmt = project::cargo();
    fmt.args(["fmt", "--all", "--check"]);
    project::run_status(&mut fmt)
        .context("cargo fmt --check: the code above is not formatted (run `cargo fmt --all`)")?;
    let torch = project::build_release()?;
    // The AnnData tests read files with anndata and scanpy's bundled pbmc68k_reduced.h5ad.
    torch.ensure_packages(
        "import anndata, scanpy",
        &["anndata>=0.10,<0.13", "scanpy>=1.10,<1.12"],
    )?;
    let mut clippy = project::cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--release",
        "--",
        "-D",
        "warnings",
    ]);
    torch.apply(&mut clippy);
    project::run_status(&mut clippy).context("cargo clippy: fix the warnings above")?;
    let mut cmd = project::cargo();
    cmd.args(["test", "--workspace", "--release"]).args(args);
    torch.apply(&mut cmd);
    project::run_status(&mut cmd).context("the test suite failed")?;
    data_parallel(&torch, args)
}

/// The data-parallel build and its tests under a real launcher: MPI set up ([`crate::mpi`]),
/// clippy on the code behind the `mpi` and `nccl` features, then `scae`'s `data_parallel` tests
/// with the `mpi` feature. The default build stays without MPI; this one shares its target
/// folder, so only the crates the feature changes are compiled again.
fn data_parallel(torch: &crate::torch::Libtorch, args: &[String]) -> Result<()> {
    let mpi = crate::mpi::ensure()?;
    eprintln!("data-parallel tests on {}", mpi.origin);
    let mut clippy = project::cargo();
    clippy.args([
        "clippy",
        "--release",
        "--package",
        "scae-dp",
        "--package",
        "scae",
        "--all-targets",
        "--features",
        "scae/nccl",
        "--",
        "-D",
        "warnings",
    ]);
    torch.apply(&mut clippy);
    mpi.apply(&mut clippy);
    project::run_status(&mut clippy).context("cargo clippy (mpi, nccl): fix the warnings above")?;
    let mut cmd = project::cargo();
    cmd.args([
        "test",
        "--release",
        "--package",
        "scae",
        "--features",
        "mpi",
        "--test",
        "data_parallel",
    ])
    .args(args);
    torch.apply(&mut cmd);
    mpi.apply(&mut cmd);
    project::run_status(&mut cmd).context("the data-parallel tests failed")
}
