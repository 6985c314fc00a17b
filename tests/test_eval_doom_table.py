"""python -m pixelplay.eval doom-table end to end, with short matches and random / scripted / untrained players.

ViZDoom multiplayer is not deterministic: the joining process sometimes advances 5-7 tics for
a 4-tic action (it follows the host's clock), so its trajectory varies from run to run. Determinism
is therefore checked on the single-player half (one process, seeded engine, seeded policy).
"""

import json
from dataclasses import asdict

import pytest

from pixelplay.eval import doom_table
from pixelplay.eval.__main__ import main
from pixelplay.eval.baselines import DOOM_PAPER, kd_ratio
from pixelplay.eval.policies import PolicySpec

SHORT = dict(minutes=0.25, bots=2, stall_timeout=20)  # 525 tics = 131 agent steps per match
# A rare multiplayer hang costs stall_timeout, then the match is replayed.


def check_consistent(result: dict) -> None:
    """Every column's K/D is its kills / max(1, deaths); per match, suicides never exceed deaths."""
    tics = round(result["config"]["minutes"] * 60 * 35)
    for setting in ("single_player", "multiplayer"):
        if setting not in result:
            continue
        entry = result[setting]
        for player in entry["players"].values():
            summary = player["summary"]
            assert summary is not None and summary["matches"] >= 1
            assert summary["kd_ratio"] == pytest.approx(kd_ratio(summary["kills"], summary["deaths"]))
            assert summary["suicides"] <= summary["deaths"]
        for match in entry["matches"]:
            assert match["counted"]
            for stats in match["players"].values():
                assert stats["suicides"] <= stats["deaths"]
                assert min(stats["kills"], stats["deaths"], stats["suicides"], stats["objects"]) >= 0
                assert stats["tics"] >= tics  # the whole match was played, not a partial one


def test_single_player_random_policy_is_consistent_and_repeatable():
    cfg = doom_table.TableConfig(matches=2, settings=("single_player",), seed=5, **SHORT)
    first = doom_table.run_table(PolicySpec("random"), cfg, log=lambda _: None)
    check_consistent(first)
    second = doom_table.run_table(PolicySpec("random"), cfg, log=lambda _: None)
    strip = [{k: v for k, v in m["players"]["agent"].items() if k != "wall_s"} for m in first["single_player"]["matches"]]
    again = [{k: v for k, v in m["players"]["agent"].items() if k != "wall_s"} for m in second["single_player"]["matches"]]
    assert strip == again, "the same seed must give the same single-player table"
    assert first["single_player"]["players"]["agent"]["summary"] == second["single_player"]["players"]["agent"]["summary"]


def test_cli_table_with_multiplayer_over_loopback(tmp_path, capsys):
    out = tmp_path / "table"
    code = main(["doom-table", "--policy", "random", "--opponent", "scripted", "--matches", "1", "--minutes", "0.25",
                 "--bots", "2", "--bots-readd", "match", "--stall-timeout", "20", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "doom_table.json").read_text())
    markdown = (out / "doom_table.md").read_text()
    check_consistent(result)
    assert result["opponent"] == "scripted" and result["multiplayer"]["players"]["opponent"]["policy"] == "scripted"
    assert "-join 127.0.0.1" in result["protocol"]["server"]
    # Without bots every death is the other's kill or one's own suicide (reported as a cross-check).
    for row in result["multiplayer"]["cross_check"]["matches"]:
        assert abs(row["agent_deaths"] - row["opponent_kills_plus_agent_suicides"]) <= 1
        assert abs(row["opponent_deaths"] - row["agent_kills_plus_opponent_suicides"]) <= 1
    # Side by side: paper human, paper agent, this agent, both settings; the published K/D flagged.
    for header in ("SP: human (paper)", "SP: Arnold (paper)", "SP: this agent", "MP: human (paper)",
                   "MP: Arnold (paper)", "MP: this agent", "MP: its opponent (scripted)"):
        assert header in markdown and header in printed
    assert "5.12 (!)" in markdown and "27.6 / 5.0 = 5.52" in markdown
    assert markdown.count("(!)") == 2  # the flagged cell and its footnote


def test_a_hung_match_is_killed_replayed_and_reported(tmp_path):
    cfg = doom_table.TableConfig(matches=1, settings=("single_player",), fault="hang", **{**SHORT, "stall_timeout": 4})
    messages = []
    result = doom_table.run_table(PolicySpec("random"), cfg, log=messages.append)
    entry = result["single_player"]
    assert entry["retried"] == [1] and entry["failed"] == []
    match = entry["matches"][0]
    assert match["attempts"] == 2 and "hung" in match["failures"][0] and match["counted"]
    assert entry["players"]["agent"]["summary"]["matches"] == 1  # counted once, from the full replay
    assert any("replaying it" in m for m in messages)
    assert "retried" in doom_table.render_markdown(result)


def test_a_match_that_keeps_dying_is_not_counted():
    cfg = doom_table.TableConfig(matches=1, settings=("single_player",), fault="die", retries=0, **SHORT)
    result = doom_table.run_table(PolicySpec("random"), cfg, log=lambda _: None)
    entry = result["single_player"]
    assert entry["failed"] == [1] and entry["players"]["agent"]["summary"] is None
    assert "died" in entry["matches"][0]["failures"][0]
    assert "given up" in doom_table.render_markdown(result)


def test_untrained_checkpoint_plays_the_single_player_table(tmp_path, save_checkpoint):
    checkpoint = save_checkpoint(tmp_path / "dm.pt", "ppo", "doom-deathmatch")
    code = main(["doom-table", str(checkpoint), "--only", "single", "--matches", "1", "--minutes", "0.1",
                 "--bots", "1"])
    assert code == 0
    result = json.loads((tmp_path / "doom_table.json").read_text())  # beside a checkpoint outside a run
    check_consistent(result)
    assert "multiplayer" not in result and str(checkpoint) in result["agent"]


def test_human_without_a_display_says_so(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["doom-table", "--policy", "random", "--human", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --human") and "DISPLAY" in err and len(err.splitlines()) == 1


def test_wrong_env_checkpoint_is_refused(tmp_path, capsys, save_checkpoint):
    checkpoint = save_checkpoint(tmp_path / "bo.pt", "ppo", "breakout")
    assert main(["doom-table", str(checkpoint)]) == 2
    err = capsys.readouterr().err.strip()
    assert "doom-deathmatch" in err and "breakout" in err and len(err.splitlines()) == 1


def test_markdown_keeps_the_published_numbers_as_printed():
    records = [doom_table.MatchRecord(0, 1, attempts=1, players={"agent": dict(kills=3, deaths=2, suicides=1,
                                                                              objects=4, steps=1, tics=1, wall_s=0)})]
    result = {
        "agent": "fake", "opponent": "random", "protocol": {}, "wall_time_s": 0,
        "paper": {"source": "paper", "table": DOOM_PAPER,
                  "flags": [{**asdict(f), "note": f.note} for f in doom_table.paper_kd_mismatches()]},
        "single_player": doom_table._setting_result(records, {"agent": "fake"}),
    }
    markdown = doom_table.render_markdown(result)
    assert "| K/D ratio | 1.52 | 5.12 (!) | 1.50 |" in markdown
    assert "| Number of kills | 12.6 | 27.6 | 3.0 |" in markdown


def test_players_meet_on_loopback_only_and_a_person_joins_the_agents_game():
    from pixelplay.envs import make_env

    cfg = doom_table.TableConfig(human=True)
    host, guest = doom_table.multiplayer_players(cfg, PolicySpec("random"), PolicySpec("human"), 7, 5123, "")
    assert host.env_options["players"] == 2 and host.env_options["port"] == 5123 and not host.env_options.get("join")
    assert guest.env_options["join"] and guest.env_options["port"] == 5123 and guest.env_options["human"]
    assert guest.policy.kind == "human" and host.seed != guest.seed
    assert cfg.wall_limit(human=True) >= cfg.minutes * 60  # a person plays in real time
    assert host.env_id == guest.env_id == doom_table.TABLE_ENV
    joiner = make_env(guest.env_id, training=False, **{k: v for k, v in guest.env_options.items() if k != "human"})
    assert "-join 127.0.0.1 -port 5123" in joiner.engine_args and joiner.server_args == ""
    (single,) = doom_table.single_player_players(cfg, PolicySpec("human"), "human", 1, "")
    assert single.env_options["bots"] == cfg.bots and single.env_options["human"]
