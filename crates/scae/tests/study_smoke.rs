//! Smoke tests: the `scae` binary answers Q1 to Q5 end to end on a tiny
//! config, deterministically, reads 10x folders, assembles the study report,
//! and refuses bad input with a one-line error.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};

mod common;

use common::{assert_ok, scae};

const TINY_Q1: &str = r#"
seed = 7
threads = 1
device = "cpu"
test_fraction = 0.2
latents = [2, 4]
hidden = [16]
loss = "mse"

[train]
epochs = 3
batch_size = 32
learning_rate = 1e-3
"#;

const Q2: &str = r#"
models = "q1.toml"
checkpoints = [1, 2]
within = [0.05, 0.01]
"#;

const TSNE_AND_SCORES: &str = r#"
score_components = 10

[tsne]
perplexity = 10.0
n_iter = 150
early_exaggeration_iter = 50
pca_components = 10

[scores]
kmeans_restarts = 3
"#;

fn question_configs(configs: &Path) {
    let q3 = format!("models = \"q1.toml\"\nlatent = 4\n{TSNE_AND_SCORES}");
    let q4 = "models = \"q1.toml\"\nlatent = 2\nscore_components = 10\n";
    let q5 = format!("models = \"q1.toml\"\nlatent = 4\nloss = \"nonzero_mse\"\n{TSNE_AND_SCORES}");
    std::fs::write(configs.join("q3.toml"), q3).expect("q3 config");
    std::fs::write(configs.join("q4.toml"), q4).expect("q4 config");
    std::fs::write(configs.join("q5.toml"), q5).expect("q5 config");
}

/// A project root with tiny configs and small data (120 cells x 40 genes, 3 groups).
fn project() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    let configs = root.path().join("configs");
    std::fs::create_dir_all(&configs).expect("configs dir");
    std::fs::write(configs.join("q1.toml"), TINY_Q1).expect("q1 config");
    std::fs::write(configs.join("q2.toml"), Q2).expect("q2 config");
    question_configs(&configs);
    let data = root.path().join("data");
    let x = Array2::from_shape_fn((120, 40), |(i, j)| {
        let group = i % 3;
        let signal = if j % 3 == group { 2.0 } else { 0.0 };
        let noise = ((i * 31 + j * 17) % 11) as f32 / 11.0;
        if (i + j) % 4 == 0 {
            0.0
        } else {
            signal + noise
        }
    });
    scae_io::write_npy(&data.join("counts.npy"), &x.view()).expect("counts");
    let labels: Vec<String> = (0..120).map(|i| (i % 3).to_string()).collect();
    scae_io::write_labels(&data.join("labels.txt"), &labels).expect("labels");
    root
}

fn root_arg(root: &Path) -> String {
    root.display().to_string()
}

fn loss_columns(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("history")
        .lines()
        .map(|l| l.split(',').take(3).collect::<Vec<_>>().join(","))
        .collect()
}

#[test]
fn q1_then_q2_write_every_output() {
    let root = project();
    let r = root_arg(root.path());
    assert_ok(&scae(&["q1", "--root", &r]));
    let q1 = root.path().join("results/q1");
    for file in [
        "metrics.json",
        "history.png",
        "history.svg",
        "test_indices.npy",
    ] {
        assert!(q1.join(file).is_file(), "missing results/q1/{file}");
    }
    for latent in [2, 4] {
        let dir = q1.join(format!("latent{latent}"));
        for file in [
            "model.json",
            "weights.safetensors",
            "history.csv",
            "latent.npy",
        ] {
            assert!(
                dir.join(file).is_file(),
                "missing {}",
                dir.join(file).display()
            );
        }
        let z: Array2<f32> = ndarray_npy::read_npy(dir.join("latent.npy")).expect("latent");
        assert_eq!(z.dim(), (120, latent));
        assert_eq!(
            loss_columns(&dir.join("history.csv")).len(),
            4,
            "header + 3 epochs"
        );
    }
    let test_idx: Array1<i64> =
        ndarray_npy::read_npy(q1.join("test_indices.npy")).expect("indices");
    assert_eq!(test_idx.len(), 24);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(q1.join("metrics.json")).expect("json"))
            .expect("valid");
    assert_eq!(metrics["config"]["seed"], 7);
    assert_eq!(metrics["provenance"]["device"], "cpu");
    assert!(metrics["provenance"]["wall_seconds"].as_f64().is_some());

    let out = scae(&["q2", "--root", &r]);
    assert_ok(&out);
    let q2 = root.path().join("results/q2");
    for file in [
        "metrics.json",
        "summary.csv",
        "convergence.png",
        "convergence.svg",
        "report.md",
    ] {
        assert!(q2.join(file).is_file(), "missing results/q2/{file}");
    }
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(q2.join("metrics.json")).expect("json"))
            .expect("valid");
    assert_eq!(
        m["reused_q1"], true,
        "Q2 reuses Q1's models when the config matches"
    );
    let report = std::fs::read_to_string(q2.join("report.md")).expect("report");
    assert!(report.contains("latent 2") && report.contains("latent 4"));
    assert!(!report.contains("NaN"), "{report}");
}

#[test]
fn q2_trains_when_q1_results_do_not_match() {
    let root = project();
    let r = root_arg(root.path());
    assert_ok(&scae(&["q2", "--root", &r]));
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.path().join("results/q2/metrics.json")).expect("json"),
    )
    .expect("valid");
    assert_eq!(m["reused_q1"], false);
}

#[test]
fn the_same_seed_gives_identical_losses() {
    let root = project();
    let r = root_arg(root.path());
    let runs: Vec<Vec<String>> = (0..2)
        .map(|i| {
            let out = root.path().join(format!("run{i}"));
            assert_ok(&scae(&[
                "q1",
                "--root",
                &r,
                "--out",
                &out.display().to_string(),
            ]));
            loss_columns(&out.join("latent2/history.csv"))
        })
        .collect();
    assert_eq!(runs[0], runs[1]);
}

/// Each bad input: non-zero exit, one line naming the file, no panic, nothing under results/.
#[test]
fn bad_inputs_fail_cleanly() {
    let root = project();
    let r = root_arg(root.path());
    let dir = root.path().join("bad");
    std::fs::create_dir_all(&dir).expect("dir");
    let good = root.path().join("data/counts.npy");
    let mut cases: Vec<(&str, PathBuf, Option<PathBuf>)> = Vec::new();

    let one_d = dir.join("one_d.npy");
    scae_io::write_npy(&one_d, &Array1::<f32>::zeros(5).view()).expect("write");
    cases.push(("not 2-D", one_d, None));

    let empty = dir.join("empty.npy");
    scae_io::write_npy(&empty, &Array2::<f32>::zeros((0, 4)).view()).expect("write");
    cases.push(("zero cells", empty, None));

    let nan = dir.join("nan.npy");
    let mut x = Array2::<f32>::ones((6, 4));
    x[[2, 3]] = f32::NAN;
    scae_io::write_npy(&nan, &x.view()).expect("write");
    cases.push(("NaN", nan, None));

    let bytes = std::fs::read(&good).expect("read");
    let truncated = dir.join("truncated.npy");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    cases.push(("truncated", truncated, None));

    let garbage = dir.join("garbage.npy");
    std::fs::write(&garbage, b"this is not an npy file").expect("write");
    cases.push(("unreadable", garbage, None));

    cases.push(("missing", dir.join("missing.npy"), None));

    let short_labels = dir.join("short_labels.txt");
    std::fs::write(&short_labels, "0\n1\n2\n").expect("write");
    cases.push(("label count", good.clone(), Some(short_labels)));

    let blank = dir.join("blank_labels.txt");
    let mut text: Vec<String> = (0..120).map(|i| (i % 3).to_string()).collect();
    text[50] = String::new();
    std::fs::write(&blank, text.join("\n")).expect("write");
    cases.push(("blank label line", good, Some(blank)));

    for (what, data, labels) in cases {
        let mut args = vec![
            "q1".to_string(),
            "--root".into(),
            r.clone(),
            "--data".into(),
            data.display().to_string(),
        ];
        if let Some(l) = &labels {
            args.extend(["--labels".into(), l.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = scae(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: should fail");
        assert!(!stderr.contains("panicked"), "{what}: panicked: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{what}: expected one line, got {stderr}");
        let named = labels.as_ref().unwrap_or(&data);
        let name = named.file_name().expect("name").to_string_lossy();
        assert!(
            lines[0].contains(name.as_ref()),
            "{what}: {stderr} does not name {name}"
        );
        assert!(
            !root.path().join("results").exists(),
            "{what}: wrote under results/"
        );
    }
}

#[test]
fn a_foreign_output_folder_is_never_replaced() {
    let root = project();
    let r = root_arg(root.path());
    let precious = root.path().join("precious");
    std::fs::create_dir_all(&precious).expect("dir");
    std::fs::write(precious.join("thesis.tex"), "keep me").expect("file");
    let out = scae(&["q1", "--root", &r, "--out", &precious.display().to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a scae result"));
    assert!(precious.join("thesis.tex").exists());
}

#[test]
fn train_embed_evaluate_round_trip() {
    let root = project();
    let r = root_arg(root.path());
    let model = root.path().join("model");
    let m = model.display().to_string();
    assert_ok(&scae(&[
        "train", "--root", &r, "--latent", "3", "--epochs", "2", "--out", &m,
    ]));
    let data = root.path().join("data/counts.npy").display().to_string();
    let z = root.path().join("z.npy");
    assert_ok(&scae(&[
        "embed",
        "--model",
        &m,
        "--data",
        &data,
        "--out",
        &z.display().to_string(),
        "--device",
        "cpu",
    ]));
    let codes: Array2<f32> = ndarray_npy::read_npy(&z).expect("codes");
    let saved: Array2<f32> = ndarray_npy::read_npy(model.join("latent.npy")).expect("saved");
    assert_eq!(codes.dim(), saved.dim());
    let worst = codes
        .iter()
        .zip(&saved)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst < 1e-5,
        "embed differs from the saved latent by {worst}"
    );
    let out = scae(&[
        "evaluate", "--model", &m, "--data", &data, "--device", "cpu",
    ]);
    assert_ok(&out);
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(
        error["all"]
            .as_f64()
            .is_some_and(|v| v.is_finite() && v > 0.0)
    );
}

fn metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).expect("metrics"))
        .expect("valid JSON")
}

fn assert_files(dir: &Path, files: &[&str]) {
    for file in files {
        assert!(
            dir.join(file).is_file(),
            "missing {}",
            dir.join(file).display()
        );
    }
}

/// Every score of a question is a finite number in its range.
fn assert_scores(m: &serde_json::Value, expected: usize) {
    let scores = m["scores"].as_array().expect("scores");
    assert_eq!(scores.len(), expected, "{scores:?}");
    for s in scores {
        let v = &s["scores"];
        for (key, lo) in [
            ("silhouette", -1.0),
            ("ari", -1.0),
            ("nmi", 0.0),
            ("accuracy", 0.0),
        ] {
            let x = v[key].as_f64().unwrap_or(f64::NAN);
            // 1 up to rounding: a perfect clustering can give NMI 1 + 1e-15, as in scikit-learn.
            assert!((lo..=1.0 + 1e-12).contains(&x), "{} {key} = {x}", s["name"]);
        }
    }
}

#[test]
fn q3_to_q5_and_the_report_write_every_output() {
    let root = project();
    let r = root_arg(root.path());
    assert_ok(&scae(&["q1", "--root", &r]));
    assert_ok(&scae(&["q3", "--root", &r]));
    let q3 = root.path().join("results/q3");
    assert_files(
        &q3,
        &[
            "pca.png",
            "pca.svg",
            "tsne.png",
            "tsne.svg",
            "pca_original.npy",
            "pca_reconstruction.npy",
            "tsne_original.npy",
            "tsne_reconstruction.npy",
            "report.md",
            "metrics.json",
        ],
    );
    let m3 = metrics(&q3);
    assert!(
        m3["model_note"]
            .as_str()
            .is_some_and(|n| n.contains("reused")),
        "{}",
        m3["model_note"]
    );
    assert_scores(&m3, 7);
    let tsne: Array2<f32> = ndarray_npy::read_npy(q3.join("tsne_original.npy")).expect("t-SNE");
    assert_eq!(tsne.dim(), (120, 2));
    let report = std::fs::read_to_string(q3.join("report.md")).expect("report");
    assert!(
        report.contains("![t-SNE](tsne.png)") && report.contains("| t-SNE of the original | 2 |")
    );

    assert_ok(&scae(&["q4", "--root", &r]));
    let q4 = root.path().join("results/q4");
    assert_files(
        &q4,
        &[
            "latent.png",
            "latent.svg",
            "latent_2d.npy",
            "latent2/weights.safetensors",
            "report.md",
        ],
    );
    assert_scores(&metrics(&q4), 3);

    assert_ok(&scae(&["q5", "--root", &r]));
    let q5 = root.path().join("results/q5");
    for stem in [
        "pca_reconstruction",
        "pca_latent",
        "tsne_reconstruction",
        "tsne_latent",
    ] {
        assert_files(
            &q5,
            &[
                &format!("{stem}.png"),
                &format!("{stem}.svg"),
                &format!("{stem}.npy"),
            ],
        );
    }
    assert_files(
        &q5,
        &["errors.csv", "nonzero_mse_latent4/model.json", "report.md"],
    );
    let m5 = metrics(&q5);
    assert_scores(&m5, 11);
    let errors = m5["errors"].as_array().expect("errors");
    assert_eq!(errors[0]["loss"], "mse");
    assert_eq!(errors[1]["loss"], "nonzero_mse");

    // The same seed gives the same embedding.
    let again = root.path().join("again");
    assert_ok(&scae(&[
        "q3",
        "--root",
        &r,
        "--out",
        &again.display().to_string(),
    ]));
    let tsne_again: Array2<f32> =
        ndarray_npy::read_npy(again.join("tsne_original.npy")).expect("t-SNE");
    assert_eq!(tsne, tsne_again);

    assert_ok(&scae(&["report", "--root", &r]));
    let study = std::fs::read_to_string(root.path().join("results/REPORT.md")).expect("REPORT.md");
    for link in [
        "q1/history.png",
        "q3/tsne.png",
        "q4/latent.png",
        "q5/tsne_latent.png",
        "q5/errors.csv",
    ] {
        assert!(
            study.contains(&format!("({link})")),
            "REPORT.md lacks a link to {link}"
        );
        assert!(
            root.path().join("results").join(link).is_file(),
            "{link} does not exist"
        );
    }
    assert!(study.contains("Q2: reconstruction error and convergence | not run"));
}

/// A 10x Genomics v3 folder (gzipped, genes x cells) with labels, written by hand.
fn write_10x(dir: &Path, cells: usize, genes: usize) {
    use std::io::Write as _;
    std::fs::create_dir_all(dir).expect("10x dir");
    let gz = |name: &str, text: &str| {
        let file = std::fs::File::create(dir.join(name)).expect("create");
        let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        enc.write_all(text.as_bytes()).expect("write");
        enc.finish().expect("finish");
    };
    let mut entries = Vec::new();
    for c in 0..cells {
        for g in 0..genes {
            let group = c % 3;
            let count = if g % 3 == group {
                5 + (c * g) % 7
            } else {
                (c + 2 * g) % 3
            };
            if count > 0 {
                entries.push(format!("{} {} {count}", g + 1, c + 1));
            }
        }
    }
    let mtx = format!(
        "%%MatrixMarket matrix coordinate integer general\n{genes} {cells} {}\n{}\n",
        entries.len(),
        entries.join("\n")
    );
    gz("matrix.mtx.gz", &mtx);
    let features: String = (0..genes)
        .map(|g| format!("G{g}\tgene{g}\tGene Expression\n"))
        .collect();
    gz("features.tsv.gz", &features);
    let barcodes: String = (0..cells).map(|c| format!("CELL{c}-1\n")).collect();
    gz("barcodes.tsv.gz", &barcodes);
    let labels: String = (0..cells).map(|c| format!("type{}\n", c % 3)).collect();
    std::fs::write(dir.join("labels.txt"), labels).expect("labels");
}

#[test]
fn questions_read_a_10x_folder() {
    let root = project();
    let r = root_arg(root.path());
    let tenx = root.path().join("tenx/filtered_feature_bc_matrix");
    write_10x(&tenx, 90, 60);
    let d = root.path().join("tenx").display().to_string();
    assert_ok(&scae(&[
        "q1",
        "--root",
        &r,
        "--data",
        &d,
        "--top-genes",
        "30",
    ]));
    let m = metrics(&root.path().join("results/q1"));
    let data = &m["provenance"]["data"];
    assert_eq!(data["format"], "10x");
    assert_eq!(
        (data["cells"].as_u64(), data["genes"].as_u64()),
        (Some(90), Some(30))
    );
    assert!(
        data["labels"]
            .as_str()
            .is_some_and(|l| l.ends_with("labels.txt"))
    );
    assert_ok(&scae(&[
        "q4",
        "--root",
        &r,
        "--data",
        &d,
        "--top-genes",
        "30",
    ]));
    let m4 = metrics(&root.path().join("results/q4"));
    assert_scores(&m4, 3);
    let z: Array2<f32> =
        ndarray_npy::read_npy(root.path().join("results/q4/latent_2d.npy")).expect("latent");
    assert_eq!(z.dim(), (90, 2));

    // A folder that is neither: one line naming it.
    let empty = root.path().join("nothing");
    std::fs::create_dir_all(&empty).expect("dir");
    let out = scae(&["q1", "--root", &r, "--data", &empty.display().to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing") && err.contains("10x"), "{err}");
}

/// The real worm_neuron data (10x v3 layout, 4186 cells, 10 labels) through Q1 and Q4 on the
/// tiny config; skipped with a message when ../shared/data is absent.
#[test]
fn worm_neuron_runs_through_q1_and_q4() {
    let Some(worm) = common::shared_data("worm_neuron") else {
        return;
    };
    let root = project();
    let r = root_arg(root.path());
    let d = worm.display().to_string();
    assert_ok(&scae(&["q1", "--root", &r, "--data", &d]));
    assert_ok(&scae(&["q4", "--root", &r, "--data", &d]));
    let m = metrics(&root.path().join("results/q4"));
    assert_eq!(m["provenance"]["data"]["cells"], 4186);
    assert_eq!(m["provenance"]["data"]["genes"], 1000);
    assert_scores(&m, 3);
}

#[test]
fn a_perplexity_too_large_for_the_data_is_refused_before_training() {
    let root = project();
    let r = root_arg(root.path());
    let config = root.path().join("configs/q3_big.toml");
    std::fs::write(
        &config,
        "models = \"q1.toml\"\nlatent = 4\n[tsne]\nperplexity = 50.0\n",
    )
    .expect("config");
    let out = scae(&[
        "q3",
        "--root",
        &r,
        "--config",
        &config.display().to_string(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("q3_big.toml") && err.contains("perplexity 50") && err.contains("120 cells"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!root.path().join("results/q3").exists());
}
