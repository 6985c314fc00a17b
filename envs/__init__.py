"""Env factory: one call turns a name like ``breakout`` or ``doom-basic`` into a `VecEnv`.

Names are a literal registry (no import-time registration); Atari ids that ALE knows
(``ALE/Pong-v5``, ``PongNoFrameskip-v4``) are accepted as they are. The backends are imported
lazily, so importing `envs` costs nothing and a missing optional package only matters when used.
"""

from __future__ import annotations

import difflib
import re

import torch

from pixelplay.envs.errors import EnvError, MissingDependencyError, PixelplayError
from pixelplay.envs.vec import EPISODE_INFO_KEY, StepResult, VecEnv

__all__ = [
    "ENVS",
    "EPISODE_INFO_KEY",
    "EnvError",
    "MissingDependencyError",
    "PixelplayError",
    "StepResult",
    "VecEnv",
    "env_family",
    "make_vec_env",
    "resolve_env",
]

ENVS: dict[str, tuple[str, str]] = {
    # name: (family, backend target)
    "breakout": ("atari", "ALE/Breakout-v5"),
    "pong": ("atari", "ALE/Pong-v5"),
    "doom-basic": ("doom", "basic"),
    "doom-defend-the-center": ("doom", "defend_the_center"),
    "doom-defend-the-line": ("doom", "defend_the_line"),
    "doom-health-gathering": ("doom", "health_gathering"),
    "doom-health-gathering-supreme": ("doom", "health_gathering_supreme"),
    "doom-deadly-corridor": ("doom", "deadly_corridor"),
    "doom-my-way-home": ("doom", "my_way_home"),
    "doom-take-cover": ("doom", "take_cover"),
    "doom-deathmatch": ("doom", "deathmatch"),
}
"""Every env name the CLI accepts, besides raw ALE ids."""

_ALE_ID = re.compile(r"^(ALE/[A-Za-z0-9]+-v5|[A-Za-z0-9]+NoFrameskip-v4)$")


def resolve_env(env_id: str) -> tuple[str, str]:
    """Return ``(family, target)`` for a name, or raise `EnvError` naming the closest match."""
    if env_id in ENVS:
        return ENVS[env_id]
    if _ALE_ID.match(env_id):
        return "atari", env_id
    close = difflib.get_close_matches(env_id, list(ENVS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise EnvError(
        f"unknown env '{env_id}'{hint} Known: {', '.join(ENVS)}, or any ALE id such as ALE/Pong-v5 (see --help)"
    )


def env_family(env_id: str) -> str:
    """``"atari"`` or ``"doom"``: selects presets and the backend."""
    return resolve_env(env_id)[0]


def make_vec_env(
    env_id: str,
    num_envs: int,
    seed: int,
    device: torch.device | str = "cpu",
    *,
    training: bool = True,
    backend: str = "auto",
    **options,
) -> VecEnv:
    """Build ``num_envs`` copies of ``env_id`` behind one `VecEnv`.

    ``training=True`` gives the training variant (Atari: life loss ends an episode, rewards
    clipped to their sign); ``training=False`` the evaluation variant (full games, raw rewards).
    ``backend`` picks ``gymnasium`` or ``envpool`` for Atari (``auto``: EnvPool when installed).
    Family-specific ``options`` (e.g. ``bots`` for deathmatch) are passed to the backend.
    """
    if num_envs < 1:
        raise EnvError(f"num_envs must be at least 1, got {num_envs}")
    family, target = resolve_env(env_id)
    if family == "atari":
        from pixelplay.envs.atari import make_atari_vec

        return make_atari_vec(target, num_envs, seed, device, training=training, backend=backend, **options)
    if backend not in ("auto", "gymnasium"):
        raise EnvError(f"env backend '{backend}' does not serve ViZDoom; use --env-backend gymnasium or auto")
    from pixelplay.envs.doom import make_doom_vec

    return make_doom_vec(target, num_envs, seed, device, training=training, **options)
