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


def _as_device(x: Any, device: torch.device, dtype: torch.dtype, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """``x`` as a ``dtype`` tensor on ``device`` (reshaped to ``shape`` if given). What is already
    so, the usual case on the step path, is returned as it is: not even a no-op is dispatched."""
    if not (isinstance(x, torch.Tensor) and x.dtype == dtype and x.device == device):
        # Asynchronous only towards an accelerator: a non-blocking copy *to* the host can be read
        # before it lands.
        x = torch.as_tensor(x).to(device=device, dtype=dtype, non_blocking=device.type != "cpu")
    return x if shape is None or x.shape == shape else x.reshape(shape)


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
        self._make_index_constants()
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(self.seed)
        self._steps = 0  # add() calls so far (host int: no sync to read it)
        self._streaming = False  # False until the first add, and again after load_state_dict

    def _make_index_constants(self) -> None:
        """The constant index tensors of the hot paths, made once.

        ``add`` and ``sample`` then cost a fixed, small number of tensor ops whatever the number
        of envs or the batch size: no ``arange`` per call and no loop over envs or samples. On an
        accelerator every op is a kernel launch; bench/op_counts.py counts them.
        """
        dev, N, F = self.device, self.num_envs, self.slots_per_env
        k, n = self.frame_stack, self.n_step
        env = torch.arange(N, device=dev).unsqueeze(1)
        self._leaf_base = env * F
        """(N, 1): the leaf of slot s of an env is ``env * F + s``"""
        self._frame_base = env * (F + 1)
        """(N, 1): its row of frames is ``env * (F + 1) + s``; row ``env * (F + 1) + F`` is the env's scratch"""
        self._scratch = self._frame_base + F
        self._gamma_pow = torch.tensor([self.gamma**i for i in range(n + 1)], dtype=torch.float32, device=dev)
        self._gamma_n = self._gamma_pow[:n]
        self._stack_offsets = torch.arange(-k + 1, 1, device=dev)
        """a stack's slots relative to its newest frame's"""
        self._stack_cols = torch.arange(k, device=dev)
        # add: the slots one step touches, relative to the write head. Columns 0 .. n-1 are
        # head-n .. head-1, the transitions whose n-step window may close now (this step's is in
        # head-1); columns n .. n+2k-1 are head .. head+2k-1: the new frames (head, and head+1 ..
        # head+k where an episode ended) and the slots whose stacks those writes break.
        offsets = torch.arange(-n, 2 * k, device=dev)
        self._add_offsets = offsets
        self._add_completes = offsets < 0
        """the columns whose transitions may complete (the others may be cleared)"""
        self._add_age = torch.where(offsets < 0, -1 - offsets, -1)
        """how many steps before this step's transition a candidate was stored; -1 where clearing"""
        self._add_always = (offsets == -n) | ((offsets >= 0) & (offsets < k))
        """the candidates of every step, done or not: the transition n-1 back completes, and the
        stacks that slot head's frame breaks are cleared"""
        # sample: a transition's obs stack (slot-k+1 .. slot) and n-step window (slot .. slot+n-1),
        # and slot+n: the next obs, steps 1 .. n after slot, is a stack within these columns.
        self._sample_offsets = torch.arange(-k + 1, n + 1, device=dev)
        # Sum-tree writes with one role for every column (see _update_leaves).
        self._completing = torch.ones(1, dtype=torch.bool, device=dev)
        self._clearing = torch.zeros(1, dtype=torch.bool, device=dev)
        self._one = torch.ones((), dtype=self._tree_dtype, device=dev)
        if self.window:
            # add, sequences: columns n-1 .. n+k of the add offsets are head-1 .. head+k.
            written = offsets[n - 1 : n + k + 1]
            self._seq_transition = written == -1
            """head-1: holds this step's transition"""
            self._seq_written_always = written == 0
            self._seq_written_if_done = written > 0
            self._seq_episode_start = written == k
            """head+k: the newest frame of the new episode's first stack (where done)"""
            self._seq_steps = torch.arange(k + 1, device=dev)
            """an add writes at most k + 1 slots per env"""
            self._window_offsets = torch.arange(self.window, device=dev).unsqueeze(1)
            self._learn_offsets = torch.arange(self.burn_in, self.burn_in + self.sequence_length, device=dev)

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
        """Bytes of the buffer's storage (what ``_plan`` lists and the memory check sums); the
        constant index tensors, well under a kilobyte, are left out."""
        return sum(x.numel() * x.element_size() for x in self._t.values())

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

    def _update_leaves(self, leaf: torch.Tensor, mask: torch.Tensor, complete: torch.Tensor) -> None:
        """One sum-tree write for the candidate leaves ``leaf[mask]`` (both (N, m)): in the columns
        where ``complete`` ((m,) or (1,) bool) is true an *empty* leaf gets the initial priority,
        in the others a leaf is cleared to 0.

        Fixed shapes, no sync: the other leaves are rewritten with their old value. Only empty
        leaves are completed, so a transition already sampled keeps its updated priority.
        """
        old = self._tree.get(leaf)
        # Completing changes an empty leaf, clearing a positive one.
        change = mask & ((old == 0) == complete)
        if self.prioritized:
            # New transitions get the largest priority seen, so each is replayed at least once soon.
            initial = self._max_priority**self.alpha
        else:
            initial = self._one
        new = torch.where(change, complete * initial, old)
        completed = change & complete
        self._count += completed.sum() * 2 - change.sum()  # + the completed, - the cleared
        self._tree.set(leaf.reshape(-1), new.view(-1))

    # ------------------------------------------------------------------ adding

    def _leaf(self, slots: torch.Tensor) -> torch.Tensor:
        """Leaf index of per-env slots (N, ...) taken modulo the ring."""
        base = self._leaf_base.view(-1, *([1] * (slots.dim() - 1)))
        return base + slots % self.slots_per_env

    def _frame_index(self, slots: torch.Tensor) -> torch.Tensor:
        base = self._frame_base.view(-1, *([1] * (slots.dim() - 1)))
        return base + slots % self.slots_per_env

    def _start_streams(self, obs: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Begin new episodes in every env from ``obs`` (first add, or first add after loading).

        Stored episodes that were still running are cut as truncations: their last transition's
        next obs is stored, so bootstrapping from it is the right target, and the stream that
        continues now (a freshly reset env after ``--resume``) does not belong to them.
        """
        k, n = self.frame_stack, self.n_step
        if self._steps > 0:
            live = self._ep_len > 0
            last = self._leaf(self._head - 2)
            self._truncated.index_put_((last,), self._truncated.index_select(0, last) | live)
            if not self.window:  # sequences: the windows that hold it were complete already
                # The cut closes the n-step windows of the episode's last n transitions.
                j = torch.arange(n, device=self.device)
                mask = (j < self._ep_len.unsqueeze(1)) & live.unsqueeze(1)
                self._update_leaves(self._leaf(self._head.unsqueeze(1) - 2 - j), mask, self._completing)
        c, hw = self.channels_per_frame, self.obs_shape[1:]
        j = torch.arange(k, device=self.device)
        dest = self._frame_index(self._head.unsqueeze(1) + j)
        self._frames_flat.index_put_((dest.reshape(-1),), obs.reshape(self.num_envs * k, c, *hw))
        if self._labels is not None:  # obs's labels go with its newest frame
            self._labels.index_put_((self._leaf(self._head + k - 1),), labels)
        if self.window:
            j = j.expand(self.num_envs, k)
            leaf = self._leaf(self._head.unsqueeze(1) + j)
            self._has_transition.index_put_((leaf,), torch.zeros_like(leaf, dtype=torch.bool))
            self._starts_episode.index_put_((leaf,), j == k - 1)
            self._head.add_(k).remainder_(self.slots_per_env)
            self._advance_sequences(torch.full_like(self._head, k))
        else:
            # Writing slots head..head+k-1 breaks the stacks of the transitions in head..head+2k-2.
            clear = self._leaf(self._head.unsqueeze(1) + torch.arange(2 * k - 1, device=self.device))
            self._update_leaves(clear, torch.ones_like(clear, dtype=torch.bool), self._clearing)
            self._head.add_(k).remainder_(self.slots_per_env)
        self._ep_len.zero_()
        self._streaming = True

    def _mark_written(self, leaf: torch.Tensor, done: torch.Tensor) -> None:
        """Sequences: the flags of slots head-1 .. head+k (``leaf`` (N, k + 2)) after an add.

        Slot head-1 now holds a transition; the frames just written (slot head, and head+1 ..
        head+k where ``done`` (N, 1)) hold none yet, and of those the newest of a new episode's
        stack starts the episode. The slots not written keep their flags (fixed shapes)."""
        written = self._seq_written_always | (self._seq_written_if_done & done)
        has = torch.where(written | self._seq_transition, self._seq_transition, self._has_transition[leaf])
        first = torch.where(written, self._seq_episode_start & done, self._starts_episode[leaf])
        self._has_transition.index_put_((leaf,), has)
        self._starts_episode.index_put_((leaf,), first)

    def _sequence_bounds(self, written: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(first, last) sampleable sequence start per env after ``written`` slots: the window
        ``s .. s + window - 1`` and the stack of its first obs (from ``s - k + 1``) in the ring."""
        low = (written - self.slots_per_env).clamp_(min=0) + (self.frame_stack - 1)
        return low, written - self.window

    def _advance_sequences(self, advance: torch.Tensor) -> None:
        """Sequences: ``advance`` (N,) slots were just written per env. The interval of
        sampleable starts moves forward by as much: clear the starts that left it (their oldest
        frames are overwritten), then give the ones that entered it (their last slot is written)
        the initial priority. Two tree writes, so a leaf that leaves and enters in one step (a
        tiny window: start s leaves as s + F enters) ends up set."""
        low, high = self._sequence_bounds(self._written)
        self._written.add_(advance)
        new_low, new_high = (bound.unsqueeze(1) for bound in self._sequence_bounds(self._written))
        leaving = low.unsqueeze(1) + self._seq_steps
        entering = high.unsqueeze(1) + 1 + self._seq_steps
        entered = (entering <= new_high) & (entering >= new_low)
        self._update_leaves(self._leaf(leaving), leaving < new_low, self._clearing)
        self._update_leaves(self._leaf(entering), entered, self._completing)

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
        N, k, n, F = self.num_envs, self.frame_stack, self.n_step, self.slots_per_env
        c, hw = self.channels_per_frame, self.obs_shape[1:]
        self._check_observations(obs=obs, next_obs=next_obs, final_obs=final_obs)
        if self.num_labels:
            self._check_labels(**({} if self._streaming else {"labels": labels}), next_labels=next_labels)
        dev = self.device
        obs, next_obs, final_obs = (_as_device(x, dev, torch.uint8) for x in (obs, next_obs, final_obs))
        action = _as_device(action, dev, torch.int32, (N,))
        reward = _as_device(reward, dev, torch.float32, (N,))
        terminated = _as_device(terminated, dev, torch.bool, (N,))
        truncated = _as_device(truncated, dev, torch.bool, (N,))
        done = terminated | truncated
        # A step flagged both is a time limit (as envs.vec decides): bootstrap.
        terminated = terminated & ~truncated
        if self.check_stacks:
            self._check_stacks(obs, next_obs, final_obs, done)
        if not self._streaming:
            first_labels = _as_device(labels, dev, torch.float32) > 0.5 if self.num_labels else None
            self._start_streams(obs, first_labels)

        # Every slot this step touches, in one (N, n + 2k) tensor of leaves (see _make_index_constants).
        slots = (self._head.unsqueeze(1) + self._add_offsets) % F
        leaf = self._leaf_base + slots
        transition = leaf[:, n - 1]  # slot head-1, where obs's newest frame is: this step's transition
        self._action.index_put_((transition,), action)
        self._reward.index_put_((transition,), reward)
        self._terminated.index_put_((transition,), terminated)
        self._truncated.index_put_((transition,), truncated)
        self._step_id.index_fill_(0, transition, self._steps)

        # Frames: the newest frame of the obs that ends this transition (final_obs where done)...
        rows = self._frame_base + slots[:, n : n + k + 1]  # slots head .. head+k
        done_col = done.unsqueeze(1)
        newest = torch.where(done.view(N, 1, 1, 1), final_obs[:, -c:], next_obs[:, -c:])
        self._frames_flat.index_put_((rows[:, 0],), newest)
        # ...and, where done, the new episode's whole first stack. Fixed shape without a host sync:
        # envs that did not finish send these k frames to their scratch slot F, which is never read.
        dest = torch.where(done_col, rows[:, 1:], self._scratch)
        self._frames_flat.index_put_((dest.reshape(-1),), next_obs.reshape(N * k, c, *hw))
        if self._labels is not None:
            # next_obs's labels go with its newest frame: slot head, or head + k after a reset.
            newest_leaf = torch.where(done, leaf[:, n + k], leaf[:, n])
            self._labels.index_put_((newest_leaf,), _as_device(next_labels, dev, torch.float32) > 0.5)
        advance = torch.where(done, k + 1, 1)
        self._ep_len.add_(1)
        if self.window:
            self._mark_written(leaf[:, n - 1 : n + k + 1], done_col)
            self._head.add_(advance).remainder_(F)
            self._advance_sequences(advance)
        else:
            # Priorities. Writing slot w breaks the stacks of the transitions in slots w..w+k-1 (the
            # oldest in the ring): head's every step, head+1..head+k's where done. The transition
            # n-1 back completes its n-step window now, the later ones too where the episode ends.
            in_episode = self._add_age < self._ep_len.unsqueeze(1)
            self._update_leaves(leaf, in_episode & (self._add_always | done_col), self._add_completes)
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
        index = self._as_index(index)
        return self._transitions(index, torch.ones(index.shape[0], dtype=torch.float32, device=self.device))

    def _as_index(self, index: Any) -> torch.Tensor:
        """Buffer indices as a 1-d int64 tensor on the device."""
        index = _as_device(index, self.device, torch.int64)
        return index if index.dim() == 1 else index.reshape(-1)

    def _transitions(self, index: torch.Tensor, weight: torch.Tensor) -> ReplayBatch:
        """The transitions at leaves ``index`` (1-d), with ``weight``.

        One (B, k + n) tensor of leaves holds the slots of each obs stack and n-step window; the
        return, the bootstrap step and both stacks are read from it, the two stacks in one gather.
        """
        B, F, k, n = index.shape[0], self.slots_per_env, self.frame_stack, self.n_step
        slot, env = index % F, index // F
        slots = (slot.unsqueeze(1) + self._sample_offsets) % F  # slot-k+1 .. slot+n in the env's ring
        leaves = slots + (index - slot).unsqueeze(1)  # env * F + slot
        ret, steps, discount = self._n_step(leaves[:, k - 1 : k - 1 + n])
        rows = leaves + env.unsqueeze(1)  # frame rows: env * (F + 1) + slot
        # obs: slots slot-k+1 .. slot; next obs: the stack whose newest frame is `steps` later.
        rows = torch.cat([rows[:, :k], rows.gather(1, steps.unsqueeze(1) + self._stack_cols)])
        obs, next_obs = self._frames_flat.index_select(0, rows.view(-1)).view(2, B, *self.obs_shape)
        return ReplayBatch(
            obs=obs,
            action=self._action[index].long(),
            reward=ret,
            next_obs=next_obs,
            discount=discount,
            weight=weight,
            index=index,
        )

    def _n_step(self, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(return, steps, discount)`` of the transitions whose n-step windows of leaves are
        ``window`` (..., n), the transition's own first: the n-step return cut at an episode end,
        how many steps later the bootstrap obs is, and gamma**steps (0 where the episode
        terminated)."""
        reward = self._reward[window]
        terminated = self._terminated[window]
        done = terminated | self._truncated[window]
        # alive[..., j]: no episode end among steps 0..j-1 of the window, so step j counts; that
        # is, the ends counted up to step j are at most step j's own.
        alive = done.cumsum(-1) == done
        ret = (torch.where(alive, reward, 0.0) * self._gamma_n).sum(-1)
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
        index = self._as_index(index)
        return self._sequences(index, torch.ones(index.shape[0], dtype=torch.float32, device=self.device))

    def _sequences(self, index: torch.Tensor, weight: torch.Tensor) -> SequenceBatch:
        """The sequences starting at leaves ``index`` (1-d), with ``weight``."""
        B, F, W, n = index.shape[0], self.slots_per_env, self.window, self.n_step
        env_base = index - index % F
        leaf = env_base + (index - env_base + self._window_offsets) % F  # (W, B): the window's slots
        learn = slice(self.burn_in, self.burn_in + self.sequence_length)
        # The n-step window of learning position t is positions t .. t + n - 1.
        ret, steps, discount = self._n_step(leaf.unfold(0, n, 1)[learn])
        return SequenceBatch(
            obs=self._gather_stacks(leaf.view(-1)).view(W, B, *self.obs_shape),
            first=self._starts_episode[leaf],
            action=self._action[leaf[learn]].long(),
            reward=ret,
            discount=discount,
            bootstrap=self._learn_offsets.unsqueeze(1) + steps,
            mask=self._has_transition[leaf[learn]],
            weight=weight,
            index=index,
            leaf=leaf,
        )

    def labels(self, index: torch.Tensor) -> torch.Tensor:
        """float32 (B, L), 0.0 or 1.0: the labels of the observations at ``index`` (a sampled
        batch's ``obs``: ``labels(batch.index)``), for a buffer with ``num_labels``. A method, not a
        `ReplayBatch` field, so that batches of a buffer without labels are what they always were."""
        if self._labels is None:
            raise PixelplayError("replay.labels: this buffer stores no labels (built with num_labels=0)")
        return self._labels[self._as_index(index)].float()

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
        return self._transitions(*self._draw(batch_size, beta, generator))

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
        return self._sequences(*self._draw(batch_size, beta, generator))

    def _draw(
        self, batch_size: int, beta: float | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Leaves drawn from the sum tree, and their importance weights (ones for uniform replay)."""
        gen = self._generator if generator is None else generator
        u = torch.rand(batch_size, dtype=self._tree_dtype, device=self.device, generator=gen)
        leaf = self._tree.draw(u)
        if not self.prioritized:
            return leaf, torch.ones(batch_size, dtype=torch.float32, device=self.device)
        beta = self.beta if beta is None else beta
        # (N P(i))**-beta over the batch's largest weight, that of its smallest priority p_min:
        # (p_i / p_min)**-beta, with neither N nor the total needed.
        priority = self._tree.get(leaf)
        return leaf, (priority / priority.min()).pow_(-beta).float()

    def update_priorities(self, index: torch.Tensor, td_error: torch.Tensor) -> None:
        """Set p = |td_error| + eps for sampled indices (no-op for uniform replay). For sequences
        the caller passes each sequence's mix of its TD errors (R2D2's eta max + (1 - eta) mean).

        Indices whose transitions left the buffer since they were sampled stay empty. Duplicate
        indices (sampling is with replacement) keep one of their values.
        """
        if not self.prioritized:
            return
        index = self._as_index(index)
        priority = _as_device(td_error.detach(), self.device, self._tree_dtype, index.shape).abs() + self.priority_eps
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
