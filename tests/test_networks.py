"""CNN shapes for Atari and Doom resolutions, refused geometry, and Stable-Baselines3 interop."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelplay.agents.networks import GeometryError, ImpalaCNN, NatureCNN, QNetwork, build_extractor


@pytest.mark.parametrize(
    "shape",
    [(4, 84, 84), (1, 84, 84), (3, 84, 84), (12, 84, 84), (4, 68, 68), (4, 60, 76)],
)
def test_nature_cnn_output_shape(shape):
    net = NatureCNN(gym.spaces.Box(0, 255, shape, np.uint8), features_dim=256)
    out = net(torch.randint(0, 256, (3, *shape), dtype=torch.uint8))
    assert out.shape == (3, 256)
    assert net.features_dim == 256


@pytest.mark.parametrize("shape", [(4, 84, 84), (4, 64, 64), (3, 72, 96), (1, 120, 160)])
def test_impala_cnn_output_shape(shape):
    net = ImpalaCNN(shape)
    assert net(torch.zeros(2, *shape, dtype=torch.uint8)).shape == (2, 256)


def test_uint8_and_scaled_float_inputs_agree():
    net = NatureCNN((4, 84, 84))
    pixels = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    torch.testing.assert_close(net(pixels), net(pixels.float() / 255.0))


def test_geometry_that_drops_pixels_is_refused_naming_the_layer():
    # 64 -> conv1 gives 15; conv2 (4x4/2) on 15 is (15 - 4) / 2 + 1 = 6.5: refused.
    with pytest.raises(GeometryError, match="conv2"):
        NatureCNN((4, 64, 64))


def test_too_small_input_is_refused():
    with pytest.raises(GeometryError, match="conv1"):
        NatureCNN((4, 6, 6))
    with pytest.raises(GeometryError, match="C, H, W"):
        NatureCNN((84, 84))


def test_unknown_network_name():
    with pytest.raises(Exception, match="unknown network 'resnet'"):
        build_extractor("resnet", (4, 84, 84))


def test_dueling_head_centres_advantages():
    q_net = QNetwork(NatureCNN((4, 84, 84), features_dim=32), num_actions=5, dueling=True)
    obs = torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8)
    features = q_net.extractor(obs)
    q = q_net(obs)
    value = q_net.value(features)
    # mean over actions of Q equals V when A is centred
    torch.testing.assert_close(q.mean(dim=1, keepdim=True), value, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("extractor", [NatureCNN, ImpalaCNN])
def test_extractor_trains_inside_stable_baselines3(extractor):
    from stable_baselines3 import PPO
    from stable_baselines3.common.envs import FakeImageEnv

    env = FakeImageEnv(action_dim=4, screen_height=84, screen_width=84, n_channels=4, channel_first=True)
    model = PPO(
        "CnnPolicy",
        env,
        n_steps=64,
        batch_size=32,
        n_epochs=1,
        policy_kwargs={"features_extractor_class": extractor, "features_extractor_kwargs": {"features_dim": 64}},
        seed=0,
        device="cpu",
    )
    before = [p.detach().clone() for p in model.policy.features_extractor.parameters()]
    model.learn(total_timesteps=256)
    assert isinstance(model.policy.features_extractor, extractor)
    after = list(model.policy.features_extractor.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "SB3 did not update the extractor"
