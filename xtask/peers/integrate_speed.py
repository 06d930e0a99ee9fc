"""Speed part of `cargo xtask bench integrate`: a simulated multi-batch dataset, and scvi-tools'
batch-aware SCVI timed on it.

`--simulate PATH`: writes an AnnData of `--cells` cells x `--genes` genes with `--batches`
batches and `--types` cell types (seeded): each type has its own log-normal gene profile, each
batch multiplies every gene by its own log-normal factor (sd 0.5), library sizes log-normal around
2,000; counts negative binomial (dispersion 5), CSR in `X`, `obs["batch"]` and `obs["cell_type"]`
categorical. Prints nothing else.

`--time PATH`: `SCVI.setup_anndata(adata, batch_key="batch")`, `SCVI(gene_likelihood="nb")` with
scVI's default shape, trained `--epochs` epochs on every cell (`train_size=1.0`, no early stopping,
batch 128, CPU, `--threads` threads); the training epochs are timed by a Lightning callback as in
`bench vae`. Prints one JSON line: the median seconds per epoch and each epoch's.
"""

import argparse
import json
import os
import time


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--simulate", help="write the simulated AnnData here")
    p.add_argument("--time", help="time scVI with batch_key on this AnnData")
    p.add_argument("--cells", type=int, default=50_000)
    p.add_argument("--genes", type=int, default=2_000)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--types", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def simulate(args) -> None:
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(args.seed)
    n, g = args.cells, args.genes
    profiles = rng.lognormal(0.0, 1.5, size=(args.types, g))
    profiles /= profiles.sum(axis=1, keepdims=True)
    batch_factor = rng.lognormal(0.0, 0.5, size=(args.batches, g))
    types = rng.integers(0, args.types, n)
    batches = rng.integers(0, args.batches, n)
    library = rng.lognormal(np.log(2000.0), 0.5, n)
    rows = []
    for start in range(0, n, 10_000):
        stop = min(start + 10_000, n)
        mean = profiles[types[start:stop]] * batch_factor[batches[start:stop]]
        mean *= (library[start:stop] / mean.sum(axis=1))[:, None]
        theta = 5.0
        counts = rng.negative_binomial(theta, theta / (theta + mean)).astype(np.float32)
        rows.append(sp.csr_matrix(counts))
    x = sp.vstack(rows).tocsr()
    obs = pd.DataFrame({
        "batch": pd.Categorical([f"b{b}" for b in batches]),
        "cell_type": pd.Categorical([f"t{t}" for t in types]),
    }, index=[f"c{i}" for i in range(n)])
    a = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
    tmp = args.simulate + ".tmp.h5ad"
    a.write_h5ad(tmp)
    os.replace(tmp, args.simulate)


def time_scvi(args) -> None:
    import warnings

    import anndata as ad
    import lightning.pytorch as pl
    import numpy as np
    import scvi
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    scvi.settings.num_threads = args.threads
    scvi.settings.dl_num_workers = 0
    scvi.settings.seed = args.seed
    scvi.settings.verbosity = 30
    adata = ad.read_h5ad(args.time)
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    model = scvi.model.SCVI(adata, n_hidden=128, n_latent=10, n_layers=1,
                            gene_likelihood="nb", dispersion="gene")

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_train_epoch_start(self, trainer, module) -> None:
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    timer = EpochTimer()
    model.train(max_epochs=args.epochs, batch_size=128, train_size=1.0, early_stopping=False,
                accelerator="cpu", devices=1, callbacks=[timer], enable_progress_bar=False)
    print(json.dumps({
        "cells": int(adata.n_obs), "genes": int(adata.n_vars),
        "seconds_per_epoch": float(np.median(timer.seconds)), "epoch_seconds": timer.seconds,
    }))


def main() -> None:
    args = parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    if args.simulate:
        simulate(args)
    if args.time:
        time_scvi(args)


if __name__ == "__main__":
    main()
