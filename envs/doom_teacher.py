"""A scripted teacher for Doom training: the label aimer, whose advice kickstarts a learner.

The aimer reads the engine's labels buffer (privileged: the agent sees only pixels), finds the
enemy that covers the most pixels and advises how to aim at it: turn towards it, and fire once
it is near the centre of the screen. It has no opinion on moving, so its advice is every action
with that turn and trigger, whatever the legs do (`AimerTeacher.advice`, a bitmask over the
action set). Where no enemy is visible it has no advice (0): moving about is left to the
learner's own reward. A first version advised the single action the aimer plays (turn and fire
standing still): the student learnt to stand still everywhere (objects picked up per 4-minute
match fell from 8 to 0.4 over 180k steps, against 20-26 without a teacher), met fewer bots and
so got ever less advice.

Kickstarting (Schmitt et al. 2018, "Kickstarting Deep Reinforcement Learning") adds to the RL loss
a distillation term towards a teacher's policy on the student's own trajectories, with a weight
annealed to 0; here the teacher is this script, its policy a single action where it has advice
(train.py's ``--teacher aimer``; the loss in `pixelplay.agents.ppo`). It targets the one skill
a deathmatch agent fails to pick up from the sparse frag reward: aiming at what it sees.
``bench/deathmatch_aimer.py`` measures what the aimer scores when it plays the matches itself.
"""

from __future__ import annotations

import math

import numpy as np

from pixelplay.envs.doom import (
    _REFERENCE_SCREEN,
    ENEMY_CATEGORIES,
    GAME_FEATURE_OBJECTS,
    MIN_VISIBLE_PIXELS,
    PLAYER_SPRITE_LABEL,
    SELF_CATEGORY,
)
from pixelplay.envs.errors import EnvError

TEACHERS: tuple[str, ...] = ("none", "aimer")
"""The teachers an env can advise with (option ``teacher``); none: no advice, no labels buffer."""

NO_ADVICE = -1
"""`AimerTeacher.action` where the aimer has nothing to say (no enemy visible)."""

AIM_BUTTONS = frozenset({"TURN_LEFT", "TURN_RIGHT", "ATTACK"})
"""The buttons the aimer's advice is about; the others (moving, strafing) are left free."""

FIRE_WITHIN = 6 / 160
"""Fire, without turning, when the enemy's centre is within this fraction of the screen width of
the screen's centre (6 pixels of 160)."""

TURN_AND_FIRE_WITHIN = 25 / 160
"""Turn and fire together within this fraction (25 pixels of 160): with frame skip 4 a turn step
sweeps ~40-50 pixels of a 160-pixel screen (23-28 degrees with running held), so the shot lands
while the turn passes over the enemy. Both numbers were chosen by ``bench/deathmatch_aimer.py``."""

ADVISE_FROM_PIXELS = 40
"""The teacher advises only on an enemy that covers at least this many pixels of a 160x120 screen
(scaled with the screen's area), ~15 pixels of the 84x84 observation a deathmatch agent sees:
advice about a bot the student cannot make out is noise to it. In deathmatch on map02 the most
visible bot covers a median of 15 such pixels (4 or more) and 40 or more in a quarter of the
frames with one in view. A first kickstarted run advised from 4 pixels, as the game feature
counts: over 144k steps the policy agreed with the advice on 0.33 of advised frames throughout,
and the "enemy" game feature stayed at what always answering "no" scores."""


def enemy_offset(labels, labels_buffer: np.ndarray | None, min_pixels: int = MIN_VISIBLE_PIXELS) -> float | None:
    """The signed horizontal offset of the most visible enemy's centre from the screen's centre,
    as a fraction of the screen width (negative: left), or None when no enemy is visible.

    Visible and enemy mean what the ``enemy`` game feature means (`GameFeatureLabeller`): an object
    of `GAME_FEATURE_OBJECTS["enemy"]` or of a player or monster category, not the player's own,
    with at least ``min_pixels`` pixels of a 160x120 screen (scaled to the screen's area; by
    default `MIN_VISIBLE_PIXELS`) inside its box."""
    if labels_buffer is None:
        return None
    min_pixels = max(1, math.ceil(min_pixels * labels_buffer.size / _REFERENCE_SCREEN))
    width = labels_buffer.shape[1]
    best: tuple[int, float] | None = None
    for label in labels:
        category = getattr(label, "object_category", None)  # ViZDoom >= 1.3
        if category == SELF_CATEGORY or label.value == PLAYER_SPRITE_LABEL:
            continue
        if label.object_name not in GAME_FEATURE_OBJECTS["enemy"] and category not in ENEMY_CATEGORIES:
            continue
        x, y = max(int(label.x), 0), max(int(label.y), 0)
        pixels = int(np.count_nonzero(labels_buffer[y : y + int(label.height), x : x + int(label.width)] == label.value))
        if pixels >= min_pixels and (best is None or pixels > best[0]):
            best = (pixels, (label.x + label.width / 2 - width / 2) / width)
    return None if best is None else best[1]


class AimerTeacher:
    """The label aimer over an env's actions.

    `action` is the one action it plays towards the most visible enemy of at least
    `ADVISE_FROM_PIXELS` pixels (or `NO_ADVICE`): ``ATTACK`` alone when the enemy is centred,
    ``TURN_<side>+ATTACK`` when it is near (or ``TURN_<side>`` where the action set has no such
    combination), else ``TURN_<side>``. `advice` is the set of actions a learner is taught,
    as a bitmask: those with the same turn and trigger as that action, with any movement (0: no
    advice). An action set without both turns and ``ATTACK`` cannot aim, and one of over 63
    actions does not fit the mask: `EnvError`."""

    def __init__(self, action_names: list[str] | tuple[str, ...]):
        if len(action_names) > 63:
            raise EnvError(f"the aimer teacher's advice is a 63-bit mask; this scenario has {len(action_names)} actions")
        buttons = [frozenset(name.split("+")) for name in action_names]
        index = {key: i for i, key in enumerate(buttons)}
        needed = [frozenset({b}) for b in ("ATTACK", "TURN_LEFT", "TURN_RIGHT")]
        if any(key not in index for key in needed):
            raise EnvError(
                "the aimer teacher needs the actions ATTACK, TURN_LEFT and TURN_RIGHT; this scenario has "
                f"{', '.join(action_names)}"
            )
        self.fire = index[frozenset({"ATTACK"})]
        self.turn = {side: index[frozenset({side})] for side in ("TURN_LEFT", "TURN_RIGHT")}
        self.turn_and_fire = {
            side: index.get(frozenset({side, "ATTACK"}), self.turn[side]) for side in ("TURN_LEFT", "TURN_RIGHT")
        }
        self._masks = [sum(1 << j for j, other in enumerate(buttons) if other & AIM_BUTTONS == key & AIM_BUTTONS)
                       for key in buttons]

    def advise(self, offset: float | None) -> int:
        """The advised action for an enemy at ``offset`` (`enemy_offset`; None: none visible)."""
        if offset is None:
            return NO_ADVICE
        if abs(offset) <= FIRE_WITHIN:
            return self.fire
        side = "TURN_LEFT" if offset < 0 else "TURN_RIGHT"
        return self.turn_and_fire[side] if abs(offset) < TURN_AND_FIRE_WITHIN else self.turn[side]


    def action(self, labels, labels_buffer: np.ndarray | None) -> int:
        """The action the aimer plays on this frame, or `NO_ADVICE`."""
        return self.advise(enemy_offset(labels, labels_buffer, ADVISE_FROM_PIXELS))

    def advice(self, labels, labels_buffer: np.ndarray | None) -> int:
        """The actions it teaches on this frame, as a bitmask (bit ``a``: action ``a``); 0: none."""
        action = self.action(labels, labels_buffer)
        return 0 if action == NO_ADVICE else self.mask(action)

    def mask(self, action: int) -> int:
        """The bitmask of the actions with ``action``'s turn and trigger (its movement free)."""
        return self._masks[action]


def check_teacher(value: str) -> str:
    """The ``teacher`` option, refused with one clear line when unknown."""
    value = "none" if value in (None, "") else str(value)
    if value not in TEACHERS:
        raise EnvError(f"teacher must be one of {', '.join(TEACHERS)}, got {value!r}")
    return value
