//! scae-eval's neighbour graph and Leiden against scanpy's recipe (umap's
//! `fuzzy_simplicial_set` on exact neighbours) and leidenalg, on the fixtures
//! that `tests/fixtures/make_leiden_fixture.py` wrote: 600 cells x 10 dims of
//! overlapping Gaussian blobs plus noise, their 15-neighbour graph, and
//! leidenalg's RBConfiguration partitions for seeds 0 to 7 (the qualities alone
//! for seeds 0 to 99).
//!
//! Tolerances:
//! - graph: the same edge set, each weight within `1e-4` of umap's (both sides
//!   round distances and strengths to `f32`; umap's bisection runs under
//!   numba's fastmath, so the last bits differ);
//! - quality definition: ours on leidenalg's partitions equals
//!   `partition.quality()` to `1e-9` relative (same formula, summed in `f64`);
//! - optimisation: on this graph leidenalg's seeds end in different local
//!   optima, 0.7 % apart in quality (its own partitions for seeds 0 to 7 agree
//!   with ARI down to 0.74), so one run is not held to leidenalg's best, nor
//!   to its partition for the same seed (the two libraries draw different
//!   random numbers). Over seeds 0 to 99, our best quality must reach
//!   leidenalg's best and our mean its mean, each within 0.1 %, and our worst
//!   its worst within 0.5 %; our best partition must be leidenalg's best
//!   (ARI >= 0.99), and each of our partitions for seeds 0 to 7 must agree with
//!   ARI >= 0.9 with one of leidenalg's eight (a single pass, `n_iterations =
//!   1`, fails the mean);
//! - every cluster is a connected subgraph (Leiden's guarantee);
//! - the same seed gives the same membership, on one thread or several.

use std::path::PathBuf;

use approx::{assert_abs_diff_eq, assert_relative_eq};
use ndarray::{Array1, Array2};
use ndarray_npy::read_npy;
use scae_eval::{
    Error, LeidenParams, ParamError, WeightedGraph, adjusted_rand_index, knn_graph, leiden,
    leiden_knn, rb_configuration_quality, with_threads,
};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn npy1<T: ndarray_npy::ReadableElement>(name: &str) -> Array1<T> {
    read_npy(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn data() -> Array2<f32> {
    read_npy(fixture("leiden_x.npy")).expect("leiden_x.npy is committed")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("leiden.json")).expect("leiden.json is committed");
    serde_json::from_str(&text).expect("leiden.json is valid JSON")
}

/// umap's edges, upper triangle, as `(a, b, weight)` with `a < b`, sorted.
fn reference_edges() -> Vec<(usize, usize, f64)> {
    let rows = npy1::<u16>("leiden_graph_rows.npy");
    let cols = npy1::<u16>("leiden_graph_cols.npy");
    let weights = npy1::<f32>("leiden_graph_weights.npy");
    rows.iter()
        .zip(&cols)
        .zip(&weights)
        .map(|((&a, &b), &w)| (usize::from(a), usize::from(b), f64::from(w)))
        .collect()
}

fn reference_graph() -> WeightedGraph {
    WeightedGraph::from_edges(600, reference_edges()).expect("a valid graph")
}

/// leidenalg's runs for seeds 0 to 7: (seed, quality, modularity, membership).
fn leidenalg_runs() -> Vec<(u64, f64, f64, Vec<usize>)> {
    expected()["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            let membership = r["membership"]
                .as_array()
                .expect("membership")
                .iter()
                .map(|l| l.as_u64().expect("a label") as usize)
                .collect();
            (
                r["seed"].as_u64().expect("seed"),
                r["quality"].as_f64().expect("quality"),
                r["modularity"].as_f64().expect("modularity"),
                membership,
            )
        })
        .collect()
}

#[test]
fn knn_graph_matches_umap() -> scae_eval::Result<()> {
    let want = reference_edges();
    let got: Vec<(usize, usize, f64)> = knn_graph(data().view(), 15)?.edges().collect();
    let pairs = |e: &[(usize, usize, f64)]| e.iter().map(|&(a, b, _)| (a, b)).collect::<Vec<_>>();
    assert_eq!(pairs(&got), pairs(&want), "edge sets differ");
    let mut worst = 0.0_f64;
    for (&(a, b, w), &(_, _, v)) in got.iter().zip(&want) {
        assert_abs_diff_eq!(w, v, epsilon = 1e-4);
        if (w - v).abs() > worst {
            worst = (w - v).abs();
            println!("edge ({a}, {b}): ours {w}, umap {v}");
        }
    }
    println!("{} edges, largest weight difference {worst:.3e}", got.len());
    Ok(())
}

#[test]
fn quality_is_leidenalgs() -> scae_eval::Result<()> {
    let g = reference_graph();
    let e = expected();
    assert_relative_eq!(
        g.total_weight(),
        e["total_weight"].as_f64().expect("total_weight"),
        max_relative = 1e-12
    );
    for (seed, quality, modularity, membership) in leidenalg_runs() {
        let q = rb_configuration_quality(&g, &membership, 1.0)?;
        println!("seed {seed}: leidenalg {quality:.6}, ours {q:.6}");
        assert_relative_eq!(q, quality, max_relative = 1e-9);
        assert_relative_eq!(
            q / (2.0 * g.total_weight()),
            modularity,
            max_relative = 1e-9
        );
    }
    Ok(())
}

/// Our Leiden on the reference graph with seed `seed`.
fn ours(g: &WeightedGraph, seed: u64) -> scae_eval::Result<scae_eval::Leiden> {
    leiden(
        g,
        &LeidenParams {
            seed,
            ..LeidenParams::default()
        },
    )
}

#[test]
fn leiden_reaches_leidenalgs_quality() -> scae_eval::Result<()> {
    let g = reference_graph();
    let their_q: Vec<f64> = expected()["quality_by_seed"]
        .as_array()
        .expect("quality_by_seed")
        .iter()
        .map(|q| q.as_f64().expect("a quality"))
        .collect();
    let fits = (0..their_q.len() as u64)
        .map(|seed| ours(&g, seed))
        .collect::<scae_eval::Result<Vec<_>>>()?;
    let our_q: Vec<f64> = fits.iter().map(|f| f.quality).collect();
    let stats = |q: &[f64]| {
        let best = q.iter().copied().fold(f64::MIN, f64::max);
        let worst = q.iter().copied().fold(f64::MAX, f64::min);
        (best, worst, q.iter().sum::<f64>() / q.len() as f64)
    };
    let (their_best, their_worst, their_mean) = stats(&their_q);
    let (our_best, our_worst, our_mean) = stats(&our_q);
    println!(
        "{} seeds: best {our_best:.3} vs leidenalg {their_best:.3}, mean {our_mean:.3} vs {their_mean:.3}, worst {our_worst:.3} vs {their_worst:.3}",
        their_q.len()
    );
    assert!(our_best >= their_best * (1.0 - 0.001), "best {our_best}");
    assert!(our_mean >= their_mean * (1.0 - 0.001), "mean {our_mean}");
    assert!(
        our_worst >= their_worst * (1.0 - 0.005),
        "worst {our_worst}"
    );

    // The best partitions: the same optimum, so the same clusters.
    let argmax = |q: &[f64]| (0..q.len()).fold(0, |b, i| if q[i] > q[b] { i } else { b });
    let theirs = leidenalg_runs();
    let their_best_run = theirs
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("runs");
    assert_relative_eq!(their_best_run.1, their_best, max_relative = 1e-12);
    let best_ari = adjusted_rand_index(&their_best_run.3, &fits[argmax(&our_q)].membership)?;
    println!("ARI between the best partitions {best_ari:.4}");
    assert!(best_ari >= 0.99, "ARI {best_ari}");

    // Each of our first partitions is close to one leidenalg finds.
    for (seed, fit) in fits.iter().enumerate().take(theirs.len()) {
        let closest = theirs
            .iter()
            .map(|t| adjusted_rand_index(&t.3, &fit.membership))
            .collect::<scae_eval::Result<Vec<_>>>()?
            .into_iter()
            .fold(f64::MIN, f64::max);
        println!(
            "seed {seed}: quality {:.3} ({} clusters, {} passes), leidenalg {:.3}; ARI with the closest leidenalg partition {closest:.3}",
            fit.quality, fit.n_clusters, fit.iterations, their_q[seed]
        );
        assert!(closest >= 0.9, "seed {seed}: ARI {closest}");
    }
    Ok(())
}

#[test]
fn clusters_are_connected() -> scae_eval::Result<()> {
    let g = reference_graph();
    for seed in 0..8 {
        let fit = ours(&g, seed)?;
        // Flood fill within each cluster from its first node: one component each.
        let mut seen = vec![false; g.n_nodes()];
        let mut components = vec![0_usize; fit.n_clusters];
        for start in 0..g.n_nodes() {
            if seen[start] {
                continue;
            }
            let c = fit.membership[start];
            components[c] += 1;
            seen[start] = true;
            let mut stack = vec![start];
            while let Some(u) = stack.pop() {
                for (v, _) in g.neighbors(u) {
                    if !seen[v] && fit.membership[v] == c {
                        seen[v] = true;
                        stack.push(v);
                    }
                }
            }
        }
        assert!(
            components.iter().all(|&k| k == 1),
            "seed {seed}: components per cluster {components:?}"
        );
        // Numbered by decreasing size.
        let mut sizes = vec![0; fit.n_clusters];
        for &c in &fit.membership {
            sizes[c] += 1;
        }
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    }
    Ok(())
}

#[test]
fn same_seed_same_partition_on_any_thread_count() -> scae_eval::Result<()> {
    let x = data();
    let params = LeidenParams {
        seed: 3,
        ..LeidenParams::default()
    };
    let first = leiden_knn(x.view(), 15, &params)?;
    let again = leiden_knn(x.view(), 15, &params)?;
    let one_thread = with_threads(1, || leiden_knn(x.view(), 15, &params))??;
    assert_eq!(first, again);
    assert_eq!(first, one_thread);
    Ok(())
}

#[test]
fn bad_parameters_are_errors() {
    let x = data();
    let params = LeidenParams::default();
    assert_eq!(
        leiden_knn(x.view(), 1, &params),
        Err(Error::Param(ParamError::NNeighbors(1)))
    );
    assert_eq!(
        leiden_knn(x.view(), 600, &params),
        Err(Error::TooManyNeighbors {
            n_neighbors: 600,
            n_samples: 600
        })
    );
    for resolution in [0.0, -0.5, f64::NAN] {
        let bad = LeidenParams {
            resolution,
            ..LeidenParams::default()
        };
        assert!(matches!(
            leiden_knn(x.view(), 15, &bad),
            Err(Error::Param(ParamError::Resolution(_)))
        ));
    }
    let mut nan = x.clone();
    nan[[17, 4]] = f32::NAN;
    assert!(matches!(
        leiden_knn(nan.view(), 15, &params),
        Err(Error::NonFinite {
            row: 17,
            col: 4,
            ..
        })
    ));
}

/// One-off timing at study size (8,617 cells x 50 dims, twelve overlapping
/// blobs): `cargo test -p scae-eval --release --test leiden -- --ignored --nocapture`.
#[test]
#[ignore = "a timing to read, not a check: run with --ignored --nocapture"]
fn time_knn_graph_and_leiden_at_study_size() -> scae_eval::Result<()> {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;
    use std::time::Instant;

    let (n, d, k) = (8617, 50, 12);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let centres = Array2::from_shape_fn((k, d), |_| 1.2 * rng.sample::<f32, _>(StandardNormal));
    let spreads: Vec<f32> = (0..k).map(|_| rng.random_range(0.6..1.4)).collect();
    let labels: Vec<usize> = (0..n).map(|_| rng.random_range(0..k)).collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        centres[[labels[i], j]] + spreads[labels[i]] * rng.sample::<f32, _>(StandardNormal)
    });
    println!("threads: {}", rayon::current_num_threads());
    let clock = Instant::now();
    let g = knn_graph(x.view(), 15)?;
    let knn_s = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let fit = leiden(&g, &LeidenParams::default())?;
    let leiden_s = clock.elapsed().as_secs_f64();
    println!(
        "{n} x {d}: knn_graph {knn_s:.3} s ({} edges), leiden {leiden_s:.3} s ({} clusters, quality {:.1}, {} passes, ARI vs blobs {:.3})",
        g.n_edges(),
        fit.n_clusters,
        fit.quality,
        fit.iterations,
        adjusted_rand_index(&labels, &fit.membership)?
    );
    assert!(fit.n_clusters >= 2);
    Ok(())
}
