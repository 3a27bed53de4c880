"""Every shipped policy loads (weights only, nothing unpickled) and reproduces the return on its card."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from sim2real.evaluation import evaluate
from sim2real.make import make_target_env
from sim2real.spec import load_spec
from sim2real.training import EnvFactory
from sim2real.transfer import TransferConfig, build_model, load_pretrained

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
    pre = load_pretrained(entry)
    monkeypatch.undo()

    spec = load_spec(pre.task)
    env_fn = EnvFactory(make_target_env, spec.path, "nominal")
    from stable_baselines3.common.vec_env import DummyVecEnv

    model = build_model(pre, DummyVecEnv([env_fn]), spec, TransferConfig(policy=str(entry)), 1, fresh=False)
    result = evaluate(model, env_fn, card["eval_episodes"], obs_rms=pre.obs_rms, seed=card["eval_seed"])
    expected = card["returns"]["nominal"]["mean"]
    assert result.mean == pytest.approx(expected, rel=TOLERANCE, abs=25.0)


def test_zoo_entries_are_complete():
    for entry in ENTRIES:
        for name in ("model.zip", "run.json", "card.json", "README.md"):
            assert (entry / name).exists(), f"{entry.name} lacks {name}"
