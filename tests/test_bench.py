"""The benchmark scripts stay runnable: bench/bounds.py on tiny shapes, bench/gpu.sh's CPU dry run,
and the pieces of bench/time_to_solve.py that decide what the SB3 side sees and when a side is done.

Benchmarks measure nothing here (no figure is asserted): these tests check that each script runs
its whole path, that the network bound takes exactly the agent's own update schedule, and that the
SB3 side of the time-to-solve bench sees the game as pixelplay's `DoomEnv` does.
"""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelplay.agents import ALGOS, Algo
from pixelplay.agents.dqn import DQNAgent, DQNConfig
from pixelplay.agents.ppo import PPOAgent, PPOConfig

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def _load(name: str):
    """A bench script as a module: bench/ is a folder of scripts that import each other by name,
    as ``python bench/x.py`` puts bench/ first on sys.path."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


bounds = _load("bounds")
TINY_OBS = (4, 36, 36)  # the smallest square frame the Nature CNN tiles (36 -> 8 -> 3 -> 1)


def test_bounds_are_the_rates_of_the_work_done_in_sequence_and_of_the_network_alone():
    b = bounds.Bounds(net_seconds=0.003, env_seconds=0.001)
    assert b.no_overlap == pytest.approx(250.0)
    assert b.network_only == pytest.approx(1000.0 / 3)
    text = b.describe(200.0)
    assert "0.80 of the no-overlap bound (250 steps/s)" in text
    assert "0.60 of the network-only bound (333 steps/s)" in text
    assert b.double_buffered is None and "double-buffered" not in text  # off-policy: no such bound


def test_double_buffered_bound_hides_the_env_behind_acting_only():
    # 3 ms of network per step, 2 of them the update: acting 1 ms hides a 1 ms env step fully
    # (1 / 3 ms), a 1.5 ms env step only in part (1 / 3.5 ms); the update is never hidden.
    hidden = bounds.Bounds(net_seconds=0.003, env_seconds=0.001, update_seconds=0.002)
    assert hidden.double_buffered == pytest.approx(1000.0 / 3) == pytest.approx(hidden.network_only)
    partly = bounds.Bounds(net_seconds=0.003, env_seconds=0.0015, update_seconds=0.002)
    assert partly.double_buffered == pytest.approx(1000.0 / 3.5)
    assert partly.no_overlap < partly.double_buffered < partly.network_only
    assert "0.70 of the double-buffered bound (286 steps/s)" in partly.describe(200.0)


def test_synthetic_env_gives_consecutive_stacks_and_an_episode_end():
    envs = bounds.SyntheticEnv(3, (4, 6, 5), 2, 4, "cpu", episode_length=5)
    obs = envs.reset()
    first = obs.clone()
    for t in range(10):
        result = envs.step(torch.zeros(3, dtype=torch.long))
        # final_obs is obs one frame on (oldest frame dropped, a new newest frame)
        assert torch.equal(result.final_obs[:, :-1], obs[:, 1:])
        ended = t % 5 == 4
        assert bool(result.terminated.all()) is ended and not bool(result.terminated.any()) is not ended
        assert not bool(result.truncated.any())
        assert torch.equal(result.obs, first if ended else result.final_obs)
        obs = result.obs


def _counting(agent_class):
    class Counting(agent_class):
        updates = 0

        def update(self, step):
            type(self).updates += 1
            type(self).last = self
            return super().update(step)

    return Counting


def test_network_bound_runs_dqn_in_its_steady_state_one_gradient_step_per_train_frequency(monkeypatch):
    counting = _counting(DQNAgent)
    monkeypatch.setitem(ALGOS, "dqn", Algo(DQNConfig, counting, weights=("q_net",)))
    cfg = DQNConfig(buffer_size=64, batch_size=4, learning_starts=1000, train_frequency=2, n_step=3,
                    features_dim=16, exploration_fraction=0.5)
    seconds, update_seconds = bounds.network_seconds("dqn", cfg, TINY_OBS, 3, 2, 4, "cpu", steps=8)
    assert math.isfinite(seconds) and seconds > update_seconds > 0
    agent = counting.last
    # 2 envs, a gradient step every 2 env steps: one per vector step once the replay is filled (the
    # fill's last step, the warm-up round, then the 4 timed rounds); no burst of catch-up steps for
    # the env steps before learning started.
    assert agent.gradient_steps == 6 and counting.updates == 6
    assert agent.epsilon(agent.learning_starts) == pytest.approx(cfg.final_epsilon)  # past the decay


def test_network_bound_times_whole_ppo_rollouts(monkeypatch):
    counting = _counting(PPOAgent)
    monkeypatch.setitem(ALGOS, "ppo", Algo(PPOConfig, counting, weights=("net",)))
    cfg = PPOConfig(num_steps=4, num_minibatches=2, update_epochs=1, features_dim=16)
    seconds, update_seconds = bounds.network_seconds("ppo", cfg, TINY_OBS, 3, 2, 4, "cpu", steps=9)
    assert math.isfinite(seconds) and seconds > update_seconds > 0
    assert counting.updates == 3  # the warm-up rollout, then 9 steps rounded up to 2 rollouts of 8


def test_measure_times_the_real_env_and_the_agent():
    cfg = PPOConfig(num_steps=4, num_minibatches=1, update_epochs=1, features_dim=16)
    b = bounds.measure("ppo", cfg, "breakout", 1, backend="gymnasium", net_steps=4, env_steps=8)
    assert b.net_seconds > b.update_seconds > 0 and b.env_seconds > 0
    assert b.network_only >= b.double_buffered > b.no_overlap


def test_gpu_script_dry_run_on_cpu():
    """bench/gpu.sh --device cpu: every part once with tiny step counts (no figure is checked)."""
    result = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--device", "cpu"], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert out.count("ratio pixelplay / SB3") == 3
    assert out.count("overlap gains") == 2  # DQN's runs time pixelplay with and without --overlap
    assert out.count("of the no-overlap bound") == 3 and out.count("of the network-only bound") == 3
    assert "8 env(s)" in out and "1 env(s)" in out
    assert "fill:" in out and "sample:" in out and "bytes/transition" in out
    assert out.count("--cuda-graphs:") == 3  # the graphed row of each throughput part (a no-op off CUDA)


def test_offline_wheels_refuses_a_malformed_python_version_before_downloading():
    result = subprocess.run(["bash", str(BENCH / "offline_wheels.sh"), "twelve"], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 2 and "must look like 3.12" in result.stderr


def test_gpu_script_refuses_an_unknown_device():
    result = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--device", "tpu"], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 2 and "cuda or cpu" in result.stderr


# ---- bench/time_to_solve.py ------------------------------------------------------------------

tts = _load("time_to_solve")


def _gym_game_seed(seed: int) -> int:
    """The game seed ViZDoom's gymnasium env sets on reset(seed=seed): the first uint32 its
    np_random (gymnasium's seeding: PCG64 over SeedSequence(seed)) draws."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    return int(rng.integers(0, np.iinfo(np.uint32).max + 1, dtype=np.uint32))


@pytest.mark.parametrize("attack", [False, True], ids=["timeout", "random"])
def test_same_frames_sees_the_game_as_pixelplays_doom_env(attack):
    """The SB3 side's wrapper over ViZDoom's own gymnasium env gives what pixelplay's DoomEnv gives
    for the same game: the same frames pixel for pixel, the same training rewards, and a timeout
    as a truncation only (ViZDoom's wrapper flags it as a termination too)."""
    from pixelplay.envs.doom import DoomEnv

    seed = next(s for s in range(100) if _gym_game_seed(s) < 2**31)  # DoomEnv seeds the game mod 2**31
    ours = DoomEnv("basic", seed=0, training=True)
    theirs = tts.make_same_frames_env("doom-basic", 0)
    try:
        ours.reset()
        theirs.reset()  # each then starts a new episode with the same game seed
        a, _ = ours.reset(seed=_gym_game_seed(seed))
        b, _ = theirs.reset(seed=seed)
        assert np.array_equal(a, b)
        rng = np.random.default_rng(seed)
        for _ in range(200):
            action = int(rng.integers(0, 3 if attack else 2))  # 0, 1: move; 2: attack
            a, ra, ta, ua, info = ours.step(action)
            b, rb, tb, ub, their_info = theirs.step(action)
            assert np.array_equal(a, b) and ra == pytest.approx(rb) and (ta, ua) == (tb, ub)
            if ta or ua:
                assert their_info["raw_return"] == pytest.approx(info["pixelplay_episode"]["return"])
                break
        else:
            pytest.fail("the episode did not end within its 300-tic timeout")
        if not attack:
            assert ua and not ta  # moving only: the timeout ends it, a truncation
    finally:
        ours.close()
        theirs.close()


def test_sample_factory_report_lines_are_read():
    colour = "\x1b[36m[2026-11-30 03:48:06,508][32519] "
    assert tts.parse_sf_line(colour + "Fps is (10 sec: 409.6, 60 sec: 409.6, 300 sec: 354.2). Total num frames: "
                             "24576. Throughput: 0: 109.6. Samples: 7283. Policy #0 lag: (min: 0.0)\x1b[0m") == (
        "samples", 7283.0)
    assert tts.parse_sf_line(colour + "Avg episode reward: [(0, '-1.658')]\x1b[0m") == ("reward", -1.658)
    assert tts.parse_sf_line(colour + "Avg episode reward: [(0, '0.812')]") == ("reward", 0.812)
    assert tts.parse_sf_line("Collected {0: 28672}, FPS: 354.2") is None


def test_run_side_stops_when_told_and_at_the_cap():
    count = "import time\nfor i in range(10000): print(i, flush=True); time.sleep(0.01)"
    seen = []
    seconds, capped = tts.run_side([sys.executable, "-c", count], 600, lambda text, t: seen.append(text) or text == "3")
    assert not capped and seen[:4] == ["0", "1", "2", "3"] and len(seen) < 10000
    seconds, capped = tts.run_side([sys.executable, "-c", count], 0.5, lambda text, t: False)
    assert capped and seconds >= 0.5


def test_run_side_ends_when_the_process_ends_even_if_a_worker_holds_its_output():
    """A side whose workers outlive it (SB3's subprocess envs after a SIGTERM) must not keep the bench
    waiting for their pipe to close; they are killed with the side's process group."""
    with tempfile.TemporaryDirectory() as tmp:
        pid_file = Path(tmp) / "worker.pid"
        script = (f"import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
                  f"open({str(pid_file)!r}, 'w').write(str(p.pid))\nprint('started', flush=True)")
        done = threading.Event()
        thread = threading.Thread(target=lambda: (tts.run_side([sys.executable, "-c", script], 600,
                                                               lambda text, t: False), done.set()), daemon=True)
        thread.start()
        thread.join(timeout=120)  # a liveness bound, not a timing: the worker would hold on for 600 s
        assert done.is_set(), "run_side waited for the worker that still held the side's output"
        status = Path(f"/proc/{int(pid_file.read_text())}/status")
        for _ in range(100):  # SIGKILL was sent; the kernel ends the process a moment later
            if not status.exists() or "zombie" in status.read_text():
                break
            time.sleep(0.1)
        else:
            pytest.fail("the worker that outlived its side is still running")


# ---- bench/deathmatch_aimer.py ---------------------------------------------------------------


def test_the_aimer_plays_a_match_through_the_env():
    aimer = _load("deathmatch_aimer")
    record = aimer.play(minutes=0.1, bots=2, seed=1)
    assert {"kills", "deaths", "suicides", "objects"} <= set(record)
    assert 0 < record["length"] <= 0.1 * 60 * 35 / 4  # at most one step per 4 tics of the match
