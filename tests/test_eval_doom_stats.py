"""The DOOM table's counting (envs.doom_stats.DoomStatsTracker) on hand-made game-variable sequences."""

from pixelplay.envs.doom_stats import DoomStatsTracker

ALIVE = {"FRAGCOUNT": 0, "DEATHCOUNT": 0, "HEALTH": 100, "ARMOR": 0, "AMMO2": 50, "AMMO3": 0, "WEAPON2": 1,
         "WEAPON3": 0}


def run(*snapshots):
    """Feed snapshots (each a dict of changes on top of the previous one) and return the stats."""
    tracker = DoomStatsTracker()
    values = dict(ALIVE)
    tracker.reset(values)
    for change in snapshots:
        values = {**values, **change}
        tracker.update(values)
    return tracker.stats


def test_a_suicide_is_a_death_and_a_lost_frag_not_a_kill():
    # Own rocket: FRAGCOUNT -1, DEATHCOUNT +1, health to 0; then the respawn.
    stats = run({"FRAGCOUNT": -1, "DEATHCOUNT": 1, "HEALTH": -20}, {"HEALTH": 100})
    assert (stats.kills, stats.deaths, stats.suicides, stats.objects) == (0, 1, 1, 0)
    assert stats.suicides <= stats.deaths
    assert stats.kd_ratio == 0.0


def test_a_death_without_a_kill():
    stats = run({"HEALTH": 40}, {"DEATHCOUNT": 1, "HEALTH": 0}, {"HEALTH": 100})
    assert (stats.kills, stats.deaths, stats.suicides) == (0, 1, 0)
    assert stats.objects == 0  # losing health is no pickup, nor is the respawn's refill


def test_kills_count_each_frag_rise():
    stats = run({"FRAGCOUNT": 1}, {"FRAGCOUNT": 3})
    assert (stats.kills, stats.deaths, stats.suicides) == (3, 0, 0)
    assert stats.kd_ratio == 3.0  # kills / max(1, deaths)


def test_two_pickups_in_one_step_count_two():
    stats = run({"HEALTH": 50}, {"HEALTH": 75, "ARMOR": 100})  # a medikit and an armour, same step
    assert stats.objects == 2


def test_a_respawn_that_refills_health_is_not_a_pickup():
    stats = run(
        {"HEALTH": 30},
        {"HEALTH": 0, "DEATHCOUNT": 1},  # killed
        {"HEALTH": 100, "AMMO2": 50, "WEAPON3": 0},  # respawned: health refilled, loadout reset
        {"HEALTH": 100},
    )
    assert stats.objects == 0 and stats.deaths == 1


def test_a_new_weapon_with_its_ammo_is_one_object():
    stats = run({"WEAPON3": 1, "AMMO3": 8})  # a shotgun comes loaded
    assert stats.objects == 1
    stats = run({"AMMO3": 4})  # a box of shells alone
    assert stats.objects == 1


def test_the_table_env_leaves_out_the_duplicate_ammo_counters():
    # ViZDoom's AMMO4 mirrors AMMO2 (bullets) and AMMO7 mirrors AMMO6 (cells): tracked together, one
    # clip would count twice. The table's scenario drops the mirrors, observations unchanged.
    from pixelplay.envs import make_env
    from pixelplay.envs.scenarios import SCENARIOS
    from pixelplay.eval.doom_table import TABLE_ENV

    spec = make_env(TABLE_ENV).scenario  # the scenario the table's players play (no game started)
    assert "AMMO4" not in spec.game_variables and "AMMO7" not in spec.game_variables
    assert {"FRAGCOUNT", "DEATHCOUNT", "HEALTH", "ARMOR", "AMMO2", "AMMO6"} <= set(spec.game_variables)
    assert spec.obs_shape == SCENARIOS["deathmatch"].obs_shape and spec.actions == SCENARIOS["deathmatch"].actions
    tracker = DoomStatsTracker()
    values = {v: 0.0 for v in spec.game_variables} | {"HEALTH": 100.0, "AMMO2": 20.0}
    tracker.reset(values)
    tracker.update(values | {"AMMO2": 30.0})  # a clip, as the table's env sees it
    assert tracker.stats.objects == 1


def test_one_clip_is_one_object_although_vizdoom_raises_two_ammo_counters():
    # A clip raises AMMO2 and its alias AMMO4 together; only AMMO2 is a tracked variable.
    from pixelplay.envs.doom_stats import TRACKED_VARIABLES, DoomStatsTracker

    assert "AMMO4" not in TRACKED_VARIABLES and "AMMO7" not in TRACKED_VARIABLES
    tracker = DoomStatsTracker()
    tracker.reset({"HEALTH": 100, "AMMO2": 50, "AMMO4": 50})
    tracker.update({"HEALTH": 100, "AMMO2": 60, "AMMO4": 60})
    assert tracker.stats.objects == 1
