//! `cargo xtask install`: the release `scae`, copied to a folder of the user's commands so it runs
//! from any folder, without the checkout.
//!
//! The binary needs no environment: it records libtorch's `lib/` (in the per-user cache that
//! `cargo xtask setup` fills) as its run path (`crates/scae/build.rs`), links HDF5 statically and
//! carries the shipped configs. The copy goes to `$SCAE_INSTALL_DIR`, else `~/.local/bin`, under
//! a temporary name first and is renamed into place only once it has started without
//! `LD_LIBRARY_PATH`, so a running or earlier `scae` is never left half-written.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::project::{self, release_bin};

/// `cargo xtask install`.
pub fn run() -> Result<()> {
    let torch = project::build_release()?;
    let dir = install_dir(
        std::env::var_os("SCAE_INSTALL_DIR"),
        std::env::var_os("HOME"),
    )?;
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let dest = install(&release_bin("scae"), &dir)?;
    eprintln!(
        "installed {}; it loads libtorch from {} (keep that cache; `cargo xtask setup` restores it)",
        dest.display(),
        torch.lib_dir().display()
    );
    if !on_path(&dir, std::env::var_os("PATH").as_deref()) {
        eprintln!(
            "warning: {} is not on PATH; add it (e.g. `export PATH=\"{}:$PATH\"` in your shell's \
             profile) or run {} by its full path",
            dir.display(),
            dir.display(),
            dest.display()
        );
    }
    Ok(())
}

/// Where `scae` goes: `$SCAE_INSTALL_DIR` when set and not empty, else `$HOME/.local/bin`.
fn install_dir(scae_install_dir: Option<OsString>, home: Option<OsString>) -> Result<PathBuf> {
    if let Some(dir) = scae_install_dir.filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = home
        .filter(|h| !h.is_empty())
        .context("HOME is not set: set SCAE_INSTALL_DIR to the folder scae should go to")?;
    Ok(Path::new(&home).join(".local").join("bin"))
}

/// Copies `bin` into `dir` (created if missing) as `scae`, atomically: a temporary copy beside
/// the destination, checked to start without `LD_LIBRARY_PATH`, then renamed over it.
fn install(bin: &Path, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let dest = dir.join("scae");
    let tmp = dir.join(format!(".scae.install-{}", std::process::id()));
    let placed = std::fs::copy(bin, &tmp)
        .with_context(|| format!("cannot copy {} to {}", bin.display(), tmp.display()))
        .and_then(|_| starts_alone(&tmp))
        .and_then(|()| {
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("{}: cannot move into place", dest.display()))
        });
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    placed.map(|()| dest)
}

/// Checks that the binary at `bin` starts with no `LD_LIBRARY_PATH` (its libraries found
/// through its run path).
///
/// The copy was just written, so a process forked meanwhile by another thread can still hold
/// its write handle until that child execs; Linux then refuses to run the file ("text file
/// busy"). That passes within milliseconds, so the start is retried for up to a second.
fn starts_alone(bin: &Path) -> Result<()> {
    let start = || {
        Command::new(bin)
            .arg("--version")
            .env_remove("LD_LIBRARY_PATH")
            .output()
    };
    let mut out = start();
    for _ in 0..50 {
        match &out {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(20));
                out = start();
            }
            _ => break,
        }
    }
    let out = out.with_context(|| format!("could not start {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} does not start without LD_LIBRARY_PATH ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether `dir` is one of the folders of `path` (a `PATH` value).
fn on_path(dir: &Path, path: Option<&OsStr>) -> bool {
    let same = |p: &Path| {
        p == dir
            || matches!(
                (p.canonicalize(), dir.canonicalize()),
                (Ok(a), Ok(b)) if a == b
            )
    };
    path.is_some_and(|path| std::env::split_paths(path).any(|p| same(&p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scae_install_dir_wins_over_home() {
        let dir = install_dir(Some("/opt/bin".into()), Some("/home/me".into())).expect("a dir");
        assert_eq!(dir, Path::new("/opt/bin"));
        let dir = install_dir(Some("".into()), Some("/home/me".into())).expect("a dir");
        assert_eq!(dir, Path::new("/home/me/.local/bin"));
        assert!(install_dir(None, None).is_err());
    }

    #[test]
    fn a_folder_on_path_is_found() {
        let path = OsString::from("/usr/bin:/home/me/.local/bin");
        assert!(on_path(Path::new("/home/me/.local/bin"), Some(&path)));
        assert!(!on_path(Path::new("/home/me/bin"), Some(&path)));
        assert!(!on_path(Path::new("/usr/bin"), None));
    }

    #[test]
    fn a_binary_is_copied_into_place_and_replaced() {
        let bin = Path::new("/bin/true");
        if !bin.exists() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("xtask-install-ok-{}", std::process::id()));
        let dest = install(bin, &dir.join("bin")).expect("installed");
        assert_eq!(dest, dir.join("bin/scae"));
        install(bin, &dir.join("bin")).expect("installed again over the first");
        let names: Vec<_> = std::fs::read_dir(dir.join("bin"))
            .expect("a folder")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        assert_eq!(names, ["scae"], "no temporary copy is left");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_binary_that_does_not_start_is_not_installed() {
        let dir = std::env::temp_dir().join(format!("xtask-install-{}", std::process::id()));
        let src = dir.join("not-a-binary");
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(&src, "not a program").expect("write");
        let dest = dir.join("bin");
        assert!(install(&src, &dest).is_err());
        let left: Vec<_> = std::fs::read_dir(&dest).expect("created").collect();
        assert!(left.is_empty(), "nothing is left behind: {left:?}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
