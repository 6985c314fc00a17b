"""Checkpoints: atomic, versioned, readable with ``torch.load(weights_only=True)``, clear errors.

A checkpoint is one dict of tensors and primitives:
``{"format": "pixelplay-checkpoint", "version": 1, "algo", "env_id", "algo_config",
"run_config", "obs_shape", "num_actions", "global_step", "agent": agent.state_dict(), "rng": ...}``.
A run directory keeps ``checkpoints/latest.pt`` and the last few ``step_*.pt`` files
(Sample Factory's scheme: write a temp file, rename it into place, prune the oldest).
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelplay.envs.errors import PixelplayError

FORMAT = "pixelplay-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("algo", "env_id", "algo_config", "obs_shape", "num_actions", "global_step", "agent")


class CheckpointError(PixelplayError):
    """A checkpoint that is missing, corrupt, of another format, or does not fit."""


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temp file in the same directory, fsync, then rename: a crash never leaves a
    half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_checkpoint(path_or_run: str | os.PathLike) -> Path:
    """A checkpoint file as given, or a run directory's ``checkpoints/latest.pt``."""
    path = Path(path_or_run)
    if path.is_dir():
        latest = path / "checkpoints" / "latest.pt"
        if not latest.exists():
            raise CheckpointError(f"run directory '{path}' has no checkpoints/latest.pt (has it saved one yet?)")
        return latest
    if not path.exists():
        raise CheckpointError(f"no checkpoint or run directory at '{path}'")
    return path


def load_checkpoint(path_or_run: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint; every failure is a `CheckpointError` with the file named."""
    path = resolve_checkpoint(path_or_run)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"'{path}' is not a readable pixelplay checkpoint (corrupt or truncated?): {first_line}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a pixelplay checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(f"'{path}' has checkpoint version {data.get('version')}; this pixelplay reads {VERSION}")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise CheckpointError(f"'{path}' lacks {', '.join(missing)}")
    data["path"] = str(path)
    return data


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
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """Saves ``checkpoints/step_<N>.pt`` and ``latest.pt`` in a run directory, keeping the last few."""

    def __init__(self, run_dir: Path, keep_last: int = 3):
        self.directory = Path(run_dir) / "checkpoints"
        self.keep_last = max(1, keep_last)

    def save(self, payload: dict) -> Path:
        step_path = self.directory / f"step_{payload['global_step']:012d}.pt"
        atomic_torch_save(payload, step_path)
        atomic_torch_save(payload, self.directory / "latest.pt")
        for old in sorted(self.directory.glob("step_*.pt"))[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return step_path

    @property
    def latest(self) -> Path:
        return self.directory / "latest.pt"


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
