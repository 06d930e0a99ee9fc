"""Simulated 10x-like counts for `cargo xtask bench scale`, written once as `.h5ad`.

The model (seeded, numpy's PCG64; every value below is a default of this script):

* genes (2,000, the size of a highly-variable-gene selection): a log-mean proportion
  log p_g ~ Normal(0, 2.0^2), normalised so the p_g sum to 1 (heavy-tailed: the top five genes
  hold 2-4 % of a cell's counts each, the top ten 20 %, the median gene 0.008 %); one inverse
  dispersion per gene, theta_g ~ LogNormal(log 0.5, 1.0^2), 0.1 to 2.7 between the 5th and 95th
  percentiles (variable genes are the overdispersed ones);
* cells: a library size l_c ~ LogNormal(log 500, 0.5^2) (a 10x cell's counts on its 2,000
  variable genes; the median 500 is what puts about 90 % of the entries at zero);
* counts: x_cg ~ NB(mean l_c p_g, inverse dispersion theta_g), the gamma-Poisson mixture, drawn
  exactly by inverting its distribution function from one uniform per entry (a zero costs one
  comparison; only the nonzero entries walk the recursion
  pmf(k + 1) = pmf(k) (k + theta) / (k + 1) mu / (mu + theta)).

Measured on the 1,300,000-cell file (seed 0): 90.18 % zeros (255,264,139 nonzeros), a median of
492 counts per cell (mean 566, smallest 40), largest count 4,328; 2.11 GB, written in 175 s on
one core (the sidecar JSON records each file's own figures).

Cells are drawn in blocks of 10,000, each block from its own stream (seed, block), so a file of
N cells (N a multiple of 10,000) holds exactly the first N cells of any larger file with the same
parameters: the 130,000-cell file is the first 130,000 cells of the 1,300,000-cell one.

The file is AnnData's on-disk format written straight with h5py, a block at a time (memory stays
under 0.5 GB whatever the cell count; 411 MiB at 1.3 M cells): `X` a CSR group (float32 data,
int32 indices and, while the nonzeros fit in it, an int32 indptr: the index type scipy, and so
anndata, would give this matrix; with an int64 indptr beside int32 indices scipy casts the whole
`indices` array to int64 on every row selection, which makes each of scvi-tools' minibatches
cost O(nnz)), `obs` and `var` data frames with only a string index, empty `obsm`, `varm`,
`obsp`, `varp`, `layers` and `uns`. It goes to a temporary name in `--out-dir`, renamed once
complete, beside a sidecar `<name>.json` with the parameters and measured figures; a file whose
sidecar exists is reused. The file name carries the parameters. Prints the sidecar as one JSON
line.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

BLOCK = 10_000
SUB_BLOCK = 1_000
# Bump when the model or the layout changes, so no stale file is reused (2: int32 indptr).
MODEL_VERSION = 2


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=1_300_000)
    p.add_argument("--genes", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gene-sdlog", type=float, default=2.0)
    p.add_argument("--theta-median", type=float, default=0.5)
    p.add_argument("--theta-sdlog", type=float, default=1.0)
    p.add_argument("--library-median", type=float, default=500.0)
    p.add_argument("--library-sdlog", type=float, default=0.5)
    p.add_argument("--out-dir", required=True, help="cache folder (created when missing)")
    p.add_argument("--check", action="store_true",
                   help="then load the file with anndata.read_h5ad and compare it with the sidecar")
    return p.parse_args()


def file_stem(a: argparse.Namespace) -> str:
    return (
        f"scale-v{MODEL_VERSION}-{a.cells}x{a.genes}-seed{a.seed}"
        f"-g{a.gene_sdlog:g}-t{a.theta_median:g}_{a.theta_sdlog:g}"
        f"-l{a.library_median:g}_{a.library_sdlog:g}"
    )


def gene_parameters(a: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([a.seed, 0])
    log_p = rng.normal(0.0, a.gene_sdlog, a.genes)
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    theta = np.exp(rng.normal(np.log(a.theta_median), a.theta_sdlog, a.genes))
    return p, theta


def nb_block(
    rng: np.random.Generator, mu: np.ndarray, theta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NB(mu, theta) counts of a cells x genes block (theta one row per gene) by inversion, one
    uniform per entry: the nonzero entries as (rows, cols, counts) in row-major order."""
    u = rng.random(mu.shape)
    log_q = np.log(theta / (theta + mu))  # log P(x = 0) = theta log q
    pmf = np.exp(theta * log_q)
    rows, cols = np.nonzero(u > pmf)
    counts = np.zeros(rows.size, dtype=np.int64)
    u = u[rows, cols]
    pmf = pmf[rows, cols]
    cdf = pmf.copy()
    th = theta[0, cols]
    r = mu[rows, cols] / (mu[rows, cols] + th)
    k = np.zeros(rows.size, dtype=np.int64)
    idx = np.arange(rows.size)
    # Every entry here has u > pmf(0): step k up until the cdf passes u.
    while idx.size:
        pmf = pmf * (k + th) / (k + 1) * r
        k += 1
        cdf += pmf
        # Float64 rounding can leave the cdf just below a u within 1e-15 of 1: stop where pmf
        # has vanished.
        done = (cdf >= u) | (pmf < 1e-300)
        if done.any():
            counts[idx[done]] = k[done]
            keep = ~done
            idx, u, pmf, cdf, th, r, k = (v[keep] for v in (idx, u, pmf, cdf, th, r, k))
    return rows, cols, counts


def write(a: argparse.Namespace, path: str) -> dict:
    import h5py

    p, theta = gene_parameters(a)
    started = time.perf_counter()
    zeros = 0
    libraries = np.empty(a.cells, dtype=np.int64)
    max_count = 0
    str_dtype = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        x = f.create_group("X")
        x.attrs["encoding-type"] = "csr_matrix"
        x.attrs["encoding-version"] = "0.1.0"
        x.attrs["shape"] = np.array([a.cells, a.genes], dtype=np.int64)
        chunk = 1 << 18
        data = x.create_dataset("data", shape=(0,), maxshape=(None,), dtype="f4", chunks=(chunk,))
        indices = x.create_dataset(
            "indices", shape=(0,), maxshape=(None,), dtype="i4", chunks=(chunk,)
        )
        indptr = np.zeros(a.cells + 1, dtype=np.int64)
        nnz = 0
        for b, start in enumerate(range(0, a.cells, BLOCK)):
            n = min(BLOCK, a.cells - start)
            rng = np.random.default_rng([a.seed, 1, b])
            lib = a.library_median * np.exp(rng.normal(0.0, a.library_sdlog, n))
            # Sub-blocks keep the dense temporaries small (fewer page faults); the draws still
            # come from the block's one stream, in order.
            parts = []
            for s0 in range(0, n, SUB_BLOCK):
                mu = lib[s0 : s0 + SUB_BLOCK, None] * p[None, :]
                r, c, v = nb_block(rng, mu, theta[None, :])
                parts.append((r + s0, c, v))
            rows = np.concatenate([q[0] for q in parts])
            cols = np.concatenate([q[1] for q in parts])
            vals = np.concatenate([q[2] for q in parts])
            per_cell = np.bincount(rows, minlength=n)
            indptr[start + 1 : start + n + 1] = nnz + np.cumsum(per_cell)
            data.resize((nnz + vals.size,))
            indices.resize((nnz + vals.size,))
            data[nnz:] = vals.astype(np.float32)
            indices[nnz:] = cols.astype(np.int32)
            zeros += n * a.genes - vals.size
            libraries[start : start + n] = np.bincount(rows, weights=vals, minlength=n).astype(
                np.int64
            )
            max_count = max(max_count, int(vals.max(initial=0)))
            nnz += vals.size
            if b % 10 == 9 or start + n == a.cells:
                print(f"  {start + n} / {a.cells} cells, {time.perf_counter() - started:.0f} s",
                      file=sys.stderr)
        index_dtype = np.int32 if nnz <= np.iinfo(np.int32).max else np.int64
        x.create_dataset("indptr", data=indptr.astype(index_dtype))
        for name, n, prefix in (("obs", a.cells, "cell"), ("var", a.genes, "gene")):
            g = f.create_group(name)
            g.attrs["encoding-type"] = "dataframe"
            g.attrs["encoding-version"] = "0.2.0"
            g.attrs["_index"] = "_index"
            g.attrs["column-order"] = np.array([], dtype=np.float64)
            # A fixed width, so a smaller file's names are a prefix of a larger one's.
            width = max(7, len(str(n - 1)))
            names = np.array([f"{prefix}_{i:0{width}d}" for i in range(n)], dtype=object)
            d = g.create_dataset("_index", data=names, dtype=str_dtype)
            d.attrs["encoding-type"] = "string-array"
            d.attrs["encoding-version"] = "0.2.0"
        for name in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            g = f.create_group(name)
            g.attrs["encoding-type"] = "dict"
            g.attrs["encoding-version"] = "0.1.0"
    seconds = time.perf_counter() - started
    return {
        "cells": a.cells,
        "genes": a.genes,
        "nnz": int(nnz),
        "zero_fraction": zeros / (a.cells * a.genes),
        "median_library": float(np.median(libraries)),
        "mean_library": float(libraries.mean()),
        "min_library": int(libraries.min()),
        "max_count": max_count,
        "generation_seconds": seconds,
        "parameters": {
            "model_version": MODEL_VERSION,
            "seed": a.seed,
            "gene_log_proportion": {"sdlog": a.gene_sdlog},
            "theta": {"median": a.theta_median, "sdlog": a.theta_sdlog},
            "library": {"median": a.library_median, "sdlog": a.library_sdlog},
            "block_cells": BLOCK,
        },
        "indptr_dtype": np.dtype(index_dtype).name,
    }


def check(path: str, meta: dict) -> None:
    import anndata

    adata = anndata.read_h5ad(path)
    x = adata.X
    assert adata.shape == (meta["cells"], meta["genes"]), adata.shape
    assert x.nnz == meta["nnz"], (x.nnz, meta["nnz"])
    assert x.format == "csr" and x.data.dtype == np.float32, (x.format, x.data.dtype)
    lib = np.asarray(x.sum(axis=1)).ravel()
    assert np.median(lib) == meta["median_library"], (np.median(lib), meta["median_library"])
    assert np.all(x.data == np.round(x.data)) and x.data.min() >= 1
    print(f"anndata.read_h5ad: {adata.n_obs} x {adata.n_vars}, nnz {x.nnz}, "
          f"obs {adata.obs_names[0]}..{adata.obs_names[-1]}, var {adata.var_names[0]}..",
          file=sys.stderr)


def main() -> None:
    a = parse_args()
    if a.cells < 1 or a.genes < 1:
        raise SystemExit("--cells and --genes must be positive")
    os.makedirs(a.out_dir, exist_ok=True)
    stem = file_stem(a)
    path = os.path.join(a.out_dir, stem + ".h5ad")
    sidecar = os.path.join(a.out_dir, stem + ".json")
    if os.path.isfile(path) and os.path.isfile(sidecar):
        with open(sidecar) as f:
            meta = json.load(f)
        meta["reused"] = True
        meta["path"] = os.path.abspath(path)
    else:
        print(f"simulating {a.cells} x {a.genes} counts into {path}", file=sys.stderr)
        tmp = os.path.join(a.out_dir, f".{stem}.h5ad.tmp{os.getpid()}")
        try:
            meta = write(a, tmp)
            meta["path"] = os.path.abspath(path)
            meta["bytes"] = os.path.getsize(tmp)
            tmp_meta = sidecar + f".tmp{os.getpid()}"
            with open(tmp_meta, "w") as f:
                f.write(json.dumps(meta, indent=1) + "\n")
            os.replace(tmp, path)
            os.replace(tmp_meta, sidecar)
        finally:
            for t in (tmp, sidecar + f".tmp{os.getpid()}"):
                if os.path.exists(t):
                    os.remove(t)
        meta["reused"] = False
    if a.check:
        check(path, meta)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
