//! Every data flag is honoured or refused: `--layer` picks the matrix Q1 trains on, `--labels-key`
//! the labels Q4 scores against, `--top-genes` the genes `scae vae` keeps; a flag that has nothing
//! to act on (`--layer` on a `.npy`, labels for `train`) ends in one line; `--h5ad` inside the results
//! folder survives the run and an unwritable one is refused before training; cells whose label is
//! missing train and are left out of the scores (checked against scikit-learn).

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;

use common::{FIXTURE_GMVAE, SMALL_Q1, SMALL_VAE, assert_ok, io_fixture, scae};

const Q4: &str = "models = \"q1.toml\"\nlatent = 2\nscore_components = 10\n";

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("file")).expect("JSON")
}

/// A project root holding `configs/` with the configs above.
fn project() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let configs = root.path().join("configs");
    std::fs::create_dir_all(&configs).expect("configs");
    for (name, text) in [
        ("q1.toml", SMALL_Q1),
        ("q4.toml", Q4),
        ("vae.toml", SMALL_VAE),
        ("gmvae-real.toml", FIXTURE_GMVAE),
    ] {
        std::fs::write(configs.join(name), text).expect("config");
    }
    root
}

/// Runs `scae` in the project `root` (`--root` added).
fn run(root: &Path, args: &[&str]) -> std::process::Output {
    let root = root.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--root", &root]);
    scae(&all)
}

/// The one line of a failed run, which must not be a panic.
fn one_line_error(out: &std::process::Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: accepted");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(" INFO ") && !l.contains(" WARN "))
        .collect();
    assert_eq!(lines.len(), 1, "{what}: {stderr}");
    lines[0].to_owned()
}

#[test]
fn q1_trains_on_the_layer_it_is_given() {
    let root = project();
    let out = |name: &str| root.path().join(name).display().to_string();
    // csr.h5ad holds the counts in X; layers.h5ad holds log-normalised values in X and the same
    // counts in layers["counts"] (make_h5ad.py).
    assert_ok(&run(
        root.path(),
        &["q1", "--data", &io_fixture("csr.h5ad"), "--out", &out("x")],
    ));
    assert_ok(&run(
        root.path(),
        &[
            "q1",
            "--data",
            &io_fixture("layers.h5ad"),
            "--layer",
            "counts",
            "--out",
            &out("layer"),
        ],
    ));
    assert_ok(&run(
        root.path(),
        &[
            "q1",
            "--data",
            &io_fixture("layers.h5ad"),
            "--out",
            &out("lognorm"),
        ],
    ));
    // The history without its seconds column (the last), which is timing.
    let history = |d: &str| -> Vec<String> {
        std::fs::read_to_string(root.path().join(d).join("latent2/history.csv"))
            .expect("history")
            .lines()
            .map(|l| l.rsplit_once(',').expect("columns").0.to_owned())
            .collect()
    };
    let source =
        |d: &str| json(&root.path().join(d).join("metrics.json"))["provenance"]["data"].clone();
    // The layer is the counts of csr.h5ad's X: the same matrix, so the same training.
    assert_eq!(history("x"), history("layer"));
    assert_eq!(history("x").len(), 3);
    assert_eq!(source("x")["fingerprint"], source("layer")["fingerprint"]);
    assert_eq!(source("layer")["layer"], "counts");
    assert_eq!(source("layer")["format"], "h5ad");
    // Without --layer, X is already log-normalised: read as it is, with no gene selection.
    assert_ne!(
        source("lognorm")["fingerprint"],
        source("layer")["fingerprint"]
    );
    assert!(source("lognorm").get("top_genes").is_none());
    assert_eq!(source("layer")["top_genes"], 1000);

    // Q1 trains without labels but records them with the fingerprint that decides whether Q3-Q5
    // may reuse its models: the same training, another fingerprint.
    let labelled = out("labelled");
    let data = io_fixture("csr.h5ad");
    let args = [
        "q1",
        "--data",
        &data,
        "--labels-key",
        "cell_type",
        "--out",
        &labelled,
    ];
    assert_ok(&run(root.path(), &args));
    assert_eq!(history("x"), history("labelled"));
    assert_eq!(source("labelled")["labels_key"], "cell_type");
    assert_ne!(
        source("labelled")["fingerprint"],
        source("x")["fingerprint"]
    );
}

#[test]
fn q4_scores_against_the_obs_column_labels_key_names() {
    let root = project();
    let scores = |key: &str| {
        let out = root.path().join(key);
        let o = out.display().to_string();
        let data = io_fixture("csr.h5ad");
        assert_ok(&run(
            root.path(),
            &["q4", "--data", &data, "--labels-key", key, "--out", &o],
        ));
        let metrics = json(&out.join("metrics.json"));
        assert_eq!(metrics["provenance"]["data"]["labels_key"], key);
        let by_label: Vec<String> = metrics["latent_silhouette_by_label"]
            .as_array()
            .expect("by_label")
            .iter()
            .map(|l| l["label"].as_str().expect("label").to_owned())
            .collect();
        (metrics["scores"][0]["scores"].clone(), by_label)
    };
    let (cell_type, mut types) = scores("cell_type");
    let (batch, mut batches) = scores("batch");
    types.sort();
    batches.sort();
    assert_eq!(types, ["B cell", "glia", "muscle", "neuron"]);
    assert_eq!(batches, ["a", "b"]);
    assert!(cell_type.is_object() && batch.is_object());
    assert_ne!(cell_type, batch);
}

#[test]
fn vae_keeps_the_number_of_genes_top_genes_asks_for() {
    let root = project();
    let genes = |extra: &[&str], name: &str| {
        let out = root.path().join(name);
        let o = out.display().to_string();
        let data = io_fixture("csr.h5ad");
        let mut args = vec!["vae", "--data", &data, "--out", &o];
        args.extend(extra);
        assert_ok(&run(root.path(), &args));
        let card = json(&out.join("metrics.json"));
        card["provenance"]["data"]["genes"].as_u64().expect("genes")
    };
    assert_eq!(genes(&[], "all"), 25);
    assert_eq!(genes(&["--top-genes", "10"], "top10"), 10);
}

#[test]
fn a_flag_with_nothing_to_act_on_is_refused_in_one_line() {
    let root = project();
    let dir = tempfile::tempdir().expect("tempdir");
    let npy = dir.path().join("counts.npy");
    let counts = ndarray::Array2::<f32>::from_shape_fn((30, 6), |(i, j)| ((i + j) % 4) as f32);
    scae_io::write_npy(&npy, &counts.view()).expect("npy");
    let npy = npy.display().to_string();
    let labels = dir.path().join("labels.txt");
    scae_io::write_labels(&labels, &vec!["a".to_owned(); 40]).expect("labels");
    let labels = labels.display().to_string();
    let (csr, layers) = (io_fixture("csr.h5ad"), io_fixture("layers.h5ad"));
    let out = dir.path().join("out").display().to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &["q1", "--data", &npy, "--layer", "counts"],
            "--layer counts",
        ),
        (
            &["vae", "--data", &npy, "--labels-key", "cell_type"],
            "--labels-key",
        ),
        // Q1 reads the labels it records: 40 labels for 30 cells is an error.
        (&["q1", "--data", &npy, "--labels", &labels], "labels.txt"),
        (
            &["train", "--data", &csr, "--labels-key", "batch"],
            "does not use labels",
        ),
        (
            &["q3", "--data", &layers, "--top-genes", "10"],
            "--top-genes 10",
        ),
    ];
    for (args, phrase) in cases {
        let mut args = args.to_vec();
        args.extend(["--out", &out]);
        let what = args.join(" ");
        let line = one_line_error(&run(root.path(), &args), &what);
        assert!(line.contains(phrase), "{what}: {line}");
        assert!(!Path::new(&out).exists(), "{what}: wrote its results");
    }
    // Flags a command does not take at all are clap's usage errors (exit code 2).
    let rejected: &[&[&str]] = &[
        &["vae-synth", "--data", &csr],
        &["gmvae-synth", "--top-genes", "10"],
        &["vae-synth", "--labels-key", "cell_type"],
        &[
            "q4",
            "--data",
            &csr,
            "--labels",
            &labels,
            "--labels-key",
            "batch",
        ],
    ];
    for args in rejected {
        let out = run(root.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("unexpected argument") || stderr.contains("cannot be used with"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn an_h5ad_in_the_results_folder_survives_and_an_unwritable_one_is_refused_up_front() {
    let root = project();
    let res = root.path().join("res");
    let (r, data) = (res.display().to_string(), io_fixture("csr.h5ad"));
    let inside = res.join("cells.h5ad").display().to_string();
    assert_ok(&run(
        root.path(),
        &["vae", "--data", &data, "--out", &r, "--h5ad", &inside],
    ));
    assert!(Path::new(&inside).is_file(), "{inside} was not written");
    assert!(res.join("metrics.json").is_file());

    let missing = root.path().join("no/such/folder/cells.h5ad");
    let m = missing.display().to_string();
    let fresh = root.path().join("fresh").display().to_string();
    for sub in ["vae", "gmvae-real"] {
        let args = [sub, "--data", &data, "--out", &fresh, "--h5ad", &m];
        let args = if sub == "gmvae-real" {
            [&args[..], &["--labels-key", "cell_type"]].concat()
        } else {
            args.to_vec()
        };
        let line = one_line_error(&run(root.path(), &args), sub);
        assert!(
            line.contains(&m) && line.contains("cannot write"),
            "{sub}: {line}"
        );
        assert!(!Path::new(&fresh).exists(), "{sub}: wrote results");
    }
}

/// The labels of `missing_labels.h5ad` as anndata reads them (`None` where missing).
fn anndata_labels(python: &Path, file: &str) -> Vec<Option<String>> {
    let code = r#"
import json, sys
import anndata as ad
a = ad.read_h5ad(sys.argv[1])
print(json.dumps([None if v != v else str(v) for v in a.obs["cell_type"].astype(object)]))
"#;
    let out = common::run_python(python, code, &[Path::new(file)]);
    serde_json::from_slice(&out).expect("labels JSON")
}

#[test]
fn cells_without_a_label_train_and_are_left_out_of_the_scores() {
    let Some(python) = common::python() else {
        return;
    };
    let root = project();
    let file = io_fixture("missing_labels.h5ad");
    let labels = anndata_labels(&python, &file);
    assert_eq!(labels.iter().filter(|l| l.is_none()).count(), 3);
    let out: PathBuf = root.path().join("gmvae");
    let o = out.display().to_string();
    assert_ok(&run(
        root.path(),
        &[
            "gmvae-real",
            "--data",
            &file,
            "--labels-key",
            "cell_type",
            "--out",
            &o,
        ],
    ));
    let metrics = json(&out.join("metrics.json"));
    let source = &metrics["provenance"]["data"];
    // Cell 3 holds no count and is dropped; the 3 unlabelled cells stay and train.
    assert_eq!(source["cells"], 39);
    assert_eq!(source["unlabelled_cells"], 3);
    let report = std::fs::read_to_string(out.join("report.md")).expect("report");
    assert!(report.contains("3 of 39 cells have no label"), "{report}");

    // The GMVAE's assignment of every cell, scored by scikit-learn on the labelled ones only.
    let clusters = std::fs::read_to_string(out.join("seed_0/gmvae/clusters.csv")).expect("csv");
    let (mut truth, mut assigned) = (Vec::new(), Vec::new());
    let mut cells = 0;
    for line in clusters.lines().skip(1) {
        let mut f = line.split(',');
        let cell: usize = f.next().and_then(|c| c.parse().ok()).expect("cell");
        let cluster: usize = f.next().and_then(|c| c.parse().ok()).expect("cluster");
        cells += 1;
        if let Some(label) = &labels[cell] {
            truth.push(label.clone());
            assigned.push(cluster);
        }
    }
    assert_eq!((cells, truth.len()), (39, 36));
    let code = r#"
import json, sys
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
t, a = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps([adjusted_rand_score(t, a), normalized_mutual_info_score(t, a)]))
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, a) = (dir.path().join("t"), dir.path().join("a"));
    std::fs::write(&t, serde_json::to_string(&truth).expect("t")).expect("t");
    std::fs::write(&a, serde_json::to_string(&assigned).expect("a")).expect("a");
    let code = code.replace(
        "json.loads(sys.argv[1]), json.loads(sys.argv[2])",
        "json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))",
    );
    let want: [f64; 2] =
        serde_json::from_slice(&common::run_python(&python, &code, &[&t, &a])).expect("scores");
    let row = metrics["scores"]
        .as_array()
        .expect("scores")
        .iter()
        .find(|r| r["method"] == "gmvae_assignment")
        .expect("the GMVAE's row");
    for (key, want) in ["ari", "nmi"].iter().zip(want) {
        let got = row[key].as_f64().expect("score");
        assert!(
            (got - want).abs() < 1e-9,
            "{key}: {got} vs scikit-learn {want}"
        );
    }
}
