"""python -m pixelplay.eval plot on fake run directories: learning curves and the DOOM table as PNG files."""

import csv
import json
from dataclasses import asdict

import numpy as np
import pytest

from pixelplay.eval import doom_table
from pixelplay.eval.__main__ import main
from pixelplay.eval.baselines import DOOM_PAPER
from pixelplay.eval.plot import moving_average, read_run, run_env_spec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(path, env, episodes=60, doom=False, seed=0):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"run": {"env": env, "algo": "ppo"}, "algo": {}}))
    columns = ["global_step", "wall_time", "env", "return", "length"]
    columns += ["kills", "deaths", "suicides", "objects"] if doom else ["frames"]
    rng = np.random.default_rng(seed)
    with open(path / "episodes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for i in range(episodes):
            row = {"global_step": 1000 * (i + 1), "wall_time": i, "env": i % 4, "return": i * 0.5 + rng.normal(),
                   "length": 100}
            row.update({"kills": 1, "deaths": 2, "suicides": 0, "objects": 3} if doom else {"frames": 400})
            writer.writerow(row)
    return path


def fake_table(path):
    players = {"agent": dict(kills=3, deaths=2, suicides=1, objects=4, steps=10, tics=40, wall_s=1.0),
               "opponent": dict(kills=1, deaths=3, suicides=0, objects=2, steps=10, tics=40, wall_s=1.0)}
    sp = [doom_table.MatchRecord(0, 1, attempts=1, players={"agent": players["agent"]})]
    mp = [doom_table.MatchRecord(0, 2, attempts=2, failures=["hung"], players=players)]
    result = {
        "agent": "fake", "opponent": "random", "protocol": {}, "wall_time_s": 1.0,
        "paper": {"source": "paper", "table": DOOM_PAPER,
                  "flags": [{**asdict(f), "note": f.note} for f in doom_table.paper_kd_mismatches()]},
        "single_player": doom_table._setting_result(sp, {"agent": "fake"}),
        "multiplayer": doom_table._setting_result(mp, {"agent": "fake", "opponent": "random"}),
    }
    (path / "doom_table.json").write_text(json.dumps(result))


def test_plot_two_runs_and_a_doom_table(tmp_path, capsys):
    a = fake_run(tmp_path / "breakout_a", "breakout", seed=1)
    b = fake_run(tmp_path / "breakout_b", "breakout", seed=2)
    doom = fake_run(tmp_path / "doom", "doom-deathmatch", doom=True)
    fake_table(doom)
    assert main(["plot", str(a), str(b), str(doom), "--smooth", "5"]) == 0
    curves = a / "learning_curves.png"
    chart = doom / "doom_table.png"
    for png in (curves, chart):
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    out = capsys.readouterr().out
    assert str(curves) in out and str(chart) in out


def test_plot_one_run_writes_into_it(tmp_path):
    run = fake_run(tmp_path / "run", "breakout")
    assert main(["plot", str(run)]) == 0
    assert (run / "learning_curve.png").read_bytes().startswith(PNG_MAGIC)


def test_run_reading_and_smoothing(tmp_path):
    run = read_run(fake_run(tmp_path / "run", "breakout", episodes=5))
    assert run["env"] == "breakout" and list(run["steps"]) == [1000, 2000, 3000, 4000, 5000]
    assert moving_average(np.array([1.0, 3.0, 5.0, 7.0]), 2) == pytest.approx([1.0, 2.0, 4.0, 6.0])
    assert moving_average(np.array([2.0, 4.0]), 1) == pytest.approx([2.0, 4.0])


def test_plot_refuses_a_directory_without_episodes(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2
    assert "episodes.csv" in capsys.readouterr().err


def test_curves_count_frames_with_the_runs_frame_skip(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn, labels = [], []

    def spy(method, seen):
        real = getattr(matplotlib.axes.Axes, method)

        def wrapper(ax, first, *args, **kwargs):
            seen.append(first if isinstance(first, str) else list(first))
            return real(ax, first, *args, **kwargs)

        monkeypatch.setattr(matplotlib.axes.Axes, method, wrapper)

    spy("plot", drawn)
    spy("set_xlabel", labels)
    assert run_env_spec("breakout").frame_skip == 4 and run_env_spec("no-such-env") is None
    known = fake_run(tmp_path / "known", "breakout", episodes=3)
    unknown = fake_run(tmp_path / "unknown", "no-such-env", episodes=3)  # an env this install does not know
    assert main(["plot", str(known), str(unknown), "--out", str(tmp_path / "out")]) == 0
    assert drawn[0] == [4000, 8000, 12000] and drawn[2] == [1000, 2000, 3000]
    assert labels == ["env frames (global step x frame skip 4)", "agent steps (global step; frame skip unknown)"]
