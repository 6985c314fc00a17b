"""Encoding frames to video: H.264 MP4 files, integer upscaling and a text overlay.

Everything here is about pixels and files; what is played and which frames are taken is
`eval.record`'s business. Files are H.264 in MP4 (PyAV's ``libx264``, ``yuv420p``, even width and
height, ``+faststart``), which every browser plays.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from pixelplay.agents.checkpoint import replace_from, temp_path_beside
from pixelplay.envs.errors import MissingDependencyError, PixelplayError


def _av():
    try:
        import av
    except ImportError as error:  # pragma: no cover - av is a core dependency
        raise MissingDependencyError(f"recording needs PyAV ({error}); pip install av") from error
    return av


class VideoWriter:
    """Frames (H, W, 3) uint8 RGB in, an H.264 MP4 out; written to a temporary file beside the
    target (a unique name), moved into place on `close`, removed on `abort`."""

    def __init__(self, path: Path, fps: Fraction | float, crf: int = 20, preset: str = "veryfast"):
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1000)
        self.crf, self.preset = crf, preset
        self.frames = 0
        self.width = self.height = 0
        self._tmp: Path | None = None
        self._container = None
        self._stream = None

    def _open(self, height: int, width: int) -> None:
        av = _av()
        self.width, self.height = width + width % 2, height + height % 2  # yuv420p needs even sizes
        self._tmp = temp_path_beside(self.path)
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
            frame = pad_to(frame, self.height, self.width)
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
        replace_from(self._tmp, self.path)
        self._tmp = None
        return self.path

    def abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:
            self.abort()


def pad_to(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """``frame`` in the top-left corner of a black (height, width) frame (cropped if larger)."""
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
