"""Learner threads and precision on a CPU: PPO env steps per second of train.py under each setting.

    python bench/cpu_threads.py [--env doom-basic] [--steps 20480] [--threads 0 1] [--precision fp32 auto]
    python bench/cpu_threads.py --concurrent 2      # two identical trainings at once (a shared machine)

A synchronous PPO learner shares the CPU with its env worker processes. Each parallel region of
an intra-op pool (every convolution, every matmul) ends at a barrier that waits for all of the
pool's threads; when more runnable threads than cores compete (the workers, or other trainings),
a thread that lost its core holds the barrier until the scheduler gives it one back, so a pool as
wide as the machine pays a time slice where a single thread pays nothing. train.py already makes
idle threads sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE``); this measures what is left. The
large loss shows with bf16 autocast on AMX (two trainings at once ran 8.9x faster with one thread
each); in fp32 the same pair gained 1.18x. With ``--concurrent N``, N identical trainings start
together (several runs sharing one machine, as a seed sweep does) and the row gives each one's rate
and their sum. Each setting trains PPO from scratch through the real CLI (``python train.py
--threads T --precision P``) and reports the median of train.py's per-update steps/s (first update
excluded). Threads ``0`` is torch's default (one per core); the ratio column is against the first
row, the peer. A benchmark, not a test: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from scaling import run_rate

ROOT = Path(__file__).resolve().parent.parent


def launch(run_dir: Path, args, threads: int, precision: str) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "train.py"), "--env", args.env, "--total-steps", str(args.steps),
               "--precision", precision, "--threads", str(threads), "--run-dir", str(run_dir), "--no-track", "--no-progress",
               "--checkpoint-seconds", "0"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def measure(args, threads: int, precision: str, directory: Path) -> list[float]:
    runs = [directory / f"t{threads}_{precision}_{i}" for i in range(args.concurrent)]
    procs = [launch(run_dir, args, threads, precision) for run_dir in runs]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            sys.exit(f"train.py failed (threads {threads}, precision {precision}):\n{err[-2000:]}")
    return [run_rate(run_dir) for run_dir in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="doom-basic")
    parser.add_argument("--steps", type=int, default=20_480, help="env steps per training")
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1],
                        help="train.py --threads per training (0: torch's default)")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "auto"])
    parser.add_argument("--concurrent", type=int, default=1, help="identical trainings run at once")
    args = parser.parse_args()
    import torch  # noqa: PLC0415 (only to print the default; the trainings are subprocesses)

    print(f"{args.env}, PPO preset, {args.steps:,} steps per training, {args.concurrent} at once, "
          f"{os.cpu_count()} CPUs, torch default threads {torch.get_num_threads()}")
    print(f"{'threads':>8} {'precision':>9} {'steps/s each':>24} {'sum':>7} {'ratio':>6}")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precision:
            for threads in args.threads:
                rates = measure(args, threads, precision, Path(tmp))
                total = sum(rates)
                base = base or total
                each = " ".join(f"{r:.0f}" for r in rates)
                print(f"{threads or 'default':>8} {precision:>9} {each:>24} {total:7.0f} {total / base:5.2f}x")


if __name__ == "__main__":
    main()
