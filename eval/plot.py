"""Learning curves from runs' ``episodes.csv`` and a bar chart of the DOOM table, as PNG files.

Curves: episode return against env steps (``global_step``: agent steps summed over the envs,
the unit ``--total-steps`` counts in), with the frames of a step (the env's frame skip, from the
run's ``config.json`` and the env's `EnvSpec`) named in the axis label, as papers count frames;
one line per run (a moving average over ``smooth`` episodes, the raw returns faint behind it),
one panel per env, and a horizontal line at each human and published reference score
`eval.baselines` holds for the env, labelled with its source. The report page
(`eval.report`) draws the same figure. Runs whose episodes.csv logs Doom's ``kills`` and ``deaths`` also get a second PNG beside the
learning curve (``kills_deaths_curve.png``, ``kills_deaths_curves.png`` for several such runs): one
row per env, a kills panel and a deaths panel, per training episode, smoothed with the same window
and drawn against the same x axis as the return. Runs without those columns (Atari) are left out of
it; where none has them it is not written. Matplotlib runs headless (Agg backend): no display needed.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from pixelplay.envs.errors import PixelplayError
from pixelplay.envs.spec import EnvSpec
from pixelplay.eval import baselines
from pixelplay.eval.common import atomic_path

UNKNOWN_ENV = "unknown env"
"""The env name of a run whose config.json names none."""

KD_STATS: tuple[str, ...] = ("kills", "deaths")
"""The per-episode Doom statistics the kills/deaths figure draws (read where episodes.csv has both)."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def read_run(run_dir: Path) -> dict[str, Any]:
    """A run's env name and episodes (global_step, return, and Doom's kills/deaths when present)."""
    path = Path(run_dir) / "episodes.csv"
    if not path.exists():
        raise PixelplayError(f"'{run_dir}' has no episodes.csv (is it a pixelplay run directory?)")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        columns = reader.fieldnames or []
    try:
        steps = np.array([float(r["global_step"]) for r in rows])
        returns = np.array([float(r["return"]) for r in rows])
    except (KeyError, ValueError, TypeError) as error:
        raise PixelplayError(f"'{path}' lacks readable global_step / return columns ({error})") from None
    stats = {}
    if all(c in columns for c in KD_STATS):
        try:
            stats = {c: np.array([float(r[c]) for r in rows]) for c in KD_STATS}
        except (ValueError, TypeError) as error:
            raise PixelplayError(f"'{path}' has unreadable {' / '.join(KD_STATS)} values ({error})") from None
    env = None
    config = Path(run_dir) / "config.json"
    if config.exists():
        try:
            env = json.loads(config.read_text()).get("run", {}).get("env")
        except json.JSONDecodeError:
            env = None
    return {"name": Path(run_dir).name, "env": env or UNKNOWN_ENV, "steps": steps, "returns": returns,
            "stats": stats}


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (shorter at the start, so it has every point)."""
    if len(values) == 0 or window <= 1:
        return values.astype(float)
    sums = np.cumsum(np.insert(values.astype(float), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(0, idx - window)
    return (sums[idx] - sums[start]) / (idx - start)


def run_env_spec(env_id: str | None) -> EnvSpec | None:
    """The `EnvSpec` of a run's env (its frame skip turns steps into frames), or None where the
    run names no env or one this install cannot resolve (then curves are drawn against steps)."""
    if not env_id:
        return None
    from pixelplay.envs import env_spec  # imports torch: only when a curve is drawn

    try:
        return env_spec(env_id)
    except (PixelplayError, ImportError):
        return None


def reference_lines(env_id: str) -> list[tuple[str, float, str]]:
    """(name, score, source) of each reference score `eval.baselines` holds for ``env_id``'s game:
    human first, then random, then the published agents; empty where it holds none (Doom
    scenarios: the DOOM table's numbers are per match, not per training episode)."""
    game = baselines.atari_references(env_id) if env_id and env_id != UNKNOWN_ENV else None
    if game is None:
        return []
    named = [("human", game.human), ("random", game.random), *game.others.items()]
    return [(name, ref.score, ref.source) for name, ref in named]


def short_source(source: str) -> str:
    """A source's first clause, for a legend (the report page lists the full sources)."""
    return re.split(r",|;| \(", source, maxsplit=1)[0]


def curve_x(run: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A run's episodes on the curves' x axis, in order: env steps (``global_step``); and the
    (stable) order that sorts them, to apply to each per-episode series (a torchrun run's ranks
    interleave their rows)."""
    order = np.argsort(run["steps"], kind="stable")
    return run["steps"][order], order


def x_label(spec: EnvSpec | None) -> str:
    """The curves' x-axis label: env steps, with the frames each is (the env's frame skip); the
    same for the return and kills/deaths figures and the report page."""
    if spec is None:
        return "env steps (agent steps; frames per step unknown)"
    return f"env steps (1 step = {spec.frame_skip} frames)"


def _env_spec_of(env: str) -> EnvSpec | None:
    return run_env_spec(env) if env != UNKNOWN_ENV else None


def kills_deaths_series(run: dict[str, Any], smooth: int) -> dict[str, np.ndarray]:
    """What the kills/deaths figure draws for a run (from `read_run`): ``x`` (as `curve_x`), and
    ``kills`` and ``deaths`` per episode in that order, each a `moving_average` over ``smooth``
    episodes, the window of the return curve. Empty where the run logs no kills/deaths."""
    if not run["stats"]:
        return {}
    x, order = curve_x(run)
    return {"x": x, **{c: moving_average(run["stats"][c][order], smooth) for c in KD_STATS}}


def _read_runs(runs: list[Path] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run directories read with `read_run`; runs already read pass through (plot_runs reads each once)."""
    return [r if isinstance(r, dict) else read_run(Path(r)) for r in runs]


def learning_curves_figure(runs: list[dict[str, Any]], smooth: int = 20):
    """The learning-curve figure of runs read with `read_run` (the caller saves and closes it):
    one panel per env, the runs of an env overlaid, each env's reference lines (`reference_lines`)
    drawn across it, human dashed, the others dotted, each labelled with its score and source. The
    faint raw returns are rasterized, so a long run's SVG stays small."""
    envs = list(dict.fromkeys(r["env"] for r in runs))
    plt = _pyplot()
    fig, axes = plt.subplots(len(envs), 1, figsize=(11, 4.5 * len(envs)), squeeze=False)
    for ax, env in zip(axes[:, 0], envs, strict=True):
        spec = _env_spec_of(env)
        for run in (r for r in runs if r["env"] == env):
            steps, order = curve_x(run)
            returns = run["returns"][order]
            (line,) = ax.plot(steps, moving_average(returns, smooth), label=run["name"], linewidth=1.8)
            ax.plot(steps, returns, color=line.get_color(), alpha=0.15, linewidth=0.8, rasterized=True)
        for name, score, source in reference_lines(env):
            ax.axhline(score, color="black" if name == "human" else "grey", linewidth=1,
                       linestyle="--" if name == "human" else ":",
                       label=f"{name} {score:g} ({short_source(source)})")
        ax.set_title(f"{env}: episode return (moving average over {smooth})")
        ax.set_xlabel(x_label(spec))
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
        # Beside the panel, not over it: an Atari game has a dozen reference lines.
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig


def plot_learning_curves(run_dirs: list[Path] | list[dict[str, Any]], out_path: Path, smooth: int = 20) -> Path:
    return _save(learning_curves_figure(_read_runs(run_dirs), smooth), out_path)


def plot_kills_deaths(run_dirs: list[Path] | list[dict[str, Any]], out_path: Path, smooth: int = 20) -> Path | None:
    """Kills and deaths per training episode of the runs that log them (Doom), as `plot_learning_curves`
    draws the return: one row per env, a kills panel and a deaths panel, one labelled line per run
    (the moving average, the raw counts faint behind). None, and no file, where no run logs them."""
    fig = kills_deaths_figure(_read_runs(run_dirs), smooth)
    return None if fig is None else _save(fig, out_path)


def kills_deaths_figure(runs: list[dict[str, Any]], smooth: int = 20):
    """`plot_kills_deaths`'s figure of runs read with `read_run` (the caller saves and closes it),
    or None where no run logs kills and deaths."""
    runs = [r for r in runs if r["stats"]]
    if not runs:
        return None
    envs = list(dict.fromkeys(r["env"] for r in runs))
    plt = _pyplot()
    fig, axes = plt.subplots(len(envs), len(KD_STATS), figsize=(7 * len(KD_STATS), 4.5 * len(envs)),
                             squeeze=False)
    for row, env in zip(axes, envs, strict=True):
        spec = _env_spec_of(env)
        env_runs = [r for r in runs if r["env"] == env]
        series = [kills_deaths_series(r, smooth) for r in env_runs]
        orders = [curve_x(r)[1] for r in env_runs]
        for ax, stat in zip(row, KD_STATS, strict=True):
            for run, drawn, order in zip(env_runs, series, orders, strict=True):
                (line,) = ax.plot(drawn["x"], drawn[stat], label=f"{run['name']}: {stat}", linewidth=1.8)
                ax.plot(drawn["x"], run["stats"][stat][order], color=line.get_color(), alpha=0.15, linewidth=0.8,
                        rasterized=True)
            ax.set_title(f"{env}: {stat} per episode (moving average over {smooth})")
            ax.set_xlabel(x_label(spec))
            ax.set_ylabel(f"{stat} per episode")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return fig


def plot_doom_table(table_json: Path, out_path: Path) -> Path:
    """Grouped bars of the DOOM table: paper human, Arnold and this agent, per setting."""
    from pixelplay.eval.doom_table import table_columns

    result = json.loads(Path(table_json).read_text())
    columns = table_columns(result)
    settings = [s for s in baselines.DOOM_SETTINGS if any(c[0] == s for c in columns)]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(settings), figsize=(7 * len(settings), 4.5), squeeze=False)
    metrics = baselines.DOOM_METRICS
    for ax, setting in zip(axes[0], settings, strict=True):
        cols = [c for c in columns if c[0] == setting]
        width = 0.8 / len(cols)
        x = np.arange(len(metrics))
        for k, (_, header, values, flagged) in enumerate(cols):
            heights = [float("nan") if values is None else float(values.get(m, float("nan"))) for m in metrics]
            bars = ax.bar(x + (k - (len(cols) - 1) / 2) * width, [0 if math.isnan(h) else h for h in heights],
                          width, label=header.split(": ", 1)[1])
            for bar, metric, height in zip(bars, metrics, heights, strict=True):
                text = "-" if math.isnan(height) else (f"{height:.2f}" if metric == "kd_ratio" else f"{height:.1f}")
                if metric in flagged:
                    text += "(!)"
                ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                            va="bottom", fontsize=7)
        ax.set_xticks(x, [baselines.DOOM_METRIC_LABELS[m].replace("Number of ", "") for m in metrics])
        ax.set_title(f"DOOM, {setting.replace('_', ' ')} (per-match means)")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if result["paper"]["flags"]:
        fig.text(0.01, 0.01, "(!) " + result["paper"]["flags"][0]["note"], fontsize=7)
    return _save(fig, out_path, rect=(0, 0.04, 1, 1))


def _save(fig, out_path: Path, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> Path:
    """Lay out, save atomically (a uniquely named temporary PNG, renamed into place) and close a figure."""
    fig.tight_layout(rect=rect)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _pyplot().close(fig)
    return out_path


def plot_runs(run_dirs: list[str], out: str | None = None, smooth: int = 20, log=print) -> list[Path]:
    """The command: learning curves and, for the runs that log kills/deaths, their curves (both into
    --out or the first run), and each run's DOOM table chart."""
    if smooth < 1:
        raise PixelplayError(f"--smooth must be at least 1, got {smooth}")
    dirs = [Path(d) for d in run_dirs]
    for d in dirs:
        if not d.is_dir():
            raise PixelplayError(f"'{d}' is not a run directory")
    written = []
    target = Path(out) if out else dirs[0]
    name = "learning_curve.png" if len(dirs) == 1 else "learning_curves.png"
    runs = [read_run(d) for d in dirs]
    written.append(plot_learning_curves(runs, target / name, smooth))
    kd_runs = [r for r in runs if r["stats"]]
    if kd_runs:
        kd_name = "kills_deaths_curve.png" if len(kd_runs) == 1 else "kills_deaths_curves.png"
        written.append(plot_kills_deaths(kd_runs, target / kd_name, smooth))
    for d in dirs:
        table = d / "doom_table.json"
        if table.exists():
            png = d / "doom_table.png" if not out else Path(out) / (
                "doom_table.png" if len(dirs) == 1 else f"doom_table_{d.name}.png")
            written.append(plot_doom_table(table, png))
    for path in written:
        log(f"wrote {path}")
    return written
