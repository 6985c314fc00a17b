"""``python -m pixelplay.eval export RUN_OR_CHECKPOINT OUT_DIR``: a trained agent as a small folder.

``OUT_DIR/agent.pt`` is a weights-only checkpoint (`weights_only_payload`: the networks evaluation
needs, no optimizer, replay, RNG, run config or DQN target net), readable with
``torch.load(weights_only=True)``; ``OUT_DIR/config.json`` is the run's configuration;
``OUT_DIR/README.md`` says how it was trained (the ``python train.py`` line rebuilt from that
configuration), for how many steps and how it ended (the mean return of its last 20 episodes, from
``episodes.csv`` where the run has one). Every eval command takes the folder (or its ``agent.pt``);
``train.py --resume`` refuses it.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pixelplay.agents.checkpoint import (
    WEIGHTS_FILE,
    CheckpointError,
    atomic_torch_save,
    atomic_write_text,
    load_checkpoint,
    weights_only_payload,
)
from pixelplay.envs.errors import PixelplayError

RECENT_EPISODES = 20
"""The window of train.py's mean return (its --stop-return and progress line)."""


@dataclass
class Exported:
    """What `export` wrote."""

    folder: Path
    agent: Path
    config: Path
    readme: Path
    train_command: str
    global_step: int
    final_mean_return: float | None
    episodes: int

    def sizes(self) -> dict[str, int]:
        return {path.name: path.stat().st_size for path in (self.agent, self.config, self.readme)}


def run_directory_of(checkpoint_path: Path) -> Path | None:
    """The run (or exported) directory a checkpoint belongs to: the folder holding its config.json."""
    for folder in (checkpoint_path.parent, checkpoint_path.parent.parent):
        if (folder / "config.json").is_file():
            return folder
    return None


def export(source: str | Path, out_dir: str | Path) -> Exported:
    """Export the agent of ``source`` (a run directory, a checkpoint file, an exported folder or a
    zoo name) to ``out_dir`` (created; its agent.pt, config.json and README.md are replaced)."""
    from pixelplay.agents import weights_only_state

    checkpoint = load_checkpoint(source)
    path = Path(checkpoint["path"])
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PixelplayError(f"export: '{out}' exists and is not a directory")
    if (out / "checkpoints").exists() or (out / "episodes.csv").exists():
        raise PixelplayError(f"export: '{out}' is a run directory; export into a folder of its own")
    run_dir = run_directory_of(path)
    config = _run_config(checkpoint, run_dir)
    payload = weights_only_payload(checkpoint, weights_only_state(checkpoint["algo"], checkpoint["agent"]))
    out.mkdir(parents=True, exist_ok=True)
    agent_path = atomic_torch_save(payload, out / WEIGHTS_FILE)
    config_path = atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
    command = train_command(config)
    returns = _episode_returns(run_dir) if run_dir is not None else []
    final = float(sum(returns[-RECENT_EPISODES:]) / len(returns[-RECENT_EPISODES:])) if returns else None
    result = Exported(out, agent_path, config_path, out / "README.md", command, int(checkpoint["global_step"]),
                      final, len(returns))
    origin = (f"its run's `{path.relative_to(run_dir)}`" if run_dir is not None and path.is_relative_to(run_dir)
              else f"`{path.name}`")
    readme = render_readme(result, checkpoint, source=origin, wall_time=_last_wall_time(run_dir))
    atomic_write_text(result.readme, readme)
    return result


def _run_config(checkpoint: dict, run_dir: Path | None) -> dict:
    """The run's config.json; for a checkpoint outside any run, rebuilt from what it carries."""
    if run_dir is not None:
        try:
            data = json.loads((run_dir / "config.json").read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise PixelplayError(f"export: cannot read '{run_dir / 'config.json'}': {error}") from None
        if isinstance(data, dict) and isinstance(data.get("run"), dict):
            return data
    run = dict(checkpoint.get("run_config") or {})
    run.setdefault("algo", checkpoint["algo"])
    run.setdefault("env", checkpoint["env_id"])
    return {"run": run, "algo": dict(checkpoint["algo_config"])}


def _episode_returns(run_dir: Path) -> list[float]:
    path = run_dir / "episodes.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    returns = []
    for row in rows:
        try:
            returns.append(float(row["return"]))
        except (KeyError, TypeError, ValueError):
            continue
    return returns


def _last_wall_time(run_dir: Path | None) -> float | None:
    if run_dir is None or not (run_dir / "episodes.csv").is_file():
        return None
    with open(run_dir / "episodes.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    try:
        return float(rows[-1]["wall_time"]) if rows else None
    except (KeyError, TypeError, ValueError):
        return None


# ---- the training command, rebuilt from a config ------------------------------------------------

SKIPPED_RUN_OPTIONS = ("algo", "env", "seed", "run_dir")
"""Run options the rebuilt command states first (algo, env, seed) or leaves out (run_dir: a path
of the machine it ran on)."""


def _flag_value(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    if isinstance(value, (tuple, list)):
        return ",".join(_flag_value(v) for v in value)
    if value is None:
        return "none"
    return str(value)


def _flags(values: dict, base: dict, names: list[str]) -> list[str]:
    words = []
    for name in names:
        if name not in values or _same(values[name], base.get(name)):
            continue
        flag = "--" + name.replace("_", "-")
        value = values[name]
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            words += [flag, _flag_value(value)]
    return words


def _same(a: Any, b: Any) -> bool:
    """Equal as they would be in config.json (a tuple option is a list there)."""
    return (list(a) == list(b)) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b


def train_command(config: dict) -> str:
    """The ``python train.py`` line that trains a run of this configuration: the algorithm, env
    and seed, then every option whose value differs from what that line's defaults and preset
    give (so the line reproduces the configuration, run_dir aside)."""
    from pixelplay.agents import ALGOS
    from pixelplay.agents.run_config import RunConfig, resolve_config

    run, algo_values = dict(config.get("run", {})), dict(config.get("algo", {}))
    algo, env, seed = run.get("algo", "ppo"), run.get("env", "doom-basic"), run.get("seed", 1)
    head = ["python", "train.py", "--algo", str(algo), "--env", str(env), "--seed", str(seed)]
    try:
        base_run, base_algo, _ = resolve_config(["--algo", str(algo), "--env", str(env)])
    except (PixelplayError, SystemExit):
        return shlex.join(head) + "  # then the options of config.json (python train.py --config config.json)"
    run_names = [f.name for f in fields(RunConfig) if f.name not in SKIPPED_RUN_OPTIONS]
    algo_names = [f.name for f in fields(ALGOS[algo].config)] if algo in ALGOS else []
    words = head + _flags(run, asdict(base_run), run_names) + _flags(algo_values, asdict(base_algo), algo_names)
    return shlex.join(words)


# ---- the README ---------------------------------------------------------------------------------


def render_readme(result: Exported, checkpoint: dict, *, source: str, wall_time: float | None) -> str:
    name = result.folder.name
    algo, env = checkpoint["algo"], checkpoint["env_id"]
    lines = [
        f"# {name}: {algo.upper()} on {env}",
        "",
        f"A weights-only {algo} agent for `{env}` (observations {tuple(checkpoint['obs_shape'])}, "
        f"{checkpoint['num_actions']} actions), exported with `python -m pixelplay.eval export` from {source}.",
        "",
        "## Training",
        "",
        "```bash",
        result.train_command,
        "```",
        "",
        f"- env steps: {result.global_step:,}",
    ]
    if result.final_mean_return is not None:
        window = min(RECENT_EPISODES, result.episodes)
        lines.append(f"- final mean return (last {window} training episodes of {result.episodes:,}, "
                     f"exploring as it trained): {result.final_mean_return:.1f}")
    else:
        lines.append("- final mean return: unknown (the run's episodes.csv was not found)")
    if wall_time is not None:
        lines.append(f"- training wall time: {wall_time:.0f} s (episodes.csv's last row, since the run's last start)")
    lines += [
        "- `config.json`: the run's configuration (`python train.py --config config.json` trains it again)",
        "",
        "## Use",
        "",
        "```bash",
        f"python -m pixelplay.eval score {_use_target(result.folder)} --episodes 20",
        f"python -m pixelplay.eval record {_use_target(result.folder)}",
        "```",
        "",
        "`agent.pt` holds the networks only (no optimizer, replay or RNG state): it evaluates anywhere, "
        "but `train.py --resume` needs the run's full checkpoint.",
        "",
    ]
    return "\n".join(lines)


def _use_target(folder: Path) -> str:
    from pixelplay.zoo import ZOO_DIR

    try:
        folder.resolve().relative_to(ZOO_DIR)
    except ValueError:
        return shlex.quote(str(folder))
    return folder.name


def describe(result: Exported) -> str:
    """The lines the export command prints."""
    sizes = result.sizes()
    lines = [f"wrote {result.folder}/: " + ", ".join(f"{name} ({_size(n)})" for name, n in sizes.items())]
    lines.append(f"trained with: {result.train_command}")
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


__all__ = ["CheckpointError", "Exported", "export", "describe", "train_command", "render_readme"]
