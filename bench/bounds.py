"""The machine's limit for a training loop, measured in the same run as the bench it frames.

    python bench/bounds.py [--algo ppo] [--env breakout] [--num-envs 8] [--device cpu] [--backend auto] [-- TRAIN FLAGS]
    python bench/bounds.py --algo dqn --env breakout -- --buffer-size 100000   # train.py's flags after --

A training loop does two kinds of work per env step: the network's (act, store the transition,
the update's share of a gradient step) and the env's (emulate, preprocess, move the frames). This
module times each alone, on all of the machine's cores, and gives the two bounds a loop can be
held to (issue 11, section 1):

* ``t_net``: the real agent class with the real config and the real observation shapes, stepping
  a `SyntheticEnv` that costs nothing (pre-drawn frames, consistent 4-frame stacks, an episode end
  every ``episode_length`` steps), over whole rollouts (PPO, A2C) or gradient-step intervals
  (DQN), after one untimed warm-up round. DQN is timed in its steady state: past
  ``learning_starts`` and the epsilon decay (a forward pass on every act, a gradient step every
  ``train_frequency`` env steps), so a short bench, which spends its first steps acting at random
  without updates, can run slightly above it;
* ``t_env``: the same env and backend as the bench (`pixelplay.envs.make_vec_env`), uniformly
  random actions, transfers to the device included;
* the no-overlap bound ``1 / (t_net + t_env)``: both done one after the other, what a loop that
  never overlaps them can reach at best; and the network-only bound ``1 / t_net``: the env
  entirely hidden behind the network, what overlapping them can reach at best;
* for on-policy agents (PPO, A2C), also the double-buffered bound ``1 / (t_update + max(t_act,
  t_env))``, ``t_update`` being the update's share of ``t_net`` and ``t_act`` the rest (acting and
  storing): what Sample Factory's double-buffered sampling (two halves of the envs alternating
  between stepping and inference; Petrenko et al. 2020, Sample Factory) can reach at best while the
  data stays strictly on-policy, since the envs must wait for each update. It says how much such a
  loop would win before anyone builds it.

`Bounds.describe` turns a measured steps/s into "x of the no-overlap bound, y of the
network-only bound", which every throughput bench here prints beside its ratio to the peer.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: the benches run with it

import torch  # noqa: E402


@dataclass(frozen=True)
class Bounds:
    """Seconds per env step of the network alone and of the env alone, and the bounds they give."""

    net_seconds: float
    """the network's time per env step: act, observe and the update's share"""
    env_seconds: float
    """the env's time per env step, random actions"""
    update_seconds: float | None = None
    """on-policy agents: the update's share of ``net_seconds`` (the rest is acting and storing);
    None for off-policy agents, whose update already runs while the envs step (``--overlap``)"""

    @property
    def no_overlap(self) -> float:
        """Env steps per second with the network and the env one after the other."""
        return 1.0 / (self.net_seconds + self.env_seconds)

    @property
    def network_only(self) -> float:
        """Env steps per second with the env entirely hidden behind the network."""
        return 1.0 / self.net_seconds

    @property
    def double_buffered(self) -> float | None:
        """Env steps per second with the env hidden behind acting only (on-policy agents), else None."""
        if self.update_seconds is None:
            return None
        act_seconds = self.net_seconds - self.update_seconds
        return 1.0 / (self.update_seconds + max(act_seconds, self.env_seconds))

    def describe(self, steps_per_second: float) -> str:
        """``steps_per_second`` as fractions of the bounds, with the bounds themselves."""
        text = (f"{steps_per_second / self.no_overlap:.2f} of the no-overlap bound ({self.no_overlap:,.0f} steps/s), "
                f"{steps_per_second / self.network_only:.2f} of the network-only bound "
                f"({self.network_only:,.0f} steps/s)")
        if self.double_buffered is not None:
            text += (f", {steps_per_second / self.double_buffered:.2f} of the double-buffered bound "
                     f"({self.double_buffered:,.0f} steps/s)")
        return text

    def summary(self) -> str:
        split = ("" if self.update_seconds is None else
                 f" (acting {1e6 * (self.net_seconds - self.update_seconds):,.0f}, update {1e6 * self.update_seconds:,.0f})")
        return (f"network alone {1e6 * self.net_seconds:,.0f} us/step{split}, env alone "
                f"{1e6 * self.env_seconds:,.0f} us/step ({torch.get_num_threads()} torch threads, {os.cpu_count()} cores)")


class SyntheticEnv:
    """A `VecEnv` stand-in whose step costs a lookup: the agent's work measured without the env's.

    Frames are drawn once; each env's observations are consecutive ``frame_stack``-frame stacks
    of them (what the replay, which stores each frame once, expects), and every env's episode
    ends (terminated) after ``episode_length`` steps, when it starts again from its first stack.
    The results are built in advance, so `step` allocates nothing."""

    def __init__(self, num_envs: int, obs_shape: tuple[int, int, int], num_actions: int, frame_stack: int,
                 device: torch.device | str, episode_length: int = 64, seed: int = 0):
        from pixelplay.envs.vec import StepResult

        if episode_length < 2:
            raise ValueError(f"episode_length must be at least 2, got {episode_length}")
        channels, height, width = obs_shape
        if channels % frame_stack:
            raise ValueError(f"obs_shape {obs_shape} does not hold {frame_stack} stacked frames")
        c = channels // frame_stack
        self.num_envs, self.obs_shape, self.num_actions = num_envs, tuple(obs_shape), num_actions
        self.device = torch.device(device)
        generator = torch.Generator().manual_seed(seed)
        frames = torch.randint(0, 256, (num_envs, episode_length + frame_stack, c, height, width),
                               dtype=torch.uint8, generator=generator)

        def stack(t: int) -> torch.Tensor:
            return frames[:, t:t + frame_stack].reshape(num_envs, channels, height, width).to(self.device)

        rewards = torch.randn(episode_length, num_envs, generator=generator).to(self.device)
        no = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        yes = torch.ones(num_envs, dtype=torch.bool, device=self.device)
        self._first = stack(0)
        self._results = []
        for t in range(episode_length):
            last = t == episode_length - 1
            after = stack(t + 1)
            self._results.append(StepResult(
                obs=self._first if last else after, reward=rewards[t], terminated=yes if last else no,
                truncated=no, final_obs=after, episodes=[], labels=None,
            ))
        self._t = 0

    def reset(self, seed: int | None = None) -> torch.Tensor:
        self._t = 0
        return self._first

    def step(self, action: torch.Tensor):
        result = self._results[self._t]
        self._t = (self._t + 1) % len(self._results)
        return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device | str) -> None:
    """Start counting the peak device memory afresh (CUDA only; nothing elsewhere).

    Collects garbage first, so that an agent of the previous measurement left in a reference cycle
    cannot count (the suspected cause of bench/gpu.sh's first run showing DQN's --no-overlap row at
    1,493 MiB against 785 for the same agent measured first; unconfirmed on a GPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        gc.collect()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device | str) -> str:
    """``", peak device memory N MiB"`` since `reset_peak_memory` (torch.cuda.max_memory_allocated:
    the tensors torch allocated, not the cache it reserved); empty off CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return ""
    return f", peak device memory {torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB"


def network_seconds(algo: str, cfg: Any, obs_shape: tuple[int, int, int], num_actions: int, num_envs: int,
                    frame_stack: int, device: torch.device | str, steps: int) -> tuple[float, float]:
    """Seconds per env step of the agent alone (``algo``'s real class and ``cfg``) on a `SyntheticEnv`,
    and the share of them spent in ``update``: ``(total, update)``.

    ``steps`` env steps are timed, rounded up to whole rollouts (PPO, A2C: one update each) or
    whole gradient-step intervals (DQN), after one untimed round of the same kind."""
    from pixelplay.agents import ALGOS

    device = torch.device(device)
    dqn = algo == "dqn"
    if dqn:  # a round: the vector steps between two gradient steps (or one step with several)
        vector_steps_per_round = max(1, -(-cfg.train_frequency // num_envs))
    else:  # a round: one rollout, one update
        vector_steps_per_round = cfg.num_steps
    rounds = max(1, -(-steps // (vector_steps_per_round * num_envs)))
    total_steps = (1 + rounds) * vector_steps_per_round * num_envs
    start = fill = 0
    if dqn:
        # The steady state: the clock starts past learning_starts and the epsilon decay, once the
        # replay holds enough steps to sample n-step transitions (added without updates).
        total_steps = 10 * (cfg.learning_starts + total_steps)
        start = max(cfg.learning_starts, math.ceil(cfg.exploration_fraction * total_steps))
        fill = cfg.n_step + 2 + -(-cfg.batch_size // num_envs)
    agent = ALGOS[algo].agent(cfg, tuple(obs_shape), num_actions, num_envs, total_steps, device,
                              frame_stack=frame_stack)
    if dqn:
        agent.learning_starts = start + fill * num_envs  # the env step of the first update
    envs = SyntheticEnv(num_envs, tuple(obs_shape), num_actions, frame_stack, device)
    obs = envs.reset()
    agent.observe_first(obs, None)
    step = start
    update_time = 0.0

    def run(vector_steps: int) -> None:
        nonlocal obs, step, update_time
        for _ in range(vector_steps):  # train.py's loop, without logging
            action = agent.act(obs, step)
            result = envs.step(action)
            agent.observe(obs, action, result)
            obs = result.obs
            step += num_envs
            if agent.ready(step):
                _sync(device)  # the update's own time: what acting queued is done before it starts
                began_update = time.perf_counter()
                agent.update(step)
                _sync(device)
                update_time += time.perf_counter() - began_update

    run(fill + vector_steps_per_round)  # untimed: the replay's first steps, one round
    _sync(device)
    update_time = 0.0
    began = time.perf_counter()
    run(rounds * vector_steps_per_round)
    _sync(device)
    timed_steps = rounds * vector_steps_per_round * num_envs
    return (time.perf_counter() - began) / timed_steps, update_time / timed_steps


def env_seconds(envs, steps: int, seed: int = 0) -> float:
    """Seconds per env step of ``envs`` (a `VecEnv`) stepped with uniformly random actions, after
    one untimed step; ``steps`` env steps over all envs (rounded up to whole vector steps)."""
    generator = torch.Generator().manual_seed(seed)
    vector_steps = max(1, -(-steps // envs.num_envs))
    envs.reset(seed=seed)
    actions = torch.randint(0, envs.num_actions, (vector_steps + 1, envs.num_envs), generator=generator)
    envs.step(actions[0])
    _sync(envs.device)
    began = time.perf_counter()
    for t in range(1, vector_steps + 1):
        envs.step(actions[t])
    _sync(envs.device)
    return (time.perf_counter() - began) / (vector_steps * envs.num_envs)


def measure(algo: str, cfg: Any, env_id: str, num_envs: int, *, device: torch.device | str = "cpu",
            backend: str = "auto", net_steps: int = 2048, env_steps: int = 2048, seed: int = 0,
            env_options: dict | None = None) -> Bounds:
    """`Bounds` of ``algo`` with ``cfg`` on ``num_envs`` copies of ``env_id`` (``backend``, ``device``):
    the env first (it also gives the observation shapes), then the network."""
    from pixelplay.envs import make_vec_env

    envs = make_vec_env(env_id, num_envs, seed, device, training=True, backend=backend, **(env_options or {}))
    try:
        obs_shape, num_actions, frame_stack = envs.obs_shape, envs.num_actions, envs.frame_stack
        env_time = env_seconds(envs, env_steps, seed)
    finally:
        envs.close()
    net_time, update_time = network_seconds(algo, cfg, obs_shape, num_actions, num_envs, frame_stack, device, net_steps)
    return Bounds(net_time, env_time, None if algo == "dqn" else update_time)


def preset_config(algo: str, env_id: str, num_envs: int | None = None, flags: list[str] | None = None):
    """``(RunConfig, algorithm config)`` as ``python train.py --algo ALGO --env ENV [flags]`` resolves
    them (defaults < preset < flags)."""
    from pixelplay.agents.run_config import resolve_config

    argv = ["--algo", algo, "--env", env_id, *([] if num_envs is None else ["--num-envs", str(num_envs)]),
            *(flags or [])]
    run_cfg, algo_cfg, _ = resolve_config(argv)
    return run_cfg, algo_cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="ppo", help="ppo, a2c or dqn (its preset for the env)")
    parser.add_argument("--env", default="breakout")
    parser.add_argument("--num-envs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto", help="Atari backend: auto, envpool or gymnasium")
    parser.add_argument("--net-steps", type=int, default=2048, help="env steps to time the network over")
    parser.add_argument("--env-steps", type=int, default=2048, help="env steps to time the env over")
    parser.add_argument("flags", nargs="*", help="train.py hyperparameter flags (after --), on top of the preset")
    args = parser.parse_args(argv)
    from pixelplay.envs.errors import PixelplayError

    try:
        run_cfg, algo_cfg = preset_config(args.algo, args.env, args.num_envs, ["--device", args.device, *args.flags])
        bounds = measure(args.algo, algo_cfg, args.env, run_cfg.num_envs, device=args.device, backend=args.backend,
                         net_steps=args.net_steps, env_steps=args.env_steps)
    except PixelplayError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.algo} on {args.env}, {run_cfg.num_envs} envs, {args.device}: {bounds.summary()}")
    double_buffered = "" if bounds.double_buffered is None else f", double-buffered bound {bounds.double_buffered:,.0f} steps/s"
    print(f"no-overlap bound {bounds.no_overlap:,.0f} steps/s, network-only bound {bounds.network_only:,.0f} steps/s"
          f"{double_buffered}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
