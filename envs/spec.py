"""`EnvSpec`: everything the rest of pixelplay may know about an env, resolved once.

`pixelplay.envs.env_spec` turns a name (``breakout``, ``doom-basic``, ``ALE/Pong-v5``) and the
env options into one frozen `EnvSpec`; every `VecEnv` carries the spec it was built from as
``VecEnv.spec``. Training, evaluation and recording read frame skips, frame rates, action names,
step caps and episode columns from here, never from an env's internals or a restated constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

ATARI = "atari"
DOOM = "doom"


@dataclass(frozen=True)
class EnvSpec:
    """One env as resolved from its name and options."""

    name: str
    """the name the user gave (``breakout``, ``doom-basic``, ``ALE/Pong-v5``)"""
    family: str
    """``atari`` or ``doom``: selects presets and the backend"""
    target: str
    """the ALE id (``ALE/Breakout-v5``) or the ViZDoom scenario (``basic``)"""
    frame_skip: int
    """emulator frames (Atari) or game tics (Doom) per agent step"""
    frames_per_second: int
    """the emulator's native rate: ALE runs at 60 Hz, Doom at 35 tics per second"""
    action_names: tuple[str, ...]
    """one name per discrete action (ALE's ``NOOP``, ``FIRE``...; Doom's ``TURN_LEFT+ATTACK``...)"""
    max_train_steps: int | None
    """agent steps after which a training episode is cut (truncated); None: no cap"""
    max_eval_steps: int | None
    """the same for evaluation (Atari: 27,000 steps = 108,000 frames; Doom: the eval timeout)"""
    episode_columns: tuple[str, ...]
    """the fields of a finished game's record (``StepResult.episodes``), in CSV order"""
    game_features: tuple[str, ...] = ()
    """the game features labelled on each observation (``StepResult.labels`` columns, in order),
    e.g. ``("enemy",)`` for ViZDoom's ``game_features`` option; empty when off (and for Atari).
    An agent sizes an auxiliary prediction head with ``len(spec.game_features)``."""
    teacher: str = "none"
    """the scripted teacher advising actions for each observation (``StepResult.advice``):
    ``aimer`` with ViZDoom's ``teacher`` option (`envs.doom_teacher`); none when off (and for Atari)"""

    @property
    def steps_per_second(self) -> Fraction:
        """Agent steps per second of game time (15 for Atari at skip 4, 8.75 for Doom at skip 4)."""
        return Fraction(self.frames_per_second, self.frame_skip)

    @property
    def num_actions(self) -> int:
        return len(self.action_names)

    def frames(self, steps: int) -> int:
        """Agent steps as emulator frames (game tics for Doom): the unit of "200M frames"."""
        return steps * self.frame_skip
