"""Peers of `cargo xtask bench integrate`: scvi-tools' SCVI with `batch_key`, and Harmony.

On the cells and genes `scae integrate` used (its `genes.txt`; the cells of the `.h5ad` that hold
a count, in file order, as scae keeps them):

* scVI: `scvi.model.SCVI.setup_anndata(adata, batch_key=...)` on the raw counts of those genes,
  `SCVI(adata, gene_likelihood="nb")` with scvi-tools' defaults (1 hidden layer of 128, latent 10,
  dropout 0.1, batch norm; dispersion per gene; the batch one-hot in the decoder), trained with its
  defaults (`max_epochs` = min(round(20000 / cells * 400), 400), batch 128, Adam 1e-3, KL warm-up
  400 epochs, a 90/10 train/validation split) unless `--epochs` says otherwise, on the CPU with
  `--threads` threads; its latent means (`get_latent_representation()`) are written as
  `scvi.npy`.
* Harmony (`harmonypy.run_harmony`, its defaults) on the principal components scae scored as the
  unintegrated baseline (`pca.npy`), by the same batch column: `harmony.npy`.

Writes `peers.json` with each side's seconds (scVI's training and its seconds per epoch) and the
versions, and prints it.
"""

import argparse
import json
import os
import time


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="the .h5ad scae integrate read")
    p.add_argument("--scae", required=True, help="scae integrate's results folder (genes.txt, pca.npy)")
    p.add_argument("--batch-key", required=True)
    p.add_argument("--out", required=True, help="folder for scvi.npy, harmony.npy and peers.json")
    p.add_argument("--epochs", type=int, default=None, help="scVI's epochs (default: its own rule)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    import anndata as ad
    import harmonypy
    import numpy as np
    import scipy.sparse as sp
    import scvi
    import torch
    from importlib.metadata import version

    torch.set_num_threads(args.threads)
    scvi.settings.seed = args.seed
    os.makedirs(args.out, exist_ok=True)
    adata = ad.read_h5ad(args.data)
    x = adata.X if sp.issparse(adata.X) else sp.csr_matrix(adata.X)
    keep = np.flatnonzero(np.asarray(x.sum(axis=1)).ravel() > 0)
    with open(os.path.join(args.scae, "genes.txt")) as f:
        genes = [line.rstrip("\n") for line in f]
    adata = adata[keep, genes].copy()
    adata.X = sp.csr_matrix(adata.X)
    out = {"cells": int(adata.n_obs), "genes": int(adata.n_vars), "versions": {
        p: version(p) for p in ("scvi-tools", "harmonypy", "torch", "anndata")}}

    scvi.model.SCVI.setup_anndata(adata, batch_key=args.batch_key)
    model = scvi.model.SCVI(adata, gene_likelihood="nb")
    epochs = args.epochs
    if epochs is None:
        epochs = min(round((20000 / adata.n_obs) * 400), 400)
    started = time.perf_counter()
    model.train(max_epochs=epochs, accelerator="cpu", devices=1, batch_size=128,
                enable_progress_bar=False)
    seconds = time.perf_counter() - started
    np.save(os.path.join(args.out, "scvi.npy"), model.get_latent_representation().astype(np.float32))
    out["scvi"] = {"epochs": epochs, "seconds": seconds, "seconds_per_epoch": seconds / epochs}

    pcs = np.load(os.path.join(args.scae, "pca.npy")).astype(np.float64)
    if pcs.shape[0] != adata.n_obs:
        raise SystemExit(f"pca.npy has {pcs.shape[0]} rows for {adata.n_obs} cells")
    started = time.perf_counter()
    meta = adata.obs[[args.batch_key]].copy()
    ho = harmonypy.run_harmony(pcs, meta, [args.batch_key], random_state=args.seed)
    corrected = np.asarray(ho.Z_corr)
    if corrected.shape[0] != adata.n_obs:
        corrected = corrected.T
    np.save(os.path.join(args.out, "harmony.npy"), corrected.astype(np.float32))
    out["harmony"] = {"seconds": time.perf_counter() - started}
    text = json.dumps(out)
    with open(os.path.join(args.out, "peers.json"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
