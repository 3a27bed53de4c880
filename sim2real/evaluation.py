"""Evaluation on sim and target worlds, and robustness sweeps over one physical parameter.

Evaluation always uses the *frozen* normalisation statistics of the policy being
evaluated (``training=False``, raw rewards): updating them on the evaluation
world would leak target data into a zero-shot number (SB3 issue #2101).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize


@dataclass
class EvalResult:
    returns: list[float]
    lengths: list[int]

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))


def eval_vec_env(env_fn: Callable[[], gym.Env], n_envs: int, obs_rms=None, seed: int = 0):
    """A VecEnv of ``n_envs`` copies for evaluation, normalised with fixed statistics if given."""
    venv = DummyVecEnv([env_fn] * n_envs)
    venv.seed(seed)
    if obs_rms is None:
        return venv
    norm = VecNormalize(venv, training=False, norm_obs=True, norm_reward=False)
    norm.obs_rms = obs_rms.copy() if hasattr(obs_rms, "copy") else obs_rms
    return norm


def evaluate(
    model: BaseAlgorithm,
    env_fn: Callable[[], gym.Env],
    n_episodes: int = 5,
    obs_rms=None,
    seed: int = 0,
    deterministic: bool = True,
) -> EvalResult:
    """Run ``n_episodes`` episodes (in parallel copies of the env) and return their returns.

    Each episode runs on its own env copy seeded ``seed + i``, so an evaluation
    at the same seed is the same set of episodes for every policy.
    """
    venv = eval_vec_env(env_fn, n_episodes, obs_rms, seed)
    obs = venv.reset()
    done_mask = np.zeros(n_episodes, dtype=bool)
    returns = np.zeros(n_episodes)
    lengths = np.zeros(n_episodes, dtype=int)
    # Raw rewards come from the inner envs, not VecNormalize (which would scale them).
    while not done_mask.all():
        actions, _ = model.predict(obs, deterministic=deterministic)
        obs, rewards, dones, infos = venv.step(actions)
        raw = venv.get_original_reward() if isinstance(venv, VecNormalize) else rewards
        returns += np.where(done_mask, 0.0, raw)
        lengths += ~done_mask
        done_mask |= dones
    venv.close()
    return EvalResult(returns=returns.tolist(), lengths=lengths.tolist())
