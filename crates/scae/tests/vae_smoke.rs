//! Smoke tests of the VAE studies: `scae vae`, `vae-synth` and `vae-likelihoods` end to end on
//! tiny configs, the same numbers on the same seed, raw counts from .npy and 10x folders, the
//! real worm_neuron data when `../shared/data` is present, and clean refusals of bad counts.

use std::path::Path;

use ndarray::Array2;

mod common;

use common::{assert_ok, scae};

const TINY_VAE: &str = r#"
seed = 3
threads = 1
device = "cpu"
test_fraction = 0.19
importance_samples = 20

[model]
hidden = [16]
latent = 3
likelihood = "nb"
batch_norm = true
dropout = 0.1
kl_warmup_epochs = 2

[train]
epochs = 3
batch_size = 32
learning_rate = 1e-2
clip_grad_norm = 10.0
"#;

const TINY_SYNTH: &str = r#"
seed = 0
threads = 1
device = "cpu"
test_fraction = 0.19
importance_samples = 10

[simulate]
kind = "independent-poisson"
cells = 300
rates = [1, 2, 3, 4, 5]

[model]
hidden = [7]
latent = 3
likelihood = "poisson"
library = "none"

[train]
epochs = 4
batch_size = 32
learning_rate = 1e-2
"#;

const TINY_LIKELIHOODS: &str = r#"
seed = 1
threads = 1
device = "cpu"
test_fraction = 0.19
importance_samples = 10
likelihoods = ["poisson", "nb", "zip", "zinb"]

[model]
hidden = [16]
latent = 3

[train]
epochs = 2
batch_size = 32
learning_rate = 1e-2

[grid]
hidden = [[8], [16]]
latent = [2]
epochs = 1
validation_fraction = 0.2

[tsne]
perplexity = 10.0
n_iter = 150
early_exaggeration_iter = 50

[scores]
kmeans_restarts = 2
"#;

fn metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).expect("metrics"))
        .expect("valid JSON")
}

/// A project root with the tiny configs and raw counts of 3 groups (150 cells x 30 genes).
fn project() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    let configs = root.path().join("configs");
    std::fs::create_dir_all(&configs).expect("configs dir");
    for (name, text) in [
        ("vae.toml", TINY_VAE),
        ("vae-synth.toml", TINY_SYNTH),
        ("vae-likelihoods.toml", TINY_LIKELIHOODS),
    ] {
        std::fs::write(configs.join(name), text).expect("config");
    }
    let x = Array2::from_shape_fn((150, 30), |(i, j)| {
        let high = j % 3 == i % 3;
        let base = if high { 6 } else { 0 };
        (base + (i * 7 + j * 13) % 4) as i32
    });
    let data = root.path().join("data");
    scae_io::write_npy(&data.join("counts_raw.npy"), &x.view()).expect("counts");
    let labels: Vec<String> = (0..150).map(|i| (i % 3).to_string()).collect();
    scae_io::write_labels(&data.join("labels.txt"), &labels).expect("labels");
    root
}

#[test]
fn vae_trains_saves_and_repeats_exactly() {
    let root = project();
    let r = root.path().display().to_string();
    assert_ok(&scae(&["vae", "--root", &r]));
    let dir = root.path().join("results/vae");
    for file in [
        "metrics.json",
        "history.csv",
        "history.png",
        "latent.npy",
        "test_cells.txt",
        "weights.safetensors",
    ] {
        assert!(dir.join(file).is_file(), "missing {file}");
    }
    let m = metrics(&dir);
    let s = &m["summary"];
    assert_eq!(
        (s["train_cells"].as_u64(), s["test_cells"].as_u64()),
        (Some(121), Some(29))
    );
    for key in ["test_elbo", "test_reconstruction", "test_kl", "test_log_px"] {
        assert!(
            s[key].as_f64().is_some_and(f64::is_finite),
            "{key}: {}",
            s[key]
        );
    }
    let elbo = s["test_elbo"].as_f64().expect("elbo");
    let parts = s["test_reconstruction"].as_f64().expect("ll") - s["test_kl"].as_f64().expect("kl");
    assert!((elbo - parts).abs() < 1e-3 * elbo.abs());
    let test_cells = std::fs::read_to_string(dir.join("test_cells.txt")).expect("test cells");
    assert_eq!(test_cells.lines().count(), 29);
    let history = std::fs::read_to_string(dir.join("history.csv")).expect("history");
    assert!(history.starts_with("epoch,train_loss,test_loss,seconds,train_elbo,test_elbo"));

    let other = root.path().join("again");
    let o = other.display().to_string();
    assert_ok(&scae(&["vae", "--root", &r, "--out", &o]));
    let again = metrics(&other);
    assert_eq!(
        again["summary"]["test_elbo"], s["test_elbo"],
        "same seed, same ELBO"
    );
    assert_eq!(again["summary"]["test_log_px"], s["test_log_px"]);
}

#[test]
fn vae_synth_and_likelihoods_write_every_output() {
    let root = project();
    let r = root.path().display().to_string();
    assert_ok(&scae(&["vae-synth", "--root", &r]));
    let synth = root.path().join("results/vae-synth");
    for file in [
        "rates.png",
        "rates.svg",
        "rates.csv",
        "history.png",
        "report.md",
    ] {
        assert!(synth.join(file).is_file(), "missing {file}");
    }
    let m = metrics(&synth);
    assert_eq!(m["rates"].as_array().map(Vec::len), Some(5));
    assert!(m["max_relative_error"].as_f64().is_some_and(f64::is_finite));

    assert_ok(&scae(&["vae-likelihoods", "--root", &r]));
    let dir = root.path().join("results/vae-likelihoods");
    for file in [
        "history.png",
        "tsne.png",
        "tsne_zinb.npy",
        "report.md",
        "nb/latent.npy",
    ] {
        assert!(dir.join(file).is_file(), "missing {file}");
    }
    let m = metrics(&dir);
    let models = m["models"].as_array().expect("models");
    assert_eq!(models.len(), 4);
    for model in models {
        for key in ["test_elbo", "test_reconstruction", "test_kl", "test_log_px"] {
            assert!(model[key].as_f64().is_some_and(f64::is_finite), "{key}");
        }
        let ari = model["latent_scores"]["ari"]
            .as_f64()
            .expect("labelled data are scored");
        assert!((-1.0..=1.0).contains(&ari));
    }
    // 4 likelihoods x 2 grid points, one chosen per likelihood
    let grid = m["grid"].as_array().expect("grid");
    assert_eq!(grid.len(), 8);
    assert_eq!(grid.iter().filter(|g| g["chosen"] == true).count(), 4);
    let report = std::fs::read_to_string(dir.join("report.md")).expect("report");
    assert!(report.contains("Best held-out likelihood"));
}

#[test]
fn bad_counts_are_refused_before_anything_is_written() {
    let root = project();
    let r = root.path().display().to_string();
    let bad = root.path().join("bad.npy");
    let x = Array2::from_shape_fn(
        (20, 5),
        |(i, j)| if (i, j) == (4, 2) { 1.5f32 } else { 1.0 },
    );
    scae_io::write_npy(&bad, &x.view()).expect("write");
    let b = bad.display().to_string();
    let out = scae(&["vae", "--root", &r, "--data", &b]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.npy"), "{err}");
    assert!(err.lines().count() == 1, "one line: {err}");
    let negative = Array2::from_shape_fn((20, 5), |(i, _)| if i == 3 { -1i32 } else { 2 });
    scae_io::write_npy(&bad, &negative.view()).expect("write");
    let out = scae(&["vae-likelihoods", "--root", &r, "--data", &b]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.npy"));
    assert!(!root.path().join("results").exists(), "nothing written");
    let out = scae(&["vae", "--root", &r, "--likelihood", "gaussian"]);
    assert!(!out.status.success());
}

#[test]
fn empty_cells_are_dropped_and_a_matrix_without_counts_is_refused() {
    let root = project();
    let r = root.path().display().to_string();
    // 150 cells of which 3 hold no count at all: trained on the other 147, with a warning.
    let x = Array2::from_shape_fn((150, 30), |(i, j)| {
        if i % 50 == 7 {
            0
        } else {
            ((i * 7 + j * 13) % 5) as i32
        }
    });
    let data = root.path().join("some_empty.npy");
    scae_io::write_npy(&data, &x.view()).expect("counts");
    let d = data.display().to_string();
    let out = scae(&["vae", "--root", &r, "--data", &d]);
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dropped 3 of 150 cells"), "{err}");
    let s = &metrics(&root.path().join("results/vae"))["summary"];
    let cells = s["train_cells"].as_u64().unwrap_or(0) + s["test_cells"].as_u64().unwrap_or(0);
    assert_eq!(cells, 147);

    let zeros = Array2::<i32>::zeros((40, 6));
    let empty = root.path().join("zeros.npy");
    scae_io::write_npy(&empty, &zeros.view()).expect("counts");
    let e = empty.display().to_string();
    let out_dir = root.path().join("none");
    let o = out_dir.display().to_string();
    let out = scae(&["vae", "--root", &r, "--data", &e, "--out", &o]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("zeros.npy") && err.contains("holds no counts at all"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!out_dir.exists(), "nothing written");
}

/// The real worm_neuron counts (all 13,488 genes): one NB epoch and the 4-likelihood study on
/// the tiny config; skipped with a message when ../shared/data is absent.
#[test]
fn worm_neuron_raw_counts_train_every_likelihood() {
    let Some(worm) = common::shared_data("worm_neuron") else {
        return;
    };
    let root = project();
    let r = root.path().display().to_string();
    let d = worm.display().to_string();
    let text = TINY_LIKELIHOODS
        .replace("epochs = 2", "epochs = 1")
        .replace("[grid]\nhidden = [[8], [16]]", "[grid]\nhidden = [[8]]");
    std::fs::write(root.path().join("configs/vae-likelihoods.toml"), text).expect("config");
    assert_ok(&scae(&["vae-likelihoods", "--root", &r, "--data", &d]));
    let m = metrics(&root.path().join("results/vae-likelihoods"));
    assert_eq!(m["provenance"]["data"]["cells"], 4186);
    assert_eq!(m["provenance"]["data"]["genes"], 13488);
    for model in m["models"].as_array().expect("models") {
        assert!(model["test_log_px"].as_f64().is_some_and(f64::is_finite));
    }
}

/// The shared Cell Ranger 3 file (1,107 cells, valid): with the shipped config, 897 training
/// cells at batch 128 leave a last minibatch of one cell, which batch norm cannot normalise
/// (its running variance became NaN, and so did every test loss). The short batch is merged
/// into the one before, so every likelihood trains to a finite test ELBO.
#[test]
fn the_chr21_cell_ranger_file_trains_with_the_shipped_config_for_every_likelihood() {
    let Some(tenx) = common::shared_data("10x/v3_grch38_chr21") else {
        return;
    };
    let h5 = tenx.join("filtered_feature_bc_matrix.h5");
    let tmp = tempfile::tempdir().expect("tempdir");
    for law in ["poisson", "nb", "zip", "zinb"] {
        let out = tmp.path().join(law);
        let (d, o) = (h5.display().to_string(), out.display().to_string());
        // The built-in configs/vae.toml: batch norm on, batch 128, 100 epochs.
        assert_ok(&scae(&[
            "vae",
            "--root",
            &tmp.path().display().to_string(),
            "--data",
            &d,
            "--likelihood",
            law,
            "--threads",
            "1",
            "--out",
            &o,
        ]));
        let m = metrics(&out);
        assert_eq!(m["provenance"]["data"]["cells"], 1107, "{law}");
        assert_eq!(m["config"]["model"]["batch_norm"], true, "{law}");
        assert_eq!(m["config"]["train"]["batch_size"], 128, "{law}");
        let epochs = m["history"]["epochs"].as_array().expect("epochs");
        assert_eq!(epochs.len(), 100, "{law}");
        for key in ["test_elbo", "test_log_px"] {
            assert!(
                m["summary"][key].as_f64().is_some_and(f64::is_finite),
                "{law}: {key} = {}",
                m["summary"][key]
            );
        }
    }
}
