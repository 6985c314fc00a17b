"""ViZDoom scenarios (and deathmatch against the built-in bots) through ViZDoom's own API.

Not ViZDoom's gymnasium wrapper (it flags a timeout as both terminated and truncated and returns
Dict observations) and not EnvPool (it ignores the scenarios' own rewards and loses the reward of
the last step; see ``shared/reference/measured-here.md``). Each env is one `DoomEnv`, a plain
``gymnasium.Env`` that follows pixelplay's conventions:

* observation: uint8 (C, H, W), the last ``frame_stack`` frames stacked along the channel axis,
  oldest first (C = frame_stack for grey, 3 * frame_stack for RGB);
* action: ``Discrete(len(scenario.actions))``, each action a combination of ViZDoom buttons held
  for ``frame_skip`` tics;
* reward: ``reward_scale * scenario reward + shaping`` while training; the raw scenario reward when
  ``training=False``. For ``deathmatch`` the scenario reward is the change of the frag count
  (kills minus suicides: the ViZDoom competitions' score);
* ``terminated``: death or the scenario's own end; ``truncated``: the episode timeout only (in a
  deathmatch the player respawns, so a match only ever ends truncated). ViZDoom has no screen
  once an episode has finished, so the observation of that last step repeats the last frames;
* on the step that ends an episode, ``info[EPISODE_INFO_KEY]`` holds the raw return, the length
  in agent steps and the DOOM table statistics (`envs.doom_stats`).

`make_doom_vec` (called by `envs.make_vec_env`) puts ``num_envs`` of them behind a `GymVecEnv`.
The eval harness builds `DoomEnv` directly for native-resolution video (``render_native``),
engine demos of single-player scenarios (``record_lmp``), several agents in one match
(``players``/``join``/``port``) and a human at the keyboard (``human=True``).
"""

from __future__ import annotations

import contextlib
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

from pixelplay.envs.doom_stats import TRACKED_VARIABLES, DoomStatsTracker
from pixelplay.envs.errors import EnvError, MissingDependencyError
from pixelplay.envs.spec import DOOM, EnvSpec
from pixelplay.envs.vec import EPISODE_INFO_KEY, GymVecEnv

TICRATE = 35
"""Doom's game tics per second: converts ``episode_minutes`` to tics."""

DEFAULT_PORT = 5029
"""ZDoom's default network port, used when several players share one match."""


@dataclass(frozen=True)
class DoomScenario:
    """One playable scenario: how the game is configured and what the agent sees and does."""

    config: str
    """ViZDoom ``.cfg`` file in ``vizdoom.scenarios_path``: map, rewards, timeout, skill."""
    actions: tuple[tuple[str, ...], ...]
    """The discrete action set: each action is the ViZDoom buttons held together (() = no-op)."""
    held_buttons: tuple[str, ...] = ()
    """Buttons held on every action (e.g. SPEED: always run)."""
    screen_resolution: str = "RES_160X120"
    """Resolution the engine renders at; observations are resized down from it."""
    obs_size: tuple[int, int] = (68, 68)
    """Observation (H, W) after an INTER_AREA resize. 68: the size nearest the 64x64 that learns
    basic fast (measured-here.md) that the Nature CNN tiles exactly (68 -> 16 -> 7 -> 5; 64 gives
    15 -> 6.5, which agents.networks refuses); 84 (Atari's) also tiles."""
    grey: bool = True
    """Grey frames (1 channel each) or RGB (3 channels each)."""
    frame_skip: int = 4
    """Game tics per agent step (the action is held; rewards are summed)."""
    frame_stack: int = 4
    """Frames stacked along the channel axis, oldest first."""
    reward_scale: float = 1.0
    """Training reward = reward_scale * scenario reward + shaping."""
    health_reward: float = 0.0
    """Training shaping: reward per health point gained (medikits), not counting respawns."""
    death_reward: float = 0.0
    """Training shaping: reward per death (negative: a penalty), on top of the scenario's own."""
    object_reward: float = 0.0
    """Training shaping: reward per object picked up (as counted by `DoomStatsTracker`)."""
    reward_source: str = "game"
    """``game``: the scenario's own reward; ``frags``: the frag count's change (deathmatch)."""
    episode_timeout: int | None = None
    """Training episode timeout in tics (None: the cfg's; 0: none). Ends as truncated."""
    eval_episode_timeout: int | None = None
    """Timeout with ``training=False`` (None: same as ``episode_timeout``)."""
    game_variables: tuple[str, ...] = ("KILLCOUNT", "DEATHCOUNT", "HEALTH", "ARMOR")
    """`envs.doom_stats.TRACKED_VARIABLES` this scenario tracks (what can change in it)."""
    deathmatch: bool = False
    """Host a multiplayer deathmatch (the player against built-in bots, respawn on death)."""
    bots: int = 0
    """Default number of built-in bots in a deathmatch (option ``bots``)."""
    doom_map: str | None = None
    """Map to load (None: the cfg's)."""
    render_crosshair: bool = False
    """Draw the crosshair into the frames (helps aiming where the agent must hit players)."""

    def __post_init__(self) -> None:
        unknown = set(self.game_variables) - set(TRACKED_VARIABLES)
        if unknown:
            raise ValueError(f"game_variables outside TRACKED_VARIABLES: {sorted(unknown)}")
        if self.reward_source not in ("game", "frags"):
            raise ValueError(f"reward_source must be 'game' or 'frags', got {self.reward_source!r}")
        if self.reward_source == "frags" and "FRAGCOUNT" not in self.game_variables:
            raise ValueError("reward_source 'frags' needs FRAGCOUNT in game_variables")
        if not self.actions:
            raise ValueError("a scenario needs at least one action")

    @property
    def frame_channels(self) -> int:
        """Channels per stacked frame: 1 (grey) or 3 (RGB)."""
        return 1 if self.grey else 3

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return (self.frame_channels * self.frame_stack, *self.obs_size)


def _combos(*axes: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
    """Every combination of one option per axis; an option is a tuple of buttons."""
    return tuple(tuple(b for part in combo for b in part) for combo in itertools.product(*axes))


_NONE: tuple[str, ...] = ()
_TURN = (_NONE, ("TURN_LEFT",), ("TURN_RIGHT",))
_ATTACK = (_NONE, ("ATTACK",))
_MOVE5 = (_NONE, ("MOVE_FORWARD",), ("MOVE_BACKWARD",), ("MOVE_LEFT",), ("MOVE_RIGHT",))

_SINGLE_PLAYER_VARIABLES = ("KILLCOUNT", "DEATHCOUNT", "HEALTH", "ARMOR")

# Sources: the scenarios' cfg files (vizdoom.scenarios_path) and ViZDoom's scenario docs
# (vizdoom.farama.org/environments/default) for rewards, timeouts and buttons; Sample Factory's
# table (sf_examples/vizdoom/doom/doom_utils.py, DOOM_ENVS) for reward scales (basic and
# deadly_corridor x0.01), frame skip 4 and the gathering shaping (a reward for each health rise,
# as in arXiv:1904.01806); Lample & Chaplot 2017 (glample/Arnold) for deathmatch against bots;
# shared/reference/measured-here.md for small grey frames on basic and colour + shaping for gathering.
SCENARIOS: dict[str, DoomScenario] = {
    # Shoot the one monster: +106 on a kill, -5 per missed shot, -1 per tic; 300-tic timeout.
    # The 3 single buttons of ViZDoom's own examples. Small grey frames learn fast (measured-here.md).
    "basic": DoomScenario(
        config="basic.cfg",
        actions=(("MOVE_LEFT",), ("MOVE_RIGHT",), ("ATTACK",)),
        reward_scale=0.01,
    ),
    # Turn and shoot monsters closing in: +1 per kill, -1 on death; 2100 tics. Sample Factory:
    # turn x attack (its doom_turn_and_attack_only), scale 1.
    "defend_the_center": DoomScenario(
        config="defend_the_center.cfg",
        actions=_combos(_TURN, _ATTACK),
    ),
    # As defend_the_center, monsters come from one side; ends on death (no cfg timeout).
    "defend_the_line": DoomScenario(
        config="defend_the_line.cfg",
        actions=_combos(_TURN, _ATTACK),
    ),
    # Survive on acid by picking up medikits: +1 per tic alive, -100 on death; 2100 tics.
    # Colour (medikits), x0.01 and +0.01 per health point gained: x0.01 alone in grey did not learn
    # in 10 min (measured-here.md); Sample Factory rewards each health rise.
    "health_gathering": DoomScenario(
        config="health_gathering.cfg",
        actions=_combos((_NONE, ("MOVE_FORWARD",)), _TURN),
        grey=False,
        reward_scale=0.01,
        health_reward=0.01,
    ),
    # As health_gathering on a maze-like map with poison vials to avoid.
    "health_gathering_supreme": DoomScenario(
        config="health_gathering_supreme.cfg",
        actions=_combos((_NONE, ("MOVE_FORWARD",)), _TURN),
        grey=False,
        reward_scale=0.01,
        health_reward=0.01,
    ),
    # Reach the vest past shooting monsters (skill 5): reward = distance gained to the vest,
    # -100 on death; 2100 tics. Sample Factory: its extended action set, scale 0.01.
    "deadly_corridor": DoomScenario(
        config="deadly_corridor.cfg",
        actions=_combos(_MOVE5, _TURN, _ATTACK),
        reward_scale=0.01,
    ),
    # Find the vest in a maze: +1 on reaching it, -0.0001 per tic; 2100 tics. Sparse: colour
    # helps tell the rooms apart. Sample Factory: scale 1.
    "my_way_home": DoomScenario(
        config="my_way_home.cfg",
        actions=(
            (),
            ("MOVE_FORWARD",),
            ("MOVE_FORWARD", "TURN_LEFT"),
            ("MOVE_FORWARD", "TURN_RIGHT"),
            ("TURN_LEFT",),
            ("TURN_RIGHT",),
            ("MOVE_LEFT",),
            ("MOVE_RIGHT",),
        ),
        grey=False,
    ),
    # Dodge fireballs: +1 per tic alive, ends on death (no cfg timeout). x0.01 as for the other
    # +1-per-tic scenario (gathering), so a step is worth 0.04.
    "take_cover": DoomScenario(
        config="take_cover.cfg",
        actions=((), ("MOVE_LEFT",), ("MOVE_RIGHT",)),
        reward_scale=0.01,
    ),
    # The player against the built-in bots on ViZDoom's CIG 2016 map "map02" (full deathmatch:
    # weapons, ammo, medikits, armour; "map01" is the rocket-launcher-only map), hosted in this
    # process with Arnold's server settings. Not ViZDoom's own deathmatch.cfg, a single-player
    # monster arena. Scenario reward: frag change (+1 kill, -1 suicide). Training shaping:
    # -1 per death (so a suicide costs 2, as in Sample Factory's -1.5 frag -0.75 death),
    # +0.1 per object picked up (Sample Factory's pickup rewards are ~0.1 for a weapon or a medikit).
    # Matches last 4 minutes while training (Sample Factory's timelimit), 15 for evaluation
    # (Lample & Chaplot evaluate 15 minutes per map). RGB 84x84 from 160x120, always running.
    "deathmatch": DoomScenario(
        config="cig.cfg",
        doom_map="map02",
        actions=_combos(_MOVE5, _TURN, _ATTACK),
        held_buttons=("SPEED",),
        obs_size=(84, 84),
        grey=False,
        death_reward=-1.0,
        object_reward=0.1,
        reward_source="frags",
        episode_timeout=4 * 60 * TICRATE,
        eval_episode_timeout=15 * 60 * TICRATE,
        game_variables=TRACKED_VARIABLES,
        deathmatch=True,
        bots=4,
        render_crosshair=True,
    ),
}
"""Every scenario `make_doom_vec` serves, by name (``envs.ENVS`` maps ``doom-*`` names here)."""

# Arnold's (glample/Arnold) server settings, plus no crouching. No +timelimit: in PLAYER mode it
# breaks the episodes after the first (measured-here.md); the env uses set_episode_timeout.
DEATHMATCH_ARGS = (
    "-deathmatch +sv_forcerespawn 1 +sv_noautoaim 1 +sv_respawnprotect 1 +sv_spawnfarthest 1 +sv_nocrouch 1"
)

_OPTIONS: dict[str, str] = {
    "episode_timeout": "episode timeout in tics (0: none)",
    "episode_minutes": "episode timeout in minutes of game time",
    "frame_skip": "tics per agent step",
    "frame_stack": "frames stacked per observation",
    "obs_size": "observation size: an int or (H, W)",
    "grey": "grey (True) or RGB (False) frames",
    "screen_resolution": "engine resolution, e.g. RES_320X240 or 640x480",
    "reward_scale": "training reward scale of the scenario reward",
    "render_native": "keep the full-resolution RGB screen for render()",
    "record_lmp": "record each episode as an engine demo (.lmp); {episode} and {rank} are filled in",
    "doom_skill": "Doom skill 1-5",
    "map": "map name, e.g. map01",
    "window_visible": "show the game window (needs a display)",
    "human": "a human plays in the window (ASYNC_SPECTATOR); actions are ignored",
    "render_hud": "draw the status bar into the frames",
    "bots": "deathmatch: number of built-in bots",
    "players": "deathmatch: agents and humans in the match (>1: this env hosts them on `port`)",
    "join": "deathmatch: join the match hosted on 127.0.0.1:`port` instead of hosting",
    "port": "deathmatch: network port on 127.0.0.1",
    "connect_timeout": "deathmatch: seconds to wait for the other players",
    "player_name": "deathmatch: the player's name in the match",
    "colorset": "deathmatch: the player's colour (0-7)",
}
"""Options `DoomEnv` and `make_doom_vec` accept, with a one-line meaning each."""

_DEATHMATCH_OPTIONS = frozenset(
    {"bots", "players", "join", "port", "connect_timeout", "player_name", "colorset"}
)


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


def get_scenario(name: str | DoomScenario) -> DoomScenario:
    """The scenario called ``name``, or `EnvError` naming the closest one."""
    if isinstance(name, DoomScenario):
        return name
    if name in SCENARIOS:
        return SCENARIOS[name]
    close = difflib.get_close_matches(name.replace("-", "_"), list(SCENARIOS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise EnvError(f"unknown ViZDoom scenario '{name}'{hint} Known: {', '.join(SCENARIOS)}")


def check_options(scenario: DoomScenario, options: dict[str, Any]) -> None:
    """Refuse option names `DoomEnv` does not know, and multiplayer options off deathmatch."""
    for key in options:
        if key not in _OPTIONS:
            close = difflib.get_close_matches(key, list(_OPTIONS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise EnvError(f"unsupported ViZDoom option '{key}'{hint} Supported: {', '.join(_OPTIONS)}")
        if key in _DEATHMATCH_OPTIONS and not scenario.deathmatch:
            raise EnvError(
                f"option '{key}' only applies to the deathmatch scenario (doom-deathmatch), "
                f"not '{scenario.config.removesuffix('.cfg')}'"
            )


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

    The game starts on the first `reset`, so building the env (gymnasium's vector envs build one
    in the parent process to read the spaces) costs nothing.
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
        self.scenario_name = next((k for k, v in SCENARIOS.items() if v is spec), spec.config.removesuffix(".cfg"))
        check_options(spec, options)
        self.training = training
        self.rank = rank
        self._seed = seed
        opt = options.get

        self.frame_skip = int(opt("frame_skip", spec.frame_skip))
        self.frame_stack = int(opt("frame_stack", spec.frame_stack))
        if self.frame_skip < 1 or self.frame_stack < 1:
            raise EnvError("frame_skip and frame_stack must be at least 1")
        self.obs_size = _obs_size(opt("obs_size", spec.obs_size))
        self.grey = bool(opt("grey", spec.grey))
        self.render_native = bool(opt("render_native", False))
        self.screen_resolution = str(opt("screen_resolution", spec.screen_resolution))
        _resolution(_vizdoom(), self.screen_resolution)  # refuse a bad one here, not in a worker
        self.reward_scale = float(opt("reward_scale", spec.reward_scale))
        self.record_lmp: str | None = opt("record_lmp")
        if self.record_lmp and spec.deathmatch:
            # ViZDoom records a multiplayer game only through "-record" for the first match
            # (new_episode then hung here), and built-in bots desynchronise the replay (ViZDoom's
            # examples/python/record_multiplayer.py).
            raise EnvError(
                "record_lmp is not supported for deathmatch: ViZDoom cannot record multiplayer "
                "matches with bots faithfully; record video from render() (render_native=True) instead"
            )
        self.human = bool(opt("human", False))
        self.window_visible = self.human or bool(opt("window_visible", False))
        self.render_hud = opt("render_hud")
        self.doom_skill = opt("doom_skill")
        if self.doom_skill is not None and not 1 <= int(self.doom_skill) <= 5:
            raise EnvError(f"doom_skill must be 1-5, got {self.doom_skill}")
        self.doom_map = opt("map", spec.doom_map)
        if self.doom_map is not None and not re.fullmatch(r"[A-Za-z0-9_]+", str(self.doom_map)):
            raise EnvError(f"map must be a map name like map01, got {self.doom_map!r}")

        if "episode_timeout" in options and "episode_minutes" in options:
            raise EnvError("give episode_timeout (tics) or episode_minutes, not both")
        if "episode_minutes" in options:
            timeout = round(float(options["episode_minutes"]) * 60 * TICRATE)
        elif "episode_timeout" in options:
            timeout = options["episode_timeout"]
        elif not training and spec.eval_episode_timeout is not None:
            timeout = spec.eval_episode_timeout
        else:
            timeout = spec.episode_timeout
        if timeout is not None and int(timeout) < 0:
            raise EnvError(f"episode timeout must be >= 0 tics, got {timeout}")
        self.episode_timeout = None if timeout is None else int(timeout)

        # Multiplayer: one process hosts (with the bots), the others join it.
        self.bots = int(opt("bots", spec.bots))
        self.players = int(opt("players", 1))
        self.join = bool(opt("join", False))
        self.port = int(opt("port", DEFAULT_PORT))
        self.connect_timeout = float(opt("connect_timeout", 60))
        self.player_name = str(opt("player_name", f"AI{rank}" if rank else "AI"))
        self.colorset = int(opt("colorset", 0))
        if self.bots < 0 or self.players < 1:
            raise EnvError(
                f"bots must be >= 0 and players >= 1, got bots={self.bots}, players={self.players}"
            )
        if self.bots + self.players > 16:
            raise EnvError(f"a Doom match holds at most 16 players, got {self.players} + {self.bots} bots")
        if not 1 <= self.port <= 65535:
            raise EnvError(f"port must be 1-65535, got {self.port}")
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,16}", self.player_name):
            raise EnvError(f"player_name must be 1-16 letters, digits, _ or -, got {self.player_name!r}")
        if self.window_visible and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise MissingDependencyError(
                "a visible game window (window_visible / human) needs a display; none is set (DISPLAY)"
            )

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

        self._channels = 1 if self.grey else 3
        shape = (self._channels * self.frame_stack, *self.obs_size)
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        self.action_space = gym.spaces.Discrete(len(spec.actions))
        self.render_mode = "rgb_array"

        self._variables = tuple(spec.game_variables)
        self._health_index = self._variables.index("HEALTH") if "HEALTH" in self._variables else None
        self._frag_index = self._variables.index("FRAGCOUNT") if "FRAGCOUNT" in self._variables else None
        self._shaping = training and (spec.health_reward or spec.death_reward or spec.object_reward)
        self._stack = np.zeros(shape, np.uint8)
        self._screen: np.ndarray | None = None
        self.tracker = DoomStatsTracker()
        self.game = None
        self._episodes = 0
        self._raw_return = 0.0
        self._length = 0
        self._last: tuple[float, ...] = ()

    # ----------------------------------------------------------------------------------- game
    def _init_game(self) -> None:
        vzd = _vizdoom()
        self._cv2 = _cv2()
        spec = self.scenario
        game = vzd.DoomGame()
        config = os.path.join(vzd.scenarios_path, spec.config)
        if not game.load_config(config):
            raise EnvError(f"ViZDoom could not load {config}")
        game.set_window_visible(self.window_visible)
        game.set_screen_resolution(_resolution(vzd, self.screen_resolution))
        # RGB24 is (H, W, 3), which cv2 resizes in one call; GRAY8 lets the engine do the grey.
        rgb = self.render_native or not self.grey
        game.set_screen_format(vzd.ScreenFormat.RGB24 if rgb else vzd.ScreenFormat.GRAY8)
        game.set_sound_enabled(False)
        if spec.render_crosshair:
            game.set_render_crosshair(True)
        if self.render_hud is not None:
            game.set_render_hud(bool(self.render_hud))
        game.set_available_buttons([getattr(vzd.Button, b) for b in self._buttons])
        game.set_available_game_variables([getattr(vzd.GameVariable, v) for v in self._variables])
        if self.doom_map is not None:
            game.set_doom_map(str(self.doom_map))
        if self.doom_skill is not None:
            game.set_doom_skill(int(self.doom_skill))
        if self.episode_timeout is not None:
            game.set_episode_timeout(self.episode_timeout)
        game.set_mode(vzd.Mode.ASYNC_SPECTATOR if self.human else vzd.Mode.PLAYER)
        if spec.deathmatch:
            game.add_game_args(self._multiplayer_args())
        if self._seed is not None:
            game.set_seed(int(self._seed) % 2**31)
        _hide_descriptors_from_the_engine()
        # The engine makes ./_vizdoom/ (beside its ./_vizdoom.ini) with a check-then-mkdir: engines
        # starting together in a fresh directory race, and the loser fails ("Failed to create
        # ./_vizdoom/ directory: File exists") and takes its worker down with SIGSEGV (seen in
        # CI on a clean clone). Creating it first, idempotently, leaves nothing to race on.
        os.makedirs("_vizdoom", exist_ok=True)
        try:
            game.init()
        except Exception as err:  # ViZDoom's own exception types; keep its message
            raise EnvError(f"ViZDoom could not start '{spec.config}': {err}") from err
        self.game = game

    def _multiplayer_args(self) -> str:
        name = f"+name {self.player_name} +colorset {self.colorset}"
        timeout = f"+viz_connect_timeout {self.connect_timeout:g}"
        if self.join:
            # Only ever the local machine: matches are played between processes of one host.
            return f"-join 127.0.0.1 -port {self.port} {timeout} {name}"
        host = f"-host {self.players}"
        if self.players > 1:
            host += f" -port {self.port} -netmode 0 {timeout}"
        return f"{host} {DEATHMATCH_ARGS} {name}"

    @property
    def is_host(self) -> bool:
        return self.scenario.deathmatch and not self.join

    def _demo_path(self) -> str:
        path = str(self.record_lmp)
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

    def _push_frame(self, state) -> None:
        cv2 = self._cv2
        screen = state.screen_buffer
        self._screen = screen
        if self.grey and screen.ndim == 3:
            screen = cv2.cvtColor(screen, cv2.COLOR_RGB2GRAY)
        h, w = self.obs_size
        if screen.shape[:2] != (h, w):
            screen = cv2.resize(screen, (w, h), interpolation=cv2.INTER_AREA)
        c = self._channels
        stack = self._stack
        if self.frame_stack > 1:
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
        if self.game is None:
            if seed is not None:
                self._seed = seed
            self._init_game()
        game = self.game
        if seed is None and self._episodes == 0:
            seed = self._seed
        if seed is not None:
            # set_seed + new_episode replays an episode exactly (init's own episode is skipped).
            game.set_seed(int(seed) % 2**31)
        # Always a fresh episode (also right after init) so a seed given here replays exactly.
        if self.record_lmp:
            game.new_episode(self._demo_path())
        else:
            game.new_episode()
        self._episodes += 1
        if self.is_host and self.bots:
            # Bots leave with every new map (Arnold re-adds them the same way).
            game.send_game_command("removebots")
            for _ in range(self.bots):
                game.send_game_command("addbot")
        if self.scenario.deathmatch:
            # On this map the bots all join on the next tic (PLAYER_COUNT 1 -> 8 in one tic with
            # 7) and one often spawns onto the player: a telefrag in half the matches with 7 bots.
            # Play that tic before the episode starts, so no match opens with a death nobody
            # could avoid (a respawn takes ~37 tics of the match).
            if self.human:
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
        if state is not None:
            self._push_frame(state)
            if self.frame_stack > 1:
                self._stack[:] = np.concatenate([self._stack[-self._channels :]] * self.frame_stack)
        return self._stack.copy(), {}

    def _step_game(self, action):
        game = self.game
        if self.human:
            game.advance_action(self.frame_skip)
            game_reward = game.get_last_reward()
        else:
            game_reward = game.make_action(self._action_table[int(action)], self.frame_skip)
        finished = game.is_episode_finished()
        state = None if finished else game.get_state()
        values = self._read_variables(state)
        last, self._last = self._last, values

        tracker = self.tracker
        stats = tracker.stats
        before = (stats.deaths, stats.objects)
        tracker.update(dict(zip(self._variables, values, strict=True)))
        dead = game.is_player_dead()
        deathmatch = self.scenario.deathmatch
        if finished and dead and not deathmatch and stats.deaths == before[0]:
            tracker.player_died()

        if self.scenario.reward_source == "frags":
            raw = values[self._frag_index] - last[self._frag_index]
        else:
            raw = game_reward
        self._raw_return += raw
        self._length += 1

        if self.training:
            reward = self.reward_scale * raw
            if self._shaping:
                spec = self.scenario
                reward += spec.death_reward * (stats.deaths - before[0])
                reward += spec.object_reward * (stats.objects - before[1])
                hi = self._health_index
                if spec.health_reward and hi is not None and last[hi] > 0 and values[hi] > last[hi]:
                    reward += spec.health_reward * (values[hi] - last[hi])
        else:
            reward = raw

        terminated = truncated = False
        info: dict[str, Any] = {}
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
            if dead and deathmatch and not self.human:
                # Multiplayer continues after a death: respawn now (the stats re-base next step).
                game.respawn_player()
                state = game.get_state() or state
            self._push_frame(state)
        return self._stack.copy(), float(reward), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """The latest screen as (H, W, 3) uint8 at the engine's resolution (``screen_resolution``).

        With ``render_native=True`` it is the full-colour screen; otherwise, for grey scenarios,
        the grey screen repeated on 3 channels.
        """
        screen = self._screen
        if screen is None:
            return None
        if screen.ndim == 2:
            return np.repeat(screen[:, :, None], 3, axis=2)
        return screen.copy()

    def stats(self) -> dict[str, float]:
        """DOOM table statistics of the running episode (kills, deaths, suicides, objects, frags, K/D)."""
        return self.tracker.stats.as_dict()

    def close(self) -> None:
        if self.game is not None:
            self.game.close()
            self.game = None


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

    options = {k: v for k, v in options.items() if k != "training"}
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

    Env ``rank`` gets game seed ``seed + rank``; options are `DoomEnv`'s (see ``_OPTIONS``).
    """
    spec = get_scenario(scenario)
    check_options(spec, options)
    if num_envs < 1:
        raise EnvError(f"num_envs must be at least 1, got {num_envs}")
    if num_envs > 1:
        if options.get("human") or options.get("window_visible"):
            raise EnvError("a visible window or a human player needs num_envs=1")
        if options.get("players", 1) > 1 or options.get("join"):
            raise EnvError("a match with several players (players > 1 or join) takes num_envs=1 per player")
        if options.get("record_lmp") and "{rank}" not in str(options["record_lmp"]):
            raise EnvError(
                "record_lmp with num_envs > 1 must contain '{rank}' so the envs write different files"
            )
    # Fail here, in this process, on a bad option rather than in a worker.
    DoomEnv(spec, seed=seed, training=training, **options)
    fns = [
        functools.partial(DoomEnv, spec, seed=seed + rank, training=training, rank=rank, **options)
        for rank in range(num_envs)
    ]
    return GymVecEnv(fns, device, frame_stack=int(options.get("frame_stack", spec.frame_stack)))
