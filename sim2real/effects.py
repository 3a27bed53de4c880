"""What a real world adds beyond physics: noise, bias, latency, sensor faults, weak motors.

Each wrapper is one transformation, keeps its constructor arguments and draws its
randomness from ``self.np_random`` (the env's generator, seeded by ``reset(seed=...)``).
:func:`sim2real.make.make_target_env` composes them in one documented order.
"""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np

BLOCK = 256  # noise is drawn in blocks: one generator call per 256 steps instead of one per step

try:  # numpy's clip ufunc itself: np.clip wraps it in ~1 us of Python argument handling per call
    from numpy._core.umath import clip as _clip
except ImportError:  # numpy < 2
    from numpy.core.umath import clip as _clip


class _NoiseBlock:
    """Standard-normal (or uniform) draws from an env generator, times ``scale`` plus ``offset``, one row at a time."""

    def __init__(self, shape: tuple[int, ...], kind: str = "normal", scale: float | np.ndarray = 1.0,
                 dtype: np.dtype | type = np.float64):
        self.shape, self.kind, self.scale, self.dtype = shape, kind, scale, np.dtype(dtype)
        self.offset: float | np.ndarray = 0.0
        self._block: np.ndarray | None = None
        self._i = BLOCK

    def reset(self) -> None:
        self._i = BLOCK  # after reset(seed=...) draw afresh, so a seeded episode is reproducible

    def set_offset(self, offset: float | np.ndarray) -> None:
        """Offset every row served from now on (rows already drawn are shifted in place, once)."""
        if self._block is not None and self._i < BLOCK:
            self._block[self._i:] += offset - self.offset
        self.offset = offset

    def next(self, env: gym.Env) -> np.ndarray:
        """The next row; ``env.np_random`` is only looked up on a refill (the lookup walks the wrapper chain)."""
        if self._i >= BLOCK:
            size = (BLOCK, *self.shape)
            rng = env.np_random
            self._block = rng.standard_normal(size) if self.kind == "normal" else rng.random(size)
            if not np.all(np.equal(self.scale, 1.0)):
                self._block *= self.scale  # scaled once per block, not once per step
            self._block += self.offset
            if self.dtype != self._block.dtype:
                self._block = self._block.astype(self.dtype)  # e.g. float32 actions stay float32: no casts per step
            self._i = 0
        row = self._block[self._i]
        self._i += 1
        return row


class ObservationNoise(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Add Gaussian noise to every observation, plus a constant bias drawn once per episode.

    Example:
        >>> import gymnasium as gym
        >>> env = ObservationNoise(gym.make("InvertedPendulum-v5"), std=0.0, bias_std=1.0)
        >>> obs, _ = env.reset(seed=0)
        >>> bool(abs(env.bias).sum() > 0)
        True
    """

    def __init__(self, env: gym.Env, std: float = 0.0, bias_std: float = 0.0):
        gym.utils.RecordConstructorArgs.__init__(self, std=std, bias_std=bias_std)
        gym.ObservationWrapper.__init__(self, env)
        self.std = std
        self.bias_std = bias_std
        self.bias = np.zeros(env.observation_space.shape)
        dtype = env.observation_space.dtype
        self._noise = _NoiseBlock(env.observation_space.shape, scale=std,
                                  dtype=dtype if np.issubdtype(dtype, np.floating) else np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.bias = self.np_random.normal(0.0, self.bias_std, self.bias.shape) if self.bias_std else self.bias * 0
        if seed is not None:
            self._noise.reset()
        self._noise.set_offset(self.bias)  # each noise row carries the bias: one addition per step
        return self.observation(obs), info

    def observation(self, observation):
        out = observation + (self._noise.next(self) if self.std else self.bias)
        # The noise has the sensor's dtype; only the noise-free bias path or an odd dtype needs a cast back.
        return out if out.dtype == observation.dtype else out.astype(observation.dtype)


class ActionNoise(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """Add Gaussian noise (in units of the action bound) to every action, then clip to the bounds.

    Example:
        >>> import gymnasium as gym, numpy as np
        >>> env = ActionNoise(gym.make("InvertedPendulum-v5"), std=0.1)
        >>> _ = env.reset(seed=0)
        >>> bool(np.all(np.abs(env.action(np.array([3.0]))) <= 3.0))
        True
    """

    def __init__(self, env: gym.Env, std: float):
        gym.utils.RecordConstructorArgs.__init__(self, std=std)
        gym.ActionWrapper.__init__(self, env)
        self.std = std
        scale = (env.action_space.high - env.action_space.low) / 2 * std
        self._low, self._high, self._dtype = env.action_space.low, env.action_space.high, env.action_space.dtype
        self._noise = _NoiseBlock(env.action_space.shape, scale=scale, dtype=env.action_space.dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._noise.reset()
        return self.env.reset(seed=seed, options=options)

    def action(self, action):
        out = _clip(action + self._noise.next(self), self._low, self._high)
        return out if out.dtype == self._dtype else out.astype(self._dtype)


class ActionDelay(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Apply each action ``k`` steps late; the first ``k`` steps of an episode apply a zero action.

    ``delay`` is a fixed ``k`` or a ``(low, high)`` range drawn per episode.

    Example:
        >>> import gymnasium as gym, numpy as np
        >>> env = ActionDelay(gym.make("InvertedPendulum-v5"), delay=2)
        >>> _ = env.reset(seed=0)
        >>> applied = [float(env.step(np.array([a], dtype=np.float32))[4]["applied_action"][0]) for a in (1, 2, 3)]
        >>> applied
        [0.0, 0.0, 1.0]
    """

    def __init__(self, env: gym.Env, delay: int | tuple[int, int]):
        gym.utils.RecordConstructorArgs.__init__(self, delay=delay)
        gym.Wrapper.__init__(self, env)
        self.delay_range = (delay, delay) if isinstance(delay, int) else tuple(delay)
        self.k = self.delay_range[0]
        self._queue: deque = deque()
        self._idle = np.zeros(env.action_space.shape, dtype=env.action_space.dtype)
        self._idle = np.clip(self._idle, env.action_space.low, env.action_space.high)
        self._dtype = env.action_space.dtype

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        lo, hi = self.delay_range
        self.k = int(self.np_random.integers(lo, hi + 1)) if hi > lo else lo
        self._queue = deque([self._idle.copy() for _ in range(self.k)])
        info["action_delay"] = self.k
        return obs, info

    def step(self, action):
        # A copy: a caller that refills one action buffer in place must not rewrite the queued past.
        self._queue.append(np.array(action, dtype=self._dtype))
        applied = self._queue.popleft()
        obs, reward, terminated, truncated, info = self.env.step(applied)
        info["applied_action"] = applied
        return obs, reward, terminated, truncated, info


class ObservationDelay(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Return the observation from ``k`` steps ago (the reset observation until then).

    Example:
        >>> import gymnasium as gym, numpy as np
        >>> env = ObservationDelay(gym.make("InvertedPendulum-v5"), delay=1)
        >>> first, _ = env.reset(seed=0)
        >>> bool(np.array_equal(env.step(env.action_space.sample())[0], first))
        True
    """

    def __init__(self, env: gym.Env, delay: int):
        gym.utils.RecordConstructorArgs.__init__(self, delay=delay)
        gym.Wrapper.__init__(self, env)
        self.k = delay
        self._queue: deque = deque()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._queue = deque([np.array(obs)] * (self.k + 1), maxlen=self.k + 1)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._queue.append(np.array(obs))  # a copy: a robot driver may refill one buffer in place
        return self._queue[0], reward, terminated, truncated, info


class SensorFaults(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Dropped and stuck sensors.

    Each step, each observation entry reads 0 with probability ``drop_prob``. At
    reset, each entry gets stuck for the whole episode with probability
    ``stuck_prob`` (it keeps reading its first value).

    Example:
        >>> import gymnasium as gym, numpy as np
        >>> env = SensorFaults(gym.make("InvertedPendulum-v5"), drop_prob=1.0)
        >>> obs, _ = env.reset(seed=0)
        >>> bool(np.all(obs == 0))
        True
    """

    def __init__(self, env: gym.Env, drop_prob: float = 0.0, stuck_prob: float = 0.0):
        gym.utils.RecordConstructorArgs.__init__(self, drop_prob=drop_prob, stuck_prob=stuck_prob)
        gym.ObservationWrapper.__init__(self, env)
        self.drop_prob = drop_prob
        self.stuck_prob = stuck_prob
        self.stuck = np.zeros(env.observation_space.shape, dtype=bool)
        self._any_stuck = False
        self._stuck_values = None
        self._uniform = _NoiseBlock(env.observation_space.shape, kind="uniform")

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._uniform.reset()
        self.stuck = self.np_random.random(obs.shape) < self.stuck_prob
        self._any_stuck = bool(self.stuck.any())
        self._stuck_values = obs.copy()
        info["stuck_sensors"] = np.flatnonzero(self.stuck).tolist()
        return self.observation(obs), info

    def observation(self, observation):
        out = np.where(self.stuck, self._stuck_values, observation) if self._any_stuck else observation
        if self.drop_prob:
            out = np.where(self._uniform.next(self) < self.drop_prob, 0.0, out)
        return out if out.dtype == observation.dtype else out.astype(observation.dtype)


class MotorLimits(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """A weaker, sloppier motor: saturation below the action bound and a dead zone around zero.

    Both are fractions of the action bound: with ``saturation=0.8`` the motor never
    exceeds 80% of its range; with ``dead_zone=0.05`` commands under 5% do nothing.

    Example:
        >>> import gymnasium as gym, numpy as np
        >>> env = MotorLimits(gym.make("InvertedPendulum-v5"), saturation=0.5, dead_zone=0.1)
        >>> env.action(np.array([3.0, 0.1, -3.0])).tolist()
        [1.5, 0.0, -1.5]
    """

    def __init__(self, env: gym.Env, saturation: float = 1.0, dead_zone: float = 0.0):
        gym.utils.RecordConstructorArgs.__init__(self, saturation=saturation, dead_zone=dead_zone)
        gym.ActionWrapper.__init__(self, env)
        self.saturation = saturation
        self.dead_zone = dead_zone
        bound = np.maximum(np.abs(env.action_space.low), np.abs(env.action_space.high))
        self._limit = (bound * saturation).astype(env.action_space.dtype)
        self._neg_limit = -self._limit
        self._dead = (bound * dead_zone).astype(env.action_space.dtype)
        self._dtype = env.action_space.dtype

    def action(self, action):
        out = _clip(action, self._neg_limit, self._limit)
        if out.dtype != self._dtype:
            out = out.astype(self._dtype)
        if self.dead_zone:
            out[np.abs(action) < self._dead] = 0.0
        return out
