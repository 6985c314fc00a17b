"""Videos of full episodes at the game's native resolution, and the periodic ones training takes.

The agent acts on its preprocessed observation (84x84 grey stacks and the like); the video shows
what a person would see: the ALE screen (210x160 RGB) for Atari, the engine's screen for ViZDoom,
upscaled by an integer factor (nearest neighbour, so pixels stay sharp), with the running score
(and for Doom kills and deaths) drawn in a corner and written beside the file as JSON.

Files are H.264 in MP4 (PyAV's ``libx264``, ``yuv420p``, even width and height, ``+faststart``),
which every browser plays. One frame per agent step: 15 fps for Atari (60 Hz / frame skip 4) and
35 / frame skip for Doom (8.75 fps at skip 4), so playback runs at game speed.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelplay.envs import env_family, make_vec_env, resolve_env
from pixelplay.envs.errors import MissingDependencyError, PixelplayError
from pixelplay.eval.common import atomic_write_json, display_available
from pixelplay.eval.policies import PolicySpec, build_policy

ATARI_FPS = Fraction(60, 4)
"""ALE runs at 60 Hz; one video frame per agent step of 4 frames."""
DOOM_TICRATE = 35
ATARI_STEP_CAP = 27_000
"""Agent steps in 108,000 frames: the evaluation cap of an Atari game (Machado et al. 2018)."""


# ---------------------------------------------------------------------------------------------
# Writing video


def _av():
    try:
        import av
    except ImportError as error:  # pragma: no cover - av is a core dependency
        raise MissingDependencyError(f"recording needs PyAV ({error}); pip install av") from error
    return av


class VideoWriter:
    """Frames (H, W, 3) uint8 RGB in, an H.264 MP4 out; written to a temp file, renamed on close."""

    def __init__(self, path: Path, fps: Fraction | float, crf: int = 20, preset: str = "veryfast"):
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1000)
        self.crf, self.preset = crf, preset
        self.frames = 0
        self.width = self.height = 0
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self._container = None
        self._stream = None

    def _open(self, height: int, width: int) -> None:
        av = _av()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = width + width % 2, height + height % 2  # yuv420p needs even sizes
        self._container = av.open(str(self._tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._stream = stream

    def write(self, frame: np.ndarray) -> None:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        if self._container is None:
            self._open(*frame.shape[:2])
        if frame.shape[:2] != (self.height, self.width):
            frame = _pad_to(frame, self.height, self.width)
        av = _av()
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        if self._container is None:
            raise PixelplayError(f"no frames to write to {self.path}")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:
            self.abort()


def _pad_to(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    padded = np.zeros((height, width, 3), np.uint8)
    h, w = min(height, frame.shape[0]), min(width, frame.shape[1])
    padded[:h, :w] = frame[:h, :w]
    return padded


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """Integer nearest-neighbour upscale (pixels stay sharp)."""
    if scale == 1:
        return frame
    return np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)


def draw_overlay(frame: np.ndarray, lines: list[str]) -> np.ndarray:
    """Write ``lines`` in the top-left corner, white on a black outline (readable on any game)."""
    import cv2

    frame = np.ascontiguousarray(frame)
    scale = max(0.4, frame.shape[0] / 600)
    thickness = max(1, round(scale * 2))
    y = int(22 * scale) + 4
    for line in lines:
        cv2.putText(frame, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(frame, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
        y += int(26 * scale) + 4
    return frame


def default_scale(native_height: int) -> int:
    """Smallest integer factor that makes the video at least 240 pixels high: x2 for Atari's 210x160
    and for Doom's 160x120, x1 from 320x240 up (larger x264 files encode slower for no detail)."""
    return max(1, -(-240 // native_height))


# ---------------------------------------------------------------------------------------------
# One env, seen natively


class NativeEnv:
    """A single evaluation env (the in-process env of a 1-env `VecEnv`) and its native screen."""

    def __init__(
        self,
        env_id: str,
        seed: int,
        *,
        max_frames: int | None = None,
        sticky_actions: bool = False,
        noop_max: int = 30,
        resolution: str | None = None,
        lmp: str | None = None,
        doom_timeout: int | None = None,
    ):
        self.env_id = env_id
        self.family, self.target = resolve_env(env_id)
        options: dict[str, Any] = {}
        if self.family == "atari":
            if resolution or lmp:
                raise PixelplayError("--resolution and --lmp apply to ViZDoom envs only")
            options.update(sticky_actions=sticky_actions, noop_max=noop_max)
            if max_frames:
                options["max_episode_frames"] = max_frames
            # The gymnasium backend: one in-process env whose ALE screen we can read (EnvPool has none).
            self.vec = make_vec_env(env_id, 1, seed, training=False, backend="gymnasium", **options)
        else:
            options["render_native"] = True
            if resolution:
                options["screen_resolution"] = resolution
            if lmp:
                options["record_lmp"] = lmp
            if doom_timeout:
                options["episode_timeout"] = doom_timeout
            self.vec = make_vec_env(env_id, 1, seed, training=False, **options)
        self.env = self.vec.envs.envs[0]
        self.frame_skip = getattr(self.env, "frame_skip", 4)
        self.fps = ATARI_FPS if self.family == "atari" else Fraction(DOOM_TICRATE, self.frame_skip)

    @property
    def num_actions(self) -> int:
        return int(self.env.action_space.n)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.env.observation_space.shape)

    @property
    def action_names(self) -> list[str] | None:
        return getattr(self.env, "action_names", None)

    def screen(self) -> np.ndarray:
        """The native RGB screen: ALE's 210x160, or the engine's screen at its resolution."""
        if self.family == "atari":
            return self.env.ale.getScreenRGB()
        frame = self.env.render()
        if frame is None:
            raise PixelplayError(f"{self.env_id}: the env has no screen to record yet")
        return frame

    def stats(self) -> dict[str, float]:
        return self.env.stats() if hasattr(self.env, "stats") else {}

    def close(self) -> None:
        self.vec.close()


def overlay_lines(family: str, episode_return: float, stats: dict[str, float], env_id: str) -> list[str]:
    if family == "atari":
        return [f"score {episode_return:g}"]
    if env_id == "doom-deathmatch":  # its return is the frag count
        return [f"frags {episode_return:g}", f"kills {stats.get('kills', 0)}  deaths {stats.get('deaths', 0)}"]
    return [f"return {episode_return:.4g}", f"kills {stats.get('kills', 0)}  deaths {stats.get('deaths', 0)}"]


def play_episode(
    native: NativeEnv,
    policy,
    video_path: Path,
    *,
    seed: int | None,
    scale: int = 0,
    max_steps: int = 0,
    meta: dict[str, Any] | None = None,
    show=None,
) -> dict[str, Any]:
    """Play one episode, writing every step's native frame (with the score) to ``video_path``
    and a JSON of the result beside it. ``show(frame)`` also displays each frame (watch)."""
    env = native.env
    obs, _ = env.reset(seed=seed)
    frame = native.screen()
    scale = scale or default_scale(frame.shape[0])
    total, steps, info, terminated, truncated = 0.0, 0, {}, False, False
    started = time.monotonic()
    from pixelplay.envs.vec import EPISODE_INFO_KEY

    with VideoWriter(video_path, native.fps) as writer:
        def emit() -> None:
            image = draw_overlay(upscale(native.screen(), scale),
                                 overlay_lines(native.family, total, native.stats(), native.env_id))
            writer.write(image)
            if show is not None:
                show(image)

        emit()
        while True:
            action = int(policy.act(obs[None])[0])
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            steps += 1
            emit()
            if terminated or truncated or (max_steps and steps >= max_steps):
                break
        writer.close()
    record = dict(info.get(EPISODE_INFO_KEY) or {})
    result: dict[str, Any] = {
        "env": native.env_id,
        **(meta or {}),
        "return": record.get("return", total),
        "length": record.get("length", steps),
        **({"game_frames": record["frames"]} if "frames" in record else {}),
        "ended": ("game over" if native.family == "atari" else "episode end (death or goal)") if terminated
        else ("time limit" if truncated else f"cut at {max_steps} steps"),
        **{k: v for k, v in native.stats().items() if k in ("kills", "deaths", "suicides", "objects", "frags")},
        "video": video_path.name,
        "video_frames": writer.frames,
        "width": writer.width,
        "height": writer.height,
        "fps": float(native.fps),
        "scale": scale,
        "codec": "h264 (libx264), yuv420p, mp4",
        "wall_s": round(time.monotonic() - started, 2),
    }
    atomic_write_json(video_path.with_suffix(".json"), result)
    return result


# ---------------------------------------------------------------------------------------------
# python -m pixelplay.eval record / watch


def _slug(env_id: str) -> str:
    return env_id.replace("/", "-")


def record_episodes(
    spec: PolicySpec,
    env_id: str,
    out_dir: Path,
    *,
    episodes: int = 1,
    seed: int = 1,
    scale: int = 0,
    max_frames: int | None = None,
    sticky_actions: bool = False,
    noop_max: int = 30,
    resolution: str | None = None,
    lmp: bool = False,
    prefix: str = "record",
    log=print,
) -> list[dict[str, Any]]:
    """Record ``episodes`` full episodes to ``out_dir`` (MP4 + JSON each, and .lmp demos on request)."""
    if episodes < 1:
        raise PixelplayError(f"--episodes must be at least 1, got {episodes}")
    family = env_family(env_id)
    if lmp and family != "doom":
        raise PixelplayError("--lmp records ViZDoom's own demo; it applies to Doom envs only")
    stem = f"{prefix}_{_slug(env_id)}_s{seed}"
    lmp_path = str(out_dir / f"{stem}_ep{{episode}}.lmp") if lmp else None
    out_dir.mkdir(parents=True, exist_ok=True)
    native = NativeEnv(env_id, seed, max_frames=max_frames, sticky_actions=sticky_actions, noop_max=noop_max,
                       resolution=resolution, lmp=lmp_path)
    results = []
    try:
        policy = build_policy(spec, num_actions=native.num_actions, obs_shape=native.obs_shape, seed=seed,
                              action_names=native.action_names)
        for k in range(episodes):
            path = out_dir / f"{stem}_ep{k}.mp4"
            meta = {"policy": spec.label, "episode": k, "seed": seed}
            if lmp_path:
                meta["lmp"] = Path(lmp_path.format(episode=k)).name
            result = play_episode(native, policy, path, seed=seed if k == 0 else None, scale=scale, meta=meta)
            results.append(result)
            log(f"episode {k}: return {result['return']:g}, {result['length']} steps -> {path}")
    finally:
        native.close()
    if lmp_path:
        # The engine finishes a demo when the next episode starts or the game closes: rewrite the
        # JSONs now that every .lmp exists.
        for result in results:
            lmp_file = out_dir / result["lmp"]
            result["lmp_bytes"] = lmp_file.stat().st_size if lmp_file.exists() else 0
            atomic_write_json(out_dir / Path(result["video"]).with_suffix(".json"), result)
    return results


def watch(spec: PolicySpec, env_id: str, out_dir: Path, *, seed: int = 1, episodes: int = 1, log=print) -> str:
    """Play live in a window where a display exists; otherwise record and say where the file is."""
    if display_available():
        try:
            import cv2

            cv2.namedWindow("pixelplay", cv2.WINDOW_AUTOSIZE)
        except Exception as error:  # opencv-python-headless has no GUI
            log(f"cannot open a window ({str(error).strip().splitlines()[-1]}); recording instead")
        else:
            native = NativeEnv(env_id, seed)
            try:
                policy = build_policy(spec, num_actions=native.num_actions, obs_shape=native.obs_shape,
                                      seed=seed, action_names=native.action_names)
                delay = float(1 / native.fps)

                def show(image: np.ndarray) -> None:
                    cv2.imshow("pixelplay", image[:, :, ::-1])
                    if cv2.waitKey(max(1, int(delay * 1000))) in (27, ord("q")):
                        raise KeyboardInterrupt

                for k in range(episodes):
                    path = out_dir / f"watch_{_slug(env_id)}_s{seed}_ep{k}.mp4"
                    result = play_episode(native, policy, path, seed=seed if k == 0 else None, show=show,
                                          meta={"policy": spec.label, "episode": k, "seed": seed})
                    log(f"episode {k}: return {result['return']:g} ({path})")
            except KeyboardInterrupt:
                log("stopped")
            finally:
                native.close()
                cv2.destroyAllWindows()
            return "window"
    else:
        log("no display (neither DISPLAY nor WAYLAND_DISPLAY is set): recording instead of showing a window")
    results = record_episodes(spec, env_id, out_dir, episodes=episodes, seed=seed, prefix="watch", log=lambda _: None)
    for result in results:
        path = out_dir / result["video"]
        log(f"open {path.resolve()} in a browser or video player (return {result['return']:g})")
    return str(out_dir / results[-1]["video"])


# ---------------------------------------------------------------------------------------------
# Periodic recording during training (train.py --capture-video)


class _LiveAgentPolicy:
    """The training agent's evaluation policy, on whatever device it lives."""

    label = "training agent"

    def __init__(self, agent):
        self.agent = agent
        self.device = getattr(agent, "device", torch.device("cpu"))

    def act(self, obs) -> np.ndarray:
        tensor = torch.as_tensor(obs, device=self.device)
        return self.agent.eval_act(tensor).cpu().numpy()


class PeriodicRecorder:
    """Records one evaluation episode of the training agent every ``every`` env steps.

    ``train.py --capture-video`` calls `maybe_record` after each vector step; the first call
    records the initial policy, later ones each time ``global_step`` crosses a multiple of
    ``every``. Videos go to ``<run_dir>/videos/step_<N>.mp4`` (+ ``.json``). Episodes are capped
    at 27,000 agent steps for Atari (the 108,000-frame evaluation cap) and at the scenario's
    training timeout for Doom. Recording draws from its own RNGs and restores torch's, so it
    does not change the training run; a recording that fails warns and training goes on.
    """

    def __init__(self, env_id: str, out_dir: str | os.PathLike, every: int = 100_000, seed: int = 1,
                 max_steps: int = 0):
        if every < 1:
            raise PixelplayError(f"--video-every must be at least 1, got {every}")
        self.env_id = env_id
        self.out_dir = Path(out_dir)
        self.every = every
        self.seed = seed
        self.family, self.target = resolve_env(env_id)
        self.max_steps = max_steps or (ATARI_STEP_CAP if self.family == "atari" else 0)
        self._next: int | None = None
        self.recorded: list[Path] = []

    def _doom_timeout(self) -> int | None:
        from pixelplay.envs.doom import SCENARIOS

        spec = SCENARIOS.get(self.target)
        return spec.episode_timeout if spec is not None and spec.episode_timeout else None

    def maybe_record(self, agent, global_step: int) -> Path | None:
        if self._next is not None and global_step < self._next:
            return None
        self._next = (global_step // self.every + 1) * self.every
        return self.record(agent, global_step)

    def record(self, agent, global_step: int) -> Path | None:
        path = self.out_dir / f"step_{global_step}.mp4"
        torch_state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        native = None
        try:
            native = NativeEnv(self.env_id, self.seed + global_step,
                               doom_timeout=self._doom_timeout() if self.family == "doom" else None)
            torch.manual_seed(self.seed + global_step)
            play_episode(native, _LiveAgentPolicy(agent), path, seed=self.seed + global_step,
                         max_steps=self.max_steps, meta={"global_step": global_step, "policy": "training agent"})
            self.recorded.append(path)
            return path
        except Exception as error:  # a video must never end a training run
            print(f"warning: recording at step {global_step} failed: {type(error).__name__}: {error}",
                  file=sys.stderr)
            return None
        finally:
            if native is not None:
                native.close()
            torch.set_rng_state(torch_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state_all(cuda_state)


def default_out(kind: str) -> str:
    return str(Path("runs") / f"{kind}_{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
