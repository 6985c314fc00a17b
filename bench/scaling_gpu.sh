#!/usr/bin/env bash
# Scaling of data-parallel PPO on Breakout over the GPUs of one machine (1, 2, 4, ... up to all),
# one rank per GPU on NCCL, 8 EnvPool envs per rank; prints steps/s and scaling efficiency.
#   bash bench/scaling_gpu.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
gpus=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$gpus" -lt 1 ]; then echo "no CUDA device: nothing to measure" >&2; exit 1; fi
ranks=""
for n in 1 2 4 8 16; do [ "$n" -le "$gpus" ] && ranks="$ranks $n"; done
python bench/scaling.py --device cuda --env breakout --num-envs 8 --steps "${1:-204800}" --ranks $ranks
