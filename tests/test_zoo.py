"""Every shipped policy loads (weights only, nothing unpickled) and reproduces the return on its card."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from sim2real.learning.evaluation import evaluate
from sim2real.worlds.make import make_target_env
from sim2real.worlds.make import EnvFactory
from sim2real.learning.loading import load_for_evaluation

ZOO = Path(__file__).resolve().parent.parent / "policies"
ENTRIES = sorted(p.parent for p in ZOO.glob("*/card.json"))
TOLERANCE = 0.10  # relative; MuJoCo and BLAS builds differ slightly across machines


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_shipped_policy_matches_its_card(entry, monkeypatch):
    card = json.loads((entry / "card.json").read_text())

    def refuse(*args, **kwargs):
        raise AssertionError("a shipped policy must load without unpickling")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    pre, spec, model = load_for_evaluation(entry)
    monkeypatch.undo()

    env_fn = EnvFactory(make_target_env, spec.path, "nominal")
    result = evaluate(model, env_fn, card["eval_episodes"], obs_rms=pre.obs_rms, seed=card["eval_seed"])
    expected = card["returns"]["nominal"]["mean"]
    assert result.mean == pytest.approx(expected, rel=TOLERANCE, abs=25.0)


def test_zoo_entries_are_complete():
    for entry in ENTRIES:
        for name in ("model.zip", "run.json", "card.json", "README.md"):
            assert (entry / name).exists(), f"{entry.name} lacks {name}"
