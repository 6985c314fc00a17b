"""The env boundary: numpy goes in on one side, device tensors come out of the other.

Every backend (gymnasium vector envs for Atari and ViZDoom, EnvPool for Atari) is wrapped in a
`VecEnv` with one contract, so the training loop, the replay buffer and the eval harness never see
backend quirks:

* observations are uint8 tensors of shape (N, C, H, W) on the training device;
* `step` resets finished envs *in the same step* (gymnasium's ``SAME_STEP`` autoreset): the
  returned ``obs`` row of a finished env is already the first frame of its next episode and the
  last frame of the finished one is in ``final_obs``. Gymnasium 1.x defaults to resetting on the
  *next* step instead, which inserts a dummy transition whose action is ignored and whose reward
  is 0 (see ``shared/reference/measured-here.md``); we never expose that;
* ``terminated`` means the episode really ended (death, goal, life lost while training Atari),
  ``truncated`` means it was cut by a time limit: a learner bootstraps from ``final_obs`` there;
* ``episodes`` lists the *full games* that ended this step, with their raw (unclipped) return,
  length and any game statistics (Doom kills, deaths, ...). With Atari's life-loss-as-episode-end
  a game spans several training episodes; the record is written once, at game over.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

EPISODE_INFO_KEY = "pixelplay_episode"
"""Key under which a single env's ``info`` carries the record of a finished full game."""


class StepResult(NamedTuple):
    """One vectorised step, all tensors on the training device."""

    obs: torch.Tensor
    """uint8 (N, C, H, W): observation to act on next (first frame of a new episode where done)."""
    reward: torch.Tensor
    """float32 (N,): the training reward (clipped for Atari training envs)."""
    terminated: torch.Tensor
    """bool (N,): the episode ended for real; do not bootstrap."""
    truncated: torch.Tensor
    """bool (N,): the episode was cut by a time limit; bootstrap from ``final_obs``."""
    final_obs: torch.Tensor
    """uint8 (N, C, H, W): last observation of the finished episode where done, else equal to obs."""
    episodes: list[dict[str, Any]]
    """Full games that ended this step: ``{"env": i, "return": ..., "length": ..., <game stats>}``."""


class VecEnv:
    """Base of every backend. Subclasses implement ``_reset`` and ``_step`` on numpy arrays."""

    num_envs: int
    single_observation_space: gym.spaces.Box
    single_action_space: gym.spaces.Discrete
    device: torch.device
    frame_stack: int = 1
    """How many frames each observation stacks along C (the replay stores each frame once)."""

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return tuple(self.single_observation_space.shape)  # type: ignore[return-value]

    @property
    def num_actions(self) -> int:
        return int(self.single_action_space.n)

    def _to_device(self, array: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if dtype is not None:
            tensor = tensor.to(dtype)
        return tensor.to(self.device, non_blocking=True)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        return self._to_device(self._reset(seed))

    def step(self, actions: torch.Tensor | np.ndarray) -> StepResult:
        if isinstance(actions, torch.Tensor):
            actions = actions.detach().cpu().numpy()
        obs, reward, terminated, truncated, final_obs, episodes = self._step(np.asarray(actions))
        # A step that is both (ViZDoom flags timeouts so) is a time limit, not a death.
        terminated = np.logical_and(terminated, np.logical_not(truncated))
        return StepResult(
            obs=self._to_device(obs),
            reward=self._to_device(reward, torch.float32),
            terminated=self._to_device(terminated, torch.bool),
            truncated=self._to_device(truncated, torch.bool),
            final_obs=self._to_device(final_obs),
            episodes=episodes,
        )

    def _reset(self, seed: int | None) -> np.ndarray:
        raise NotImplementedError

    def _step(self, actions: np.ndarray):
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class GymVecEnv(VecEnv):
    """A gymnasium vector env (sync or async) of single envs that follow pixelplay's conventions.

    Each single env returns uint8 (C, H, W) observations and, on the step that ends a full game,
    puts the game's record in ``info[EPISODE_INFO_KEY]`` (a flat dict of numbers).
    """

    def __init__(self, env_fns, device: torch.device | str = "cpu", asynchronous: bool | None = None,
                 frame_stack: int = 1):
        if asynchronous is None:
            asynchronous = len(env_fns) > 1
        mode = gym.vector.AutoresetMode.SAME_STEP
        if asynchronous:
            # Workers are forked before any torch thread pool exists in them; "spawn" would
            # re-import the training script in every worker.
            self.envs = gym.vector.AsyncVectorEnv(env_fns, autoreset_mode=mode, context="fork")
        else:
            self.envs = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=mode)
        self.num_envs = self.envs.num_envs
        self.single_observation_space = self.envs.single_observation_space
        self.single_action_space = self.envs.single_action_space
        self.device = torch.device(device)
        self.frame_stack = frame_stack

    def _reset(self, seed):
        obs, _ = self.envs.reset(seed=seed)
        return obs

    def _step(self, actions):
        obs, reward, terminated, truncated, info = self.envs.step(actions)
        done = np.logical_or(terminated, truncated)
        final_obs = obs.copy()
        episodes: list[dict[str, Any]] = []
        if done.any():
            final_obs_objs = info.get("final_obs")
            final_infos = info.get("final_info", {})
            for i in np.flatnonzero(done):
                final_obs[i] = final_obs_objs[i]
            records = final_infos.get(EPISODE_INFO_KEY)
            mask = final_infos.get("_" + EPISODE_INFO_KEY)
            if records is not None:
                for i in np.flatnonzero(mask):
                    episodes.append({"env": int(i), **_unstack_record(records, i)})
        return obs, reward, terminated, truncated, final_obs, episodes

    def call(self, name: str, *args, **kwargs):
        """Call a method on every single env (e.g. to read the game's native screen)."""
        return self.envs.call(name, *args, **kwargs)

    def close(self):
        self.envs.close()


def _unstack_record(records: Any, index: int) -> dict[str, Any]:
    """Gymnasium stacks per-env info dicts into dicts of arrays; take env ``index`` back out."""
    if isinstance(records, dict):
        return {k: _scalar(v[index]) for k, v in records.items() if not k.startswith("_")}
    return dict(records[index])


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value
