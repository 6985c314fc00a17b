"""Overlap of env stepping and learning: ``VecEnv.step_async`` / ``step_wait`` and ``--overlap``.

The split step must return exactly what ``step`` returns (same seeds, same actions), on every
backend that can run a step in the background. In the training loop an off-policy agent's
gradient steps must fall between the start and the end of an env step, see the replay as it
stood before that step's transition, and keep the replay ratio of the sequential loop.
"""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest
import torch
from torch.distributions import Categorical

from pixelplay import train
from pixelplay.agents.dqn import DQNAgent
from pixelplay.agents.ppo import PPOAgent
from pixelplay.agents.rollout import RolloutStorage
from pixelplay.envs import make_vec_env
from pixelplay.envs.vec import VecEnv


def _backend(name: str) -> str:
    if name == "envpool":
        if sys.platform != "linux":
            pytest.skip("EnvPool is Linux only")
        pytest.importorskip("envpool", reason="EnvPool not installed (pip install 'pixelplay[envpool]')")
    return name


@pytest.mark.parametrize(("backend", "num_envs"), [("envpool", 1), ("envpool", 3), ("gymnasium", 2)])
def test_a_split_step_returns_what_a_step_returns(backend, num_envs):
    """Two identical Breakout training envs, one stepped with ``step`` and one with ``step_async``
    + ``step_wait``, stay identical over lost lives and finished games (random actions)."""
    backend = _backend(backend)
    whole = make_vec_env("breakout", num_envs, seed=5, backend=backend)
    split = make_vec_env("breakout", num_envs, seed=5, backend=backend)
    try:
        assert torch.equal(whole.reset(seed=5), split.reset(seed=5))
        rng = np.random.default_rng(0)
        ends = 0
        for _ in range(300):
            actions = torch.as_tensor(rng.integers(0, whole.num_actions, num_envs))
            expected = whole.step(actions)
            split.step_async(actions)
            got = split.step_wait()
            for name in ("obs", "reward", "terminated", "truncated", "final_obs"):
                assert torch.equal(getattr(expected, name), getattr(got, name)), name
            assert got.episodes == expected.episodes
            ends += int((got.terminated | got.truncated).sum())
        assert ends > 0  # the comparison covered the same-step reset after a lost life
    finally:
        whole.close()
        split.close()


def test_one_step_at_a_time():
    envs = make_vec_env("breakout", 1, seed=0, backend="gymnasium")
    try:
        envs.reset(seed=0)
        with pytest.raises(RuntimeError, match="without step_async"):
            envs.step_wait()
        envs.step_async(torch.zeros(1, dtype=torch.int64))
        with pytest.raises(RuntimeError, match="twice"):
            envs.step_async(torch.zeros(1, dtype=torch.int64))
        assert envs.step_wait().obs.shape[0] == 1
    finally:
        envs.close()


SMALL_DQN = ["--algo", "dqn", "--env", "doom-basic", "--num-envs", "2", "--total-steps", "240",
             "--learning-starts", "100", "--train-frequency", "4", "--batch-size", "8", "--buffer-size", "1000",
             "--no-track", "--no-progress"]


_REAL_STEP_ASYNC, _REAL_STEP_WAIT, _REAL_GRADIENT_STEP = VecEnv.step_async, VecEnv.step_wait, DQNAgent._gradient_step


def _trace_training(tmp_path, monkeypatch, overlap: bool) -> list[tuple]:
    """Run a short DQN training and return its events in order: ("send",), ("wait",) and
    ("grad", transitions added to the replay when the gradient step ran)."""
    events: list[tuple] = []

    def step_async(self, actions):
        events.append(("send",))
        return _REAL_STEP_ASYNC(self, actions)

    def step_wait(self):
        events.append(("wait",))
        return _REAL_STEP_WAIT(self)

    def gradient_step(self, beta):
        events.append(("grad", self.replay.num_added))
        return _REAL_GRADIENT_STEP(self, beta)

    monkeypatch.setattr(VecEnv, "step_async", step_async)
    monkeypatch.setattr(VecEnv, "step_wait", step_wait)
    monkeypatch.setattr(DQNAgent, "_gradient_step", gradient_step)
    flag = "--overlap" if overlap else "--no-overlap"
    assert train.main([*SMALL_DQN, flag, "--run-dir", str(tmp_path / flag)]) == 0
    return events


def test_dqn_learns_while_the_envs_step(tmp_path, monkeypatch):
    """With --overlap every gradient step runs between a step's start and its end, on a replay
    holding every transition but the one in flight; without it, after the step. The count of
    gradient steps is the same: one per 4 env steps from learning_starts on (240 steps of 2 envs,
    learning starts at 100: steps 100, 104, ..., 240 -> 36)."""
    sequential = _trace_training(tmp_path, monkeypatch, overlap=False)
    overlapped = _trace_training(tmp_path, monkeypatch, overlap=True)

    def gradient_steps(events: list[tuple]) -> list[tuple[str, int]]:
        """Each gradient step: whether a step was in flight, and the replay's transitions then."""
        in_flight, seen = False, []
        for event in events:
            if event[0] == "send":
                in_flight = True
            elif event[0] == "wait":
                in_flight = False
            else:
                seen.append(("during" if in_flight else "after", event[1]))
        return seen

    after, during = gradient_steps(sequential), gradient_steps(overlapped)
    assert len(after) == len(during) == 36
    assert all(where == "after" for where, _ in after)
    assert all(where == "during" for where, _ in during)
    # The n-th gradient step is due at env step 100 + 4n (2 envs per vector step): the
    # sequential loop has stored that step's transitions, the overlapped one all but those 2.
    assert [added for _, added in after] == [100 + 4 * n for n in range(36)]
    assert [added for _, added in during] == [100 + 4 * n - 2 for n in range(36)]


def test_on_policy_agents_never_overlap(tmp_path, monkeypatch):
    """PPO's update needs the rollout's last step: with --overlap it still runs after the step."""
    events: list[str] = []
    real_update = PPOAgent.update

    def step_async(self, actions):
        events.append("send")
        return _REAL_STEP_ASYNC(self, actions)

    def step_wait(self):
        events.append("wait")
        return _REAL_STEP_WAIT(self)

    def update(self, step):
        events.append("update")
        return real_update(self, step)

    monkeypatch.setattr(VecEnv, "step_async", step_async)
    monkeypatch.setattr(VecEnv, "step_wait", step_wait)
    monkeypatch.setattr(PPOAgent, "update", update)
    args = ["--env", "doom-basic", "--num-envs", "2", "--num-steps", "16", "--num-minibatches", "2",
            "--total-steps", "96", "--overlap", "--no-track", "--no-progress", "--run-dir", str(tmp_path / "ppo")]
    assert train.main(args) == 0
    updates = [i for i, event in enumerate(events) if event == "update"]
    assert len(updates) == 3
    assert all(events[i - 1] == "wait" for i in updates)


def _policy_logprobs(agent, storage) -> torch.Tensor:
    """Brute force: the log-probability of each stored action under the agent's current weights,
    env by env and step by step (a recurrent core from the rollout's initial state, zeroed after
    each episode end), written independently of the update's minibatch code."""
    num_steps, num_envs = storage.actions.shape
    logprobs = torch.zeros(num_steps, num_envs)
    with torch.no_grad():
        for env in range(num_envs):
            state = None if storage.initial_state is None else storage.initial_state[:, env : env + 1].clone()
            for t in range(num_steps):
                obs = storage.obs[t, env : env + 1]
                if state is None:
                    logits, _ = agent.net(obs)
                else:
                    if t > 0 and bool(storage.dones[t - 1, env]):
                        state = torch.zeros_like(state)
                    logits, _, state = agent.net(obs, state)
                logprobs[t, env] = Categorical(logits=logits.float()).log_prob(storage.actions[t, env])[0]
    return logprobs


@pytest.mark.parametrize(("algo", "memory"), [("ppo", "none"), ("ppo", "lstm"), ("a2c", "none")])
def test_double_buffered_sampling_overlaps_a_half_and_stays_on_policy(tmp_path, monkeypatch, algo, memory):
    """--double-buffer: while one half's step is in flight the policy acts for the other half;
    both halves wait for each update, whose rollout holds, env by env, the actions the current
    weights chose (their log-probabilities recomputed step by step match the stored ones: no
    stale action, no column of one half mixed with the other's), and every env logs its games
    under its own number."""
    events: list[tuple] = []
    real_act, real_update = PPOAgent.act, PPOAgent.update
    mismatch: list[float] = []

    def step_async(self, actions):
        events.append(("send", id(self)))
        return _REAL_STEP_ASYNC(self, actions)

    def step_wait(self):
        events.append(("wait", id(self)))
        return _REAL_STEP_WAIT(self)

    def act(self, obs, step, rows=None):
        events.append(("act", rows.start))
        return real_act(self, obs, step, rows)

    def update(self, step):
        events.append(("update",))
        assert self.storage.full
        mismatch.append(float((_policy_logprobs(self, self.storage) - self.storage.logprobs).abs().max()))
        return real_update(self, step)

    monkeypatch.setattr(VecEnv, "step_async", step_async)
    monkeypatch.setattr(VecEnv, "step_wait", step_wait)
    monkeypatch.setattr(PPOAgent, "act", act)
    monkeypatch.setattr(PPOAgent, "update", update)
    run_dir = tmp_path / memory
    minibatches = ["--num-minibatches", "2"] if algo == "ppo" else []
    args = ["--algo", algo, "--env", "doom-basic", "--num-envs", "4", "--num-steps", "8", *minibatches,
            "--total-steps", "320", "--memory", memory, "--double-buffer", "--seed", "3", "--no-track",
            "--no-progress", "--run-dir", str(run_dir)]
    assert train.main(args) == 0

    # 320 steps of 4 envs x 8: 10 rollouts, crossing episode ends (a game times out at 75 steps)
    assert len(mismatch) == 10 and max(mismatch) < 1e-4, mismatch
    in_flight: set[int] = set()
    acted_during_a_step = 0
    for event in events:
        if event[0] == "send":
            in_flight.add(event[1])
        elif event[0] == "wait":
            in_flight.discard(event[1])
        elif event[0] == "act":
            acted_during_a_step += bool(in_flight)
        else:
            assert not in_flight, "an update while a step was in flight"
    groups = {event[1] for event in events if event[0] == "send"}
    assert len(groups) == 2 and {event[1] for event in events if event[0] == "act"} == {0, 2}
    # Each rollout: 8 steps per half; all but each rollout's first act come while the other half steps.
    assert acted_during_a_step == 10 * (2 * 8 - 1)
    with open(run_dir / "episodes.csv") as f:
        envs_seen = {int(row["env"]) for row in csv.DictReader(f)}
    assert envs_seen <= {0, 1, 2, 3} and envs_seen & {2, 3}, envs_seen


def test_a_rollout_filled_by_halves_equals_one_filled_whole():
    """The same transitions stored two halves at a time (in the order double-buffered sampling
    stores them: half A's step t, then half B's step t) or all envs at once give the same rollout;
    it is full only when both halves are, and a half cannot store past its num_steps."""
    num_steps, num_envs, obs_shape = 3, 4, (2, 5, 5)
    generator = torch.Generator().manual_seed(0)
    steps = [
        dict(obs=torch.randint(0, 255, (num_envs, *obs_shape), dtype=torch.uint8, generator=generator),
             action=torch.randint(0, 3, (num_envs,), generator=generator),
             logprob=torch.randn(num_envs, generator=generator), value=torch.randn(num_envs, generator=generator),
             reward=torch.randn(num_envs, generator=generator),
             done=torch.rand(num_envs, generator=generator) < 0.3,
             state=torch.randn(1, num_envs, 6, generator=generator),
             labels=(torch.rand(num_envs, 2, generator=generator) < 0.5).float(),
             advice=torch.randint(0, 8, (num_envs,), generator=generator))
        for _ in range(num_steps)
    ]
    whole = RolloutStorage(num_steps, num_envs, obs_shape, torch.device("cpu"), (1, 6), 2, True)
    halves = RolloutStorage(num_steps, num_envs, obs_shape, torch.device("cpu"), (1, 6), 2, True)
    for step in steps:
        whole.add(**step)
    for t, step in enumerate(steps):
        for rows in (slice(0, 2), slice(2, 4)):
            assert not halves.full and halves.has_room(rows)
            halves.add(**{name: value[:, rows] if name == "state" else value[rows] for name, value in step.items()},
                       rows=rows)
            assert halves.stored == 4 * t + rows.stop
    assert halves.full and whole.full and not halves.has_room(slice(0, 2))
    for name in ("obs", "actions", "logprobs", "values", "rewards", "dones", "labels", "advice", "initial_state"):
        assert torch.equal(getattr(halves, name), getattr(whole, name)), name
    assert torch.equal(halves.initial_state, steps[0]["state"])  # each half's state at its own step 0
    with pytest.raises(ValueError, match="stored"):
        halves.add(**{name: value[:, :2] if name == "state" else value[:2] for name, value in steps[0].items()},
                   rows=slice(0, 2))
    halves.clear()
    assert halves.stored == 0 and not halves.full
