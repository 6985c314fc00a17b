"""Ops per step stay few: upper bounds on what act, observe, the update and the replay dispatch.

On a GPU each op is a kernel launch (~5-10 us whatever its size), so these counts, not the sizes,
set the time of the small per-step work. They are counted with bench/op_counts.py's `count_ops`
(the torch profiler's top-level aten ops) on the CPU, where the same ops are dispatched. Each
bound sits a little above the count measured when it was set; the comment gives that count and
the one before the ops were cut (both with torch 2.13, 4 envs, replay 1000, batch 32). A change
that needs more ops should raise the bound on purpose, with the reason.

The hot paths must also never wait for the device: act, replay.add and replay.sample dispatch no
``.item()``, ``bool(tensor)`` or ``nonzero``. The CUDA cases check that acting from a captured
CUDA graph (``cuda_graphs``) acts as eager mode does; they run where CUDA is available.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from torch.distributions import Categorical

from pixelplay.agents.cuda_graphs import CudaGraph
from pixelplay.agents.dqn import DQNAgent, DQNConfig
from pixelplay.agents.ppo import PPOAgent, PPOConfig
from pixelplay.agents.replay import ReplayBuffer

BENCH = Path(__file__).resolve().parent.parent / "bench"

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")


def _op_counts():
    """bench/op_counts.py as a module (bench/ is a folder of scripts, not a package)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module("op_counts")


def _filled_replay(num_envs: int = 4, steps: int = 24, **kwargs) -> ReplayBuffer:
    """A replay of tiny 4-frame stacks after ``steps`` adds with some episode ends. The counts do
    not depend on the frame size; the capacity (1000: a sum tree of three levels) is the bench's."""
    gen = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(1000, num_envs, (4, 6, 6), 4, "cpu", prioritized=True, n_step=3, **kwargs)
    obs = torch.randint(0, 256, (num_envs, 4, 6, 6), dtype=torch.uint8, generator=gen)
    for t in range(steps):
        frame = torch.randint(0, 256, (num_envs, 1, 6, 6), dtype=torch.uint8, generator=gen)
        nxt = torch.cat([obs[:, 1:], frame], 1)
        done = torch.rand(num_envs, generator=gen) < 0.2
        buf.add(obs, torch.randint(0, 6, (num_envs,), generator=gen), torch.randn(num_envs, generator=gen),
                done & (t % 2 == 0), done & (t % 2 == 1), nxt, nxt)
        obs = nxt
    return buf


def _add_once(buf: ReplayBuffer):
    """A call that stores one more step (inputs made now, outside what is counted)."""
    n = buf.num_envs
    obs = torch.zeros((n, 4, 6, 6), dtype=torch.uint8)
    action, reward = torch.zeros(n, dtype=torch.long), torch.zeros(n)
    terminated, truncated = torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)
    return lambda: buf.add(obs, action, reward, terminated, truncated, obs, obs)


def test_replay_add_and_sample_stay_few_ops_without_syncs():
    count_ops = _op_counts().count_ops
    buf = _filled_replay()
    add = count_ops(_add_once(buf))
    assert add.ops <= 66  # 62 (117 before: an arange and a mask per part, two tree writes)
    assert add.syncs == 0
    sample = count_ops(lambda: buf.sample(32))
    assert sample.ops <= 76  # 72 (112 before)
    assert sample.syncs == 0
    update = count_ops(lambda: buf.update_priorities(torch.arange(32), torch.rand(32)))
    assert update.syncs == 0


def test_sequence_replay_add_and_sample_stay_few_ops_without_syncs():
    count_ops = _op_counts().count_ops
    buf = _filled_replay(sequence_length=8, burn_in=4)
    add = count_ops(_add_once(buf))
    assert add.ops <= 125  # 119 (185 before)
    assert add.syncs == 0
    sample = count_ops(lambda: buf.sample_sequences(32))
    assert sample.ops <= 84  # 79 (116 before)
    assert sample.syncs == 0


def test_replay_ops_do_not_grow_with_envs_or_batch():
    """No loop over envs or samples: the same tensor program for any size."""
    count_ops = _op_counts().count_ops
    one, eight = _filled_replay(num_envs=1, steps=40), _filled_replay(num_envs=8)
    assert count_ops(_add_once(one)).ops == count_ops(_add_once(eight)).ops
    assert count_ops(lambda: eight.sample(1)).ops == count_ops(lambda: eight.sample(256)).ops


def test_dqn_step_stays_few_ops_and_acts_without_syncs():
    rows = _op_counts().measure("dqn", obs_size=36, steps=2)
    assert rows["act"].ops <= 24  # 22 (25 before, and a sync: every env exploring skipped the forward pass)
    assert rows["act"].syncs == 0
    assert rows["observe"].ops <= 66  # 62 (117 before)
    assert rows["update"].ops <= 260  # 245 (294 before), one gradient step per vector step
    assert rows["total"].ops <= 340  # 329 (436 before)


def test_ppo_act_stays_few_ops_without_syncs():
    rows = _op_counts().measure("ppo", obs_size=36, steps=16)
    assert rows["act"].ops <= 30  # 28 (43 before, and 2 syncs: Categorical's argument validation)
    assert rows["act"].syncs == 0
    assert rows["update"].ops <= 250  # 238 per vector step (253 before): 4 epochs x 4 minibatches per 16 steps


def test_count_ops_sees_views_kernels_and_syncs():
    """The counter itself: a view is an op but no kernel, ``item`` a sync."""
    count_ops = _op_counts().count_ops
    x = torch.arange(6.0)
    assert count_ops(lambda: x.view(2, 3)) == (1, 0, 0)
    assert count_ops(lambda: x.view(2, 3).sum()) == (2, 1, 0)
    assert count_ops(lambda: x.sum().item()) == (2, 2, 1)


# ---------------------------------------------------------------------------- CUDA graphs


def test_cuda_graphs_are_a_no_op_off_cuda():
    """A checkpoint trained with --cuda-graphs evaluates on a CPU: the flag acts as if unset."""
    torch.manual_seed(0)
    plain = DQNAgent(DQNConfig(learning_starts=0, precision="fp32"), (4, 36, 36), 6, 2, 1000, torch.device("cpu"))
    graphed = DQNAgent(DQNConfig(learning_starts=0, precision="fp32", cuda_graphs=True), (4, 36, 36), 6, 2, 1000,
                       torch.device("cpu"))
    graphed.q_net.load_state_dict(plain.q_net.state_dict())
    obs = torch.randint(0, 256, (2, 4, 36, 36), dtype=torch.uint8)
    torch.manual_seed(1)
    want = plain.act(obs, 900)
    torch.manual_seed(1)
    assert torch.equal(graphed.act(obs, 900), want)
    assert not graphed._graphs.enabled
    assert not PPOAgent(PPOConfig(cuda_graphs=True), (4, 36, 36), 6, 2, 1000, torch.device("cpu"))._graphs.enabled


def test_cuda_graph_refuses_cpu_tensors():
    with pytest.raises(ValueError, match="CUDA graph needs CUDA tensors"):
        CudaGraph(lambda x: (x + 1,), [torch.zeros(2)])


def _cuda_obs(batches: int, num_envs: int = 4) -> list[torch.Tensor]:
    gen = torch.Generator(device="cuda").manual_seed(0)
    return [torch.randint(0, 256, (num_envs, 4, 84, 84), dtype=torch.uint8, device="cuda", generator=gen)
            for _ in range(batches)]


@cuda
@pytest.mark.parametrize("memory", ["none", "lstm"])
def test_graphed_dqn_act_equals_eager_act(memory):
    """Greedy (epsilon 0) actions from the graph are the eager ones, for new observations on every
    replay and after the weights change in place (as an optimizer step changes them)."""
    device = torch.device("cuda")
    cfg = dict(learning_starts=0, start_epsilon=0.0, final_epsilon=0.0, precision="fp32", memory=memory)
    graphed = DQNAgent(DQNConfig(**cfg, cuda_graphs=True), (4, 84, 84), 6, 4, 1000, device, frame_stack=4)
    eager = DQNAgent(DQNConfig(**cfg), (4, 84, 84), 6, 4, 1000, device, frame_stack=4)
    eager.q_net.load_state_dict(graphed.q_net.state_dict())
    for i, obs in enumerate(_cuda_obs(4)):
        if i == 2:
            with torch.no_grad():
                for net in (graphed.q_net, eager.q_net):
                    torch.manual_seed(i)
                    for param in net.parameters():
                        param.add_(0.05 * torch.randn_like(param))
        assert torch.equal(graphed.act(obs, 100), eager.act(obs, 100))
        if memory != "none":
            torch.testing.assert_close(graphed._state, eager._state)
    assert graphed._graphs._graphs, "the graph was never captured"


@cuda
def test_graphed_ppo_act_samples_the_policy():
    """The graph's value and log-probability are the eager network's, and its actions follow the
    policy: the random numbers advance on every replay (not one frozen sample)."""
    device = torch.device("cuda")
    agent = PPOAgent(PPOConfig(cuda_graphs=True, precision="fp32"), (4, 84, 84), 6, 4, 1000, device)
    counts = torch.zeros(4, 6, device=device)
    obs = _cuda_obs(1)[0]
    for _ in range(2000):
        action = agent.act(obs, 0)
        logprob, value = agent._pending[:2]
        counts[torch.arange(4, device=device), action] += 1
    with torch.no_grad():
        logits, want_value = agent._forward(obs)
    torch.testing.assert_close(value, want_value)
    torch.testing.assert_close(logprob, Categorical(logits=logits).log_prob(action))
    torch.testing.assert_close(counts / 2000, torch.softmax(logits, 1), atol=0.05, rtol=0)
