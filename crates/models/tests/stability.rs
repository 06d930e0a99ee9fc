//! The scVAE study's failure, reproduced at its scale: a Poisson VAE on counts with its sparsity
//! (92 % zeros), 20,000 genes and rates above 400. The study computed the likelihood in
//! probability space, `prod_k exp(-lambda_k) lambda_k^x / x!`, whose product over ~18,000 zero
//! entries (and ~1,600 nonzero ones) underflows to 0, its log to -inf; its training ran to -inf
//! after 38 epochs. Ours works in log space: every loss of
//! every epoch must be finite, while the probability-space likelihood of the same decoded rates
//! is shown to be -inf.

use scae_io::{CountMatrix, CountRows};
use scae_models::{Likelihood, Model, TensorBatch, TrainConfig, Vae, VaeConfig, fit};
use tch::{Device, Kind, Tensor, nn::VarStore};

#[test]
fn poisson_vae_stays_finite_at_the_study_sparsity_and_scale() {
    let sim = scae_sim::sparse_counts(&scae_sim::SparseParams {
        cells: 320,
        genes: 20_000,
        zero_fraction: 0.92,
        high_genes: 20,
        high_rate: (400.0, 1000.0),
        seed: 11,
    })
    .expect("valid simulation");
    assert!(sim.zero_fraction >= 0.92 - 0.005, "{}", sim.zero_fraction);
    assert!(sim.max_rate > 400.0);
    let counts = CountMatrix::new(sim.counts, std::path::Path::new("simulated")).expect("counts");
    let (train_rows, test_rows): (Vec<usize>, Vec<usize>) =
        ((0..256).collect(), (256..320).collect());
    let train = CountRows::subset(&counts, &train_rows).expect("rows");
    let test_source = CountRows::subset(&counts, &test_rows).expect("rows");
    let dense = counts.dense_rows(&test_rows);
    let test = Tensor::from_slice(dense.as_slice().expect("standard layout")).view([64, 20_000]);

    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let cfg = VaeConfig {
        hidden: vec![100],
        ..VaeConfig::new(10, Likelihood::Poisson)
    };
    let mut vae = Vae::new(&vs.root(), 20_000, &cfg).expect("valid model");
    let train_cfg = TrainConfig {
        epochs: 20,
        batch_size: 32,
        learning_rate: 3e-3,
        weight_decay: 0.0,
        eval_batch_size: 64,
        clip_grad_norm: None,
        adam_eps: 1e-8,
    };
    // `fit` stops with an error at the first non-finite loss, train or test.
    let history = fit(
        &mut vae,
        &vs,
        &train,
        Some(&test_source),
        &train_cfg,
        0,
        |_| {},
    )
    .expect("every loss of every epoch is finite");
    for e in &history.epochs {
        assert!(e.train_loss.is_finite() && e.test_loss.is_some_and(f64::is_finite));
        assert!(e.test_terms.0.iter().all(|(_, t)| t.is_finite()));
    }
    let first = history.epochs[0].test_terms.get("elbo").expect("elbo");
    let last = history.epochs[19].test_terms.get("elbo").expect("elbo");
    assert!(last > first, "the test ELBO improves: {first} -> {last}");

    // The probability-space likelihood of the trained model's rates is -inf for every cell,
    // in float32 and float64; the log-space one is finite.
    let _guard = tch::no_grad_guard();
    let rates = vae
        .decoded_means(&TensorBatch::from_tensor(test.shallow_clone()), 0, None)
        .expect("no covariates")
        .to_kind(Kind::Double);
    for kind in [Kind::Float, Kind::Double] {
        let r = rates.to_kind(kind);
        let xk = test.to_kind(kind);
        let pmf = (-&r).exp() * r.pow(&xk) / (&xk + 1.0).lgamma().exp();
        let log_lik = pmf.prod_dim_int(-1, false, kind).log();
        let finite = log_lik.isfinite().sum(Kind::Int64).int64_value(&[]);
        assert_eq!(
            finite, 0,
            "{kind:?}: probability space gives -inf or NaN for every cell"
        );
    }
    let ours = vae
        .losses(&TensorBatch::from_tensor(test.shallow_clone()), false)
        .expect("a step");
    assert!(ours.total.double_value(&[]).is_finite());
}
