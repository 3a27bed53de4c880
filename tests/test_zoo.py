"""Every shipped policy loads (weights only, nothing unpickled) and reproduces the return on its card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim2real.learning.evaluation import evaluate
from sim2real.learning.loading import load_for_evaluation
from sim2real.worlds.inputs import WithInputs
from sim2real.worlds.make import EnvFactory, make_target_env
from tests.conftest import _AUDIT

ZOO = Path(__file__).resolve().parent.parent / "policies"
ENTRIES = sorted(p.parent for p in ZOO.glob("*/card.json"))
TOLERANCE = 0.10  # relative; MuJoCo and BLAS builds differ slightly across machines


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_shipped_policy_matches_its_card(entry, request):
    card = json.loads((entry / "card.json").read_text())
    request.getfixturevalue("no_unpickling")  # a shipped policy loads without unpickling anything
    pre, spec, model = load_for_evaluation(entry)
    _AUDIT["armed"] = False

    env_fn = WithInputs(EnvFactory(make_target_env, spec.path, "nominal"), pre.inputs)
    result = evaluate(model, env_fn, card["eval_episodes"], obs_rms=pre.obs_rms, seed=card["eval_seed"])
    expected = card["returns"]["nominal"]["mean"]
    assert result.mean == pytest.approx(expected, rel=TOLERANCE, abs=25.0)


def test_zoo_entries_are_complete():
    for entry in ENTRIES:
        for name in ("model.zip", "run.json", "card.json", "README.md"):
            assert (entry / name).exists(), f"{entry.name} lacks {name}"
