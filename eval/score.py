"""Scoring an agent with the standard protocol, beside the published references.

Atari (Mnih et al. 2015; Machado et al. 2018, "Revisiting the ALE"): full games (all lives, no
life-loss episode ends), up to 30 no-op actions at the start of each game, games cut at 108,000
frames, raw unclipped score, sticky actions off or on as asked (and said). DQN agents act
epsilon-greedily with a stated epsilon (0.05 in the Nature paper); PPO and A2C sample from their
policy. The report gives mean, std, median, min and max over N games, and the human-normalised
score (agent - random) / (human - random) with the references of `eval.baselines` beside it.
ViZDoom scenarios are scored the same way on their evaluation episodes (raw scenario reward).

With several envs in parallel, the first N games to finish would favour short games; instead
env i plays a fixed quota of games (N split evenly) and only those count.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixelplay.agents.config import bounded
from pixelplay.envs import EnvSpec, env_spec, make_vec_env
from pixelplay.envs.atari import MAX_EPISODE_FRAMES
from pixelplay.envs.errors import PixelplayError
from pixelplay.envs.spec import ATARI
from pixelplay.eval import baselines
from pixelplay.eval.common import atomic_write_json, atomic_write_text
from pixelplay.eval.policies import PolicySpec, build_env_policy


@dataclass
class ScoreConfig:
    """The evaluation protocol of `python -m pixelplay.eval score`."""

    episodes: int = bounded(10, low=1)
    """full games (episodes) to average over"""
    num_envs: int = bounded(0, low=0)
    """games played in parallel (0: min(episodes, 4))"""
    seed: int = bounded(1, low=0, high=2**31 - 1_000_000)
    """base seed; env i is seeded with seed + i"""
    max_frames: int = bounded(MAX_EPISODE_FRAMES, low=4)
    """Atari: emulator frames per game before it is cut (108,000 = 30 minutes, the standard cap)"""
    noop_max: int = bounded(30, low=0)
    """Atari: up to this many no-op actions at the start of each game"""
    sticky_actions: bool = False
    """Atari: repeat the previous action with probability 0.25 (Machado et al. 2018); off as in the DQN papers"""
    epsilon: float | None = bounded(None, low=0.0, high=1.0)
    """DQN: evaluation epsilon (None: the checkpoint's eval_epsilon, 0.05 by default as in Mnih et al. 2015)"""
    backend: str = bounded("auto", choices=("auto", "gymnasium", "envpool"))
    """Atari env backend: auto, gymnasium or envpool"""
    device: str = "cpu"
    """torch device"""

    def validate(self) -> None:
        if self.episodes < 1:
            raise PixelplayError(f"--episodes must be at least 1, got {self.episodes}")
        if self.num_envs < 0:
            raise PixelplayError(f"--num-envs must be >= 0, got {self.num_envs}")
        if self.max_frames < 4:
            raise PixelplayError(f"--max-frames must be at least 4, got {self.max_frames}")
        if self.noop_max < 0:
            raise PixelplayError(f"--noop-max must be >= 0, got {self.noop_max}")


def env_options(family: str, cfg: ScoreConfig) -> dict[str, Any]:
    """The options of ``make_vec_env`` for this protocol (Atari's; a Doom scenario takes none)."""
    if family == ATARI:
        return {
            "backend": cfg.backend,
            "sticky_actions": cfg.sticky_actions,
            "noop_max": cfg.noop_max,
            "max_episode_frames": cfg.max_frames,
        }
    return {}


def play_games(spec: PolicySpec, env_id: str, cfg: ScoreConfig, log=print) -> tuple[list[dict[str, Any]], EnvSpec]:
    """Play ``cfg.episodes`` full games; return their records, in (env, game) order, and the
    `EnvSpec` of the env they were played on."""
    cfg.validate()
    num_envs = cfg.num_envs or min(cfg.episodes, 4)
    num_envs = min(num_envs, cfg.episodes)
    quotas = [cfg.episodes // num_envs + (1 if i < cfg.episodes % num_envs else 0) for i in range(num_envs)]
    family = env_spec(env_id, training=False).family
    envs = make_vec_env(env_id, num_envs, cfg.seed, cfg.device, training=False, **env_options(family, cfg),
                        **spec.env_options())
    try:
        policy = build_env_policy(spec, envs.spec, envs.obs_shape, cfg.seed)
        games: list[list[dict[str, Any]]] = [[] for _ in range(num_envs)]
        obs = envs.reset(seed=cfg.seed)
        first = np.ones(num_envs, dtype=bool)  # rows whose episode starts with obs (a recurrent agent resets)
        steps = 0
        started = time.monotonic()
        while any(len(g) < q for g, q in zip(games, quotas, strict=True)):
            actions = policy.act(obs, first)
            result = envs.step(actions)
            obs = result.obs
            first = (result.terminated | result.truncated).cpu().numpy()
            steps += num_envs
            for record in result.episodes:
                i = record["env"]
                if len(games[i]) < quotas[i]:
                    games[i].append(record)
                    done = sum(len(g) for g in games)
                    log(f"game {done}/{cfg.episodes}: return {record['return']:g}, {record['length']} steps "
                        f"({time.monotonic() - started:.0f} s)")
    finally:
        envs.close()
    return [record for env_games in games for record in env_games], envs.spec


def summarize(returns: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(returns),
        "std": statistics.pstdev(returns),
        "median": statistics.median(returns),
        "min": min(returns),
        "max": max(returns),
        "n": len(returns),
    }


def score(spec: PolicySpec, env_id: str, cfg: ScoreConfig, policy_info: dict[str, Any] | None = None,
          log=print) -> dict[str, Any]:
    """Play the games and build the report (a JSON-ready dict)."""
    started = time.monotonic()
    games, env = play_games(spec, env_id, cfg, log)
    returns = [float(g["return"]) for g in games]
    stats = summarize(returns)
    report: dict[str, Any] = {
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "env": env_id,
        "policy": spec.label,
        "greedy": spec.greedy,
        **(policy_info or {}),
        "config": asdict(cfg),
        "protocol": protocol(env, cfg, policy_info or {}),
        "score": stats,
        "games": games,
        "wall_time_s": round(time.monotonic() - started, 1),
    }
    if env.family == ATARI:
        game = baselines.atari_references(env_id)
        report["game"] = baselines.atari_game_name(env_id)
        if game is not None:
            report["human_normalized"] = {
                "mean": baselines.human_normalized(stats["mean"], game.random.score, game.human.score),
                "median": baselines.human_normalized(stats["median"], game.random.score, game.human.score),
                "random": game.random.score,
                "human": game.human.score,
                "formula": "(score - random) / (human - random)",
            }
            report["references"] = {
                "random": asdict(game.random),
                "human": asdict(game.human),
                **{name: asdict(ref) for name, ref in game.others.items()},
            }
    return report


def protocol(env: EnvSpec, cfg: ScoreConfig, policy_info: dict[str, Any]) -> list[str]:
    """The protocol in words, one line per point, for the report (``env``: what was played)."""
    lines = []
    if env.family == ATARI:
        lines.append(
            f"full games (all lives, no life-loss episode ends), raw unclipped score, 1-{cfg.noop_max} no-op starts, "
            f"games cut at {cfg.max_frames:,} frames ({env.max_eval_steps:,} agent steps at frame skip {env.frame_skip})"
        )
        lines.append(
            "sticky actions ON (repeat_action_probability 0.25)" if cfg.sticky_actions
            else "sticky actions OFF (repeat_action_probability 0), as in the DQN papers' no-op protocol"
        )
    else:
        lines.append("ViZDoom evaluation episodes (training=False): raw scenario reward, the scenario's evaluation timeout")
    action = policy_info.get("action_selection")
    if action:
        lines.append(action)
    lines.append(f"{cfg.episodes} games over {cfg.num_envs or min(cfg.episodes, 4)} env(s), each env a fixed quota, seed {cfg.seed}")
    return lines


def _fmt(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "-"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def render_markdown(report: dict[str, Any]) -> str:
    s = report["score"]
    lines = [f"# Score: {report['env']}", "", f"Policy: {report['policy']}.", ""]
    lines += ["| games | mean | std | median | min | max |", "|---:|---:|---:|---:|---:|---:|"]
    lines.append(f"| {s['n']} | {_fmt(s['mean'])} | {_fmt(s['std'])} | {_fmt(s['median'])} | {_fmt(s['min'])} | {_fmt(s['max'])} |")
    if "human_normalized" in report:
        hn = report["human_normalized"]
        lines += ["", f"Human-normalised score: mean {hn['mean']:.3f}, median {hn['median']:.3f} "
                      f"({hn['formula']}, random {hn['random']:g}, human {hn['human']:g})."]
    if "references" in report:
        lines += ["", "| Reference | Score | Source |", "|---|---:|---|"]
        lines.append(f"| this agent | {_fmt(s['mean'])} ± {_fmt(s['std'])} | this run |")
        for name, ref in report["references"].items():
            std = f" ± {ref['std']:g}" if ref.get("std") is not None else ""
            lines.append(f"| {name} | {ref['score']:g}{std} | {ref['source']} |")
    elif "game" in report:  # an Atari game without references
        lines += ["", f"No reference scores recorded for {report.get('game')} in eval/baselines.py."]
    lines += ["", "## Protocol"] + [f"- {line}" for line in report["protocol"]]
    lines.append(f"- wall time: {report['wall_time_s']} s")
    return "\n".join(lines) + "\n"


def file_stem(report: dict[str, Any]) -> str:
    """``score_<env>_<N>games_seed<S>``, then whatever else of the protocol differs from the defaults.

    One file per protocol: scoring a run again on a larger sample or other seeds keeps the
    earlier figures beside the new ones, and the same protocol again replaces only its own file.
    """
    cfg, defaults = report["config"], ScoreConfig()
    parts = [f"score_{report['env'].replace('/', '-')}", f"{cfg['episodes']}games", f"seed{cfg['seed']}"]
    if cfg["num_envs"]:  # the quota of games per env, and so which games are played
        parts.append(f"{cfg['num_envs']}envs")
    if cfg["epsilon"] is not None:
        parts.append(f"eps{cfg['epsilon']:g}")
    if report.get("greedy"):
        parts.append("greedy")
    if cfg["sticky_actions"]:
        parts.append("sticky")
    if cfg["noop_max"] != defaults.noop_max:
        parts.append(f"noop{cfg['noop_max']}")
    if cfg["max_frames"] != defaults.max_frames:
        parts.append(f"{cfg['max_frames']}frames")
    return "_".join(parts)


def write_outputs(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write the report as JSON and Markdown under `file_stem`'s name in ``out_dir``."""
    stem = file_stem(report)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    atomic_write_json(json_path, report)
    atomic_write_text(md_path, render_markdown(report))
    return json_path, md_path
