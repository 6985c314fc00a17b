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

import contextlib
import csv
import datetime as dt
import json
import random
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelplay.agents import ALGOS, restore_agent
from pixelplay.agents.checkpoint import (
    CheckpointError,
    CheckpointManager,
    atomic_write_text,
    load_checkpoint,
    make_payload,
    remove_stale_temporaries,
    rng_state,
    set_rng_state,
)
from pixelplay.agents.distributed import Distributed, DistributedError, state_hash
from pixelplay.agents.run_config import RunConfig, pick_device, resolve_config
from pixelplay.envs import make_vec_env
from pixelplay.envs.errors import EnvError, PixelplayError
from pixelplay.envs.vec import VecEnv


@dataclass
class EnvGroup:
    """Envs that step together: all of them, or one half under double-buffered sampling."""

    envs: VecEnv
    rows: slice
    """their rows among all the envs (the agent's batch)"""
    obs: torch.Tensor | None = None
    """the observations they act on next"""
    action: torch.Tensor | None = None
    """the actions of the step in flight; None while the group waits (for the update)"""


def _joined(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    """The groups' per-env tensors as one batch (None when the envs report none)."""
    return None if parts[0] is None else torch.cat(parts)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a cluster's, Docker's or `timeout`'s stop): handled as Ctrl-C is."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Logging: CSVs in the run directory (always), wandb and TensorBoard (optional).


def trim_csv(path: Path, last_step: int) -> int:
    """Drop the rows of ``path`` logged after ``last_step`` (a resumed run logs them again).

    The trimmed file is written beside the old one and renamed over it, so a crash leaves one
    or the other. Returns how many rows were dropped.
    """
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    kept = [row for row in rows if _row_step(row) <= last_step]
    if len(kept) < len(rows):
        atomic_write_text(path, header + "".join(kept))
    return len(rows) - len(kept)


def _row_step(line: str) -> int:
    first = line.split(",", 1)[0]
    try:
        return int(first)
    except ValueError:
        return 0  # a torn last line of a killed run: keep (it sorts before any step)


class RunLogger:
    """Appends episodes and training metrics to CSVs; mirrors them to wandb / TensorBoard."""

    def __init__(self, run_dir: Path, cfg: RunConfig, episode_columns: list[str], config: dict, resume_step: int):
        self.run_dir = run_dir
        self.start_time = time.time()
        self.recent_returns: deque[float] = deque(maxlen=20)
        episodes_path = run_dir / "episodes.csv"
        if episodes_path.exists() and episodes_path.stat().st_size > 0:
            # A resumed run keeps its file's columns (a run started without torchrun has no rank).
            with open(episodes_path, newline="") as handle:
                episode_columns = next(csv.reader(handle))
        self.episode_columns = episode_columns
        self._episodes_file = open(episodes_path, "a", newline="")
        self._episodes = csv.DictWriter(self._episodes_file, self.episode_columns, extrasaction="ignore")
        if self._episodes_file.tell() == 0:
            self._episodes.writeheader()
        self._metrics_path = run_dir / "metrics.csv"
        self._metrics_file = None
        self._metrics = None
        self.wandb = None
        if cfg.track:
            self.wandb = _start_wandb(run_dir, cfg, config, resume_step)
        self.tensorboard = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise PixelplayError("--tensorboard needs the tensorboard package: pip install 'pixelplay[tensorboard]'") from None
            # TensorBoard keeps the events of a stopped run past its checkpoint; with purge_step
            # it hides those at or after the resumed step.
            self.tensorboard = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step + 1 if resume_step else None)

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


def _start_wandb(run_dir: Path, cfg: RunConfig, config: dict, resume_step: int):
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")  # no account needed unless the user opts in
    os.environ.setdefault("WANDB_SILENT", "true")
    id_file = run_dir / "wandb_id.txt"
    # One id per run directory, so --resume continues the same wandb run.
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
    atomic_write_text(id_file, run_id)
    kwargs: dict[str, Any] = {"id": run_id, "resume": "allow"}
    if resume_step and os.environ.get("WANDB_MODE") == "online":
        # wandb's rewind forks history at the checkpoint's step, so the steps logged after it
        # before the stop are not shown twice (online runs only; an offline run keeps them).
        kwargs = {"resume_from": f"{run_id}?_step={resume_step}"}
    run = wandb.init(project=cfg.wandb_project, name=run_dir.name, dir=str(run_dir), config=config, **kwargs)
    run.define_metric("*", step_metric="global_step")
    return run


# ---------------------------------------------------------------------------------------------
# The run.


def choose_run_dir(cfg: RunConfig, resuming: bool) -> Path:
    """The run directory, checked but not created (it is created once the run can start)."""
    if resuming:
        run_dir = Path(cfg.run_dir)
        if not (run_dir / "config.json").is_file():
            raise PixelplayError(f"cannot resume '{run_dir}': it holds no run (no config.json)")
        return run_dir
    if not cfg.run_dir:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        cfg.run_dir = str(Path("runs") / f"{cfg.env.replace('/', '-')}__{cfg.algo}__s{cfg.seed}__{stamp}")
    run_dir = Path(cfg.run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise PixelplayError(
            f"run directory '{run_dir}' already holds a run; continue it with --resume {run_dir} or pick another --run-dir"
        )
    return run_dir


def load_resume_checkpoint(run_dir: Path, cfg: RunConfig, world_size: int) -> dict | None:
    """The run's latest checkpoint (on the CPU), checked against the run; None when it has none yet."""
    if (run_dir / "agent.pt").exists():
        raise CheckpointError(
            f"'{run_dir}' holds an exported weights-only agent (agent.pt), not a run: --resume needs the full "
            "checkpoint of the run that trained it (its checkpoints/latest.pt); evaluate this one with "
            "python -m pixelplay.eval"
        )
    if not (run_dir / "checkpoints" / "latest.pt").exists():
        print(f"'{run_dir}' has no checkpoint yet; starting the run afresh in the same directory", file=sys.stderr)
        return None
    checkpoint = load_checkpoint(run_dir, map_location="cpu")
    if checkpoint["algo"] != cfg.algo or checkpoint["env_id"] != cfg.env:
        raise CheckpointError(
            f"'{checkpoint['path']}' holds a {checkpoint['algo']} agent for {checkpoint['env_id']}; "
            f"this run is {cfg.algo} on {cfg.env}"
        )
    missing = [key for key in ("rng", "run_config") if key not in checkpoint]
    if "optimizer" not in checkpoint["agent"]:
        missing.append("agent.optimizer")
    if missing:
        raise CheckpointError(
            f"'{checkpoint['path']}' cannot be resumed: it lacks {', '.join(missing)} (a weights-only checkpoint "
            "evaluates with python -m pixelplay.eval, but --resume needs the full one train.py writes)"
        )
    saved_features = tuple((checkpoint["run_config"] or {}).get("game_features") or ())
    if saved_features != tuple(cfg.game_features):
        raise CheckpointError(
            f"'{checkpoint['path']}' was trained with --game-features '{','.join(saved_features)}' and this run asks "
            f"for '{','.join(cfg.game_features)}': the network's game-feature head differs; resume with the same"
        )
    saved_ranks = checkpoint.get("world_size", 1)
    if saved_ranks != world_size:
        raise CheckpointError(
            f"'{checkpoint['path']}' was saved by a run of {saved_ranks} rank(s); resume it with the same number "
            f"(torchrun --nproc_per_node ... giving {saved_ranks} processes in all), not {world_size}"
        )
    return checkpoint


def write_config(run_dir: Path, cfg: RunConfig, algo_cfg: Any) -> dict:
    config = {"run": asdict(cfg), "algo": asdict(algo_cfg)}
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")
    return config


def _on_rank_0(dist: Distributed, work):
    """Run ``work()`` on rank 0 and hand its result, or its `PixelplayError`, to every rank."""
    outcome: tuple[str, Any] = ("ok", None)
    if dist.is_main:
        try:
            outcome = ("ok", work())
        except PixelplayError as error:
            outcome = (type(error).__name__, str(error))
    outcome = dist.broadcast_object(outcome)
    if outcome[0] != "ok":
        raise (CheckpointError if outcome[0] == "CheckpointError" else PixelplayError)(outcome[1])
    return outcome[1]


def _elastic_restart(cfg: RunConfig) -> bool:
    """torchrun re-ran this command after a rank failed (``--max-restarts``) and the run
    directory holds a checkpoint: resume from it, as Sample Factory's ``restart_behavior=resume``."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    return restarts > 0 and bool(cfg.run_dir) and (Path(cfg.run_dir) / "config.json").is_file()


def train(cfg: RunConfig, algo_cfg: Any, resuming: bool = False,
          should_stop: Callable[[int, float], bool] | None = None) -> Path:
    """The training loop, top to bottom. Returns the run directory.

    ``should_stop(global_step, mean_return)``, if given, is asked on rank 0 after every update
    with the mean raw return of the last 20 episodes (NaN before the first one ends); True ends
    the run there as a reached --stop-return does: final checkpoint, logs closed, a run that
    --resume continues. `pixelplay.tune` prunes weak trials with it."""
    dist = Distributed.from_environment(pick_device(cfg.device), cfg.dist_timeout)
    try:
        return _train(cfg, algo_cfg, resuming or _elastic_restart(cfg), dist, should_stop)
    finally:
        dist.close()


def _train(cfg: RunConfig, algo_cfg: Any, resuming: bool, dist: Distributed,
           should_stop: Callable[[int, float], bool] | None) -> Path:
    rank, device, main = dist.rank, dist.device, dist.is_main
    # Rank 0 decides the run directory and reads the checkpoint; the other ranks receive both.
    run_dir = Path(_on_rank_0(dist, lambda: str(choose_run_dir(cfg, resuming))))
    cfg.run_dir = str(run_dir)
    checkpoint = _on_rank_0(dist, lambda: load_resume_checkpoint(run_dir, cfg, dist.world_size)) if resuming else None
    seed = cfg.seed + 10_000 * rank
    seed_everything(seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    with contextlib.ExitStack() as cleanup:
        env_options: dict[str, Any] = {"bots": cfg.bots} if cfg.bots else {}
        if cfg.frame_stack:
            env_options["frame_stack"] = cfg.frame_stack
        if cfg.game_features:  # only then: the envs label their frames (ViZDoom renders a labels buffer)
            env_options["game_features"] = cfg.game_features
        if cfg.teacher != "none":  # the envs advise an action per observation (kickstarting)
            env_options["teacher"] = cfg.teacher
        # The envs step as one group, or as two halves that take turns (double-buffered sampling).
        groups: list[EnvGroup] = []
        group_size = cfg.num_envs // 2 if cfg.double_buffer else cfg.num_envs
        for first_row in range(0, cfg.num_envs, group_size):
            group_envs = make_vec_env(cfg.env, group_size, seed + first_row, device, training=True,
                                      backend=cfg.env_backend, **env_options)
            cleanup.callback(group_envs.close)
            groups.append(EnvGroup(group_envs, slice(first_row, first_row + group_size)))
        envs = groups[0].envs  # what every group is: spaces, shapes, spec
        if not hasattr(envs.single_action_space, "n"):
            raise EnvError(f"{cfg.env} has a {envs.single_action_space} action space; pixelplay's agents need Discrete actions")
        agent = ALGOS[cfg.algo].agent(
            algo_cfg, envs.obs_shape, envs.num_actions, cfg.num_envs, cfg.total_steps, device,
            frame_stack=envs.frame_stack, world_size=dist.world_size,
            num_game_features=len(envs.spec.game_features),
            **({"with_teacher": True} if envs.spec.teacher != "none" else {}),
        )
        global_step = 0
        if checkpoint is not None:
            restore_agent(agent, checkpoint, envs.obs_shape, envs.num_actions)
            global_step = checkpoint["global_step"]
            rank_rngs = checkpoint.get("rng_ranks")
            set_rng_state(rank_rngs[rank] if rank_rngs else checkpoint["rng"] if main else rng_state())
        if dist.active:
            # One set of weights: rank 0's (each rank seeded torch with its own seed).
            dist.broadcast_state({k: v for k, v in agent.state_dict().items() if k != "optimizer"})
            agent.gradient_sync = dist.average_gradients
        steps_per_iteration = group_size * dist.world_size  # one group's step, over all ranks

        # Everything that can fail on bad input has been checked: now the run directory is written.
        logger = checkpoints = video = None
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            config = write_config(run_dir, cfg, algo_cfg)
            remove_stale_temporaries(run_dir)
            if resuming:
                dropped = trim_csv(run_dir / "episodes.csv", global_step) + trim_csv(run_dir / "metrics.csv", global_step)
                if dropped:
                    print(f"resuming at step {global_step}: dropped {dropped} CSV rows logged after that checkpoint",
                          file=sys.stderr)
            columns = ["global_step", "wall_time", *(["rank"] if dist.active else []), "env", *envs.spec.episode_columns]
            logger = cleanup.enter_context(contextlib.closing(RunLogger(run_dir, cfg, columns, config, global_step)))
            checkpoints = CheckpointManager(run_dir, cfg.keep_checkpoints)
            video = _video_recorder(cfg, run_dir) if cfg.capture_video else None
        if checkpoint is not None:
            note = agent.resumed(global_step)
            if note and main:
                print(note, file=sys.stderr)

        def save(with_replay: bool, every_rank: bool = True) -> int:
            """Checkpoint the agent as of the step its weights stand for; returns that step.

            ``every_rank``: a point all ranks reach together (an update), where rank 0 gathers
            every rank's RNG streams. A stop saves rank 0's alone, waiting on no other rank."""
            at_step = agent.learned_step(global_step)
            rngs = dist.gather_objects(rng_state()) if every_rank and dist.active else None
            if main:
                state = agent.state_dict()
                if not with_replay:
                    state.pop("replay", None)
                extra = {"world_size": dist.world_size, "frame_stack": envs.frame_stack,
                         **({"rng_ranks": rngs} if rngs else {})}
                checkpoints.save(make_payload(
                    cfg.algo, cfg.env, asdict(algo_cfg), asdict(cfg), envs.obs_shape, envs.num_actions,
                    at_step, state, extra=extra,
                ))
            return at_step

        progress = _progress_bar(cfg, global_step, rank)
        if progress is not None:
            cleanup.callback(progress.close)
        next_checkpoint = (global_step // cfg.checkpoint_interval + 1) * cfg.checkpoint_interval
        last_save_time = time.monotonic()
        steps_at_last_log, time_at_last_log = global_step, time.time()
        pending_episodes: list[dict] = []  # under torchrun: this rank's games, gathered at updates
        overlap = cfg.overlap and agent.off_policy
        for group in groups:
            group.obs = group.envs.reset(seed=seed + group.rows.start)
        # What the envs report with their first observations (labels, advice), None when off.
        agent.observe_first(torch.cat([group.obs for group in groups]),
                            *(_joined([getattr(group.envs, name) for group in groups]) for name in ("labels", "advice")))

        def start_steps() -> None:
            """Act for every group that has no step in flight and may act (an on-policy agent
            makes a group whose part of the rollout is full wait for the update), and start its
            step: the envs run it while the loop goes on with the other group, or the update."""
            for waiting in groups:
                if waiting.action is None and global_step < cfg.total_steps and agent.can_act(waiting.rows):
                    waiting.action = agent.act(waiting.obs, global_step, waiting.rows)
                    waiting.envs.step_async(waiting.action)

        turn = 0
        try:
            with _stop_signals_as_interrupts():
                start_steps()
                while global_step < cfg.total_steps:
                    group = groups[turn]  # the groups take turns; with one group, always it
                    turn = (turn + 1) % len(groups)
                    next_step = global_step + steps_per_iteration
                    # While the envs step, an off-policy learner takes its gradient steps on the
                    # replay as it stood before this transition (the replay ratio is unchanged).
                    trained = agent.update(next_step) if overlap and agent.ready(next_step) else None
                    result = group.envs.step_wait()
                    # One step: the agent's storage and the step count move together, so that a
                    # checkpoint saved on a stop between them cannot claim a step it did not learn.
                    with _STOPS.deferred():
                        agent.observe(group.obs, group.action, result, group.rows)
                        group.obs, group.action = result.obs, None
                        global_step = next_step
                    if group.rows.start:  # a group's env numbers, as rows of all the envs
                        for episode in result.episodes:
                            episode["env"] += group.rows.start
                    if result.episodes:
                        if dist.active:
                            pending_episodes += [{"global_step": global_step, "rank": rank, **e} for e in result.episodes]
                        elif logger:
                            logger.log_episodes(result.episodes, global_step)
                    if not overlap and agent.ready(global_step):
                        trained = agent.update(global_step)
                    if trained is not None:
                        metrics = dist.mean(trained)
                        now = time.time()
                        metrics["charts/steps_per_second"] = (global_step - steps_at_last_log) / max(now - time_at_last_log, 1e-9)
                        steps_at_last_log, time_at_last_log = global_step, now
                        if dist.active:
                            gathered = dist.gather_objects(pending_episodes)
                            pending_episodes = []
                            if logger:
                                episodes = sorted((e for part in gathered for e in part), key=lambda e: e["global_step"])
                                logger.log_episodes(episodes, global_step)
                        if logger:
                            logger.log_metrics(metrics, global_step)
                        # Rank 0 decides when to save and stop (its clock, its episode log); the
                        # others follow, so every rank reaches the same collectives.
                        on_schedule = global_step >= next_checkpoint
                        decision = (False, False, False)
                        if main:
                            overdue = bool(cfg.checkpoint_seconds) and time.monotonic() - last_save_time >= cfg.checkpoint_seconds
                            told = should_stop is not None and should_stop(global_step, logger.mean_recent_return)
                            decision = (on_schedule or overdue, logger.solved(cfg.stop_return), bool(told))
                        save_now, solved, told_to_stop = dist.broadcast_object(decision)
                        if save_now:
                            save(with_replay=on_schedule)
                            last_save_time = time.monotonic()
                            next_checkpoint = (global_step // cfg.checkpoint_interval + 1) * cfg.checkpoint_interval
                        if solved or told_to_stop:
                            if main and solved:
                                print(f"\nmean return of the last 20 episodes reached {cfg.stop_return:g}; stopping",
                                      file=sys.stderr)
                            break
                    start_steps()
                    if video is not None:
                        video.maybe_record(agent, global_step)
                    if progress is not None:
                        progress.update(steps_per_iteration)
                        if result.episodes and logger:
                            progress.set_postfix(mean_return=f"{logger.mean_recent_return:.2f}", refresh=False)
        except KeyboardInterrupt as stop:
            saved_at = save(with_replay=True, every_rank=False)
            what = f"stopped by {stop}" if isinstance(stop, Stopped) else "interrupted"
            if main:
                print(f"\n{what} at step {global_step}; checkpoint saved at step {saved_at}; continue with "
                      f"`python train.py --resume {run_dir}`", file=sys.stderr)
            raise
        except (EnvError, DistributedError) as error:
            # An emulator crashed, or another rank vanished: keep what was learned, say how to go on.
            saved_at = save(with_replay=True, every_rank=False)
            where = f" (rank {rank})" if dist.active else ""
            raise type(error)(f"{error}{where} at step {global_step}; checkpoint saved at step {saved_at}, continue "
                              f"with `python train.py --resume {run_dir}`") from error
        save(with_replay=True)
        _check_ranks_agree(dist, agent)
        mean = logger.mean_recent_return if logger else float("nan")
        episodes = len(logger.recent_returns) if logger else 0
    if main:
        print(f"done: {global_step} steps, mean return of the last {episodes} episodes {mean:.2f}; run in {run_dir}")
        print(f"next: watch it    python -m pixelplay.eval watch {run_dir}\n"
              f"      score it    python -m pixelplay.eval score {run_dir}\n"
              f"      plot it     python -m pixelplay.eval plot {run_dir}\n"
              f"      report it   python -m pixelplay.eval report {run_dir}   # one page: curves, scores, video, config\n"
              f"      go on       python train.py --resume {run_dir} --total-steps {2 * cfg.total_steps}")
    return run_dir


def _check_ranks_agree(dist: Distributed, agent: Any) -> None:
    """At the end of a torchrun job, every rank must hold the same weights (a hash of each)."""
    if not dist.active:
        return
    weights = {k: v for k, v in agent.state_dict().items() if k != "optimizer"}
    hashes = dist.gather_objects(state_hash(weights))
    if dist.is_main:
        if len(set(hashes)) != 1:
            raise DistributedError(f"the ranks ended with different weights: hashes {hashes}")
        print(f"weights identical on all {dist.world_size} ranks (hash {hashes[0]})")


class _StopSignals:
    """Ctrl-C, SIGTERM and SIGHUP as exceptions in the training loop, held back inside `deferred`.

    SIGTERM and SIGHUP raise `Stopped` (a KeyboardInterrupt), so that a stop by a scheduler saves
    a checkpoint exactly as Ctrl-C does. Inside ``deferred()`` a signal is only noted and raised
    when the block ends: the loop's step (the agent's storage, then the step count) is never left
    half done by a stop, so the checkpoint the stop saves is labelled with the step it learned
    from. (Masking the signals would not do: the kernel hands a process's signal to any thread
    that does not mask it, and torch and the loggers run threads of their own.)"""

    def __init__(self) -> None:
        self.deferring = False
        self.pending: int | None = None

    def handler(self, signum, frame) -> None:
        if self.deferring:
            self.pending = self.pending or signum
            return
        raise KeyboardInterrupt() if signum == signal.SIGINT else Stopped(signum)

    @contextlib.contextmanager
    def deferred(self):
        self.deferring = True
        try:
            yield
        finally:  # a block that raised leaves no stale stop behind for the next one
            self.deferring = False
            signum, self.pending = self.pending, None
        if signum is not None:
            self.handler(signum, None)


_STOPS = _StopSignals()


@contextlib.contextmanager
def _stop_signals_as_interrupts():
    """Install `_STOPS`' handler for SIGTERM, SIGHUP and Ctrl-C (Ctrl-C only where Python's own
    handler has it: a shell's background job ignores it, and goes on ignoring it). Restored on the
    way out."""
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signum == signal.SIGINT and signal.getsignal(signum) is not signal.default_int_handler:
            continue
        try:
            previous[signum] = signal.signal(signum, _STOPS.handler)
        except ValueError:  # not the main thread: leave the signals alone
            pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _progress_bar(cfg: RunConfig, start: int, rank: int):
    if not cfg.progress or rank != 0:
        return None
    from tqdm import tqdm

    # Redraw at most every 0.5 s on a terminal, every 30 s into a log file.
    return tqdm(total=cfg.total_steps, initial=start, unit="step", unit_scale=True, dynamic_ncols=True,
                desc=f"{cfg.algo} {cfg.env}", smoothing=0.05, mininterval=0.5 if sys.stderr.isatty() else 30)


def _video_recorder(cfg: RunConfig, run_dir: Path):
    from pixelplay.eval.record import PeriodicRecorder

    return PeriodicRecorder(cfg.env, run_dir / "videos", every=cfg.video_every, seed=cfg.seed,
                            frame_stack=cfg.frame_stack or None)


def exit_status(command: Callable[[], object]) -> int:
    """Run a command-line job and turn how it ended into the process's exit status.

    Shared by train.py and tune.py: a clear error (bad input, a corrupt checkpoint) prints one
    line and exits 2; a stop exits as the shell reports a signal's death, 128 + its number (130
    for Ctrl-C), after the job has saved what it had.
    """
    try:
        command()
    except PixelplayError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Stopped as stop:
        return 128 + stop.signum
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    def run() -> None:
        run_cfg, algo_cfg, other = resolve_config(argv)
        train(run_cfg, algo_cfg, resuming="resume" in other)

    return exit_status(run)
