"""The zoo: trained agents shipped with pixelplay, one folder each (``zoo/<name>/``).

Each folder is what ``python -m pixelplay.eval export`` writes: ``agent.pt`` (a weights-only
checkpoint: the networks, no optimizer, replay or RNG), ``config.json`` (the training run's
configuration) and ``README.md`` (the command that trained it, its training figures and its
measured score). The folders ship inside the package (``pixelplay/zoo/<name>/``), so every eval
command takes a zoo agent by its bare name from any directory::

    python -m pixelplay.eval score doom-basic-ppo --episodes 20
    python -m pixelplay.eval record doom-basic-dqn

A path that exists always wins over a zoo name (`pixelplay.agents.checkpoint.resolve_checkpoint`).
"""

from __future__ import annotations

from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent
"""The zoo's folder: ``zoo/`` of a checkout, ``pixelplay/zoo/`` of an installed package."""

WEIGHTS_FILE = "agent.pt"


def names() -> list[str]:
    """The zoo's agents: the folders holding an ``agent.pt``, sorted."""
    return sorted(entry.name for entry in ZOO_DIR.iterdir() if (entry / WEIGHTS_FILE).is_file())


def find(name: str) -> Path | None:
    """The folder of zoo agent ``name``, or None."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    folder = ZOO_DIR / name
    return folder if (folder / WEIGHTS_FILE).is_file() else None


def is_zoo_path(path: str | Path) -> bool:
    """Whether ``path`` lies inside the shipped zoo (where eval commands write no reports)."""
    try:
        return Path(path).resolve().is_relative_to(ZOO_DIR)
    except OSError:
        return False
