"""python -m pixelplay.eval report: one self-contained page, checked in a real headless Chromium.

The runs are built the way train.py lays them out (config.json from the real config dataclasses,
episodes.csv, metrics.csv, a checkpoint saved by `CheckpointManager`), the score by
`eval.score.score` itself (its games given) and the DOOM table by `eval.doom_table`'s own
summaries; the report records the Doom run's video with the real recorder. The page is then
moved to another folder and opened from there in Chromium over the DevTools protocol (a pipe, no
extra Python package): screenshot, DOM, each <video>'s metadata and the console.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import select
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from pixelplay.eval import __main__ as cli
from pixelplay.eval import baselines, doom_table
from pixelplay.eval.__main__ import main
from pixelplay.eval.report import REPORT_FILE, redact_storage

STEPS_PER_SECOND = [180.0, 220.0, 260.0]
CHECKPOINT_STEP = 4096
BREAKOUT_RETURNS = [3.0, 7.0, 11.0, 2.0]


# ---------------------------------------------------------------------------------------------
# Run directories as train.py writes them


def write_run(path: Path, env: str, episodes: int, *, doom: bool, checkpoint: bool) -> Path:
    """config.json (the real RunConfig and PPOConfig), episodes.csv, metrics.csv, and with
    ``checkpoint`` an untrained agent saved at CHECKPOINT_STEP by train.py's CheckpointManager."""
    import torch

    from pixelplay.agents import ALGOS
    from pixelplay.agents.checkpoint import CheckpointManager, make_payload
    from pixelplay.agents.run_config import RunConfig
    from pixelplay.envs import DOOM, env_spec
    from pixelplay.envs.scenarios import SCENARIOS

    path.mkdir(parents=True)
    run_cfg, algo_cfg = RunConfig(algo="ppo", env=env, total_steps=CHECKPOINT_STEP, num_envs=2, run_dir=str(path),
                                  track=False), ALGOS["ppo"].config()
    (path / "config.json").write_text(json.dumps({"run": asdict(run_cfg), "algo": asdict(algo_cfg)}, indent=2))
    columns = ["global_step", "wall_time", "env", "return", "length"]
    columns += ["kills", "deaths", "suicides", "objects"] if doom else ["frames"]
    rng = np.random.default_rng(len(env))
    with open(path / "episodes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for i in range(episodes):
            row = {"global_step": 100 * (i + 1), "wall_time": i, "env": i % 2, "return": i + rng.normal(),
                   "length": 50}
            row.update({"kills": i % 3, "deaths": 1, "suicides": 0, "objects": 2} if doom else {"frames": 200})
            writer.writerow(row)
    with open(path / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["global_step", "wall_time", "losses/total", "charts/steps_per_second"])
        writer.writeheader()
        for i, sps in enumerate(STEPS_PER_SECOND):
            writer.writerow({"global_step": 128 * (i + 1), "wall_time": i, "losses/total": 0.1,
                             "charts/steps_per_second": sps})
    if checkpoint:
        spec = env_spec(env)
        obs_shape = SCENARIOS[spec.target].obs_shape if spec.family == DOOM else (4, 84, 84)
        agent = ALGOS["ppo"].agent(algo_cfg, tuple(obs_shape), spec.num_actions, 1, 1, torch.device("cpu"))
        CheckpointManager(path).save(make_payload("ppo", env, asdict(algo_cfg), asdict(run_cfg), obs_shape,
                                                  spec.num_actions, CHECKPOINT_STEP, agent.state_dict()))
    return path


def write_capture_video(run: Path, step: int, frames: int, fps: int) -> Path:
    """A --capture-video style videos/step_<N>.mp4 (+ .json) of ``frames`` frames at ``fps``."""
    from pixelplay.eval.video import VideoWriter

    path = run / "videos" / f"step_{step}.mp4"
    path.parent.mkdir(parents=True)
    with VideoWriter(path, fps) as writer:
        for k in range(frames):
            frame = np.zeros((210, 160, 3), np.uint8)
            frame[:, : 4 * k + 4] = (200, 80, 40)
            writer.write(frame)
        writer.close()
    path.with_suffix(".json").write_text(json.dumps({"video_frames": frames, "fps": float(fps), "width": 160,
                                                     "height": 210, "return": 5.0, "global_step": step}))
    return path


def write_breakout_score(run: Path) -> dict:
    """`eval score`'s own report of four given games (play_games replaced), written as it writes it."""
    from pixelplay.envs import env_spec
    from pixelplay.eval import score as scoring
    from pixelplay.eval.policies import PolicySpec

    games = [{"env": 0, "return": r, "length": 100} for r in BREAKOUT_RETURNS]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scoring, "play_games", lambda *a, **k: (games, env_spec("breakout", training=False)))
        report = scoring.score(PolicySpec("random"), "breakout", scoring.ScoreConfig(episodes=4), {}, log=None)
    scoring.write_outputs(report, run)
    return report


def write_doom_table(run: Path) -> dict:
    """doom_table.json as run_table writes it, from two played matches' statistics."""
    players = {"agent": dict(kills=6, deaths=2, suicides=1, objects=4, steps=10, tics=40, wall_s=1.0),
               "opponent": dict(kills=1, deaths=5, suicides=0, objects=2, steps=10, tics=40, wall_s=1.0)}
    sp = [doom_table.MatchRecord(0, 1, attempts=1, players={"agent": players["agent"]})]
    mp = [doom_table.MatchRecord(0, 2, attempts=1, players=players)]
    result = {
        "agent": "checkpoint x", "opponent": "random", "protocol": {}, "wall_time_s": 1.0,
        "paper": {"source": baselines.DOOM_TABLE_SOURCE, "table": baselines.DOOM_PAPER,
                  "flags": [asdict(m) | {"note": m.note} for m in baselines.paper_kd_mismatches()]},
        "single_player": doom_table._setting_result(sp, {"agent": "checkpoint x"}),
        "multiplayer": doom_table._setting_result(mp, {"agent": "checkpoint x", "opponent": "random"}),
    }
    (run / "doom_table.json").write_text(json.dumps(result))
    return result


STUDY = {
    "study_name": "ppo-doom-defend-the-center", "storage": "postgresql://tuner:s3cret@db.example:5432/optuna",
    "direction": "maximize", "metric": "mean return",
    "best": {"number": 1, "value": 9.5, "params": {"learning_rate": 0.0007, "ent_coef": 0.02}},
    "trials": [
        {"number": 0, "state": "COMPLETE", "value": 4.25, "params": {"learning_rate": 0.0001, "ent_coef": 0.001},
         "run_dir": "trials/trial_0"},
        {"number": 1, "state": "COMPLETE", "value": 9.5, "params": {"learning_rate": 0.0007, "ent_coef": 0.02},
         "run_dir": "trials/trial_1"},
        {"number": 2, "state": "PRUNED", "value": None, "params": {"learning_rate": 0.003, "ent_coef": 0.0},
         "run_dir": "trials/trial_2"},
    ],
    "importances": {"ent_coef": 0.25, "learning_rate": 0.75},
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Three runs and a study, reported into ``out``: a doom-basic run with a checkpoint and no
    video (the report records one), a breakout run with a score and a training video, a
    doom-deathmatch run with a DOOM table and neither checkpoint nor video."""
    root = tmp_path_factory.mktemp("report")
    basic = write_run(root / "basic", "doom-basic", 30, doom=True, checkpoint=True)
    breakout = write_run(root / "breakout", "breakout", 25, doom=False, checkpoint=False)
    capture = write_capture_video(breakout, 2048, frames=30, fps=60)
    score = write_breakout_score(breakout)
    deathmatch = write_run(root / "deathmatch", "doom-deathmatch", 12, doom=True, checkpoint=False)
    table = write_doom_table(deathmatch)
    study = root / "study"
    study.mkdir()
    (study / "summary.json").write_text(json.dumps(STUDY))
    out = root / "out"
    assert main(["report", str(basic), str(breakout), str(deathmatch), "--study", str(study), "--out", str(out),
                 "--smooth", "5"]) == 0
    return {"root": root, "out": out, "runs": (basic, breakout, deathmatch), "capture": capture, "score": score,
            "table": table, "html": (out / REPORT_FILE).read_text()}


def video_sources(page: str) -> list[str]:
    return re.findall(r'<video [^>]*src="([^"]+)"', page)


# ---------------------------------------------------------------------------------------------
# The page as written (no browser needed)


def test_page_is_self_contained_with_videos_beside_it(report):
    page, out = report["html"], report["out"]
    assert "<script" not in page and "<svg" in page  # no JavaScript; figures inline
    assert not re.search(r'(src|href)="(https?:)?//|url\((https?:)?//|@import|<link ', page)  # nothing loads from afar
    sources = video_sources(page)
    assert len(sources) == 2  # the recorded doom-basic episode and the breakout training video
    for src in sources:
        assert not Path(src).is_absolute() and ".." not in Path(src).parts
        assert (out / src).is_file() and (out / src).with_suffix(".json").is_file()
    recorded = json.loads((out / sources[0]).with_suffix(".json").read_text())
    assert recorded["env"] == "doom-basic" and recorded["video_frames"] >= 2  # the real recorder's description
    assert (out / sources[1]).read_bytes() == report["capture"].read_bytes()  # the run's own video, copied
    # The run directories are left as they were: the recording went beside the page.
    basic = report["runs"][0]
    assert not (basic / "videos").exists()


def test_page_states_step_throughput_config_and_notes(report):
    page = report["html"]
    assert f"step {CHECKPOINT_STEP:,}" in page
    mean = sum(STEPS_PER_SECOND) / len(STEPS_PER_SECOND)
    assert f"{mean:.4g} env steps/s (mean of {len(STEPS_PER_SECOND)} logs" in page
    assert "&quot;total_steps&quot;: 4096" in page  # the resolved config
    assert "no video in the run directory and no checkpoint to record one with" in page  # the deathmatch run
    assert "s3cret" not in page and redact_storage(STUDY["storage"]) == "postgresql://tuner:***@db.example:5432/optuna"


def test_no_video_records_nothing_and_writes_into_the_run(tmp_path):
    run = write_run(tmp_path / "run", "doom-basic", 5, doom=True, checkpoint=True)
    assert main(["report", str(run), "--no-video"]) == 0
    page = (run / REPORT_FILE).read_text()
    assert video_sources(page) == [] and "--no-video" in page and not (run / "videos").exists()


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.mkdir(), "has no episodes.csv"),
    (lambda p: (p.mkdir(), (p / "summary.json").write_text("{}")), "--study"),
    (lambda p: (p.mkdir(), (p / "agent.pt").write_bytes(b"x")), "exported agent"),
    (lambda p: None, "is not a run directory"),
])
def test_bad_input_is_one_line(make, expected, tmp_path, capsys):
    target = tmp_path / "x"
    make(target)
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err


def test_study_summary_missing_fields_is_one_line(tmp_path, capsys):
    (tmp_path / "summary.json").write_text(json.dumps({k: v for k, v in STUDY.items() if k != "importances"}))
    assert main(["report", "--study", str(tmp_path)]) == 2
    assert "lacks importances" in capsys.readouterr().err
    assert main(["report"]) == 2
    assert "--study" in capsys.readouterr().err


def test_flags_reach_their_fields(monkeypatch):
    seen = {}
    monkeypatch.setitem(cli.COMMANDS, "report", (lambda **o: seen.update(o) or 0, {"report": cli.ReportOptions}))
    assert main(["report", "a"]) == 0 and seen["report"] == cli.ReportOptions(runs=("a",))
    assert main(["report", "a", "b", "--study", "s", "--out", "o", "--smooth", "3", "--no-video", "--seed", "4",
                 "--device", "cuda"]) == 0
    assert seen["report"] == cli.ReportOptions(runs=("a", "b"), study="s", out="o", smooth=3, video=False, seed=4,
                                               device="cuda")


# ---------------------------------------------------------------------------------------------
# The page in a real browser


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe:
    JSON messages ended by a NUL byte, commands on fd 3, replies and events on fd 4)."""

    def __init__(self, executable: str, profile: Path, width: int = 1280, height: int = 2000):
        command_read, self._command = os.pipe()
        self._replies, reply_write = os.pipe()
        args = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                f"--window-size={width},{height}", "about:blank"]
        self.process = subprocess.Popen(
            # bash, not sh: dash's redirections take single-digit descriptors only.
            ["bash", "-c", f'exec "$@" 3<&{command_read} 4>&{reply_write}', "bash", *args],
            pass_fds=(command_read, reply_write), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(command_read)
        os.close(reply_write)
        self._buffer, self._id, self.events = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)

    def _message(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("Chromium sent nothing in time")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: bool = False, timeout: float = 30) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._command, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message(timeout)
            if reply.get("id") == self._id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply["result"]
            self.events.append(reply)

    def open(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=True)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._message(30))

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        """Errors the page reported: failed loads and other Log entries, console.error, uncaught exceptions."""
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(f"{params['entry']['text']} ({params['entry'].get('url', '')})")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                errors.append(str(params["args"]))
            elif method == "Runtime.exceptionThrown":
                errors.append(str(params["exceptionDetails"]))
        return errors

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (EOFError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._command)
        os.close(self._replies)


VIDEO_STATES = """Promise.all([...document.querySelectorAll('video')].map(v => new Promise(done => {
  const report = () => done({src: v.getAttribute('src'), url: v.currentSrc, readyState: v.readyState, error: v.error ? v.error.code : null,
                             duration: v.duration, width: v.videoWidth, height: v.videoHeight});
  if (v.readyState >= 1 || v.error) return report();
  v.addEventListener('loadedmetadata', report); v.addEventListener('error', report);
  setTimeout(report, 15000);
})))"""


@pytest.fixture
def browser(system_tool, tmp_path):
    """Headless Chromium (Debian's chromium package: skipped without it, failed without it in CI)."""
    chromium = Chromium(system_tool("chromium", "chromium"), tmp_path / "chromium-profile")
    yield chromium
    chromium.close()


def screenshot(browser: Chromium) -> np.ndarray:
    import cv2

    data = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"}, session=True)["data"])
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "the screenshot is no PNG"
    return image


def test_page_renders_in_chromium_after_the_folder_moves(report, browser, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(report["out"], moved)
    browser.open((moved / REPORT_FILE).as_uri())
    try:
        image = screenshot(browser)
        videos = browser.evaluate(VIDEO_STATES)
        dom = browser.evaluate("""({
          title: document.title,
          summaryRows: [...document.querySelectorAll('table.summary tbody tr')].map(r => r.cells[0].textContent),
          curveSvgs: document.querySelectorAll('figure.curves svg').length,
          curveText: document.querySelector('figure.curves svg')?.textContent || '',
          curveLines: document.querySelectorAll('figure.curves svg path').length,
          curveBox: document.querySelector('figure.curves svg')?.getBoundingClientRect().width || 0,
          sources: document.querySelector('figure.curves')?.textContent || '',
          doomHeaders: [...document.querySelectorAll('table.doom-table thead th')].map(th => th.textContent),
          doomRows: [...document.querySelectorAll('table.doom-table tbody tr')].map(
              r => [...r.cells].map(c => c.textContent)),
          references: [...document.querySelectorAll('table.references tbody tr')].map(
              r => [...r.cells].map(c => c.textContent)),
          pageText: document.body.innerText,
          trials: [...document.querySelectorAll('table.trials tbody tr')].map(r => [r.className, r.cells[0].textContent]),
          bars: [...document.querySelectorAll('.bar-row')].map(
              r => [r.querySelector('.bar-name').textContent, r.querySelector('.bar').getBoundingClientRect().width]),
        })""")
    finally:
        errors = browser.console_errors()
    assert errors == []
    # Rendered, not blank: many distinct colours over a light page.
    assert image.shape[0] > 500 and image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 100
    # A row per run, and the curves of all three (two envs' panels in one figure, overlaid per env).
    assert dom["summaryRows"] == ["basic", "breakout", "deathmatch"]
    assert dom["curveSvgs"] == 1 and dom["curveLines"] > 20 and dom["curveBox"] > 400
    for name in ("basic", "breakout", "deathmatch", "env steps (1 step = 4 frames)"):
        assert name in dom["curveText"]
    breakout = baselines.ATARI["breakout"]
    assert f"human {breakout.human.score:g}" in dom["curveText"]  # the human line, labelled
    assert breakout.human.source in dom["sources"] and breakout.random.source in dom["sources"]
    # The score: the human-normalised mean from the references, and each reference with its source.
    mean = sum(BREAKOUT_RETURNS) / len(BREAKOUT_RETURNS)
    hns = (mean - breakout.random.score) / (breakout.human.score - breakout.random.score)
    assert f"mean {hns:.3g}" in dom["pageText"]
    refs = {row[0]: row for row in dom["references"]}
    assert refs["Nature DQN, 50M steps"][2] == breakout.others["Nature DQN, 50M steps"].source
    # The DOOM table: this agent beside the paper's human and Arnold, Arnold's K/D flagged.
    headers = [c[1] for c in doom_table.table_columns(report["table"])]
    assert dom["doomHeaders"] == ["Evaluation metric", *headers]
    arnold = headers.index("SP: Arnold (paper)") + 1
    kd = next(row for row in dom["doomRows"] if row[0] == "K/D ratio")
    assert kd[arnold] == f"{baselines.DOOM_PAPER['single_player']['agent']['kd_ratio']:.2f} (!)"
    assert kd[headers.index("SP: this agent") + 1] == "3.00"  # 6 kills / 2 deaths
    assert "does not match its own kills / deaths" in dom["pageText"]
    # Both videos load from the moved folder with their full length.
    assert [v["src"] for v in videos] == video_sources(report["html"])
    for video in videos:
        described = json.loads((moved / video["src"]).with_suffix(".json").read_text())
        assert video["error"] is None and video["readyState"] >= 1, video
        assert video["url"] == (moved / video["src"]).as_uri()  # from the moved folder
        assert video["duration"] == pytest.approx(described["video_frames"] / described["fps"], abs=1.5 / described["fps"])
        assert video["width"] > 0 and video["height"] > 0
    # The study: a row per trial (the best marked), importances as bars, longest first.
    assert dom["trials"] == [["", "0"], ["best", "1"], ["", "2"]]
    assert [b[0] for b in dom["bars"]] == ["learning_rate", "ent_coef"]
    assert dom["bars"][0][1] == pytest.approx(3 * dom["bars"][1][1], rel=0.05)


def test_chromium_check_catches_a_missing_and_a_broken_video(report, browser, tmp_path):
    """The checks above would see a page whose video is gone or damaged."""
    broken = tmp_path / "broken"
    shutil.copytree(report["out"], broken)
    first, second = video_sources(report["html"])
    (broken / first).unlink()
    (broken / second).write_bytes(b"\0" * 1000)
    browser.open((broken / REPORT_FILE).as_uri())
    videos = browser.evaluate(VIDEO_STATES)
    errors = browser.console_errors()
    assert all(v["error"] is not None and v["readyState"] == 0 for v in videos), videos
    assert any("ERR_FILE_NOT_FOUND" in e and first in e for e in errors), errors
