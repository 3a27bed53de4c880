"""Evaluation: a policy's return on a world, episode after episode on one env instance.

A leaf: it knows SB3 models and Gymnasium envs, nothing of studies or transfer. Evaluation uses
the *frozen* normalisation statistics of the policy being evaluated and raw rewards: updating them
on the evaluation world would leak target data into a zero-shot number (SB3 issue #2101). Episodes
run one after another on a single env (a real robot exists once), episode ``i`` reset with seed
``seed + i``, so an evaluation at the same seed is the same set of episodes for every policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm


@dataclass
class EvalResult:
    returns: list[float]
    lengths: list[int]
    # Forward displacement (m) per episode, where the env reports ``info["x_velocity"]`` (Gymnasium's
    # locomotion tasks): tells a policy that hops from one that stands still for the healthy reward.
    distances: list[float] | None = None
    # Each episode's randomised draws (``info["randomization"]`` at reset), where the world reports them (the
    # randomised sim): which corner of the ranges an episode was lost in.
    draws: list[dict[str, float]] | None = None

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    @property
    def steps(self) -> int:
        """Env steps this evaluation took (on a robot: its time and wear)."""
        return int(sum(self.lengths))


def normalizer(obs_rms, clip_obs: float = 10.0, epsilon: float = 1e-8) -> Callable[[np.ndarray], np.ndarray]:
    """VecNormalize's observation transform with fixed statistics (the same arithmetic, float32 out)."""
    if obs_rms is None:
        return lambda obs: obs
    mean, std = obs_rms.mean, np.sqrt(obs_rms.var + epsilon)
    return lambda obs: np.clip((obs - mean) / std, -clip_obs, clip_obs).astype(np.float32)


def evaluate(
    model: BaseAlgorithm,
    env: gym.Env | Callable[[], gym.Env],
    n_episodes: int = 5,
    obs_rms=None,
    seed: int = 0,
    deterministic: bool = True,
    max_steps: int | None = None,
) -> EvalResult:
    """Run ``n_episodes`` episodes one after another on one env and return their returns.

    Args:
        env: an env (kept open: the caller owns it) or a factory (built once, closed at the end).
        obs_rms: the policy's frozen observation statistics (``None``: no normalisation).
        max_steps: end an episode here if the env never does (a plug-in env without a time limit).
    """
    owned = not isinstance(env, gym.Env)
    if owned:
        env = env()
    norm = normalizer(obs_rms)
    dt = float(getattr(env.unwrapped, "dt", 0.0))
    returns, lengths, distances, draws = [], [], [], []
    has_x = dt > 0
    try:
        for i in range(n_episodes):
            obs, reset_info = env.reset(seed=seed + i)
            if "randomization" in reset_info:
                draws.append({k: float(v) for k, v in reset_info["randomization"].items()})
            total, length, dist, done = 0.0, 0, 0.0, False
            while not done:
                action, _ = model.predict(norm(obs), deterministic=deterministic)
                obs, reward, terminated, truncated, info = env.step(action)
                total += float(reward)
                length += 1
                if has_x:
                    if "x_velocity" in info:  # (x after - x before) / dt, so its sum times dt is the displacement
                        dist += info["x_velocity"] * dt
                    else:
                        has_x = False
                done = terminated or truncated or (max_steps is not None and length >= max_steps)
            returns.append(total)
            lengths.append(length)
            distances.append(dist)
    finally:
        if owned:
            env.close()
    return EvalResult(returns=returns, lengths=lengths, distances=distances if has_x else None,
                      draws=draws if len(draws) == n_episodes else None)
