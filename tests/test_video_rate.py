"""Videos that play like the game: every Doom tic at 35 fps, every ALE frame at 60 fps.

The envs' ``render_every_frame`` option plays a step frame by frame and keeps each frame's
screen (`step_frames`); the game the agent sees must be exactly the one without it.
"""

from pathlib import Path

import numpy as np
import pytest

from pixelplay.envs import EPISODE_INFO_KEY
from pixelplay.envs.atari import FRAME_SKIP, AtariSettings, DeepMindAtari
from pixelplay.envs.doom import DoomEnv
from pixelplay.eval.record import NativeEnv, play_episode

av = pytest.importorskip("av", reason="recording needs PyAV")


def decode(path: Path) -> tuple[int, float]:
    """(frames, frame rate) of a video file, decoded in full with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(video=0)), stream.average_rate


class Scripted:
    """A policy that plays a fixed list of actions (then the last one), noting what it played."""

    def __init__(self, actions):
        self.actions = [int(a) for a in actions]
        self.played: list[int] = []

    def act(self, obs, first):
        action = self.actions[min(len(self.played), len(self.actions) - 1)]
        self.played.append(action)
        return [action]


def play(env, actions, seed):
    """Reset with ``seed`` and play ``actions`` to the episode's end: per step (obs, reward,
    terminated, truncated, episode record) and, with render_every_frame, the step's frames."""
    obs, _ = env.reset(seed=seed)
    steps, frames = [], [env.step_frames()]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        steps.append((obs, reward, terminated, truncated, info.get(EPISODE_INFO_KEY)))
        frames.append(env.step_frames())
        if terminated or truncated:
            break
    return steps, frames


@pytest.mark.parametrize("training", [False, True])
def test_doom_played_tic_by_tic_is_the_same_game(training):
    actions = np.random.default_rng(0).integers(0, 3, 1000)
    # render_native as recording plays (colour frames, grey made by cv2: other observations
    # than the engine's grey, so both envs take it); only render_every_frame differs.
    plain = DoomEnv("basic", training=training, render_native=True)
    every = DoomEnv("basic", training=training, render_every_frame=True, render_native=True)
    try:
        # The engine eases the weapon sprite's bob once per rendered frame (renderer state, not
        # the game's): drawn every tic, the pistol can sit a few pixels off where it is drawn
        # every 4th. Everything else is the same game, pixel for pixel; hide the weapon to see it.
        for env in (plain, every):
            env.reset(seed=3)
            env.game.set_render_weapon(False)
        expected, _ = play(plain, actions, seed=3)
        every.reset(seed=3)
        start = every.game.get_episode_time()
        got, frames = play(every, actions, seed=3)
        # The engine's own counter after each step, read again on a third replay (it reads 0
        # once the episode has finished, so the last step's tics are the frames' own count).
        every.reset(seed=3)
        times = [every.game.get_episode_time()]
        for action in actions[: len(got) - 1]:
            every.step(action)
            times.append(every.game.get_episode_time())
    finally:
        plain.close()
        every.close()
    assert len(got) == len(expected) > 2 and (got[-1][2] or got[-1][3])
    for (obs, reward, term, trunc, record), (obs2, reward2, term2, trunc2, record2) in zip(got, expected, strict=True):
        assert np.array_equal(obs, obs2) and reward == reward2 and (term, trunc) == (term2, trunc2)
        assert record == record2
    assert times[0] == start and len(frames[0]) == 1
    assert all(f.shape == (120, 160, 3) and f.dtype == np.uint8 for step in frames for f in step)
    # One frame per tic: frame_skip per step (the engine's counter agrees), and the step that ends
    # the episode as many as the engine played before it ended.
    assert [len(step) for step in frames[1:-1]] == [4] * (len(got) - 1) == list(np.diff(times))
    assert 1 <= len(frames[-1]) <= 4
    tics = times[-1] - start + len(frames[-1])
    assert sum(len(step) for step in frames) == 1 + tics


def test_atari_played_with_every_frame_is_the_same_game():
    actions = np.random.default_rng(1).integers(0, 4, 300)
    settings = AtariSettings(training=False, max_episode_frames=800)
    plain = DeepMindAtari("ALE/Breakout-v5", None, settings)
    every = DeepMindAtari("ALE/Breakout-v5", None, AtariSettings(training=False, max_episode_frames=800,
                                                                    render_every_frame=True))
    try:
        expected, _ = play(plain, actions, seed=5)
        every.reset(seed=5)
        start = every.ale.getEpisodeFrameNumber()
        got, frames = play(every, actions, seed=5)
        end = every.ale.getEpisodeFrameNumber()
        last_screen = every.render()
    finally:
        plain.close()
        every.close()
    assert len(got) == len(expected)
    for (obs, reward, term, trunc, record), (obs2, reward2, term2, trunc2, record2) in zip(got, expected, strict=True):
        assert np.array_equal(obs, obs2) and reward == reward2 and (term, trunc) == (term2, trunc2)
        assert record == record2
    assert all(len(step) == FRAME_SKIP for step in frames[1:-1]) and 1 <= len(frames[-1]) <= FRAME_SKIP
    assert all(f.shape == (210, 160, 3) for step in frames for f in step)
    assert sum(len(step) for step in frames) == 1 + end - start  # ALE's own frame counter
    assert np.array_equal(frames[-1][-1], last_screen)


def test_doom_video_has_every_tic_at_35_fps(tmp_path):
    actions = np.random.default_rng(2).integers(0, 3, 1000)
    native = NativeEnv("doom-basic", 4)
    policy = Scripted(actions)
    try:
        meta = play_episode(native, policy, tmp_path / "basic.mp4", seed=4)
    finally:
        native.close()
    frames, fps = decode(tmp_path / "basic.mp4")
    # The episode's tics, counted on a plain env (make_action(a, 4) per step) replaying the same
    # actions, then the last one tic by tic until the episode ends.
    plain = DoomEnv("basic", training=False)
    try:
        plain.reset(seed=4)
        for action in policy.played[:-1]:
            assert not any(plain.step(action)[2:4])
        last = 0
        while not plain.game.is_episode_finished():
            plain.game.make_action(plain._action_table[policy.played[-1]], 1)
            last += 1
        tics = 4 * (len(policy.played) - 1) + last
    finally:
        plain.close()
    assert 1 <= last <= 4 and meta["length"] == len(policy.played)
    assert fps == 35 and meta["fps"] == 35.0
    assert frames == meta["video_frames"] == 1 + tics == 1 + meta["frames_played"]


def test_atari_capped_game_video_has_every_frame_at_60_fps(tmp_path):
    native = NativeEnv("breakout", 0, max_frames=400)
    try:
        # NOOP after the served first ball: a lost life is never served again, so only the cap ends it.
        meta = play_episode(native, Scripted([0]), tmp_path / "breakout.mp4", seed=0)
    finally:
        native.close()
    frames, fps = decode(tmp_path / "breakout.mp4")
    assert meta["ended"] == "time limit" and meta["length"] == 100 and meta["game_frames"] == 400
    assert fps == 60 and meta["fps"] == 60.0
    assert frames == meta["video_frames"] == 1 + 400
