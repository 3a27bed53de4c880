"""The algorithms sim2real drives (SB3's PPO, SAC, TD3) and how a spec's hyperparameters become their kwargs."""

from __future__ import annotations

from typing import Any

import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

from sim2real.spec import SpecError, TaskSpec

ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "td3": TD3}


ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "elu": torch.nn.ELU, "gelu": torch.nn.GELU}


OFF_POLICY = {"sac", "td3"}


def policy_kwargs_from_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """Turn the YAML policy kwargs into SB3's (activation names -> torch modules)."""
    kwargs = dict(raw)
    if "activation_fn" in kwargs and isinstance(kwargs["activation_fn"], str):
        name = kwargs["activation_fn"]
        if name not in ACTIVATIONS:
            raise SpecError(f"policy_kwargs.activation_fn: unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
        kwargs["activation_fn"] = ACTIVATIONS[name]
    return kwargs


def algo_kwargs(spec: TaskSpec, algo: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec's tuned hyperparameters for ``algo`` (only when it is the spec's algorithm) plus overrides."""
    kwargs: dict[str, Any] = {}
    if algo == spec.pretrain.algo:
        kwargs.update(spec.pretrain.hyperparams)
        kwargs["policy_kwargs"] = dict(spec.pretrain.policy_kwargs)
    kwargs.update(overrides or {})
    if "policy_kwargs" in kwargs:
        kwargs["policy_kwargs"] = policy_kwargs_from_spec(kwargs["policy_kwargs"])
    return kwargs


def set_threads(n: int | None) -> None:
    """One torch thread per process is fastest for small MLPs on few cores (see scripts/bench_pretrain.py)."""
    if n:
        torch.set_num_threads(n)
