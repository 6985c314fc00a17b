"""PPO throughput on Breakout: pixelplay against Stable-Baselines3, same run, same hyperparameters.

    python bench/ppo_vs_sb3.py [--steps 16384] [--backend auto]

Both train PPO with the Nature CNN on 8 Breakout envs, 128 steps per rollout, 4 epochs of
minibatch 256 (CleanRL / RL Zoo settings), from scratch, on the CPU, and the script prints each
one's env steps per second (start-up excluded: the clock starts after the envs are built) and the
ratio. This is a benchmark, not a test: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: both libraries run with it

import torch  # noqa: E402

COMMON = {"num_envs": 8, "num_steps": 128, "update_epochs": 4, "minibatch_size": 256, "learning_rate": 2.5e-4,
          "clip": 0.1, "ent_coef": 0.01, "vf_coef": 0.5, "gamma": 0.99, "gae_lambda": 0.95, "max_grad_norm": 0.5}

# BreakoutNoFrameskip-v4 semantics (what SB3 and the papers use): SB3's AtariWrapper skips frames.
NO_FRAMESKIP = {"frameskip": 1, "repeat_action_probability": 0.0}


def bench_pixelplay(steps: int, backend: str, precision: str) -> float:
    from pixelplay.agents.ppo import PPOAgent, PPOConfig
    from pixelplay.envs import make_vec_env

    c = COMMON
    cfg = PPOConfig(learning_rate=c["learning_rate"], num_steps=c["num_steps"], update_epochs=c["update_epochs"],
                    num_minibatches=c["num_envs"] * c["num_steps"] // c["minibatch_size"], clip_coef=c["clip"],
                    ent_coef=c["ent_coef"], vf_coef=c["vf_coef"], gamma=c["gamma"], gae_lambda=c["gae_lambda"],
                    max_grad_norm=c["max_grad_norm"], precision=precision)
    device = torch.device("cpu")
    torch.manual_seed(0)
    envs = make_vec_env("breakout", c["num_envs"], seed=0, device=device, backend=backend)
    agent = PPOAgent(cfg, envs.obs_shape, envs.num_actions, envs.num_envs, steps, device)
    obs = envs.reset(seed=0)
    start, step = time.perf_counter(), 0
    while step < steps:  # the same loop as train.py, without logging
        action = agent.act(obs, step)
        result = envs.step(action)
        agent.observe(obs, action, result)
        obs = result.obs
        step += envs.num_envs
        if agent.ready(step):
            agent.update(step)
    elapsed = time.perf_counter() - start
    envs.close()
    return steps / elapsed


def bench_sb3(steps: int) -> float:
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import SubprocVecEnv, VecFrameStack

    gym.register_envs(ale_py)
    c = COMMON
    env = VecFrameStack(make_atari_env("ALE/Breakout-v5", n_envs=c["num_envs"], seed=0, env_kwargs=NO_FRAMESKIP,
                                       vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "fork"}), n_stack=4)
    model = PPO("CnnPolicy", env, n_steps=c["num_steps"], batch_size=c["minibatch_size"], n_epochs=c["update_epochs"],
                learning_rate=c["learning_rate"], clip_range=c["clip"], ent_coef=c["ent_coef"], vf_coef=c["vf_coef"],
                gamma=c["gamma"], gae_lambda=c["gae_lambda"], max_grad_norm=c["max_grad_norm"], device="cpu", seed=0,
                tensorboard_log=None)
    with tempfile.TemporaryDirectory():
        start = time.perf_counter()
        model.learn(total_timesteps=steps)
        elapsed = time.perf_counter() - start
    env.close()
    return model.num_timesteps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16_384, help="env steps per library (multiple of 1024)")
    parser.add_argument("--backend", default="auto", help="pixelplay's Atari backend: auto, envpool or gymnasium")
    parser.add_argument("--precision", default="auto", help="pixelplay's precision: auto, bf16 or fp32")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; Breakout PPO, {args.steps} steps each")
    ours = bench_pixelplay(args.steps, args.backend, args.precision)
    print(f"pixelplay ({args.backend} envs, precision {args.precision}): {ours:8.1f} steps/s", flush=True)
    theirs = bench_sb3(args.steps)
    print(f"stable-baselines3 (SubprocVecEnv):      {theirs:8.1f} steps/s")
    print(f"ratio pixelplay / SB3: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
