"""How far the deathmatch preset's action set can go with perfect sight: a scripted aimer.

    python bench/deathmatch_aimer.py [--matches 3] [--minutes 4] [--bots 8]

The player is the label aimer of `pixelplay.envs.doom_teacher` (the teacher of the deathmatch
preset's kickstarting): it reads the engine's labels buffer (privileged: the agent sees pixels
only) for the enemy that covers the most pixels, turns towards it with the preset's actions (a
turn step of frame skip 4 is 23-28 degrees with running held, ~40-50 pixels of the 160-pixel
screen), fires once it is near the centre (and while turning towards one that is close), and
where it sees no enemy runs forward and turns now and then, as `eval.policies.ScriptedDoomPolicy`.
Its kills and deaths per match are a ceiling-style reference for the learned agent with the same
actions, frame skip and bots: what simple aiming earns when seeing is solved. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from pixelplay.envs import make_env
from pixelplay.envs.doom_teacher import NO_ADVICE, AimerTeacher
from pixelplay.envs.vec import EPISODE_INFO_KEY


def play(minutes: float, bots: int, seed: int) -> dict:
    """One match of the aimer against ``bots`` bots; its record (kills, deaths...)."""
    # teacher="aimer": the labels buffer on (and the advice in info, unused: the aimer plays here)
    env = make_env("doom-deathmatch", seed=seed, training=False, episode_minutes=minutes, bots=bots, teacher="aimer")
    aimer = AimerTeacher(env.action_names)
    index = {name: i for i, name in enumerate(env.action_names)}
    rng = np.random.default_rng(seed)
    plan: list[int] = []
    env.reset(seed=seed)
    try:
        while True:
            state = env.game.get_state()
            choice = aimer.action(state.labels, state.labels_buffer)
            if choice != NO_ADVICE:
                plan = []
            else:
                if not plan:
                    side = "TURN_LEFT" if rng.integers(2) else "TURN_RIGHT"
                    plan = [index["MOVE_FORWARD"]] * int(rng.integers(8, 25)) + [index[side]] * int(rng.integers(2, 8))
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
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.matches < 1 or args.minutes <= 0:
        print("error: --matches must be >= 1 and --minutes > 0", file=sys.stderr)
        return 2
    kills = deaths = 0
    for match in range(args.matches):
        start = time.perf_counter()
        record = play(args.minutes, args.bots, args.seed + match)
        kills, deaths = kills + record["kills"], deaths + record["deaths"]
        print(f"match {match + 1}: {record['kills']} kills, {record['deaths']} deaths, {record['suicides']} suicides, "
              f"{record['objects']} objects ({time.perf_counter() - start:.0f} s)", flush=True)
    n = args.matches
    print(f"label aimer, {args.bots} bots, {args.minutes:g}-minute matches: {kills / n:.1f} kills, {deaths / n:.1f} "
          f"deaths per match, K/D {kills / max(deaths, 1):.2f} over {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
