"""Atari (ALE) behind the `VecEnv` contract, with DeepMind's preprocessing, on two backends.

Preprocessing (Mnih et al. 2015, "Human-level control through deep RL", Methods; evaluation
conventions from Machado et al. 2018, "Revisiting the ALE"):

* up to ``noop_max`` = 30 no-op frames at the start of a game, so that a deterministic emulator
  does not always start in the same state (Mnih et al. 2015, "no-op starts");
* each agent action is repeated for 4 emulator frames (frame skip 4) and the observation is the
  pixel-wise max of the last two of them, because some Atari sprites are drawn only on odd or
  even frames (Mnih et al. 2015);
* the max-pooled frame is converted to grey (ALE's palette luminance) and resized to 84x84 with
  area interpolation; the last 4 of those are stacked: observations are uint8 (4, 84, 84);
* FIRE is pressed after each reset in games whose minimal action set contains FIRE (Breakout
  does not serve the ball otherwise);
* a game is cut after 108,000 emulator frames, i.e. 27,000 agent steps (30 minutes of play),
  and that cut is a *truncation*, not a termination (Machado et al. 2018 on time limits;
  Pardo et al. 2018, "Time limits in RL");
* ``training=True``: a lost life ends the *training episode* (``terminated``) but not the game;
  the next episode continues the same game after a few no-op frames and FIRE (the "episodic
  life" trick of Mnih et al. 2015, as in OpenAI Baselines' ``EpisodicLifeEnv``), and rewards
  are clipped to their sign (Mnih et al. 2015), so one learning rate fits every game;
* ``training=False``: full games, raw scores (Machado et al. 2018). FIRE is pressed at the
  start of a game only, not after a lost life (as on EnvPool without ``episodic_life``): the
  agent serves the ball itself. A greedy agent trained with episodic life may never have needed
  to, and can then idle until the frame cap; evaluate with a small epsilon or a sampled policy.

Whatever the mode, the step that ends a *game* (game over or the time cut) carries the game's
record, ``{"return": raw unclipped score, "length": agent steps, "frames": agent steps * 4}``,
so the episode log always holds the raw full-game score that papers report. ``frames`` uses the
papers' convention (agent steps times the frame skip, the unit of "200M frames"); both backends
compute it the same way. Rewards earned during the reset no-ops are not part of the score on
either backend (EnvPool drops them, the gymnasium backend mirrors that).

Sticky actions: ``repeat_action_probability`` is 0.25 when ``sticky_actions`` else 0.0 on both
backends, whichever id form names the game: the id picks the *game* only. (ALE's own
``ALE/*-v5`` registrations default to 0.25 and ``*NoFrameskip-v4`` to 0.0; a reported score
should say which was used, Machado et al. 2018, section 5.)

Backends, same semantics:

* ``"gymnasium"``: `DeepMindAtari`, one single env that drives ``ale_py``'s ALE interface
  directly (no wrapper stack on the hot path), vectorised by `envs.vec.GymVecEnv` in forked
  workers with ``SAME_STEP`` autoreset.
* ``"envpool"``: `EnvPoolAtariVecEnv` over ``envpool.make(..., env_type="gymnasium")``, whose C++
  workers do the same preprocessing. `DeepMindAtari` mirrors EnvPool's reset rules (how many
  no-ops, FIRE, what the frame stack holds after a life loss) so that a run does not change
  meaning when the backend does.
* ``"auto"``: EnvPool when it imports, the platform is Linux and it knows the game; otherwise
  gymnasium.
"""

from __future__ import annotations

import functools
import importlib
import sys
from dataclasses import dataclass, fields
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
import torch

from pixelplay.envs.errors import EnvError, MissingDependencyError
from pixelplay.envs.spec import ATARI, EnvSpec
from pixelplay.envs.vec import EPISODE_INFO_KEY, GymVecEnv, VecEnv

__all__ = [
    "BACKENDS",
    "AtariSettings",
    "atari_spec",
    "FRAME_SKIP",
    "DeepMindAtari",
    "EnvPoolAtariVecEnv",
    "make_atari_env",
    "make_atari_vec",
]

FRAME_SKIP = 4
"""Emulator frames per agent step (Mnih et al. 2015). Fixed: every preset and the frame cap assume it."""

ALE_FPS = 60
"""The Atari 2600's frame rate (NTSC), the rate videos of full frames play at."""

MAX_EPISODE_FRAMES = 108_000
"""30 minutes of play at 60 Hz: the per-game cap of the standard protocol (Machado et al. 2018)."""

BACKENDS = ("auto", "gymnasium", "envpool")

_NOOP = 0
"""Index of NOOP in every ALE action set; the action sent with EnvPool's autoreset step (ignored)."""

_ENVPOOL_HINT = "pip install 'pixelplay[envpool]' (Linux only), or use --env-backend gymnasium"


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AtariSettings:
    """The preprocessing options both backends take (see the module docstring), checked once."""

    training: bool = True
    """episodic life and sign-clipped rewards (training) or full games with raw scores (evaluation)"""
    sticky_actions: bool = False
    """repeat the previous action with probability 0.25 (Machado et al. 2018)"""
    noop_max: int = 30
    """most no-op frames at a game's start (0 and 1 both give one reset frame, as EnvPool runs one)"""
    max_episode_frames: int = MAX_EPISODE_FRAMES
    """per-game cap in emulator frames, rounded down to whole agent steps (a truncation)"""
    frame_stack: int = 4
    """frames stacked along the channel axis"""
    screen_size: int = 84
    """observation height and width"""
    render_every_frame: bool = False
    """keep the RGB screen of every emulator frame of a step (`DeepMindAtari.step_frames`), for
    videos at the ALE's 60 fps; the game is the same. Gymnasium backend only (EnvPool has no
    screens); off (default), a step costs nothing more"""

    def __post_init__(self) -> None:
        if self.noop_max < 0:
            raise EnvError(f"noop_max must be >= 0, got {self.noop_max}")
        if self.frame_stack < 1 or self.screen_size < 1:
            raise EnvError(
                f"frame_stack and screen_size must be positive, got {self.frame_stack} and {self.screen_size}"
            )
        if self.max_episode_frames < FRAME_SKIP:
            raise EnvError(f"max_episode_frames must be at least {FRAME_SKIP}, got {self.max_episode_frames}")

    @property
    def max_episode_steps(self) -> int:
        return self.max_episode_frames // FRAME_SKIP

    @property
    def repeat_action_probability(self) -> float:
        return 0.25 if self.sticky_actions else 0.0


def atari_settings(**options: Any) -> AtariSettings:
    """`AtariSettings` from keyword options, refusing unknown names with a clear `EnvError`."""
    known = {f.name for f in fields(AtariSettings)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise EnvError(f"unsupported Atari option(s) {', '.join(unknown)}; supported: {', '.join(sorted(known))}")
    return AtariSettings(**options)


def atari_spec(name: str, game_id: str, **options: Any) -> EnvSpec:
    """The `EnvSpec` of an ALE game under these options (reads the ROM's minimal action set)."""
    settings = atari_settings(**options)
    game = _ale_game(game_id)
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner on stdout
    ale = ale_py.ALEInterface()
    ale.loadROM(ale_py.roms.get_rom_path(game))
    eval_cap = settings.max_episode_steps
    return EnvSpec(
        name=name,
        family=ATARI,
        target=game_id,
        frame_skip=FRAME_SKIP,
        frames_per_second=ALE_FPS,
        action_names=tuple(action.name for action in ale.getMinimalActionSet()),
        max_train_steps=eval_cap,
        max_eval_steps=eval_cap,
        episode_columns=("return", "length", "frames"),
    )


def make_atari_vec(
    game_id: str,
    num_envs: int,
    seed: int,
    device: torch.device | str = "cpu",
    *,
    backend: str = "auto",
    **options: Any,
) -> VecEnv:
    """``num_envs`` copies of an ALE game behind one `VecEnv`; env ``i`` is seeded with ``seed + i``.

    ``game_id`` is an ALE id (``ALE/Breakout-v5``, ``BreakoutNoFrameskip-v4``); only the game
    it names matters (see the module docstring for stickiness). ``options`` are `AtariSettings`'
    fields. Raises `EnvError` for an unknown game or a bad option and `MissingDependencyError`
    when ``backend="envpool"`` but EnvPool is not installed.
    """
    if backend not in BACKENDS:
        raise EnvError(f"unknown env backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    if num_envs < 1:
        raise EnvError(f"num_envs must be at least 1, got {num_envs}")
    settings = atari_settings(**options)
    game = _ale_game(game_id)

    if settings.render_every_frame:
        if backend == "envpool":
            raise EnvError("render_every_frame needs the gymnasium backend (EnvPool returns no screens)")
        backend = "gymnasium"
    if backend in ("auto", "envpool"):
        envpool = _import_envpool(required=backend == "envpool")
        if envpool is not None:
            task = _envpool_task(envpool, game)
            if task is not None:
                return EnvPoolAtariVecEnv(task, num_envs, seed, device, settings)
            if backend == "envpool":
                raise EnvError(
                    f"EnvPool has no Atari task for '{game_id}' (game '{game}'); use --env-backend gymnasium"
                )

    env_fns = [functools.partial(DeepMindAtari, game_id, seed + i, settings) for i in range(num_envs)]
    return GymVecEnv(env_fns, device, frame_stack=settings.frame_stack)


def make_atari_env(game_id: str, seed: int | None = None, **options: Any) -> DeepMindAtari:
    """One preprocessed single env (the gymnasium backend's unit; also what recording plays).

    ``options`` are `AtariSettings`' fields; the game id is checked first for a clear error."""
    _ale_game(game_id)
    return DeepMindAtari(game_id, seed, atari_settings(**options))


def _register_ale() -> None:
    gym.register_envs(ale_py)  # makes the ALE/* and *NoFrameskip-v4 ids known to gym.make


def _ale_game(game_id: str) -> str:
    """The ALE game name (``breakout``) behind a gymnasium id, or `EnvError`.

    Checked in the parent process: a failure inside a forked worker would surface as an
    unreadable traceback from the vector env.
    """
    _register_ale()
    try:
        spec = gym.spec(game_id)
    except gym.error.Error as exc:
        raise EnvError(
            f"unknown Atari game '{game_id}': {exc} (ids look like ALE/Pong-v5 or PongNoFrameskip-v4)"
        ) from exc
    game = spec.kwargs.get("game")
    if not isinstance(game, str) or "ale_py" not in str(spec.entry_point):
        raise EnvError(f"'{game_id}' is a gymnasium env but not an Atari (ALE) game")
    return game


def _import_envpool(required: bool):
    """The ``envpool`` module, or None (``auto`` on a platform or install without it)."""
    if not required and not sys.platform.startswith("linux"):
        return None
    try:
        return importlib.import_module("envpool")
    except ImportError as exc:
        if required:
            raise MissingDependencyError(
                f"env backend 'envpool' needs EnvPool, which is not installed: {_ENVPOOL_HINT}"
            ) from exc
        return None


def _envpool_task(envpool, game: str) -> str | None:
    """EnvPool's task id for an ALE game name (``montezuma_revenge`` -> ``MontezumaRevenge-v5``),
    named the way EnvPool registers its ROMs; None when its Atari ROM list lacks the game."""
    try:
        from envpool.atari.registration import atari_game_list
    except ImportError:
        atari_game_list = None
    if atari_game_list is not None and game not in atari_game_list:
        return None
    task = "".join(part.capitalize() for part in game.split("_")) + "-v5"
    return task if task in envpool.list_all_envs() else None


# --------------------------------------------------------------------------------------------
# Gymnasium backend: one preprocessed game per env
# --------------------------------------------------------------------------------------------


class DeepMindAtari(gym.Env):
    """An ALE game with DeepMind preprocessing as one gymnasium env.

    It drives ``ale_py``'s ``ALEInterface`` itself instead of stacking five gymnasium wrappers,
    which saves their per-frame Python cost and lets the reset rules mirror EnvPool's exactly:

    * a *real* reset (new game) runs ``k - fire`` no-op frames with ``k`` uniform in
      ``[1, noop_max]``, then FIRE where the game has it, and fills the whole frame stack with
      the first frame;
    * after a lost life in training mode the game goes on: the same no-ops and FIRE, and the
      new frame is pushed onto the stack like any other (EnvPool's behaviour);
    * rewards of those reset frames are not counted (EnvPool's behaviour).

    ``step`` returns ``info = {"lives", "raw_reward"}``, plus the game's record under
    `envs.vec.EPISODE_INFO_KEY` on the step that ends the game. With ``render_every_frame``,
    `step_frames` gives every emulator frame's RGB screen of the last step (videos at 60 fps).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": ALE_FPS}
    render_mode = "rgb_array"

    def __init__(self, game_id: str, seed: int | None = None, settings: AtariSettings = AtariSettings()):
        import cv2

        _register_ale()
        # frameskip=1: the skip and max-pool happen here. max_num_frames_per_episode=0 turns
        # off ALE's own cap (108,000 frames for these ids), which would end the game a few
        # no-op frames before our agent-step cap and call it a game over.
        self._outer = gym.make(
            game_id,
            frameskip=1,
            repeat_action_probability=settings.repeat_action_probability,
            full_action_space=False,
            max_num_frames_per_episode=0,
        )
        self._atari = self._outer.unwrapped
        self._ale = self._atari.ale
        self._action_set = list(self._atari._action_set)
        # EnvPool presses FIRE at reset when the game's action set has it (envpool issue #221).
        self._has_fire = ale_py.Action.FIRE in self._action_set
        self._resize = functools.partial(
            cv2.resize, dsize=(settings.screen_size, settings.screen_size), interpolation=cv2.INTER_AREA
        )

        self.training = settings.training
        self.noop_max = max(1, settings.noop_max)  # EnvPool always runs at least one reset frame
        self.max_episode_steps = settings.max_episode_steps
        size = settings.screen_size
        self.observation_space = gym.spaces.Box(0, 255, (settings.frame_stack, size, size), np.uint8)
        self.action_space = gym.spaces.Discrete(len(self._action_set))

        height, width = self._ale.getScreenDims()
        self._frames = np.zeros((2, height, width), np.uint8)  # last two frames of a skip
        self._stack = np.zeros(self.observation_space.shape, np.uint8)
        self._every_frame = settings.render_every_frame
        self._step_frames: list[np.ndarray] = []
        self._seed = seed  # applied at the first reset that does not bring its own
        self._life_lost = False  # the last step ended a training episode but not the game
        self._lives = 0
        self._return = 0.0
        self._steps = 0

    @property
    def ale(self):
        """The emulator (for screens, RAM, recording)."""
        return self._ale

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and self._seed is not None:
            seed = self._seed
        self._seed = None
        ale = self._ale
        if seed is not None:
            # Seeds ALE (sticky actions) and the no-op sampler, reloads the ROM, starts a game.
            self._atari.reset(seed=seed)
            new_game = True
        elif self._life_lost:
            new_game = False  # episodic life: keep playing the same game
        else:
            ale.reset_game()
            new_game = True
        self._life_lost = False

        noops = int(self._atari.np_random.integers(1, self.noop_max + 1)) - int(self._has_fire)
        for _ in range(noops):
            ale.act(ale_py.Action.NOOP)
            if ale.game_over(with_truncation=False):
                ale.reset_game()
                new_game = True
        if self._has_fire:
            ale.act(ale_py.Action.FIRE)
        ale.getScreenGrayscale(self._frames[0])
        frame = self._resize(self._frames[0])
        if new_game:
            self._stack[:] = frame
            self._return = 0.0
            self._steps = 0
        else:
            self._push(frame)
        self._lives = ale.lives()
        if self._every_frame:
            self._step_frames = [ale.getScreenRGB()]
        return self._stack.copy(), {"lives": self._lives, "raw_reward": 0.0}

    def step(self, action):
        ale = self._ale
        frames = self._frames
        act = self._action_set[int(action)]
        reward = 0.0
        game_over = False
        if self._every_frame:
            self._step_frames = screens = []
        for k in range(FRAME_SKIP):
            reward += ale.act(act)
            if self._every_frame:
                screens.append(ale.getScreenRGB())
            if k >= FRAME_SKIP - 2:
                ale.getScreenGrayscale(frames[k - FRAME_SKIP + 2])
            if ale.game_over(with_truncation=False):
                game_over = True
                break
        if k == FRAME_SKIP - 1:
            np.maximum(frames[0], frames[1], out=frames[0])
        # A game that ends before the last frame of the skip shows frames[0] as it stands, as
        # EnvPool does: the frame it ended on, or the previous observation's frame when it
        # ended in the first two. Only the final observation of a finished game is affected,
        # and nothing bootstraps from that.
        self._push(self._resize(frames[0]))

        self._steps += 1
        self._return += reward
        lives = ale.lives()
        # As EnvPool: losing the last life is a game over, not a life loss.
        life_lost = self.training and 0 < lives < self._lives
        self._lives = lives
        truncated = self._steps >= self.max_episode_steps
        info: dict[str, Any] = {"lives": lives, "raw_reward": reward}
        if game_over or truncated:
            info[EPISODE_INFO_KEY] = {
                "return": self._return,
                "length": self._steps,
                "frames": self._steps * FRAME_SKIP,
            }
            self._life_lost = False
        else:
            self._life_lost = life_lost
        if self.training:
            reward = float(np.sign(reward))  # Mnih et al. 2015: clip rewards to {-1, 0, 1}
        return self._stack.copy(), reward, game_over or life_lost, truncated, info

    def _push(self, frame: np.ndarray) -> None:
        self._stack[:-1] = self._stack[1:]
        self._stack[-1] = frame

    def step_frames(self) -> list[np.ndarray]:
        """The RGB screens (210, 160, 3) of the last `step`, one per emulator frame it played,
        oldest first (``render_every_frame=True``), or the one screen of the last `reset` (after
        its no-ops and FIRE). Without the option: only `render`'s screen.

        A game's frames, its reset's and then each step's, are 1 + the emulator frames its steps
        played: 4 per step, fewer in a step that ends the game early (ALE's episode frame
        number counts the same frames, plus the reset's no-ops).
        """
        if self._every_frame:
            return list(self._step_frames)
        return [self.render()]

    def render(self) -> np.ndarray:
        """The ALE screen as (210, 160, 3) uint8 RGB: what a person sees, before preprocessing."""
        return self._ale.getScreenRGB()

    def close(self):
        self._outer.close()


# --------------------------------------------------------------------------------------------
# EnvPool backend
# --------------------------------------------------------------------------------------------


class EnvPoolAtariVecEnv(VecEnv):
    """EnvPool's Atari pool, converted to ``SAME_STEP`` autoreset and full-game records.

    EnvPool resets a finished env on its *next* step: it ignores that step's action, runs
    ``Reset()`` and returns the first observation with reward 0. With ``episodic_life`` that
    ``Reset()`` continues the game after a lost life (no-ops, FIRE) and starts a new one only at
    game over or the time cut. An explicit ``reset(env_id)``, by contrast, always starts a new
    game (measured with envpool 1.2.5: lives back to 5), so it must not be used after a life
    loss. We therefore step *only the finished envs* once more, right away
    (``step(noop, env_id=done_ids)``): EnvPool takes that step as its autoreset, and its result
    is the first observation of the next episode, returned in the same call as the end of the
    last one. Other envs do not move. That extra call happens on episode ends only; the common
    step is one EnvPool call plus a few vectorised numpy operations.

    EnvPool's ``info["reward"]`` (raw reward) and ``info["terminated"]`` (game over, as opposed
    to a lost life) give the full-game records. Its ``max_episode_steps`` counts agent steps of
    the whole game, not counting reset no-ops, like `DeepMindAtari`.
    """

    def __init__(
        self,
        task: str,
        num_envs: int,
        seed: int,
        device: torch.device | str = "cpu",
        settings: AtariSettings = AtariSettings(),
    ):
        self.task = task
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.training = settings.training
        self.frame_stack = settings.frame_stack
        size = settings.screen_size
        self._options = dict(
            env_type="gymnasium",
            num_envs=num_envs,
            batch_size=num_envs,  # synchronous: every step returns every env, in env order
            episodic_life=settings.training,
            reward_clip=settings.training,
            noop_max=max(1, settings.noop_max),  # EnvPool samples from [1, noop_max]; 0 is undefined there
            frame_skip=FRAME_SKIP,
            stack_num=settings.frame_stack,
            img_height=size,
            img_width=size,
            gray_scale=True,
            repeat_action_probability=settings.repeat_action_probability,
            max_episode_steps=settings.max_episode_steps,
            use_fire_reset=True,
            full_action_space=False,
        )
        self._pool = self._make_pool(seed)
        self.single_observation_space = gym.spaces.Box(0, 255, (settings.frame_stack, size, size), np.uint8)
        self.single_action_space = gym.spaces.Discrete(int(self._pool.action_space.n))
        self._env_ids = np.arange(num_envs, dtype=np.int32)
        self._return = np.zeros(num_envs, np.float64)
        self._length = np.zeros(num_envs, np.int64)

    def _make_pool(self, seed: int):
        import envpool

        options = dict(self._options)
        config = envpool.make_spec(self.task).config
        if "env_seed" in getattr(config, "_fields", ()):
            # Env i gets seed + i, as on the gymnasium backend.
            options["env_seed"] = [seed + i for i in range(self.num_envs)]
        options["seed"] = seed
        self._seed = seed
        return envpool.make(self.task, **options)

    def _reset(self, seed):
        if seed is not None and seed != self._seed:
            # EnvPool seeds only at construction; a new seed means a new pool (milliseconds).
            self._pool.close()
            self._pool = self._make_pool(seed)
        obs, info = self._pool.reset()
        obs = self._in_env_order(obs, info["env_id"])
        self._return[:] = 0.0
        self._length[:] = 0
        return obs

    def _send(self, actions):
        # EnvPool's own threads run the step; `_receive` collects it (``step`` is send + recv).
        self._pool.send(np.asarray(actions, dtype=np.int32).reshape(self.num_envs), self._env_ids)

    def _receive(self, actions):
        obs, reward, terminated, truncated, info = self._pool.recv()
        env_id = info["env_id"]
        if not np.array_equal(env_id, self._env_ids):  # never seen in sync mode; cheap to check
            order = np.argsort(env_id)
            obs, reward, terminated, truncated = (
                obs[order],
                reward[order],
                terminated[order],
                truncated[order],
            )
            info = {k: v[order] for k, v in info.items() if isinstance(v, np.ndarray)}
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        self._return += info["reward"]
        self._length += 1

        done = terminated | truncated
        final_obs = obs
        episodes: list[dict[str, Any]] = []
        if done.any():
            final_obs = obs.copy()
            done_ids = np.flatnonzero(done).astype(np.int32)
            game_over = done & ((np.asarray(info["terminated"]) != 0) | truncated)
            for i in np.flatnonzero(game_over):
                episodes.append(
                    {
                        "env": int(i),
                        "return": float(self._return[i]),
                        "length": int(self._length[i]),
                        "frames": int(self._length[i]) * FRAME_SKIP,
                    }
                )
            self._return[game_over] = 0.0
            self._length[game_over] = 0
            # EnvPool's own autoreset, triggered now for the finished envs only (see class doc).
            first_obs, _, _, _, reset_info = self._pool.step(
                np.full(done_ids.size, _NOOP, np.int32), done_ids
            )
            obs[np.asarray(reset_info["env_id"])] = first_obs
        return obs, reward, terminated, truncated, final_obs, episodes

    def _in_env_order(self, obs: np.ndarray, env_id: np.ndarray) -> np.ndarray:
        if np.array_equal(env_id, self._env_ids):
            return obs
        ordered = np.empty_like(obs)
        ordered[env_id] = obs
        return ordered

    def close(self):
        self._pool.close()
