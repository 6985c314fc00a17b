"""PPO (Schulman et al. 2017) and A2C (Mnih et al. 2016, synchronous) on one actor-critic.

Both collect ``num_steps`` vector steps into device-resident rollout storage, estimate advantages
with GAE, and update the same `ActorCritic`. PPO takes several epochs of clipped-surrogate
minibatch steps; A2C takes one plain policy-gradient step over the whole rollout with RMSprop.

With ``--memory lstm`` (or ``gru``) a recurrent core sits between the CNN features and the heads
(`RecurrentActorCritic`). Its state lives in the agent, one row per env, zeroed for envs whose
episode ended (for Atari training that includes a lost life). The rollout keeps each env's state
at its start and the done flags, and the update re-runs whole env sequences from there
(truncated backpropagation through time over the rollout, as CleanRL's ``ppo_atari_lstm.py``):
a PPO minibatch is a group of envs with all their steps. Checkpoints hold the core's weights
(in ``net``) but no states: a resumed run, like a fresh one, starts every env from zeros.

With game features (``num_game_features``, train.py's ``--game-features``) the network has a
game-feature head (`pixelplay.agents.networks.game_feature_head`; on the CNN features, before a
recurrent core) and the rollout keeps the labels of every stored observation. The labels of an
observation arrive with it: those of the first observations from `observe_first` (``envs.labels``
after ``envs.reset()``), those of each later one in the `StepResult` that brought it
(``result.labels``), which the agent keeps until that observation is stored at the next
`observe`. Each minibatch adds ``game_feature_coef`` times the head's binary cross-entropy to
the loss (Lample & Chaplot 2017). Acting never runs the head.

With a teacher (``with_teacher``, train.py's ``--teacher aimer``) the rollout also keeps the
actions the env's scripted teacher advised for each stored observation (a bitmask; 0: none), and
each minibatch adds ``teacher_coef`` (annealed linearly to 0 over ``teacher_anneal_steps`` env
steps) times the mean over the advised rows of -log pi(advised set), the policy's log-probability
of taking one of the advised actions: Kickstarting's distillation term (Schmitt et al. 2018, eq. 2)
for a teacher that only says which of the actions it would accept (the aimer advises a turn and a
trigger, whatever the legs do), on the student's own trajectories. The advice
arrives with its observation as the labels do (`observe_first`, ``result.advice``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.distributions import Categorical

from pixelplay.agents.agent import checked_labels
from pixelplay.agents.config import ConfigError, bounded
from pixelplay.agents.cuda_graphs import GraphCache
from pixelplay.agents.networks import (
    ActorCritic,
    MemoryConfig,
    RecurrentActorCritic,
    build_extractor,
    game_feature_loss,
)
from pixelplay.agents.rollout import RolloutBatch, RolloutStorage, compute_gae
from pixelplay.envs.errors import PixelplayError
from pixelplay.envs.vec import StepResult


@dataclass
class ActorCriticConfig(MemoryConfig):
    """What PPO and A2C share beyond the network: the weight of a teacher's advice."""

    teacher_coef: float = bounded(1.0, low=0.0)
    """with --teacher: weight of -log pi(advised actions) on frames with advice (Kickstarting, Schmitt et al. 2018)"""
    teacher_anneal_steps: int = bounded(0, low=0)
    """with --teacher: env steps over which teacher_coef falls linearly to 0 (0: it stays constant)"""

    def teacher_weight(self, step: int) -> float:
        """The teacher term's weight at env step ``step``."""
        if not self.teacher_anneal_steps:
            return self.teacher_coef
        return self.teacher_coef * max(0.0, 1.0 - step / self.teacher_anneal_steps)


@dataclass
class PPOConfig(ActorCriticConfig):
    """PPO hyperparameters; defaults are CleanRL's ``ppo_atari.py`` (Huang et al. 2022)."""

    learning_rate: float = bounded(2.5e-4, low=0.0)
    """Adam step size at the start of training"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0 over the run"""
    num_steps: int = bounded(128, low=1)
    """vector steps per rollout (the rollout holds num_steps * num_envs transitions)"""
    gamma: float = bounded(0.99, low=0.0, high=1.0)
    """discount factor"""
    gae_lambda: float = bounded(0.95, low=0.0, high=1.0)
    """GAE lambda (Schulman et al. 2016): bias-variance trade-off of the advantage"""
    num_minibatches: int = bounded(4, low=1)
    """minibatches per epoch (at most num_steps * num_envs)"""
    update_epochs: int = bounded(4, low=1)
    """passes over each rollout"""
    norm_adv: bool = True
    """normalise advantages per minibatch"""
    clip_coef: float = bounded(0.1, low=0.0)
    """surrogate clipping epsilon"""
    clip_vloss: bool = True
    """clip the value update around the old value, as in the PPO reference implementation"""
    ent_coef: float = 0.01
    """entropy bonus coefficient"""
    vf_coef: float = bounded(0.5, low=0.0)
    """value loss coefficient"""
    max_grad_norm: float = bounded(0.5, low=0.0)
    """global gradient-norm clip"""
    adam_eps: float = bounded(1e-5, low=0.0)
    """Adam epsilon (1e-5 as in OpenAI baselines, not PyTorch's 1e-8)"""
    cuda_graphs: bool = False
    """on CUDA, act from a captured CUDA graph: one launch per step instead of one per op (agents/cuda_graphs.py); off by default as it is unmeasured on a GPU yet; ignored on other devices"""

    def check_rollout(self, num_envs: int) -> None:
        """Refuse more minibatches than the rollout has transitions; with a recurrent core a
        minibatch is a group of whole env sequences, so num_envs must split evenly into them."""
        if self.memory != "none" and num_envs % self.num_minibatches:
            raise ConfigError(
                f"--memory {self.memory} takes minibatches of whole env sequences: num_envs={num_envs} must be "
                f"a multiple of num_minibatches={self.num_minibatches}"
            )
        if self.num_minibatches > self.num_steps * num_envs:
            raise ConfigError(
                f"num_minibatches={self.num_minibatches} exceeds the rollout of num_steps * num_envs = "
                f"{self.num_steps} * {num_envs} = {self.num_steps * num_envs} transitions"
            )


@dataclass
class A2CConfig(ActorCriticConfig):
    """Synchronous advantage actor-critic; defaults follow the A3C paper (Mnih et al. 2016) as
    Stable-Baselines3 and OpenAI baselines use them: 5-step rollouts, RMSprop, no GAE (lambda 1).
    One unclipped update per rollout, on all of it."""

    learning_rate: float = bounded(7e-4, low=0.0)
    """RMSprop step size at the start of training"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0 over the run"""
    num_steps: int = bounded(5, low=1)
    """vector steps per rollout; one update per rollout"""
    gamma: float = bounded(0.99, low=0.0, high=1.0)
    """discount factor"""
    gae_lambda: float = bounded(1.0, low=0.0, high=1.0)
    """1.0 gives the A3C n-step return; lower values use GAE"""
    norm_adv: bool = False
    """normalise advantages per update"""
    ent_coef: float = 0.01
    """entropy bonus coefficient"""
    vf_coef: float = bounded(0.5, low=0.0)
    """value loss coefficient"""
    max_grad_norm: float = bounded(0.5, low=0.0)
    """global gradient-norm clip"""
    rms_alpha: float = bounded(0.99, low=0.0, high=1.0)
    """RMSprop smoothing constant"""
    rms_eps: float = bounded(1e-5, low=0.0)
    """RMSprop epsilon"""
    cuda_graphs: bool = False
    """on CUDA, act from a captured CUDA graph: one launch per step instead of one per op (agents/cuda_graphs.py); off by default as it is unmeasured on a GPU yet; ignored on other devices"""

    def check_rollout(self, num_envs: int) -> None:
        """Any rollout size works: A2C updates on the whole rollout at once."""


class UpdatePlan(NamedTuple):
    """How an actor-critic update goes over its rollout: PPO's clipped epochs or A2C's one step."""

    epochs: int
    num_minibatches: int
    clip_coef: float | None
    """None: the plain policy gradient, no ratio clipping (A2C)"""
    clip_vloss: bool


class LossTerms(NamedTuple):
    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor


def actor_critic_loss(
    new_logprob: torch.Tensor,
    entropy: torch.Tensor,
    new_value: torch.Tensor,
    batch: RolloutBatch,
    *,
    clip_coef: float | None,
    clip_vloss: bool,
    vf_coef: float,
    ent_coef: float,
    norm_adv: bool,
) -> LossTerms:
    """PPO's clipped objective (``clip_coef`` set) or the plain policy gradient (``None``, A2C).

    Value loss 0.5 (V - R)^2, clipped around the old value when ``clip_vloss``; the total is
    policy - ent_coef * entropy + vf_coef * value (Schulman et al. 2017, eq. 9, as a loss).
    """
    advantage = batch.advantage
    if norm_adv and advantage.numel() > 1:
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
    log_ratio = new_logprob - batch.logprob
    ratio = log_ratio.exp()
    if clip_coef is None:
        policy_loss = -(advantage * new_logprob).mean()
        clip_fraction = torch.zeros((), device=advantage.device)
    else:
        unclipped = -advantage * ratio
        clipped = -advantage * ratio.clamp(1 - clip_coef, 1 + clip_coef)
        policy_loss = torch.max(unclipped, clipped).mean()
        clip_fraction = ((ratio - 1).abs() > clip_coef).float().mean()
    if clip_vloss and clip_coef is not None:
        value_clipped = batch.value + (new_value - batch.value).clamp(-clip_coef, clip_coef)
        value_loss = 0.5 * torch.max((new_value - batch.ret) ** 2, (value_clipped - batch.ret) ** 2).mean()
    else:
        value_loss = 0.5 * ((new_value - batch.ret) ** 2).mean()
    entropy_mean = entropy.mean()
    total = policy_loss - ent_coef * entropy_mean + vf_coef * value_loss
    # k3 estimator of KL(old || new) (Schulman 2020, "Approximating KL divergence")
    approx_kl = ((ratio - 1) - log_ratio).mean()
    return LossTerms(total, policy_loss, value_loss, entropy_mean, approx_kl, clip_fraction)


def teacher_loss(logits: torch.Tensor, advice: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, agreement, advised fraction)`` of a minibatch against a teacher's advice.

    ``advice`` (B,) holds each row's advised actions as a bitmask (bit ``a``: action ``a``), 0 where
    the teacher had none. The loss is the mean over the advised rows of -log sum over the advised
    actions of pi(a) (0 with none): its weight does not shrink where the teacher rarely has advice
    (a deathmatch agent sees a bot on ~5% of its frames, a defend-the-center one on ~50%). The
    agreement is the fraction of advised rows where the policy's most likely action is advised."""
    bits = torch.arange(logits.shape[-1], device=logits.device)
    allowed = (advice.unsqueeze(-1) >> bits) & 1 == 1
    advised = allowed.any(-1)
    # An unadvised row allows every action: its log-probability is exactly 0, it adds nothing.
    allowed_or_all = allowed | ~advised.unsqueeze(-1)
    log_prob = torch.logsumexp(logits.masked_fill(~allowed_or_all, float("-inf")), -1) - torch.logsumexp(logits, -1)
    count = advised.sum()
    loss = -log_prob.sum() / count.clamp(min=1)
    agreement = (allowed.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1) & advised).sum() / count.clamp(min=1)
    return loss, agreement.float(), count.float() / advice.numel()


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32; without autocast it already is, and nothing is dispatched."""
    return x if x.dtype == torch.float32 else x.float()


def _categorical(logits: torch.Tensor) -> Categorical:
    """The policy's distribution, without argument validation: validating the logits and each
    sampled action costs host syncs (``bool`` of a device tensor) on every step and minibatch,
    and they come from our own network and sampler."""
    return Categorical(logits=logits, validate_args=False)


class PPOAgent:
    """Acts with a sampled policy, stores rollouts on the device, updates every ``num_steps``."""

    off_policy = False  # the update needs the rollout's last step (see `Agent.off_policy`)

    def __init__(
        self,
        cfg: PPOConfig | A2CConfig,
        obs_shape: tuple[int, int, int],
        num_actions: int,
        num_envs: int,
        total_steps: int,
        device: torch.device,
        frame_stack: int = 1,
        world_size: int = 1,
        num_game_features: int = 0,
        with_teacher: bool = False,
    ):
        """``num_game_features``: the width of the game-feature head (``len(envs.spec.game_features)``);
        0 (default): no head, no label storage, nothing computed. ``with_teacher``: the envs
        advise actions (``envs.spec.teacher``), which the update distils with ``cfg.teacher_coef``."""
        # frame_stack is part of the common agent signature; an actor-critic needs no frame layout.
        self.recurrent = cfg.memory != "none"
        if not self.recurrent:
            cfg.check_rollout(num_envs)
        # A recurrent agent checks its rollout at each update instead (train.py checks it before
        # anything is created): load_agent builds one with a single env to evaluate, never to update.
        self.world_size = world_size
        self.gradient_sync: Callable[[Iterable[torch.nn.Parameter]], None] | None = None
        """Set under torchrun: averages the gradients over the ranks before each optimiser step."""
        self.cfg, self.device, self.total_steps = cfg, torch.device(device), total_steps
        self.num_envs = num_envs
        self.num_game_features = num_game_features
        self.with_teacher = with_teacher
        extractor = build_extractor(cfg.network, obs_shape, cfg.features_dim)
        if self.recurrent:
            self.net = RecurrentActorCritic(extractor, num_actions, cfg.memory, cfg.memory_size, num_game_features)
        else:
            self.net = ActorCritic(extractor, num_actions, num_game_features)
        self.net.to(self.device)
        if cfg.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.autocast = cfg.autocast(self.device)
        self._graphs = GraphCache(self.device, cfg.cuda_graphs)
        """acting's CUDA graphs (cfg.cuda_graphs, on CUDA only), captured on first use"""
        self.optimizer = self._make_optimizer()
        self.plan = self._update_plan()
        state_shape = (self.net.state_layers, cfg.memory_size) if self.recurrent else None
        self.storage = RolloutStorage(cfg.num_steps, num_envs, obs_shape, self.device, state_shape, num_game_features,
                                      with_teacher)
        self.batch_size = cfg.num_steps * num_envs
        self.minibatch_size = self.batch_size // self.plan.num_minibatches
        self._pending: dict[int, tuple[torch.Tensor | None, ...]] = {}
        """what `act` computed for a group of envs (keyed by its first row) until `observe` stores it"""
        self._next_obs: torch.Tensor | None = None
        """the observations (N, ...) each env acts on next: the update bootstraps from them"""
        self._state: torch.Tensor | None = None
        """recurrent: the core state (k, num_envs, H) each env acts from next; zeros at the start"""
        self._eval_state: torch.Tensor | None = None
        """recurrent: eval_act's own state, one row per row of its batch"""
        self._labels: torch.Tensor | None = None
        """with game features: the labels (N, F) of the observations the next `observe` stores"""
        self._advice: torch.Tensor | None = None
        """with a teacher: its advice (N,) for the observations the next `observe` stores"""
        if self.recurrent:
            self._state = self.net.initial_state(num_envs, self.device)

    def _update_plan(self) -> UpdatePlan:
        cfg = self.cfg
        return UpdatePlan(cfg.update_epochs, cfg.num_minibatches, cfg.clip_coef, cfg.clip_vloss)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        # Fused Adam: one kernel per tensor instead of a loop of ~10 ops; the same update up to rounding.
        fused = True if self.device.type in ("cpu", "cuda") else None
        return torch.optim.Adam(self.net.parameters(), lr=self.cfg.learning_rate, eps=self.cfg.adam_eps, fused=fused)

    def _forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.channels_last:
            obs = obs.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            logits, value = self.net(obs)
        # Distributions and losses in fp32: bf16 log-probabilities are too coarse for the ratio.
        return _fp32(logits), _fp32(value)

    def _forward_memory(
        self, obs: torch.Tensor, state: torch.Tensor, first: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The recurrent net over T steps of B sequences from ``state`` (`RecurrentActorCritic`)."""
        if self.cfg.channels_last:
            obs = obs.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            logits, value, state = self.net(obs, state, first)
        return _fp32(logits), _fp32(value), state

    def _forward_batch(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(logits, value, game-feature logits or None)`` of an update's minibatch (fp32)."""
        aux = self.num_game_features > 0
        obs = batch.obs
        if self.cfg.channels_last:
            obs = obs.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            if self.recurrent:
                out = self.net(obs, batch.state, batch.first, with_game_features=aux)
                out = (out[0], out[1], out[3] if aux else None)
            else:
                out = self.net(obs, with_game_features=True) if aux else (*self.net(obs), None)
        logits, value, feature_logits = out
        return _fp32(logits), _fp32(value), None if feature_logits is None else _fp32(feature_logits)

    def observe_first(self, obs: torch.Tensor, labels: torch.Tensor | None = None,
                      advice: torch.Tensor | None = None) -> None:
        """The envs were reset: ``obs`` starts an episode in every env; ``labels`` are its game-feature
        labels (``envs.labels``) and ``advice`` its teacher's advice (``envs.advice``),
        which the rollout stores with ``obs`` at the next `observe`. A recurrent core starts every
        env from zeros."""
        labels = checked_labels(labels, self.num_envs, self.num_game_features)
        advice = self._checked_advice(advice, self.num_envs)
        # Owned copies: `observe` overwrites them a group of envs at a time.
        self._labels = None if labels is None else labels.clone()
        self._advice = None if advice is None else advice.clone()
        self._next_obs = obs.clone()
        self._pending = {}
        if self.recurrent:
            self._state = self.net.initial_state(self.num_envs, self.device)

    def _rows(self, rows: slice | None) -> slice:
        """The envs a call is about: ``rows`` of the agent's ``num_envs``, all of them when None."""
        if rows is None:
            return slice(0, self.num_envs)
        start, stop, stride = rows.indices(self.num_envs)
        if stride != 1 or start >= stop:
            raise PixelplayError(f"rows must be a contiguous, non-empty slice of the {self.num_envs} envs, got {rows}")
        return slice(start, stop)

    def can_act(self, rows: slice | None = None) -> bool:
        """Whether the envs ``rows`` may act now: not once their part of the rollout is full, until
        the update has learned from it (the data stays strictly on-policy)."""
        return self.storage.has_room(self._rows(rows))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, step: int, rows: slice | None = None) -> torch.Tensor:
        """Training actions for the envs ``rows`` (default: all; ``obs`` holds their observations),
        sampled from the policy. The next `observe` for the same rows stores them."""
        rows = self._rows(rows)
        state = self._state[:, rows] if self.recurrent else None
        inputs = (obs, state) if self.recurrent else (obs,)
        if self._graphs.enabled:
            action, logprob, value, *next_state = self._graphs("act", self._policy_step, *inputs)
        else:
            action, logprob, value, *next_state = self._policy_step(*inputs)
        self._pending[rows.start] = (logprob, value, state, next_state[0] if next_state else None)
        return action

    def _policy_step(self, obs: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """``(action, its log-probability, value)`` and, recurrent, the state after ``obs``: a
        function of tensors to tensors, so that a CUDA graph can hold it."""
        if state is None:
            logits, value = self._forward(obs)
            next_state = ()
        else:
            logits, value, state = self._forward_memory(obs, state)
            next_state = (state,)
        dist = _categorical(logits)
        action = dist.sample()
        return (action, dist.log_prob(action), value, *next_state)

    @torch.no_grad()
    def eval_act(self, obs: torch.Tensor, first: torch.Tensor | None = None, greedy: bool = False) -> torch.Tensor:
        """The evaluation policy: a sample from the learned policy (as CleanRL and SB3 evaluate), or
        with ``greedy`` its most probable action (SB3's ``predict(deterministic=True)``).

        Feed-forward: episode starts (``first``) change nothing. Recurrent: a state of its own
        per row of the batch (not the training state), zeroed where ``first`` (bool (N,)) is true,
        and all of it when the batch size changes (a new evaluation)."""
        if not self.recurrent:
            logits, _ = self._forward(obs)
            return logits.argmax(-1) if greedy else _categorical(logits).sample()
        rows = obs.shape[0]
        if self._eval_state is None or self._eval_state.shape[1] != rows:
            self._eval_state = self.net.initial_state(rows, self.device)
        if first is not None:
            first = torch.as_tensor(first, dtype=torch.bool, device=self.device).reshape(1, rows)
        logits, _, self._eval_state = self._forward_memory(obs, self._eval_state, first)
        return logits.argmax(-1) if greedy else _categorical(logits).sample()

    @torch.no_grad()
    def observe(self, obs: torch.Tensor, action: torch.Tensor, result: StepResult, rows: slice | None = None) -> None:
        """Store the step of the envs ``rows`` (default: all) that `act` chose ``action`` for."""
        rows = self._rows(rows)
        pending = self._pending.pop(rows.start, None)
        if pending is None:
            raise PixelplayError(f"observe() for envs {rows.start}..{rows.stop - 1} without an act() for them")
        logprob, value, state, next_state = pending
        reward = result.reward
        # A time limit is not a death: fold gamma * V(final obs) into the reward (Pardo et al.
        # 2018, "Time Limits in Reinforcement Learning"); the next obs already belongs to the
        # next episode, so GAE cuts the chain there.
        if bool(result.truncated.any()):
            if self.recurrent:  # the final obs follows the step's state, before the reset
                _, final_value, _ = self._forward_memory(result.final_obs, next_state)
            else:
                _, final_value = self._forward(result.final_obs)
            reward = torch.where(result.truncated, reward + self.cfg.gamma * final_value, reward)
        done = result.terminated | result.truncated
        if self.num_game_features and self._labels is None:
            raise PixelplayError("observe() before observe_first(obs, envs.labels): the labels of the first "
                                 "observations come from the env's reset")
        size = rows.stop - rows.start
        labels = None if self._labels is None else self._labels[rows]
        advice = None if self._advice is None else self._advice[rows]
        self.storage.add(obs, action, logprob, value, reward, done, state, labels, advice, rows=rows)
        if self.recurrent:  # envs that finished start their next episode from zeros
            self._state[:, rows] = next_state * (~done).to(next_state.dtype).view(1, -1, 1)
        if self._next_obs is None:  # stepped without observe_first: the first observations were never seen
            self._next_obs = torch.zeros((self.num_envs, *result.obs.shape[1:]), dtype=result.obs.dtype,
                                         device=result.obs.device)
        self._next_obs[rows] = result.obs
        if labels is not None:  # result.obs's
            labels.copy_(checked_labels(result.labels, size, self.num_game_features))
        if advice is not None:
            advice.copy_(self._checked_advice(result.advice, size))

    def _checked_advice(self, advice: torch.Tensor | None, num_envs: int) -> torch.Tensor | None:
        """The teacher's advice to keep for the next observations of ``num_envs`` envs: None without
        a teacher; else ``advice`` (num_envs,), refused with one clear error when missing (envs
        built without one)."""
        if not self.with_teacher:
            return None
        if advice is None or tuple(advice.shape) != (num_envs,):
            got = "none" if advice is None else f"shape {tuple(advice.shape)}"
            raise PixelplayError(f"the agent learns from a teacher but got {got} advice for {num_envs} envs: "
                                 "build the envs with the teacher, and call observe_first(obs, envs.labels, "
                                 "envs.advice) after envs.reset()")
        return advice

    def ready(self, step: int) -> bool:
        return self.storage.full

    def resumed(self, global_step: int) -> str | None:
        """Nothing to rebuild: the next rollout starts from the restored weights."""
        return None

    def learned_step(self, global_step: int) -> int:
        """The env step the weights come from: a partial rollout not yet learned from does not
        count, so that a checkpoint saved mid-rollout makes --resume collect that rollout again."""
        return global_step - self.storage.stored * self.world_size

    def update(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        if cfg.anneal_lr:
            frac = max(0.0, 1.0 - (step - self.batch_size * self.world_size) / self.total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = frac * cfg.learning_rate
        if self.recurrent:
            cfg.check_rollout(self.num_envs)
        with torch.no_grad():
            if self.recurrent:
                _, last_value, _ = self._forward_memory(self._next_obs, self._state)
            else:
                _, last_value = self._forward(self._next_obs)
        storage = self.storage
        advantages, returns = compute_gae(
            storage.rewards, storage.values, storage.dones, last_value, cfg.gamma, cfg.gae_lambda
        )
        aux = self.num_game_features > 0
        teacher_weight = cfg.teacher_weight(step) if self.with_teacher else 0.0
        sums = torch.zeros(6 + 2 * aux + 3 * self.with_teacher, device=self.device)
        count = 0
        plan = self.plan
        for _ in range(plan.epochs):
            if self.recurrent:  # whole env sequences, re-run from the rollout's initial states
                batches = storage.sequences(advantages, returns, plan.num_minibatches)
            else:
                batches = storage.minibatches(advantages, returns, self.minibatch_size)
            for batch in batches:
                logits, new_value, feature_logits = self._forward_batch(batch)
                dist = _categorical(logits)
                terms = actor_critic_loss(
                    dist.log_prob(batch.action),
                    dist.entropy(),
                    new_value,
                    batch,
                    clip_coef=plan.clip_coef,
                    clip_vloss=plan.clip_vloss,
                    vf_coef=cfg.vf_coef,
                    ent_coef=cfg.ent_coef,
                    norm_adv=cfg.norm_adv,
                )
                stats = list(terms)
                if aux:  # the game-feature head's loss joins the total (Lample & Chaplot 2017)
                    bce, accuracy = game_feature_loss(feature_logits, batch.labels)
                    stats = [terms.total + cfg.game_feature_coef * bce, *stats[1:], bce, accuracy]
                if self.with_teacher:  # Kickstarting's distillation towards the advised actions
                    distill, agreement, advised = teacher_loss(logits, batch.advice)
                    stats = [stats[0] + teacher_weight * distill, *stats[1:], distill, agreement, advised]
                self.optimizer.zero_grad(set_to_none=True)
                stats[0].backward()
                if self.gradient_sync is not None:
                    self.gradient_sync(self.net.parameters())
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                sums += torch.stack([t.detach() for t in stats])
                count += 1
        storage.clear()
        # Explained variance of the value targets: 1 is perfect, 0 no better than a constant.
        var_ret = returns.var()
        explained = 1 - (returns - storage.values).var() / var_ret if var_ret > 0 else torch.tensor(float("nan"))
        means = (sums / count).tolist()  # one device sync per update, for logging
        metrics = {
            "losses/total": means[0],
            "losses/policy": means[1],
            "losses/value": means[2],
            "losses/entropy": means[3],
            "losses/approx_kl": means[4],
            "losses/clip_fraction": means[5],
            "losses/explained_variance": float(explained),
            "charts/learning_rate": self.optimizer.param_groups[0]["lr"],
        }
        if aux:
            metrics["losses/game_features"] = means[6]
            metrics["charts/game_feature_accuracy"] = means[7]
        if self.with_teacher:
            metrics["losses/teacher"], metrics["charts/teacher_agreement"], metrics["charts/advised_fraction"] = means[-3:]
            metrics["charts/teacher_weight"] = teacher_weight
        return metrics

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Weights and optimizer; a recurrent core's states are not saved: every env restarts
        from zeros (a resumed run collects its rollout afresh, see `learned_step`)."""
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.recurrent:
            self._state = self.net.initial_state(self.num_envs, self.device)
            self._eval_state = None


class A2CAgent(PPOAgent):
    """The same actor-critic and rollout; one unclipped update per rollout with RMSprop."""

    def _update_plan(self) -> UpdatePlan:
        return UpdatePlan(epochs=1, num_minibatches=1, clip_coef=None, clip_vloss=False)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        return torch.optim.RMSprop(
            self.net.parameters(), lr=cfg.learning_rate, alpha=cfg.rms_alpha, eps=cfg.rms_eps
        )
