"""The device replay against a brute-force reference built from whole stacks in Python lists.

The reference stores every transition as the env produced it (obs stack, action, reward, flags,
the obs to bootstrap from) and computes n-step targets with a plain loop; the buffer must agree
bit for bit on frames and to float32 rounding on returns, for every sampleable index, over
streams with terminations, truncations, ring wrap-around and several envs.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from pixelplay.agents import replay as replay_module
from pixelplay.agents.replay import ReplayBatch, ReplayBuffer
from pixelplay.envs.errors import PixelplayError

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


class FakeVecEnv:
    """N envs of random frames stacked ``k`` deep (oldest first), with SAME_STEP autoreset.

    ``padding`` fills the first stack of an episode: "repeat" (the first frame, like gymnasium's
    FrameStackObservation), "noise" (unrelated random frames) or "zeros" (SB3 VecFrameStack).
    """

    def __init__(self, num_envs=3, k=4, c=1, hw=(7, 7), p_term=0.08, p_trunc=0.05, padding="repeat", seed=0):
        self.rng = np.random.default_rng(seed)
        self.num_envs, self.k, self.c, self.hw = num_envs, k, c, hw
        self.p_term, self.p_trunc, self.padding = p_term, p_trunc, padding
        self.stacks = [self._new_stack() for _ in range(num_envs)]

    @property
    def obs_shape(self):
        return (self.k * self.c, *self.hw)

    def _frame(self):
        return self.rng.integers(0, 256, (self.c, *self.hw), dtype=np.uint8)

    def _new_stack(self):
        first = self._frame()
        if self.padding == "repeat":
            pad = [first] * (self.k - 1)
        elif self.padding == "zeros":
            pad = [np.zeros_like(first)] * (self.k - 1)
        else:
            pad = [self._frame() for _ in range(self.k - 1)]
        return [*pad, first]

    def _obs(self):
        return torch.from_numpy(np.stack([np.concatenate(s, 0) for s in self.stacks]))

    def reset(self):
        self.stacks = [self._new_stack() for _ in range(self.num_envs)]
        return self._obs()

    def step(self):
        n = self.num_envs
        action = torch.from_numpy(self.rng.integers(0, 6, n))
        reward = torch.from_numpy(self.rng.normal(size=n).astype(np.float32))
        u = self.rng.random(n)
        terminated = u < self.p_term
        truncated = (u >= self.p_term) & (u < self.p_term + self.p_trunc)
        for e in range(n):
            self.stacks[e] = [*self.stacks[e][1:], self._frame()]
        final_obs = self._obs()
        for e in np.flatnonzero(terminated | truncated):
            self.stacks[e] = self._new_stack()
        next_obs = self._obs()
        return action, reward, torch.from_numpy(terminated), torch.from_numpy(truncated), next_obs, final_obs


@dataclass
class Transition:
    obs: torch.Tensor
    action: int
    reward: float
    terminated: bool
    truncated: bool
    next_obs: torch.Tensor  # final obs where done
    slot: int  # absolute slot of obs's newest frame in the env's ring (capacity accounting)


class Reference:
    """Whole stacks in lists, one per env, plus the documented slot accounting of the ring:
    k slots for an episode's first stack, 1 per step, and a transition stays while the oldest
    frame of its obs is among the env's last F slots written."""

    def __init__(self, num_envs, k, slots_per_env):
        self.k, self.F = k, slots_per_env
        self.streams: list[list[Transition]] = [[] for _ in range(num_envs)]
        self.written = [0] * num_envs
        self.pos = [None] * num_envs

    def record(self, obs, action, reward, terminated, truncated, next_obs, final_obs):
        for e in range(len(self.streams)):
            if self.pos[e] is None:  # new stream: its first stack is written whole
                self.written[e] += self.k
                self.pos[e] = self.written[e] - 1
            done = bool(terminated[e] or truncated[e])
            self.streams[e].append(
                Transition(
                    obs[e].clone(),
                    int(action[e]),
                    float(reward[e]),
                    bool(terminated[e]),
                    bool(truncated[e]),
                    (final_obs if done else next_obs)[e].clone(),
                    self.pos[e],
                )
            )
            self.written[e] += 1 + (self.k if done else 0)
            self.pos[e] = self.written[e] - 1

    def break_streams(self):
        """The stream is cut (resume): running episodes end as truncations."""
        for e, stream in enumerate(self.streams):
            if stream and not (stream[-1].terminated or stream[-1].truncated):
                stream[-1].truncated = True
            self.pos[e] = None

    def target(self, e, t, n, gamma):
        """Plain n-step loop: (return, discount, bootstrap obs), or None if the window is open."""
        stream, ret = self.streams[e], 0.0
        for j in range(n):
            if t + j >= len(stream):
                return None
            tr = stream[t + j]
            ret += gamma**j * tr.reward
            if tr.terminated:
                return ret, 0.0, tr.next_obs
            if tr.truncated:
                return ret, gamma ** (j + 1), tr.next_obs
        return ret, gamma**n, stream[t + n - 1].next_obs

    def expected(self, n, gamma):
        out = {}
        for e, stream in enumerate(self.streams):
            for t, tr in enumerate(stream):
                if tr.slot - (self.k - 1) < self.written[e] - self.F:
                    continue  # the ring has overwritten part of its obs
                target = self.target(e, t, n, gamma)
                if target is not None:
                    out[(e, t)] = (tr, *target)
        return out


def add_one(buf, obs, nxt, action=0, reward=0.0, terminated=False, final=None):
    """One single-env step (no truncation) from (1, C, H, W) frames."""
    final = nxt if final is None else final
    flags = torch.tensor([terminated]), torch.tensor([False])
    buf.add(obs, torch.tensor([action]), torch.tensor([reward]), *flags, nxt, final)


def drive(buf, env, ref, steps, obs=None):
    obs = env._obs() if obs is None else obs
    for _ in range(steps):
        action, reward, terminated, truncated, next_obs, final_obs = env.step()
        buf.add(obs, action, reward, terminated, truncated, next_obs, final_obs)
        ref.record(obs, action, reward, terminated, truncated, next_obs, final_obs)
        obs = next_obs
    return obs


def assert_matches(buf: ReplayBuffer, batch: ReplayBatch, expected: dict, gamma: float):
    env, step = buf.locate(batch.index)
    for i, key in enumerate(zip(env.tolist(), step.tolist(), strict=True)):
        assert key in expected, f"index {int(batch.index[i])} -> {key} should not be sampleable"
        tr, ret, discount, next_obs = expected[key]
        assert torch.equal(batch.obs[i].cpu(), tr.obs), key
        assert torch.equal(batch.next_obs[i].cpu(), next_obs), key
        assert int(batch.action[i]) == tr.action, key
        assert float(batch.reward[i]) == pytest.approx(ret, abs=1e-5), key
        assert float(batch.discount[i]) == pytest.approx(discount, abs=1e-6), key


def assert_buffer_equals_reference(buf, ref, n, gamma):
    expected = ref.expected(n, gamma)
    index = buf.sampleable_indices()
    env, step = buf.locate(index)
    got = set(zip(env.tolist(), step.tolist(), strict=True))
    assert got == set(expected)
    assert len(buf) == len(expected)
    assert buf.check_valid() == (True, "")
    assert_matches(buf, buf.get(index), expected, gamma)
    return expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "n_step,capacity,padding,prioritized",
    [
        (1, 3 * 40, "repeat", False),  # wraps: 150 steps in 40 slots per env
        (3, 3 * 40, "repeat", True),
        (3, 3 * 40, "noise", False),
        (3, 3 * 400, "zeros", False),  # no wrap: every transition whose window closed
        (1, 3 * 400, "noise", True),
    ],
)
def test_matches_bruteforce_reference(device, n_step, capacity, padding, prioritized):
    gamma = 0.9
    env = FakeVecEnv(num_envs=3, k=4, padding=padding, seed=n_step * 100 + capacity)
    buf = ReplayBuffer(
        capacity,
        3,
        env.obs_shape,
        4,
        device,
        n_step=n_step,
        gamma=gamma,
        prioritized=prioritized,
        check_stacks=True,
    )
    ref = Reference(3, 4, buf.slots_per_env)
    drive(buf, env, ref, 150)
    assert sum(tr.terminated for s in ref.streams for tr in s) > 5
    assert sum(tr.truncated for s in ref.streams for tr in s) > 5
    expected = assert_buffer_equals_reference(buf, ref, n_step, gamma)
    assert len(expected) > 30
    batch = buf.sample(256)
    assert batch.obs.dtype == torch.uint8 and batch.obs.shape == (256, 4, 7, 7)
    assert batch.action.dtype == torch.int64 and batch.index.dtype == torch.int64
    assert batch.reward.dtype == batch.discount.dtype == batch.weight.dtype == torch.float32
    assert batch.obs.device.type == torch.device(device).type
    assert_matches(buf, batch, expected, gamma)
    if not prioritized:
        assert torch.equal(batch.weight, torch.ones_like(batch.weight))


def test_nstep_hand_worked():
    # 1 env, no frame stacking, gamma 0.5, rewards 1, 2, 4, 8 with a termination at the 4th step.
    buf = ReplayBuffer(64, 1, (1, 2, 2), 1, "cpu", n_step=3, gamma=0.5)
    frames = [torch.full((1, 1, 2, 2), i, dtype=torch.uint8) for i in range(10)]
    for t, (r, term) in enumerate([(1, False), (2, False), (4, False), (8, True)]):
        nxt = frames[9] if term else frames[t + 1]  # frame 9 opens the next episode
        final = frames[t + 1]
        add_one(buf, frames[t], nxt, action=t, reward=r, terminated=term, final=final)
    index = buf.sampleable_indices()
    assert buf.locate(index)[1].tolist() == [0, 1, 2, 3]
    batch = buf.get(index)
    assert batch.reward.tolist() == [1 + 1 + 1, 2 + 2 + 2, 4 + 4, 8]
    assert batch.discount.tolist() == [0.125, 0.0, 0.0, 0.0]
    assert batch.next_obs[:, 0, 0, 0].tolist() == [3, 4, 4, 4]


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = counts.sum() * probs
    return float(((counts - expected) ** 2 / expected).sum())


# Upper 0.1% points of the chi-square distribution (scipy.stats.chi2.ppf(0.999, dof)).
CHI2_999 = {9: 27.877, 11: 31.264}


def _filled(n_transitions, **kwargs):
    buf = ReplayBuffer(64, 1, (1, 2, 2), 1, "cpu", **kwargs)
    for t in range(n_transitions):
        obs = torch.full((1, 1, 2, 2), t, dtype=torch.uint8)
        nxt = torch.full((1, 1, 2, 2), t + 1, dtype=torch.uint8)
        add_one(buf, obs, nxt, action=t)
    return buf


def test_prioritized_frequencies_chi_square():
    alpha = 0.6
    buf = _filled(10, prioritized=True, alpha=alpha, seed=3)
    index = buf.sampleable_indices()
    assert index.numel() == 10
    td = torch.tensor([0.1, 0.5, 1.0, 2.0, 3.0, 0.2, 5.0, 0.05, 1.5, 4.0])
    buf.update_priorities(index, td)
    probs = (td.double() + 1e-6) ** alpha
    probs = (probs / probs.sum()).numpy()
    counts = np.zeros(10)
    position = {int(i): j for j, i in enumerate(index)}
    for _ in range(40):
        drawn = buf.sample(5000).index
        counts += np.bincount([position[int(i)] for i in drawn], minlength=10)
    assert chi_square(counts, probs) < CHI2_999[9]


def test_uniform_frequencies_chi_square():
    env = FakeVecEnv(num_envs=2, k=2, hw=(3, 3), p_term=0.2, p_trunc=0.1, seed=7)
    buf = ReplayBuffer(2 * 30, 2, env.obs_shape, 2, "cpu", n_step=2, seed=1)
    ref = Reference(2, 2, buf.slots_per_env)
    drive(buf, env, ref, 40)
    index = buf.sampleable_indices()
    m = index.numel()
    assert m > 15
    position = {int(i): j for j, i in enumerate(index)}
    counts = np.zeros(m)
    for _ in range(20):
        counts += np.bincount([position[int(i)] for i in buf.sample(5000).index], minlength=m)
    # dof = m - 1; the threshold for large dof from the Wilson-Hilferty approximation (z = 3.09).
    dof = m - 1
    threshold = dof * (1 - 2 / (9 * dof) + 3.09 * math.sqrt(2 / (9 * dof))) ** 3
    assert chi_square(counts, np.full(m, 1 / m)) < threshold


def test_priorities_and_weights_hand_worked():
    eps = 1e-6
    buf = _filled(4, prioritized=True, alpha=1.0, beta=0.5, priority_eps=eps)
    index = buf.sampleable_indices()
    # New transitions enter with the max priority seen so far (initially 1).
    assert buf.priorities(index).tolist() == [1.0] * 4
    buf.update_priorities(index, torch.tensor([-1.0, 2.0, -3.0, 4.0]))  # p = |td| + eps
    p = np.array([1, 2, 3, 4]) + eps
    assert np.allclose(buf.priorities(index).numpy(), p, rtol=0, atol=1e-12)
    batch = buf.sample(2000, beta=0.5)
    # P = p / 10; w = (4 P)^-0.5, divided by the largest (that of p = 1): sqrt(p_1 / p_i).
    w = np.sqrt(p[0] / p)
    for j, i in enumerate(index.tolist()):
        got = batch.weight[batch.index == i]
        assert got.numel() > 0
        assert torch.allclose(got, torch.full_like(got, float(w[j])), atol=1e-6)
    # beta = 1 gives full correction: w proportional to 1 / P.
    batch = buf.sample(2000, beta=1.0)
    for j, i in enumerate(index.tolist()):
        assert torch.allclose(batch.weight[batch.index == i], torch.tensor(float(p[0] / p[j])), atol=1e-6)
    # The next transition enters with the largest priority seen: 4 + eps.
    obs = torch.full((1, 1, 2, 2), 4, dtype=torch.uint8)
    nxt = torch.full((1, 1, 2, 2), 5, dtype=torch.uint8)
    add_one(buf, obs, nxt)
    new = buf.sampleable_indices()[-1:]
    assert buf.priorities(new).tolist() == pytest.approx([4 + eps])
    assert float(buf._tree.total) == pytest.approx(10 + 4 * eps + 4 + eps)
    # An index that holds no sampleable transition stays empty.
    empty = torch.tensor([40])
    buf.update_priorities(empty, torch.tensor([9.0]))
    assert buf.priorities(empty).tolist() == [0.0]


def test_check_valid_reports_inconsistency():
    buf = _filled(6, prioritized=True)
    buf.update_priorities(buf.sampleable_indices(), torch.arange(6.0))
    assert buf.check_valid() == (True, "")
    buf._count += 1
    assert buf.check_valid() == (False, "the sampleable count is 7 but 6 leaves are positive")
    buf._count -= 1
    buf._tree.levels[1][0] += 1.0  # an inner node that is not the sum of its leaves
    ok, why = buf.check_valid()
    assert not ok and why.startswith("sum tree: node 0 of level 1")
    uniform = _filled(6)
    uniform._tree.set(uniform.sampleable_indices()[:1], torch.tensor([2.0]))
    assert uniform.check_valid() == (False, "uniform replay has a leaf other than 0 or 1")


def test_uniform_update_priorities_is_noop():
    buf = _filled(5)
    index = buf.sampleable_indices()
    buf.update_priorities(index, torch.arange(5.0))
    assert buf.priorities(index).tolist() == [1.0] * 5


@pytest.mark.parametrize("prioritized", [False, True])
def test_atari_memory_per_transition(prioritized):
    capacity = 10_000
    buf = ReplayBuffer(capacity, 1, (4, 84, 84), 4, "cpu", n_step=3, prioritized=prioritized)
    assert buf.nbytes / capacity <= 7200
    assert buf.nbytes >= capacity * 84 * 84  # one frame per transition at least

    def tensor_bytes(obj):
        if isinstance(obj, torch.Tensor):
            return obj.numel() * obj.element_size()
        if isinstance(obj, dict):
            return sum(tensor_bytes(v) for v in obj.values())
        if isinstance(obj, list | tuple):
            return sum(tensor_bytes(v) for v in obj)
        return 0

    assert tensor_bytes(buf.state_dict()) / capacity <= 7200


def test_refuses_buffer_larger_than_free_memory(monkeypatch):
    monkeypatch.setattr(replay_module, "_free_memory_bytes", lambda device: 2 * 10**9)
    with pytest.raises(
        PixelplayError,
        match=r"replay of 1,000,000 transitions needs 7\.1 GB but only 2\.0 GB is free on cpu; lower --buffer-size",
    ):
        ReplayBuffer(1_000_000, 1, (4, 84, 84), 4, "cpu")


def test_refuses_too_small_capacity():
    with pytest.raises(PixelplayError, match="raise --buffer-size"):
        ReplayBuffer(40, 8, (4, 7, 7), 4, "cpu", n_step=3)


def test_refuses_newest_first_stacks():
    buf = ReplayBuffer(64, 1, (2, 2, 2), 2, "cpu", check_stacks=True)
    obs = torch.arange(8, dtype=torch.uint8).view(1, 2, 2, 2)
    nxt = torch.cat([torch.full((1, 1, 2, 2), 99, dtype=torch.uint8), obs[:, :1]], 1)  # newest first
    with pytest.raises(PixelplayError, match="newest frame last"):
        add_one(buf, obs, nxt)


def test_state_dict_round_trip_and_resume():
    gamma, n = 0.9, 3
    env = FakeVecEnv(num_envs=3, k=4, padding="noise", seed=11)
    kwargs = dict(n_step=n, gamma=gamma, prioritized=True, check_stacks=True)
    buf = ReplayBuffer(3 * 40, 3, env.obs_shape, 4, "cpu", seed=5, **kwargs)
    ref = Reference(3, 4, buf.slots_per_env)
    drive(buf, env, ref, 90)
    drawn = buf.sample(64)
    buf.update_priorities(drawn.index, torch.rand(drawn.index.shape))

    blob = io.BytesIO()
    torch.save(buf.state_dict(), blob)
    blob.seek(0)
    state = torch.load(blob, weights_only=True)
    other = ReplayBuffer(3 * 40, 3, env.obs_shape, 4, "cpu", seed=99, **kwargs)
    other.load_state_dict(state)
    assert len(other) == len(buf)
    for _ in range(3):
        a, b = buf.sample(64), other.sample(64)
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)

    # Resume: the env restarts; the stored running episodes end as truncations and new ones begin.
    ref.break_streams()
    drive(other, env, ref, 25, obs=env.reset())
    assert_buffer_equals_reference(other, ref, n, gamma)


def test_load_refuses_mismatch():
    state = ReplayBuffer(120, 3, (4, 7, 7), 4, "cpu").state_dict()
    with pytest.raises(PixelplayError, match="obs_shape"):
        ReplayBuffer(120, 3, (4, 8, 8), 4, "cpu").load_state_dict(state)
    with pytest.raises(PixelplayError, match="n_step"):
        ReplayBuffer(120, 3, (4, 7, 7), 4, "cpu", n_step=3).load_state_dict(state)
    state["tensors"]["reward"] = torch.zeros(3, 39)
    with pytest.raises(PixelplayError, match="reward"):
        ReplayBuffer(120, 3, (4, 7, 7), 4, "cpu").load_state_dict(state)
