//! Times the heavy scae-eval calls on synthetic data of study size:
//! `cargo run -p scae-eval --release --example speed`.
//!
//! Data are seeded blobs (k-means, silhouette) and a rank-30 signal plus noise
//! (PCA), so the timings do not depend on a data set being present.

use std::time::Instant;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scae_eval::{KMeansParams, pca, silhouette_score};

/// `n x d` cells around `k` random centres in `[-spread, spread]^d`, uniform
/// noise in `[-1, 1]`; a small spread makes the blobs overlap and k-means work.
fn blobs(
    n: usize,
    d: usize,
    k: usize,
    spread: f32,
    rng: &mut ChaCha8Rng,
) -> (Array2<f32>, Vec<usize>) {
    let centres = Array2::from_shape_fn((k, d), |_| rng.random_range(-spread..spread));
    let labels: Vec<usize> = (0..n).map(|i| i % k).collect();
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        centres[[labels[i], j]] + rng.random_range(-1.0..1.0_f32)
    });
    (x, labels)
}

/// `n x p` matrix `A B + noise` with `A` (`n x 30`) and `B` (`30 x p`) uniform.
fn low_rank(n: usize, p: usize, rng: &mut ChaCha8Rng) -> Array2<f32> {
    let a = Array2::from_shape_fn((n, 30), |_| rng.random::<f32>());
    let b = Array2::from_shape_fn((30, p), |_| rng.random::<f32>());
    a.dot(&b) + Array2::from_shape_fn((n, p), |_| rng.random::<f32>() * 0.5)
}

fn time<T>(what: &str, f: impl FnOnce() -> scae_eval::Result<T>) -> scae_eval::Result<T> {
    let start = Instant::now();
    let out = f()?;
    println!("{what:<40} {:>8.3} s", start.elapsed().as_secs_f64());
    Ok(out)
}

fn main() -> scae_eval::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    println!(
        "threads available: {:?}",
        std::thread::available_parallelism().map(|n| n.get())
    );

    let (x, _) = blobs(5000, 50, 10, 0.2, &mut rng);
    let fit = time("k-means 5000 x 50, k = 10, n_init = 10", || {
        KMeansParams::new(10).fit(x.view())
    })?;
    println!(
        "{:<40} inertia {:.1}, {} iterations",
        "", fit.inertia, fit.n_iter
    );

    let (x, labels) = blobs(5000, 10, 10, 2.0, &mut rng);
    let s = time("silhouette 5000 x 10, 10 clusters", || {
        silhouette_score(x.view(), &labels, 0)
    })?;
    println!("{:<40} score {s:.4}", "");

    for (n, p) in [(5000, 1000), (4186, 2000)] {
        let x = low_rank(n, p, &mut rng);
        let fit = time(&format!("PCA {n} x {p} -> 50"), || pca(x.view(), 50))?;
        println!(
            "{:<40} top-50 variance ratio {:.4}",
            "",
            fit.explained_variance_ratio.sum()
        );
    }
    Ok(())
}
