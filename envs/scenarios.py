"""The ViZDoom scenarios pixelplay serves, as data: one `DoomScenario` per name in `SCENARIOS`.

A scenario says how the game is configured (the ViZDoom ``.cfg``, map, timeouts, deathmatch or
not), what the agent sees (frame size, colour, stacking) and does (its discrete action set), and
how its training reward is shaped. `envs.doom.DoomEnv` plays one; the options a caller gives
(``envs.doom.DoomSettings``) override the per-env fields.

Sources: the scenarios' cfg files (``vizdoom.scenarios_path``) and ViZDoom's scenario docs
(vizdoom.farama.org/environments/default) for rewards, timeouts and buttons; Sample Factory's
table (sf_examples/vizdoom/doom/doom_utils.py, ``DOOM_ENVS``) for reward scales (basic and
deadly_corridor x0.01), frame skip 4 and the gathering shaping (a reward for each health rise, as
in arXiv:1904.01806); Lample & Chaplot 2017 (glample/Arnold) for deathmatch against the bots.
"""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass

from pixelplay.envs.doom_stats import TRACKED_VARIABLES
from pixelplay.envs.errors import EnvError

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
    """Observation (H, W) after an INTER_AREA resize. 68: close to the 64x64 on which a compact PPO
    learned basic in about a minute (84x84: about 105 s), and a size the Nature CNN tiles exactly
    (68 -> 16 -> 7 -> 5; 64 gives 15 -> 6.5, which agents.networks refuses); 84 (Atari's) also
    tiles."""
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
    health_loss_reward: float = 0.0
    """Training shaping: reward per health point lost in a step that loses more than
    ``health_loss_threshold`` points (negative: a penalty), e.g. a poison vial, while the acid
    floor's 8-point ticks stay below the threshold."""
    health_loss_threshold: float = 10.0
    """Smallest drop in health (exclusive) that ``health_loss_reward`` counts: Sample Factory's
    first gathering shaping penalised drops of more than 10 points
    (envs/doom/wrappers/scenario_wrappers/gathering_reward_shaping.py, commit c3a0322d)."""
    death_reward: float = 0.0
    """Training shaping: reward per death (negative: a penalty), on top of the scenario's own."""
    object_reward: float = 0.0
    """Training shaping: reward per object picked up (as counted by `DoomStatsTracker`)."""
    hit_reward: float = 0.0
    """Training shaping: reward per hit on another player or a monster (a rise of HITCOUNT, at most
    5 counted per step). With ``damage_reward`` the dense signal for aiming that frags alone do
    not give; values and caps from Sample Factory's deathmatch shaping
    (sf_examples/vizdoom/doom/wrappers/reward_shaping.py, ``REWARD_SHAPING_DEATHMATCH_V0``)."""
    damage_reward: float = 0.0
    """Training shaping: reward per point of damage dealt to others (a rise of DAMAGECOUNT, at most
    200 counted per step, so one rocket does not outweigh a frag)."""
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
    def shaping_variables(self) -> tuple[str, ...]:
        """The game variables read only for the training reward (not for the statistics)."""
        return (("HITCOUNT",) if self.hit_reward else ()) + (("DAMAGECOUNT",) if self.damage_reward else ())

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


# Action axes: each option is the buttons it holds; `_combos` crosses them into an action set.
_NONE: tuple[str, ...] = ()
_TURN = (_NONE, ("TURN_LEFT",), ("TURN_RIGHT",))
_ATTACK = (_NONE, ("ATTACK",))
_MOVE5 = (_NONE, ("MOVE_FORWARD",), ("MOVE_BACKWARD",), ("MOVE_LEFT",), ("MOVE_RIGHT",))

SCENARIOS: dict[str, DoomScenario] = {
    # Shoot the one monster: +106 on a kill, -5 per missed shot, -1 per tic; 300-tic timeout.
    # The 3 single buttons of ViZDoom's own examples, small grey frames (see obs_size).
    "basic": DoomScenario(
        config="basic.cfg",
        actions=(("MOVE_LEFT",), ("MOVE_RIGHT",), ("ATTACK",)),
        reward_scale=0.01,
    ),
    # Turn and shoot monsters closing in: +1 per kill, -1 on death; 2100 tics; 26 bullets. The
    # cfg's 3 single buttons (Sample Factory's flat variant, doom_defend_the_center_flat_actions,
    # adds a no-op). Not turn x attack: with those 6 combos PPO settled on turning while shooting
    # (~4 kills, then out of ammo and dead) and stayed there (3.05 at 400k steps, seed 2): aiming
    # means stopping the turn to fire, which a single-button set makes the only way to shoot.
    "defend_the_center": DoomScenario(
        config="defend_the_center.cfg",
        actions=(("TURN_LEFT",), ("TURN_RIGHT",), ("ATTACK",)),
    ),
    # As defend_the_center, monsters come from one side; ends on death (no cfg timeout).
    "defend_the_line": DoomScenario(
        config="defend_the_line.cfg",
        actions=_combos(_TURN, _ATTACK),
    ),
    # Survive on acid by picking up medikits: +1 per tic alive, -100 on death; 2100 tics.
    # Colour (medikits), x0.01 and +0.01 per health point gained: with x0.01 alone in grey, a
    # compact PPO did not learn in 10 minutes; Sample Factory rewards each health rise.
    "health_gathering": DoomScenario(
        config="health_gathering.cfg",
        actions=_combos((_NONE, ("MOVE_FORWARD",)), _TURN),
        grey=False,
        reward_scale=0.01,
        health_reward=0.01,
    ),
    # As health_gathering on a maze-like map with poison vials to avoid. Running held, as on
    # my_way_home: five steps forward cover ~161 units against ~93 walking, and the uniform
    # policy lives longer (385.9 against 362.4 walking, eval score --policy random, 20 games,
    # --seed 1000); at 2M steps seed 1 scores 1432.6 where the walking preset scored 1198.7
    # (same protocol). A poison vial costs 30 health; the map holds 31 medikits and 3 vials, yet
    # the 2M-step agent without a penalty picked up about one vial per 4.5 medikits, so a drop of
    # more than 10 points costs as much per point as a medikit earns (Sample Factory's gathering
    # shaping penalises health lost the same way): at 2M steps seed 1 scores 1754.8 with it and
    # 1598.5 without (eval score --episodes 20 --seed 1000; 1716.3 against 1636.0 over 100 games,
    # --seed 2000); over seeds 1-3, 1648.8 against 1532.4 (20 games) and 1703.3 against 1641.1
    # (100 games), seed 3 alone lower on the 100 games (1631.8 against 1682.3).
    "health_gathering_supreme": DoomScenario(
        config="health_gathering_supreme.cfg",
        actions=_combos((_NONE, ("MOVE_FORWARD",)), _TURN),
        held_buttons=("SPEED",),
        grey=False,
        reward_scale=0.01,
        health_reward=0.01,
        health_loss_reward=-0.01,
    ),
    # Reach the vest past shooting monsters (skill 5): reward = distance gained to the vest,
    # -100 on death; 2100 tics. Sample Factory: its extended action set, scale 0.01.
    "deadly_corridor": DoomScenario(
        config="deadly_corridor.cfg",
        actions=_combos(_MOVE5, _TURN, _ATTACK),
        reward_scale=0.01,
    ),
    # Find the vest in a maze: +1 on reaching it, -0.0001 per tic; 2100 tics. Sparse: colour
    # helps tell the rooms apart. Sample Factory: scale 1. Running held (as a person plays, and as
    # the deathmatch preset): a step covers twice the ground, and the uniform policy that PPO starts
    # from reaches the vest about three times as often (13 of 60 games against 4 of 60 walking),
    # so its first updates see three times the reward.
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
        held_buttons=("SPEED",),
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
    # -1 per death (so a suicide costs 2, as in Sample Factory's -1.5 frag -0.75 death; Arnold's
    # reward.py: kill +5, death -5), +0.1 per object picked up (Sample Factory's pickup rewards are
    # ~0.1 for a weapon or a medikit; Arnold's +1 per object is a fifth of a kill), and Sample
    # Factory's +0.01 per hit and +0.003 per damage point dealt: a pistol hit earns ~0.04, the
    # signal that teaches aiming long before frags come. 8 bots, Arnold's default (--n_bots) and
    # the table's count. Matches last 4 minutes while training (Sample Factory's timelimit), 15 for
    # evaluation (Lample & Chaplot evaluate 15 minutes per map). RGB 84x84 from 160x120, always running.
    "deathmatch": DoomScenario(
        config="cig.cfg",
        doom_map="map02",
        actions=_combos(_MOVE5, _TURN, _ATTACK),
        held_buttons=("SPEED",),
        obs_size=(84, 84),
        grey=False,
        death_reward=-1.0,
        object_reward=0.1,
        hit_reward=0.01,
        damage_reward=0.003,
        reward_source="frags",
        episode_timeout=4 * 60 * TICRATE,
        eval_episode_timeout=15 * 60 * TICRATE,
        game_variables=TRACKED_VARIABLES,
        deathmatch=True,
        bots=8,
        render_crosshair=True,
    ),
}
"""Every scenario `make_doom_vec` serves, by name (``envs.ENVS`` maps ``doom-*`` names here)."""

# Arnold's (glample/Arnold) server settings, plus no crouching. No +timelimit: in PLAYER mode it
# breaks the episodes after the first; the env ends a match with set_episode_timeout instead.
DEATHMATCH_ARGS = (
    "-deathmatch +sv_forcerespawn 1 +sv_noautoaim 1 +sv_respawnprotect 1 +sv_spawnfarthest 1 +sv_nocrouch 1"
)
"""The engine arguments of a hosted deathmatch (after ``-host N``)."""


def get_scenario(name: str | DoomScenario) -> DoomScenario:
    """The scenario called ``name``, or `EnvError` naming the closest one."""
    if isinstance(name, DoomScenario):
        return name
    if name in SCENARIOS:
        return SCENARIOS[name]
    close = difflib.get_close_matches(name.replace("-", "_"), list(SCENARIOS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise EnvError(f"unknown ViZDoom scenario '{name}'{hint} Known: {', '.join(SCENARIOS)}")


def scenario_name(scenario: DoomScenario) -> str:
    """The `SCENARIOS` key of a scenario, or its cfg's stem for one built outside the table."""
    return next((k for k, v in SCENARIOS.items() if v is scenario), scenario.config.removesuffix(".cfg"))
