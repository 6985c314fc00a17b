"""Small helpers every eval command shares: atomic files (from `pixelplay.agents.checkpoint`), displays,
where reports go."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pixelplay.agents.checkpoint import atomic_path, atomic_write_text

__all__ = ["atomic_path", "atomic_write_json", "atomic_write_text", "display_available", "output_dir"]


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def display_available() -> bool:
    """A window can be opened: an X11 or Wayland display is set."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def output_dir(target: str | os.PathLike | None, out: str | None, default: str) -> Path:
    """Where a command writes its reports.

    ``--out`` when given; else the run directory the target is or belongs to (a checkpoint
    under ``<run>/checkpoints/``); else the checkpoint file's directory; else ``default``.
    """
    if out:
        return Path(out)
    if target is None:
        return Path(default)
    path = Path(target)
    if path.is_dir():
        return path
    run = path.parent.parent
    if path.parent.name == "checkpoints" and (run / "config.json").exists():
        return run
    return path.parent
