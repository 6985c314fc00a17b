"""The eval command line: ``python -m pixelplay.eval COMMAND ...`` (``python -m pixelplay.eval COMMAND --help``).

Bad input (a missing or corrupt checkpoint, an env the command cannot serve, a flag out of
range) prints one line and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pixelplay.envs.errors import PixelplayError

EPILOG = """examples:
  python -m pixelplay.eval doom-table runs/doom-deathmatch__ppo__s1__20261129-101500
  python -m pixelplay.eval doom-table --policy random --minutes 1 --matches 2 --bots 2 --out /tmp/table
  python -m pixelplay.eval score runs/breakout__dqn__s1__20261129-101500 --episodes 30 --epsilon 0.05
  python -m pixelplay.eval record runs/breakout__ppo__s1__20261129-101500 --episodes 2
  python -m pixelplay.eval watch runs/doom-basic__ppo__s1__20261129-101500
  python -m pixelplay.eval plot runs/breakout__ppo__s1__* runs/breakout__dqn__s1__*
"""


def _player_args(parser: argparse.ArgumentParser, policies: tuple[str, ...], needs_env: bool = True) -> None:
    parser.add_argument("target", nargs="?", metavar="CHECKPOINT_OR_RUN",
                        help="a checkpoint file or a run directory (its checkpoints/latest.pt)")
    parser.add_argument("--policy", choices=policies, default=None,
                        help="play a built-in policy instead of a checkpoint (then give --env)" if needs_env
                        else "play a built-in policy instead of a checkpoint")
    parser.add_argument("--epsilon", type=float, default=None,
                        help="DQN agents: evaluation epsilon (default: the checkpoint's eval_epsilon, 0.05)")
    parser.add_argument("--device", default="cpu", help="torch device for the agent")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where reports go (default: the run directory; for a checkpoint file outside a "
                             "run, its directory)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pixelplay.eval",
        description="Evaluate pixelplay agents: the DOOM human-vs-agent table, standard-protocol scores, "
                    "videos, live play and learning curves.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    # ---- doom-table
    from pixelplay.eval.doom_table import TableConfig

    d = TableConfig()
    table = sub.add_parser(
        "doom-table", formatter_class=fmt,
        help="reproduce the human-vs-agent DOOM table (Lample & Chaplot 2017) with this agent",
        description="Play deathmatch matches and print the human-vs-agent table of Lample & Chaplot 2017 "
                    "(Arnold) with this project's agent in the agent columns: single player (the agent against "
                    "the built-in bots) and multiplayer (the agent against an opponent in one game, over "
                    "127.0.0.1 only). Writes doom_table.json and doom_table.md. Defaults follow the paper's "
                    "protocol (15 minutes per match, Arnold's server flags and 8 bots); a random policy plays "
                    "the whole table in a few minutes.",
    )
    _player_args(table, ("random", "scripted"), needs_env=False)
    table.add_argument("--opponent", default=d.opponent, metavar="random|scripted|CHECKPOINT",
                       help="multiplayer opponent: random, scripted, or a second checkpoint / run directory")
    table.add_argument("--human", action="store_true",
                       help="a person plays in a ViZDoom window (needs a display): against the bots for the "
                            "single-player human column, against the agent for the multiplayer one")
    table.add_argument("--bots", type=int, default=d.bots, help="built-in bots in single player (Arnold: 8)")
    table.add_argument("--mp-bots", type=int, default=d.mp_bots, help="built-in bots in the multiplayer games")
    table.add_argument("--map", default=d.map, help="cig.wad map: map02 full deathmatch, map01 rockets only")
    table.add_argument("--skill", type=int, default=d.skill, help="Doom skill 1-5 (Arnold: 3)")
    table.add_argument("--minutes", type=float, default=d.minutes, help="game minutes per match (Arnold: 15)")
    table.add_argument("--matches", type=int, default=d.matches, help="matches per setting for the agent")
    table.add_argument("--human-matches", type=int, default=d.human_matches, help="matches per setting for the person")
    table.add_argument("--bots-readd", choices=("respawn", "match"), default=d.bots_readd,
                       help="re-add the bots after every respawn of the agent (Arnold) or once per match")
    table.add_argument("--only", choices=("single", "multi"), default=None, help="play one half of the table only")
    table.add_argument("--seed", type=int, default=d.seed, help="base seed (match i: seed + i)")
    table.add_argument("--retries", type=int, default=d.retries, help="replays of a match whose game died or hung")
    table.add_argument("--stall-timeout", type=float, default=d.stall_timeout,
                       help="seconds without progress before a match counts as hung")
    table.add_argument("--match-timeout", type=float, default=d.match_timeout,
                       help="wall-clock seconds per match (0: derived from --minutes)")
    table.add_argument("--inject-fault", choices=("hang", "die"), default="", help=argparse.SUPPRESS)

    # ---- score
    from pixelplay.eval.score import ScoreConfig

    s = ScoreConfig()
    score = sub.add_parser(
        "score", formatter_class=fmt,
        help="score an agent with the standard protocol, human-normalised, beside published references",
        description="Play N full games under the standard Atari protocol (all lives, up to 30 no-op starts, "
                    "108,000-frame cap, raw score; sticky actions as chosen) or a ViZDoom scenario's evaluation "
                    "episodes, and report mean, std and median with the human-normalised score and the "
                    "references of eval/baselines.py. Writes score_<env>.json and .md.",
    )
    _player_args(score, ("random",))
    score.add_argument("--env", default=None, help="env to score on (default: the checkpoint's)")
    score.add_argument("--episodes", type=int, default=s.episodes, help="full games to average over")
    score.add_argument("--num-envs", type=int, default=s.num_envs, help="games in parallel (0: min(episodes, 4))")
    score.add_argument("--seed", type=int, default=s.seed, help="base seed")
    score.add_argument("--max-frames", type=int, default=s.max_frames, help="Atari: frame cap per game")
    score.add_argument("--noop-max", type=int, default=s.noop_max, help="Atari: most no-op actions at a game's start")
    score.add_argument("--sticky-actions", action=argparse.BooleanOptionalAction, default=s.sticky_actions,
                       help="Atari: sticky actions (p=0.25, Machado et al. 2018); the report says which")
    score.add_argument("--env-backend", default=s.backend, choices=("auto", "gymnasium", "envpool"),
                       help="Atari backend")

    # ---- record
    record = sub.add_parser(
        "record", formatter_class=fmt,
        help="record full episodes as MP4 at the game's native resolution",
        description="Record full episodes as H.264 MP4 files (yuv420p, plays in any browser) at the game's "
                    "native resolution (Atari 210x160 from the ALE screen, Doom the engine's screen), upscaled by "
                    "an integer factor, with the score (and Doom kills/deaths) drawn in a corner and written "
                    "beside each file as JSON. --lmp also saves ViZDoom's own demo for exact replay.",
    )
    _player_args(record, ("random", "scripted"))
    record.add_argument("--env", default=None, help="env to record (default: the checkpoint's)")
    record.add_argument("--episodes", type=int, default=1, help="episodes to record")
    record.add_argument("--seed", type=int, default=1, help="seed of the first episode")
    record.add_argument("--scale", type=int, default=0, help="integer upscale (0: x2 for 210x160 and 160x120)")
    record.add_argument("--max-frames", type=int, default=None, help="Atari: frame cap per game (default 108,000)")
    record.add_argument("--sticky-actions", action=argparse.BooleanOptionalAction, default=False,
                        help="Atari: sticky actions")
    record.add_argument("--resolution", default=None,
                        help="Doom: engine resolution to record at, e.g. 320x240 or 640x480 (default: the "
                             "scenario's, which is what the agent was trained on; observations are resized from it)")
    record.add_argument("--lmp", action="store_true",
                        help="Doom: also save the engine's demo (.lmp) of each episode, for exact replay with "
                             "DoomGame.replay_episode (ViZDoom writes none for a hosted deathmatch)")

    # ---- watch
    watch = sub.add_parser(
        "watch", formatter_class=fmt,
        help="play the agent live in a window (records a video where no display exists)",
        description="Play the agent live in a window (OpenCV) where a display exists; otherwise record the "
                    "episode and print the path of the video to open.",
    )
    _player_args(watch, ("random", "scripted"))
    watch.add_argument("--env", default=None, help="env to play (default: the checkpoint's)")
    watch.add_argument("--episodes", type=int, default=1, help="episodes to play")
    watch.add_argument("--seed", type=int, default=1, help="seed")

    # ---- plot
    plot = sub.add_parser(
        "plot", formatter_class=fmt,
        help="learning curves of runs and the DOOM table as PNG files",
        description="Plot episode return against env frames (global step x 4) from each run's episodes.csv, "
                    "one line per run, smoothed, with the human score of the env where known; and a bar chart "
                    "of the DOOM table where a run holds doom_table.json. PNGs go into the run directory.",
    )
    plot.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    plot.add_argument("--smooth", type=int, default=20, help="moving-average window, in episodes")
    plot.add_argument("--out", default=None, metavar="DIR", help="where the PNGs go (default: the first run)")
    return parser


def _player(args, command: str, builtin_default_env: str | None = None):
    """The `PolicySpec` and env id a command plays, from CHECKPOINT_OR_RUN / --policy / --env."""
    from pixelplay.eval.policies import PolicySpec, checkpoint_env, parse_policy

    if args.policy and args.target:
        raise PixelplayError(f"{command}: give a checkpoint or --policy {args.policy}, not both")
    if args.policy:
        spec = PolicySpec(args.policy, device=args.device)
        env_id = getattr(args, "env", None) or builtin_default_env
        if env_id is None:
            raise PixelplayError(f"{command} --policy {args.policy} needs --env (which game to play)")
        if args.epsilon is not None:
            raise PixelplayError("--epsilon applies to DQN checkpoints, not to a built-in policy")
        return spec, env_id
    if not args.target:
        raise PixelplayError(f"{command} needs a checkpoint or run directory (or --policy); see --help")
    spec = parse_policy(args.target, args.epsilon, args.device)
    trained_on = checkpoint_env(spec)
    env_id = getattr(args, "env", None) or trained_on
    return spec, env_id


def _out_dir(args, command: str, spec) -> Path:
    from pixelplay.eval.common import output_dir

    default = str(Path("runs") / f"eval_{command}_{spec.kind}")
    return output_dir(args.target, args.out, default)


def cmd_doom_table(args) -> int:
    from pixelplay.eval import doom_table

    spec, _ = _player(args, "doom-table", builtin_default_env=doom_table.TABLE_ENV)
    if spec.kind == "checkpoint":
        doom_table.check_table_checkpoint(spec)
    settings = {"single": ("single_player",), "multi": ("multiplayer",), None: ("single_player", "multiplayer")}
    cfg = doom_table.TableConfig(
        map=args.map, bots=args.bots, skill=args.skill, minutes=args.minutes, matches=args.matches,
        human_matches=args.human_matches, mp_bots=args.mp_bots, opponent=args.opponent, human=args.human,
        bots_readd=args.bots_readd, settings=settings[args.only], seed=args.seed,
        stall_timeout=args.stall_timeout, match_timeout=args.match_timeout, retries=args.retries,
        device=args.device, epsilon=args.epsilon, fault=args.inject_fault,
    )
    out = _out_dir(args, "doom-table", spec)
    result = doom_table.run_table(spec, cfg, log=doom_table.stderr_log)
    json_path, md_path = doom_table.write_outputs(result, out)
    print(doom_table.render_markdown(result))
    print(f"wrote {json_path} and {md_path}")
    failed = [m for s in ("single_player", "multiplayer") if s in result for m in result[s]["failed"]]
    return 1 if failed and all(
        result[s]["players"]["agent"]["summary"] is None for s in ("single_player", "multiplayer") if s in result
    ) else 0


def cmd_score(args) -> int:
    from pixelplay.eval import score as scoring

    spec, env_id = _player(args, "score")
    cfg = scoring.ScoreConfig(
        episodes=args.episodes, num_envs=args.num_envs, seed=args.seed, max_frames=args.max_frames,
        noop_max=args.noop_max, sticky_actions=args.sticky_actions, epsilon=args.epsilon,
        backend=args.env_backend, device=args.device,
    )
    info = {"action_selection": scoring.action_selection(spec)}
    report = scoring.score(spec, env_id, cfg, info, log=lambda m: print(m, file=sys.stderr))
    json_path, md_path = scoring.write_outputs(report, _out_dir(args, "score", spec))
    print(scoring.render_markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0


def cmd_record(args) -> int:
    from pixelplay.eval.record import record_episodes

    spec, env_id = _player(args, "record")
    out = _out_dir(args, "record", spec) / "videos"
    results = record_episodes(
        spec, env_id, out, episodes=args.episodes, seed=args.seed, scale=args.scale, max_frames=args.max_frames,
        sticky_actions=args.sticky_actions, resolution=args.resolution, lmp=args.lmp,
    )
    for result in results:
        if args.lmp and not result.get("lmp_bytes"):
            print(f"warning: ViZDoom wrote no demo for episode {result['episode']} ({result['lmp']})", file=sys.stderr)
    return 0


def cmd_watch(args) -> int:
    from pixelplay.eval.record import watch

    spec, env_id = _player(args, "watch")
    watch(spec, env_id, _out_dir(args, "watch", spec) / "videos", seed=args.seed, episodes=args.episodes)
    return 0


def cmd_plot(args) -> int:
    from pixelplay.eval.plot import plot_runs

    plot_runs(args.runs, args.out, args.smooth)
    return 0


COMMANDS = {"doom-table": cmd_doom_table, "score": cmd_score, "record": cmd_record, "watch": cmd_watch,
            "plot": cmd_plot}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PixelplayError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
