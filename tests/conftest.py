"""Shared test settings: run wandb offline and keep torch to the two cores this suite gets.

Also the `save_checkpoint` fixture, for tests that need an agent checkpoint on disk, and the
`system_tool` fixture, for tests that need a program of a system package (chromium, xvfb, xdotool)."""

import os
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py sets it
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

ATARI_OBS_SHAPE = (4, 84, 84)
"""Atari observations: the last 4 grey 84x84 frames (envs/atari.py)."""


def _env_shape(env: str) -> tuple[tuple[int, ...], int]:
    """``env``'s observation shape and action count: Doom's from the scenario table."""
    from pixelplay.envs import DOOM, env_spec
    from pixelplay.envs.scenarios import SCENARIOS

    spec = env_spec(env)
    obs_shape = SCENARIOS[spec.target].obs_shape if spec.family == DOOM else ATARI_OBS_SHAPE
    return tuple(obs_shape), spec.num_actions


def save_untrained_checkpoint(path: Path, algo: str = "ppo", env: str = "doom-basic",
                              obs_shape=None, num_actions: int | None = None) -> Path:
    """Build an untrained ``algo`` agent for ``env`` and save it to ``path`` as train.py saves a
    checkpoint (`make_payload` + `atomic_torch_save`); return ``path``. ``obs_shape`` and
    ``num_actions`` default to the env's own."""
    import torch

    from pixelplay.agents import ALGOS
    from pixelplay.agents.checkpoint import atomic_torch_save, make_payload

    if obs_shape is None or num_actions is None:
        env_obs_shape, env_num_actions = _env_shape(env)
        obs_shape = env_obs_shape if obs_shape is None else obs_shape
        num_actions = env_num_actions if num_actions is None else num_actions
    cfg = ALGOS[algo].config()
    agent = ALGOS[algo].agent(cfg, tuple(obs_shape), num_actions, 1, 1, torch.device("cpu"))
    payload = make_payload(algo, env, asdict(cfg), {"env": env}, obs_shape, num_actions, 0, agent.state_dict())
    atomic_torch_save(payload, path)
    return Path(path)


@pytest.fixture
def env_shape():
    """``env_shape(env) -> (obs_shape, num_actions)`` of an env id, without building the env."""
    return _env_shape


@pytest.fixture
def save_checkpoint():
    """``save_checkpoint(path, algo="ppo", env="doom-basic") -> path``: an untrained agent's
    checkpoint, saved the way train.py saves one (see `save_untrained_checkpoint`)."""
    return save_untrained_checkpoint


def in_ci() -> bool:
    """Running under CI (env CI=true, as GitHub Actions and .ci/run's callers set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_system_tool(executable: str, package: str) -> str:
    """The path of ``executable``, from the Debian package ``package``. Where it is missing the
    test skips naming the package to install, except under CI, where `.ci/run` installs it: there
    its absence fails the test, so a missing package never hides as a skip."""
    path = shutil.which(executable)
    if path:
        return path
    message = f"needs '{executable}' from the system package '{package}' (apt-get install {package})"
    if in_ci():
        pytest.fail(f"{message}: missing in CI, where .ci/run installs it")
    pytest.skip(message)


@pytest.fixture
def system_tool():
    """``system_tool(executable, package) -> path``: see `require_system_tool`."""
    return require_system_tool
