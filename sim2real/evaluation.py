"""Evaluation on sim and target worlds, and robustness sweeps over one physical parameter.

Evaluation always uses the *frozen* normalisation statistics of the policy being
evaluated (``training=False``, raw rewards): updating them on the evaluation
world would leak target data into a zero-shot number (SB3 issue #2101).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize


@dataclass
class EvalResult:
    returns: list[float]
    lengths: list[int]
    # Forward displacement (m) per episode, where the env reports ``info["x_velocity"]`` (Gymnasium's
    # locomotion tasks): tells a policy that hops from one that stands still for the healthy reward.
    distances: list[float] | None = None

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
    distances = np.zeros(n_episodes)
    dt = float(getattr(venv.unwrapped.envs[0].unwrapped, "dt", 0.0))  # eval_vec_env is always a DummyVecEnv
    has_x = dt > 0
    # Raw rewards come from the inner envs, not VecNormalize (which would scale them).
    while not done_mask.all():
        actions, _ = model.predict(obs, deterministic=deterministic)
        obs, rewards, dones, infos = venv.step(actions)
        raw = venv.get_original_reward() if isinstance(venv, VecNormalize) else rewards
        returns += np.where(done_mask, 0.0, raw)
        lengths += ~done_mask
        if has_x:
            try:  # x_velocity is (x after - x before) / dt, so its sum times dt is the displacement
                distances += np.where(done_mask, 0.0, [info["x_velocity"] for info in infos]) * dt
            except KeyError:
                has_x = False
        done_mask |= dones
    venv.close()
    return EvalResult(returns=returns.tolist(), lengths=lengths.tolist(),
                      distances=distances.tolist() if has_x else None)


# ---------------------------------------------------------------- robustness sweeps


def parse_param(param: str) -> tuple[str, list[str] | str]:
    """``body_mass/torso`` -> ("body_mass", ["torso"]); ``actuator_gear`` -> ("actuator_gear", "all")."""
    field, _, name = param.partition("/")
    return field, ([name] if name else "all")


class ShiftedEnv:
    """A picklable factory: the task's nominal sim with one parameter scaled by ``value``."""

    def __init__(self, task: str, param: str, value: float):
        self.task, self.param, self.value = task, param, value

    def __call__(self) -> gym.Env:
        from sim2real.make import make_target_env
        from sim2real.randomization import FixedPhysicsShift
        from sim2real.spec import PhysicsShift, SpecError

        field, names = parse_param(self.param)
        try:
            shift = PhysicsShift(field=field, names=names, op="scale", value=self.value)
        except ValueError as exc:
            raise SpecError(f"--param {self.param}: {exc}") from None
        return FixedPhysicsShift(make_target_env(self.task, "nominal"), [shift])


def robustness_sweep(policies: list[str], param: str, low: float, high: float, points: int = 7,
                     episodes: int = 5, seed: int = 30_000) -> dict:
    """Zero-shot return of each policy across ``points`` scales of one physical parameter (EPOpt's figure)."""
    from sim2real.transfer import load_for_evaluation

    scales = np.linspace(low, high, points).tolist()
    out: dict = {"param": param, "scales": scales, "episodes": episodes, "policies": {}}
    for path in policies:
        pre, spec, model = load_for_evaluation(path)
        ShiftedEnv(spec.path, param, 1.0)()  # a bad --param fails here, with the valid names
        results = [evaluate(model, ShiftedEnv(spec.path, param, s), episodes, obs_rms=pre.obs_rms, seed=seed) for s in scales]
        label = f"{Path(path).name} ({'DR' if pre.randomize else 'nominal'})"
        out["policies"][label] = {"path": str(path), "mean": [r.mean for r in results], "std": [r.std for r in results]}
    return out


def plot_robustness(sweep: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = np.array(sweep["scales"])
    for label, r in sweep["policies"].items():
        m, s = np.array(r["mean"]), np.array(r["std"])
        ax.plot(x, m, marker="o", label=label)
        ax.fill_between(x, m - s, m + s, alpha=0.15)
    ax.axvline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xlabel(f"{sweep['param']} (scale of nominal)")
    ax.set_ylabel(f"zero-shot return (mean ± std, {sweep['episodes']} episodes)")
    ax.set_title("robustness to one physical parameter")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
