"""pixelplay's replay at Atari scale on the training device: memory, fill rate and sample rate.

    python bench/replay_device.py [--device cuda] [--capacity 1000000] [--num-envs 16] [--batch-size 32]

Builds DQN's replay as the Atari preset sizes it (1M transitions of 4 stacked 84x84 grey frames,
each frame stored once, `pixelplay.agents.replay`) through the agent (`DQNAgent.replay`), fills it
to ``--fill`` transitions (default: all of it) through ``DQNAgent.observe`` from a `bounds.SyntheticEnv`
whose frames already sit on the device (so the figure is the replay's own work, not a host copy),
then draws ``--samples`` minibatches. Prints the bytes it holds (``replay.nbytes``), the device's
peak allocation on CUDA (``torch.cuda.max_memory_allocated``), transitions added per second and
minibatches (and transitions) sampled per second. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from bounds import SyntheticEnv, peak_memory, reset_peak_memory

ATARI_OBS = (4, 84, 84)
"""4 stacked grey 84x84 frames (DeepMind's preprocessing, envs/atari.py)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--capacity", type=int, default=1_000_000, help="replay capacity in transitions")
    parser.add_argument("--fill", type=int, default=0, help="transitions to add (default: the capacity)")
    parser.add_argument("--num-envs", type=int, default=16, help="envs per add (one vector step)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples", type=int, default=2000, help="minibatches to draw")
    parser.add_argument("--n-step", type=int, default=1)
    parser.add_argument("--prioritized", action="store_true", help="proportional prioritized replay")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    fill = args.fill or args.capacity
    if min(args.capacity, fill, args.num_envs, args.batch_size, args.samples) < 1:
        print("error: --capacity, --fill, --num-envs, --batch-size and --samples must be positive", file=sys.stderr)
        return 2
    from pixelplay.agents.dqn import DQNAgent, DQNConfig
    from pixelplay.envs.errors import PixelplayError

    cfg = DQNConfig(buffer_size=args.capacity, batch_size=args.batch_size, n_step=args.n_step,
                    prioritized=args.prioritized)
    agent = DQNAgent(cfg, ATARI_OBS, 4, args.num_envs, fill, device, frame_stack=4)
    reset_peak_memory(device)
    try:
        replay = agent.replay  # allocated here, on the device
    except PixelplayError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    envs = SyntheticEnv(args.num_envs, ATARI_OBS, 4, 4, device, episode_length=250)
    print(f"replay on {device}: capacity {args.capacity:,} transitions of {ATARI_OBS} uint8 frames, "
          f"{args.num_envs} envs per add, batch {args.batch_size}, n-step {args.n_step}, "
          f"{'prioritized' if args.prioritized else 'uniform'}")
    print(f"memory: {replay.nbytes / 2**30:,.2f} GiB held, {replay.nbytes / args.capacity:,.0f} bytes/transition"
          f"{peak_memory(device)}", flush=True)
    obs = envs.reset()
    agent.observe_first(obs, None)
    actions = torch.randint(0, 4, (args.num_envs,), device=device)
    vector_steps = -(-fill // args.num_envs)
    began = time.perf_counter()
    for _ in range(vector_steps):
        result = envs.step(actions)
        agent.observe(obs, actions, result)
        obs = result.obs
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - began
    added = vector_steps * args.num_envs
    print(f"fill: {added:,} transitions in {seconds:.1f} s, {added / seconds:,.0f} transitions/s "
          f"({1e6 * seconds / vector_steps:,.0f} us per add of {args.num_envs})", flush=True)
    replay.sample(args.batch_size)  # untimed: first-call costs
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    for _ in range(args.samples):
        batch = replay.sample(args.batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - began
    assert batch.obs.shape == (args.batch_size, *ATARI_OBS)
    print(f"sample: {args.samples / seconds:,.0f} minibatches/s, {args.samples * args.batch_size / seconds:,.0f} "
          f"transitions/s ({1e6 * seconds / args.samples:,.0f} us per minibatch){peak_memory(device)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
