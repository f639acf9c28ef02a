#!/usr/bin/env bash
# Data-dependent couplings on ImageNet ([C]): TASK=superres (64 -> 256) or TASK=inpainting (256).
#   TASK=superres DEVICES=8 experiments/couplings-imagenet/run.sh [extra si-lightning fit arguments]
# Trains with the task's config (configs/experiments/imagenet256-{superres,inpainting}.yaml; CONFIG=path
# for another), then, with INPUTS=folder of held-out images at the model's size (prepare_inputs.py),
# restores each of them (si-lightning sample --inputs) and computes FID of restored versus those images.
# INCEPTION=path: torch-fidelity's InceptionV3 weights file (never downloaded here).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TASK="${TASK:?set TASK=superres or TASK=inpainting}"
case "$TASK" in
    superres) CONFIG="${CONFIG:-$ROOT/configs/experiments/imagenet256-superres.yaml}" ;;
    inpainting) CONFIG="${CONFIG:-$ROOT/configs/experiments/imagenet256-inpainting.yaml}" ;;
    *) echo "error: TASK = $TASK: superres or inpainting" >&2; exit 2 ;;
esac
if [[ ! -f "$CONFIG" ]]; then
    echo "error: CONFIG = $CONFIG: the coupling experiment's config file (set CONFIG=path)" >&2
    exit 2
fi
OUT="${OUT:-runs/couplings-$TASK}"
DEVICES="${DEVICES:-1}"
"$HERE/../launch.sh" -c "$CONFIG" --trainer.logger.init_args.save_dir "$OUT" \
    --trainer.logger.init_args.version 0 --trainer.default_root_dir "$OUT" "$@"
if [[ -z "${INPUTS:-}" ]]; then
    exit 0
fi
ckpt="$OUT/imagenet256-$TASK/version_0/checkpoints/last.ckpt"
SAMPLER="${SAMPLER:-ode-heun-50}"
si-lightning sample --ckpt "$ckpt" --inputs "$INPUTS" --sampler "$SAMPLER" --devices "$DEVICES" \
    --batch-size "${BATCH:-125}" --out "$OUT/samples-$SAMPLER" --quiet ${NUM:+--num-samples "$NUM"}
si-lightning evaluate --samples "$OUT/samples-$SAMPLER" --reference "$INPUTS" --metrics "${METRICS:-fid}" \
    ${INCEPTION:+--inception-weights "$INCEPTION"} --out "$OUT/evaluation-$SAMPLER" ${EXTRA_EVALUATE:-}
