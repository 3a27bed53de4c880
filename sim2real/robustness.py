"""Robustness sweeps: zero-shot return of policies across scales of one physical parameter (EPOpt's figure)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from sim2real.learning.evaluation import evaluate
from sim2real.learning.loading import load_for_evaluation
from sim2real.spec import PhysicsShift, SpecError
from sim2real.worlds.effects import ActionDelay
from sim2real.worlds.inputs import WithInputs
from sim2real.worlds.make import make_target_env
from sim2real.worlds.physics import FixedPhysicsShift


def parse_param(param: str) -> tuple[str, list[str] | str]:
    """``body_mass/torso`` -> ("body_mass", ["torso"]); ``actuator_gear`` -> ("actuator_gear", "all")."""
    field, _, name = param.partition("/")
    return field, ([name] if name else "all")


LATENCY = "action_delay"  # the sweep over steps of action latency (a value is a number of steps, not a scale)


class ShiftedEnv:
    """A picklable factory: the task's nominal sim with one parameter scaled by ``value``
    (or, for ``action_delay``, commands applied ``value`` steps late)."""

    def __init__(self, task: str, param: str, value: float):
        self.task, self.param, self.value = task, param, value

    def __call__(self) -> gym.Env:
        if self.param == LATENCY:
            return ActionDelay(make_target_env(self.task, "nominal"), delay=int(round(self.value)))
        field, names = parse_param(self.param)
        try:
            shift = PhysicsShift(field=field, names=names, op="scale", value=self.value)
        except ValueError as exc:
            raise SpecError(f"--param {self.param}: {exc}") from None
        return FixedPhysicsShift(make_target_env(self.task, "nominal"), [shift])


def robustness_sweep(policies: list[str], param: str, low: float, high: float, points: int = 7,
                     episodes: int = 5, seed: int = 30_000) -> dict:
    """Zero-shot return of each policy across ``points`` scales of one physical parameter (EPOpt's figure),
    or across steps of action latency (``param="action_delay"``, ``low``..``high`` in steps)."""
    if param == LATENCY:
        scales = [float(k) for k in range(int(low), int(high) + 1)]
    else:
        scales = np.linspace(low, high, points).tolist()
    out: dict = {"param": param, "scales": scales, "episodes": episodes, "policies": {}}
    for path in policies:
        pre, spec, model = load_for_evaluation(path)
        ShiftedEnv(spec.path, param, 1.0)()  # a bad --param fails here, with the valid names
        results = [evaluate(model, WithInputs(ShiftedEnv(spec.path, param, s), pre.inputs), episodes,
                            obs_rms=pre.obs_rms, seed=seed) for s in scales]
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
    latency = sweep["param"] == LATENCY
    ax.axvline(0.0 if latency else 1.0, color="k", lw=0.8, ls=":")
    ax.set_xlabel("action latency (steps)" if latency else f"{sweep['param']} (scale of nominal)")
    ax.set_ylabel(f"zero-shot return (mean ± std, {sweep['episodes']} episodes)")
    ax.set_title("robustness to action latency" if latency else "robustness to one physical parameter")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
