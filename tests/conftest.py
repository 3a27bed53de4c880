"""Shared fixtures: tiny networks, short runs, one thread."""

from __future__ import annotations

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
