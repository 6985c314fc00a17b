"""On-policy rollout storage on the training device, and generalised advantage estimation.

One rollout is ``num_steps`` vector steps of ``num_envs`` envs, stored as preallocated tensors
of shape (T, N, ...) on the device; observations stay uint8 until the network scales them.

For a recurrent policy the storage also keeps each env's core state at the start of the rollout;
with the done flags that is all an update needs to re-run every env's sequence from its start
(truncated backpropagation through time over the rollout, as CleanRL's ``ppo_atari_lstm.py``).

The envs may fill their columns at different times: with double-buffered sampling (train.py's
``--double-buffer``) one half of them stores its step while the other half's step is in flight.
So each env counts its own stored steps (``filled``), and the rollout is full when every env has
``num_steps``.

With game features (``num_labels`` > 0) it also keeps the labels of each stored observation,
bool (T, N, F), for the game-feature head's loss; without them no such tensor exists. With a
teacher (``with_teacher``) it keeps the advice (a bitmask of advised actions) of each stored
observation, int64 (T, N).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class RolloutBatch(NamedTuple):
    """A flat minibatch of transitions for the actor-critic update."""

    obs: torch.Tensor
    """uint8 (B, C, H, W)"""
    action: torch.Tensor
    """int64 (B,)"""
    logprob: torch.Tensor
    """float32 (B,): log-probability of ``action`` under the policy that collected it"""
    value: torch.Tensor
    """float32 (B,): the critic's value when collected (for value clipping)"""
    advantage: torch.Tensor
    """float32 (B,)"""
    ret: torch.Tensor
    """float32 (B,): the value target, advantage + value"""
    first: torch.Tensor | None = None
    """recurrent only, bool (T, E): the step starts an episode (zero the state before it); the
    flat fields above are then E whole env sequences, time-major (B = T * E)"""
    state: torch.Tensor | None = None
    """recurrent only, float32 (k, E, H): the core state of those envs at the rollout's start"""
    labels: torch.Tensor | None = None
    """with game features only, float32 (B, F), 0.0 or 1.0: the game-feature labels of ``obs``,
    row for row"""
    advice: torch.Tensor | None = None
    """with a teacher only, int64 (B,): its advice for ``obs``, row for row: a bitmask of the advised
    actions (0: none)"""


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16), backwards over time.

    ``dones[t]`` is true when the episode ended after action t (terminated or truncated); there the
    chain is cut. A truncation's bootstrap value must already be folded into ``rewards[t]`` (the
    env resets in the same step, so ``values[t + 1]`` belongs to the next episode).
    ``last_value`` is V(s_T), the value of the observation after the final step.
    Returns ``(advantages, returns)``, both (T, N).
    """
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(last_value)
    next_value = last_value
    not_done = 1.0 - dones.float()
    for t in reversed(range(num_steps)):
        delta = rewards[t] + gamma * next_value * not_done[t] - values[t]
        next_advantage = delta + gamma * gae_lambda * not_done[t] * next_advantage
        advantages[t] = next_advantage
        next_value = values[t]
    return advantages, advantages + values


class RolloutStorage:
    """Fixed-size (T, N) buffers, filled one vector step at a time, emptied by each update."""

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        device: torch.device,
        state_shape: tuple[int, ...] | None = None,
        num_labels: int = 0,
        with_teacher: bool = False,
    ):
        self.num_steps, self.num_envs = num_steps, num_envs
        self.obs = torch.zeros((num_steps, num_envs, *obs_shape), dtype=torch.uint8, device=device)
        self.actions = torch.zeros((num_steps, num_envs), dtype=torch.long, device=device)
        self.logprobs = torch.zeros((num_steps, num_envs), device=device)
        self.values = torch.zeros((num_steps, num_envs), device=device)
        self.rewards = torch.zeros((num_steps, num_envs), device=device)
        self.dones = torch.zeros((num_steps, num_envs), dtype=torch.bool, device=device)
        self.initial_state = None
        """recurrent policies: the core state (k, N, H) each env acted from at step 0"""
        if state_shape is not None:
            self.initial_state = torch.zeros((state_shape[0], num_envs, *state_shape[1:]), device=device)
        self.labels = None
        """with game features: bool (T, N, F), the labels of ``obs[t]`` (0/1 labels stored as bools)"""
        if num_labels > 0:
            self.labels = torch.zeros((num_steps, num_envs, num_labels), dtype=torch.bool, device=device)
        self.advice = None
        """with a teacher: int64 (T, N), the advice for ``obs[t]`` (bitmask of advised actions, 0: none)"""
        if with_teacher:
            self.advice = torch.zeros((num_steps, num_envs), dtype=torch.long, device=device)
        self.filled = np.zeros(num_envs, dtype=np.int64)
        """steps stored so far in this rollout, per env (host-side counters: no device sync)"""

    @property
    def full(self) -> bool:
        """Every env has stored its ``num_steps`` steps: the rollout is ready for an update."""
        return bool((self.filled == self.num_steps).all())

    @property
    def stored(self) -> int:
        """Transitions stored so far in this rollout, over all envs."""
        return int(self.filled.sum())

    def has_room(self, rows: slice) -> bool:
        """Whether the envs ``rows`` can store another step before the update."""
        return bool((self.filled[rows] < self.num_steps).all())

    def add(self, obs, action, logprob, value, reward, done, state=None, labels=None, advice=None,
            rows: slice = slice(None)) -> None:
        """Store the next step of the envs ``rows`` (default: all), tensors of their batch size B;
        ``state`` (recurrent) is the core state those envs acted from, kept at their step 0;
        ``labels`` (with game features) the float (B, F) 0/1 labels of ``obs``; ``advice`` (with a
        teacher) the (B,) advice bitmasks for ``obs``. The envs of one call must have stored
        equally many steps (they step together)."""
        steps = self.filled[rows]
        t = int(steps[0])
        if not (steps == t).all() or t >= self.num_steps:
            raise ValueError(f"add() for envs {rows} that stored {steps.tolist()} of {self.num_steps} steps: "
                             "a group of envs stores its steps together, until the rollout is full")
        if t == 0 and self.initial_state is not None:
            self.initial_state[:, rows].copy_(state)
        if self.labels is not None:
            self.labels[t, rows].copy_(labels > 0.5)
        if self.advice is not None:
            self.advice[t, rows].copy_(advice)
        self.obs[t, rows].copy_(obs)
        self.actions[t, rows].copy_(action)
        self.logprobs[t, rows].copy_(logprob)
        self.values[t, rows].copy_(value)
        self.rewards[t, rows].copy_(reward)
        self.dones[t, rows].copy_(done)
        self.filled[rows] += 1

    def minibatches(
        self,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        minibatch_size: int,
        generator: torch.Generator | None = None,
    ):
        """Yield shuffled minibatches over the flattened rollout (one epoch)."""
        total = self.num_steps * self.num_envs
        flat = (
            self.obs.reshape(total, *self.obs.shape[2:]),
            self.actions.reshape(total),
            self.logprobs.reshape(total),
            self.values.reshape(total),
            advantages.reshape(total),
            returns.reshape(total),
        )
        labels = None if self.labels is None else self.labels.reshape(total, -1)
        advice = None if self.advice is None else self.advice.reshape(total)
        order = torch.randperm(total, device=self.obs.device, generator=generator)
        for start in range(0, total, minibatch_size):
            index = order[start : start + minibatch_size]
            yield RolloutBatch(
                *(tensor[index] for tensor in flat), labels=None if labels is None else labels[index].float(),
                advice=None if advice is None else advice[index],
            )

    def sequences(
        self,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        num_minibatches: int,
        generator: torch.Generator | None = None,
    ):
        """Yield minibatches of whole env sequences (one epoch, recurrent policies): the envs are
        shuffled and split into ``num_minibatches`` groups (``num_envs`` a multiple of it), each
        with all T steps, its episode starts and its initial state.

        The state is stored after the reset of envs that finished the step before, so step 0
        starts no episode; step t > 0 starts one where ``dones[t - 1]``."""
        assert self.initial_state is not None, "sequences() needs a storage made with a state_shape"
        envs_per_batch = self.num_envs // num_minibatches
        first = torch.zeros_like(self.dones)
        first[1:] = self.dones[:-1]
        order = torch.randperm(self.num_envs, device=self.obs.device, generator=generator)
        for start in range(0, self.num_envs, envs_per_batch):
            index = order[start : start + envs_per_batch]
            obs = self.obs[:, index]
            yield RolloutBatch(
                obs.reshape(-1, *obs.shape[2:]),
                *(tensor[:, index].reshape(-1) for tensor in (self.actions, self.logprobs, self.values, advantages, returns)),
                first=first[:, index],
                state=self.initial_state[:, index],
                labels=None if self.labels is None else self.labels[:, index].reshape(-1, self.labels.shape[-1]).float(),
                advice=None if self.advice is None else self.advice[:, index].reshape(-1),
            )

    def clear(self) -> None:
        self.filled[:] = 0
