//! t-SNE end to end on seeded synthetic data: parameter errors, the PCA
//! reduction of wide inputs, separation of clear clusters, and determinism.

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use scae_eval::{
    Error, ParamError, TsneInit, TsneMethod, TsneParams, silhouette_score, tsne, with_threads,
};

/// `clusters` Gaussian blobs of `per` cells in `dims` dimensions, unit noise,
/// centres 20 apart along separate axes; returns the data and the labels.
fn blobs(clusters: usize, per: usize, dims: usize, seed: u64) -> (Array2<f32>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0_f32, 1.0).expect("valid");
    let n = clusters * per;
    let labels: Vec<usize> = (0..n).map(|i| i / per).collect();
    let x = Array2::from_shape_fn((n, dims), |(i, j)| {
        let centre = if j == labels[i] % dims { 20.0 } else { 0.0 };
        centre + noise.sample(&mut rng)
    });
    (x, labels)
}

#[test]
fn too_large_a_perplexity_is_a_param_error_naming_it() {
    let (x, _) = blobs(2, 20, 5, 1);
    let err = tsne(x.view(), &TsneParams::default()).expect_err("40 cells, perplexity 30");
    assert_eq!(
        err,
        Error::Param(ParamError::PerplexityTooLarge {
            perplexity: 30.0,
            n_samples: 40
        })
    );
    let msg = err.to_string();
    assert!(
        msg.contains("perplexity 30") && msg.contains("40 cells"),
        "{msg}"
    );
    // 3 * 13 = 39 = cells - 1 is the largest that fits.
    let ok = TsneParams {
        perplexity: 13.0,
        n_iter: 300,
        ..TsneParams::default()
    };
    assert!(tsne(x.view(), &ok).is_ok());
}

#[test]
fn bad_data_is_an_error_not_a_panic() {
    let params = TsneParams::default();
    assert_eq!(
        tsne(Array2::<f32>::zeros((0, 3)).view(), &params),
        Err(Error::NoSamples)
    );
    let (mut x, _) = blobs(2, 60, 4, 2);
    x[[7, 1]] = f32::NAN;
    assert!(matches!(
        tsne(x.view(), &params),
        Err(Error::NonFinite { row: 7, col: 1, .. })
    ));
    let bad = TsneParams {
        theta: 0.0,
        ..params
    };
    assert_eq!(
        tsne(x.view(), &bad),
        Err(Error::Param(ParamError::Theta(0.0)))
    );
}

#[test]
fn wide_inputs_are_reduced_to_principal_components_first() {
    let params = TsneParams {
        n_iter: 300,
        ..TsneParams::default()
    };
    let (wide, _) = blobs(3, 40, 60, 3);
    let fit = tsne(wide.view(), &params).expect("valid");
    assert!(fit.pca_applied);
    assert_eq!(fit.input_dims, 50);
    assert_eq!(fit.embedding.dim(), (120, 2));
    let (narrow, _) = blobs(3, 40, 50, 3);
    let fit = tsne(narrow.view(), &params).expect("valid");
    assert!(!fit.pca_applied);
    assert_eq!(fit.input_dims, 50);
    let fewer = TsneParams {
        pca_components: 10,
        ..params
    };
    assert_eq!(tsne(narrow.view(), &fewer).expect("valid").input_dims, 10);
}

#[test]
fn separated_blobs_stay_separated() {
    let (x, labels) = blobs(3, 100, 10, 4);
    for method in [TsneMethod::BarnesHut, TsneMethod::Fft] {
        for init in [TsneInit::Pca, TsneInit::Random] {
            let params = TsneParams {
                method,
                init,
                ..TsneParams::default()
            };
            let fit = tsne(x.view(), &params).expect("valid");
            assert!(fit.embedding.iter().all(|v| v.is_finite()));
            let s = silhouette_score(fit.embedding.view(), &labels, 0).expect("3 clusters");
            assert!(s > 0.8, "{method} {init:?}: silhouette {s}");
            let kl = fit.kl_divergence.expect("small enough for the exact KL");
            assert!(kl > 0.0 && kl < 2.0, "{method}: KL {kl}");
        }
    }
}

#[test]
fn same_input_and_parameters_give_identical_output() {
    let (x, _) = blobs(3, 70, 8, 5);
    for method in [TsneMethod::BarnesHut, TsneMethod::Fft] {
        let params = TsneParams {
            method,
            n_iter: 400,
            ..TsneParams::default()
        };
        let a = tsne(x.view(), &params).expect("valid");
        let b = tsne(x.view(), &params).expect("valid");
        assert_eq!(a.embedding, b.embedding, "{method}: two runs");
        // Also on pools of another size: the neighbour search is thread-count
        // free and the optimisation runs on one thread.
        for threads in [1, 2, 3] {
            let c = with_threads(threads, || tsne(x.view(), &params))
                .expect("a pool")
                .expect("valid");
            assert_eq!(a.embedding, c.embedding, "{method}: {threads} threads");
        }
    }
}

#[test]
fn the_random_start_is_seeded() {
    let (x, _) = blobs(2, 60, 4, 6);
    let params = |seed| TsneParams {
        init: TsneInit::Random,
        seed,
        n_iter: 300,
        ..TsneParams::default()
    };
    let a = tsne(x.view(), &params(1)).expect("valid");
    let b = tsne(x.view(), &params(1)).expect("valid");
    let c = tsne(x.view(), &params(2)).expect("valid");
    assert_eq!(a.embedding, b.embedding);
    assert_ne!(a.embedding, c.embedding);
}

#[test]
fn params_deserialise_with_defaults_and_reject_unknown_keys() {
    let p: TsneParams =
        serde_json::from_str(r#"{"perplexity": 10.0, "method": "barnes_hut"}"#).expect("valid");
    assert_eq!(p.method, TsneMethod::BarnesHut);
    assert_eq!(p.n_iter, 750);
    assert!(serde_json::from_str::<TsneParams>(r#"{"perplexity_": 10.0}"#).is_err());
}
