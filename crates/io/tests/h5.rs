//! The HDF5 readers and writer against files the real tools wrote: Cell Ranger's `.h5` against
//! its `.mtx` twin, AnnData fixtures written by anndata (`fixtures/make_h5ad.py`), scanpy's own
//! `pbmc68k_reduced.h5ad` (pre-0.7 layout) against what anndata reads from it
//! (`fixtures/pbmc68k_expected.py`), the bad inputs of `fixtures/make_bad.py`, and a written
//! file read back by anndata in Python.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use scae_io::{
    AnnOutput, AnnSource, BackedRows, BatchSource, CountRows, H5adOptions, H5adRows, Labels,
    ObsColumn, read_10x, read_10x_h5, read_h5ad, to_dense, write_h5ad,
};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("json")
}

fn rows_of(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect()
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("strings")
        .iter()
        .map(|s| match s {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// Whether CI demands every external input.
fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// A shared dataset beside the project, `None` (with a note) when absent outside CI.
fn shared(rel: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(rel);
    if path.exists() {
        return Some(path);
    }
    assert!(
        !in_ci(),
        "CI=true and the shared data {} is missing",
        path.display()
    );
    eprintln!("skipped: {} is missing", path.display());
    None
}

/// A command running `python` on files these tests have written and closed.
///
/// HDF5 opens files without close-on-exec, so a Python started by one test inherits the
/// descriptor, and the lock, of a file another test in this process is writing at that
/// moment, and the next reader of that file finds it locked. The files read here are closed,
/// so the reader does not take HDF5's lock.
fn reader(python: &Path) -> Command {
    let mut command = Command::new(python);
    command.env("HDF5_USE_FILE_LOCKING", "FALSE");
    command
}

/// The set-up's Python (`SCAE_PYTHON`, set by `cargo xtask`), `None` outside CI when unset.
fn python() -> Option<PathBuf> {
    match std::env::var_os("SCAE_PYTHON") {
        Some(p) if Path::new(&p).exists() => Some(p.into()),
        _ => {
            assert!(
                !in_ci(),
                "CI=true and SCAE_PYTHON is not set: run the tests with `cargo xtask test`"
            );
            eprintln!("skipped: SCAE_PYTHON is not set (run the tests with `cargo xtask test`)");
            None
        }
    }
}

#[test]
fn cell_ranger_h5_gives_the_matrix_of_its_mtx_twin() {
    for (h5, mtx) in [
        (
            "10x/v3_grch38_chr21/filtered_feature_bc_matrix.h5",
            "10x/v3_grch38_chr21/filtered_feature_bc_matrix",
        ),
        (
            "10x/v2_hg19_chr21/filtered_gene_bc_matrices_h5.h5",
            "10x/v2_hg19_chr21/filtered_gene_bc_matrices/hg19_chr21",
        ),
    ] {
        let (Some(h5), Some(mtx)) = (shared(h5), shared(mtx)) else {
            return;
        };
        let a = read_10x_h5(&h5).expect("h5 reads");
        let b = read_10x(&mtx).expect("mtx reads");
        assert_eq!(a.counts.shape(), b.counts.shape(), "{}", h5.display());
        assert_eq!(to_dense(&a.counts), to_dense(&b.counts), "{}", h5.display());
        assert_eq!(a.barcodes, b.barcodes);
        assert_eq!(a.gene_ids, b.gene_ids);
        assert_eq!(a.gene_names, b.gene_names);
        assert_eq!(a.feature_types, b.feature_types);
        assert_eq!(
            scae_io::Hdf5File::open(&h5)
                .expect("opens")
                .and_then(|f| f.kind()),
            Some(scae_io::Hdf5Kind::TenxH5)
        );
    }
}

#[test]
fn obs_columns_asked_for_are_read_as_stored_with_missing_values_kept() {
    let path = fixtures().join("annotated.h5ad");
    let options = H5adOptions {
        obs_keys: vec![
            "cell_type".into(),
            "flag".into(),
            "maybe".into(),
            "ok".into(),
            "score".into(),
            "barcode".into(),
        ],
        ..Default::default()
    };
    let m = read_h5ad(&path, &options).expect("reads");
    let keys: Vec<&str> = m.obs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["cell_type", "flag", "maybe", "ok", "score", "barcode"]
    );
    let categories = |i: usize| -> Labels {
        match &m.obs[i].1 {
            ObsColumn::Categorical(l) => l.clone(),
            other => panic!("{}: not categorical: {other:?}", m.obs[i].0),
        }
    };
    let cell_type = categories(0).field_codes();
    assert_eq!(cell_type.len(), 40);
    // make_annotated.py took cell 7's type away; every other cell has one.
    assert_eq!(cell_type[7], scae_io::MISSING);
    assert_eq!(cell_type.iter().filter(|&&c| c < 0).count(), 1);
    // Booleans are the categories pandas writes them as.
    let flag = categories(1);
    let want: Vec<usize> = (0..40).map(|i| usize::from(i % 3 == 0)).collect();
    assert_eq!(flag.names, ["False", "True"]);
    assert_eq!(flag.codes, want.into_iter().map(Some).collect::<Vec<_>>());
    // pandas' nullable arrays (make_annotated.py): a masked value is a cell without one; a
    // nullable integer stays a number (`maybe` is the row number, missing on every fifth row).
    let ObsColumn::Numbers(maybe) = &m.obs[2].1 else {
        panic!("maybe: {:?}", m.obs[2].1)
    };
    assert_eq!(maybe.iter().filter(|v| v.is_nan()).count(), 8);
    assert!(maybe[0].is_nan());
    assert_eq!((maybe[1], maybe[39]), (1.0, 39.0));
    let maybe = m.obs[2].1.categories();
    assert_eq!(maybe.missing(), 8);
    assert_eq!(maybe.names[maybe.codes[1].expect("1")], "1");
    let ok = categories(3);
    assert_eq!(
        (ok.names.clone(), ok.missing()),
        (vec!["False".to_owned(), "True".into()], 6)
    );
    assert_eq!(ok.names[ok.codes[2].expect("2")], "True");
    // A float column is numbers (anndata: float64), a string column strings (`AC000GT`, ...).
    let ObsColumn::Numbers(score) = &m.obs[4].1 else {
        panic!("score: {:?}", m.obs[4].1)
    };
    assert_eq!(score.len(), 40);
    assert!(score.iter().all(|v| v.is_finite() && v.fract() != 0.0));
    let ObsColumn::Strings(barcode) = &m.obs[5].1 else {
        panic!("barcode: {:?}", m.obs[5].1)
    };
    assert_eq!(barcode[3].as_deref(), Some("AC003GT"));
    let backed = H5adRows::open(&path, None).expect("opens");
    // Compared as text: a missing number is NaN, which is not equal to itself.
    assert_eq!(
        format!(
            "{:?}",
            backed.obs_columns(&options.obs_keys).expect("columns")
        ),
        format!("{:?}", m.obs)
    );
    let err = read_h5ad(
        &path,
        &H5adOptions {
            obs_keys: vec!["donor".into()],
            ..Default::default()
        },
    )
    .expect_err("no such column")
    .to_string();
    assert!(
        err.contains("annotated.h5ad") && err.contains("donor"),
        "{err}"
    );
}

#[test]
fn h5ad_x_as_csr_csc_or_dense_reads_what_anndata_wrote() {
    let want = expected();
    let counts = rows_of(&want["counts"]);
    for file in ["csr.h5ad", "csc.h5ad", "dense.h5ad"] {
        let path = fixtures().join(file);
        let options = H5adOptions {
            layer: None,
            labels_key: Some("cell_type".into()),
            ..Default::default()
        };
        let m = read_h5ad(&path, &options).expect("reads");
        assert_eq!(m.element, "/X");
        let dense = to_dense(&m.x);
        for (i, row) in counts.iter().enumerate() {
            assert_eq!(dense.row(i).to_vec(), *row, "{file} row {i}");
        }
        assert_eq!(m.obs_names, strings(&want["obs_names"]));
        assert_eq!(m.var_names, strings(&want["var_names"]));
        let labels = m.labels.as_ref().expect("labels");
        let names: Vec<&str> = labels
            .codes
            .iter()
            .map(|c| labels.names[c.expect("a label")].as_str())
            .collect();
        assert_eq!(names, strings(&want["cell_type"]));
        let c = m.into_counts(&path).expect("counts");
        assert_eq!(c.counts.cells(), counts.len());
    }
}

#[test]
fn counts_come_from_a_layer_or_raw_and_labels_from_any_obs_column() {
    let want = expected();
    let path = fixtures().join("layers.h5ad");
    for (layer, element) in [(Some("counts"), "/layers/counts"), (Some("raw"), "/raw/X")] {
        let m = read_h5ad(
            &path,
            &H5adOptions {
                layer: layer.map(Into::into),
                labels_key: None,
                ..Default::default()
            },
        )
        .expect("reads");
        assert_eq!(m.element, element);
        assert_eq!(
            to_dense(&m.x)
                .rows()
                .into_iter()
                .map(|r| r.to_vec())
                .collect::<Vec<_>>(),
            rows_of(&want["counts"])
        );
        assert_eq!(m.var_names, strings(&want["var_names"]));
    }
    // X holds log-normalised values: read as they are, refused as counts.
    let m = read_h5ad(&path, &H5adOptions::default()).expect("reads");
    let lognorm = rows_of(&want["lognorm"]);
    for (row, want) in to_dense(&m.x).rows().into_iter().zip(&lognorm) {
        for (a, b) in row.iter().zip(want) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
    let err = m.into_counts(&path).expect_err("not counts").to_string();
    assert!(
        err.contains("layers.h5ad: /X: value") && err.contains("is not a count"),
        "{err}"
    );
    for (key, want) in [
        ("batch", strings(&want["batch"])),
        ("n_genes", strings(&want["n_genes"])),
    ] {
        let rows = H5adRows::open(&path, None).expect("opens");
        let labels = rows.labels(key).expect("labels");
        let got: Vec<&str> = labels
            .codes
            .iter()
            .map(|c| labels.names[c.expect("a label")].as_str())
            .collect();
        assert_eq!(got, want, "{key}");
    }
}

#[test]
fn a_missing_category_is_a_cell_without_a_label_not_an_error() {
    // missing_labels.h5ad (make_missing_labels.py): csr.h5ad with cells 5, 17, 30 set to NaN.
    let want = expected();
    let rows = H5adRows::open(&fixtures().join("missing_labels.h5ad"), None).expect("opens");
    let labels = rows.labels("cell_type").expect("labels");
    assert_eq!(labels.names, ["B cell", "glia", "muscle", "neuron"]);
    assert_eq!(labels.missing(), 3);
    for (cell, (code, want)) in labels
        .codes
        .iter()
        .zip(strings(&want["cell_type"]))
        .enumerate()
    {
        match code {
            None => assert!([5, 17, 30].contains(&cell), "cell {cell} lost its label"),
            Some(c) => assert_eq!(labels.names[*c], want, "cell {cell}"),
        }
    }
}

#[test]
fn scanpy_pbmc68k_reduced_in_the_pre_0_7_layout_reads_as_anndata_reads_it() {
    let Some(python) = python() else { return };
    let venv = python
        .parent()
        .and_then(Path::parent)
        .expect("venv")
        .to_path_buf();
    let found = std::fs::read_dir(venv.join("lib"))
        .expect("venv lib")
        .filter_map(|e| e.ok())
        .map(|e| {
            e.path()
                .join("site-packages/scanpy/datasets/10x_pbmc68k_reduced.h5ad")
        })
        .find(|p| p.exists());
    let Some(path) = found else {
        assert!(
            !in_ci(),
            "CI=true and scanpy's pbmc68k_reduced.h5ad is not in {}",
            venv.display()
        );
        return;
    };
    let text =
        std::fs::read_to_string(fixtures().join("pbmc68k_expected.json")).expect("expectations");
    let want: Value = serde_json::from_str(&text).expect("json");
    let options = H5adOptions {
        layer: None,
        labels_key: Some("bulk_labels".into()),
        ..Default::default()
    };
    let m = read_h5ad(&path, &options).expect("reads");
    assert_eq!(vec![m.x.rows(), m.x.cols()], [700, 765]);
    let x = to_dense(&m.x);
    let sum: f64 = x.iter().map(|&v| f64::from(v)).sum();
    let abs: f64 = x.iter().map(|&v| f64::from(v).abs()).sum();
    assert!(
        (sum - want["x_sum"].as_f64().expect("sum")).abs() < 1e-3 * abs,
        "{sum}"
    );
    assert!(
        (abs - want["x_abs_sum"].as_f64().expect("abs")).abs() < 1e-6 * abs,
        "{abs}"
    );
    assert_eq!(
        x.row(0).iter().take(8).copied().collect::<Vec<_>>(),
        rows_of(&Value::Array(vec![want["x_first_row"].clone()]))[0]
    );
    let names = strings(&want["obs_names"]);
    assert_eq!(m.obs_names[..5], names[..5]);
    assert_eq!(m.obs_names[698..], names[5..]);
    let genes = strings(&want["var_names"]);
    assert_eq!(m.var_names[..5], genes[..5]);
    let labels = m.labels.as_ref().expect("labels");
    let got: Vec<&str> = labels
        .codes
        .iter()
        .map(|c| labels.names[c.expect("a label")].as_str())
        .collect();
    assert_eq!(got, strings(&want["bulk_labels"]));
    let louvain = H5adRows::open(&path, None)
        .expect("opens")
        .labels("louvain")
        .expect("louvain");
    let got: Vec<&str> = louvain
        .codes
        .iter()
        .map(|c| louvain.names[c.expect("a label")].as_str())
        .collect();
    assert_eq!(got, strings(&want["louvain"]));

    let raw = read_h5ad(
        &path,
        &H5adOptions {
            layer: Some("raw".into()),
            labels_key: None,
            ..Default::default()
        },
    )
    .expect("raw");
    assert_eq!(vec![raw.x.rows(), raw.x.cols()], [700, 765]);
    assert_eq!(raw.x.nnz() as u64, want["raw_nnz"].as_u64().expect("nnz"));
    let raw_sum: f64 = raw.x.data().iter().map(|&v| f64::from(v)).sum();
    assert!((raw_sum - want["raw_sum"].as_f64().expect("raw sum")).abs() < 1e-6 * raw_sum);
    assert_eq!(raw.var_names[..3], strings(&want["raw_var_names"])[..]);
}

#[test]
fn every_bad_input_is_one_line_naming_the_file_and_the_object() {
    let dir = fixtures().join("bad");
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases"))
            .expect("json");
    let cases = cases.as_object().expect("object");
    assert!(cases.len() >= 10);
    for (file, case) in cases {
        let path = dir.join(file);
        let args = strings(&case["args"]);
        let mut options = H5adOptions::default();
        if let [flag, value] = args.as_slice() {
            match flag.as_str() {
                "--layer" => options.layer = Some(value.clone()),
                _ => options.labels_key = Some(value.clone()),
            }
        }
        let err = read_h5ad(&path, &options)
            .and_then(|m| m.into_counts(&path))
            .expect_err(file)
            .to_string();
        let object = case["object"].as_str().expect("object");
        let phrase = case["phrase"].as_str().expect("phrase");
        assert!(!err.contains('\n'), "{file}: {err}");
        assert!(
            err.starts_with(&path.display().to_string()),
            "{file}: {err}"
        );
        assert!(
            err.contains(&format!(": {object}")),
            "{file} should name {object}: {err}"
        );
        assert!(err.contains(phrase), "{file} should say {phrase:?}: {err}");
    }
}

#[test]
fn backed_rows_give_the_batches_of_the_same_rows_in_memory() {
    for file in ["csr.h5ad", "dense.h5ad"] {
        let path = fixtures().join(file);
        let counts = read_h5ad(&path, &H5adOptions::default())
            .and_then(|m| m.into_counts(&path))
            .expect("counts")
            .counts;
        let rows: Vec<usize> = (0..40).filter(|r| r % 3 != 0).collect();
        let labels: Vec<i64> = rows.iter().map(|&r| r as i64 % 5 - 1).collect();
        let memory = CountRows::subset(&counts, &rows)
            .expect("rows")
            .with_field(scae_io::keys::LABELS, &labels)
            .expect("labels");
        let file_rows = Arc::new(H5adRows::open(&path, None).expect("opens"));
        let backed = BackedRows::new(file_rows, rows.clone())
            .and_then(|b| b.with_field(scae_io::keys::LABELS, &labels))
            .expect("backed");
        assert_eq!(backed.fields(), [scae_io::keys::LABELS]);
        assert_eq!(
            (backed.cells(), backed.genes()),
            (memory.cells(), memory.genes())
        );
        let order: Vec<usize> = (0..rows.len()).rev().collect();
        // Planned (read ahead on a thread), then asked for outside the plan.
        backed.plan(&order, &[7, 7, 7, 5]);
        for chunk in order.chunks(7) {
            assert_eq!(
                backed.batch(chunk).expect("batch"),
                memory.batch(chunk).expect("batch"),
                "{file}"
            );
        }
        // Batches of unequal lengths (a trainer's short last batch merged into the one before).
        backed.plan(&order, &[7, 7, 12]);
        for chunk in [&order[..7], &order[7..14], &order[14..]] {
            assert_eq!(
                backed.batch(chunk).expect("batch"),
                memory.batch(chunk).expect("batch"),
                "{file}"
            );
        }
        assert_eq!(
            backed.batch(&[3, 1]).expect("direct"),
            memory.batch(&[3, 1]).expect("direct")
        );
        assert!(backed.batch(&[rows.len()]).is_err());
    }
    // A source dropped in the middle of a pass stops and joins its reader thread.
    let readers = || {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .filter(|name| name.trim() == "scae-read-ahead")
                    .count()
            })
            .unwrap_or(0)
    };
    let path = fixtures().join("csr.h5ad");
    let file = Arc::new(H5adRows::open(&path, None).expect("opens"));
    let backed = BackedRows::new(file, (0..40).collect()).expect("backed");
    let order: Vec<usize> = (0..40).collect();
    backed.plan(&order, &[1; 40]);
    backed.batch(&[0]).expect("the first batch");
    backed.plan(&order, &[1; 40]);
    drop(backed);
    assert_eq!(readers(), 0, "a reader thread outlived its source");

    let csc = Arc::new(H5adRows::open(&fixtures().join("csc.h5ad"), None).expect("opens"));
    let err = BackedRows::new(csc, vec![0, 1])
        .expect_err("CSC")
        .to_string();
    assert!(err.contains("/X") && err.contains("CSC"), "{err}");
}

#[test]
fn a_written_h5ad_opens_in_anndata_with_names_embeddings_clusters_and_layers() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out.h5ad");
    let src = fixtures().join("csr.h5ad");
    let m = read_h5ad(&src, &H5adOptions::default()).expect("reads");
    let (n, g) = (m.x.rows(), m.x.cols());
    let latent = ndarray::Array2::from_shape_fn((n, 3), |(i, j)| (i * 3 + j) as f32 * 0.5);
    let probs =
        ndarray::Array2::from_shape_fn((n, 2), |(i, j)| if (i + j) % 2 == 0 { 0.75 } else { 0.25 });
    let decoded = ndarray::Array2::from_shape_fn((n, g), |(i, j)| (i + j) as f32);
    let codes: Vec<usize> = (0..n).map(|i| i % 2).collect();
    let out = AnnOutput {
        obs_names: &m.obs_names,
        var_names: &m.var_names,
        x: Some(&m.x),
        obsm: vec![("X_scae", latent.view()), ("scae_q_y", probs.view())],
        obs_categorical: vec![("scae_cluster", codes.clone(), vec!["0".into(), "1".into()])],
        layers: vec![("scae_denoised", decoded.view())],
        uns: vec![("scae", "{\"seed\": 1}".into())],
        source: None,
    };
    write_h5ad(&path, &out).expect("writes");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        1,
        "no temporary file left"
    );
    let script = r#"
import json, sys
import anndata as ad
import numpy as np
a = ad.read_h5ad(sys.argv[1])
print(json.dumps({
    "shape": list(a.shape),
    "obs_names": list(a.obs_names), "var_names": list(a.var_names),
    "x": np.asarray(a.X.todense()).tolist(),
    "latent": a.obsm["X_scae"].tolist(), "q_y": a.obsm["scae_q_y"].tolist(),
    "cluster": [str(c) for c in a.obs["scae_cluster"]],
    "cluster_dtype": str(a.obs["scae_cluster"].dtype),
    "decoded": a.layers["scae_denoised"].tolist(),
    "uns": str(a.uns["scae"]),
}))
"#;
    let run = reader(&python)
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("python runs");
    assert!(
        run.status.success(),
        "anndata could not read it: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got: Value = serde_json::from_slice(&run.stdout).expect("json");
    assert_eq!(got["shape"], serde_json::json!([n, g]));
    assert_eq!(strings(&got["obs_names"]), m.obs_names);
    assert_eq!(strings(&got["var_names"]), m.var_names);
    assert_eq!(rows_of(&got["x"]), rows_of(&expected()["counts"]));
    assert_eq!(
        rows_of(&got["latent"]),
        latent
            .rows()
            .into_iter()
            .map(|r| r.to_vec())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        rows_of(&got["q_y"]),
        probs
            .rows()
            .into_iter()
            .map(|r| r.to_vec())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        rows_of(&got["decoded"]),
        decoded
            .rows()
            .into_iter()
            .map(|r| r.to_vec())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        strings(&got["cluster"]),
        codes.iter().map(|c| c.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(got["cluster_dtype"], "category");
    assert_eq!(got["uns"], "{\"seed\": 1}");
}

#[test]
fn a_written_h5ad_carries_every_annotation_of_its_input_cut_to_the_cells_and_genes_written() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let input = fixtures().join("annotated.h5ad");
    let source = scae_io::Hdf5File::open(&input)
        .expect("opens")
        .expect("HDF5");
    let m = scae_io::read_h5ad_file(&source, &H5adOptions::default()).expect("reads");
    let (n, g) = (m.x.rows(), m.x.cols());
    for (cells, genes, kind) in [
        (vec![0, 2, 3, 5, 6, 7, 30, 39], vec![1, 3, 4, 20], "cut"),
        ((0..n).collect(), (0..g).collect(), "whole"),
    ] {
        let x = sprs::CsMat::csr_from_dense(
            scae_io::to_dense(&m.x.to_csr())
                .select(ndarray::Axis(0), &cells)
                .select(ndarray::Axis(1), &genes)
                .view(),
            0.0,
        );
        let obs_names: Vec<String> = cells.iter().map(|&c| m.obs_names[c].clone()).collect();
        let var_names: Vec<String> = genes.iter().map(|&j| m.var_names[j].clone()).collect();
        let latent = ndarray::Array2::<f32>::ones((cells.len(), 2));
        let out = AnnOutput {
            obs_names: &obs_names,
            var_names: &var_names,
            x: Some(&x),
            obsm: vec![("X_scae", latent.view())],
            obs_categorical: vec![("scae_cluster", vec![0; cells.len()], vec!["0".into()])],
            uns: vec![("scae", "{}".into())],
            source: Some(AnnSource {
                file: &source,
                cells: &cells,
                genes: &genes,
            }),
            ..Default::default()
        };
        let path = dir.path().join(format!("{kind}.h5ad"));
        write_h5ad(&path, &out).expect("writes");
        let run = reader(&python)
            .arg(fixtures().join("check_carried.py"))
            .arg(&input)
            .arg(&path)
            .arg(kind)
            .output()
            .expect("python runs");
        assert!(
            run.status.success() && String::from_utf8_lossy(&run.stdout).trim() == "ok",
            "{kind}: the written file does not carry the input's annotations: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

#[test]
fn a_source_that_does_not_have_the_cells_written_is_refused_with_nothing_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = fixtures().join("annotated.h5ad");
    let source = scae_io::Hdf5File::open(&input)
        .expect("opens")
        .expect("HDF5");
    let names = vec!["a".to_owned()];
    let out = AnnOutput {
        obs_names: &names,
        var_names: &names,
        source: Some(AnnSource {
            file: &source,
            cells: &[40],
            genes: &[0],
        }),
        ..Default::default()
    };
    let path = dir.path().join("out.h5ad");
    let err = write_h5ad(&path, &out)
        .expect_err("cell 40 of 40")
        .to_string();
    assert!(
        err.contains("annotated.h5ad") && err.contains("does not have"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[cfg(target_os = "linux")]
#[test]
fn a_process_started_while_an_hdf5_file_is_open_does_not_inherit_it() {
    let path = fixtures().join("annotated.h5ad");
    let _open = scae_io::Hdf5File::open(&path)
        .expect("opens")
        .expect("HDF5");
    // The shell lists its own descriptors: what it inherited from this process.
    let out = Command::new("sh")
        .args(["-c", "ls -l /proc/$$/fd"])
        .output()
        .expect("sh runs");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    assert!(!listing.contains("annotated.h5ad"), "inherited: {listing}");
}
