"""Vectorised envs for SB3: copies of a world, seeded, with episode statistics."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor


def make_vec_env(env_fn: Callable[[], gym.Env], n_envs: int, seed: int, subproc: bool = False) -> VecEnv:
    """``n_envs`` copies of ``env_fn``, each seeded ``seed + i``, with episode statistics."""
    cls = SubprocVecEnv if subproc and n_envs > 1 else DummyVecEnv
    venv = cls([env_fn] * n_envs)
    venv.seed(seed)
    return VecMonitor(venv)
