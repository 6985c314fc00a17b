"""How a person plays a ViZDoom game: the window's size and the keys, as data.

A `DoomEnv` with ``human=True`` runs ViZDoom in ``ASYNC_SPECTATOR`` mode: the game advances in
real time (35 tics a second) and the person at the window moves the player with the keyboard and
the mouse, through the engine's own input (ViZDoom's ``examples/python/spectator.py`` plays the
same way). The agent's observations are unchanged by any of this: a person's game is its own
process with its own screen resolution.

The keys are bound by the env itself (`console_commands`, sent to the engine's console right after
it starts), so the block printed before a match (`controls_text`) is what the window does, whatever
an earlier session left in ``_vizdoom.ini``. ZDoom's own defaults (arrows, Ctrl, Space; its
``defbinds.txt``) stay, with the W/A/S/D layout of later shooters beside them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pixelplay.envs.errors import EnvError

MIN_HUMAN_SCREEN = (640, 480)
"""The smallest window a person is given (width, height): at the agent's 160x120 the game is a
thumbnail nobody can play; 640x480 is the resolution of ViZDoom's spectator example."""

HUMAN_SCREENS: tuple[str, ...] = (
    "640x480", "800x500", "800x600", "1024x576", "1024x640", "1024x768", "1280x720", "1280x800",
    "1280x960", "1280x1024", "1400x787", "1400x875", "1400x1050", "1600x900", "1600x1000",
    "1600x1200", "1920x1080",
)
"""ViZDoom's screen resolutions (``vizdoom.ScreenResolution``) at least `MIN_HUMAN_SCREEN` in both
directions: the sizes a person's window can have."""


@dataclass(frozen=True)
class HumanControl:
    """One line of the controls: what it does, and the (key, ZDoom console command) pairs bound."""

    what: str
    """what the person does with it, as printed"""
    binds: tuple[tuple[str, str], ...]
    """ZDoom key names and the console command each is bound to (``bind KEY COMMAND``)"""
    label: str = ""
    """the keys as printed (default: the bound keys' names, joined)"""

    @property
    def keys(self) -> str:
        return self.label or " / ".join(KEY_NAMES.get(key, key.upper()) for key, _ in self.binds)


KEY_NAMES = {
    "uparrow": "Up arrow", "downarrow": "Down arrow", "leftarrow": "Left arrow", "rightarrow": "Right arrow",
    "ctrl": "Ctrl", "shift": "Shift", "space": "Space", "tab": "Tab",
    "mouse1": "left mouse button", "mwheelup": "wheel up", "mwheeldown": "wheel down",
}
"""How ZDoom's key names are printed."""

HUMAN_CONTROLS: tuple[HumanControl, ...] = (
    HumanControl("move forward", (("w", "+forward"), ("uparrow", "+forward"))),
    HumanControl("move back", (("s", "+back"), ("downarrow", "+back"))),
    HumanControl("strafe left", (("a", "+moveleft"),)),
    HumanControl("strafe right", (("d", "+moveright"),)),
    HumanControl("turn left", (("leftarrow", "+left"),)),
    HumanControl("turn right", (("rightarrow", "+right"),)),
    HumanControl("turn (left and right only: the agent cannot look up or down either)", (), label="mouse"),
    HumanControl("fire", (("ctrl", "+attack"), ("mouse1", "+attack"))),
    HumanControl("open a door, press a switch", (("space", "+use"), ("e", "+use"))),
    HumanControl("choose a weapon", tuple((str(n), f"slot {n}") for n in range(1, 8)), label="1 - 7"),
    HumanControl("next / previous weapon", (("mwheeldown", "weapnext"), ("mwheelup", "weapprev"))),
    HumanControl("walk while held (you run by default, as the agent always does)", (("shift", "+speed"),)),
    HumanControl("map", (("tab", "togglemap"),)),
)
"""The keys of a person's window, in the order printed."""

HUMAN_SETTINGS: tuple[str, ...] = (
    "cl_run 1",  # always run: the deathmatch agent holds SPEED on every action (envs.scenarios)
    "freelook 0",  # no looking up or down, as for the agent (its actions only turn)
    "novert 1",  # and so the mouse's vertical motion does nothing (without it, it walks)
)
"""ZDoom console settings for a person's game, beside the key bindings."""

HUMAN_CONFIG_FILE = "_vizdoom_human.ini"
"""The engine's config file for a person's game (`DoomEnv` with ``human=True``). ZDoom writes its
settings and bindings back to its config file when the game closes; with the agents' ``_vizdoom.ini``
a person's ``cl_run 1`` would carry over into every later agent game started in that directory
(running doubles the keyboard turn and the move speed, so the same actions would play another game)."""

AGENT_SETTINGS: tuple[str, ...] = ("cl_run 0",)
"""Console settings every agent game starts with, whatever a ``_vizdoom.ini`` in its directory says
(left by a person's game of an older version, or by ViZDoom's own spectator example): the speed of
the actions an agent was trained with must not depend on a file it does not own."""


def console_commands() -> list[str]:
    """The console commands that give a person's game its controls (`HUMAN_CONTROLS`, `HUMAN_SETTINGS`)."""
    # Quoted: ZDoom's bind takes one argument, so an unquoted "bind 1 slot 1" binds "slot" alone.
    binds = [f'bind {key} "{command}"' for control in HUMAN_CONTROLS for key, command in control.binds]
    return [*binds, *HUMAN_SETTINGS]


def controls_text() -> str:
    """The controls as an aligned block of lines, for the terminal before a person's match."""
    width = max(len(control.keys) for control in HUMAN_CONTROLS)
    return "\n".join(f"  {control.keys:<{width}}  {control.what}" for control in HUMAN_CONTROLS)


def screen_size(resolution: str) -> tuple[int, int]:
    """(width, height) of a screen resolution written ``640x480`` or ``RES_640X480``."""
    match = re.fullmatch(r"(?:RES_)?(\d+)X(\d+)", str(resolution).strip().upper())
    if match is None:
        raise EnvError(f"a screen resolution is WIDTHxHEIGHT, e.g. 640x480; got {resolution!r}")
    return int(match.group(1)), int(match.group(2))


def check_human_screen(resolution: str) -> str:
    """``resolution`` if a person's window can have it (one of `HUMAN_SCREENS`), else `EnvError`."""
    width, height = screen_size(resolution)
    name = f"{width}x{height}"
    if name not in HUMAN_SCREENS:
        raise EnvError(
            f"a person's window must be one of ViZDoom's resolutions of at least "
            f"{MIN_HUMAN_SCREEN[0]}x{MIN_HUMAN_SCREEN[1]} ({', '.join(HUMAN_SCREENS)}); got {resolution!r}"
        )
    return name
