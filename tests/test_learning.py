"""Honest learning tests on the fast task: training must actually learn, not just run."""

from __future__ import annotations

import csv

import pytest

from sim2real.learning.pretrain import PretrainConfig, pretrain

pytestmark = pytest.mark.slow


@pytest.mark.filterwarnings("ignore")
def test_ppo_learns_to_balance_in_the_randomised_sim(tmp_path):
    cfg = PretrainConfig(task="inverted_pendulum", steps=30_720, seed=1, eval_every=10_240, eval_episodes=3,
                         checkpoint_every=100_000)
    run = pretrain(cfg, out=tmp_path / "ip")
    rows = list(csv.DictReader((run / "evaluations.csv").open()))
    first, last = float(rows[0]["nominal"]), float(rows[-1]["nominal"])
    assert first < 100  # an untrained policy drops the pole within a few dozen steps
    assert last > 300 and last > 5 * first, f"nominal return went {first:.0f} -> {last:.0f}"
