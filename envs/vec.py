"""The env boundary: numpy goes in on one side, device tensors come out of the other.

Every backend (gymnasium vector envs for Atari and ViZDoom, EnvPool for Atari) is wrapped in a
`VecEnv` with one contract, so the training loop, the replay buffer and the eval harness never see
backend quirks:

* observations are uint8 tensors of shape (N, C, H, W) on the training device;
* `step` resets finished envs *in the same step* (gymnasium's ``SAME_STEP`` autoreset): the
  returned ``obs`` row of a finished env is already the first frame of its next episode and the
  last frame of the finished one is in ``final_obs``. Gymnasium 1.x defaults to resetting on the
  *next* step instead, which inserts a dummy transition whose action is ignored and whose reward
  is 0 (gymnasium 1.0 release notes, "vector autoreset"); we never expose that;
* ``terminated`` means the episode really ended (death, goal, life lost while training Atari),
  ``truncated`` means it was cut by a time limit: a learner bootstraps from ``final_obs`` there;
* ``episodes`` lists the *full games* that ended this step, with their raw (unclipped) return,
  length and any game statistics (Doom kills, deaths, ...). With Atari's life-loss-as-episode-end
  a game spans several training episodes; the record is written once, at game over;
* ``labels`` (optional) are per-frame training targets that travel with the observations: a
  float32 (N, F) tensor of what is on screen in each row of ``obs`` (ViZDoom's game features,
  ``EnvSpec.game_features`` names the F columns), or None for an env that has none.
  `VecEnv.labels` holds the labels of the observations last returned by ``reset`` *or* ``step``,
  so the first observations (from ``reset``) have theirs too;
* ``advice`` (optional), likewise: int64 (N,), the actions a scripted teacher advises for
  each row of ``obs`` as a bitmask over the action set (bit ``a`` set: action ``a`` is advised;
  0: no advice), for kickstarting (ViZDoom's ``teacher`` option, `envs.doom_teacher`);
  `VecEnv.advice` holds those of the last ``reset`` or ``step``.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import warnings
from multiprocessing.connection import wait
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from pixelplay.envs.errors import EnvError
from pixelplay.envs.spec import EnvSpec

_PIPE_ERRORS = (EOFError, BrokenPipeError, ConnectionResetError)
"""What talking to a worker that has died raises, depending on where the call was."""

EPISODE_INFO_KEY = "pixelplay_episode"
"""Key under which a single env's ``info`` carries the record of a finished full game."""

GAME_FEATURES_INFO_KEY = "game_features"
"""Key under which a single env's ``info`` (from ``reset`` and from every ``step``) carries the
float32 (F,) game-feature labels of the observation it returns, when it has game features
(`envs.doom.DoomEnv`'s ``game_features`` option); `GymVecEnv` gathers them into
`StepResult.labels`."""

ADVICE_INFO_KEY = "teacher_advice"
"""Key under which a single env's ``info`` (from ``reset`` and from every ``step``) carries the
actions its teacher advises for the observation it returns (an int bitmask over the action set,
0 for none), when it has a teacher (`envs.doom.DoomEnv`'s ``teacher`` option); `GymVecEnv` gathers them into
`StepResult.advice`."""


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
    labels: torch.Tensor | None = None
    """float32 (N, F), 0.0 or 1.0: the game-feature labels of ``obs``, row for row, column ``j``
    for the feature ``spec.game_features[j]`` (e.g. 1.0: an enemy is visible). They describe the
    frame ``obs`` ends on: for a finished env, the first frame of its new episode, as ``obs``
    (not ``final_obs``). None when the env has no game features (the default, and Atari)."""
    advice: torch.Tensor | None = None
    """int64 (N,): the actions the env's teacher advises for ``obs``, row for row, as a bitmask
    over the action set (bit ``a``: action ``a``), 0 where it has no advice; as ``labels``, for the
    frame ``obs`` ends on. None without a teacher (the default)."""


class VecEnv:
    """Base of every backend. Subclasses implement ``_reset`` and ``_step`` on numpy arrays, or
    ``_send`` and ``_receive`` where the envs can step while the caller computes."""

    num_envs: int
    single_observation_space: gym.spaces.Box
    single_action_space: gym.spaces.Discrete
    device: torch.device
    frame_stack: int = 1
    """How many frames each observation stacks along C (the replay stores each frame once)."""
    spec: EnvSpec
    """What env this is (name, frame skip, actions, step caps...); set by `make_vec_env`."""
    game_features: tuple[str, ...] = ()
    """The names of the label columns (`StepResult.labels`); empty when the env has none."""
    labels: torch.Tensor | None = None
    """float32 (N, F): the labels of the observations that `reset` or `step` returned last (so,
    after ``obs = envs.reset()``, those of ``obs``; after a step, ``result.labels``). None when
    the env has no game features, and before the first reset."""
    advice: torch.Tensor | None = None
    """int64 (N,): the teacher's advice (bitmasks of advised actions, 0: none) for the observations
    `reset` or `step` returned last; None without a teacher (`EnvSpec.teacher`), and before the first reset."""
    _pending: np.ndarray | None = None
    """The actions of the step `step_async` started and `step_wait` has not finished."""

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
        """Reset every env; the first observations. Their labels, if any, are in `labels`."""
        obs = self._to_device(self._reset(seed))
        self.labels = self._labels_to_device()
        self.advice = self._advice_to_device()
        return obs

    def step(self, actions: torch.Tensor | np.ndarray) -> StepResult:
        """Step every env with ``actions``: `step_async` then `step_wait`."""
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: torch.Tensor | np.ndarray) -> None:
        """Start a step and return at once: the env workers (processes, or EnvPool's threads)
        run it while the caller computes, e.g. an off-policy learner's gradient step. Finish it
        with `step_wait` before anything else touches the envs. An in-process backend runs the
        whole step in `step_wait` (no overlap, same results)."""
        if self._pending is not None:
            raise RuntimeError("step_async() twice without step_wait(): one step at a time")
        if isinstance(actions, torch.Tensor):
            actions = actions.detach().cpu().numpy()
        self._pending = np.asarray(actions)
        self._send(self._pending)

    def step_wait(self) -> StepResult:
        """The result of the step `step_async` started (blocks until every env has stepped)."""
        if self._pending is None:
            raise RuntimeError("step_wait() without step_async()")
        actions, self._pending = self._pending, None
        obs, reward, terminated, truncated, final_obs, episodes = self._receive(actions)
        # A step that is both (ViZDoom flags timeouts so) is a time limit, not a death.
        terminated = np.logical_and(terminated, np.logical_not(truncated))
        self.labels = labels = self._labels_to_device()
        self.advice = advice = self._advice_to_device()
        return StepResult(
            obs=self._to_device(obs),
            reward=self._to_device(reward, torch.float32),
            terminated=self._to_device(terminated, torch.bool),
            truncated=self._to_device(truncated, torch.bool),
            final_obs=self._to_device(final_obs),
            episodes=episodes,
            labels=labels,
            advice=advice,
        )

    def _labels_to_device(self) -> torch.Tensor | None:
        labels = self._latest_labels()
        return None if labels is None else self._to_device(labels, torch.float32)

    def _latest_labels(self) -> np.ndarray | None:
        """float32 (N, F): the labels of the observations `_reset` or the last step returned; None
        for a backend without game features (this default: no cost, no tensor)."""
        return None

    def _advice_to_device(self) -> torch.Tensor | None:
        advice = self._latest_advice()
        return None if advice is None else self._to_device(advice, torch.int64)

    def _latest_advice(self) -> np.ndarray | None:
        """int64 (N,): the teacher's advice for the observations `_reset` or the last step
        returned; None for a backend without a teacher (this default)."""
        return None

    def _reset(self, seed: int | None) -> np.ndarray:
        raise NotImplementedError

    def _send(self, actions: np.ndarray) -> None:
        """Hand ``actions`` to the envs without waiting (a backend that can); by default the
        step runs in `_receive`."""

    def _receive(self, actions: np.ndarray):
        """Wait for the step `_send` started; the same tuple as `_step`."""
        return self._step(actions)

    def _step(self, actions: np.ndarray):
        """One synchronous step: ``(obs, reward, terminated, truncated, final_obs, episodes)``."""
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
    puts the game's record in ``info[EPISODE_INFO_KEY]`` (a flat dict of numbers). With
    ``game_features`` (the label names, in column order), each single env must also put the
    float32 (F,) labels of the observation it returns in ``info[GAME_FEATURES_INFO_KEY]``, from
    ``reset`` and from every ``step``: with the same-step autoreset, a finished env's ``info``
    is its reset's, so its row describes the new episode's first frame, as ``obs`` does. With
    ``teacher``, each single env puts its teacher's advice (an int bitmask of advised actions,
    0 for none) in ``info[ADVICE_INFO_KEY]`` in the same way.
    """

    def __init__(self, env_fns, device: torch.device | str = "cpu", asynchronous: bool | None = None,
                 frame_stack: int = 1, game_features: tuple[str, ...] = (), teacher: bool = False):
        if asynchronous is None:
            asynchronous = len(env_fns) > 1
        mode = gym.vector.AutoresetMode.SAME_STEP
        if asynchronous:
            # "forkserver": workers are forked from a small single-threaded server process, not
            # from this one. Forking the trainer itself copies a process whose torch/OpenMP,
            # EnvPool, cv2 and wandb threads may hold locks mid-operation, which a child can
            # deadlock or crash on. The server is started once per process and preloads the env
            # modules; each worker then costs a fork. Python 3.14 made forkserver the default
            # start method on Linux.
            multiprocessing.get_context("forkserver").set_forkserver_preload([f"{__package__}.doom", f"{__package__}.atari"])
            # Forkserver children start in the server's directory; run each in this one, as a
            # forked worker would (emulators write files relative to it: _vizdoom.ini, demos).
            env_fns = [functools.partial(_make_in_directory, os.getcwd(), fn) for fn in env_fns]
            try:
                self.envs = gym.vector.AsyncVectorEnv(env_fns, autoreset_mode=mode, context="forkserver")
            except _PIPE_ERRORS as err:
                raise EnvError(
                    "the env worker processes died while starting. In a script of your own, put its "
                    "top-level code under `if __name__ == \"__main__\":`: workers start like "
                    "multiprocessing's forkserver/spawn processes, which import the main module"
                ) from err
        else:
            self.envs = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=mode)
        self.num_envs = self.envs.num_envs
        self.single_observation_space = self.envs.single_observation_space
        self.single_action_space = self.envs.single_action_space
        self.device = torch.device(device)
        self.frame_stack = frame_stack
        self.game_features = tuple(game_features)
        self._labels: np.ndarray | None = None
        self.teacher = teacher
        self._advice: np.ndarray | None = None

    def _reset(self, seed):
        if isinstance(self.envs, gym.vector.AsyncVectorEnv):
            obs, info = self._call_workers("reset", self.envs.reset_async, self.envs.reset_wait, seed=seed)
            self._note_emulator_processes()
        else:
            obs, info = self.envs.reset(seed=seed)
        self._labels = self._gather_labels(info)
        self._advice = self._gather_advice(info)
        return obs

    def _send(self, actions):
        if isinstance(self.envs, gym.vector.AsyncVectorEnv):
            self._send_to_workers("step", self.envs.step_async, actions)

    def _receive(self, actions):
        if isinstance(self.envs, gym.vector.AsyncVectorEnv):
            result = self._receive_from_workers("step", self.envs.step_wait)
        else:
            result = self.envs.step(actions)
        obs, reward, terminated, truncated, info = result
        self._labels = self._gather_labels(info)
        self._advice = self._gather_advice(info)
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

    def _latest_labels(self) -> np.ndarray | None:
        return self._labels

    def _latest_advice(self) -> np.ndarray | None:
        return self._advice

    def _gather_advice(self, info: dict[str, Any]) -> np.ndarray | None:
        """The (N,) advice bitmasks the single envs put in their ``info``; None without a teacher."""
        if not self.teacher:
            return None
        advice = _from_every_env(info, ADVICE_INFO_KEY, "were built with a teacher but some returned no advice")
        return np.asarray(advice, dtype=np.int64).reshape(self.num_envs)

    def _gather_labels(self, info: dict[str, Any]) -> np.ndarray | None:
        """The (N, F) labels the single envs put in their ``info``; None without game features."""
        if not self.game_features:
            return None
        labels = _from_every_env(
            info, GAME_FEATURES_INFO_KEY, f"were built with game features {self.game_features} but some returned no labels"
        )
        shape = (self.num_envs, len(self.game_features))
        if np.shape(labels) != shape:
            raise EnvError(f"game-feature labels of shape {np.shape(labels)}, expected {shape} ({self.game_features})")
        return np.asarray(labels, dtype=np.float32)

    def call(self, name: str, *args, **kwargs):
        """Call a method on every single env (e.g. to read the game's native screen)."""
        return self.envs.call(name, *args, **kwargs)

    def _call_workers(self, operation: str, send, receive, *args, **kwargs):
        """Send a call to every worker and collect the answers, or raise a clear `EnvError`.

        Gymnasium's ``*_wait`` reads each pipe in turn and would wait forever on a worker that
        died without closing its end (or raise a bare EOFError / BrokenPipeError); waiting on
        the process sentinels as well turns a crashed emulator into one line naming the env.
        """
        self._send_to_workers(operation, send, *args, **kwargs)
        return self._receive_from_workers(operation, receive)

    def _send_to_workers(self, operation: str, send, *args, **kwargs) -> None:
        try:
            send(*args, **kwargs)
        except _PIPE_ERRORS as err:
            raise self._worker_died(operation) from err

    def _receive_from_workers(self, operation: str, receive):
        waiting = list(self.envs.parent_pipes)
        sentinels = {process.sentinel: i for i, process in enumerate(self.envs.processes)}
        while waiting:
            for ready in wait(waiting + list(sentinels)):
                if ready in sentinels:
                    if self.envs.parent_pipes[sentinels.pop(ready)].poll(0):
                        continue  # it answered, then exited: gymnasium reports its error
                    raise self._worker_died(operation)
                waiting.remove(ready)
        try:
            with warnings.catch_warnings():
                # Gymnasium warns with the worker's traceback before re-raising its error here;
                # the error itself (an EnvError from the env) already says what failed.
                warnings.filterwarnings("ignore", category=UserWarning, module="gymnasium.vector")
                return receive()
        except _PIPE_ERRORS as err:
            raise self._worker_died(operation) from err

    def _worker_died(self, operation: str) -> EnvError:
        """A worker process vanished mid-call (the emulator crashed or was killed): name it."""
        processes = self.envs.processes
        for process in processes:
            process.join(timeout=0.5)
        dead = [f"env {i} (exit code {p.exitcode})" for i, p in enumerate(processes) if p.exitcode is not None]
        return EnvError(
            f"an env worker process died during {operation}: {', '.join(dead) or 'unknown worker'}; "
            "the emulator crashed or was killed"
        )

    def _note_emulator_processes(self) -> None:
        """Remember the processes each worker started (ViZDoom's engine runs as a child of its
        worker), so that closing after a worker died can stop its orphaned engine too."""
        self._emulators = {i: _child_pids(p.pid) for i, p in enumerate(self.envs.processes) if p.pid}

    def close(self):
        envs = self.envs
        if isinstance(envs, gym.vector.AsyncVectorEnv) and not envs.closed and any(
            p.exitcode is not None for p in envs.processes
        ):
            orphans = [pid for i, p in enumerate(envs.processes) if p.exitcode is not None
                       for pid in getattr(self, "_emulators", {}).get(i, ())]
            _close_with_dead_workers(envs)
            _kill_orphans(orphans)
        else:
            envs.close()


def _close_with_dead_workers(envs: gym.vector.AsyncVectorEnv, timeout: float = 10.0) -> None:
    """Close an async vector env one of whose workers has died.

    Gymnasium's own close waits for a reply from every worker, which a dead one never sends (and
    raises EOFError even with ``terminate=True``). The live workers are asked to close, so their
    emulators shut down cleanly; any that do not answer within ``timeout`` are terminated.
    """
    for pipe, process in zip(envs.parent_pipes, envs.processes):
        if process.exitcode is not None or pipe is None or pipe.closed:
            continue
        try:
            while pipe.poll(0):  # a reply to the interrupted call, if it came
                pipe.recv()
            pipe.send(("close", None))
            if pipe.poll(timeout):
                pipe.recv()
        except _PIPE_ERRORS:
            pass
    for pipe, process in zip(envs.parent_pipes, envs.processes):
        process.join(timeout=timeout)
        if process.is_alive():
            process.terminate()
            process.join()
        if pipe is not None:
            pipe.close()
    envs.closed = True


def _make_in_directory(directory: str, env_fn):
    """Build a worker's env in the trainer's directory, deaf to stop signals.

    Ctrl-C reaches the whole foreground process group and a scheduler's SIGTERM often does too;
    the trainer handles both (it saves a checkpoint, then closes its workers). A worker that
    died of the same signal first would turn that stop into broken pipes and tracebacks. A
    Python-level handler, unlike SIG_IGN, is reset by exec, so an emulator the worker starts
    (ViZDoom's engine) still stops on these signals.
    """
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _ignore_stop_signal)
    os.chdir(directory)
    return env_fn()


def _ignore_stop_signal(signum, frame) -> None:
    """The trainer decides when its workers stop (see `_make_in_directory`)."""


def _child_pids(pid: int) -> list[tuple[int, str]]:
    """Direct children of ``pid`` as (pid, start time) pairs: Linux /proc, empty elsewhere.
    The start time tells a process apart from a later one that reuses its pid."""
    children = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as file:
                children += [(int(child), _start_time(int(child))) for child in file.read().split()]
    except OSError:
        pass
    return children


def _start_time(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[19]  # field 22, starttime


def _kill_orphans(processes: list[tuple[int, str]]) -> None:
    """SIGKILL the emulators of dead workers that still run as orphans; a process that merely
    reuses one of their pids has another start time and is left alone."""
    for pid, started in processes:
        try:
            if _start_time(pid) == started:
                os.kill(pid, signal.SIGKILL)
        except (OSError, IndexError):
            pass


def _from_every_env(info: dict[str, Any], key: str, problem: str) -> Any:
    """``info[key]`` as gymnasium's vector env stacks it, refused with an `EnvError` naming the envs
    that left it out (``problem`` says what the envs were asked for)."""
    values, present = info.get(key), info.get("_" + key)
    if values is None or present is None or not np.all(present):
        missing = "all" if present is None else np.flatnonzero(~np.asarray(present)).tolist()
        raise EnvError(f"the envs {problem} in info[{key!r}] (envs: {missing})")
    return values


def _unstack_record(records: Any, index: int) -> dict[str, Any]:
    """Gymnasium stacks per-env info dicts into dicts of arrays; take env ``index`` back out."""
    if isinstance(records, dict):
        return {k: _scalar(v[index]) for k, v in records.items() if not k.startswith("_")}
    return dict(records[index])


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value
