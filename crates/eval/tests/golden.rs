//! Golden tests: scae-eval against scikit-learn on the committed fixtures that
//! `tests/fixtures/make_fixtures.py` wrote (a 300 x 20 mixture of four
//! Gaussian blobs, label vectors with edge cases, a 40 x 60 matrix for PCA with
//! more genes than cells).
//!
//! Tolerances: ARI, NMI and accuracy 1e-9; silhouette 1e-6; PCA scores and
//! components 1e-4 (signs must match too: both sides use scikit-learn's
//! convention), explained variance ratio 1e-6; k-means recovers the blobs
//! exactly (ARI 1) with inertia within 1e-6 relative of scikit-learn's.

use std::path::PathBuf;

use approx::assert_abs_diff_eq;
use ndarray::{Array1, Array2};
use ndarray_npy::read_npy;
use scae_eval::{
    KMeansParams, adjusted_rand_index, hungarian_accuracy, normalized_mutual_info, pca,
    silhouette_samples, silhouette_score,
};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn npy2<T: ndarray_npy::ReadableElement>(name: &str) -> Array2<T> {
    read_npy(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn expected() -> Value {
    let text =
        std::fs::read_to_string(fixture("expected.json")).expect("expected.json is committed");
    serde_json::from_str(&text).expect("expected.json is valid JSON")
}

fn labels(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("a label array")
        .iter()
        .map(|l| l.as_u64().expect("a non-negative label") as usize)
        .collect()
}

fn num(v: &Value) -> f64 {
    v.as_f64().expect("a number")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("a number array")
        .iter()
        .map(num)
        .collect()
}

#[test]
fn agreement_scores_match_sklearn() {
    let e = expected();
    let truth = labels(&e["truth"]);
    let labelings = e["labelings"].as_object().expect("labelings");
    assert_eq!(labelings.len(), 7);
    for (name, pred) in labelings {
        let pred = labels(pred);
        let want = &e["scores"][name];
        let got = [
            adjusted_rand_index(&truth, &pred),
            normalized_mutual_info(&truth, &pred),
            hungarian_accuracy(&truth, &pred),
        ];
        for (key, got) in ["ari", "nmi", "accuracy"].into_iter().zip(got) {
            let got = got.expect("same length");
            let want = num(&want[key]);
            assert!(
                (got - want).abs() <= 1e-9,
                "{name} {key}: got {got}, sklearn {want}"
            );
        }
    }
}

#[test]
fn silhouette_matches_sklearn() {
    let e = expected();
    let x: Array2<f32> = npy2("blobs.npy");
    let sets = [
        ("truth", labels(&e["truth"])),
        ("noisy", labels(&e["labelings"]["noisy"])),
        ("random", labels(&e["labelings"]["random"])),
        ("singleton", labels(&e["singleton_labels"])),
    ];
    for (name, l) in &sets {
        let got = silhouette_score(x.view(), l, 0).expect("valid labels");
        assert_abs_diff_eq!(got, num(&e["silhouette"][name]), epsilon = 1e-6);
    }
    let per_cell = silhouette_samples(x.view(), &sets[1].1).expect("valid labels");
    let want: Array1<f64> = read_npy(fixture("silhouette_samples_noisy.npy")).expect("fixture");
    assert_eq!(per_cell.len(), want.len());
    for (g, w) in per_cell.iter().zip(&want) {
        assert_abs_diff_eq!(g, w, epsilon = 1e-6);
    }
}

/// Asserts `got` equals `want` entry-wise to `tol`, signs included.
fn assert_close(got: &Array2<f64>, want: &Array2<f64>, tol: f64, what: &str) {
    assert_eq!(got.dim(), want.dim(), "{what} shape");
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    assert!(worst <= tol, "{what}: max |diff| {worst:e} > {tol:e}");
}

#[test]
fn pca_matches_sklearn() {
    let e = expected();
    let x: Array2<f32> = npy2("blobs.npy");
    let fit = pca(x.view(), 5).expect("valid input");
    assert_close(&fit.scores, &npy2("pca_scores.npy"), 1e-4, "scores");
    assert_close(
        &fit.components,
        &npy2("pca_components.npy"),
        1e-4,
        "components",
    );
    let ratio = floats(&e["pca"]["explained_variance_ratio"]);
    let var = floats(&e["pca"]["explained_variance"]);
    for j in 0..5 {
        assert_abs_diff_eq!(fit.explained_variance_ratio[j], ratio[j], epsilon = 1e-6);
        assert_abs_diff_eq!(fit.explained_variance[j] / var[j], 1.0, epsilon = 1e-9);
    }
}

#[test]
fn pca_with_more_genes_than_cells_matches_sklearn() {
    let e = expected();
    let x: Array2<f32> = npy2("wide.npy");
    assert!(x.ncols() > x.nrows());
    let fit = pca(x.view(), 5).expect("valid input");
    assert_close(&fit.scores, &npy2("wide_pca_scores.npy"), 1e-4, "scores");
    let ratio = floats(&e["wide_pca"]["explained_variance_ratio"]);
    for (g, w) in fit.explained_variance_ratio.iter().zip(&ratio) {
        assert_abs_diff_eq!(g, w, epsilon = 1e-6);
    }
}

#[test]
fn kmeans_recovers_well_separated_blobs() {
    let e = expected();
    let x: Array2<f32> = npy2("blobs.npy");
    let truth = labels(&e["truth"]);
    let k = e["kmeans"]["n_clusters"].as_u64().expect("k") as usize;
    for seed in [0, 1, 2] {
        let fit = KMeansParams {
            seed,
            ..KMeansParams::new(k)
        }
        .fit(x.view())
        .expect("valid input");
        assert_abs_diff_eq!(
            adjusted_rand_index(&truth, &fit.labels).expect("ok"),
            1.0,
            epsilon = 0.0
        );
        let want = num(&e["kmeans"]["inertia"]);
        let rel = (fit.inertia - want).abs() / want;
        assert!(
            rel <= 1e-6,
            "seed {seed}: inertia {} vs sklearn {want} (rel {rel:e})",
            fit.inertia
        );
    }
}
