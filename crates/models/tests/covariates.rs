//! A batch covariate does what scVI's does: on counts of two cell types measured in two batches
//! that shift a third of the genes, a VAE (and a GMVAE) told each cell's batch keeps the types
//! apart in its latent space while the batches of a type come together, where the same model
//! without the batch separates them; decoding every cell as one batch gives that batch's
//! expression; and a dispersion per gene and batch trains.

use ndarray::{Array2, ArrayView2};
use scae_io::{BatchSource, CountMatrix, CountRows};
use scae_models::{
    ComputeDevice, Covariate, Dispersion, Gmvae, GmvaeConfig, Likelihood, MixturePosterior, Net,
    TrainConfig, Vae, VaeConfig,
};

const CELLS: usize = 400;
const GENES: usize = 30;

/// Cell `i` has type `i % 2` (which half of the genes is high) and batch `(i / 2) % 2`; batch 1
/// multiplies every third gene by 6. Poisson draws from a seeded generator.
fn counts() -> (CountMatrix, Vec<i64>, Vec<usize>) {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Poisson};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let mut x = Array2::<f32>::zeros((CELLS, GENES));
    let (mut batches, mut types) = (Vec::new(), Vec::new());
    for i in 0..CELLS {
        let (kind, batch) = (i % 2, (i / 2) % 2);
        for g in 0..GENES {
            let high = (g < GENES / 2) == (kind == 0);
            let mut rate = if high { 8.0 } else { 1.0 };
            if batch == 1 && g % 3 == 0 {
                rate *= 6.0;
            }
            x[[i, g]] = Poisson::new(rate).expect("rate").sample(&mut rng) as f32;
        }
        batches.push(batch as i64);
        types.push(kind);
    }
    let counts =
        CountMatrix::from_dense(x.view(), std::path::Path::new("batches")).expect("counts");
    (counts, batches, types)
}

fn train_cfg() -> TrainConfig {
    TrainConfig {
        epochs: 60,
        batch_size: 64,
        learning_rate: 1e-2,
        weight_decay: 0.0,
        eval_batch_size: 128,
        clip_grad_norm: Some(50.0),
        adam_eps: 1e-8,
    }
}

fn batch_covariate() -> Covariate {
    Covariate {
        key: "batch".into(),
        categories: vec!["one".into(), "two".into()],
    }
}

/// Per cell type, the distance between the latent centroids of its two batches over the
/// spread of its cells (the root mean squared distance to their centroid), averaged over the
/// types; and the same ratio between the two types' centroids.
fn separations(z: ArrayView2<'_, f32>, batches: &[i64], types: &[usize]) -> (f64, f64) {
    let centroid = |keep: &dyn Fn(usize) -> bool| -> (Vec<f64>, Vec<usize>) {
        let cells: Vec<usize> = (0..z.nrows()).filter(|&i| keep(i)).collect();
        let mut c = vec![0.0; z.ncols()];
        for &i in &cells {
            for (d, v) in c.iter_mut().zip(z.row(i)) {
                *d += f64::from(*v) / cells.len() as f64;
            }
        }
        (c, cells)
    };
    let dist = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let spread = |c: &[f64], cells: &[usize]| {
        (cells
            .iter()
            .map(|&i| {
                let row: Vec<f64> = z.row(i).iter().map(|&v| f64::from(v)).collect();
                dist(&row, c).powi(2)
            })
            .sum::<f64>()
            / cells.len() as f64)
            .sqrt()
    };
    let mut batch_gap = 0.0;
    let mut type_centres = Vec::new();
    for t in 0..2 {
        let (all, cells) = centroid(&|i| types[i] == t);
        let (b0, _) = centroid(&|i| types[i] == t && batches[i] == 0);
        let (b1, _) = centroid(&|i| types[i] == t && batches[i] == 1);
        let s = spread(&all, &cells);
        batch_gap += dist(&b0, &b1) / s / 2.0;
        type_centres.push((all, s));
    }
    let type_gap = dist(&type_centres[0].0, &type_centres[1].0)
        / (type_centres[0].1 + type_centres[1].1)
        * 2.0;
    (batch_gap, type_gap)
}

#[test]
fn a_batch_aware_vae_mixes_the_batches_of_a_type_and_keeps_the_types_apart() {
    tch::set_num_threads(1);
    let (counts, batches, types) = counts();
    let source = CountRows::all(&counts)
        .with_field("batch", &batches)
        .expect("field");
    let plain = VaeConfig {
        hidden: vec![32],
        ..VaeConfig::new(2, Likelihood::Nb)
    };
    let aware = VaeConfig {
        covariates: vec![batch_covariate()],
        ..plain.clone()
    };
    let mut gaps = Vec::new();
    for cfg in [&plain, &aware] {
        let mut net = Net::<Vae>::new(GENES, cfg, ComputeDevice::cpu(), 0).expect("model");
        net.fit(&train_cfg(), 0, &source, None, |_| {})
            .expect("trains");
        let z = net.latent_means(&source, 128).expect("means");
        gaps.push(separations(z.view(), &batches, &types));
    }
    let ((plain_batch, plain_type), (aware_batch, aware_type)) = (gaps[0], gaps[1]);
    eprintln!(
        "batch gap {plain_batch:.3} -> {aware_batch:.3}, type gap {plain_type:.3} -> {aware_type:.3}"
    );
    assert!(
        plain_batch > 1.0,
        "without the batch, the batches lie apart: {plain_batch}"
    );
    assert!(
        aware_batch < 0.5 * plain_batch,
        "with the batch they come together: {plain_batch} -> {aware_batch}"
    );
    assert!(aware_type > 2.0, "and the types stay apart: {aware_type}");
}

#[test]
fn decoding_as_one_batch_gives_that_batchs_expression() {
    tch::set_num_threads(1);
    let (counts, batches, _) = counts();
    let source = CountRows::all(&counts)
        .with_field("batch", &batches)
        .expect("field");
    for dispersion in [Dispersion::Gene, Dispersion::GeneBatch] {
        let cfg = VaeConfig {
            hidden: vec![32],
            dispersion,
            covariates: vec![batch_covariate()],
            ..VaeConfig::new(2, Likelihood::Nb)
        };
        let mut net = Net::<Vae>::new(GENES, &cfg, ComputeDevice::cpu(), 1).expect("model");
        net.fit(&train_cfg(), 1, &source, None, |_| {})
            .expect("trains");
        // The share of every third gene (the ones batch two scales by 6) in the counts: every
        // cell decoded as batch one has the share batch one's cells have in the data, and as
        // batch two batch two's (0.34 and 0.75 in these draws), whatever the cell's own batch.
        let share = |m: &Array2<f32>, rows: &[usize]| {
            let (mut shifted, mut all) = (0.0, 0.0);
            for &i in rows {
                for (g, v) in m.row(i).iter().enumerate() {
                    all += f64::from(*v);
                    if g % 3 == 0 {
                        shifted += f64::from(*v);
                    }
                }
            }
            shifted / all
        };
        let x = counts.to_dense();
        let cells: Vec<usize> = (0..CELLS).collect();
        let of_batch =
            |b: i64| -> Vec<usize> { cells.iter().copied().filter(|&i| batches[i] == b).collect() };
        let observed = [share(&x, &of_batch(0)), share(&x, &of_batch(1))];
        for (decode_as, want) in observed.iter().enumerate() {
            let m = net
                .decoded_means(&source, 128, 0, 0, Some(decode_as))
                .expect("decodes");
            let got = share(&m, &cells);
            eprintln!(
                "{dispersion:?}: shifted genes' share {got:.3} decoded as batch {decode_as}, {want:.3} in its cells"
            );
            assert!(
                (got - want).abs() < 0.03,
                "{dispersion:?} as batch {decode_as}: {got} against {want}"
            );
        }
        assert!(net.decoded_means(&source, 128, 0, 0, Some(2)).is_err());
    }
    // A model with covariates refuses a source without them.
    let cfg = VaeConfig {
        covariates: vec![batch_covariate()],
        ..VaeConfig::new(2, Likelihood::Nb)
    };
    let net = Net::<Vae>::new(GENES, &cfg, ComputeDevice::cpu(), 1).expect("model");
    let err = net
        .latent_means(&CountRows::all(&counts), 128)
        .expect_err("no batch field");
    assert!(err.to_string().contains("covariate batch"), "{err}");
}

#[test]
fn a_batch_aware_gmvae_clusters_by_type_across_batches() {
    tch::set_num_threads(1);
    let (counts, batches, types) = counts();
    let source = CountRows::all(&counts)
        .with_field("batch", &batches)
        .expect("field");
    let mut cfg = GmvaeConfig::new(2, 2, Likelihood::Nb);
    cfg.posterior = MixturePosterior::Shared;
    cfg.learn_prior = true;
    cfg.vae.hidden = vec![32];
    cfg.vae.covariates = vec![batch_covariate()];
    cfg.vae.encode_covariates = true;
    let mut net = Net::<Gmvae>::new(GENES, &cfg, ComputeDevice::cpu(), 2).expect("model");
    net.fit(&train_cfg(), 2, &source, None, |_| {})
        .expect("trains");
    let q_y = net.cluster_probabilities(&source, 128).expect("q(y|x)");
    let assigned = scae_models::row_argmax(q_y.view());
    // Agreement with the types up to the components' order.
    let same = (0..source.cells())
        .filter(|&i| assigned[i] == types[i])
        .count();
    let agree = same.max(source.cells() - same) as f64 / source.cells() as f64;
    // And not with the batches.
    let same_b = (0..source.cells())
        .filter(|&i| assigned[i] as i64 == batches[i])
        .count();
    let agree_b = same_b.max(source.cells() - same_b) as f64 / source.cells() as f64;
    eprintln!(
        "GMVAE components agree with the types on {agree:.3}, with the batches on {agree_b:.3}"
    );
    assert!(agree > 0.95, "{agree}");
    assert!(agree_b < 0.65, "{agree_b}");
}
