"""PyTorch eager peer of `cargo xtask bench ae`.

The same model, loss, optimiser, batch size, split and thread count as scae's
Q1 latent-10 autoencoder, written the way a PyTorch user would write it:
nn.Sequential, torch.optim.Adam, a shuffled index per epoch, loss.item() per
step, the test loss under no_grad after every epoch. Prints one JSON line.

Also measures this machine's single-precision matrix-multiply rate with the
same thread count, the ceiling against which scae's GFLOP/s is reported.
"""

import argparse
import json
import time

import numpy as np
import torch
from torch import nn


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    torch.set_num_threads(threads)
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data")
    p.add_argument("--test-indices")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--latent", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--matmul", action="store_true", help="only measure the matmul rate")
    args = p.parse_args()

    if args.matmul:
        print(json.dumps({"matmul_gflops": matmul_gflops(args.threads)}))
        return
    if not (args.data and args.test_indices):
        p.error("--data and --test-indices are required unless --matmul")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x = torch.from_numpy(np.load(args.data).astype(np.float32))
    test_idx = torch.from_numpy(np.load(args.test_indices).astype(np.int64))
    train_mask = torch.ones(x.shape[0], dtype=torch.bool)
    train_mask[test_idx] = False
    device = torch.device(args.device)
    x_train = x[train_mask].contiguous().to(device)
    x_test = x[test_idx].contiguous().to(device)
    genes = x.shape[1]

    model = nn.Sequential(
        nn.Linear(genes, args.hidden), nn.ReLU(), nn.Linear(args.hidden, args.latent),
        nn.Linear(args.latent, args.hidden), nn.ReLU(), nn.Linear(args.hidden, genes),
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    loss_fn = nn.MSELoss()
    gen = torch.Generator().manual_seed(args.seed)
    n = x_train.shape[0]

    history = []
    start = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for i in range(0, n, args.batch_size):
            xb = x_train[perm[i:i + args.batch_size]]
            opt.zero_grad()
            loss = loss_fn(model(xb), xb)
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0]
        model.eval()
        with torch.no_grad():
            test_loss = loss_fn(model(x_test), x_test).item()
        history.append((total / n, test_loss))
    seconds = time.perf_counter() - start

    print(json.dumps({
        "train_seconds": seconds,
        "cells_per_second": args.epochs * n / seconds,
        "final_train_loss": history[-1][0],
        "final_test_loss": history[-1][1],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
