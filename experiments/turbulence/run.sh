#!/usr/bin/env bash
# The tables of README.md: train the energy-consistent interpolant and the two trained baselines at equal
# steps, roll each out on the held-out trajectories, score them (and persistence) against the solver.
#   experiments/turbulence/run.sh [FIT ARGUMENTS ...]   (added to every fit: -c OVERLAY.yaml, --seed_everything 1)
# Run from the repository root; writes under ${OUT:-runs/turbulence}. Three tables:
#   short:  40 steps from the 4 test trajectories' first states, 4 members, 8 SDE steps per forecast step;
#   long:   500 steps from the same states, 4 members, 8 SDE steps, scored against the test trajectories run
#           on by the solver to 501 snapshots, the spectrum averaged over leads 100-500 (floor: 16 independent
#           solver trajectories);
#   spread: 10 steps from 36 windows of the test trajectories, 8 members, 8 SDE steps (the spread-skill ratio).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
config="$here/../../configs/experiments/kolmogorov-forecast.yaml"
out="${OUT:-runs/turbulence}"
evaluate=(python "$here/evaluate.py" --data-root "${DATA_ROOT:-data/kolmogorov}")
mkdir -p "$out"
for name in energy plain regression; do
  extra=()
  [ "$name" != energy ] && extra=(-c "$here/$name.yaml")
  si-lightning fit -c "$config" "${extra[@]}" "$@" --trainer.logger.init_args.name "$name" \
    --trainer.logger.init_args.save_dir "$out" --trainer.default_root_dir "$out" &
done
wait
"${evaluate[@]}" --write-inputs "$out/held-out.npz"
"${evaluate[@]}" --write-inputs "$out/held-out-500.npz" --snapshots 501 --floor-trajectories 16
"${evaluate[@]}" --write-inputs "$out/windows.npz" --window 10

# table, inputs, steps, members of the stochastic models, SDE steps
tables=("short held-out.npz 40 4 8" "long held-out.npz 500 4 8" "spread windows.npz 10 8 8")
for entry in "${tables[@]}"; do
  read -r table inputs steps members sde_steps <<<"$entry"
  for name in energy plain regression; do
    ensemble=$members
    [ "$name" = regression ] && ensemble=1  # deterministic: one member
    [ "$table" = spread ] && [ "$name" = regression ] && continue  # no spread to score
    si-lightning forecast --ckpt "$out/$name/version_0/checkpoints/last.ckpt" --inputs "$out/$inputs" \
      --steps "$steps" --members "$ensemble" --sde-steps "$sde_steps" --out "$out/$table/$name"
  done
done
"${evaluate[@]}" --out "$out/results" \
  --checkpoints energy="$out/energy/version_0/checkpoints/last.ckpt" plain="$out/plain/version_0/checkpoints/last.ckpt" \
  --forecasts energy="$out/short/energy" plain="$out/short/plain" regression="$out/short/regression"
"${evaluate[@]}" --out "$out/results-500" --truth "$out/held-out-500.npz" --spectrum-from 100 \
  --forecasts energy="$out/long/energy" plain="$out/long/plain" regression="$out/long/regression"
"${evaluate[@]}" --out "$out/results-spread" --truth "$out/windows.npz" --spectrum-from 1 \
  --forecasts energy="$out/spread/energy" plain="$out/spread/plain"
