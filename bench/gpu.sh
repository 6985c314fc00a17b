#!/usr/bin/env bash
# pixelplay against Stable-Baselines3 on one CUDA device, in under 6 minutes, one table per part:
#   1. PPO on Breakout, 16 envs on both sides (pixelplay on EnvPool): steps/s, ratio, bounds, peak device memory,
#      and pixelplay again acting from a captured CUDA graph (--cuda-graphs)
#   2. DQN on Breakout (replay 100k, a gradient step per 4 env steps) with 1 env, then with 16: the same,
#      and pixelplay again without overlapping env steps and gradient steps (--no-overlap) and with --cuda-graphs
#   3. pixelplay's replay at 1M transitions on the device: memory, fill rate, sample rate
# Same hyperparameters and env counts on both sides (bench/ppo_vs_sb3.py, bench/dqn_vs_sb3.py).
#   bash bench/gpu.sh                 # on a CUDA machine
#   bash bench/gpu.sh --device cpu    # a dry run with tiny step counts (tests/test_bench.py runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
device=cuda
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="${2:-}"; shift $(( $# > 1 ? 2 : 1 )) ;;
        --device=*) device="${1#--device=}"; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "error: unknown option '$1'; usage: bash bench/gpu.sh [--device cuda|cpu]" >&2; exit 2 ;;
    esac
done
case "$device" in
    cuda)
        # Sized to end inside 6 minutes: twice these steps took ~330 s before the replay part, with one
        # pixelplay row fewer each (README, "Measured here", the gpu.sh row).
        ppo=(--num-envs 16 --steps 32768 --backend envpool)
        dqn1=(--num-envs 1 --steps 6000)
        dqn16=(--num-envs 16 --steps 12000 --backend envpool)
        replay=(--capacity 1000000 --num-envs 16 --samples 2000) ;;
    cpu)  # tiny: every code path once, no figure worth reading
        ppo=(--num-envs 2 --num-steps 16 --minibatch-size 32 --steps 32 --bound-steps 32)
        dqn1=(--num-envs 1 --steps 240 --buffer-size 500 --learning-starts 200 --bound-steps 16)
        dqn16=(--num-envs 8 --steps 240 --buffer-size 500 --learning-starts 200 --bound-steps 16)
        replay=(--capacity 1000 --num-envs 16 --samples 10) ;;
    *) echo "error: --device must be cuda or cpu, got '$device'" >&2; exit 2 ;;
esac
source bench/device_env.sh
require_modules torch numpy gymnasium ale_py cv2 stable_baselines3 pixelplay
if [ "$device" = cuda ]; then
    require_modules envpool
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || { echo "error: torch sees no CUDA device; run with --device cpu for a dry run" >&2; exit 1; }
    "$PYTHON" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.name}, {p.total_memory / 2**30:.0f} GiB')"
fi
export PYTHONUNBUFFERED=1
start=$SECONDS
echo "== 1. PPO, Breakout ($device)"
"$PYTHON" bench/ppo_vs_sb3.py --device "$device" --double-buffer --cuda-graphs "${ppo[@]}"
echo "== 2a. DQN, Breakout, 1 env ($device)"
"$PYTHON" bench/dqn_vs_sb3.py --device "$device" --cuda-graphs "${dqn1[@]}"
echo "== 2b. DQN, Breakout, ${dqn16[1]} envs ($device)"
"$PYTHON" bench/dqn_vs_sb3.py --device "$device" --cuda-graphs "${dqn16[@]}"
echo "== 3. replay at ${replay[1]} transitions ($device)"
"$PYTHON" bench/replay_device.py --device "$device" "${replay[@]}"
echo "bench/gpu.sh: done in $(( SECONDS - start )) s"
