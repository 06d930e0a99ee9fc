//! MPI for data-parallel training (`scae`'s `mpi` feature), set up like libtorch.
//!
//! The `mpi` crate finds an MPI through its compiler wrapper (`mpicc -show`) and generates its
//! bindings with bindgen, which needs libclang. Where a cluster's MPI is loaded (an `mpicc` on
//! `PATH`, as `module load openmpi` gives), that one is used: jobs must run on the MPI their
//! launcher speaks. Otherwise MPICH and libclang come from PyPI (the `mpich` and `libclang`
//! wheels carry `mpicc`, `mpiexec`, the headers and the shared libraries) into a venv under the
//! same per-user cache as libtorch (`mpich-<version>/`), staged and renamed into place, no root
//! needed. `SCAE_MPI=pypi` forces the PyPI MPICH even when a cluster MPI is loaded. libclang is
//! taken from `LIBCLANG_PATH` when set, else from the same venv.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::torch;

/// The MPICH release installed from PyPI.
pub const MPICH_VERSION: &str = "5.0.2";
/// libclang for bindgen, from PyPI.
const LIBCLANG: &str = "libclang==18.1.1";
const MARKER: &str = "scae-install-complete";

/// An MPI to build against and launch with.
#[derive(Debug, Clone)]
pub struct Mpi {
    /// The folder of `mpicc` and `mpiexec`.
    pub bin: PathBuf,
    /// The folder of `libmpi.so`, recorded as the binary's run path (the PyPI MPICH); a cluster's
    /// MPI is found through its module's `LD_LIBRARY_PATH` instead.
    pub lib: Option<PathBuf>,
    /// The folder of `libclang.so`, when not the system's.
    pub libclang: Option<PathBuf>,
    /// "the cluster's MPI (...)" or "MPICH x from PyPI".
    pub origin: String,
}

impl Mpi {
    /// The launcher: `mpiexec` beside `mpicc`.
    pub fn mpiexec(&self) -> PathBuf {
        self.bin.join("mpiexec")
    }

    /// Sets what the `mpi` feature's build and the data-parallel tests need on `cmd`.
    pub fn apply(&self, cmd: &mut Command) {
        let mut paths = vec![self.bin.clone()];
        if let Some(old) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&old));
        }
        if let Ok(joined) = std::env::join_paths(paths) {
            cmd.env("PATH", joined);
        }
        if let Some(dir) = &self.libclang {
            cmd.env("LIBCLANG_PATH", dir);
        }
        match &self.lib {
            Some(lib) => cmd.env("SCAE_MPI_LIB", lib),
            None => cmd.env_remove("SCAE_MPI_LIB"),
        };
        cmd.env("SCAE_MPIEXEC", self.mpiexec());
    }
}

/// `cargo xtask setup --mpi`: the cluster's MPI when loaded, else MPICH from PyPI (installed when
/// missing, or again with `force`).
pub fn run(force: bool) -> Result<Mpi> {
    let mpi = find_or_install(force)?;
    eprintln!("MPI for data-parallel training: {}", mpi.origin);
    Ok(mpi)
}

/// The MPI to use, installing the PyPI one when needed (quiet when present).
pub fn ensure() -> Result<Mpi> {
    find_or_install(false)
}

fn find_or_install(force: bool) -> Result<Mpi> {
    let pypi_forced = std::env::var("SCAE_MPI").is_ok_and(|v| v == "pypi");
    if !pypi_forced && let Some(mpicc) = on_path("mpicc") {
        let bin = mpicc.parent().context("mpicc has no folder")?.to_path_buf();
        if !bin.join("mpiexec").exists() {
            bail!(
                "{} has no mpiexec beside it: load the MPI module that provides both, or set \
                 SCAE_MPI=pypi to use MPICH from PyPI",
                mpicc.display()
            );
        }
        let libclang = match std::env::var_os("LIBCLANG_PATH") {
            Some(dir) => Some(PathBuf::from(dir)),
            None if system_libclang() => None,
            None => Some(install_or_find(force)?.1),
        };
        return Ok(Mpi {
            origin: format!("the cluster's MPI ({})", bin.display()),
            bin,
            lib: None,
            libclang,
        });
    }
    let (venv, libclang) = install_or_find(force)?;
    Ok(Mpi {
        bin: venv.join("bin"),
        lib: Some(venv.join("lib")),
        libclang: Some(
            std::env::var_os("LIBCLANG_PATH")
                .map(PathBuf::from)
                .unwrap_or(libclang),
        ),
        origin: format!("MPICH {MPICH_VERSION} from PyPI ({})", venv.display()),
    })
}

/// The PyPI MPICH and libclang venv, installed when missing: `(venv, libclang's folder)`.
fn install_or_find(force: bool) -> Result<(PathBuf, PathBuf)> {
    let dir = torch::cache_root()?.join(format!("mpich-{MPICH_VERSION}"));
    if force && dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    match find(&dir) {
        Ok(found) => Ok(found),
        Err(reason) => {
            eprintln!(
                "installing MPICH {MPICH_VERSION} and libclang from PyPI ({reason}) into {}",
                dir.display()
            );
            torch::install_staged(&dir, |staging| {
                let python = torch::make_venv(&staging.join("venv"))?;
                torch::pip_install(&python, &[&format!("mpich=={MPICH_VERSION}"), LIBCLANG])?;
                std::fs::write(staging.join(MARKER), format!("mpich {MPICH_VERSION}\n"))?;
                Ok(())
            })?;
            find(&dir).map_err(|why| anyhow::anyhow!("install finished but {why}"))
        }
    }
}

/// Checks a finished install; the error says what is wrong with it.
fn find(dir: &Path) -> std::result::Result<(PathBuf, PathBuf), String> {
    if !dir.join(MARKER).exists() {
        return Err(if dir.exists() {
            format!("{} holds an incomplete install", dir.display())
        } else {
            "not installed yet".into()
        });
    }
    let venv = dir.join("venv");
    let libclang = std::fs::read_dir(venv.join("lib"))
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/clang/native"))
        .find(|p| p.join("libclang.so").exists())
        .ok_or_else(|| format!("{} has no libclang.so", venv.display()))?;
    for file in ["bin/mpicc", "bin/mpiexec", "include/mpi.h", "lib/libmpi.so"] {
        if !venv.join(file).exists() {
            return Err(format!("{} is missing", venv.join(file).display()));
        }
    }
    Ok((venv, libclang))
}

/// `name` in a folder of `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether the system has a libclang bindgen finds by itself (`llvm-config` on `PATH`, or a
/// Debian/Ubuntu `libclang-*-dev`).
fn system_libclang() -> bool {
    on_path("llvm-config").is_some()
        || std::fs::read_dir("/usr/lib")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name().to_string_lossy().starts_with("llvm-")
                    && e.path().join("lib/libclang.so").exists()
            })
}
