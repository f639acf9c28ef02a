#!/usr/bin/env bash
# Classifier-free guidance of the class-conditional digits model against search with the digits
# classifier's reward on the same model's unconditional (null-label) branch, at equal NFE, digit 3.
#   bash experiments/conditional/guidance_vs_search.sh runs/digits-class-guidance/version_0/checkpoints/last.ckpt OUT
set -euo pipefail
checkpoint=$1
out=${2:-guidance-vs-search}
count=${COUNT:-100}
common=(--ckpt "$checkpoint" --num-samples "$count" --no-png --quiet)
si-lightning sample "${common[@]}" --labels 3 --sampler ode-heun-20 --out "$out/cfg-w1"
si-lightning sample "${common[@]}" --labels 3 --guidance-scale 2 --sampler ode-heun-20 --out "$out/cfg-w2"
reward=(--reward digits-class:3)
# One path of s steps costs s + 1 NFE: 12 steps give 3 paths in 39, 25 steps 3 paths in 78, 12 steps 6 in 78.
ode() { echo "{class_path: ODESampler, init_args: {method: euler, steps: $1}}"; }
sde() { echo "{class_path: SDESampler, init_args: {method: euler-maruyama, diffusion: sigma, steps: $1}}"; }
si-lightning sample "${common[@]}" --search best-of-n "${reward[@]}" --budget 39 --sampler "$(ode 12)" \
    --out "$out/best-of-3-nfe39"
si-lightning sample "${common[@]}" --search best-of-n "${reward[@]}" --budget 78 --sampler "$(ode 25)" \
    --out "$out/best-of-3-nfe78"
si-lightning sample "${common[@]}" --search smc "${reward[@]}" --budget 78 --sampler "$(sde 12)" \
    --out "$out/smc-6-nfe78"
si-lightning sample "${common[@]}" --search rbf "${reward[@]}" --budget 78 --sampler "$(sde 25)" \
    --out "$out/rbf-nfe78"
python "$(dirname "$0")/requested_digit.py" --digit 3 "$out"/cfg-w1 "$out"/cfg-w2 "$out"/best-of-3-nfe39 \
    "$out"/best-of-3-nfe78 "$out"/smc-6-nfe78 "$out"/rbf-nfe78
