"""One page that shows how good an agent is: ``python -m pixelplay.eval report RUN [RUN ...]``.

Writes ``report.html``, a single self-contained file that opens from disk (no server, no
network, no JavaScript): the styles sit in the page, the figures are inline SVG (the faint raw
returns rasterized inside them, so a long run stays small), and each run's gameplay video lies
beside the page under ``videos/`` and is referenced by a relative path, so the folder moves as
one. Per run:

* the learning curve, raw return against env steps (`eval.plot`'s figure and x axis: env steps,
  the frames per step named in the label), with the human and published reference scores of
  `eval.baselines` as lines, each labelled with its source (the full sources listed under it);
  several runs overlaid, one panel per env; and Doom's kills and deaths per episode;
* the Atari or ViZDoom score (``score_<env>_*.json`` of ``eval score``, one per protocol) beside its references,
  and the DOOM table (``doom_table.json`` of ``eval doom-table``) with the paper's human and
  Arnold columns and its K/D mismatch flag, where they were computed in the run directory;
* a playable ``<video>``: the run's own (``videos/``: an ``eval record`` episode, else the last
  ``--capture-video`` one), else one episode the report records with the run's checkpoint
  (`eval.record`, at the emulator's frame rate); ``--no-video`` skips both;
* the resolved configuration (``config.json``), the throughput (``charts/steps_per_second`` of
  ``metrics.csv``) and the step of the checkpoint (``checkpoints/latest.pt``).

Several runs get one row each in a summary table and a section each. ``--study DIR`` adds an
Optuna study (the ``summary.json`` that ``python -m pixelplay.tune`` writes): its trials as a
table and the parameter importances as bars.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import math
import os
import pickle
import re
import shutil
import statistics
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelplay.envs.errors import PixelplayError
from pixelplay.eval import baselines
from pixelplay.eval.common import atomic_write_text

REPORT_FILE = "report.html"
STUDY_FILE = "summary.json"
"""The study summary `python -m pixelplay.tune` writes into its folder."""
STUDY_KEYS = ("study_name", "storage", "direction", "metric", "best", "trials", "importances")
TRIAL_KEYS = ("number", "state", "value", "params", "run_dir")
RECENT_EPISODES = 20
"""Episodes averaged for a run's final return (train.py's own window for its end-of-run line)."""
THROUGHPUT_COLUMN = "charts/steps_per_second"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell: ``-`` for none or NaN, integers as integers, others to ``digits``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


# ---------------------------------------------------------------------------------------------
# What a run directory holds


@dataclass
class RunReport:
    """What the page shows of one run directory (see `read_run_report`)."""

    name: str
    path: Path
    env: str
    algo: str
    curve: dict[str, Any]
    """`eval.plot.read_run`'s episodes"""
    config: dict[str, Any] | None
    throughput: dict[str, float] | None
    checkpoint: dict[str, Any] | None
    scores: list[dict[str, Any]]
    doom_table: dict[str, Any] | None
    video: dict[str, Any] | None = None
    """``src`` (relative to the page), ``origin`` and the JSON written beside the file (``meta``)"""
    notes: list[str] = field(default_factory=list)
    """what the page could not show for this run, and why"""


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PixelplayError(f"cannot read {what} '{path}': {error}") from None
    if not isinstance(data, dict):
        raise PixelplayError(f"{what} '{path}' is not a JSON object")
    return data


def read_throughput(run_dir: Path) -> dict[str, float] | None:
    """Env steps per second from ``metrics.csv`` (train.py logs ``charts/steps_per_second`` with
    each update's metrics): mean, last and how many logs; None where the run logged none."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return None
    with open(path, newline="") as handle:
        values = []
        for row in csv.DictReader(handle):
            try:
                values.append(float(row.get(THROUGHPUT_COLUMN) or "nan"))
            except ValueError:
                continue
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "last": values[-1], "logs": len(values)}


def read_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The step, algorithm and env of the run's ``checkpoints/latest.pt``, or None where it has none.

    The file is memory-mapped (``torch.load(mmap=True)``): a checkpoint with a saved replay can
    be gigabytes, and only its header fields are read. Raises `PixelplayError` for a damaged one."""
    import torch

    path = run_dir / "checkpoints" / "latest.pt"
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        step = int(data["global_step"])
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError,
            TypeError) as error:  # what torch.load raises for a damaged or foreign file, as load_checkpoint reads it
        raise PixelplayError(f"'{path}' is not a readable pixelplay checkpoint: "
                             f"{str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}"
                             ) from None
    return {"path": path, "step": step, "algo": data.get("algo"), "env": data.get("env_id")}


def read_run_report(run_dir: Path, name: str) -> RunReport:
    """Everything the page shows of ``run_dir`` except its video; a part it cannot read is a note."""
    from pixelplay.eval.plot import read_run

    curve = read_run(run_dir)
    notes: list[str] = []
    config = None
    if (run_dir / "config.json").exists():
        try:
            config = read_json(run_dir / "config.json", "config")
        except PixelplayError as error:
            notes.append(str(error))
    else:
        notes.append("no config.json in the run directory")
    try:
        checkpoint = read_checkpoint(run_dir)
    except PixelplayError as error:
        checkpoint = None
        notes.append(str(error))
    scores = []
    for path in sorted(run_dir.glob("score_*.json")):
        try:
            scores.append(read_json(path, "score"))
        except PixelplayError as error:
            notes.append(str(error))
    doom_table = None
    if (run_dir / "doom_table.json").exists():
        try:
            doom_table = read_json(run_dir / "doom_table.json", "DOOM table")
        except PixelplayError as error:
            notes.append(str(error))
    algo = ((config or {}).get("run") or {}).get("algo") or (checkpoint or {}).get("algo") or "?"
    curve["name"] = name
    return RunReport(name=name, path=run_dir, env=curve["env"], algo=algo, curve=curve, config=config,
                     throughput=read_throughput(run_dir), checkpoint=checkpoint, scores=scores,
                     doom_table=doom_table, notes=notes)


# ---------------------------------------------------------------------------------------------
# Videos


def _step_of(path: Path) -> int:
    match = re.fullmatch(r"step_(\d+)", path.stem)
    return int(match.group(1)) if match else -1


def video_origin(path: Path) -> str:
    """Where a video came from, in words, from the name its writer gave it (`eval.record`)."""
    if path.name.startswith("record_"):
        return "an `eval record` episode"
    if path.name.startswith("report_"):
        return "recorded for a report"
    if path.name.startswith("watch_"):
        return "an `eval watch` recording"
    if _step_of(path) >= 0:
        return f"recorded during training (--capture-video) at step {_step_of(path):,}"
    return "found in the run's videos/"


def find_video(folder: Path) -> Path | None:
    """The video of a run to show, from its ``videos/`` folder: an ``eval record`` episode (the
    trained agent, a full evaluation episode), else the last ``--capture-video`` one (the highest
    step), else an ``eval watch`` recording; None where there is none."""
    videos = sorted(p for p in folder.glob("*.mp4") if not p.name.startswith("."))  # .* are temporaries
    for prefix in ("record_", "report_"):
        found = [p for p in videos if p.name.startswith(prefix)]
        if found:
            return found[0]
    steps = [p for p in videos if _step_of(p) >= 0]
    if steps:
        return max(steps, key=_step_of)
    return videos[0] if videos else None


def video_folder(run: RunReport, out_dir: Path) -> Path:
    """Where the page keeps a run's video: the run's own ``videos/`` when the page is written into
    the run, else ``videos/<run name>/`` beside the page."""
    if run.path.resolve() == out_dir.resolve():
        return out_dir / "videos"
    return out_dir / "videos" / run.name


def record_video(run: RunReport, folder: Path, seed: int, device: str, log) -> Path:
    """Record one evaluation episode of the run's checkpoint into ``folder`` (`eval.record`)."""
    from pixelplay.eval.policies import checkpoint_env, parse_policy
    from pixelplay.eval.record import record_episodes

    spec = parse_policy(str(run.path), None, device)
    env_id = checkpoint_env(spec)
    log(f"{run.name}: recording one episode of {env_id} for the report ...")
    results = record_episodes(spec, env_id, folder, episodes=1, seed=seed, prefix="report", log=log)
    return folder / results[0]["video"]


def attach_video(run: RunReport, out_dir: Path, *, record: bool, seed: int, device: str, log) -> None:
    """Find the run's video (its own, or one an earlier report kept beside the page), or record
    one; copy it (and the JSON beside it) next to the page unless it is already there; set
    ``run.video``. A recording that fails is a note on the page, not the end of the report."""
    folder = video_folder(run, out_dir)
    video = find_video(run.path / "videos") or find_video(folder)
    origin = video_origin(video) if video is not None else ""
    if video is None:
        if not record:
            run.notes.append("no video in the run directory (--no-video: none recorded)")
            return
        if run.checkpoint is None:
            run.notes.append("no video in the run directory and no checkpoint to record one with")
            return
        try:
            video, origin = record_video(run, folder, seed, device, log), f"recorded for this report (seed {seed})"
        except PixelplayError as error:
            print(f"warning: {run.name}: recording a video failed: {error}", file=sys.stderr)
            run.notes.append(f"recording a video failed: {error}")
            return
    target = video
    if not video.resolve().is_relative_to(out_dir.resolve()):
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / video.name
        shutil.copy2(video, target)
        if video.with_suffix(".json").exists():
            shutil.copy2(video.with_suffix(".json"), target.with_suffix(".json"))
    meta: dict[str, Any] = {}
    if target.with_suffix(".json").exists():
        try:
            meta = read_json(target.with_suffix(".json"), "video description")
        except PixelplayError:
            meta = {}
    src = Path(os.path.relpath(target.resolve(), out_dir.resolve())).as_posix()
    run.video = {"src": src, "origin": origin, "meta": meta}


# ---------------------------------------------------------------------------------------------
# Figures


def figure_svg(fig) -> str:
    """A matplotlib figure as an inline ``<svg>`` element (text kept as text), closed afterwards."""
    import matplotlib
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.tight_layout()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", dpi=110)
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prologue and doctype: the page is HTML


def reference_sources(envs: list[str]) -> list[tuple[str, str, float, str]]:
    """(env, name, score, source) of every reference line the curves draw, for the list under them."""
    from pixelplay.eval.plot import reference_lines

    return [(env, name, score, source) for env in envs for name, score, source in reference_lines(env)]


# ---------------------------------------------------------------------------------------------
# HTML


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d2330;
       background: #f6f7f9; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 1.7em; margin: 0.2em 0; } h2 { margin-top: 1.8em; border-bottom: 2px solid #d7dbe2; }
h3 { margin-top: 1.4em; } section > h2:first-child { margin-top: 0.2em; }
section.run, section.study, figure { background: #fff; border: 1px solid #d7dbe2; border-radius: 8px;
       padding: 14px 18px; margin: 18px 0; }
figure { margin-left: 0; margin-right: 0; } figure svg { width: 100%; height: auto; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.92em; }
th, td { border: 1px solid #d7dbe2; padding: 4px 9px; text-align: right; vertical-align: top; }
th:first-child, td:first-child, table.references td:last-child, table.references th:last-child { text-align: left; }
thead th { background: #eef1f5; } tr.best td { background: #e8f6ea; } table.facts td { text-align: left; }
.muted { color: #667085; font-size: 0.9em; } .flag { color: #b42318; font-weight: 600; }
.note { color: #8a4b08; } pre { background: #f2f4f7; padding: 10px; overflow: auto; font-size: 0.82em; }
pre.config { max-height: 24em; }
video { max-width: 100%; background: #000; border-radius: 4px; display: block; }
.bars { margin: 8px 0; } .bar-row { display: flex; align-items: center; gap: 10px; margin: 3px 0; }
.bar-name { width: 200px; text-align: right; font-family: monospace; }
.bar { background: #4e79a7; height: 14px; border-radius: 2px; } .bar-value { font-size: 0.9em; }
"""


def table(headers: list[str] | None, rows: list[list[str]], row_classes: list[str] | None = None,
          css_class: str = "") -> str:
    """An HTML table (no header row where ``headers`` is None); cells are HTML already (escape them before)."""
    head = f"<thead><tr>{''.join(f'<th>{h}</th>' for h in headers)}</tr></thead>" if headers else ""
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    cls = f' class="{css_class}"' if css_class else ""
    return f"<table{cls}>{head}<tbody>{''.join(body)}</tbody></table>"


def recent_return(run: RunReport) -> float:
    returns = run.curve["returns"]
    if len(returns) == 0:
        return math.nan
    order = run.curve["steps"].argsort(kind="stable")
    return float(returns[order][-RECENT_EPISODES:].mean())


def summary_table(runs: list[RunReport]) -> str:
    headers = ["run", "env", "algo", "checkpoint step", "last logged step", "episodes",
               f"mean return, last {RECENT_EPISODES}", "env steps/s (mean)", "score (mean &plusmn; std)", "video"]
    rows = []
    for run in runs:
        steps = run.curve["steps"]
        score = "-"
        if run.scores:
            s = run.scores[0]["score"]
            score = esc(f"{fmt(s['mean'])} ± {fmt(s['std'])} ({s['n']} games)")
        rows.append([
            f'<a href="#run-{esc(run.name)}">{esc(run.name)}</a>', esc(run.env), esc(run.algo),
            esc(fmt(run.checkpoint["step"])) if run.checkpoint else "-",
            esc(fmt(int(steps.max()))) if len(steps) else "-",
            esc(fmt(len(steps))), esc(fmt(recent_return(run))),
            esc(fmt(run.throughput["mean"], 3)) if run.throughput else "-", score,
            "yes" if run.video else "-",
        ])
    return table(headers, rows, css_class="summary")


def score_html(report: dict[str, Any]) -> str:
    """`eval score`'s report: the statistics, the human-normalised score and the references."""
    s = report.get("score") or {}
    parts = [f"<h4>Score: {esc(report.get('env', '?'))}</h4>",
             f"<p class=muted>Policy: {esc(report.get('policy', '?'))}"
             + (f"; {esc(report['action_selection'])}" if report.get("action_selection") else "") + "</p>"]
    parts.append(table(["games", "mean", "std", "median", "min", "max"],
                       [[esc(fmt(s.get(k))) for k in ("n", "mean", "std", "median", "min", "max")]]))
    hn = report.get("human_normalized")
    if hn:
        parts.append(f"<p>Human-normalised score: mean <b>{esc(fmt(hn['mean'], 3))}</b>, median "
                     f"{esc(fmt(hn['median'], 3))} ({esc(hn['formula'])}, random {esc(fmt(hn['random']))}, "
                     f"human {esc(fmt(hn['human']))}).</p>")
    references = report.get("references") or {}
    if references:
        rows = [["this agent", esc(f"{fmt(s.get('mean'))} ± {fmt(s.get('std'))}"), "this run"]]
        for name, ref in references.items():
            std = f" ± {fmt(ref['std'])}" if ref.get("std") is not None else ""
            rows.append([esc(name), esc(f"{fmt(ref['score'])}{std}"), f'<span class=muted>{esc(ref["source"])}</span>'])
        parts.append(table(["reference", "score", "source"], rows, css_class="references"))
    elif report.get("game"):
        parts.append(f"<p class=muted>No reference scores recorded for {esc(report['game'])} in eval/baselines.py.</p>")
    protocol = report.get("protocol") or []
    if protocol:
        parts.append("<details><summary>protocol</summary><ul>"
                     + "".join(f"<li>{esc(line)}</li>" for line in protocol) + "</ul></details>")
    return "\n".join(parts)


def doom_table_html(result: dict[str, Any]) -> str:
    """`eval doom-table`'s result as the paper's table: this agent beside the human and Arnold
    columns (`doom_table.table_columns`), the published K/D that does not match flagged (!)."""
    from pixelplay.eval.doom_table import SETTING_LABELS, table_columns

    def cell(value: float | None, metric: str) -> str:  # as doom_table.md prints its cells
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.2f}" if metric == "kd_ratio" else f"{value:.1f}"

    columns = table_columns(result)
    rows = []
    for metric in baselines.DOOM_METRICS:
        row = [esc(baselines.DOOM_METRIC_LABELS[metric])]
        for _, _, values, flagged in columns:
            text = esc(cell(None if values is None else values.get(metric), metric))
            if metric in flagged:
                text += ' <span class=flag title="see the note under the table">(!)</span>'
            row.append(text)
        rows.append(row)
    opponent = f" Multiplayer opponent: {result['opponent']}." if "multiplayer" in result and result.get("opponent") else ""
    parts = ["<h4>DOOM: human vs agent</h4>",
             f"<p class=muted>Agent: {esc(result.get('agent', '?'))}.{esc(opponent)}</p>",
             table(["Evaluation metric"] + [esc(c[1]) for c in columns], rows, css_class="doom-table")]
    for flag in result["paper"]["flags"]:
        parts.append(f"<p class=flag>(!) {esc(SETTING_LABELS.get(flag['setting'], flag['setting']))}, "
                     f"{esc(flag['player'])} column of the paper: {esc(flag['note'])}.</p>")
    parts.append(f"<p class=muted>Paper: {esc(result['paper']['source'])}. Columns are per-match means; "
                 "K/D = mean kills / max(1, mean deaths).</p>")
    return "\n".join(parts)


def video_html(run: RunReport) -> str:
    if not run.video:
        return ""
    meta = run.video["meta"]
    width, height = meta.get("width"), meta.get("height")
    size = f' width="{int(width)}" height="{int(height)}"' if width and height else ""
    facts = [run.video["origin"]]
    for key, label in (("return", "return"), ("length", "agent steps"), ("kills", "kills"), ("deaths", "deaths"),
                       ("fps", "fps"), ("ended", "ended by")):
        if key in meta:
            facts.append(f"{label} {fmt(meta[key])}")
    src = esc(run.video["src"])
    return (f'<h3>Gameplay</h3><video controls preload="metadata"{size} src="{src}">'
            f'<a href="{src}">{src}</a></video><p class=muted>{esc(", ".join(facts))} '
            f'(<a href="{src}">{src}</a>)</p>')


def run_html(run: RunReport) -> str:
    parts = [f'<section class=run id="run-{esc(run.name)}"><h2>{esc(run.name)}</h2>',
             f"<p class=muted>{esc(run.path)}</p>"]
    facts = [["env", esc(run.env)], ["algorithm", esc(run.algo)]]
    if run.checkpoint:
        facts.append(["checkpoint", f"step {esc(fmt(run.checkpoint['step']))} "
                                    f"<span class=muted>({esc(run.checkpoint['path'])})</span>"])
    else:
        facts.append(["checkpoint", "none saved"])
    steps = run.curve["steps"]
    facts.append(["episodes logged", f"{esc(fmt(len(steps)))}, the last at env step "
                                     f"{esc(fmt(int(steps.max())) if len(steps) else '-')}"])
    facts.append([f"mean return, last {RECENT_EPISODES} episodes", esc(fmt(recent_return(run)))])
    if run.throughput:
        t = run.throughput
        facts.append(["throughput", esc(f"{fmt(t['mean'], 4)} env steps/s (mean of {t['logs']} logs in metrics.csv; "
                                        f"last {fmt(t['last'], 4)})")])
    else:
        facts.append(["throughput", "no charts/steps_per_second in metrics.csv"])
    parts.append(table(None, facts, css_class="facts"))
    parts.extend(f"<p class=note>Note: {esc(note)}</p>" for note in run.notes)
    parts.append(video_html(run))
    if run.scores or run.doom_table:
        parts.append("<h3>Evaluation</h3>")
    parts.extend(score_html(report) for report in run.scores)
    if run.doom_table:
        parts.append(doom_table_html(run.doom_table))
    if run.config is not None:
        parts.append("<details open><summary><b>Resolved configuration</b> (config.json)</summary><pre class=config>"
                     + esc(json.dumps(run.config, indent=2)) + "</pre></details>")
    parts.append("</section>")
    return "\n".join(parts)


def curves_html(runs: list[RunReport], smooth: int) -> str:
    from pixelplay.eval.plot import kills_deaths_figure, learning_curves_figure

    curves = [run.curve for run in runs]
    parts = ["<h2>Learning curves</h2>", f'<figure class=curves>{figure_svg(learning_curves_figure(curves, smooth))}'
             f"<figcaption class=muted>Raw episode return (faint) and its moving average over {smooth} episodes "
             "against env steps (agent steps summed over the envs; the frames per step in the axis label)."]
    sources = reference_sources(list(dict.fromkeys(run.env for run in runs)))
    if sources:
        parts.append(" Reference lines (eval/baselines.py):<ul class=sources>" + "".join(
            f"<li>{esc(env)}: {esc(name)} {esc(fmt(score))}: {esc(source)}</li>" for env, name, score, source in sources
        ) + "</ul>")
    missing = [env for env in dict.fromkeys(run.env for run in runs) if env not in {s[0] for s in sources}]
    if missing:
        parts.append(" No human or reference score for " + esc(", ".join(missing))
                     + " in eval/baselines.py (the DOOM table's are per match, not per training episode).")
    parts.append("</figcaption></figure>")
    kd = kills_deaths_figure(curves, smooth)
    if kd is not None:
        parts.append(f"<figure class=kills-deaths>{figure_svg(kd)}<figcaption class=muted>Kills and deaths per "
                     f"training episode (moving average over {smooth}).</figcaption></figure>")
    return "\n".join(parts)


def redact_storage(url: str) -> str:
    """A database URL without its password (``postgresql://user:***@host/db``)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def read_study(path: Path) -> dict[str, Any]:
    """An Optuna study's ``summary.json`` (a folder holding one, or the file), checked for the
    fields the page shows."""
    file = path / STUDY_FILE if path.is_dir() else path
    if not file.is_file():
        raise PixelplayError(f"--study: no {STUDY_FILE} in '{path}' (python -m pixelplay.tune writes one into "
                             "its study folder)")
    study = read_json(file, "study summary")
    missing = [key for key in STUDY_KEYS if key not in study]
    if missing:
        raise PixelplayError(f"study summary '{file}' lacks {', '.join(missing)}")
    if not isinstance(study["trials"], list) or not all(isinstance(t, dict) for t in study["trials"]):
        raise PixelplayError(f"study summary '{file}': trials must be a list of objects")
    for trial in study["trials"]:
        absent = [key for key in TRIAL_KEYS if key not in trial]
        if absent:
            raise PixelplayError(f"study summary '{file}': trial {trial.get('number', '?')} lacks {', '.join(absent)}")
    if not isinstance(study["importances"], dict):
        raise PixelplayError(f"study summary '{file}': importances must be an object of parameter: number")
    study["folder"] = file.parent
    return study


def study_html(study: dict[str, Any], out_dir: Path) -> str:
    trials = study["trials"]
    best = study.get("best") or None
    params = list(dict.fromkeys(name for trial in trials for name in (trial.get("params") or {})))
    rows, classes = [], []
    for trial in trials:
        run_dir = trial.get("run_dir")
        link = "-"
        if run_dir:
            where = Path(run_dir)
            where = where if where.is_absolute() else study["folder"] / where
            href = Path(os.path.relpath(where.resolve(), out_dir.resolve())).as_posix()
            link = f'<a href="{esc(href)}">{esc(Path(run_dir).name)}</a>'
        values = trial.get("params") or {}
        rows.append([esc(trial["number"]), esc(trial["state"]), esc(fmt(trial["value"]))]
                    + [esc(fmt(values.get(p))) for p in params] + [link])
        classes.append("best" if best and trial["number"] == best.get("number") else "")
    parts = [f'<section class=study id=study><h2>Tuning: Optuna study {esc(study["study_name"])}</h2>',
             table(None, [["storage", esc(redact_storage(str(study["storage"])))],
                              ["objective", esc(f"{study['direction']} {study['metric']}")],
                              ["trials", esc(f"{len(trials)} ("
                                             + ", ".join(f"{n} {s.lower()}" for s, n in _count_states(trials)) + ")")]],
                   css_class="facts")]
    if best:
        parts.append(f"<p>Best trial: <b>#{esc(best['number'])}</b>, {esc(study['metric'])} "
                     f"<b>{esc(fmt(best['value']))}</b>, with "
                     + esc(", ".join(f"{k}={fmt(v)}" for k, v in (best.get("params") or {}).items())) + ".</p>")
    else:
        parts.append("<p>No trial has finished yet: no best trial.</p>")
    parts.append("<h3>Trials</h3>" + table(["trial", "state", esc(study["metric"])] + [esc(p) for p in params]
                                           + ["run"], rows, classes, css_class="trials"))
    importances = sorted(((str(k), float(v)) for k, v in study["importances"].items()), key=lambda kv: -kv[1])
    parts.append("<h3>Parameter importances</h3>")
    if importances:
        top = max(v for _, v in importances) or 1.0
        parts.append("<div class=bars>" + "".join(
            f'<div class=bar-row><span class=bar-name>{esc(name)}</span>'
            f'<span class=bar style="width: {max(0.0, 360 * value / top):.0f}px"></span>'
            f'<span class=bar-value>{esc(fmt(value, 3))}</span></div>' for name, value in importances
        ) + "</div><p class=muted>Optuna's parameter importances (share of the objective's variance each "
            "parameter explains over the finished trials).</p>")
    else:
        parts.append("<p class=muted>None: Optuna gives importances once enough trials have finished.</p>")
    parts.append("</section>")
    return "\n".join(parts)


def _count_states(trials: list[dict[str, Any]]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for trial in trials:
        counts[str(trial["state"])] = counts.get(str(trial["state"]), 0) + 1
    return list(counts.items())


def render_page(runs: list[RunReport], study: dict[str, Any] | None, out_dir: Path, smooth: int) -> str:
    title = "pixelplay report: " + (", ".join(run.name for run in runs) if runs else f"study {study['study_name']}")
    body = [f"<h1>{esc(title)}</h1>",
            f"<p class=muted>Written {esc(dt.datetime.now().isoformat(timespec='seconds'))} by "
            f"python -m pixelplay.eval report. Opens from disk; videos lie beside this file.</p>"]
    if runs:
        body += ["<h2>Runs</h2>", summary_table(runs), curves_html(runs, smooth)]
        body += [run_html(run) for run in runs]
    if study is not None:
        body.append(study_html(study, out_dir))
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")


# ---------------------------------------------------------------------------------------------
# The command


def _names(dirs: list[Path]) -> list[str]:
    """Each run's name on the page (its folder's), made unique where two folders share one."""
    names: list[str] = []
    for d in dirs:
        name = d.resolve().name or "run"
        candidate, k = name, 2
        while candidate in names:
            candidate, k = f"{name}_{k}", k + 1
        names.append(candidate)
    return names


def check_run_dir(path: Path) -> None:
    """A run directory the page can show, or a clear error naming what it is instead."""
    from pixelplay.agents.checkpoint import WEIGHTS_FILE

    if not path.is_dir():
        raise PixelplayError(f"'{path}' is not a run directory")
    if (path / "episodes.csv").exists():
        return
    if (path / STUDY_FILE).exists():
        raise PixelplayError(f"'{path}' holds an Optuna study ({STUDY_FILE}), not a run: give it as --study {path}")
    if (path / WEIGHTS_FILE).exists():
        raise PixelplayError(f"'{path}' is an exported agent without training logs (no episodes.csv); report the run "
                             f"it came from (its figures are in {path / 'README.md'})")
    raise PixelplayError(f"'{path}' has no episodes.csv (is it a pixelplay run directory?)")


def write_report(run_dirs: list[str], *, out: str | None = None, study: str | None = None, smooth: int = 20,
                 video: bool = True, seed: int = 1, device: str = "cpu", log=print) -> Path:
    """The command: read the runs (and the study), find, copy or record their videos, write the page."""
    if not run_dirs and not study:
        raise PixelplayError("report needs a run directory (RUN ...) or --study DIR; see --help")
    dirs = [Path(d) for d in run_dirs]
    for d in dirs:
        check_run_dir(d)
    study_data = read_study(Path(study)) if study else None
    out_dir = Path(out) if out else (dirs[0] if dirs else study_data["folder"])
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [read_run_report(d, name) for d, name in zip(dirs, _names(dirs), strict=True)]
    for run in runs:
        attach_video(run, out_dir, record=video, seed=seed, device=device, log=log)
    page = out_dir / REPORT_FILE
    atomic_write_text(page, render_page(runs, study_data, out_dir, smooth))
    log(f"wrote {page} (open it in a browser: file://{page.resolve()})")
    return page
