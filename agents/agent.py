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
* ``update`` is the one place where gradients are computed and applied, where data-parallel
  ranks will average them;
* ``act`` takes a batch of observations and returns one action per row: nothing ties the
  batch to all of the envs, so half of them may act while the other half steps.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from pixelplay.envs.vec import StepResult


@runtime_checkable
class Agent(Protocol):
    """One learning agent over ``num_envs`` envs, its tensors on one device."""

    def act(self, obs: torch.Tensor, step: int) -> torch.Tensor:
        """Training actions (exploring) for uint8 observations (N, C, H, W); int64 (N,)."""
        ...

    def observe(self, obs: torch.Tensor, action: torch.Tensor, result: StepResult) -> None:
        """Take in the transition ``obs --action--> result`` (store it; reset finished envs' state)."""
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
