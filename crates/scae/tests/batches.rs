//! Batch covariates from the command line (`scae vae --batch-key`, `--transform-batch`) and
//! through a saved model (`scae embed`, `scae cluster`): the model card records the batches a
//! model knows, the denoised counts change with the batch they are decoded as, new cells of a
//! known batch embed, and a batch the model does not know, a missing value, a column that is
//! not there or data that have no `obs` are refused in one line.

use std::path::Path;

use serde_json::Value;

mod common;

use common::{FIXTURE_GMVAE, SMALL_VAE, io_fixture, scae};

fn project() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let configs = root.path().join("configs");
    std::fs::create_dir_all(&configs).expect("configs");
    std::fs::write(configs.join("vae.toml"), SMALL_VAE).expect("config");
    root
}

/// Runs `scae` in the project `root` (`--root` added to the commands that take it).
fn run(root: &Path, args: &[&str]) -> std::process::Output {
    let root = root.display().to_string();
    let mut all = args.to_vec();
    if !matches!(args.first(), Some(&"embed" | &"cluster")) {
        all.extend(["--root", &root]);
    }
    scae(&all)
}

fn ok(root: &Path, args: &[&str]) {
    let out = run(root, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The one line a refused run prints, which must name `what`.
fn refused(root: &Path, args: &[&str], what: &str) -> String {
    let out = run(root, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} ran: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("{args:?}: expected `{what}` in: {stderr}"));
    line.to_owned()
}

fn denoised(h5ad: &str) -> ndarray::Array2<f32> {
    let options = scae_io::H5adOptions {
        layer: Some("scae_denoised".into()),
        ..Default::default()
    };
    let m = scae_io::read_h5ad(Path::new(h5ad), &options).expect("the denoised layer");
    m.x.to_dense()
}

#[test]
fn a_batch_aware_vae_records_its_batches_decodes_as_one_and_refuses_one_it_does_not_know() {
    let root = project();
    let dir = root.path();
    let path = |name: &str| dir.join(name).display().to_string();
    let csr = io_fixture("csr.h5ad");
    let model = path("model");
    let base = ["vae", "--data", csr.as_str(), "--epochs", "2"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| (*s).to_owned()).collect()
    };
    let args = with(&[
        "--batch-key",
        "batch",
        "--out",
        &model,
        "--h5ad",
        &path("own.h5ad"),
        "--denoised",
    ]);
    ok(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());

    // The card and the metrics say which batches the model knows.
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model/model.json")).expect("card"))
            .expect("JSON");
    assert_eq!(
        card["covariates"]["batch"],
        serde_json::json!(["a", "b"]),
        "{card}"
    );
    assert_eq!(card["config"]["covariates"][0]["key"], "batch", "{card}");
    let metrics: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("model/metrics.json")).expect("metrics"),
    )
    .expect("JSON");
    assert_eq!(
        metrics["config"]["batch_keys"],
        serde_json::json!(["batch"])
    );

    // Decoded as batch a, as batch b, as each cell's own: three different layers, each with
    // every cell's library size (the observed library scales the proportions).
    let own = denoised(&path("own.h5ad"));
    let mut as_batch = Vec::new();
    for b in ["a", "b"] {
        let (out, h5ad) = (path(&format!("as_{b}")), path(&format!("as_{b}.h5ad")));
        let args = with(&[
            "--batch-key",
            "batch",
            "--out",
            &out,
            "--h5ad",
            &h5ad,
            "--denoised",
            "--transform-batch",
            b,
        ]);
        ok(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
        as_batch.push(denoised(&h5ad));
    }
    let differ = |x: &ndarray::Array2<f32>, y: &ndarray::Array2<f32>| {
        x.iter()
            .zip(y)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    };
    assert!(differ(&as_batch[0], &as_batch[1]) > 1e-4);
    assert!(differ(&as_batch[0], &own) > 1e-4 && differ(&as_batch[1], &own) > 1e-4);
    for m in &as_batch {
        for (row, own_row) in m.rows().into_iter().zip(own.rows()) {
            let (s, t) = (row.sum(), own_row.sum());
            assert!(
                (s - t).abs() <= 1e-3 * t.max(1.0),
                "library {s} against {t}"
            );
        }
    }

    // A batch the data do not have, a batch key that is not a column, a covariate with missing
    // values, and data without obs columns: one line each.
    let args = with(&[
        "--batch-key",
        "batch",
        "--out",
        &path("bad"),
        "--h5ad",
        &path("bad.h5ad"),
        "--denoised",
        "--transform-batch",
        "z",
    ]);
    refused(
        dir,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "--transform-batch z: batch has no such batch (it has a, b)",
    );
    let args = with(&["--batch-key", "nope", "--out", &path("nope")]);
    refused(
        dir,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "nope",
    );
    let annotated = io_fixture("annotated.h5ad");
    refused(
        dir,
        &[
            "vae",
            "--data",
            &annotated,
            "--epochs",
            "1",
            "--batch-key",
            "maybe",
            "--out",
            &path("maybe"),
        ],
        "cells have no value",
    );
    refused(
        dir,
        &[
            "vae",
            "--epochs",
            "1",
            "--batch-key",
            "batch",
            "--out",
            &path("npy"),
        ],
        "--batch-key",
    );
    refused(
        dir,
        &[
            "vae",
            "--data",
            &csr,
            "--transform-batch",
            "a",
            "--out",
            &path("tb"),
        ],
        "--denoised",
    );

    // The saved model embeds cells of the batches it knows...
    let latent = path("latent.npy");
    ok(
        dir,
        &["embed", "--model", &model, "--data", &csr, "--out", &latent],
    );
    let codes: ndarray::Array2<f32> = ndarray_npy::read_npy(&latent).expect("latent");
    assert_eq!(codes.dim(), (39, 3));
    let trained: ndarray::Array2<f32> =
        ndarray_npy::read_npy(dir.join("model/latent.npy")).expect("latent");
    let diff = differ(&codes, &trained);
    assert!(
        diff < 1e-5,
        "embed gives the training run's latent means: {diff}"
    );

    // ... and refuses, in one line, cells of a batch it does not know.
    let Some(python) = common::python() else {
        return;
    };
    let other = dir.join("other.h5ad");
    let code = r#"
import sys
import anndata as ad
a = ad.read_h5ad(sys.argv[1])
a.obs["batch"] = a.obs["batch"].astype(str)
# Cells 5-9 (cell 3, without counts, is dropped on reading).
a.obs.iloc[5:10, a.obs.columns.get_loc("batch")] = "c"
a.write_h5ad(sys.argv[2])
"#;
    common::run_python(&python, code, &[Path::new(&csr), &other]);
    let other = other.display().to_string();
    let line = refused(
        dir,
        &[
            "embed",
            "--model",
            &model,
            "--data",
            &other,
            "--out",
            &path("o.npy"),
        ],
        "5 cells of batch c, which the model was not trained on (it knows a, b)",
    );
    assert!(line.contains("other.h5ad"), "{line}");
}

/// A tiny integration study: one seed, a few epochs, a small t-SNE.
const SMALL_INTEGRATE: &str = r#"
seeds = [0]
threads = 1
device = "cpu"
test_fraction = 0.2
top_genes = 0
pca_components = 5

[vae.model]
hidden = [16]
latent = 3
likelihood = "nb"
batch_norm = true

[vae.train]
epochs = 4
batch_size = 64
learning_rate = 1e-2

[gmvae.model]
learn_prior = true
posterior = "shared"

[gmvae.model.vae]
hidden = [16]
latent = 3
likelihood = "nb"
batch_norm = true

[gmvae.train]
epochs = 2
batch_size = 64
learning_rate = 1e-2

[gmvae_init]
from_vae = true
pseudo_label_epochs = 0

[tsne]
perplexity = 10.0
n_iter = 150
early_exaggeration_iter = 50
"#;

/// Writes a multi-batch AnnData of 240 cells x 40 genes with anndata: three cell types
/// (`cell_type`, and `coarse`, which merges two of them), two batches (`batch`; batch b1 scales
/// every fourth gene by 4), raw counts in `X` and twice them in `layers["counts"]`; and the same
/// without its batch column at `no_batch`.
fn multi_batch_h5ad(python: &Path, out: &Path, no_batch: &Path) {
    let code = r#"
import sys
import numpy as np, pandas as pd, scipy.sparse as sp, anndata as ad
rng = np.random.default_rng(0)
n, g = 240, 40
types = np.arange(n) % 3
batches = (np.arange(n) // 3) % 2
rate = np.ones((n, g))
for t in range(3):
    rate[types == t, t * 10:(t + 1) * 10] = 10.0
rate[batches == 1, ::4] *= 4.0
x = rng.poisson(rate).astype(np.float32)
obs = pd.DataFrame({
    "batch": pd.Categorical(np.array(["b0", "b1"])[batches]),
    "cell_type": pd.Categorical(np.array(["t0", "t1", "t2"])[types]),
    "coarse": pd.Categorical(np.array(["t0", "t1", "t1"])[types]),
}, index=[f"c{i}" for i in range(n)])
a = ad.AnnData(sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
a.layers["counts"] = sp.csr_matrix(2 * x)
a.write_h5ad(sys.argv[1])
del a.obs["batch"]
a.write_h5ad(sys.argv[2])
"#;
    common::run_python(python, code, &[out, no_batch]);
}

fn data_read(out: &Path) -> Value {
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).expect("metrics"))
            .expect("JSON");
    metrics["provenance"]["data"].clone()
}

#[test]
fn integrate_scores_four_embeddings_and_honours_every_data_flag() {
    let Some(python) = common::python() else {
        return;
    };
    let root = project();
    let dir = root.path();
    std::fs::write(dir.join("configs/integrate.toml"), SMALL_INTEGRATE).expect("config");
    let folder = dir.join("multi");
    std::fs::create_dir_all(&folder).expect("folder");
    let file = folder.join("two_batches.h5ad");
    // A file without the batch column is not a multi-batch dataset for --all.
    multi_batch_h5ad(&python, &file, &folder.join("no_batch.h5ad"));
    let f = file.display().to_string();
    let path = |name: &str| dir.join(name).display().to_string();
    let base = |out: &str| {
        vec![
            "integrate".to_owned(),
            "--data".into(),
            f.clone(),
            "--batch-key".into(),
            "batch".into(),
            "--out".into(),
            out.to_owned(),
        ]
    };
    let go = |out: &str, extra: &[&str]| {
        let mut args = base(out);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        ok(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
        data_read(Path::new(out))
    };

    let out = path("plain");
    let plain = go(&out, &["--labels-key", "cell_type"]);
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plain/metrics.json")).expect("m"))
            .expect("JSON");
    let rows = metrics["rows"].as_array().expect("rows");
    let methods: Vec<&str> = rows.iter().filter_map(|r| r["method"].as_str()).collect();
    assert_eq!(methods, ["pca", "vae", "vae_batch", "gmvae_batch"]);
    for row in rows {
        for key in ["total", "bio", "batch"] {
            let v = row[key].as_f64().expect("a score");
            assert!((0.0..=1.0).contains(&v), "{key} {v} of {row}");
        }
    }
    assert!(rows[3]["cluster_ari"].as_f64().is_some());
    assert_eq!(metrics["batches"], serde_json::json!(["b0", "b1"]));
    assert_eq!(metrics["neighbours"], 90);
    for figure in [
        "embedding_by_batch.png",
        "embedding_by_cell_type.svg",
        "scores.csv",
        "report.md",
    ] {
        assert!(dir.join("plain").join(figure).exists(), "{figure}");
    }

    // An embedding made elsewhere is scored beside the study's own; one of the wrong length is
    // refused in one line.
    // Three tight groups by cell type, 4 apart, each cell at its own place within its group.
    let types = ndarray::Array2::from_shape_fn((240, 2), |(i, j)| {
        let wobble = if j == 0 {
            ((i * 7919) % 1000) as f32 / 1000.0
        } else {
            ((i * 6037) % 997) as f32 / 997.0
        };
        ((i % 3) * 4) as f32 + wobble
    });
    let given = dir.join("types.npy");
    scae_io::write_npy(&given, &types.view()).expect("npy");
    let short = dir.join("short.npy");
    scae_io::write_npy(&short, &types.slice(ndarray::s![..10, ..])).expect("npy");
    let with_given = path("given");
    go(
        &with_given,
        &[
            "--labels-key",
            "cell_type",
            "--embedding",
            &format!("types={}", given.display()),
        ],
    );
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("given/metrics.json")).expect("m"))
            .expect("JSON");
    let row = metrics["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["method"] == serde_json::json!({"given": "types"}))
        .expect("the given embedding's row")
        .clone();
    // It holds the cell types and nothing of the batches: full bio scores.
    assert!(
        row["scores"]["bio"]["leiden_ari"].as_f64().expect("ari") > 0.99,
        "{row}"
    );
    assert!(dir.join("given/tsne_given_types.npy").exists());
    refused(
        dir,
        &[
            "integrate",
            "--data",
            &f,
            "--batch-key",
            "batch",
            "--labels-key",
            "cell_type",
            "--embedding",
            &format!("short={}", short.display()),
            "--out",
            &path("short"),
        ],
        "has 10 rows, but the data have 240 cells",
    );

    // Every data flag changes what was read.
    let layer = go(
        &path("layer"),
        &["--labels-key", "cell_type", "--layer", "counts"],
    );
    assert_eq!(layer["layer"], "counts");
    assert_ne!(layer["fingerprint"], plain["fingerprint"]);
    let coarse = go(&path("coarse"), &["--labels-key", "coarse"]);
    assert_eq!(coarse["labels_key"], "coarse");
    assert_ne!(coarse["fingerprint"], plain["fingerprint"]);
    let labels = dir.join("labels.txt");
    let codes: Vec<String> = (0..240).map(|i| format!("l{}", i % 4)).collect();
    scae_io::write_labels(&labels, &codes).expect("labels");
    let from_file = go(&path("file"), &["--labels", &labels.display().to_string()]);
    assert_ne!(from_file["fingerprint"], plain["fingerprint"]);
    let top = go(
        &path("top"),
        &["--labels-key", "cell_type", "--top-genes", "20"],
    );
    assert_eq!(top["genes"], 20, "{top}");
    let top_metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("top/metrics.json")).expect("m"))
            .expect("JSON");
    assert_eq!(top_metrics["genes"], 20);

    // Refused in one line: no batch key, no cell types.
    refused(
        dir,
        &[
            "integrate",
            "--data",
            &f,
            "--labels-key",
            "cell_type",
            "--out",
            &path("nb"),
        ],
        "needs --batch-key",
    );
    refused(
        dir,
        &[
            "integrate",
            "--data",
            &f,
            "--batch-key",
            "batch",
            "--out",
            &path("nl"),
        ],
        "--labels-key",
    );

    // --all: the multi-batch files of a folder, one table.
    let all = path("all");
    let folder = folder.display().to_string();
    ok(
        dir,
        &[
            "integrate",
            "--all",
            &folder,
            "--batch-key",
            "batch",
            "--labels-key",
            "cell_type",
            "--out",
            &all,
        ],
    );
    let table = std::fs::read_to_string(dir.join("all/table.md")).expect("table");
    assert!(
        table.contains("two_batches") && !table.contains("no_batch"),
        "{table}"
    );
}

#[test]
fn gmvae_real_with_a_batch_key_saves_models_that_know_the_batches_and_cluster_new_cells() {
    let root = project();
    let dir = root.path();
    std::fs::write(dir.join("configs/gmvae-real.toml"), FIXTURE_GMVAE).expect("config");
    let csr = io_fixture("csr.h5ad");
    let out = dir.join("gmvae").display().to_string();
    ok(
        dir,
        &[
            "gmvae-real",
            "--data",
            &csr,
            "--labels-key",
            "cell_type",
            "--batch-key",
            "batch",
            "--out",
            &out,
        ],
    );
    let model = dir.join("gmvae/seed_0/gmvae");
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("model.json")).expect("card"))
            .expect("JSON");
    assert_eq!(
        card["covariates"]["batch"],
        serde_json::json!(["a", "b"]),
        "{card}"
    );
    assert_eq!(
        card["config"]["vae"]["covariates"][0]["key"], "batch",
        "{card}"
    );
    let clusters = dir.join("clusters").display().to_string();
    let model = model.display().to_string();
    ok(
        dir,
        &[
            "cluster", "--model", &model, "--data", &csr, "--out", &clusters,
        ],
    );
    assert!(dir.join("clusters/clusters.csv").exists());
}
