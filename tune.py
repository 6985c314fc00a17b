"""Tune an algorithm's hyperparameters with Optuna.

    python -m pixelplay.tune --algo ppo --env doom-defend-the-center --trials 50 --total-steps 200000
    python -m pixelplay.tune --algo ppo --env doom-basic --trials 20 --storage postgresql://me@dbhost/studies

Each trial draws hyperparameters from the algorithm's search space
(`pixelplay.agents.search_spaces.SEARCH_SPACES`, after RL Zoo's ``rl_zoo3/hyperparams_opt.py``),
and trains a real pixelplay run with train.py's loop in its own run directory
(``<study dir>/trial_NNNN``) for ``--total-steps`` env steps. Every ``total_steps / reports`` env
steps the mean raw return of the last 20 episodes goes to Optuna's pruner (median, or successive
halving), which may stop a weak trial there: the run ends as one that reached ``--stop-return``
does (final checkpoint, closed logs) and the trial is recorded as pruned. A trial's value is the
mean return of its last 20 training episodes.

The study lives in a database (SQLite in the study directory by default), so running the same
command again continues it: ``--trials`` is the number of finished (complete or pruned) trials the
study should hold, and only the missing ones run. A running trial beats a heartbeat into the
database; when its process is killed the heartbeat stops, and the next process to run the study
marks it failed and runs its hyperparameters again (Optuna's ``RetryHeartbeatStaleTrialCallback``).
Several processes, on one machine or many, share one study by giving the same ``--storage`` URL
and ``--study-name``.

At the end the study directory holds ``summary.json`` (every trial, the best one, parameter
importances) and ``best_config.json``: the best trial's hyperparameters with the preset's full
training budget, for ``python train.py --config best_config.json``.

Every flag not listed by ``--help`` is train.py's and holds for every trial (``--num-envs 4``);
an algorithm hyperparameter given that way is taken out of the search.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pixelplay.agents import ALGOS, make_config
from pixelplay.agents.checkpoint import atomic_write_text
from pixelplay.agents.config import ConfigError, add_flags, bounded, build, split_namespace
from pixelplay.agents.run_config import RunConfig, build_parser, resolve_config
from pixelplay.agents.search_spaces import SEARCH_SPACES, Choice, Range, check_space
from pixelplay.envs.errors import PixelplayError
from pixelplay.train import exit_status, train

METRIC = "mean raw return of the last 20 training episodes"
"""What a trial's value and its reports measure (train.py's ``mean_recent_return``)."""

INSTALL_HINT = 'pip install "pixelplay[tune]"'


@dataclass
class TuneConfig:
    """Options of a tuning study; every other flag is train.py's and holds for every trial."""

    algo: str = bounded("ppo", choices=tuple(ALGOS))
    """algorithm whose hyperparameters are searched: ppo, a2c or dqn"""
    env: str = "doom-basic"
    """env name, as train.py's --env"""
    trials: int = bounded(20, low=1)
    """finished (complete or pruned) trials the study should hold: a resumed study runs only the missing ones"""
    total_steps: int = bounded(200_000, low=1)
    """env steps per trial (best_config.json keeps the preset's full budget instead)"""
    reports: int = bounded(10, low=1)
    """times per trial the mean return is reported to the pruner (every total_steps / reports env steps)"""
    pruner: str = bounded("median", choices=("median", "halving", "none"))
    """median: stop a trial below the median of the earlier ones at the same step, after startup_trials trials and a third of its budget (RL Zoo's setting); halving: asynchronous successive halving (Li et al. 2020, ASHA), rungs from the first report on, 4x apart; none"""
    startup_trials: int = bounded(5, low=0)
    """trials drawn at random before TPE models the results and before the median pruner prunes (RL Zoo's n_startup_trials)"""
    seed: int = bounded(1, low=0, high=2**31 - 1_000_000)
    """seed of the TPE sampler and of every trial's run (one seed for all, so trials differ by their hyperparameters)"""
    study_name: str = ""
    """the study's name in the storage (default: <env>__<algo>)"""
    study_dir: str = ""
    """where trial runs, summary.json and best_config.json go (default: runs/tune/<study name>)"""
    storage: str = ""
    """database URL: sqlite:///FILE (default: <study dir>/study.db), or a server's (postgresql://user@host/db) to share the study between processes and machines"""
    heartbeat: int = bounded(60, low=1)
    """seconds between a running trial's heartbeats; a trial silent for two of them (its process died) is failed and retried by the next run of the study"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ConfigError(f"{message} (see --help)")


def build_tune_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m pixelplay.tune",
        description="Tune an algorithm's hyperparameters with Optuna; each trial is a pixelplay training run.",
        epilog=("Any train.py flag (python train.py --algo ALGO --help) holds for every trial, e.g. --num-envs 4; "
                "a hyperparameter given so is not searched. Trials log to CSVs only (no wandb unless --track) "
                "and show no progress bar (unless --progress)."),
        allow_abbrev=False,  # so that train.py's flags pass through whole
    )
    add_flags(parser.add_argument_group("study options"), TuneConfig)
    return parser


def parse_args(argv: list[str] | None) -> tuple[TuneConfig, list[str]]:
    """The study's options and the train.py flags that go to every trial."""
    argv = list(sys.argv[1:] if argv is None else argv)
    namespace, extras = build_tune_parser().parse_known_args(argv)
    options = build(TuneConfig, vars(namespace), "tune option ")
    for flag in ("--resume", "--run-dir"):
        if any(arg == flag or arg.startswith(flag + "=") for arg in extras):
            raise ConfigError(f"{flag} is not a tune option: each trial gets its own run directory under the study's "
                              "(--study-dir)")
    return options, extras


@dataclass
class Plan:
    """What every trial shares, resolved and checked before the study starts."""

    trial_run: RunConfig
    """the run options of a trial (its run_dir set per trial)"""
    algo_base: dict[str, Any]
    """the algorithm's config before a trial's draws: defaults < preset < --config < flags"""
    best_run: RunConfig
    """the run options best_config.json gets: the same, with the preset's budget and logging"""
    space: dict[str, Range | Choice]
    """what is searched: the algorithm's space less the hyperparameters fixed by a flag"""
    study_name: str
    study_dir: Path
    storage: str


def make_plan(options: TuneConfig, extras: list[str]) -> Plan:
    """Resolve the trials' options with train.py's own resolution (presets, --config, flags)."""
    base = ["--algo", options.algo, "--env", options.env, "--seed", str(options.seed)]
    best_run, algo_cfg, _ = resolve_config(base + extras)
    best_run.run_dir = ""
    # Tune's own defaults go before the passed flags, which may override them; the budget after.
    quiet = ["--no-track", "--no-progress", "--keep-checkpoints", "1"]
    trial_run, _, _ = resolve_config(base + quiet + extras + ["--total-steps", str(options.total_steps)])
    fixed = split_namespace(build_parser(options.algo).parse_args(extras), ("run", "algo"))["algo"]
    space = {name: dim for name, dim in SEARCH_SPACES[options.algo].items() if name not in fixed}
    if not space:
        raise ConfigError(f"every hyperparameter of the {options.algo} search space is fixed by a flag "
                          f"({', '.join(SEARCH_SPACES[options.algo])}): nothing to tune")
    check_space(options.algo, space)
    study_name = options.study_name or f"{options.env.replace('/', '-')}__{options.algo}"
    study_dir = Path(options.study_dir or Path("runs") / "tune" / study_name.replace("/", "-"))
    storage = options.storage or f"sqlite:///{study_dir / 'study.db'}"
    if "://" not in storage:
        raise ConfigError(f"--storage '{storage}' is not a database URL; use sqlite:///{storage} for a file, "
                          "or postgresql://user@host/db for a server")
    return Plan(trial_run, asdict(algo_cfg), best_run, space, study_name, study_dir, storage)


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise PixelplayError(f"tuning needs Optuna, an optional extra: {INSTALL_HINT}") from None
    # The heartbeat and the retry callback are marked experimental; they are what resuming needs.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def masked(url: str) -> str:
    """``url`` with any password hidden, for messages and summary.json."""
    from sqlalchemy.engine import make_url  # installed with Optuna
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL sqlalchemy reads: no password it could hide
        return url


def open_study(optuna, options: TuneConfig, plan: Plan, pruner=None):
    """Create the study, or load it when the storage holds one of that name (checked to be the
    same search: algorithm, env and trial budget)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        storage = optuna.storages.RDBStorage(
            plan.storage,
            heartbeat_interval=options.heartbeat,
            grace_period=2 * options.heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
        )
    except (SQLAlchemyError, ImportError, ValueError) as error:  # a bad URL, no driver, no server: one line
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise PixelplayError(f"cannot open the study storage '{masked(plan.storage)}': {first}") from None
    if pruner is None:
        every = max(options.total_steps // options.reports, 1)
        pruner = {
            # RL Zoo's median pruner: n_startup_trials, and a warm-up of a third of the reports.
            "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=options.startup_trials,
                                                          n_warmup_steps=options.total_steps // 3),
            # Rungs at the first report's step, then x4 (RL Zoo's reduction factor).
            "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=every, reduction_factor=4),
            "none": optuna.pruners.NopPruner,
        }[options.pruner]()
    sampler = optuna.samplers.TPESampler(n_startup_trials=options.startup_trials, seed=options.seed,
                                         multivariate=True)
    study = optuna.create_study(storage=storage, study_name=plan.study_name, direction="maximize",
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    identity = {"algo": options.algo, "env": options.env, "total_steps": options.total_steps}
    saved = study.user_attrs.get("pixelplay")
    if saved is None:
        study.set_user_attr("pixelplay", identity)
    elif saved != identity:
        raise PixelplayError(
            f"study '{plan.study_name}' in '{masked(plan.storage)}' tunes {saved['algo']} on {saved['env']} with "
            f"{saved['total_steps']} steps per trial; this command asks for {options.algo} on {options.env} with "
            f"{options.total_steps}: pick another --study-name"
        )
    if not study.trials and plan.study_dir.is_dir() and any(plan.study_dir.glob("trial_*")):
        raise PixelplayError(f"'{plan.study_dir}' holds trial runs of another study (the storage has none of them); "
                             "pick another --study-dir or remove them")
    return study


class Reporter:
    """train.py's ``should_stop`` hook for one trial: every ``every`` env steps it reports the mean
    return to Optuna and asks the pruner; True stops the run where it stands."""

    def __init__(self, trial, every: int, total_steps: int):
        self.trial = trial
        self.every = every
        self.total_steps = total_steps
        self.next_report = every
        self.pruned_at: int | None = None

    def __call__(self, step: int, mean_return: float) -> bool:
        if step < self.next_report or not math.isfinite(mean_return):
            return False  # not yet, or no episode has ended: ask again after the next update
        self.next_report = (step // self.every + 1) * self.every
        self.trial.report(mean_return, step)
        # At the end of its budget a trial completes: stopping it would save nothing.
        if step < self.total_steps and self.trial.should_prune():
            self.pruned_at = step
            return True
        return False


def final_return(run_dir: Path) -> float:
    """The mean raw return of a run's last 20 episodes, read from its episodes.csv (NaN if none)."""
    path = run_dir / "episodes.csv"
    if not path.exists():
        return float("nan")
    with open(path, newline="") as handle:
        returns = [float(row["return"]) for row in csv.DictReader(handle) if row.get("return")]
    return sum(returns[-20:]) / len(returns[-20:]) if returns else float("nan")


def suggest(trial, space: dict[str, Range | Choice]) -> dict[str, Any]:
    """One value per searched hyperparameter, drawn by the trial's sampler."""
    values: dict[str, Any] = {}
    for name, dim in space.items():
        if isinstance(dim, Choice):
            values[name] = trial.suggest_categorical(name, list(dim.options))
        elif isinstance(dim.low, int) and isinstance(dim.high, int):
            values[name] = trial.suggest_int(name, dim.low, dim.high, log=dim.log)
        else:
            values[name] = trial.suggest_float(name, float(dim.low), float(dim.high), log=dim.log)
    return values


def make_objective(optuna, options: TuneConfig, plan: Plan):
    every = max(options.total_steps // options.reports, 1)

    def objective(trial) -> float:
        params = suggest(trial, plan.space)
        algo_cfg = make_config(options.algo, {**plan.algo_base, **params}, f"trial {trial.number}: ")
        algo_cfg.check_rollout(plan.trial_run.num_envs)
        run_dir = plan.study_dir / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        print(f"trial {trial.number}: {_format_params(params)}\n  run in {run_dir}", flush=True)
        reporter = Reporter(trial, every, options.total_steps)
        try:
            train(dataclasses.replace(plan.trial_run, run_dir=str(run_dir)), algo_cfg, should_stop=reporter)
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM: Optuna records the trial as failed; queue its hyperparameters so
            # that the next run of the study tries them again, as the heartbeat does for a kill.
            trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        if reporter.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at step {reporter.pruned_at}")
        value = final_return(run_dir)
        if not math.isfinite(value):
            print(f"trial {trial.number}: no episode ended in {options.total_steps} steps; it counts as failed "
                  "(raise --total-steps)", file=sys.stderr)
        return value

    return objective


def _format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                    for name, value in params.items())


def _number(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def summarize(optuna, study, options: TuneConfig, plan: Plan) -> dict[str, Any]:
    """summary.json's content. Trials queued but never started (a retry not yet run) are left out."""
    shown = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
    trials = [
        {"number": t.number, "state": t.state.name, "value": _number(t.value), "params": dict(t.params),
         "run_dir": t.user_attrs.get("run_dir")}
        for t in study.get_trials(deepcopy=False) if t.state.name in shown
    ]
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if _number(t.value) is not None]
    best = max(complete, key=lambda t: t.value, default=None)
    importances: dict[str, float] = {}
    if len(complete) >= 2:
        # PED-ANOVA (Watanabe et al. 2023): Optuna's own, needs no scikit-learn (fANOVA does).
        # With too few trials to tell a top group from the rest it warns and gives every
        # parameter the same share, which says nothing: then none are reported.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                shares = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
            except (ValueError, RuntimeError):
                shares = {}
        if len(shares) == 1 or len({round(v, 9) for v in shares.values()}) > 1:
            importances = {name: float(share) for name, share in shares.items()}
    return {
        "study_name": plan.study_name,
        "storage": masked(plan.storage),
        "direction": "maximize",
        "metric": METRIC,
        "best": None if best is None else {"number": best.number, "value": float(best.value), "params": dict(best.params)},
        "trials": trials,
        "importances": importances,
    }


def best_config(options: TuneConfig, plan: Plan, params: dict[str, Any]) -> dict[str, Any]:
    """A train.py ``--config`` file: the best trial's hyperparameters over the trials' base, with
    the run options train.py would use (the preset's full budget, its logging)."""
    algo_cfg = make_config(options.algo, {**plan.algo_base, **params}, "best trial: ")
    run = asdict(plan.best_run)
    run.pop("run_dir")
    return {"run": run, "algo": asdict(algo_cfg)}


def write_results(optuna, study, options: TuneConfig, plan: Plan) -> dict[str, Any]:
    summary = summarize(optuna, study, options, plan)
    plan.study_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan.study_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    if summary["best"] is not None:
        config = best_config(options, plan, summary["best"]["params"])
        atomic_write_text(plan.study_dir / "best_config.json", json.dumps(config, indent=2) + "\n")
    return summary


def print_table(summary: dict[str, Any], study_dir: Path) -> None:
    print(f"\nstudy {summary['study_name']}: {len(summary['trials'])} trials ({summary['metric']})")
    print(f"{'trial':>5}  {'state':<8}  {'value':>9}  params")
    for trial in summary["trials"]:
        value = "" if trial["value"] is None else f"{trial['value']:.2f}"
        print(f"{trial['number']:>5}  {trial['state']:<8}  {value:>9}  {_format_params(trial['params'])}")
    if summary["importances"]:
        print("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["importances"].items()))
    best = summary["best"]
    if best is None:
        print(f"no complete trial yet; summary in {study_dir / 'summary.json'}")
    else:
        config = study_dir / "best_config.json"
        print(f"best: trial {best['number']}, {best['value']:.2f}; summary in {study_dir / 'summary.json'}\n"
              f"train it with the full budget:  python train.py --config {config}")


def tune(options: TuneConfig, extras: Sequence[str] = (), pruner=None) -> dict[str, Any]:
    """Run the study until it holds ``options.trials`` finished trials; returns summary.json's
    content. ``pruner`` replaces the one ``options.pruner`` names (an Optuna pruner object)."""
    optuna = import_optuna()
    plan = make_plan(options, list(extras))
    plan.study_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(optuna, options, plan, pruner)
    finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    finished = len(study.get_trials(deepcopy=False, states=finished_states))
    print(f"study '{plan.study_name}' in {masked(plan.storage)}: {finished} of {options.trials} trials finished")
    try:
        if finished < options.trials:
            study.optimize(
                make_objective(optuna, options, plan),
                n_trials=options.trials - finished,
                # Other processes sharing the study count too: stop once the study holds enough.
                callbacks=[optuna.study.MaxTrialsCallback(options.trials, states=finished_states)],
                catch=(PixelplayError,),  # a crashed emulator fails its trial, not the study
            )
    finally:
        summary = write_results(optuna, study, options, plan)
        print_table(summary, plan.study_dir)
    return summary


def main(argv: list[str] | None = None) -> int:
    def run() -> None:
        options, extras = parse_args(argv)
        tune(options, extras)

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
