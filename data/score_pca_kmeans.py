#!/usr/bin/env python3
"""Score a data directory: how separable its cell groups are, and how much low-rank structure it has.

Reads <dir>/counts.npy (float32, cells x genes, log-normalised), <dir>/labels.txt (one integer
group per line) and, if present, <dir>/counts_raw.npy (integer raw counts). Prints

  * the shape, the sparsity and the total counts per cell of the raw counts;
  * the agreement (ARI, NMI) between the labels and
      - PCA(n, random_state=0) + KMeans(k, n_init=10, random_state=0) for n = 50 (the assignment's
        baseline), 10 and 3, k = number of groups in labels.txt, on the log-normalised matrix, and
      - KMeans on the log-normalised matrix itself (no PCA);
  * the PCA reconstruction error, a proxy for the error of a linear autoencoder with latent size n:
        mse_pca(n) = mean over all cells c and genes g of (x_cg - x̂_cg)², where x̂ is the
        projection of the column-centred matrix on its first n principal axes (plus the means),
    for n = 3, 10, 50, and the relative gain (mse_pca(10) - mse_pca(50)) / mse_pca(10):
      - "train": PCA fitted on all cells and evaluated on them;
      - "held-out": means and axes fitted on a random 80 % of the cells
        (numpy default_rng(0).permutation) and evaluated on the other 20 %, so a gain that only
        comes from fitting noise does not count;
    and the fraction of the total variance the same n axes leave unexplained on each split.
    The gain is not zero without any gene-gene covariation: genes differ in variance, and the
    40 extra axes can simply pick up the 40 noisiest single genes (and an isotropic noise matrix
    still gives about 40 / (p - 10), 4 % for p = 1000). So the same numbers are also printed for
    the matrix with every gene (column) permuted independently across cells
    (default_rng(1)), which keeps each gene's distribution and destroys all covariation; the
    part of the gain that comes from gene-gene covariation is the excess over that baseline.

Usage: python data/score_pca_kmeans.py data        (needs numpy and scikit-learn)
"""

import sys
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

PCA_SIZES = (3, 10, 50)


def pca_mse(train: np.ndarray, test: np.ndarray, sizes=PCA_SIZES) -> dict:
    """mse_pca(n) on `test` for the means and principal axes of `train` (float64), for each n."""
    mean = train.mean(axis=0)
    # Right singular vectors of the centred training matrix are the principal axes, in order.
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    xc = test - mean
    out = {}
    for n in sizes:
        v = vt[:n].T
        resid = xc - (xc @ v) @ v.T
        out[n] = float(np.mean(resid**2))
    out["total"] = float(np.mean(xc**2))
    return out


def print_pca_mse(name: str, mse: dict) -> None:
    parts = ", ".join(f"mse_pca({n}) {mse[n]:.5f}" for n in PCA_SIZES)
    gain = (mse[10] - mse[50]) / mse[10]
    print(f"PCA reconstruction, {name}: {parts}; gain 10->50 {gain:.4f} ({100 * gain:.2f} %)")
    left = ", ".join(f"{n}: {mse[n] / mse['total']:.4f}" for n in PCA_SIZES)
    print(f"  unexplained variance fraction ({name}, total MSE {mse['total']:.5f}): {left}")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: score_pca_kmeans.py <data dir>")
    d = Path(sys.argv[1])
    x = np.load(d / "counts.npy")
    labels = np.loadtxt(d / "labels.txt", dtype=int)
    if labels.shape[0] != x.shape[0]:
        sys.exit(f"labels.txt has {labels.shape[0]} lines for {x.shape[0]} cells")
    k = len(np.unique(labels))

    print(f"counts.npy: shape {x.shape}, dtype {x.dtype}")
    print(f"group sizes: {np.bincount(labels).tolist()}")
    raw_path = d / "counts_raw.npy"
    if raw_path.exists():
        raw = np.load(raw_path)
        totals = raw.sum(axis=1)
        print(f"counts_raw.npy: shape {raw.shape}, dtype {raw.dtype}")
        print(f"sparsity (zeros in raw counts): {np.mean(raw == 0):.4f}")
        print(
            f"total counts per cell: mean {totals.mean():.1f}, median {np.median(totals):.1f}, "
            f"min {totals.min()}, max {totals.max()}"
        )
        print(
            f"genes detected per cell: median {np.median((raw > 0).sum(axis=1)):.0f}; "
            f"genes with no count: {int(np.sum(raw.sum(axis=0) == 0))}"
        )
    else:
        print(f"sparsity (zeros in counts.npy): {np.mean(x == 0):.4f}")

    for n_pc in (50, 10, 3):
        z = PCA(n_components=n_pc, random_state=0).fit_transform(x)
        pred = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(z)
        print(
            f"PCA({n_pc}) + KMeans({k}): ARI {adjusted_rand_score(labels, pred):.4f}, "
            f"NMI {normalized_mutual_info_score(labels, pred):.4f}"
        )
    pred = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(x)
    print(
        f"KMeans({k}) on log-normalised matrix: ARI {adjusted_rand_score(labels, pred):.4f}, "
        f"NMI {normalized_mutual_info_score(labels, pred):.4f}"
    )

    x64 = x.astype(np.float64)
    print_pca_mse("train (all cells)", pca_mse(x64, x64))
    perm = np.random.default_rng(0).permutation(x64.shape[0])
    n_train = int(round(0.8 * x64.shape[0]))
    train, test = x64[perm[:n_train]], x64[perm[n_train:]]
    print_pca_mse(f"held-out (fit {n_train}, test {test.shape[0]})", pca_mse(train, test))

    # Baseline without covariation: each column permuted on its own (same split afterwards).
    rng = np.random.default_rng(1)
    xp = np.take_along_axis(x64, np.argsort(rng.random(x64.shape), axis=0), axis=0)
    print_pca_mse("genes permuted, train", pca_mse(xp, xp))
    print_pca_mse(
        "genes permuted, held-out", pca_mse(xp[perm[:n_train]], xp[perm[n_train:]])
    )


if __name__ == "__main__":
    main()
