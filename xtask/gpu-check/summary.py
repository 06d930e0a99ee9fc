"""The summary of scae's GPU check (run by run.sh, beside it in gpu-check/).

Reads what the runs wrote under the work folder: for each model and device, scae's metrics.json
and the per-epoch history (metrics.json's "history" where the run writes one, else history.csv:
epoch, train_loss, test_loss, seconds), and the PyTorch peer's JSON line for the AE. Prints, per
model, the losses of every device side by side with their relative difference, and cells per
second (training cells x epochs / seconds of those epochs: over every epoch, and without the
first, which on CUDA also pays for the context and the kernels' first launch). Writes everything
as one JSON file. Exits 1 when a run that should be there is missing or a loss is not finite.
Only the standard library: it must run wherever run.sh does.
"""

import argparse
import csv
import json
import math
import os
import platform
import sys

# What each model is, where its history lives under the run folder, and how to describe it.
MODELS = {
    "ae": "AE (scae train): Q1's latent-10 MSE autoencoder, log-normalised default data",
    "vae": "VAE (scae vae): NB, scVI's shape, simulated sparse counts",
    "gmvae": "GMVAE (scae gmvae-real): k-means start, then the ELBO, default raw counts",
}

# Peers that need more than torch and numpy, which the check does not run.
SKIPPED_PEERS = (
    "bench vae's scvi-tools peer is not installed on the device machine (it needs scvi-tools); "
    "the t-SNE and PCA peers need scikit-learn and openTSNE, and scae runs those on the CPU only"
)


def load_json(path):
    with open(path) as f:
        return json.load(f)


def last_json_line(path):
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    return json.loads(lines[-1])


def read_history_csv(path):
    epochs = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            epochs.append({
                "epoch": int(row["epoch"]),
                "train_loss": float(row["train_loss"]),
                "test_loss": float(row["test_loss"]) if row["test_loss"] else None,
                "seconds": float(row["seconds"]),
            })
    return epochs


def train_cells(cells, test_fraction):
    # scae's Split: round(n * test_fraction) test cells, half away from zero.
    return cells - int(math.floor(cells * test_fraction + 0.5))


def load_run(work, model, device):
    """What one scae run wrote, or None when it wrote nothing."""
    run = os.path.join(work, f"{model}-{device}")
    metrics_path = os.path.join(run, "metrics.json")
    if not os.path.isfile(metrics_path):
        return None
    m = load_json(metrics_path)
    prov = m["provenance"]
    cells = prov["data"]["cells"]
    if model == "gmvae":
        seed = m["config"]["seeds"][0]
        history_csv = os.path.join(run, f"seed_{seed}", "gmvae", "history.csv")
    else:
        history_csv = os.path.join(run, "history.csv")
    if isinstance(m.get("history"), dict) and m["history"].get("epochs"):
        epochs = [
            {k: e.get(k) for k in ("epoch", "train_loss", "test_loss", "seconds", "train_seconds")}
            for e in m["history"]["epochs"]
        ]
    else:
        epochs = read_history_csv(history_csv)
    if model == "vae":
        n_train = m["summary"]["train_cells"]
    else:
        n_train = train_cells(cells, m["config"]["test_fraction"])
    genes = m.get("genes") or prov["data"]["genes"]
    return {
        "device": prov["device"],
        "threads": prov["threads"],
        "data": {"cells": cells, "genes": genes, "train_cells": n_train,
                 "fingerprint": prov["data"]["fingerprint"]},
        "wall_seconds": prov["wall_seconds"],
        "epochs": epochs,
        "speed": speed(epochs, n_train),
    }


def speed(epochs, n_train):
    """Cells per second over every epoch and over all but the first; from the whole epochs'
    seconds (training steps and the test loss) and, where the history has them, the training
    steps' seconds alone."""
    out = {}
    for key, name in (("seconds", "epoch"), ("train_seconds", "steps")):
        secs = [e.get(key) for e in epochs]
        if not secs or any(s is None or not math.isfinite(s) for s in secs):
            continue
        out[f"cells_per_second_{name}"] = n_train * len(secs) / max(sum(secs), 1e-12)
        if len(secs) > 1:
            out[f"cells_per_second_{name}_after_first"] = (
                n_train * (len(secs) - 1) / max(sum(secs[1:]), 1e-12))
        out[f"seconds_per_epoch_{name}"] = sum(secs) / len(secs)
    return out


def rel_diff(a, b):
    if a is None or b is None:
        return None
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def fmt(x, spec):
    """`x` formatted by `spec`, or "-" as wide as the spec's width when there is no value."""
    if x is None:
        width = "".join(c for c in spec.split(".")[0].split(",")[0] if c.isdigit())
        return "-".rjust(int(width or 1))
    return format(x, spec)


def finite(epochs):
    return all(
        v is not None and math.isfinite(v)
        for e in epochs for v in (e["train_loss"], e["test_loss"]))


def report_model(model, runs, devices, peers, rtol):
    """Prints one model's comparison; returns its JSON and whether it is sound."""
    print(f"== {MODELS[model]}")
    present = {d: r for d, r in runs.items() if r is not None}
    ok = True
    for d in devices:
        if runs[d] is None:
            print(f"   {d}: no results (the run failed, see above)")
            ok = False
    if not present:
        print()
        return {"description": MODELS[model], "runs": runs}, False
    any_run = next(iter(present.values()))
    data = any_run["data"]
    print(f"   {data['cells']} cells x {data['genes']} genes ({data['train_cells']} training), "
          f"{len(any_run['epochs'])} epochs, {any_run['threads']} CPU threads")
    fingerprints = {r["data"]["fingerprint"] for r in present.values()}
    if len(fingerprints) > 1:
        print(f"   WARNING: the devices saw different data (fingerprints {sorted(fingerprints)})")
        ok = False
    for d, r in present.items():
        if not finite(r["epochs"]):
            print(f"   FAILED: a loss on {d} is not finite")
            ok = False

    # (a) losses side by side.
    cols = list(present)
    header = "   epoch" + "".join(f" {'train ' + d:>14}" for d in cols)
    header += "".join(f" {'test ' + d:>14}" for d in cols)
    pair = len(cols) == 2
    if pair:
        header += f" {'train rel':>10} {'test rel':>10}"
    print(header)
    n = max(len(r["epochs"]) for r in present.values())
    worst = {"train": None, "test": None}
    for i in range(n):
        def loss(d, key):
            ep = present[d]["epochs"]
            return ep[i][key] if i < len(ep) else None
        line = f"   {i + 1:>5}"
        line += "".join(f" {fmt(loss(d, 'train_loss'), '14.6f')}" for d in cols)
        line += "".join(f" {fmt(loss(d, 'test_loss'), '14.6f')}" for d in cols)
        if pair:
            for key, part in (("train_loss", "train"), ("test_loss", "test")):
                r = rel_diff(loss(cols[0], key), loss(cols[1], key))
                line += f" {fmt(r, '10.2e')}"
                if r is not None and (worst[part] is None or r > worst[part]):
                    worst[part] = r
        print(line)
    within = None
    if pair:
        within = all(w is not None and w <= rtol for w in worst.values())
        verdict = "within" if within else "WARNING: above"
        print(f"   largest relative difference {cols[0]} vs {cols[1]}: train "
              f"{fmt(worst['train'], '.2e')}, test {fmt(worst['test'], '.2e')} "
              f"({verdict} GPU_CHECK_RTOL = {rtol:g}; each device draws its own initial weights)")

    # (b) cells per second.
    print(f"   {'':<16} {'cells/s':>12} {'after epoch 1':>14} {'steps only':>12} "
          f"{'s/epoch':>9} {'run wall s':>11}")
    for d, r in present.items():
        s = r["speed"]
        print(f"   {'scae ' + d:<16} {fmt(s.get('cells_per_second_epoch'), '12,.0f')} "
              f"{fmt(s.get('cells_per_second_epoch_after_first'), '14,.0f')} "
              f"{fmt(s.get('cells_per_second_steps'), '12,.0f')} "
              f"{fmt(s.get('seconds_per_epoch_epoch'), '9.3f')} {r['wall_seconds']:>11.1f}")
    # (c) the PyTorch peer on the same device.
    for d, p in peers.items():
        if p is None:
            print(f"   {'PyTorch ' + d:<16} (no result)")
            continue
        print(f"   {'PyTorch ' + d:<16} {p['cells_per_second']:>12,.0f} {'-':>14} {'-':>12} "
              f"{p['train_seconds'] / max(len(any_run['epochs']), 1):>9.3f} {'-':>11}"
              f"   final test MSE {p['final_test_loss']:.6f} (torch {p['torch']})")
    speeds = {d: r["speed"].get("cells_per_second_epoch") for d, r in present.items()}
    notes = []
    if "cpu" in speeds and "cuda" in speeds and speeds["cpu"] and speeds["cuda"]:
        notes.append(f"cuda / cpu: {speeds['cuda'] / speeds['cpu']:.2f}x")
        steady = {d: present[d]["speed"].get("cells_per_second_epoch_after_first")
                  for d in ("cpu", "cuda")}
        if steady["cpu"] and steady["cuda"]:
            notes.append(f"after epoch 1 {steady['cuda'] / steady['cpu']:.2f}x")
    for d, p in peers.items():
        if p is not None and speeds.get(d):
            notes.append(f"scae / PyTorch on {d}: {speeds[d] / p['cells_per_second']:.2f}x")
    if notes:
        print("   " + "; ".join(notes))
    print()
    return {
        "description": MODELS[model],
        "runs": runs,
        "largest_relative_difference": worst if pair else None,
        "within_rtol": within,
        "pytorch": peers or None,
    }, ok


def machine():
    info = {"host": platform.node(), "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch
        info["torch"] = torch.__version__
        info["cuda_available"] = torch.cuda.is_available()
        if info["cuda_available"]:
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except Exception as e:  # noqa: BLE001 - the summary is still worth printing
        info["torch_error"] = repr(e)
    return info


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--devices", required=True)
    p.add_argument("--models", required=True)
    p.add_argument("--rtol", type=float, default=0.05)
    p.add_argument("--failed", default="")
    p.add_argument("--json", required=True)
    args = p.parse_args()
    devices = args.devices.split()
    models = args.models.split()

    info = machine()
    print("== summary: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    report = {"machine": info, "devices": devices, "rtol": args.rtol,
              "failed_runs": args.failed.split(), "models": {}}
    build = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build.json")
    if os.path.isfile(build):
        report["build"] = load_json(build)
        print(f"   scae {report['build'].get('scae_version')} at "
              f"{report['build'].get('git_revision')}")
    print()
    sound = True
    for model in models:
        if model not in MODELS:
            continue
        runs = {d: load_run(args.work, model, d) for d in devices}
        peers = {}
        if model == "ae":
            for d in devices:
                path = os.path.join(args.work, f"peer-ae-{d}.json")
                peers[d] = last_json_line(path) if os.path.isfile(path) and os.path.getsize(path) else None
        entry, ok = report_model(model, runs, devices, peers, args.rtol)
        report["models"][model] = entry
        sound &= ok
    print(f"not run: {SKIPPED_PEERS}")
    report["peers_not_run"] = SKIPPED_PEERS
    report["sound"] = sound and not args.failed.split()
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    sys.exit(0 if sound else 1)


if __name__ == "__main__":
    main()
