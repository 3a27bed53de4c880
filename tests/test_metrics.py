"""Metric functions against hand-computed curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim2real.metrics import (
    Curve,
    area_ratio,
    area_under_curve,
    iqm_interval,
    probability_of_improvement,
    speedup,
    strategy_metrics,
    time_to_threshold,
)

STEPS = [0, 10, 20, 30]


def test_area_under_curve_trapezoid_by_hand():
    # (0+10)/2*10 + (10+20)/2*10 + (20+20)/2*10 = 50 + 150 + 200
    assert area_under_curve(Curve(STEPS, [0, 10, 20, 20])) == pytest.approx(400)


def test_single_point_curve_is_held_flat():
    assert area_under_curve(Curve([0], [5.0]), until=30) == pytest.approx(150)


def test_area_ratio_by_hand():
    transfer = Curve(STEPS, [20, 20, 20, 20])  # area 600
    scratch = Curve(STEPS, [0, 10, 20, 20])  # area 400
    assert area_ratio(transfer, scratch) == pytest.approx(0.5)


def test_time_to_threshold_and_a_curve_that_never_reaches_it():
    assert time_to_threshold(Curve(STEPS, [0, 10, 20, 20]), 15) == 20
    assert time_to_threshold(Curve(STEPS, [0, 1, 2, 3]), 15) is None
    assert speedup(10.0, 20.0) == 2.0
    assert speedup(None, 20.0) is None and speedup(10.0, None) is None
    assert speedup(0.0, 20.0) == math.inf


def test_strategy_metrics_against_scratch_by_hand():
    scratch = [Curve(STEPS, [0, 10, 20, 20]), Curve(STEPS, [0, 10, 20, 20])]
    transfer = [Curve(STEPS, [16, 20, 20, 20]), Curve(STEPS, [16, 20, 20, 20])]
    m = strategy_metrics(transfer, scratch)
    assert m["jumpstart"] == pytest.approx(16)
    # final = mean of the last 3 evaluations: transfer 20, scratch (10+20+20)/3
    assert m["asymptotic_gain"] == pytest.approx(20 - 50 / 3)
    assert m["threshold"] == pytest.approx(0.9 * 50 / 3)
    assert m["time_to_threshold"] == 0 and m["scratch_time_to_threshold"] == 20
    assert m["speedup"] == math.inf
    assert m["prob_improvement"] == pytest.approx(1.0)


def test_bootstrap_interval_contains_the_point_estimate():
    rng = np.random.default_rng(0)
    for _ in range(5):
        scores = rng.normal(100, 30, size=5)
        point, lo, hi = iqm_interval(scores, reps=500)
        assert lo <= point <= hi
        p, plo, phi = probability_of_improvement(scores + 10, scores, reps=500)
        assert plo <= p <= phi and 0 <= p <= 1


def test_probability_of_improvement_is_one_half_for_identical_runs():
    assert probability_of_improvement([1, 2, 3], [1, 2, 3], reps=200)[0] == pytest.approx(0.5)


def test_interval_estimates_keep_third_party_warnings_out_of_user_output():
    import warnings

    from sim2real.metrics import iqm_interval, probability_of_improvement

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # arch's FutureWarning about rliable's RandomState would raise here
        iqm_interval(np.array([1.0, 2.0, 3.0]), reps=50)
        probability_of_improvement(np.array([1.0, 2.0]), np.array([0.5, 1.5]), reps=50)


def test_zero_shot_is_shown_as_one_evaluation_without_an_interval():
    from sim2real.report import metrics_table

    m = {"seeds": 3, "final_return_iqm": 347.0, "final_return_ci95": [347.0, 347.0]}
    rows = metrics_table({"targets": {"real": {"strategies": {"zero-shot": m, "freeze": {**m, "seeds": 3}}}}})
    assert rows[1][2:4] == ["1 evaluation", "347 (deterministic)"]
    spread = metrics_table({"targets": {"real": {"strategies": {"zero-shot": {**m, "episode_returns": [
        291.0, 347.0, 392.4]}}}}})  # the one evaluation's spread, where the run recorded it
    assert spread[1][3] == "347 (3 episodes, 291–392)"
    assert rows[2][2:4] == ["3", "347 [347, 347]"]


def test_fast_statistics_are_rliables_to_the_last_bit():
    """The bootstrap calls the statistic thousands of times; ours must be rliable's numbers, only faster."""
    from rliable import library, metrics

    from sim2real.metrics import _iqm, _prob_improvement, score_distribution

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 5, 8, 13):
        for m in (1, 3, 6):
            x, y = rng.normal(size=(n, 1)), rng.normal(size=(m, 1))
            x[0] = y[0]  # a tie counts one half
            assert _iqm(x) == metrics.aggregate_iqm(x)
            assert _prob_improvement(x, y) == metrics.probability_of_improvement(x, y)
            x, y = np.round(x), np.round(y)  # many ties
            assert _prob_improvement(x, y) == metrics.probability_of_improvement(x, y)
            taus = np.linspace(-2, 2, 30)
            assert np.array_equal(score_distribution(x, taus), library.score_distributions(x, taus))


def test_a_rebuilt_report_reuses_its_bootstrap_estimates(tmp_path, monkeypatch):
    """`sim2real report` on an unchanged study reads its intervals and figures back instead of resampling."""
    import json
    import shutil
    from pathlib import Path

    import sim2real.metrics
    import sim2real.report
    from sim2real.report import build_report

    study = shutil.copytree(Path(__file__).resolve().parent.parent / "docs" / "results" / "hopper-small",
                            tmp_path / "study")
    (study / "bootstrap_cache.json").unlink(missing_ok=True)
    build_report(study)
    first = (study / "metrics.json").read_text()

    def recompute(*args, **kwargs):
        raise AssertionError("recomputed although nothing changed")

    for module, name in ((sim2real.metrics, "_iqm_interval"), (sim2real.metrics, "_probability_of_improvement"),
                         (sim2real.report, "_draw_rliable")):
        monkeypatch.setattr(module, name, recompute)
    build_report(study)
    assert (study / "metrics.json").read_text() == first
    # A changed run is computed afresh, not answered from the cache.
    metrics = json.loads(first)
    finals = metrics["targets"]["real"]["strategies"]["freeze"]["final_returns"]
    with sim2real.metrics.bootstrap_cache(study / "bootstrap_cache.json"):
        sim2real.metrics.iqm_interval(np.array(finals))  # the same numbers: from the cache
        with pytest.raises(AssertionError, match="recomputed"):
            sim2real.metrics.iqm_interval(np.array(finals) + 1.0)


def test_learning_curves_show_the_iqm_the_table_reports():
    """The curves and the metrics table use one statistic: the IQM across seeds (rliable's), per step."""
    from rliable import metrics as rl

    from sim2real.report import _band

    rng = np.random.default_rng(0)
    curves = [Curve(np.arange(0, 50, 10), rng.normal(100, 30, size=5)) for _ in range(6)]
    _, iqm, lo, hi = _band(curves)
    y = np.array([c.returns for c in curves])
    np.testing.assert_allclose(iqm, [rl.aggregate_iqm(y[:, j]) for j in range(5)], rtol=1e-12)
    assert np.all(lo <= iqm) and np.all(iqm <= hi)
