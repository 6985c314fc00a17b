"""A multiplayer match is kept off the network: its players share a network namespace of their own
whose only interface is loopback (eval/match.py), since ZDoom's host binds its UDP port on every
address. Checked from outside the match, in this process's namespace, while a real match plays;
and where no namespace can be made, the console and the table's protocol say the port was open."""

import os
import threading
import time

import pytest

from pixelplay.eval import doom_table, match
from pixelplay.eval.policies import PolicySpec

MINUTES = 0.1  # 210 tics, 6 s of game time: 53 agent steps a player


def udp_ports(table: str) -> set[int]:
    """Local ports of the UDP sockets in a /proc/.../net/udp or udp6 table (any address)."""
    try:
        with open(table) as f:
            rows = f.read().splitlines()[1:]
    except OSError:  # the process ended, or no IPv6
        return set()
    return {int(row.split()[1].rsplit(":", 1)[1], 16) for row in rows if row.strip()}


def ports_here() -> set[int]:
    """UDP ports bound in this process's network namespace, on any address, IPv4 or IPv6."""
    return udp_ports("/proc/net/udp") | udp_ports("/proc/net/udp6")


def netns(pid: int | str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def confined_descendants() -> dict[int, set[int]]:
    """This process's descendants in another network namespace, each with the UDP ports bound there."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    ours, here = {os.getpid()}, netns("self")
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in ours and pid not in ours}
        ours |= more
        grew = bool(more)
    found = {}
    for pid in ours - {os.getpid()}:
        ns = netns(pid)
        if ns and ns != here:
            found[pid] = udp_ports(f"/proc/{pid}/net/udp") | udp_ports(f"/proc/{pid}/net/udp6")
    return found


def multiplayer(seed: int, fault: str, ports: list[int], stall_timeout: float = 20) -> list[match.PlayerSpec]:
    """The table's two seats (a random agent hosting, a scripted opponent joining) on a fresh port."""
    cfg = doom_table.TableConfig(minutes=MINUTES, mp_bots=0, bots_readd="match", stall_timeout=stall_timeout)
    ports.append(match.free_udp_port())
    return doom_table.multiplayer_players(cfg, PolicySpec("random"), PolicySpec("scripted"), seed, ports[-1], fault)


def needs_confinement() -> match.Confinement:
    confinement = match.network_confinement()
    if not confinement.confined:
        pytest.skip(f"no network namespace on this machine: {confinement.detail}")
    return confinement


def test_a_multiplayer_match_binds_no_port_outside_its_namespace_and_completes():
    needs_confinement()
    ports: list[int] = []
    outcome: dict = {}
    messages: list[str] = []

    def play():
        try:
            outcome["record"] = match.run_match(lambda seed, fault: multiplayer(seed, fault, ports), 0, 11, retries=1,
                                                stall_timeout=20, wall_limit=240, log=messages.append)
        except BaseException as error:  # reported by the main thread
            outcome["error"] = error

    player = threading.Thread(target=play)
    player.start()
    leaked, seen_inside = [], set()
    while player.is_alive():
        # The ports chosen so far, read before the sockets: free_udp_port binds its probe socket in
        # this namespace for an instant before the port joins the list, and must not count as a leak.
        chosen = set(ports)
        open_here = ports_here() & chosen
        if open_here:
            leaked.append(open_here)
        for bound in confined_descendants().values():
            seen_inside |= bound & chosen
        time.sleep(0.1)
    player.join()
    assert "error" not in outcome, outcome.get("error")
    assert not leaked, f"the match's UDP port was bound in the test's (root) network namespace: {leaked}"
    # It did bind it, inside the match's own namespace: the check above watched the right port.
    assert seen_inside, "no player's namespace ever bound the match's port"
    record = outcome["record"]
    assert record.counted, record.failures
    assert not any("open to the network" in m for m in messages)
    tics = round(MINUTES * 60 * 35)
    assert set(record.players) == {"agent", "opponent"}
    for stats in record.players.values():
        assert stats["tics"] >= tics and stats["steps"] > 0
        assert min(stats[k] for k in match.STATS) >= 0 and stats["suicides"] <= stats["deaths"]
    # The namespace, and everything in it, is gone.
    assert confined_descendants() == {}


def test_a_confined_match_that_dies_is_failed_and_leaves_nothing_behind():
    needs_confinement()
    ports: list[int] = []
    messages: list[str] = []
    record = match.run_match(lambda seed, fault: multiplayer(seed, fault, ports, stall_timeout=10), 0, 12,
                             retries=0, stall_timeout=10, wall_limit=120, fault="die", log=messages.append)
    assert not record.counted and record.attempts == 1
    assert "died" in record.failures[0] and "agent" in record.failures[0]
    assert any("giving it up" in m for m in messages)
    assert confined_descendants() == {}
    assert not ports_here() & set(ports)


def test_the_namespace_probe_and_the_protocol_say_the_match_is_confined():
    confinement = needs_confinement()
    assert confinement.command[0].endswith("unshare") and "--net" in confinement.command
    note = doom_table.protocol(doom_table.TableConfig())["network"]
    assert "network namespace of its own" in note and "open to the network" not in note
    assert "loopback only" not in doom_table.protocol(doom_table.TableConfig())["server"]


def unconfined(monkeypatch) -> None:
    monkeypatch.setattr(match, "network_confinement",
                        lambda: match.Confinement((), "simulated: unshare: unshare failed: Operation not permitted"))


def test_without_a_namespace_the_protocol_and_the_console_say_the_port_was_open(monkeypatch):
    unconfined(monkeypatch)
    cfg = doom_table.TableConfig()
    protocol = doom_table.protocol(cfg)
    assert "NOT confined" in protocol["network"] and "open to the network" in protocol["network"]
    assert "Operation not permitted" in protocol["network"] and "0.0.0.0" in protocol["network"]
    result = {"agent": "fake", "opponent": "random", "protocol": protocol, "wall_time_s": 0,
              "paper": {"source": "paper", "table": doom_table.DOOM_PAPER, "flags": []}}
    markdown = doom_table.render_markdown(result)
    assert "## Protocol" in markdown and "the port was open to the network" in markdown

    # The match itself still runs, unconfined, and the console says so.
    played = []

    def fake_supervise(players, stall_timeout, wall_limit):
        played.append(players)
        return {spec.name: {} for spec in players}

    def no_namespace(*args):
        raise AssertionError("an unconfined match must not be started in a namespace")

    monkeypatch.setattr(match, "_supervise", fake_supervise)
    monkeypatch.setattr(match, "_play_confined", no_namespace)
    ports: list[int] = []
    messages: list[str] = []
    record = match.run_match(lambda seed, fault: multiplayer(seed, fault, ports), 0, 1, retries=0,
                             stall_timeout=5, wall_limit=5, log=messages.append)
    assert record.counted and len(played) == 1
    (warning,) = messages
    assert "WARNING" in warning and "open to the network" in warning and str(ports[0]) in warning


def test_single_player_matches_are_not_networked_and_a_network_display_stays_outside(monkeypatch):
    cfg = doom_table.TableConfig()
    (single,) = doom_table.single_player_players(cfg, PolicySpec("random"), "agent", 1, "")
    assert not match.uses_network([single])
    host, guest = doom_table.multiplayer_players(cfg, PolicySpec("random"), PolicySpec("human"), 1, 5123, "")
    assert match.uses_network([host, guest]) and match.uses_network([guest])
    # A person's window over ssh -X goes to a TCP display, which the namespace could not reach.
    monkeypatch.setattr(match, "network_confinement", lambda: match.Confinement(("unshare", "--net"), "unshare --net"))
    monkeypatch.setenv("DISPLAY", "localhost:10.0")
    reason = match.match_confinement([host, guest])
    assert not reason.confined and "DISPLAY=localhost:10.0" in reason.detail
    assert "open to the network" in match.network_note(human=True)
    assert match.match_confinement([host]).confined  # no person: confined
    monkeypatch.setenv("DISPLAY", ":0")
    assert match.match_confinement([host, guest]).confined
    assert "network namespace of its own" in match.network_note(human=True)


def test_a_launcher_that_hangs_is_killed_with_its_namespace(monkeypatch):
    """The supervisor's own backstop: a namespace whose first process never reports is killed whole."""
    confinement = needs_confinement()
    monkeypatch.setattr(match, "LAUNCH_GRACE", 1.0)
    stuck = (*confinement.command, "sh", "-c", "sleep 1000 & sleep 1000")  # runs instead of the launcher
    started = time.monotonic()
    with pytest.raises(match.MatchFailed, match="hung"):
        match._play_confined(multiplayer(1, "", []), 5, 1.0, stuck)
    assert time.monotonic() - started < 30
    assert confined_descendants() == {}
