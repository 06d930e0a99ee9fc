//! Atomic file writes: write a temporary sibling, then rename it over the target.
//!
//! Results are overwritten on every run; if a run dies mid-write, the previous file must survive
//! intact rather than be replaced by half of a new one. A rename within one directory is atomic
//! on the filesystems we care about, so the temporary file lives next to the target. It is
//! removed on every failure path, a panicking closure included.

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Error, Result};

/// Writes `path` atomically: `write` fills a buffered temporary file in the same directory
/// (`.{file_name}.tmp-{pid}-{n}`), which is then renamed over `path`.
///
/// Parent directories are created. If `write` fails (or panics), or the file cannot be flushed or
/// renamed, the temporary file is removed and `path` is left as it was. The data is not fsynced.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<()> {
    let wrap = |err| Error::Write {
        path: path.to_path_buf(),
        err,
    };
    write_atomic_path(path, |tmp| {
        let mut writer = BufWriter::new(File::create(tmp).map_err(wrap)?);
        write(&mut writer).map_err(wrap)?;
        drop(writer.into_inner().map_err(|e| wrap(e.into_error()))?);
        Ok(())
    })?;
    tracing::debug!(path = %path.display(), "wrote file atomically");
    Ok(())
}

/// Writes `path` atomically through a library that wants a path of its own (HDF5): `write` gets a
/// temporary path beside `path`, which is renamed into place when it succeeds and removed when it
/// fails.
///
/// # Errors
/// What `write` returns; [`Error::Write`] when the folder cannot be made or the rename fails.
pub fn write_atomic_path(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let wrap = |err| Error::Write {
        path: path.to_path_buf(),
        err,
    };
    let tmp = temp_path(path).ok_or_else(|| {
        wrap(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path has no file name",
        ))
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(wrap)?;
    }
    let mut guard = TempFile {
        path: tmp,
        armed: true,
    };
    write(&guard.path)?;
    fs::rename(&guard.path, path).map_err(wrap)?;
    guard.armed = false;
    Ok(())
}

/// `dir/.{file_name}.tmp-{pid}-{n}`, unique within this process; `None` if `path` has no file name.
fn temp_path(path: &Path) -> Option<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = path.file_name()?.to_string_lossy();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Some(path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id())))
}

/// Removes the temporary file when dropped while still armed (any exit before the rename).
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the write has already failed, and that error is the one to report.
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read tempdir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn success_replaces_file_and_leaves_no_temp() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.txt");
        fs::write(&path, "old").expect("seed file");
        write_atomic(&path, |w| w.write_all(b"new"))?;
        assert_eq!(fs::read_to_string(&path).expect("read back"), "new");
        assert_eq!(entries(dir.path()), ["out.txt"]);
        Ok(())
    }

    #[test]
    fn failing_closure_keeps_old_file_and_removes_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.txt");
        fs::write(&path, "old").expect("seed file");
        let err = write_atomic(&path, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("encoder failed"))
        })
        .expect_err("closure failed");
        assert!(matches!(err, Error::Write { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("out.txt") && msg.contains("encoder failed"),
            "{msg}"
        );
        assert_eq!(fs::read_to_string(&path).expect("read back"), "old");
        assert_eq!(entries(dir.path()), ["out.txt"]);
    }

    #[test]
    fn panicking_closure_removes_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.txt");
        let caught = std::panic::catch_unwind(|| write_atomic(&path, |_| panic!("boom")));
        assert!(caught.is_err());
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn creates_parent_directories() -> Result<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/out.txt");
        write_atomic(&path, |w| w.write_all(b"x"))?;
        assert_eq!(fs::read_to_string(&path).expect("read back"), "x");
        assert_eq!(entries(&dir.path().join("a/b")), ["out.txt"]);
        Ok(())
    }

    #[test]
    fn path_without_file_name_is_an_error() {
        let err = write_atomic(Path::new("/"), |_| Ok(())).expect_err("no file name");
        assert!(matches!(err, Error::Write { .. }), "{err:?}");
    }
}
