"""ViZDoom envs on the real engine: shapes, episode ends, seeds, deathmatch stats, errors.

Fast (well under a minute in all): short timeouts force episode ends.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import socket
import time

import numpy as np
import pytest
import torch

pytest.importorskip("vizdoom")
pytest.importorskip("cv2")

from pixelplay.envs import EnvError, MissingDependencyError, make_vec_env  # noqa: E402
from pixelplay.envs.doom import OPTIONS, DoomEnv, DoomSettings, step_reward  # noqa: E402
from pixelplay.envs.doom_stats import DoomStats  # noqa: E402
from pixelplay.envs.scenarios import DEATHMATCH_ARGS, SCENARIOS, get_scenario  # noqa: E402
from pixelplay.envs.vec import EPISODE_INFO_KEY, _child_pids  # noqa: E402

STAT_KEYS = ("kills", "deaths", "suicides", "objects", "frags", "kd_ratio")


def _check_record(record: dict) -> None:
    assert {"return", "length", *STAT_KEYS} <= set(record)
    assert record["length"] >= 1
    for key in ("kills", "deaths", "suicides", "objects"):
        assert record[key] >= 0 and record[key] == int(record[key])
    assert record["suicides"] <= record["deaths"]  # a suicide is a death too
    assert record["frags"] == record["kills"] - record["suicides"]
    assert record["kd_ratio"] == pytest.approx(record["kills"] / max(1, record["deaths"]))


def test_training_reward_is_the_scaled_scenario_reward_plus_shaping_worked_by_hand():
    dm = SCENARIOS["deathmatch"]  # scale 1, -1 per death, +0.1 per object, no health reward
    before, after = DoomStats(kills=2, deaths=3, objects=5), DoomStats(kills=3, deaths=4, objects=7)
    # One frag, one death and two pickups in one step: 1 - 1 + 2 * 0.1 = 0.2 while training ...
    kw = dict(before=before, after=after, health_before=40.0, health_after=100.0)
    assert step_reward(dm, 1.0, training=True, **kw) == pytest.approx(0.2)
    assert step_reward(dm, 1.0, training=False, **kw) == 1.0  # ... and the frag alone in evaluation
    # A suicide: the frag count drops by one and the death costs one more: -1 - 1 = -2.
    suicide = dict(before=DoomStats(deaths=1), after=DoomStats(deaths=2, suicides=1), health_before=20.0,
                   health_after=-5.0)
    assert step_reward(dm, -1.0, training=True, **suicide) == pytest.approx(-2.0)
    # The reward_scale option replaces the scenario's scale, not the shaping: 0.5 * 1 - 1 + 0.2 = -0.3.
    assert step_reward(dm, 1.0, training=True, scale=0.5, **kw) == pytest.approx(-0.3)

    # Damage dealt: +0.01 per hit and +0.003 per damage point, capped at 5 hits and 200 points per
    # step: two pistol hits of 10 earn 0.02 + 0.06 = 0.08; 9 hits for 450 (a shotgun blast at close
    # range) earn only the caps' 0.05 + 0.6 = 0.65; a counter that drops (reset) earns nothing.
    none = dict(before=DoomStats(), after=DoomStats(), health_before=100.0, health_after=100.0)
    assert step_reward(dm, 0.0, training=True, hits=2, damage=20, **none) == pytest.approx(0.08)
    assert step_reward(dm, 0.0, training=True, hits=9, damage=450, **none) == pytest.approx(0.65)
    assert step_reward(dm, 0.0, training=True, hits=-3, damage=-30, **none) == 0.0
    assert step_reward(dm, 0.0, training=False, hits=2, damage=20, **none) == 0.0

    hg = SCENARIOS["health_gathering"]  # x0.01, +0.01 per health point gained
    same = dict(before=DoomStats(), after=DoomStats())
    # 4 tics alive (+1 each) and a medikit taking health 40 -> 65: 0.01 * 4 + 0.01 * 25 = 0.29.
    assert step_reward(hg, 4.0, training=True, health_before=40.0, health_after=65.0, **same) == pytest.approx(0.29)
    # Health lost on acid earns nothing beyond the scaled reward: 0.04.
    assert step_reward(hg, 4.0, training=True, health_before=65.0, health_after=60.0, **same) == pytest.approx(0.04)
    # Nor does a refill from health <= 0 (a respawn), nor a scenario that does not track health.
    assert step_reward(hg, 4.0, training=True, health_before=0.0, health_after=100.0, **same) == pytest.approx(0.04)
    assert step_reward(hg, 4.0, training=True, health_before=None, health_after=None, **same) == pytest.approx(0.04)
    assert step_reward(hg, 4.0, training=False, health_before=40.0, health_after=65.0, **same) == 4.0

    # A penalty per point of a drop of more than 10 (a poison vial's 30, with or without the acid's
    # 8 in the same step): 0.04 - 0.01 * 30 = -0.26 and 0.04 - 0.01 * 38 = -0.34; the acid's 8 alone,
    # a drop of exactly 10, a respawn's refill and evaluation are not penalised.
    poison = dataclasses.replace(hg, health_loss_reward=-0.01)
    assert step_reward(poison, 4.0, training=True, health_before=60.0, health_after=30.0, **same) == pytest.approx(-0.26)
    assert step_reward(poison, 4.0, training=True, health_before=60.0, health_after=22.0, **same) == pytest.approx(-0.34)
    assert step_reward(poison, 4.0, training=True, health_before=60.0, health_after=52.0, **same) == pytest.approx(0.04)
    assert step_reward(poison, 4.0, training=True, health_before=60.0, health_after=50.0, **same) == pytest.approx(0.04)
    assert step_reward(poison, 4.0, training=True, health_before=-3.0, health_after=100.0, **same) == pytest.approx(0.04)
    assert step_reward(poison, 4.0, training=False, health_before=60.0, health_after=30.0, **same) == 4.0
    # A vial that kills costs what was left (20 points, however far below 0 health goes), on top of
    # the scenario's own -100.
    assert step_reward(poison, -96.0, training=True, health_before=20.0, health_after=0.0, **same) == pytest.approx(-1.16)
    assert step_reward(poison, -96.0, training=True, health_before=20.0, health_after=-10.0, **same) == pytest.approx(-1.16)

    basic = SCENARIOS["basic"]  # x0.01 and no shaping: a step worth 101 trains on 1.01
    assert step_reward(basic, 101.0, training=True, health_before=100.0, health_after=100.0, **same) == pytest.approx(1.01)


def test_settings_are_the_scenarios_fields_overridden_by_the_options():
    dm = SCENARIOS["deathmatch"]
    train = DoomSettings.from_options(dm)
    assert (train.frame_skip, train.obs_size, train.grey, train.map, train.bots) == (4, (84, 84), False, "map02", 8)
    assert train.episode_timeout == dm.episode_timeout and train.player_name == "AI"
    evaluation = DoomSettings.from_options(dm, training=False, rank=2, obs_size=64, bots="2", frame_skip=2.0)
    assert evaluation.episode_timeout == dm.eval_episode_timeout and evaluation.player_name == "AI2"
    assert evaluation.obs_size == (64, 64) and evaluation.bots == 2 and evaluation.frame_skip == 2
    assert DoomSettings.from_options(dm, episode_minutes=1.5).episode_timeout == round(1.5 * 60 * 35)
    assert DoomSettings.from_options(SCENARIOS["basic"]).episode_timeout is None  # the cfg's
    assert set(OPTIONS) == {f.name for f in dataclasses.fields(DoomSettings)} - {"scenario"}
    with pytest.raises(EnvError, match="not both"):
        DoomSettings.from_options(dm, episode_timeout=100, episode_minutes=1)
    # The engine arguments of each seat: the host with Arnold's server settings, a guest joining.
    host = DoomSettings.from_options(dm, players=2, port=5123, player_name="agent")
    assert host.engine_args == f"-host 2 -port 5123 -netmode 0 +viz_connect_timeout 60 {DEATHMATCH_ARGS} +name agent +colorset 0"
    guest = DoomSettings.from_options(dm, join=True, port=5123)
    assert guest.engine_args.startswith("-join 127.0.0.1 -port 5123") and guest.server_args == ""
    assert DoomSettings.from_options(SCENARIOS["basic"]).engine_args == ""


def test_the_scenario_table_stays_importable_from_envs_doom():
    from pixelplay.envs import doom, scenarios

    for name in ("SCENARIOS", "DEATHMATCH_ARGS", "TICRATE", "DoomScenario", "get_scenario", "DEFAULT_PORT"):
        assert getattr(doom, name) is getattr(scenarios, name)


def test_basic_vec_env_shapes_and_timeout_is_truncation():
    # 40 tics at frame skip 4: at most 10 steps, and a random policy rarely kills in time.
    env = make_vec_env("doom-basic", 2, seed=0, episode_timeout=40)
    try:
        assert env.obs_shape == (4, 68, 68) and env.num_actions == 3
        obs = env.reset(seed=0)
        assert obs.dtype == torch.uint8 and tuple(obs.shape) == (2, 4, 68, 68)
        records, truncated_lengths = [], []
        for _ in range(60):
            res = env.step(torch.randint(env.num_actions, (2,)))
            assert res.obs.dtype == torch.uint8 and tuple(res.obs.shape) == (2, 4, 68, 68)
            assert tuple(res.final_obs.shape) == (2, 4, 68, 68)
            assert not (res.terminated & res.truncated).any()
            done = res.terminated | res.truncated
            assert {e["env"] for e in res.episodes} == set(torch.nonzero(done).flatten().tolist())
            for record in res.episodes:
                _check_record(record)
                assert record["length"] <= 10
                if res.truncated[record["env"]]:
                    truncated_lengths.append(record["length"])
                else:  # the monster died: its kill is in the record
                    assert record["kills"] == 1
            records += res.episodes
        assert len(records) >= 10
        assert truncated_lengths and set(truncated_lengths) == {10}
    finally:
        env.close()


def test_death_is_terminated_and_counted_once():
    env = DoomEnv("take_cover", seed=0)  # no timeout: only a fireball ends it
    env.reset()
    for _ in range(3000):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        if terminated or truncated:
            break
    assert terminated and not truncated
    record = info[EPISODE_INFO_KEY]
    _check_record(record)
    assert record["deaths"] == 1
    # +1 per tic alive, 4 tics a step; the fatal step ends at the death tic.
    assert 4 * (record["length"] - 1) < record["return"] <= 4 * record["length"]
    env.close()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_steps(name):
    env = DoomEnv(name, seed=1, episode_timeout=60, bots=1) if name == "deathmatch" else DoomEnv(name, seed=1)
    obs, _ = env.reset()
    assert env.observation_space.contains(obs)
    assert obs.shape == get_scenario(name).obs_shape
    for _ in range(5):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and isinstance(reward, float)
    env.close()


def _rollout(seed: int, steps: int = 40):
    env = make_vec_env("doom-defend-the-center", 2, seed=seed)
    rng = np.random.default_rng(0)
    try:
        out = [env.reset(seed=seed).clone()]
        rewards = []
        for _ in range(steps):
            res = env.step(torch.as_tensor(rng.integers(env.num_actions, size=2)))
            out.append(res.obs.clone())
            rewards.append(res.reward.clone())
        return torch.stack(out), torch.stack(rewards)
    finally:
        env.close()


def test_same_seed_reproduces():
    obs_a, rew_a = _rollout(seed=3)
    obs_b, rew_b = _rollout(seed=3)
    assert torch.equal(obs_a, obs_b) and torch.equal(rew_a, rew_b)
    obs_c, _ = _rollout(seed=4)
    assert not torch.equal(obs_a, obs_c)


def test_reset_with_seed_replays_an_episode():
    env = DoomEnv("basic", seed=0)
    actions = np.random.default_rng(1).integers(3, size=15)

    def play(seed):
        frames = [env.reset(seed=seed)[0]]
        for a in actions:
            obs, reward, terminated, truncated, _ = env.step(a)
            frames.append(obs)
            if terminated or truncated:
                break
        return np.stack(frames)

    first = play(11)
    play(None)  # the game moves on
    assert np.array_equal(first, play(11))
    env.close()


@pytest.mark.parametrize("training", [True, False])
def test_deathmatch_with_bots(training):
    env = make_vec_env("doom-deathmatch", 1, seed=0, training=training, bots=2, episode_timeout=300)
    try:
        assert env.obs_shape == (12, 84, 84)
        env.reset(seed=0)
        records, total = [], 0.0
        for _ in range(200):
            res = env.step(torch.randint(env.num_actions, (1,)))
            assert not res.terminated.any()  # a match only ends by its timeout
            total += res.reward.item()
            records += res.episodes
            if res.episodes:
                assert res.truncated.all()
                break
        assert len(records) == 1
        record = records[0]
        _check_record(record)
        assert 40 <= record["length"] <= 76  # 300 tics / 4; a respawn takes ~37 tics
        assert record["return"] == record["frags"]  # the deathmatch score
        if not training:
            assert total == pytest.approx(record["return"])
    finally:
        env.close()


def test_deathmatch_stats_and_native_render():
    env = DoomEnv(
        "deathmatch", seed=2, bots=3, episode_timeout=200, render_native=True, screen_resolution="320x240"
    )
    obs, _ = env.reset()
    assert obs.shape == (12, 84, 84)
    assert env.render().shape == (240, 320, 3)
    assert env.stats() == {s: 0 for s in STAT_KEYS}
    start = env.episode_tic
    for _ in range(10):
        env.step(env.action_space.sample())
    stats = env.stats()
    assert set(stats) == set(STAT_KEYS) and stats["suicides"] <= stats["deaths"]
    assert env.episode_tic == start + 10 * env.frame_skip
    env.readd_bots()  # what every reset (and, by default, every death) does; the match goes on
    env.step(0)
    assert env.episode_tic == start + 11 * env.frame_skip
    env.close()


class _CommandSpy:
    """A DoomGame whose console commands are recorded (its own attributes are read-only)."""

    def __init__(self, game):
        self.game, self.sent = game, []

    def send_game_command(self, command):
        self.sent.append(command)
        return self.game.send_game_command(command)

    def __getattr__(self, name):
        return getattr(self.game, name)


@pytest.mark.parametrize("bots_readd", ["respawn", "match"])
def test_bots_readded_after_each_death(bots_readd):
    # glample/Arnold re-adds the bots on each respawn of its agent, in training as in evaluation;
    # the DOOM table's matches do it by default, so training does it too.
    env = DoomEnv("deathmatch", seed=2, bots=2, episode_timeout=400, bots_readd=bots_readd)
    env.reset()
    spy = env.game = _CommandSpy(env.game)
    for _ in range(3):
        spy.game.send_game_command("kill")  # a suicide: the player dies and respawns at the next step
        for _ in range(3):
            env.step(0)
    assert env.stats()["deaths"] == 3
    readds = 3 if bots_readd == "respawn" else 0
    assert spy.sent.count("removebots") == readds and spy.sent.count("addbot") == 2 * readds
    env.close()


def test_readded_bots_never_telefrag_the_respawned_player():
    # Bots join on the tic after addbot, at spawn points: re-added once the player has respawned,
    # one often lands on it (a telefrag, in over half of the respawns on map02 with 8 bots).
    # Re-added while it is dead, they are in the map when it respawns as far from them as it can.
    env = DoomEnv("deathmatch", seed=4, bots=8, episode_timeout=2000)
    env.reset()
    for suicides in range(1, 11):
        env.game.send_game_command("kill")
        for _ in range(3):  # the death, then two steps in which nobody could have shot it dead
            env.step(0)
        assert env.stats()["deaths"] == suicides, f"a death right after respawn {suicides}"
    env.close()


def test_bots_readd_refused_outside_choices():
    with pytest.raises(EnvError, match="bots_readd must be one of respawn, match"):
        DoomEnv("deathmatch", bots_readd="never")
    with pytest.raises(EnvError, match="only applies to the deathmatch"):
        DoomEnv("basic", bots_readd="match")


def test_record_lmp_replays(tmp_path):
    import vizdoom as vzd

    path = tmp_path / "basic.lmp"
    env = DoomEnv("basic", seed=5, record_lmp=str(path))
    env.reset()
    rng = np.random.default_rng(0)
    while True:
        _, _, terminated, truncated, info = env.step(rng.integers(3))
        if terminated or truncated:
            break
    env.close()  # the engine writes the demo when the episode is left
    game = vzd.DoomGame()
    game.load_config(os.path.join(vzd.scenarios_path, "basic.cfg"))
    game.set_window_visible(False)
    game.init()
    game.replay_episode(str(path))
    while not game.is_episode_finished():
        game.advance_action()
    assert game.get_total_reward() == pytest.approx(info[EPISODE_INFO_KEY]["return"])
    game.close()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _play_match(options: dict, queue) -> None:
    env = DoomEnv("deathmatch", seed=0, episode_timeout=200, connect_timeout=20, **options)
    env.reset()
    for _ in range(100):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        if terminated or truncated:
            queue.put((options.get("join", False), truncated, info[EPISODE_INFO_KEY]["length"]))
            break
    env.close()


def test_two_agents_share_a_match():
    port = _free_udp_port()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_play_match, args=(dict(players=2, port=port, bots=1), queue)),
        ctx.Process(target=_play_match, args=(dict(join=True, port=port, player_name="Guest"), queue)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    for p in procs:
        if p.is_alive():
            p.terminate()
    results = sorted(queue.get(timeout=1) for _ in procs)
    assert [r[0] for r in results] == [False, True]
    assert all(truncated and length > 10 for _, truncated, length in results)


def test_errors_name_the_fix(monkeypatch):
    with pytest.raises(EnvError, match="did you mean 'doom-basic'"):
        make_vec_env("doom-basik", 1, seed=0)
    with pytest.raises(EnvError, match="did you mean 'defend_the_center'"):
        get_scenario("defend_the_centre")
    with pytest.raises(EnvError, match="'botz'.*did you mean 'bots'"):
        make_vec_env("doom-deathmatch", 1, seed=0, botz=2)
    with pytest.raises(EnvError, match="'bots' only applies to the deathmatch"):
        make_vec_env("doom-basic", 1, seed=0, bots=2)
    with pytest.raises(EnvError, match="screen_resolution"):
        DoomEnv("basic", screen_resolution="123x45").reset()
    with pytest.raises(EnvError, match="record_lmp is not supported for deathmatch"):
        DoomEnv("deathmatch", record_lmp="match.lmp")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(MissingDependencyError, match="display"):
        DoomEnv("deathmatch", human=True)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_default_observations_fit_the_nature_cnn(name):
    from pixelplay.agents.networks import NatureCNN

    env = DoomEnv(name)  # no game is started before reset
    NatureCNN(env.observation_space)  # refuses sizes whose strided convs do not tile


def test_a_dead_worker_is_a_clear_env_error_and_close_still_works():
    """An emulator that crashes (here: SIGKILL) surfaces as one EnvError naming the env, not an
    EOFError from a pipe, and closing the vector env afterwards neither hangs nor raises."""
    import signal

    envs = make_vec_env("doom-basic", 2, seed=0, device="cpu", training=True)
    try:
        envs.reset(seed=0)
        victim = envs.envs.processes[1]
        engines = [pid for pid, _ in envs._emulators[1]]
        assert engines, "ViZDoom's engine runs as a child of the worker"
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=10)
        with pytest.raises(EnvError, match=r"env 1 \(exit code -9\)"):
            envs.step(torch.zeros(2, dtype=torch.long))
    finally:
        envs.close()
    assert not envs.envs.processes[0].is_alive()
    # The dead worker's engine does not linger as an orphan (SIGKILL lands asynchronously).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(pid) for pid in engines):
        time.sleep(0.05)
    assert not any(_running(pid) for pid in engines)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_are_not_forked_from_the_training_process():
    """Workers come from a clean forkserver, so they never inherit the trainer's thread pools."""
    envs = make_vec_env("doom-basic", 2, seed=0, device="cpu", training=True)
    try:
        for process in envs.envs.processes:
            with open(f"/proc/{process.pid}/stat") as stat:
                parent_pid = int(stat.read().rsplit(")", 1)[1].split()[1])
            assert parent_pid != os.getpid()
    finally:
        envs.close()


def test_a_killed_engine_is_a_clear_env_error_in_a_worker_and_in_process():
    """ViZDoom's engine runs as its own process; when it dies, ViZDoom's exception becomes an
    EnvError naming the env, whether the env runs in a worker or in this process."""
    import signal

    envs = make_vec_env("doom-basic", 2, seed=0, device="cpu", training=True)
    try:
        envs.reset(seed=0)
        for pid, _ in envs._emulators[0]:
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(EnvError, match="engine of env 0"):
            for _ in range(5):
                envs.step(torch.zeros(2, dtype=torch.long))
    finally:
        envs.close()

    env = DoomEnv(get_scenario("basic"), seed=0)
    env.reset(seed=0)
    try:
        for pid, _ in _child_pids(os.getpid()):
            with open(f"/proc/{pid}/cmdline") as cmdline:
                if "vizdoom" in cmdline.read():
                    os.kill(pid, signal.SIGKILL)
        with pytest.raises(EnvError, match="engine of env 0"):
            for _ in range(5):
                env.step(0)
    finally:
        env.close()


def test_workers_run_in_the_callers_directory_and_start_together_in_a_fresh_one(tmp_path, monkeypatch):
    """Engines write ./_vizdoom.ini and ./_vizdoom/ in the worker's directory, which is the
    caller's (as with a fork); several starting at once in a directory without them must all come
    up: the engines race to create ./_vizdoom/, and the loser would take its worker down."""
    for attempt in range(3):
        fresh = tmp_path / str(attempt)
        fresh.mkdir()
        monkeypatch.chdir(fresh)
        envs = make_vec_env("doom-basic", 4, seed=attempt, device="cpu", training=True)
        try:
            assert envs.reset(seed=attempt).shape[0] == 4
        finally:
            envs.close()
        assert (fresh / "_vizdoom").is_dir() and (fresh / "_vizdoom.ini").is_file()


def _position(env: DoomEnv) -> np.ndarray:
    """The player's (x, y) on the map, read from the engine."""
    import vizdoom
    where = (vizdoom.GameVariable.POSITION_X, vizdoom.GameVariable.POSITION_Y)
    return np.array([env.game.get_game_variable(v) for v in where])


def _moved_after_steps(directory, monkeypatch) -> float:
    monkeypatch.chdir(directory)
    env = DoomEnv("basic", seed=3)
    try:
        env.reset()
        start = _position(env)
        for _ in range(3):
            env.step(env.action_names.index("MOVE_RIGHT"))
        return float(np.abs(_position(env) - start).sum())
    finally:
        env.close()


def test_an_agent_game_moves_alike_whatever_cl_run_a_config_file_left(tmp_path, monkeypatch):
    # ZDoom writes its settings back to ./_vizdoom.ini; "always run" left there by a person's game
    # (or ViZDoom's spectator example) would double an agent's moves and turns. The env pins it off.
    clean, polluted = tmp_path / "clean", tmp_path / "polluted"
    clean.mkdir()
    polluted.mkdir()
    (polluted / "_vizdoom.ini").write_text("[GlobalSettings]\n\n[Doom.ConsoleVariables]\ncl_run=true\n")
    moved = _moved_after_steps(clean, monkeypatch)
    assert moved != 0
    assert _moved_after_steps(polluted, monkeypatch) == pytest.approx(moved)
    assert "cl_run=false" in (polluted / "_vizdoom.ini").read_text()


def _distance_forward(scenario) -> float:
    """How far one forward step (4 tics) from the spawn carries the player: one step, as the
    spawns face walls a few steps away."""
    env = DoomEnv(scenario, seed=5, training=False)
    try:
        env.reset()
        start = _position(env)
        env.step(env.action_names.index("MOVE_FORWARD"))
        return float(np.linalg.norm(_position(env) - start))
    finally:
        env.close()


def test_my_way_home_runs_covering_twice_the_ground_of_a_walk():
    # The scenario holds SPEED on every action, so the random first policy reaches the vest about
    # three times as often; the same game without it walks (Doom's run is twice the walk's speed).
    running = get_scenario("my_way_home")
    walking = dataclasses.replace(running, held_buttons=())
    assert running.held_buttons == ("SPEED",)
    ran, walked = _distance_forward(running), _distance_forward(walking)
    assert walked > 5
    assert ran / walked == pytest.approx(2.0, rel=0.25)
