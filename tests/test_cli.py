"""train.py end to end: run directories, --resume, repeatability, and clear errors on bad input."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pixelplay import train
from pixelplay.agents.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
SMALL_PPO = ["--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "1", "--no-progress"]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_breakout_run_directory_then_resume(tmp_path, capsys):
    run_dir = tmp_path / "breakout"
    args = ["--algo", "ppo", "--env", "breakout", "--num-envs", "2", "--total-steps", "256", "--run-dir",
            str(run_dir), "--env-backend", "gymnasium", *SMALL_PPO]
    assert train.main(args) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["env"] == "breakout" and config["algo"]["num_steps"] == 32
    metrics = _rows(run_dir / "metrics.csv")
    assert [int(r["global_step"]) for r in metrics] == [64, 128, 192, 256]
    assert {"losses/policy", "losses/value", "losses/entropy", "charts/steps_per_second"} <= set(metrics[0])
    assert (run_dir / "episodes.csv").read_text().startswith("global_step,wall_time,env,return,length")
    assert (run_dir / "wandb").is_dir(), "wandb (offline) should log into the run directory"
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["global_step"] == 256 and checkpoint["algo"] == "ppo"
    # The report command printed at the end works on the run as it is (no game may have ended yet).
    from pixelplay.eval.__main__ import main as eval_main

    printed = [line for line in capsys.readouterr().out.splitlines() if "report it" in line]
    assert len(printed) == 1
    command = printed[0].split("#")[0].split()  # report it  python -m pixelplay.eval report RUN
    assert command[2:6] == ["python", "-m", "pixelplay.eval", "report"] and command[6:] == [str(run_dir)]
    assert eval_main([*command[5:], "--no-video"]) == 0
    assert "step 256" in (run_dir / "report.html").read_text()

    # --resume continues from step 256 to 384 and appends to the CSVs.
    assert train.main(["--resume", str(run_dir), "--total-steps", "384", "--no-track", "--no-progress"]) == 0
    metrics = _rows(run_dir / "metrics.csv")
    assert [int(r["global_step"]) for r in metrics] == [64, 128, 192, 256, 320, 384]
    assert (run_dir / "metrics.csv").read_text().count("global_step") == 1  # one header
    assert load_checkpoint(run_dir)["global_step"] == 384
    assert len(list((run_dir / "checkpoints").glob("step_*.pt"))) <= 3


def test_same_seed_gives_same_first_five_updates(tmp_path):
    losses = []
    for name in ("a", "b"):
        run_dir = tmp_path / name
        args = ["--env", "doom-basic", "--num-envs", "2", "--total-steps", str(5 * 64), "--seed", "7",
                "--run-dir", str(run_dir), "--no-track", *SMALL_PPO]
        assert train.main(args) == 0
        rows = _rows(run_dir / "metrics.csv")
        assert len(rows) == 5
        losses.append([(r["losses/policy"], r["losses/value"], r["losses/entropy"]) for r in rows])
    assert losses[0] == losses[1]


def test_deathmatch_run_directory(tmp_path):
    run_dir = tmp_path / "dm"
    args = ["--env", "doom-deathmatch", "--num-envs", "1", "--total-steps", "256", "--bots", "2",
            "--run-dir", str(run_dir), "--no-track", *SMALL_PPO, "--num-minibatches", "1"]
    # The preset's LSTM core and enemy game feature, on one env (one sequence per minibatch).
    assert train.main(args) == 0
    assert json.loads((run_dir / "config.json").read_text())["algo"]["memory"] == "lstm"
    assert (run_dir / "episodes.csv").read_text().startswith(
        "global_step,wall_time,env,return,length,kills,deaths,suicides,objects")
    assert len(_rows(run_dir / "metrics.csv")) == 8
    assert load_checkpoint(run_dir)["env_id"] == "doom-deathmatch"


def test_bad_env_exits_non_zero_with_one_clear_line():
    result = _cli("--env", "brekout", "--no-track")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        result.stderr.strip().splitlines()[0]
    ] and "unknown env 'brekout'; did you mean 'breakout'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_envs_and_hyperparameters():
    result = _cli("--algo", "dqn", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "doom-deathmatch" in text and "--double-dqn" in text and "--buffer-size" in text
    assert "Double DQN: the online net picks the next action" in text


def test_existing_run_is_never_overwritten(tmp_path):
    run_dir = tmp_path / "taken"
    run_dir.mkdir()
    (run_dir / "episodes.csv").write_text("precious\n")
    assert train.main(["--run-dir", str(run_dir), "--no-track", "--total-steps", "64"]) == 2
    assert (run_dir / "episodes.csv").read_text() == "precious\n"


def test_resume_from_corrupt_checkpoint_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "corrupt"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"run": {"algo": "ppo", "env": "doom-basic", "total_steps": 128,
                                                              "num_envs": 1}, "algo": {}}))
    (run_dir / "checkpoints" / "latest.pt").write_bytes(b"not a checkpoint at all")
    assert train.main(["--resume", str(run_dir), "--no-track"]) == 2
    assert "not a readable pixelplay checkpoint" in capsys.readouterr().err
    assert (run_dir / "checkpoints" / "latest.pt").read_bytes() == b"not a checkpoint at all"


def test_mismatched_checkpoint_is_refused(tmp_path, capsys):
    from pixelplay.agents.checkpoint import atomic_torch_save, make_payload

    run_dir = tmp_path / "mismatch"
    (run_dir / "config.json").parent.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"run": {"algo": "ppo", "env": "doom-basic", "total_steps": 128,
                                                              "num_envs": 1}, "algo": {}}))
    atomic_torch_save(make_payload("ppo", "doom-basic", {}, {}, (4, 84, 84), 18, 64, {"net": {}, "optimizer": {}}),
                      run_dir / "checkpoints" / "latest.pt")
    assert train.main(["--resume", str(run_dir), "--no-track", "--no-progress"]) == 2
    assert "was saved for observations (4, 84, 84) and 18 actions" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value,message", [
    ("--algo", "sac", "unknown algorithm 'sac'"),
    ("--network", "resnet", "network must be one of nature, impala, got 'resnet'"),
    ("--device", "cuda", "no CUDA device"),
])
def test_other_bad_input(flag, value, message, capsys, tmp_path):
    if flag == "--device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = train.main([flag, value, "--no-track", "--total-steps", "64", "--run-dir", str(tmp_path / "r")])
    assert code == 2
    assert message in capsys.readouterr().err


def test_a2c_takes_one_rmsprop_update_per_rollout(tmp_path):
    run_dir = tmp_path / "a2c"
    assert train.main(["--algo", "a2c", "--env", "doom-basic", "--num-envs", "2", "--total-steps", "100", "--num-steps", "5",
                       "--run-dir", str(run_dir), "--no-track", "--no-progress"]) == 0
    metrics = _rows(run_dir / "metrics.csv")
    # 5-step rollouts of 2 envs: an update every 10 env steps.
    assert [int(r["global_step"]) for r in metrics] == list(range(10, 101, 10))
    checkpoint = load_checkpoint(run_dir)
    assert "square_avg" in next(iter(checkpoint["agent"]["optimizer"]["state"].values()))  # RMSprop's state


def test_an_env_crash_mid_run_is_one_line_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    """A worker killed mid-run (as a crashing emulator would be) ends the run with exit code 2 and
    one line saying how to go on; the checkpoints written before stay, and --resume continues."""
    import os
    import signal

    from pixelplay.envs.vec import GymVecEnv

    real_step, calls = GymVecEnv.step_async, []

    def step_then_crash(self, actions):
        calls.append(1)
        if len(calls) == 100:  # mid-rollout, after 3 updates of 2 envs x 32 steps
            os.kill(self.envs.processes[1].pid, signal.SIGKILL)
            self.envs.processes[1].join(timeout=10)
        return real_step(self, actions)

    monkeypatch.setattr(GymVecEnv, "step_async", step_then_crash)
    run_dir = tmp_path / "crash"
    args = ["--env", "doom-basic", "--num-envs", "2", "--total-steps", "640", "--checkpoint-interval", "64",
            "--run-dir", str(run_dir), "--no-track", *SMALL_PPO]
    assert train.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: an env worker process died during step: env 1 (exit code -9)")
    assert "checkpoint saved at step 192" in err and f"--resume {run_dir}" in err
    assert load_checkpoint(run_dir)["global_step"] == 192

    monkeypatch.setattr(GymVecEnv, "step_async", real_step)
    assert train.main(["--resume", str(run_dir), "--total-steps", "256", "--no-track", "--no-progress"]) == 0
    assert load_checkpoint(run_dir)["global_step"] == 256


def test_a_run_that_ends_mid_rollout_keeps_its_model(tmp_path):
    """--total-steps need not be a multiple of the rollout: the run still leaves a checkpoint,
    labelled with the step of the update its weights come from (200 steps end 4 into the fourth
    rollout of 2 x 32), and --resume collects that rollout again."""
    run_dir = tmp_path / "ragged"
    args = ["--env", "doom-basic", "--num-envs", "2", "--total-steps", "200", "--run-dir", str(run_dir),
            "--no-track", *SMALL_PPO]
    assert train.main(args) == 0
    assert load_checkpoint(run_dir)["global_step"] == 192
    assert train.main(["--resume", str(run_dir), "--total-steps", "256", "--no-track", "--no-progress"]) == 0
    assert [int(r["global_step"]) for r in _rows(run_dir / "metrics.csv")] == [64, 128, 192, 256]


def test_threads_sizes_torchs_cpu_pool_and_is_recorded(tmp_path):
    run_dir = tmp_path / "threads"
    before = torch.get_num_threads()
    try:
        assert train.main(["--env", "doom-basic", "--num-envs", "1", "--total-steps", "64", "--threads", str(before + 1),
                           "--run-dir", str(run_dir), "--no-track", "--no-progress", *SMALL_PPO]) == 0
        assert torch.get_num_threads() == before + 1  # not torch's default, so the flag did it
    finally:
        torch.set_num_threads(before)
    assert json.loads((run_dir / "config.json").read_text())["run"]["threads"] == before + 1
