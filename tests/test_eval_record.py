"""python -m pixelplay.eval record and train.py's PeriodicRecorder: browser-ready MP4s at native resolution."""

import json
from pathlib import Path

import pytest
import torch

from pixelplay.eval.__main__ import main
from pixelplay.eval.record import PeriodicRecorder

av = pytest.importorskip("av", reason="recording needs PyAV")


def probe(path: Path) -> dict:
    """Decode the whole file with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                "width": stream.width, "height": stream.height, "frames": frames,
                "fps": stream.average_rate}


def test_record_breakout_episode_at_native_resolution(tmp_path):
    assert main(["record", "--policy", "random", "--env", "breakout", "--episodes", "1", "--max-frames", "600",
                 "--seed", "2", "--out", str(tmp_path)]) == 0
    video = tmp_path / "videos" / "record_breakout_s2_ep0.mp4"
    meta = json.loads(video.with_suffix(".json").read_text())
    info = probe(video)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert (info["width"], info["height"]) == (320, 420)  # ALE's 160x210 screen, x2
    assert info["width"] % 2 == 0 and info["height"] % 2 == 0
    # Every ALE frame at 60 fps: the reset's screen, then 4 per agent step (fewer in a step that
    # ends the game); a game cut at 600 frames played exactly its 150 steps' 600 frames.
    assert info["fps"] == 60 and meta["fps"] == 60.0
    assert info["frames"] == meta["video_frames"] == meta["frames_played"] + 1
    assert 4 * (meta["length"] - 1) < meta["frames_played"] <= 4 * meta["length"]
    if meta["ended"] == "time limit":
        assert meta["length"] == 150 and meta["frames_played"] == meta["game_frames"] == 600
    assert meta["length"] <= 150 and "return" in meta


def test_record_doom_episode_with_its_engine_demo(tmp_path):
    assert main(["record", "--policy", "random", "--env", "doom-basic", "--lmp", "--out", str(tmp_path)]) == 0
    video = tmp_path / "videos" / "record_doom-basic_s1_ep0.mp4"
    meta = json.loads(video.with_suffix(".json").read_text())
    info = probe(video)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert (info["width"], info["height"]) == (320, 240)  # the engine's 160x120, x2
    # Every tic at 35 fps: the reset's screen, then 4 per agent step (frame skip 4), as many as
    # the engine played in the step that ends the episode.
    assert info["fps"] == 35 and meta["fps"] == 35.0
    assert info["frames"] == meta["video_frames"] == meta["frames_played"] + 1
    assert 4 * (meta["length"] - 1) < meta["frames_played"] <= 4 * meta["length"]
    assert meta["kills"] >= 0 and meta["deaths"] >= 0
    lmp = tmp_path / "videos" / meta["lmp"]
    assert lmp.exists() and lmp.stat().st_size > 0 and meta["lmp_bytes"] == lmp.stat().st_size


def basic_shape() -> tuple[tuple[int, ...], int]:
    """doom-basic's observation shape and action count (from the scenario table, not constants)."""
    from pixelplay.envs.doom import SCENARIOS

    spec = SCENARIOS["basic"]
    return spec.obs_shape, len(spec.actions)


def test_periodic_recorder_records_on_schedule_and_keeps_the_rng(tmp_path):
    from pixelplay.agents import ALGOS

    cfg = ALGOS["ppo"].config()
    agent = ALGOS["ppo"].agent(cfg, *basic_shape(), 1, 1, torch.device("cpu"))
    recorder = PeriodicRecorder("doom-basic", tmp_path / "videos", every=100, seed=1)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    paths = [recorder.maybe_record(agent, step) for step in (8, 16, 96, 104, 112, 200)]
    assert torch.equal(torch.rand(3), expected), "recording must not move training's RNG"
    assert [p.name if p else None for p in paths] == ["step_8.mp4", None, None, "step_104.mp4", None, "step_200.mp4"]
    meta = json.loads((tmp_path / "videos" / "step_104.json").read_text())
    assert meta["global_step"] == 104 and probe(tmp_path / "videos" / "step_104.mp4")["frames"] == meta["video_frames"]


def test_a_failing_recording_warns_and_training_goes_on(tmp_path, capsys):
    class Broken:
        def eval_act(self, obs):
            raise RuntimeError("boom")

    recorder = PeriodicRecorder("doom-basic", tmp_path / "videos", every=10)
    assert recorder.maybe_record(Broken(), 10) is None
    assert "warning: recording at step 10 failed" in capsys.readouterr().err
    assert not list((tmp_path / "videos").glob("*.mp4"))


def test_record_agent_checkpoint_from_a_run_directory(tmp_path, save_checkpoint):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"run": {"env": "doom-basic"}}))
    save_checkpoint(run / "checkpoints" / "latest.pt", "ppo", "doom-basic")
    assert main(["record", str(run)]) == 0
    assert (run / "videos" / "record_doom-basic_s1_ep0.mp4").exists()


def test_watch_without_a_display_records_and_prints_the_path(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["watch", "--policy", "random", "--env", "doom-basic", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no display" in out and "watch_doom-basic_s1_ep0.mp4" in out
    assert (tmp_path / "videos" / "watch_doom-basic_s1_ep0.mp4").exists()


def test_train_capture_video_writes_step_videos(tmp_path):
    from pixelplay import train

    run = tmp_path / "run"
    args = ["--env", "doom-basic", "--num-envs", "2", "--total-steps", "128", "--num-steps", "32", "--num-minibatches",
            "2", "--update-epochs", "1", "--no-track", "--no-progress", "--run-dir", str(run), "--capture-video",
            "--video-every", "64"]
    assert train.main(args) == 0
    videos = sorted(p.name for p in (run / "videos").glob("step_*.mp4"))
    assert videos == ["step_128.mp4", "step_2.mp4", "step_64.mp4"]
    for name in videos:
        meta = json.loads((run / "videos" / name).with_suffix(".json").read_text())
        assert probe(run / "videos" / name)["frames"] == meta["video_frames"] >= 2
