"""Experiment (#11): pretraining that replays the worlds the policy does worst in (EPOpt / prioritised replay).

Why: every DR run so far raised its nominal return while `real` (a hard corner of the ranges: heavy torso, weak and
saturating motors, slippery floor, latency) fell. Uniform draws make the easy worlds dominate PPO's objective.
EPOpt (Rajeswaran et al. 2017) trains on the worst epsilon-fraction of sampled worlds; prioritised level replay
(Jiang et al. 2021) re-visits the levels with the most to learn. This is the cheap middle: at each reset, with
probability ``--replay``, a simulation gets the physics and effect draws of an episode from the lowest
``--quantile`` of the last ``--memory`` finished episodes (by return); otherwise a fresh uniform draw.

It runs sim2real's own `pretrain` with the training world swapped for the subclass below (the evaluation
worlds are untouched), so the run folder, evaluations and checkpoints are the ordinary ones. Usage:

    OMP_NUM_THREADS=1 python hard_replay.py --replay 0.5 --quantile 0.2 -- pretrain hopper \
        --init-from policies/hopper-dr-robust ... --out runs/hopper-hard-replay
"""
import argparse
import sys
from collections import deque

import numpy as np

import sim2real.learning.pretrain as pretrain_module
from sim2real.cli import main
from sim2real.worlds.batched import BatchedWorld

p = argparse.ArgumentParser()
p.add_argument("--replay", type=float, default=0.5, help="probability a reset replays a hard world")
p.add_argument("--quantile", type=float, default=0.2, help="which episodes count as hard (lowest fraction)")
p.add_argument("--memory", type=int, default=2000, help="finished episodes remembered")
p.add_argument("--warmup", type=int, default=200, help="episodes before replay starts")
a, rest = p.parse_known_args()
rest = rest[1:] if rest[:1] == ["--"] else rest


class HardReplayWorld(BatchedWorld):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.returns = np.zeros(self.n)
        self.memory: deque = deque(maxlen=a.memory)  # (return, physics row, effect values)
        self.replayed = 0

    def step(self, action):
        obs, reward, terminated, truncated = super().step(action)
        self.returns += reward
        for i in np.flatnonzero(terminated | truncated):
            effects = {k: q.values[i].copy() for k, q in self.effects.params.items() if q.ranged}
            self.memory.append((float(self.returns[i]), self.draws[i].copy(), effects))
        return obs, reward, terminated, truncated

    def reset(self, ids=None):
        ids_arr = np.arange(self.n) if ids is None else np.asarray(ids).astype(int)
        seen = super().reset(ids_arr)
        self.returns[ids_arr] = 0.0
        if self.sampler is None or len(self.memory) < a.warmup:
            return seen
        pick = ids_arr[self.rng.random(len(ids_arr)) < a.replay]
        if not len(pick):
            return seen
        returns = np.array([m[0] for m in self.memory])
        hard = np.flatnonzero(returns <= np.quantile(returns, a.quantile))
        chosen = [self.memory[j] for j in self.rng.choice(hard, size=len(pick))]
        rows = np.stack([c[1] for c in chosen])
        self.draws[pick] = rows
        for flat, pos, aa, b, d in self._writes:
            flat[pick[:, None], pos] = aa * rows[:, d] + b
        fx = self.effects
        for k, q in fx.params.items():
            if q.ranged:
                q.values[pick] = [c[2][k] for c in chosen]
        fx._set_motor(pick)
        std = fx.params["obs_noise_bias_std"].values[pick, None]
        fx.bias[pick] = self.rng.normal(0.0, 1.0, (len(pick), fx.obs_dim)) * std
        for i in pick:
            info = {key: float(self.draws[i, d]) for key, d in self.sampler.keys}
            info.update(fx.sampled(i))
            self.randomization[i] = info
        before, self.replayed = self.replayed, self.replayed + len(pick)
        if before // 1000 != self.replayed // 1000:
            print(f"hard replay: {self.replayed:,} episodes replayed so far", flush=True)
        # The first observation was sensed with the old bias; it differs by one bias draw (std <= 0.02): kept.
        return seen


pretrain_module.BatchedWorld = HardReplayWorld
sys.argv = ["sim2real"] + rest
sys.exit(main())
