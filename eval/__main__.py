"""The eval command line: ``python -m pixelplay.eval COMMAND ...`` (``python -m pixelplay.eval COMMAND --help``).

Each command's options are typed dataclasses (`TableConfig`, `ScoreConfig` and the small ones
below), each field with its range (`bounded`) and a one-line docstring; the flags are made from
them by the config engine (`pixelplay.agents.config.add_flags`) and the values checked by it
(`build`). Bad input (a missing or corrupt checkpoint, an env the command cannot serve, a flag out
of range) prints one line and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelplay.agents.config import ConfigError, add_flags, bounded, build, field_docs, split_namespace
from pixelplay.envs.errors import PixelplayError
from pixelplay.eval.doom_table import TableConfig
from pixelplay.eval.score import ScoreConfig

EPILOG = """examples:
  python -m pixelplay.eval doom-table runs/doom-deathmatch__ppo__s1__20261129-101500
  python -m pixelplay.eval doom-table --policy random --minutes 1 --matches 2 --bots 2 --out /tmp/table
  python -m pixelplay.eval score runs/breakout__dqn__s1__20261129-101500 --episodes 30 --epsilon 0.05
  python -m pixelplay.eval record runs/breakout__ppo__s1__20261129-101500 --episodes 2
  python -m pixelplay.eval watch runs/doom-basic__ppo__s1__20261129-101500
  python -m pixelplay.eval plot runs/breakout__ppo__s1__* runs/breakout__dqn__s1__*
  python -m pixelplay.eval report runs/doom-basic__ppo__s1__* runs/doom-basic__dqn__s1__* --out /tmp/report
  python -m pixelplay.eval export runs/doom-basic__ppo__s1__20261129-101500 zoo/my-doom-basic-ppo
  python -m pixelplay.eval score doom-basic-ppo --episodes 20      # a zoo agent, by name, from anywhere
"""

SEED_MAX = 2**31 - 1_000_000


# ---- the options of each command -------------------------------------------------------------


@dataclass
class PlayerOptions:
    """Who plays and where its reports go (doom-table; the base of the other commands' players)."""

    target: str | None = None
    """a checkpoint file, a run directory (its checkpoints/latest.pt), an exported folder (its agent.pt) or a zoo agent's name (doom-basic-ppo)"""
    policy: str | None = bounded(None, choices=("random", "scripted"))
    """play a built-in policy instead of a checkpoint"""
    epsilon: float | None = bounded(None, low=0.0, high=1.0)
    """DQN agents: evaluation epsilon (default: the checkpoint's eval_epsilon, 0.05)"""
    greedy: bool = False
    """PPO and A2C agents: play the policy's most probable action instead of a sample (SB3's deterministic=True)"""
    device: str = "cpu"
    """torch device for the agent"""
    out: str | None = None
    """where reports go (default: the run directory; for a checkpoint file outside a run, its directory)"""


@dataclass
class EnvPlayerOptions(PlayerOptions):
    """A player of record and watch: on the checkpoint's env, or on --env."""

    policy: str | None = bounded(None, choices=("random", "scripted"))
    """play a built-in policy instead of a checkpoint (then give --env)"""
    env: str | None = None
    """env to play on (default: the checkpoint's)"""


@dataclass
class ScorePlayerOptions(EnvPlayerOptions):
    """A player of score: a checkpoint, or the random policy as the protocol's reference."""

    policy: str | None = bounded(None, choices=("random",))
    """play a built-in policy instead of a checkpoint (then give --env)"""


@dataclass
class TableOptions:
    """doom-table's options that `TableConfig`'s fields are derived from."""

    only: str | None = bounded(None, choices=("single", "multi"))
    """play one half of the table only (default: both)"""
    inject_fault: str = bounded("", choices=("", "hang", "die"))
    """testing only (hidden): 'hang' or 'die' makes the first attempt of each setting's first match fail"""


@dataclass
class RecordOptions:
    """What record plays and how the videos look."""

    episodes: int = bounded(1, low=1)
    """episodes to record"""
    seed: int = bounded(1, low=0, high=SEED_MAX)
    """seed of the first episode"""
    scale: int = bounded(0, low=0)
    """integer upscale (0: x2 for 210x160 and 160x120)"""
    max_frames: int | None = bounded(None, low=4)
    """Atari: frame cap per game (default: 108,000)"""
    sticky_actions: bool = False
    """Atari: sticky actions (p=0.25, Machado et al. 2018)"""
    resolution: str | None = None
    """Doom: engine resolution to record at, e.g. 320x240 or 640x480 (default: the scenario's, which is what the agent was trained on; observations are resized from it)"""
    lmp: bool = False
    """Doom: also save the engine's demo (.lmp) of each episode, for exact replay with DoomGame.replay_episode (ViZDoom writes none for a hosted deathmatch)"""


@dataclass
class WatchOptions:
    """What watch plays."""

    episodes: int = bounded(1, low=1)
    """episodes to play"""
    seed: int = bounded(1, low=0, high=SEED_MAX)
    """seed"""


@dataclass
class PlotOptions:
    """Which runs plot draws and how."""

    runs: tuple[str, ...] = ()
    """run directories"""
    smooth: int = bounded(20, low=1)
    """moving-average window, in episodes"""
    out: str | None = None
    """where the PNGs go (default: the first run)"""


@dataclass
class ReportOptions:
    """Which runs (and study) report shows, and where it writes."""

    runs: tuple[str, ...] = ()
    """run directories"""
    study: str | None = None
    """an Optuna study's folder (the summary.json python -m pixelplay.tune writes): adds its trials and parameter importances"""
    out: str | None = None
    """where report.html and its videos go (default: the first run, else the study's folder)"""
    smooth: int = bounded(20, low=1)
    """moving-average window of the curves, in episodes"""
    video: bool = True
    """a gameplay video per run: the run's own (videos/), else one episode recorded with its checkpoint (--no-video: neither)"""
    seed: int = bounded(1, low=0, high=SEED_MAX)
    """seed of a recorded episode"""
    device: str = "cpu"
    """torch device of the agent in a recorded episode"""


@dataclass
class ExportOptions:
    """What export reads and where it writes."""

    source: str = ""
    """the run directory, checkpoint file, exported folder or zoo name to export"""
    out_dir: str = ""
    """the folder to write agent.pt, config.json and README.md into (created)"""


# Flags whose name is not the field's (``--env-backend`` sets ScoreConfig.backend) and positionals,
# by destination: error messages name what was typed.
FLAG_NAMES = {
    "score.backend": "--env-backend",
    "extra.inject_fault": "--inject-fault",
    "player.target": "CHECKPOINT_OR_RUN",
    "plot.runs": "RUN",
    "report.runs": "RUN",
    "export.source": "RUN_OR_CHECKPOINT",
    "export.out_dir": "OUT_DIR",
}


# ---- the parser ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors (an unknown flag, a value of the wrong type) are one line too."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _help(cls: type, name: str) -> str:
    """A field's docstring with its default, as `add_flags` writes it, for a flag added by hand."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    text = field_docs(cls)[name]
    if field.default not in ("", None, ()):
        text += f" (default: {field.default})"
    return text.replace("%", "%%")


def _player_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    parser.add_argument("player.target", nargs="?", metavar="CHECKPOINT_OR_RUN", help=_help(cls, "target"))
    add_flags(parser, cls, "player.", skip=("target",))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m pixelplay.eval",
        description="Evaluate pixelplay agents: the DOOM human-vs-agent table, standard-protocol scores, "
                    "videos, live play and learning curves.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    table = sub.add_parser(
        "doom-table",
        help="reproduce the human-vs-agent DOOM table (Lample & Chaplot 2017) with this agent",
        description="Play deathmatch matches and print the human-vs-agent table of Lample & Chaplot 2017 "
                    "(Arnold) with this project's agent in the agent columns: single player (the agent against "
                    "the built-in bots) and multiplayer (the agent against an opponent in one game, over "
                    "127.0.0.1 only). Writes doom_table.json and doom_table.md. Defaults follow the paper's "
                    "protocol (15 minutes per match, Arnold's server flags and 8 bots); a random policy plays "
                    "the whole table in a few minutes.",
    )
    _player_flags(table, PlayerOptions)
    add_flags(table, TableConfig, "table.", skip=("settings", "connect_timeout", "device", "epsilon", "fault"))
    add_flags(table, TableOptions, "extra.", skip=("inject_fault",))
    table.add_argument("--inject-fault", dest="extra.inject_fault", choices=("hang", "die"),
                       default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    score = sub.add_parser(
        "score",
        help="score an agent with the standard protocol, human-normalised, beside published references",
        description="Play N full games under the standard Atari protocol (all lives, up to 30 no-op starts, "
                    "108,000-frame cap, raw score; sticky actions as chosen) or a ViZDoom scenario's evaluation "
                    "episodes, and report mean, std and median with the human-normalised score and the "
                    "references of eval/baselines.py. Writes score_<env>_<N>games_seed<S>[...].json and .md, "
                    "one pair per protocol (its name adds what else differs from the defaults).",
    )
    _player_flags(score, ScorePlayerOptions)
    add_flags(score, ScoreConfig, "score.", skip=("epsilon", "device", "backend"))
    backend = {f.name: f for f in dataclasses.fields(ScoreConfig)}["backend"]
    score.add_argument("--env-backend", dest="score.backend", choices=backend.metadata["choices"],
                       default=argparse.SUPPRESS, help=_help(ScoreConfig, "backend"))

    record = sub.add_parser(
        "record",
        help="record full episodes as MP4 at the game's native resolution",
        description="Record full episodes as H.264 MP4 files (yuv420p, plays in any browser) at the game's "
                    "native resolution (Atari 210x160 from the ALE screen, Doom the engine's screen), upscaled by "
                    "an integer factor, with the score (and Doom kills/deaths) drawn in a corner and written "
                    "beside each file as JSON. --lmp also saves ViZDoom's own demo for exact replay.",
    )
    _player_flags(record, EnvPlayerOptions)
    add_flags(record, RecordOptions, "record.")

    watch = sub.add_parser(
        "watch",
        help="play the agent live in a window (records a video where no display exists)",
        description="Play the agent live in a window (OpenCV) where a display exists; otherwise record the "
                    "episode and print the path of the video to open.",
    )
    _player_flags(watch, EnvPlayerOptions)
    add_flags(watch, WatchOptions, "watch.")

    plot = sub.add_parser(
        "plot",
        help="learning curves of runs and the DOOM table as PNG files",
        description="Plot episode return against env steps (global step; the frames per step named in the axis "
                    "label) from each run's episodes.csv, one line per run, smoothed, with the human and published "
                    "reference scores of the env where eval/baselines.py has them (each with its source); for Doom "
                    "runs, kills and deaths per training episode beside it; and a bar chart of the DOOM table where "
                    "a run holds doom_table.json. PNGs go into the run directory.",
    )
    plot.add_argument("plot.runs", nargs="+", metavar="RUN", help=_help(PlotOptions, "runs"))
    add_flags(plot, PlotOptions, "plot.", skip=("runs",))

    report = sub.add_parser(
        "report",
        help="one self-contained HTML page per set of runs: curves, scores, DOOM table, video, config",
        description="Write report.html (opens from disk: no server, no network, no JavaScript; figures inline as SVG, "
                    "videos beside it under videos/ so the folder moves as one): per run the learning curve against "
                    "env steps with the human and reference scores of eval/baselines.py (each with its source), the "
                    "score and DOOM table computed in the run directory, a gameplay video (the run's own, else one "
                    "episode recorded with its checkpoint), the resolved config, throughput and the checkpoint's "
                    "step; several runs overlaid, a row each. --study adds an Optuna study's trials.",
    )
    report.add_argument("report.runs", nargs="*", metavar="RUN", help=_help(ReportOptions, "runs"))
    add_flags(report, ReportOptions, "report.", skip=("runs",))

    export = sub.add_parser(
        "export",
        help="write a trained agent as a small weights-only folder (the zoo's format)",
        description="Write OUT_DIR/agent.pt (a weights-only checkpoint: the networks evaluation needs, without "
                    "optimizer, replay or RNG state; readable with torch.load(weights_only=True)), OUT_DIR/config.json "
                    "(the run's configuration) and OUT_DIR/README.md (the python train.py command that trained it, "
                    "its steps and final mean return). Every eval command takes OUT_DIR; train.py --resume needs "
                    "the run's full checkpoint.",
    )
    export.add_argument("export.source", metavar="RUN_OR_CHECKPOINT", help=_help(ExportOptions, "source"))
    export.add_argument("export.out_dir", metavar="OUT_DIR", help=_help(ExportOptions, "out_dir"))
    return parser


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """`build` with the flag's own name in the message (``--num-envs``, not ``num_envs``)."""
    try:
        return build(cls, values)
    except ConfigError as error:
        message = str(error)
        for name in values:
            if message.startswith(name) and message[len(name):len(name) + 1] in (" ", ":"):
                flag = FLAG_NAMES.get(f"{prefix}.{name}", "--" + name.replace("_", "-"))
                raise ConfigError(flag + message[len(name):]) from None
        raise


# ---- the commands -------------------------------------------------------------------------------


def _player(player: PlayerOptions, command: str, builtin_default_env: str | None = None):
    """The `PolicySpec` and env id a command plays, from CHECKPOINT_OR_RUN / --policy / --env."""
    from pixelplay.eval.policies import PolicySpec, checkpoint_env, parse_policy

    env = getattr(player, "env", None)
    if player.policy and player.target:
        raise PixelplayError(f"{command}: give a checkpoint or --policy {player.policy}, not both")
    if player.policy:
        spec = PolicySpec(player.policy, device=player.device)
        env_id = env or builtin_default_env
        if env_id is None:
            raise PixelplayError(f"{command} --policy {player.policy} needs --env (which game to play)")
        if player.epsilon is not None:
            raise PixelplayError("--epsilon applies to DQN checkpoints, not to a built-in policy")
        if player.greedy:
            raise PixelplayError("--greedy applies to PPO and A2C checkpoints, not to a built-in policy")
        return spec, env_id
    if not player.target:
        raise PixelplayError(f"{command} needs a checkpoint or run directory (or --policy); see --help")
    spec = parse_policy(player.target, player.epsilon, player.device, player.greedy)
    trained_on = checkpoint_env(spec)
    return spec, env or trained_on


def _out_dir(player: PlayerOptions, command: str, spec) -> Path:
    from pixelplay.eval.common import output_dir
    from pixelplay.zoo import is_zoo_path

    if not player.out and spec.kind == "checkpoint" and is_zoo_path(spec.path):
        # A shipped zoo agent's folder stays as shipped (in an installed package it may be read-only).
        return Path("runs") / f"zoo_{Path(spec.path).parent.name}"
    default = str(Path("runs") / f"eval_{command}_{spec.kind}")
    return output_dir(player.target, player.out, default)


def cmd_doom_table(player: PlayerOptions, table: TableConfig, extra: TableOptions) -> int:
    from pixelplay.eval import doom_table

    spec, _ = _player(player, "doom-table", builtin_default_env=doom_table.TABLE_ENV)
    if spec.kind == "checkpoint":
        doom_table.check_table_checkpoint(spec)
    settings = {"single": ("single_player",), "multi": ("multiplayer",), None: ("single_player", "multiplayer")}
    cfg = dataclasses.replace(table, settings=settings[extra.only], device=player.device, epsilon=player.epsilon,
                              fault=extra.inject_fault)
    out = _out_dir(player, "doom-table", spec)
    result = doom_table.run_table(spec, cfg, log=doom_table.stderr_log)
    json_path, md_path = doom_table.write_outputs(result, out)
    print(doom_table.render_markdown(result))
    print(f"wrote {json_path} and {md_path}")
    failed = [m for s in ("single_player", "multiplayer") if s in result for m in result[s]["failed"]]
    return 1 if failed and all(
        result[s]["players"]["agent"]["summary"] is None for s in ("single_player", "multiplayer") if s in result
    ) else 0


def cmd_score(player: ScorePlayerOptions, score: ScoreConfig) -> int:
    from pixelplay.eval import score as scoring
    from pixelplay.eval.policies import action_selection

    spec, env_id = _player(player, "score")
    cfg = dataclasses.replace(score, epsilon=player.epsilon, device=player.device)
    info = {"action_selection": action_selection(spec)}
    report = scoring.score(spec, env_id, cfg, info, log=lambda m: print(m, file=sys.stderr))
    json_path, md_path = scoring.write_outputs(report, _out_dir(player, "score", spec))
    print(scoring.render_markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0


def cmd_record(player: EnvPlayerOptions, record: RecordOptions) -> int:
    from pixelplay.eval.record import record_episodes

    spec, env_id = _player(player, "record")
    out = _out_dir(player, "record", spec) / "videos"
    results = record_episodes(
        spec, env_id, out, episodes=record.episodes, seed=record.seed, scale=record.scale,
        max_frames=record.max_frames, sticky_actions=record.sticky_actions, resolution=record.resolution,
        lmp=record.lmp,
    )
    for result in results:
        if record.lmp and not result.get("lmp_bytes"):
            print(f"warning: ViZDoom wrote no demo for episode {result['episode']} ({result['lmp']})", file=sys.stderr)
    return 0


def cmd_watch(player: EnvPlayerOptions, watch: WatchOptions) -> int:
    from pixelplay.eval.record import watch as watch_episodes

    spec, env_id = _player(player, "watch")
    watch_episodes(spec, env_id, _out_dir(player, "watch", spec) / "videos", seed=watch.seed,
                   episodes=watch.episodes)
    return 0


def cmd_plot(plot: PlotOptions) -> int:
    from pixelplay.agents.checkpoint import WEIGHTS_FILE, resolve_checkpoint
    from pixelplay.eval.plot import plot_runs

    runs = []
    for run in plot.runs:
        folder = Path(run)
        if not folder.exists():  # a zoo agent's name
            with contextlib.suppress(PixelplayError):
                folder = resolve_checkpoint(run).parent
        if folder.is_dir() and not (folder / "episodes.csv").exists() and (folder / WEIGHTS_FILE).exists():
            # An exported agent (a zoo folder) keeps no training logs: its README.md has the figures.
            print(f"note: '{run}' is an exported agent without training logs (no episodes.csv); nothing to plot "
                  f"(its training figures are in {folder / 'README.md'})", file=sys.stderr)
            continue
        runs.append(run)
    if not runs:
        raise PixelplayError("plot: no run with an episodes.csv among " + ", ".join(plot.runs)
                             + " (exported agents and zoo folders keep no training logs; plot the run they came from)")
    plot_runs(runs, plot.out, plot.smooth)
    return 0


def cmd_report(report: ReportOptions) -> int:
    from pixelplay.eval.report import write_report

    write_report(list(report.runs), out=report.out, study=report.study, smooth=report.smooth, video=report.video,
                 seed=report.seed, device=report.device)
    return 0


def cmd_export(export: ExportOptions) -> int:
    from pixelplay.zoo.export import describe
    from pixelplay.zoo.export import export as export_agent

    if not export.source or not export.out_dir:
        raise PixelplayError("export needs RUN_OR_CHECKPOINT and OUT_DIR; see --help")
    print(describe(export_agent(export.source, export.out_dir)))
    return 0


# Each command: its function and the dataclass of each group of its flags (by destination prefix,
# which is also the function's keyword).
COMMANDS: dict[str, tuple[Callable[..., int], dict[str, type]]] = {
    "doom-table": (cmd_doom_table, {"player": PlayerOptions, "table": TableConfig, "extra": TableOptions}),
    "score": (cmd_score, {"player": ScorePlayerOptions, "score": ScoreConfig}),
    "record": (cmd_record, {"player": EnvPlayerOptions, "record": RecordOptions}),
    "watch": (cmd_watch, {"player": EnvPlayerOptions, "watch": WatchOptions}),
    "plot": (cmd_plot, {"plot": PlotOptions}),
    "report": (cmd_report, {"report": ReportOptions}),
    "export": (cmd_export, {"export": ExportOptions}),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command, groups = COMMANDS[args.command]
    try:
        values = split_namespace(args, groups)
        options = {prefix: _build(cls, values[prefix], prefix) for prefix, cls in groups.items()}
        return command(**options)
    except PixelplayError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
