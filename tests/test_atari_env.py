"""Atari envs on the real emulator: the VecEnv contract, episodic life, raw game records, parity
of the gymnasium and EnvPool backends, and the errors a user can hit.

Breakout under random actions loses a life every ~25 agent steps and a game within ~120-250,
so a few hundred steps cover life losses, game overs and (with a small frame cap) truncations.
"""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest
import torch

from pixelplay.envs.atari import EnvPoolAtariVecEnv, make_atari_env, make_atari_vec
from pixelplay.envs.errors import EnvError, MissingDependencyError
from pixelplay.envs.vec import EPISODE_INFO_KEY, GymVecEnv

GAME = "ALE/Breakout-v5"
BREAKOUT_LIVES = 5


def _envpool_or_skip():
    return pytest.importorskip("envpool", reason="EnvPool not installed (pip install 'pixelplay[envpool]')")


BACKENDS = [
    "gymnasium",
    pytest.param(
        "envpool", marks=pytest.mark.skipif(sys.platform != "linux", reason="EnvPool is Linux only")
    ),
]


def _make(backend: str, num_envs: int, seed: int = 0, **options):
    if backend == "envpool":
        _envpool_or_skip()
    env = make_atari_vec(GAME, num_envs, seed, "cpu", backend=backend, **options)
    assert isinstance(env, EnvPoolAtariVecEnv if backend == "envpool" else GymVecEnv)
    return env


def _play(env, steps: int, seed: int = 0):
    """Random actions; yields every `StepResult` (tensors on the CPU).

    The checks compare through numpy: a torch op on a whole observation batch runs in torch's
    thread pool, which on a busy 2-core machine can take tens of milliseconds per call.
    """
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield env.step(torch.from_numpy(rng.integers(0, env.num_actions, env.num_envs)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_mode_contract_and_life_loss_episodes(backend):
    """Shapes and dtypes on torch, clipped rewards, SAME_STEP resets, and one game record after
    exactly as many life-loss terminations as Breakout has lives."""
    n = 2
    with _make(backend, n, training=True) as env:
        assert env.obs_shape == (4, 84, 84) and env.num_actions == 4
        obs = env.reset(seed=0)
        assert obs.shape == (n, 4, 84, 84) and obs.dtype == torch.uint8
        terminations = np.zeros(n, int)
        games_over = 0
        for result in _play(env, 700):
            assert result.obs.shape == result.final_obs.shape == (n, 4, 84, 84)
            assert result.obs.dtype == result.final_obs.dtype == torch.uint8
            assert result.reward.dtype == torch.float32 and result.reward.shape == (n,)
            assert result.terminated.dtype == result.truncated.dtype == torch.bool
            assert set(result.reward.tolist()) <= {-1.0, 0.0, 1.0}
            done = (result.terminated | result.truncated).numpy()
            assert not result.truncated.any()  # no game lasts 27,000 steps here
            terminations += result.terminated.numpy()
            # SAME_STEP: a finished env already shows its next episode; a running one shows one frame.
            obs, final_obs = result.obs.numpy(), result.final_obs.numpy()
            for i in np.flatnonzero(~done):
                assert np.array_equal(obs[i], final_obs[i])
            for i in np.flatnonzero(done):
                assert not np.array_equal(obs[i], final_obs[i])
            for record in result.episodes:
                i = record["env"]
                assert result.terminated[i]
                assert terminations[i] == BREAKOUT_LIVES
                assert record["length"] > 0 and record["frames"] == 4 * record["length"]
                assert record["return"] >= 0
                # A new game starts from a stack of four copies of its first frame.
                assert (obs[i] == obs[i, :1]).all()
                terminations[i] = 0
                games_over += 1
        assert games_over >= 2
        assert terminations.max() < BREAKOUT_LIVES


def test_single_env_game_record_is_the_raw_full_game_score():
    """Training mode: terminated at each life loss, the game goes on (lives keep falling), and
    the only record, at game over, holds the sum of the *raw* rewards over the whole game."""
    env = make_atari_env(GAME, seed=3, training=True)
    try:
        _, info = env.reset()
        lives = info["lives"]
        assert lives == BREAKOUT_LIVES
        rng = np.random.default_rng(3)
        raw_sum, steps, life_losses, records = 0.0, 0, 0, []
        for _ in range(2000):
            obs, reward, terminated, truncated, info = env.step(rng.integers(0, 4))
            assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
            assert reward in (-1.0, 0.0, 1.0) and reward == np.sign(info["raw_reward"])
            raw_sum += info["raw_reward"]
            steps += 1
            assert not truncated
            if EPISODE_INFO_KEY in info:
                records.append(info[EPISODE_INFO_KEY])
                assert terminated and info["lives"] == 0
                break
            if terminated:
                life_losses += 1
                assert info["lives"] == lives - 1
                _, reset_info = env.reset()
                assert reset_info["lives"] == lives - 1  # same game, one life fewer
                lives = reset_info["lives"]
        assert life_losses == BREAKOUT_LIVES - 1
        assert records == [{"return": raw_sum, "length": steps, "frames": 4 * steps}]
        _, info = env.reset()
        assert info["lives"] == BREAKOUT_LIVES  # after game over: a new game
    finally:
        env.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_mode_ends_episodes_only_at_game_over(backend):
    """training=False: raw rewards, a termination only at game over, with its record."""
    n = 2
    with _make(backend, n, training=False) as env:
        env.reset(seed=1)
        game_return = np.zeros(n)
        game_length = np.zeros(n, int)
        games = 0
        for result in _play(env, 700, seed=1):
            game_return += result.reward.numpy()
            game_length += 1
            records = {r["env"]: r for r in result.episodes}
            assert set(np.flatnonzero(result.terminated.numpy())) == set(records)
            for i, record in records.items():
                assert record["return"] == pytest.approx(game_return[i])
                assert record["length"] == game_length[i]
                game_return[i], game_length[i] = 0.0, 0
                games += 1
        assert games >= 2


def test_time_limit_is_a_truncation_and_starts_a_new_game():
    """The frame cap (here 200 frames = 50 agent steps) truncates the whole game, not a life."""
    env = make_atari_env(GAME, seed=0, training=True, max_episode_frames=200)
    try:
        env.reset()
        rng = np.random.default_rng(0)
        steps = 0
        while True:
            _, _, terminated, truncated, info = env.step(rng.integers(0, 4))
            steps += 1
            if truncated:
                break
            if terminated:
                env.reset()
        assert steps == 50
        assert info[EPISODE_INFO_KEY]["length"] == 50 and info[EPISODE_INFO_KEY]["frames"] == 200
        _, info = env.reset()
        assert info["lives"] == BREAKOUT_LIVES
    finally:
        env.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeding_reproduces_games(backend):
    """Env i is seeded with seed + i at construction; reset(seed) reseeds the same way."""
    options = dict(training=True, sticky_actions=True)
    trajectories = []
    for make_seed, reset_seed in ((7, None), (0, 7)):
        with _make(backend, 2, make_seed, **options) as env:
            frames = [env.reset(seed=reset_seed).numpy()]
            frames += [r.obs.numpy() for r in _play(env, 60, seed=5)]
            trajectories.append(np.stack(frames))
    assert np.array_equal(trajectories[0], trajectories[1])


def test_sticky_actions_flag_sets_ale():
    for sticky, p in ((False, 0.0), (True, 0.25)):
        env = make_atari_env("BreakoutNoFrameskip-v4", seed=0, sticky_actions=sticky)
        try:
            assert env.ale.getFloat("repeat_action_probability") == pytest.approx(p)
        finally:
            env.close()


@pytest.mark.parametrize("training", [True, False])
def test_backends_agree_step_for_step(training):
    """With one reset frame (noop_max=1: FIRE only, no random no-ops) and no sticky actions
    Breakout is deterministic, so both backends must produce the same rewards, terminations,
    truncations and game records, step for step, and the same frames."""
    _envpool_or_skip()
    options = dict(training=training, noop_max=1, max_episode_frames=800)
    n = 2
    # In-process gymnasium envs: on a busy machine, two worker processes per step make this slow.
    fns = [functools.partial(make_atari_env, GAME, i, **options) for i in range(n)]
    with GymVecEnv(fns, asynchronous=False) as gym_env, _make("envpool", n, **options) as pool_env:
        assert np.array_equal(gym_env.reset(seed=0).numpy(), pool_env.reset(seed=0).numpy())
        seen = {"terminated": 0, "truncated": 0, "games": 0}
        rng = np.random.default_rng(2)
        for _ in range(450):
            actions = torch.from_numpy(rng.integers(0, 4, n))
            a, b = gym_env.step(actions), pool_env.step(actions)
            for field in ("reward", "terminated", "truncated"):
                assert np.array_equal(getattr(a, field).numpy(), getattr(b, field).numpy()), field
            assert a.episodes == b.episodes
            # Frames: exact here; a small tolerance in case the two OpenCV builds round apart.
            for field in ("obs", "final_obs"):
                diff = np.abs(getattr(a, field).numpy().astype(int) - getattr(b, field).numpy()).max()
                assert diff <= 2, (field, diff)
            seen["terminated"] += int(a.terminated.sum())
            seen["truncated"] += int(a.truncated.sum())
            seen["games"] += len(a.episodes)
        assert seen["truncated"] > 0 and seen["games"] > seen["truncated"]
        if training:
            assert seen["terminated"] > seen["games"]  # life losses


def test_auto_backend_prefers_envpool_when_installed():
    _envpool_or_skip()
    if sys.platform != "linux":
        pytest.skip("auto uses EnvPool on Linux only")
    with make_atari_vec(GAME, 1, 0) as env:
        assert isinstance(env, EnvPoolAtariVecEnv)


def test_missing_envpool(monkeypatch):
    monkeypatch.setitem(sys.modules, "envpool", None)  # makes `import envpool` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'pixelplay\[envpool\]'"):
        make_atari_vec(GAME, 1, 0, backend="envpool")
    with make_atari_vec(GAME, 1, 0, backend="auto") as env:
        assert isinstance(env, GymVecEnv)


@pytest.mark.parametrize(
    ("game_id", "message"),
    [("ALE/Brekout-v5", "Breakout"), ("BrekoutNoFrameskip-v4", "Breakout"), ("CartPole-v1", "not an Atari")],
)
def test_unknown_game_is_an_env_error(game_id, message):
    with pytest.raises(EnvError, match=message):
        make_atari_vec(game_id, 1, 0, backend="gymnasium")


def test_bad_options_are_env_errors():
    with pytest.raises(EnvError, match="backend"):
        make_atari_vec(GAME, 1, 0, backend="ale")
    with pytest.raises(EnvError, match="num_envs"):
        make_atari_vec(GAME, 0, 0)
