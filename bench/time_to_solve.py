"""Time to solve: wall time and env steps until a ViZDoom scenario is learned, pixelplay against the
peers a user would pick, side by side in one run.

    python bench/time_to_solve.py                                   # both scenarios, all three sides
    python bench/time_to_solve.py --envs doom-basic --only pixelplay,sb3 --max-minutes 10
    python bench/time_to_solve.py --sf-python /path/to/venv/bin/python

Targets, on the raw scenario return (no reward scaling) averaged over the last ``N = 20`` finished
episodes (train.py's ``--stop-return`` window): ``doom-basic`` 75, ``doom-defend-the-center`` 8.

* pixelplay: ``python train.py --env ENV --stop-return TARGET`` with the env's PPO preset
  (`pixelplay.agents.PRESETS`: envs, rollout, epochs, learning rate, total steps);
* Stable-Baselines3 PPO on ViZDoom's own gymnasium envs (``vizdoom.gymnasium_wrapper``,
  ``VizdoomBasic-v1`` / ``VizdoomDefendCenter-v1``) behind `SameFrames`, a wrapper that gives it
  what pixelplay's `envs.doom.DoomEnv` gives: the scenario's frame size and grey frames (the
  engine renders 160x120 GRAY8, INTER_AREA resize), 4 stacked frames, frame skip 4, pixelplay's
  action set (`envs.scenarios.SCENARIOS`), its training reward scale, and a timeout reported as a
  truncation only (ViZDoom's wrapper sets both ``terminated`` and ``truncated`` then, so SB3 would
  not bootstrap). Same hyperparameters (pixelplay's preset, translated field by field in
  `sb3_ppo_kwargs`), same env count;
* Sample Factory 2 (APPO) with its own ``doom_basic`` / ``doom_defend_the_center`` settings
  (sf_examples/vizdoom: its action sets, 128x72 RGB frames, reward scale, default workers = the
  cores) and ``--stats_avg 20``; its 5-second reports ("Samples", "Avg episode reward", which is
  scaled: divided back by its reward scale, 0.01 for doom_basic, and which averages fewer episodes
  until 20 have ended) give the crossing. It needs its own
  virtual environment (it pins gymnasium < 1.0 and numpy < 2.0): ``--sf-python PATH`` names its
  interpreter; without it the bench uses ``--sf-venv`` (default ``~/.cache/pixelplay/sample-factory``)
  and creates it there when missing: ``python -m venv DIR && DIR/bin/pip install
  sample-factory==2.1.1 vizdoom==1.2.4`` (a few minutes, once).

Each side is its own process, launched by the bench and timed from its launch (its start-up
counts, as a user waits for it) to the line in which it reports the crossing: pixelplay checks
after each update, SB3 after each rollout's update, Sample Factory every 5 seconds. Env steps are
agent steps (frame skip 4: one step is 4 game tics) over all envs when the crossing is reported.
A side that has not crossed after ``--max-minutes`` is stopped (SIGTERM) and reported with its
last mean. The table ends with the ratios peer / pixelplay. A benchmark, not a test: run it on an
otherwise idle machine, and give every side the same cores.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import cv2
import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 20
"""Episodes averaged for the target: train.py's --stop-return window (RunLogger.recent_returns)."""
SIDES = ("pixelplay", "sb3", "sf")
SF_VERSIONS = ("sample-factory==2.1.1", "vizdoom==1.2.4")
"""Sample Factory 2's last release and the ViZDoom it installs with (gymnasium < 1.0, numpy < 2.0)."""


class Target(NamedTuple):
    mean_return: float
    """the raw return the last WINDOW episodes must average"""
    vizdoom_id: str
    """ViZDoom's own gymnasium id (vizdoom/gymnasium_wrapper/__init__.py)"""
    sf_env: str
    """Sample Factory's env name (sf_examples/vizdoom/doom/doom_utils.py, DOOM_ENVS)"""
    sf_reward_scale: float
    """the reward scaling of that DoomSpec, which its reported episode reward includes"""


TARGETS: dict[str, Target] = {
    "doom-basic": Target(75.0, "VizdoomBasic-v1", "doom_basic", 0.01),
    "doom-defend-the-center": Target(8.0, "VizdoomDefendCenter-v1", "doom_defend_the_center", 1.0),
}


class Outcome(NamedTuple):
    side: str
    env: str
    reached: bool
    seconds: float
    """from launch to the crossing's report (or to the stop, when not reached)"""
    steps: int | None
    """env steps when the crossing was reported (or at the stop)"""
    mean: float
    """the last reported mean raw return of WINDOW episodes"""
    note: str = ""


# ---------------------------------------------------------------------------------------------
# The SB3 side's env: ViZDoom's gymnasium env, seen as pixelplay's DoomEnv sees its game.


def make_same_frames_env(env_id: str, seed: int) -> SameFrames:
    """ViZDoom's own gymnasium env for ``env_id`` behind `SameFrames` (for SB3's vector envs)."""
    import vizdoom.gymnasium_wrapper  # noqa: F401  (registers the Vizdoom*-v1 ids)

    from pixelplay.envs import env_spec
    from pixelplay.envs.scenarios import SCENARIOS

    scenario = SCENARIOS[env_spec(env_id).target]
    env = gym.make(TARGETS[env_id].vizdoom_id, frame_skip=scenario.frame_skip,
                   max_buttons_pressed=max(len(a) for a in scenario.actions),
                   screen_resolution=scenario.screen_resolution, screen_format="GRAY8" if scenario.grey else "RGB24")
    return SameFrames(env, scenario, seed)


class SameFrames(gym.Wrapper):
    """ViZDoom's gymnasium env as pixelplay's `DoomEnv` plays the scenario: uint8 (C, H, W) stacks
    of ``frame_stack`` frames (oldest first), resized with INTER_AREA to the scenario's
    ``obs_size``, grey as the scenario asks; the scenario's discrete action set mapped onto the
    wrapper's button combinations; ``reward_scale`` times the reward (the scenario's training
    reward: the two scenarios here have no shaping); a timeout is a truncation, not a termination;
    the last step of an episode repeats the last frames (ViZDoom has no screen then, its wrapper
    returns zeros). The raw return of a finished episode is in ``info["raw_return"]``."""

    def __init__(self, env: gym.Env, scenario, seed: int | None = None):
        super().__init__(env)
        shaping = (scenario.health_reward, scenario.health_loss_reward, scenario.death_reward, scenario.object_reward,
                   scenario.hit_reward, scenario.damage_reward)
        if any(shaping) or scenario.reward_source != "game":
            raise ValueError(f"SameFrames gives the scaled game reward only; '{scenario.config}' shapes it")
        self.scenario, self._seed = scenario, seed
        names = [b.name for b in env.unwrapped.game.get_available_buttons()]
        combos = [tuple(int(x) for x in row) for row in env.unwrapped.button_map]
        self._actions = []
        for action in scenario.actions:
            missing = set(action) - set(names)
            if missing:
                raise ValueError(f"{scenario.config}: buttons {sorted(missing)} are not among ViZDoom's {names}")
            self._actions.append(combos.index(tuple(int(name in action) for name in names)))
        self._channels = 1 if scenario.grey else 3
        h, w = scenario.obs_size
        self._stack = np.zeros((self._channels * scenario.frame_stack, h, w), np.uint8)
        self.observation_space = gym.spaces.Box(0, 255, self._stack.shape, np.uint8)
        self.action_space = gym.spaces.Discrete(len(self._actions))
        self._raw_return = 0.0

    def _push(self, screen: np.ndarray) -> None:
        h, w = self.scenario.obs_size
        if screen.shape[:2] != (h, w):
            screen = cv2.resize(screen, (w, h), interpolation=cv2.INTER_AREA)
        c = self._channels
        self._stack[:-c] = self._stack[c:]
        self._stack[-c:] = screen.reshape(h, w, c).transpose(2, 0, 1)

    def reset(self, *, seed=None, options=None):
        if seed is None and self._seed is not None:  # the first reset takes the env's own seed
            seed, self._seed = self._seed, None
        obs, info = self.env.reset(seed=seed, options=options)
        self._push(obs["screen"])
        c = self._channels
        self._stack[:] = np.concatenate([self._stack[-c:]] * self.scenario.frame_stack)
        self._raw_return = 0.0
        return self._stack.copy(), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(self._actions[int(action)])
        self._raw_return += float(reward)
        terminated = bool(terminated) and not truncated  # a time limit, not a death
        if terminated or truncated:
            info = {**info, "raw_return": self._raw_return}
        else:
            self._push(obs["screen"])
        return self._stack.copy(), self.scenario.reward_scale * float(reward), terminated, bool(truncated), info


def sb3_ppo_kwargs(algo_cfg, run_cfg) -> dict:
    """SB3 ``PPO(...)`` keywords for pixelplay's PPO config, field by field."""
    if algo_cfg.memory != "none" or algo_cfg.network != "nature":
        raise SystemExit("error: the SB3 side runs a feed-forward Nature CNN (SB3's NatureCNN); this preset asks "
                         f"for network={algo_cfg.network}, memory={algo_cfg.memory}")
    lr = algo_cfg.learning_rate
    return dict(
        n_steps=algo_cfg.num_steps,
        batch_size=algo_cfg.num_steps * run_cfg.num_envs // algo_cfg.num_minibatches,
        n_epochs=algo_cfg.update_epochs,
        learning_rate=(lambda remaining: remaining * lr) if algo_cfg.anneal_lr else lr,
        gamma=algo_cfg.gamma,
        gae_lambda=algo_cfg.gae_lambda,
        clip_range=algo_cfg.clip_coef,
        clip_range_vf=algo_cfg.clip_coef if algo_cfg.clip_vloss else None,
        normalize_advantage=algo_cfg.norm_adv,
        ent_coef=algo_cfg.ent_coef,
        vf_coef=algo_cfg.vf_coef,
        max_grad_norm=algo_cfg.max_grad_norm,
        policy_kwargs={"optimizer_kwargs": {"eps": algo_cfg.adam_eps},
                       "features_extractor_kwargs": {"features_dim": algo_cfg.features_dim}},
    )


def sb3_worker(env_id: str, seed: int, device: str) -> int:
    """The SB3 side, run as its own process: prints ``progress STEPS MEAN EPISODES`` after each
    update and ``solved STEPS MEAN`` when the last WINDOW raw returns average the target."""
    from collections import deque

    from bounds import preset_config
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import SubprocVecEnv

    run_cfg, algo_cfg = preset_config("ppo", env_id, flags=["--device", device, "--seed", str(seed)])
    target = TARGETS[env_id].mean_return
    fns = [lambda rank=rank: make_same_frames_env(env_id, seed + rank) for rank in range(run_cfg.num_envs)]
    envs = SubprocVecEnv(fns, start_method="fork")

    class Watch(BaseCallback):
        def __init__(self):
            super().__init__()
            self.returns: deque[float] = deque(maxlen=WINDOW)
            self.solved = False

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "raw_return" in info:
                    self.returns.append(info["raw_return"])
            return not self.solved

        def _on_rollout_start(self) -> None:  # after the previous rollout's update
            mean = statistics.fmean(self.returns) if self.returns else math.nan
            print(f"progress {self.num_timesteps} {mean} {len(self.returns)}", flush=True)
            if len(self.returns) == WINDOW and mean >= target:
                self.solved = True
                print(f"solved {self.num_timesteps} {mean}", flush=True)

    model = PPO("CnnPolicy", envs, device=device, seed=seed, verbose=0,
                **sb3_ppo_kwargs(algo_cfg, run_cfg))
    model.learn(total_timesteps=run_cfg.total_steps, callback=Watch())
    envs.close()
    return 0


# ---------------------------------------------------------------------------------------------
# Running a side: a process group of our own, its output lines timestamped as they come.


def run_side(command: list[str], max_seconds: float, on_line, stop_signal: int = signal.SIGTERM) -> tuple[float, bool]:
    """Run ``command`` in a new session; call ``on_line(text, seconds_since_launch)`` for each line
    it prints (stdout and stderr). Stops it when ``on_line`` returns True (solved) or after
    ``max_seconds``: ``stop_signal`` to the process, up to 60 s to exit, then SIGKILL to its group
    (its env workers). Returns (seconds until it ended or was told to stop, whether the time cap
    stopped it)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                               start_new_session=True, cwd=ROOT)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in process.stdout:
            lines.put((line.rstrip("\n"), time.perf_counter() - start))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    stopped_at: float | None = None
    capped = False
    while True:
        try:
            item = lines.get(timeout=0.5)
        except queue.Empty:
            item = ()
        now = time.perf_counter() - start
        if item is None:
            break
        if item and on_line(*item) and stopped_at is None:
            stopped_at = now
            _stop(process, stop_signal)
        if stopped_at is None and now >= max_seconds:
            stopped_at, capped = now, True
            _stop(process, stop_signal)
        # The main process has ended (its workers may still hold the pipe open), or ignores the stop.
        if not item and (process.poll() is not None or (stopped_at is not None and now - stopped_at > 60)):
            break
    _kill_group(process)
    return (stopped_at if stopped_at is not None else time.perf_counter() - start), capped


def _stop(process: subprocess.Popen, signum: int) -> None:
    if process.poll() is None:
        process.send_signal(signum)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL whatever is left of the process group the side started (its env workers)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _mean_of_last(path: Path, column: str = "return") -> tuple[float, int]:
    if not path.exists():
        return math.nan, 0
    with open(path, newline="") as handle:
        returns = [float(row[column]) for row in csv.DictReader(handle)]
    last = returns[-WINDOW:]
    return (statistics.fmean(last) if last else math.nan), len(returns)


def _last_step(path: Path) -> int | None:
    if not path.exists():
        return None
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return int(rows[-1]["global_step"]) if rows else None


def solve_pixelplay(env_id: str, args, work: Path) -> Outcome:
    target = TARGETS[env_id]
    run_dir = work / f"pixelplay-{env_id}"
    command = [sys.executable, str(ROOT / "train.py"), "--env", env_id, "--algo", "ppo", "--seed", str(args.seed),
               "--device", args.device, "--stop-return", str(target.mean_return), "--run-dir", str(run_dir),
               "--no-track", "--no-progress", "--checkpoint-seconds", "0"]
    crossed: list[float] = []
    tail: list[str] = []

    def on_line(text: str, seconds: float) -> bool:
        tail.append(text)
        del tail[:-5]
        if f"episodes reached {target.mean_return:g}" in text:
            crossed.append(seconds)
        return False  # train.py stops itself at the target

    seconds, _ = run_side(command, args.max_minutes * 60, on_line)
    mean, episodes = _mean_of_last(run_dir / "episodes.csv")
    steps = _last_step(run_dir / "metrics.csv")
    if crossed:
        return Outcome("pixelplay", env_id, True, crossed[0], steps, mean)
    note = "" if episodes or steps else "no update logged: " + " | ".join(tail)
    return Outcome("pixelplay", env_id, False, seconds, steps, mean, note)


def solve_sb3(env_id: str, args, work: Path) -> Outcome:
    command = [sys.executable, str(Path(__file__).resolve()), "--sb3-worker", env_id, "--seed", str(args.seed),
               "--device", args.device]
    state = {"steps": None, "mean": math.nan, "solved": None}
    tail: list[str] = []

    def on_line(text: str, seconds: float) -> bool:
        parts = text.split()
        if len(parts) >= 3 and parts[0] in ("progress", "solved"):
            state["steps"], state["mean"] = int(parts[1]), float(parts[2])
            if parts[0] == "solved":
                state["solved"] = seconds
        else:
            tail.append(text)
            del tail[:-5]
        return False  # the worker stops itself at the target

    seconds, _ = run_side(command, args.max_minutes * 60, on_line)
    if state["solved"] is not None:
        return Outcome("sb3", env_id, True, state["solved"], state["steps"], state["mean"])
    note = "" if state["steps"] else "no update reported: " + " | ".join(tail)
    return Outcome("sb3", env_id, False, seconds, state["steps"], state["mean"], note)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SF_SAMPLES = re.compile(r"Samples: (\d+)")
_SF_REWARD = re.compile(r"Avg episode reward: \[\(0, '(-?[0-9.]+(?:e-?\d+)?)'\)\]")


def parse_sf_line(text: str) -> tuple[str, float] | None:
    """What a line of Sample Factory's 5-second report says: ``("samples", env steps collected so
    far)`` from its "Fps is ... Samples: N" line, ``("reward", mean)`` from "Avg episode reward:
    [(0, 'R')]" (the policy's mean over its last --stats_avg episodes, reward-scaled), else None.
    Its console colours (ANSI escapes) are ignored."""
    text = _ANSI.sub("", text)
    if samples := _SF_SAMPLES.search(text):
        return "samples", float(samples.group(1))
    if reward := _SF_REWARD.search(text):
        return "reward", float(reward.group(1))
    return None


def solve_sf(env_id: str, args, work: Path) -> Outcome:
    target = TARGETS[env_id]
    python = sf_python(args)
    command = [python, "-m", "sf_examples.vizdoom.train_vizdoom", f"--env={target.sf_env}", "--algo=APPO",
               f"--experiment={env_id}-s{args.seed}", f"--train_dir={work / 'sf'}", f"--seed={args.seed}",
               f"--device={'gpu' if args.device.startswith('cuda') else 'cpu'}", f"--stats_avg={WINDOW}",
               f"--train_for_seconds={math.ceil(args.max_minutes * 60) + 60}", "--with_wandb=False"]
    state = {"steps": None, "mean": math.nan, "solved": None}
    tail: list[str] = []

    def on_line(text: str, seconds: float) -> bool:
        parsed = parse_sf_line(text)
        if parsed is None:
            tail.append(_ANSI.sub("", text))
            del tail[:-5]
        elif parsed[0] == "samples":
            state["steps"] = int(parsed[1])
        else:
            state["mean"] = parsed[1] / target.sf_reward_scale
            if state["mean"] >= target.mean_return and state["solved"] is None:
                state["solved"] = seconds
                return True
        return False

    # SIGINT: Sample Factory's runner stops its workers on KeyboardInterrupt.
    seconds, _ = run_side(command, args.max_minutes * 60, on_line, stop_signal=signal.SIGINT)
    if state["solved"] is not None:
        return Outcome("sf", env_id, True, state["solved"], state["steps"], state["mean"])
    note = "" if state["steps"] else "no report: " + " | ".join(tail)
    return Outcome("sf", env_id, False, seconds, state["steps"], state["mean"], note)


def sf_python(args) -> str:
    """Sample Factory's interpreter: ``--sf-python``, or the venv at ``--sf-venv``, made when missing."""
    if args.sf_python:
        if not Path(args.sf_python).exists():
            raise SystemExit(f"error: --sf-python {args.sf_python} does not exist")
        return args.sf_python
    venv = Path(args.sf_venv).expanduser()
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"making Sample Factory's virtual environment in {venv} ({', '.join(SF_VERSIONS)}), once ...",
              flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *SF_VERSIONS], check=True)
    return str(python)


# ---------------------------------------------------------------------------------------------


def table(outcomes: list[Outcome]) -> str:
    lines = [f"{'env (target)':<30} {'side':<10} {'reached':>7} {'wall s':>8} {'env steps':>10} "
             f"{'mean of last ' + str(WINDOW):>16}"]
    for o in outcomes:
        target = f"{o.env} ({TARGETS[o.env].mean_return:g})"
        steps = f"{o.steps:,}" if o.steps is not None else "-"
        lines.append(f"{target:<30} {o.side:<10} {'yes' if o.reached else 'no':>7} {o.seconds:8.1f} {steps:>10} "
                     f"{o.mean:16.2f}" + (f"   {o.note}" if o.note else ""))
    for env_id in dict.fromkeys(o.env for o in outcomes):
        ours = next((o for o in outcomes if o.env == env_id and o.side == "pixelplay"), None)
        for peer in (o for o in outcomes if o.env == env_id and o.side != "pixelplay"):
            if ours is None or not (ours.reached and peer.reached):
                lines.append(f"{env_id}: {peer.side} / pixelplay: no ratio (a side did not reach the target)")
            else:
                steps = f", env steps {peer.steps / ours.steps:.2f}x" if peer.steps and ours.steps else ""
                lines.append(f"{env_id}: {peer.side} / pixelplay: wall time {peer.seconds / ours.seconds:.2f}x{steps}")
    return "\n".join(lines)


SOLVERS = {"pixelplay": solve_pixelplay, "sb3": solve_sb3, "sf": solve_sf}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    parser.add_argument("--only", default=",".join(SIDES), help="comma-separated sides: pixelplay, sb3, sf")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="cap per side and env")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for every side")
    parser.add_argument("--sf-python", default="", help="the Python of a venv with sample-factory and vizdoom")
    parser.add_argument("--sf-venv", default="~/.cache/pixelplay/sample-factory",
                        help="where to find, or make, Sample Factory's venv when --sf-python is not given")
    parser.add_argument("--sb3-worker", default="", metavar="ENV", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sb3_worker:
        return sb3_worker(args.sb3_worker, args.seed, args.device)
    envs = [e for e in args.envs.split(",") if e]
    sides = [s for s in args.only.split(",") if s]
    bad = [e for e in envs if e not in TARGETS] + [s for s in sides if s not in SIDES]
    if bad or not envs or not sides or args.max_minutes <= 0:
        print(f"error: unknown or missing --envs / --only ({', '.join(bad) or 'none given'}), or --max-minutes <= 0; "
              f"envs: {', '.join(TARGETS)}; sides: {', '.join(SIDES)}", file=sys.stderr)
        return 2
    print(f"time to solve, seed {args.seed}, {args.device}, {os.cpu_count()} cores, cap {args.max_minutes:g} min per "
          f"side; target: mean raw return of the last {WINDOW} episodes", flush=True)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="time_to_solve_") as tmp:
        for env_id in envs:
            for side in sides:
                outcome = SOLVERS[side](env_id, args, Path(tmp))
                print(f"  {side} on {env_id}: {'reached' if outcome.reached else 'not reached'} after "
                      f"{outcome.seconds:.1f} s, {outcome.steps} steps, mean {outcome.mean:.2f} {outcome.note}",
                      flush=True)
                outcomes.append(outcome)
    print(table(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
