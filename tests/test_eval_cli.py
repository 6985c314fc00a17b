"""python -m pixelplay.eval: bad input gives one clear line and exit status 2; --help explains every command."""

import subprocess
import sys
from pathlib import Path

import pytest

from pixelplay.eval.__main__ import build_parser, main

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
