"""Vectorised envs for SB3: copies of a world (Gymnasium envs, or one batched world), seeded, with episode statistics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

from sim2real.worlds.batched import BatchedWorld


def make_vec_env(env_fn: Callable[[], gym.Env], n_envs: int, seed: int, subproc: bool = False) -> VecEnv:
    """``n_envs`` copies of ``env_fn``, each seeded ``seed + i``, with episode statistics."""
    cls = SubprocVecEnv if subproc and n_envs > 1 else DummyVecEnv
    venv = cls([env_fn] * n_envs)
    venv.seed(seed)
    return VecMonitor(venv)


class BatchedVecEnv(VecEnv):
    """An SB3 ``VecEnv`` over a :class:`BatchedWorld`: auto-reset, episode infos, SB3's dtypes.

    Each step's infos carry ``randomization`` (the episode's draws, as the Gymnasium worlds
    report them); a finished episode's carry ``terminal_observation`` and ``TimeLimit.truncated``.
    """

    def __init__(self, world: BatchedWorld):
        self.world = world
        self.render_mode = None
        super().__init__(world.n, world.observation_space, world.action_space)
        self._actions: np.ndarray | None = None

    def seed(self, seed: int | None = None):
        self.world.seed(seed)
        return [seed] * self.num_envs

    def reset(self):
        obs = self.world.reset()
        self.reset_infos = [{"randomization": r} for r in self.world.randomization]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, reward, terminated, truncated = self.world.step(self._actions)
        done = terminated | truncated
        infos: list[dict[str, Any]] = [{"randomization": r} for r in self.world.randomization]
        if done.any():
            ids = np.flatnonzero(done)
            for i in ids:
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            obs = obs.copy()
            obs[ids] = self.world.reset(ids)
            for i in ids:
                self.reset_infos[i] = {"randomization": self.world.randomization[i]}
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        if attr_name == "render_mode":
            return [None] * len(self._indices(indices))
        raise AttributeError(f"the batched world has no per-env attribute {attr_name!r}")

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise AttributeError(f"the batched world's simulations have no settable attribute {attr_name!r}")

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        raise AttributeError(f"the batched world's simulations are not Gymnasium envs (no {method_name}())")

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)
