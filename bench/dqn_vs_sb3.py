"""DQN throughput and replay memory on Breakout: pixelplay against Stable-Baselines3, same run.

    python bench/dqn_vs_sb3.py [--steps 20000] [--device cpu|cuda]

Same hyperparameters for both (1 env, replay 100k, a gradient step every 4 env steps, batch 32,
learning starts at 1k, target update every 1k): prints env steps per second for each (the clock
starts after the envs and buffers are built), the ratio, and each replay's bytes per transition.
SB3 stores obs and next_obs as separate numpy stacks on the host and copies each minibatch to the
device; pixelplay stores each frame once, on the device. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: both libraries run with it

import torch  # noqa: E402

SETTINGS = {"buffer_size": 100_000, "learning_starts": 1_000, "train_frequency": 4, "batch_size": 32,
            "target_update_interval": 1_000, "learning_rate": 1e-4, "gamma": 0.99}
EXPLORATION = {"exploration_fraction": 0.1, "final_epsilon": 0.05}  # SB3's defaults: epsilon 1 -> 0.05

# BreakoutNoFrameskip-v4 semantics (what SB3 and the papers use): SB3's AtariWrapper skips frames.
NO_FRAMESKIP = {"frameskip": 1, "repeat_action_probability": 0.0}


def bench_pixelplay(steps: int, device: torch.device, backend: str) -> tuple[float, float]:
    from pixelplay.agents.dqn import DQNAgent, DQNConfig
    from pixelplay.envs import make_vec_env

    torch.manual_seed(0)
    envs = make_vec_env("breakout", 1, seed=0, device=device, backend=backend)
    cfg = DQNConfig(**SETTINGS, **EXPLORATION)
    agent = DQNAgent(cfg, envs.obs_shape, envs.num_actions, 1, steps, device, frame_stack=envs.frame_stack)
    bytes_per_transition = agent.replay.nbytes / cfg.buffer_size
    obs = envs.reset(seed=0)
    start, step = time.perf_counter(), 0
    while step < steps:  # the loop of train.py, without logging
        action = agent.act(obs, step)
        result = envs.step(action)
        agent.observe(obs, action, result)
        obs = result.obs
        step += 1
        if agent.ready(step):
            agent.update(step)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    envs.close()
    return steps / elapsed, bytes_per_transition


def bench_sb3(steps: int, device: torch.device) -> tuple[float, float]:
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env("ALE/Breakout-v5", n_envs=1, seed=0, env_kwargs=NO_FRAMESKIP), n_stack=4)
    s = SETTINGS
    model = DQN("CnnPolicy", env, buffer_size=s["buffer_size"], learning_starts=s["learning_starts"],
                train_freq=s["train_frequency"], batch_size=s["batch_size"],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per library")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="auto", help="pixelplay's Atari backend")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} threads; Breakout DQN, {args.steps} steps each")
    ours, ours_bytes = bench_pixelplay(args.steps, device, args.backend)
    print(f"pixelplay:         {ours:8.1f} steps/s, replay {ours_bytes:9,.0f} bytes/transition", flush=True)
    theirs, theirs_bytes = bench_sb3(args.steps, device)
    print(f"stable-baselines3: {theirs:8.1f} steps/s, replay {theirs_bytes:9,.0f} bytes/transition")
    print(f"ratio pixelplay / SB3: {ours / theirs:.2f}x speed, {theirs_bytes / ours_bytes:.1f}x less replay memory")


if __name__ == "__main__":
    main()
