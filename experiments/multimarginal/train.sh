#!/usr/bin/env bash
# Train the multimarginal digits model (K = 4) and the 6 two-marginal models of the same edges, the
# latter with a sixth of the steps each (the same total), for one seed. Extra arguments go to every fit.
# MODELS=multimarginal or MODELS=pairs trains only one of the two.
#   [OUT=runs/multimarginal] [SEED=0] [STEPS=3000] [MODELS=all] experiments/multimarginal/train.sh [FIT ARGUMENTS]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CONFIG="$HERE/../../configs/experiments/digits-multimarginal.yaml"
OUT="${OUT:-runs/multimarginal}"
SEED="${SEED:-0}"
STEPS="${STEPS:-3000}"
MODELS="${MODELS:-all}"
PAIR_STEPS=$((STEPS / 6))
# a two-marginal model emits g_0, g_1 (and eta when the config's gamma is not zero: PAIR_OUTPUTS=3)
PAIR_OUTPUTS="${PAIR_OUTPUTS:-2}"
EXTRA=("$@")  # the script's own arguments, added to every fit
fit() {  # name, extra arguments
    local name="$1"
    shift
    si-lightning fit -c "$CONFIG" --seed_everything "$SEED" --trainer.default_root_dir "$OUT" \
        --trainer.logger.init_args.save_dir "$OUT" --trainer.logger.init_args.name "$name" \
        --trainer.logger.init_args.version "seed$SEED" --trainer.enable_progress_bar false "$@" "${EXTRA[@]}"
}
TIMEFORMAT="%R s wall, %U s user CPU"  # each fit's times (bash's time keyword) go to stderr
if [[ "$MODELS" != pairs ]]; then
    echo "multimarginal, $STEPS steps:" >&2
    time fit multimarginal --trainer.max_steps "$STEPS"
fi
[[ "$MODELS" != multimarginal ]] || exit 0
NAMES=(gaussian identity rotate90 invert)
for pair in "0 1" "0 2" "0 3" "1 2" "1 3" "2 3"; do
    read -r i j <<<"$pair"
    echo "pair $i-$j, $PAIR_STEPS steps:" >&2
    time fit "pair-$i-$j" --trainer.max_steps "$PAIR_STEPS" \
        --model.interpolant.init_args.num_marginals 2 --model.interpolant.init_args.alpha_sampler edges \
        --model.backbone.init_args.num_marginals 2 --model.backbone.init_args.out_channels "$PAIR_OUTPUTS" \
        --data.init_args.marginals "[${NAMES[$i]}, ${NAMES[$j]}]"
done
