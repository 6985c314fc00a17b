"""PPO learns ViZDoom basic from pixels within the step budget of the issue (150k steps)."""

import csv
import statistics

import pytest

from pixelplay import train


@pytest.mark.slow
def test_ppo_learns_doom_basic(tmp_path):
    run_dir = tmp_path / "ppo-basic"
    # The default command (`python train.py`), default precision and layout, stopped once solved.
    assert train.main(["--env", "doom-basic", "--algo", "ppo", "--seed", "1", "--total-steps", "150000",
                       "--stop-return", "75", "--run-dir", str(run_dir), "--no-track", "--no-progress"]) == 0
    with open(run_dir / "episodes.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    returns = [float(row["return"]) for row in rows]
    assert len(returns) >= 20
    last_20 = statistics.mean(returns[-20:])
    assert last_20 >= 75, f"mean return of the last 20 episodes {last_20:.1f} < 75"
