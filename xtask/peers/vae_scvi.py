"""scvi-tools peer of `cargo xtask bench vae`.

scVI (`scvi.model.SCVI`, negative-binomial likelihood, per-gene dispersion,
scVI's default architecture: one hidden layer of 128, latent 10) trained on
the raw counts of a 10x folder, every gene, no filtering, on the cells not
listed in `--test-cells`, then scored on the listed cells. Training uses
scvi-tools' own defaults except the ones named here: batch 128, Adam lr 1e-3,
`--epochs` epochs, no validation split (`train_size=1.0`, so scVI sees exactly
the train cells), no early stopping, CPU, `--threads` threads. The KL warm-up
is scvi's default (`n_epochs_kl_warmup=400`: the KL weight is epoch / 400
during training, epochs counted from 0) and is reported; `--kl-warmup-epochs`
overrides it (0: the full KL from the first step).

The test scores are computed here explicitly, higher is better, per cell and
averaged over the test cells, with the model in eval mode and the FULL KL
(weight 1):

* reconstruction = E_q(z|x)[log p(x | z, l)], l the observed library size,
  averaged over `--elbo-samples` draws of z;
* kl = KL(q(z|x) || N(0, I)), closed form;
* elbo = reconstruction - kl;
* log_px = log (1/K) sum_k p(x, z_k) / q(z_k | x), K = 100 (scvi's
  `get_marginal_ll`, per cell, then averaged here).

scvi's own `get_elbo` and `get_reconstruction_error` (one draw of z) are
recorded beside them as a check of the sign conventions. Prints one JSON line
and writes the same to `--out`.
"""

import argparse
import json
import os
import time


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="10x folder (matrix.mtx.gz, features, barcodes)")
    p.add_argument("--test-cells", required=True,
                   help="0-based test-cell indices, one a line, in barcode order")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--elbo-samples", type=int, default=10,
                   help="draws of z per test cell for the reconstruction term")
    p.add_argument("--marginal-samples", type=int, default=100,
                   help="importance samples per test cell for log p(x)")
    p.add_argument("--kl-warmup-epochs", type=int, default=None,
                   help="override scvi's KL warm-up (default: scvi's own, 400 epochs; 0: full KL "
                        "from the first step)")
    p.add_argument("--out", help="also write the JSON line here")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))

    import warnings

    import lightning.pytorch as pl
    import numpy as np
    import scanpy as sc
    import scvi
    import torch
    from torch.distributions import Normal, kl_divergence

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    scvi.settings.num_threads = args.threads
    scvi.settings.dl_num_workers = 0
    scvi.settings.seed = args.seed
    scvi.settings.verbosity = 30  # warnings only

    # Raw counts, cells x genes, every gene. scanpy reads the genes x cells file as a
    # cells x genes CSC matrix; scVI draws minibatches of rows, so hand it CSR.
    adata = sc.read_10x_mtx(args.data, var_names="gene_ids", cache=False)
    adata.X = adata.X.tocsr()
    n_cells, n_genes = adata.shape
    test = np.loadtxt(args.test_cells, dtype=np.int64, ndmin=1)
    if test.size == 0 or test.min() < 0 or test.max() >= n_cells:
        raise SystemExit(f"{args.test_cells}: indices must lie in 0..{n_cells - 1}")
    if np.unique(test).size != test.size:
        raise SystemExit(f"{args.test_cells}: repeated indices")
    is_test = np.zeros(n_cells, dtype=bool)
    is_test[test] = True
    train_ad = adata[~is_test].copy()
    test_ad = adata[test].copy()

    # Set-up: AnnData registration and the model (not part of the per-epoch time).
    t0 = time.perf_counter()
    scvi.model.SCVI.setup_anndata(train_ad)
    model = scvi.model.SCVI(
        train_ad, n_hidden=128, n_latent=10, n_layers=1,
        gene_likelihood="nb", dispersion="gene",
    )
    setup_seconds = time.perf_counter() - t0

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_train_epoch_start(self, trainer, module) -> None:
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    timer = EpochTimer()
    plan_kwargs = {"lr": args.lr}
    if args.kl_warmup_epochs is not None:
        plan_kwargs["n_epochs_kl_warmup"] = args.kl_warmup_epochs or None
    t0 = time.perf_counter()
    model.train(
        max_epochs=args.epochs, batch_size=args.batch_size, train_size=1.0,
        early_stopping=False, accelerator="cpu", devices=1, plan_kwargs=plan_kwargs,
        callbacks=[timer], enable_progress_bar=False,
    )
    train_seconds = time.perf_counter() - t0
    plan = model.trainer.lightning_module if hasattr(model, "trainer") else None
    warmup = getattr(plan, "n_epochs_kl_warmup", None)
    warmup_steps = getattr(plan, "n_steps_kl_warmup", None)
    # The weight of the last epoch trained (epochs count from 0; by steps when no epoch warm-up).
    if warmup:
        final_kl_weight = min(1.0, (args.epochs - 1) / warmup)
    elif warmup_steps:
        final_kl_weight = min(1.0, (plan.global_step - 1) / warmup_steps)
    else:
        final_kl_weight = 1.0

    # Test scores, explicit, full KL, higher is better.
    module = model.module
    module.eval()
    test_ad = model._validate_anndata(test_ad)
    loader = model._make_data_loader(adata=test_ad, batch_size=args.batch_size)
    recon, kl = [], []
    with torch.inference_mode():
        for tensors in loader:
            x = tensors[scvi.REGISTRY_KEYS.X_KEY]
            inf = module.inference(
                **module._get_inference_input(tensors), n_samples=args.elbo_samples
            )
            gen = module.generative(**module._get_generative_input(tensors, inf))
            ll = gen["px"].log_prob(x).sum(-1)  # (samples, cells) or (cells,)
            if ll.dim() == 2:
                ll = ll.mean(0)
            qz = inf["qz"]
            kl_z = kl_divergence(qz, Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale)))
            recon.append(ll)
            kl.append(kl_z.sum(-1))
        recon_t = torch.cat(recon).double()
        kl_t = torch.cat(kl).double()
    t_eval = time.perf_counter()
    log_px = model.get_marginal_ll(
        test_ad, n_mc_samples=args.marginal_samples, return_mean=False,
        batch_size=args.batch_size,
    )
    marginal_seconds = time.perf_counter() - t_eval
    scvi_elbo = float(model.get_elbo(test_ad, batch_size=args.batch_size))
    scvi_rec = model.get_reconstruction_error(test_ad, batch_size=args.batch_size)
    scvi_rec = float(scvi_rec["reconstruction_loss"])

    import importlib.metadata as md

    result = {
        "tool": "scvi-tools",
        "version": scvi.__version__,
        "torch": torch.__version__,
        "lightning": md.version("lightning"),
        "seconds_per_epoch": train_seconds / args.epochs,
        "epoch_seconds": timer.seconds,
        "train_seconds": train_seconds,
        "setup_seconds": setup_seconds,
        "test_elbo": float((recon_t - kl_t).mean()),
        "test_reconstruction": float(recon_t.mean()),
        "test_kl": float(kl_t.mean()),
        "test_log_px": float(log_px.double().mean()),
        "marginal_ll_seconds": marginal_seconds,
        "train_cells": int(train_ad.n_obs),
        "test_cells": int(test.size),
        "genes": int(n_genes),
        "threads": args.threads,
        "epochs": args.epochs,
        "seed": args.seed,
        "kl_warmup_epochs": warmup,
        "kl_warmup_steps": warmup_steps,
        "kl_weight_last_epoch": final_kl_weight,
        "scvi_methods": {
            "get_elbo": scvi_elbo,
            "get_reconstruction_error": scvi_rec,
            "note": "get_elbo: ELBO (higher is better, full KL, one draw of z); "
                    "get_reconstruction_error: -log p(x|z), positive, lower is better",
        },
        "settings": {
            "model": "SCVI", "gene_likelihood": "nb", "dispersion": "gene",
            "n_hidden": 128, "n_latent": 10, "n_layers": 1,
            "dropout_rate": module.z_encoder.encoder.fc_layers[0][-1].p
            if module.z_encoder.encoder.fc_layers[0][-1] is not None else 0.0,
            "use_batch_norm": "both", "use_layer_norm": "none",
            "log_variational": module.log_variational,
            "use_observed_lib_size": module.use_observed_lib_size,
            "optimizer": plan.optimizer_name if plan is not None else "Adam",
            "lr": args.lr,
            "adam_eps": getattr(plan, "eps", None),
            "weight_decay": getattr(plan, "weight_decay", None),
            "batch_size": args.batch_size, "train_size": 1.0, "early_stopping": False,
            "accelerator": "cpu", "data_matrix": type(adata.X).__name__,
            "elbo_samples": args.elbo_samples, "marginal_samples": args.marginal_samples,
        },
    }
    line = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
