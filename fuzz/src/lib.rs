//! Shared helpers of the fuzz targets: the readers take paths, so each target writes its input
//! into a scratch folder first.
//!
//! A target fails only on a panic, a crash, a hang or a runaway allocation; an `Err` from a reader
//! is the expected answer to bad input. Where a reader returns `Ok`, the targets also check what
//! its documentation promises (shapes, values, layout), with `assert!`: a broken promise is a
//! panic too.

pub mod h5gen;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The process's scratch folder, made once under `$TMPDIR` (`cargo xtask fuzz` points that at
/// `fuzz/target/tmp/<target>` and removes it after the run).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("scae-fuzz-")
            .tempdir()
            .expect("create the scratch folder")
            .keep()
    })
}

/// Writes `bytes` to `name` inside the scratch folder (creating its parent) and returns the path.
///
/// The file is overwritten in place and then cut to length, not truncated first: ext4 flushes a
/// file truncated to zero and rewritten when it is closed (`auto_da_alloc`), which made every
/// execution wait for the disk (about 300 per second instead of thousands).
pub fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create a scratch subfolder");
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .expect("open the scratch file");
    file.write_all(bytes).expect("write the scratch file");
    file.set_len(bytes.len() as u64)
        .expect("cut the scratch file to length");
    path
}
