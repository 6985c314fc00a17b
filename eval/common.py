"""Small helpers every eval command shares: atomic files, displays, where reports go."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def temp_path_beside(path: Path) -> Path:
    """Create a new, empty file with a unique name beside ``path`` (``.<name>.<random>.tmp``) and
    return its path. Same directory, so renaming it over ``path`` is atomic; a unique name, so two
    writers of one file never write into the same temporary. Like ``tempfile.mkstemp``, but with
    the usual permissions (0o666 less the umask, not 0o600), since it becomes the final file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")  # pragma: no cover


def replace_from(tmp: Path, path: Path) -> None:
    """Move a finished temporary file into place: fsync it, rename it over ``path``, fsync the
    directory (so a crash leaves either the old file or the whole new one, never part of it)."""
    fd = os.open(tmp, os.O_WRONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # directories cannot be opened or fsynced everywhere
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """``with atomic_path(path) as tmp:`` write ``tmp``; on success it replaces ``path``
    (`replace_from`), on an error it is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = temp_path_beside(path)
    try:
        yield tmp
        replace_from(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a unique temporary file, fsynced, renamed into place)."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)


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
