//! Helpers shared by the unit tests of several modules.

use std::path::{Path, PathBuf};

/// `shared/data/<sub>` beside the workspace (`../shared/data` from its root), or `None` after
/// printing that the calling test is skipped: the shared data is not part of a fresh clone. Under
/// CI (`CI` set to `true` or `1`) a missing folder is a failure instead, so a CI run that lost
/// the data cannot pass by skipping.
pub(crate) fn shared_data(sub: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(sub);
    if path.is_dir() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1") {
        panic!("CI=true and the shared data {} is missing", path.display());
    }
    eprintln!("SKIPPED: shared data {} is absent", path.display());
    None
}
