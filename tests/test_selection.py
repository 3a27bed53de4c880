"""Selection rules over a run's per-episode evaluation log: which checkpoint is the policy."""

from __future__ import annotations

import json

import pytest

from sim2real.cli import main
from sim2real.learning.selection import EPISODES_LOG, Rule, pick, read_episode_log


def evaluation(step, sim, nominal):
    return {"step": step, "returns": {"sim": sim, "nominal": nominal, "real": [0.0]}, "lengths": {}}


# 100k: one episode lost at once drags the mean; 200k: steady but lower; 300k: below the nominal floor.
LOG = [
    evaluation(0, [900, 900, 900], [900]),
    evaluation(100_000, [1000, 1000, 10], [2000]),
    evaluation(200_000, [700, 700, 700], [2000]),
    evaluation(300_000, [2000, 2000, 2000], [1000]),
]


def test_the_median_counts_an_episode_lost_at_once_as_one_bad_episode():
    assert pick(LOG, Rule(stat="mean", floor=1928))["step"] == 200_000  # 700 > 670
    assert pick(LOG, Rule(stat="median", floor=1928))["step"] == 100_000  # 1000 > 700


def test_the_floor_excludes_evaluations_and_step_zero_is_never_picked():
    assert pick(LOG, Rule(stat="median"))["step"] == 300_000
    assert pick(LOG, Rule(stat="median", floor=1e9)) is None
    assert pick(LOG[:1], Rule()) is None


def test_ties_go_to_the_later_evaluation():
    log = [evaluation(s, [500.0], [2000]) for s in (100, 200, 300)]
    assert pick(log, Rule())["step"] == 300


def test_a_world_the_run_never_evaluated_is_named():
    with pytest.raises(ValueError, match="'heavy' was not evaluated.*nominal, real, sim"):
        pick(LOG, Rule(world="heavy"))
    with pytest.raises(ValueError, match="stat 'max'"):
        Rule(stat="max")


def test_the_log_keeps_the_last_measurement_of_a_step_and_names_a_broken_line(tmp_path):
    lines = [json.dumps(e) for e in (LOG[1], evaluation(100_000, [5.0], [5.0]), LOG[0])]
    (tmp_path / EPISODES_LOG).write_text("\n".join(lines) + "\n")
    log = read_episode_log(tmp_path)
    assert [e["step"] for e in log] == [0, 100_000] and log[1]["returns"]["sim"] == [5.0]
    (tmp_path / EPISODES_LOG).write_text(lines[0] + "\n{\"step\": 2")
    with pytest.raises(ValueError, match=r"line 2: not JSON.*delete that line"):
        read_episode_log(tmp_path)
    (tmp_path / EPISODES_LOG).write_text('{"step": 2}\n')
    with pytest.raises(ValueError, match="line 1: an evaluation record needs 'step' and 'returns'"):
        read_episode_log(tmp_path)
    with pytest.raises(FileNotFoundError, match="evaluations_episodes.jsonl: missing"):
        read_episode_log(tmp_path / "nowhere")


def test_select_prints_the_table_and_the_kept_policy(tmp_path, capsys):
    (tmp_path / EPISODES_LOG).write_text("".join(json.dumps(e) + "\n" for e in LOG))
    assert main(["select", str(tmp_path), "--stat", "median", "--floor", "1928"]) == 0
    out = capsys.readouterr().out
    assert "◀ pick" in out and "below floor" in out
    assert "pick: step 100,000 (median 1,000.0)" in out and "not kept" in out
    (tmp_path / "evaluated").mkdir()
    (tmp_path / "evaluated" / "step_000100000.zip").write_bytes(b"")
    assert main(["select", str(tmp_path), "--select-stat", "median", "--select-floor", "1928"]) == 0  # pretrain's
    assert "evaluated/step_000100000.zip" in capsys.readouterr().out
    assert main(["select", str(tmp_path), "--floor", "1e9"]) == 2
    assert "no evaluation of" in capsys.readouterr().err
    (tmp_path / EPISODES_LOG).write_text(json.dumps(LOG[0]) + "\n")
    assert main(["select", str(tmp_path)]) == 2
    assert "no trained evaluation logged yet" in capsys.readouterr().err
