//! scae-eval's integration metrics against scib-metrics 0.5.10 on the fixture
//! that `tests/fixtures/make_integration_fixture.py` wrote: 550 cells x 10
//! dims, six cell types in three batches, each batch shifted (one type in a
//! single batch, one split into two far-apart halves, one of 10 cells), the
//! cells' 90 exact neighbours, and scib-metrics' values computed as it runs by
//! default (jax in `float32`, "f32") and in `float64` ("f64", the same
//! definitions).
//!
//! The metrics run on the fixture's neighbour lists, so each test checks one
//! metric; `exact_neighbours_match_the_fixture` checks our own search.
//! Tolerances:
//! - neighbours: the same indices, distances within `1e-6`;
//! - silhouette label and batch, per-cell LISI, iLISI, cLISI: `1e-9` of the
//!   f64 values (the same sums in another order), `1e-6` of the default f32 ones;
//! - graph connectivity: `1e-12` (component counts, exact);
//! - kBET: the same labels scored, each label's acceptance rate within one
//!   cell of scib-metrics' (`1 / cells`), the score within the mean of those
//!   allowances over the scored labels (our diffusion map is in `f64` and its
//!   neighbours exact, where scib-metrics builds the matrix in `f32` and asks
//!   pynndescent, so a near-tie may fall the other way); on this fixture they
//!   agree exactly;
//! - Leiden NMI and ARI: `0.03` of igraph's for the same seed, and within the
//!   range igraph's own results span over seeds 0 to 19 (our Leiden and
//!   igraph's find different, equally good partitions; see `tests/leiden.rs`);
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

/// Leiden NMI and ARI against igraph's for the same seed.
const LEIDEN_TOL: f64 = 0.03;

/// The allowance on a kBET score: the mean over the scored labels of one
/// cell's share of each (`1 / cells`).
fn kbet_allowance(per_label: &[(usize, Option<f64>)], labels: &[usize]) -> f64 {
    let shares: Vec<f64> = per_label
        .iter()
        .filter(|(_, score)| score.is_some())
        .map(|&(label, _)| 1.0 / labels.iter().filter(|&&l| l == label).count() as f64)
        .collect();
    shares.iter().sum::<f64>() / shares.len() as f64
}

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
    assert_eq!((ours.n_cells(), ours.n_neighbors()), (550, 90));
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
    for (&(label, ours), theirs) in got.per_label.iter().zip(want) {
        let cells = labels.iter().filter(|&&l| l == label).count();
        println!("label {label} ({cells} cells): ours {ours:?}, scib-metrics {theirs}");
        match (ours, theirs.as_f64()) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                assert_abs_diff_eq!(a, b, epsilon = 1.0 / cells as f64 + 1e-12);
            }
            _ => panic!("label {label}: ours {ours:?}, scib-metrics {theirs}"),
        }
    }
    let allowance = kbet_allowance(&got.per_label, &labels);
    for mode in ["f64", "f32"] {
        let want = num(&e[mode]["kbet"]);
        println!("kBET: ours {}, scib-metrics ({mode}) {want}", got.score);
        assert_abs_diff_eq!(got.score, want, epsilon = allowance + 1e-12);
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
    // Within the spread of igraph's own seeds.
    let seeds: Vec<(f64, f64)> = e["f32"]["leiden_seeds"]
        .as_array()
        .expect("per seed")
        .iter()
        .map(|p| (num(&p[0]), num(&p[1])))
        .collect();
    let range = |v: Vec<f64>| {
        (
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(0.0, f64::max),
        )
    };
    let (nmi_lo, nmi_hi) = range(seeds.iter().map(|s| s.0).collect());
    let (ari_lo, ari_hi) = range(seeds.iter().map(|s| s.1).collect());
    println!(
        "igraph over seeds 0 to 19: NMI {nmi_lo:.4} to {nmi_hi:.4}, ARI {ari_lo:.4} to {ari_hi:.4}"
    );
    assert!((nmi_lo..=nmi_hi).contains(&got.nmi), "NMI {}", got.nmi);
    assert!((ari_lo..=ari_hi).contains(&got.ari), "ARI {}", got.ari);
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
    // Leiden's NMI and ARI are two of the four bio metrics; kBET one of four
    // batch metrics, with the labels scib-metrics scored.
    let mut unique = labels.clone();
    unique.sort_unstable();
    unique.dedup();
    let scored: Vec<(usize, Option<f64>)> = unique
        .into_iter()
        .zip(
            expected()["f64"]["kbet_per_label"]
                .as_array()
                .expect("per label"),
        )
        .map(|(label, score)| (label, score.as_f64()))
        .collect();
    let bio_tol = 2.0 * LEIDEN_TOL / 4.0 + 1e-9;
    let batch_tol = kbet_allowance(&scored, &labels) / 4.0 + 1e-9;
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
        rows: 550,
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

    let one = vec![7; 550];
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
