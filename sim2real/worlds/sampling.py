"""How the batched sim chooses each episode's world: a uniform draw, the nominal world, or a hard one again.

Uniform draws over wide ranges let the easy worlds dominate PPO's objective, and they rarely show the
policy the unshifted world it must also stay competent in (measured on Hopper and HalfCheetah: the
nominal return fell by half or more while the return in hard worlds rose). ``randomization.sampling``
mixes three kinds of episode, chosen per reset and per simulation:

- **nominal** (share ``nominal``): the unshifted model, no effects, no pushes: an anchor;
- **hard replay** (share ``hard``): the physics and effect draws of an episode from the worst
  ``quantile`` of the last ``memory`` remembered episodes, by return (EPOpt, Rajeswaran et al. 2017;
  prioritised level replay, Jiang et al. 2021); only once ``warmup`` episodes are remembered;
- **uniform**: the spec's ranges, as without this block.

Only uniform and replayed episodes are remembered, so the hard set is a set of randomised worlds.
The sim world's evaluations (``make_sim_env``) keep drawing uniformly: this changes what the policy
trains on, not what it is measured on.
"""

from __future__ import annotations

import numpy as np

from sim2real.spec import Sampling

UNIFORM, NOMINAL, REPLAY = 0, 1, 2


class EpisodeSampling:
    """The per-simulation episode kinds, the running returns and the memory of past episodes' draws.

    Args:
        cfg: the spec's ``randomization.sampling`` block.
        n: simulations.
        physics_size: physics draws per episode (the sampler's row length).
        effects_size: ranged effect values per episode.
    """

    def __init__(self, cfg: Sampling, n: int, physics_size: int, effects_size: int):
        self.cfg = cfg
        self.mode = np.zeros(n, dtype=int)   # the kind of each simulation's current episode
        self.returns = np.zeros(n)           # each simulation's return so far this episode
        m = cfg.memory
        self.memory_physics = np.zeros((m, physics_size))
        self.memory_effects = np.zeros((m, effects_size))
        self.memory_returns = np.zeros(m)
        self.memory_count = np.zeros(1, dtype=int)  # remembered episodes so far (the ring holds the last `memory`)

    @property
    def remembered(self) -> int:
        return int(min(self.memory_count[0], self.cfg.memory))

    def remember(self, ids: np.ndarray, stepped: np.ndarray, physics: np.ndarray, effects: np.ndarray) -> None:
        """Keep the ending episodes of ``ids`` that ran at least one step and were not nominal."""
        rows = np.flatnonzero(stepped & (self.mode[ids] != NOMINAL))[-self.cfg.memory:]  # a ring: the last ones
        if not len(rows):
            return
        slots = (self.memory_count[0] + np.arange(len(rows))) % self.cfg.memory
        self.memory_physics[slots] = physics[rows]
        self.memory_effects[slots] = effects[rows]
        self.memory_returns[slots] = self.returns[ids[rows]]
        self.memory_count[0] += len(rows)

    def choose(self, rng: np.random.Generator, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each new episode's kind, and for the replayed ones the memory slot they replay."""
        u = rng.random(len(ids))
        modes = np.full(len(ids), UNIFORM)
        modes[u < self.cfg.nominal] = NOMINAL
        size = self.remembered
        replay = (u >= self.cfg.nominal) & (u < self.cfg.nominal + self.cfg.hard) & (size >= self.cfg.warmup)
        modes[replay] = REPLAY
        slots = np.zeros(int(replay.sum()), dtype=int)
        if len(slots):
            worst = np.argsort(self.memory_returns[:size], kind="stable")[:max(1, int(self.cfg.quantile * size))]
            slots = rng.choice(worst, size=len(slots))
        self.mode[ids] = modes
        self.returns[ids] = 0.0
        return modes, slots

    def shares(self, ids: np.ndarray) -> list[dict[str, float]]:
        """What each episode's ``info["randomization"]`` reports of its kind (TensorBoard plots the shares)."""
        return [{"sampling/nominal": float(self.mode[i] == NOMINAL), "sampling/replay": float(self.mode[i] == REPLAY)}
                for i in ids]

    # ---- checkpoints
    ARRAYS = ("mode", "returns", "memory_physics", "memory_effects", "memory_returns", "memory_count")
