"""Per-player DOOM match statistics counted from ViZDoom game variables.

The counting follows the protocol of the human-vs-agent table in Lample & Chaplot, "Playing FPS
Games with Deep Reinforcement Learning" (AAAI 2017, arXiv:1609.05521), as far as the paper and
its code (glample/Arnold) describe it:

* **kills**: each rise of FRAGCOUNT (another player fragged) or KILLCOUNT (a monster killed);
* **suicides**: each unit drop of FRAGCOUNT (own rocket, lava, ...); Doom takes a frag away;
* **deaths**: each rise of DEATHCOUNT; where the engine does not count deaths (single-player
  scenarios end on death), the env reports the death with `DoomStatsTracker.player_died`;
* **objects**: items picked up, each counted from a rise of the matching variable: HEALTH
  (medikit, stimpack), ARMOR, WEAPONn going from 0 to held, and AMMOn where that rise is not
  explained by a weapon picked up in the same step (a new weapon comes with its ammo: one object).
  ViZDoom's ITEMCOUNT is not used: it ignores ammo and medikits in multiplayer (ViZDoom #375).

A respawn refills health and resets ammo and weapons; the step that follows a death re-bases
every variable without counting pickups. Pure Python on purpose: it runs once per env step on a
handful of floats and is unit-tested on hand-made sequences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

# AMMOn is the ammo of weapon slot n, but slots 4 (chaingun) and 7 (BFG) share the counters of
# slots 2 (bullets) and 6 (cells): a clip raises AMMO2 and AMMO4 together (glample/Arnold's
# game.py notes the same). Tracking both would count one clip as two objects.
AMMO_VARIABLES = tuple(f"AMMO{i}" for i in range(1, 10) if i not in (4, 7))
WEAPON_VARIABLES = tuple(f"WEAPON{i}" for i in range(1, 10))
TRACKED_VARIABLES: tuple[str, ...] = (
    "FRAGCOUNT",
    "KILLCOUNT",
    "DEATHCOUNT",
    "HEALTH",
    "ARMOR",
    *AMMO_VARIABLES,
    *WEAPON_VARIABLES,
)
"""The ViZDoom game variables an env must expose (by these names) for full statistics."""


@dataclass
class DoomStats:
    """What the DOOM table reports for one player over one match (or episode)."""

    kills: int = 0
    deaths: int = 0
    suicides: int = 0
    objects: int = 0

    @property
    def frags(self) -> int:
        """The competitions' ranking score: kills minus suicides."""
        return self.kills - self.suicides

    @property
    def kd_ratio(self) -> float:
        """kills / max(1, deaths), the table's K/D."""
        return self.kills / max(1, self.deaths)

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "frags": self.frags, "kd_ratio": self.kd_ratio}


class DoomStatsTracker:
    """Turns a stream of game-variable snapshots into `DoomStats`.

    Call `reset` with the first snapshot of an episode, `update` with every later one, and
    `player_died` when an episode ends in a death the engine did not count in DEATHCOUNT.
    Variables missing from a snapshot are simply not counted.
    """

    def __init__(self) -> None:
        self.stats = DoomStats()
        self._last: dict[str, float] = {}
        self._dead = False

    def reset(self, values: Mapping[str, float]) -> None:
        self.stats = DoomStats()
        self._last = dict(values)
        self._dead = values.get("HEALTH", 1.0) <= 0

    def update(self, values: Mapping[str, float]) -> None:
        last, stats = self._last, self.stats

        def delta(name: str) -> float:
            if name in values and name in last:
                return values[name] - last[name]
            return 0.0

        frag_delta = delta("FRAGCOUNT")
        if frag_delta > 0:
            stats.kills += int(frag_delta)
        elif frag_delta < 0:
            stats.suicides += int(-frag_delta)
        stats.kills += max(0, int(delta("KILLCOUNT")))
        death_delta = max(0, int(delta("DEATHCOUNT")))
        stats.deaths += death_delta

        now_dead = values.get("HEALTH", 1.0) <= 0 or death_delta > 0
        if not self._dead and not now_dead:
            stats.objects += self._pickups(values, delta)
        # While dead, and on the respawn step after it, health/ammo/weapons are refilled or
        # reset by the game: re-base silently. A death flagged only by DEATHCOUNT clears once
        # health is positive again.
        self._dead = values.get("HEALTH", 1.0) <= 0 if "HEALTH" in values else False
        if death_delta > 0 and "HEALTH" not in values:
            self._dead = False
        self._last = dict(values)

    @staticmethod
    def _pickups(values: Mapping[str, float], delta) -> int:
        objects = 0
        if delta("HEALTH") > 0:
            objects += 1
        if delta("ARMOR") > 0:
            objects += 1
        new_weapons = [w for w in WEAPON_VARIABLES if delta(w) > 0 and values.get(w, 0) > 0]
        objects += len(new_weapons)
        ammo_rises = sum(1 for a in AMMO_VARIABLES if delta(a) > 0)
        # A weapon picked up for the first time also raises its ammo: count it once.
        objects += max(0, ammo_rises - len(new_weapons))
        return objects

    def player_died(self) -> None:
        """Count a death that ended an episode without a DEATHCOUNT rise (single-player maps)."""
        self.stats.deaths += 1
        self._dead = True
