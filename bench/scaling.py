"""Data-parallel scaling under torchrun: env steps per second for 1, 2, ... ranks, same run each.

    python bench/scaling.py [--ranks 1 2] [--env doom-basic] [--num-envs 4] [--steps 30720] [--device cpu]
    python bench/scaling.py --device cuda --env breakout --num-envs 8 --ranks 1 2 4 8   # a multi-GPU machine

Each rank count trains PPO from scratch with ``--num-envs`` envs per rank (so n ranks step n
times the envs) through the real CLI, ``torchrun --standalone --nproc_per_node n train.py``, and
reports the global steps per second once started (the median of train.py's per-update figure,
the first update excluded) and the scaling efficiency, steps/s(n) / (n * steps/s(1)). ``1*``
is the plain ``python train.py`` run without torchrun, the baseline (the peer every row is
compared with). Each row also gives its rate against the machine's two bounds for one rank's work
(`bounds.py`, measured in the same run with the env's PPO preset and ``--num-envs`` envs: the
network alone and the env alone; data-parallel ranks split the same work per env step, so the
bounds hold for every row, before the all-reduce's cost). A benchmark, not a test: run it on an
otherwise idle machine; on a CPU, ranks share the cores with their env workers.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bounds import measure, preset_config

ROOT = Path(__file__).resolve().parent.parent


def run(ranks: int, args, directory: Path) -> float:
    run_dir = directory / f"ranks{ranks}"
    train = [str(ROOT / "train.py"), "--env", args.env, "--num-envs", str(args.num_envs), "--total-steps",
             str(args.steps), "--device", args.device, "--run-dir", str(run_dir), "--no-track", "--no-progress",
             "--checkpoint-seconds", "0"]
    if ranks == 0:
        command = [sys.executable, *train]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), *train]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return run_rate(run_dir)


def run_rate(run_dir: Path) -> float:
    """A finished run's steps/s: the median of train.py's per-update figure, the first update
    (start-up, first rollout) excluded."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        rates = [float(row["charts/steps_per_second"]) for row in csv.DictReader(handle)]
    return statistics.median(rates[1:] or rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--env", default="doom-basic")
    parser.add_argument("--num-envs", type=int, default=4, help="envs per rank")
    parser.add_argument("--steps", type=int, default=30_720, help="global env steps per run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bound-steps", type=int, default=2048, help="env steps over which bounds.py times the "
                        "network alone and the env alone")
    args = parser.parse_args()
    run_cfg, algo_cfg = preset_config("ppo", args.env, args.num_envs, ["--device", args.device])
    bounds = measure("ppo", algo_cfg, args.env, args.num_envs, device=args.device, backend=run_cfg.env_backend,
                     net_steps=args.bound_steps, env_steps=args.bound_steps)
    print(f"bounds: {bounds.summary()}; no-overlap {bounds.no_overlap:,.0f} steps/s, network-only "
          f"{bounds.network_only:,.0f} steps/s")
    with tempfile.TemporaryDirectory() as tmp:
        base = run(0, args, Path(tmp))
        print(f"{'ranks':>6} {'steps/s':>9} {'efficiency':>10} {'no-overlap':>10} {'net-only':>8}   ({args.env}, PPO, "
              f"{args.num_envs} envs per rank, {args.device}; the bounds' columns are fractions)")
        print(f"{'1*':>6} {base:9.0f} {'1.00':>10} {base / bounds.no_overlap:10.2f} {base / bounds.network_only:8.2f}"
              "   (python train.py, no torchrun: the peer)")
        for ranks in args.ranks:
            rate = run(ranks, args, Path(tmp))
            print(f"{ranks:>6} {rate:9.0f} {rate / (ranks * base):10.2f} {rate / bounds.no_overlap:10.2f} "
                  f"{rate / bounds.network_only:8.2f}   (ratio to 1*: {rate / base:.2f}x)")


if __name__ == "__main__":
    main()
