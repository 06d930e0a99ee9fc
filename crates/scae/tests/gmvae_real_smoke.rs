//! Smoke test of `scae gmvae-real` and `scae cluster` end to end on a tiny config: every output
//! written, the same numbers on the same seed, a saved model assigning the same clusters again
//! through `scae cluster`, the real worm_neuron data when `../shared/data` is present, and clean
//! refusals of unlabelled data and of data with the wrong genes.

use std::path::Path;

use ndarray::Array2;

mod common;

use common::{assert_ok, scae, without_seconds};

const TINY: &str = r#"
seeds = [4, 5]
threads = 1
device = "cpu"
test_fraction = 0.2
components = 0
top_genes = 24
pca_components = 5

[gmvae.model]
learn_prior = true
posterior = "shared"

[gmvae.model.vae]
hidden = [16]
latent = 2
likelihood = "nb"
batch_norm = true

[gmvae.train]
epochs = 10
batch_size = 32
learning_rate = 1e-2
clip_grad_norm = 50.0

[gmvae_init]
from_vae = true
pseudo_label_epochs = 5

[leiden]
neighbours = 15
resolution = 1.0
start = "vae"

[vae.model]
hidden = [16]
latent = 2
likelihood = "nb"
batch_norm = true

[vae.train]
epochs = 5
batch_size = 32
learning_rate = 1e-2

[tsne]
perplexity = 10.0
n_iter = 150
early_exaggeration_iter = 50

[scores]
kmeans_restarts = 3
"#;

fn metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).expect("metrics"))
        .expect("valid JSON")
}

/// Raw counts of 3 cell types (240 cells x 30 genes): type `t` is high on genes `j % 3 == t`.
fn counts() -> Array2<i32> {
    Array2::from_shape_fn((240, 30), |(i, j)| {
        let base = if j % 3 == i % 3 { 12 } else { 1 };
        (base + (i * 7 + j * 13) % 5) as i32
    })
}

/// A project root with the tiny config and the labelled counts.
fn project() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    let configs = root.path().join("configs");
    std::fs::create_dir_all(&configs).expect("configs dir");
    std::fs::write(configs.join("gmvae-real.toml"), TINY).expect("config");
    let data = root.path().join("data");
    scae_io::write_npy(&data.join("counts_raw.npy"), &counts().view()).expect("counts");
    let labels: Vec<String> = (0..240).map(|i| format!("type{}", i % 3)).collect();
    scae_io::write_labels(&data.join("labels.txt"), &labels).expect("labels");
    root
}

#[test]
fn gmvae_real_scores_every_method_and_its_model_clusters_new_cells() {
    let root = project();
    let r = root.path().display().to_string();
    assert_ok(&scae(&["gmvae-real", "--root", &r]));
    let dir = root.path().join("results/gmvae-real");
    for file in [
        "scores.csv",
        "confusion.csv",
        "confusion.png",
        "confusion.svg",
        "tsne_by_label.png",
        "tsne_by_cluster.svg",
        "tsne.npy",
        "history.png",
        "report.md",
        "seed_4/gmvae/model.json",
        "seed_4/gmvae/weights.safetensors",
        "seed_4/gmvae/q_y.npy",
        "seed_5/gmvae/clusters.csv",
        "seed_4/gmvae_found_k/model.json",
        "seed_5/gmvae_found_k/q_y.npy",
    ] {
        assert!(dir.join(file).is_file(), "missing {file}");
    }
    let m = metrics(&dir);
    assert_eq!(m["components"], 3, "K = the number of labels");
    assert_eq!(m["genes"], 24);
    let scores = m["scores"].as_array().expect("scores");
    assert_eq!(scores.len(), 2 * 8, "eight methods per seed");
    for s in scores {
        for key in ["ari", "nmi", "accuracy", "silhouette", "seconds"] {
            assert!(s[key].as_f64().is_some_and(f64::is_finite), "{key}: {s}");
        }
    }
    // (a) starts from (c)'s clusters, and (e) from (g)'s, with as many components.
    let of = |seed: u64, method: &str| {
        scores
            .iter()
            .find(|s| s["seed"] == seed && s["method"] == method)
            .unwrap_or_else(|| panic!("no {method} for seed {seed}"))
    };
    for seed in [4, 5] {
        assert_eq!(
            of(seed, "gmvae_start")["ari"],
            of(seed, "vae_latent_kmeans")["ari"]
        );
        let run = m["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .find(|r| r["seed"] == seed)
            .expect("run");
        assert_eq!(run["found_k"], of(seed, "leiden_vae")["clusters"]);
        assert!(run["gmvae_epoch_seconds"].as_f64().is_some_and(|s| s > 0.0));
    }
    // The three cell types are far apart: the GMVAE's own clusters find them.
    let summary = m["summary"].as_array().expect("summary");
    assert_eq!(summary[0]["method"], "gmvae_assignment");
    let ari = summary[0]["ari"]["mean"].as_f64().expect("ari");
    assert!(ari > 0.9, "the GMVAE's mean ARI is {ari}");
    assert_eq!(
        std::fs::read_to_string(dir.join("scores.csv"))
            .expect("scores.csv")
            .lines()
            .count(),
        17
    );
    let q_y: Array2<f32> = ndarray_npy::read_npy(dir.join("seed_4/gmvae/q_y.npy")).expect("q_y");
    assert_eq!(q_y.dim(), (240, 3));
    for row in q_y.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-4);
    }

    // The same seed gives the same numbers.
    let again = root.path().join("again");
    let a = again.display().to_string();
    assert_ok(&scae(&["gmvae-real", "--root", &r, "--out", &a]));
    assert_eq!(
        without_seconds(&m["scores"]),
        without_seconds(&metrics(&again)["scores"])
    );

    // The saved model assigns the same clusters to the same cells.
    let model = dir.join("seed_4/gmvae").display().to_string();
    let data = root.path().join("data").display().to_string();
    let assigned = root.path().join("assigned");
    let out = assigned.display().to_string();
    let adata = root.path().join("assigned.h5ad");
    let h5ad = adata.display().to_string();
    assert_ok(&scae(&[
        "cluster", "--model", &model, "--data", &data, "--out", &out, "--device", "cpu", "--h5ad",
        &h5ad,
    ]));
    // The AnnData written back holds every gene of the input (30), not only the model's 24.
    let written = scae_io::read_h5ad(&adata, &Default::default()).expect("reads");
    assert_eq!(written.x.shape(), (240, 30));
    let saved = std::fs::read_to_string(dir.join("seed_4/gmvae/clusters.csv")).expect("saved");
    let fresh = std::fs::read_to_string(assigned.join("clusters.csv")).expect("fresh");
    let clusters = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(clusters(&saved), clusters(&fresh));

    // Counts lacking some of the model's genes (found by name: a .npy numbers its columns) are
    // refused, naming the file and how many are missing, and nothing is written.
    let wrong = root.path().join("wrong.npy");
    let narrow = counts().slice(ndarray::s![.., ..20]).to_owned();
    scae_io::write_npy(&wrong, &narrow.view()).expect("write");
    let refused = root.path().join("refused");
    let out = scae(&[
        "cluster",
        "--model",
        &model,
        "--data",
        &wrong.display().to_string(),
        "--out",
        &refused.display().to_string(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wrong.npy") && err.contains("4 of the model's 24 genes are missing"),
        "{err}"
    );
    assert!(!refused.exists());
}

#[test]
fn unlabelled_counts_are_refused_before_anything_is_written() {
    let root = project();
    std::fs::remove_file(root.path().join("data/labels.txt")).expect("remove labels");
    let r = root.path().display().to_string();
    let out = scae(&["gmvae-real", "--root", &r]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("counts_raw.npy") && err.contains("labels"),
        "{err}"
    );
    assert!(!root.path().join("results/gmvae-real").exists());
}

/// The real worm_neuron counts: one epoch of every model and phase on the tiny config; skipped with a
/// message when ../shared/data is absent.
#[test]
fn worm_neuron_runs_every_method() {
    let Some(worm) = common::shared_data("worm_neuron") else {
        return;
    };
    let root = project();
    let text = TINY
        .replace("seeds = [4, 5]", "seeds = [0]")
        .replace("top_genes = 24", "top_genes = 500")
        .replace("pca_components = 5", "pca_components = 50")
        .replace("epochs = 10", "epochs = 1")
        .replace("epochs = 5", "epochs = 1");
    std::fs::write(root.path().join("configs/gmvae-real.toml"), text).expect("config");
    let r = root.path().display().to_string();
    let d = worm.display().to_string();
    assert_ok(&scae(&["gmvae-real", "--root", &r, "--data", &d]));
    let m = metrics(&root.path().join("results/gmvae-real"));
    assert_eq!(m["provenance"]["data"]["cells"], 4186);
    assert_eq!(m["components"], 10, "one component per worm_neuron label");
    assert_eq!(m["genes"], 500);
    for run in m["runs"].as_array().expect("runs") {
        assert!(run["gmvae_test_elbo"].as_f64().is_some_and(f64::is_finite));
        assert!(run["init_ari"].as_f64().is_some_and(f64::is_finite));
    }
}

/// `--all`: every labelled `.h5ad` under a folder, each in its own results folder, and one table.
#[test]
fn gmvae_real_all_runs_every_labelled_dataset_and_writes_one_table() {
    let root = project();
    let data = root.path().join("datasets");
    std::fs::create_dir_all(&data).expect("dir");
    let x = counts().mapv(|v| v as f32);
    let csr = scae_io::CsMat::csr_from_dense(x.view(), 0.0);
    let obs: Vec<String> = (0..240).map(|i| format!("cell{i}")).collect();
    let var: Vec<String> = (0..30).map(|j| format!("gene{j}")).collect();
    let types: Vec<String> = (0..3).map(|t| format!("type{t}")).collect();
    for name in ["first", "second"] {
        let out = scae_io::AnnOutput {
            obs_names: &obs,
            var_names: &var,
            x: Some(&csr),
            obs_categorical: vec![(
                "cell_type",
                (0..240).map(|i| i % 3).collect(),
                types.clone(),
            )],
            ..Default::default()
        };
        scae_io::write_h5ad(&data.join(format!("{name}.h5ad")), &out).expect("h5ad");
    }
    std::fs::write(data.join("notes.txt"), "not a dataset").expect("file");
    let (r, d) = (
        root.path().display().to_string(),
        data.display().to_string(),
    );
    assert_ok(&scae(&[
        "gmvae-real",
        "--root",
        &r,
        "--all",
        &d,
        "--labels-key",
        "cell_type",
    ]));
    let out = root.path().join("results/gmvae-real-all");
    for name in ["first", "second"] {
        let m = metrics(&out.join(name));
        assert_eq!(m["components"], 3, "{name}");
    }
    let table = std::fs::read_to_string(out.join("table.md")).expect("table.md");
    assert!(table.contains("| first (240 cells, 3 labels) | second (240 cells, 3 labels) |"));
    for check in [
        "(a) ≥ the best of (c) and (d)",
        "(a) ≥ its start (a0)",
        "(e) ≥ (f)",
    ] {
        assert!(table.contains(check), "{check} missing from\n{table}");
    }
    let csv = std::fs::read_to_string(out.join("table.csv")).expect("table.csv");
    assert_eq!(csv.lines().count(), 1 + 2 * 8, "8 methods per dataset");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("table.json")).expect("json"))
            .expect("valid");
    assert_eq!(json["datasets"].as_array().expect("datasets").len(), 2);

    // A folder without any labelled dataset is refused in one line, and nothing is written.
    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).expect("dir");
    let refused = root.path().join("refused");
    let run = scae(&[
        "gmvae-real",
        "--root",
        &r,
        "--all",
        &empty.display().to_string(),
        "--out",
        &refused.display().to_string(),
    ]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("empty: no labelled dataset found"), "{err}");
    assert!(!refused.exists());
}
