"""Videos of full episodes at the game's native resolution, and the periodic ones training takes.

The agent acts on its preprocessed observation (84x84 grey stacks and the like); the video shows
what a person would see: the ALE screen (210x160 RGB) for Atari, the engine's screen for ViZDoom,
upscaled by an integer factor (nearest neighbour, so pixels stay sharp), with the running score
(and for Doom kills and deaths) drawn in a corner and written beside the file as JSON. The
encoding itself (H.264 MP4 that every browser plays) is `eval.video`'s.

Every frame of the game, at the emulator's rate `EnvSpec.frames_per_second`: 60 fps for Atari
(every ALE frame) and 35 fps for Doom (every tic), as a wrapper around the raw env would record.
The agent still acts every ``frame_skip`` frames on its usual observations: the env plays its
steps frame by frame (option ``render_every_frame``, see `DoomEnv.step_frames` and
`DeepMindAtari.step_frames`), which gives the same game (in Doom the weapon sprite's bob, eased
by the renderer per drawn frame, can put the pistol a few pixels apart in the observations). A video of an episode has 1 + the frames
(tics) its steps played: the reset's screen, then one per frame. The overlay of a step's frames
is the one before the step, its last frame's the one after it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelplay.envs import EPISODE_INFO_KEY, env_spec, make_env
from pixelplay.envs.errors import PixelplayError
from pixelplay.envs.spec import ATARI
from pixelplay.eval.common import atomic_write_json, display_available
from pixelplay.eval.policies import AgentPolicy, PolicySpec, build_env_policy
from pixelplay.eval.video import VideoWriter, default_scale, draw_overlay, upscale

# ---------------------------------------------------------------------------------------------
# One env, seen natively


class NativeEnv:
    """One in-process evaluation env (`pixelplay.envs.make_env`), its `EnvSpec` and its native screen.

    Atari: full games with raw scores (the evaluation variant), ``max_frames`` caps a game
    (default 108,000 frames). Doom: the scenario's evaluation episodes in colour at the engine's
    resolution (or ``resolution``), ``lmp`` a path for the engine's demo of each episode. The
    caller resets the env before each episode (`play_episode` does).
    """

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
        frame_stack: int | None = None,
    ):
        self.env_id = env_id
        options: dict[str, Any] = {} if frame_stack is None else {"frame_stack": frame_stack}
        # The family decides which options apply; the spec kept is the one of the env played.
        if env_spec(env_id, training=False).family == ATARI:
            if lmp:
                raise PixelplayError("--lmp records ViZDoom's own demo; it applies to Doom envs only")
            if resolution:
                raise PixelplayError("--resolution applies to ViZDoom envs only")
            options.update(sticky_actions=sticky_actions, noop_max=noop_max)
            if max_frames:
                options["max_episode_frames"] = max_frames
        else:
            options["render_native"] = True
            if resolution:
                options["screen_resolution"] = resolution
            if lmp:
                options["record_lmp"] = lmp
        options["render_every_frame"] = True  # every frame into the video, at the emulator's rate
        self.spec = env_spec(env_id, training=False, **options)
        self.env = make_env(env_id, seed, training=False, **options)
        self.fps = self.spec.frames_per_second  # one video frame per emulator frame (Doom: tic)

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.env.observation_space.shape)

    def screen(self) -> np.ndarray:
        """The native RGB screen: the env's ``render()`` (Doom: the engine's screen at its
        resolution); an Atari env without one gives the ALE screen (210x160) of its emulator."""
        try:
            frame = self.env.render()
        except NotImplementedError:
            frame = self.env.ale.getScreenRGB()
        if frame is None:
            raise PixelplayError(f"{self.env_id}: the env has no screen to record yet")
        return frame

    def frames(self) -> list[np.ndarray]:
        """The native RGB screens of the last step, one per emulator frame (Doom: tic) it played,
        or the one screen of the last reset."""
        frames = self.env.step_frames()
        if not frames:
            raise PixelplayError(f"{self.env_id}: the env has no screen to record yet")
        return frames

    def stats(self) -> dict[str, float]:
        return self.env.stats() if hasattr(self.env, "stats") else {}

    def close(self) -> None:
        self.env.close()


def overlay_lines(family: str, episode_return: float, stats: dict[str, float], env_id: str) -> list[str]:
    """The text drawn on each frame: the score, and for Doom kills and deaths."""
    if family == ATARI:
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
    """Play one episode from a fresh reset, writing every native frame the game played (with the
    score) to ``video_path`` at the emulator's rate and a JSON of the result beside it.
    ``max_steps`` (0: none) cuts the episode as a time limit of its own; ``show(frame)`` also
    displays each frame (watch)."""
    env = native.env
    obs, _ = env.reset(seed=seed)
    frames = native.frames()
    scale = scale or default_scale(frames[-1].shape[0])
    total, steps, info, terminated = 0.0, 0, {}, False
    started = time.monotonic()

    with VideoWriter(video_path, native.fps) as writer:
        def emit(frame: np.ndarray, lines: list[str]) -> None:
            image = draw_overlay(upscale(frame, scale), lines)
            writer.write(image)
            if show is not None:
                show(image)

        def lines() -> list[str]:
            return overlay_lines(native.family, total, native.stats(), native.env_id)

        emit(frames[-1], lines())
        first = True  # the episode starts: a recurrent agent resets its state
        while True:
            action = int(policy.act(obs[None], [first])[0])
            first = False
            before = lines()
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            steps += 1
            frames = native.frames()
            for frame in frames[:-1]:  # the frames inside the step: the score as it was
                emit(frame, before)
            emit(frames[-1], lines())  # the step's last frame: what the step earned
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
        "ended": ("game over" if native.family == ATARI else "episode end (death or goal)") if terminated
        else "time limit",
        **{k: v for k, v in native.stats().items() if k in ("kills", "deaths", "suicides", "objects", "frags")},
        "video": video_path.name,
        "video_frames": writer.frames,
        "frames_played": writer.frames - 1,  # emulator frames (Doom: tics) of the steps, one video frame each
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
    stem = f"{prefix}_{_slug(env_id)}_s{seed}"
    lmp_path = str(out_dir / f"{stem}_ep{{episode}}.lmp") if lmp else None
    native = NativeEnv(env_id, seed, max_frames=max_frames, sticky_actions=sticky_actions, noop_max=noop_max,
                       resolution=resolution, lmp=lmp_path, **spec.env_options())
    results = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        policy = build_env_policy(spec, native.spec, native.obs_shape, seed)
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
            native = NativeEnv(env_id, seed, **spec.env_options())
            try:
                policy = build_env_policy(spec, native.spec, native.obs_shape, seed)
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


class PeriodicRecorder:
    """Records one evaluation episode of the training agent every ``every`` env steps.

    ``train.py --capture-video`` calls `maybe_record` after each vector step; the first call
    records the initial policy, later ones each time ``global_step`` crosses a multiple of
    ``every``. Videos go to ``<run_dir>/videos/step_<N>.mp4`` (+ ``.json``). Episodes are capped
    as training's are (``max_steps``, default the env's `EnvSpec.max_train_steps`: 27,000 agent
    steps for Atari, the 108,000-frame cap; the scenario's training timeout for Doom). Recording
    draws from its own RNGs and restores torch's, so it does not change the training run; a
    recording that fails warns and training goes on.
    """

    def __init__(self, env_id: str, out_dir: str | os.PathLike, every: int = 100_000, seed: int = 1,
                 max_steps: int = 0, frame_stack: int | None = None):
        if every < 1:
            raise PixelplayError(f"--video-every must be at least 1, got {every}")
        self.env_id = env_id
        self.out_dir = Path(out_dir)
        self.every = every
        self.seed = seed
        self.max_steps = max_steps
        self.frame_stack = frame_stack
        """the training agent's frames per observation (None: the env's own)"""
        self._next: int | None = None
        self.recorded: list[Path] = []

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
            native = NativeEnv(self.env_id, self.seed + global_step, frame_stack=self.frame_stack)
            max_steps = self.max_steps or native.spec.max_train_steps or 0
            torch.manual_seed(self.seed + global_step)
            play_episode(native, AgentPolicy(agent), path, seed=self.seed + global_step,
                         max_steps=max_steps, meta={"global_step": global_step, "policy": "training agent"})
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
