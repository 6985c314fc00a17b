"""DQN throughput and replay memory on Breakout: pixelplay against Stable-Baselines3, same run.

    python bench/dqn_vs_sb3.py [--steps 20000] [--device cpu|cuda] [--num-envs 1]

Same hyperparameters for both (replay 100k, a gradient step every 4 env steps counted over all
envs, batch 32, learning starts at 1k, target update every 1k): prints env steps per second for
each (the clock starts after the envs and buffers are built), the ratio, each replay's bytes per
transition, pixelplay against the machine's two bounds measured in the same run (`bounds.py`:
the network alone and the env alone), pixelplay again without overlapping the env step and the
gradient steps (train.py ``--no-overlap``), with ``--cuda-graphs`` pixelplay acting from a
captured CUDA graph (train.py ``--cuda-graphs``) and, on CUDA, each one's peak device memory. With
several envs SB3 takes ``num_envs / 4`` gradient steps after each vector step (or one every ``4 / num_envs``
vector steps), as pixelplay does. SB3 stores obs and next_obs as separate numpy stacks on the host
and copies each minibatch to the device; pixelplay stores each frame once, on the device. A
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: both libraries run with it

import torch  # noqa: E402
from bounds import measure, peak_memory, reset_peak_memory  # noqa: E402

SETTINGS = {"buffer_size": 100_000, "learning_starts": 1_000, "train_frequency": 4, "batch_size": 32,
            "target_update_interval": 1_000, "learning_rate": 1e-4, "gamma": 0.99}
EXPLORATION = {"exploration_fraction": 0.1, "final_epsilon": 0.05}  # SB3's defaults: epsilon 1 -> 0.05

# BreakoutNoFrameskip-v4 semantics (what SB3 and the papers use): SB3's AtariWrapper skips frames.
NO_FRAMESKIP = {"frameskip": 1, "repeat_action_probability": 0.0}


def pixelplay_config(settings: dict):
    from pixelplay.agents.dqn import DQNConfig

    return DQNConfig(**settings, **EXPLORATION)


def bench_pixelplay(steps: int, num_envs: int, settings: dict, device: torch.device,
                    backend: str, overlap: bool = True, cuda_graphs: bool = False) -> tuple[float, float]:
    from pixelplay.agents.dqn import DQNAgent
    from pixelplay.envs import make_vec_env

    torch.manual_seed(0)
    envs = make_vec_env("breakout", num_envs, seed=0, device=device, backend=backend)
    cfg = pixelplay_config({**settings, "cuda_graphs": cuda_graphs})
    agent = DQNAgent(cfg, envs.obs_shape, envs.num_actions, num_envs, steps, device, frame_stack=envs.frame_stack)
    bytes_per_transition = agent.replay.nbytes / cfg.buffer_size
    obs = envs.reset(seed=0)
    agent.observe_first(obs, envs.labels)
    start, step = time.perf_counter(), 0
    while step < steps:  # the loop of train.py, without logging
        action = agent.act(obs, step)
        envs.step_async(action)
        next_step = step + num_envs
        if overlap and agent.ready(next_step):  # train.py --overlap: they run while the envs step
            agent.update(next_step)
        result = envs.step_wait()
        agent.observe(obs, action, result)
        obs = result.obs
        step = next_step
        if not overlap and agent.ready(step):
            agent.update(step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    envs.close()
    return step / elapsed, bytes_per_transition


def sb3_schedule(train_frequency: int, num_envs: int) -> tuple[int, int] | None:
    """SB3's (train_freq in vector steps, gradient_steps) for pixelplay's one gradient step per
    ``train_frequency`` env steps over ``num_envs`` envs; None when neither divides the other."""
    if num_envs % train_frequency == 0:
        return 1, num_envs // train_frequency
    if train_frequency % num_envs == 0:
        return train_frequency // num_envs, 1
    return None


def bench_sb3(steps: int, num_envs: int, settings: dict, device: torch.device) -> tuple[float, float]:
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack

    gym.register_envs(ale_py)
    vec = {"vec_env_cls": SubprocVecEnv, "vec_env_kwargs": {"start_method": "fork"}} if num_envs > 1 else {
        "vec_env_cls": DummyVecEnv}
    env = VecFrameStack(make_atari_env("ALE/Breakout-v5", n_envs=num_envs, seed=0, env_kwargs=NO_FRAMESKIP, **vec),
                        n_stack=4)
    s = settings
    train_freq, gradient_steps = sb3_schedule(s["train_frequency"], num_envs)
    model = DQN("CnnPolicy", env, buffer_size=s["buffer_size"], learning_starts=s["learning_starts"],
                train_freq=train_freq, gradient_steps=gradient_steps, batch_size=s["batch_size"],
                target_update_interval=s["target_update_interval"], learning_rate=s["learning_rate"],
                gamma=s["gamma"], exploration_fraction=EXPLORATION["exploration_fraction"],
                exploration_final_eps=EXPLORATION["final_epsilon"], device=str(device), seed=0)
    buffer = model.replay_buffer
    arrays = [buffer.observations, buffer.next_observations, buffer.actions, buffer.rewards, buffer.dones,
              buffer.timeouts]
    bytes_per_transition = sum(a.nbytes for a in arrays if a is not None) / s["buffer_size"]
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    elapsed = time.perf_counter() - start
    env.close()
    return model.num_timesteps / elapsed, bytes_per_transition


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per library, over all envs")
    parser.add_argument("--num-envs", type=int, default=1, help="envs on both sides (dividing, or divided by, 4)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="auto", help="pixelplay's Atari backend")
    parser.add_argument("--buffer-size", type=int, default=SETTINGS["buffer_size"], help="replay capacity, both sides")
    parser.add_argument("--learning-starts", type=int, default=SETTINGS["learning_starts"],
                        help="env steps before the first gradient step, both sides")
    parser.add_argument("--bound-steps", type=int, default=512, help="env steps over which bounds.py times the "
                        "network alone and the env alone")
    parser.add_argument("--sequential", action=argparse.BooleanOptionalAction, default=True,
                        help="also time pixelplay without --overlap (the env step, then the gradient steps)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="also time pixelplay acting from a captured CUDA graph (a no-op off CUDA)")
    args = parser.parse_args()
    settings = {**SETTINGS, "buffer_size": args.buffer_size, "learning_starts": args.learning_starts}
    if args.num_envs < 1 or sb3_schedule(settings["train_frequency"], args.num_envs) is None:
        print(f"error: --num-envs must divide, or be a multiple of, train_frequency={settings['train_frequency']}",
              file=sys.stderr)
        return 2
    if args.steps <= args.learning_starts:
        print("error: --steps must exceed --learning-starts, or no gradient step is timed", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} threads; Breakout DQN, {args.num_envs} "
          f"env(s), replay {args.buffer_size:,}, {args.steps} steps each")
    reset_peak_memory(device)
    ours, ours_bytes = bench_pixelplay(args.steps, args.num_envs, settings, device, args.backend)
    print(f"pixelplay:         {ours:8.1f} steps/s, replay {ours_bytes:9,.0f} bytes/transition{peak_memory(device)}",
          flush=True)
    if args.sequential:
        reset_peak_memory(device)
        sequential, _ = bench_pixelplay(args.steps, args.num_envs, settings, device, args.backend, overlap=False)
        print(f"  --no-overlap:    {sequential:8.1f} steps/s{peak_memory(device)}; overlap gains "
              f"{ours / sequential:.2f}x", flush=True)
    if args.cuda_graphs:
        reset_peak_memory(device)
        graphed, _ = bench_pixelplay(args.steps, args.num_envs, settings, device, args.backend, cuda_graphs=True)
        print(f"  --cuda-graphs:   {graphed:8.1f} steps/s{peak_memory(device)}; graphs gain {graphed / ours:.2f}x",
              flush=True)
    reset_peak_memory(device)
    theirs, theirs_bytes = bench_sb3(args.steps, args.num_envs, settings, device)
    print(f"stable-baselines3: {theirs:8.1f} steps/s, replay {theirs_bytes:9,.0f} bytes/transition{peak_memory(device)}")
    print(f"ratio pixelplay / SB3: {ours / theirs:.2f}x speed, {theirs_bytes / ours_bytes:.1f}x less replay memory",
          flush=True)
    bounds = measure("dqn", pixelplay_config(settings), "breakout", args.num_envs, device=device, backend=args.backend,
                     net_steps=args.bound_steps, env_steps=args.bound_steps)
    print(f"bounds: {bounds.summary()}")
    print(f"pixelplay: {bounds.describe(ours)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
