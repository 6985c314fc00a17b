"""The PPO and A2C losses on a fixed batch against the formulas written out element by element."""

import math

import torch

from pixelplay.agents.ppo import actor_critic_loss
from pixelplay.agents.rollout import RolloutBatch


def _batch():
    return RolloutBatch(
        obs=torch.zeros(4, 1, 1, 1, dtype=torch.uint8),
        action=torch.tensor([0, 1, 2, 1]),
        logprob=torch.tensor([-1.0, -0.5, -2.0, -1.2]),
        value=torch.tensor([0.5, -0.2, 1.0, 0.0]),
        advantage=torch.tensor([1.0, -2.0, 0.5, 3.0]),
        ret=torch.tensor([1.5, -1.0, 1.2, 2.0]),
    )


def _direct_ppo(new_logprob, entropy, new_value, batch, clip, vf_coef, ent_coef):
    adv = [float(a) for a in batch.advantage]
    mean = sum(adv) / len(adv)
    std = math.sqrt(sum((a - mean) ** 2 for a in adv) / (len(adv) - 1))
    adv = [(a - mean) / (std + 1e-8) for a in adv]
    policy, value = 0.0, 0.0
    for i in range(len(adv)):
        ratio = math.exp(float(new_logprob[i]) - float(batch.logprob[i]))
        policy += max(-adv[i] * ratio, -adv[i] * min(max(ratio, 1 - clip), 1 + clip))
        v_new, v_old, ret = float(new_value[i]), float(batch.value[i]), float(batch.ret[i])
        v_clip = v_old + min(max(v_new - v_old, -clip), clip)
        value += 0.5 * max((v_new - ret) ** 2, (v_clip - ret) ** 2)
    policy /= len(adv)
    value /= len(adv)
    ent = float(entropy.mean())
    return policy, value, policy - ent_coef * ent + vf_coef * value


def test_ppo_loss_matches_direct_formula():
    batch = _batch()
    new_logprob = torch.tensor([-0.7, -0.9, -2.1, -0.4])  # ratios ~1.35, 0.67, 0.90, 2.23: some clipped
    entropy = torch.tensor([1.0, 0.9, 1.1, 0.8])
    new_value = torch.tensor([0.9, -0.25, 0.7, 0.5])
    terms = actor_critic_loss(new_logprob, entropy, new_value, batch, clip_coef=0.2, clip_vloss=True,
                              vf_coef=0.5, ent_coef=0.01, norm_adv=True)
    policy, value, total = _direct_ppo(new_logprob, entropy, new_value, batch, 0.2, 0.5, 0.01)
    assert abs(float(terms.policy) - policy) < 1e-5
    assert abs(float(terms.value) - value) < 1e-5
    assert abs(float(terms.total) - total) < 1e-5
    assert float(terms.clip_fraction) == 0.75  # |ratio - 1| > 0.2 for three of four


def test_a2c_loss_is_the_plain_policy_gradient():
    batch = _batch()
    new_logprob = torch.tensor([-0.7, -0.9, -2.1, -0.4], requires_grad=True)
    entropy = torch.tensor([1.0, 0.9, 1.1, 0.8])
    new_value = torch.tensor([0.9, -0.25, 0.7, 0.5])
    terms = actor_critic_loss(new_logprob, entropy, new_value, batch, clip_coef=None, clip_vloss=False,
                              vf_coef=0.5, ent_coef=0.01, norm_adv=False)
    expected_policy = -sum(float(a) * float(lp) for a, lp in zip(batch.advantage, new_logprob.detach())) / 4
    expected_value = sum(0.5 * (float(v) - float(r)) ** 2 for v, r in zip(new_value, batch.ret)) / 4
    assert abs(float(terms.policy.detach()) - expected_policy) < 1e-5
    assert abs(float(terms.value) - expected_value) < 1e-5
    terms.total.backward()
    # d(policy loss)/d(logprob_i) = -A_i / B
    torch.testing.assert_close(new_logprob.grad, -batch.advantage / 4)
