"""Env factory: one call turns a name like ``breakout`` or ``doom-basic`` into a `VecEnv`.

Names are a literal registry (no import-time registration); Atari ids that ALE knows
(``ALE/Pong-v5``, ``PongNoFrameskip-v4``) are accepted as they are. The backends are imported
lazily, so importing `pixelplay.envs` costs nothing and a missing optional package only matters
when used.

* `env_spec` resolves a name and its options once, into an `EnvSpec` (every `VecEnv` carries
  its own as ``.spec``);
* `make_vec_env` builds ``num_envs`` copies behind one `VecEnv` (what training steps);
* `make_env` builds one single gymnasium env in this process (what evaluation and recording
  play, reading the game's native screen with ``render()``).
"""

from __future__ import annotations

import difflib
import re

import torch

from pixelplay.envs.errors import EnvError, MissingDependencyError, PixelplayError
from pixelplay.envs.spec import ATARI, DOOM, EnvSpec
from pixelplay.envs.vec import EPISODE_INFO_KEY, StepResult, VecEnv

__all__ = [
    "ENVS",
    "EPISODE_INFO_KEY",
    "EnvError",
    "EnvSpec",
    "MissingDependencyError",
    "PixelplayError",
    "StepResult",
    "VecEnv",
    "env_family",
    "env_spec",
    "make_env",
    "make_vec_env",
    "resolve_env",
]

ENVS: dict[str, tuple[str, str]] = {
    # name: (family, backend target)
    "breakout": (ATARI, "ALE/Breakout-v5"),
    "pong": (ATARI, "ALE/Pong-v5"),
    "doom-basic": (DOOM, "basic"),
    "doom-defend-the-center": (DOOM, "defend_the_center"),
    "doom-defend-the-line": (DOOM, "defend_the_line"),
    "doom-health-gathering": (DOOM, "health_gathering"),
    "doom-health-gathering-supreme": (DOOM, "health_gathering_supreme"),
    "doom-deadly-corridor": (DOOM, "deadly_corridor"),
    "doom-my-way-home": (DOOM, "my_way_home"),
    "doom-take-cover": (DOOM, "take_cover"),
    "doom-deathmatch": (DOOM, "deathmatch"),
}
"""Every env name the CLI accepts, besides raw ALE ids."""

_ALE_ID = re.compile(r"^(ALE/[A-Za-z0-9]+-v5|[A-Za-z0-9]+NoFrameskip-v4)$")


def resolve_env(env_id: str) -> tuple[str, str]:
    """Return ``(family, target)`` for a name, or raise `EnvError` naming the closest match."""
    if env_id in ENVS:
        return ENVS[env_id]
    if _ALE_ID.match(env_id):
        return ATARI, env_id
    close = difflib.get_close_matches(env_id, list(ENVS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise EnvError(
        f"unknown env '{env_id}'{hint} Known: {', '.join(ENVS)}, or any ALE id such as ALE/Pong-v5 (see --help)"
    )


def env_family(env_id: str) -> str:
    """``"atari"`` or ``"doom"``: selects presets and the backend."""
    return resolve_env(env_id)[0]


def env_spec(env_id: str, *, training: bool = True, **options) -> EnvSpec:
    """The `EnvSpec` of ``env_id`` under these options (``training`` picks the training variant)."""
    family, target = resolve_env(env_id)
    if family == ATARI:
        from pixelplay.envs.atari import atari_spec

        return atari_spec(env_id, target, training=training, **options)
    from pixelplay.envs.doom import doom_spec

    return doom_spec(env_id, target, training=training, **options)


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
    """Build ``num_envs`` copies of ``env_id`` behind one `VecEnv` (its ``.spec`` says what it is).

    ``training=True`` gives the training variant (Atari: life loss ends an episode, rewards
    clipped to their sign); ``training=False`` the evaluation variant (full games, raw rewards).
    ``backend`` picks ``gymnasium`` or ``envpool`` for Atari (``auto``: EnvPool when installed).
    Family-specific ``options`` (e.g. ``bots`` for deathmatch) are passed to the backend.
    """
    if num_envs < 1:
        raise EnvError(f"num_envs must be at least 1, got {num_envs}")
    spec = env_spec(env_id, training=training, **options)
    if spec.family == ATARI:
        from pixelplay.envs.atari import make_atari_vec

        envs = make_atari_vec(spec.target, num_envs, seed, device, training=training, backend=backend, **options)
    else:
        if backend not in ("auto", "gymnasium"):
            raise EnvError(f"env backend '{backend}' does not serve ViZDoom; use --env-backend gymnasium or auto")
        from pixelplay.envs.doom import make_doom_vec

        envs = make_doom_vec(spec.target, num_envs, seed, device, training=training, **options)
    envs.spec = spec
    return envs


def make_env(env_id: str, seed: int | None = None, *, training: bool = False, **options):
    """One single gymnasium env of ``env_id`` in this process (no worker), for evaluation and video.

    It follows the same conventions as a `VecEnv`'s envs (uint8 (C, H, W) observations, the
    game's record in ``info[EPISODE_INFO_KEY]`` on the step that ends a game) and ``render()``
    returns the game's screen at its native resolution: the ALE screen for Atari, the engine's
    for Doom (pass ``render_native=True`` for colour on grey scenarios). Its `EnvSpec` is
    ``env_spec(env_id, training=training, **options)``. The caller resets it after a game ends.
    """
    family, target = resolve_env(env_id)
    if family == ATARI:
        from pixelplay.envs.atari import make_atari_env

        return make_atari_env(target, seed, training=training, **options)
    from pixelplay.envs.doom import DoomEnv

    return DoomEnv(target, seed=seed, training=training, **options)
