//! Smoke test of the GMVAE's synthetic check, `scae gmvae-synth`, end to end on a tiny config:
//! every output written, the KL variant finds the mixture, the same numbers on the same seed, and
//! a config whose component count disagrees with the mixture refused.

mod common;

use common::scae;

use std::path::Path;

const TINY: &str = r#"
seed = 2
threads = 1
device = "cpu"
test_fraction = 0.2
regularisers = ["kl", "none", "supervised"]

[simulate]
cells = 600
rates = [
    [15.0, 15.0, 1.0, 1.0, 1.0, 1.0],
    [1.0, 1.0, 15.0, 15.0, 1.0, 1.0],
    [1.0, 1.0, 1.0, 1.0, 15.0, 15.0],
]

[model]
components = 3

[model.vae]
hidden = [16]
latent = 2
likelihood = "poisson"
library = "none"

[train]
epochs = 30
batch_size = 64
learning_rate = 1e-2
clip_grad_norm = 50.0
"#;

fn metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).expect("metrics"))
        .expect("valid JSON")
}

#[test]
fn gmvae_synth_scores_every_variant_and_repeats_exactly() {
    let root = tempfile::tempdir().expect("temp dir");
    let configs = root.path().join("configs");
    std::fs::create_dir_all(&configs).expect("configs dir");
    std::fs::write(configs.join("gmvae-synth.toml"), TINY).expect("config");
    let r = root.path().display().to_string();
    let out = scae(&["gmvae-synth", "--root", &r]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = root.path().join("results/gmvae-synth");
    for file in [
        "ablation.csv",
        "clusters.csv",
        "history.png",
        "history.svg",
        "report.md",
    ] {
        assert!(dir.join(file).is_file(), "missing {file}");
    }
    let m = metrics(&dir);
    let variants = m["variants"].as_array().expect("variants");
    assert_eq!(variants.len(), 3);
    for v in variants {
        for key in ["ari", "nmi", "test_elbo"] {
            assert!(
                v[key].as_f64().is_some_and(f64::is_finite),
                "{key}: {}",
                v[key]
            );
        }
    }
    let by_epoch = variants[0]["components_used_by_epoch"]
        .as_array()
        .expect("components per epoch");
    assert_eq!(by_epoch.len(), 30);
    assert_eq!(by_epoch.last().and_then(serde_json::Value::as_u64), Some(3));
    let kl_ari = variants[0]["ari"].as_f64().expect("ari");
    assert!(kl_ari > 0.9, "the KL variant's ARI is {kl_ari}");
    let clusters = std::fs::read_to_string(dir.join("clusters.csv")).expect("clusters");
    assert_eq!(clusters.lines().count(), 601);
    assert!(clusters.starts_with("cell,true_component,kl,none,supervised"));

    let again = root.path().join("again");
    let a = again.display().to_string();
    let out = scae(&["gmvae-synth", "--root", &r, "--out", &a]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repeat = metrics(&again);
    for (x, y) in variants
        .iter()
        .zip(repeat["variants"].as_array().expect("variants"))
    {
        // Wall times differ between runs; nothing else may.
        for key in ["ari", "nmi", "test_elbo", "components_used"] {
            assert_eq!(x[key], y[key], "same seed, same {key}");
        }
    }

    // A mixture of 3 components for a model of 4 is refused before anything is written.
    let bad = TINY.replace("components = 3", "components = 4");
    std::fs::write(configs.join("gmvae-synth.toml"), bad).expect("config");
    let elsewhere = root.path().join("refused");
    let out = scae(&[
        "gmvae-synth",
        "--root",
        &r,
        "--out",
        &elsewhere.display().to_string(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gmvae-synth.toml") && stderr.contains("components"),
        "{stderr}"
    );
    assert!(!elsewhere.exists());
}
