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

With ``--memory lstm`` (or ``gru``) the agent is a DRQN (Hausknecht & Stone 2015) trained as R2D2
(Kapturowski et al. 2019): a recurrent core sits between the CNN features and the Q head
(`RecurrentQNetwork`), the replay samples *sequences* of ``sequence_length`` steps from its
one-frame-per-slot storage (`ReplayBuffer.sample_sequences`), and each sequence starts from a zero
state warmed up over ``burn_in`` steps without gradients (R2D2's "zero state + burn-in"). Both
networks unroll over the whole window, so n-step targets bootstrap from the target net's Q at the
state the sequence reached there; the state is zeroed at every episode start inside a window and
the slots without a transition (an episode's padding and final frame) are masked out of the loss.
Double DQN, dueling heads, n-step returns and prioritized replay keep working: priorities belong
to sequences, R2D2's mix ``eta * max + (1 - eta) * mean`` of a sequence's absolute TD errors,
with importance weights per sequence. Acting keeps a state per env on the device, zeroed where an
episode ended (in Atari training that includes a lost life, which the env reports as an end);
`eval_act` keeps its own, reset where ``first``. Checkpoints hold the core's weights (in
``q_net``) but no states, as for PPO.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pixelplay.agents.agent import checked_labels
from pixelplay.agents.config import ConfigError, bounded
from pixelplay.agents.cuda_graphs import GraphCache
from pixelplay.agents.networks import (
    PRECISIONS,
    MemoryConfig,
    QNetwork,
    RecurrentQNetwork,
    build_extractor,
    game_feature_loss,
)
from pixelplay.agents.replay import ReplayBatch, ReplayBuffer, SequenceBatch
from pixelplay.envs.errors import PixelplayError
from pixelplay.envs.vec import StepResult


@dataclass
class DQNConfig(MemoryConfig):
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
    """transitions per gradient step (with --memory: sequences, each sequence_length steps to learn from)"""
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
    sequence_length: int = bounded(20, low=1, high=1_000)
    """with --memory: steps per replayed sequence that the loss learns from (R2D2's 80, scaled down by 4)"""
    burn_in: int = bounded(10, low=0, high=1_000)
    """with --memory: steps before each sequence that only warm up its zero state, without gradients (R2D2's 40 / 4)"""
    priority_eta: float = bounded(0.9, low=0.0, high=1.0)
    """with --memory and --prioritized: a sequence's priority is eta * max + (1 - eta) * mean of its |TD errors| (R2D2: 0.9)"""
    loss: str = bounded("huber", choices=("huber", "mse"))
    """huber (as in the Nature paper's error clipping) or mse"""
    max_grad_norm: float = bounded(10.0, low=0.0)
    """global gradient-norm clip (0 disables)"""
    precision: str = bounded("fp32", choices=PRECISIONS)
    """fp32, bf16, or auto (bf16 on CUDA and AMX CPUs); bf16 gains little at batch 32 on a CPU (bench/dqn_vs_sb3.py)"""
    save_replay: bool = False
    """put the replay buffer in checkpoints so that --resume continues with it (large files)"""
    cuda_graphs: bool = False
    """on CUDA, act from a captured CUDA graph: one launch per step instead of one per op (agents/cuda_graphs.py); off by default as it is unmeasured on a GPU yet; ignored on other devices"""

    @property
    def window(self) -> int:
        """With --memory: the slots of one replayed sequence (burn-in, learning steps, and the
        n_step more its last steps bootstrap from); 0 without."""
        return self.burn_in + self.sequence_length + self.n_step if self.memory != "none" else 0

    def check_rollout(self, num_envs: int, frame_stack: int = 1) -> None:
        """Refuse a replay too small to hold one n-step transition per env or, with --memory, one
        sequence window per env and the frames of its first observation's stack (``frame_stack``:
        the env's; before the env exists, 1, and the agent checks again with the real one)."""
        if self.buffer_size < num_envs * (self.n_step + 1):
            raise ConfigError(
                f"buffer_size={self.buffer_size} cannot hold {self.n_step}-step transitions of {num_envs} envs; "
                f"use at least {num_envs * (self.n_step + 1)}"
            )
        if self.window and self.buffer_size // num_envs < self.window + frame_stack:
            need = num_envs * (self.window + frame_stack)
            raise ConfigError(
                f"--memory {self.memory}: buffer_size={self.buffer_size} gives {self.buffer_size // num_envs} slots "
                f"per env for {num_envs} envs, fewer than one sequence needs: burn_in={self.burn_in} + "
                f"sequence_length={self.sequence_length} + n_step={self.n_step} + frame_stack={frame_stack}; "
                f"use a buffer_size of at least {need} or shorter sequences"
            )


class DQNAgent:
    """Epsilon-greedy acting, device replay, one gradient step per ``train_frequency`` env steps."""

    off_policy = True  # gradient steps sample the replay: they may run while the envs step

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
        cfg.check_rollout(num_envs, frame_stack)
        self.recurrent = cfg.memory != "none"
        # Under torchrun the steps this agent is given are global (all ranks together): the
        # epsilon, learning_starts and target schedules run on them, while train_frequency
        # counts this rank's own env steps, so every rank takes a gradient step in lockstep.
        self.world_size = world_size
        self.gradient_sync: Callable[[Iterable[torch.nn.Parameter]], None] | None = None
        """Set under torchrun: averages the gradients over the ranks before each optimiser step."""
        self.cfg, self.device, self.total_steps = cfg, torch.device(device), total_steps
        self.num_envs, self.num_actions = num_envs, num_actions
        self.num_game_features = num_game_features
        extractor = build_extractor(cfg.network, obs_shape, cfg.features_dim)
        if self.recurrent:
            self.q_net = RecurrentQNetwork(extractor, num_actions, cfg.dueling, cfg.memory, cfg.memory_size,
                                           num_game_features)
        else:
            self.q_net = QNetwork(extractor, num_actions, cfg.dueling, num_game_features)
        self.q_net.to(self.device)
        if cfg.channels_last:
            self.q_net.to(memory_format=torch.channels_last)
        self.autocast = cfg.autocast(self.device)
        self._graphs = GraphCache(self.device, cfg.cuda_graphs)
        """acting's CUDA graphs (cfg.cuda_graphs, on CUDA only), captured on first use"""
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
        # With --memory the replay needs a whole window per env before it can draw a sequence.
        self.learning_starts = max(cfg.learning_starts, self._min_fill(num_envs) * world_size)
        """the env step of the first update: learning_starts (or the first full sequence window), or
        later after a resume without replay"""
        self._state: torch.Tensor | None = None
        """recurrent: the core state (k, num_envs, H) each env acts from next; zeros at an episode start"""
        self._eval_state: torch.Tensor | None = None
        """recurrent: eval_act's own state, one row per row of its batch"""
        if self.recurrent:
            self._state = self.q_net.initial_state(num_envs, self.device)

    def _min_fill(self, num_envs: int) -> int:
        """This rank's env steps before the replay can draw (sequences: ``ReplayBuffer.min_steps``)."""
        return num_envs * (self.cfg.window - 1) if self.recurrent else 0

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
                sequence_length=cfg.sequence_length if self.recurrent else 0,
                burn_in=cfg.burn_in if self.recurrent else 0,
            )
        return self._replay

    def _q(self, net: torch.nn.Module, obs: torch.Tensor) -> torch.Tensor:
        if self.cfg.channels_last:
            obs = obs.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            q = net(obs)
        return q if q.dtype == torch.float32 else q.float()

    def epsilon(self, step: int) -> float:
        cfg = self.cfg
        duration = max(1.0, cfg.exploration_fraction * self.total_steps)
        frac = min(1.0, step / duration)
        return cfg.start_epsilon + frac * (cfg.final_epsilon - cfg.start_epsilon)

    def _epsilon_greedy(self, obs: torch.Tensor, epsilon: float | torch.Tensor) -> torch.Tensor:
        """Each env's greedy action, replaced by a uniform one with probability ``epsilon`` (a
        number, or a 0-d tensor inside a CUDA graph).

        The forward pass is skipped only for a number >= 1, a test on the host. Skipping it also
        where every env happened to explore would cost a host sync (``bool(explore.all())``) on
        every step, for a forward pass saved only early in the decay."""
        shape = (obs.shape[0],)
        random_actions = torch.randint(0, self.num_actions, shape, device=self.device)
        explore = torch.rand(shape, device=self.device) < epsilon
        if not isinstance(epsilon, torch.Tensor) and epsilon >= 1.0:
            return random_actions
        greedy = self._q(self.q_net, obs).argmax(dim=1)
        return torch.where(explore, random_actions, greedy)

    def _greedy_step(self, obs: torch.Tensor, epsilon: torch.Tensor) -> tuple[torch.Tensor]:
        """`_epsilon_greedy` as a function of tensors to tensors, for a CUDA graph."""
        return (self._epsilon_greedy(obs, epsilon),)

    def _recurrent_step(self, obs: torch.Tensor, state: torch.Tensor,
                        epsilon: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Recurrent acting: ``(actions, the state after obs)``."""
        q, state = self._q_memory(self.q_net, obs, state)
        return self._explore(q.argmax(dim=1), epsilon), state

    def resumed(self, global_step: int) -> str | None:
        """Called when a run resumes at ``global_step``. A checkpoint without the replay (the
        default, see ``save_replay``) leaves it empty: refill it before learning again, acting
        with the restored policy, then go on with one gradient step per train_frequency (no
        catch-up burst for the refill's steps)."""
        if self._replay is not None and self._replay.num_added > 0:
            return None
        refill = max(self.cfg.learning_starts, self.cfg.batch_size, self.num_envs * (self.cfg.n_step + 1),
                     self._min_fill(self.num_envs))
        self.learning_starts = global_step + refill * self.world_size
        self.last_train_step = max(self.last_train_step, self.learning_starts - self.train_interval)
        return (f"resuming at step {global_step} with an empty replay (no --save-replay): refilling {refill} "
                f"steps with the restored policy before the next update")

    def _q_memory(self, net: torch.nn.Module, obs: torch.Tensor, state: torch.Tensor,
                  first: torch.Tensor | None = None, with_game_features: bool = False):
        """A recurrent net over T steps of B sequences from ``state`` (`RecurrentQNetwork`): obs
        (T * B, C, H, W) time-major, ``first`` (T, B); returns its outputs, Q-values in fp32."""
        if self.cfg.channels_last:
            obs = obs.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            return net(obs, state, first, with_game_features)

    def _explore(self, greedy: torch.Tensor, epsilon: float | torch.Tensor) -> torch.Tensor:
        """Replace each greedy action by a uniform one with probability ``epsilon``."""
        shape = greedy.shape
        random_actions = torch.randint(0, self.num_actions, shape, device=self.device)
        explore = torch.rand(shape, device=self.device) < epsilon
        return torch.where(explore, random_actions, greedy)

    def can_act(self, rows: slice | None = None) -> bool:
        """Always: the replay takes every step, whenever it comes."""
        return True

    def _whole_batch(self, rows: slice | None) -> None:
        """DQN acts and stores for all of its envs at once (its replay keeps one stream per env,
        written together): a group of them is refused (train.py's --double-buffer is for PPO and
        A2C; DQN overlaps its gradient steps with the env step instead)."""
        if rows is not None and rows.indices(self.num_envs)[:2] != (0, self.num_envs):
            raise PixelplayError(f"DQN acts for all of its {self.num_envs} envs at once, not for the rows {rows}")

    @torch.no_grad()
    def act(self, obs: torch.Tensor, step: int, rows: slice | None = None) -> torch.Tensor:
        self._whole_batch(rows)
        if self.recurrent:
            # The state follows every observation, random steps included, so that it is the
            # episode's own when the greedy actions begin.
            epsilon = 1.0 if step < self.cfg.learning_starts else self.epsilon(step)
            if self._graphs.enabled:
                action, self._state = self._graphs("act", self._recurrent_step, obs, self._state, epsilon)
            else:
                action, self._state = self._recurrent_step(obs, self._state, epsilon)
            return action
        if step < self.cfg.learning_starts:
            return torch.randint(0, self.num_actions, (obs.shape[0],), device=self.device)
        epsilon = self.epsilon(step)
        if self._graphs.enabled and epsilon < 1.0:
            return self._graphs("act", self._greedy_step, obs, epsilon)[0]
        return self._epsilon_greedy(obs, epsilon)

    @torch.no_grad()
    def eval_act(self, obs: torch.Tensor, first: torch.Tensor | None = None, epsilon: float | None = None) -> torch.Tensor:
        """Epsilon-greedy with ``epsilon`` (default: the config's ``eval_epsilon``).

        Feed-forward: episode starts (``first``) change nothing. Recurrent: a state of its own per
        row of the batch (not the training state), zeroed where ``first`` (bool (N,)) is true, and
        all of it when the batch size changes (a new evaluation), as `PPOAgent.eval_act`."""
        epsilon = self.cfg.eval_epsilon if epsilon is None else epsilon
        if not self.recurrent:
            return self._epsilon_greedy(obs, epsilon)
        rows = obs.shape[0]
        if self._eval_state is None or self._eval_state.shape[1] != rows:
            self._eval_state = self.q_net.initial_state(rows, self.device)
        if first is not None:
            first = torch.as_tensor(first, dtype=torch.bool, device=self.device).reshape(1, rows)
        q, self._eval_state = self._q_memory(self.q_net, obs, self._eval_state, first)
        return self._explore(q.argmax(dim=1), epsilon)

    def observe_first(self, obs: torch.Tensor, labels: torch.Tensor | None = None,
                      advice: torch.Tensor | None = None) -> None:
        """The envs were reset: ``obs`` starts an episode in every env (the replay cuts the episodes
        it was storing, see `ReplayBuffer.break_streams`); ``labels`` are its game-feature labels
        (``envs.labels``), stored with ``obs`` at the next `observe`. A recurrent core starts every
        env from zeros. DQN learns from no teacher: envs that advise (``advice``) are refused."""
        if advice is not None:
            raise PixelplayError("DQN does not learn from a teacher's advice (--teacher is for ppo and a2c)")
        self._labels = checked_labels(labels, self.num_envs, self.num_game_features)
        if self._replay is not None:
            self._replay.break_streams()
        if self.recurrent:
            self._state = self.q_net.initial_state(self.num_envs, self.device)

    def observe(self, obs: torch.Tensor, action: torch.Tensor, result: StepResult, rows: slice | None = None) -> None:
        self._whole_batch(rows)
        if self.recurrent:  # envs that finished start their next episode from zeros
            done = result.terminated | result.truncated
            self._state = self._state * (~done).to(self._state.dtype).view(1, -1, 1)
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
        if self.recurrent:
            return self._sequence_gradient_step(beta)
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
        self._apply_gradients(total)
        if cfg.prioritized:
            self.replay.update_priorities(batch.index, td_error.detach().abs())
        self.gradient_steps += 1
        if self.num_game_features:
            return loss.detach(), q.detach().mean(), bce.detach(), accuracy.detach()
        return loss.detach(), q.detach().mean()

    def sequence_loss(self, batch: SequenceBatch) -> tuple[torch.Tensor, ...]:
        """DRQN's loss on a batch of sequences: ``(loss, td_error (L, B), q taken (L, B), total)``
        and, with game features, ``(bce, accuracy)`` after them; ``total`` is what gets minimised.

        Both nets start each sequence from zeros. The target net runs over the whole window
        without gradients; the online net runs over the burn-in without gradients (its state is
        then a constant), and over the rest with them (Kapturowski et al. 2019, sec. 3). The TD
        target of learning position t is ``reward + discount * Q_target(bootstrap)``, the action at
        the bootstrap position picked by the online net with Double DQN. The loss is the mean of
        ``weight * huber(td)`` over the learning positions that hold a transition."""
        cfg = self.cfg
        window, size = batch.first.shape
        burn, steps = cfg.burn_in, cfg.sequence_length
        obs = batch.obs.reshape(window * size, *batch.obs.shape[2:])
        zeros = self.q_net.initial_state(size, self.device)
        with torch.no_grad():
            target_q, _ = self._q_memory(self.target_net, obs, zeros, batch.first)
            target_q = target_q.float().view(window, size, -1)
            state = zeros
            if burn:
                _, state = self._q_memory(self.q_net, obs[: burn * size], zeros, batch.first[:burn])
        out = self._q_memory(self.q_net, obs[burn * size :], state, batch.first[burn:], self.num_game_features > 0)
        q_all = out[0].float().view(window - burn, size, -1)  # positions burn .. window - 1
        q = q_all[:steps].gather(2, batch.action.unsqueeze(2)).squeeze(2)
        with torch.no_grad():
            actions = target_q.shape[2]
            next_target = target_q.gather(0, batch.bootstrap.unsqueeze(2).expand(-1, -1, actions))
            if cfg.double_dqn:
                # Double DQN: the online net picks, the target net rates (van Hasselt et al. 2016).
                next_online = q_all.detach().gather(0, (batch.bootstrap - burn).unsqueeze(2).expand(-1, -1, actions))
                next_q = next_target.gather(2, next_online.argmax(dim=2, keepdim=True)).squeeze(2)
            else:
                next_q = next_target.max(dim=2).values
            target = batch.reward + batch.discount * next_q
        td_error = target - q
        if cfg.loss == "huber":
            elementwise = F.smooth_l1_loss(q, target, reduction="none")
        else:
            elementwise = 0.5 * td_error**2
        mask = batch.mask.float()
        count = mask.sum().clamp(min=1.0)
        loss = (batch.weight.unsqueeze(0) * elementwise * mask).sum() / count
        q_mean = (q.detach() * mask).sum() / count
        if not self.num_game_features:
            return loss, td_error.detach(), q_mean, loss
        # The frames of the learning positions, those holding a step's observation (labels stored).
        feature_logits = out[2].float()[: steps * size]
        labels = self.replay.labels(batch.leaf[burn : burn + steps].reshape(-1))
        bce, accuracy = game_feature_loss(feature_logits, labels, batch.mask.reshape(-1))
        return loss, td_error.detach(), q_mean, loss + cfg.game_feature_coef * bce, bce, accuracy

    def _apply_gradients(self, total: torch.Tensor) -> None:
        """One optimizer step on ``total``: backward, the ranks' gradient average (torchrun),
        the norm clip, Adam. Shared by the feed-forward and the sequence (DRQN) steps."""
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.gradient_sync is not None:
            self.gradient_sync(self.q_net.parameters())
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.q_net.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()

    def _sequence_gradient_step(self, beta: float) -> tuple[torch.Tensor, ...]:
        """`_gradient_step` on a batch of sequences (`sequence_loss`)."""
        cfg = self.cfg
        batch = self.replay.sample_sequences(cfg.batch_size, beta=beta)
        loss, td_error, q_mean, total, *features = self.sequence_loss(batch)
        self._apply_gradients(total)
        if cfg.prioritized:
            self.replay.update_priorities(batch.index, sequence_priority(td_error, batch.mask, cfg.priority_eta))
        self.gradient_steps += 1
        return (loss.detach(), q_mean, *(f.detach() for f in features))

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
        """Weights, optimizer, counters (and a saved replay); a recurrent core's states are not
        saved: every env restarts from zeros, as a resumed run's envs start new episodes."""
        self.q_net.load_state_dict(state["q_net"])
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gradient_steps = state["gradient_steps"]
        self.last_train_step = state["last_train_step"]
        self.last_target_step = state["last_target_step"]
        if "replay" in state:
            self.replay.load_state_dict(state["replay"])
        if self.recurrent:
            self._state = self.q_net.initial_state(self.num_envs, self.device)
            self._eval_state = None


def sequence_priority(td_error: torch.Tensor, mask: torch.Tensor, eta: float) -> torch.Tensor:
    """R2D2's priority of each sequence (Kapturowski et al. 2019, sec. 2.3): ``eta * max_t |td| +
    (1 - eta) * mean_t |td|`` over its learning steps that hold a transition (``mask``; td_error
    and mask (L, B)); 0 for a sequence without any. The max keeps a sequence with one large error
    from being averaged away by its many small ones (eta = 0.9 in the paper)."""
    magnitude = td_error.abs() * mask
    count = mask.sum(0)
    mean = magnitude.sum(0) / count.clamp(min=1)
    return eta * magnitude.max(dim=0).values + (1.0 - eta) * mean
