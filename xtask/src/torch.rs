//! libtorch, installed by the project itself.
//!
//! tch 0.24 is built for PyTorch 2.11.0. We install that wheel from PyPI with
//! pip into a virtual environment under a per-user cache folder keyed by the
//! version (`$SCAE_CACHE_DIR`, else `$XDG_CACHE_HOME/scae`, else
//! `~/.cache/scae`), so every clone and CI run on the machine reuses it. The
//! install is built in a temporary folder and renamed into place only once
//! `import torch` works, so an interrupted install is never mistaken for a
//! complete one; a complete one carries a marker file, and its key libraries
//! are checked on every use so a damaged one is installed again.
//!
//! The same venv's Python (with numpy) runs the PyTorch side of the benchmarks,
//! and its `cmake` (the PyPI wheel) builds the HDF5 C library that `scae-io`
//! links statically (`hdf5-metno`'s `static` feature): no system package, no
//! root. An install made before HDF5 was needed gets `cmake` added on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The PyTorch release tch 0.24 expects.
pub const TORCH_VERSION: &str = "2.11.0";
/// The CMake that builds HDF5 (hdf5-metno-src needs 3.10 or newer).
const CMAKE_REQUIREMENT: &str = "cmake>=3.20,<5";
const MARKER: &str = "scae-install-complete";
/// Files whose absence means the install is damaged.
const KEY_FILES: [&str; 4] = [
    "lib/libtorch_cpu.so",
    "lib/libtorch.so",
    "lib/libc10.so",
    "include/torch/csrc/api/include/torch/torch.h",
];

/// A usable libtorch installation.
#[derive(Debug, Clone)]
pub struct Libtorch {
    /// The `torch` package folder (holds `lib/` and `include/`).
    pub root: PathBuf,
    /// The venv's Python, which can `import torch`.
    pub python: PathBuf,
}

impl Libtorch {
    pub fn lib_dir(&self) -> PathBuf {
        self.root.join("lib")
    }

    /// Installs `packages` with pip into the set-up's Python unless `imports` (a Python import
    /// line) already works there.
    pub fn ensure_packages(&self, imports: &str, packages: &[&str]) -> Result<()> {
        let present = Command::new(&self.python)
            .args(["-c", imports])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if present {
            return Ok(());
        }
        eprintln!(
            "installing {} into {}",
            packages.join(" "),
            self.python.display()
        );
        pip_install(&self.python, packages)
    }

    /// The `cmake` binary of the venv's CMake package, which builds HDF5 from source (see
    /// [`ensure_cmake`]). The package's own executable, not pip's `bin/cmake` wrapper script:
    /// that script names the Python it was installed with, which for a fresh install is the
    /// staging folder renamed away afterwards.
    pub fn cmake(&self) -> PathBuf {
        let site_packages = self.root.parent().unwrap_or(&self.root);
        site_packages.join("cmake/data/bin/cmake")
    }

    /// Sets the environment under which tch builds and the binaries run, and the CPU the
    /// code is compiled for ([`crate::project::apply_cpu_level`]).
    pub fn apply(&self, cmd: &mut Command) {
        crate::project::apply_cpu_level(cmd);
        cmd.env("LIBTORCH", &self.root);
        cmd.env_remove("LIBTORCH_USE_PYTORCH");
        // hdf5-metno-src builds HDF5 with the `cmake` crate, which honours `CMAKE`.
        cmd.env("CMAKE", self.cmake());
        // Tests that check files against the real Python clients (anndata) run this Python.
        cmd.env("SCAE_PYTHON", &self.python);
        let mut paths = vec![self.lib_dir()];
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
            paths.extend(std::env::split_paths(&old));
        }
        if let Ok(joined) = std::env::join_paths(paths) {
            cmd.env("LD_LIBRARY_PATH", joined);
        }
    }
}

/// `cargo xtask setup`: install when missing or damaged (or always, with `force`).
pub fn run(force: bool) -> Result<Libtorch> {
    let dir = install_dir()?;
    if force && dir.exists() {
        eprintln!("removing {}", dir.display());
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let torch = match find(&dir) {
        Ok(torch) => {
            eprintln!(
                "libtorch {TORCH_VERSION} is already installed at {}",
                torch.root.display()
            );
            torch
        }
        Err(reason) => install(&dir, &reason)?,
    };
    ensure_cmake(&torch)?;
    Ok(torch)
}

/// The installation, installing it first when needed (quiet when present).
pub fn ensure() -> Result<Libtorch> {
    let dir = install_dir()?;
    let torch = match find(&dir) {
        Ok(torch) => torch,
        Err(reason) => install(&dir, &reason)?,
    };
    ensure_cmake(&torch)?;
    Ok(torch)
}

/// CMake from PyPI in the set-up's venv, installed once when missing (installs made before
/// HDF5 was needed lack it).
fn ensure_cmake(torch: &Libtorch) -> Result<()> {
    if torch.cmake().exists() {
        return Ok(());
    }
    eprintln!(
        "installing cmake (to build HDF5) into {}",
        torch.python.display()
    );
    pip_install(&torch.python, &[CMAKE_REQUIREMENT])?;
    if !torch.cmake().exists() {
        bail!(
            "pip installed cmake but {} is missing",
            torch.cmake().display()
        );
    }
    Ok(())
}

/// `python -m pip install <packages>`, quietly about pip's own version.
pub(crate) fn pip_install(python: &Path, packages: &[&str]) -> Result<()> {
    let status = Command::new(python)
        .args(["-m", "pip", "install", "--disable-pip-version-check"])
        .args(packages)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!(
            "pip could not install {} (see pip's output above)",
            packages.join(" ")
        );
    }
    Ok(())
}

pub(crate) fn cache_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SCAE_CACHE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("scae"));
    }
    let home = std::env::var_os("HOME").context("neither SCAE_CACHE_DIR nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("scae"))
}

fn install_dir() -> Result<PathBuf> {
    Ok(cache_root()?.join(format!("torch-{TORCH_VERSION}")))
}

/// Checks a finished installation; the error says what is wrong with it.
fn find(dir: &Path) -> std::result::Result<Libtorch, String> {
    if !dir.exists() {
        return Err("not installed yet".into());
    }
    if !dir.join(MARKER).exists() {
        return Err(format!("{} holds an incomplete install", dir.display()));
    }
    let python = dir.join("venv/bin/python");
    let root = torch_package_dir(&dir.join("venv"))
        .ok_or_else(|| format!("{} has no torch package", dir.display()))?;
    for file in KEY_FILES
        .iter()
        .map(|f| root.join(f))
        .chain([python.clone()])
    {
        if !file.exists() {
            return Err(format!("{} is missing", file.display()));
        }
    }
    Ok(Libtorch { root, python })
}

/// `venv/lib/python3.X/site-packages/torch`, whatever X is.
fn torch_package_dir(venv: &Path) -> Option<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/torch"))
        .find(|p| p.join("lib").is_dir())
}

fn install(dir: &Path, reason: &str) -> Result<Libtorch> {
    eprintln!(
        "installing libtorch {TORCH_VERSION} ({reason}) into {}",
        dir.display()
    );
    install_staged(dir, install_into)?;
    let torch = find(dir).map_err(|why| anyhow::anyhow!("install finished but {why}"))?;
    eprintln!(
        "libtorch {TORCH_VERSION} installed at {}",
        torch.root.display()
    );
    Ok(torch)
}

/// Builds a cache entry in a temporary folder beside `dir` with `fill`, then renames it to
/// `dir`: an interrupted install is never taken for a complete one. Leftovers of interrupted
/// installs of `dir` are removed first.
pub(crate) fn install_staged(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    check_python()?;
    let parent = dir.parent().context("install folder has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = dir
        .file_name()
        .context("install folder has no name")?
        .to_string_lossy();
    let prefix = format!(".{name}.partial-");
    for entry in std::fs::read_dir(parent)?.filter_map(|e| e.ok()) {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let staging = parent.join(format!("{prefix}{}", std::process::id()));
    if let Err(err) = fill(&staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(err);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::rename(&staging, dir)
        .with_context(|| format!("moving {} to {}", staging.display(), dir.display()))
}

/// `python3 -m venv <venv>`, with the one-line advice when the module is missing.
pub(crate) fn make_venv(venv: &Path) -> Result<PathBuf> {
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv)
        .status()
        .context("running python3 -m venv")?;
    if !status.success() {
        bail!(
            "python3 -m venv failed: install the venv module (Debian/Ubuntu: `apt-get install python3-venv`)"
        );
    }
    Ok(venv.join("bin/python"))
}

fn install_into(staging: &Path) -> Result<()> {
    let python = make_venv(&staging.join("venv"))?;
    // The PyPI wheel for Linux brings CUDA 13's runtime libraries: the same
    // install serves CPU machines and GPU machines.
    pip_install(
        &python,
        &[
            &format!("torch=={TORCH_VERSION}"),
            "numpy",
            CMAKE_REQUIREMENT,
        ],
    )?;
    let out = Command::new(&python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
        .context("running the new Python")?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !version.starts_with(TORCH_VERSION) {
        bail!(
            "the installed torch does not import (got {:?}): {}",
            version.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::write(staging.join(MARKER), format!("torch {}\n", version.trim()))?;
    Ok(())
}

fn check_python() -> Result<()> {
    let ok = |args: &[&str]| {
        Command::new("python3")
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !ok(&["--version"]) {
        bail!(
            "python3 was not found: install Python 3.10 or newer (Debian/Ubuntu: `apt-get install python3 python3-venv python3-pip`)"
        );
    }
    if !ok(&["-m", "pip", "--version"]) {
        bail!(
            "pip is not available for python3: install it (Debian/Ubuntu: `apt-get install python3-pip`)"
        );
    }
    Ok(())
}
