#!/usr/bin/env bash
# CIFAR-10: train (linear or trig interpolant), sample 50k with an ODE and an SDE, FID-50k.
#   INTERPOLANT=linear DEVICES=8 experiments/cifar10/run.sh [extra si-lightning fit arguments]
# Needs data/cifar10 (pass --data.init_args.download true once) and the InceptionV3 weights file
# (INCEPTION=path; torch-fidelity's pt_inception-2015-12-05 file, never downloaded here).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
INTERPOLANT="${INTERPOLANT:-linear}"
OUT="${OUT:-runs/cifar10-$INTERPOLANT}"
NUM="${NUM:-50000}"
DEVICES="${DEVICES:-1}"
"$HERE/../launch.sh" -c "$ROOT/configs/trainer.yaml" -c "$ROOT/configs/data/cifar10.yaml" \
    -c "$ROOT/configs/backbone/unet-cifar.yaml" -c "$ROOT/configs/interpolant/$INTERPOLANT.yaml" \
    -c "$HERE/train.yaml" --trainer.logger.init_args.save_dir "$OUT" --trainer.logger.init_args.version 0 \
    --trainer.default_root_dir "$OUT" "$@"
ckpt="$OUT/cifar10/version_0/checkpoints/last.ckpt"
for sampler in ${SAMPLERS:-dopri5 sde-euler-sbdm-250}; do
    si-lightning sample --ckpt "$ckpt" --sampler "$sampler" --seeds "0-$((NUM - 1))" --devices "$DEVICES" \
        --batch-size "${BATCH:-250}" --out "$OUT/samples-$sampler" --quiet
    si-lightning evaluate --samples "$OUT/samples-$sampler" --data-config "$OUT/cifar10/version_0/config.yaml" \
        --metrics "${METRICS:-fid}" ${INCEPTION:+--inception-weights "$INCEPTION"} --num-real "${NUM_REAL:-50000}" \
        --out "$OUT/evaluation-$sampler" ${EXTRA_EVALUATE:-}
done
