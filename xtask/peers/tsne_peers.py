"""Python peers of `cargo xtask bench tsne` and `cargo xtask bench pca`.

Subcommands, each printing one JSON line on stdout:

  tsne   --tool sklearn|opentsne --input X.npy --out EMB.npy --threads T
         [--perplexity 30 --n-iter 750 --early-iter 250 --seed 0]
         t-SNE as a user of that library would call it, with the settings scae
         uses: perplexity, early exaggeration 12 for the first `early-iter`
         iterations, `n-iter` in all, PCA initialisation, learning rate "auto".
         scikit-learn runs method="barnes_hut", angle=0.5; openTSNE runs its
         default (FFT-interpolated repulsion, approximate neighbours). Reports
         the seconds of the fit alone (data already in memory).
  score  --labels labels.txt EMB.npy...
         silhouette of every embedding by label (sklearn.metrics.silhouette_score,
         Euclidean, all cells), the one scorer every tool's output goes through.
  pca    --input X.npy --components K --threads T [--scae-scores S.npy]
         scikit-learn's PCA with svd_solver "auto" (what it picks is reported)
         and "full": seconds of fit_transform (fastest of --runs), and the largest absolute
         difference from scae's scores up to the sign of each component.

Thread counts are pinned with threadpoolctl (BLAS, OpenMP) and each library's
own n_jobs, so both sides use the same number of cores.
"""

import argparse
import json
import time

import numpy as np


def limit_threads(threads: int):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def run_tsne(args) -> dict:
    x = np.ascontiguousarray(np.load(args.input), dtype=np.float32)
    with limit_threads(args.threads):
        if args.tool == "sklearn":
            import sklearn
            from sklearn.manifold import TSNE

            model = TSNE(
                n_components=2,
                perplexity=args.perplexity,
                early_exaggeration=12.0,
                learning_rate="auto",
                max_iter=args.n_iter,
                init="pca",
                method="barnes_hut",
                angle=0.5,
                n_jobs=args.threads,
                random_state=args.seed,
            )
            start = time.perf_counter()
            emb = model.fit_transform(x)
            seconds = time.perf_counter() - start
            extra = {
                "version": sklearn.__version__,
                "kl_divergence": float(model.kl_divergence_),
                "n_iter": int(model.n_iter_) + 1,
            }
        else:
            import openTSNE
            from openTSNE import TSNE

            model = TSNE(
                n_components=2,
                perplexity=args.perplexity,
                early_exaggeration=12.0,
                early_exaggeration_iter=args.early_iter,
                n_iter=args.n_iter - args.early_iter,
                initialization="pca",
                negative_gradient_method="fft",
                n_jobs=args.threads,
                random_state=args.seed,
            )
            start = time.perf_counter()
            emb = model.fit(x)
            seconds = time.perf_counter() - start
            extra = {
                "version": openTSNE.__version__,
                "kl_divergence": float(emb.kl_divergence),
                "neighbors": str(model.neighbors),
            }
    np.save(args.out, np.asarray(emb, dtype=np.float32))
    return {"tool": args.tool, "seconds": seconds, **extra}


def run_score(args) -> dict:
    from sklearn.metrics import silhouette_score

    with open(args.labels) as f:
        labels = np.array([line.strip() for line in f if line.strip()])
    scores = {}
    with limit_threads(args.threads):
        for path in args.embeddings:
            emb = np.load(path).astype(np.float64)
            scores[path] = float(silhouette_score(emb, labels))
    return {"silhouette": scores}


def run_pca(args) -> dict:
    import sklearn
    from sklearn.decomposition import PCA

    x = np.load(args.input).astype(np.float32)
    ref = np.load(args.scae_scores) if args.scae_scores else None
    out = {"version": sklearn.__version__}
    with limit_threads(args.threads):
        for solver in ["auto", "full"]:
            runs = []
            for _ in range(args.runs):
                model = PCA(n_components=args.components, svd_solver=solver, random_state=0)
                start = time.perf_counter()
                scores = model.fit_transform(x)
                runs.append(time.perf_counter() - start)
            entry = {
                "seconds": min(runs),
                "runs": runs,
                "solver_used": getattr(model, "_fit_svd_solver", solver),
                "explained_variance_ratio_sum": float(model.explained_variance_ratio_.sum()),
            }
            if ref is not None:
                # Compare up to the sign of each component.
                signs = np.sign((scores * ref).sum(axis=0))
                signs[signs == 0] = 1
                diff = np.abs(scores * signs - ref)
                entry["max_abs_diff"] = float(diff.max())
                entry["max_abs_diff_first10"] = float(diff[:, :10].max())
                entry["max_abs_score"] = float(np.abs(ref).max())
            out[solver] = entry
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tsne")
    t.add_argument("--tool", choices=["sklearn", "opentsne"], required=True)
    t.add_argument("--input", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--threads", type=int, required=True)
    t.add_argument("--perplexity", type=float, default=30.0)
    t.add_argument("--n-iter", type=int, default=750)
    t.add_argument("--early-iter", type=int, default=250)
    t.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score")
    s.add_argument("--labels", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("embeddings", nargs="+")
    c = sub.add_parser("pca")
    c.add_argument("--input", required=True)
    c.add_argument("--components", type=int, default=50)
    c.add_argument("--threads", type=int, required=True)
    c.add_argument("--runs", type=int, default=3)
    c.add_argument("--scae-scores")
    args = p.parse_args()
    result = {"tsne": run_tsne, "score": run_score, "pca": run_pca}[args.cmd](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
