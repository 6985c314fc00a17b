"""One supervised ViZDoom match: each player in its own process, killed and replayed on failure.

ViZDoom multiplayer is synchronous, so two players in one process would wait on each other
forever: every player runs in its own process (`PlayerSpec` says what it plays, `_player_main`
plays it). Each player process starts its own session (``os.setsid``), so the ViZDoom engine it
launches shares its process group and one ``killpg`` ends both. `play_match` watches the players:
one that reports no progress for ``stall_timeout`` seconds, a match that exceeds its wall-clock
limit, or a player that errors or dies gets the whole match killed (`MatchFailed`). `run_match`
replays such a match (same seed, fresh players) up to ``retries`` times and records every
failure; a replayed match keeps only the statistics of its last, complete attempt.

Players build their env with `envs.make_env` and read it only through `DoomEnv`'s public API
(``stats``, ``episode_tic``, ``readd_bots``), so this module knows no game internals.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from pixelplay.eval.policies import PolicySpec

STATS = ("kills", "deaths", "suicides", "objects")
"""The DOOM table statistics a player reports for its match."""


@dataclass
class PlayerSpec:
    """Everything a player process needs (picklable)."""

    name: str
    """the player's name in the game (and its key in the match result)"""
    policy: PolicySpec
    """who plays: a checkpoint, a random or scripted player, or a person"""
    env_id: str
    """the env (an ``envs.ENVS`` name) the player's game is"""
    seed: int
    """game and policy seed, the same on a replay"""
    env_options: dict[str, Any]
    """the env's options (`envs.doom.DoomSettings`): map, timeout, bots, the multiplayer seat"""
    readd_bots: bool = False
    """host only: re-add the bots after each respawn of this player (glample/Arnold's protocol)"""
    fault: str = ""
    """testing only: 'die' exits and 'hang' stops at step 20"""
    quiet: bool = True
    """send the ViZDoom engine's console output (connection chatter) to /dev/null"""


def _player_main(spec: PlayerSpec, conn) -> None:
    """Entry point of a player process: play one match, send ("done", record) or ("error", why).

    Sends ("progress", what) at least once a second while it plays, which is what the supervisor
    watches for a stall.
    """
    try:
        os.setsid()  # the ViZDoom engine this process launches joins its process group
    except OSError:
        pass
    if spec.quiet:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # the engine inherits these descriptors
        os.dup2(devnull, 2)
        os.close(devnull)
    env = None
    try:
        import torch

        torch.set_num_threads(1)
        from pixelplay.envs import EPISODE_INFO_KEY, make_env
        from pixelplay.eval.policies import build_policy

        conn.send(("progress", "starting"))
        env = make_env(spec.env_id, spec.seed, training=False, **spec.env_options)
        policy = None
        if spec.policy.kind != "human":
            policy = build_policy(
                spec.policy,
                num_actions=int(env.action_space.n),
                obs_shape=env.observation_space.shape,
                seed=spec.seed,
                action_names=env.action_names,
            )
        started = time.monotonic()
        waiting = spec.env_options.get("players", 1) > 1 or spec.env_options.get("join", False)
        conn.send(("progress", "starting the game" + (" (connecting the players)" if waiting else "")))
        obs, _ = env.reset(seed=spec.seed)
        conn.send(("progress", "playing, tic 0"))
        steps, last_beat, deaths = 0, 0.0, 0
        while True:
            action = 0 if policy is None else int(policy.act(obs[None])[0])
            obs, _, terminated, truncated, info = env.step(action)
            steps += 1
            if spec.fault and steps == 20:
                if spec.fault == "die":
                    os._exit(3)
                time.sleep(10**6)  # "hang": stop making progress
            if terminated or truncated:
                break
            if spec.readd_bots:
                now_deaths = env.stats()["deaths"]
                if now_deaths > deaths:  # the env has just respawned the player
                    env.readd_bots()
                deaths = now_deaths
            now = time.monotonic()
            if now - last_beat > 1.0:
                conn.send(("progress", f"playing, tic {env.episode_tic}"))
                last_beat = now
        record = info.get(EPISODE_INFO_KEY)
        if not truncated or record is None:
            conn.send(("error", f"{spec.name}: the match ended at tic {env.episode_tic}, "
                                f"before its time limit (lost connection or game over)"))
            return
        record = {k: record[k] for k in STATS}
        record.update(steps=steps, tics=env.episode_tic, wall_s=round(time.monotonic() - started, 2))
        conn.send(("done", record))
    except BaseException as error:  # report anything, then exit: the parent decides
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        try:
            conn.send(("error", f"{spec.name}: {type(error).__name__}: {message}"))
        except OSError:
            pass
    finally:
        if env is not None:
            try:
                env.close()
            except Exception:
                pass
        conn.close()


class MatchFailed(Exception):
    """A match that cannot be counted: a player errored, died or hung (the message says which)."""


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing is bound to right now (ZDoom's netgame is UDP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kill_group(process) -> None:
    """SIGKILL the player's process group (it and its ViZDoom engine), then the player itself."""
    if process.pid is None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if process.is_alive():
        process.kill()
    process.join(5)


def play_match(players: list[PlayerSpec], stall_timeout: float, wall_limit: float) -> dict[str, dict]:
    """Play one match with each player in its own process; raise `MatchFailed` on any failure.

    Returns each player's record by name: its `STATS`, agent steps, game tics and wall seconds.
    Whatever happens, every player's process group is killed before this returns.
    """
    ctx = mp.get_context("spawn")  # no inherited torch thread pools or ViZDoom state
    procs, conns = [], {}
    try:
        for spec in players:
            receiver, sender = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_player_main, args=(spec, sender), name=f"doom-{spec.name}", daemon=True)
            proc.start()
            sender.close()
            procs.append(proc)
            conns[receiver] = spec.name
        results: dict[str, dict] = {}
        start = time.monotonic()
        # A player's ViZDoom engine inherits its pipe (and its process sentinel), so a player that
        # dies leaves both open while the engine lives: poll is_alive() (waitpid) twice a second.
        by_name = {spec.name: (conn, proc) for conn, proc, spec in zip(conns, procs, players, strict=True)}
        phase = {spec.name: "not started" for spec in players}
        last_progress = {spec.name: start for spec in players}

        def where() -> str:
            return "; ".join(f"{name} was {phase[name]}" for name in by_name if name not in results)

        while len(results) < len(players):
            now = time.monotonic()
            if now - start > wall_limit:
                raise MatchFailed(f"hung: not finished after {wall_limit:.0f} s, the match's wall-clock limit ({where()})")
            pending = {name: pair for name, pair in by_name.items() if name not in results}
            oldest = min(last_progress[name] for name in pending)
            if now - oldest > stall_timeout:
                raise MatchFailed(f"hung: no progress for {stall_timeout:.0f} s ({where()})")
            remaining = min(wall_limit - (now - start), stall_timeout - (now - oldest))
            wait([c for c, _ in pending.values()], timeout=min(0.5, max(0.05, remaining)))
            for name, (conn, proc) in pending.items():
                while name not in results and conn.poll():
                    try:
                        kind, payload = conn.recv()
                    except (EOFError, OSError):
                        break
                    last_progress[name] = time.monotonic()
                    if kind == "progress":
                        phase[name] = payload
                    elif kind == "done":
                        results[name] = payload
                    elif kind == "error":
                        raise MatchFailed(payload)
                if name not in results and not proc.is_alive():
                    raise MatchFailed(f"{name}: the player process died (exit code {proc.exitcode})")
        return results
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.join(3)  # a finished player closes its game; give it a moment
            _kill_group(proc)
        for conn in conns:
            conn.close()


@dataclass
class MatchRecord:
    """One match of a series: its players' statistics, or why it could not be played."""

    index: int
    seed: int
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    players: dict[str, dict] | None = None

    @property
    def retried(self) -> bool:
        return self.attempts > 1

    @property
    def counted(self) -> bool:
        return self.players is not None


def run_match(
    make_players: Callable[[int, str], list[PlayerSpec]],
    index: int,
    seed: int,
    *,
    retries: int,
    stall_timeout: float,
    wall_limit: float,
    fault: str = "",
    log: Callable[[str], Any] = print,
) -> MatchRecord:
    """Play match ``index`` of a series, replaying it after a crash or hang up to ``retries`` times.

    ``make_players(seed, fault)`` gives the players of one attempt: called again for each replay
    (with the same seed), it can give them a fresh network port. ``fault`` (testing only) goes to
    the first attempt's players.
    """
    record = MatchRecord(index, seed)
    for attempt in range(retries + 1):
        record.attempts = attempt + 1
        players = make_players(seed, fault if attempt == 0 else "")
        try:
            record.players = play_match(players, stall_timeout, wall_limit)
            return record
        except MatchFailed as failure:
            record.failures.append(str(failure))
            more = "; replaying it" if attempt < retries else "; giving it up"
            log(f"  match {index + 1} attempt {attempt + 1} failed: {failure}{more}")
    return record
