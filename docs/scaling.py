#!/usr/bin/env python3
"""Recomputes the tables of docs/scaling.md (plain python3, no packages).

Run: python3 docs/scaling.py

Every input is a named constant below, with its source; docs/scaling.md gives the same
sources. Change one and rerun to get the tables for another machine.
"""

# --- Model (crates/models/src/vae.rs, scVI's shape) ------------------------------------------
HIDDEN, LATENT = 128, 10


def parameters(genes: int) -> int:
    """Trainable parameters of the NB VAE for `genes` genes: 258 G + 4,628."""
    enc1 = genes * HIDDEN + HIDDEN  # genes -> 128
    bn = 2 * HIDDEN  # batch-norm scale and shift (encoder and decoder each)
    heads = 2 * (HIDDEN * LATENT + LATENT)  # mean and log-variance
    dec1 = LATENT * HIDDEN + HIDDEN  # 10 -> 128
    out = HIDDEN * genes + genes  # 128 -> genes (softmax proportions)
    dispersion = genes  # one inverse dispersion per gene
    return enc1 + bn + heads + dec1 + bn + out + dispersion


# --- Measured compute per step -----------------------------------------------------------------
BATCH = 128
# H200, `cargo xtask gpu-check` (stop 16, binary a42b79b): NB VAE, 20,000 x 2,000 simulated
# sparse counts, batch 128, 20,038 cells/s on CUDA after the first epoch.
T_STEP_GPU = BATCH / 20_038  # s, 6.39 ms; host-bound (stop 16), taken as the floor for b <= 128
# Assumption: the same floor at 28,000 genes (no CUDA figure at that width exists).

# --- NCCL bandwidths (nccl-tests busbw, GB/s = 1e9 B/s) ------------------------------------------
BUSBW_NVLINK = 370e9  # H100/H200 NVLink4 ring (nccl-tests#212, nccl#1455)
BUSBW_IB_PER_NIC = 46e9  # NDR 400 Gb/s, "46-48 GB/s per NIC" (nccl-tests#290)
NICS_PER_NODE = 8  # DGX H100 / HGX H200 reference: one NIC per GPU
GPUS_PER_NODE = 8

# --- NCCL's own ring latency model (src/graph/tuning.cc, ring, Simple protocol) ------------------
BASE_LAT = 8.4e-6  # s
NVLINK_STEP = 3.4e-6  # s per intra-node step
NET_STEP = 14.0e-6  # s per inter-node step
PLATEAU = 1.4  # multi-node ring all-reduce factor on compute capability >= 8.0


def ring_latency(n: int) -> float:
    """NCCL's ring all-reduce latency for n ranks, 8 to a node."""
    nodes = -(-n // GPUS_PER_NODE)
    steps = 2 * (n - 1)
    inter = 2 * nodes if nodes > 1 else 0
    lat = BASE_LAT + (steps - inter) * NVLINK_STEP + inter * NET_STEP
    return lat * (PLATEAU if nodes > 1 else 1.0)


def allreduce(size: float, n: int, nics_per_node: int = NICS_PER_NODE) -> float:
    """t = alpha(n) + S / algbw, algbw = busbw * n / (2 (n - 1)) (nccl-tests PERFORMANCE.md)."""
    if n == 1:
        return 0.0
    busbw = BUSBW_NVLINK if n <= GPUS_PER_NODE else min(BUSBW_NVLINK, nics_per_node * BUSBW_IB_PER_NIC)
    algbw = busbw * n / (2 * (n - 1))
    return ring_latency(n) + size / algbw


def fmt_time(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


RANKS = [1, 2, 4, 8, 16, 32, 64]
CELLS = [10_000_000, 50_000_000]


def epochs(step_seconds: float, cells_per_step: float) -> str:
    """Epoch time for 10 M / 50 M cells at one step per `cells_per_step` cells."""
    return " / ".join(fmt_time(c / cells_per_step * step_seconds) for c in CELLS)


def table(genes: int) -> None:
    size = 4 * parameters(genes)
    print(f"\nG = {genes:,}: {parameters(genes):,} parameters, all-reduce of {size / 1e6:.2f} MB\n")
    print(
        "| N | cells a GPU a step (B = 128) | all-reduce, ms: 8 NICs a node (1 NIC) "
        "| B = 128, step at the floor | B = 128, step split perfectly | B/N = 128 "
        "| all-reduce share of a step |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in RANKS:
        t_ar = allreduce(size, n)
        thin = f" ({allreduce(size, n, nics_per_node=1) * 1e3:.2f})" if n > GPUS_PER_NODE else ""
        floor = epochs(T_STEP_GPU + t_ar, BATCH)
        split = epochs(T_STEP_GPU / n + t_ar, BATCH)
        weak = epochs(T_STEP_GPU + t_ar, BATCH * n)
        share = t_ar / (T_STEP_GPU + t_ar)
        print(
            f"| {n} | {BATCH // n} | {t_ar * 1e3:.2f}{thin} | {floor} | {split} | {weak} | {share:.0%} |"
        )


# --- Reading (bench scale's file, stop 20; stop 19's reader profile) ------------------------------
FILE_BYTES, FILE_CELLS = 2_110_435_412, 1_300_000  # 1.3 M x 2,000, 90.18 % zeros
NNZ_PER_CELL_2K = 255_264_139 / FILE_CELLS
NNZ_PER_CELL_28K = 27_998 * (1 - 0.9294)  # bench vae-full's 92.94 % zeros (assumption for real data)
READER_CPU_PER_CELL_2K = 0.95 / 130_000  # s of reader CPU a cell at 2,000 genes (stop 19)


def main() -> None:
    print(f"t_step(1 GPU, b <= 128) = {T_STEP_GPU * 1e3:.2f} ms")
    for n in RANKS[1:]:
        print(f"alpha_ring({n}) = {ring_latency(n) * 1e6:.0f} us")
    for genes in (2_000, 28_000):
        table(genes)

    print("\nSanity: 16 ranks on 2 nodes, model vs nccl#1244 (2 nodes x 8 H20, NVLS: 130 and 298 us)")
    for size in (2 * 2**20, 32 * 2**20):
        print(f"  {size / 2**20:.0f} MiB: {allreduce(size, 16) * 1e6:.0f} us")

    print("\nWhere the ring all-reduce equals the measured step (B/N = 128):")
    for genes in (2_000, 28_000):
        size = 4 * parameters(genes)
        n = 2
        while allreduce(size, n) < T_STEP_GPU:
            n += 1
        print(f"  G = {genes:,}: N = {n}")

    print("\nIf the step were 10x faster (0.64 ms), all-reduce share at N = 8 / 16 / 64:")
    for genes in (2_000, 28_000):
        size = 4 * parameters(genes)
        fast = T_STEP_GPU / 10
        shares = [allreduce(size, n) / (fast + allreduce(size, n)) for n in (8, 16, 64)]
        print(f"  G = {genes:,}: " + " / ".join(f"{x:.0%}" for x in shares))

    print("\nReading, B/N = 128 at N = 64:")
    bytes_per_nnz = FILE_BYTES / (NNZ_PER_CELL_2K * FILE_CELLS)
    for genes, nnz in ((2_000, NNZ_PER_CELL_2K), (28_000, NNZ_PER_CELL_28K)):
        size = 4 * parameters(genes)
        per_cell = nnz * bytes_per_nnz
        rate = 64 * BATCH / (T_STEP_GPU + allreduce(size, 64))
        cpu = READER_CPU_PER_CELL_2K * nnz / NNZ_PER_CELL_2K * BATCH / T_STEP_GPU
        print(
            f"  G = {genes:,}: {nnz:.0f} nonzeros, {per_cell / 1e3:.1f} kB a cell; "
            f"epoch of 10 M / 50 M = {10e6 * per_cell / 1e9:.0f} / {50e6 * per_cell / 1e9:.0f} GB; "
            f"{rate / 1e6:.2f} M cells/s = {rate * per_cell / 1e9:.1f} GB/s in all, "
            f"{rate * per_cell / 8 / 1e9:.2f} GB/s a node; reader {cpu:.2f} cores a GPU"
        )


if __name__ == "__main__":
    main()
