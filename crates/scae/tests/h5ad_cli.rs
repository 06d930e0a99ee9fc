//! AnnData and Cell Ranger HDF5 files through the command line: every bad input ends in one line
//! naming the file and the dataset with nothing written; `scae vae --backed` gives the numbers
//! of the same run in memory; `gmvae-real` on worm_neuron converted to `.h5ad` by anndata gives
//! the figures of the 10x folder, and the `.h5ad` it writes opens in anndata with the latent,
//! clusters and names in place.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;

use common::{SMALL_VAE, assert_ok, scae};

/// gmvae-real's smoke config on worm_neuron: one seed, one epoch of each phase.
const GMVAE: &str = r#"
seeds = [0]
threads = 1
device = "cpu"
test_fraction = 0.2
components = 0
top_genes = 300
pca_components = 20

[gmvae.model]
y_balance = 1.0

[gmvae.model.vae]
hidden = [16]
latent = 2
likelihood = "nb"
batch_norm = true

[gmvae.train]
epochs = 1
batch_size = 64
learning_rate = 1e-2
clip_grad_norm = 50.0

[gmvae_init]
pretrain_epochs = 1
pseudo_label_epochs = 1

[vae.model]
hidden = [16]
latent = 2
likelihood = "nb"

[vae.train]
epochs = 1
batch_size = 64
learning_rate = 1e-2

[tsne]
perplexity = 10.0
n_iter = 150
early_exaggeration_iter = 50

[scores]
kmeans_restarts = 2
"#;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../io/tests/fixtures")
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("file")).expect("JSON")
}

#[test]
fn every_bad_hdf5_input_is_one_line_naming_file_and_dataset_with_nothing_written() {
    let dir = fixtures().join("bad");
    let cases = json(&dir.join("cases.json"));
    let cases = cases.as_object().expect("cases");
    assert!(cases.len() >= 10);
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("vae.toml");
    std::fs::write(&config, SMALL_VAE).expect("config");
    for (file, case) in cases {
        let data = dir.join(file);
        let out_dir = tmp.path().join("out");
        let d = data.display().to_string();
        let (c, o) = (config.display().to_string(), out_dir.display().to_string());
        let mut args = vec!["vae", "--config", &c, "--data", &d, "--out", &o, "--h5ad"];
        let extra: Vec<String> = case["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("arg").to_owned())
            .collect();
        args.extend(extra.iter().map(String::as_str));
        let out = scae(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: accepted");
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{file}: {stderr}");
        let object = case["object"].as_str().expect("object");
        assert!(
            lines[0].contains(&d) && lines[0].contains(object),
            "{file}: {stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["vae.toml"], "{file}: something was written");
    }
}

#[test]
fn vae_backed_from_the_file_gives_the_numbers_of_the_run_in_memory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("vae.toml");
    std::fs::write(&config, SMALL_VAE).expect("config");
    let c = config.display().to_string();
    let data = fixtures().join("csr.h5ad").display().to_string();
    // Every gene, then the 10 most variable: chosen in one pass over the file when backed; and
    // a model conditioned on the batch column, whose codes the backed batches carry too.
    for (top, batch) in [(None, false), (Some("10"), false), (None, true)] {
        let mut runs = Vec::new();
        for backed in [false, true] {
            let name = format!("{}-{}-{batch}", top.unwrap_or("all"), backed);
            let out = tmp.path().join(name);
            let o = out.display().to_string();
            let mut args = vec![
                "vae",
                "--config",
                &c,
                "--data",
                &data,
                "--out",
                &o,
                "--labels-key",
                "cell_type",
            ];
            if backed {
                args.push("--backed");
            }
            if let Some(n) = top {
                args.extend(["--top-genes", n]);
            }
            if batch {
                args.extend(["--batch-key", "batch"]);
            }
            assert_ok(&scae(&args));
            let m = json(&out.join("metrics.json"));
            let read = &m["provenance"]["data"];
            assert_eq!(read["cells"], 39, "the empty cell is dropped");
            assert_eq!(read["genes"], if top.is_some() { 10 } else { 25 }, "{read}");
            let latent = std::fs::read(out.join("latent.npy")).expect("latent");
            let mut history = m["history"].clone();
            for epoch in history["epochs"].as_array_mut().expect("epochs") {
                let epoch = epoch.as_object_mut().expect("epoch");
                epoch.remove("seconds");
                epoch.remove("train_seconds");
            }
            let genes = std::fs::read_to_string(out.join("model.json")).expect("card");
            let genes: serde_json::Value = serde_json::from_str(&genes).expect("JSON");
            assert_eq!(
                genes["covariates"].get("batch").is_some(),
                batch,
                "{}",
                genes["covariates"]
            );
            runs.push((
                history,
                m["summary"]["test_elbo"].clone(),
                latent,
                genes["genes"].clone(),
            ));
        }
        assert_eq!(runs[0].0, runs[1].0.clone(), "{top:?}: the same history");
        assert_eq!(runs[0].1, runs[1].1, "{top:?}");
        assert_eq!(runs[0].2, runs[1].2, "{top:?}: the same latent means");
        assert_eq!(runs[0].3, runs[1].3, "{top:?}: the same genes");
    }
}

#[test]
fn gmvae_real_on_worm_neuron_as_h5ad_gives_the_figures_of_the_10x_folder() {
    let Some(worm) = common::shared_data("worm_neuron") else {
        return;
    };
    let Some(python) = common::python() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let h5ad = tmp.path().join("worm.h5ad");
    common::tenx_to_h5ad(&python, &worm, &h5ad);
    let config = tmp.path().join("gmvae-real.toml");
    std::fs::write(&config, GMVAE).expect("config");
    let c = config.display().to_string();
    let (tenx_out, h5ad_out) = (tmp.path().join("tenx"), tmp.path().join("h5ad"));
    let w = worm.display().to_string();
    let (t, h, f) = (
        tenx_out.display().to_string(),
        h5ad_out.display().to_string(),
        h5ad.display().to_string(),
    );
    assert_ok(&scae(&[
        "gmvae-real",
        "--config",
        &c,
        "--data",
        &w,
        "--out",
        &t,
    ]));
    assert_ok(&scae(&[
        "gmvae-real",
        "--config",
        &c,
        "--data",
        &f,
        "--labels-key",
        "cell_type",
        "--out",
        &h,
        "--h5ad",
    ]));
    let (a, b) = (
        json(&tenx_out.join("metrics.json")),
        json(&h5ad_out.join("metrics.json")),
    );
    assert_eq!(a["components"], b["components"]);
    assert_eq!(
        common::without_seconds(&a["scores"]),
        common::without_seconds(&b["scores"]),
        "the same scores on the same seed"
    );
    assert_eq!(
        common::without_seconds(&a["summary"]),
        common::without_seconds(&b["summary"])
    );
    for (x, y) in a["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .zip(b["runs"].as_array().expect("runs"))
    {
        assert_eq!(x["history"], y["history"]);
    }
    let check = r#"
import json, sys
import anndata as ad, numpy as np
a = ad.read_h5ad(sys.argv[1])
q = a.obsm["scae_q_y"]
print(json.dumps({
    "shape": list(a.shape), "first_obs": a.obs_names[0], "first_var": a.var_names[0],
    "latent": list(a.obsm["X_scae"].shape), "q_y": list(q.shape),
    "rows_sum_to_one": bool(np.allclose(q.sum(1), 1, atol=1e-4)),
    "cluster_is_argmax": bool((a.obs["scae_cluster"].astype(int).to_numpy() == q.argmax(1)).all()),
    "dtype": str(a.obs["scae_cluster"].dtype), "x_nnz": int(a.X.nnz),
}))
"#;
    let stdout = common::run_python(&python, check, &[&h5ad_out.join("adata.h5ad")]);
    let got: Value = serde_json::from_slice(&stdout).expect("JSON");
    assert_eq!(got["shape"], serde_json::json!([4186, 300]));
    assert_eq!(got["latent"], serde_json::json!([4186, 2]));
    assert_eq!(got["q_y"], serde_json::json!([4186, 10]));
    assert_eq!(got["rows_sum_to_one"], true);
    assert_eq!(got["cluster_is_argmax"], true);
    assert_eq!(got["dtype"], "category");
    let barcode = std::io::read_to_string(flate2::read::GzDecoder::new(
        std::fs::File::open(worm.join("barcodes.tsv.gz")).expect("barcodes"),
    ))
    .expect("text");
    assert_eq!(got["first_obs"], barcode.lines().next().expect("a barcode"));
}

/// `scae vae` (in memory with `--top-genes`, and `--backed`) and `scae embed` write their results
/// into the user's AnnData: every `obs`/`var` column and `obsm`/`varm`/`uns` entry of
/// annotated.h5ad comes back, cut to the cells and genes the model saw (checked by anndata in
/// check_carried.py), whether `--h5ad` points inside the results folder or elsewhere. Each
/// command opens the input once: reading it, deciding whether to read it backed and writing the
/// results back share one handle (counted in scae-io's debug log).
#[test]
fn results_go_back_into_the_users_anndata_wherever_h5ad_points() {
    let Some(python) = common::python() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("vae.toml");
    std::fs::write(&config, SMALL_VAE).expect("config");
    let c = config.display().to_string();
    let input = fixtures().join("annotated.h5ad");
    let data = input.display().to_string();
    let check = fixtures().join("check_carried.py");
    let carried = |written: &Path| {
        let run = std::process::Command::new(&python)
            .arg(&check)
            .arg(&input)
            .arg(written)
            .arg("cut")
            .output()
            .expect("python runs");
        assert!(
            run.status.success(),
            "{}: {}",
            written.display(),
            String::from_utf8_lossy(&run.stderr)
        );
    };
    // Runs scae with scae-io's debug log and checks it opened the input one time.
    let opens_once = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_scae"))
            .args(args)
            .env("RUST_LOG", "warn,scae_io=debug")
            .output()
            .expect("the scae binary runs");
        assert_ok(&out);
        let log = String::from_utf8_lossy(&out.stderr);
        let opens = log.matches("opened the HDF5 file").count();
        assert_eq!(
            opens, 1,
            "{} opened its input {opens} times:\n{log}",
            args[0]
        );
    };
    let inside = tmp.path().join("memory");
    let inside_h5ad = inside.join("cells.h5ad");
    let (o, h) = (
        inside.display().to_string(),
        inside_h5ad.display().to_string(),
    );
    let args = [
        "vae",
        "--config",
        &c,
        "--data",
        &data,
        "--out",
        &o,
        "--h5ad",
        &h,
        "--top-genes",
        "10",
    ];
    assert_ok(&scae(&args));
    carried(&inside_h5ad);

    let backed = tmp.path().join("backed");
    let elsewhere = tmp.path().join("elsewhere").join("cells.h5ad");
    std::fs::create_dir_all(elsewhere.parent().expect("parent")).expect("dir");
    let (o, h) = (
        backed.display().to_string(),
        elsewhere.display().to_string(),
    );
    let args = [
        "vae", "--config", &c, "--data", &data, "--out", &o, "--h5ad", &h, "--backed",
    ];
    opens_once(&args);
    carried(&elsewhere);

    let npy = tmp.path().join("embedded.npy");
    let (m, n) = (inside.display().to_string(), npy.display().to_string());
    opens_once(&[
        "embed", "--model", &m, "--data", &data, "--out", &n, "--h5ad",
    ]);
    carried(&npy.with_extension("h5ad"));
}
