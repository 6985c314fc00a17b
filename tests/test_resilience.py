"""Fault injection on the real CLI: stops, kills and bad input never lose work or give a traceback."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelplay import train
from pixelplay.agents import ALGOS, make_config, restore_agent
from pixelplay.agents.checkpoint import load_checkpoint, rng_state, set_rng_state

ROOT = Path(__file__).resolve().parent.parent
SMALL_PPO = ["--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "1", "--no-progress", "--no-track"]


def _steps(path: Path) -> list[int]:
    with open(path, newline="") as handle:
        return [int(row["global_step"]) for row in csv.DictReader(handle)]


def _start(run_dir: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, str(ROOT / "train.py"), "--env", "doom-basic", "--num-envs", "2",
            "--total-steps", "100000", "--run-dir", str(run_dir), *SMALL_PPO, *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.2)


def _metric_rows(run_dir: Path) -> int:
    path = run_dir / "metrics.csv"
    return len(_steps(path)) if path.exists() else 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_saves_and_resume_finishes(tmp_path, signum):
    run_dir = tmp_path / "stopped"
    proc = _start(run_dir, "--checkpoint-interval", "100000", "--checkpoint-seconds", "0")
    _wait_for(lambda: _metric_rows(run_dir) >= 3, proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "leaked" not in err, err
    assert f"stopped by {signal.Signals(signum).name}" in err and f"--resume {run_dir}" in err
    saved = load_checkpoint(run_dir)["global_step"]
    assert saved >= 192 and saved % 64 == 0  # labelled with the last update's step

    assert train.main(["--resume", str(run_dir), "--total-steps", str(saved + 128), "--no-track", "--no-progress"]) == 0
    steps = _steps(run_dir / "metrics.csv")
    assert steps == sorted(steps) and steps[-1] == saved + 128
    assert load_checkpoint(run_dir)["global_step"] == saved + 128


def test_kill_9_then_resume_drops_rows_past_the_checkpoint_and_stale_temporaries(tmp_path):
    run_dir = tmp_path / "killed"
    proc = _start(run_dir, "--checkpoint-interval", "128", "--checkpoint-seconds", "0")
    # Kill it once it has logged updates past a checkpoint (so there are rows to drop).
    _wait_for(lambda: (run_dir / "checkpoints" / "latest.pt").exists() and _metric_rows(run_dir) >= 5
              and _metric_rows(run_dir) % 2 == 1, proc)
    proc.kill()
    proc.communicate(timeout=60)
    saved = load_checkpoint(run_dir)["global_step"]
    before = _steps(run_dir / "metrics.csv")
    assert before[-1] > saved, "the test needs rows logged after the checkpoint"
    # A save killed mid-write leaves its temporary file behind.
    stale = run_dir / "checkpoints" / ".latest.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")

    assert train.main(["--resume", str(run_dir), "--total-steps", str(saved + 64), "--no-track", "--no-progress"]) == 0
    steps = _steps(run_dir / "metrics.csv")
    assert steps == sorted(steps), "global_step went backwards: rows past the checkpoint were logged twice"
    assert steps == [s for s in before if s <= saved] + [saved + 64], "a row before the checkpoint was lost"
    episodes = _steps(run_dir / "episodes.csv")
    assert episodes == sorted(episodes)
    assert not stale.exists() and not list(run_dir.rglob("*.tmp"))


def test_resume_without_a_checkpoint_yet_starts_afresh_in_the_same_directory(tmp_path, capsys):
    run_dir = tmp_path / "early"
    proc = _start(run_dir, "--checkpoint-interval", "100000", "--checkpoint-seconds", "1000")
    _wait_for(lambda: _metric_rows(run_dir) >= 1, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert not (run_dir / "checkpoints" / "latest.pt").exists()
    assert train.main(["--resume", str(run_dir), "--total-steps", "128", "--no-track", "--no-progress"]) == 0
    assert "no checkpoint yet; starting the run afresh" in capsys.readouterr().err
    assert _steps(run_dir / "metrics.csv") == [64, 128]


def test_checkpoints_come_by_wall_time_too(tmp_path):
    run_dir = tmp_path / "timed"
    proc = _start(run_dir, "--checkpoint-interval", "100000", "--checkpoint-seconds", "1")
    _wait_for(lambda: (run_dir / "checkpoints" / "latest.pt").exists(), proc, timeout=60)
    proc.kill()
    proc.communicate(timeout=60)
    assert load_checkpoint(run_dir)["global_step"] < 100_000


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing created or overwritten.

BAD_VALUES = [
    ("num_envs", "2", "num_envs must be an integer"),
    ("learning_rate", "abc", "learning_rate must be a number"),
    ("seed", "one", "seed must be an integer"),
    ("seed", -1, "seed must be at least 0"),
    ("features_dim", "abc", "features_dim must be an integer"),
    ("checkpoint_interval", 0, "checkpoint_interval must be at least 1"),
    ("num_minibatches", 0, "num_minibatches must be at least 1"),
    ("num_minibatches", 100000, "exceeds the rollout"),
    ("clip_coef", [0.1], "clip_coef must be a number"),
]
RUN_FIELDS = {"num_envs", "seed", "checkpoint_interval"}


def _one_error_line(err: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flag,value,message", [
    ("--num-envs", "two", "argument --num-envs: expected an integer, got 'two'"),
    ("--learning-rate", "abc", "argument --learning-rate: expected a number, got 'abc'"),
    ("--seed", "one", "argument --seed: expected an integer, got 'one'"),
    ("--seed", "-1", "seed must be at least 0"),
    ("--features-dim", "abc", "argument --features-dim: expected an integer, got 'abc'"),
    ("--checkpoint-interval", "0", "checkpoint_interval must be at least 1"),
    ("--num-minibatches", "0", "num_minibatches must be at least 1"),
    ("--num-minibatches", "100000", "exceeds the rollout"),
    ("--track", "yes", "unrecognized arguments: yes"),
])
def test_bad_value_from_the_command_line(flag, value, message, tmp_path, capsys):
    run_dir = tmp_path / "cli"
    code = train.main([flag, value, "--total-steps", "64", "--run-dir", str(run_dir), "--no-track"])
    assert code == 2
    _one_error_line(capsys.readouterr().err, message)
    assert not run_dir.exists()


@pytest.mark.parametrize("name,value,message", BAD_VALUES)
def test_bad_value_from_a_config_file(name, value, message, tmp_path, capsys):
    section = "run" if name in RUN_FIELDS else "algo"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"run": {"algo": "ppo", "env": "doom-basic"}, "algo": {}} | {}))
    data = json.loads(config.read_text())
    data[section][name] = value
    config.write_text(json.dumps(data))
    run_dir = tmp_path / "from-config"
    code = train.main(["--config", str(config), "--run-dir", str(run_dir), "--no-track"])
    assert code == 2
    _one_error_line(capsys.readouterr().err, message)
    assert not run_dir.exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert train.main(["--env", "doom-basic", "--num-envs", "2", "--total-steps", "64", "--run-dir", str(run_dir),
                       *SMALL_PPO]) == 0
    return run_dir


@pytest.mark.parametrize("name,value,message", BAD_VALUES)
def test_bad_value_in_a_resumed_runs_config(name, value, message, finished_run, tmp_path, capsys):
    run_dir = tmp_path / "resumed"
    shutil.copytree(finished_run, run_dir)
    data = json.loads((run_dir / "config.json").read_text())
    data["run" if name in RUN_FIELDS else "algo"][name] = value
    (run_dir / "config.json").write_text(json.dumps(data))
    before = _snapshot(run_dir)
    assert train.main(["--resume", str(run_dir), "--total-steps", "128", "--no-track"]) == 2
    _one_error_line(capsys.readouterr().err, message)
    assert _snapshot(run_dir) == before, "a refused resume changed the run directory"


def test_config_that_is_not_an_object_is_refused(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"run": ["ppo"], "algo": {}}))
    assert train.main(["--config", str(config), "--run-dir", str(tmp_path / "r"), "--no-track"]) == 2
    _one_error_line(capsys.readouterr().err, "must be a JSON object")


def test_a_failed_resume_keeps_config_json(finished_run, tmp_path, capsys):
    run_dir = tmp_path / "keep"
    shutil.copytree(finished_run, run_dir)
    before = _snapshot(run_dir)
    # A mistaken flag that only fails once the env is built: the network does not fit 68x68 frames.
    assert train.main(["--resume", str(run_dir), "--network", "impala", "--total-steps", "128", "--no-track"]) == 2
    _one_error_line(capsys.readouterr().err, "does not fit")
    assert _snapshot(run_dir) == before


def test_a_checkpoint_of_another_algorithm_or_env_is_refused(finished_run, tmp_path, capsys):
    dqn_dir = tmp_path / "dqn"
    assert train.main(["--algo", "dqn", "--env", "doom-basic", "--num-envs", "1", "--total-steps", "32",
                       "--learning-starts", "16", "--run-dir", str(dqn_dir), "--no-track", "--no-progress"]) == 0
    run_dir = tmp_path / "ppo"
    shutil.copytree(finished_run, run_dir)
    shutil.copy(dqn_dir / "checkpoints" / "latest.pt", run_dir / "checkpoints" / "latest.pt")
    before = _snapshot(run_dir)
    assert train.main(["--resume", str(run_dir), "--total-steps", "128", "--no-track"]) == 2
    _one_error_line(capsys.readouterr().err, "holds a dqn agent for doom-basic; this run is ppo on doom-basic")
    assert _snapshot(run_dir) == before

    payload = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    for damage in ({"global_step": "64"}, {"rng": None}, {"agent": {"q_net": {}}}):
        torch.save({**payload, **damage}, run_dir / "checkpoints" / "latest.pt")
        assert train.main(["--resume", str(run_dir), "--total-steps", "128", "--no-track"]) == 2
        assert capsys.readouterr().err.startswith("error: ")


def test_a_checkpoint_with_code_in_it_is_refused(finished_run, tmp_path, capsys):
    run_dir = tmp_path / "evil"
    shutil.copytree(finished_run, run_dir)
    payload = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    payload["agent"]["extra"] = os.system  # a pickled callable: torch.load would run code to build it
    torch.save(payload, run_dir / "checkpoints" / "latest.pt")
    assert train.main(["--resume", str(run_dir), "--no-track"]) == 2
    err = capsys.readouterr().err
    _one_error_line(err, "contains objects other than tensors; refused")
    assert "weights_only=False" not in err


# ---------------------------------------------------------------------------------------------
# What a resume restores.


def _restored(run_dir: Path, map_location: str):
    checkpoint = load_checkpoint(run_dir, map_location=map_location)
    cfg = make_config("ppo", checkpoint["algo_config"])
    agent = ALGOS["ppo"].agent(cfg, tuple(checkpoint["obs_shape"]), checkpoint["num_actions"], 2, 64,
                               torch.device(map_location))
    restore_agent(agent, checkpoint, tuple(checkpoint["obs_shape"]), checkpoint["num_actions"])
    return agent, checkpoint


def test_resume_restores_weights_optimizer_and_rng(finished_run):
    agent, checkpoint = _restored(finished_run, "cpu")
    saved = checkpoint["agent"]
    for key, tensor in agent.net.state_dict().items():
        assert torch.equal(tensor, saved["net"][key]), key
    state = agent.optimizer.state_dict()["state"]
    assert state and all(torch.equal(state[k]["exp_avg"], saved["optimizer"]["state"][k]["exp_avg"]) for k in state)

    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    draws = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    set_rng_state(checkpoint["rng"])
    after = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    set_rng_state(checkpoint["rng"])
    again = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    assert torch.equal(after[0], again[0]) and np.array_equal(after[1], again[1]) and after[2] == again[2]
    assert not torch.equal(draws[0], after[0])


def _draws():
    return torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)]


class OffCpu(torch.Tensor):
    """Stands in for a CUDA tensor where there is no GPU: its own bytes are zeros, and only
    ``.cpu()`` gives the real state back, as only a copy to the host does for a device tensor."""

    def cpu(self, *args, **kwargs):
        return self.host.clone()


def _off_cpu(tensor: torch.Tensor) -> torch.Tensor:
    if torch.cuda.is_available():
        return tensor.to("cuda")
    stand_in = torch.zeros_like(tensor).as_subclass(OffCpu)
    stand_in.host = tensor
    return stand_in


def test_rng_restores_from_tensors_off_the_cpu():
    """A checkpoint loaded with map_location=<GPU> carries its RNG states as device tensors; they
    must be restored all the same (torch.set_rng_state takes only a CPU ByteTensor). Without the
    copy to the host the stand-in's zeros would be used and the draws would differ."""
    torch.manual_seed(5)
    state = rng_state()
    expected = _draws()
    moved = {**state, "torch": _off_cpu(state["torch"]),
             "numpy": {**state["numpy"], "keys": _off_cpu(state["numpy"]["keys"])}}
    set_rng_state(moved)
    restored = _draws()
    assert torch.equal(expected[0], restored[0]) and np.array_equal(expected[1], restored[1])
    assert expected[2] == restored[2]


def test_dqn_resume_without_the_replay_refills_it_then_learns(tmp_path, capsys):
    run_dir = tmp_path / "dqn"
    common = ["--no-track", "--no-progress"]
    assert train.main(["--algo", "dqn", "--env", "doom-basic", "--num-envs", "2", "--total-steps", "400",
                       "--learning-starts", "100", "--n-step", "3", "--run-dir", str(run_dir), *common]) == 0
    assert "replay" not in load_checkpoint(run_dir)["agent"]
    assert train.main(["--resume", str(run_dir), "--total-steps", "800", *common]) == 0
    err = capsys.readouterr().err
    assert "refilling 100 steps" in err
    steps = _steps(run_dir / "metrics.csv")
    resumed = [s for s in steps if s > 400]
    # No update during the refill, then one every train_frequency (4) env steps, no burst.
    assert resumed[0] >= 500
    # One gradient step per metrics row before the stop (100..400) and at 500, 504, ..., 800 after it.
    assert load_checkpoint(run_dir)["agent"]["gradient_steps"] == (400 - 100) // 4 + 1 + (800 - 500) // 4 + 1


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_cli_resume_restores_weights_optimizer_and_rng_of_the_saved_run(algo, tmp_path, monkeypatch):
    """--resume through train.main: at the moment the agent is told it resumed, its weights,
    optimizer state and every RNG stream equal what the checkpoint holds (each line of the
    restore, removed, makes this fail)."""
    run_dir = tmp_path / algo
    extra = ["--learning-starts", "16", "--num-envs", "1"] if algo == "dqn" else ["--num-envs", "2", *SMALL_PPO[:6]]
    assert train.main(["--algo", algo, "--env", "doom-basic", "--total-steps", "64", "--run-dir", str(run_dir),
                       "--no-track", "--no-progress", *extra]) == 0
    saved = load_checkpoint(run_dir)
    seen = {}
    agent_cls = ALGOS[algo].agent

    def spy(self, global_step):
        seen["agent"] = {k: v for k, v in self.state_dict().items() if k != "replay"}
        seen["torch"], seen["numpy"], seen["python"] = torch.get_rng_state(), np.random.get_state(), random.getstate()
        seen["step"] = global_step
        return None

    monkeypatch.setattr(agent_cls, "resumed", spy)
    assert train.main(["--resume", str(run_dir), "--total-steps", "64", "--no-track", "--no-progress"]) == 0
    assert seen["step"] == saved["global_step"] == 64

    def same(a, b, where="agent"):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a.cpu(), b.cpu()), where
        elif isinstance(a, dict):
            assert set(a) == set(b), where
            for key in a:
                same(a[key], b[key], f"{where}.{key}")
        elif isinstance(a, (list, tuple)):
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                same(x, y, f"{where}[{i}]")
        else:
            assert a == b, where

    same(seen["agent"], {k: v for k, v in saved["agent"].items() if k != "replay"})
    assert seen["agent"]["optimizer"]["state"], "the optimizer's moments were not restored"
    assert torch.equal(seen["torch"], saved["rng"]["torch"])
    assert np.array_equal(seen["numpy"][1], saved["rng"]["numpy"]["keys"].numpy().astype(np.uint32))
    assert list(seen["python"][1]) == list(saved["rng"]["python"])


def test_every_algorithm_follows_the_agent_protocol():
    from pixelplay.agents.agent import Agent

    for name, algo in ALGOS.items():
        agent = algo.agent(make_config(name, {"features_dim": 16}), (4, 68, 68), 3, 2, 100, torch.device("cpu"))
        assert isinstance(agent, Agent), name


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_inside_a_step_is_raised_once_the_step_is_done(signum):
    # The loop's storage and step count move together (a stop between them saved a checkpoint
    # labelled one env step short of its rollout's): the stop waits for the end of the block.
    finished = []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in `python train.py`
    try:
        _stop_inside_a_step(signum, finished)
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_inside_a_step(signum, finished):
    with train._stop_signals_as_interrupts():
        with pytest.raises(KeyboardInterrupt) as stop:
            with train._STOPS.deferred():
                os.kill(os.getpid(), signum)
                time.sleep(0.05)
                finished.append("the step")
        assert finished == ["the step"]
        assert isinstance(stop.value, train.Stopped) == (signum != signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):  # outside the block, at once
            os.kill(os.getpid(), signum)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is not train._STOPS.handler
