"""ViZDoom scenarios (and deathmatch against the built-in bots) through ViZDoom's own API.

Not ViZDoom's gymnasium wrapper (it flags a timeout as both terminated and truncated and returns
Dict observations) and not EnvPool (it ignores the scenarios' own rewards and returns no reward on
the step that ends an episode, so the kill that ends a ``basic`` episode is lost). Each env is one
`DoomEnv`, a plain ``gymnasium.Env`` that follows pixelplay's conventions:

* observation: uint8 (C, H, W), the last ``frame_stack`` frames stacked along the channel axis,
  oldest first (C = frame_stack for grey, 3 * frame_stack for RGB);
* action: ``Discrete(len(scenario.actions))``, each action a combination of ViZDoom buttons held
  for ``frame_skip`` tics;
* reward: ``reward_scale * scenario reward + shaping`` while training; the raw scenario reward when
  ``training=False`` (`step_reward`). For ``deathmatch`` the scenario reward is the change of the
  frag count (kills minus suicides: the ViZDoom competitions' score);
* ``terminated``: death or the scenario's own end; ``truncated``: the episode timeout only (in a
  deathmatch the player respawns, so a match only ever ends truncated). ViZDoom has no screen
  once an episode has finished, so the observation of that last step repeats the last frames;
* on the step that ends an episode, ``info[EPISODE_INFO_KEY]`` holds the raw return, the length
  in agent steps and the DOOM table statistics (`envs.doom_stats`);
* game features (option ``game_features``, off by default): ``info[GAME_FEATURES_INFO_KEY]``
  from ``reset`` and every ``step`` holds float32 (F,) labels of the observation returned, 1.0
  where an object of that kind (`GAME_FEATURES`: an enemy, a medikit...) is visible in its
  newest frame, read from ViZDoom's labels buffer: the training targets of Lample & Chaplot's
  "game feature augmentation" (AAAI 2017). See `GameFeatureLabeller`;
* a teacher's advice (option ``teacher``, off by default): ``info[ADVICE_INFO_KEY]`` from
  ``reset`` and every ``step`` holds the actions a scripted teacher advises for the observation
  returned, as a bitmask over the action set, 0 where it has none (`envs.doom_teacher`: the
  label aimer, for kickstarting).

The scenarios are data in `envs.scenarios`; `DoomSettings` is one env's scenario as overridden by
the caller's options, checked once. `make_doom_vec` (called by `envs.make_vec_env`) puts
``num_envs`` envs behind a `GymVecEnv`. The eval harness builds single `DoomEnv` objects (through
`envs.make_env`) for native-resolution video (``render_native``; ``render_every_frame`` keeps every tic's
screen, `DoomEnv.step_frames`, for videos at 35 fps), engine demos of single-player
scenarios (``record_lmp``), several agents in one match (``players``/``join``/``port``) and a
human at the keyboard (``human=True``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import itertools
import math
import os
import re
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from pixelplay.envs.doom_human import AGENT_SETTINGS, HUMAN_CONFIG_FILE, console_commands
from pixelplay.envs.doom_stats import DoomStats, DoomStatsTracker
from pixelplay.envs.errors import EnvError, MissingDependencyError
from pixelplay.envs.scenarios import (
    DEATHMATCH_ARGS,
    DEFAULT_PORT,
    SCENARIOS,
    TICRATE,
    DoomScenario,
    get_scenario,
    scenario_name,
)
from pixelplay.envs.spec import DOOM, EnvSpec
from pixelplay.envs.vec import ADVICE_INFO_KEY, EPISODE_INFO_KEY, GAME_FEATURES_INFO_KEY, GymVecEnv

__all__ = [
    # The scenario table lives in envs.scenarios; these names stay importable from here.
    "DEATHMATCH_ARGS",
    "DEFAULT_PORT",
    "SCENARIOS",
    "TICRATE",
    "DoomScenario",
    "get_scenario",
    # This module's own.
    "DoomEnv",
    "DoomSettings",
    "GAME_FEATURES",
    "GAME_FEATURE_OBJECTS",
    "GameFeatureLabeller",
    "MIN_VISIBLE_PIXELS",
    "OPTIONS",
    "doom_spec",
    "make_doom_vec",
    "step_reward",
]


# ---------------------------------------------------------------------------- game features
GAME_FEATURES: tuple[str, ...] = ("enemy", "health", "weapon", "ammo")
"""The game features an env can label its observations with (option ``game_features``): the
ones of Lample & Chaplot 2017 ("Playing FPS Games with Deep Reinforcement Learning", section
"Game feature augmentation"; glample/Arnold, ``src/doom/labels.py``). Each is 1.0 when at least
one object of its kind (`GAME_FEATURE_OBJECTS`) shows at least `MIN_VISIBLE_PIXELS` pixels."""

GAME_FEATURE_OBJECTS: dict[str, frozenset[str]] = {
    # Other players (the built-in bots are DoomPlayer objects too) and monsters: the Doom II
    # monster classes, Arnold's scripted marines and ViZDoom's own (defend_the_center's
    # MarineChainsawVzd). Any object that ViZDoom >= 1.3 puts in the "Player" or "Monster"
    # category counts as well (`ENEMY_CATEGORIES`), so a scenario's custom monster is not missed.
    # Corpses (DeadDoomPlayer, DeadZombieman...) are "Gore", not enemies.
    "enemy": frozenset({
        "DoomPlayer",
        "Zombieman", "ShotgunGuy", "ChaingunGuy", "WolfensteinSS", "DoomImp", "Demon", "Spectre",
        "LostSoul", "Cacodemon", "HellKnight", "BaronOfHell", "Arachnotron", "PainElemental",
        "Revenant", "Fatso", "Archvile", "SpiderMastermind", "Cyberdemon",
        "MarineBFG", "MarineBerserk", "MarineChaingun", "MarineChainsaw", "MarineFist",
        "MarinePistol", "MarinePlasma", "MarineRailgun", "MarineRocket", "MarineSSG",
        "MarineShotgun", "MarineChainsawVzd",
    }),
    # Pickups that restore health: medikits and stimpacks (health_gathering_supreme's are
    # CustomMedikit; its Poison vials, also in ViZDoom's "Health" category, are not). Arnold also
    # counts armour and health bonuses here; armour is not health, so they are left out.
    "health": frozenset({"Medikit", "Stimpack", "CustomMedikit"}),
    # Weapon pickups (Arnold's list).
    "weapon": frozenset({
        "Pistol", "Shotgun", "SuperShotgun", "Chaingun", "RocketLauncher", "PlasmaRifle", "BFG9000",
        "Chainsaw",
    }),
    # Ammo pickups (Arnold's list) and the backpack, which holds ammo of every kind.
    "ammo": frozenset({
        "Clip", "ClipBox", "Shell", "ShellBox", "RocketAmmo", "RocketBox", "Cell", "CellPack", "Backpack",
    }),
}
"""ViZDoom object names (``Label.object_name``, the actor class) per game feature."""

ENEMY_CATEGORIES = frozenset({"Player", "Monster"})
"""``Label.object_category`` values (ViZDoom >= 1.3) that count as an ``enemy`` whatever the name."""

SELF_CATEGORY = "Self"
PLAYER_SPRITE_LABEL = 255
"""The player's own objects are in the labels too (its weapon sprite, ~800 pixels of a 160x120
frame, in every frame), and never count: ViZDoom >= 1.3 files them under the "Self" category,
and ViZDoom gives the weapon sprite the label value 255, other objects values below it
(viz_labels.cpp), which is how Arnold tells the player's own DoomPlayer from the others
(``value != 255``) where there are no categories."""

MIN_VISIBLE_PIXELS = 4
"""An object counts as visible when at least this many of its pixels are on a 160x120 screen
(scaled with the screen's area at other resolutions: 64 at 640x480). ViZDoom also lists objects
whose sprite is hidden behind walls or other sprites, with 0 pixels in the labels buffer (in
deathmatch on map02, most of the bots it lists), so being listed is not being visible. Arnold
reads its training features from the USER1 game variable of its own scenario files; its labels-
buffer variant (glample/Arnold ``src/doom/utils.py``) counts any pixel (``np.any``). 4 pixels,
about 1.5 pixels of an 84x84 observation, keeps out a speck that the agent could not see."""

_REFERENCE_SCREEN = 160 * 120


class GameFeatureLabeller:
    """Turns a ViZDoom state's labels into the game-feature labels of its frame.

    ``labeller(state.labels, state.labels_buffer)`` is float32 (F,), one entry per name of
    ``features`` in that order: 1.0 when some object of that kind (`GAME_FEATURE_OBJECTS`), not
    the player's own, covers at least `MIN_VISIBLE_PIXELS` pixels of the labels buffer inside its
    bounding box, else 0.0. The game must run with ``set_labels_buffer_enabled(True)``.
    """

    def __init__(self, features: tuple[str, ...]):
        self.features = tuple(features)
        self._index = {}
        for i, feature in enumerate(self.features):
            for name in GAME_FEATURE_OBJECTS[feature]:
                self._index[name] = i
        self._enemy = self.features.index("enemy") if "enemy" in self.features else None

    def _feature_of(self, label) -> int | None:
        category = getattr(label, "object_category", None)  # ViZDoom >= 1.3
        if category == SELF_CATEGORY or label.value == PLAYER_SPRITE_LABEL:
            return None
        index = self._index.get(label.object_name)
        if index is None and category in ENEMY_CATEGORIES:
            index = self._enemy
        return index

    def __call__(self, labels, labels_buffer: np.ndarray | None) -> np.ndarray:
        found = np.zeros(len(self.features), np.float32)
        if labels_buffer is None:
            return found
        min_pixels = max(1, math.ceil(MIN_VISIBLE_PIXELS * labels_buffer.size / _REFERENCE_SCREEN))
        for label in labels:
            index = self._feature_of(label)
            if index is None or found[index]:
                continue
            x, y = max(int(label.x), 0), max(int(label.y), 0)
            box = labels_buffer[y : y + int(label.height), x : x + int(label.width)]
            if np.count_nonzero(box == label.value) >= min_pixels:
                found[index] = 1.0
        return found


def _game_features(value: Any) -> tuple[str, ...]:
    """The ``game_features`` option as a tuple of known names: a sequence of names, or one string
    of comma-separated names (as from a command line); order kept, it is the label columns'."""
    if value is None:
        return ()
    if isinstance(value, str):
        names = [name.strip() for name in value.split(",") if name.strip()]
    else:
        try:
            names = [str(name) for name in value]
        except TypeError:
            raise EnvError(f"game_features must be names among {', '.join(GAME_FEATURES)}, got {value!r}") from None
    unknown = [name for name in names if name not in GAME_FEATURES]
    if unknown:
        raise EnvError(
            f"unknown game feature(s) {', '.join(map(repr, unknown))}; known: {', '.join(GAME_FEATURES)}"
        )
    if len(set(names)) != len(names):
        raise EnvError(f"game_features names a feature twice: {names}")
    return tuple(names)


@dataclass(frozen=True, kw_only=True)
class DoomSettings:
    """One env's settings: its scenario's per-env fields as overridden by the caller's options.

    Every field after ``scenario`` is an option of `DoomEnv` and `make_doom_vec` under the same
    name (`OPTIONS`). `from_options` is the way in: it refuses unknown names and fills the fields
    a scenario decides (frame skip, frame size, timeout, map, bots...) from the scenario, so an
    env needs no second copy of them. ``__post_init__`` converts the values to the field types and
    refuses bad ones with one `EnvError` line, in the process that builds the env rather than in a
    vector-env worker.
    """

    scenario: DoomScenario
    """the scenario played (the env's first argument, not an option)"""

    # ---- The game and its frames (default: the scenario's)
    frame_skip: int
    """tics per agent step"""
    frame_stack: int
    """frames stacked per observation"""
    obs_size: tuple[int, int]
    """observation size (H, W); the option also takes one int for a square"""
    grey: bool
    """grey (True) or RGB (False) frames"""
    screen_resolution: str
    """engine resolution, e.g. RES_320X240 or 640x480"""
    reward_scale: float
    """training reward scale of the scenario reward"""
    episode_timeout: int | None
    """episode timeout in tics (0: none; None: the cfg's); default: the scenario's training or
    evaluation timeout"""
    episode_minutes: float | None = None
    """episode timeout in minutes of game time, instead of episode_timeout (which it sets)"""
    map: str | None
    """map name, e.g. map01 (None: the cfg's); default: the scenario's"""
    doom_skill: int | None = None
    """Doom skill 1-5 (None: the cfg's)"""
    game_features: tuple[str, ...] = ()
    """label each observation with these `GAME_FEATURES` (e.g. ("enemy",), or "enemy,health"),
    in ``info[GAME_FEATURES_INFO_KEY]``; empty (default): no labels, and no labels buffer"""
    teacher: str = "none"
    """a scripted teacher's advice for each observation (a bitmask of actions), in ``info[ADVICE_INFO_KEY]``
    (`envs.doom_teacher.TEACHERS`: aimer); none (default): no advice"""

    # ---- Rendering and recording
    render_native: bool = False
    """keep the full-resolution RGB screen for render()"""
    render_every_frame: bool = False
    """keep the screen of every tic of a step (`DoomEnv.step_frames`), not only the last: videos
    at the game's 35 tics per second. The game is the same (the held action is played one tic
    at a time: the same rewards, dynamics and episode ends; the frames differ only where the
    engine's renderer eases the weapon sprite's bob once per frame it draws, so the weapon can sit
    a few pixels apart); off (default), a step costs nothing more"""
    render_hud: bool | None = None
    """draw the status bar into the frames (None: the cfg's)"""
    window_visible: bool = False
    """show the game window (needs a display); always on for a human"""
    human: bool = False
    """a human plays in the window (ASYNC_SPECTATOR, in real time) with the keys of
    `envs.doom_human` (bound when the game starts); actions are ignored. Give it a playable
    screen_resolution (`envs.doom_human.HUMAN_SCREENS`) and render_hud=True"""
    record_lmp: str | None = None
    """record each episode as an engine demo (.lmp); {episode} and {rank} are filled in"""

    # ---- The multiplayer seat (deathmatch only, see _SEAT_OPTIONS)
    bots: int
    """deathmatch: number of built-in bots (default: the scenario's)"""
    players: int = 1
    """deathmatch: agents and humans in the match (>1: this env hosts them on `port`)"""
    join: bool = False
    """deathmatch: join the match hosted on 127.0.0.1:`port` instead of hosting"""
    port: int = DEFAULT_PORT
    """deathmatch: network port on 127.0.0.1"""
    connect_timeout: float = 60.0
    """deathmatch: seconds to wait for the other players"""
    player_name: str
    """deathmatch: the player's name in the match (default: AI, or AI<rank> for env rank > 0)"""
    colorset: int = 0
    """deathmatch: the player's colour (0-7)"""
    bots_readd: str = "respawn"
    """deathmatch host: when the bots are re-added (removebots, then addbot ``bots`` times):
    ``respawn``, at every new match and at each death of this player, before it respawns (glample/
    Arnold re-adds them at each respawn, in training and evaluation alike); ``match``, at every new
    match only"""

    @classmethod
    def from_options(
        cls, scenario: DoomScenario, *, training: bool = True, rank: int = 0, **options: Any
    ) -> DoomSettings:
        """The settings of env ``rank`` of ``scenario`` under ``options``.

        ``training`` picks the scenario's training or evaluation timeout. Unknown option names
        are refused naming the closest one, multiplayer options outside a deathmatch too.
        """
        for key in options:
            if key not in OPTIONS:
                close = difflib.get_close_matches(key, OPTIONS, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise EnvError(f"unsupported ViZDoom option '{key}'{hint} Supported: {', '.join(OPTIONS)}")
            if key in _SEAT_OPTIONS and not scenario.deathmatch:
                raise EnvError(
                    f"option '{key}' only applies to the deathmatch scenario (doom-deathmatch), "
                    f"not '{scenario.config.removesuffix('.cfg')}'"
                )
        timeout = scenario.episode_timeout
        if not training and scenario.eval_episode_timeout is not None:
            timeout = scenario.eval_episode_timeout
        defaults = dict(
            frame_skip=scenario.frame_skip,
            frame_stack=scenario.frame_stack,
            obs_size=scenario.obs_size,
            grey=scenario.grey,
            screen_resolution=scenario.screen_resolution,
            reward_scale=scenario.reward_scale,
            episode_timeout=None if "episode_minutes" in options else timeout,
            map=scenario.doom_map,
            bots=scenario.bots,
            player_name=f"AI{rank}" if rank else "AI",
        )
        return cls(scenario=scenario, **{**defaults, **options})

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:  # frozen: normalise once, here
            object.__setattr__(self, name, value)

        for kind, names in (
            (int, ("frame_skip", "frame_stack", "bots", "players", "port", "colorset")),
            (float, ("reward_scale", "connect_timeout")),
            (bool, ("grey", "render_native", "render_every_frame", "human", "join")),
            (str, ("screen_resolution", "player_name", "bots_readd")),
        ):
            for name in names:
                put(name, kind(getattr(self, name)))
        for name, kind in (("doom_skill", int), ("map", str), ("render_hud", bool)):
            if getattr(self, name) is not None:  # None: the cfg's
                put(name, kind(getattr(self, name)))
        put("record_lmp", str(self.record_lmp) if self.record_lmp else None)
        put("game_features", _game_features(self.game_features))
        from pixelplay.envs.doom_teacher import check_teacher  # it reads this module's label constants

        put("teacher", check_teacher(self.teacher))
        put("window_visible", self.human or bool(self.window_visible))

        if self.frame_skip < 1 or self.frame_stack < 1:
            raise EnvError("frame_skip and frame_stack must be at least 1")
        put("obs_size", _obs_size(self.obs_size))
        _resolution(_vizdoom(), self.screen_resolution)  # refuse a bad one here, not in a worker
        if self.record_lmp and self.scenario.deathmatch:
            # ViZDoom records a multiplayer game only through "-record" for the first match
            # (new_episode then hangs), and built-in bots desynchronise the replay (ViZDoom's
            # examples/python/record_multiplayer.py).
            raise EnvError(
                "record_lmp is not supported for deathmatch: ViZDoom cannot record multiplayer "
                "matches with bots faithfully; record video from render() (render_native=True) instead"
            )
        if self.doom_skill is not None and not 1 <= self.doom_skill <= 5:
            raise EnvError(f"doom_skill must be 1-5, got {self.doom_skill}")
        if self.map is not None and not re.fullmatch(r"[A-Za-z0-9_]+", self.map):
            raise EnvError(f"map must be a map name like map01, got {self.map!r}")

        if self.episode_minutes is not None:
            if self.episode_timeout is not None:
                raise EnvError("give episode_timeout (tics) or episode_minutes, not both")
            put("episode_timeout", round(float(self.episode_minutes) * 60 * TICRATE))
        if self.episode_timeout is not None:
            if int(self.episode_timeout) < 0:
                raise EnvError(f"episode timeout must be >= 0 tics, got {self.episode_timeout}")
            put("episode_timeout", int(self.episode_timeout))

        # Multiplayer: one process hosts (with the bots), the others join it.
        if self.bots < 0 or self.players < 1:
            raise EnvError(
                f"bots must be >= 0 and players >= 1, got bots={self.bots}, players={self.players}"
            )
        if self.bots + self.players > 16:
            raise EnvError(f"a Doom match holds at most 16 players, got {self.players} + {self.bots} bots")
        if self.bots_readd not in BOTS_READD:
            raise EnvError(f"bots_readd must be one of {', '.join(BOTS_READD)}, got {self.bots_readd!r}")
        if not 1 <= self.port <= 65535:
            raise EnvError(f"port must be 1-65535, got {self.port}")
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,16}", self.player_name):
            raise EnvError(f"player_name must be 1-16 letters, digits, _ or -, got {self.player_name!r}")
        if self.window_visible and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise MissingDependencyError(
                "a visible game window (window_visible / human) needs a display; none is set (DISPLAY)"
            )

    @property
    def is_host(self) -> bool:
        """This env hosts a deathmatch (with the bots), rather than joining one or playing alone."""
        return self.scenario.deathmatch and not self.join

    @property
    def server_args(self) -> str:
        """The server settings this env hosts its deathmatch with ('' where it hosts none)."""
        return DEATHMATCH_ARGS if self.is_host else ""

    @property
    def engine_args(self) -> str:
        """The engine's command-line arguments for this seat of a deathmatch ('' outside one)."""
        if not self.scenario.deathmatch:
            return ""
        name = f"+name {self.player_name} +colorset {self.colorset}"
        timeout = f"+viz_connect_timeout {self.connect_timeout:g}"
        if self.join:
            # Only ever the local machine: matches are played between processes of one host.
            return f"-join 127.0.0.1 -port {self.port} {timeout} {name}"
        host = f"-host {self.players}"
        if self.players > 1:
            host += f" -port {self.port} -netmode 0 {timeout}"
        return f"{host} {self.server_args} {name}"


OPTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(DoomSettings) if f.name != "scenario")
"""The option names `DoomEnv` and `make_doom_vec` accept: `DoomSettings`' fields (see their docs)."""

BOTS_READD = ("respawn", "match")
"""The choices of the ``bots_readd`` option: after each death of the player, or per match only."""

_SEAT_OPTIONS = frozenset({"bots", "players", "join", "port", "connect_timeout", "player_name", "colorset", "bots_readd"})
"""Options that only a deathmatch takes."""


MAX_HITS_PER_STEP = 5
MAX_DAMAGE_PER_STEP = 200
"""Caps on the hits and damage one step is rewarded for: without them a shotgun blast or a rocket
earns more than a frag (Sample Factory's ``reward_delta_limits``, same values)."""


def step_reward(
    scenario: DoomScenario,
    raw: float,
    *,
    before: DoomStats,
    after: DoomStats,
    health_before: float | None,
    health_after: float | None,
    training: bool,
    scale: float | None = None,
    hits: float = 0.0,
    damage: float = 0.0,
) -> float:
    """The reward of one agent step, from what happened during it.

    Evaluation (``training=False``) gets ``raw``, the scenario's own reward, unchanged. Training
    gets ``scale`` (default: the scenario's ``reward_scale``) times it, plus the scenario's
    shaping: ``death_reward`` per death and ``object_reward`` per object picked up between the
    DOOM statistics ``before`` and ``after`` the step, and ``health_reward`` per health point
    gained while alive (a respawn's refill starts at health <= 0 and earns nothing; health is None
    for a scenario that does not track it), and ``health_loss_reward`` per point lost in a drop of
    more than ``health_loss_threshold`` points. ``hits`` and ``damage`` are the rises of HITCOUNT and
    DAMAGECOUNT during the step (hits and damage dealt to others), rewarded with ``hit_reward`` and
    ``damage_reward`` up to Sample Factory's caps (5 hits, 200 points per step).
    """
    if not training:
        return raw
    reward = (scenario.reward_scale if scale is None else scale) * raw
    reward += scenario.death_reward * (after.deaths - before.deaths)
    reward += scenario.object_reward * (after.objects - before.objects)
    reward += scenario.hit_reward * min(max(hits, 0.0), MAX_HITS_PER_STEP)
    reward += scenario.damage_reward * min(max(damage, 0.0), MAX_DAMAGE_PER_STEP)
    if (
        scenario.health_reward
        and health_before is not None
        and health_after is not None
        and health_before > 0
        and health_after > health_before
    ):
        reward += scenario.health_reward * (health_after - health_before)
    if scenario.health_loss_reward and health_before is not None and health_after is not None and health_before > 0:
        lost = health_before - max(health_after, 0.0)  # a killing blow costs what was left
        if lost > scenario.health_loss_threshold:
            reward += scenario.health_loss_reward * lost
    return reward


def _vizdoom():
    try:
        import vizdoom
    except ImportError as err:  # pragma: no cover - vizdoom is a core dependency
        raise MissingDependencyError(f"ViZDoom is not installed ({err}); pip install vizdoom") from err
    return vizdoom


@contextlib.contextmanager
def _engine_errors_as_env_errors(config: str, rank: int):
    """ViZDoom's own exceptions (the engine crashed, was killed, or stopped answering) become one
    `EnvError` line; in a vector env it crosses the worker pipe as an EnvError too."""
    vzd = _vizdoom()
    engine_errors = (vzd.ViZDoomUnexpectedExitException, vzd.ViZDoomErrorException,
                     vzd.ViZDoomIsNotRunningException, vzd.SharedMemoryException, vzd.MessageQueueException)
    try:
        yield
    except engine_errors as err:
        raise EnvError(f"the ViZDoom engine of env {rank} ('{config}') failed: {type(err).__name__}: {err}") from err


def _hide_descriptors_from_the_engine() -> None:
    """Mark this process's open descriptors close-on-exec before ViZDoom starts its engine.

    ViZDoom launches the engine with fork + exec, so the engine inherits every inheritable
    descriptor. A vector-env worker started by the forkserver receives its pipes to the trainer
    over a Unix socket, and those arrive inheritable: an engine that outlived a crashed worker
    would hold the trainer's pipe open, and the trainer would wait on it forever instead of
    seeing the worker die.
    """
    if not os.path.isdir("/proc/self/fd"):
        return
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:  # the directory's own descriptor, already closed
                pass


def _cv2():
    try:
        import cv2
    except ImportError as err:  # pragma: no cover
        raise MissingDependencyError(
            f"OpenCV is not installed ({err}); pip install opencv-python-headless"
        ) from err
    return cv2


def _resolution(vzd, value: str):
    name = value.upper()
    if not name.startswith("RES_"):
        name = "RES_" + name
    res = getattr(vzd.ScreenResolution, name, None)
    if res is None:
        known = [r.removeprefix("RES_") for r in dir(vzd.ScreenResolution) if r.startswith("RES_")]
        raise EnvError(f"unsupported screen_resolution '{value}'; ViZDoom offers {', '.join(sorted(known))}")
    return res


def _obs_size(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        size = (value, value)
    else:
        try:
            size = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            size = ()
    if len(size) != 2 or min(size) < 8:
        raise EnvError(f"obs_size must be an int or (H, W) of at least 8 pixels, got {value!r}")
    return size  # type: ignore[return-value]



class DoomEnv(gym.Env):
    """One ViZDoom game as a gymnasium env (see the module docstring for the conventions).

    ``options`` are `DoomSettings`' fields (`OPTIONS`). The game starts on the first `reset`, so
    building the env (gymnasium's vector envs build one in the parent process to read the spaces)
    costs nothing.

    Besides the gymnasium API, what evaluation reads: `frame_skip`, `episode_timeout`,
    `action_names`, `scenario`/`scenario_name`, `step_frames` (every tic's screen with
    ``render_every_frame``), `stats` (the DOOM table statistics of the running
    episode), `episode_tic`, `readd_bots` and the deathmatch's `engine_args`/`server_args`.

    With ``game_features`` set, ``info[GAME_FEATURES_INFO_KEY]`` (from `reset` and every `step`)
    holds the float32 (F,) labels of the returned observation's newest frame (`GameFeatureLabeller`).
    On the step that ends an episode the observation repeats the last frames, and so do its
    labels. Without the option there is no such key, and ViZDoom renders no labels buffer.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": TICRATE}

    def __init__(
        self,
        scenario: str | DoomScenario = "basic",
        *,
        seed: int | None = None,
        training: bool = True,
        rank: int = 0,
        **options: Any,
    ):
        self.scenario = spec = get_scenario(scenario)
        self.scenario_name = scenario_name(spec)
        self.settings = DoomSettings.from_options(spec, training=training, rank=rank, **options)
        self.training = training
        self.rank = rank
        self._seed = seed

        # Buttons: every button used by an action, in first-use order, then the held ones.
        buttons: list[str] = []
        for name in itertools.chain(*spec.actions, spec.held_buttons):
            if name not in buttons:
                buttons.append(name)
        self._buttons = buttons
        index = {name: i for i, name in enumerate(buttons)}
        self._action_table: list[list[float]] = []
        for action in spec.actions:
            row = [0.0] * len(buttons)
            for name in (*action, *spec.held_buttons):
                row[index[name]] = 1.0
            self._action_table.append(row)
        self._noop = [0.0] * len(buttons)
        self.action_names = ["+".join(a) if a else "NOOP" for a in spec.actions]

        settings = self.settings
        self._channels = 1 if settings.grey else 3
        shape = (self._channels * settings.frame_stack, *settings.obs_size)
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        self.action_space = gym.spaces.Discrete(len(spec.actions))
        self.render_mode = "rgb_array"

        self._variables = tuple(spec.game_variables) + tuple(
            v for v in spec.shaping_variables if v not in spec.game_variables
        )
        self._health_index = self._variables.index("HEALTH") if "HEALTH" in self._variables else None
        self._frag_index = self._variables.index("FRAGCOUNT") if "FRAGCOUNT" in self._variables else None
        self._stack = np.zeros(shape, np.uint8)
        self._screen: np.ndarray | None = None
        self._step_frames: list[np.ndarray] = []
        features = settings.game_features
        self._labeller = GameFeatureLabeller(features) if features else None
        self._frame_features = np.zeros(len(features), np.float32)
        self._teacher = None
        if settings.teacher == "aimer":
            from pixelplay.envs.doom_teacher import AimerTeacher

            self._teacher = AimerTeacher(self.action_names)
        self._advice = 0
        self.tracker = DoomStatsTracker()
        self.game = None
        self._episodes = 0
        self._raw_return = 0.0
        self._length = 0
        self._last: tuple[float, ...] = ()

    # --------------------------------------------------------------------- what others read
    @property
    def frame_skip(self) -> int:
        """Game tics per agent step."""
        return self.settings.frame_skip

    @property
    def episode_timeout(self) -> int | None:
        """Episode timeout in tics (None: the scenario cfg's, see `_cfg_timeout`; 0: none)."""
        return self.settings.episode_timeout

    @property
    def is_host(self) -> bool:
        return self.settings.is_host

    @property
    def engine_args(self) -> str:
        """The engine arguments of this env's seat in a deathmatch ('' outside one)."""
        return self.settings.engine_args

    @property
    def server_args(self) -> str:
        """The server settings this env hosts its deathmatch with ('' where it hosts none)."""
        return self.settings.server_args

    @property
    def episode_tic(self) -> int:
        """Game tics played in the running episode (0 before the game starts)."""
        if self.game is None:
            return 0
        with _engine_errors_as_env_errors(self.scenario.config, self.rank):
            return int(self.game.get_episode_time())

    def readd_bots(self) -> None:
        """Remove the built-in bots and add ``bots`` of them again; only a deathmatch host has bots.

        A new map drops the bots, so every reset does this; with ``bots_readd="respawn"`` (the
        default) every death of the player does it too, as glample/Arnold's ``Game.initialize_game``
        does on each respawn (src/doom/game.py), in training and in evaluation alike.
        """
        bots = self.settings.bots
        if self.game is None or not (self.is_host and bots):
            return
        with _engine_errors_as_env_errors(self.scenario.config, self.rank):
            self.game.send_game_command("removebots")
            for _ in range(bots):
                self.game.send_game_command("addbot")

    def stats(self) -> dict[str, float]:
        """DOOM table statistics of the running episode (kills, deaths, suicides, objects, frags, K/D)."""
        return self.tracker.stats.as_dict()

    # ----------------------------------------------------------------------------------- game
    def _init_game(self) -> None:
        vzd = _vizdoom()
        self._cv2 = _cv2()
        spec, settings = self.scenario, self.settings
        game = vzd.DoomGame()
        config = os.path.join(vzd.scenarios_path, spec.config)
        if not game.load_config(config):
            raise EnvError(f"ViZDoom could not load {config}")
        game.set_window_visible(settings.window_visible)
        game.set_screen_resolution(_resolution(vzd, settings.screen_resolution))
        # RGB24 is (H, W, 3), which cv2 resizes in one call; GRAY8 lets the engine do the grey.
        rgb = settings.render_native or not settings.grey
        game.set_screen_format(vzd.ScreenFormat.RGB24 if rgb else vzd.ScreenFormat.GRAY8)
        game.set_sound_enabled(False)
        if settings.game_features or self._teacher is not None:  # only then: one more buffer per frame
            game.set_labels_buffer_enabled(True)
        if spec.render_crosshair:
            game.set_render_crosshair(True)
        if settings.render_hud is not None:
            game.set_render_hud(settings.render_hud)
        game.set_available_buttons([getattr(vzd.Button, b) for b in self._buttons])
        game.set_available_game_variables([getattr(vzd.GameVariable, v) for v in self._variables])
        if settings.map is not None:
            game.set_doom_map(settings.map)
        if settings.doom_skill is not None:
            game.set_doom_skill(settings.doom_skill)
        if settings.episode_timeout is not None:
            game.set_episode_timeout(settings.episode_timeout)
        game.set_mode(vzd.Mode.ASYNC_SPECTATOR if settings.human else vzd.Mode.PLAYER)
        if spec.deathmatch:
            game.add_game_args(settings.engine_args)
        if self._seed is not None:
            game.set_seed(int(self._seed) % 2**31)
        if settings.human:
            game.set_doom_config_path(os.path.abspath(HUMAN_CONFIG_FILE))
        _hide_descriptors_from_the_engine()
        # The engine makes ./_vizdoom/ (beside its ./_vizdoom.ini) with a check-then-mkdir: engines
        # starting together in a fresh directory race, and the loser fails ("Failed to create
        # ./_vizdoom/ directory: File exists") and takes its worker down with SIGSEGV. Creating it
        # first, idempotently, leaves nothing to race on (tests/test_doom_env.py starts four
        # together in fresh directories).
        os.makedirs("_vizdoom", exist_ok=True)
        try:
            game.init()
        except Exception as err:  # ViZDoom's own exception types; keep its message
            raise EnvError(f"ViZDoom could not start '{spec.config}': {err}") from err
        # A person's keys (those printed before a match, doom_human.controls_text); an agent's
        # fixed settings. Either way, whatever an earlier game left in the config file.
        for command in console_commands() if settings.human else AGENT_SETTINGS:
            game.send_game_command(command)
        self.game = game

    def _demo_path(self) -> str:
        path = str(self.settings.record_lmp)
        if "{" in path:
            return path.format(episode=self._episodes, rank=self.rank)
        if self._episodes == 0:
            return path
        root, ext = os.path.splitext(path)
        return f"{root}-{self._episodes}{ext or '.lmp'}"

    def _read_variables(self, state) -> tuple[float, ...]:
        if state is not None:
            return tuple(state.game_variables.tolist())
        get, vzd = self.game.get_game_variable, _vizdoom()
        return tuple(get(getattr(vzd.GameVariable, v)) for v in self._variables)

    def _label_frame(self, state) -> None:
        """The game features of ``state``'s frame (the observation's newest) and the teacher's
        advice for it, if asked for."""
        if self._labeller is not None:
            self._frame_features = self._labeller(state.labels, state.labels_buffer)
        if self._teacher is not None:
            self._advice = self._teacher.advice(state.labels, state.labels_buffer)

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        if self._labeller is not None:
            info[GAME_FEATURES_INFO_KEY] = self._frame_features.copy()
        if self._teacher is not None:
            info[ADVICE_INFO_KEY] = self._advice
        return info

    def _push_frame(self, state) -> None:
        cv2 = self._cv2
        screen = state.screen_buffer
        self._screen = screen
        if self.settings.grey and screen.ndim == 3:
            screen = cv2.cvtColor(screen, cv2.COLOR_RGB2GRAY)
        h, w = self.settings.obs_size
        if screen.shape[:2] != (h, w):
            screen = cv2.resize(screen, (w, h), interpolation=cv2.INTER_AREA)
        c = self._channels
        stack = self._stack
        if self.settings.frame_stack > 1:
            stack[:-c] = stack[c:]
        if c == 1:
            stack[-1] = screen
        else:
            stack[-c:] = screen.transpose(2, 0, 1)

    # ------------------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        with _engine_errors_as_env_errors(self.scenario.config, self.rank):
            return self._reset_game(seed)

    def step(self, action):
        with _engine_errors_as_env_errors(self.scenario.config, self.rank):
            return self._step_game(action)

    def _reset_game(self, seed: int | None):
        started = self.game is None
        if started:
            if seed is not None:
                self._seed = seed
            self._init_game()
        game = self.game
        if seed is None and self._episodes == 0:
            seed = self._seed
        settings = self.settings
        if started and (settings.human or settings.players > 1 or settings.join) and not settings.record_lmp:
            # A person's game (ASYNC_SPECTATOR) or a netgame plays init's own episode (init seeds
            # it): there a new_episode right after init waits on the engine forever at times
            # (ViZDoom 1.3.2, in DoomController::setMap): a person alone, 2 of 12 starts; a person
            # joining the agent's game, whose map the host had restarted already, 3 of 5 matches.
            pass
        else:
            if seed is not None:
                # set_seed + new_episode replays an episode exactly (init's own episode is skipped).
                game.set_seed(int(seed) % 2**31)
            # Always a fresh episode (also right after init) so a seed given here replays exactly.
            if self.settings.record_lmp:
                game.new_episode(self._demo_path())
            else:
                game.new_episode()
        self._episodes += 1
        self.readd_bots()  # bots leave with every new map (Arnold re-adds them the same way)
        if self.scenario.deathmatch:
            # On this map the bots all join on the next tic (PLAYER_COUNT 1 -> 8 in one tic with
            # 7) and one often spawns onto the player: a telefrag in half the matches with 7 bots.
            # Play that tic before the episode starts, so no match opens with a death nobody
            # could avoid (a respawn takes ~37 tics of the match).
            if self.settings.human:
                game.advance_action(1)
            else:
                game.make_action(self._noop, 1)
            if game.is_player_dead():
                game.respawn_player()
        state = game.get_state()
        values = self._read_variables(state)
        self._last = values
        self.tracker.reset(dict(zip(self._variables, values, strict=True)))
        self._raw_return = 0.0
        self._length = 0
        self._frame_features[:] = 0.0
        if state is not None:
            self._push_frame(state)
            self._label_frame(state)
            frame_stack = self.settings.frame_stack
            if frame_stack > 1:
                self._stack[:] = np.concatenate([self._stack[-self._channels :]] * frame_stack)
        if self.settings.render_every_frame:
            self._step_frames = [self.render()]
        return self._stack.copy(), self._info()

    def _step_game(self, action):
        game = self.game
        if self.settings.render_every_frame:
            game_reward = self._play_tics(action)
        elif self.settings.human:
            game.advance_action(self.frame_skip)
            game_reward = game.get_last_reward()
        else:
            game_reward = game.make_action(self._action_table[int(action)], self.frame_skip)
        finished = game.is_episode_finished()
        state = None if finished else game.get_state()
        values = self._read_variables(state)
        last, self._last = self._last, values

        tracker = self.tracker
        before = dataclasses.replace(tracker.stats)
        tracker.update(dict(zip(self._variables, values, strict=True)))
        stats = tracker.stats
        dead = game.is_player_dead()
        deathmatch = self.scenario.deathmatch
        if finished and dead and not deathmatch and stats.deaths == before.deaths:
            tracker.player_died()

        if self.scenario.reward_source == "frags":
            raw = values[self._frag_index] - last[self._frag_index]
        else:
            raw = game_reward
        self._raw_return += raw
        self._length += 1
        hi = self._health_index
        delta = {
            name: values[i] - last[i] for i, name in enumerate(self._variables) if name in ("HITCOUNT", "DAMAGECOUNT")
        }
        reward = step_reward(
            self.scenario,
            raw,
            before=before,
            after=stats,
            health_before=None if hi is None else last[hi],
            health_after=None if hi is None else values[hi],
            training=self.training,
            scale=self.settings.reward_scale,
            hits=delta.get("HITCOUNT", 0.0),
            damage=delta.get("DAMAGECOUNT", 0.0),
        )

        terminated = truncated = False
        info = self._info() if finished else {}  # finished: the last frame's labels, as obs
        if finished:
            # A timeout is a time limit, not a death: the learner bootstraps there. In a deathmatch
            # only the timeout ends a match (the player respawns), even one that finds it dead.
            truncated = (deathmatch or not dead) and game.is_episode_timeout_reached()
            terminated = not truncated
            info[EPISODE_INFO_KEY] = {
                "return": float(self._raw_return),
                "length": self._length,
                **stats.as_dict(),
            }
            # ViZDoom has no state once an episode has finished: final_obs repeats the last frames.
        else:
            if stats.deaths > before.deaths and self.settings.bots_readd == "respawn":
                # While the player is dead: the bots join on the next tic at spawn points, and re-
                # added after its respawn one often landed on it (a telefrag: half of the respawns
                # on map02 with 8 bots). Now it respawns as far from them as it can.
                self.readd_bots()
            if dead and deathmatch and not self.settings.human:
                # Multiplayer continues after a death: respawn now (the stats re-base next step).
                game.respawn_player()
                state = game.get_state() or state
            self._push_frame(state)
            self._label_frame(state)
            info.update(self._info())
        return self._stack.copy(), float(reward), terminated, truncated, info

    def _play_tics(self, action) -> float:
        """One step played one tic at a time (``render_every_frame``), keeping each tic's screen.

        The same game as ``make_action(action, frame_skip)``: the same action held for the same
        tics (the engine's own seeded RNG decides the rest), the reward the sum of the tics'. Only
        the weapon sprite may be drawn a few pixels apart: the renderer eases its bob once per
        frame it draws (every tic here, the last of each step there); all else is pixel-equal.
        The tic that ends an episode has no screen (ViZDoom has no state then): its frame
        repeats the previous one, so a step always gives one frame per tic it played.
        """
        game = self.game
        human = self.settings.human
        row = None if human else self._action_table[int(action)]
        reward = 0.0
        frames: list[np.ndarray] = []
        for _ in range(self.frame_skip):
            if human:
                game.advance_action(1)
                reward += game.get_last_reward()
            else:
                reward += game.make_action(row, 1)
            if game.is_episode_finished():
                frames.append(frames[-1] if frames else self.render())
                break
            frames.append(_rgb(game.get_state().screen_buffer))
        self._step_frames = frames
        return reward

    def step_frames(self) -> list[np.ndarray]:
        """The screens of the last `step`, one (H, W, 3) uint8 per game tic it played, oldest first
        (``render_every_frame=True``), or the one screen of the last
        `reset`. Without the option: only `render`'s screen, the one the step ended on.

        An episode's frames, its reset's and then each step's, are 1 + the tics it played: one per
        tic, ``frame_skip`` per step except the step that ends it (as many as the engine played).
        """
        if self.settings.render_every_frame:
            return list(self._step_frames)
        frame = self.render()
        return [] if frame is None else [frame]

    def render(self) -> np.ndarray | None:
        """The latest screen as (H, W, 3) uint8 at the engine's resolution (``screen_resolution``).

        With ``render_native=True`` it is the full-colour screen; otherwise, for grey scenarios,
        the grey screen repeated on 3 channels.
        """
        screen = self._screen
        if screen is None:
            return None
        return _rgb(screen)

    def close(self) -> None:
        if self.game is not None:
            self.game.close()
            self.game = None


def _rgb(screen: np.ndarray) -> np.ndarray:
    """An engine screen as a new (H, W, 3) uint8 array (a grey one repeated on 3 channels)."""
    if screen.ndim == 2:
        return np.repeat(screen[:, :, None], 3, axis=2)
    return screen.copy()


def _cfg_timeout(config: str) -> int | None:
    """The ``episode_timeout`` (tics) a scenario's .cfg file sets, or None where it sets none."""
    path = os.path.join(_vizdoom().scenarios_path, config)
    with open(path) as handle:
        for line in handle:
            key, _, value = line.partition("#")[0].partition("=")
            if key.strip().replace("_", "").lower() == "episodetimeout" and value.strip():
                return int(value)
    return None


def doom_spec(name: str, scenario: str, *, training: bool = True, **options: Any) -> EnvSpec:
    """The `EnvSpec` of a scenario under these options (builds `DoomEnv` objects, starts no game)."""

    def step_cap(env: DoomEnv) -> int | None:
        tics = env.episode_timeout if env.episode_timeout is not None else _cfg_timeout(env.scenario.config)
        return math.ceil(tics / env.frame_skip) if tics else None

    train_env = DoomEnv(scenario, training=True, **options)
    eval_env = DoomEnv(scenario, training=False, **options)
    return EnvSpec(
        name=name,
        family=DOOM,
        target=train_env.scenario_name,
        frame_skip=train_env.frame_skip,
        frames_per_second=TICRATE,
        action_names=tuple(train_env.action_names),
        max_train_steps=step_cap(train_env),
        max_eval_steps=step_cap(eval_env),
        episode_columns=("return", "length", "kills", "deaths", "suicides", "objects"),
        game_features=train_env.settings.game_features,
        teacher=train_env.settings.teacher,
    )


def make_doom_vec(
    scenario: str,
    num_envs: int,
    seed: int,
    device: Any = "cpu",
    *,
    training: bool = True,
    **options: Any,
) -> GymVecEnv:
    """``num_envs`` copies of a scenario behind a `GymVecEnv` (forked worker processes when > 1).

    Env ``rank`` gets game seed ``seed + rank``; options are `DoomSettings`' fields (`OPTIONS`).
    """
    spec = get_scenario(scenario)
    # Fail here, in this process, on a bad option rather than in a worker.
    settings = DoomSettings.from_options(spec, training=training, **options)
    if num_envs < 1:
        raise EnvError(f"num_envs must be at least 1, got {num_envs}")
    if num_envs > 1:
        if settings.human or settings.window_visible:
            raise EnvError("a visible window or a human player needs num_envs=1")
        if settings.players > 1 or settings.join:
            raise EnvError("a match with several players (players > 1 or join) takes num_envs=1 per player")
        if settings.record_lmp and "{rank}" not in settings.record_lmp:
            raise EnvError(
                "record_lmp with num_envs > 1 must contain '{rank}' so the envs write different files"
            )
    fns = [
        functools.partial(DoomEnv, spec, seed=seed + rank, training=training, rank=rank, **options)
        for rank in range(num_envs)
    ]
    return GymVecEnv(fns, device, frame_stack=settings.frame_stack, game_features=settings.game_features,
                     teacher=settings.teacher != "none")
