//! `cargo xtask test`: set-up, the release build, then `cargo test --workspace --release`.
//!
//! Tests run in the release profile so the dependency graph (libtorch's
//! wrappers included) is compiled once and shared with the binaries the smoke
//! tests run; a debug build would double the build time on a 2-core machine.

use anyhow::{Context, Result};

use crate::project;

pub fn run(args: &[String]) -> Result<()> {
    let torch = project::build_release()?;
    let mut cmd = project::cargo();
    cmd.args(["test", "--workspace", "--release"]).args(args);
    torch.apply(&mut cmd);
    project::run_status(&mut cmd).context("the test suite failed")
}
