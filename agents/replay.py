"""Device-resident experience replay: each frame stored once, n-step returns, prioritized sampling.

Why not Stable-Baselines3's ``ReplayBuffer``: it keeps numpy arrays on the host, stores every
observation stack twice (obs and next obs: 56 KB per Atari transition, 28-56 GB for 1M) and copies
each minibatch to the device (SB3 issues #314, #1149). Here everything lives in preallocated torch
tensors on the training device, each 84x84 frame is stored once (about 7.08 KB per Atari
transition, all tensors included) and a minibatch is gathered where it will be used.

Layout (the idea of Dopamine's ``circular_replay_buffer``: store frames, rebuild stacks at sample
time, but with batched tensor indexing instead of a Python loop per sample):

* every env owns a ring of ``F = capacity // num_envs`` *slots*; a slot holds one frame
  (``channels_per_frame`` channels) plus the data of the transition whose observation ends with
  that frame (action, reward, terminated, truncated, the env step it was added at);
* an episode is written as its whole first stack (``frame_stack`` slots, whatever padding the env
  used) and then one slot per step: the newest frame of each next observation. Within an episode
  the slots are contiguous, so the stack of the observation whose newest frame is in slot ``g`` is
  exactly slots ``g-k+1 .. g`` and no masking is needed: reconstruction is bit-exact for any
  padding (zeros, repeated first frame, no-op frames). Dopamine instead masks frames that cross an
  episode start to zero, which is exact only for zero-padding envs;
* at a done step the newest frame of ``final_obs`` takes the next slot (it is what a truncated
  episode bootstraps from) and the new episode's first stack follows. An episode of T transitions
  therefore uses T + k slots: ``capacity`` counts slots, and the buffer holds ``capacity`` minus
  ``k`` per stored episode start transitions (see ``__len__``);
* with ``num_labels`` (game features) a slot also holds the labels of the observation whose
  newest frame it holds, as bools (``num_labels`` bytes a slot; none allocated without them),
  and ``labels(batch.index)`` gives those of a sampled batch's ``obs``;
* which transitions may be sampled is kept in a sum tree over all slots (``agents.sum_tree``):
  a leaf is 0 for slots that hold no sampleable transition (episode padding, final frames, a
  transition whose n-step window is still open, or whose stack the ring has started to overwrite)
  and ``p**alpha`` (prioritized) or 1 (uniform) otherwise. Uniform sampling is the same tree
  descent with unit leaves, so both modes share one exact code path.

With ``sequence_length`` (DRQN: ``--memory`` for DQN) the buffer samples *sequences* instead of
transitions, from the same storage (one frame per slot, see `SequenceBatch` and
``sample_sequences``):

* a sequence is a window of ``burn_in + sequence_length + n_step`` consecutive slots of one env's
  ring: ``burn_in`` slots that only warm up a zero recurrent state (R2D2's "zero state + burn-in"
  variant, Kapturowski et al. 2019, sec. 3), ``sequence_length`` slots to learn from, and
  ``n_step`` more that only hold the observations the last ones bootstrap from;
* the window may cross episode boundaries: two more bools per slot say whether the slot holds a
  transition (not an episode's padding or final frame) and whether its observation starts an
  episode, where the network zeroes the state; the learner masks every slot without a
  transition. R2D2 instead cuts its stored sequences at episode ends and pads them; a zeroed
  state at the true episode start is the exact state there, so nothing is lost by crossing;
* the sum tree's leaves are then sequence *starts*. Counting every slot ever written per env
  (``written``), start ``s`` is sampleable while its window and the stack of its first
  observation are all in the ring: ``max(0, written - F) + k - 1 <= s <= written - window``.
  That interval only moves forward, so each ``add`` clears the starts that leave it and gives
  the ones that enter it the initial priority: no window ever spans the write head's seam.

Hot paths (``add``, ``sample``, ``update_priorities``) are fixed-shape tensor programs: no ``.item()``,
no host sync, no Python loop over envs or samples (the only loops run over the few tree levels and
are unrolled by Python, not data-dependent).
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import torch

from pixelplay.agents.sum_tree import SumTree, default_dtype
from pixelplay.envs.errors import PixelplayError

__all__ = ["ReplayBatch", "ReplayBuffer", "SequenceBatch"]


class ReplayBatch(NamedTuple):
    """A minibatch gathered on the buffer's device."""

    obs: torch.Tensor
    """uint8 (B, C, H, W): the observation the action was taken in."""
    action: torch.Tensor
    """int64 (B,): the action taken."""
    reward: torch.Tensor
    """float32 (B,): the n-step discounted return sum_{k<n} gamma^k r_{t+k}, cut at an episode end."""
    next_obs: torch.Tensor
    """uint8 (B, C, H, W): the observation to bootstrap from (obs at t+n, or the episode's final obs)."""
    discount: torch.Tensor
    """float32 (B,): gamma^steps to multiply the bootstrap value by; 0 if the episode terminated."""
    weight: torch.Tensor
    """float32 (B,): importance-sampling weights (ones for uniform replay)."""
    index: torch.Tensor
    """int64 (B,): buffer indices, for ``update_priorities`` and ``locate``."""


class SequenceBatch(NamedTuple):
    """A minibatch of sequences (DRQN), time-major, gathered on the buffer's device.

    Positions 0 .. W-1 of a window (W = ``burn_in + sequence_length + n_step``) are consecutive
    slots of one env's ring; the learning positions are ``burn_in .. burn_in + sequence_length - 1``,
    and the fields of shape (L, B) describe those (L = ``sequence_length``)."""

    obs: torch.Tensor
    """uint8 (W, B, C, H, W): the observation whose newest frame is at each position (slots
    without a transition hold an episode's padding or final frame: final observations are what
    truncated episodes bootstrap from; padding is fed to the network and masked)."""
    first: torch.Tensor
    """bool (W, B): the position's observation starts an episode: zero the state before it."""
    action: torch.Tensor
    """int64 (L, B): the action taken at each learning position."""
    reward: torch.Tensor
    """float32 (L, B): the n-step discounted return from each learning position, cut at an episode end."""
    discount: torch.Tensor
    """float32 (L, B): gamma^steps to multiply the bootstrap value by; 0 if the episode terminated."""
    bootstrap: torch.Tensor
    """int64 (L, B): the position (0 .. W-1) of the observation each learning position bootstraps from."""
    mask: torch.Tensor
    """bool (L, B): the learning position holds a transition (False: padding or a final frame)."""
    weight: torch.Tensor
    """float32 (B,): importance-sampling weights per sequence (ones for uniform replay)."""
    index: torch.Tensor
    """int64 (B,): the start of each sequence, for ``update_priorities``."""
    leaf: torch.Tensor
    """int64 (W, B): each position's slot index, for ``labels`` (game features)."""


def _free_memory_bytes(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device``, or None where we cannot tell.

    Module-level so that tests can monkeypatch it.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        import psutil  # optional: the most portable answer

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        # Linux: MemAvailable counts reclaimable page cache; SC_AVPHYS_PAGES (MemFree) does not and
        # would refuse buffers that fit on any machine that has read a few files.
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _check_settings(
    obs_shape: tuple[int, ...],
    frame_stack: int,
    n_step: int,
    num_envs: int,
    prioritized: bool,
    priority_eps: float,
    sequence_length: int = 0,
    burn_in: int = 0,
) -> None:
    """Refuse constructor settings the buffer cannot honour, before anything is sized."""
    if len(obs_shape) != 3:
        raise PixelplayError(f"replay needs (C, H, W) observations, got shape {obs_shape}")
    if frame_stack < 1 or obs_shape[0] % frame_stack:
        raise PixelplayError(
            f"observation has {obs_shape[0]} channels, not a multiple of frame_stack={frame_stack}; "
            "pass the env's real frame stack"
        )
    if n_step < 1:
        raise PixelplayError(f"n_step must be >= 1, got {n_step}")
    if num_envs < 1:
        raise PixelplayError(f"num_envs must be >= 1, got {num_envs}")
    if prioritized and priority_eps <= 0:
        raise PixelplayError("priority_eps must be > 0, or transitions with zero TD error are never replayed")
    if sequence_length < 0 or burn_in < 0:
        raise PixelplayError(f"sequence_length and burn_in must be >= 0, got {sequence_length} and {burn_in}")
    if burn_in and not sequence_length:
        raise PixelplayError("burn_in warms up the state of sequences: it needs sequence_length >= 1")


def _as_device(x: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Asynchronous only towards an accelerator: a non-blocking copy *to* the host can be read
    # before it lands.
    return torch.as_tensor(x).to(device=device, dtype=dtype, non_blocking=device.type != "cpu")


class ReplayBuffer:
    """Replay memory for one vector env, on the training device.

    A DQN agent calls ``add(...)`` once per vector step, ``batch = sample(32)`` per update and,
    with prioritized replay, ``update_priorities(batch.index, td_error.abs())``.

    Observations are stacks of ``frame_stack`` frames along the channel axis, oldest first, the
    newest frame in the last ``C // frame_stack`` channels (gymnasium ``FrameStackObservation``,
    SB3 ``VecFrameStack``). Pass the env's real ``frame_stack``: with ``frame_stack=1`` whole
    stacks are stored per step (correct, but k times the memory).
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, int, int],
        frame_stack: int,
        device: torch.device | str,
        *,
        n_step: int = 1,
        gamma: float = 0.99,
        prioritized: bool = False,
        alpha: float = 0.6,
        beta: float = 0.4,
        priority_eps: float = 1e-6,
        seed: int = 0,
        check_stacks: bool = False,
        num_labels: int = 0,
        sequence_length: int = 0,
        burn_in: int = 0,
    ):
        """``capacity`` counts slots for all envs together (``capacity // num_envs`` per env).

        ``sequence_length`` (DRQN): sample sequences of that many learning steps after ``burn_in``
        warm-up steps (``sample_sequences``) instead of transitions; 0 (default): transitions.

        ``num_labels``: the width of the per-observation labels ``add`` takes and ``sample``
        returns (game features); 0 (default): none, and no memory for them.

        ``check_stacks`` verifies on every ``add`` (with a host sync, so for tests and debugging)
        that each next obs is the obs shifted by one frame and that each obs continues the stored
        stream; it catches envs that stack newest-first or a caller that skips steps.
        """
        obs_shape = tuple(int(d) for d in obs_shape)
        _check_settings(obs_shape, frame_stack, n_step, num_envs, prioritized, priority_eps, sequence_length, burn_in)
        self.device = torch.device(device)
        self.num_envs = int(num_envs)
        self.obs_shape = obs_shape
        self.frame_stack = int(frame_stack)
        self.channels_per_frame = obs_shape[0] // frame_stack
        self.n_step = int(n_step)
        self.gamma = float(gamma)
        self.prioritized = bool(prioritized)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.priority_eps = float(priority_eps)
        self.seed = int(seed)
        self.check_stacks = bool(check_stacks)
        self.num_labels = int(num_labels)
        self.sequence_length = int(sequence_length)
        self.burn_in = int(burn_in)
        self.window = self.burn_in + self.sequence_length + self.n_step if self.sequence_length else 0
        """slots per sampled sequence (burn-in, learning, bootstrap); 0: the buffer samples transitions"""
        self.slots_per_env = int(capacity) // self.num_envs
        self._check_slots_per_env(capacity, num_envs)
        self.capacity = self.slots_per_env * self.num_envs

        plan = self._plan()
        self._check_free_memory(plan)
        self._tree = SumTree(self.capacity, self.device, dtype=self._tree_dtype)
        tree_levels = {f"tree{i}": level for i, level in enumerate(self._tree.levels)}
        self._t: dict[str, torch.Tensor] = {
            name: tree_levels[name]
            if name in tree_levels
            else torch.zeros(shape, dtype=dtype, device=self.device)
            for name, (shape, dtype) in plan.items()
        }
        t = self._t
        k, n = self.frame_stack, self.n_step
        F, c = self.slots_per_env, self.channels_per_frame
        self._frames = t["frames"]  # (N, F + 1, c, H, W); slot F is a per-env scratch slot
        self._frames_flat = self._frames.view(self.num_envs * (F + 1), c, *obs_shape[1:])
        self._action = t["action"].view(-1)  # all (N * F,): leaf index = env * F + slot
        self._reward = t["reward"].view(-1)
        self._terminated = t["terminated"].view(-1)
        self._truncated = t["truncated"].view(-1)
        self._step_id = t["step_id"].view(-1)
        self._labels = t["labels"].view(-1, self.num_labels) if self.num_labels else None  # (N * F, L)
        # Sequences only: per slot, does it hold a transition / does its obs start an episode;
        # per env, the slots written so far (absolute positions, the ring's head is written % F).
        self._has_transition = t["has_transition"].view(-1) if self.window else None
        self._starts_episode = t["starts_episode"].view(-1) if self.window else None
        self._written = t["written"] if self.window else None
        self._head = t["head"]  # (N,) next slot to write
        self._ep_len = t["ep_len"]  # (N,) transitions in the current episode so far
        self._count = t["count"]  # () sampleable transitions
        self._max_priority = t["max_priority"]  # () largest |td| + eps seen (Schaul et al. 2016)
        self._max_priority.fill_(1.0)
        self._env_ids = torch.arange(self.num_envs, device=self.device)
        self._gamma_pow = torch.tensor(
            [self.gamma**i for i in range(n + 1)], dtype=torch.float32, device=self.device
        )
        self._stack_offsets = torch.arange(-k + 1, 1, device=self.device)
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(self.seed)
        self._steps = 0  # add() calls so far (host int: no sync to read it)
        self._streaming = False  # False until the first add, and again after load_state_dict

    # ------------------------------------------------------------------ checks
    # The refusals of bad input, in the order the buffer meets them: the constructor's settings
    # (``_check_settings``, at module level as it needs no buffer), the ring and memory sizes,
    # ``add``'s observations (and with ``check_stacks`` their frame order, at the cost of a sync),
    # and a state dict before ``load_state_dict`` overwrites anything. ``sample`` refuses a call
    # before any n-step window can have closed where it is made. ``check_valid`` is another
    # kind: the buffer's own consistency, for tests and tools.

    def _check_slots_per_env(self, capacity: int, num_envs: int) -> None:
        k, n = self.frame_stack, self.n_step
        if self.window:
            # Sampleable starts fill max(0, written - F) + k - 1 .. written - window: at least two.
            min_slots = self.window + k
            if self.slots_per_env < min_slots:
                raise PixelplayError(
                    f"replay capacity {capacity:,} gives {self.slots_per_env} slots per env for {num_envs} envs; "
                    f"sequences of burn_in={self.burn_in} + sequence_length={self.sequence_length} + "
                    f"n_step={n} slots with frame_stack={k} need at least {min_slots} per env; raise --buffer-size "
                    "or shorten the sequences"
                )
            return
        # A step writes up to k + 1 slots and clears the k slots after them; the open n-step
        # windows and the slots about to be cleared must never meet in the ring.
        min_slots = (n + 1) * (k + 1) + k
        if self.slots_per_env < min_slots:
            raise PixelplayError(
                f"replay capacity {capacity:,} gives {self.slots_per_env} slots per env for {num_envs} envs; "
                f"n_step={n} and frame_stack={k} need at least {min_slots} per env; raise --buffer-size"
            )

    def _check_free_memory(self, plan: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
        need = sum(
            math.prod(shape) * torch.empty((), dtype=dtype).element_size() for shape, dtype in plan.values()
        )
        free = _free_memory_bytes(self.device)
        if free is not None and need > free:
            raise PixelplayError(
                f"replay of {self.capacity:,} transitions needs {need / 1e9:.1f} GB but only "
                f"{free / 1e9:.1f} GB is free on {self.device}; lower --buffer-size"
            )

    def _check_observations(self, **observations: torch.Tensor) -> None:
        shape = (self.num_envs, *self.obs_shape)
        for name, x in observations.items():
            if tuple(x.shape) != shape or x.dtype != torch.uint8:
                raise PixelplayError(
                    f"replay.add: {name} must be uint8 {shape}, got {x.dtype} {tuple(x.shape)}"
                )

    def _check_labels(self, **labels: torch.Tensor | None) -> None:
        shape = (self.num_envs, self.num_labels)
        for name, x in labels.items():
            if x is None or tuple(x.shape) != shape:
                got = "none" if x is None else f"shape {tuple(x.shape)}"
                raise PixelplayError(f"replay.add: {name} must be game-feature labels of shape {shape}, got {got}")

    def _check_stacks(self, obs, next_obs, final_obs, done) -> None:
        """Each next obs is obs shifted by one frame, and obs continues the stored stream (a sync)."""
        c = self.channels_per_frame
        ended = torch.where(done.view(-1, 1, 1, 1), final_obs, next_obs)
        if not bool((ended[:, :-c] == obs[:, c:]).all()):
            raise PixelplayError(
                "replay.add: next obs is not obs shifted by one frame; the replay expects stacks oldest "
                f"first, newest frame last, with frame_stack={self.frame_stack}"
            )
        if self._streaming:
            stored = self._gather_stacks(self._leaf(self._head - 1))
            if not bool((stored == obs).all()):
                raise PixelplayError("replay.add: obs does not continue the stored stream (a skipped step?)")

    def _check_state(self, state: dict[str, Any]) -> None:
        """``state`` is a state dict of a buffer built with this one's settings."""
        try:
            config, tensors = state["config"], state["tensors"]
            _steps, _rng_state = state["steps"], state["rng_state"]  # used once the tensors are in
        except (KeyError, TypeError):
            raise PixelplayError("replay state is not a ReplayBuffer.state_dict()") from None
        for key, value in self._config().items():
            if config.get(key) != value:
                raise PixelplayError(
                    f"saved replay has {key}={config.get(key)!r} but this one has {key}={value!r}; "
                    "build the buffer with the saved settings or start without the saved replay"
                )
        expected = self._saved_tensors()
        if set(tensors) != set(expected):
            raise PixelplayError(f"saved replay holds tensors {sorted(tensors)}, expected {sorted(expected)}")
        for name, t in expected.items():
            src = tensors[name]
            if tuple(src.shape) != tuple(t.shape) or src.dtype != t.dtype:
                raise PixelplayError(
                    f"saved replay tensor '{name}' is {src.dtype} {tuple(src.shape)}, expected {t.dtype} {tuple(t.shape)}"
                )

    def check_valid(self) -> tuple[bool, str]:
        """Internal consistency, as (ok, what is wrong), like DQN Zoo's replay ``check_valid``.

        A host sync, for tests and tools: the sum tree is consistent (``SumTree.check_valid``),
        ``len()`` counts exactly its positive leaves, uniform leaves are 0 or 1, and every env's
        write head and episode length are in range.
        """
        ok, why = self._tree.check_valid()
        if not ok:
            return False, f"sum tree: {why}"
        count, positive = int(self._count), self._tree.nonzero().numel()
        if count != positive:
            return False, f"the sampleable count is {count} but {positive} leaves are positive"
        if not self.prioritized:
            leaves = self._tree.levels[0]
            if not bool(((leaves == 0) | (leaves == 1)).all()):
                return False, "uniform replay has a leaf other than 0 or 1"
        if bool(((self._head < 0) | (self._head >= self.slots_per_env)).any()):
            return False, f"a write head is outside 0..{self.slots_per_env - 1}: {self._head.tolist()}"
        if bool((self._ep_len < 0).any()):
            return False, f"a negative episode length: {self._ep_len.tolist()}"
        if self.window and not torch.equal(self._written % self.slots_per_env, self._head):
            return False, f"slots written {self._written.tolist()} disagree with the write heads {self._head.tolist()}"
        return True, ""

    # ------------------------------------------------------------------ layout

    @property
    def _tree_dtype(self) -> torch.dtype:
        return default_dtype(self.device)

    def _plan(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Every tensor the buffer allocates: name -> (shape, dtype). The memory check sums this."""
        N, F, c = self.num_envs, self.slots_per_env, self.channels_per_frame
        plan: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
            "frames": ((N, F + 1, c, *self.obs_shape[1:]), torch.uint8),
            # int32: enough for any discrete action set and 2**31 vector steps, half of int64.
            "action": ((N, F), torch.int32),
            "reward": ((N, F), torch.float32),
            "terminated": ((N, F), torch.bool),
            "truncated": ((N, F), torch.bool),
            "step_id": ((N, F), torch.int32),
        }
        if self.num_labels:
            # bool: 0/1 labels at a byte each, beside the frame's 7 KB (84x84) it describes.
            plan["labels"] = ((N, F, self.num_labels), torch.bool)
        if self.window:
            plan["has_transition"] = ((N, F), torch.bool)
            plan["starts_episode"] = ((N, F), torch.bool)
            plan["written"] = ((N,), torch.int64)
        for i, size in enumerate(SumTree.level_sizes(self.capacity)):
            plan[f"tree{i}"] = ((size,), self._tree_dtype)
        plan["head"] = ((N,), torch.int64)
        plan["ep_len"] = ((N,), torch.int64)
        plan["count"] = ((), torch.int64)
        plan["max_priority"] = ((), self._tree_dtype)
        return plan

    @property
    def nbytes(self) -> int:
        """Bytes held by all of the buffer's tensors."""
        extra = [self._gamma_pow, self._stack_offsets, self._env_ids]
        return sum(x.numel() * x.element_size() for x in [*self._t.values(), *extra])

    def __len__(self) -> int:
        """Transitions that can be sampled now (n-step window complete, frames intact).

        Reads a device counter: a host sync, so keep it out of the per-step path (use ``ready``).
        """
        return int(self._count)

    @property
    def num_added(self) -> int:
        """Transitions ever added (all envs); a host counter, free to read."""
        return self._steps * self.num_envs

    def ready(self, min_size: int) -> bool:
        """At least ``min_size`` transitions added and ``sample`` is guaranteed something to draw.

        Counts added transitions on the host (no device sync); ``len()`` gives the exact number of
        sampleable ones, which trails it by up to ``n_step - 1`` per env plus the episode padding.
        """
        return self._steps >= self.min_steps and self.num_added >= min_size

    # ------------------------------------------------------------------ priorities

    def _update_leaves(
        self,
        clear: torch.Tensor,
        clear_mask: torch.Tensor,
        complete: torch.Tensor,
        complete_mask: torch.Tensor,
    ) -> None:
        """Zero the leaves ``clear[clear_mask]`` and give ``complete[complete_mask]`` the initial priority.

        Fixed shapes, no sync: masked-out entries are rewritten with their old value. Only empty
        leaves are completed, so a transition already sampled keeps its updated priority.
        """
        leaf = torch.cat([clear.reshape(-1), complete.reshape(-1)])
        old = self._tree.get(leaf)
        n_clear = clear.numel()
        old_clear, old_complete = old[:n_clear], old[n_clear:]
        clear_mask = clear_mask.reshape(-1)
        complete_mask = complete_mask.reshape(-1) & (old_complete == 0)
        if self.prioritized:
            # New transitions get the largest priority seen, so each is replayed at least once soon.
            initial = self._max_priority**self.alpha
        else:
            initial = torch.ones((), dtype=self._tree_dtype, device=self.device)
        new = torch.cat(
            [
                torch.where(clear_mask, torch.zeros_like(old_clear), old_clear),
                torch.where(complete_mask, initial, old_complete),
            ]
        )
        self._count += complete_mask.sum() - (clear_mask & (old_clear > 0)).sum()
        self._tree.set(leaf, new)

    # ------------------------------------------------------------------ adding

    def _leaf(self, slots: torch.Tensor) -> torch.Tensor:
        """Leaf index of per-env slots (N, ...) taken modulo the ring."""
        env = self._env_ids.view(-1, *([1] * (slots.dim() - 1)))
        return env * self.slots_per_env + slots % self.slots_per_env

    def _frame_index(self, slots: torch.Tensor) -> torch.Tensor:
        env = self._env_ids.view(-1, *([1] * (slots.dim() - 1)))
        return env * (self.slots_per_env + 1) + slots % self.slots_per_env

    def _complete_leaves(self, last: torch.Tensor, done: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Transitions whose n-step window closes now that the transition in slot ``last`` is stored.

        Candidates are ``last - j`` for j < n: the one n-1 back always (if it is in this episode),
        the others only when the episode ends here.
        """
        j = torch.arange(self.n_step, device=self.device)
        slots = last.unsqueeze(1) - j
        mask = (j < self._ep_len.unsqueeze(1)) & ((j == self.n_step - 1) | done.unsqueeze(1))
        return self._leaf(slots), mask

    def _start_streams(self, obs: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Begin new episodes in every env from ``obs`` (first add, or first add after loading).

        Stored episodes that were still running are cut as truncations: their last transition's
        next obs is stored, so bootstrapping from it is the right target, and the stream that
        continues now (a freshly reset env after ``--resume``) does not belong to them.
        """
        k = self.frame_stack
        if self._steps > 0:
            live = self._ep_len > 0
            last = self._leaf(self._head - 2)
            self._truncated.index_put_((last,), self._truncated.index_select(0, last) | live)
            if not self.window:  # sequences: the windows that hold it were complete already
                complete, complete_mask = self._complete_leaves(self._head - 2, live)
                empty = torch.zeros(0, dtype=torch.int64, device=self.device)
                self._update_leaves(empty, empty.bool(), complete, complete_mask)
        c, hw = self.channels_per_frame, self.obs_shape[1:]
        j = torch.arange(k, device=self.device)
        dest = self._frame_index(self._head.unsqueeze(1) + j)
        self._frames_flat.index_put_((dest.reshape(-1),), obs.reshape(self.num_envs * k, c, *hw))
        if self._labels is not None:  # obs's labels go with its newest frame
            self._labels.index_put_((self._leaf(self._head + k - 1),), labels)
        if self.window:
            j = torch.arange(k, device=self.device).expand(self.num_envs, k)
            self._mark_slots(self._head.unsqueeze(1) + j, torch.ones_like(j, dtype=torch.bool), j == k - 1)
            self._head.add_(k).remainder_(self.slots_per_env)
            self._advance_sequences(torch.full_like(self._head, k))
        else:
            # Writing slots head..head+k-1 breaks the stacks of the transitions in head..head+2k-2.
            clear = self._leaf(self._head.unsqueeze(1) + torch.arange(2 * k - 1, device=self.device))
            empty = torch.zeros(0, dtype=torch.int64, device=self.device)
            self._update_leaves(clear, torch.ones_like(clear, dtype=torch.bool), empty, empty.bool())
            self._head.add_(k).remainder_(self.slots_per_env)
        self._ep_len.zero_()
        self._streaming = True

    def _mark_slots(self, slots: torch.Tensor, mask: torch.Tensor, starts: torch.Tensor) -> None:
        """Sequences: new frames were written to ``slots[mask]`` (N, m): no transition there (yet),
        and their observations start an episode where ``starts``. Fixed shape: masked-out slots
        keep their flags."""
        leaf, mask = self._leaf(slots).reshape(-1), mask.reshape(-1)
        has = torch.where(mask, False, self._has_transition.index_select(0, leaf))
        first = torch.where(mask, starts.reshape(-1), self._starts_episode.index_select(0, leaf))
        self._has_transition.index_put_((leaf,), has)
        self._starts_episode.index_put_((leaf,), first)

    def _sequence_bounds(self, written: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(first, last) sampleable sequence start per env after ``written`` slots: the window
        ``s .. s + window - 1`` and the stack of its first obs (from ``s - k + 1``) in the ring."""
        low = (written - self.slots_per_env).clamp(min=0) + self.frame_stack - 1
        return low, written - self.window

    def _advance_sequences(self, advance: torch.Tensor) -> None:
        """Sequences: ``advance`` (N,) slots were just written per env. The interval of
        sampleable starts moves forward by as much: clear the starts that left it (their oldest
        frames are overwritten), then give the ones that entered it (their last slot is written)
        the initial priority. Two tree writes, so a leaf that leaves and enters in one step (a
        tiny window) ends up set."""
        low, high = self._sequence_bounds(self._written)
        self._written.add_(advance)
        new_low, new_high = self._sequence_bounds(self._written)
        j = torch.arange(self.frame_stack + 1, device=self.device)  # an add writes at most k + 1 slots
        leaving = low.unsqueeze(1) + j
        entering = high.unsqueeze(1) + 1 + j
        entered = (entering <= new_high.unsqueeze(1)) & (entering >= new_low.unsqueeze(1))
        empty = torch.zeros(0, dtype=torch.int64, device=self.device)
        self._update_leaves(self._leaf(leaving), leaving < new_low.unsqueeze(1), empty, empty.bool())
        self._update_leaves(empty, empty.bool(), self._leaf(entering), entered)

    def add(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        next_obs: torch.Tensor,
        final_obs: torch.Tensor,
        labels: torch.Tensor | None = None,
        next_labels: torch.Tensor | None = None,
    ) -> None:
        """Store one vector-env step: tensors of shape (N, ...), as `envs.vec.VecEnv.step` returns.

        ``next_obs`` is the env's returned obs (first obs of the next episode where done) and
        ``final_obs`` the last obs of the finished episode where done (equal to ``next_obs``
        elsewhere). ``obs`` is read only to start the stream; later it is already stored as the
        previous ``next_obs``. Per env this writes one frame, or 1 + k at an episode end.

        A buffer with ``num_labels`` takes the 0/1 labels (N, L) of ``obs`` (``labels``, read,
        like ``obs``, only to start the stream) and of ``next_obs`` (``next_labels``:
        `StepResult.labels`); ``final_obs`` needs none, it is never sampled as an observation.
        """
        N, k, F = self.num_envs, self.frame_stack, self.slots_per_env
        c, hw = self.channels_per_frame, self.obs_shape[1:]
        self._check_observations(obs=obs, next_obs=next_obs, final_obs=final_obs)
        if self.num_labels:
            self._check_labels(**({} if self._streaming else {"labels": labels}), next_labels=next_labels)
        dev = self.device
        obs, next_obs, final_obs = (_as_device(x, dev, torch.uint8) for x in (obs, next_obs, final_obs))
        action = _as_device(action, dev, torch.int32).reshape(N)
        reward = _as_device(reward, dev, torch.float32).reshape(N)
        truncated = _as_device(truncated, dev, torch.bool).reshape(N)
        # A step flagged both is a time limit (as envs.vec decides): bootstrap.
        terminated = _as_device(terminated, dev, torch.bool).reshape(N) & ~truncated
        done = terminated | truncated
        if self.check_stacks:
            self._check_stacks(obs, next_obs, final_obs, done)
        if not self._streaming:
            first_labels = _as_device(labels, dev, torch.float32) > 0.5 if self.num_labels else None
            self._start_streams(obs, first_labels)

        head = self._head
        last = head - 1  # slot of obs's newest frame: this step's transition lives there
        leaf = self._leaf(last)
        self._action.index_put_((leaf,), action)
        self._reward.index_put_((leaf,), reward)
        self._terminated.index_put_((leaf,), terminated)
        self._truncated.index_put_((leaf,), truncated)
        self._step_id.index_fill_(0, leaf, self._steps)

        # Frames: the newest frame of the obs that ends this transition (final_obs where done)...
        newest = torch.where(done.view(N, 1, 1, 1), final_obs[:, -c:], next_obs[:, -c:])
        self._frames_flat.index_put_((self._frame_index(head),), newest)
        # ...and, where done, the new episode's whole first stack. Fixed shape without a host sync:
        # envs that did not finish send these k frames to their scratch slot F, which is never read.
        j = torch.arange(k, device=dev)
        dest = self._frame_index(head.unsqueeze(1) + 1 + j)
        scratch = (self._env_ids * (F + 1) + F).unsqueeze(1)
        dest = torch.where(done.unsqueeze(1), dest, scratch)
        self._frames_flat.index_put_((dest.reshape(-1),), next_obs.reshape(N * k, c, *hw))
        if self._labels is not None:
            # next_obs's labels go with its newest frame: slot head, or head + k after a reset.
            newest_slot = torch.where(done, head + k, head)
            self._labels.index_put_((self._leaf(newest_slot),), _as_device(next_labels, dev, torch.float32) > 0.5)
        advance = torch.where(done, k + 1, 1)
        self._ep_len.add_(1)
        if self.window:
            # Sequences: slot head holds next_obs's (or final_obs's) frame, head+1..head+k the new
            # episode's first stack where done, whose newest frame starts the episode.
            j = torch.arange(k + 1, device=dev)
            self._mark_slots(head.unsqueeze(1) + j, (j == 0) | done.unsqueeze(1), (j == k) & done.unsqueeze(1))
            self._has_transition.index_fill_(0, leaf, True)
            self._head.add_(advance).remainder_(F)
            self._advance_sequences(advance)
        else:
            # Priorities. Writing slot w breaks the stacks of transitions in slots w..w+k-1 (the
            # oldest in the ring); this step writes head (and head+1..head+k where done).
            j2 = torch.arange(2 * k, device=dev)
            clear = self._leaf(head.unsqueeze(1) + j2)
            clear_mask = (j2 < k) | done.unsqueeze(1)
            complete, complete_mask = self._complete_leaves(last, done)
            self._update_leaves(clear, clear_mask, complete, complete_mask)
            self._head.add_(advance).remainder_(F)
        self._ep_len.masked_fill_(done, 0)
        self._steps += 1

    def break_streams(self) -> None:
        """Treat the next ``add``'s obs as new episodes (e.g. after evaluating with the same envs).

        Running episodes are cut as truncations. ``load_state_dict`` does this implicitly.
        """
        self._streaming = False

    # ------------------------------------------------------------------ sampling

    def _gather_stacks(self, leaf: torch.Tensor) -> torch.Tensor:
        """Stacks whose newest frame is at each leaf's slot: (B, C, H, W), one batched gather."""
        F = self.slots_per_env
        env, slot = leaf // F, leaf % F
        frame = env.unsqueeze(1) * (F + 1) + (slot.unsqueeze(1) + self._stack_offsets) % F
        frames = self._frames_flat.index_select(0, frame.reshape(-1))
        return frames.view(leaf.shape[0], *self.obs_shape)

    def get(self, index: torch.Tensor) -> ReplayBatch:
        """Gather the transitions at ``index`` as ``sample`` would, with unit weights.

        Only meaningful for sampleable indices (``sampleable_indices``); used by tests and tools.
        """
        if self.window:
            raise PixelplayError("replay.get: this buffer samples sequences (get_sequences)")
        index = _as_device(index, self.device, torch.int64).reshape(-1)
        B, F = index.shape[0], self.slots_per_env
        env, slot = index // F, index % F
        ret, steps, discount = self._n_step(env, slot)
        next_leaf = env * F + (slot + steps) % F
        return ReplayBatch(
            obs=self._gather_stacks(index),
            action=self._action[index].long(),
            reward=ret,
            next_obs=self._gather_stacks(next_leaf),
            discount=discount,
            weight=torch.ones(B, dtype=torch.float32, device=self.device),
            index=index,
        )

    def _n_step(self, env: torch.Tensor, slot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(return, steps, discount)`` of the transitions in ``slot`` of ``env`` (any shape):
        the n-step return cut at an episode end, how many steps later the bootstrap obs is, and
        gamma**steps (0 where the episode terminated)."""
        F, n = self.slots_per_env, self.n_step
        j = torch.arange(n, device=self.device)
        window = env.unsqueeze(-1) * F + (slot.unsqueeze(-1) + j) % F
        reward = self._reward[window]
        terminated = self._terminated[window]
        done = terminated | self._truncated[window]
        # alive[..., j]: no episode end among steps 0..j-1 of the window, so step j counts.
        alive = torch.ones_like(done)
        if n > 1:
            alive[..., 1:] = torch.cumprod((~done[..., :-1]).to(torch.int32), -1).bool()
        ret = (torch.where(alive, reward, 0.0) * self._gamma_pow[:n]).sum(-1)
        steps = alive.sum(-1)
        # n-step target (Sutton & Barto 7.1): bootstrap from the obs `steps` later with gamma^steps,
        # or not at all when the episode terminated inside the window.
        terminal = (terminated & alive).any(-1)
        discount = torch.where(terminal, 0.0, self._gamma_pow[steps])
        return ret, steps, discount

    def get_sequences(self, index: torch.Tensor) -> SequenceBatch:
        """Gather the sequences starting at ``index`` as ``sample_sequences`` would, with unit
        weights. Only meaningful for sampleable starts (``sampleable_indices``)."""
        if not self.window:
            raise PixelplayError("replay.get_sequences: this buffer samples transitions (built without sequence_length)")
        index = _as_device(index, self.device, torch.int64).reshape(-1)
        B, F, W = index.shape[0], self.slots_per_env, self.window
        env, start = index // F, index % F
        position = start.unsqueeze(0) + torch.arange(W, device=self.device).unsqueeze(1)  # (W, B)
        leaf = env.unsqueeze(0) * F + position % F
        learn = slice(self.burn_in, self.burn_in + self.sequence_length)
        ret, steps, discount = self._n_step(env.expand(self.sequence_length, B), position[learn])
        offsets = torch.arange(self.burn_in, self.burn_in + self.sequence_length, device=self.device)
        return SequenceBatch(
            obs=self._gather_stacks(leaf.reshape(-1)).view(W, B, *self.obs_shape),
            first=self._starts_episode[leaf],
            action=self._action[leaf[learn]].long(),
            reward=ret,
            discount=discount,
            bootstrap=offsets.unsqueeze(1) + steps,
            mask=self._has_transition[leaf[learn]],
            weight=torch.ones(B, dtype=torch.float32, device=self.device),
            index=index,
            leaf=leaf,
        )

    def labels(self, index: torch.Tensor) -> torch.Tensor:
        """float32 (B, L), 0.0 or 1.0: the labels of the observations at ``index`` (a sampled
        batch's ``obs``: ``labels(batch.index)``), for a buffer with ``num_labels``. A method, not a
        `ReplayBatch` field, so that batches of a buffer without labels are what they always were."""
        if self._labels is None:
            raise PixelplayError("replay.labels: this buffer stores no labels (built with num_labels=0)")
        return self._labels[_as_device(index, self.device, torch.int64).reshape(-1)].float()

    def sample(
        self, batch_size: int, beta: float | None = None, generator: torch.Generator | None = None
    ) -> ReplayBatch:
        """Draw ``batch_size`` transitions (with replacement) on the device.

        Uniform, or proportional to p**alpha (Schaul et al. 2016, sec. 3.3) with importance-sampling
        weights w = (N P(i))**-beta divided by the batch's largest weight, as Dopamine's Rainbow
        and rlpyt do (only scales updates down; no second min-tree needed).
        """
        if self.window:
            raise PixelplayError("replay.sample: this buffer samples sequences (sample_sequences)")
        if self._steps < self.n_step:
            raise PixelplayError(
                f"replay.sample: only {self._steps} steps added, n_step={self.n_step} needs more; check ready() first"
            )
        leaf, weight = self._draw(batch_size, beta, generator)
        batch = self.get(leaf)
        return batch if weight is None else batch._replace(weight=weight)

    @property
    def min_steps(self) -> int:
        """``add`` calls before ``sample`` (or ``sample_sequences``) has something to draw in every
        env: the n-step window of a transition, or a whole sequence window (the first add writes
        k + 1 slots, each later one at least 1)."""
        return self.window - 1 if self.window else self.n_step

    def sample_sequences(
        self, batch_size: int, beta: float | None = None, generator: torch.Generator | None = None
    ) -> SequenceBatch:
        """Draw ``batch_size`` sequences (with replacement) on the device: uniformly over the
        sampleable starts, or proportionally to their priorities with importance-sampling weights
        per sequence, as ``sample`` does for transitions (R2D2 prioritizes whole sequences)."""
        if not self.window:
            raise PixelplayError("replay.sample_sequences: this buffer samples transitions (built without sequence_length)")
        if self._steps < self.min_steps:
            raise PixelplayError(
                f"replay.sample_sequences: only {self._steps} steps added, windows of {self.window} slots need "
                f"{self.min_steps}; check ready() first"
            )
        leaf, weight = self._draw(batch_size, beta, generator)
        batch = self.get_sequences(leaf)
        return batch if weight is None else batch._replace(weight=weight)

    def _draw(
        self, batch_size: int, beta: float | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Leaves drawn from the sum tree and, prioritized, their importance weights."""
        gen = self._generator if generator is None else generator
        u = torch.rand(batch_size, dtype=self._tree_dtype, device=self.device, generator=gen)
        total = self._tree.total
        leaf = self._tree.query(u * total)
        if not self.prioritized:
            return leaf, None
        beta = self.beta if beta is None else beta
        prob = self._tree.get(leaf) / total
        weight = (self._count * prob).pow(-beta)
        return leaf, (weight / weight.max()).float()

    def update_priorities(self, index: torch.Tensor, td_error: torch.Tensor) -> None:
        """Set p = |td_error| + eps for sampled indices (no-op for uniform replay). For sequences
        the caller passes each sequence's mix of its TD errors (R2D2's eta max + (1 - eta) mean).

        Indices whose transitions left the buffer since they were sampled stay empty. Duplicate
        indices (sampling is with replacement) keep one of their values.
        """
        if not self.prioritized:
            return
        index = _as_device(index, self.device, torch.int64).reshape(-1)
        priority = td_error.detach().to(self.device, self._tree_dtype).abs().reshape(-1) + self.priority_eps
        torch.maximum(self._max_priority, priority.max(), out=self._max_priority)
        old = self._tree.get(index)
        self._tree.set(index, torch.where(old > 0, priority**self.alpha, old))

    # ------------------------------------------------------------------ inspection

    def locate(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(env, step) of buffer indices: the env and the ``add`` call (0-based) that stored them."""
        index = _as_device(index, self.device, torch.int64)
        return index // self.slots_per_env, self._step_id[index].long()

    def sampleable_indices(self) -> torch.Tensor:
        """Every index ``sample`` can return now (a host sync; for tests and tools)."""
        return self._tree.nonzero()

    def priorities(self, index: torch.Tensor) -> torch.Tensor:
        """p**alpha (prioritized) or 1 (uniform) of buffer indices; 0 where not sampleable."""
        return self._tree.get(_as_device(index, self.device, torch.int64))

    # ------------------------------------------------------------------ state

    def _config(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "num_envs": self.num_envs,
            "obs_shape": list(self.obs_shape),
            "frame_stack": self.frame_stack,
            "n_step": self.n_step,
            "gamma": self.gamma,
            "prioritized": self.prioritized,
            "alpha": self.alpha,
            "priority_eps": self.priority_eps,
            # Only with labels: the saved replays of buffers without them keep loading.
            **({"num_labels": self.num_labels} if self.num_labels else {}),
            **({"sequence_length": self.sequence_length, "burn_in": self.burn_in} if self.window else {}),
        }

    def _saved_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors a state dict holds: all but the sum tree's inner levels (sums of the leaves)."""
        return {name: t for name, t in self._t.items() if not name.startswith("tree") or name == "tree0"}

    def state_dict(self) -> dict[str, Any]:
        """Tensors and primitives only, so ``torch.load(weights_only=True)`` reads it.

        The tensors are the buffer's own (no copy), as with ``nn.Module.state_dict``; the tree's
        inner levels are rebuilt on load from the leaves.
        """
        return {
            "config": self._config(),
            "tensors": self._saved_tensors(),
            "steps": self._steps,
            "rng_state": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; the next ``add`` starts new episodes (see ``break_streams``)."""
        self._check_state(state)
        for name, t in self._saved_tensors().items():
            t.copy_(state["tensors"][name])
        self._tree.rebuild()
        self._steps = int(state["steps"])
        self._generator.set_state(state["rng_state"])
        self._streaming = False
