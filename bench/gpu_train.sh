#!/usr/bin/env bash
# Train PPO on Breakout on a CUDA machine for a fixed wall time, then bring back what it learned:
# 16 EnvPool envs, the Atari preset (CleanRL's ppo_atari settings; 10M steps: the learning-rate
# schedule of a full run), stopped cleanly at the time limit (timeout sends SIGTERM: train.py saves
# a checkpoint and exits 143), then exported weights-only (python -m pixelplay.eval export).
#   bash bench/gpu_train.sh MINUTES [OUT_DIR] [--device cuda|cpu] [-- more train.py flags]
# OUT_DIR (default: $OUT, else runs/gpu-breakout-ppo) receives at most 8 files, none large:
#   agent.pt, config.json, README.md   the exported agent (python -m pixelplay.eval score OUT_DIR)
#   episodes.csv, metrics.csv          the run's logs
#   *.png                              the learning curve (python -m pixelplay.eval plot)
# The full run directory (resumable: python train.py --resume RUN) stays under runs/.
# The figure to beat (issue 11): CleanRL's PPO on JAX + EnvPool, one GPU: 420.9 on Breakout at
# 10M steps in 39.6 minutes, as CleanRL's PPO documentation reports it.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash bench/gpu_train.sh MINUTES [OUT_DIR] [--device cuda|cpu] [-- train.py flags]"
minutes="" out="" device=cuda extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="${2:-}"; shift $(( $# > 1 ? 2 : 1 )) ;;
        --device=*) device="${1#--device=}"; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        -*) echo "error: unknown option '$1'; $usage" >&2; exit 2 ;;
        *) if [ -z "$minutes" ]; then minutes=$1; elif [ -z "$out" ]; then out=$1; else
               echo "error: too many arguments; $usage" >&2; exit 2; fi; shift ;;
    esac
done
if ! [[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ ]] || [ "$minutes" = 0 ]; then
    echo "error: MINUTES must be a positive number, got '${minutes}'; $usage" >&2; exit 2
fi
case "$device" in cuda|cpu) ;; *) echo "error: --device must be cuda or cpu, got '$device'" >&2; exit 2 ;; esac
out=${out:-${OUT:-runs/gpu-breakout-ppo}}
run_dir="runs/gpu-breakout-ppo__$(date +%Y%m%d-%H%M%S)"
source bench/device_env.sh
require_modules torch numpy gymnasium ale_py cv2 envpool matplotlib pixelplay
export PYTHONUNBUFFERED=1
echo "training PPO on Breakout for $minutes min on $device; run in $run_dir, results into $out"
status=0
timeout --preserve-status -s TERM -k 120 "${minutes}m" \
    "$PYTHON" train.py --algo ppo --env breakout --num-envs 16 --env-backend envpool --device "$device" \
    --run-dir "$run_dir" --no-track --no-progress --keep-checkpoints 1 ${extra[@]+"${extra[@]}"} || status=$?
# 0: the run finished its steps; 143: stopped at the time limit (SIGTERM), its checkpoint saved.
if [ "$status" -ne 0 ] && [ "$status" -ne 143 ]; then
    echo "error: train.py exited with $status" >&2; exit "$status"
fi
mkdir -p "$out"
"$PYTHON" -m pixelplay.eval export "$run_dir" "$out"
cp "$run_dir/episodes.csv" "$run_dir/metrics.csv" "$out/" 2>/dev/null || true
"$PYTHON" -m pixelplay.eval plot "$run_dir" --out "$out" || echo "note: no learning curve (too few episodes?)" >&2
ls -l "$out"
