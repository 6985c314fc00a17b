"""Game-feature labels (Lample & Chaplot 2017's "game feature augmentation") from ViZDoom's
labels buffer: what counts as visible, the labels on the real engine, and how they travel
through `make_vec_env` into `StepResult.labels` and `VecEnv.labels`.

Fast: a few seconds in all (short scripted plays, seeded).
"""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("vizdoom")
pytest.importorskip("cv2")

from pixelplay.envs import EnvError, env_spec, make_vec_env  # noqa: E402
from pixelplay.envs.doom import (  # noqa: E402
    GAME_FEATURE_OBJECTS,
    GAME_FEATURES,
    MIN_VISIBLE_PIXELS,
    DoomEnv,
    DoomSettings,
    GameFeatureLabeller,
)
from pixelplay.envs.scenarios import SCENARIOS  # noqa: E402
from pixelplay.envs.vec import GAME_FEATURES_INFO_KEY, GymVecEnv  # noqa: E402


def _label(name, value, x, y, w, h, category=None):
    return SimpleNamespace(object_name=name, object_category=category, value=value, x=x, y=y, width=w, height=h)


def _buffer(*boxes, shape=(120, 160)):
    """A labels buffer with each (value, x, y, w, h, pixels) box holding ``pixels`` pixels of value."""
    buffer = np.zeros(shape, np.uint8)
    for value, x, y, w, h, pixels in boxes:
        box = buffer[y : y + h, x : x + w].reshape(-1)  # a copy: write it back
        box[:pixels] = value
        buffer[y : y + h, x : x + w] = box.reshape(h, w)
    return buffer


# ------------------------------------------------------------------------- what counts as seen
def test_an_object_counts_only_with_enough_visible_pixels_and_never_the_player_itself():
    labeller = GameFeatureLabeller(("ammo", "enemy"))  # columns in the order asked
    bot = _label("DoomPlayer", 100, 10, 10, 5, 5, "Player")
    weapon_sprite = _label("DoomPlayer", 255, 50, 80, 30, 30, "Self")  # the player's own gun
    clip = _label("Clip", 60, 100, 50, 4, 4, "Ammo")
    enough, too_few = MIN_VISIBLE_PIXELS, MIN_VISIBLE_PIXELS - 1

    # A bot with enough pixels is an enemy; the player's weapon (895 pixels) never is.
    buffer = _buffer((100, 10, 10, 5, 5, enough), (255, 50, 80, 30, 30, 895), (60, 100, 50, 4, 4, too_few))
    assert labeller([bot, weapon_sprite, clip], buffer).tolist() == [0.0, 1.0]
    # Listed but hidden behind a wall (0 pixels), or a speck: not visible.
    buffer = _buffer((100, 10, 10, 5, 5, too_few), (255, 50, 80, 30, 30, 895), (60, 100, 50, 4, 4, enough))
    assert labeller([bot, weapon_sprite, clip], buffer).tolist() == [1.0, 0.0]
    assert labeller([bot], _buffer()).tolist() == [0.0, 0.0]
    # The player's own body (ViZDoom >= 1.3 files it under "Self" whatever its value), and without
    # categories (older ViZDoom) the weapon sprite by its label value 255, as Arnold does.
    body = _label("DoomPlayer", 90, 10, 10, 5, 5, "Self")
    assert labeller([body], _buffer((90, 10, 10, 5, 5, 25))).tolist() == [0.0, 0.0]
    old_sprite = _label("DoomPlayer", 255, 10, 10, 5, 5, None)
    assert labeller([old_sprite], _buffer((255, 10, 10, 5, 5, 25))).tolist() == [0.0, 0.0]
    # Only the pixels of its own value, inside its own box, count.
    other = _buffer((101, 10, 10, 5, 5, 25))
    assert labeller([bot], other).tolist() == [0.0, 0.0]


def test_object_kinds_come_from_the_name_table_and_monster_categories():
    labeller = GameFeatureLabeller(GAME_FEATURES)
    seen = {
        "Cacodemon": [1, 0, 0, 0], "MarineChainsawVzd": [1, 0, 0, 0], "Medikit": [0, 1, 0, 0],
        "Stimpack": [0, 1, 0, 0], "SuperShotgun": [0, 0, 1, 0], "RocketLauncher": [0, 0, 1, 0],
        "ShellBox": [0, 0, 0, 1], "CellPack": [0, 0, 0, 1],
        # Not a kind: corpses, armour, barrels, health_gathering_supreme's poison.
        "DeadDoomPlayer": [0, 0, 0, 0], "GreenArmor": [0, 0, 0, 0], "ExplosiveBarrel": [0, 0, 0, 0],
        "Poison": [0, 0, 0, 0],
    }
    buffer = _buffer((7, 0, 0, 10, 10, 100))
    for name, expected in seen.items():
        category = "Health" if name == "Poison" else None
        assert labeller([_label(name, 7, 0, 0, 10, 10, category)], buffer).tolist() == expected, name
    # A scenario's own monster class counts through ViZDoom's "Monster" category.
    assert labeller([_label("ZombieVzdCustom", 7, 0, 0, 10, 10, "Monster")], buffer).tolist() == [1, 0, 0, 0]
    assert set(GAME_FEATURE_OBJECTS) == set(GAME_FEATURES)


def test_the_pixel_threshold_scales_with_the_screen():
    labeller = GameFeatureLabeller(("enemy",))
    bot = _label("DoomPlayer", 100, 0, 0, 40, 40, "Player")
    big = 16 * MIN_VISIBLE_PIXELS  # 640x480 has 16 times the pixels of 160x120
    assert labeller([bot], _buffer((100, 0, 0, 40, 40, big - 1), shape=(480, 640))).tolist() == [0.0]
    assert labeller([bot], _buffer((100, 0, 0, 40, 40, big), shape=(480, 640))).tolist() == [1.0]


# ------------------------------------------------------------------------------ the options
def test_unknown_feature_names_are_refused_with_the_known_ones():
    with pytest.raises(EnvError, match="unknown game feature.*'enemies'.*known: enemy, health, weapon, ammo"):
        make_vec_env("doom-deathmatch", 2, seed=0, game_features=("enemies",))
    with pytest.raises(EnvError, match="twice"):
        DoomEnv("basic", game_features=("enemy", "enemy"))
    # One comma-separated string (a command line's) is several names, in its order.
    assert DoomSettings.from_options(SCENARIOS["basic"], game_features="health, enemy").game_features == (
        "health", "enemy"
    )


def test_the_env_spec_carries_the_feature_names():
    assert env_spec("doom-deathmatch", game_features=("enemy", "weapon")).game_features == ("enemy", "weapon")
    assert env_spec("doom-deathmatch").game_features == ()
    assert env_spec("doom-basic", game_features=["enemy"]).game_features == ("enemy",)


# -------------------------------------------------------------------------- the real engine
def test_basic_the_monster_in_front_is_an_enemy_on_the_first_frame_and_nothing_else_is_seen():
    env = DoomEnv("basic", seed=0, game_features=GAME_FEATURES)
    try:
        obs, info = env.reset()
        assert env.game.is_labels_buffer_enabled()
        labels = info[GAME_FEATURES_INFO_KEY]
        assert labels.dtype == np.float32 and labels.shape == (4,)
        assert labels.tolist() == [1.0, 0.0, 0.0, 0.0]  # the Cacodemon; no pickups in that room
        _, _, _, _, info = env.step(0)
        assert info[GAME_FEATURES_INFO_KEY].tolist() == [1.0, 0.0, 0.0, 0.0]
    finally:
        env.close()
    off = DoomEnv("basic", seed=0)
    try:
        _, info = off.reset()
        assert info == {} and not off.game.is_labels_buffer_enabled()  # off: no buffer, no key
        assert GAME_FEATURES_INFO_KEY not in off.step(0)[4]
    finally:
        off.close()


def _bot_pixels(game) -> list[int]:
    """The pixels each other player (a bot) listed in the current frame shows, counted here from
    the labels buffer, apart from `GameFeatureLabeller`."""
    state = game.get_state()
    return [
        int(np.count_nonzero(state.labels_buffer == label.value))
        for label in state.labels
        if label.object_name == "DoomPlayer" and label.object_category != "Self" and label.value != 255
    ]


def _play_deathmatch(seed: int, until) -> list[tuple[float, list[int]]]:
    """Seeded scripted play against 4 bots: the player turns left, then walks forward while
    turning, in turns of 10 steps. Each frame's (enemy label, bots' pixels), checked against the
    pixel count, up to the first frame for which ``until(frames)`` holds (at most 100 steps)."""
    env = DoomEnv("deathmatch", seed=seed, bots=4, game_features=("enemy", "weapon"))
    try:
        names = env.action_names
        _, info = env.reset()
        frames = [(float(info[GAME_FEATURES_INFO_KEY][0]), _bot_pixels(env.game))]
        for step in range(100):
            action = names.index("MOVE_FORWARD+TURN_LEFT" if (step // 10) % 2 else "TURN_LEFT")
            _, _, terminated, truncated, info = env.step(action)
            assert not (terminated or truncated)
            enemy, pixels = float(info[GAME_FEATURES_INFO_KEY][0]), _bot_pixels(env.game)
            # 1 where a bot shows enough pixels, 0 where none does (and the player's own gun, on
            # screen in every frame, never counts).
            assert enemy == float(max(pixels, default=0) >= MIN_VISIBLE_PIXELS), (seed, step, pixels)
            frames.append((enemy, pixels))
            if until(frames):
                break
        return frames
    finally:
        env.close()


def test_deathmatch_enemy_is_one_exactly_on_the_frames_where_a_bot_is_in_view():
    # Seed 0: a bot walks into view by step 8 (enemy 1), and out of it again (enemy 0).
    frames = _play_deathmatch(0, until=lambda frames: frames[-1][0] == 0.0 and any(e for e, _ in frames))
    assert {enemy for enemy, _ in frames} == {0.0, 1.0}, frames
    # Seed 1: by step 63 a bot is listed while hidden but for a speck (1-3 pixels): not seen.
    frames = _play_deathmatch(1, until=lambda frames: bool(frames[-1][1]))
    enemy, pixels = frames[-1]
    assert pixels and enemy == 0.0, frames[-1]


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
])
def test_make_vec_env_gives_the_labels_of_the_returned_observations_on_the_device(device):
    # Two workers; 20-tic episodes (5 steps), so both envs finish and start again.
    features = ("enemy", "health")
    with make_vec_env("doom-basic", 2, seed=0, device=device, episode_timeout=20, game_features=features) as envs:
        assert envs.spec.game_features == envs.game_features == ("enemy", "health")
        obs = envs.reset(seed=0)
        assert envs.labels.dtype == torch.float32 and tuple(envs.labels.shape) == (2, 2)
        assert envs.labels.device.type == obs.device.type == device
        assert envs.labels.tolist() == [[1.0, 0.0], [1.0, 0.0]]
        finished = 0
        for _ in range(6):
            result = envs.step(torch.zeros(2, dtype=torch.int64))
            assert result.labels.dtype == torch.float32 and tuple(result.labels.shape) == (2, 2)
            assert result.labels.device == result.obs.device and result.obs.device.type == device
            assert envs.labels is result.labels
            assert result.labels.tolist() == [[1.0, 0.0], [1.0, 0.0]]
            finished += int((result.terminated | result.truncated).sum())
        assert finished == 2
    with make_vec_env("doom-basic", 1, seed=0) as envs:  # off: nothing travels
        assert envs.spec.game_features == () and envs.game_features == ()
        envs.reset(seed=0)
        assert envs.labels is None and envs.step(torch.zeros(1, dtype=torch.int64)).labels is None


# -------------------------------------------------------------------------- the vector plumbing
class _Counter(gym.Env):
    """A 3-step episode whose observation is the step number t and whose labels are (t % 2, t),
    from reset and from every step; the last step repeats its observation (as DoomEnv does)."""

    observation_space = gym.spaces.Box(0, 255, (1, 2, 2), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, labels: bool = True):
        self.t, self.with_labels = 0, labels

    def _out(self):
        info = {GAME_FEATURES_INFO_KEY: np.array([self.t % 2, self.t], np.float32)} if self.with_labels else {}
        return np.full((1, 2, 2), self.t, np.uint8), info

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self._out()

    def step(self, action):
        self.t += 1
        obs, info = self._out()
        return obs, 1.0, self.t == 3, False, info


def test_a_finished_envs_labels_row_is_its_new_episodes_first_frame_like_obs():
    envs = GymVecEnv([_Counter, _Counter], asynchronous=False, game_features=("odd", "t"))
    try:
        obs = envs.reset()
        assert envs.labels.tolist() == [[0.0, 0.0], [0.0, 0.0]]
        for _ in range(7):
            result = envs.step(np.zeros(2, np.int64))
            # Every row describes ``obs``: on the finishing step, the new episode's t = 0 (while
            # final_obs holds t = 3).
            assert torch.equal(result.labels[:, 1], result.obs[:, 0, 0, 0].float())
            assert torch.equal(result.labels[:, 0], result.obs[:, 0, 0, 0].float() % 2)
            done = result.terminated | result.truncated
            if done.any():
                assert result.labels[done, 1].eq(0).all() and result.final_obs[done, 0, 0, 0].eq(3).all()
            obs = result.obs
        assert obs.shape == (2, 1, 2, 2)
    finally:
        envs.close()


def test_envs_that_promise_labels_but_give_none_are_a_clear_error():
    envs = GymVecEnv([lambda: _Counter(labels=False)], asynchronous=False, game_features=("enemy",))
    try:
        with pytest.raises(EnvError, match="returned no labels"):
            envs.reset()
    finally:
        envs.close()
