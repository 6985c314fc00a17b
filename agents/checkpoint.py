"""Checkpoints: atomic, versioned, readable with ``torch.load(weights_only=True)``, clear errors.

A checkpoint is one dict of tensors and primitives:
``{"format": "pixelplay-checkpoint", "version": 1, "algo", "env_id", "algo_config",
"run_config", "obs_shape", "num_actions", "global_step", "agent": agent.state_dict(), "rng": ...}``.
A run directory keeps ``checkpoints/latest.pt`` and the last few ``step_*.pt`` files
(Sample Factory's scheme: write a temp file, rename it into place, prune the oldest).

Optional keys: ``frame_stack``, the frames per observation the agent was trained with (evaluation
builds its env with them; a checkpoint without the key was trained with the env's own), and
``world_size`` / ``rng_ranks`` under torchrun.

A weights-only checkpoint (``python -m pixelplay.eval export``, `weights_only_payload`) is the same
dict with ``"weights_only": True``, no ``rng`` and no ``run_config``, and ``agent`` holding only the
networks evaluation needs; it lives as ``agent.pt`` in a folder of its own (the zoo's
``zoo/<name>/agent.pt``). It evaluates anywhere; ``train.py --resume`` refuses it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import secrets
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from pixelplay.envs.errors import PixelplayError

FORMAT = "pixelplay-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("algo", "env_id", "algo_config", "obs_shape", "num_actions", "global_step", "agent")
WEIGHTS_FILE = "agent.pt"
"""The weights-only checkpoint of an exported folder (a zoo entry)."""


class CheckpointError(PixelplayError):
    """A checkpoint that is missing, corrupt, of another format, or does not fit."""


TEMP_SUFFIX = ".tmp"
"""Temporary files of `atomic_path` are ``.<name>.<random>.tmp`` beside their target. Every file
pixelplay writes (checkpoints, configs, CSV trims, reports, plots, videos) goes through it."""


def temp_path_beside(path: Path) -> Path:
    """Create a new, empty file with a unique name beside ``path`` (``.<name>.<random>.tmp``) and
    return its path. Same directory, so renaming it over ``path`` is atomic; a unique name, so two
    writers of one file never write into the same temporary. Like ``tempfile.mkstemp``, but with
    the usual permissions (0o666 less the umask, not 0o600), since it becomes the final file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
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
    _fsync_directory(path.parent)


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


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file through ``write(handle)`` atomically (`atomic_path`); returns its path."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # directories cannot be opened or fsynced everywhere
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left (``.<name>.*.tmp``) in a
    run directory and its checkpoints/ and videos/ folders. Call it when no writer is running."""
    removed = []
    root = Path(directory)
    for folder in (root, root / "checkpoints", root / "videos"):
        if folder.is_dir():
            for tmp in folder.glob(f".*{TEMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def resolve_checkpoint(path_or_run: str | os.PathLike) -> Path:
    """A checkpoint file as given; a run directory's ``checkpoints/latest.pt``; an exported
    folder's ``agent.pt``; else a zoo agent by its name (``doom-basic-ppo``, or
    ``zoo/doom-basic-ppo`` where no such path exists here): an existing path always wins."""
    path = Path(path_or_run)
    if path.is_dir():
        latest = path / "checkpoints" / "latest.pt"
        if latest.exists():
            return latest
        if (path / WEIGHTS_FILE).is_file():
            return path / WEIGHTS_FILE
        raise CheckpointError(f"run directory '{path}' has no checkpoints/latest.pt (has it saved one yet?) "
                              f"and is no exported agent (no {WEIGHTS_FILE})")
    if path.exists():
        return path
    from pixelplay.zoo import find, names

    name = _zoo_name(str(path_or_run))
    if name is None:
        raise CheckpointError(f"no checkpoint or run directory at '{path}'")
    found = find(name)
    if found is None:
        known = names()
        raise CheckpointError(
            f"no checkpoint, run directory or zoo agent '{path_or_run}'; the zoo has "
            + (", ".join(known) if known else "no agents") + " (python -m pixelplay.eval score NAME)"
        )
    return found / WEIGHTS_FILE


def _zoo_name(text: str) -> str | None:
    """``name`` for ``name`` or ``zoo/name`` (what may name a zoo agent), else None (a path)."""
    parts = text.replace(os.sep, "/").strip("/").split("/")
    if len(parts) == 2 and parts[0] == "zoo":
        parts = parts[1:]
    if len(parts) != 1 or not parts[0] or parts[0] in (".", "..") or parts[0].endswith(".pt"):
        return None
    return parts[0]


def load_checkpoint(path_or_run: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint; every failure is a `CheckpointError` with the file named."""
    path = resolve_checkpoint(path_or_run)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "unsupported global" in str(error).lower():  # a class or function to import: code
            # torch's own message suggests weights_only=False, i.e. running code from the file.
            raise CheckpointError(f"'{path}' contains objects other than tensors; refused") from None
        raise CheckpointError(f"'{path}' is not a readable pixelplay checkpoint (corrupt or truncated?): "
                              f"{str(error).strip().splitlines()[0]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"'{path}' is not a readable pixelplay checkpoint (corrupt or truncated?): {first_line}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a pixelplay checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(f"'{path}' has checkpoint version {data.get('version')}; this pixelplay reads {VERSION}")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise CheckpointError(f"'{path}' lacks {', '.join(missing)}")
    for key, kind, meaning in _FIELD_TYPES:
        if key in data and not _is_a(data[key], kind):
            raise CheckpointError(f"'{path}' is damaged: {key} should be {meaning}, got {data[key]!r:.60}")
    data["path"] = str(path)
    return data


_FIELD_TYPES = (
    ("algo", str, "a string"),
    ("env_id", str, "a string"),
    ("algo_config", dict, "a dict"),
    ("run_config", dict, "a dict"),
    ("obs_shape", "shape", "a list of 3 positive integers"),
    ("num_actions", "count", "a positive integer"),
    ("global_step", "step", "a non-negative integer"),
    ("agent", dict, "a dict of tensors"),
    ("rng", "rng", "a dict of RNG states (torch, numpy, python)"),
    ("frame_stack", "count", "a positive integer"),
)


def _is_a(value: Any, kind: Any) -> bool:
    def integer(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if kind == "shape":
        return isinstance(value, (list, tuple)) and len(value) == 3 and all(integer(v) and v > 0 for v in value)
    if kind == "count":
        return integer(value) and value > 0
    if kind == "step":
        return integer(value) and value >= 0
    if kind == "rng":
        return (isinstance(value, dict) and isinstance(value.get("torch"), torch.Tensor)
                and isinstance(value.get("numpy"), dict) and isinstance(value.get("python"), list))
    return isinstance(value, kind)


def rng_state() -> dict:
    """Every RNG a run draws from, as tensors and primitives."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore `rng_state`'s generators. The states are host data: a checkpoint loaded with
    ``map_location="cuda"`` carries them as CUDA tensors, which the setters refuse, so every one
    is taken back to the CPU first."""
    torch.set_rng_state(state["torch"].cpu())
    keys = state["numpy"]["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(state["numpy"]["pos"]), 0, 0.0))
    random.setstate((3, tuple(int(v) for v in state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


class CheckpointManager:
    """Saves ``checkpoints/step_<N>.pt`` and ``latest.pt`` in a run directory, keeping the last few."""

    def __init__(self, run_dir: Path, keep_last: int = 3):
        self.directory = Path(run_dir) / "checkpoints"
        self.keep_last = max(1, keep_last)

    def save(self, payload: dict) -> Path:
        """Write ``step_<N>.pt`` once, then point ``latest.pt`` at the same bytes: a hard link,
        renamed into place (atomic), or a copy where the filesystem has no hard links."""
        step_path = atomic_torch_save(payload, self.directory / f"step_{payload['global_step']:012d}.pt")
        latest = self.directory / "latest.pt"
        link = self.directory / f".latest.pt.{os.getpid()}{TEMP_SUFFIX}"
        link.unlink(missing_ok=True)
        try:
            os.link(step_path, link)
        except OSError:
            atomic_torch_save(payload, latest)
        else:
            os.replace(link, latest)
            _fsync_directory(self.directory)
        for old in sorted(self.directory.glob("step_*.pt"))[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return step_path


def weights_only_payload(checkpoint: dict, weights: dict) -> dict:
    """The weights-only checkpoint of a loaded ``checkpoint``: what evaluation needs (format,
    algorithm, env, config, shapes, step) and ``weights`` as its agent state (the networks, see
    `pixelplay.agents.weights_only_state`); no optimizer, replay, RNG or run config."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "weights_only": True,
        "algo": checkpoint["algo"],
        "env_id": checkpoint["env_id"],
        "algo_config": dict(checkpoint["algo_config"]),
        "obs_shape": list(checkpoint["obs_shape"]),
        "num_actions": int(checkpoint["num_actions"]),
        "global_step": int(checkpoint["global_step"]),
        **({"frame_stack": int(checkpoint["frame_stack"])} if "frame_stack" in checkpoint else {}),
        "agent": {key: {name: tensor.detach().cpu().clone() for name, tensor in value.items()}
                  if isinstance(value, dict) else value for key, value in weights.items()},
    }


def make_payload(algo: str, env_id: str, algo_config: dict, run_config: dict, obs_shape, num_actions: int,
                 global_step: int, agent_state: dict, extra: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "algo": algo,
        "env_id": env_id,
        "algo_config": algo_config,
        "run_config": run_config,
        "obs_shape": list(obs_shape),
        "num_actions": int(num_actions),
        "global_step": int(global_step),
        "agent": agent_state,
        "rng": rng_state(),
        **(extra or {}),
    }
