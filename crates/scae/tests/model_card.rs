//! One model card for every saved model: an autoencoder (`scae train`), a VAE (`scae vae`) and
//! a GMVAE (`gmvae-real`) each write `model.json` with its kind, config and gene names; `scae
//! embed` loads any of them, finds the model's genes in new data by name (in another order too),
//! gives the latent codes the run saved, and refuses data lacking genes in one line.

use std::path::Path;

use ndarray::Array2;
use serde_json::Value;

mod common;

use common::{FIXTURE_GMVAE, SMALL_Q1, SMALL_VAE, assert_ok, io_fixture, scae};

fn card(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("model.json")).expect("model.json");
    serde_json::from_str(&text).expect("JSON")
}

/// `scae embed` of `model` on `data` (extra arguments after), read back.
fn embed(model: &Path, data: &str, out: &Path, extra: &[&str]) -> Array2<f32> {
    let (m, o) = (model.display().to_string(), out.display().to_string());
    let mut args = vec![
        "embed", "--model", &m, "--data", data, "--out", &o, "--device", "cpu",
    ];
    args.extend(extra);
    assert_ok(&scae(&args));
    ndarray_npy::read_npy(out).expect("latent codes")
}

fn assert_close(a: &Array2<f32>, b: &Array2<f32>, what: &str) {
    assert_eq!(a.dim(), b.dim(), "{what}");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "{what}: differs by {worst}");
}

/// The one error line of a run that must fail.
fn refused(args: &[&str]) -> String {
    let out = scae(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?}: accepted");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0].to_owned()
}

/// gene_0 ... gene_24, the fixtures' genes.
fn fixture_genes() -> Vec<String> {
    (0..25).map(|j| format!("gene_{j}")).collect()
}

#[test]
fn embed_loads_the_card_of_an_autoencoder_a_vae_and_a_gmvae() {
    let Some(python) = common::python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("configs")).expect("configs");
    for (name, text) in [
        ("q1.toml", SMALL_Q1),
        ("vae.toml", SMALL_VAE),
        ("gmvae-real.toml", FIXTURE_GMVAE),
    ] {
        std::fs::write(root.join("configs").join(name), text).expect("config");
    }
    let r = root.display().to_string();
    let (counts, layers) = (io_fixture("csr.h5ad"), io_fixture("layers.h5ad"));

    // The autoencoder, trained on counts (log-normalised here), embeds the same counts read
    // from a layer of another file.
    let ae = root.join("ae");
    let a = ae.display().to_string();
    assert_ok(&scae(&[
        "train", "--root", &r, "--data", &counts, "--out", &a,
    ]));
    let c = card(&ae);
    assert_eq!(
        (c["kind"].as_str(), c["card_format"].as_u64()),
        (Some("ae"), Some(1))
    );
    assert_eq!(c["genes"], serde_json::json!(fixture_genes()));
    let saved: Array2<f32> = ndarray_npy::read_npy(ae.join("latent.npy")).expect("latent");
    let z = embed(&ae, &layers, &root.join("ae.npy"), &["--layer", "counts"]);
    assert_close(&z, &saved, "autoencoder");

    // The VAE, embedding the file it trained on.
    let vae = root.join("vae");
    let v = vae.display().to_string();
    assert_ok(&scae(&[
        "vae", "--root", &r, "--data", &counts, "--out", &v,
    ]));
    let c = card(&vae);
    assert_eq!(c["kind"], "vae");
    assert_eq!(c["config"]["latent"], 3);
    assert_eq!(c["genes"], serde_json::json!(fixture_genes()));
    let saved: Array2<f32> = ndarray_npy::read_npy(vae.join("latent.npy")).expect("latent");
    assert_close(
        &embed(&vae, &counts, &root.join("v.npy"), &[]),
        &saved,
        "VAE",
    );

    // The GMVAE reads its 20 most variable genes, found by name; its latent means are those of
    // the AnnData gmvae-real wrote.
    let gmvae = root.join("gmvae");
    let g = gmvae.display().to_string();
    let h5ad = root.join("gmvae.h5ad");
    let h = h5ad.display().to_string();
    let args = [
        "gmvae-real",
        "--root",
        &r,
        "--data",
        &counts,
        "--labels-key",
        "cell_type",
        "--out",
        &g,
        "--h5ad",
        &h,
    ];
    assert_ok(&scae(&args));
    let model = gmvae.join("seed_0/gmvae");
    let c = card(&model);
    assert_eq!(c["kind"], "gmvae");
    assert_eq!(c["config"]["components"], 4);
    let genes: Vec<String> = serde_json::from_value(c["genes"].clone()).expect("genes");
    assert_eq!(genes.len(), 20);
    assert!(
        genes.iter().all(|g| fixture_genes().contains(g)),
        "{genes:?}"
    );
    let code = r#"
import sys
import anndata as ad, numpy as np
np.save(sys.argv[2], ad.read_h5ad(sys.argv[1]).obsm["X_scae"].astype(np.float32))
"#;
    let written = root.join("x_scae.npy");
    common::run_python(&python, code, &[&h5ad, &written]);
    let written: Array2<f32> = ndarray_npy::read_npy(&written).expect("X_scae");
    assert_close(
        &embed(&model, &counts, &root.join("g.npy"), &[]),
        &written,
        "GMVAE",
    );
}

#[test]
fn genes_are_found_by_name_and_data_lacking_them_are_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("configs")).expect("configs");
    std::fs::write(root.join("configs/q1.toml"), SMALL_Q1).expect("config");
    let r = root.display().to_string();
    let ae = root.join("ae");
    let a = ae.display().to_string();
    let counts = io_fixture("csr.h5ad");
    assert_ok(&scae(&[
        "train", "--root", &r, "--data", &counts, "--out", &a,
    ]));

    // A .npy has no gene names (its columns are numbered): none of the model's genes are there.
    let npy = root.join("x.npy");
    let x = Array2::<f32>::ones((5, 25));
    scae_io::write_npy(&npy, &x.view()).expect("npy");
    let (n, z) = (
        npy.display().to_string(),
        root.join("z.npy").display().to_string(),
    );
    let line = refused(&["embed", "--model", &a, "--data", &n, "--out", &z]);
    assert!(
        line.contains(&n)
            && line.contains("25 of the model's 25 genes are missing (gene_0, gene_1"),
        "{line}"
    );
    assert!(!Path::new(&z).exists());
    // A model folder without a card of this scae is refused by name.
    let old = root.join("old");
    std::fs::create_dir_all(&old).expect("old");
    std::fs::write(old.join("model.json"), r#"{"input_dim": 25, "model": {}}"#).expect("old");
    let o = old.display().to_string();
    let line = refused(&["embed", "--model", &o, "--data", &counts, "--out", &z]);
    assert!(
        line.contains("model.json") && line.contains("trained again"),
        "{line}"
    );
    // A GMVAE is what `scae cluster` needs.
    let line = refused(&["cluster", "--model", &a, "--data", &counts, "--out", &z]);
    assert!(line.contains("a model of kind ae, not a GMVAE"), "{line}");
}
