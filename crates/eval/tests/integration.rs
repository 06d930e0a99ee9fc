//! scae-eval's integration metrics against scib-metrics 0.5.10 on the fixture
//! that `tests/fixtures/make_integration_fixture.py` wrote: 540 cells x 10
//! dims, five cell types in three batches, each batch shifted (one type in a
//! single batch, one split into two far-apart halves), the cells' 90 exact
//! neighbours, and scib-metrics' values computed as it runs by default (jax in
//! `float32`, "f32") and in `float64` ("f64", the same definitions).
//!
//! The metrics run on the fixture's neighbour lists, so each test checks one
//! metric; `exact_neighbours_match_the_fixture` checks our own search.
//! Tolerances:
//! - neighbours: the same indices, distances within `1e-6`;
//! - silhouette label and batch, per-cell LISI, iLISI, cLISI: `1e-9` of the
//!   f64 values (the same sums in another order), `1e-6` of the default f32 ones;
//! - graph connectivity: `1e-12` (component counts, exact);
//! - kBET: the same labels scored, each label's acceptance rate within one
//!   cell of scib-metrics' (`1 / cells`), the score within `1 / min cells`
//!   (our diffusion map is in `f64` and its neighbours exact, where
//!   scib-metrics builds the matrix in `f32` and asks pynndescent, so a
//!   near-tie may fall the other way); on this fixture they agree exactly;
//! - Leiden NMI and ARI: `0.03` (our Leiden and igraph's find different,
//!   equally good partitions; see `tests/leiden.rs`);
//! - aggregation: the Benchmarker's means of the fixture's own values to
//!   `1e-12`; the end-to-end scores within the tolerances above, weighted.

use std::path::PathBuf;

use approx::assert_abs_diff_eq;
use ndarray::{Array2, s};
use ndarray_npy::read_npy;
use scae_eval::{
    BatchCorrection, BioConservation, Error, GRAPH_NEIGHBORS, IntegrationScores, KBET_ALPHA,
    KBET_NEIGHBORS, LISI_NEIGHBORS, Neighbors, ParamError, clisi_knn, graph_connectivity,
    ilisi_knn, integration_scores, kbet_per_label, lisi_knn, nmi_ari_cluster_labels_leiden,
    silhouette_batch, silhouette_label,
};
use serde_json::Value;

/// Leiden NMI and ARI against igraph's.
const LEIDEN_TOL: f64 = 0.03;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn npy2<T: ndarray_npy::ReadableElement>(name: &str) -> Array2<T> {
    read_npy(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("integration.json"))
        .expect("integration.json is committed");
    serde_json::from_str(&text).expect("integration.json is valid JSON")
}

fn x() -> Array2<f32> {
    npy2("integration_x.npy")
}

fn ints(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|l| l.as_u64().expect("a non-negative integer") as usize)
        .collect()
}

fn num(v: &Value) -> f64 {
    v.as_f64().expect("a number")
}

/// (batches, labels).
fn groups() -> (Vec<usize>, Vec<usize>) {
    let e = expected();
    (ints(&e["batches"]), ints(&e["labels"]))
}

/// The fixture's 90 neighbours of every cell, as scib-metrics got them.
fn reference_neighbors() -> Neighbors {
    let idx = npy2::<u16>("integration_knn_indices.npy").mapv(u32::from);
    let dist = npy2::<f32>("integration_knn_distances.npy");
    Neighbors::from_arrays(idx.view(), dist.view()).expect("valid neighbour lists")
}

/// Checks `got` against scib-metrics' f64 value to 1e-9 and its f32 value to 1e-6.
fn check(key: &str, got: f64) {
    let e = expected();
    let (f64_, f32_) = (num(&e["f64"][key]), num(&e["f32"][key]));
    println!(
        "{key}: ours {got:.12}, f64 {f64_:.12} ({:.1e}), f32 {f32_:.12} ({:.1e})",
        (got - f64_).abs(),
        (got - f32_).abs()
    );
    assert_abs_diff_eq!(got, f64_, epsilon = 1e-9);
    assert_abs_diff_eq!(got, f32_, epsilon = 1e-6);
}

#[test]
fn exact_neighbours_match_the_fixture() -> scae_eval::Result<()> {
    let ours = Neighbors::exact(x().view(), LISI_NEIGHBORS)?;
    let theirs = reference_neighbors();
    assert_eq!((ours.n_cells(), ours.n_neighbors()), (540, 90));
    for i in 0..ours.n_cells() {
        let ((a, da), (b, db)) = (ours.others(i), theirs.others(i));
        assert_eq!(a, b, "row {i}");
        for (&p, &q) in da.iter().zip(db) {
            assert_abs_diff_eq!(p, q, epsilon = 1e-6);
        }
    }
    Ok(())
}

#[test]
fn silhouettes_match() -> scae_eval::Result<()> {
    let (batches, labels) = groups();
    check("silhouette_label", silhouette_label(x().view(), &labels)?);
    check(
        "silhouette_batch",
        silhouette_batch(x().view(), &batches, &labels)?,
    );
    Ok(())
}

#[test]
fn lisi_matches() -> scae_eval::Result<()> {
    let (batches, labels) = groups();
    let nn = reference_neighbors();
    let e = expected();
    for (key, by) in [("lisi_batch", &batches), ("lisi_label", &labels)] {
        let got = lisi_knn(&nn, by, None)?;
        let want: Vec<f64> = e["f64"][key]
            .as_array()
            .expect("per cell")
            .iter()
            .map(num)
            .collect();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max);
        println!("{key}: largest per-cell difference {worst:.1e}");
        assert!(worst <= 1e-9, "{key}: {worst}");
    }
    check("ilisi", ilisi_knn(&nn, &batches)?);
    check("clisi", clisi_knn(&nn, &labels)?);
    Ok(())
}

#[test]
fn graph_connectivity_matches() -> scae_eval::Result<()> {
    let (_, labels) = groups();
    let nn = reference_neighbors().truncate(GRAPH_NEIGHBORS)?;
    let got = graph_connectivity(&nn, &labels)?;
    let want = num(&expected()["f32"]["graph_connectivity"]);
    println!("graph connectivity: ours {got}, scib-metrics {want}");
    assert_abs_diff_eq!(got, want, epsilon = 1e-12);
    Ok(())
}

#[test]
fn kbet_matches() -> scae_eval::Result<()> {
    let (batches, labels) = groups();
    let nn = reference_neighbors().truncate(KBET_NEIGHBORS)?;
    let got = kbet_per_label(&nn, &batches, &labels, KBET_ALPHA)?;
    let e = expected();
    let want = e["f64"]["kbet_per_label"].as_array().expect("per label");
    assert_eq!(got.per_label.len(), want.len());
    let mut smallest = usize::MAX;
    for (&(label, ours), theirs) in got.per_label.iter().zip(want) {
        let cells = labels.iter().filter(|&&l| l == label).count();
        println!("label {label} ({cells} cells): ours {ours:?}, scib-metrics {theirs}");
        match (ours, theirs.as_f64()) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                assert_abs_diff_eq!(a, b, epsilon = 1.0 / cells as f64 + 1e-12);
                smallest = smallest.min(cells);
            }
            _ => panic!("label {label}: ours {ours:?}, scib-metrics {theirs}"),
        }
    }
    for mode in ["f64", "f32"] {
        let want = num(&e[mode]["kbet"]);
        println!("kBET: ours {}, scib-metrics ({mode}) {want}", got.score);
        assert_abs_diff_eq!(got.score, want, epsilon = 1.0 / smallest as f64 + 1e-12);
    }
    Ok(())
}

#[test]
fn leiden_nmi_ari_are_close() -> scae_eval::Result<()> {
    let (_, labels) = groups();
    let nn = reference_neighbors().truncate(GRAPH_NEIGHBORS)?;
    let got = nmi_ari_cluster_labels_leiden(&nn, &labels, 42)?;
    let e = expected();
    let (nmi, ari) = (num(&e["f32"]["leiden_nmi"]), num(&e["f32"]["leiden_ari"]));
    println!(
        "Leiden: ours NMI {:.4} ARI {:.4} at resolution {} ({} clusters); igraph NMI {nmi:.4} ARI {ari:.4}",
        got.nmi, got.ari, got.resolution, got.n_clusters
    );
    assert_abs_diff_eq!(got.nmi, nmi, epsilon = LEIDEN_TOL);
    assert_abs_diff_eq!(got.ari, ari, epsilon = LEIDEN_TOL);
    Ok(())
}

/// The fixture's metric values for `mode` as our score structs.
fn reference_scores(mode: &str) -> IntegrationScores {
    let m = &expected()[mode];
    IntegrationScores {
        bio: BioConservation {
            silhouette_label: num(&m["silhouette_label"]),
            clisi: num(&m["clisi"]),
            leiden_nmi: num(&m["leiden_nmi"]),
            leiden_ari: num(&m["leiden_ari"]),
        },
        batch: BatchCorrection {
            silhouette_batch: num(&m["silhouette_batch"]),
            ilisi: num(&m["ilisi"]),
            kbet: num(&m["kbet"]),
            graph_connectivity: num(&m["graph_connectivity"]),
        },
    }
}

#[test]
fn aggregation_is_the_benchmarkers() {
    let e = expected();
    for mode in ["f32", "f64"] {
        let scores = reference_scores(mode);
        assert_abs_diff_eq!(
            scores.bio.mean(),
            num(&e[mode]["bio_conservation"]),
            epsilon = 1e-12
        );
        assert_abs_diff_eq!(
            scores.batch.mean(),
            num(&e[mode]["batch_correction"]),
            epsilon = 1e-12
        );
        assert_abs_diff_eq!(scores.total(), num(&e[mode]["total"]), epsilon = 1e-12);
    }
    // The Benchmarker ran without silhouette_batch (it has none): its batch
    // mean is over the other three.
    let b = reference_scores("f32").batch;
    let bench = &e["benchmarker"];
    assert_abs_diff_eq!(
        (b.ilisi + b.kbet + b.graph_connectivity) / 3.0,
        num(&bench["Batch correction"]),
        epsilon = 1e-12
    );
    assert_abs_diff_eq!(
        reference_scores("f32").bio.mean(),
        num(&bench["Bio conservation"]),
        epsilon = 1e-12
    );
}

#[test]
fn integration_scores_end_to_end() -> scae_eval::Result<()> {
    let (batches, labels) = groups();
    let got = integration_scores(x().view(), &batches, &labels, 42)?;
    let want = reference_scores("f64");
    println!("ours {got:?}\nscib-metrics {want:?}");
    // Leiden's NMI and ARI are two of the four bio metrics; kBET one of four batch metrics.
    let smallest_kbet_label = 60.0;
    let bio_tol = 2.0 * LEIDEN_TOL / 4.0 + 1e-9;
    let batch_tol = 1.0 / smallest_kbet_label / 4.0 + 1e-9;
    assert_abs_diff_eq!(got.bio.mean(), want.bio.mean(), epsilon = bio_tol);
    assert_abs_diff_eq!(got.batch.mean(), want.batch.mean(), epsilon = batch_tol);
    assert_abs_diff_eq!(
        got.total(),
        want.total(),
        epsilon = 0.6 * bio_tol + 0.4 * batch_tol
    );
    assert_abs_diff_eq!(
        got.bio.silhouette_label,
        want.bio.silhouette_label,
        epsilon = 1e-9
    );
    assert_abs_diff_eq!(got.batch.ilisi, want.batch.ilisi, epsilon = 1e-9);
    Ok(())
}

#[test]
fn bad_inputs_are_errors() -> scae_eval::Result<()> {
    let (batches, labels) = groups();
    let nn = reference_neighbors();
    let x = x();
    let short = &labels[..10];
    let mismatch = Err(Error::LabelsForRows {
        rows: 540,
        labels: 10,
    });
    assert_eq!(silhouette_batch(x.view(), &batches, short), mismatch);
    assert_eq!(ilisi_knn(&nn, short), mismatch);
    assert_eq!(graph_connectivity(&nn, short), mismatch);
    assert_eq!(
        kbet_per_label(&nn, short, &labels, 0.05).map(|k| k.score),
        mismatch
    );
    assert_eq!(
        nmi_ari_cluster_labels_leiden(&nn, short, 0).map(|l| l.nmi),
        mismatch
    );
    assert_eq!(
        integration_scores(x.view(), short, &labels, 0).map(|s| s.total()),
        mismatch
    );

    let one = vec![7; 540];
    assert_eq!(
        ilisi_knn(&nn, &one),
        Err(Error::TooFewGroups {
            metric: "ilisi_knn",
            groups: "batches",
            found: 1
        })
    );
    assert_eq!(
        clisi_knn(&nn, &one),
        Err(Error::TooFewGroups {
            metric: "clisi_knn",
            groups: "labels",
            found: 1
        })
    );
    assert!(matches!(
        silhouette_batch(x.view(), &one, &labels),
        Err(Error::NoLabelScored { .. })
    ));
    assert!(matches!(
        kbet_per_label(&nn, &one, &labels, 0.05),
        Err(Error::NoLabelScored { .. })
    ));
    assert!(matches!(
        silhouette_label(x.view(), &one),
        Err(Error::SilhouetteClusters { .. })
    ));
    for alpha in [0.0, 1.0, f64::NAN] {
        assert!(matches!(
            kbet_per_label(&nn, &batches, &labels, alpha),
            Err(Error::Param(ParamError::KbetAlpha(_)))
        ));
    }
    assert_eq!(
        lisi_knn(&nn.truncate(2)?, &labels, None),
        Err(Error::Param(ParamError::Perplexity(0.0)))
    );
    assert_eq!(
        nn.truncate(91).map(|n| n.n_neighbors()),
        Err(Error::MoreNeighbors {
            requested: 91,
            available: 90
        })
    );
    assert!(matches!(
        integration_scores(x.slice(s![..90, ..]), &batches[..90], &labels[..90], 0),
        Err(Error::TooManyNeighbors { .. })
    ));
    let mut bad = x.clone();
    bad[[3, 2]] = f32::NAN;
    assert!(matches!(
        silhouette_label(bad.view(), &labels),
        Err(Error::NonFinite { .. })
    ));
    Ok(())
}
