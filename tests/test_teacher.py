"""A scripted teacher's advice (Kickstarting, Schmitt et al. 2018): the label aimer's choice of
target and action, the advice's way from the env to the rollout, the distillation loss, and the
run option ``--teacher``.

The fake env below draws frames with a cue (the left or the right half brighter) and a teacher
that advises action 0 for "left", either 1 or 2 for "right" (a bitmask of the advised actions, as
the aimer leaves movement free) and nothing (0) on a third of the frames, drawn
independently from frame to frame: advice stored with the wrong frame disagrees with it about
half of the time, and a student that learns the advice learns a function of the frame.
"""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pixelplay import train
from pixelplay.agents.ppo import A2CAgent, A2CConfig, PPOAgent, PPOConfig, teacher_loss
from pixelplay.envs import make_env, make_vec_env
from pixelplay.envs.doom_teacher import ADVISE_FROM_PIXELS, NO_ADVICE, AimerTeacher, enemy_offset
from pixelplay.envs.errors import EnvError, PixelplayError
from pixelplay.envs.vec import ADVICE_INFO_KEY, StepResult

HW = (36, 36)  # the smallest size the Nature CNN tiles
DEATHMATCH_ACTIONS = make_env("doom-deathmatch").action_names


# ---------------------------------------------------------------------------------------------
# The aimer


def _label(value, x, y, w, h, category="Player", name="DoomPlayer"):
    return SimpleNamespace(value=value, x=x, y=y, width=w, height=h, object_category=category, object_name=name)


def test_the_aimer_targets_the_most_visible_enemy_and_ignores_its_own_sprite():
    """On a hand-made 160x120 labels buffer: the player's weapon sprite (value 255), an enemy
    listed but hidden (no pixel of its value inside its box) and an item are ignored; of two
    visible enemies the one with more pixels wins; the offset is a fraction of the width."""
    buffer = np.zeros((120, 160), np.uint8)
    buffer[90:120, 60:100] = 255  # own weapon sprite
    buffer[40:50, 10:14] = 3  # small enemy left: 40 pixels, centre x = 12
    buffer[30:60, 120:130] = 4  # big enemy right: 300 pixels, centre x = 125
    labels = [_label(255, 60, 90, 40, 30, category="Self"), _label(3, 10, 40, 4, 10), _label(4, 120, 30, 10, 30),
              _label(5, 0, 0, 50, 50),  # listed, hidden behind a wall: no pixel of value 5
              _label(6, 120, 30, 10, 30, category="Item", name="Medikit")]
    assert enemy_offset(labels, buffer) == pytest.approx((125 - 80) / 160)
    assert enemy_offset(labels[:2] + labels[3:], buffer) == pytest.approx((12 - 80) / 160)
    assert enemy_offset([labels[0], labels[3], labels[4]], buffer) is None
    assert enemy_offset(labels, None) is None
    # A monster without ViZDoom's categories counts by its name; 3 pixels are too few to see.
    speck = np.zeros((120, 160), np.uint8)
    speck[0, 0:3] = 7
    assert enemy_offset([_label(7, 0, 0, 3, 1, category=None, name="DoomImp")], speck) is None
    speck[0, 3] = 7
    assert enemy_offset([_label(7, 0, 0, 4, 1, category=None, name="DoomImp")], speck) == pytest.approx((2 - 80) / 160)


def test_the_aimer_fires_when_centred_turns_and_fires_when_near_and_turns_when_far():
    teacher = AimerTeacher(DEATHMATCH_ACTIONS)
    name = {offset: DEATHMATCH_ACTIONS[teacher.advise(offset)] for offset in (-0.4, -0.1, 0.02, 0.1, 0.4)}
    assert name == {-0.4: "TURN_LEFT", -0.1: "TURN_LEFT+ATTACK", 0.02: "ATTACK", 0.1: "TURN_RIGHT+ATTACK",
                    0.4: "TURN_RIGHT"}
    assert teacher.advise(None) == NO_ADVICE
    # What a learner is taught: the same turn and trigger, with any movement.
    near_left = teacher.mask(DEATHMATCH_ACTIONS.index("TURN_LEFT+ATTACK"))
    assert {DEATHMATCH_ACTIONS[a] for a in range(len(DEATHMATCH_ACTIONS)) if near_left >> a & 1} == {
        "TURN_LEFT+ATTACK", "MOVE_FORWARD+TURN_LEFT+ATTACK", "MOVE_BACKWARD+TURN_LEFT+ATTACK",
        "MOVE_LEFT+TURN_LEFT+ATTACK", "MOVE_RIGHT+TURN_LEFT+ATTACK"}
    # Without combined actions (defend-the-center's three buttons) a near enemy gets a plain turn.
    plain = AimerTeacher(["TURN_LEFT", "TURN_RIGHT", "ATTACK"])
    assert [plain.advise(x) for x in (-0.1, 0.0, 0.1)] == [0, 2, 1]
    with pytest.raises(EnvError, match="TURN_LEFT"):
        AimerTeacher(make_env("doom-basic").action_names)  # strafes, cannot turn


def _largest_enemy(state) -> int:
    """Brute force: the pixels of the most visible enemy in a ViZDoom state's labels buffer."""
    best = 0
    for label in state.labels:
        if label.value == 255 or label.object_category == "Self":
            continue
        if label.object_category in ("Player", "Monster"):
            best = max(best, int(np.count_nonzero(state.labels_buffer == label.value)))
    return best


def test_the_env_advises_exactly_where_an_enemy_big_enough_is_on_screen():
    """The advice of every step of a deathmatch, against a brute-force count of each frame's
    enemy pixels: advice where the largest covers >= 40 pixels (of 160x120), none elsewhere."""
    env = make_env("doom-deathmatch", seed=3, teacher="aimer")
    forward, turn = env.action_names.index("MOVE_FORWARD"), env.action_names.index("TURN_LEFT")
    advised = sizes = 0
    try:
        _, info = env.reset(seed=3)
        for step in range(600):
            advice = info[ADVICE_INFO_KEY]
            pixels = _largest_enemy(env.game.get_state())
            assert (advice != 0) == (pixels >= ADVISE_FROM_PIXELS), (advice, pixels)
            advised, sizes = advised + (advice != 0), sizes + (0 < pixels < ADVISE_FROM_PIXELS)
            # aim where advised (an advised action: the lowest bit), else run and turn now and then, to meet the bots
            action = (advice & -advice).bit_length() - 1 if advice else forward if step % 20 < 15 else turn
            _, _, terminated, truncated, info = env.step(action)
            assert not (terminated or truncated)
    finally:
        env.close()
    assert advised >= 10 and sizes >= 10, "both an advised enemy and one too small to advise on should come into view"


def test_doom_vec_envs_carry_the_advice_through_their_workers():
    """Through the worker processes: int64 advice, a mask of the env's actions, only where the
    "enemy" game feature (visible from 4 pixels) is 1."""
    with make_vec_env("doom-deathmatch", 2, seed=3, training=True, teacher="aimer", game_features=("enemy",)) as envs:
        assert envs.spec.teacher == "aimer"
        envs.reset(seed=3)
        advice, seen, generator = [envs.advice], [envs.labels[:, 0]], torch.Generator().manual_seed(0)
        for _ in range(100):
            result = envs.step(torch.randint(0, envs.num_actions, (2,), generator=generator))
            advice.append(result.advice)
            seen.append(result.labels[:, 0])
        advice, seen = torch.stack(advice), torch.stack(seen)
    assert advice.dtype == torch.int64 and advice.shape == (101, 2)
    assert not bool(((advice != 0) & (seen < 0.5)).any())
    assert int(advice.min()) >= 0 and int(advice.max()) < 2 ** len(DEATHMATCH_ACTIONS)


def test_an_env_without_a_teacher_reports_no_advice():
    env = make_env("doom-defend-the-center")
    try:
        _, info = env.reset(seed=1)
        assert ADVICE_INFO_KEY not in info
        assert ADVICE_INFO_KEY not in env.step(0)[-1]
    finally:
        env.close()
    with pytest.raises(EnvError, match="teacher must be one of"):
        make_env("doom-defend-the-center", teacher="sniper")


# ---------------------------------------------------------------------------------------------
# The loss


def test_teacher_loss_matches_a_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [0.0, 3.0, 0.0], [1.0, 2.0, 3.0]])
    advice = torch.tensor([0b001, 0, 0b101, 0b100])  # row 0: action 0; row 2: 0 or 2; row 3: 2; row 1: none

    def nll(row, actions):
        return -math.log(sum(math.exp(row[a]) for a in actions) / sum(math.exp(v) for v in row))

    rows = logits.tolist()
    expected = (nll(rows[0], [0]) + nll(rows[2], [0, 2]) + nll(rows[3], [2])) / 3  # the mean over advised rows
    loss, agreement, advised = teacher_loss(logits, advice)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(agreement) == pytest.approx(2 / 3)  # rows 0 and 3 pick an advised action, row 2 (action 1) not
    assert float(advised) == pytest.approx(3 / 4)
    loss, agreement, advised = teacher_loss(logits, torch.zeros(4, dtype=torch.long))
    assert float(loss) == 0.0 and float(agreement) == 0.0 and float(advised) == 0.0


def test_the_teacher_weight_anneals_linearly_to_zero():
    cfg = PPOConfig(teacher_coef=2.0, teacher_anneal_steps=1000)
    assert [cfg.teacher_weight(s) for s in (0, 250, 1000, 5000)] == [2.0, 1.5, 0.0, 0.0]
    assert PPOConfig(teacher_coef=0.5).teacher_weight(10**9) == 0.5  # 0 steps: constant


# ---------------------------------------------------------------------------------------------
# The advice travels with its observation, and the student learns it


def frame_advice(frame: torch.Tensor) -> int:
    """The fake teacher's bitmask: action 0 when the left half of the (c, H, W) frame is brighter,
    else action 1 or 2."""
    x = frame.float()
    w = x.shape[-1]
    return 0b001 if x[..., : w // 2].mean() > x[..., w // 2 :].mean() else 0b110


class AdvisedEnv:
    """Random frames, one per observation, same-step autoreset, with advice as `VecEnv` reports
    it: ``advice`` after ``reset``, ``result.advice`` after ``step``, each for
    the obs returned with it; a third of the frames (marked by a bright top-left pixel) unadvised."""

    def __init__(self, num_envs: int = 4, p_done: float = 0.1, seed: int = 0):
        self.num_envs, self.p_done = num_envs, p_done
        self.gen = torch.Generator().manual_seed(seed)
        self.advice: torch.Tensor | None = None

    def _frames(self) -> torch.Tensor:
        n, (h, w) = self.num_envs, HW
        frames = torch.randint(0, 100, (n, 1, h, w), generator=self.gen, dtype=torch.int32)
        left = torch.randint(0, 2, (n,), generator=self.gen).bool()
        frames[left, :, :, : w // 2] += 30
        frames[~left, :, :, w // 2 :] += 30
        silent = torch.rand(n, generator=self.gen) < 1 / 3
        frames[silent, :, 0, 0] = 255
        return frames.to(torch.uint8)

    @staticmethod
    def advice_of(obs: torch.Tensor) -> torch.Tensor:
        return torch.tensor([0 if int(o[0, 0, 0]) == 255 else frame_advice(o) for o in obs])

    def reset(self) -> torch.Tensor:
        obs = self._frames()
        self.advice = self.advice_of(obs)
        return obs

    def step(self, action: torch.Tensor) -> StepResult:
        n = self.num_envs
        done = torch.rand(n, generator=self.gen) < self.p_done
        final_obs, obs = self._frames(), self._frames()
        obs = torch.where(done.view(-1, 1, 1, 1), obs, final_obs)  # a finished env shows its new episode
        self.advice = self.advice_of(obs)
        return StepResult(obs=obs, reward=torch.zeros(n), terminated=done, truncated=torch.zeros(n, dtype=torch.bool),
                          final_obs=final_obs, episodes=[], advice=self.advice)


def _agent(algo: str = "ppo", num_envs: int = 4, with_teacher: bool = True, **overrides) -> PPOAgent:
    values = {"features_dim": 64, "num_steps": 16, "precision": "fp32", "vf_coef": 0.0, "ent_coef": 0.0,
              "learning_rate": 1e-3, "anneal_lr": False, **overrides}
    if algo == "ppo":
        return PPOAgent(PPOConfig(num_minibatches=4, update_epochs=4, **values), (1, *HW), 3, num_envs, 100_000,
                        torch.device("cpu"), with_teacher=with_teacher)
    return A2CAgent(A2CConfig(**values), (1, *HW), 3, num_envs, 100_000, torch.device("cpu"), with_teacher=with_teacher)


def _play(agent, env: AdvisedEnv, steps: int, update: bool = True) -> list[dict]:
    """train.py's loop on the fake env."""
    obs = env.reset()
    agent.observe_first(obs, None, env.advice)
    metrics, step = [], 0
    for _ in range(steps):
        action = agent.act(obs, step)
        result = env.step(action)
        agent.observe(obs, action, result)
        obs, step = result.obs, step + env.num_envs
        if update and agent.ready(step):
            metrics.append(agent.update(step))
    return metrics


@pytest.mark.parametrize("memory", ["none", "lstm"])
def test_the_rollout_stores_the_advice_of_each_observation(memory):
    agent = _agent(memory=memory)
    env = AdvisedEnv(p_done=0.25, seed=1)
    _play(agent, env, agent.cfg.num_steps, update=False)
    storage = agent.storage
    assert storage.full and bool(storage.dones.any()), "the rollout should cross episode ends"
    for t in range(storage.num_steps):
        assert torch.equal(storage.advice[t], AdvisedEnv.advice_of(storage.obs[t])), t
    zeros = torch.zeros(storage.num_steps, storage.num_envs)
    batches = list(storage.minibatches(zeros, zeros, 16) if memory == "none" else storage.sequences(zeros, zeros, 2))
    for batch in batches:
        assert torch.equal(batch.advice, AdvisedEnv.advice_of(batch.obs))


@torch.no_grad()
def _agreement(agent, seed: int = 99) -> float:
    """How often the policy's most likely action is the advised one, on advised frames it never saw."""
    env = AdvisedEnv(num_envs=256, seed=seed)
    obs = env.reset()
    logits = agent.net(obs)[0]
    advised = env.advice != 0
    return float(((env.advice >> logits.argmax(-1)) & 1 == 1)[advised].float().mean())


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_the_student_learns_the_advice_from_the_teacher_term_alone(algo):
    """No reward, no value or entropy term: the teacher term alone trains the policy, and it
    agrees with the teacher on > 90% of held-out advised frames (a uniform policy: ~1/2)."""
    torch.manual_seed(0)
    agent = _agent(algo, num_envs=8, **({"num_steps": 8} if algo == "a2c" else {}))
    assert _agreement(agent) < 0.6
    metrics = _play(agent, AdvisedEnv(num_envs=8, seed=4), 8 * 150 if algo == "a2c" else 16 * 12)
    assert _agreement(agent) > 0.9
    assert metrics[-1]["charts/teacher_agreement"] > 0.9
    assert metrics[-1]["losses/teacher"] < metrics[0]["losses/teacher"]
    assert 0.55 < metrics[-1]["charts/advised_fraction"] < 0.8 and metrics[-1]["charts/teacher_weight"] == 1.0


def test_a_zero_weight_teacher_changes_nothing():
    """teacher_coef 0: the same weights as an agent without a teacher, on the same data."""
    nets = []
    for with_teacher in (True, False):
        torch.manual_seed(0)
        agent = _agent(with_teacher=with_teacher, teacher_coef=0.0, vf_coef=0.5, ent_coef=0.01)
        env = AdvisedEnv(seed=2)
        obs = env.reset()
        agent.observe_first(obs, None, env.advice if with_teacher else None)
        for step in range(32):
            action = agent.act(obs, step)
            result = env.step(action)
            agent.observe(obs, action, result._replace(reward=torch.linspace(-1, 1, 4)))
            obs = result.obs
            if agent.ready(step):
                agent.update(step)
        nets.append(agent.net.state_dict())
    assert all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0])


def test_the_advice_is_required_when_the_agent_has_a_teacher():
    agent = _agent()
    obs = AdvisedEnv().reset()
    with pytest.raises(PixelplayError, match="teacher"):
        agent.observe_first(obs, None, None)
    with pytest.raises(PixelplayError, match="shape"):
        agent.observe_first(obs, None, torch.zeros(3, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# The run option, end to end


def test_cli_ppo_with_the_aimer_logs_the_teacher_term(tmp_path):
    run_dir = tmp_path / "kick"
    args = ["--env", "doom-defend-the-center", "--teacher", "aimer", "--teacher-anneal-steps", "1000",
            "--num-envs", "2", "--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "1",
            "--total-steps", "128", "--run-dir", str(run_dir), "--no-progress", "--no-track"]
    assert train.main(args) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["teacher"] == "aimer" and config["algo"]["teacher_anneal_steps"] == 1000
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["global_step"]) for r in rows] == [64, 128]
    # the weight at each update: 1 - step / 1000 (the update at step 64 is the first rollout's)
    assert [float(r["charts/teacher_weight"]) for r in rows] == pytest.approx([1 - 64 / 1000, 1 - 128 / 1000])
    for row in rows:
        assert float(row["losses/teacher"]) >= 0 and 0 <= float(row["charts/advised_fraction"]) <= 1


@pytest.mark.parametrize("args, message", [
    (["--env", "breakout", "--teacher", "aimer"], "Atari env"),
    (["--algo", "dqn", "--env", "doom-basic", "--teacher", "aimer"], "ppo and a2c"),
    (["--env", "doom-basic", "--teacher", "sniper"], "must be one of none, aimer"),
    (["--env", "doom-basic", "--teacher", "aimer"], "TURN_LEFT"),
    (["--env", "doom-basic", "--teacher-coef", "-1"], "at least 0"),
])
def test_bad_teacher_options_are_one_error_line(args, message, tmp_path, capsys):
    run_dir = tmp_path / "bad"
    assert train.main([*args, "--run-dir", str(run_dir), "--no-track", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not run_dir.exists()
