"""Tensor ops per vector step of pixelplay's agents, counted with the torch profiler.

    python bench/op_counts.py [--num-envs 4] [--obs-size 84] [--buffer-size 1000] [--batch-size 32]

On a GPU every op costs a kernel launch, ~5-10 us of host time whatever its size, so for the small
work of acting on and storing a few transitions the *number* of ops, not their size, sets the
time. This script counts them on the CPU (an op dispatched here is one dispatched on any device)
for DQN (feed-forward: prioritized replay, 3-step returns, Double DQN, dueling head), DRQN
(``--memory lstm``: the replay samples sequences) and PPO, and prints, per vector step of
``num_envs`` envs:

    ops      top-level aten ops: every op the host dispatches, views included
    kernels  those that do more than make a view or nothing (a no-op conversion, an allocation):
             about what a GPU launches
    syncs    host-device syncs (``.item()``, ``bool(tensor)``, ``nonzero``): each stalls the host
             until the device has caught up

The agents run the loop of train.py on random frames; ``update`` rows are amortised: the ops of all
update calls over the profiled steps divided by their number (DQN: a gradient step per
``train_frequency`` env steps; PPO: one update of 4 epochs x 4 minibatches per 16-step rollout).
``replay.*`` rows call the agent's buffer directly. The counts do not depend on the data: every hot
path is a fixed-shape tensor program. They grow with the sum tree's depth (``--buffer-size``: a
level per factor of 32 in leaves) but not with the number of envs or the batch size. A benchmark,
not a test; tests/test_op_counts.py holds the counts to upper bounds with `count_ops`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import ProfilerActivity, profile, record_function

VIEW_OPS = frozenset(
    "aten::" + name
    for name in (
        "view", "reshape", "_reshape_alias", "_unsafe_view", "unsqueeze", "squeeze", "slice", "select",
        "expand", "expand_as", "t", "transpose", "permute", "numpy_T", "as_strided", "alias", "detach",
        "unfold", "flatten", "unflatten", "contiguous", "to", "type_as", "broadcast_tensors", "unbind",
        "split", "chunk", "narrow", "view_as", "empty", "empty_like", "empty_strided", "resize_",
        "result_type", "promote_types", "lift_fresh",
    )
)
"""aten ops that launch nothing by themselves: views, and conversions or reshapes that turn out to
copy nothing. One that calls a copying op below it (``reshape`` of a non-contiguous tensor,
``to`` another dtype) counts as a kernel."""

SYNC_OPS = frozenset({"aten::_local_scalar_dense", "aten::nonzero"})
"""Reading a device value on the host (``.item()``, ``bool``), or an op whose output shape
depends on the data (``nonzero``, boolean-mask indexing): both wait for the device."""


class OpCount(NamedTuple):
    """Ops per call (or per vector step), averaged over the profiled calls."""

    ops: float
    kernels: float
    syncs: float


def _is_aten(event: FunctionEvent) -> bool:
    return event.name.startswith("aten::")


def _ancestors(event: FunctionEvent) -> Iterable[FunctionEvent]:
    parent = event.cpu_parent
    while parent is not None:
        yield parent
        parent = parent.cpu_parent


def _launches(event: FunctionEvent) -> bool:
    """Whether an op does more than a view or nothing: it is not a view op, or one below it is not."""
    if event.name not in VIEW_OPS:
        return True
    return any(_launches(child) for child in event.cpu_children if _is_aten(child))


DEVICE_SIDE_OPS = frozenset({"aten::_assert_async", "aten::_fused_adam_", "aten::_fused_adamw_", "aten::std",
                             "aten::var"})
"""Ops whose CPU kernels read a scalar back with ``item`` but whose CUDA kernels do not: an
``_assert_async`` checks on the device (multinomial's argument checks use it), fused Adam's step
counts live on the device, and a full ``std`` or ``var`` reduction takes its mean on the host
only in the CPU fast path (ATen's ``std_var_all_cpu``). A sync below them is none on a GPU."""


def _is_sync(event: FunctionEvent) -> bool:
    return event.name in SYNC_OPS and not any(a.name in DEVICE_SIDE_OPS for a in _ancestors(event))


def _tally(events: Iterable[FunctionEvent], label: str | None = None) -> tuple[int, int, int]:
    """(ops, kernels, syncs) among ``events``, only those under the ``record_function`` ``label`` if given."""
    ops = kernels = syncs = 0
    for event in events:
        if not _is_aten(event):
            continue
        ancestors = list(_ancestors(event))
        if label is not None and not any(a.name == label for a in ancestors):
            continue
        syncs += _is_sync(event)
        if any(_is_aten(a) for a in ancestors):
            continue  # part of a bigger op: counted there
        ops += 1
        kernels += _launches(event)
    return ops, kernels, syncs


def count_ops(fn: Callable[[], object], repeats: int = 3) -> OpCount:
    """Ops per call of ``fn``, averaged over ``repeats`` profiled calls."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    return OpCount(*(n / repeats for n in _tally(prof.events())))


def count_parts(step: Callable[[Callable[[str], object]], object], steps: int) -> dict[str, OpCount]:
    """Ops per step of each labelled part of ``step``, profiled over ``steps`` calls.

    ``step(part)`` runs one vector step, wrapping each part in ``with part("act"):`` and so on.
    """
    labels: set[str] = set()

    def part(name: str):
        labels.add(name)
        return record_function(name)

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(part)
    events = prof.events()
    return {name: OpCount(*(n / steps for n in _tally(events, name))) for name in sorted(labels)}


# ---------------------------------------------------------------------------- the agents' loop

NUM_ACTIONS = 6


def _results(num_envs: int, obs_shape: tuple[int, ...], count: int = 8, seed: int = 0) -> list:
    """A cycle of random `StepResult`s, made before any profiling (one env in three ends an episode
    now and then, half of the ends truncations)."""
    from pixelplay.envs.vec import StepResult

    gen = torch.Generator().manual_seed(seed)
    results = []
    for _ in range(count):
        obs = torch.randint(0, 256, (num_envs, *obs_shape), dtype=torch.uint8, generator=gen)
        done = torch.rand(num_envs, generator=gen) < 0.3
        truncated = done & (torch.rand(num_envs, generator=gen) < 0.5)
        reward = torch.randn(num_envs, generator=gen)
        results.append(StepResult(obs, reward, done & ~truncated, truncated, obs.clone(), []))
    return results


class Loop:
    """train.py's loop over a cycle of random step results: act, observe, update when ready."""

    def __init__(self, agent, num_envs: int, obs_shape: tuple[int, ...]):
        self.agent, self.num_envs = agent, num_envs
        self.results = _results(num_envs, obs_shape)
        self.obs = self.results[-1].obs
        self.t = 0
        self.global_step = 0
        agent.observe_first(self.obs, None)

    def step(self, part: Callable[[str], object] | None = None) -> None:
        part = part or (lambda name: _NULL)
        agent, result = self.agent, self.results[self.t % len(self.results)]
        self.t += 1
        self.global_step += self.num_envs
        with part("act"):
            action = agent.act(self.obs, self.global_step)
        with part("observe"):
            agent.observe(self.obs, action, result)
        self.obs = result.obs
        if agent.ready(self.global_step):
            with part("update"):
                agent.update(self.global_step)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NULL = _Null()


def _agent(algo: str, num_envs: int, obs_shape: tuple[int, ...], buffer_size: int, batch_size: int):
    """The agents of the table, on the CPU."""
    device = torch.device("cpu")
    frame_stack = obs_shape[0]  # one channel per frame, stored once per slot by the replay
    if algo == "ppo":
        from pixelplay.agents.ppo import PPOAgent, PPOConfig

        cfg = PPOConfig(num_steps=16, precision="fp32")
        return PPOAgent(cfg, obs_shape, NUM_ACTIONS, num_envs, 100_000, device, frame_stack=frame_stack)
    from pixelplay.agents.dqn import DQNAgent, DQNConfig

    recurrent = {"memory": "lstm", "sequence_length": 8, "burn_in": 4} if algo == "drqn" else {}
    cfg = DQNConfig(buffer_size=buffer_size, learning_starts=8 * num_envs, batch_size=batch_size,
                    prioritized=True, n_step=3, double_dqn=True, dueling=True,
                    exploration_fraction=1e-4, precision="fp32", **recurrent)
    return DQNAgent(cfg, obs_shape, NUM_ACTIONS, num_envs, 100_000, device, frame_stack=frame_stack)


def measure(algo: str, num_envs: int = 4, obs_size: int = 84, buffer_size: int = 1000, batch_size: int = 32,
            steps: int = 16) -> dict[str, OpCount]:
    """The rows of one agent: ops per vector step of act, observe and update (amortised) over
    ``steps`` profiled steps of the loop, their total, and for DQN and DRQN the replay's ``add``
    and ``sample`` (or ``sample_sequences``) alone."""
    obs_shape = (4, obs_size, obs_size)
    agent = _agent(algo, num_envs, obs_shape, buffer_size, batch_size)
    loop = Loop(agent, num_envs, obs_shape)
    # Warm up past learning_starts (and the sequence windows): every later step is the steady state.
    warmup = 16 if algo == "ppo" else agent.learning_starts // num_envs + 2
    for _ in range(warmup):
        loop.step()
    rows = count_parts(loop.step, steps)
    rows["total"] = OpCount(*(sum(row[i] for row in rows.values()) for i in range(3)))
    if algo != "ppo":
        replay, result = agent.replay, loop.results[0]
        action = torch.zeros(num_envs, dtype=torch.long)
        rows["replay.add"] = count_ops(lambda: replay.add(
            loop.obs, action, result.reward, result.terminated, result.truncated, result.obs, result.final_obs))
        sample = replay.sample_sequences if algo == "drqn" else replay.sample
        rows[f"replay.{sample.__name__}({batch_size})"] = count_ops(lambda: sample(batch_size))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--obs-size", type=int, default=84, help="frames are obs-size x obs-size, 4 stacked")
    parser.add_argument("--buffer-size", type=int, default=1000, help="replay capacity (sets the sum tree's depth)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16, help="vector steps profiled per agent")
    parser.add_argument("--algos", default="dqn,drqn,ppo", help="comma-separated: dqn, drqn, ppo")
    args = parser.parse_args(argv)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    unknown = sorted(set(algos) - {"dqn", "drqn", "ppo"})
    if unknown or args.num_envs < 1 or args.steps < 1:
        print(f"op_counts: unknown algos {unknown} (use dqn, drqn, ppo)" if unknown
              else "op_counts: --num-envs and --steps must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # the counts do not depend on it; a single thread keeps the run light
    print(f"ops per vector step, {args.num_envs} envs, 4x{args.obs_size}x{args.obs_size}, "
          f"replay {args.buffer_size}, batch {args.batch_size}, torch {torch.__version__}, CPU")
    print(f"{'agent':6} {'part':28} {'ops':>8} {'kernels':>8} {'syncs':>6}")
    for algo in algos:
        for name, row in measure(algo, args.num_envs, args.obs_size, args.buffer_size, args.batch_size,
                                 args.steps).items():
            print(f"{algo:6} {name:28} {row.ops:8.1f} {row.kernels:8.1f} {row.syncs:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
