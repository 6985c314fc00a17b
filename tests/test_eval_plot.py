"""python -m pixelplay.eval plot on fake run directories: learning curves, Doom kills/deaths curves and the
DOOM table as PNG files."""

import csv
import json
from dataclasses import asdict

import numpy as np
import pytest

from pixelplay.eval import doom_table
from pixelplay.eval.__main__ import main
from pixelplay.eval.baselines import DOOM_PAPER
from pixelplay.eval.plot import kills_deaths_series, moving_average, read_run, run_env_spec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(path, env, episodes=60, doom=False, seed=0, steps=None, kills=None, deaths=None, rank=False):
    """A run directory: config.json and episodes.csv (Doom's columns with ``doom``; ``steps``, ``kills``,
    ``deaths`` per episode where given, else 1000 * (i + 1), 1 and 2; a torchrun ``rank`` column)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"run": {"env": env, "algo": "ppo"}, "algo": {}}))
    episodes = len(steps) if steps is not None else episodes
    columns = ["global_step", "wall_time", *(["rank"] if rank else []), "env", "return", "length"]
    columns += ["kills", "deaths", "suicides", "objects"] if doom else ["frames"]
    rng = np.random.default_rng(seed)
    with open(path / "episodes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for i in range(episodes):
            row = {"global_step": steps[i] if steps is not None else 1000 * (i + 1), "wall_time": i, "env": i % 4,
                   "return": i * 0.5 + rng.normal(), "length": 100, **({"rank": i % 2} if rank else {})}
            row.update({"kills": kills[i] if kills else 1, "deaths": deaths[i] if deaths else 2, "suicides": 0,
                        "objects": 3} if doom else {"frames": 400})
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


def test_curves_count_env_steps_and_name_the_runs_frame_skip(tmp_path, monkeypatch):
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
    assert drawn[0] == [1000, 2000, 3000] and drawn[2] == [1000, 2000, 3000]
    assert labels == ["env steps (1 step = 4 frames)", "env steps (agent steps; frames per step unknown)"]


def spy_plot(monkeypatch):
    """Record each Axes.plot call's x, y and label (the lines drawn, in order)."""
    import matplotlib.axes

    drawn = []
    real = matplotlib.axes.Axes.plot

    def wrapper(ax, x, y, *args, **kwargs):
        drawn.append((list(x), list(y), kwargs.get("label")))
        return real(ax, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", wrapper)
    return drawn


def test_kills_deaths_png_for_a_doom_run_not_an_atari_one(tmp_path, capsys):
    doom = fake_run(tmp_path / "doom", "doom-deathmatch", episodes=30, doom=True)
    atari = fake_run(tmp_path / "atari", "breakout", episodes=30)
    assert main(["plot", str(doom)]) == 0
    png = doom / "kills_deaths_curve.png"
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert str(png) in capsys.readouterr().out
    assert main(["plot", str(atari)]) == 0
    assert (atari / "learning_curve.png").exists()
    assert not list(atari.glob("kills_deaths*"))
    assert capsys.readouterr().out.splitlines() == [f"wrote {atari / 'learning_curve.png'}"]
    assert sorted(p.name for p in doom.iterdir()) == ["config.json", "episodes.csv", "kills_deaths_curve.png",
                                                      "learning_curve.png"]  # no temporary file left behind


def test_kills_deaths_series_by_hand(tmp_path):
    # Two torchrun ranks interleave their rows: the curves sort them by env steps (global step).
    run = read_run(fake_run(tmp_path / "doom", "doom-deathmatch", doom=True, rank=True,
                            steps=[2000, 1000, 3000, 4000], kills=[3, 1, 5, 0], deaths=[0, 2, 2, 4]))
    series = kills_deaths_series(run, 2)
    assert list(series["x"]) == [1000, 2000, 3000, 4000]
    assert series["kills"] == pytest.approx([1, (1 + 3) / 2, (3 + 5) / 2, (5 + 0) / 2])
    assert series["deaths"] == pytest.approx([2, (2 + 0) / 2, (0 + 2) / 2, (2 + 4) / 2])
    assert kills_deaths_series(run, 3)["kills"] == pytest.approx([1, 2, 3, 8 / 3])
    assert kills_deaths_series(read_run(fake_run(tmp_path / "atari", "breakout", episodes=3)), 2) == {}


def test_mixed_runs_draw_kills_deaths_of_the_doom_ones_only(tmp_path, monkeypatch, capsys):
    drawn = spy_plot(monkeypatch)
    atari = fake_run(tmp_path / "atari", "breakout", episodes=4)
    doom_a = fake_run(tmp_path / "doom_a", "doom-deathmatch", doom=True,
                      steps=[1000, 2000, 3000, 4000], kills=[0, 2, 4, 6], deaths=[1, 1, 3, 3])
    doom_b = fake_run(tmp_path / "doom_b", "doom-deathmatch", doom=True, rank=True,
                      steps=[2000, 1000, 4000, 3000], kills=[1, 1, 1, 5], deaths=[0, 4, 0, 2])
    out = tmp_path / "out"
    assert main(["plot", str(atari), str(doom_a), str(doom_b), "--out", str(out), "--smooth", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["kills_deaths_curves.png", "learning_curves.png"]
    assert (out / "kills_deaths_curves.png").read_bytes().startswith(PNG_MAGIC)
    labelled = {label: (x, y) for x, y, label in drawn if label}
    # The return curves: every run; the x axis in env steps.
    returns_x = labelled["doom_b"][0]
    assert returns_x == [1000, 2000, 3000, 4000] and "atari" in labelled
    # The kills/deaths curves: one labelled line per Doom run per quantity, none for the Atari run.
    kd = {label: xy for label, xy in labelled.items() if ": " in label}
    assert sorted(kd) == ["doom_a: deaths", "doom_a: kills", "doom_b: deaths", "doom_b: kills"]
    assert all(x == returns_x for x, _ in kd.values())  # the same x axis as the return
    assert kd["doom_a: kills"][1] == pytest.approx([0, 1, 3, 5])
    assert kd["doom_a: deaths"][1] == pytest.approx([1, 1, 2, 3])
    assert kd["doom_b: kills"][1] == pytest.approx([1, 1, 3, 3])  # sorted by step: 1, 1, 5, 1
    assert kd["doom_b: deaths"][1] == pytest.approx([4, 2, 1, 1])  # sorted by step: 4, 0, 2, 0
    # Each smoothed line has its raw counts drawn faint behind it (unlabelled, same x).
    raw = [y for x, y, label in drawn if label is None and x == returns_x]
    assert [0, 2, 4, 6] in raw and [4, 0, 2, 0] in raw
    assert str(out / "kills_deaths_curves.png") in capsys.readouterr().out


def test_kills_deaths_x_label_names_the_unit_as_the_return_does(tmp_path, monkeypatch):
    import matplotlib.axes

    labels = []
    real = matplotlib.axes.Axes.set_xlabel
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlabel",
                        lambda ax, text, *a, **k: labels.append(text) or real(ax, text, *a, **k))
    known = fake_run(tmp_path / "known", "doom-deathmatch", episodes=3, doom=True)
    unknown = fake_run(tmp_path / "unknown", "no-such-doom", episodes=3, doom=True)
    assert main(["plot", str(known), str(unknown), "--out", str(tmp_path / "out")]) == 0
    frames, steps = "env steps (1 step = 4 frames)", "env steps (agent steps; frames per step unknown)"
    assert labels == [frames, steps] + [frames, frames, steps, steps]  # return, then kills|deaths per env


def test_each_reference_line_is_labelled_with_its_score_and_source(tmp_path):
    from pixelplay.eval.baselines import ATARI
    from pixelplay.eval.plot import learning_curves_figure

    game = ATARI["breakout"]
    fig = learning_curves_figure([read_run(fake_run(tmp_path / "run", "breakout", episodes=3))], smooth=2)
    (ax,) = fig.axes
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    refs = [("human", game.human), ("random", game.random), *game.others.items()]
    assert len(labels) == 1 + len(refs) and labels[0] == "run"
    for label, (name, ref) in zip(labels[1:], refs, strict=True):
        prefix = f"{name} {ref.score:g} ("
        assert label.startswith(prefix) and label.endswith(")") and ref.source.startswith(label[len(prefix):-1])
    assert sorted(line.get_ydata()[0] for line in ax.lines[2:]) == sorted(ref.score for _, ref in refs)
    import matplotlib.pyplot as plt

    plt.close(fig)
