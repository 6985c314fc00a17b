"""pixelplay.tune: search spaces checked by the config engine, a tiny real study that prunes
through train.py and writes a config train.py accepts, a SIGKILLed study that resumes, and
bad input as one error line."""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pixelplay.agents import ALGOS, PRESETS
from pixelplay.agents.checkpoint import load_checkpoint
from pixelplay.agents.config import ConfigError, build
from pixelplay.agents.run_config import resolve_config
from pixelplay.agents.search_spaces import SEARCH_SPACES, Choice, Range, check_space

optuna = pytest.importorskip("optuna", reason="tuning needs Optuna: pip install 'pixelplay[tune]' (in the dev extra)")

from pixelplay import tune as tune_module  # noqa: E402
from pixelplay.tune import TuneConfig, main, make_plan, summarize, tune  # noqa: E402

TINY = ["--num-envs", "2", "--num-steps", "16", "--update-epochs", "1", "--num-minibatches", "1"]
"""train.py flags for every trial: a 32-transition rollout, one minibatch step per update."""

SUMMARY_KEYS = {"study_name", "storage", "direction", "metric", "best", "trials", "importances"}
TRIAL_KEYS = {"number", "state", "value", "params", "run_dir"}


def test_every_search_space_names_config_fields_and_stays_in_their_ranges():
    for algo, space in SEARCH_SPACES.items():
        fields = {field.name for field in dataclasses.fields(ALGOS[algo].config)}
        assert set(space) <= fields, algo
        check_space(algo, space)  # every bound and option built into a config


def test_check_space_refuses_what_the_config_refuses():
    with pytest.raises(ConfigError, match="learning_rat: no such option; did you mean 'learning_rate'"):
        check_space("ppo", {"learning_rat": Range(1e-5, 1e-3, log=True)})
    with pytest.raises(ConfigError, match="gamma must be at most 1"):
        check_space("ppo", {"gamma": Choice((0.99, 1.5))})
    with pytest.raises(ConfigError, match="num_steps must be an integer"):
        check_space("ppo", {"num_steps": Range(1.5, 8.0)})
    with pytest.raises(ConfigError, match="log Range needs low > 0"):
        check_space("dqn", {"final_epsilon": Range(0.0, 0.2, log=True)})


class PruneEveryTrialAfterTheFirst(optuna.pruners.BasePruner):
    """Prunes trial 1 on at its first report, whatever its return: a deterministic pruner, so
    that the pruning path through train.py runs every time."""

    def prune(self, study, trial) -> bool:
        return trial.number >= 1


def _returns(run_dir: str) -> list[float]:
    with open(Path(run_dir) / "episodes.csv", newline="") as handle:
        return [float(row["return"]) for row in csv.DictReader(handle)]


def _last_step(path: Path) -> int:
    with open(path, newline="") as handle:
        return int(list(csv.DictReader(handle))[-1]["global_step"])


def test_tiny_study_prunes_through_train_and_writes_a_config_train_accepts(tmp_path, capsys):
    study_dir = tmp_path / "study"
    options = build(TuneConfig, {"algo": "ppo", "env": "doom-basic", "trials": 2, "total_steps": 320, "reports": 4,
                                 "startup_trials": 1, "study_dir": str(study_dir)})
    summary = tune(options, TINY, pruner=PruneEveryTrialAfterTheFirst())

    assert [t["state"] for t in summary["trials"]] == ["COMPLETE", "PRUNED"]
    complete, pruned = summary["trials"]
    # The pruned run stopped at its first report (a step of 80 or more: 320 / 4) and left a
    # consistent run: its final checkpoint and its logs end at that step.
    study = optuna.load_study(study_name="doom-basic__ppo", storage=f"sqlite:///{study_dir / 'study.db'}")
    reported = sorted(study.trials[1].intermediate_values)
    assert len(reported) == 1 and 80 <= reported[0] < 320
    assert load_checkpoint(pruned["run_dir"])["global_step"] == reported[0]
    assert _last_step(Path(pruned["run_dir"]) / "metrics.csv") == reported[0]
    assert _last_step(Path(complete["run_dir"]) / "metrics.csv") == 320

    # The complete trial's value is the mean of its last 20 episodes, read back from its log.
    returns = _returns(complete["run_dir"])[-20:]
    assert complete["value"] == pytest.approx(sum(returns) / len(returns))
    assert summary["best"] == {"number": 0, "value": complete["value"], "params": complete["params"]}
    assert set(summary) == SUMMARY_KEYS and all(set(t) == TRIAL_KEYS for t in summary["trials"])
    assert summary["direction"] == "maximize" and summary["importances"] == {}  # one complete trial
    assert json.loads((study_dir / "summary.json").read_text()) == summary
    assert "best: trial 0" in capsys.readouterr().out

    # best_config.json goes through train.py's own --config parsing: the best trial's
    # hyperparameters, the flags given to every trial, and the preset's full budget.
    run_cfg, algo_cfg, _ = resolve_config(["--config", str(study_dir / "best_config.json")])
    assert (run_cfg.algo, run_cfg.env, run_cfg.num_envs) == ("ppo", "doom-basic", 2)
    assert run_cfg.total_steps == PRESETS["ppo"]["doom-basic"]["run"]["total_steps"]
    assert (algo_cfg.num_steps, algo_cfg.update_epochs, algo_cfg.num_minibatches) == (16, 1, 1)
    for name, value in complete["params"].items():
        assert getattr(algo_cfg, name) == value, name
    assert set(complete["params"]) == set(SEARCH_SPACES["ppo"]) - {"num_steps", "update_epochs", "num_minibatches"}

    # The same storage and study name for another search is refused before anything runs.
    assert main(["--algo", "a2c", "--env", "doom-basic", "--study-name", "doom-basic__ppo", "--trials", "2",
                 "--total-steps", "320", "--study-dir", str(study_dir)]) == 2
    assert "tunes ppo on doom-basic with 320 steps per trial" in capsys.readouterr().err


class InterruptAtFirstReport(optuna.pruners.BasePruner):
    """Ctrl-C as it would arrive in the middle of a trial's training loop."""

    def prune(self, study, trial) -> bool:
        raise KeyboardInterrupt


def test_an_interrupted_trial_is_queued_again_with_its_hyperparameters(tmp_path):
    study_dir = tmp_path / "study"
    options = build(TuneConfig, {"algo": "ppo", "env": "doom-basic", "trials": 1, "total_steps": 320, "reports": 4,
                                 "study_dir": str(study_dir)})
    with pytest.raises(KeyboardInterrupt):
        tune(options, TINY, pruner=InterruptAtFirstReport())
    storage = f"sqlite:///{study_dir / 'study.db'}"
    interrupted, queued = optuna.load_study(study_name="doom-basic__ppo", storage=storage).trials
    assert interrupted.state.name == "FAIL" and queued.state.name == "WAITING"
    # train.py saved the interrupted run at its last update, as on any Ctrl-C.
    assert load_checkpoint(interrupted.user_attrs["run_dir"])["global_step"] == max(interrupted.intermediate_values)
    summary = json.loads((study_dir / "summary.json").read_text())  # written on the way out, the queued one left out
    assert [t["state"] for t in summary["trials"]] == ["FAIL"] and summary["best"] is None

    summary = tune(options, TINY)  # the same command again: the queued trial runs
    assert [t["state"] for t in summary["trials"]] == ["FAIL", "COMPLETE"]
    assert summary["trials"][1]["params"] == summary["trials"][0]["params"]
    assert optuna.load_study(study_name="doom-basic__ppo", storage=storage).trials[1].user_attrs["retry_of"] == 0


def test_a_killed_study_resumes_keeping_finished_trials_and_retrying_the_killed_one(tmp_path):
    study_dir = tmp_path / "study"
    command = [sys.executable, "-m", "pixelplay.tune", "--algo", "ppo", "--env", "doom-basic", "--trials", "2",
               "--total-steps", "320", "--pruner", "none", "--heartbeat", "1", "--study-dir", str(study_dir), *TINY]
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Trial 1 has started training (its run wrote config.json: its heartbeat is recorded).
        deadline = time.monotonic() + 300  # a guard against a hang, not a speed check
        while not (study_dir / "trial_0001" / "config.json").exists():
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the study, its env workers with it
        first.wait()
        log.close()
    finished_log = (study_dir / "trial_0000" / "episodes.csv").read_bytes()
    # A heartbeat older than the grace period (2 heartbeats) marks the killed trial stale.
    time.sleep(2.5)

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads((study_dir / "summary.json").read_text())
    states = {t["number"]: t["state"] for t in summary["trials"]}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE"}
    trials = {t["number"]: t for t in summary["trials"]}
    assert trials[2]["params"] == trials[1]["params"]  # the killed trial's hyperparameters, run again
    assert (study_dir / "trial_0000" / "episodes.csv").read_bytes() == finished_log  # trial 0 not rerun
    assert not (study_dir / "trial_0003").exists()
    assert "1 of 2 trials finished" in again.stdout


@pytest.mark.parametrize("flags, message", [
    (["--algo", "sac"], "tune option algo must be one of ppo, a2c, dqn"),
    (["--env", "doom-nowhere"], "doom-nowhere"),
    (["--trials", "0"], "tune option trials must be at least 1, got 0"),
    (["--storage", "study.db"], "use sqlite:///study.db for a file"),
    (["--storage", "nosuchdb://host/x"], "cannot open the study storage 'nosuchdb://host/x'"),
    (["--run-dir", "x"], "each trial gets its own run directory"),
    (["--learning-rate", "-1"], "learning_rate must be at least 0"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, flags, message):
    assert main(["--study-dir", str(tmp_path / "study"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_without_optuna_the_error_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    assert main(["--study-dir", str(tmp_path / "study")]) == 2
    assert 'pip install "pixelplay[tune]"' in capsys.readouterr().err


def test_importances_rank_the_parameter_that_decides_the_value_first(tmp_path):
    """summarize on a study whose value depends on learning_rate alone (clip_coef is noise)."""
    options = build(TuneConfig, {"algo": "ppo", "env": "doom-basic", "study_dir": str(tmp_path / "study")})
    plan = make_plan(options, [])
    study = optuna.create_study(direction="maximize")
    distributions = {"learning_rate": optuna.distributions.FloatDistribution(1e-5, 2e-3, log=True),
                     "clip_coef": optuna.distributions.CategoricalDistribution((0.1, 0.2, 0.3, 0.4))}
    rng = random.Random(0)
    for _ in range(30):
        params = {"learning_rate": 10 ** rng.uniform(-5, math.log10(2e-3)), "clip_coef": rng.choice((0.1, 0.2, 0.3, 0.4))}
        value = -abs(math.log10(params["learning_rate"]) + 3.5)  # best at 3e-4
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value))
    summary = summarize(optuna, study, options, plan)
    assert summary["importances"]["learning_rate"] > summary["importances"]["clip_coef"]
    best = max(study.trials, key=lambda t: t.value)
    assert summary["best"] == {"number": best.number, "value": best.value, "params": best.params}

    # One complete trial, or trials that tie: nothing tells one parameter from another.
    few = optuna.create_study(direction="maximize")
    few.add_trial(study.trials[0])
    assert summarize(optuna, few, options, plan)["importances"] == {}
    for trial in study.trials[1:4]:
        few.add_trial(optuna.trial.create_trial(params=trial.params, distributions=distributions,
                                                value=study.trials[0].value))
    assert summarize(optuna, few, options, plan)["importances"] == {}


def test_the_console_script_is_the_module(capsys):
    scripts = {ep.name: ep for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["pixelplay-tune"].load() is tune_module.main
    with pytest.raises(SystemExit) as exit_info:
        tune_module.main(["--help"])
    assert exit_info.value.code == 0 and "--total-steps" in capsys.readouterr().out
