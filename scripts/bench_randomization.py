"""Env steps/s with the full randomisation + effects stack against the plain Gymnasium env, side by side.

Usage: python scripts/bench_randomization.py [--steps 40000] [--chunk 250] [TASK ...]

Timing on a shared machine drifts by tens of percent from one second to the next, so
the variants are not timed one after another: every variant steps the same
pre-sampled actions in chunks of ``--chunk`` steps, and the chunks are interleaved
(plain, DR, ..., then the next chunk, order rotating), so each variant sees the
same machine within a fraction of a second. A ratio is total time of plain over
total time of the variant; its 95% interval is a bootstrap over the paired chunks.

Two comparisons:
* sim world (randomisation + pushes) against the plain nominal env;
* target 'real' (shift + effects wrappers) against the plain env with the same
  shifted physics written straight into its model -- shifted physics changes
  MuJoCo's own cost (other contacts), which is not the wrappers' overhead.
  Delayed, saturated actions change the trajectory and so MuJoCo's cost too; the
  "effects machinery" column runs every wrapper of 'real' with its action-side
  effects set to no-ops (same wrapper work, same actions reach the motors): that
  ratio is the wrappers' own cost.

Randomised physics changes MuJoCo's own cost too (other masses, other contacts), so
the first DR column mixes physics and overhead. The "DR machinery" column runs the
full randomisation stack with every range collapsed to the nominal value (scale 1,
offset 0): every sample, write and info entry happens, the physics stays nominal --
that ratio is the stack's own cost. Random actions end episodes early (tens of
steps), so resets weigh far more here than with a trained policy's 1000-step episodes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sim2real import make_sim_env, make_target_env  # noqa: E402
from sim2real.spec import available_tasks, load_spec  # noqa: E402
from sim2real.worlds.physics import PhysicsModel, apply_shift  # noqa: E402


class Stepper:
    """Steps one env through a shared action sequence, a chunk at a time, timing only the stepping."""

    def __init__(self, env: gym.Env, actions: np.ndarray):
        self.env, self.actions = env, actions
        env.reset(seed=0)
        self.seconds: list[float] = []

    def chunk(self, start: int, stop: int) -> None:
        env, actions = self.env, self.actions
        t0 = time.perf_counter()
        for i in range(start, stop):
            _, _, terminated, truncated, _ = env.step(actions[i])
            if terminated or truncated:
                env.reset()
        self.seconds.append(time.perf_counter() - t0)


def paired_ratio(base: list[float], other: list[float], rng: np.random.Generator, n_boot: int = 2000):
    """Speed of ``other`` relative to ``base`` (time of base / time of other) and a 95% bootstrap interval over chunks."""
    b, o = np.asarray(base), np.asarray(other)
    idx = rng.integers(0, len(b), size=(n_boot, len(b)))
    boot = b[idx].sum(axis=1) / o[idx].sum(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return b.sum() / o.sum(), lo, hi


def fmt_ratio(r: tuple[float, float, float], sps_base: float, sps: float) -> str:
    """The ratio, its interval, and what the variant adds per step in microseconds."""
    return f"{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}], {1e6 / sps - 1e6 / sps_base:+.1f} µs"


def collapsed(spec):
    """The spec with every randomisation range collapsed onto the nominal value (and pushes of 0 N)."""
    params = [p.model_copy(update={"low": 1.0 if p.op == "scale" else 0.0, "high": 1.0 if p.op == "scale" else 0.0,
                                   "distribution": "uniform"}) for p in spec.randomization.params]
    pushes = spec.randomization.pushes
    if pushes is not None:
        pushes = pushes.model_copy(update={"force": (0.0, 0.0)})
    return spec.model_copy(update={"randomization": spec.randomization.model_copy(update={"params": params, "pushes": pushes})})


def neutral_effects(spec, world: str = "real"):
    """The target world with its action-side effects made no-ops (same wrappers, same work per step).

    Random actions do not look at observations, so observation noise, delay and sensor faults can stay
    as they are; what reaches the motors must not change, or the physics (contacts) would differ:
    saturation 1.0 (the clip still runs), action delay 0 (the queue still runs), action noise 1e-12.
    """
    target = spec.target(world)
    fx = target.effects
    fx = fx.model_copy(update={
        "action_delay": 0,
        "motor": fx.motor.model_copy(update={"saturation": 1.0, "dead_zone": 0.0}) if fx.motor else None,
        "action_noise_std": 1e-12 if fx.action_noise_std else 0.0,
    })
    return spec.model_copy(update={"targets": {**spec.targets, world: target.model_copy(update={"effects": fx})}})


def reset_us(env: gym.Env, n: int = 500) -> float:
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(n):
        env.reset()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tasks", nargs="*", default=available_tasks())
    p.add_argument("--steps", type=int, default=40_000, help="steps per variant")
    p.add_argument("--chunk", type=int, default=250, help="steps per timed chunk; variants alternate every chunk")
    args = p.parse_args()
    print("| task | plain steps/s | sim world (DR) | ratio [95% CI], cost/step | DR machinery, nominal physics | ratio [95% CI], cost/step "
          "| plain, 'real' physics | target 'real' (all wrappers) | ratio [95% CI], cost/step "
          "| effects machinery, same actions | ratio [95% CI], cost/step | reset µs plain / DR |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for task in args.tasks:
        spec = load_spec(task)
        shifted = gym.make(spec.env_id, max_episode_steps=spec.max_episode_steps)
        apply_shift(PhysicsModel(shifted.unwrapped.model), list(spec.target("real").physics))
        variants = {
            "plain": gym.make(spec.env_id, max_episode_steps=spec.max_episode_steps),
            "dr": make_sim_env(task),
            "machinery": make_sim_env(collapsed(spec)),
            "plain_real": shifted,
            "real": make_target_env(task, "real"),
            "effects": make_target_env(neutral_effects(spec), "real"),
        }
        if spec.target("real").effects.action_delay:
            # make_target_env leaves out a wrapper whose setting is 0; put the delay queue back in.
            from sim2real.worlds.effects import ActionDelay
            variants["effects"] = ActionDelay(variants["effects"], delay=0)
        rng = np.random.default_rng(0)
        space = variants["plain"].action_space
        actions = rng.uniform(space.low, space.high, size=(args.steps, *space.shape)).astype(space.dtype)
        steppers = {k: Stepper(env, actions) for k, env in variants.items()}
        names = list(steppers)
        for c, start in enumerate(range(0, args.steps, args.chunk)):
            stop = min(start + args.chunk, args.steps)
            for name in names[c % len(names):] + names[:c % len(names)]:  # rotate who goes first
                steppers[name].chunk(start, stop)
        sec = {k: st.seconds for k, st in steppers.items()}
        sps = {k: args.steps / sum(v) for k, v in sec.items()}
        dr, mach = paired_ratio(sec["plain"], sec["dr"], rng), paired_ratio(sec["plain"], sec["machinery"], rng)
        real, fx = paired_ratio(sec["plain_real"], sec["real"], rng), paired_ratio(sec["plain_real"], sec["effects"], rng)
        r_plain = statistics.median(reset_us(variants["plain"]) for _ in range(3))
        r_dr = statistics.median(reset_us(variants["machinery"]) for _ in range(3))
        print(f"| {task} | {sps['plain']:,.0f} | {sps['dr']:,.0f} | {fmt_ratio(dr, sps['plain'], sps['dr'])} "
              f"| {sps['machinery']:,.0f} | {fmt_ratio(mach, sps['plain'], sps['machinery'])} "
              f"| {sps['plain_real']:,.0f} | {sps['real']:,.0f} | {fmt_ratio(real, sps['plain_real'], sps['real'])} "
              f"| {sps['effects']:,.0f} | {fmt_ratio(fx, sps['plain_real'], sps['effects'])} "
              f"| {r_plain:,.0f} / {r_dr:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
