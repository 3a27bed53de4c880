"""Shared fixtures: tiny networks, short runs, one thread."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

DATA = Path(__file__).parent / "data"
TINY = {"n_steps": 64, "batch_size": 32, "n_epochs": 2, "policy_kwargs": {"net_arch": {"pi": [16, 16], "vf": [16, 16]}}}


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory) -> Path:
    """A tiny PPO policy pretrained for a few hundred steps on a normalised InvertedPendulum spec."""
    from sim2real.learning.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("pretrained") / "run"
    cfg = PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), steps=256, eval_every=128, eval_episodes=1,
                         checkpoint_every=128, overrides=TINY)
    return pretrain(cfg, out=out)


_AUDIT = {"armed": False}


def _refuse_unpickling(event: str, args) -> None:
    # "pickle.find_class" fires whenever an unpickler resolves a global (every class or function a
    # pickle names, and every code-execution payload): plain weights and arrays never need one.
    if _AUDIT["armed"] and event == "pickle.find_class":
        raise AssertionError(f"unpickled {args[0]}.{args[1]} while reading a run folder")


sys.addaudithook(_refuse_unpickling)  # audit hooks cannot be removed: the fixture arms and disarms it


@pytest.fixture
def no_unpickling():
    """Fail the test if anything is unpickled while it runs (SB3's cloudpickle path included)."""
    _AUDIT["armed"] = True
    try:
        yield
    finally:
        _AUDIT["armed"] = False
