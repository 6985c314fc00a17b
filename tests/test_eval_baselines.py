"""eval/baselines.py is a data module: its numbers carry sources and its arithmetic is checked."""

import math

import pytest

from pixelplay.eval import baselines


@pytest.mark.parametrize("game", sorted(baselines.ATARI))
def test_human_normalised_score_is_0_for_random_and_1_for_human(game):
    refs = baselines.ATARI[game]
    assert baselines.human_normalized_score(game, refs.random.score) == pytest.approx(0.0)
    assert baselines.human_normalized_score(game, refs.human.score) == pytest.approx(1.0)


def test_breakout_references_match_the_reference_document():
    breakout = baselines.ATARI["breakout"]
    assert (breakout.random.score, breakout.human.score) == (1.7, 30.5)
    assert breakout.others["Nature DQN, 50M steps"].score == 401.2
    assert breakout.others["CleanRL PPO, 10M steps"].std == 28.1
    # A trained Nature DQN is ~13.9x human on Breakout.
    assert baselines.human_normalized_score("ALE/Breakout-v5", 401.2) == pytest.approx((401.2 - 1.7) / 28.8)


def test_every_number_names_its_source():
    for game in baselines.ATARI.values():
        for ref in (game.random, game.human, *game.others.values()):
            assert ref.source.strip() and math.isfinite(ref.score)
    for ref in baselines.DOOM_OTHER.values():
        assert ref.source.strip()
    assert "Lample" in baselines.DOOM_TABLE_SOURCE and "1609.05521" in baselines.DOOM_TABLE_SOURCE


@pytest.mark.parametrize(
    "env_id, game",
    [("breakout", "breakout"), ("ALE/Breakout-v5", "breakout"), ("BreakoutNoFrameskip-v4", "breakout"),
     ("ALE/MsPacman-v5", "ms_pacman"), ("pong", "pong")],
)
def test_env_ids_map_to_ale_game_names(env_id, game):
    assert baselines.atari_game_name(env_id) == game


def test_unknown_game_has_no_references():
    assert baselines.atari_references("ALE/Qbert-v5") is None
    assert math.isnan(baselines.human_normalized_score("ALE/Qbert-v5", 100.0))


def test_the_one_published_kd_cell_that_does_not_match_is_flagged():
    flags = baselines.paper_kd_mismatches()
    assert len(flags) == 1
    flag = flags[0]
    assert (flag.setting, flag.player, flag.published) == ("single_player", "agent", 5.12)
    assert flag.computed == pytest.approx(27.6 / 5.0)
    assert "5.52" in flag.note and "5.12" in flag.note


def test_the_other_kd_cells_equal_kills_over_deaths_to_two_decimals():
    for setting, players in baselines.DOOM_PAPER.items():
        for player, cells in players.items():
            if (setting, player) == ("single_player", "agent"):
                continue
            assert round(baselines.kd_ratio(cells["kills"], cells["deaths"]), 2) == cells["kd_ratio"]
            assert set(cells) == set(baselines.DOOM_METRICS)


def test_kd_ratio_divides_by_at_least_one():
    assert baselines.kd_ratio(3, 0) == 3.0
    assert baselines.kd_ratio(3, 0.5) == 3.0
    assert baselines.kd_ratio(3, 2) == 1.5
