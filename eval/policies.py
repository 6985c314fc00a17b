"""Who plays in an evaluation: a trained agent from a checkpoint, a random or scripted player.

Every policy maps a batch of uint8 observations (N, C, H, W) to N action indices. A `PolicySpec`
names one in a picklable form, so that a player process (ViZDoom multiplayer runs each player in
its own process) can rebuild it on its side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from pixelplay.envs import resolve_env
from pixelplay.envs.errors import PixelplayError

POLICY_KINDS = ("checkpoint", "random", "scripted", "human")


class Policy(Protocol):
    label: str

    def act(self, obs: torch.Tensor | np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class PolicySpec:
    """A player, in a form that crosses process boundaries."""

    kind: str
    """checkpoint, random, scripted (Doom only) or human (a person at a ViZDoom window)"""
    path: str | None = None
    """the checkpoint file (kind checkpoint)"""
    epsilon: float | None = None
    """DQN: the evaluation epsilon (None: the checkpoint's eval_epsilon)"""
    device: str = "cpu"
    """torch device the agent runs on"""

    @property
    def label(self) -> str:
        if self.kind == "checkpoint":
            return f"checkpoint {self.path}"
        return self.kind


def parse_policy(value: str, epsilon: float | None = None, device: str = "cpu") -> PolicySpec:
    """``random``, ``scripted`` or a checkpoint / run directory, as a `PolicySpec`."""
    if value in ("random", "scripted"):
        return PolicySpec(value, device=device)
    if value == "human":
        raise PixelplayError("a person plays with --human, not as a policy or --opponent")
    from pixelplay.agents.checkpoint import resolve_checkpoint

    return PolicySpec("checkpoint", str(resolve_checkpoint(value)), epsilon, device)


class RandomPolicy:
    """Uniform over the actions, from its own seeded generator."""

    label = "random"

    def __init__(self, num_actions: int, seed: int):
        self.num_actions = num_actions
        self.rng = np.random.default_rng(seed)

    def act(self, obs) -> np.ndarray:
        return self.rng.integers(self.num_actions, size=len(obs))


class ScriptedDoomPolicy:
    """A simple hand-written deathmatch player: run forward firing, now and then turn while firing.

    It sees nothing (no aiming), so it is a floor a learned agent should beat, but it covers the
    map and fires far more than a random player. Works with any action set that names its buttons
    (``DoomEnv.action_names``): missing combinations fall back to the nearest available one.
    """

    label = "scripted"

    def __init__(self, action_names: list[str], seed: int):
        self.rng = np.random.default_rng(seed)
        sets = [frozenset(name.split("+")) - {"NOOP"} for name in action_names]

        def find(*wanted: str) -> int:
            target = frozenset(wanted)
            # Exact match first, else the action sharing the most buttons with the wish.
            scores = [(len(target & s) - 0.1 * len(s - target), -i) for i, s in enumerate(sets)]
            return -max(scores)[1]

        self.forward = find("MOVE_FORWARD", "ATTACK")
        self.turns = (find("TURN_LEFT", "ATTACK"), find("TURN_RIGHT", "ATTACK"))
        self.forward_turns = (find("MOVE_FORWARD", "TURN_LEFT", "ATTACK"), find("MOVE_FORWARD", "TURN_RIGHT", "ATTACK"))
        self._plan: list[int] = []

    def _new_plan(self) -> list[int]:
        rng = self.rng
        side = int(rng.integers(2))
        plan = [self.forward] * int(rng.integers(8, 25))
        plan += [self.forward_turns[side]] * int(rng.integers(0, 6))
        plan += [self.turns[side]] * int(rng.integers(2, 11))
        return plan

    def act(self, obs) -> np.ndarray:
        actions = []
        for _ in range(len(obs)):
            if not self._plan:
                self._plan = self._new_plan()
            actions.append(self._plan.pop(0))
        return np.asarray(actions, dtype=np.int64)


class AgentPolicy:
    """A trained agent's evaluation policy (``agent.eval_act``)."""

    def __init__(self, agent: Any, checkpoint: dict, device: torch.device):
        self.agent = agent
        self.checkpoint = checkpoint
        self.device = device
        self.label = f"{checkpoint['algo']} {checkpoint['path']} (step {checkpoint['global_step']})"

    def act(self, obs) -> np.ndarray:
        tensor = torch.as_tensor(obs, device=self.device)
        if tensor.dim() == 3:
            tensor = tensor.unsqueeze(0)
        return self.agent.eval_act(tensor).cpu().numpy()


def load_agent_policy(path: str, *, epsilon: float | None = None, device: str = "cpu", num_envs: int = 1) -> AgentPolicy:
    """Rebuild a checkpoint's agent; ``epsilon`` overrides a DQN's evaluation epsilon."""
    from pixelplay.agents import load_agent

    agent, checkpoint = load_agent(path, device, num_envs)
    if epsilon is not None:
        if not hasattr(agent.cfg, "eval_epsilon"):
            raise PixelplayError(
                f"--epsilon applies to DQN agents; '{path}' is a {checkpoint['algo']} agent, which samples from its policy"
            )
        if not 0.0 <= epsilon <= 1.0:
            raise PixelplayError(f"--epsilon must be in [0, 1], got {epsilon}")
        agent.cfg.eval_epsilon = float(epsilon)
    for module in ("net", "q_net"):
        if hasattr(agent, module):
            getattr(agent, module).eval()
    return AgentPolicy(agent, checkpoint, torch.device(device))


def build_policy(
    spec: PolicySpec,
    *,
    num_actions: int,
    obs_shape: tuple[int, ...],
    seed: int,
    action_names: list[str] | None = None,
    num_envs: int = 1,
) -> Policy:
    """Instantiate a `PolicySpec` for an env with these actions and observations."""
    if spec.kind == "random":
        return RandomPolicy(num_actions, seed)
    if spec.kind == "scripted":
        if action_names is None:
            raise PixelplayError("the scripted player plays ViZDoom only (it picks actions by their button names)")
        return ScriptedDoomPolicy(action_names, seed)
    if spec.kind == "checkpoint":
        torch.manual_seed(seed)  # the agent's sampling (PPO) or exploration (DQN) draws from torch
        policy = load_agent_policy(spec.path, epsilon=spec.epsilon, device=spec.device, num_envs=num_envs)
        check_fits(policy.checkpoint, obs_shape, num_actions)
        return policy
    raise PixelplayError(f"policy kind '{spec.kind}' cannot act on its own (choose one of {', '.join(POLICY_KINDS)})")


def check_fits(checkpoint: dict, obs_shape: tuple[int, ...], num_actions: int) -> None:
    """Refuse a checkpoint whose network does not take this env's observations and actions."""
    saved_shape, saved_actions = tuple(checkpoint["obs_shape"]), int(checkpoint["num_actions"])
    if saved_shape != tuple(obs_shape) or saved_actions != num_actions:
        raise PixelplayError(
            f"'{checkpoint['path']}' was trained on {checkpoint['env_id']} with observations {saved_shape} and "
            f"{saved_actions} actions; this env gives {tuple(obs_shape)} and {num_actions}"
        )


def checkpoint_env(spec: PolicySpec) -> str:
    """The env id a checkpoint was trained on (reads the file; validates it)."""
    from pixelplay.agents.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(spec.path)
    env_id = checkpoint["env_id"]
    resolve_env(env_id)
    return env_id
