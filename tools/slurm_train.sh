#!/usr/bin/env bash
# Data-parallel training under SLURM: one srun task per GPU (the pattern of mmpretrain's
# tools/slurm_train.sh). Every argument after the partition and the job name is passed to
# `python -m benchmark train`:
#
#   tools/slurm_train.sh gpu dpl-s0 method=dpl profile=paper                 # 8 GPUs on one node
#   GPUS=16 GPUS_PER_NODE=8 tools/slurm_train.sh gpu dpl-s0 method=dpl        # two nodes
#   SRUN_ARGS="--time=02:00:00 --qos=normal" tools/slurm_train.sh gpu dpl-s0 method=dpl
#
# Each task reads SLURM_PROCID (rank), SLURM_NTASKS (world size), SLURM_LOCALID (its GPU) and the
# first host of SLURM_NODELIST (the rendezvous, port PORT, default 29500); see
# benchmark/engine/distributed.py. train.batch_size stays the global batch. Only `train` runs
# like this: prepare the data before and evaluate after, in one process.
set -euo pipefail
PARTITION=${1:?usage: tools/slurm_train.sh PARTITION JOB_NAME method=NAME [key=value ...]}
JOB_NAME=${2:?usage: tools/slurm_train.sh PARTITION JOB_NAME method=NAME [key=value ...]}
shift 2
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
CPUS_PER_TASK=${CPUS_PER_TASK:-8}
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
export MASTER_PORT=${PORT:-29500} OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
# shellcheck disable=SC2086  # SRUN_ARGS is a list of options
exec srun --partition="$PARTITION" --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "$PYTHON" -u -m benchmark train launcher=slurm "$@"
