//! What the integration tests share (`mod common;` in each test file that needs it).

// Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `scae` binary with `args`, logging warnings only.
pub fn scae(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scae"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the scae binary runs")
}

/// Fails the test with scae's stderr unless it exited with success.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "scae failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `shared/data/<sub>` beside the workspace (`../shared/data` from its root), or `None` after
/// printing that the calling test is skipped: the shared data is not part of a fresh clone. Under
/// CI (`CI` set to `true` or `1`) a missing folder is a failure instead, so a CI run that lost
/// the data cannot pass by skipping.
pub fn shared_data(sub: &str) -> Option<PathBuf> {
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

/// `value` without its timings (every `seconds` key, at any depth): what the same seed must give
/// again.
pub fn without_seconds(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(k, _)| k.as_str() != "seconds")
            .map(|(k, v)| (k.clone(), without_seconds(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        serde_json::Value::Array(items) => items.iter().map(without_seconds).collect(),
        other => other.clone(),
    }
}

/// The set-up's Python (`SCAE_PYTHON`, set by `cargo xtask`); `None` outside CI when unset.
pub fn python() -> Option<PathBuf> {
    set_up_path("SCAE_PYTHON")
}

/// The program `var` names (set by `cargo xtask test`), or `None` after printing that the calling
/// test is skipped; under CI a missing one is a failure.
pub fn set_up_path(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if Path::new(&p).exists() => Some(p.into()),
        _ => {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
                "CI=true and {var} is not set: run the tests with `cargo xtask test`"
            );
            eprintln!("SKIPPED: {var} is not set (run the tests with `cargo xtask test`)");
            None
        }
    }
}

/// Runs the Python `code` with `args` and returns its stdout; fails the test with its stderr.
pub fn run_python(python: &Path, code: &str, args: &[&Path]) -> Vec<u8> {
    let run = Command::new(python)
        .args(["-c", code])
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    run.stdout
}

/// Writes the 10x folder `tenx` (with its `labels.txt`) as an AnnData file at `out`, with
/// anndata: the counts as CSR `X`, the labels as the categorical `obs["cell_type"]`.
pub fn tenx_to_h5ad(python: &Path, tenx: &Path, out: &Path) {
    let convert = r#"
import gzip, sys
import anndata as ad, numpy as np, pandas as pd, scipy.io
d, out = sys.argv[1], sys.argv[2]
x = scipy.io.mmread(d + "/matrix.mtx.gz").T.tocsr().astype(np.float32)
barcodes = [l.strip() for l in gzip.open(d + "/barcodes.tsv.gz", "rt")]
genes = [l.split("\t")[0] for l in gzip.open(d + "/features.tsv.gz", "rt")]
labels = [l.strip() for l in open(d + "/labels.txt")]
obs = pd.DataFrame({"cell_type": pd.Categorical(labels)}, index=barcodes)
ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(out)
"#;
    run_python(python, convert, &[tenx, out]);
}

/// A path in `scae-io`'s test fixtures (`crates/io/tests/fixtures`, made by the scripts there).
pub fn io_fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../io/tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// Two epochs of one small autoencoder (Q1, Q4 and `train` read it as `configs/q1.toml`).
pub const SMALL_Q1: &str = r#"
seed = 7
threads = 1
device = "cpu"
test_fraction = 0.2
latents = [2]
hidden = [16]
loss = "mse"

[train]
epochs = 2
batch_size = 8
learning_rate = 1e-3
"#;

/// A small NB VAE, 2 epochs.
pub const SMALL_VAE: &str = r#"
seed = 3
threads = 1
device = "cpu"
test_fraction = 0.25
importance_samples = 5

[model]
hidden = [16]
latent = 3
likelihood = "nb"

[train]
epochs = 2
batch_size = 8
learning_rate = 1e-2
"#;

/// gmvae-real on the 40-cell fixtures of `scae-io`: one seed, one epoch of each phase.
pub const FIXTURE_GMVAE: &str = r#"
seeds = [0]
threads = 1
device = "cpu"
test_fraction = 0.2
components = 0
top_genes = 20
pca_components = 5

[gmvae.model]
y_balance = 1.0

[gmvae.model.vae]
hidden = [16]
latent = 2
likelihood = "nb"
batch_norm = true

[gmvae.train]
epochs = 1
batch_size = 8
learning_rate = 1e-2

[gmvae_init]
pretrain_epochs = 1
pseudo_label_epochs = 1

[vae.model]
hidden = [16]
latent = 2
likelihood = "nb"

[vae.train]
epochs = 1
batch_size = 8
learning_rate = 1e-2

[tsne]
perplexity = 5.0
n_iter = 150
early_exaggeration_iter = 50

[scores]
kmeans_restarts = 2
"#;
