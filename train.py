"""Train a pixelplay agent from the command line.

    python train.py                                   # PPO on ViZDoom basic, a couple of minutes
    python train.py --algo ppo --env breakout         # PPO on Atari Breakout (CleanRL settings)
    python train.py --algo dqn --env doom-basic --double-dqn --dueling
    python train.py --resume runs/doom-basic__ppo__s1__20261129-101500

The whole run is one readable loop (`train`): CLI -> run directory -> seeds -> vector env ->
agent -> act / step / observe / update -> logs and checkpoints.
"""

from __future__ import annotations

if __name__ == "__main__":
    # `python train.py` runs the installed package's copy of this file (pixelplay.train), so that
    # every class and function exists under one module name; nothing below runs as __main__.
    import sys

    try:
        from pixelplay.train import main
    except ImportError as error:
        sys.exit(f"error: pixelplay is not installed ({error}); run `pip install -e .` in this checkout first")
    sys.exit(main())

import os

# Idle OpenMP threads sleep instead of spinning. The loop alternates between env workers and
# torch; spinning threads steal the cores the workers need, and on a busy 2-core machine a
# forward pass took 60-140 ms spinning against 3 ms passive. Set before torch starts its pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import ast
import csv
import dataclasses
import datetime as dt
import inspect
import json
import random
import sys
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelplay.agents import ALGOS, make_config, preset_for
from pixelplay.agents.checkpoint import CheckpointManager, load_checkpoint, make_payload, set_rng_state
from pixelplay.envs import ENVS, make_vec_env, resolve_env
from pixelplay.envs.errors import EnvError, PixelplayError


@dataclass
class RunConfig:
    """Options of a training run (the algorithm's hyperparameters come from its own config)."""

    algo: str = "ppo"
    """algorithm: ppo, a2c or dqn"""
    env: str = "doom-basic"
    """env name (see the list above) or an ALE id such as ALE/Pong-v5"""
    total_steps: int = 0
    """env steps to train for, summed over envs (0: the preset's budget)"""
    num_envs: int = 0
    """parallel envs (0: the preset's count)"""
    seed: int = 1
    """base seed; env i of process rank r gets seed + 10000 * r + i"""
    run_dir: str = ""
    """where logs and checkpoints go (default: runs/<env>__<algo>__s<seed>__<time>)"""
    device: str = "auto"
    """auto (CUDA when available), cpu, or cuda[:N]"""
    env_backend: str = "auto"
    """Atari backend: auto (EnvPool when installed), gymnasium or envpool"""
    bots: int = 0
    """doom-deathmatch: built-in bots to play against (0: the scenario's default)"""
    track: bool = True
    """log to Weights & Biases (offline unless WANDB_MODE says otherwise; no account needed)"""
    wandb_project: str = "pixelplay"
    """wandb project name"""
    tensorboard: bool = False
    """also write TensorBoard event files to <run_dir>/tb"""
    checkpoint_interval: int = 100_000
    """env steps between checkpoints (one is always written at the end)"""
    keep_checkpoints: int = 3
    """how many step checkpoints to keep besides latest.pt"""
    capture_video: bool = False
    """record an evaluation episode to <run_dir>/videos every video_every steps"""
    video_every: int = 100_000
    """env steps between recorded videos (with --capture-video)"""
    progress: bool = True
    """show a progress bar"""
    stop_return: float = float("inf")
    """stop early once the mean raw return of the last 20 episodes reaches this (default: never)"""


EPISODE_COLUMNS = {
    "atari": ["global_step", "wall_time", "env", "return", "length", "frames"],
    "doom": ["global_step", "wall_time", "env", "return", "length", "kills", "deaths", "suicides", "objects"],
}


# ---------------------------------------------------------------------------------------------
# The command line: every RunConfig field and every field of the algorithm's config is a flag,
# with the docstring under the field as its help.


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each dataclass field (CleanRL / tyro style)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(inspect.getsource(klass)).body[0].body  # type: ignore[attr-defined]
        for node, following in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = following.value.value.strip()
    return docs


def _add_dataclass_flags(group, cls: type, dest_prefix: str) -> None:
    docs = field_docs(cls)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": dest_prefix + f.name, "default": argparse.SUPPRESS}
        help_text = docs.get(f.name, "")
        default = f.default
        if f.type in (bool, "bool"):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}.get(str(f.type), type(default))
            kwargs["metavar"] = f.name.upper()
        if default not in ("", 0) or isinstance(default, bool | float):
            help_text += f" (default: {default})"
        group.add_argument(flag, help=help_text, **kwargs)


def build_parser(algo: str) -> argparse.ArgumentParser:
    env_list = ", ".join(ENVS)
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train a deep RL agent from pixels on Atari or ViZDoom.",
        epilog=(
            f"envs: {env_list}, or any ALE id (ALE/Pong-v5, PongNoFrameskip-v4). "
            "Presets per env family set known-good hyperparameters; --config and flags override them. "
            "Flags shown are the chosen --algo's; try `--algo dqn --help`."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help="a config.json written by an earlier run (its run_dir is not reused)")
    parser.add_argument("--resume", default=argparse.SUPPRESS, metavar="DIR",
                        help="continue a stopped run from its latest checkpoint; flags given here override")
    _add_dataclass_flags(parser.add_argument_group("run options"), RunConfig, "run.")
    _add_dataclass_flags(parser.add_argument_group(f"{algo} hyperparameters"), ALGOS[algo].config, "algo.")
    return parser


def _split(namespace: argparse.Namespace) -> tuple[dict, dict, dict]:
    run, algo, other = {}, {}, {}
    for key, value in vars(namespace).items():
        if key.startswith("run."):
            run[key[4:]] = value
        elif key.startswith("algo."):
            algo[key[5:]] = value
        else:
            other[key] = value
    return run, algo, other


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PixelplayError(f"{what} '{path}' does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PixelplayError(f"{what} '{path}' is not valid JSON: {error}") from None


def resolve_config(argv: list[str] | None) -> tuple[RunConfig, Any, dict]:
    """Defaults < preset < --config file (or the resumed run's config) < flags on the command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algo")
    pre.add_argument("--config")
    pre.add_argument("--resume")
    known, _ = pre.parse_known_args(argv)
    base: dict = {"run": {}, "algo": {}}
    if known.resume:
        base = _read_json(Path(known.resume) / "config.json", "run directory's config")
    elif known.config:
        base = _read_json(Path(known.config), "config file")
        base.get("run", {}).pop("run_dir", None)
    algo_name = known.algo or base.get("run", {}).get("algo") or RunConfig.algo
    if algo_name not in ALGOS:
        raise PixelplayError(f"unknown algorithm '{algo_name}'; choose one of {', '.join(ALGOS)}")
    if known.resume and known.algo and known.algo != base["run"].get("algo"):
        raise PixelplayError(f"cannot resume a {base['run'].get('algo')} run as {known.algo}")
    namespace = build_parser(algo_name).parse_args(argv)
    cli_run, cli_algo, other = _split(namespace)

    env_id = cli_run.get("env") or base.get("run", {}).get("env") or RunConfig.env
    family, _ = resolve_env(env_id)
    run_values = asdict(RunConfig())
    algo_values = asdict(ALGOS[algo_name].config())
    if not known.resume:
        preset = preset_for(algo_name, env_id, family)
        run_values.update(preset.pop("run"))
        algo_values.update(preset)
    run_values.update(base.get("run", {}))
    algo_values.update(base.get("algo", {}))
    run_values.update(cli_run)
    algo_values.update(cli_algo)
    run_values["algo"], run_values["env"] = algo_name, env_id
    if known.resume:
        run_values["run_dir"] = known.resume
    unknown = set(run_values) - {f.name for f in fields(RunConfig)}
    if unknown:
        raise PixelplayError(f"config has unknown run option(s): {', '.join(sorted(unknown))}")
    run_cfg = RunConfig(**run_values)
    algo_cfg = make_config(algo_name, algo_values)
    _validate(run_cfg, algo_cfg)
    return run_cfg, algo_cfg, other


def _validate(run: RunConfig, algo_cfg: Any) -> None:
    if run.total_steps <= 0:
        raise PixelplayError(f"--total-steps must be positive, got {run.total_steps}")
    if run.num_envs <= 0:
        raise PixelplayError(f"--num-envs must be positive, got {run.num_envs}")
    if getattr(algo_cfg, "precision", "fp32") not in ("auto", "fp32", "bf16"):
        raise PixelplayError(f"--precision must be auto, fp32 or bf16, got '{algo_cfg.precision}'")
    if run.device != "auto" and run.device.startswith("cuda") and not torch.cuda.is_available():
        raise PixelplayError(f"--device {run.device} asked for, but this machine has no CUDA device; use --device cpu")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise PixelplayError(f"unknown --device '{name}'; use auto, cpu or cuda") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Logging: CSVs in the run directory (always), wandb and TensorBoard (optional).


class RunLogger:
    """Appends episodes and training metrics to CSVs; mirrors them to wandb / TensorBoard."""

    def __init__(self, run_dir: Path, cfg: RunConfig, family: str, config: dict):
        self.run_dir = run_dir
        self.start_time = time.time()
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.episode_columns = EPISODE_COLUMNS[family]
        self._episodes_file = open(run_dir / "episodes.csv", "a", newline="")
        self._episodes = csv.DictWriter(self._episodes_file, self.episode_columns, extrasaction="ignore")
        if self._episodes_file.tell() == 0:
            self._episodes.writeheader()
        self._metrics_path = run_dir / "metrics.csv"
        self._metrics_file = None
        self._metrics = None
        self.wandb = None
        if cfg.track:
            self.wandb = _start_wandb(run_dir, cfg, config)
        self.tensorboard = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise PixelplayError("--tensorboard needs the tensorboard package: pip install 'pixelplay[tensorboard]'") from None
            self.tensorboard = SummaryWriter(str(run_dir / "tb"))

    def log_episodes(self, episodes: list[dict], step: int) -> None:
        for episode in episodes:
            row = {"global_step": step, "wall_time": round(time.time() - self.start_time, 2), **episode}
            self._episodes.writerow(row)
            self.recent_returns.append(float(episode["return"]))
            scalars = {f"charts/episodic_{k}": v for k, v in episode.items() if k != "env"}
            self._mirror(scalars, step)
        if episodes:
            self._episodes_file.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        row = {"global_step": step, "wall_time": round(time.time() - self.start_time, 2), **metrics}
        if self._metrics is None:
            existing = self._metrics_path.exists() and self._metrics_path.stat().st_size > 0
            if existing:
                with open(self._metrics_path, newline="") as handle:
                    columns = next(csv.reader(handle))
            else:
                columns = list(row)
            self._metrics_file = open(self._metrics_path, "a", newline="")
            self._metrics = csv.DictWriter(self._metrics_file, columns, extrasaction="ignore")
            if not existing:
                self._metrics.writeheader()
        self._metrics.writerow(row)
        self._metrics_file.flush()
        self._mirror(metrics, step)

    def _mirror(self, scalars: dict[str, float], step: int) -> None:
        if self.wandb is not None:
            self.wandb.log({**scalars, "global_step": step})
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(key, value, step)

    def solved(self, target: float) -> bool:
        """Whether a full window of recent episodes averages at least ``target``."""
        return len(self.recent_returns) == self.recent_returns.maxlen and self.mean_recent_return >= target

    @property
    def mean_recent_return(self) -> float:
        return float(np.mean(self.recent_returns)) if self.recent_returns else float("nan")

    def close(self) -> None:
        self._episodes_file.close()
        if self._metrics_file is not None:
            self._metrics_file.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _start_wandb(run_dir: Path, cfg: RunConfig, config: dict):
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")  # no account needed unless the user opts in
    os.environ.setdefault("WANDB_SILENT", "true")
    id_file = run_dir / "wandb_id.txt"
    # One id per run directory, so --resume continues the same wandb run.
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
    id_file.write_text(run_id)
    run = wandb.init(
        project=cfg.wandb_project,
        name=run_dir.name,
        id=run_id,
        resume="allow",
        dir=str(run_dir),
        config=config,
    )
    run.define_metric("*", step_metric="global_step")
    return run


# ---------------------------------------------------------------------------------------------
# The run.


def prepare_run_dir(cfg: RunConfig, resuming: bool) -> Path:
    if resuming:
        run_dir = Path(cfg.run_dir)
        if not (run_dir / "checkpoints" / "latest.pt").exists():
            raise PixelplayError(f"cannot resume '{run_dir}': it has no checkpoints/latest.pt")
        return run_dir
    if not cfg.run_dir:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        cfg.run_dir = str(Path("runs") / f"{cfg.env.replace('/', '-')}__{cfg.algo}__s{cfg.seed}__{stamp}")
    run_dir = Path(cfg.run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise PixelplayError(
            f"run directory '{run_dir}' already holds a run; continue it with --resume {run_dir} or pick another --run-dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_config(run_dir: Path, cfg: RunConfig, algo_cfg: Any) -> dict:
    config = {"run": asdict(cfg), "algo": asdict(algo_cfg)}
    tmp = run_dir / ".config.json.tmp"
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, run_dir / "config.json")
    return config


def train(cfg: RunConfig, algo_cfg: Any, resuming: bool = False) -> Path:
    """The training loop, top to bottom. Returns the run directory."""
    rank = int(os.environ.get("RANK", "0"))  # under torchrun; only rank 0 writes
    device = pick_device(cfg.device)
    family, _ = resolve_env(cfg.env)
    run_dir = prepare_run_dir(cfg, resuming)
    checkpoint = load_checkpoint(run_dir, map_location=device) if resuming else None
    config = write_config(run_dir, cfg, algo_cfg)
    seed = cfg.seed + 10_000 * rank
    seed_everything(seed)

    env_options = {"bots": cfg.bots} if cfg.bots else {}
    envs = make_vec_env(cfg.env, cfg.num_envs, seed, device, training=True, backend=cfg.env_backend, **env_options)
    try:
        if not hasattr(envs.single_action_space, "n"):
            raise EnvError(f"{cfg.env} has a {envs.single_action_space} action space; pixelplay's agents need Discrete actions")
        agent = ALGOS[cfg.algo].agent(
            algo_cfg, envs.obs_shape, envs.num_actions, envs.num_envs, cfg.total_steps, device,
            frame_stack=envs.frame_stack,
        )
        global_step = 0
        if checkpoint is not None:
            if tuple(checkpoint["obs_shape"]) != envs.obs_shape or checkpoint["num_actions"] != envs.num_actions:
                raise PixelplayError(
                    f"checkpoint in '{run_dir}' was saved for observations {tuple(checkpoint['obs_shape'])} and "
                    f"{checkpoint['num_actions']} actions; this env gives {envs.obs_shape} and {envs.num_actions}"
                )
            agent.load_state_dict(checkpoint["agent"])
            global_step = checkpoint["global_step"]
            set_rng_state(checkpoint["rng"])
        logger = RunLogger(run_dir, cfg, family, config) if rank == 0 else None
        checkpoints = CheckpointManager(run_dir, cfg.keep_checkpoints)
        video = _video_recorder(cfg, run_dir) if cfg.capture_video and rank == 0 else None

        def save(at_step: int) -> None:
            if rank == 0:
                checkpoints.save(make_payload(
                    cfg.algo, cfg.env, asdict(algo_cfg), asdict(cfg), envs.obs_shape, envs.num_actions,
                    at_step, agent.state_dict(),
                ))

        progress = _progress_bar(cfg, global_step, rank)
        next_checkpoint = (global_step // cfg.checkpoint_interval + 1) * cfg.checkpoint_interval
        steps_at_last_log, time_at_last_log = global_step, time.time()
        obs = envs.reset(seed=seed)
        try:
            while global_step < cfg.total_steps:
                action = agent.act(obs, global_step)
                result = envs.step(action)
                agent.observe(obs, action, result)
                obs = result.obs
                global_step += envs.num_envs
                if logger and result.episodes:
                    logger.log_episodes(result.episodes, global_step)
                if agent.ready(global_step):
                    metrics = agent.update(global_step)
                    now = time.time()
                    metrics["charts/steps_per_second"] = (global_step - steps_at_last_log) / max(now - time_at_last_log, 1e-9)
                    steps_at_last_log, time_at_last_log = global_step, now
                    if logger:
                        logger.log_metrics(metrics, global_step)
                    if global_step >= next_checkpoint:
                        save(global_step)
                        next_checkpoint += cfg.checkpoint_interval
                    if logger and logger.solved(cfg.stop_return):
                        print(f"\nmean return of the last 20 episodes reached {cfg.stop_return:g}; stopping", file=sys.stderr)
                        break
                if video is not None:
                    video.maybe_record(agent, global_step)
                if progress is not None:
                    progress.update(envs.num_envs)
                    if result.episodes and logger:
                        progress.set_postfix(mean_return=f"{logger.mean_recent_return:.2f}", refresh=False)
        except KeyboardInterrupt:
            saved_at = _save_final(agent, save, global_step, envs.num_envs)
            print(f"\ninterrupted at step {global_step}; checkpoint saved at step {saved_at}", file=sys.stderr)
            raise
        except EnvError as error:
            # An emulator crashed mid-run: keep what was learned and say how to go on.
            saved_at = _save_final(agent, save, global_step, envs.num_envs)
            raise EnvError(f"{error} at step {global_step}; checkpoint saved at step {saved_at}, continue with "
                           f"`python train.py --resume {run_dir}`") from error
        _save_final(agent, save, global_step, envs.num_envs)
    finally:
        envs.close()
        if "progress" in locals() and progress is not None:
            progress.close()
        if "logger" in locals() and logger is not None:
            logger.close()
    if rank == 0:
        mean = logger.mean_recent_return if logger else float("nan")
        print(f"done: {global_step} steps, mean return of the last {len(logger.recent_returns)} episodes "
              f"{mean:.2f}; run in {run_dir}")
    return run_dir


def _save_final(agent: Any, save, global_step: int, num_envs: int) -> int:
    """Save the last checkpoint of a run that ends, is interrupted or loses an env; returns its step.

    An on-policy agent that stops mid-rollout holds the weights of its last update and a partial
    rollout it never learned from: the checkpoint is labelled with that update's step, so that
    --resume collects the rollout again instead of skipping its steps.
    """
    storage = getattr(agent, "storage", None)
    at_step = global_step - (storage.step * num_envs if storage is not None else 0)
    save(at_step)
    return at_step


def _progress_bar(cfg: RunConfig, start: int, rank: int):
    if not cfg.progress or rank != 0:
        return None
    from tqdm import tqdm

    # Redraw at most every 0.5 s on a terminal, every 30 s into a log file.
    return tqdm(total=cfg.total_steps, initial=start, unit="step", unit_scale=True, dynamic_ncols=True,
                desc=f"{cfg.algo} {cfg.env}", smoothing=0.05, mininterval=0.5 if sys.stderr.isatty() else 30)


def _video_recorder(cfg: RunConfig, run_dir: Path):
    from pixelplay.eval.record import PeriodicRecorder

    return PeriodicRecorder(cfg.env, run_dir / "videos", every=cfg.video_every, seed=cfg.seed)


def main(argv: list[str] | None = None) -> int:
    try:
        run_cfg, algo_cfg, other = resolve_config(argv)
        train(run_cfg, algo_cfg, resuming="resume" in other)
    except PixelplayError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
