"""Hyperparameter search spaces for `pixelplay.tune`, one per algorithm, as typed data.

Each space maps a field of the algorithm's config (`PPOConfig`, `A2CConfig`, `DQNConfig`) to a
`Range` or a `Choice`; a trial draws one value per field and the rest of the config comes from
the preset, as for any run. The ranges start from RL Zoo's samplers (rl-baselines3-zoo,
``rl_zoo3/hyperparams_opt.py``: ``sample_ppo_params``, ``sample_a2c_params``,
``sample_dqn_params``), translated to our fields and trimmed where a value makes no sense for
image observations within a tuning budget; each departure is noted beside the field.

RL Zoo's parameters with no field here (``net_arch``, ``activation_fn``: the CNN is fixed)
are left out. RL Zoo draws ``1 - gamma`` and ``1 - gae_lambda`` log-uniformly; here both are
`Choice` lists of the same reach (RL Zoo's own list for DQN's gamma and TRPO's gae_lambda), so
that every drawn value is the config's own field and a best trial's values go into a
``--config`` file unchanged.

Nothing here imports Optuna: `check_space` validates a space with the config engine
(`pixelplay.agents.make_config`) and `pixelplay.tune` turns it into ``trial.suggest_*`` calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pixelplay.agents import ALGOS, make_config
from pixelplay.agents.config import ConfigError


@dataclass(frozen=True)
class Range:
    """Every value from ``low`` to ``high`` (inclusive): integers when both bounds are ints,
    floats otherwise; ``log`` draws uniformly in log space (for step sizes and coefficients that
    matter by their order of magnitude)."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of ``options`` (numbers, strings or booleans: what a JSON config file can hold)."""

    options: tuple[Any, ...]


GAMMAS = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999)
"""RL Zoo ``sample_dqn_params``'s gamma list; its PPO/A2C range (1 - gamma in [1e-4, 0.03]) lies within it."""

GAE_LAMBDAS = (0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1.0)
"""RL Zoo ``sample_trpo_params``'s gae_lambda list; its PPO range (1 - lambda in [1e-4, 0.1]) lies within it."""

SEARCH_SPACES: dict[str, dict[str, Range | Choice]] = {
    "ppo": {
        "learning_rate": Range(1e-5, 2e-3, log=True),
        # RL Zoo goes to 2048 steps per env; with the Doom preset's 8 envs a rollout of 16k
        # steps would leave a 200k-step trial about a dozen updates.
        "num_steps": Choice((32, 64, 128, 256, 512)),
        "gamma": Choice(GAMMAS),
        "gae_lambda": Choice(GAE_LAMBDAS),
        # RL Zoo draws batch_size from 32..512 transitions; our field is the number of
        # minibatches per epoch (batch = num_steps * num_envs / num_minibatches).
        "num_minibatches": Choice((1, 2, 4, 8, 16)),
        "update_epochs": Choice((1, 5, 10, 20)),
        "clip_coef": Choice((0.1, 0.2, 0.3, 0.4)),
        "ent_coef": Range(1e-8, 0.1, log=True),
        "max_grad_norm": Range(0.3, 2.0),
    },
    "a2c": {
        "learning_rate": Range(1e-5, 2e-3, log=True),
        # RL Zoo's list (32..2048) is for cheap vector observations; A2C on pixels (Mnih et al.
        # 2016) uses 5 steps, so the list starts there and stops at 128.
        "num_steps": Choice((5, 8, 16, 32, 64, 128)),
        "gamma": Choice(GAMMAS),
        "gae_lambda": Choice(GAE_LAMBDAS),
        # Earlier RL Zoo releases drew normalize_advantage for A2C.
        "norm_adv": Choice((False, True)),
        "ent_coef": Range(1e-8, 0.1, log=True),
        "max_grad_norm": Range(0.3, 2.0),
    },
    "dqn": {
        # RL Zoo draws up to 1: past 1e-2 Adam on a CNN only diverges.
        "learning_rate": Range(1e-5, 1e-2, log=True),
        "gamma": Choice(GAMMAS),
        "batch_size": Choice((16, 32, 64, 128, 256)),
        # RL Zoo also offers 1e6: a million stacked 68x68 frames does not fit a trial's memory.
        "buffer_size": Choice((10_000, 50_000, 100_000)),
        "final_epsilon": Range(0.0, 0.2),
        "exploration_fraction": Range(0.0, 0.5),
        # RL Zoo's list less 1 (a copy every step) and 15000/20000 (beyond a short trial).
        "target_update_interval": Choice((1_000, 5_000, 10_000)),
        "learning_starts": Choice((0, 1_000, 5_000, 10_000)),
        # RL Zoo's train_freq list up to 16; 128..1000 leave a pixel DQN too few gradient steps.
        "train_frequency": Choice((1, 4, 8, 16)),
    },
}
"""Algorithm -> {config field: what a trial may draw for it}."""


def check_space(algo: str, space: dict[str, Range | Choice]) -> None:
    """Refuse a space that names no field of ``algo``'s config or reaches a value that field
    refuses: every bound and every option is built into a config with the config engine, so a
    space can never draw what `make_config` (and hence train.py) would reject."""
    if algo not in ALGOS:
        raise ConfigError(f"no search space for unknown algorithm '{algo}'; choose one of {', '.join(ALGOS)}")
    if not space:
        raise ConfigError(f"the {algo} search space is empty")
    for name, dimension in space.items():
        where = f"{algo} search space: "
        if isinstance(dimension, Range):
            if not dimension.low < dimension.high:
                raise ConfigError(f"{where}{name}: Range low {dimension.low!r} must be below high {dimension.high!r}")
            if dimension.log and dimension.low <= 0:
                raise ConfigError(f"{where}{name}: a log Range needs low > 0, got {dimension.low!r}")
            values = (dimension.low, dimension.high)
        elif isinstance(dimension, Choice):
            if not dimension.options:
                raise ConfigError(f"{where}{name}: a Choice needs at least one option")
            values = dimension.options
        else:
            raise ConfigError(f"{where}{name}: expected a Range or a Choice, got {dimension!r}")
        for value in values:
            make_config(algo, {name: value}, where)
