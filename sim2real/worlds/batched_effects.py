"""The effects of :mod:`sim2real.worlds.effects`, for many simulations at once.

Same effects, same order (:data:`sim2real.worlds.effects.EFFECT_ORDER`), same arithmetic and
dtypes; each parameter is an ``(n,)`` array, drawn per episode and per simulation where the spec
gives a range. On the way to the motor: action delay -> action noise -> motor limits. On the way
from the sensor: sensor faults -> observation noise (+ bias) -> observation delay. Delays are ring
buffers indexed by each simulation's step count, so simulations with different delays share one
array.
"""

from __future__ import annotations

import numpy as np

from sim2real.spec import Effects
from sim2real.worlds.effects import fast_clip, is_range, low_of

# The values of a parameter that mean "no effect" (any other parameter: 0).
NEUTRAL = {"motor_strength": 1.0, "motor_saturation": 1.0}


class _Param:
    """One effect parameter over ``n`` simulations: fixed, or drawn per episode from ``(low, high)``."""

    def __init__(self, key: str, value, n: int, integer: bool = False):
        self.key, self.value, self.integer = key, value, integer
        self.ranged = is_range(value)
        self.fixed = int(low_of(value)) if integer else float(low_of(value))  # a fixed value (not ranged)
        self.values = np.full(n, self.fixed, dtype=int if integer else float)

    def draw(self, rng: np.random.Generator, ids: np.ndarray) -> None:
        if not self.ranged:
            return
        lo, hi = self.value
        if self.integer:
            self.values[ids] = rng.integers(int(lo), int(hi) + 1, size=len(ids))
        else:
            self.values[ids] = rng.uniform(lo, hi, size=len(ids))

    @property
    def on(self) -> bool:
        """Whether any simulation may see a non-zero value (a ``(0, x)`` range is on)."""
        return self.ranged or bool(self.values.any())


class BatchedEffects:
    """A world's effects over ``n`` simulations; a ``None`` block is no effect at all."""

    def __init__(self, effects: Effects | None, n: int, obs_dim: int, action_low: np.ndarray,
                 action_high: np.ndarray, action_dtype):
        fx = effects or Effects()
        self.n, self.obs_dim = n, obs_dim
        self.low, self.high = action_low, action_high
        self.dtype = np.dtype(action_dtype)
        self.act_dim = action_low.size
        motor, sensors, noise = fx.motor, fx.sensors, fx.obs_noise
        p = self.params = {
            "motor_strength": _Param("effects/motor_strength", motor.strength if motor else 1.0, n),
            "motor_saturation": _Param("effects/motor_saturation", motor.saturation if motor else 1.0, n),
            "motor_dead_zone": _Param("effects/motor_dead_zone", motor.dead_zone if motor else 0.0, n),
            "action_noise_std": _Param("effects/action_noise_std", fx.action_noise_std, n),
            "sensor_drop_prob": _Param("effects/sensor_drop_prob", sensors.drop_prob if sensors else 0.0, n),
            "sensor_stuck_prob": _Param("effects/sensor_stuck_prob", sensors.stuck_prob if sensors else 0.0, n),
            "obs_noise_std": _Param("effects/obs_noise_std", noise.std if noise else 0.0, n),
            "obs_noise_bias_std": _Param("effects/obs_noise_bias_std", noise.bias_std if noise else 0.0, n),
            "obs_delay": _Param("effects/obs_delay", fx.obs_delay, n, integer=True),
            "action_delay": _Param("effects/action_delay", fx.action_delay, n, integer=True),
        }
        self.ranged = [q for q in p.values() if q.ranged]
        self.motor = motor is not None
        self.bound = np.maximum(np.abs(action_low), np.abs(action_high))
        self.half_range = (action_high - action_low) / 2
        self._set_motor(np.arange(n))
        # Delay lines: ring buffers as long as the longest delay any simulation may draw.
        self.max_action_delay = int(max(np.atleast_1d(fx.action_delay)))
        self.max_obs_delay = int(max(np.atleast_1d(fx.obs_delay)))
        self.actions = np.zeros((n, self.max_action_delay + 1, self.act_dim), dtype=self.dtype)
        self.idle = np.clip(np.zeros(self.act_dim, dtype=self.dtype), action_low, action_high)
        self.seen = np.zeros((n, self.max_obs_delay + 1, obs_dim))
        self.t = np.zeros(n, dtype=int)  # steps since each simulation's reset
        self.bias = np.zeros((n, obs_dim))
        self.stuck = np.zeros((n, obs_dim), dtype=bool)
        self.stuck_values = np.zeros((n, obs_dim))
        self.any_stuck = False
        self._rows = np.arange(n)

    def _set_motor(self, ids: np.ndarray) -> None:
        p = self.params
        if not hasattr(self, "limit"):
            self.limit = np.empty((self.n, self.act_dim), dtype=self.dtype)
            self.dead = np.empty((self.n, self.act_dim), dtype=self.dtype)
            self.strength = np.empty((self.n, 1), dtype=self.dtype)
        # As MotorLimits: the limits are computed in float64 and stored in the action's dtype.
        self.limit[ids] = (self.bound * p["motor_saturation"].values[ids, None]).astype(self.dtype)
        self.dead[ids] = (self.bound * p["motor_dead_zone"].values[ids, None]).astype(self.dtype)
        self.strength[ids, 0] = p["motor_strength"].values[ids]

    def sampled(self, i: int) -> dict[str, float]:
        """Simulation ``i``'s per-episode draws, keyed as the Gymnasium wrappers report them."""
        return {q.key: (int if q.integer else float)(q.values[i]) for q in self.ranged}

    def values(self, ids: np.ndarray) -> np.ndarray:
        """The ranged parameters' values of simulations ``ids``, one column per parameter of :attr:`ranged`."""
        return np.stack([q.values[ids] for q in self.ranged], axis=1) if self.ranged else np.zeros((len(ids), 0))

    # ---- episode start
    def reset(self, rng: np.random.Generator, ids: np.ndarray, raw_obs: np.ndarray,
              fixed: np.ndarray | None = None, neutral: np.ndarray | None = None) -> np.ndarray:
        """Draw the episodes' values for simulations ``ids``; return their first observations as seen.

        ``fixed``: ``(len(ids), len(ranged))`` values to use instead of the draws (NaN: keep the draw).
        ``neutral``: a mask over ``ids``: those episodes get no effect at all, fixed or ranged (full motors,
        no noise, no delay, no sensor faults).
        """
        for q in self.ranged:
            q.draw(rng, ids)
        if fixed is not None:
            for column, q in enumerate(self.ranged):
                keep = ~np.isnan(fixed[:, column])
                q.values[ids[keep]] = fixed[keep, column]
        if neutral is not None:
            for name, q in self.params.items():
                if not q.ranged:
                    q.values[ids] = q.fixed  # back from an earlier neutral episode
                q.values[ids[neutral]] = NEUTRAL.get(name, 0.0)
        p = self.params
        self._set_motor(ids)
        self.t[ids] = 0
        self.actions[ids] = self.idle
        bias_std = p["obs_noise_bias_std"].values[ids, None]
        self.bias[ids] = rng.normal(0.0, 1.0, (len(ids), self.obs_dim)) * bias_std if p["obs_noise_bias_std"].on else 0.0
        if p["sensor_stuck_prob"].on:
            self.stuck[ids] = rng.random((len(ids), self.obs_dim)) < p["sensor_stuck_prob"].values[ids, None]
            self.stuck_values[ids] = raw_obs
            self.any_stuck = bool(self.stuck.any())
        seen = self._sense(rng, raw_obs, ids)
        self.seen[ids] = seen[:, None, :]  # the delay line starts full of the first observation
        return seen

    # ---- one step
    def to_motor(self, rng: np.random.Generator, action: np.ndarray) -> np.ndarray:
        """The commands the motors receive this step (all simulations)."""
        p, rows, t = self.params, self._rows, self.t
        if self.max_action_delay:
            span = self.max_action_delay + 1
            self.actions[rows, t % span] = action
            delay = p["action_delay"].values
            out = np.where((t >= delay)[:, None], self.actions[rows, (t - delay) % span], self.idle)
        else:
            out = action
        if p["action_noise_std"].on:
            noise = rng.standard_normal((self.n, self.act_dim)) * (self.half_range * p["action_noise_std"].values[:, None])
            out = fast_clip(out + noise.astype(self.dtype), self.low, self.high).astype(self.dtype)
        if self.motor:
            noisy = out
            out = fast_clip(noisy * self.strength, -self.limit, self.limit).astype(self.dtype)
            if p["motor_dead_zone"].on:
                out[np.abs(noisy) < self.dead] = 0.0
        return out.astype(self.dtype, copy=False)

    def observe(self, rng: np.random.Generator, raw_obs: np.ndarray) -> np.ndarray:
        """What the policy receives after this step (all simulations); advances the step count."""
        seen = self._sense(rng, raw_obs, self._rows)
        self.t += 1
        if not self.max_obs_delay:
            return seen
        span = self.max_obs_delay + 1
        rows, t = self._rows, self.t
        self.seen[rows, t % span] = seen
        return self.seen[rows, np.maximum(t - self.params["obs_delay"].values, 0) % span]

    def _sense(self, rng: np.random.Generator, raw: np.ndarray, ids: np.ndarray) -> np.ndarray:
        p = self.params
        out = raw
        if self.any_stuck:
            out = np.where(self.stuck[ids], self.stuck_values[ids], out)
        if p["sensor_drop_prob"].on:
            out = np.where(rng.random(raw.shape) < p["sensor_drop_prob"].values[ids, None], 0.0, out)
        if p["obs_noise_std"].on:
            out = out + rng.standard_normal(raw.shape) * p["obs_noise_std"].values[ids, None] + self.bias[ids]
        elif p["obs_noise_bias_std"].on:
            out = out + self.bias[ids]
        return out
