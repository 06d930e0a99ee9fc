//! `cargo xtask gpu-check`: a folder to carry to a CUDA machine that has PyTorch but no Rust.
//!
//! Builds the release `scae` and assembles `gpu-check/` at the project root: the binary, the
//! configs of the three models it trains (derived here from `configs/q1.toml`, `configs/vae.toml`
//! and `configs/gmvae-real.toml`, shortened to a few epochs), the PyTorch peer of `bench ae`
//! (`xtask/peers/ae_pytorch.py`) and `run.sh` with its `summary.py` (both from
//! `xtask/gpu-check/`). There, `bash gpu-check/run.sh` finds libtorch in the machine's own
//! PyTorch, generates the data with the binary, trains the AE (`scae train`), the VAE (`scae vae`
//! on a simulated sparse matrix) and the GMVAE (`scae gmvae-real`) on the CPU and on CUDA with the
//! same seed, and prints their losses side by side, cells per second, and the PyTorch peer's
//! speed on each device; everything it prints is also written under `$OUT` when that is set.
//! `GPU_CHECK_DEVICES=cpu bash gpu-check/run.sh` runs it on a machine without a GPU.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::project::{self, project_root, release_bin};

/// The folder, at the project root (git-ignored).
const FOLDER: &str = "gpu-check";

/// A file that marks a folder as ours, so an earlier one is replaced and anything else is not.
const MARKER: &str = "build.json";

/// `cargo xtask gpu-check`; with `cpu_run`, the assembled script then runs here on the CPU.
pub fn run(cpu_run: bool) -> Result<()> {
    project::build_release()?;
    let root = project_root();
    let dir = root.join(FOLDER);
    if dir.exists() {
        if !dir.join(MARKER).is_file() {
            bail!(
                "{} exists and was not made by `cargo xtask gpu-check` (no {MARKER}): move it away first",
                dir.display()
            );
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    for sub in ["configs", "peers"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }

    // `std::fs::copy` keeps the permission bits: the binary and run.sh stay executable.
    copy(&release_bin("scae"), &dir.join("scae"))?;
    strip_debug(&dir.join("scae"));
    copy(&root.join("xtask/gpu-check/run.sh"), &dir.join("run.sh"))?;
    copy(
        &root.join("xtask/gpu-check/summary.py"),
        &dir.join("summary.py"),
    )?;
    copy(
        &root.join("xtask/peers/ae_pytorch.py"),
        &dir.join("peers/ae_pytorch.py"),
    )?;
    for (name, text) in configs(&root.join("configs"))? {
        write(&dir.join("configs").join(name), &text)?;
    }
    let build = json!({
        "made_by": "cargo xtask gpu-check",
        "git_revision": git_revision(&root),
        "scae_version": env!("CARGO_PKG_VERSION"),
        "torch_built_against": crate::torch::TORCH_VERSION,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    write(
        &dir.join(MARKER),
        &(serde_json::to_string_pretty(&build)? + "\n"),
    )?;

    let mib = folder_bytes(&dir)? as f64 / (1024.0 * 1024.0);
    println!(
        "{} is ready ({mib:.0} MiB). On the CUDA machine (python3 with torch {} and numpy):\n  \
         bash {FOLDER}/run.sh\nHere, on the CPU only:\n  GPU_CHECK_DEVICES=cpu bash {FOLDER}/run.sh",
        dir.display(),
        crate::torch::TORCH_VERSION
    );
    if cpu_run {
        let torch = crate::torch::ensure()?;
        let mut cmd = Command::new("bash");
        cmd.arg(dir.join("run.sh"))
            .env("GPU_CHECK_DEVICES", "cpu")
            .env("PYTHON", &torch.python);
        project::run_status(&mut cmd).context("the GPU check failed on the CPU")?;
    }
    Ok(())
}

/// The configs of the three runs, derived from the project's own so that they follow its
/// schema: `ae.toml` is `q1.toml` as it is (`run.sh` passes `--latent 10 --epochs N`);
/// `vae.toml` is `vae.toml` without the importance-weighted `log p(x)` (`run.sh` appends the
/// simulated data's `[simulate]` table); `gmvae-real.toml` keeps one seed and a few epochs of
/// every phase and baseline, and a short parallel t-SNE (`run.sh` sets the GMVAE's epochs).
fn configs(configs: &Path) -> Result<Vec<(&'static str, String)>> {
    let read = |name: &str| {
        let path = configs.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))
    };
    let ae = read("q1.toml")?;
    let vae =
        set_key(&read("vae.toml")?, "", "importance_samples", "0").context("configs/vae.toml")?;
    let mut gmvae = read("gmvae-real.toml")?;
    for (table, key, value) in [
        ("", "seeds", "[0]"),
        ("gmvae.train", "epochs", "3"),
        ("gmvae_init", "pseudo_label_epochs", "1"),
        ("vae.train", "epochs", "1"),
        ("tsne", "n_iter", "250"),
        ("tsne", "early_exaggeration_iter", "100"),
        ("tsne", "deterministic", "false"),
        ("scores", "kmeans_restarts", "5"),
    ] {
        gmvae = set_key(&gmvae, table, key, value).context("configs/gmvae-real.toml")?;
    }
    Ok(vec![
        ("ae.toml", ae),
        ("vae.toml", vae),
        ("gmvae-real.toml", gmvae),
    ])
}

/// Replaces the value of `key` in `[table]` (`""`: the top level, before any table) of a TOML
/// text, line by line; an error when the key is not there, so a renamed key cannot pass unseen.
fn set_key(text: &str, table: &str, key: &str, value: &str) -> Result<String> {
    let mut current = String::new();
    let mut done = false;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            current = name.trim().to_owned();
        }
        let is_key = trimmed
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if !done && current == table && is_key {
            out.push_str(&format!("{key} = {value}"));
            done = true;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !done {
        let place = if table.is_empty() {
            "at the top level".to_owned()
        } else {
            format!("in [{table}]")
        };
        bail!("no key {key:?} {place}");
    }
    Ok(out)
}

/// Drops the binary's debug information (the release profile's line tables: most of its 110 MB),
/// so the folder stays small enough to carry; symbols stay, so backtraces still name functions.
/// Without binutils' `strip` the binary is kept whole.
fn strip_debug(bin: &Path) {
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg(bin)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        eprintln!(
            "warning: `strip --strip-debug {}` failed: the binary keeps its debug information",
            bin.display()
        );
    }
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn folder_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            folder_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// `git rev-parse HEAD`, with `+dirty` when the tree has uncommitted changes.
fn git_revision(root: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}+dirty") } else { head })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_key_replaces_the_key_of_its_table_only() {
        let text = "seed = 1\n[a]\nepochs = 2\n[b]\nepochs = 3\n";
        let top = set_key(text, "", "seed", "7").expect("top level");
        assert_eq!(top, "seed = 7\n[a]\nepochs = 2\n[b]\nepochs = 3\n");
        let b = set_key(text, "b", "epochs", "9").expect("[b]");
        assert_eq!(b, "seed = 1\n[a]\nepochs = 2\n[b]\nepochs = 9\n");
        assert!(set_key(text, "a", "seed", "2").is_err());
        assert!(
            set_key(text, "", "epochs", "2").is_err(),
            "not above any table"
        );
        // A key that only starts like another is not it.
        assert!(set_key("epochs_x = 1\n", "", "epochs", "2").is_err());
    }

    #[test]
    fn the_project_configs_have_every_key_the_check_sets() {
        let configs = configs(&project_root().join("configs")).expect("derived configs");
        let gmvae = &configs[2].1;
        assert!(gmvae.contains("seeds = [0]\n") && gmvae.contains("deterministic = false\n"));
        assert!(configs[1].1.contains("importance_samples = 0\n"));
        // run.sh sets the GMVAE's epochs with a line of sed: the line must be there.
        assert!(gmvae.contains("[gmvae.train]\nepochs = 3\n"), "{gmvae}");
    }
}
