"""How far the deathmatch preset's action set can go with perfect sight: a scripted aimer.

    python bench/deathmatch_aimer.py [--matches 3] [--minutes 4] [--bots 8] [--tolerance 6]

The player reads the engine's labels buffer (privileged: the agent sees pixels only) for the
enemy that covers the most pixels, turns towards it with the preset's actions (a turn step of
frame skip 4 is 23-28 degrees with running held, ~40-50 pixels of the 160-pixel screen), fires
once it is within ``--tolerance`` pixels of the centre (and while turning towards one within 25
pixels), and otherwise runs forward and turns now and then, as `eval.policies.ScriptedDoomPolicy`.
Its kills and deaths per match are a ceiling-style reference for the learned agent with the same
actions, frame skip and bots: what simple aiming earns when seeing is solved. It is not a
policy that pixelplay ships (it needs the labels). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from pixelplay.envs import make_env
from pixelplay.envs.doom import ENEMY_CATEGORIES, MIN_VISIBLE_PIXELS, PLAYER_SPRITE_LABEL, SELF_CATEGORY
from pixelplay.envs.vec import EPISODE_INFO_KEY

NEAR = 25
"""Pixels from the centre within which the aimer fires while it turns."""


def enemy_offset(state) -> float | None:
    """Horizontal pixels from the screen centre to the most visible enemy, or None if none shows."""
    if state is None or state.labels_buffer is None:
        return None
    buffer, best = state.labels_buffer, None
    for label in state.labels:
        category = getattr(label, "object_category", None)
        if category == SELF_CATEGORY or label.value == PLAYER_SPRITE_LABEL or category not in ENEMY_CATEGORIES:
            continue
        x, y = max(int(label.x), 0), max(int(label.y), 0)
        pixels = np.count_nonzero(buffer[y : y + int(label.height), x : x + int(label.width)] == label.value)
        if pixels >= MIN_VISIBLE_PIXELS and (best is None or pixels > best[0]):
            best = (pixels, label.x + label.width / 2 - buffer.shape[1] / 2)
    return None if best is None else best[1]


def play(minutes: float, bots: int, seed: int, tolerance: float) -> dict:
    env = make_env("doom-deathmatch", seed=seed, training=False, episode_minutes=minutes, bots=bots,
                   game_features=("enemy",))  # the labels buffer on
    index = {frozenset(name.split("+")): i for i, name in enumerate(env.action_names)}

    def action(*buttons: str) -> int:
        return index[frozenset(buttons or ("NOOP",))]

    rng = np.random.default_rng(seed)
    plan: list[int] = []
    env.reset(seed=seed)
    try:
        while True:
            offset = enemy_offset(env.game.get_state())
            if offset is not None:
                plan = []
                side = "TURN_LEFT" if offset < 0 else "TURN_RIGHT"
                if abs(offset) <= tolerance:
                    choice = action("ATTACK")
                else:
                    choice = action(side, "ATTACK") if abs(offset) < NEAR else action(side)
            else:
                if not plan:
                    side = "TURN_LEFT" if rng.integers(2) else "TURN_RIGHT"
                    plan = [action("MOVE_FORWARD")] * int(rng.integers(8, 25)) + [action(side)] * int(rng.integers(2, 8))
                choice = plan.pop(0)
            _, _, terminated, truncated, info = env.step(choice)
            if terminated or truncated:
                return info[EPISODE_INFO_KEY]
    finally:
        env.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matches", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=4.0, help="match length (training matches: 4)")
    parser.add_argument("--bots", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=6.0, help="pixels from the centre at which it fires")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.matches < 1 or args.minutes <= 0:
        print("error: --matches must be >= 1 and --minutes > 0", file=sys.stderr)
        return 2
    kills = deaths = 0
    for match in range(args.matches):
        start = time.perf_counter()
        record = play(args.minutes, args.bots, args.seed + match, args.tolerance)
        kills, deaths = kills + record["kills"], deaths + record["deaths"]
        print(f"match {match + 1}: {record['kills']} kills, {record['deaths']} deaths, {record['suicides']} suicides, "
              f"{record['objects']} objects ({time.perf_counter() - start:.0f} s)", flush=True)
    n = args.matches
    print(f"label aimer, {args.bots} bots, {args.minutes:g}-minute matches: {kills / n:.1f} kills, {deaths / n:.1f} "
          f"deaths per match, K/D {kills / max(deaths, 1):.2f} over {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
