#!/usr/bin/env bash
# Train, sample, evaluate and draw each 2-D density. Extra arguments go to `si-lightning fit`
# (e.g. -c experiments/densities-2d/smoke.yaml for the smoke variant).
#   experiments/densities-2d/run.sh [OUT=runs/densities-2d] [TOYS="checkerboard two-moons spirals"]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-runs/densities-2d}"
TOYS="${TOYS:-checkerboard two-moons spirals}"
SAMPLES="${SAMPLES:-20000}"
GRID="${GRID:-200}"
for toy in $TOYS; do
    "$HERE/../launch.sh" -c "$HERE/config.yaml" "$@" --data.init_args.name "$toy" \
        --trainer.logger.init_args.save_dir "$OUT" --trainer.logger.init_args.name "$toy" \
        --trainer.logger.init_args.version 0 --trainer.default_root_dir "$OUT"
    ckpt="$OUT/$toy/version_0/checkpoints/last.ckpt"
    si-lightning sample --ckpt "$ckpt" --sampler ode-heun-50 --num-samples "$SAMPLES" --out "$OUT/$toy/samples" --quiet
    si-lightning evaluate --ckpt "$ckpt" --metrics nll --nll-divergence exact --nll-split val \
        --nll-samples "${NLL_POINTS:-1024}" --nll-solver dopri5 --out "$OUT/$toy/evaluation"
    python "$HERE/figures.py" --ckpt "$ckpt" --samples "$OUT/$toy/samples/samples.npz" --grid "$GRID" \
        --out "$OUT/$toy/density.png"
done
