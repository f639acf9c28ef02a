#!/usr/bin/env bash
# Runs `si-lightning fit` with the given arguments on one node, under torchrun, or under SLURM.
#
#   experiments/launch.sh -c configs/... [more si-lightning fit arguments]          # one node, DEVICES GPUs
#   NODES=4 MASTER_ADDR=host0 NODE_RANK=0 experiments/launch.sh -c ...              # torchrun, on every node
#   sbatch --nodes 4 --gpus-per-node 8 --ntasks-per-node 8 experiments/launch.sh -c ...   # SLURM (srun inside)
#
# DEVICES (default 1) is the number of GPUs (or CPU processes) per node. Lightning reads the SLURM and
# torchrun environments itself; the script only passes the matching trainer flags.
set -euo pipefail
DEVICES="${DEVICES:-1}"
NODES="${NODES:-${SLURM_JOB_NUM_NODES:-1}}"
if [[ -n "${SLURM_JOB_ID:-}" && -z "${SLURM_STEP_ID:-}" ]]; then
    exec srun si-lightning fit "$@" --trainer.devices "${SLURM_NTASKS_PER_NODE:-$DEVICES}" --trainer.num_nodes "$NODES"
elif [[ "$NODES" -gt 1 ]]; then
    exec torchrun --nnodes "$NODES" --nproc-per-node "$DEVICES" --node-rank "${NODE_RANK:?set NODE_RANK}" \
        --master-addr "${MASTER_ADDR:?set MASTER_ADDR}" --master-port "${MASTER_PORT:-29500}" \
        -m si_lightning.cli fit "$@" --trainer.devices "$DEVICES" --trainer.num_nodes "$NODES"
else
    exec si-lightning fit "$@" --trainer.devices "$DEVICES"
fi
