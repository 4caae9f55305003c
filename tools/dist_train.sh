#!/usr/bin/env bash
# Data-parallel training on the devices of one machine: one process per device under torchrun
# (the pattern of mmpretrain's tools/dist_train.sh). Every argument after the process count is
# passed to `python -m benchmark train`:
#
#   tools/dist_train.sh 8 method=dpl                                # 8 GPUs, train_set ff_c23, seed 0
#   tools/dist_train.sh 8 method=dpl seed=1 profile=paper train.amp=bf16
#   tools/dist_train.sh 2 method=baseline device=cpu                # 2 CPU processes (gloo), for testing
#
# Several machines: run the same command on each, with NNODES (machines), NODE_RANK (0..NNODES-1),
# MASTER_ADDR (the host of NODE_RANK 0) and PORT set. train.batch_size stays the global batch:
# each process takes batch_size / (processes x NNODES). Only `train` runs like this; prepare the
# data before (one process: `dvc repro indicators`) and evaluate after (`python -m benchmark run
# protocol=...`, which finds the trained model current).
set -euo pipefail
NPROC=${1:?usage: tools/dist_train.sh NPROC method=NAME [key=value ...]}
shift
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROC" \
    -m benchmark train launcher=pytorch "$@"
