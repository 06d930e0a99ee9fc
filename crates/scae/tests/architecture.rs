//! ARCHITECTURE.md's rule, kept true by a test: tensors live in `scae-models` and `scae-dists`
//! only. Every other crate of the workspace (the `scae` binary and its studies, io, eval, viz,
//! sim, par, dp) neither depends on tch nor names it in its source.

use std::path::{Path, PathBuf};

/// The crates that may not touch tch, by folder under `crates/`.
const TENSOR_FREE: [&str; 7] = ["scae", "io", "eval", "viz", "sim", "par", "dp"];

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/scae sits in crates/")
        .to_path_buf()
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_models_and_dists_depend_on_tch() {
    for name in TENSOR_FREE {
        let manifest = crates_dir().join(name).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).expect("a member's Cargo.toml");
        let doc: toml::Table = text.parse().expect("valid TOML");
        for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let deps = doc.get(table).and_then(|d| d.as_table());
            for dep in deps.into_iter().flat_map(|d| d.keys()) {
                assert!(
                    !dep.starts_with("tch") && dep != "torch-sys",
                    "{}: [{table}] names {dep}; only scae-models and scae-dists may depend on it",
                    manifest.display()
                );
            }
        }
    }
    // The models crate does depend on it: the test looks at the right files.
    let models = std::fs::read_to_string(crates_dir().join("models").join("Cargo.toml"))
        .expect("crates/models/Cargo.toml");
    assert!(models.contains("tch.workspace"));
}

/// Whether a line of code names the tch crate: a path `tch::..` or an import, as a whole word
/// (`batch::` does not count). Spelt in pieces so that this file does not name it itself.
fn names_tch(code: &str) -> bool {
    let word = concat!("tc", "h");
    code.match_indices(word).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = &code[i + word.len()..];
        let starts_word = !before.is_some_and(|c| c.is_alphanumeric() || c == '_');
        starts_word && (after.starts_with("::") || code[..i].trim_end().ends_with("use"))
    })
}

#[test]
fn the_tch_check_finds_paths_and_imports_only() {
    let word = concat!("tc", "h");
    assert!(names_tch(&format!("let d = {word}::Device::Cpu;")));
    assert!(names_tch(&format!("use {word}::Tensor;")));
    assert!(names_tch(&format!("use {word};")));
    assert!(!names_tch("pub use batch::{Batch, BatchSource};"));
    assert!(!names_tch("let fetch = stretch;"));
}

#[test]
fn no_tensor_free_crate_names_tch_in_its_source() {
    let mut checked = 0;
    for name in TENSOR_FREE {
        let mut files = Vec::new();
        rust_files(&crates_dir().join(name), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable source");
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                assert!(
                    !names_tch(code),
                    "{}:{}: names libtorch's crate; only scae-models and scae-dists may",
                    file.display(),
                    i + 1
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} source files found");
}
