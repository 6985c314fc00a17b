"""Who plays in an evaluation: a trained agent from a checkpoint, a random or scripted player.

Every policy maps a batch of uint8 observations (N, C, H, W) to N action indices; ``first``
(bool (N,), optional) marks the rows whose episode starts with this observation, which a policy
with memory (a recurrent agent) needs to reset, and the others ignore. A `PolicySpec`
names one in a picklable form, so that a player process (ViZDoom multiplayer runs each player in
its own process) can rebuild it on its side. Within one process a checkpoint is read once:
`PolicySpec.load` keeps the agent it rebuilt, and every later question (which env it was trained
on, how it picks actions, the policy itself) is answered from that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from pixelplay.envs import resolve_env
from pixelplay.envs.errors import PixelplayError
from pixelplay.envs.spec import DOOM

if TYPE_CHECKING:
    from pixelplay.envs import EnvSpec

POLICY_KINDS = ("checkpoint", "random", "scripted", "human")


class Policy(Protocol):
    label: str

    def act(self, obs: torch.Tensor | np.ndarray, first=None) -> np.ndarray: ...


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
    greedy: bool = False
    """PPO, A2C: play the policy's most probable action instead of a sample"""

    @property
    def label(self) -> str:
        if self.kind == "checkpoint":
            return f"checkpoint {self.path}"
        return self.kind

    def load(self) -> tuple[Any, dict]:
        """The checkpoint's agent (in eval mode, on ``device``) and its checkpoint dict.

        The file is read on the first call and the result kept on this spec, so one process
        reads a checkpoint once however many steps ask for it. The kept agent is not pickled
        (`__getstate__`): a player process that receives the spec loads its own copy. Refuses an
        ``epsilon`` outside [0, 1] or given for an agent that samples from its policy (PPO, A2C),
        and ``greedy`` for an agent that acts epsilon-greedily (DQN).
        """
        loaded = self.__dict__.get("_loaded")
        if loaded is None:
            if self.kind != "checkpoint":
                raise PixelplayError(f"a {self.kind} player has no checkpoint to load")
            from pixelplay.agents import load_agent

            agent, checkpoint = load_agent(self.path, self.device)
            check_epsilon(agent, checkpoint, self.epsilon)
            check_greedy(agent, checkpoint, self.greedy)
            for module in ("net", "q_net"):
                if hasattr(agent, module):
                    getattr(agent, module).eval()
            loaded = (agent, checkpoint)
            object.__setattr__(self, "_loaded", loaded)  # a cache, not a field: equality is unchanged
        return loaded

    def env_options(self) -> dict[str, Any]:
        """What the env must be built with for this player to fit it: a checkpoint's frame stack
        (train.py's ``--frame-stack``; a checkpoint without one was trained with the env's own,
        and asks for nothing). Other players take the env as it is."""
        if self.kind != "checkpoint":
            return {}
        _, checkpoint = self.load()
        frames = checkpoint.get("frame_stack")
        return {} if frames is None else {"frame_stack": int(frames)}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_loaded", None)
        return state


def parse_policy(value: str, epsilon: float | None = None, device: str = "cpu", greedy: bool = False) -> PolicySpec:
    """``random``, ``scripted`` or a checkpoint / run directory, as a `PolicySpec`."""
    if value in ("random", "scripted"):
        return PolicySpec(value, device=device)
    if value == "human":
        raise PixelplayError("a person plays with --human, not as a policy or --opponent")
    from pixelplay.agents.checkpoint import resolve_checkpoint

    return PolicySpec("checkpoint", str(resolve_checkpoint(value)), epsilon, device, greedy)


class RandomPolicy:
    """Uniform over the actions, from its own seeded generator."""

    label = "random"

    def __init__(self, num_actions: int, seed: int):
        self.num_actions = num_actions
        self.rng = np.random.default_rng(seed)

    def act(self, obs, first=None) -> np.ndarray:
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

    def act(self, obs, first=None) -> np.ndarray:
        actions = []
        for _ in range(len(obs)):
            if not self._plan:
                self._plan = self._new_plan()
            actions.append(self._plan.pop(0))
        return np.asarray(actions, dtype=np.int64)


class AgentPolicy:
    """A live agent's evaluation policy (``agent.eval_act``): the training agent itself
    (``train.py --capture-video``) or one rebuilt from a checkpoint (``checkpoint`` given).

    ``epsilon`` (DQN only) and ``greedy`` (PPO, A2C only) are handed to each ``eval_act`` call; the
    agent's config is never changed, so the same agent can serve several policies. ``first`` goes
    to ``eval_act`` too: a recurrent agent zeroes its state for those rows (callers pass it at every
    episode start).
    """

    def __init__(self, agent: Any, checkpoint: dict | None = None, *, epsilon: float | None = None,
                 greedy: bool = False):
        check_epsilon(agent, checkpoint, epsilon)
        check_greedy(agent, checkpoint, greedy)
        self.agent = agent
        self.checkpoint = checkpoint
        self.epsilon = epsilon
        self.greedy = greedy
        self.device = torch.device(getattr(agent, "device", "cpu"))
        self.label = (
            f"{checkpoint['algo']} {checkpoint['path']} (step {checkpoint['global_step']})" if checkpoint
            else "training agent"
        )

    def act(self, obs, first=None) -> np.ndarray:
        tensor = torch.as_tensor(obs, device=self.device)
        if tensor.dim() == 3:
            tensor = tensor.unsqueeze(0)
        args = ()
        if first is not None:
            args = (torch.as_tensor(first, dtype=torch.bool, device=self.device).reshape(tensor.shape[0]),)
        if self.greedy:
            return self.agent.eval_act(tensor, *args, greedy=True).cpu().numpy()
        if self.epsilon is None:
            return self.agent.eval_act(tensor, *args).cpu().numpy()
        return self.agent.eval_act(tensor, *args, epsilon=self.epsilon).cpu().numpy()


def takes_epsilon(agent: Any) -> bool:
    """Whether the agent acts epsilon-greedily at evaluation (DQN), rather than sampling from a policy."""
    return hasattr(getattr(agent, "cfg", None), "eval_epsilon")


def check_epsilon(agent: Any, checkpoint: dict | None, epsilon: float | None) -> None:
    """Refuse an evaluation epsilon the agent cannot use, or one outside [0, 1]."""
    if epsilon is None:
        return
    if not takes_epsilon(agent):
        what = f"'{checkpoint['path']}' is a {checkpoint['algo']} agent" if checkpoint else "this agent"
        raise PixelplayError(f"--epsilon applies to DQN agents; {what}, which samples from its policy")
    if not 0.0 <= epsilon <= 1.0:
        raise PixelplayError(f"--epsilon must be in [0, 1], got {epsilon}")


def check_greedy(agent: Any, checkpoint: dict | None, greedy: bool) -> None:
    """Refuse ``greedy`` for an agent that acts epsilon-greedily (DQN): its greedy play is --epsilon 0."""
    if greedy and takes_epsilon(agent):
        what = f"'{checkpoint['path']}' is a {checkpoint['algo']} agent" if checkpoint else "this agent"
        raise PixelplayError(f"--greedy applies to PPO and A2C agents; {what}: use --epsilon 0 for its greedy play")


def action_selection(spec: PolicySpec) -> str:
    """How the player picks actions, in words (for the reports)."""
    if spec.kind != "checkpoint":
        return {"random": "uniformly random actions", "scripted": "a scripted player"}.get(spec.kind, spec.kind)
    agent, checkpoint = spec.load()  # read once per process; refuses --epsilon for PPO / A2C, --greedy for DQN
    if takes_epsilon(agent):
        eps = spec.epsilon if spec.epsilon is not None else agent.cfg.eval_epsilon
        source = "--epsilon" if spec.epsilon is not None else "the checkpoint's eval_epsilon"
        return f"epsilon-greedy on Q, epsilon = {eps:g} ({source})"
    if spec.greedy:
        return (f"{checkpoint['algo']}: the policy's most probable action (--greedy; Stable-Baselines3's "
                f"deterministic=True)")
    return f"{checkpoint['algo']}: actions sampled from the learned policy (as CleanRL and Stable-Baselines3 evaluate)"


def build_policy(
    spec: PolicySpec,
    *,
    num_actions: int,
    obs_shape: tuple[int, ...],
    seed: int,
    action_names: list[str] | None = None,
) -> Policy:
    """Instantiate a `PolicySpec` for an env with these actions and observations.

    A checkpoint's agent comes from `PolicySpec.load` (read once per process); torch is seeded
    with ``seed`` just before it plays, since its sampling (PPO) or exploration (DQN) draws from
    torch. ``action_names`` are Doom's button combinations (the scripted player needs them).
    """
    if spec.kind == "random":
        return RandomPolicy(num_actions, seed)
    if spec.kind == "scripted":
        if action_names is None:
            raise PixelplayError("the scripted player plays ViZDoom only (it picks actions by their button names)")
        return ScriptedDoomPolicy(action_names, seed)
    if spec.kind == "checkpoint":
        agent, checkpoint = spec.load()
        check_fits(checkpoint, obs_shape, num_actions)
        torch.manual_seed(seed)
        return AgentPolicy(agent, checkpoint, epsilon=spec.epsilon, greedy=spec.greedy)
    raise PixelplayError(f"policy kind '{spec.kind}' cannot act on its own (choose one of {', '.join(POLICY_KINDS)})")


def build_env_policy(spec: PolicySpec, env: EnvSpec, obs_shape: tuple[int, ...], seed: int) -> Policy:
    """`build_policy` for the env an `EnvSpec` describes (Doom's action names go to the scripted
    player; Atari's ALE names do not, so it refuses Atari as before)."""
    return build_policy(spec, num_actions=env.num_actions, obs_shape=tuple(obs_shape), seed=seed,
                        action_names=list(env.action_names) if env.family == DOOM else None)


def check_fits(checkpoint: dict, obs_shape: tuple[int, ...], num_actions: int) -> None:
    """Refuse a checkpoint whose network does not take this env's observations and actions."""
    saved_shape, saved_actions = tuple(checkpoint["obs_shape"]), int(checkpoint["num_actions"])
    if saved_shape != tuple(obs_shape) or saved_actions != num_actions:
        raise PixelplayError(
            f"'{checkpoint['path']}' was trained on {checkpoint['env_id']} with observations {saved_shape} and "
            f"{saved_actions} actions; this env gives {tuple(obs_shape)} and {num_actions}"
        )


def checkpoint_env(spec: PolicySpec) -> str:
    """The env id a checkpoint was trained on (validated; the checkpoint is read once, `PolicySpec.load`)."""
    env_id = spec.load()[1]["env_id"]
    resolve_env(env_id)
    return env_id

