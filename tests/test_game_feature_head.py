"""Game-feature supervision (Lample & Chaplot 2017): the auxiliary head, its loss, the labels'
way from the env to the rollout and the replay, and the run option ``--game-features``.

The fake env below draws frames whose labels are a function of the frame ("the left half is
brighter than the right", "the top half is brighter than the bottom"), independent from frame to
frame, so a label stored with the wrong frame (one step off, or the finished episode's last frame
instead of the new episode's first) disagrees with the frame about half of the time.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from pixelplay import train
from pixelplay.agents import ALGOS, load_agent, make_config
from pixelplay.agents.checkpoint import load_checkpoint
from pixelplay.agents.dqn import DQNAgent, DQNConfig
from pixelplay.agents.networks import GAME_FEATURE_HEAD, game_feature_loss, num_game_features
from pixelplay.agents.ppo import A2CAgent, A2CConfig, PPOAgent, PPOConfig
from pixelplay.agents.replay import ReplayBuffer
from pixelplay.agents.run_config import resolve_config
from pixelplay.envs.errors import PixelplayError
from pixelplay.envs.vec import StepResult

ROOT = Path(__file__).resolve().parent.parent
HW = (36, 36)  # the smallest size the Nature CNN tiles: 36 -> 8 -> 3 -> 1
SMALL_PPO = ["--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "1", "--no-progress", "--no-track"]


def frame_labels(frame: torch.Tensor) -> torch.Tensor:
    """float (2,): [left half brighter than right, top half brighter than bottom] of a (c, H, W) frame."""
    x = frame.float()
    h, w = x.shape[-2:]
    left, right = x[..., : w // 2].mean(), x[..., w // 2 :].mean()
    top, bottom = x[..., : h // 2, :].mean(), x[..., h // 2 :, :].mean()
    return torch.stack([left > right, top > bottom]).float()


def obs_labels(obs: torch.Tensor, frame_channels: int = 1) -> torch.Tensor:
    """(B, 2): the labels of each observation's newest frame (its last ``frame_channels`` channels)."""
    return torch.stack([frame_labels(o[-frame_channels:]) for o in obs])


class LabelledEnv:
    """``num_envs`` envs of random frames stacked ``k`` deep (oldest first), same-step autoreset,
    labelled as `VecEnv` labels them: ``labels`` after ``reset``, ``result.labels`` after
    ``step``, each describing the newest frame of the obs returned with it."""

    def __init__(self, num_envs: int = 4, k: int = 1, p_done: float = 0.1, seed: int = 0):
        self.num_envs, self.k, self.p_done = num_envs, k, p_done
        self.gen = torch.Generator().manual_seed(seed)
        self.stacks: list[list[torch.Tensor]] = []
        self.labels: torch.Tensor | None = None

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return (self.k, *HW)

    def frame(self) -> torch.Tensor:
        """Noise in [0, 100) plus 20 on one half left/right and on one half top/bottom, each side by chance."""
        frame = torch.randint(0, 100, (1, *HW), generator=self.gen, dtype=torch.int32)
        h, w = HW
        side, half = torch.randint(0, 2, (2,), generator=self.gen).tolist()
        frame[..., :, : w // 2] += 20 * side
        frame[..., :, w // 2 :] += 20 * (1 - side)
        frame[..., : h // 2, :] += 20 * half
        frame[..., h // 2 :, :] += 20 * (1 - half)
        return frame.to(torch.uint8)

    def _new_stack(self) -> list[torch.Tensor]:
        first = self.frame()
        return [first] * self.k

    def _obs(self) -> torch.Tensor:
        return torch.stack([torch.cat(stack) for stack in self.stacks])

    def reset(self) -> torch.Tensor:
        self.stacks = [self._new_stack() for _ in range(self.num_envs)]
        obs = self._obs()
        self.labels = obs_labels(obs)
        return obs

    def step(self, action: torch.Tensor) -> StepResult:
        n = self.num_envs
        done = torch.rand(n, generator=self.gen) < self.p_done
        terminated = done & (torch.rand(n, generator=self.gen) < 0.5)
        truncated = done & ~terminated
        self.stacks = [[*stack[1:], self.frame()] for stack in self.stacks]
        final_obs = self._obs()
        for e in done.nonzero().flatten().tolist():
            self.stacks[e] = self._new_stack()
        obs = self._obs()
        self.labels = obs_labels(obs)
        return StepResult(obs=obs, reward=torch.zeros(n), terminated=terminated, truncated=truncated,
                          final_obs=final_obs, episodes=[], labels=self.labels)


def _ppo(num_envs: int = 4, algo: str = "ppo", features: int = 2, **overrides) -> PPOAgent:
    values = {"features_dim": 64, "num_steps": 16, "precision": "fp32", **overrides}
    if algo == "ppo":
        values = {"num_minibatches": 4, "update_epochs": 4, **values}
    cls = PPOAgent if algo == "ppo" else A2CAgent
    cfg = (PPOConfig if algo == "ppo" else A2CConfig)(**values)
    return cls(cfg, (1, *HW), 3, num_envs, 100_000, torch.device("cpu"), num_game_features=features)


def _dqn(num_envs: int = 2, k: int = 2, features: int = 2, **overrides) -> DQNAgent:
    cfg = DQNConfig(**{"features_dim": 64, "learning_starts": 0, "buffer_size": 4_000, "train_frequency": 1,
                       "batch_size": 32, **overrides})
    return DQNAgent(cfg, (k, *HW), 3, num_envs, 100_000, torch.device("cpu"), frame_stack=k,
                    num_game_features=features)


def _play(agent, env: LabelledEnv, steps: int, step: int = 0, update: bool = True) -> list[dict]:
    """train.py's loop on the fake env: reset, observe_first, then act / step / observe / update."""
    obs = env.reset()
    agent.observe_first(obs, env.labels)
    metrics = []
    for _ in range(steps):
        action = agent.act(obs, step)
        result = env.step(action)
        agent.observe(obs, action, result)
        obs = result.obs
        step += env.num_envs
        if update and agent.ready(step):
            metrics.append(agent.update(step))
    return metrics


# ---------------------------------------------------------------------------------------------
# The loss


def test_bce_and_accuracy_match_a_hand_computation():
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0], [-0.5, 0.25]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])

    def bce(x: float, y: float) -> float:
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    expected = sum(bce(x, y) for x, y in zip(logits.flatten().tolist(), labels.flatten().tolist(), strict=True)) / 6
    # Thresholded at 0.5 (logit > 0): predictions [[1, 0], [0, 1], [0, 1]]; the labels agree on
    # feature 0 in rows 0 and 2 (2/3), on feature 1 in rows 0 and 2 (2/3): the mean is 2/3.
    loss, accuracy = game_feature_loss(logits, labels)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(accuracy) == pytest.approx(2 / 3)
    loss16, _ = game_feature_loss(logits.bfloat16(), labels)
    assert loss16.dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# Off by default: no head, no storage, the same networks as before


def _default_agents():
    for name in ALGOS:
        for memory in ("none", "lstm") if name != "dqn" else ("none",):
            values = {"features_dim": 16, **({"memory": memory} if memory != "none" else {})}
            yield f"{name}/{memory}", name, make_config(name, values)


@pytest.mark.parametrize("label, name, cfg", list(_default_agents()), ids=lambda v: v if isinstance(v, str) else "")
def test_default_agents_have_no_head_no_label_storage_and_the_same_networks(label, name, cfg):
    build = ALGOS[name].agent
    torch.manual_seed(0)
    agent = build(cfg, (4, 36, 36), 3, 2, 100, torch.device("cpu"), frame_stack=4)
    net = agent.q_net if name == "dqn" else agent.net
    assert net.game_features is None
    state = net.state_dict()
    assert not any(key.startswith(GAME_FEATURE_HEAD) for key in state)
    assert num_game_features(state) == 0
    if name == "dqn":
        assert "labels" not in agent.replay._t
    else:
        assert agent.storage.labels is None
    # With a head, every other weight is initialised exactly as without (the head is built last).
    torch.manual_seed(0)
    other = build(cfg, (4, 36, 36), 3, 2, 100, torch.device("cpu"), frame_stack=4, num_game_features=3)
    other_state = (other.q_net if name == "dqn" else other.net).state_dict()
    assert set(other_state) - set(state) == {f"{GAME_FEATURE_HEAD}.weight", f"{GAME_FEATURE_HEAD}.bias"}
    assert all(torch.equal(state[key], other_state[key]) for key in state)
    assert other_state[f"{GAME_FEATURE_HEAD}.weight"].shape == (3, 16)


@pytest.mark.parametrize("zoo", ["doom-basic-ppo", "doom-basic-dqn"])
def test_shipped_checkpoints_load_into_default_agents(zoo):
    agent, checkpoint = load_agent(ROOT / "zoo" / zoo)
    net = agent.q_net if hasattr(agent, "q_net") else agent.net
    assert net.game_features is None
    assert agent.eval_act(torch.zeros(2, *checkpoint["obs_shape"], dtype=torch.uint8)).shape == (2,)


def test_labels_are_required_when_the_head_is_on():
    agent = _ppo()
    env = LabelledEnv()
    obs = env.reset()
    with pytest.raises(PixelplayError, match="observe_first"):
        agent.observe(obs, agent.act(obs, 0), env.step(torch.zeros(4)))
    with pytest.raises(PixelplayError, match="no labels"):
        agent.observe_first(obs, None)
    with pytest.raises(PixelplayError, match="shape"):
        agent.observe_first(obs, torch.zeros(4, 3))


# ---------------------------------------------------------------------------------------------
# Labels travel with their observations


@pytest.mark.parametrize("memory", ["none", "gru"])
def test_ppo_rollout_stores_the_labels_of_each_observation(memory):
    agent = _ppo(memory=memory, num_minibatches=2)
    env = LabelledEnv(p_done=0.25, seed=1)
    _play(agent, env, agent.cfg.num_steps, update=False)
    storage = agent.storage
    assert storage.full and bool(storage.dones.any()), "the rollout should cross episode ends"
    for t in range(storage.num_steps):
        assert torch.equal(storage.labels[t].float(), obs_labels(storage.obs[t])), t
    advantages = returns = torch.zeros(storage.num_steps, storage.num_envs)
    if memory == "none":
        batches = list(storage.minibatches(advantages, returns, 16))
    else:
        batches = list(storage.sequences(advantages, returns, 2))
    assert sum(len(b.obs) for b in batches) == storage.num_steps * storage.num_envs
    for batch in batches:
        assert batch.labels.dtype == torch.float32
        assert torch.equal(batch.labels, obs_labels(batch.obs))


@pytest.mark.parametrize("n_step", [1, 3])
def test_replay_returns_the_labels_of_the_sampled_observations(n_step):
    """Brute force: every label the env gave is kept by the frame it describes (a dict keyed by
    the frame's bytes); every sampleable index's labels are those of its observation's newest
    frame, over episode ends and a ring that wraps."""
    k, num_envs = 2, 3
    env = LabelledEnv(num_envs=num_envs, k=k, p_done=0.15, seed=2)
    buf = ReplayBuffer(num_envs * 40, num_envs, env.obs_shape, k, "cpu", n_step=n_step, num_labels=2,
                       check_stacks=True)
    given: dict[bytes, torch.Tensor] = {}

    def drive(buf, steps):
        buf.break_streams()  # the envs reset: new streams begin, with the labels of their first obs
        obs, labels = env.reset(), env.labels
        for o, label in zip(obs, labels, strict=True):
            given[o[-1].numpy().tobytes()] = label
        for _ in range(steps):
            result = env.step(torch.zeros(num_envs))
            for o, label in zip(result.obs, result.labels, strict=True):
                given[o[-1].numpy().tobytes()] = label
            buf.add(obs, torch.zeros(num_envs), result.reward, result.terminated, result.truncated, result.obs,
                    result.final_obs, labels=labels, next_labels=result.labels)
            obs, labels = result.obs, result.labels

    def check_every_sampleable(buf):
        index = buf.sampleable_indices()
        batch, got = buf.get(index), buf.labels(index)
        assert got.dtype == torch.float32 and got.shape == (len(index), 2)
        for o, label in zip(batch.obs, got, strict=True):
            assert torch.equal(label, given[o[-1].numpy().tobytes()])
        return index, got

    drive(buf, 25)  # the ring has not wrapped: the first stacks of the streams are still there
    assert len(check_every_sampleable(buf)[0]) > 40
    drive(buf, 125)  # reset again, and the ring wraps
    index, got = check_every_sampleable(buf)
    assert len(index) > 50
    sampled = buf.sample(64)
    assert torch.equal(buf.labels(sampled.index), obs_labels(sampled.obs))
    assert buf._t["labels"].dtype == torch.bool  # a byte per label and slot

    # The labels are part of the saved replay, and only a buffer with labels takes them.
    other = ReplayBuffer(num_envs * 40, num_envs, env.obs_shape, k, "cpu", n_step=n_step, num_labels=2)
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.labels(index), got)
    drive(other, 10)  # a resumed stream starts with the labels of its first observations
    check_every_sampleable(other)
    plain = ReplayBuffer(num_envs * 40, num_envs, env.obs_shape, k, "cpu", n_step=n_step)
    with pytest.raises(PixelplayError, match="labels"):
        plain.load_state_dict(buf.state_dict())
    with pytest.raises(PixelplayError, match="labels"):
        plain.labels(index)


def test_dqn_agent_stores_labels_with_its_observations():
    agent = _dqn(num_envs=3, k=3)
    env = LabelledEnv(num_envs=3, k=3, p_done=0.2, seed=3)
    _play(agent, env, 60, update=False)
    batch = agent.replay.sample(128)
    assert torch.equal(agent.replay.labels(batch.index), obs_labels(batch.obs))


# ---------------------------------------------------------------------------------------------
# The head learns, and only the loss's coefficient moves it


@torch.no_grad()
def _held_out_accuracy(net, k: int = 1, seed: int = 99) -> float:
    env = LabelledEnv(num_envs=256, k=k, seed=seed)
    obs = env.reset()
    logits = net(obs, with_game_features=True)[-1]
    return float(((logits > 0).float() == env.labels).float().mean())


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_actor_critic_head_learns_a_synthetic_labelling(algo):
    """No reward (zero advantages), no value or entropy term: the game-feature loss alone trains
    the network; a few hundred gradient steps make it > 0.9 accurate on frames it never saw."""
    torch.manual_seed(0)
    overrides = {"vf_coef": 0.0, "ent_coef": 0.0, "learning_rate": 1e-3, "anneal_lr": False}
    if algo == "a2c":  # one step per rollout: more rollouts
        overrides.update(num_steps=8)
        agent, steps = _ppo(num_envs=8, algo="a2c", **overrides), 8 * 200  # 200 updates
    else:
        agent, steps = _ppo(num_envs=8, **overrides), 16 * 12  # 12 updates of 16 minibatch steps
    assert _held_out_accuracy(agent.net) < 0.8
    metrics = _play(agent, LabelledEnv(num_envs=agent.num_envs, seed=4), steps)
    assert _held_out_accuracy(agent.net) > 0.9
    assert metrics[-1]["charts/game_feature_accuracy"] > 0.9
    assert metrics[-1]["losses/game_features"] < metrics[0]["losses/game_features"]
    assert abs(metrics[0]["losses/game_features"] - math.log(2)) < 0.05  # the head starts near p = 0.5


def test_dqn_head_learns_a_synthetic_labelling_from_the_replay():
    torch.manual_seed(0)
    agent = _dqn(num_envs=4, k=2, learning_rate=1e-3)
    metrics = _play(agent, LabelledEnv(num_envs=4, k=2, seed=5), 200)  # one gradient step per vector step
    assert agent.gradient_steps >= 190
    assert _held_out_accuracy(agent.q_net, k=2) > 0.9
    assert metrics[-1]["charts/game_feature_accuracy"] > 0.9 and "losses/td_loss" in metrics[-1]


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_coefficient_zero_leaves_the_head_untrained(algo):
    torch.manual_seed(0)
    if algo == "ppo":
        agent = _ppo(game_feature_coef=0.0)
        net = agent.net
    else:
        agent = _dqn(game_feature_coef=0.0)
        net = agent.q_net
    head = {k: v.clone() for k, v in net.game_features.state_dict().items()}
    torso = net.extractor.linear[0].weight.clone()
    metrics = _play(agent, LabelledEnv(num_envs=agent.num_envs, k=1 if algo == "ppo" else 2), 40)
    assert metrics and "losses/game_features" in metrics[-1]  # measured, not learned from
    assert all(torch.equal(v, net.game_features.state_dict()[k]) for k, v in head.items())
    assert not torch.equal(torso, net.extractor.linear[0].weight)  # the RL loss still trains the torso


# ---------------------------------------------------------------------------------------------
# The run option, end to end


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_ppo_with_game_features_logs_resumes_and_evaluates(tmp_path, capsys):
    run_dir = tmp_path / "ppo"
    args = ["--env", "doom-basic", "--game-features", "enemy", "--num-envs", "2", "--total-steps", "128",
            "--run-dir", str(run_dir), *SMALL_PPO]
    assert train.main(args) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["game_features"] == ["enemy"] and config["algo"]["game_feature_coef"] == 1.0
    rows = _rows(run_dir / "metrics.csv")
    assert len(rows) == 2
    for row in rows:
        assert 0 < float(row["losses/game_features"]) < 5
        assert 0 <= float(row["charts/game_feature_accuracy"]) <= 1
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["agent"]["net"][f"{GAME_FEATURE_HEAD}.weight"].shape == (1, 512)

    # --resume restores the head and goes on; another --game-features is refused, changing nothing.
    assert train.main(["--resume", str(run_dir), "--total-steps", "192", "--no-progress"]) == 0
    assert [int(r["global_step"]) for r in _rows(run_dir / "metrics.csv")] == [64, 128, 192]
    capsys.readouterr()
    assert train.main(["--resume", str(run_dir), "--total-steps", "256", "--game-features", "enemy,health",
                       "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "game-feature head differs" in err[0]
    assert load_checkpoint(run_dir)["global_step"] == 192

    # Evaluation builds the agent with its head (from the weights) and acts without it.
    agent, checkpoint = load_agent(run_dir)
    assert agent.net.game_features is not None
    assert agent.eval_act(torch.zeros(3, *checkpoint["obs_shape"], dtype=torch.uint8)).shape == (3,)


def test_cli_dqn_with_game_features_logs_the_head_loss(tmp_path):
    run_dir = tmp_path / "dqn"
    args = ["--algo", "dqn", "--env", "doom-basic", "--game-features", "enemy,health", "--num-envs", "2",
            "--total-steps", "160", "--learning-starts", "64", "--buffer-size", "2000", "--run-dir", str(run_dir),
            "--no-progress", "--no-track"]
    assert train.main(args) == 0
    rows = _rows(run_dir / "metrics.csv")
    assert rows and all(0 < float(r["losses/game_features"]) < 5 for r in rows)
    assert "charts/game_feature_accuracy" in rows[0]
    state = load_checkpoint(run_dir)["agent"]
    assert state["q_net"][f"{GAME_FEATURE_HEAD}.weight"].shape == (2, 512)


def test_default_run_has_no_head_and_logs_no_head_loss(tmp_path):
    run_dir = tmp_path / "plain"
    args = ["--env", "doom-basic", "--num-envs", "2", "--total-steps", "64", "--run-dir", str(run_dir), *SMALL_PPO]
    assert train.main(args) == 0
    assert "losses/game_features" not in _rows(run_dir / "metrics.csv")[0]
    assert not any(key.startswith(GAME_FEATURE_HEAD) for key in load_checkpoint(run_dir)["agent"]["net"])


@pytest.mark.parametrize("args, message", [
    (["--env", "breakout", "--game-features", "enemy"], "ViZDoom option"),
    (["--env", "doom-basic", "--game-features", "enemy,armour"], "unknown game feature"),
    (["--env", "doom-basic", "--game-features", "enemy,enemy"], "twice"),
    (["--env", "doom-basic", "--game-feature-coef", "-1"], "at least 0"),
])
def test_bad_game_feature_options_are_one_error_line(args, message, tmp_path, capsys):
    run_dir = tmp_path / "bad"
    assert train.main([*args, "--run-dir", str(run_dir), "--no-track"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not run_dir.exists()


def test_game_features_parse_from_flags_and_config_files(tmp_path):
    run_cfg, _, _ = resolve_config(["--game-features", "enemy,health"])
    assert run_cfg.game_features == ("enemy", "health")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"run": {"env": "doom-basic", "game_features": ["weapon", "ammo"]},
                                "algo": {"game_feature_coef": 0.5}}))
    run_cfg, algo_cfg, _ = resolve_config(["--config", str(path)])
    assert run_cfg.game_features == ("weapon", "ammo") and algo_cfg.game_feature_coef == 0.5
    assert resolve_config(["--config", str(path), "--game-features", ""])[0].game_features == ()
    path.write_text(json.dumps({"run": {"game_features": "enemy"}, "algo": {}}))
    with pytest.raises(PixelplayError, match="game_features must be a list"):
        resolve_config(["--config", str(path)])
