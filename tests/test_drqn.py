"""DRQN (DQN with --memory lstm / gru, trained as R2D2): the replay's sequences against a
brute-force enumeration, the sequence priority worked by hand, the update against a loop that
unrolls one sequence at a time, acting and evaluation states, and the CLI from training through
resuming, evaluation and a weights-only export.

No learning test: a DRQN gradient step unrolls batch_size * (burn_in + sequence_length + n_step)
frames through the CNN, and learning doom-basic with it takes minutes on a 2-core CPU, past what
a fast test may spend.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelplay import train
from pixelplay.agents import load_agent
from pixelplay.agents.checkpoint import load_checkpoint
from pixelplay.agents.config import ConfigError
from pixelplay.agents.dqn import DQNAgent, DQNConfig, sequence_priority
from pixelplay.agents.networks import RecurrentQNetwork
from pixelplay.agents.replay import ReplayBuffer
from pixelplay.envs.errors import PixelplayError
from pixelplay.envs.vec import StepResult
from pixelplay.eval.__main__ import main as eval_main

OBS = (4, 36, 36)
"""4 stacked 36x36 frames: the smallest square input the Nature CNN tiles (36 -> 8 -> 3 -> 1)."""
SMALL = dict(features_dim=32, memory_size=16, precision="fp32")


class FakeVecEnv:
    """N envs of random frames stacked ``k`` deep (oldest first, the first stack padded with its
    first frame), short episodes ended by terminations and truncations, autoreset on the step."""

    def __init__(self, num_envs=3, k=4, hw=(5, 5), p_term=0.1, p_trunc=0.06, seed=0):
        self.rng = np.random.default_rng(seed)
        self.num_envs, self.k, self.hw = num_envs, k, hw
        self.p_term, self.p_trunc = p_term, p_trunc
        self.stacks = [self._new_stack() for _ in range(num_envs)]

    @property
    def obs_shape(self):
        return (self.k, *self.hw)

    def _frame(self):
        return self.rng.integers(0, 256, (1, *self.hw), dtype=np.uint8)

    def _new_stack(self):
        return [self._frame()] * self.k

    def obs(self) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.concatenate(s, 0) for s in self.stacks]))

    def step(self):
        n = self.num_envs
        action = torch.from_numpy(self.rng.integers(0, 5, n))
        reward = torch.from_numpy(self.rng.normal(size=n).astype(np.float32))
        u = self.rng.random(n)
        terminated = torch.from_numpy(u < self.p_term)
        truncated = torch.from_numpy((u >= self.p_term) & (u < self.p_term + self.p_trunc))
        for e in range(n):
            self.stacks[e] = [*self.stacks[e][1:], self._frame()]
        final_obs = self.obs()
        for e in np.flatnonzero((terminated | truncated).numpy()):
            self.stacks[e] = self._new_stack()
        return action, reward, terminated, truncated, self.obs(), final_obs


class SlotReference:
    """Every env's stream in absolute slot positions, as the replay's documented layout writes
    it: an episode's first stack takes k slots (k - 1 of padding, then the first observation),
    each step one slot (the next observation, or the final one at an episode end). A record
    holds the observation whose newest frame is there (None for padding), whether it starts an
    episode, and the transition taken from it (None where no action was taken)."""

    def __init__(self, num_envs: int, k: int):
        self.k = k
        self.records: list[list[dict]] = [[] for _ in range(num_envs)]
        self.streaming = False

    def _begin(self, e, obs):
        self.records[e] += [{"obs": None, "first": False, "transition": None} for _ in range(self.k - 1)]
        self.records[e].append({"obs": obs.clone(), "first": True, "transition": None})

    def add(self, obs, action, reward, terminated, truncated, next_obs, final_obs):
        for e, records in enumerate(self.records):
            if not self.streaming:
                self._begin(e, obs[e])
            done = bool(terminated[e] or truncated[e])
            records[-1]["transition"] = (int(action[e]), float(reward[e]), bool(terminated[e]), bool(truncated[e]))
            if done:
                records.append({"obs": final_obs[e].clone(), "first": False, "transition": None})
                self._begin(e, next_obs[e])
            else:
                records.append({"obs": next_obs[e].clone(), "first": False, "transition": None})
        self.streaming = True

    def break_streams(self):
        """Running episodes are cut as truncations: the last transition bootstraps from the
        observation after it, which never gets a transition of its own."""
        for records in self.records:
            last = records[-2]["transition"]
            if last is not None and not (last[2] or last[3]):
                records[-2]["transition"] = (*last[:3], True)
        self.streaming = False

    def valid_starts(self, e: int, window: int, slots_per_env: int) -> list[int]:
        """Every start whose window and first stack are written and not yet overwritten."""
        written = len(self.records[e])

        def intact(p):
            return 0 <= p < written and p >= written - slots_per_env

        return [s for s in range(written) if all(intact(p) for p in range(s - self.k + 1, s + window))]

    def target(self, e: int, p: int, n: int, gamma: float) -> tuple[float, float, int]:
        """Plain n-step loop from the transition at position p: (return, discount, bootstrap position)."""
        ret = 0.0
        for j in range(n):
            _, reward, terminated, truncated = self.records[e][p + j]["transition"]
            ret += gamma**j * reward
            if terminated:
                return ret, 0.0, p + j + 1
            if truncated:
                return ret, gamma ** (j + 1), p + j + 1
        return ret, gamma**n, p + n


def _drive(buf, env, ref, steps, obs=None):
    obs = env.obs() if obs is None else obs
    for _ in range(steps):
        action, reward, terminated, truncated, next_obs, final_obs = env.step()
        buf.add(obs, action, reward, terminated, truncated, next_obs, final_obs)
        ref.add(obs, action, reward, terminated, truncated, next_obs, final_obs)
        obs = next_obs
    return obs


def _check_against_reference(buf: ReplayBuffer, ref: SlotReference, gamma: float) -> int:
    """The sampleable starts are exactly the reference's, and each one's sequence holds the
    reference's observations, episode starts, masks, actions and n-step targets."""
    F_, W, B, L, n = buf.slots_per_env, buf.window, buf.burn_in, buf.sequence_length, buf.n_step
    starts = {}
    for e in range(buf.num_envs):
        for s in ref.valid_starts(e, W, F_):
            starts[e * F_ + s % F_] = (e, s)
    leaves = buf.sampleable_indices().tolist()
    assert sorted(leaves) == sorted(starts)
    assert len(buf) == len(starts) and buf.check_valid() == (True, "")
    batch = buf.get_sequences(torch.tensor(leaves))
    assert batch.obs.shape == (W, len(leaves), *buf.obs_shape) and batch.mask.shape == (L, len(leaves))
    for b, leaf in enumerate(leaves):
        e, s = starts[leaf]
        records = ref.records[e]
        for t in range(W):
            record = records[s + t]
            assert bool(batch.first[t, b]) == record["first"], (e, s, t)
            if record["obs"] is not None:  # padding frames are fed to the net, then reset: not checked
                assert torch.equal(batch.obs[t, b], record["obs"]), (e, s, t)
        for i in range(L):
            p = s + B + i
            transition = records[p]["transition"]
            assert bool(batch.mask[i, b]) == (transition is not None), (e, s, i)
            if transition is None:
                continue
            ret, discount, boot = ref.target(e, p, n, gamma)
            assert int(batch.action[i, b]) == transition[0]
            assert float(batch.reward[i, b]) == pytest.approx(ret, abs=1e-5)
            assert float(batch.discount[i, b]) == pytest.approx(discount, abs=1e-6)
            assert int(batch.bootstrap[i, b]) == boot - s
            assert torch.equal(batch.obs[boot - s, b], records[boot]["obs"])  # the right observation
    return len(leaves)


@pytest.mark.parametrize(
    "n_step,burn_in,sequence_length,slots,prioritized",
    [
        (2, 3, 5, 40, False),  # wraps the ring several times
        (3, 2, 6, 33, True),
        (1, 0, 4, 400, False),  # no wrap, no burn-in
    ],
)
def test_sequences_match_a_brute_force_enumeration(n_step, burn_in, sequence_length, slots, prioritized):
    gamma, k = 0.9, 4
    env = FakeVecEnv(num_envs=3, k=k, seed=n_step * 10 + slots)
    buf = ReplayBuffer(3 * slots, 3, env.obs_shape, k, "cpu", n_step=n_step, gamma=gamma, prioritized=prioritized,
                       check_stacks=True, sequence_length=sequence_length, burn_in=burn_in)
    ref = SlotReference(3, k)
    with pytest.raises(PixelplayError, match="check ready"):
        buf.sample_sequences(4)
    _drive(buf, env, ref, 70)
    _check_against_reference(buf, ref, gamma)
    # A cut stream (evaluation with the training envs, or a resume) ends its episodes as truncations.
    buf.break_streams()
    ref.break_streams()
    env.stacks = [env._new_stack() for _ in range(3)]
    _drive(buf, env, ref, 60)
    count = _check_against_reference(buf, ref, gamma)
    assert count > 30
    records = [r for stream in ref.records for r in stream]
    assert sum(r["transition"] is not None and r["transition"][2] for r in records) > 5
    assert sum(r["transition"] is not None and r["transition"][3] for r in records) > 5
    batch = buf.sample_sequences(64)
    assert set(batch.index.tolist()) <= set(buf.sampleable_indices().tolist())
    assert batch.weight.shape == (64,) and (batch.weight <= 1).all() and (batch.weight > 0).all()


def test_a_sequence_costs_no_frames_beyond_the_transitions():
    """Memory per transition stays one frame: sequences add two bools per slot and a counter per env."""
    shape, k, capacity = (4, 84, 84), 4, 3 * 1_000
    plain = ReplayBuffer(capacity, 3, shape, k, "cpu", n_step=3)
    sequences = ReplayBuffer(capacity, 3, shape, k, "cpu", n_step=3, sequence_length=20, burn_in=10)
    assert sequences._frames.shape == plain._frames.shape == (3, 1_001, 1, 84, 84)
    assert sequences.nbytes - plain.nbytes == 2 * capacity + 8 * 3


def test_replay_refuses_a_ring_shorter_than_a_sequence():
    with pytest.raises(PixelplayError, match="need at least 34 per env"):
        ReplayBuffer(3 * 33, 3, OBS, 4, "cpu", n_step=3, sequence_length=20, burn_in=7)
    ReplayBuffer(3 * 34, 3, OBS, 4, "cpu", n_step=3, sequence_length=20, burn_in=7)


# ---- the learner ------------------------------------------------------------------------------


def test_sequence_priority_hand_worked():
    # Two sequences of 3 steps; the last step of the second holds no transition (masked).
    td = torch.tensor([[1.0, -4.0], [-3.0, 0.5], [2.0, 100.0]])
    mask = torch.tensor([[True, True], [True, True], [True, False]])
    # |td| 1, 3, 2: max 3, mean 2 -> 0.9 * 3 + 0.1 * 2 = 2.9; |td| 4, 0.5: 0.9 * 4 + 0.1 * 2.25 = 3.825.
    assert sequence_priority(td, mask, 0.9).tolist() == pytest.approx([2.9, 3.825])
    assert sequence_priority(td, mask, 0.0).tolist() == pytest.approx([2.0, 2.25])
    assert sequence_priority(td, torch.zeros_like(mask), 0.9).tolist() == [0.0, 0.0]


def _agent(num_envs=3, **overrides) -> DQNAgent:
    cfg = DQNConfig(**{"memory": "lstm", "learning_starts": 0, "buffer_size": 3 * 60, "batch_size": 6,
                       "sequence_length": 5, "burn_in": 3, "n_step": 2, **SMALL, **overrides})
    return DQNAgent(cfg, OBS, 3, num_envs, 10_000, torch.device("cpu"), frame_stack=4)


def _labels(obs: torch.Tensor, agent: DQNAgent) -> torch.Tensor | None:
    """Game-feature labels that are a function of the observation: is pixel (0, j) of its newest
    frame bright, for each feature j (None for an agent without game features)."""
    if not agent.num_game_features:
        return None
    return (obs[:, -1, 0, : agent.num_game_features] > 127).float()


def _play(agent: DQNAgent, steps: int, generator: torch.Generator, step: int = 0):
    """Act and observe ``steps`` vector steps of a stream of random frames with random deaths
    and time limits (frames stacked as an env stacks them); returns the observations and ends."""
    n = agent.num_envs
    obs = torch.randint(0, 256, (n, *OBS), dtype=torch.uint8, generator=generator)
    agent.observe_first(obs, _labels(obs, agent))
    seen, ends = [], []
    for _ in range(steps):
        action = agent.act(obs, step)
        frame = torch.randint(0, 256, (n, 1, *OBS[1:]), dtype=torch.uint8, generator=generator)
        final = torch.cat([obs[:, 1:], frame], 1)
        terminated = torch.rand(n, generator=generator) < 0.12
        truncated = ~terminated & (torch.rand(n, generator=generator) < 0.05)
        done = terminated | truncated
        fresh = torch.randint(0, 256, (n, 1, *OBS[1:]), dtype=torch.uint8, generator=generator).expand(n, *OBS)
        next_obs = torch.where(done.view(-1, 1, 1, 1), fresh, final)
        agent.observe(obs, action, StepResult(next_obs, torch.randn(n, generator=generator), terminated, truncated,
                                              final, [], _labels(next_obs, agent)))
        seen.append(obs)
        ends.append(done)
        obs, step = next_obs, step + n
    return seen, ends


def _reference_loss(agent: DQNAgent, batch, burn_in_gradients: bool = False):
    """The DRQN loss one sequence and one step at a time: both nets from zeros, the state reset
    by hand at each episode start, the online net's burn-in without gradients (unless asked)."""
    cfg, net, target_net = agent.cfg, agent.q_net, agent.target_net
    window, size = batch.first.shape
    total, count, td = 0.0, 0, torch.zeros(cfg.sequence_length, size)

    def unroll(module, b, grad_from):
        state, out = module.initial_state(1), []
        for t in range(window):
            if batch.first[t, b]:
                state = torch.zeros_like(state)
            with torch.set_grad_enabled(t >= grad_from):
                q, state = module(batch.obs[t, b : b + 1], state)
            out.append(q[0])
        return out

    for b in range(size):
        with torch.no_grad():
            target_q = unroll(target_net, b, window)
        online_q = unroll(net, b, 0 if burn_in_gradients else cfg.burn_in)
        for i in range(cfg.sequence_length):
            if not batch.mask[i, b]:
                continue
            t, boot = cfg.burn_in + i, int(batch.bootstrap[i, b])
            best = int(online_q[boot].argmax())  # Double DQN
            y = float(batch.reward[i, b]) + float(batch.discount[i, b]) * float(target_q[boot][best])
            q = online_q[t][int(batch.action[i, b])]
            td[i, b] = y - float(q.detach())
            total = total + batch.weight[b] * F.smooth_l1_loss(q, torch.tensor(y))
            count += 1
    return total / count, td


def test_a_drqn_update_equals_a_sequence_by_sequence_reference():
    """Double + dueling + 3-step + prioritized: the gradient step's gradients equal those of the
    reference loop (burn-in without gradients, which differs from letting them through), and each
    sampled sequence's new priority is R2D2's mix of the reference's TD errors."""
    torch.manual_seed(0)
    agent = _agent(double_dqn=True, dueling=True, n_step=3, prioritized=True, priority_alpha=0.6,
                   learning_rate=0.0, max_grad_norm=0.0)
    with torch.no_grad():  # a target net that disagrees with the online one, so Double DQN matters
        for p in agent.target_net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    _play(agent, 60, torch.Generator().manual_seed(1))
    for _ in range(3):  # priorities that differ, so the importance weights do (lr 0: the same nets)
        agent._gradient_step(beta=0.5)
    seen = []
    sample = agent.replay.sample_sequences
    agent.replay.sample_sequences = lambda *a, **kw: seen.append(sample(*a, **kw)) or seen[-1]
    agent._gradient_step(beta=0.5)
    (batch,) = seen
    assert batch.first[agent.cfg.burn_in :].any(), "no episode start inside the sequences"
    assert not batch.mask.all() and batch.mask.any()
    assert not torch.equal(batch.weight, torch.ones_like(batch.weight))
    got = {name: p.grad.clone() for name, p in agent.q_net.named_parameters()}

    agent.q_net.zero_grad()
    loss, td = _reference_loss(agent, batch)
    loss.backward()
    for name, p in agent.q_net.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
    agent.q_net.zero_grad()
    _reference_loss(agent, batch, burn_in_gradients=True)[0].backward()
    core = agent.q_net.core.weight_hh_l0
    assert (core.grad - got["core.weight_hh_l0"]).abs().max() > 1e-6, "burn-in would have changed the gradient"

    magnitude = td.abs() * batch.mask
    mix = 0.9 * magnitude.max(0).values + 0.1 * magnitude.sum(0) / batch.mask.sum(0).clamp(min=1)
    index = batch.index.tolist()
    once = [b for b, i in enumerate(index) if index.count(i) == 1]  # duplicates keep one of their values
    expected = (mix.double()[once] + agent.replay.priority_eps) ** 0.6
    torch.testing.assert_close(agent.replay.priorities(batch.index[once]), expected, rtol=1e-4, atol=1e-6)


def test_game_features_learn_from_the_observations_of_the_learning_steps():
    """With game features the head's loss is the BCE of its logits on the frames of the learning
    positions that hold a transition, against those observations' own labels."""
    torch.manual_seed(0)
    cfg = DQNConfig(memory="gru", learning_starts=0, buffer_size=3 * 60, batch_size=4, sequence_length=5, burn_in=2,
                    n_step=2, learning_rate=0.0, **SMALL)
    agent = DQNAgent(cfg, OBS, 3, 3, 10_000, torch.device("cpu"), frame_stack=4, num_game_features=2)
    _play(agent, 40, torch.Generator().manual_seed(4))
    seen = []
    sample = agent.replay.sample_sequences
    agent.replay.sample_sequences = lambda *a, **kw: seen.append(sample(*a, **kw)) or seen[-1]
    _, _, got_bce, got_accuracy = agent._gradient_step(beta=0.4)
    (batch,) = seen
    assert not batch.mask.all()
    frames = batch.obs[2:7][batch.mask]  # learning positions with a transition, (M, C, H, W)
    with torch.no_grad():
        logits = agent.q_net.game_features(agent.q_net.extractor(frames))
    labels = (frames[:, -1, 0, :2] > 127).float()
    bce = F.binary_cross_entropy_with_logits(logits, labels)
    accuracy = ((logits > 0) == (labels > 0.5)).float().mean()
    assert float(got_bce) == pytest.approx(float(bce), rel=1e-5)
    assert float(got_accuracy) == pytest.approx(float(accuracy), rel=1e-5)
    assert 0 < float(accuracy) < 1


def test_acting_keeps_a_state_per_env_reset_where_an_episode_ended():
    """Brute force: the agent's per-env state after a stream equals stepping each env alone with
    the network and zeroing its state after each of its episode ends."""
    torch.manual_seed(0)
    agent = _agent(num_envs=3, memory="gru")
    frames, ends = _play(agent, 12, torch.Generator().manual_seed(2))
    assert any(bool(e.any()) for e in ends[:-1])
    with torch.no_grad():
        for env in range(3):
            state = agent.q_net.initial_state(1)
            for obs, end in zip(frames, ends, strict=True):
                _, state = agent.q_net(obs[env : env + 1], state)
                if end[env]:
                    state = torch.zeros_like(state)
            torch.testing.assert_close(agent._state[:, env : env + 1], state, rtol=1e-5, atol=1e-6)
    agent.observe_first(frames[0])
    assert not agent._state.any()


def test_eval_state_per_row_reset_where_first():
    torch.manual_seed(0)
    agent = _agent(num_envs=1)  # as load_agent builds it: one env
    frames = torch.randint(0, 256, (3, 2, *OBS), dtype=torch.uint8)
    agent.eval_act(frames[0], torch.tensor([True, True]))
    agent.eval_act(frames[1])
    before = agent._eval_state.clone()
    agent.eval_act(frames[2], torch.tensor([True, False]))
    with torch.no_grad():
        _, fresh = agent.q_net(frames[2][:1], agent.q_net.initial_state(1))
        _, going_on = agent.q_net(frames[2][1:], before[:, 1:])
    torch.testing.assert_close(agent._eval_state[:, :1], fresh)
    torch.testing.assert_close(agent._eval_state[:, 1:], going_on)
    agent.eval_act(frames[0][:1])  # another batch size: a new evaluation, from zeros
    assert agent._eval_state.shape[1] == 1


def test_state_dict_round_trip_holds_weights_not_states():
    torch.manual_seed(0)
    agent = _agent(prioritized=True, save_replay=True)
    _play(agent, 40, torch.Generator().manual_seed(3))
    agent.update(120)
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert not any("state" == key for key in state) and any(k.startswith("core.") for k in state["q_net"])
    restored = _agent(prioritized=True, save_replay=True)
    restored.load_state_dict(state)
    assert not restored._state.any()
    # Same weights, optimizer, replay and sampler: the next update is the same.
    assert agent.update(124) == restored.update(124)
    for a, b in zip(agent.q_net.parameters(), restored.q_net.parameters(), strict=True):
        assert torch.equal(a, b)


def test_config_checks():
    cfg = DQNConfig(memory="lstm", buffer_size=4 * 30, sequence_length=20, burn_in=10, n_step=3)
    assert cfg.window == 33
    with pytest.raises(ConfigError, match="fewer than one sequence needs"):
        cfg.check_rollout(4)
    DQNConfig(buffer_size=4 * 30, sequence_length=20, burn_in=10).check_rollout(4)  # feed-forward: unused
    # The env's frame stack counts too: the agent checks again with it.
    edge = DQNConfig(memory="gru", buffer_size=2 * 34, sequence_length=20, burn_in=10, n_step=3, **SMALL)
    edge.check_rollout(2)
    with pytest.raises(ConfigError, match="frame_stack=4"):
        DQNAgent(edge, OBS, 3, 2, 100, torch.device("cpu"), frame_stack=4)
    # A feed-forward DQN is the network it was: no core, the same state dict keys.
    agent = DQNAgent(DQNConfig(**SMALL), OBS, 3, 1, 1, torch.device("cpu"))
    assert not any(k.startswith("core") for k in agent.q_net.state_dict())
    assert isinstance(_agent().q_net, RecurrentQNetwork)


# ---- through train.py and the eval commands -----------------------------------------------------


def test_cli_trains_resumes_evaluates_and_exports_a_drqn(tmp_path, monkeypatch, capsys):
    run = tmp_path / "drqn"
    args = ["--algo", "dqn", "--env", "doom-basic", "--memory", "lstm", "--num-envs", "2", "--total-steps", "96",
            "--learning-starts", "32", "--buffer-size", "400", "--batch-size", "4", "--sequence-length", "4",
            "--burn-in", "2", "--train-frequency", "8", "--prioritized", "--run-dir", str(run), "--no-track",
            "--no-progress"]
    assert train.main(args) == 0
    config = json.loads((run / "config.json").read_text())["algo"]
    assert (config["memory"], config["sequence_length"], config["burn_in"]) == ("lstm", 4, 2)
    saved = load_checkpoint(run)
    assert saved["agent"]["gradient_steps"] > 0 and any(k.startswith("core.") for k in saved["agent"]["q_net"])
    assert train.main(["--resume", str(run), "--total-steps", "160", "--no-track", "--no-progress"]) == 0
    assert load_checkpoint(run)["global_step"] == 160

    # Evaluation hands the agent every episode start.
    firsts = []
    eval_act = DQNAgent.eval_act

    def spying(self, obs, first=None, epsilon=None):
        firsts.append(None if first is None else first.tolist())
        return eval_act(self, obs, first, epsilon)

    monkeypatch.setattr(DQNAgent, "eval_act", spying)
    assert eval_main(["score", str(run), "--episodes", "2", "--num-envs", "2"]) == 0
    assert firsts[0] == [True, True] and None not in firsts

    # A weights-only export loads with the core: the target net is its q-net.
    out = tmp_path / "exported"
    assert eval_main(["export", str(run), str(out)]) == 0
    agent, _ = load_agent(out)
    full = load_checkpoint(run)["agent"]["q_net"]
    assert isinstance(agent.q_net, RecurrentQNetwork)
    assert all(torch.equal(agent.q_net.state_dict()[k], full[k]) for k in full)
    assert all(torch.equal(agent.target_net.state_dict()[k], full[k]) for k in full)
    capsys.readouterr()

    bad = ["--algo", "dqn", "--env", "doom-basic", "--memory", "gru", "--num-envs", "4", "--buffer-size", "100",
           "--run-dir", str(tmp_path / "bad"), "--no-track", "--no-progress"]
    assert train.main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fewer than one sequence needs" in err[0]
    assert not (tmp_path / "bad").exists()
