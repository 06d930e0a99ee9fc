//! Helpers shared by the unit tests of several modules.

use std::path::{Path, PathBuf};

/// `shared/data/<sub>` beside the workspace (`../shared/data` from its root), or `None` after
/// printing that the calling test is skipped: the shared data is not part of a fresh clone.
pub(crate) fn shared_data(sub: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(sub);
    if path.is_dir() {
        Some(path)
    } else {
        eprintln!("SKIPPED: shared data {} is absent", path.display());
        None
    }
}
