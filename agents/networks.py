"""Convolutional feature extractors and the heads that sit on them.

The extractors follow Stable-Baselines3's features-extractor contract: constructed as
``Extractor(observation_space, features_dim=...)``, they expose ``.features_dim``, so either one
plugs into SB3 as ``policy_kwargs=dict(features_extractor_class=NatureCNN)``. They accept uint8
pixels (pixelplay's agents feed them straight from the replay or rollout storage and the division
by 255 happens on the device, inside the network) or floats already scaled to [0, 1] (what SB3
passes after its own ``preprocess_obs``).

Geometry is checked before any layer is built: a strided conv whose window does not tile its input,
``(W - F + 2P) / S + 1`` not a whole number, would silently drop border pixels, and one whose
output is empty cannot run; both are refused with a message naming the layer.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from pixelplay.agents.config import bounded
from pixelplay.envs.errors import PixelplayError

PRECISIONS = ("auto", "fp32", "bf16")


class GeometryError(PixelplayError):
    """A conv stack that cannot run on the given observation size."""


def conv_output_size(size: int, kernel: int, stride: int, padding: int, layer: str, strict: bool = True) -> int:
    """Output length of a conv/pool along one axis, refusing impossible geometry.

    ``strict`` (strided convs): the window must tile the input exactly. Pools are not strict:
    IMPALA's 3x3/2 max-pool on an even size floors by design (Espeholt et al. 2018).
    """
    span = size - kernel + 2 * padding
    if span < 0:
        raise GeometryError(
            f"{layer}: a {kernel}x{kernel} window (padding {padding}) does not fit an input of {size} "
            f"pixels; use a larger observation or a smaller network"
        )
    if strict and span % stride != 0:
        raise GeometryError(
            f"{layer}: ({size} - {kernel} + 2*{padding}) / {stride} + 1 = {span / stride + 1:g} is not a whole "
            f"number, so the {kernel}x{kernel}/{stride} conv would drop border pixels of its {size}-pixel input; "
            f"pick an observation size that tiles (e.g. 84 for the Nature CNN)"
        )
    return span // stride + 1


def _as_shape(observation_space: gym.spaces.Box | Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(observation_space.shape if hasattr(observation_space, "shape") else observation_space)
    if len(shape) != 3:
        raise GeometryError(f"a CNN needs (C, H, W) image observations, got shape {shape}")
    return shape  # type: ignore[return-value]


def _scale_pixels(x: torch.Tensor) -> torch.Tensor:
    # uint8 straight from storage: scale on the device. Floats are assumed scaled already (SB3).
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def layer_init(layer: nn.Module, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal init with a chosen gain (Saxe et al. 2014), as in OpenAI baselines and CleanRL."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


class NatureCNN(nn.Module):
    """The DQN torso of Mnih et al. 2015 (Nature): 32x8x8/4, 64x4x4/2, 64x3x3/1, then a dense layer."""

    def __init__(self, observation_space: gym.spaces.Box | Sequence[int], features_dim: int = 512):
        super().__init__()
        channels, height, width = _as_shape(observation_space)
        h, w = height, width
        for name, kernel, stride in (("conv1", 8, 4), ("conv2", 4, 2), ("conv3", 3, 1)):
            h = conv_output_size(h, kernel, stride, 0, f"NatureCNN {name} (height)")
            w = conv_output_size(w, kernel, stride, 0, f"NatureCNN {name} (width)")
        self.features_dim = features_dim
        self.cnn = nn.Sequential(
            layer_init(nn.Conv2d(channels, 32, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():  # shapes come from a dummy forward, never from constants
            flat = self.cnn(torch.zeros(1, channels, height, width)).shape[1]
        assert flat == 64 * h * w
        self.linear = nn.Sequential(layer_init(nn.Linear(flat, features_dim)), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.cnn(_scale_pixels(observations)))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ImpalaCNN(nn.Module):
    """The IMPALA ResNet of Espeholt et al. 2018: per stage a conv, a 3x3/2 max-pool, two residual
    blocks; stage widths (16, 32, 32), then ReLU and a dense layer (256 in the paper)."""

    def __init__(
        self,
        observation_space: gym.spaces.Box | Sequence[int],
        features_dim: int = 256,
        channels: Sequence[int] = (16, 32, 32),
    ):
        super().__init__()
        in_channels, h, w = _as_shape(observation_space)
        stages: list[nn.Module] = []
        for index, out_channels in enumerate(channels):
            h = conv_output_size(h, 3, 2, 1, f"ImpalaCNN stage {index} max-pool (height)", strict=False)
            w = conv_output_size(w, 3, 2, 1, f"ImpalaCNN stage {index} max-pool (width)", strict=False)
            stages += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
                nn.MaxPool2d(3, stride=2, padding=1),
                _ResidualBlock(out_channels),
                _ResidualBlock(out_channels),
            ]
            in_channels = out_channels
        self.features_dim = features_dim
        self.cnn = nn.Sequential(*stages, nn.ReLU(), nn.Flatten())
        flat = in_channels * h * w
        self.linear = nn.Sequential(nn.Linear(flat, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.cnn(_scale_pixels(observations)))


EXTRACTORS: dict[str, type[nn.Module]] = {"nature": NatureCNN, "impala": ImpalaCNN}
"""Feature extractors by the name the CLI takes (``--network``)."""


def build_extractor(name: str, obs_shape: Sequence[int], features_dim: int | None = None) -> nn.Module:
    if name not in EXTRACTORS:
        raise PixelplayError(f"unknown network '{name}'; choose one of {', '.join(EXTRACTORS)}")
    kwargs = {} if features_dim is None else {"features_dim": features_dim}
    return EXTRACTORS[name](tuple(obs_shape), **kwargs)


# ---- game-feature supervision (Lample & Chaplot 2017) ------------------------------------------

GAME_FEATURE_HEAD = "game_features"
"""The attribute, and state-dict prefix, of a network's game-feature head (absent when off)."""


def game_feature_head(features_dim: int, num_features: int) -> nn.Linear | None:
    """The auxiliary head of Lample & Chaplot 2017 ("Playing FPS Games with Deep Reinforcement
    Learning", AAAI 2017, "Game feature augmentation"): one logit per game feature (enemy,
    health, ... on screen) from the extractor's features, trained with binary cross-entropy
    beside the RL loss (`game_feature_loss`), so that the features the policy reads learn to
    detect what matters in the frame. None for ``num_features == 0``: no layer, no parameters,
    no state-dict entries, no random numbers drawn, so a network without game features is
    exactly what it was before the head existed.

    Arnold (glample/Arnold, ``src/model/utils.py``) puts a hidden layer of its own between the
    conv output and the logits (dropout, Linear, ReLU, dropout, Linear, Sigmoid); here the
    extractor's dense layer (``features_dim`` wide, after the convs) already is that hidden layer,
    shared with the policy, and the head is one linear layer. Gain 0.01 (as the policy head):
    every probability starts near 0.5, the loss near log 2, and the first gradients into the
    shared torso are small."""
    if num_features <= 0:
        return None
    return layer_init(nn.Linear(features_dim, num_features), gain=0.01)


def game_feature_loss(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bce, accuracy)`` of game-feature ``logits`` (B, F) against 0/1 ``labels`` (B, F).

    ``bce``: the binary cross-entropy of sigmoid(logits), the mean over rows and features
    (``torch.nn.BCELoss`` on probabilities as Arnold computes it, here on the logits, which is
    stable for large logits). ``accuracy``: the fraction of (row, feature) entries whose
    probability thresholded at 0.5 (logit > 0) equals the label, that is the mean over features
    of each feature's accuracy. Both in fp32, whatever the logits' dtype. ``mask`` (bool (B,)):
    only those rows count (DRQN's sequences hold slots that are no observation of a step), as a
    weighted mean, so no row selection and no host sync."""
    logits, labels = logits.float(), labels.float()
    if mask is None:
        bce = F.binary_cross_entropy_with_logits(logits, labels)
        accuracy = ((logits > 0) == (labels > 0.5)).float().mean()
        return bce, accuracy
    weight = mask.float().unsqueeze(1).expand_as(logits)
    total = weight.sum().clamp(min=1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weight).sum() / total
    accuracy = (((logits > 0) == (labels > 0.5)).float() * weight).sum() / total
    return bce, accuracy


def num_game_features(net_state: dict) -> int:
    """The width of the game-feature head in a network's state dict (0 when it has none): what
    an agent must be built with to load it (`pixelplay.agents.load_agent`)."""
    weight = net_state.get(f"{GAME_FEATURE_HEAD}.weight") if isinstance(net_state, dict) else None
    return int(weight.shape[0]) if weight is not None else 0


class ActorCritic(nn.Module):
    """Shared torso, a policy head (logits) and a value head, initialised as in CleanRL's PPO:
    policy gain 0.01 so the first policy is near uniform, value gain 1. With
    ``num_game_features`` a game-feature head (`game_feature_head`) sits on the torso's features
    too; it runs only when asked (``with_game_features``), in the update, never when acting."""

    def __init__(self, extractor: nn.Module, num_actions: int, num_game_features: int = 0):
        super().__init__()
        self.extractor = extractor
        self.policy = layer_init(nn.Linear(extractor.features_dim, num_actions), gain=0.01)
        self.value = layer_init(nn.Linear(extractor.features_dim, 1), gain=1.0)
        self.game_features = game_feature_head(extractor.features_dim, num_game_features)

    def forward(self, obs: torch.Tensor, with_game_features: bool = False):
        """``(logits, value)``; with ``with_game_features``, ``(logits, value, feature logits)``."""
        features = self.extractor(obs)
        logits, value = self.policy(features), self.value(features).squeeze(-1)
        if with_game_features:
            return logits, value, self.game_features(features)
        return logits, value


MEMORIES = ("none", "lstm", "gru")
"""Recurrent cores by the name the CLI takes (``--memory``); none is the feed-forward network."""


class _RecurrentCore(nn.Module):
    """What every network with a recurrent core shares: the core (LSTM or GRU, ``memory_size``
    wide) in ``self.core``, its zero state and its unroll over T steps with episode starts.

    The core's state is one tensor ``(k, B, memory_size)``: k = 2 for an LSTM (h and c stacked),
    1 for a GRU; `initial_state` gives zeros."""

    def _init_core(self, input_dim: int, memory: str, memory_size: int) -> None:
        if memory not in ("lstm", "gru"):
            raise PixelplayError(f"memory must be lstm or gru for a recurrent core, got '{memory}'")
        self.memory, self.memory_size = memory, memory_size
        core = nn.LSTM if memory == "lstm" else nn.GRU
        self.core = core(input_dim, memory_size)
        for name, param in self.core.named_parameters():  # CleanRL: orthogonal weights, zero biases
            if "bias" in name:
                nn.init.constant_(param, 0.0)
            else:
                nn.init.orthogonal_(param, 1.0)
        self.state_layers = 2 if memory == "lstm" else 1

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Zeros: the state at an episode's start, for ``batch`` sequences."""
        return torch.zeros(self.state_layers, batch, self.memory_size, device=device)

    def unroll(
        self, features: torch.Tensor, state: torch.Tensor, first: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The core over ``features`` (T, B, F): outputs (T, B, H) and the final state.

        Where any sequence starts an episode the run is split and that sequence's state zeroed
        (CleanRL masks the state before every step; runs without a start go to the core whole)."""
        steps = features.shape[0]
        starts = [0]
        if first is not None:
            marked = first.any(dim=1)
            marked[0] = True
            starts = marked.nonzero().flatten().tolist()  # one sync, for the segment bounds
        outputs = []
        for begin, end in zip(starts, [*starts[1:], steps], strict=True):
            if first is not None:
                state = state * (~first[begin]).to(state.dtype).view(1, -1, 1)
            out, state = self._run(features[begin:end], state)
            outputs.append(out)
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0], state

    def core_hidden(
        self, obs: torch.Tensor, state: torch.Tensor, first: torch.Tensor | None, with_game_features: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The CNN (under any autocast), then in fp32 the game-feature logits (if asked) and the
        core over T steps of B sequences: (hidden (T * B, H), final state, feature logits or None)."""
        batch = state.shape[1]
        features = self.extractor(obs)
        with torch.autocast(device_type=features.device.type, enabled=False):
            features = features.float()
            feature_logits = self.game_features(features) if with_game_features else None
            hidden, state = self.unroll(features.reshape(-1, batch, features.shape[-1]), state, first)
        return hidden.reshape(-1, self.memory_size), state, feature_logits

    def _run(self, features: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.memory == "lstm":
            out, (h, c) = self.core(features, (state[0:1].contiguous(), state[1:2].contiguous()))
            return out, torch.cat([h, c])
        out, h = self.core(features, state.contiguous())
        return out, h


class RecurrentActorCritic(_RecurrentCore):
    """`ActorCritic` with a recurrent core (LSTM or GRU) between the features and the heads, as in
    CleanRL's ``ppo_atari_lstm.py``: features -> core (``memory_size`` wide) -> policy and value.

    The core's state is one tensor ``(k, B, memory_size)``: k = 2 for an LSTM (h and c stacked),
    1 for a GRU; `initial_state` gives zeros. `forward` unrolls T steps of B sequences: ``obs`` is
    time-major and flat, (T * B, C, H, W), ``first`` (T, B) marks the steps that start an
    episode, where the state is zeroed before the step (None: no episode starts). The core and
    the heads run in fp32 whatever the caller's autocast: only the extractor takes bf16, so a
    state carried over hundreds of steps is not rounded to bf16 at each.
    """

    def __init__(self, extractor: nn.Module, num_actions: int, memory: str = "lstm", memory_size: int = 128,
                 num_game_features: int = 0):
        super().__init__()
        self.extractor = extractor
        self._init_core(extractor.features_dim, memory, memory_size)
        self.policy = layer_init(nn.Linear(memory_size, num_actions), gain=0.01)
        self.value = layer_init(nn.Linear(memory_size, 1), gain=1.0)
        # On the CNN features, before the core, as Arnold's (its base_forward): a frame's game
        # features are in the frame, not in the memory of the ones before.
        self.game_features = game_feature_head(extractor.features_dim, num_game_features)

    def forward(
        self, obs: torch.Tensor, state: torch.Tensor, first: torch.Tensor | None = None,
        with_game_features: bool = False,
    ):
        """``(logits (T * B, A), value (T * B,), state after the last step)`` for T steps of B
        sequences from ``state``; see the class docstring for ``obs`` and ``first``. With
        ``with_game_features`` a fourth item: the game-feature logits (T * B, F) of each step's
        frame, from the CNN features (the core does not see into them)."""
        hidden, state, feature_logits = self.core_hidden(obs, state, first, with_game_features)
        with torch.autocast(device_type=hidden.device.type, enabled=False):  # heads in fp32, as the core
            logits, value = self.policy(hidden), self.value(hidden).squeeze(-1)
            if with_game_features:
                return logits, value, state, feature_logits
            return logits, value, state


class QNetwork(nn.Module):
    """Q-values per action; with ``dueling`` the head splits into value and advantage streams,
    Q = V + A - mean(A) (Wang et al. 2016). With ``num_game_features`` a game-feature head
    (`game_feature_head`) sits on the same features, as on Arnold's DQN."""

    def __init__(self, extractor: nn.Module, num_actions: int, dueling: bool = False, num_game_features: int = 0):
        super().__init__()
        self.extractor = extractor
        self.dueling = dueling
        dim = extractor.features_dim
        self.advantage = nn.Linear(dim, num_actions)
        self.value = nn.Linear(dim, 1) if dueling else None
        self.game_features = game_feature_head(dim, num_game_features)

    def forward(self, obs: torch.Tensor, with_game_features: bool = False):
        """Q-values (B, A); with ``with_game_features``, ``(q, game-feature logits (B, F))``."""
        features = self.extractor(obs)
        advantage = self.advantage(features)
        if self.value is None:
            q = advantage
        else:
            q = self.value(features) + advantage - advantage.mean(dim=1, keepdim=True)
        if with_game_features:
            return q, self.game_features(features)
        return q


class RecurrentQNetwork(_RecurrentCore):
    """DRQN (Hausknecht & Stone 2015; R2D2, Kapturowski et al. 2019): the CNN features go through
    a recurrent core (LSTM or GRU, ``memory_size`` wide) before the Q head, plain or dueling
    (Wang et al. 2016), as R2D2's LSTM sits before its dueling head. A game-feature head, with
    ``num_game_features``, reads the CNN features before the core, as `RecurrentActorCritic`'s.

    `forward` unrolls T steps of B sequences from ``state``: ``obs`` time-major and flat (T * B,
    C, H, W), ``first`` (T, B) the steps that start an episode (state zeroed before them). The
    core and the heads run in fp32 whatever the caller's autocast, as in `RecurrentActorCritic`.
    """

    def __init__(self, extractor: nn.Module, num_actions: int, dueling: bool = False, memory: str = "lstm",
                 memory_size: int = 128, num_game_features: int = 0):
        super().__init__()
        self.extractor = extractor
        self.dueling = dueling
        self._init_core(extractor.features_dim, memory, memory_size)
        self.advantage = nn.Linear(memory_size, num_actions)
        self.value = nn.Linear(memory_size, 1) if dueling else None
        self.game_features = game_feature_head(extractor.features_dim, num_game_features)

    def forward(
        self, obs: torch.Tensor, state: torch.Tensor, first: torch.Tensor | None = None,
        with_game_features: bool = False,
    ):
        """``(q (T * B, A), state after the last step)``; with ``with_game_features`` a third
        item: the game-feature logits (T * B, F) of each step's frame."""
        hidden, state, feature_logits = self.core_hidden(obs, state, first, with_game_features)
        with torch.autocast(device_type=hidden.device.type, enabled=False):  # heads in fp32, as the core
            advantage = self.advantage(hidden)
            if self.value is None:
                q = advantage
            else:
                q = self.value(hidden) + advantage - advantage.mean(dim=1, keepdim=True)
            if with_game_features:
                return q, state, feature_logits
            return q, state


@functools.cache
def _cpu_has_amx() -> bool:
    """Whether the CPU has AMX tiles (read once per process)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return "amx_bf16" in handle.read()
    except OSError:
        return False


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` ("auto", "bf16", "fp32") means bf16 autocast on ``device``.

    "auto" takes bf16 only where it is fast: CUDA with bf16 support, or a CPU with AMX tiles
    (there a PPO minibatch ran ~3x faster in bench/ppo_vs_sb3.py). On a CPU with AVX-512-BF16
    but no AMX (AMD EPYC) bf16 convs ran ~3x *slower* than fp32, so auto stays fp32.
    """
    if precision not in PRECISIONS:
        raise PixelplayError(f"precision must be auto, bf16 or fp32, got '{precision}'")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_amx()


def autocast(precision: str, device: torch.device):
    """A factory of the autocast context for network forward passes, decided once.

    Call it once (when the agent is built) and enter ``factory()`` on every forward pass: the
    decision, which may read the CPU's features, is not repeated on the hot path.
    """
    if use_bf16(precision, device):
        return functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


@dataclass
class NetworkConfig:
    """What every algorithm's config holds about its network (shared base of the configs)."""

    network: str = bounded("nature", choices=tuple(EXTRACTORS))
    """feature extractor: nature (Mnih et al. 2015) or impala (Espeholt et al. 2018)"""
    features_dim: int = bounded(512, low=1)
    """width of the extractor's output layer"""
    precision: str = bounded("auto", choices=PRECISIONS)
    """auto: bf16 autocast where it is fast (CUDA, CPUs with AMX), else fp32; or force bf16 / fp32"""
    channels_last: bool = True
    """store conv weights and activations channels-last (NHWC), faster for convs on CPU and tensor cores"""
    game_feature_coef: float = bounded(1.0, low=0.0)
    """with --game-features: weight of the game-feature head's binary cross-entropy in the loss (Lample & Chaplot 2017; Arnold adds it unweighted, 1)"""

    def autocast(self, device: torch.device):
        """The autocast context factory for this config's precision on ``device``."""
        return autocast(self.precision, torch.device(device))


@dataclass
class MemoryConfig(NetworkConfig):
    """A network with an optional recurrent core (PPO and A2C: `RecurrentActorCritic`; DQN:
    `RecurrentQNetwork`). Frame stacking stays with a core (the env's 4 frames, as Arnold kept
    them with its LSTM, Lample & Chaplot 2017): frames show motion within a step, the core what
    was seen long ago."""

    memory: str = bounded("none", choices=MEMORIES)
    """recurrent core between the CNN features and the heads: none (feed-forward), lstm or gru"""
    memory_size: int = bounded(128, low=1)
    """hidden width of the recurrent core (with --memory lstm or gru)"""
