"""What a real world adds beyond physics: noise, bias, latency, sensor faults, weak motors.

Each wrapper is one transformation, keeps its constructor arguments and draws its
randomness from ``self.np_random`` (the env's generator, seeded by ``reset(seed=...)``).
Every parameter is a fixed value (a target world) or a ``(low, high)`` range drawn
once per episode at reset (effect randomisation in the sim world); the drawn values
are in ``wrapper.sampled`` and, through :class:`RandomizationReport`, in
``info["randomization"]`` as ``effects/<name>``.

:func:`apply_effects` composes them in the one documented order, for sim and target
worlds alike.
"""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np

BLOCK = 256  # noise is drawn in blocks: one generator call per 256 steps instead of one per step

try:  # numpy's clip ufunc itself: np.clip wraps it in ~1 us of Python argument handling per call
    from numpy._core.umath import clip as fast_clip
except ImportError:  # numpy < 2
    from numpy.core.umath import clip as fast_clip


Range = float | tuple[float, float]


def is_range(value: Range) -> bool:
    """A ``(low, high)`` pair with ``low < high`` is drawn per episode; anything else is fixed."""
    return isinstance(value, (tuple, list)) and value[0] < value[1]


def low_of(value: Range) -> float:
    return value[0] if isinstance(value, (tuple, list)) else value


def draw(value: Range, rng: np.random.Generator, integer: bool = False) -> float | int:
    """One per-episode value: uniform in ``[low, high]`` (integers inclusive), or the fixed value."""
    if not is_range(value):
        return int(low_of(value)) if integer else float(low_of(value))
    lo, hi = value
    return int(rng.integers(int(lo), int(hi) + 1)) if integer else float(rng.uniform(lo, hi))


class _Sampled:
    """Per-episode draws of an effect's ranged parameters; ``sampled`` maps ``effects/<name>`` to the value."""

    ranges: dict[str, tuple[Range, bool]]  # attribute -> (value or range, integer?)
    sampled: dict[str, float]

    def _init_ranges(self, prefix: str, **params: tuple[Range, bool]) -> None:
        self.ranges = {k: v for k, v in params.items() if is_range(v[0])}
        self._prefix = prefix
        self.sampled = {}
        for name, (value, integer) in params.items():
            setattr(self, name, int(low_of(value)) if integer else float(low_of(value)))

    def _resample(self) -> bool:
        """Draw every ranged parameter (after the inner reset, so a seeded reset reproduces it)."""
        if not self.ranges:
            return False
        rng = self.np_random
        for name, (value, integer) in self.ranges.items():
            v = draw(value, rng, integer)
            setattr(self, name, v)
            self.sampled[f"effects/{self._prefix}{name}"] = v
        return True


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


class ObservationNoise(_Sampled, gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Add Gaussian noise to every observation, plus a constant bias drawn once per episode.

    Example:
        >>> import gymnasium as gym
        >>> env = ObservationNoise(gym.make("InvertedPendulum-v5"), std=0.0, bias_std=1.0)
        >>> obs, _ = env.reset(seed=0)
        >>> bool(abs(env.bias).sum() > 0)
        True
    """

    def __init__(self, env: gym.Env, std: Range = 0.0, bias_std: Range = 0.0):
        gym.utils.RecordConstructorArgs.__init__(self, std=std, bias_std=bias_std)
        gym.ObservationWrapper.__init__(self, env)
        self._init_ranges("obs_noise_", std=(std, False), bias_std=(bias_std, False))
        self.bias = np.zeros(env.observation_space.shape)
        dtype = env.observation_space.dtype
        self._noise = _NoiseBlock(env.observation_space.shape, scale=self.std,
                                  dtype=dtype if np.issubdtype(dtype, np.floating) else np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if self._resample():
            self._noise.scale = self.std
            self._noise.reset()  # this episode's rows carry this episode's std
        self.bias = self.np_random.normal(0.0, self.bias_std, self.bias.shape) if self.bias_std else self.bias * 0
        if seed is not None:
            self._noise.reset()
        self._noise.set_offset(self.bias)  # each noise row carries the bias: one addition per step
        return self.observation(obs), info

    def observation(self, observation):
        out = observation + (self._noise.next(self) if self.std else self.bias)
        # The noise has the sensor's dtype; only the noise-free bias path or an odd dtype needs a cast back.
        return out if out.dtype == observation.dtype else out.astype(observation.dtype)


class ActionNoise(_Sampled, gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """Add Gaussian noise (in units of the action bound) to every action, then clip to the bounds.

    Example:
        >>> import gymnasium as gym, numpy as np
        >>> env = ActionNoise(gym.make("InvertedPendulum-v5"), std=0.1)
        >>> _ = env.reset(seed=0)
        >>> bool(np.all(np.abs(env.action(np.array([3.0]))) <= 3.0))
        True
    """

    def __init__(self, env: gym.Env, std: Range):
        gym.utils.RecordConstructorArgs.__init__(self, std=std)
        gym.ActionWrapper.__init__(self, env)
        self._init_ranges("action_noise_", std=(std, False))
        self._half_range = (env.action_space.high - env.action_space.low) / 2
        self._low, self._high, self._dtype = env.action_space.low, env.action_space.high, env.action_space.dtype
        self._noise = _NoiseBlock(env.action_space.shape, scale=self._half_range * self.std, dtype=env.action_space.dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if self._resample():
            self._noise.scale = self._half_range * self.std
            self._noise.reset()
        elif seed is not None:
            self._noise.reset()
        return obs, info

    def action(self, action):
        out = fast_clip(action + self._noise.next(self), self._low, self._high)
        return out if out.dtype == self._dtype else out.astype(self._dtype)


class ActionDelay(_Sampled, gym.Wrapper, gym.utils.RecordConstructorArgs):
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
        self._init_ranges("", action_delay=(delay, True))
        self._queue: deque = deque()
        self._idle = np.zeros(env.action_space.shape, dtype=env.action_space.dtype)
        self._idle = np.clip(self._idle, env.action_space.low, env.action_space.high)
        self._dtype = env.action_space.dtype

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._resample()
        self._queue = deque([self._idle.copy() for _ in range(self.action_delay)])
        info["action_delay"] = self.action_delay
        return obs, info

    def step(self, action):
        # A copy: a caller that refills one action buffer in place must not rewrite the queued past.
        self._queue.append(np.array(action, dtype=self._dtype))
        applied = self._queue.popleft()
        obs, reward, terminated, truncated, info = self.env.step(applied)
        info["applied_action"] = applied
        return obs, reward, terminated, truncated, info


class ObservationDelay(_Sampled, gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Return the observation from ``k`` steps ago (the reset observation until then).

    Example:
        >>> import gymnasium as gym, numpy as np
        >>> env = ObservationDelay(gym.make("InvertedPendulum-v5"), delay=1)
        >>> first, _ = env.reset(seed=0)
        >>> bool(np.array_equal(env.step(env.action_space.sample())[0], first))
        True
    """

    def __init__(self, env: gym.Env, delay: int | tuple[int, int]):
        gym.utils.RecordConstructorArgs.__init__(self, delay=delay)
        gym.Wrapper.__init__(self, env)
        self._init_ranges("", obs_delay=(delay, True))
        self._queue: deque = deque()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._resample()
        self._queue = deque([np.array(obs)] * (self.obs_delay + 1), maxlen=self.obs_delay + 1)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._queue.append(np.array(obs))  # a copy: a robot driver may refill one buffer in place
        return self._queue[0], reward, terminated, truncated, info


class SensorFaults(_Sampled, gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
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

    def __init__(self, env: gym.Env, drop_prob: Range = 0.0, stuck_prob: Range = 0.0):
        gym.utils.RecordConstructorArgs.__init__(self, drop_prob=drop_prob, stuck_prob=stuck_prob)
        gym.ObservationWrapper.__init__(self, env)
        self._init_ranges("sensor_", drop_prob=(drop_prob, False), stuck_prob=(stuck_prob, False))
        self.stuck = np.zeros(env.observation_space.shape, dtype=bool)
        self._any_stuck = False
        self._stuck_values = None
        self._uniform = _NoiseBlock(env.observation_space.shape, kind="uniform")

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._resample()
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


class MotorLimits(_Sampled, gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """A weaker, sloppier motor: a strength scale, saturation below the action bound and a dead zone.

    ``strength`` scales every command (0.8: the motor delivers 80% of what is asked);
    ``saturation`` and ``dead_zone`` are fractions of the action bound: with
    ``saturation=0.8`` the motor never exceeds 80% of its range; with
    ``dead_zone=0.05`` commands under 5% do nothing.

    Example:
        >>> import gymnasium as gym, numpy as np
        >>> env = MotorLimits(gym.make("InvertedPendulum-v5"), saturation=0.5, dead_zone=0.1)
        >>> env.action(np.array([3.0, 0.1, -3.0])).tolist()
        [1.5, 0.0, -1.5]
    """

    def __init__(self, env: gym.Env, saturation: Range = 1.0, dead_zone: Range = 0.0, strength: Range = 1.0):
        gym.utils.RecordConstructorArgs.__init__(self, saturation=saturation, dead_zone=dead_zone, strength=strength)
        gym.ActionWrapper.__init__(self, env)
        self._init_ranges("motor_", saturation=(saturation, False), dead_zone=(dead_zone, False),
                          strength=(strength, False))
        self._bound = np.maximum(np.abs(env.action_space.low), np.abs(env.action_space.high))
        self._dtype = env.action_space.dtype
        self._set_limits()

    def _set_limits(self) -> None:
        self._limit = (self._bound * self.saturation).astype(self._dtype)
        self._neg_limit = -self._limit
        self._dead = (self._bound * self.dead_zone).astype(self._dtype)
        self._strength = None if self.strength == 1.0 else self._dtype.type(self.strength)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if self._resample():
            self._set_limits()
        return obs, info

    def action(self, action):
        scaled = action if self._strength is None else action * self._strength
        out = fast_clip(scaled, self._neg_limit, self._limit)
        if out.dtype != self._dtype:
            out = out.astype(self._dtype)
        if self.dead_zone:
            out[np.abs(action) < self._dead] = 0.0
        return out


class RandomizationReport(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Put the episode's effect draws into ``info["randomization"]`` beside the physics draws.

    Added once, outside every effect, by :func:`apply_effects` when any effect is randomised:
    it gathers the ``sampled`` values of the wrappers below it at reset, so a step costs one
    dict merge instead of one per effect.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self._sources: list[_Sampled] = []
        inner = env
        while isinstance(inner, gym.Wrapper):
            if isinstance(inner, _Sampled) and inner.ranges:
                self._sources.append(inner)
            inner = inner.env
        self.current: dict[str, float] = {}

    def _merge(self, info: dict) -> None:
        # The physics wrapper hands every step a fresh dict of its own, so adding to it in place aliases nothing.
        info.setdefault("randomization", {}).update(self.current)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.current = {k: v for src in self._sources for k, v in src.sampled.items()}
        self._merge(info)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._merge(info)
        return obs, reward, terminated, truncated, info


# The one composition order, innermost (closest to the motor and the sensor) first. Each entry
# is (spec field, wrapper builder); a builder returns None when its effect is off.
def _motor(env, fx):
    m = fx.motor
    return None if m is None else MotorLimits(env, saturation=m.saturation, dead_zone=m.dead_zone, strength=m.strength)


def _action_noise(env, fx):
    return ActionNoise(env, std=fx.action_noise_std) if fx.action_noise_std else None


def _sensors(env, fx):
    s = fx.sensors
    return None if s is None else SensorFaults(env, drop_prob=s.drop_prob, stuck_prob=s.stuck_prob)


def _obs_noise(env, fx):
    n = fx.obs_noise
    return None if n is None else ObservationNoise(env, std=n.std, bias_std=n.bias_std)


def _obs_delay(env, fx):
    return ObservationDelay(env, delay=fx.obs_delay) if fx.obs_delay else None


def _action_delay(env, fx):
    return ActionDelay(env, delay=fx.action_delay) if fx.action_delay else None


EFFECT_ORDER = (
    ("motor", _motor),                  # saturation / strength / dead zone, closest to the motor
    ("action_noise_std", _action_noise),
    ("sensors", _sensors),              # dropped / stuck sensors, closest to the sensor
    ("obs_noise", _obs_noise),          # noise + per-episode bias
    ("obs_delay", _obs_delay),
    ("action_delay", _action_delay),    # latency between the policy and the motor
)


def apply_effects(env: gym.Env, effects) -> gym.Env:
    """Wrap ``env`` in the effects of a spec ``Effects`` block, in :data:`EFFECT_ORDER`.

    Sim and target worlds both come through here, so an effect means the same thing in
    pretraining and on the target. Ranged values are drawn per episode and reported in
    ``info["randomization"]``.

    Example:
        >>> import gymnasium as gym
        >>> from sim2real.spec import Effects
        >>> env = apply_effects(gym.make("InvertedPendulum-v5"), Effects(action_delay=(0, 2), obs_noise={"std": 0.01}))
        >>> _, info = env.reset(seed=0)
        >>> info["randomization"]["effects/action_delay"] in (0, 1, 2)
        True
    """
    randomized = False
    for _field, build in EFFECT_ORDER:
        wrapped = build(env, effects)
        if wrapped is not None:
            env = wrapped
            randomized = randomized or bool(wrapped.ranges)
    return RandomizationReport(env) if randomized else env
