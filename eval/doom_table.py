"""The human-vs-agent DOOM table (Lample & Chaplot 2017), with this project's agent in it.

Two settings, as in the paper:

* **single player**: the agent plays deathmatch against the game's built-in bots, alone with
  them in its own game (and, with ``--human``, a person does the same in a separate game);
* **multiplayer**: the agent and an opponent (a second checkpoint, a scripted or random player,
  or a person) in one game (``-host 2 -port P -netmode 0`` and ``-join 127.0.0.1 -port P``). ZDoom
  binds the port on every address, so each match runs in a network namespace of its own with only
  loopback (`eval.match`); where none can be made, the protocol says the port was open.

Each match is played by `eval.match`: every player in its own process, the match guarded
against stalls, deaths and overruns and replayed (same seed) up to ``retries`` times; such a
match is reported as retried and its partial statistics are dropped. This module says who plays
which matches (`TableConfig`, `run_table`) and reports them (`render_markdown`, `write_outputs`).

Statistics per player come from `envs.doom_stats.DoomStatsTracker` via the env's ``stats()``
(kills, deaths, suicides, objects; K/D = kills / max(1, deaths)). Each column of the table is the
per-match mean, and its K/D is computed from the mean kills and deaths, as the paper's cells are
(12.6 / 8.3 = 1.52), so a column is consistent by construction; the published single-player agent
K/D (5.12 for 27.6 / 5.0 = 5.52) is printed as published and flagged.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pixelplay.agents.config import bounded
from pixelplay.envs import EnvSpec, env_spec, make_env
from pixelplay.envs.doom import BOTS_READD
from pixelplay.envs.doom_human import HUMAN_SCREENS, check_human_screen, controls_text
from pixelplay.envs.errors import MissingDependencyError, PixelplayError
from pixelplay.eval.baselines import (
    DOOM_METRIC_LABELS,
    DOOM_METRICS,
    DOOM_PAPER,
    DOOM_TABLE_SOURCE,
    kd_ratio,
    paper_kd_mismatches,
)
from pixelplay.eval.common import atomic_write_json, atomic_write_text, display_available
from pixelplay.eval.match import MatchRecord, PlayerSpec, free_udp_port, network_note, run_match
from pixelplay.eval.policies import PolicySpec, action_selection

TABLE_ENV = "doom-deathmatch"
"""The env name (``envs.ENVS``) whose agents can sit at the table."""

SETTING_LABELS = {"single_player": "Single player", "multiplayer": "Multiplayer"}


@functools.cache
def table_spec() -> EnvSpec:
    """The `EnvSpec` of the table's env in evaluation: its frame skip and tics per second."""
    return env_spec(TABLE_ENV, training=False)


@dataclass
class TableConfig:
    """How the table's matches are played (defaults follow the paper's protocol, see `protocol`)."""

    map: str = "map02"
    """map of ViZDoom's cig.wad (the CIG 2016 competition maps): map02 is the full deathmatch map the doom-deathmatch env trains on; map01 is rocket launchers only"""
    bots: int = bounded(8, low=0, high=15)
    """built-in bots in the single-player games (glample/Arnold's --n_bots default)"""
    skill: int = bounded(3, low=1, high=5)
    """Doom skill 1-5 (Arnold: its doom_skill 2, passed to ViZDoom as 2 + 1)"""
    minutes: float = bounded(15.0, low=0.01)
    """game time per match, in minutes (Arnold evaluates 15 minutes per map)"""
    matches: int = bounded(3, low=1)
    """matches per setting for the agent; the table reports per-match means"""
    human_matches: int = bounded(1, low=1)
    """matches per setting for the person with --human (each lasts `minutes` of real time)"""
    mp_bots: int = bounded(0, low=0, high=14)
    """built-in bots in the multiplayer games (the paper: the agent and the human only)"""
    opponent: str = "random"
    """multiplayer opponent: random, scripted, or a checkpoint / run directory"""
    human: bool = False
    """a person plays in a ViZDoom window (needs a display) in the 'you' columns, beside the paper's humans: against the bots in single player, against the agent in multiplayer"""
    human_screen: str = bounded("640x480", choices=HUMAN_SCREENS)
    """the person's game window with --human (ViZDoom renders a person's game at this size in its own process; the agent's observations are unchanged)"""
    bots_readd: str = bounded("respawn", choices=BOTS_READD)
    """when the host re-adds the bots (removebots, then addbot n times): 'respawn' at each death of the agent, before it respawns (glample/Arnold re-adds them at each respawn; re-added after it, they can spawn onto it), or 'match' once per match"""
    settings: tuple[str, ...] = ("single_player", "multiplayer")
    """which halves of the table to play"""
    seed: int = bounded(1, low=0, high=2**31 - 1_000_000)
    """base seed: match i of a setting is seeded from it, the same on a retry"""
    stall_timeout: float = bounded(60.0, low=1.0)
    """seconds without progress from a player before its match is killed and replayed"""
    match_timeout: float = bounded(0.0, low=0.0)
    """wall-clock limit per match in seconds (0: derived from `minutes`)"""
    retries: int = bounded(2, low=0)
    """replays of a match whose game died or hung, before it is given up"""
    connect_timeout: float = bounded(30.0, low=1.0)
    """seconds the multiplayer host waits for the other player to join"""
    device: str = "cpu"
    """torch device of the agents"""
    epsilon: float | None = bounded(None, low=0.0, high=1.0)
    """DQN agents: evaluation epsilon (None: the checkpoint's)"""
    fault: str = bounded("", choices=("", "hang", "die"))
    """testing only: 'hang' or 'die' makes the first attempt of each setting's first match fail"""

    def validate(self) -> None:
        if self.bots < 0 or self.mp_bots < 0 or self.bots > 15 or self.mp_bots > 14:
            raise PixelplayError(f"--bots must be 0-15 and --mp-bots 0-14, got {self.bots} and {self.mp_bots}")
        if not 1 <= self.skill <= 5:
            raise PixelplayError(f"--skill must be 1-5, got {self.skill}")
        if not self.minutes > 0:
            raise PixelplayError(f"--minutes must be positive, got {self.minutes}")
        if self.matches < 1 or self.human_matches < 1:
            raise PixelplayError("--matches and --human-matches must be at least 1")
        if self.retries < 0:
            raise PixelplayError(f"--retries must be >= 0, got {self.retries}")
        if self.bots_readd not in BOTS_READD:
            raise PixelplayError(f"--bots-readd must be one of {', '.join(BOTS_READD)}, got {self.bots_readd}")
        unknown = set(self.settings) - set(SETTING_LABELS)
        if unknown or not self.settings:
            raise PixelplayError(f"unknown setting(s) {sorted(unknown)}; choose from {', '.join(SETTING_LABELS)}")
        if self.fault not in ("", "hang", "die"):
            raise PixelplayError(f"unknown fault '{self.fault}'")
        check_human_screen(self.human_screen)

    @property
    def tics(self) -> int:
        """Game tics per match: the env's episode timeout."""
        return round(self.minutes * 60 * table_spec().frames_per_second)

    def wall_limit(self, human: bool) -> float:
        """Seconds one match may take: real time for a person, a generous bound for programs."""
        if self.match_timeout > 0:
            return self.match_timeout
        if human:
            return self.minutes * 60 * 1.5 + 120
        # Programs play faster than real time: timed with python -m pixelplay.eval doom-table on 2
        # CPU cores, a random player against 8 bots makes ~450 agent steps/s and an untrained PPO
        # agent in a two-process match 40-100. The bound allows 40 ms a step (25 steps/s) after
        # two minutes to start.
        return 120 + 0.040 * self.tics / table_spec().frame_skip


def require_display() -> None:
    if not display_available():
        raise MissingDependencyError(
            "--human opens a ViZDoom window for a person to play in, and no display is set "
            "(neither DISPLAY nor WAYLAND_DISPLAY); run it in a desktop session (or ssh -X)"
        )


# ---------------------------------------------------------------------------------------------
# The two settings


def _env_options(cfg: TableConfig, policy: PolicySpec | None = None, **extra) -> dict[str, Any]:
    """A seat's env options: the match's, then ``policy``'s (`human_options` for a person), then ``extra``."""
    options = {
        "map": cfg.map,
        "doom_skill": cfg.skill,
        "episode_timeout": cfg.tics,
        "connect_timeout": cfg.connect_timeout,
        "bots_readd": cfg.bots_readd,
    }
    if policy is not None and policy.kind == "human":
        options.update(human_options(cfg))
    if policy is not None:
        options.update(policy.env_options())  # a checkpoint's frame stack
    options.update(extra)
    return options


def human_options(cfg: TableConfig) -> dict[str, Any]:
    """The env options that make a seat a person's: a window of ``cfg.human_screen`` (ViZDoom
    renders each process's game at its own resolution, so the agent's 160x120 screen and
    observations stay as they are), the status bar (health, armour, ammo: a person reads them
    there), and ViZDoom's real-time spectator mode with the keys of `envs.doom_human`."""
    return {"human": True, "screen_resolution": cfg.human_screen, "render_hud": True}


def single_player_players(
    cfg: TableConfig, policy: PolicySpec, name: str, seed: int, fault: str
) -> list[PlayerSpec]:
    """One player alone with ``cfg.bots`` built-in bots in its own game."""
    options = _env_options(cfg, policy, bots=cfg.bots, player_name=name)
    return [PlayerSpec(name, policy, TABLE_ENV, seed, options, fault=fault)]


def multiplayer_players(
    cfg: TableConfig, agent: PolicySpec, opponent: PolicySpec, seed: int, port: int, fault: str
) -> list[PlayerSpec]:
    """The agent hosting a two-player game on 127.0.0.1:``port`` and the opponent joining it."""
    # The agent hosts (a human or a second program joins): the joining side of a ViZDoom netgame
    # sometimes advances 5-7 tics per 4-tic action, so the agent under test hosts.
    host = _env_options(cfg, bots=cfg.mp_bots, players=2, port=port, player_name="agent", colorset=0,
                        **agent.env_options())
    guest = _env_options(cfg, opponent, join=True, port=port, player_name="opponent", colorset=3)
    return [
        PlayerSpec("agent", agent, TABLE_ENV, seed, host, fault=fault),
        PlayerSpec("opponent", opponent, TABLE_ENV, seed + 500, guest),
    ]


def summarize(matches: list[MatchRecord], player: str) -> dict[str, Any] | None:
    """Per-match means of a player's statistics over the counted matches; K/D from the means."""
    rows = [m.players[player] for m in matches if m.counted]
    if not rows:
        return None
    summary: dict[str, Any] = {}
    for metric in ("objects", "kills", "deaths", "suicides"):
        values = [row[metric] for row in rows]
        summary[metric] = statistics.fmean(values)
        summary[f"{metric}_std"] = statistics.pstdev(values)
    summary["kd_ratio"] = kd_ratio(summary["kills"], summary["deaths"])
    summary["frags"] = summary["kills"] - summary["suicides"]
    summary["matches"] = len(rows)
    return summary


def _play_series(cfg: TableConfig, count: int, base_seed: int, human: bool, log, make_players) -> list[MatchRecord]:
    """``count`` matches seeded ``base_seed + i``; ``make_players(seed, fault)`` seats each attempt."""
    records = []
    for i in range(count):
        record = run_match(make_players, i, base_seed + i, retries=cfg.retries, stall_timeout=cfg.stall_timeout,
                           wall_limit=cfg.wall_limit(human), fault=cfg.fault if i == 0 else "", log=log)
        _log_match(log, record)
        records.append(record)
    return records


def _setting_result(matches: list[MatchRecord], players: dict[str, str]) -> dict[str, Any]:
    return {
        "players": {key: {"policy": label, "summary": summarize(matches, key)} for key, label in players.items()},
        "matches": [asdict(m) | {"retried": m.retried, "counted": m.counted} for m in matches],
        "retried": [m.index + 1 for m in matches if m.retried],
        "failed": [m.index + 1 for m in matches if not m.counted],
    }


def human_turn(cfg: TableConfig, what: str, log=print, stdin=None) -> None:
    """Before a person's matches: say what they play, in which window, with which keys, and wait
    for Enter, but only at a terminal (``stdin``, default ``sys.stdin``): a test, a CI job or a
    piped run is never left waiting."""
    log(f"\nYour turn: {what}.\nThe game opens in a {cfg.human_screen} ViZDoom window and runs in real time; "
        f"click into it so it gets the keys. Your keys:")
    log(controls_text())
    stdin = sys.stdin if stdin is None else stdin
    try:
        at_terminal = stdin is not None and stdin.isatty()
    except ValueError:  # a closed stream
        at_terminal = False
    if at_terminal:
        log("Press Enter when you are ready.")
        stdin.readline()


def run_table(agent: PolicySpec, cfg: TableConfig, log=print, stdin=None) -> dict[str, Any]:
    """Play every match of the table and return it as a JSON-ready dict.

    With ``cfg.human`` a person's turns are announced (`human_turn`, reading ``stdin``)."""
    cfg.validate()
    if cfg.human:
        require_display()
    opponent = None  # only the multiplayer half has one
    if "multiplayer" in cfg.settings:
        opponent = PolicySpec("human") if cfg.human else _opponent_spec(cfg)
    started = time.monotonic()
    result: dict[str, Any] = {
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "agent": agent.label,
        "agent_actions": action_selection(agent),
        "opponent": None if opponent is None else opponent.label,
        "config": {k: v for k, v in asdict(cfg).items() if k != "fault"},
        "protocol": protocol(cfg),
        "paper": {"source": DOOM_TABLE_SOURCE, "table": DOOM_PAPER,
                  "flags": [asdict(m) | {"note": m.note} for m in paper_kd_mismatches()]},
    }
    for s_index, setting in enumerate(cfg.settings):
        base_seed = cfg.seed + 1000 * s_index
        if setting == "single_player":
            log(f"Single player: {cfg.matches} match(es) of {cfg.minutes:g} min, the agent against {cfg.bots} bots")
            matches = _play_series(cfg, cfg.matches, base_seed, False, log,
                                   lambda seed, fault: single_player_players(cfg, agent, "agent", seed, fault))
            entry = _setting_result(matches, {"agent": agent.label})
            if cfg.human:
                human_turn(cfg, f"single player, {cfg.human_matches} match(es) of {cfg.minutes:g} min against "
                                f"{cfg.bots} bots", log, stdin)
                people = _play_series(cfg, cfg.human_matches, base_seed + 100, True, log,
                                      lambda seed, fault: single_player_players(
                                          cfg, PolicySpec("human"), "human", seed, ""))
                entry["human"] = _setting_result(people, {"human": "a person (--human)"})
        else:
            count = cfg.human_matches if cfg.human else cfg.matches
            if cfg.human:
                human_turn(cfg, f"multiplayer, {count} match(es) of {cfg.minutes:g} min against the agent"
                                + (f" and {cfg.mp_bots} bots" if cfg.mp_bots else ""), log, stdin)
            log(f"Multiplayer: {count} match(es) of {cfg.minutes:g} min, the agent against {opponent.label}"
                + (f" and {cfg.mp_bots} bots" if cfg.mp_bots else ""))
            # A fresh port for every attempt: a killed match may leave its port taken for a while.
            matches = _play_series(cfg, count, base_seed, cfg.human, log,
                                   lambda seed, fault: multiplayer_players(cfg, agent, opponent, seed,
                                                                           free_udp_port(), fault))
            entry = _setting_result(matches, {"agent": agent.label, "opponent": opponent.label})
            entry["cross_check"] = _cross_check(matches, cfg)
        result[setting] = entry
    result["wall_time_s"] = round(time.monotonic() - started, 1)
    return result


def _opponent_spec(cfg: TableConfig) -> PolicySpec:
    from pixelplay.eval.policies import parse_policy

    spec = parse_policy(cfg.opponent, cfg.epsilon, cfg.device)
    if spec.kind == "checkpoint":
        check_table_checkpoint(spec, "--opponent")
    return spec


def check_table_checkpoint(spec: PolicySpec, what: str = "the agent") -> None:
    """A checkpoint at the table must be a doom-deathmatch agent (its actions and inputs)."""
    from pixelplay.eval.policies import checkpoint_env

    env_id = checkpoint_env(spec)
    if env_id != TABLE_ENV:
        raise PixelplayError(
            f"doom-table plays {TABLE_ENV}; {what} '{spec.path}' was trained on {env_id} "
            f"(train one with: python train.py --env {TABLE_ENV})"
        )


def _cross_check(matches: list[MatchRecord], cfg: TableConfig) -> dict[str, Any] | None:
    """Without bots, each death is the other player's kill or one's own suicide:
    deaths(A) = kills(B) + suicides(A). Reported, not enforced (a kill and a suicide in the same
    4-tic step cancel in FRAGCOUNT)."""
    if cfg.mp_bots:
        return None
    rows = [m.players for m in matches if m.counted]
    out = []
    for players in rows:
        a, b = players["agent"], players["opponent"]
        out.append({
            "agent_deaths": a["deaths"], "opponent_kills_plus_agent_suicides": b["kills"] + a["suicides"],
            "opponent_deaths": b["deaths"], "agent_kills_plus_opponent_suicides": a["kills"] + b["suicides"],
        })
    return {"rule": "deaths(A) = kills(B) + suicides(A) when no bots play", "matches": out}


def _log_match(log, record: MatchRecord) -> None:
    if record.counted:
        parts = []
        for name, s in record.players.items():
            parts.append(f"{name}: {s['kills']} kills, {s['deaths']} deaths, {s['suicides']} suicides, "
                         f"{s['objects']} objects ({s['wall_s']:.0f} s)")
        retried = f" [retried: {record.attempts} attempts]" if record.retried else ""
        log(f"  match {record.index + 1}: " + "; ".join(parts) + retried)
    else:
        log(f"  match {record.index + 1}: not counted, failed {record.attempts} times: {record.failures[-1]}")


def protocol(cfg: TableConfig) -> dict[str, Any]:
    """What was used, in words and flags, next to what the paper did."""
    host = make_env(TABLE_ENV, training=False, **_env_options(cfg, bots=cfg.bots))  # starts no game
    return {
        "wad": f"ViZDoom {host.scenario.config.replace('.cfg', '.wad')}, map {cfg.map}",
        "server": f"-host 1 {host.server_args} (single player); -host 2 -port P -netmode 0 and "
                  f"-join 127.0.0.1 -port P (multiplayer)",
        **({"network": network_note(cfg.human)} if "multiplayer" in cfg.settings else {}),
        "bots": f"{cfg.bots} built-in bots in single player, {cfg.mp_bots} in multiplayer; removebots then addbot "
                + ("at each death of the agent, before its respawn (Arnold: at each respawn)" if cfg.bots_readd == "respawn" else "once per match"),
        "skill": cfg.skill,
        "minutes_per_match": cfg.minutes,
        "time_limit": "ViZDoom episode timeout (set_episode_timeout), not +timelimit",
        "matches": cfg.matches,
        "frame_skip": host.frame_skip,
        **({"person": f"a person (--human) plays in a process of their own, in a {cfg.human_screen} window with the "
                      f"status bar, in ViZDoom's ASYNC_SPECTATOR mode (real time, 35 tics/s), always running and "
                      f"never looking up or down, as the agent; keys as printed before the match (envs/doom_human.py); "
                      f"the agent's screen ({host.settings.screen_resolution}) and observations are unchanged"}
           if cfg.human else {}),
        "counting": "DoomStatsTracker over game variables: kills = FRAGCOUNT rises, suicides = FRAGCOUNT drops, "
                    "deaths = DEATHCOUNT rises, objects = health/armor/weapon/ammo rises (AMMO4/AMMO7 duplicates "
                    "of AMMO2/AMMO6 left out); K/D = kills / max(1, deaths) of the per-match means",
        "paper_differences": [
            "the table's protocol is known only in part (maps, bots, the human players' conditions); this uses "
            "ViZDoom's CIG 2016 map and glample/Arnold's evaluation defaults (8 bots, 15 minutes, skill 3)",
            "glample/Arnold's evaluation code plays maps of its own full_deathmatch.wad (README: test maps 6-8); "
            "here one map and several matches",
            *(["the multiplayer opponent is " + ("a person (--human)" if cfg.human else f"'{cfg.opponent}', not a person")]
              if "multiplayer" in cfg.settings else []),
        ],
    }


# ---------------------------------------------------------------------------------------------
# Rendering


def _fmt(value: float | None, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" if metric == "kd_ratio" else f"{value:.1f}"


def table_columns(result: dict[str, Any]) -> list[tuple[str, str, dict | None, set[str]]]:
    """(setting, header, cells, flagged metrics) for every column, in print order."""
    flags = {(f["setting"], f["player"]) for f in result["paper"]["flags"]}
    columns = []
    for setting in ("single_player", "multiplayer"):
        if setting not in result:
            continue
        entry = result[setting]
        short = "SP" if setting == "single_player" else "MP"
        paper = DOOM_PAPER[setting]
        opponent_is_human = setting == "multiplayer" and result["opponent"] == "human"
        flagged = {"kd_ratio"} if (setting, "human") in flags else set()
        columns.append((setting, f"{short}: human (paper)", paper["human"], flagged))
        # The person at the keyboard (--human), beside the paper's humans rather than instead of them.
        if setting == "single_player" and "human" in entry:
            columns.append((setting, f"{short}: you", entry["human"]["players"]["human"]["summary"], set()))
        elif opponent_is_human:
            columns.append((setting, f"{short}: you", entry["players"]["opponent"]["summary"], set()))
        flagged = {"kd_ratio"} if (setting, "agent") in flags else set()
        columns.append((setting, f"{short}: Arnold (paper)", paper["agent"], flagged))
        columns.append((setting, f"{short}: this agent", entry["players"]["agent"]["summary"], set()))
        if setting == "multiplayer" and not opponent_is_human:
            columns.append((setting, f"{short}: its opponent ({result['opponent']})",
                            entry["players"]["opponent"]["summary"], set()))
    return columns


def render_markdown(result: dict[str, Any]) -> str:
    columns = table_columns(result)
    lines = ["# DOOM: human vs agent", ""]
    header = f"Agent: {result['agent']}" + (f" ({result['agent_actions']})." if result.get("agent_actions") else ".")
    if "multiplayer" in result:  # the opponent of a match that was played, not of the flags
        header += f" Multiplayer opponent: {result['opponent']}."
    if any(c[1].endswith(": you") for c in columns):
        header += " You: the person at the keyboard (--human), beside the paper's human players."
    lines.append(header)
    lines.append("")
    header = "| Evaluation metric | " + " | ".join(c[1] for c in columns) + " |"
    lines += [header, "|---|" + "---:|" * len(columns)]
    for metric in DOOM_METRICS:
        cells = []
        for _, _, values, flagged in columns:
            text = _fmt(None if values is None else values.get(metric), metric)
            if metric in flagged:
                text += " (!)"
            cells.append(text)
        lines.append(f"| {DOOM_METRIC_LABELS[metric]} | " + " | ".join(cells) + " |")
    lines.append("")
    for flag in result["paper"]["flags"]:
        lines.append(f"(!) {SETTING_LABELS[flag['setting']]}, {flag['player']} column of the paper: {flag['note']}.")
    lines.append(f"Paper: {result['paper']['source']}.")
    lines.append("Columns are per-match means; K/D = mean kills / max(1, mean deaths).")
    lines.append("")
    lines.append("## Protocol")
    for key, value in result["protocol"].items():
        if isinstance(value, list):
            value = "; ".join(value)
        lines.append(f"- {key.replace('_', ' ')}: {value}")
    lines.append("")
    lines.append("## Matches")
    for setting in ("single_player", "multiplayer"):
        if setting not in result:
            continue
        entry = result[setting]
        groups = [("", entry)] + ([("person: ", entry["human"])] if "human" in entry else [])
        for prefix, group in groups:
            counted = sum(m["counted"] for m in group["matches"])
            line = f"- {SETTING_LABELS[setting]}, {prefix}{counted} of {len(group['matches'])} match(es) counted"
            if group["retried"]:
                line += f"; retried (a game died or hung, partial stats dropped): match(es) {group['retried']}"
            if group["failed"]:
                line += f"; given up: match(es) {group['failed']}"
            lines.append(line)
    lines.append(f"- wall time: {result['wall_time_s']} s")
    return "\n".join(lines) + "\n"


def write_outputs(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """doom_table.json and doom_table.md in ``out_dir``, each written atomically."""
    json_path, md_path = out_dir / "doom_table.json", out_dir / "doom_table.md"
    atomic_write_json(json_path, result)
    atomic_write_text(md_path, render_markdown(result))
    return json_path, md_path


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
