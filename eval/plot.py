"""Learning curves from runs' ``episodes.csv`` and a bar chart of the DOOM table, as PNG files.

Curves: episode return against env frames (``global_step`` x the env's frame skip, from the
run's ``config.json`` and the env's `EnvSpec`: the unit papers count in), one line per run (a moving average over ``smooth`` episodes, the raw returns faint
behind it), one panel per env, and a dashed line at the human score where `eval.baselines` has
one. Runs whose episodes.csv logs Doom's ``kills`` and ``deaths`` also get a second PNG beside the
learning curve (``kills_deaths_curve.png``, ``kills_deaths_curves.png`` for several such runs): one
row per env, a kills panel and a deaths panel, per training episode, smoothed with the same window
and drawn against the same x axis as the return. Runs without those columns (Atari) are left out of
it; where none has them it is not written. Matplotlib runs headless (Agg backend): no display needed.
"""

from __future__ import annotations

import csv
import json
import math
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


def human_line(env_id: str) -> tuple[float, str] | None:
    game = baselines.atari_references(env_id) if env_id else None
    if game is None:
        return None
    return game.human.score, game.human.source


def curve_x(run: dict[str, Any], spec: EnvSpec | None) -> tuple[np.ndarray, np.ndarray]:
    """A run's episodes on the curves' x axis, in order: env frames (global step x the env's frame
    skip) where the spec is known, else global steps; and the (stable) order that sorts them, to
    apply to each per-episode series (a torchrun run's ranks interleave their rows)."""
    x = spec.frames(run["steps"]) if spec is not None else run["steps"]
    order = np.argsort(x, kind="stable")
    return x[order], order


def x_label(spec: EnvSpec | None) -> str:
    """The curves' x-axis label, naming the unit (the same for the return and kills/deaths figures)."""
    return (f"env frames (global step x frame skip {spec.frame_skip})" if spec is not None
            else "agent steps (global step; frame skip unknown)")


def _env_spec_of(env: str) -> EnvSpec | None:
    return run_env_spec(env) if env != UNKNOWN_ENV else None


def kills_deaths_series(run: dict[str, Any], smooth: int, spec: EnvSpec | None = None) -> dict[str, np.ndarray]:
    """What the kills/deaths figure draws for a run (from `read_run`): ``x`` (as `curve_x`), and
    ``kills`` and ``deaths`` per episode in that order, each a `moving_average` over ``smooth``
    episodes, the window of the return curve. Empty where the run logs no kills/deaths."""
    if not run["stats"]:
        return {}
    x, order = curve_x(run, spec)
    return {"x": x, **{c: moving_average(run["stats"][c][order], smooth) for c in KD_STATS}}


def _read_runs(runs: list[Path] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run directories read with `read_run`; runs already read pass through (plot_runs reads each once)."""
    return [r if isinstance(r, dict) else read_run(Path(r)) for r in runs]


def plot_learning_curves(run_dirs: list[Path] | list[dict[str, Any]], out_path: Path, smooth: int = 20) -> Path:
    runs = _read_runs(run_dirs)
    envs = list(dict.fromkeys(r["env"] for r in runs))
    plt = _pyplot()
    fig, axes = plt.subplots(len(envs), 1, figsize=(8, 4.5 * len(envs)), squeeze=False)
    for ax, env in zip(axes[:, 0], envs, strict=True):
        spec = _env_spec_of(env)
        for run in (r for r in runs if r["env"] == env):
            frames, order = curve_x(run, spec)
            returns = run["returns"][order]
            (line,) = ax.plot(frames, moving_average(returns, smooth), label=run["name"], linewidth=1.8)
            ax.plot(frames, returns, color=line.get_color(), alpha=0.15, linewidth=0.8)
        human = human_line(env)
        if human is not None:
            ax.axhline(human[0], color="black", linestyle="--", linewidth=1,
                       label=f"human {human[0]:g} ({human[1].split(',')[0]})")
        ax.set_title(f"{env}: episode return (moving average over {smooth})")
        ax.set_xlabel(x_label(spec))
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out_path)


def plot_kills_deaths(run_dirs: list[Path] | list[dict[str, Any]], out_path: Path, smooth: int = 20) -> Path | None:
    """Kills and deaths per training episode of the runs that log them (Doom), as `plot_learning_curves`
    draws the return: one row per env, a kills panel and a deaths panel, one labelled line per run
    (the moving average, the raw counts faint behind). None, and no file, where no run logs them."""
    runs = [r for r in _read_runs(run_dirs) if r["stats"]]
    if not runs:
        return None
    envs = list(dict.fromkeys(r["env"] for r in runs))
    plt = _pyplot()
    fig, axes = plt.subplots(len(envs), len(KD_STATS), figsize=(7 * len(KD_STATS), 4.5 * len(envs)),
                             squeeze=False)
    for row, env in zip(axes, envs, strict=True):
        spec = _env_spec_of(env)
        env_runs = [r for r in runs if r["env"] == env]
        series = [kills_deaths_series(r, smooth, spec) for r in env_runs]
        orders = [curve_x(r, spec)[1] for r in env_runs]
        for ax, stat in zip(row, KD_STATS, strict=True):
            for run, drawn, order in zip(env_runs, series, orders, strict=True):
                (line,) = ax.plot(drawn["x"], drawn[stat], label=f"{run['name']}: {stat}", linewidth=1.8)
                ax.plot(drawn["x"], run["stats"][stat][order], color=line.get_color(), alpha=0.15, linewidth=0.8)
            ax.set_title(f"{env}: {stat} per episode (moving average over {smooth})")
            ax.set_xlabel(x_label(spec))
            ax.set_ylabel(f"{stat} per episode")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return _save(fig, out_path)


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
