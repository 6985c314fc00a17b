"""The options of a training run and how they are resolved from the command line.

`RunConfig` holds train.py's own options (the algorithm's hyperparameters are its config's);
`resolve_config` layers defaults < the env's preset (`pixelplay.agents.PRESETS`) < a config file
(or a resumed run's ``config.json``) < flags, checking every value with the config engine
(`pixelplay.agents.config`) before anything is created. It lives here, below the training loop,
so that whatever needs a run's options (train.py, the zoo's export) reads them from one place.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixelplay.agents import ALGOS, make_config, preset_for
from pixelplay.agents.config import ConfigError, add_flags, bounded, build, split_namespace
from pixelplay.envs import ENVS, resolve_env
from pixelplay.envs.doom_teacher import TEACHERS
from pixelplay.envs.errors import PixelplayError
from pixelplay.envs.spec import DOOM


@dataclass
class RunConfig:
    """Options of a training run (the algorithm's hyperparameters come from its own config)."""

    algo: str = bounded("ppo", choices=tuple(ALGOS))
    """algorithm: ppo, a2c or dqn"""
    env: str = "doom-basic"
    """env name (see the list below) or an ALE id such as ALE/Pong-v5"""
    total_steps: int = bounded(0, low=1)
    """env steps to train for, summed over envs (default: the preset's budget)"""
    num_envs: int = bounded(0, low=1)
    """parallel envs (default: the preset's count)"""
    seed: int = bounded(1, low=0, high=2**31 - 1_000_000)
    """base seed; env i of process rank r gets seed + 10000 * r + i"""
    run_dir: str = ""
    """where logs and checkpoints go (default: runs/<env>__<algo>__s<seed>__<time>)"""
    device: str = "auto"
    """auto (CUDA when available), cpu, or cuda[:N]"""
    threads: int = bounded(0, low=0, high=1024)
    """torch's CPU threads in this process (0: torch's default, one per core). 1 when several trainings share a machine: a pool's every op waits at a barrier for all its threads, and on oversubscribed cores each wait can last a scheduler time slice (bench/cpu_threads.py: two bf16 trainings at once ran 8.9x faster with 1)"""
    env_backend: str = bounded("auto", choices=("auto", "gymnasium", "envpool"))
    """Atari backend: auto (EnvPool when installed), gymnasium or envpool"""
    frame_stack: int = bounded(0, low=0, high=16)
    """frames stacked per observation (0: the env's own, 4 for Atari and every Doom scenario); 1 leaves motion to a recurrent core (--memory). Evaluation builds its env with the checkpoint's"""
    bots: int = bounded(0, low=0, high=15)
    """doom-deathmatch: built-in bots to play against (0: the scenario's default)"""
    game_features: tuple[str, ...] = ()
    """Doom only: learn to predict these game features on screen (enemy, health, weapon, ammo; comma-separated) with an auxiliary head, as Lample & Chaplot 2017 (weight: --game-feature-coef)"""
    teacher: str = bounded("none", choices=TEACHERS)
    """Doom, ppo and a2c: a scripted teacher whose advised actions the policy is pulled towards (Kickstarting, Schmitt et al. 2018; weight --teacher-coef, annealed over --teacher-anneal-steps): aimer turns to and shoots the most visible enemy, read from the labels buffer (envs/doom_teacher.py)"""
    track: bool = True
    """log to Weights & Biases (offline unless WANDB_MODE says otherwise; no account needed)"""
    wandb_project: str = "pixelplay"
    """wandb project name"""
    tensorboard: bool = False
    """also write TensorBoard event files to <run_dir>/tb"""
    checkpoint_interval: int = bounded(100_000, low=1)
    """env steps between checkpoints (one is always written at the end); a saved replay goes only into these"""
    checkpoint_seconds: float = bounded(120.0, low=0.0)
    """also checkpoint when this many seconds passed since the last one (0: off); without the replay"""
    keep_checkpoints: int = bounded(3, low=1)
    """how many step checkpoints to keep besides latest.pt"""
    capture_video: bool = False
    """record an evaluation episode to <run_dir>/videos every video_every steps"""
    video_every: int = bounded(100_000, low=1)
    """env steps between recorded videos (with --capture-video)"""
    overlap: bool = True
    """off-policy agents (dqn): run the gradient steps while the envs step (EnvPool's threads or the env worker processes; one in-process env does not overlap). The update then samples the replay without the step in flight; the replay ratio is unchanged"""
    double_buffer: bool = False
    """ppo, a2c: double-buffered sampling (Sample Factory, Petrenko et al. 2020): the envs step in two halves, one half's step running while the policy acts for the other; the data stay strictly on-policy (both halves wait for each update). num_envs must be even"""
    progress: bool = True
    """show a progress bar"""
    stop_return: float = float("inf")
    """stop early once the mean raw return of the last 20 episodes reaches this (default: never)"""
    dist_timeout: float = bounded(1800.0, low=1.0)
    """under torchrun: seconds a rank waits for the others in a collective before giving up"""

    def check(self) -> None:
        """game_features: known names, each once, and a ViZDoom env (the labels come from its
        labels buffer); a teacher: a ViZDoom env and an actor-critic; double-buffered sampling:
        an actor-critic and an even number of envs. Checked with the other values, before
        anything is created."""
        if self.double_buffer:
            if self.algo == "dqn":
                raise ConfigError("--double-buffer is for ppo and a2c; dqn already runs its gradient steps while the "
                                  "envs step (--overlap)")
            if self.num_envs and self.num_envs % 2:
                raise ConfigError(f"--double-buffer steps the envs in two equal halves: num_envs={self.num_envs} "
                                  "must be even")
        if self.teacher != "none":
            if self.algo not in ("ppo", "a2c"):
                raise ConfigError(f"--teacher is for ppo and a2c (a distillation term beside the policy gradient); "
                                  f"not {self.algo}")
            if self._family() not in (None, DOOM):
                raise ConfigError(f"--teacher {self.teacher} reads ViZDoom's labels buffer; {self.env} is an Atari env")
        if not self.game_features:
            return
        from pixelplay.envs.doom import GAME_FEATURES

        unknown = [name for name in self.game_features if name not in GAME_FEATURES]
        if unknown:
            raise ConfigError(f"run option game_features: unknown game feature(s) {', '.join(map(repr, unknown))}; "
                              f"known: {', '.join(GAME_FEATURES)}")
        if len(set(self.game_features)) != len(self.game_features):
            raise ConfigError(f"run option game_features names a feature twice: {','.join(self.game_features)}")
        family = self._family()
        if family not in (None, DOOM):
            raise ConfigError(f"--game-features is a ViZDoom option (its labels buffer says what is on screen); "
                              f"{self.env} is an Atari env")

    def _family(self) -> str | None:
        """The env's family (Doom or Atari); None for an unknown env, which resolve_config refuses."""
        try:
            return resolve_env(self.env)[0]
        except PixelplayError:
            return None


# The command line: every RunConfig field and every field of the algorithm's config is a flag,
# with the docstring under the field as its help.


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one `ConfigError` line (exit 2 from `main`), not usage + exit."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see --help)")


def build_parser(algo: str) -> argparse.ArgumentParser:
    env_list = ", ".join(ENVS)
    parser = _Parser(
        prog="train.py",
        description="Train a deep RL agent from pixels on Atari or ViZDoom.",
        epilog=(
            f"envs: {env_list}, or any ALE id (ALE/Pong-v5, PongNoFrameskip-v4). "
            "Presets per env family set known-good hyperparameters; --config and flags override them. "
            "Flags shown are the chosen --algo's; try `--algo dqn --help`."
        ),
    )
    parser.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help="a config.json written by an earlier run (its run_dir is not reused)")
    parser.add_argument("--resume", default=argparse.SUPPRESS, metavar="DIR",
                        help="continue a stopped run from its latest checkpoint; flags given here override")
    add_flags(parser.add_argument_group("run options"), RunConfig, "run.")
    add_flags(parser.add_argument_group(f"{algo} hyperparameters"), ALGOS[algo].config, "algo.")
    return parser


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PixelplayError(f"{what} '{path}' does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PixelplayError(f"{what} '{path}' is not valid JSON: {error}") from None
    except IsADirectoryError:
        raise PixelplayError(f"{what} '{path}' is a directory, not a file") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k, {}), dict) for k in ("run", "algo")):
        raise ConfigError(f"{what} '{path}' must be a JSON object with \"run\" and \"algo\" objects")
    return data


def resolve_config(argv: list[str] | None) -> tuple[RunConfig, Any, dict]:
    """Defaults < preset < --config file (or the resumed run's config) < flags on the command line.

    Every value from every source is checked against its field's type and range here, before
    anything is created.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algo")
    pre.add_argument("--config")
    pre.add_argument("--resume")
    known, _ = pre.parse_known_args(argv)
    base: dict = {"run": {}, "algo": {}}
    source = "config"
    if known.resume:
        source = str(Path(known.resume) / "config.json")
        base = _read_json(Path(source), "run directory's config")
    elif known.config:
        source = known.config
        base = _read_json(Path(known.config), "config file")
        base.get("run", {}).pop("run_dir", None)
    base.setdefault("run", {})
    base.setdefault("algo", {})
    algo_name = known.algo or base["run"].get("algo") or RunConfig.algo
    if algo_name not in ALGOS:
        raise PixelplayError(f"unknown algorithm '{algo_name}'; choose one of {', '.join(ALGOS)}")
    if known.resume and known.algo and known.algo != base["run"].get("algo"):
        raise PixelplayError(f"cannot resume a {base['run'].get('algo')} run as {known.algo}")
    # The file's own values are checked first, so that a message names the file they came from.
    build(RunConfig, base["run"], f"{source}: run.")
    make_config(algo_name, base["algo"], f"{source}: algo.")

    groups = split_namespace(build_parser(algo_name).parse_args(argv), ("run", "algo"))
    cli_run, cli_algo, other = groups["run"], groups["algo"], groups[""]
    env_id = cli_run.get("env") or base["run"].get("env") or RunConfig.env
    family, _ = resolve_env(env_id)
    run_values: dict[str, Any] = {}
    algo_values: dict[str, Any] = {}
    if not known.resume:
        preset = preset_for(algo_name, env_id, family)
        run_values.update(preset.pop("run"))
        algo_values.update(preset)
    run_values.update(base["run"])
    algo_values.update(base["algo"])
    run_values.update(cli_run)
    algo_values.update(cli_algo)
    run_values["algo"], run_values["env"] = algo_name, env_id
    if known.resume:
        run_values["run_dir"] = known.resume
    run_cfg = build(RunConfig, run_values, "run option ")
    algo_cfg = make_config(algo_name, algo_values)
    algo_cfg.check_rollout(run_cfg.num_envs)
    pick_device(run_cfg.device)
    if known.resume:
        other["resume"] = known.resume
    return run_cfg, algo_cfg, other


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PixelplayError(f"unknown --device '{name}'; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PixelplayError(f"--device {name} asked for, but this machine has no CUDA device; use --device cpu")
    return device
