"""Targets beyond the spec's worlds: a Gymnasium id or a user's ``module:Factory``, checked against the policy.

Used by ``transfer`` and ``record``; the factory is picklable and its errors name the target.
"""

from __future__ import annotations

import importlib
import warnings

import gymnasium as gym
import numpy as np

from sim2real.spec import TaskSpec
from sim2real.worlds.make import EnvFactory, make_target_env


class TargetError(ValueError):
    """A target cannot be built or does not fit the policy; the message names it."""


def resolve_target(spec: TaskSpec, target: str, import_module: str | None = None, kwargs: dict | None = None):
    """A picklable env factory for ``target``: a target-world name, a Gymnasium id, or ``module:Factory``.

    ``kwargs`` (``--target-kwargs``) go to the factory, ``gym.make`` or the target world's env.
    """
    kwargs = kwargs or {}
    if import_module:
        try:
            importlib.import_module(import_module)
        except ImportError as exc:
            raise TargetError(f"--import {import_module}: {exc} (the current directory and PYTHONPATH are "
                                "searched)") from None
    if target in spec.targets:
        return EnvFactory(make_target_env, spec.path, target, **kwargs)
    if ":" in target:
        module, _, attr = target.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise TargetError(f"target {target}: cannot import {attr!r} from {module!r}: {exc}") from None
        return CheckedFactory(factory, target, kwargs)
    if target in gym.registry:
        return CheckedFactory(gym.make, target, {"id": target, **kwargs})
    raise TargetError(
        f"target {target!r}: not a target world of {spec.name} ({', '.join(spec.targets)}), "
        "not a registered Gymnasium id (pass --import MODULE to register yours) and not module:Factory"
    )


class CheckedFactory:
    """A user's env factory, whose failures name the target instead of surfacing as a bare traceback."""

    def __init__(self, factory, target: str, kwargs: dict | None = None):
        self.factory, self.target, self.kwargs = factory, target, kwargs or {}

    def __call__(self) -> gym.Env:
        try:
            env = self.factory(**self.kwargs)
        except Exception as exc:  # noqa: BLE001 - any error in user code, reported with where it came from
            raise TargetError(f"target {self.target}: the factory raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(env, gym.Env):
            raise TargetError(f"target {self.target}: the factory returned {type(env).__name__}, not a gymnasium.Env")
        return env


def check_spaces(policy_obs: gym.Space, policy_act: gym.Space, env: gym.Env, target: str) -> None:
    """Shapes must match; different bounds only warn."""
    for what, mine, theirs in (
        ("observation", policy_obs, env.observation_space),
        ("action", policy_act, env.action_space),
    ):
        if getattr(mine, "shape", None) != getattr(theirs, "shape", None) or type(mine) is not type(theirs):
            raise TargetError(f"{what} spaces differ: the policy expects {mine}, target {target!r} has {theirs}")
        if isinstance(mine, gym.spaces.Box) and not (
            np.allclose(mine.low, theirs.low) and np.allclose(mine.high, theirs.high)
        ):
            warnings.warn(f"{what} space bounds differ: policy {mine}, target {target!r} {theirs}", stacklevel=2)
