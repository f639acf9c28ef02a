#!/usr/bin/env bash
# The table of README.md: train the energy-consistent interpolant and the two trained baselines at equal
# steps, roll each out on the held-out trajectories, score them (and persistence) against the solver.
#   experiments/turbulence/run.sh [OVERLAY.yaml]   (default overlay: cpu-small.yaml, what the table used)
# Run from the repository root; writes under ${OUT:-runs/turbulence}.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
config="$here/../../configs/experiments/kolmogorov-forecast.yaml"
overlay="${1:-$here/cpu-small.yaml}"
out="${OUT:-runs/turbulence}"
steps="${STEPS:-40}"
members="${MEMBERS:-4}"
sde_steps="${SDE_STEPS:-8}"
mkdir -p "$out"
for name in energy plain regression; do
  extra=()
  [ "$name" != energy ] && extra=(-c "$here/$name.yaml")
  si-lightning fit -c "$config" "${extra[@]}" -c "$overlay" --trainer.logger.init_args.name "$name" \
    --trainer.logger.init_args.save_dir "$out" --trainer.default_root_dir "$out" &
done
wait
python "$here/evaluate.py" --write-inputs "$out/held-out.npz"
for name in energy plain regression; do
  ensemble=$members
  [ "$name" = regression ] && ensemble=1  # deterministic: one member
  si-lightning forecast --ckpt "$out/$name/version_0/checkpoints/last.ckpt" --inputs "$out/held-out.npz" \
    --steps "$steps" --members "$ensemble" --sde-steps "$sde_steps" --out "$out/forecasts/$name" &
done
wait
python "$here/evaluate.py" --out "$out/results" \
  --checkpoints energy="$out/energy/version_0/checkpoints/last.ckpt" plain="$out/plain/version_0/checkpoints/last.ckpt" \
  --forecasts energy="$out/forecasts/energy" plain="$out/forecasts/plain" regression="$out/forecasts/regression"
