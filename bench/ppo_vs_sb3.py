"""PPO throughput on Breakout: pixelplay against Stable-Baselines3, same run, same hyperparameters.

    python bench/ppo_vs_sb3.py [--steps 16384] [--backend auto] [--num-envs 8] [--device cpu]

Both train PPO with the Nature CNN on 8 Breakout envs (``--num-envs``), 128 steps per rollout, 4
epochs of minibatch 256 (CleanRL / RL Zoo settings; ``--num-steps`` and ``--minibatch-size`` change
both sides, for a quick dry run), from scratch, on ``--device``, and the
script prints each one's env steps per second (start-up excluded: the clock starts after the envs
are built), the ratio, pixelplay against the machine's two bounds measured in the same run
(`bounds.py`: the network alone and the env alone), with ``--double-buffer`` pixelplay again with
double-buffered sampling, with ``--cuda-graphs`` pixelplay again acting from a captured CUDA graph,
and, on CUDA, each one's peak device memory. This is a benchmark, not a test: run it on an otherwise
idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: both libraries run with it

import torch  # noqa: E402
from bounds import measure, peak_memory, reset_peak_memory  # noqa: E402

COMMON = {"num_steps": 128, "update_epochs": 4, "minibatch_size": 256, "learning_rate": 2.5e-4,
          "clip": 0.1, "ent_coef": 0.01, "vf_coef": 0.5, "gamma": 0.99, "gae_lambda": 0.95, "max_grad_norm": 0.5}

# BreakoutNoFrameskip-v4 semantics (what SB3 and the papers use): SB3's AtariWrapper skips frames.
NO_FRAMESKIP = {"frameskip": 1, "repeat_action_probability": 0.0}


def pixelplay_config(num_envs: int, precision: str, settings: dict = COMMON):
    """pixelplay's `PPOConfig` with the settings both sides share."""
    from pixelplay.agents.ppo import PPOConfig

    c = settings
    return PPOConfig(learning_rate=c["learning_rate"], num_steps=c["num_steps"], update_epochs=c["update_epochs"],
                     num_minibatches=num_envs * c["num_steps"] // c["minibatch_size"], clip_coef=c["clip"],
                     ent_coef=c["ent_coef"], vf_coef=c["vf_coef"], gamma=c["gamma"], gae_lambda=c["gae_lambda"],
                     max_grad_norm=c["max_grad_norm"], precision=precision)


def bench_pixelplay(steps: int, num_envs: int, settings: dict, backend: str, precision: str,
                    device: torch.device, cuda_graphs: bool = False, double_buffer: bool = False) -> float:
    """pixelplay's env steps per second over ``steps``, in train.py's loop without logging:
    ``double_buffer`` steps the envs in two halves, one acting while the other steps."""
    from pixelplay.agents.ppo import PPOAgent
    from pixelplay.envs import make_vec_env

    cfg = replace(pixelplay_config(num_envs, precision, settings), cuda_graphs=cuda_graphs)
    torch.manual_seed(0)
    size = num_envs // 2 if double_buffer else num_envs
    groups = [make_vec_env("breakout", size, seed=first, device=device, backend=backend)
              for first in range(0, num_envs, size)]
    rows = [slice(first, first + size) for first in range(0, num_envs, size)]
    agent = PPOAgent(cfg, groups[0].obs_shape, groups[0].num_actions, num_envs, steps, device)
    obs = [envs.reset(seed=first.start) for envs, first in zip(groups, rows)]
    agent.observe_first(torch.cat(obs))
    actions: list[torch.Tensor | None] = [None] * len(groups)

    def start_steps() -> None:
        for g, envs in enumerate(groups):
            if actions[g] is None and step < steps and agent.can_act(rows[g]):
                actions[g] = agent.act(obs[g], step, rows[g])
                envs.step_async(actions[g])

    start, step, turn = time.perf_counter(), 0, 0
    start_steps()
    while step < steps:
        g, turn = turn, (turn + 1) % len(groups)
        result = groups[g].step_wait()
        agent.observe(obs[g], actions[g], result, rows[g])
        obs[g], actions[g] = result.obs, None
        step += size
        if agent.ready(step):
            agent.update(step)
        start_steps()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    for envs in groups:
        envs.close()
    return steps / elapsed


def bench_sb3(steps: int, num_envs: int, settings: dict, device: torch.device) -> float:
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import SubprocVecEnv, VecFrameStack

    gym.register_envs(ale_py)
    c = settings
    env = VecFrameStack(make_atari_env("ALE/Breakout-v5", n_envs=num_envs, seed=0, env_kwargs=NO_FRAMESKIP,
                                       vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "fork"}), n_stack=4)
    model = PPO("CnnPolicy", env, n_steps=c["num_steps"], batch_size=c["minibatch_size"], n_epochs=c["update_epochs"],
                learning_rate=c["learning_rate"], clip_range=c["clip"], ent_coef=c["ent_coef"], vf_coef=c["vf_coef"],
                gamma=c["gamma"], gae_lambda=c["gae_lambda"], max_grad_norm=c["max_grad_norm"], device=str(device), seed=0,
                tensorboard_log=None)
    with tempfile.TemporaryDirectory():
        start = time.perf_counter()
        model.learn(total_timesteps=steps)
        elapsed = time.perf_counter() - start
    env.close()
    return model.num_timesteps / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16_384, help="env steps per library (whole rollouts: a "
                        "multiple of num_steps * num_envs)")
    parser.add_argument("--num-envs", type=int, default=8, help="envs on both sides")
    parser.add_argument("--num-steps", type=int, default=COMMON["num_steps"], help="rollout length, both sides")
    parser.add_argument("--minibatch-size", type=int, default=COMMON["minibatch_size"], help="both sides; it must "
                        "divide the rollout of num_steps * num_envs transitions")
    parser.add_argument("--backend", default="auto", help="pixelplay's Atari backend: auto, envpool or gymnasium")
    parser.add_argument("--precision", default="auto", help="pixelplay's precision: auto, bf16 or fp32")
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for both libraries")
    parser.add_argument("--bound-steps", type=int, default=2048, help="env steps over which bounds.py times the "
                        "network alone and the env alone")
    parser.add_argument("--double-buffer", action="store_true",
                        help="also time pixelplay with double-buffered sampling (train.py's --double-buffer)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="also time pixelplay acting from a captured CUDA graph (a no-op off CUDA)")
    args = parser.parse_args()
    settings = {**COMMON, "num_steps": args.num_steps, "minibatch_size": args.minibatch_size}
    rollout = args.num_steps * args.num_envs
    if min(args.num_envs, args.num_steps, args.minibatch_size) < 1 or rollout % args.minibatch_size or \
            args.steps < rollout or args.steps % rollout:
        print(f"error: the rollout of num_steps * num_envs = {rollout} must be a multiple of --minibatch-size "
              f"({args.minibatch_size}), and --steps a positive multiple of the rollout", file=sys.stderr)
        return 2
    if args.double_buffer and args.num_envs % 2:
        print(f"error: --double-buffer steps the envs in two equal halves: --num-envs {args.num_envs} must be even",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} threads; Breakout PPO, "
          f"{args.num_envs} envs, {args.steps} steps each")
    reset_peak_memory(device)
    ours = bench_pixelplay(args.steps, args.num_envs, settings, args.backend, args.precision, device)
    print(f"pixelplay ({args.backend} envs, precision {args.precision}): {ours:8.1f} steps/s{peak_memory(device)}",
          flush=True)
    # Each variant asked for, timed again in the same run: (flag, bench_pixelplay keyword).
    for flag, option in (("--double-buffer", "double_buffer"), ("--cuda-graphs", "cuda_graphs")):
        if getattr(args, option):
            reset_peak_memory(device)
            rate = bench_pixelplay(args.steps, args.num_envs, settings, args.backend, args.precision, device,
                                   **{option: True})
            print(f"  {flag + ':':36s}{rate:8.1f} steps/s{peak_memory(device)}; gain {rate / ours:.2f}x", flush=True)
    reset_peak_memory(device)
    theirs = bench_sb3(args.steps, args.num_envs, settings, device)
    print(f"stable-baselines3 (SubprocVecEnv):      {theirs:8.1f} steps/s{peak_memory(device)}")
    print(f"ratio pixelplay / SB3: {ours / theirs:.2f}x", flush=True)
    bounds = measure("ppo", pixelplay_config(args.num_envs, args.precision, settings), "breakout", args.num_envs,
                     device=device, backend=args.backend, net_steps=args.bound_steps, env_steps=args.bound_steps)
    print(f"bounds: {bounds.summary()}")
    print(f"pixelplay: {bounds.describe(ours)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
