"""scvi-tools peer of `cargo xtask bench scale`: read the `.h5ad`, then one epoch of SCVI.

1. Reading: `anndata.read_h5ad(FILE)` into memory, timed (`read_seconds`; scae's side of this
   comparison is `scae info`'s `read_seconds`).
2. Training: `SCVI(n_hidden=128, n_latent=10, n_layers=1, gene_likelihood="nb",
   dispersion="gene")` (scVI's default architecture, the model of `configs/bench-scale.toml`),
   one epoch, batch 128, Adam 1e-3, `train_size` so that the held-out share is scae's
   `--test-fraction` (the held-out cells are never evaluated: scvi-tools validates only with
   early stopping, which is off), CPU, `--threads` threads. The epoch is timed by a Lightning
   callback from `on_train_epoch_start` to `on_train_epoch_end` (the training steps alone, as
   in `bench vae`); cells per second = training cells / that time.

scvi-tools trains from memory (it has no backed training), so the whole matrix is read first.
When `--mode auto` and the file has more than `--slice-cells` cells, a probe epoch on the first
`--probe-cells` cells estimates the full epoch; if that estimate passes `--max-epoch-seconds`,
the epoch runs on the first `--slice-cells` cells instead (`sliced: true`) and the cells per
second are those of the slice (time scaled per cell). The full matrix stays in memory until the
slice is copied out, so the peak memory reported (`peak_rss_mib`, this process's maximum
resident set from `getrusage`) covers holding the whole file as well as the training.

Prints one JSON line and writes the same to `--out`.
"""

import argparse
import gc
import json
import os
import resource
import sys
import time


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the .h5ad file (raw counts in X)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--test-fraction", type=float, default=0.01,
                   help="held-out share, as scae's test_fraction (training cells: "
                        "n - round(n * fraction))")
    p.add_argument("--mode", choices=["auto", "full", "slice"], default="auto",
                   help="auto: the full file unless the probe's estimate passes "
                        "--max-epoch-seconds; full; slice: the first --slice-cells cells")
    p.add_argument("--slice-cells", type=int, default=130_000)
    p.add_argument("--probe-cells", type=int, default=20_000)
    p.add_argument("--max-epoch-seconds", type=float, default=900.0)
    p.add_argument("--out", help="also write the JSON line here")
    return p.parse_args()


def peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def log(msg: str) -> None:
    print(f"scale_scvi: {msg}", file=sys.stderr, flush=True)


def main() -> None:
    args = parse_args()
    if not 0.0 < args.test_fraction < 1.0:
        raise SystemExit(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))

    import warnings

    import anndata
    import lightning.pytorch as pl
    import scipy.sparse as sp
    import scvi
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    scvi.settings.num_threads = args.threads
    scvi.settings.dl_num_workers = 0
    scvi.settings.seed = args.seed
    scvi.settings.verbosity = 30  # warnings only

    t0 = time.perf_counter()
    adata = anndata.read_h5ad(args.data)
    read_seconds = time.perf_counter() - t0
    peak_after_read = peak_rss_mib()
    if not sp.issparse(adata.X) or adata.X.format != "csr":
        raise SystemExit(f"{args.data}: X is not a CSR matrix")
    n_cells, n_genes = adata.shape
    nnz = int(adata.X.nnz)
    log(f"read {n_cells} x {n_genes} ({nnz} nonzeros) in {read_seconds:.1f} s, "
        f"peak {peak_after_read:.0f} MiB")

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_train_epoch_start(self, trainer, module) -> None:
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    def one_epoch(ad) -> dict:
        """One epoch of SCVI on `ad`: its training cells and the epoch's seconds."""
        n = ad.n_obs
        n_train = n - round(n * args.test_fraction)
        t = time.perf_counter()
        scvi.model.SCVI.setup_anndata(ad)
        model = scvi.model.SCVI(
            ad, n_hidden=128, n_latent=10, n_layers=1, gene_likelihood="nb", dispersion="gene"
        )
        setup_seconds = time.perf_counter() - t
        timer = EpochTimer()
        model.train(
            max_epochs=1, batch_size=args.batch_size, train_size=n_train / n,
            early_stopping=False, accelerator="cpu", devices=1, plan_kwargs={"lr": args.lr},
            callbacks=[timer], enable_progress_bar=False,
        )
        if len(timer.seconds) != 1:
            raise SystemExit(f"expected one timed epoch, got {timer.seconds}")
        # The cells scvi-tools actually trained on (its splitter rounds up).
        trained = len(model.train_indices)
        return {
            "cells": n, "train_cells": trained, "epoch_seconds": timer.seconds[0],
            "setup_seconds": setup_seconds, "cells_per_second": trained / timer.seconds[0],
        }

    probe = None
    sliced = args.mode == "slice" and n_cells > args.slice_cells
    estimate = None
    if args.mode == "auto" and n_cells > max(args.slice_cells, args.probe_cells):
        k = args.probe_cells
        log(f"probe: one epoch on the first {k} cells")
        probe = one_epoch(adata[:k].copy())
        n_train_full = n_cells - round(n_cells * args.test_fraction)
        estimate = n_train_full / probe["cells_per_second"]
        sliced = estimate > args.max_epoch_seconds
        log(f"probe: {probe['cells_per_second']:.0f} cells/s, so the full epoch would take "
            f"{estimate:.0f} s (limit {args.max_epoch_seconds:.0f} s): "
            + (f"training on the first {args.slice_cells} cells" if sliced else "full file"))
        gc.collect()
    if sliced:
        adata = adata[: args.slice_cells].copy()
        gc.collect()
    log(f"one epoch on {adata.n_obs} cells, {args.threads} threads")
    run = one_epoch(adata)
    log(f"{run['cells_per_second']:.0f} cells/s ({run['epoch_seconds']:.1f} s for "
        f"{run['train_cells']} cells), peak {peak_rss_mib():.0f} MiB")

    import importlib.metadata as md

    result = {
        "tool": "scvi-tools",
        "version": scvi.__version__,
        "anndata": anndata.__version__,
        "torch": torch.__version__,
        "lightning": md.version("lightning"),
        "data": os.path.abspath(args.data),
        "cells": n_cells,
        "genes": n_genes,
        "nnz": nnz,
        "read_seconds": read_seconds,
        "peak_rss_after_read_mib": peak_after_read,
        "sliced": sliced,
        "trained_cells": adata.n_obs,
        "train_cells": run["train_cells"],
        "epoch_seconds": run["epoch_seconds"],
        "setup_seconds": run["setup_seconds"],
        "cells_per_second": run["cells_per_second"],
        "seconds_per_cell": 1.0 / run["cells_per_second"],
        "full_epoch_seconds_estimate": (n_cells - round(n_cells * args.test_fraction))
        / run["cells_per_second"],
        "probe": probe,
        "probe_full_epoch_estimate_seconds": estimate,
        "max_epoch_seconds": args.max_epoch_seconds,
        "peak_rss_mib": peak_rss_mib(),
        "threads": args.threads,
        "seed": args.seed,
        "settings": {
            "model": "SCVI", "gene_likelihood": "nb", "dispersion": "gene",
            "n_hidden": 128, "n_latent": 10, "n_layers": 1, "batch_size": args.batch_size,
            "lr": args.lr, "test_fraction": args.test_fraction, "early_stopping": False,
            "accelerator": "cpu", "max_epochs": 1, "mode": args.mode,
            "slice_cells": args.slice_cells, "data_matrix": type(adata.X).__name__,
            "data_dtype": str(adata.X.dtype),
        },
    }
    line = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
