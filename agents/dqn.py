"""Deep Q-networks: Nature DQN (Mnih et al. 2015) with the Rainbow-era improvements as flags.

Double DQN (van Hasselt et al. 2016), dueling heads (Wang et al. 2016), n-step returns (Sutton
1988; Hessel et al. 2018) and prioritized replay (Schaul et al. 2016) each switch on with one
field of `DQNConfig`. The replay buffer lives on the training device (`agents.replay`), so a
training step never copies a minibatch between host and device.

With game features (``num_game_features``, train.py's ``--game-features``) the Q-network has a
game-feature head (`pixelplay.agents.networks.game_feature_head`), the replay stores the labels
of every stored frame's observation (bool, one row per slot) and each gradient step adds
``game_feature_coef`` times the head's binary cross-entropy on the sampled observations to the
TD loss, as Arnold does (Lample & Chaplot 2017). The labels of the first observations come from
`DQNAgent.observe_first`, those of each next observation with the `StepResult`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pixelplay.agents.agent import checked_labels
from pixelplay.agents.config import ConfigError, bounded
from pixelplay.agents.networks import PRECISIONS, NetworkConfig, QNetwork, build_extractor, game_feature_loss
from pixelplay.agents.replay import ReplayBatch, ReplayBuffer
from pixelplay.envs.errors import PixelplayError
from pixelplay.envs.vec import StepResult


@dataclass
class DQNConfig(NetworkConfig):
    """DQN hyperparameters; the defaults are a compact DQN for small budgets, the Atari preset
    restores the Nature / CleanRL ``dqn_atari.py`` values."""

    learning_rate: float = bounded(1e-4, low=0.0)
    """Adam step size"""
    adam_eps: float = bounded(1.5e-4, low=0.0)
    """Adam epsilon (1.5e-4 as in Dopamine and Rainbow, Hessel et al. 2018)"""
    buffer_size: int = bounded(100_000, low=1)
    """replay capacity in transitions (all envs together)"""
    learning_starts: int = bounded(5_000, low=0)
    """env steps of uniform-random play before the first update"""
    train_frequency: int = bounded(4, low=1)
    """env steps (over all envs) per gradient step"""
    batch_size: int = bounded(32, low=1)
    """transitions per gradient step"""
    gamma: float = bounded(0.99, low=0.0, high=1.0)
    """discount factor"""
    target_update_interval: int = bounded(1_000, low=1)
    """env steps between hard target-network copies (used when tau is 1)"""
    tau: float = bounded(1.0, low=0.0, high=1.0)
    """1.0: hard target copies every target_update_interval; below 1: Polyak averaging each gradient step"""
    start_epsilon: float = bounded(1.0, low=0.0, high=1.0)
    """exploration epsilon at the start"""
    final_epsilon: float = bounded(0.01, low=0.0, high=1.0)
    """exploration epsilon after the decay"""
    exploration_fraction: float = bounded(0.1, low=0.0, high=1.0)
    """fraction of total steps over which epsilon decays linearly"""
    eval_epsilon: float = bounded(0.05, low=0.0, high=1.0)
    """epsilon of the evaluation policy (0.05 in the Nature paper's evaluation)"""
    double_dqn: bool = False
    """Double DQN: the online net picks the next action, the target net rates it"""
    dueling: bool = False
    """dueling value/advantage head"""
    n_step: int = bounded(1, low=1)
    """n-step returns, computed by the replay at sample time"""
    prioritized: bool = False
    """proportional prioritized replay"""
    priority_alpha: float = bounded(0.6, low=0.0)
    """how strongly priorities shape sampling (0: uniform)"""
    priority_beta: float = bounded(0.4, low=0.0, high=1.0)
    """importance-sampling exponent at the start, annealed to 1 over the run"""
    loss: str = bounded("huber", choices=("huber", "mse"))
    """huber (as in the Nature paper's error clipping) or mse"""
    max_grad_norm: float = bounded(10.0, low=0.0)
    """global gradient-norm clip (0 disables)"""
    precision: str = bounded("fp32", choices=PRECISIONS)
    """fp32, bf16, or auto (bf16 on CUDA and AMX CPUs); bf16 gains little at batch 32 on a CPU (bench/dqn_vs_sb3.py)"""
    save_replay: bool = False
    """put the replay buffer in checkpoints so that --resume continues with it (large files)"""

    def check_rollout(self, num_envs: int) -> None:
        """Refuse a replay too small to hold one n-step transition per env."""
        if self.buffer_size < num_envs * (self.n_step + 1):
            raise ConfigError(
                f"buffer_size={self.buffer_size} cannot hold {self.n_step}-step transitions of {num_envs} envs; "
                f"use at least {num_envs * (self.n_step + 1)}"
            )


class DQNAgent:
    """Epsilon-greedy acting, device replay, one gradient step per ``train_frequency`` env steps."""

    def __init__(
        self,
        cfg: DQNConfig,
        obs_shape: tuple[int, int, int],
        num_actions: int,
        num_envs: int,
        total_steps: int,
        device: torch.device,
        frame_stack: int = 1,
        world_size: int = 1,
        num_game_features: int = 0,
    ):
        """``num_game_features``: the width of the game-feature head (``len(envs.spec.game_features)``);
        0 (default): no head, no label storage in the replay, nothing computed."""
        cfg.check_rollout(num_envs)
        # Under torchrun the steps this agent is given are global (all ranks together): the
        # epsilon, learning_starts and target schedules run on them, while train_frequency
        # counts this rank's own env steps, so every rank takes a gradient step in lockstep.
        self.world_size = world_size
        self.gradient_sync: Callable[[Iterable[torch.nn.Parameter]], None] | None = None
        """Set under torchrun: averages the gradients over the ranks before each optimiser step."""
        self.cfg, self.device, self.total_steps = cfg, torch.device(device), total_steps
        self.num_envs, self.num_actions = num_envs, num_actions
        self.num_game_features = num_game_features
        self.q_net = QNetwork(
            build_extractor(cfg.network, obs_shape, cfg.features_dim), num_actions, cfg.dueling, num_game_features
        )
        self.q_net.to(self.device)
        if cfg.channels_last:
            self.q_net.to(memory_format=torch.channels_last)
        self.autocast = cfg.autocast(self.device)
        self.target_net = copy.deepcopy(self.q_net)
        self.target_net.requires_grad_(False)
        # Fused Adam: one kernel per tensor instead of about ten. The same update (up to rounding),
        # ~10x less optimizer time on a CPU, where the default single-tensor loop cost ~40% of a
        # Nature-CNN gradient step (bench/dqn_vs_sb3.py).
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(
            self.q_net.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps, fused=fused or None
        )
        self.frame_stack = frame_stack
        self.obs_shape = tuple(obs_shape)
        self._replay: ReplayBuffer | None = None
        self._labels: torch.Tensor | None = None
        """with game features: the labels (N, F) of the observations the next `observe` takes"""
        self.gradient_steps = 0
        self.last_train_step = 0
        self.last_target_step = 0
        self.learning_starts = cfg.learning_starts
        """the env step of the first update: learning_starts, or later after a resume without replay"""

    @property
    def replay(self) -> ReplayBuffer:
        # Allocated on first use, so evaluation-only agents never reserve replay memory.
        if self._replay is None:
            cfg = self.cfg
            self._replay = ReplayBuffer(
                cfg.buffer_size,
                self.num_envs,
                self.obs_shape,
                self.frame_stack,
                self.device,
                n_step=cfg.n_step,
                gamma=cfg.gamma,
                prioritized=cfg.prioritized,
                alpha=cfg.priority_alpha,
                beta=cfg.priority_beta,
                seed=int(torch.randint(0, 2**31 - 1, ()).item()),
                num_labels=self.num_game_features,
            )
        return self._replay

    def _q(self, net: torch.nn.Module, obs: torch.Tensor) -> torch.Tensor:
        if self.cfg.channels_last:
            obs = obs.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            return net(obs).float()

    def epsilon(self, step: int) -> float:
        cfg = self.cfg
        duration = max(1.0, cfg.exploration_fraction * self.total_steps)
        frac = min(1.0, step / duration)
        return cfg.start_epsilon + frac * (cfg.final_epsilon - cfg.start_epsilon)

    def _epsilon_greedy(self, obs: torch.Tensor, epsilon: float) -> torch.Tensor:
        shape = (obs.shape[0],)
        random_actions = torch.randint(0, self.num_actions, shape, device=self.device)
        explore = torch.rand(shape, device=self.device) < epsilon
        if epsilon >= 1.0 or (epsilon > 0.0 and bool(explore.all())):
            # Every env explores: skip the forward pass (early in training, most steps). The
            # host sync this costs on CUDA is one the env step makes anyway (actions go to the host).
            return random_actions
        greedy = self._q(self.q_net, obs).argmax(dim=1)
        return torch.where(explore, random_actions, greedy)

    def resumed(self, global_step: int) -> str | None:
        """Called when a run resumes at ``global_step``. A checkpoint without the replay (the
        default, see ``save_replay``) leaves it empty: refill it before learning again, acting
        with the restored policy, then go on with one gradient step per train_frequency (no
        catch-up burst for the refill's steps)."""
        if self._replay is not None and self._replay.num_added > 0:
            return None
        refill = max(self.cfg.learning_starts, self.cfg.batch_size, self.num_envs * (self.cfg.n_step + 1))
        self.learning_starts = global_step + refill * self.world_size
        self.last_train_step = max(self.last_train_step, self.learning_starts - self.train_interval)
        return (f"resuming at step {global_step} with an empty replay (no --save-replay): refilling {refill} "
                f"steps with the restored policy before the next update")

    @torch.no_grad()
    def act(self, obs: torch.Tensor, step: int) -> torch.Tensor:
        if step < self.cfg.learning_starts:
            return torch.randint(0, self.num_actions, (obs.shape[0],), device=self.device)
        return self._epsilon_greedy(obs, self.epsilon(step))

    @torch.no_grad()
    def eval_act(self, obs: torch.Tensor, first: torch.Tensor | None = None, epsilon: float | None = None) -> torch.Tensor:
        """Epsilon-greedy with ``epsilon`` (default: the config's ``eval_epsilon``); feed-forward,
        so episode starts (``first``) change nothing."""
        return self._epsilon_greedy(obs, self.cfg.eval_epsilon if epsilon is None else epsilon)

    def observe_first(self, obs: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """The envs were reset: ``obs`` starts an episode in every env (the replay cuts the episodes
        it was storing, see `ReplayBuffer.break_streams`); ``labels`` are its game-feature labels
        (``envs.labels``), stored with ``obs`` at the next `observe`."""
        self._labels = checked_labels(labels, self.num_envs, self.num_game_features)
        if self._replay is not None:
            self._replay.break_streams()

    def observe(self, obs: torch.Tensor, action: torch.Tensor, result: StepResult) -> None:
        if not self.num_game_features:
            self.replay.add(obs, action, result.reward, result.terminated, result.truncated, result.obs, result.final_obs)
            return
        if self._labels is None:
            raise PixelplayError("observe() before observe_first(obs, envs.labels): the labels of the first "
                                 "observations come from the env's reset")
        next_labels = checked_labels(result.labels, self.num_envs, self.num_game_features)
        self.replay.add(obs, action, result.reward, result.terminated, result.truncated, result.obs, result.final_obs,
                        labels=self._labels, next_labels=next_labels)
        self._labels = next_labels

    def ready(self, step: int) -> bool:
        return step >= self.learning_starts and step - self.last_train_step >= self.train_interval

    @property
    def train_interval(self) -> int:
        """Global env steps per gradient step: train_frequency of this rank's own steps."""
        return self.cfg.train_frequency * self.world_size

    def learned_step(self, global_step: int) -> int:
        """Every step observed is in the replay (or dropped with it): the checkpoint is current."""
        return global_step

    def update(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        # Count from learning_starts, not from step 0: the first update is one gradient step (as in
        # CleanRL and SB3), not a burst of learning_starts / train_frequency on the first random data.
        interval = self.train_interval
        self.last_train_step = max(self.last_train_step, self.learning_starts - interval)
        num_updates = (step - self.last_train_step) // interval
        self.last_train_step += num_updates * interval
        beta = cfg.priority_beta + min(1.0, step / self.total_steps) * (1.0 - cfg.priority_beta)
        for _ in range(num_updates):
            stats = self._gradient_step(beta)
            if cfg.tau < 1.0:
                self._polyak_update()
        if cfg.tau >= 1.0 and step - self.last_target_step >= cfg.target_update_interval:
            self.target_net.load_state_dict(self.q_net.state_dict())
            self.last_target_step = step
        values = torch.stack(list(stats)).tolist()  # one host sync per update, for logging
        metrics = {
            "losses/td_loss": values[0],
            "losses/q_values": values[1],
            "charts/epsilon": self.epsilon(step),
            "charts/gradient_steps": self.gradient_steps,
        }
        if len(values) > 2:
            metrics["losses/game_features"] = values[2]
            metrics["charts/game_feature_accuracy"] = values[3]
        return metrics

    @torch.no_grad()
    def td_target(self, batch: ReplayBatch) -> torch.Tensor:
        """r + discount * Q_target(s', a'): the replay folds n-step returns and terminals into
        ``batch.reward`` and ``batch.discount`` (gamma**steps, 0 after a terminal)."""
        next_q_target = self._q(self.target_net, batch.next_obs)
        if self.cfg.double_dqn:
            # Double DQN: the online net picks, the target net rates (van Hasselt et al. 2016).
            next_action = self._q(self.q_net, batch.next_obs).argmax(dim=1, keepdim=True)
            next_q = next_q_target.gather(1, next_action).squeeze(1)
        else:
            next_q = next_q_target.max(dim=1).values
        return batch.reward + batch.discount * next_q

    def _q_and_features(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The online net's Q-values and game-feature logits in one forward pass (fp32)."""
        if self.cfg.channels_last:
            obs = obs.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            q, feature_logits = self.q_net(obs, with_game_features=True)
        return q.float(), feature_logits.float()

    def _gradient_step(self, beta: float) -> tuple[torch.Tensor, ...]:
        """One gradient step on a sampled batch; returns (TD loss, mean Q) and, with game features,
        (game-feature BCE, accuracy) after them, detached."""
        cfg = self.cfg
        batch = self.replay.sample(cfg.batch_size, beta=beta)
        target = self.td_target(batch)
        if self.num_game_features:
            q_all, feature_logits = self._q_and_features(batch.obs)
        else:
            q_all = self._q(self.q_net, batch.obs)
        q = q_all.gather(1, batch.action.unsqueeze(1)).squeeze(1)
        td_error = target - q
        if cfg.loss == "huber":
            elementwise = F.smooth_l1_loss(q, target, reduction="none")
        else:
            elementwise = 0.5 * td_error**2
        loss = (batch.weight * elementwise).mean()
        total = loss
        if self.num_game_features:
            # A supervised loss: plain mean over the batch, not weighted by the replay's priorities.
            bce, accuracy = game_feature_loss(feature_logits, self.replay.labels(batch.index))
            total = loss + cfg.game_feature_coef * bce
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.gradient_sync is not None:
            self.gradient_sync(self.q_net.parameters())
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.q_net.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        if cfg.prioritized:
            self.replay.update_priorities(batch.index, td_error.detach().abs())
        self.gradient_steps += 1
        if self.num_game_features:
            return loss.detach(), q.detach().mean(), bce.detach(), accuracy.detach()
        return loss.detach(), q.detach().mean()

    @torch.no_grad()
    def _polyak_update(self) -> None:
        tau = self.cfg.tau
        for target, online in zip(self.target_net.parameters(), self.q_net.parameters(), strict=True):
            target.lerp_(online, tau)

    def state_dict(self) -> dict:
        state = {
            "q_net": self.q_net.state_dict(),
            "target_net": self.target_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "gradient_steps": self.gradient_steps,
            "last_train_step": self.last_train_step,
            "last_target_step": self.last_target_step,
        }
        if self.cfg.save_replay and self._replay is not None:
            state["replay"] = self._replay.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.q_net.load_state_dict(state["q_net"])
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gradient_steps = state["gradient_steps"]
        self.last_train_step = state["last_train_step"]
        self.last_target_step = state["last_target_step"]
        if "replay" in state:
            self.replay.load_state_dict(state["replay"])
