"""python -m pixelplay.eval score: the standard protocol on short Breakout games, references beside the score."""

import json
import os
import pickle
import statistics

import pytest
import torch

from pixelplay.eval import baselines
from pixelplay.eval.__main__ import main
from pixelplay.eval.policies import PolicySpec, build_policy
from pixelplay.eval.score import ScoreConfig, score

SHORT = ["--episodes", "2", "--max-frames", "1000", "--env-backend", "gymnasium"]  # <= 250 agent steps a game


def test_random_breakout_report_and_normalised_score(tmp_path, capsys):
    assert main(["score", "--policy", "random", "--env", "breakout", *SHORT, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "score_breakout_2games_seed1_1000frames.json").read_text())
    markdown = (tmp_path / "score_breakout_2games_seed1_1000frames.md").read_text()
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


def test_each_protocol_keeps_its_own_file(tmp_path):
    def run(*flags):
        assert main(["score", "--policy", "random", "--env", "breakout", *SHORT, "--out", str(tmp_path), *flags]) == 0

    run()
    first = (tmp_path / "score_breakout_2games_seed1_1000frames.json").read_text()
    run("--episodes", "3", "--seed", "9", "--num-envs", "1", "--noop-max", "5")
    run()  # the first protocol again: replaces its own file only
    names = sorted(p.name for p in tmp_path.glob("score_*.json"))
    assert names == ["score_breakout_2games_seed1_1000frames.json",
                     "score_breakout_3games_seed9_1envs_noop5_1000frames.json"]
    again = json.loads((tmp_path / names[0]).read_text())
    assert again["games"] == json.loads(first)["games"] and again["created"] >= json.loads(first)["created"]
    assert json.loads((tmp_path / names[1]).read_text())["score"]["n"] == 3


def test_same_seed_same_scores():
    cfg = ScoreConfig(episodes=2, num_envs=2, max_frames=800, backend="gymnasium", seed=3)
    first = score(PolicySpec("random"), "breakout", cfg, log=lambda _: None)
    second = score(PolicySpec("random"), "breakout", cfg, log=lambda _: None)
    assert [g["return"] for g in first["games"]] == [g["return"] for g in second["games"]]


def test_dqn_checkpoint_with_a_stated_epsilon_and_sticky_actions(tmp_path, save_checkpoint):
    checkpoint = save_checkpoint(tmp_path / "dqn.pt", "dqn", "breakout")
    assert main(["score", str(checkpoint), *SHORT, "--epsilon", "0.5", "--sticky-actions"]) == 0
    report = json.loads((tmp_path / "score_breakout_2games_seed1_eps0.5_sticky_1000frames.json").read_text())
    assert report["config"]["sticky_actions"] is True and report["config"]["epsilon"] == 0.5
    assert any("epsilon = 0.5 (--epsilon)" in line for line in report["protocol"])
    assert any("sticky actions ON" in line for line in report["protocol"])
    assert "dqn" in report["policy"] or str(checkpoint) in report["policy"]


def test_epsilon_is_refused_for_a_ppo_agent(tmp_path, capsys, save_checkpoint):
    checkpoint = save_checkpoint(tmp_path / "ppo.pt", "ppo", "breakout")
    assert main(["score", str(checkpoint), *SHORT, "--epsilon", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--epsilon applies to DQN" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("memory", ["none", "lstm"])
def test_greedy_plays_the_mode_of_the_sampled_policy(memory):
    """--greedy against its meaning: on one observation, the action the policy samples most often.
    The policy head's bias is set so that the four actions' probabilities are far apart."""
    from pixelplay.agents import ALGOS

    torch.manual_seed(0)  # the observation and the draws: one fixed case
    cfg = ALGOS["ppo"].config(memory=memory)
    agent = ALGOS["ppo"].agent(cfg, (4, 84, 84), 4, 4, 1000, torch.device("cpu"))
    with torch.no_grad():
        agent.net.policy.bias.copy_(torch.tensor([0.0, 0.6, 1.2, 0.3]))
    obs = torch.randint(0, 256, (1, 4, 84, 84), dtype=torch.uint8).expand(4000, -1, -1, -1)
    first = torch.ones(4000, dtype=torch.bool)  # recurrent: every row starts from the zero state
    sampled = agent.eval_act(obs, first)
    mode = int(torch.bincount(sampled, minlength=4).argmax())
    greedy = agent.eval_act(obs, first, greedy=True)
    assert len(set(sampled.tolist())) == 4 and set(greedy.tolist()) == {mode}


def test_greedy_is_refused_for_dqn_and_for_a_built_in_policy(tmp_path, capsys, save_checkpoint):
    checkpoint = save_checkpoint(tmp_path / "dqn.pt", "dqn", "breakout")
    assert main(["score", str(checkpoint), *SHORT, "--greedy"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--greedy applies to PPO and A2C" in err and "--epsilon 0" in err and len(err.splitlines()) == 1
    assert main(["score", "--policy", "random", "--env", "breakout", *SHORT, "--greedy"]) == 2
    assert "not to a built-in policy" in capsys.readouterr().err


def test_greedy_ppo_score_says_so_in_its_protocol(tmp_path, save_checkpoint):
    checkpoint = save_checkpoint(tmp_path / "ppo.pt", "ppo", "breakout")
    assert main(["score", str(checkpoint), *SHORT, "--greedy"]) == 0
    report = json.loads((tmp_path / "score_breakout_2games_seed1_greedy_1000frames.json").read_text())
    assert any("most probable action (--greedy" in line for line in report["protocol"])


def test_references_exist_only_where_recorded():
    assert baselines.atari_references("breakout") is not None
    assert baselines.atari_references("doom-basic") is None


def test_score_reads_the_checkpoint_once(tmp_path, monkeypatch, save_checkpoint):
    checkpoint = save_checkpoint(tmp_path / "dqn.pt", "dqn", "breakout")
    loads = []
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        loads.append(str(f))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    # The env it was trained on, the report's action selection and the policy: one read.
    assert main(["score", str(checkpoint), "--episodes", "1", "--max-frames", "400", "--env-backend", "gymnasium",
                 "--epsilon", "0.2"]) == 0
    assert loads == [str(checkpoint)]


def test_epsilon_goes_to_each_call_and_the_agent_config_stays(tmp_path, save_checkpoint):
    from pixelplay.agents import ALGOS

    checkpoint = save_checkpoint(tmp_path / "dqn.pt", "dqn", "breakout")
    obs = torch.zeros((64, 4, 84, 84), dtype=torch.uint8)  # one observation: greedy picks one action
    default = ALGOS["dqn"].config().eval_epsilon
    explore = build_policy(PolicySpec("checkpoint", str(checkpoint), 1.0), num_actions=4, obs_shape=(4, 84, 84),
                           seed=0)
    greedy = build_policy(PolicySpec("checkpoint", str(checkpoint), 0.0), num_actions=4, obs_shape=(4, 84, 84),
                          seed=0)
    assert len(set(explore.act(obs).tolist())) > 1 and len(set(greedy.act(obs).tolist())) == 1
    assert explore.agent.cfg.eval_epsilon == default and greedy.agent.cfg.eval_epsilon == default


def test_a_loaded_spec_keeps_its_agent_but_pickles_without_it(tmp_path, save_checkpoint):
    checkpoint = save_checkpoint(tmp_path / "ppo.pt", "ppo", "breakout")
    spec = PolicySpec("checkpoint", str(checkpoint))
    agent, loaded = spec.load()
    assert spec.load()[0] is agent and loaded["env_id"] == "breakout"
    clone = pickle.loads(pickle.dumps(spec))  # what a player process receives
    assert clone == spec and "_loaded" not in clone.__dict__
    assert clone.load()[0] is not agent


def test_atomic_writes_do_not_share_a_temporary(tmp_path):
    from pixelplay.eval.common import atomic_path, atomic_write_text

    target = tmp_path / "score.md"
    with atomic_path(target) as first:
        first.write_text("first")
        atomic_write_text(target, "second")  # another writer of the same file, meanwhile
        assert target.read_text() == "second"
    assert target.read_text() == "first"  # the last rename wins, whole
    assert [p.name for p in tmp_path.iterdir()] == ["score.md"]  # no temporaries left
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
