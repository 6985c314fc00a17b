"""python -m pixelplay.eval score: the standard protocol on short Breakout games, references beside the score."""

import json
import statistics
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from pixelplay.eval import baselines
from pixelplay.eval.__main__ import main
from pixelplay.eval.policies import PolicySpec
from pixelplay.eval.score import ScoreConfig, score

SHORT = ["--episodes", "2", "--max-frames", "1000", "--env-backend", "gymnasium"]  # <= 250 agent steps a game


def make_checkpoint(path: Path, algo: str, env_id: str, obs_shape, num_actions: int) -> Path:
    from pixelplay.agents import ALGOS
    from pixelplay.agents.checkpoint import atomic_torch_save, make_payload

    cfg = ALGOS[algo].config()
    agent = ALGOS[algo].agent(cfg, tuple(obs_shape), num_actions, 1, 1, torch.device("cpu"))
    payload = make_payload(algo, env_id, asdict(cfg), {"env": env_id}, obs_shape, num_actions, 0, agent.state_dict())
    atomic_torch_save(payload, path)
    return path


def test_random_breakout_report_and_normalised_score(tmp_path, capsys):
    assert main(["score", "--policy", "random", "--env", "breakout", *SHORT, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "score_breakout.json").read_text())
    markdown = (tmp_path / "score_breakout.md").read_text()
    returns = [g["return"] for g in report["games"]]
    assert len(returns) == 2 and all(g["length"] <= 250 for g in report["games"])
    assert report["score"]["mean"] == pytest.approx(statistics.fmean(returns))
    assert report["score"]["median"] == pytest.approx(statistics.median(returns))
    assert report["score"]["std"] == pytest.approx(statistics.pstdev(returns))
    hn = report["human_normalized"]
    assert (hn["random"], hn["human"]) == (1.7, 30.5)
    assert hn["mean"] == pytest.approx((report["score"]["mean"] - 1.7) / (30.5 - 1.7))
    for name in ("Nature DQN, 50M steps", "CleanRL PPO, 10M steps", "RL Zoo PPO, 10M steps"):
        assert name in report["references"] and name in markdown
    assert any("sticky actions OFF" in line for line in report["protocol"])
    assert any("1,000 frames" in line for line in report["protocol"])
    assert "Human-normalised score" in capsys.readouterr().out


def test_same_seed_same_scores():
    cfg = ScoreConfig(episodes=2, num_envs=2, max_frames=800, backend="gymnasium", seed=3)
    first = score(PolicySpec("random"), "breakout", cfg, log=lambda _: None)
    second = score(PolicySpec("random"), "breakout", cfg, log=lambda _: None)
    assert [g["return"] for g in first["games"]] == [g["return"] for g in second["games"]]


def test_dqn_checkpoint_with_a_stated_epsilon_and_sticky_actions(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "dqn.pt", "dqn", "breakout", (4, 84, 84), 4)
    assert main(["score", str(checkpoint), *SHORT, "--epsilon", "0.5", "--sticky-actions"]) == 0
    report = json.loads((tmp_path / "score_breakout.json").read_text())
    assert report["config"]["sticky_actions"] is True and report["config"]["epsilon"] == 0.5
    assert any("epsilon = 0.5 (--epsilon)" in line for line in report["protocol"])
    assert any("sticky actions ON" in line for line in report["protocol"])
    assert "dqn" in report["policy"] or str(checkpoint) in report["policy"]


def test_epsilon_is_refused_for_a_ppo_agent(tmp_path, capsys):
    checkpoint = make_checkpoint(tmp_path / "ppo.pt", "ppo", "breakout", (4, 84, 84), 4)
    assert main(["score", str(checkpoint), *SHORT, "--epsilon", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--epsilon applies to DQN" in err and len(err.splitlines()) == 1


def test_references_exist_only_where_recorded():
    assert baselines.atari_references("breakout") is not None
    assert baselines.atari_references("doom-basic") is None
