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
(``stats``, ``episode_tic``), so this module knows no game internals.

A multiplayer match is confined to the machine: ZDoom's network code binds the host's UDP port on
every address (0.0.0.0), so ``-join 127.0.0.1`` alone would leave the port open to the network.
`play_match` therefore starts such a match's supervision in a fresh network namespace whose only
interface is loopback (``unshare --net``, or ``unshare --user --map-root-user --net`` for a user
where the kernel allows it; `network_confinement` finds which works). The namespace is also a PID
namespace, so ending its first process (the launcher, `_launcher_main`) ends every player and
engine in it. Where no namespace can be made, the match runs unconfined and `run_match` and
`network_note` (the table's protocol) say that its port was open to the network.
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import os
import pickle
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
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
    fault: str = ""
    """testing only: 'die' exits and 'hang' stops at step 20"""
    quiet: bool = True
    """send the ViZDoom engine's console output (connection chatter) to /dev/null"""


def player_env(spec: PlayerSpec):
    """The env a player plays its match in (the game starts on its first reset): what a player
    process builds, a person's window (``human``) included, so that it can be opened alone."""
    from pixelplay.envs import make_env

    return make_env(spec.env_id, spec.seed, training=False, **spec.env_options)


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
        from pixelplay.envs import EPISODE_INFO_KEY
        from pixelplay.eval.policies import build_policy

        conn.send(("progress", "starting"))
        env = player_env(spec)
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
        steps, last_beat = 0, 0.0
        while True:
            action = 0 if policy is None else int(policy.act(obs[None], [steps == 0])[0])
            obs, _, terminated, truncated, info = env.step(action)
            steps += 1
            if spec.fault and steps == 20:
                if spec.fault == "die":
                    os._exit(3)
                time.sleep(10**6)  # "hang": stop making progress
            if terminated or truncated:
                break
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
    Whatever happens, every player's process group is killed before this returns. A match that
    opens a network port is played in a network namespace of its own (`match_confinement`) where
    one can be made.
    """
    if uses_network(players):
        confinement = match_confinement(players)
        if confinement.confined:
            return _play_confined(players, stall_timeout, wall_limit, confinement.command)
    return _supervise(players, stall_timeout, wall_limit)


def _supervise(players: list[PlayerSpec], stall_timeout: float, wall_limit: float) -> dict[str, dict]:
    """`play_match`'s supervision, in this process: start the players, watch them, kill them."""
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
        if attempt == 0 and uses_network(players):
            confinement = match_confinement(players)
            if not confinement.confined:
                ports = sorted({spec.env_options["port"] for spec in players if "port" in spec.env_options})
                log(f"  match {index + 1}: WARNING: not confined to a network namespace ({confinement.detail}); "
                    f"the game's UDP port {', '.join(map(str, ports))} is open to the network (ZDoom binds "
                    f"0.0.0.0) while it plays")
        try:
            record.players = play_match(players, stall_timeout, wall_limit)
            return record
        except MatchFailed as failure:
            record.failures.append(str(failure))
            more = "; replaying it" if attempt < retries else "; giving it up"
            log(f"  match {index + 1} attempt {attempt + 1} failed: {failure}{more}")
    return record


# ---------------------------------------------------------------------------------------------
# Network confinement: a multiplayer match in a network namespace with only loopback

UNSHARE_FLAGS: tuple[tuple[str, ...], ...] = (
    ("--net", "--pid", "--fork", "--kill-child"),  # root, as CI runs
    ("--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child"),  # a user, where the kernel allows
)
"""`unshare` options tried in turn: a new network namespace, and a PID namespace whose first process
(forked by unshare, SIGKILLed when unshare dies) takes every process of the match with it."""

_LOOPBACK_UP = """
import fcntl, socket, struct
def _loopback_up():
    # A fresh network namespace has one interface, lo, and it is down: bring it up (SIOCSIFFLAGS,
    # as `ip link set lo up` does), then check that a UDP datagram reaches 127.0.0.1.
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ctl:
        request = struct.pack("16sH22x", b"lo", 0)  # struct ifreq: name, flags, rest of the union
        flags = struct.unpack("16sH22x", fcntl.ioctl(ctl, SIOCGIFFLAGS, request))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(ctl, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.bind(("127.0.0.1", 0))
        a.settimeout(5)
        b.sendto(b"ping", a.getsockname())
        assert a.recv(16) == b"ping", "no datagram over loopback"
_loopback_up()
"""
"""Python source run first in the namespace: bring up its loopback interface and check it (stdlib
only, so the probe in `network_confinement` is quick)."""

_LAUNCHER = _LOOPBACK_UP + """
import json, sys
sys.path[:] = json.loads(sys.argv[2])
from pixelplay.eval.match import _launcher_main
_launcher_main(int(sys.argv[1]))
"""
"""Python source of the launcher, the namespace's first process: loopback up, then the match."""

LAUNCH_GRACE = 60.0
"""Seconds a confined match may take beyond its wall-clock limit (starting the launcher), after
which the supervisor kills the whole namespace."""


@dataclass(frozen=True)
class Confinement:
    """How a networked match is kept off the network, or why it cannot be."""

    command: tuple[str, ...]
    """the command line prefix that starts a process in a fresh namespace; () where none can be made"""
    detail: str
    """how (the unshare command), or why no namespace can be made"""

    @property
    def confined(self) -> bool:
        return bool(self.command)


@functools.cache
def network_confinement() -> Confinement:
    """Whether this machine lets a match run in a network namespace of its own, measured once.

    Tries each of `UNSHARE_FLAGS` with a real probe (`_LOOPBACK_UP` in the new namespace) and
    returns the first that works."""
    if not sys.platform.startswith("linux"):
        return Confinement((), f"network namespaces are Linux only (this is {sys.platform})")
    unshare = shutil.which("unshare")
    if unshare is None:
        return Confinement((), "no unshare command (util-linux) on PATH")
    failures = []
    for flags in UNSHARE_FLAGS:
        command = (unshare, *flags)
        try:
            probe = subprocess.run([*command, sys.executable, "-c", _LOOPBACK_UP], stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            failures.append(f"unshare {' '.join(flags)}: {type(error).__name__}: {error}")
            continue
        if probe.returncode == 0:
            return Confinement(command, "unshare " + " ".join(flags))
        why = (probe.stderr.strip().splitlines() or [f"exit code {probe.returncode}"])[-1]
        failures.append(f"unshare {' '.join(flags)}: {why}")
    return Confinement((), "; ".join(failures))


def uses_network(players: list[PlayerSpec]) -> bool:
    """Whether a match's game opens a network port: a multiplayer one (a host of 2+ players, a joiner).
    A single-player game (``-host 1``) binds none."""
    return any(spec.env_options.get("players", 1) > 1 or spec.env_options.get("join", False) for spec in players)


def _network_display() -> str:
    """The X display where it is reached over the network (``host:N``), which a namespace with only
    its own loopback cannot reach; '' for a local display."""
    display = os.environ.get("DISPLAY", "")
    host = display.rpartition(":")[0]
    return display if host and host != "unix" else ""


def match_confinement(players: list[PlayerSpec]) -> Confinement:
    """`network_confinement`, unless a person plays in a window on a network display (ssh -X)."""
    if any(spec.policy.kind == "human" for spec in players):
        display = _network_display()
        if display:
            return Confinement((), f"a person's window goes to the network display DISPLAY={display}, "
                                   f"which a network namespace cannot reach")
    return network_confinement()


def network_note(human: bool = False) -> str:
    """For the table's protocol: where a multiplayer match's port was reachable from."""
    seat = PlayerSpec("", PolicySpec("human" if human else "random"), "", 0, {"players": 2})
    confinement = match_confinement([seat])
    if confinement.confined:
        return (f"each multiplayer match ran in a network namespace of its own ({confinement.detail}) whose only "
                f"interface is loopback: the host's UDP port (ZDoom binds it on every address) was reachable "
                f"only by the match's players, on 127.0.0.1")
    return (f"NOT confined ({confinement.detail}): ZDoom's host binds its UDP port on every address (0.0.0.0), so "
            f"the port was open to the network while each multiplayer match played")


def _play_confined(players: list[PlayerSpec], stall_timeout: float, wall_limit: float,
                   command: tuple[str, ...]) -> dict[str, dict]:
    """`play_match` in a fresh network (and PID) namespace: a launcher process started under
    ``command`` brings loopback up and supervises the players (`_supervise`) in there; this process
    sends it the match over its stdin and reads the outcome from a pipe. The launcher's stdin stays
    open while this process waits: if it closes (this process ended), the launcher ends the match.
    Whatever happens, the namespace's processes are killed before this returns."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [*command, sys.executable, "-c", _LAUNCHER, str(write_fd), json.dumps(sys.path)],
            stdin=subprocess.PIPE, pass_fds=(write_fd,), start_new_session=True,
        )
    except OSError as error:
        os.close(read_fd)
        raise MatchFailed(f"could not start the match in a network namespace: {error}") from None
    finally:
        os.close(write_fd)
    try:
        payload = pickle.dumps((players, stall_timeout, wall_limit))
        try:
            proc.stdin.write(struct.pack("!Q", len(payload)) + payload)
            proc.stdin.flush()
        except OSError:
            pass  # it died at once: reported below, from its exit code
        data = b""
        deadline = time.monotonic() + wall_limit + LAUNCH_GRACE
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MatchFailed(f"hung: the match's namespace was still running {wall_limit + LAUNCH_GRACE:.0f} s "
                                  f"after it started (its wall-clock limit and {LAUNCH_GRACE:.0f} s to start)")
            if not select.select([read_fd], [], [], min(remaining, 1.0))[0]:
                continue
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            data += chunk
        if not data:
            code = proc.wait(10)
            raise MatchFailed(f"the match's launcher in its network namespace ended without a result "
                              f"(exit code {code})")
        kind, outcome = pickle.loads(data)
        if kind != "done":
            raise MatchFailed(outcome)
        return outcome
    finally:
        os.close(read_fd)
        try:
            proc.stdin.close()  # tells the launcher to end the match, if it is still at it
        except OSError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # unshare (with --kill-child, the namespace too)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()


def _read_exactly(stream, size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError("the supervisor closed the launcher's input early")
    return data


def _launcher_main(result_fd: int) -> None:
    """The first process of a confined match's namespace (see `_play_confined`): read the match,
    supervise it here, write ("done", records) or ("failed", why) to ``result_fd``."""
    os.set_inheritable(result_fd, False)  # the players get their own pipes, not this one
    stdin = sys.stdin.buffer
    size = struct.unpack("!Q", _read_exactly(stdin, 8))[0]
    players, stall_timeout, wall_limit = pickle.loads(_read_exactly(stdin, size))

    def end_when_the_supervisor_goes() -> None:
        stdin.read()  # returns at EOF: the supervisor closed our stdin or is gone
        os._exit(1)  # the namespace's first process: its end kills every process in it

    threading.Thread(target=end_when_the_supervisor_goes, daemon=True).start()
    try:
        message = ("done", _supervise(players, stall_timeout, wall_limit))
    except MatchFailed as failure:
        message = ("failed", str(failure))
    except BaseException as error:
        message = ("failed", f"the match's launcher failed: {type(error).__name__}: {error}")
    with os.fdopen(result_fd, "wb") as out:
        out.write(pickle.dumps(message))
    # Leave without the interpreter's shutdown: the watcher thread is blocked in stdin.read()
    # holding the stdin buffer's lock, and finalising with it held aborts the process ("Fatal
    # Python error: _enter_buffered_busy ... at interpreter shutdown"), after the result is out.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
