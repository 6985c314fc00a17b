"""The algorithms, their presets, and building an agent from a checkpoint.

``ALGOS`` and ``PRESETS`` are literal registries: importing this package registers nothing
anywhere and starts nothing.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from pixelplay.agents.checkpoint import CheckpointError, load_checkpoint
from pixelplay.agents.config import build
from pixelplay.agents.dqn import DQNAgent, DQNConfig
from pixelplay.agents.networks import num_game_features
from pixelplay.agents.ppo import A2CAgent, A2CConfig, PPOAgent, PPOConfig


class Algo(NamedTuple):
    config: type
    """the typed hyperparameter dataclass (every field becomes a CLI flag)"""
    agent: type
    """``agent(cfg, obs_shape, num_actions, num_envs, total_steps, device)``; keywords
    ``frame_stack``, ``world_size`` and ``num_game_features`` (the game-feature head's width)"""
    weights: tuple[str, ...] = ()
    """the entries of ``agent.state_dict()`` that evaluation needs: a weights-only checkpoint
    (``python -m pixelplay.eval export``) keeps these and nothing else"""
    copies: dict[str, str] = {}
    """entries a weights-only checkpoint leaves out because the agent starts them as a copy of
    another entry (DQN's target net of its q-net): restoring one copies that entry's weights"""


ALGOS: dict[str, Algo] = {
    "ppo": Algo(PPOConfig, PPOAgent, weights=("net",)),
    "a2c": Algo(A2CConfig, A2CAgent, weights=("net",)),
    "dqn": Algo(DQNConfig, DQNAgent, weights=("q_net",), copies={"target_net": "q_net"}),
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Keyed by algo, then by env family or by env name (the env name wins). "run" keys set
    # train.py's run options, the others the algorithm's config.
    "ppo": {
        # CleanRL ppo_atari.py / RL Zoo: 8 envs, 128 steps, 4 epochs of 4 minibatches, 10M steps.
        "atari": {"run": {"num_envs": 8, "total_steps": 10_000_000}},
        # A compact Nature-CNN PPO learns doom-basic in ~50k steps with these.
        "doom": {
            "run": {"num_envs": 8, "total_steps": 2_000_000},
            "learning_rate": 2.5e-4,
            "num_steps": 64,
            "update_epochs": 4,
            "num_minibatches": 4,
            "clip_coef": 0.2,
            "gamma": 0.99,
        },
        # The quick start: stops once the last 20 episodes average 80 (~50k steps, a few minutes).
        "doom-basic": {"run": {"total_steps": 150_000, "stop_return": 80.0}},
        # Arnold's "enemy on screen" game feature beside the RL loss (Lample & Chaplot 2017): with
        # it, seed 2 averaged 7.0 by 88k steps; without it 4.0 at 88k and 4.9 at 224k (python
        # train.py --env doom-defend-the-center --seed 2 [--game-features enemy]). The PPO values
        # are the best trial of a 10-trial Optuna study at 50k steps (python -m pixelplay.tune
        # --algo ppo --env doom-defend-the-center --trials 10 --total-steps 50000 --reports 5
        # --startup-trials 3); at 300k steps they score 13.4 over seeds 1-3 (eval score, 20 games,
        # --seed 1000) where the doom family's values scored 8.4.
        "doom-defend-the-center": {
            "run": {"total_steps": 300_000, "game_features": ("enemy",)},
            "learning_rate": 1.038e-3,
            "num_steps": 128,
            "gamma": 0.9,
            "gae_lambda": 0.98,
            "num_minibatches": 2,
            "update_epochs": 10,
            "clip_coef": 0.3,
            "ent_coef": 1.6e-7,
            "max_grad_norm": 0.955,
        },
        # The budgets at which the family's values were measured over seeds 1-3 (python train.py
        # --env ENV --seed S, then python -m pixelplay.eval score RUN --episodes 20 --seed 1000):
        # each ends well above the random policy; longer runs keep improving (Sample Factory's
        # published defend_the_line models score ~35 after millions of steps).
        "doom-defend-the-line": {"run": {"total_steps": 150_000}},
        "doom-health-gathering": {"run": {"total_steps": 150_000}},
        "doom-take-cover": {"run": {"total_steps": 200_000}},
        "doom-deadly-corridor": {"run": {"total_steps": 200_000}},
        # The vest's +1 is the only reward worth the name, and most 128-step minibatches hold no
        # vest: normalising their advantages blows the value function's errors up to the size of a
        # real signal, so each update pushed the policy somewhere at random (entropy 2.08 -> ~1.0
        # nats by 200k steps on a route that found the vest less often than the uniform policy,
        # seed 1). Raw advantages, as A3C had on this map (Pathak et al. 2017), leave those updates
        # small: the vest went from 22% of training episodes to ~50% by 550k-700k steps.
        "doom-my-way-home": {"norm_adv": False},
        # Arnold's game-feature supervision (Lample & Chaplot 2017) with "a medikit is on screen":
        # a head on the CNN features learns it from ViZDoom's labels. Over seeds 1-3 at 2M
        # steps (python train.py --env doom-health-gathering-supreme --seed S [--game-features
        # health], then python -m pixelplay.eval score RUN --episodes 20 --seed 1000) it scored
        # 1598.5 / 1425.0 / 1573.8 against 1432.6 / 1367.1 / 1343.2 without, and led the training
        # return in every 250k-step window of every seed. --game-features '' turns it off.
        "doom-health-gathering-supreme": {"run": {"game_features": ("health",)}},
        # Deathmatch against the built-in bots: an LSTM core (Arnold's DRQN keeps memory: a player
        # cannot see behind itself) and Arnold's "enemy on screen" game feature beside the RL loss
        # (Lample & Chaplot 2017, game feature augmentation). Rollouts of 128 steps (~15 s of
        # play) so a fight and its frag fall in one rollout for the truncated BPTT. The label aimer
        # teaches aiming (Kickstarting, Schmitt et al. 2018; envs/doom_teacher.py): without it the
        # kills stayed at 0.25-0.83 per 4-minute match over 621k steps, while the aimer itself
        # earns 6.7 with these actions (bench/deathmatch_aimer.py); with it, 2.09 over 400k-523k
        # steps (python train.py --env doom-deathmatch --seed 1). Its weight falls to 0 over 5M steps.
        "doom-deathmatch": {
            "run": {"total_steps": 20_000_000, "game_features": ("enemy",), "teacher": "aimer"},
            "memory": "lstm",
            "memory_size": 256,
            "num_steps": 128,
            "teacher_anneal_steps": 5_000_000,
        },
    },
    "a2c": {
        # RL Zoo a2c.yml (Atari): 16 envs, 5 steps, RMSprop 7e-4, ent 0.01, vf 0.25.
        "atari": {"run": {"num_envs": 16, "total_steps": 10_000_000}, "vf_coef": 0.25},
        "doom": {"run": {"num_envs": 8, "total_steps": 2_000_000}, "num_steps": 8},
        "doom-basic": {"run": {"total_steps": 200_000}},
    },
    "dqn": {
        # Nature DQN (Mnih et al. 2015) as in CleanRL dqn_atari.py.
        "atari": {
            "run": {"num_envs": 1, "total_steps": 10_000_000},
            "buffer_size": 1_000_000,
            "learning_starts": 80_000,
            "train_frequency": 4,
            "batch_size": 32,
            "target_update_interval": 1_000,
            "learning_rate": 1e-4,
            "exploration_fraction": 0.1,
            "final_epsilon": 0.01,
        },
        # Rainbow's cheap parts (Hessel et al. 2018): Double DQN, a dueling head and 3-step returns.
        # On doom-basic (python train.py --algo dqn --env doom-basic --stop-return 75) they cut the steps to a mean return of 75 from ~30k to ~6k.
        "doom": {
            "run": {"num_envs": 4, "total_steps": 1_000_000},
            "double_dqn": True,
            "dueling": True,
            "n_step": 3,
        },
        # Tuned on a 2-core CPU: learning from 1k steps, epsilon down to 0.01 over the next 2k,
        # a small fresh replay, target copies every 125 gradient steps. A mean of 75 over 20
        # episodes by ~6k steps (under a minute), ~79 from ~12k on; 20k steps leave a margin.
        "doom-basic": {
            "run": {"total_steps": 20_000},
            "learning_rate": 2.5e-4,
            "buffer_size": 50_000,
            "learning_starts": 1_000,
            "target_update_interval": 500,
            "exploration_fraction": 0.15,
            "final_epsilon": 0.01,
        },
    },
}
"""Hyperparameters known to work, per algorithm and env; CLI flags and --config override them."""


def preset_for(algo: str, env_id: str, family: str) -> dict[str, Any]:
    """The merged preset for (algo, env): family first, then the env's own entries."""
    merged: dict[str, Any] = {"run": {}}
    for key in (family, env_id):
        entry = PRESETS.get(algo, {}).get(key, {})
        merged["run"].update(entry.get("run", {}))
        merged.update({k: v for k, v in entry.items() if k != "run"})
    return merged


def make_config(algo: str, values: dict[str, Any], where: str = ""):
    """Build the algorithm's config from a dict, every value checked against its field's type
    and range (`pixelplay.agents.config.build`); ``where`` names the source in messages."""
    return build(ALGOS[algo].config, values, where or f"{algo} hyperparameter ")


def load_agent(path_or_run, device: str | torch.device = "cpu", num_envs: int = 1):
    """Rebuild the agent a checkpoint was saved from, for evaluation. Returns (agent, checkpoint)."""
    checkpoint = load_checkpoint(path_or_run, map_location=device)
    algo = checkpoint["algo"]
    if algo not in ALGOS:
        raise CheckpointError(f"'{checkpoint['path']}' was saved by unknown algorithm '{algo}'")
    cfg = make_config(algo, checkpoint["algo_config"], f"'{checkpoint['path']}': algo_config.")
    obs_shape = tuple(checkpoint["obs_shape"])
    agent = ALGOS[algo].agent(cfg, obs_shape, checkpoint["num_actions"], num_envs, 1, torch.device(device),
                              num_game_features=_saved_game_features(checkpoint))
    # A saved replay (--save-replay) is training state sized for the run's envs: evaluation drops it.
    evaluation = {**checkpoint, "agent": {k: v for k, v in checkpoint["agent"].items() if k != "replay"}}
    restore_agent(agent, evaluation, obs_shape, checkpoint["num_actions"])
    return agent, checkpoint


def _saved_game_features(checkpoint: dict) -> int:
    """The width of the game-feature head the checkpoint's network has (0: none), read from its
    weights, so that full and weights-only checkpoints (which keep no run config) both load.
    Evaluation never runs the head: it acts as an agent without one would."""
    weights = ALGOS[checkpoint["algo"]].weights
    state = checkpoint.get("agent")
    if not weights or not isinstance(state, dict):
        return 0
    return num_game_features(state.get(weights[0]))


def restore_agent(agent, checkpoint: dict, obs_shape: tuple[int, ...], num_actions: int) -> None:
    """Load a checkpoint's agent state into ``agent`` built for ``obs_shape`` and ``num_actions``;
    any mismatch (shapes, keys, another algorithm's state) is one `CheckpointError`.

    A weights-only checkpoint (`weights_only_state`) holds the networks alone: every entry of the
    agent's state it lacks (optimizer, counters, DQN's target net) is filled from ``agent`` as it
    stands (freshly built: a new optimizer, counters at 0), a copy (`Algo.copies`) from the entry it
    copies. A full checkpoint must hold every entry."""
    if tuple(checkpoint["obs_shape"]) != tuple(obs_shape) or checkpoint["num_actions"] != num_actions:
        raise CheckpointError(
            f"checkpoint '{checkpoint['path']}' was saved for observations {tuple(checkpoint['obs_shape'])} and "
            f"{checkpoint['num_actions']} actions; this env gives {tuple(obs_shape)} and {num_actions}"
        )
    state = checkpoint["agent"]
    if checkpoint.get("weights_only"):
        state = _fill_weights_only(agent, checkpoint)
    try:
        agent.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(
            f"'{checkpoint['path']}' does not fit a {checkpoint['algo']} agent: {type(error).__name__}: {first}"
        ) from None


def _fill_weights_only(agent, checkpoint: dict) -> dict:
    algo = ALGOS.get(checkpoint["algo"])
    saved = checkpoint["agent"]
    needed = algo.weights if algo is not None else ()
    missing = [key for key in needed if key not in saved]
    if missing:
        raise CheckpointError(f"'{checkpoint['path']}' is a weights-only {checkpoint['algo']} checkpoint "
                              f"without agent.{', agent.'.join(missing)}")
    copies = algo.copies if algo is not None else {}
    state = dict(saved)
    for key, value in agent.state_dict().items():
        if key not in state:
            state[key] = saved[copies[key]] if copies.get(key) in saved else value
    return state


def weights_only_state(algo: str, agent_state: dict) -> dict:
    """The entries of a full agent state that evaluation needs (`Algo.weights`): the networks'
    weights, without optimizer, replay, counters or copies (DQN's target net)."""
    if algo not in ALGOS:
        raise CheckpointError(f"unknown algorithm '{algo}'; choose one of {', '.join(ALGOS)}")
    keys = ALGOS[algo].weights
    if not keys:
        raise CheckpointError(f"the {algo} algorithm names no weights (Algo.weights): nothing to export")
    missing = [key for key in keys if key not in agent_state]
    if missing:
        raise CheckpointError(f"the {algo} agent state lacks {', '.join(missing)}")
    return {key: agent_state[key] for key in keys}
