"""A person's turn at the DOOM table: a playable window, the keys shown first, the person's column
beside the paper's humans.

The window tests run the game under a virtual X display (``xvfb-run``, Debian's ``xvfb``) and press
keys in it with ``xdotool`` (Debian's ``xdotool``), as a person would: they skip locally when either
is missing, saying which, and fail in CI (``CI=true``), where ``.ci/run`` installs them.
"""

import io
import json
import math
import os
import shutil
import subprocess
from dataclasses import asdict

import pytest

from pixelplay.envs.doom_human import HUMAN_CONTROLS, check_human_screen, console_commands, screen_size
from pixelplay.envs.errors import EnvError
from pixelplay.eval import doom_table
from pixelplay.eval.__main__ import main
from pixelplay.eval.baselines import DOOM_PAPER
from pixelplay.eval.match import MatchRecord, player_env
from pixelplay.eval.policies import PolicySpec

TOOLS = {"xvfb-run": "xvfb", "Xvfb": "xvfb", "xdotool": "xdotool"}
"""The commands the window tests need, and the Debian package of each."""


@pytest.fixture
def virtual_display(monkeypatch):
    """A fresh virtual X display (xvfb-run -a) for this test: DISPLAY and XAUTHORITY point at it."""
    missing = sorted({f"{tool} (Debian package {package})" for tool, package in TOOLS.items() if not shutil.which(tool)})
    if missing:
        message = "the human-window tests need " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI must install them (.ci/run)")
        pytest.skip(message)
    # xvfb-run starts Xvfb, waits until it is ready, then runs the command: it prints where the
    # display is and holds it until its stdin closes; then xvfb-run stops Xvfb and removes its cookie.
    holder = subprocess.Popen(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", "sh", "-c", 'echo "$DISPLAY $XAUTHORITY"; read _'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        display, auth = holder.stdout.readline().split()
        monkeypatch.setenv("DISPLAY", display)
        monkeypatch.setenv("XAUTHORITY", auth)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        yield display
    finally:
        holder.stdin.close()
        try:
            holder.wait(10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


def xdotool(*args: str) -> str:
    return subprocess.run(["xdotool", *args], check=True, capture_output=True, text=True, timeout=20).stdout


def test_a_person_plays_in_a_640x480_window_with_the_printed_keys(virtual_display):
    import vizdoom as vzd

    cfg = doom_table.TableConfig(bots=0, minutes=0.5)  # no bots: nothing shoots the person meanwhile
    (seat,) = doom_table.single_player_players(cfg, PolicySpec("human"), "human", 3, "")
    (agent_seat,) = doom_table.single_player_players(cfg, PolicySpec("random"), "agent", 3, "")
    env, agent_env = player_env(seat), player_env(agent_seat)  # the agent's game is not started
    try:
        obs, _ = env.reset(seed=3)
        # The person's game renders at 640x480; what an agent would observe stays its 84x84 stack.
        assert env.render().shape == (480, 640, 3)
        assert obs.shape == agent_env.observation_space.shape == (12, 84, 84)
        assert screen_size(agent_env.settings.screen_resolution) == (160, 120)

        window = xdotool("search", "--sync", "--onlyvisible", "--name", "ViZDoom").split()[-1]
        geometry = dict(line.split("=") for line in xdotool("getwindowgeometry", "--shell", window).split())
        assert (int(geometry["WIDTH"]), int(geometry["HEIGHT"])) == (640, 480)
        xdotool("windowfocus", "--sync", window)

        game = env.game
        variable = lambda name: game.get_game_variable(getattr(vzd.GameVariable, name))  # noqa: E731

        def hold(key: str, moved) -> bool:
            """Hold ``key`` while the game runs (real time: 4 tics a step) until ``moved()``, at most 10 s."""
            xdotool("keydown", key)
            try:
                for _ in range(90):
                    env.step(0)
                    if moved():
                        return True
                return False
            finally:
                xdotool("keyup", key)
                for _ in range(3):
                    env.step(0)

        x, y = variable("POSITION_X"), variable("POSITION_Y")
        # W is bound by the env itself (ZDoom's defaults leave it free): the printed keys are real.
        assert hold("w", lambda: math.hypot(variable("POSITION_X") - x, variable("POSITION_Y") - y) > 32)
        angle = variable("ANGLE")
        assert hold("Left", lambda: abs(variable("ANGLE") - angle) > 5)
        ammo = variable("AMMO2")  # the pistol's bullets
        assert hold("ctrl", lambda: variable("AMMO2") < ammo)
    finally:
        env.close()


def test_the_table_with_a_person_keeps_the_papers_humans_beside_them(virtual_display, tmp_path, capsys):
    """`doom-table --human --only single` end to end (a 3-second turn nobody plays: pytest's stdin is
    not a terminal, so nothing waits for Enter)."""
    out = tmp_path / "table"
    code = main(["doom-table", "--policy", "random", "--human", "--only", "single", "--matches", "1", "--minutes", "0.05",
                 "--bots", "1", "--stall-timeout", "20", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # The keys were shown before the person's match, every control of HUMAN_CONTROLS.
    assert "Your turn: single player" in captured.err and "640x480" in captured.err
    assert all(control.what in captured.err and control.keys in captured.err for control in HUMAN_CONTROLS)
    assert "Press Enter" not in captured.err
    markdown = (out / "doom_table.md").read_text()
    result = json.loads((out / "doom_table.json").read_text())
    header_row = next(line for line in markdown.splitlines() if line.startswith("| Evaluation metric"))
    assert header_row.split(" | ")[1:] == ["SP: human (paper)", "SP: you", "SP: Arnold (paper)", "SP: this agent |"]
    assert "Multiplayer opponent" not in markdown and result["opponent"] is None
    assert result["single_player"]["human"]["players"]["human"]["summary"]["matches"] == 1
    assert "640x480" in result["protocol"]["person"]


def _result(settings: tuple[str, ...], opponent: str | None) -> dict:
    stats = dict(kills=2, deaths=4, suicides=1, objects=3, steps=1, tics=1, wall_s=0)
    records = lambda *names: [MatchRecord(0, 1, attempts=1, players={n: stats for n in names})]  # noqa: E731
    result = {
        "agent": "fake", "opponent": opponent, "protocol": {}, "wall_time_s": 0,
        "paper": {"source": "paper", "table": DOOM_PAPER,
                  "flags": [{**asdict(f), "note": f.note} for f in doom_table.paper_kd_mismatches()]},
    }
    if "single_player" in settings:
        result["single_player"] = doom_table._setting_result(records("agent"), {"agent": "fake"})
        result["single_player"]["human"] = doom_table._setting_result(records("human"), {"human": "a person"})
    if "multiplayer" in settings:
        result["multiplayer"] = doom_table._setting_result(records("agent", "opponent"),
                                                           {"agent": "fake", "opponent": opponent})
    return result


def test_person_columns_sit_beside_the_paper_and_the_header_names_only_a_played_opponent():
    both = doom_table.render_markdown(_result(("single_player", "multiplayer"), "human"))
    assert ("| SP: human (paper) | SP: you | SP: Arnold (paper) | SP: this agent | MP: human (paper) | MP: you "
            "| MP: Arnold (paper) | MP: this agent |") in both
    assert "Multiplayer opponent: human." in both
    # The paper's humans keep their numbers; the person's column holds the person's.
    assert "| Number of kills | 12.6 | 2.0 | 27.6 | 2.0 | 5.5 | 2.0 |" in both
    single = doom_table.render_markdown(_result(("single_player",), None))
    assert "Multiplayer opponent" not in single and "MP:" not in single and "SP: you" in single
    scripted = doom_table.render_markdown(_result(("multiplayer",), "scripted"))
    assert "Multiplayer opponent: scripted." in scripted and "MP: you" not in scripted
    assert "MP: its opponent (scripted)" in scripted


def test_a_persons_seat_gets_its_own_window_and_the_agents_stays():
    cfg = doom_table.TableConfig(human=True, human_screen="800x600")
    host, guest = doom_table.multiplayer_players(cfg, PolicySpec("random"), PolicySpec("human"), 7, 5123, "")
    assert guest.env_options["screen_resolution"] == "800x600" and guest.env_options["render_hud"]
    assert "screen_resolution" not in host.env_options and not host.env_options.get("human")
    (person,) = doom_table.single_player_players(cfg, PolicySpec("human"), "human", 1, "")
    assert person.env_options["human"] and person.env_options["screen_resolution"] == "800x600"
    with pytest.raises(EnvError, match="at least 640x480"):
        check_human_screen("320x240")
    assert check_human_screen("RES_1024X768") == "1024x768"


def test_every_printed_key_is_bound_once():
    binds = [c.split(" ", 2) for c in console_commands() if c.startswith("bind ")]
    keys = [key for _, key, _ in binds]
    assert len(keys) == len(set(keys)), "a key bound to two commands"
    assert sum(len(control.binds) for control in HUMAN_CONTROLS) == len(binds)
    assert ["bind", "w", '"+forward"'] in binds and ["bind", "ctrl", '"+attack"'] in binds
    # A command of several words is one quoted argument: unquoted, ZDoom binds "slot" alone.
    assert ["bind", "1", '"slot 1"'] in binds


def test_the_turn_waits_for_enter_only_at_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    cfg = doom_table.TableConfig(human=True)
    lines: list[str] = []
    piped = io.StringIO("")
    doom_table.human_turn(cfg, "single player", lines.append, piped)
    assert "Press Enter" not in "\n".join(lines)
    terminal = Terminal("\nleft over\n")
    doom_table.human_turn(cfg, "single player", lines.append, terminal)
    assert lines[-1] == "Press Enter when you are ready." and terminal.readline() == "left over\n"


def test_a_too_small_window_is_refused_by_the_cli(capsys):
    assert main(["doom-table", "--policy", "random", "--human", "--human-screen", "320x240"]) == 2
    err = capsys.readouterr().err
    assert "human" in err and "640x480" in err
