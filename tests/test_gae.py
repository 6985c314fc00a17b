"""GAE against examples worked by hand, and against Monte Carlo returns when lambda is 1."""

import torch

from pixelplay.agents.rollout import compute_gae


def test_gae_matches_hand_worked_example():
    # T=3, one env; the episode ends after step 1 (done), so step 1 does not bootstrap.
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    dones = torch.tensor([[False], [True], [False]])
    last_value = torch.tensor([2.0])
    advantages, returns = compute_gae(rewards, values, dones, last_value, gamma=0.9, gae_lambda=0.8)
    # delta2 = 2 + 0.9*2.0 - 1.5 = 2.3;          A2 = 2.3
    # delta1 = 0 - 1.0 (done: no bootstrap) = -1; A1 = -1.0 (the chain is cut)
    # delta0 = 1 + 0.9*1.0 - 0.5 = 1.4;          A0 = 1.4 + 0.9*0.8*(-1.0) = 0.68
    torch.testing.assert_close(advantages[:, 0], torch.tensor([0.68, -1.0, 2.3]))
    torch.testing.assert_close(returns[:, 0], torch.tensor([1.18, 0.0, 3.8]))


def test_gae_with_lambda_one_is_discounted_return_minus_value():
    generator = torch.Generator().manual_seed(0)
    rewards = torch.rand(6, 2, generator=generator)
    values = torch.rand(6, 2, generator=generator)
    dones = torch.zeros(6, 2, dtype=torch.bool)
    dones[2, 1] = True
    last_value = torch.rand(2, generator=generator)
    gamma = 0.95
    advantages, returns = compute_gae(rewards, values, dones, last_value, gamma=gamma, gae_lambda=1.0)
    for env in range(2):
        running = float(last_value[env])
        for t in reversed(range(6)):
            if dones[t, env]:
                running = 0.0
            running = float(rewards[t, env]) + gamma * running
            assert abs(float(returns[t, env]) - running) < 1e-5
            assert abs(float(advantages[t, env]) - (running - float(values[t, env]))) < 1e-5
