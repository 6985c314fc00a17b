"""Weights-only checkpoints (``python -m pixelplay.eval export``) and the zoo of shipped agents.

An export keeps what evaluation needs and nothing else, evaluates with every eval command, and
is refused by ``train.py --resume``; the zoo's folders load by path from a checkout and by their
bare name from anywhere, and ship inside the wheel."""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from pixelplay import train
from pixelplay.agents import ALGOS, load_agent
from pixelplay.agents.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    load_checkpoint,
    resolve_checkpoint,
)
from pixelplay.eval.__main__ import main
from pixelplay.eval.policies import check_fits, parse_policy
from pixelplay.zoo import ZOO_DIR, find, names
from pixelplay.zoo.export import export, train_command

ROOT = Path(__file__).resolve().parent.parent
MAX_BYTES = 20_000_000
SHIPPED = ("doom-basic-dqn", "doom-basic-ppo")
TINY = {
    "ppo": ["--num-envs", "2", "--total-steps", "64", "--num-steps", "16", "--num-minibatches", "1",
            "--update-epochs", "1"],
    "dqn": ["--num-envs", "1", "--total-steps", "64", "--learning-starts", "16", "--batch-size", "8",
            "--buffer-size", "256", "--train-frequency", "4", "--target-update-interval", "16"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny finished training run per algorithm (PPO, DQN) on doom-basic."""
    made = {}
    for algo, flags in TINY.items():
        run = tmp_path_factory.mktemp("runs") / algo
        args = ["--algo", algo, "--env", "doom-basic", "--seed", "3", "--run-dir", str(run), "--no-track",
                "--no-progress", *flags]
        assert train.main(args) == 0
        made[algo] = run
    return made


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    return err


def _equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- export -------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_export_keeps_the_weights_and_nothing_else(algo, runs, tmp_path, capsys):
    run = runs[algo]
    out = tmp_path / "exported"
    assert main(["export", str(run), str(out)]) == 0
    assert "agent.pt" in capsys.readouterr().out
    full = load_checkpoint(run)

    raw = torch.load(out / "agent.pt", map_location="cpu", weights_only=True)
    assert raw["weights_only"] is True
    assert "rng" not in raw and "run_config" not in raw and "rng_ranks" not in raw
    assert set(raw["agent"]) == set(ALGOS[algo].weights)  # no optimizer, replay, counters or target net
    for key in ("algo", "env_id", "algo_config", "obs_shape", "num_actions", "global_step"):
        assert raw[key] == full[key], key
    for key in ALGOS[algo].weights:
        assert _equal_states(raw["agent"][key], full["agent"][key])

    size = (out / "agent.pt").stat().st_size
    assert size < MAX_BYTES and size < 0.6 * Path(full["path"]).stat().st_size, size

    # The rebuilt agent plays with exactly the trained networks; DQN's target net is its q-net.
    agent, checkpoint = load_agent(out)
    assert checkpoint["path"] == str(out / "agent.pt")
    network = agent.net if algo == "ppo" else agent.q_net
    assert _equal_states(network.state_dict(), full["agent"]["net" if algo == "ppo" else "q_net"])
    if algo == "dqn":
        assert _equal_states(agent.target_net.state_dict(), agent.q_net.state_dict())

    assert json.loads((out / "config.json").read_text()) == json.loads((run / "config.json").read_text())
    readme = (out / "README.md").read_text()
    assert f"--algo {algo} --env doom-basic --seed 3" in readme
    assert f"env steps: {full['global_step']:,}" in readme and "final mean return" in readme


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_the_readme_command_trains_the_same_configuration(algo, runs):
    config = json.loads((runs[algo] / "config.json").read_text())
    command = train_command(config)
    words = shlex.split(command)
    assert words[:2] == ["python", "train.py"] and "--run-dir" not in words
    run_cfg, algo_cfg, _ = train.resolve_config(words[2:])
    rebuilt = {"run": asdict(run_cfg), "algo": asdict(algo_cfg)}
    rebuilt["run"]["run_dir"] = config["run"]["run_dir"]
    assert json.loads(json.dumps(rebuilt)) == config, command  # as config.json holds it (tuples as lists)


def test_export_of_a_checkpoint_file_outside_a_run(tmp_path, save_checkpoint):
    checkpoint = save_checkpoint(tmp_path / "loose.pt", "dqn", "doom-basic")
    assert main(["export", str(checkpoint), str(tmp_path / "out")]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["run"]["algo"] == "dqn" and config["run"]["env"] == "doom-basic"
    assert "final mean return: unknown" in (tmp_path / "out" / "README.md").read_text()
    load_agent(tmp_path / "out")


def test_export_refuses_to_write_into_a_run_directory(runs, tmp_path, capsys):
    assert main(["export", str(runs["ppo"]), str(runs["ppo"])]) == 2
    assert "run directory" in one_line_error(capsys)
    assert not (runs["ppo"] / "agent.pt").exists()


def test_a_weights_only_checkpoint_missing_its_network_is_refused(runs, tmp_path):
    raw = torch.load(export(runs["dqn"], tmp_path / "x").agent, weights_only=True)
    del raw["agent"]["q_net"]
    atomic_torch_save(raw, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="weights-only dqn checkpoint without agent.q_net"):
        load_agent(tmp_path / "broken.pt")


# ---- every eval command takes an exported folder ----------------------------------------------------


def test_score_record_and_watch_play_an_exported_agent(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "exported"
    export(runs["dqn"], out)
    assert main(["score", str(out), "--episodes", "2", "--num-envs", "1"]) == 0
    report = json.loads((out / "score_doom-basic_2games_seed1_1envs.json").read_text())  # into the exported folder
    assert report["score"]["n"] == 2 and "agent.pt" in report["policy"]
    assert main(["score", str(out / "agent.pt"), "--episodes", "1", "--epsilon", "0", "--out", str(tmp_path / "s")]) == 0
    assert main(["record", str(out), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "videos" / "record_doom-basic_s1_ep0.mp4").exists()
    assert main(["watch", str(out), "--out", str(tmp_path / "w")]) == 0
    assert (tmp_path / "w" / "videos" / "watch_doom-basic_s1_ep0.mp4").exists()


def test_doom_table_plays_an_exported_deathmatch_agent(tmp_path, save_checkpoint):
    source = save_checkpoint(tmp_path / "dm.pt", "ppo", "doom-deathmatch")
    out = tmp_path / "dm-agent"
    export(source, out)
    code = main(["doom-table", str(out), "--only", "single", "--matches", "1", "--minutes", "0.1", "--bots", "1",
                 "--greedy"])
    assert code == 0
    result = json.loads((out / "doom_table.json").read_text())
    assert str(out / "agent.pt") in result["agent"]
    assert "most probable action (--greedy" in result["agent_actions"]
    assert "most probable action (--greedy" in (out / "doom_table.md").read_text()


def test_plot_of_an_exported_folder_says_it_keeps_no_logs(runs, tmp_path, capsys):
    out = tmp_path / "exported"
    export(runs["ppo"], out)
    assert main(["plot", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no episodes.csv" in err and "error: plot: no run" in err and "Traceback" not in err
    assert main(["plot", str(runs["ppo"]), str(out), "--out", str(tmp_path / "png")]) == 0  # the run alone
    assert (tmp_path / "png" / "learning_curve.png").exists()
    assert "exported agent without training logs" in capsys.readouterr().err


# ---- resume needs the full checkpoint ------------------------------------------------------------


def test_resume_refuses_a_weights_only_checkpoint(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["ppo"], run)
    weights = export(run, tmp_path / "exported").agent
    for old in (run / "checkpoints").iterdir():
        old.unlink()
    shutil.copy(weights, run / "checkpoints" / "latest.pt")
    assert train.main(["--resume", str(run), "--no-track", "--no-progress", "--total-steps", "128"]) == 2
    err = one_line_error(capsys)
    assert "cannot be resumed" in err and "rng" in err and "agent.optimizer" in err and "weights-only" in err
    assert (run / "checkpoints" / "latest.pt").read_bytes() == weights.read_bytes()


# ---- the zoo ---------------------------------------------------------------------------------------


def test_the_zoo_ships_its_agents():
    assert set(SHIPPED) <= set(names())
    table = (ZOO_DIR / "README.md").read_text()
    for name in names():
        assert f"[{name}]({name}/)" in table, name


@pytest.mark.parametrize("name", names())
def test_a_shipped_agent_loads_and_fits_its_env(name, env_shape):
    folder = ZOO_DIR / name
    assert (folder / "agent.pt").stat().st_size < MAX_BYTES
    raw = torch.load(folder / "agent.pt", map_location="cpu", weights_only=True)
    assert raw["weights_only"] is True and "rng" not in raw
    assert set(raw["agent"]) == set(ALGOS[raw["algo"]].weights)
    agent, checkpoint = load_agent(name)
    check_fits(checkpoint, *env_shape(checkpoint["env_id"]))
    assert name == f"{checkpoint['env_id']}-{checkpoint['algo']}"
    config = json.loads((folder / "config.json").read_text())
    assert config["run"]["algo"] == checkpoint["algo"] and config["run"]["env"] == checkpoint["env_id"]
    readme = (folder / "README.md").read_text()
    assert "python train.py" in readme and "python -m pixelplay.eval " in readme and name in readme


def test_a_bare_zoo_name_resolves_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = ZOO_DIR / "doom-basic-ppo" / "agent.pt"
    assert resolve_checkpoint("doom-basic-ppo") == expected
    assert resolve_checkpoint("zoo/doom-basic-ppo") == expected  # the checkout's path, from elsewhere
    assert parse_policy("doom-basic-ppo").path == str(expected)
    assert find("doom-basic-ppo") == expected.parent
    # An existing path wins over a zoo name.
    (tmp_path / "doom-basic-ppo").mkdir()
    shutil.copy(ZOO_DIR / "doom-basic-dqn" / "agent.pt", tmp_path / "doom-basic-ppo" / "agent.pt")
    assert resolve_checkpoint("doom-basic-ppo") == Path("doom-basic-ppo") / "agent.pt"


def test_score_a_zoo_agent_by_name_writes_outside_the_zoo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in (ZOO_DIR / "doom-basic-ppo").iterdir())
    assert main(["score", "doom-basic-ppo", "--episodes", "1", "--num-envs", "1"]) == 0
    assert (tmp_path / "runs" / "zoo_doom-basic-ppo" / "score_doom-basic_1games_seed1_1envs.json").exists()
    assert sorted(p.name for p in (ZOO_DIR / "doom-basic-ppo").iterdir()) == before
    assert main(["plot", "doom-basic-ppo"]) == 2
    assert "no episodes.csv" in capsys.readouterr().err


def test_an_unknown_zoo_name_lists_the_zoo(capsys):
    assert main(["score", "doom-basic-sac"]) == 2
    err = one_line_error(capsys)
    assert "'doom-basic-sac'" in err and all(name in err for name in SHIPPED)
    with pytest.raises(CheckpointError, match="zoo has"):
        load_agent("zoo/nope")


def test_resume_of_an_exported_folder_is_refused_and_changes_nothing(tmp_path, capsys):
    from pixelplay import train

    folder = tmp_path / "exported"
    shutil.copytree(ZOO_DIR / "doom-basic-ppo", folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert train.main(["--resume", str(folder), "--no-track", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "weights-only agent (agent.pt)" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert not (folder / "checkpoints").exists()
