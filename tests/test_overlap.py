"""Overlap of env stepping and learning: ``VecEnv.step_async`` / ``step_wait`` and ``--overlap``.

The split step must return exactly what ``step`` returns (same seeds, same actions), on every
backend that can run a step in the background. In the training loop an off-policy agent's
gradient steps must fall between the start and the end of an env step, see the replay as it
stood before that step's transition, and keep the replay ratio of the sequential loop.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from pixelplay import train
from pixelplay.agents.dqn import DQNAgent
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
    from pixelplay.agents.ppo import PPOAgent

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
