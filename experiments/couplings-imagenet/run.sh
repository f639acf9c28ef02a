#!/usr/bin/env bash
# Data-dependent couplings on ImageNet ([C]): TASK=superres (64 -> 256) or TASK=inpainting (256).
#   TASK=superres DEVICES=8 experiments/couplings-imagenet/run.sh [extra si-lightning fit arguments]
# CONFIG overrides the task's config (the configs/experiments files of the coupling experiments).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TASK="${TASK:?set TASK=superres or TASK=inpainting}"
case "$TASK" in
    superres) CONFIG="${CONFIG:-$ROOT/configs/experiments/imagenet-superres-64-256.yaml}" ;;
    inpainting) CONFIG="${CONFIG:-$ROOT/configs/experiments/imagenet-inpainting-256.yaml}" ;;
    *) echo "error: TASK = $TASK: superres or inpainting" >&2; exit 2 ;;
esac
if [[ ! -f "$CONFIG" ]]; then
    echo "error: CONFIG = $CONFIG: the coupling experiment's config file (set CONFIG=path)" >&2
    exit 2
fi
OUT="${OUT:-runs/couplings-$TASK}"
"$HERE/../launch.sh" -c "$CONFIG" --trainer.logger.init_args.save_dir "$OUT" \
    --trainer.logger.init_args.version 0 --trainer.default_root_dir "$OUT" "$@"
