#!/usr/bin/env bash
# scae's GPU check, assembled by `cargo xtask gpu-check` into gpu-check/ with the release binary,
# its configs, the PyTorch peer of `bench ae` and summary.py. Needs bash and a python3 with torch
# (the version scae was built against, 2.11.0) and numpy; no Rust.
#
# Trains three models for a few epochs with `--device cpu` and with `--device cuda`, the same seed
# and the same data on both:
#   ae     `scae train`, Q1's latent-10 MSE autoencoder on the default data (5000 x 1000)
#   vae    `scae vae`, the NB VAE of configs/vae.toml on a simulated sparse matrix
#          (GPU_CHECK_VAE_CELLS x GPU_CHECK_VAE_GENES, 92.8 % zeros)
#   gmvae  `scae gmvae-real`, the GMVAE (k-means start, then the ELBO) on the default raw counts
#          and labels, one seed, with its NB VAE, PCA and t-SNE baselines cut short
# then the PyTorch eager peer of the AE on each device, and prints per-epoch losses side by side,
# their largest relative difference and cells per second (summary.py). Everything printed also goes
# to gpu-check.log under $OUT when OUT is set (else beside this script), with a summary JSON and the
# runs' own logs. Exits non-zero when a run fails (a cuda run on a machine without CUDA fails, with
# the binary's one-line error) or a loss is not finite.
#
# Settings (environment):
#   GPU_CHECK_DEVICES       "cpu cuda"; "cpu" runs the whole script on a machine without a GPU
#   GPU_CHECK_MODELS        "ae vae gmvae"
#   GPU_CHECK_EPOCHS        3 (the AE and VAE); GPU_CHECK_GMVAE_EPOCHS (default: the same) are the
#                           GMVAE's epochs on the ELBO after 1 pretraining and 1 pseudo-label epoch
#   GPU_CHECK_THREADS       libtorch CPU threads of every run (default: every core, nproc)
#   GPU_CHECK_VAE_CELLS     20000;  GPU_CHECK_VAE_GENES 2000;  GPU_CHECK_VAE_BATCH 128
#   GPU_CHECK_RTOL          0.05: a larger CPU/CUDA loss difference is flagged (each device draws
#                           the initial weights and dropout masks from its own generator, so the
#                           two runs agree statistically, not to rounding)
#   GPU_CHECK_WORK          the runs' folder (default: work/ beside this script; emptied first)
#   PYTHON                  python3
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE"

PYTHON=${PYTHON:-python3}
DEVICES=${GPU_CHECK_DEVICES:-cpu cuda}
MODELS=${GPU_CHECK_MODELS:-ae vae gmvae}
EPOCHS=${GPU_CHECK_EPOCHS:-3}
GMVAE_EPOCHS=${GPU_CHECK_GMVAE_EPOCHS:-$EPOCHS}
THREADS=${GPU_CHECK_THREADS:-$(nproc)}
VAE_CELLS=${GPU_CHECK_VAE_CELLS:-20000}
VAE_GENES=${GPU_CHECK_VAE_GENES:-2000}
VAE_BATCH=${GPU_CHECK_VAE_BATCH:-128}
RTOL=${GPU_CHECK_RTOL:-0.05}
WORK=${GPU_CHECK_WORK:-$HERE/work}
REPORT_DIR=${OUT:-$HERE}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

FAILED=()

# Runs `scae <args> --device <dev> --threads N`, its output in logs/<name>-<dev>.log; a failure is
# recorded and reported on one line, and the next run goes on.
run_scae() {
    local name=$1 dev=$2
    shift 2
    local log="$WORK/logs/$name-$dev.log" start
    start=$(now)
    echo "-- $name on $dev: scae $*"
    if ./scae "$@" --device "$dev" --threads "$THREADS" >"$log" 2>&1; then
        echo "   done in $(since "$start") s"
    else
        local rc=$?
        echo "FAILED: $name on $dev (exit $rc after $(since "$start") s): $(grep -m1 '^error' "$log" || tail -n 1 "$log")"
        FAILED+=("$name-$dev")
    fi
}

# The PyTorch eager peer of `bench ae` on `dev`, on the AE run's data, split and settings (the
# split is the seed's, whichever device's run wrote it).
run_peer() {
    local dev=$1 ae="" d
    for d in "$dev" $DEVICES; do
        if [[ -f $WORK/ae-$d/metrics.json ]]; then
            ae="$WORK/ae-$d"
            break
        fi
    done
    if [[ -z $ae ]]; then
        echo "-- PyTorch AE on $dev: skipped, no scae AE run wrote its split"
        return
    fi
    local settings hidden batch latent start
    settings=$("$PYTHON" -c 'import json, sys
c = json.load(open(sys.argv[1]))["config"]
print(c["hidden"][0], c["train"]["batch_size"], c["latents"][0])' "$ae/metrics.json")
    read -r hidden batch latent <<<"$settings"
    echo "-- PyTorch AE on $dev: peers/ae_pytorch.py, hidden $hidden, latent $latent, batch $batch"
    start=$(now)
    if "$PYTHON" peers/ae_pytorch.py --data "$WORK/data/counts.npy" \
        --test-indices "$ae/test_indices.npy" --epochs "$EPOCHS" --batch-size "$batch" \
        --hidden "$hidden" --latent "$latent" --threads "$THREADS" --device "$dev" \
        >"$WORK/peer-ae-$dev.json" 2>"$WORK/logs/peer-ae-$dev.log"; then
        echo "   done in $(since "$start") s"
    else
        local rc=$?
        echo "FAILED: PyTorch AE on $dev (exit $rc): $(tail -n 1 "$WORK/logs/peer-ae-$dev.log")"
        FAILED+=("peer-ae-$dev")
    fi
}

main() {
    local started
    started=$(now)
    echo "scae GPU check: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), $(nproc) cores"
    echo "devices: $DEVICES; models: $MODELS; epochs $EPOCHS (GMVAE: 2 + $GMVAE_EPOCHS); threads $THREADS"

    local torch_lib
    if ! torch_lib=$("$PYTHON" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))'); then
        echo "error: $PYTHON cannot import torch; set PYTHON to a python3 with PyTorch"
        return 1
    fi
    export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "libtorch: $torch_lib (torch $("$PYTHON" -c 'import torch; print(torch.__version__)'))"
    echo "the binary loads: $(ldd ./scae | awk '/libtorch_cpu|libtorch_cuda\.so|libc10_cuda/ { print $3 }' | tr '\n' ' ')"
    if [[ " $DEVICES " == *" cuda "* ]]; then
        if "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
            "$PYTHON" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"CUDA: {p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}")'
        else
            echo "WARNING: PyTorch sees no CUDA device here (torch.cuda.is_available() is False): the cuda runs will fail"
        fi
        command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader || true
    fi

    rm -rf "$WORK"
    mkdir -p "$WORK/logs"
    echo "-- data: scae data (the default data, 5000 cells x 1000 genes, with labels)"
    if ! ./scae data --root "$WORK" >"$WORK/logs/data.log" 2>&1; then
        echo "FAILED: scae data: $(tail -n 1 "$WORK/logs/data.log")"
        return 1
    fi

    # The VAE's config: configs/vae.toml with the simulated data appended.
    sed "s/^batch_size = .*/batch_size = $VAE_BATCH/" configs/vae.toml >"$WORK/vae.toml"
    cat >>"$WORK/vae.toml" <<EOF

# Appended by run.sh: the sparse matrix of configs/bench-fullsize.toml, smaller.
[simulate]
kind = "sparse"
cells = $VAE_CELLS
genes = $VAE_GENES
zero_fraction = 0.928
high_genes = 20
high_rate = [400.0, 1000.0]
EOF
    # The GMVAE's config: its epochs on the ELBO set here.
    sed "/^\[gmvae\.train\]/,/^\[/ s/^epochs = .*/epochs = $GMVAE_EPOCHS/" configs/gmvae-real.toml \
        >"$WORK/gmvae-real.toml"

    local model dev
    for model in $MODELS; do
        for dev in $DEVICES; do
            case $model in
            ae) run_scae ae "$dev" train --root "$WORK" --config configs/ae.toml --latent 10 \
                --epochs "$EPOCHS" --out "$WORK/ae-$dev" ;;
            vae) run_scae vae "$dev" vae --root "$WORK" --config "$WORK/vae.toml" \
                --epochs "$EPOCHS" --out "$WORK/vae-$dev" ;;
            gmvae) run_scae gmvae "$dev" gmvae-real --root "$WORK" --config "$WORK/gmvae-real.toml" \
                --out "$WORK/gmvae-$dev" ;;
            *)
                echo "error: unknown model $model in GPU_CHECK_MODELS (ae, vae, gmvae)"
                return 1
                ;;
            esac
        done
        if [[ $model == ae ]]; then
            for dev in $DEVICES; do run_peer "$dev"; done
        fi
    done

    echo
    local status=0
    "$PYTHON" summary.py --work "$WORK" --devices "$DEVICES" --models "$MODELS" --rtol "$RTOL" \
        --failed "${FAILED[*]-}" --json "$REPORT_DIR/gpu-check-summary.json" || status=$?
    if [[ $REPORT_DIR != "$HERE" ]]; then
        mkdir -p "$REPORT_DIR/logs"
        cp "$WORK"/logs/*.log "$REPORT_DIR/logs/" || true
    fi
    echo "summary: $REPORT_DIR/gpu-check-summary.json; the runs' logs: $WORK/logs (copied to $REPORT_DIR/logs when OUT is set)"
    echo "the GPU check took $(since "$started") s"
    if ((${#FAILED[@]})); then
        echo "gpu-check FAILED: ${FAILED[*]}"
        return 1
    fi
    return "$status"
}

mkdir -p "$REPORT_DIR"
main 2>&1 | tee "$REPORT_DIR/gpu-check.log"
