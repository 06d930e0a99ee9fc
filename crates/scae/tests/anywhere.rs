//! `scae` as an installed tool: run from a folder that is not the checkout, with no `--root`, it
//! uses its built-in configs, writes results under `./results/` and names the default data it
//! misses.

use std::path::Path;
use std::process::{Command, Output};

use ndarray::Array2;

/// Runs the built binary in `dir`.
fn scae_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scae"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the scae binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("a folder")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn vae_runs_from_an_empty_folder_on_its_built_in_config() {
    let data = tempfile::tempdir().expect("temp dir");
    let counts = data.path().join("counts.npy");
    let x = Array2::from_shape_fn((120, 20), |(i, j)| {
        let high = j % 3 == i % 3;
        (if high { 5 } else { 0 } + (i * 7 + j * 13) % 4) as i32
    });
    scae_io::write_npy(&counts, &x.view()).expect("counts");
    let here = tempfile::tempdir().expect("temp dir");
    let c = counts.to_str().expect("a UTF-8 path");
    let out = scae_in(
        here.path(),
        &[
            "vae",
            "--data",
            c,
            "--epochs",
            "1",
            "--threads",
            "1",
            "--device",
            "cpu",
        ],
    );
    assert!(out.status.success(), "scae vae failed: {}", stderr(&out));
    let metrics = here.path().join("results/vae/metrics.json");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics).expect("metrics.json"))
            .expect("JSON");
    let shipped: toml::Value =
        toml::from_str(include_str!("../../../configs/vae.toml")).expect("configs/vae.toml");
    assert_eq!(
        metrics["config"]["model"]["hidden"],
        serde_json::json!(shipped["model"]["hidden"].as_array().expect("widths")),
        "the built-in configs/vae.toml was used"
    );
    assert_eq!(metrics["config"]["train"]["epochs"], 1);
    assert_eq!(
        entries(here.path()),
        ["results"],
        "only results/ is written here"
    );
}

#[test]
fn missing_default_data_is_named_with_how_to_make_it() {
    let here = tempfile::tempdir().expect("temp dir");
    for (study, file) in [("q1", "data/counts.npy"), ("vae", "data/counts_raw.npy")] {
        let out = scae_in(here.path(), &[study]);
        assert!(!out.status.success(), "{study} ran without data");
        let err = stderr(&out);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{study}: one line: {err}"
        );
        assert!(err.contains(file), "{study}: names {file}: {err}");
        assert!(
            err.contains("scae data"),
            "{study}: says how to make it: {err}"
        );
    }
    assert!(entries(here.path()).is_empty(), "nothing is written");
}
