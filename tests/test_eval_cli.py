"""python -m pixelplay.eval: bad input gives one clear line and exit status 2; --help explains every command."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pixelplay.eval import __main__ as cli
from pixelplay.eval.__main__ import build_parser, main
from pixelplay.eval.doom_table import TableConfig
from pixelplay.eval.score import ScoreConfig

ROOT = Path(__file__).resolve().parent.parent


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    return err


@pytest.mark.parametrize("command", ["doom-table", "score", "record", "watch"])
def test_unknown_checkpoint_path(command, tmp_path, capsys):
    assert main([command, str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in one_line_error(capsys)


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["score", str(bad)]) == 2
    err = one_line_error(capsys)
    assert "bad.pt" in err and "corrupt" in err


def test_run_directory_without_a_checkpoint(tmp_path, capsys):
    assert main(["record", str(tmp_path)]) == 2
    assert "checkpoints/latest.pt" in one_line_error(capsys)


def test_builtin_policy_needs_an_env(capsys):
    assert main(["score", "--policy", "random"]) == 2
    assert "--env" in one_line_error(capsys)


def test_unknown_env_names_the_closest(capsys):
    assert main(["score", "--policy", "random", "--env", "brekout"]) == 2
    assert "breakout" in one_line_error(capsys)


def test_checkpoint_and_policy_together(tmp_path, capsys):
    assert main(["score", str(tmp_path), "--policy", "random", "--env", "breakout"]) == 2
    assert "not both" in one_line_error(capsys)


def test_lmp_is_for_doom(tmp_path, capsys):
    assert main(["record", "--policy", "random", "--env", "breakout", "--lmp", "--out", str(tmp_path)]) == 2
    assert "Doom" in one_line_error(capsys)


def test_table_flags_out_of_range(capsys):
    assert main(["doom-table", "--policy", "random", "--skill", "9"]) == 2
    assert "--skill" in one_line_error(capsys)


def test_exit_status_from_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pixelplay.eval", "score", str(tmp_path / "missing.pt")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing.pt" in proc.stderr and "Traceback" not in proc.stderr


def test_help_describes_every_command(capsys):
    parser = build_parser()
    for command in ("doom-table", "score", "record", "watch", "plot"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "usage: python -m pixelplay.eval " + command in text
    with pytest.raises(SystemExit):
        parser.parse_args(["doom-table", "--help"])
    text = capsys.readouterr().out
    for flag in ("--bots", "--minutes", "--opponent", "--human", "--matches", "--retries"):
        assert flag in text


@pytest.mark.parametrize("argv", [
    ["score", "--episodes", "0"],
    ["score", "--num-envs", "-1"],
    ["score", "--max-frames", "2"],
    ["score", "--policy", "random", "--env", "breakout", "--epsilon", "2"],
    ["doom-table", "--minutes", "-1"],
    ["doom-table", "--minutes", "nan"],
    ["doom-table", "--skill", "9"],
    ["doom-table", "--bots", "16"],
    ["doom-table", "--mp-bots", "15"],
    ["doom-table", "--matches", "0"],
    ["doom-table", "--retries", "-1"],
    ["doom-table", "--seed", "-1"],
    ["doom-table", "--bots-readd", "never"],
    ["doom-table", "--only", "both"],
    ["score", "--policy", "scripted"],
    ["record", "--episodes", "0"],
    ["record", "--scale", "-1"],
    ["watch", "--episodes", "0"],
    ["plot", "runs/x", "--smooth", "0"],
])
def test_value_out_of_range_is_one_line(argv, capsys):
    """Checked by the config engine before anything is loaded, and named by the flag that was typed."""
    flag = next(a for a in reversed(argv) if a.startswith("--"))
    assert main(argv) == 2
    assert one_line_error(capsys).startswith(f"error: {flag} must be")


@pytest.mark.parametrize("argv", [["score", "--episodes", "x"], ["score", "--env-backend", "gym"],
                                  ["doom-table", "--inject-fault", "x"], ["score", "--bogus"], ["plot"]])
def test_argparse_errors_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "--help" in one_line_error(capsys)


@pytest.mark.parametrize("command", ["doom-table", "score", "record", "watch", "plot"])
def test_help_shows_each_default_once(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    body = text[text.index("positional arguments:"):]
    entries = [" ".join(e.split()) for e in re.split(r"\n(?=  \S)", body) if e.startswith("  ")]
    assert len(entries) >= 3
    for entry in entries:
        assert entry.count("(default:") <= 1, entry
        assert "(default: None)" not in entry and "(default: ())" not in entry, entry
    assert "--inject-fault" not in text
    shown = {"doom-table": ("--bots BOTS", "(default: 8)"), "score": ("--env-backend", "(default: auto)"),
             "record": ("--episodes", "(default: 1)"), "watch": ("--seed", "(default: 1)"),
             "plot": ("--smooth", "(default: 20)")}[command]
    assert any(e.startswith(shown[0]) and e.endswith(shown[1]) for e in entries), entries


@pytest.fixture
def captured(monkeypatch):
    """Replace every command by one that records the options it was given."""
    seen: dict[str, dict] = {}
    for name, (_, groups) in list(cli.COMMANDS.items()):
        def run(name=name, **options):
            seen[name] = options
            return 0
        monkeypatch.setitem(cli.COMMANDS, name, (run, groups))
    return seen


def test_defaults_are_the_dataclasses(captured):
    for argv in (["doom-table"], ["score"], ["record"], ["watch"], ["plot", "a"]):
        assert main(argv) == 0
    assert captured["doom-table"]["table"] == TableConfig()
    assert captured["doom-table"]["extra"] == cli.TableOptions()
    assert captured["score"]["score"] == ScoreConfig()
    assert captured["score"]["player"] == cli.ScorePlayerOptions()
    assert captured["record"]["record"] == cli.RecordOptions()
    assert captured["watch"]["watch"] == cli.WatchOptions()
    assert captured["plot"]["plot"] == cli.PlotOptions(runs=("a",))


def test_every_flag_reaches_its_field(captured):
    assert main(["doom-table", "run", "--opponent", "scripted", "--human", "--bots", "2", "--mp-bots", "1",
                 "--map", "map01", "--skill", "4", "--minutes", "0.5", "--matches", "2", "--human-matches", "3",
                 "--bots-readd", "match", "--only", "multi", "--seed", "7", "--retries", "0",
                 "--stall-timeout", "9", "--match-timeout", "99", "--inject-fault", "hang", "--device", "cuda",
                 "--epsilon", "0.1", "--out", "o"]) == 0
    table, extra, player = (captured["doom-table"][k] for k in ("table", "extra", "player"))
    assert table == TableConfig(opponent="scripted", human=True, bots=2, mp_bots=1, map="map01", skill=4,
                                minutes=0.5, matches=2, human_matches=3, bots_readd="match", seed=7, retries=0,
                                stall_timeout=9.0, match_timeout=99.0)
    assert extra == cli.TableOptions(only="multi", inject_fault="hang")
    assert player == cli.PlayerOptions(target="run", device="cuda", epsilon=0.1, out="o")

    assert main(["score", "--policy", "random", "--env", "pong", "--episodes", "3", "--num-envs", "2", "--seed", "5",
                 "--max-frames", "400", "--noop-max", "0", "--sticky-actions", "--env-backend", "gymnasium"]) == 0
    assert captured["score"]["score"] == ScoreConfig(episodes=3, num_envs=2, seed=5, max_frames=400, noop_max=0,
                                                     sticky_actions=True, backend="gymnasium")
    assert captured["score"]["player"] == cli.ScorePlayerOptions(policy="random", env="pong")

    assert main(["record", "--policy", "scripted", "--env", "doom-basic", "--episodes", "2", "--seed", "3",
                 "--scale", "4", "--max-frames", "600", "--sticky-actions", "--resolution", "640x480", "--lmp"]) == 0
    assert captured["record"]["record"] == cli.RecordOptions(episodes=2, seed=3, scale=4, max_frames=600,
                                                             sticky_actions=True, resolution="640x480", lmp=True)

    assert main(["watch", "ck.pt", "--episodes", "2", "--seed", "4"]) == 0
    assert captured["watch"]["watch"] == cli.WatchOptions(episodes=2, seed=4)
    assert captured["watch"]["player"].target == "ck.pt"

    assert main(["plot", "a", "b", "--smooth", "5", "--out", "o"]) == 0
    assert captured["plot"]["plot"] == cli.PlotOptions(runs=("a", "b"), smooth=5, out="o")
