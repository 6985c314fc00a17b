"""The agent contract: what train.py's loop and the eval harness may call on an algorithm.

There is no base class to inherit from (a small protocol, as dqn_zoo's agents are): PPO,
A2C and DQN each implement these methods on their own, and `typing.Protocol` lets a type checker
and a test hold them to it.

The contract is shaped for what comes next, so that it need not change then:

* per-env state (a recurrent core's hidden state) lives inside the agent, one row per env;
  ``observe`` sees which envs finished (``result.terminated | result.truncated``) and resets
  those rows, and ``eval_act`` is told which rows start a new episode (``first``);
* anything else the env reports with an observation (auxiliary labels such as "an enemy is on
  screen") travels in the `StepResult` that ``observe`` receives, so no signature changes;
  what the env reports with the first observations, from ``envs.reset()``, reaches the agent
  through ``observe_first`` (as dm-acme's ``Actor.observe_first``). With game features
  (train.py's ``--game-features``) the agent keeps ``result.labels`` until it stores
  ``result.obs`` at the next ``observe``, so the labels stored with each observation are its own;
  a teacher's advice (``--teacher``, ``result.advice``) travels the same way;
* ``update`` is the one place where gradients are computed and applied, where data-parallel
  ranks will average them;
* ``act`` and ``observe`` take the rows of the envs they are about (default: all of them), so
  that half of the envs may act while the other half steps (train.py's ``--double-buffer``);
  ``can_act`` says when a group of envs must wait for the next update instead (an on-policy
  agent whose rollout part is full).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from pixelplay.envs.errors import PixelplayError
from pixelplay.envs.vec import StepResult


@runtime_checkable
class Agent(Protocol):
    """One learning agent over ``num_envs`` envs, its tensors on one device."""

    off_policy: bool
    """True when `update` learns only from what earlier `observe` calls stored (a replay): the
    training loop may then run it while the envs step (``--overlap``), before the step's
    transition is observed. False for on-policy agents, whose update needs the rollout's last
    step."""

    def act(self, obs: torch.Tensor, step: int, rows: slice | None = None) -> torch.Tensor:
        """Training actions (exploring) for uint8 observations (B, C, H, W) of the envs ``rows``
        (a contiguous slice of the N envs; None: all, B = N); int64 (B,). An agent that can only
        act for all of its envs at once refuses a smaller group with a `PixelplayError`."""
        ...

    def can_act(self, rows: slice | None = None) -> bool:
        """Whether `act` may be called now for the envs ``rows`` (None: all); False while an
        on-policy agent's rollout holds all the steps these envs may store before the update."""
        ...

    def observe_first(self, obs: torch.Tensor, labels: torch.Tensor | None = None,
                      advice: torch.Tensor | None = None) -> None:
        """The envs were reset and ``obs`` (N, C, H, W) starts an episode in each; ``labels`` and
        ``advice`` are what the env reports with it (``envs.labels``: game-feature labels
        (N, F); ``envs.advice``: a teacher's advice (N,); each None when off).
        Called after every ``envs.reset()`` of a training loop, before the next `act`."""
        ...

    def observe(self, obs: torch.Tensor, action: torch.Tensor, result: StepResult, rows: slice | None = None) -> None:
        """Take in the transition ``obs --action--> result`` of the envs ``rows`` (None: all), after
        `act` for the same rows (store it; reset finished envs' state)."""
        ...

    def ready(self, step: int) -> bool:
        """Whether `update` is due at global env step ``step``."""
        ...

    def update(self, step: int) -> dict[str, float]:
        """Learn from what was observed; returns metrics (namespaced keys, plain floats)."""
        ...

    def eval_act(self, obs: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
        """The evaluation policy; ``first`` (bool (N,)) marks rows that start a new episode."""
        ...

    def resumed(self, global_step: int) -> str | None:
        """Told that a run resumes at ``global_step`` after `load_state_dict`; returns a line for
        the log when resuming changes something (DQN refilling an empty replay), else None."""
        ...

    def learned_step(self, global_step: int) -> int:
        """The env step the current weights stand for: what a checkpoint saved now should carry."""
        ...

    def state_dict(self) -> dict:
        """Everything needed to resume (weights, optimizer, counters): tensors and primitives only."""
        ...

    def load_state_dict(self, state: dict) -> None:
        ...


def checked_labels(labels: torch.Tensor | None, num_envs: int, num_features: int) -> torch.Tensor | None:
    """The game-feature labels an agent keeps for its next observations: None when the agent has
    no game-feature head (whatever the env sends); else ``labels`` (N, F), refused with one clear
    error when missing or of another shape (an env built without the same game features)."""
    if num_features == 0:
        return None
    if labels is None:
        raise PixelplayError(
            f"the agent predicts {num_features} game feature(s) but got no labels with the observations: build "
            "the envs with the same game_features, and call observe_first(obs, envs.labels) after envs.reset()"
        )
    if tuple(labels.shape) != (num_envs, num_features):
        raise PixelplayError(f"game-feature labels of shape {tuple(labels.shape)}, expected {(num_envs, num_features)}")
    return labels
