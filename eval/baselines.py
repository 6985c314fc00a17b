"""Reference numbers the eval harness compares against, each with its source beside it.

A data module tested like code (DeepMind's ``dqn_zoo/atari_data.py`` is the model): every number
here is copied from the source named next to it, and ``tests/test_eval_baselines.py`` checks the
arithmetic the reports rely on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------
# Atari


@dataclass(frozen=True)
class Reference:
    """One published score."""

    score: float
    """the score (raw game points, full games)"""
    source: str
    """where it comes from"""
    std: float | None = None
    """standard deviation across seeds, where the source gives one"""


@dataclass(frozen=True)
class AtariGame:
    """Reference scores of one game; ``random`` and ``human`` define the human-normalised score."""

    random: Reference
    human: Reference
    others: dict[str, Reference]
    """further published agents, by name, for the report's comparison column"""


_NATURE = "Mnih et al. 2015, 'Human-level control through deep RL' (Nature), Extended Data Table 2"
_DQN_ZOO = "DeepMind dqn_zoo, dqn_zoo/atari_data.py (random and human, 1-30 no-op starts, 108k-frame cap)"

ATARI: dict[str, AtariGame] = {
    "breakout": AtariGame(
        random=Reference(1.7, f"{_NATURE}; the same value in {_DQN_ZOO}"),
        # dqn_zoo's human value is the one later DeepMind papers normalise with; Nature's table
        # printed 31.8 (kept below as "human (Nature table)").
        human=Reference(30.5, _DQN_ZOO),
        others={
            "human (Nature table)": Reference(31.8, _NATURE),
            "Nature DQN, 50M steps": Reference(401.2, _NATURE),
            "Rainbow": Reference(417.5, "Hessel et al. 2018, 'Rainbow', no-op starts"),
            "Ape-X": Reference(800.9, "Horgan et al. 2018, 'Distributed Prioritized Experience Replay'"),
            "game maximum": Reference(864.0, "a full clear of both walls (2 x 432 points)"),
            "CleanRL PPO, 10M steps": Reference(414.7, "CleanRL docs, ppo_atari.py benchmark", std=28.1),
            "CleanRL DQN, 10M steps": Reference(366.9, "CleanRL docs, dqn_atari.py benchmark", std=39.9),
            "RL Zoo PPO, 10M steps": Reference(398.0, "rl-baselines3-zoo benchmark.md (Stable-Baselines3)"),
            "RL Zoo DQN, 10M steps": Reference(358.3, "rl-baselines3-zoo benchmark.md (Stable-Baselines3)"),
            "RL Zoo A2C, 10M steps": Reference(279.8, "rl-baselines3-zoo benchmark.md (Stable-Baselines3)"),
        },
    ),
    "pong": AtariGame(
        random=Reference(-20.7, _DQN_ZOO),
        human=Reference(14.6, _DQN_ZOO),
        others={},
    ),
}
"""Games with references, keyed by ALE's game name (``breakout``, as in ``ALE/Breakout-v5``)."""

def atari_game_name(env_id: str) -> str:
    """``breakout`` for ``breakout``, ``ALE/Breakout-v5`` and ``BreakoutNoFrameskip-v4``; ALE's
    snake-case names (``ms_pacman`` for ``MsPacman``)."""
    name = env_id.split("/")[-1]
    for suffix in ("NoFrameskip-v4", "-v5", "-v4"):
        name = name.removesuffix(suffix)
    if name.islower():
        return name.replace("-", "_")
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i > 0:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def atari_references(env_id: str) -> AtariGame | None:
    """The references of the game behind an env name or ALE id, or None where none are recorded."""
    return ATARI.get(atari_game_name(env_id))


def human_normalized(score: float, random: float, human: float) -> float:
    """(score - random) / (human - random): 0 is the random policy, 1 the human tester."""
    if human == random:
        return math.nan
    return (score - random) / (human - random)


def human_normalized_score(env_id: str, score: float) -> float:
    """The human-normalised score of ``score`` on ``env_id``'s game (NaN where no reference)."""
    game = atari_references(env_id)
    if game is None:
        return math.nan
    return human_normalized(score, game.random.score, game.human.score)



# ---------------------------------------------------------------------------------------------
# ViZDoom: the human-vs-agent table of Lample & Chaplot 2017


DOOM_TABLE_SOURCE = (
    "Lample & Chaplot, 'Playing FPS Games with Deep Reinforcement Learning' (AAAI 2017, "
    "arXiv:1609.05521), table comparing human players with the agent (Arnold)"
)

DOOM_METRICS: tuple[str, ...] = ("objects", "kills", "deaths", "suicides", "kd_ratio")
"""The table's rows, in the paper's order."""

DOOM_METRIC_LABELS: dict[str, str] = {
    "objects": "Number of objects",
    "kills": "Number of kills",
    "deaths": "Number of deaths",
    "suicides": "Number of suicides",
    "kd_ratio": "K/D ratio",
}

DOOM_SETTINGS: tuple[str, ...] = ("single_player", "multiplayer")
"""Single player: each plays deathmatch against the built-in bots, in separate games.
Multiplayer: the human and the agent play against each other in one game."""

DOOM_PAPER: dict[str, dict[str, dict[str, float]]] = {
    # setting -> player -> metric -> published value (per-match means), DOOM_TABLE_SOURCE.
    "single_player": {
        "human": {"objects": 5.2, "kills": 12.6, "deaths": 8.3, "suicides": 3.6, "kd_ratio": 1.52},
        "agent": {"objects": 9.2, "kills": 27.6, "deaths": 5.0, "suicides": 2.0, "kd_ratio": 5.12},
    },
    "multiplayer": {
        "human": {"objects": 6.1, "kills": 5.5, "deaths": 11.2, "suicides": 3.2, "kd_ratio": 0.49},
        "agent": {"objects": 10.5, "kills": 8.0, "deaths": 6.0, "suicides": 0.5, "kd_ratio": 1.33},
    },
}
"""The published table, exactly as printed (including the K/D cell that does not match)."""


def kd_ratio(kills: float, deaths: float) -> float:
    """The table's K/D: kills / max(1, deaths)."""
    return kills / max(1.0, deaths)


@dataclass(frozen=True)
class KDMismatch:
    """A published K/D cell that its own kills and deaths do not give."""

    setting: str
    player: str
    published: float
    computed: float

    @property
    def note(self) -> str:
        cells = DOOM_PAPER[self.setting][self.player]
        return (
            f"published K/D {self.published:.2f} does not match its own kills / deaths = "
            f"{cells['kills']:.1f} / {cells['deaths']:.1f} = {self.computed:.2f}"
        )


def paper_kd_mismatches(tolerance: float = 0.005) -> list[KDMismatch]:
    """Published K/D cells that differ from kills / max(1, deaths) by more than rounding.

    Exactly one in the paper: the single-player agent, 27.6 / 5.0 = 5.52 printed as 5.12.
    """
    found = []
    for setting, players in DOOM_PAPER.items():
        for player, cells in players.items():
            computed = kd_ratio(cells["kills"], cells["deaths"])
            if abs(computed - cells["kd_ratio"]) > tolerance:
                found.append(KDMismatch(setting, player, cells["kd_ratio"], computed))
    return found


# Other ViZDoom reference points, for context in reports (not part of the table).
DOOM_OTHER: dict[str, Reference] = {
    "Sample Factory 2, deathmatch vs bots (frags)": Reference(
        85.66, "Petrenko et al., Sample Factory published checkpoints, 10 runs", std=28.53
    ),
    "Sample Factory 2, duel vs bots (frags)": Reference(
        55.39, "Petrenko et al., Sample Factory published checkpoints, 10 runs", std=17.13
    ),
}
