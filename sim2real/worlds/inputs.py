"""The policy's observation inputs: the observation plus its previous command and a short history.

A memoryless policy cannot tell that its commands arrive late or that the robot is heavier
than in the sim; given its last action (and the last few observations) it can. The inputs
belong to the *policy*, not to a world: they are recorded with it and wrapped around every
world it meets (sim, target, a plug-in robot env), so a robot env stays a plain env.

Layout of the policy's observation (the current observation first, so a policy trained
without inputs can be widened by zero columns)::

    [obs_t, a_{t-1}]                                   last_action: true
    [obs_t, obs_{t-1}..obs_{t-k}, a_{t-1}..a_{t-k}]    history: k  (last_action implied)
"""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np

from sim2real.spec import PolicyInputs


def plain_obs_dim(inputs: PolicyInputs, total: int, act_dim: int) -> int:
    """The observation's own width, from the width the policy sees (the columns :func:`input_columns` adds undone)."""
    if inputs.history:
        return (total - inputs.history * act_dim) // (inputs.history + 1)
    return total - act_dim if inputs.last_action else total


def inputs_space(obs_space: gym.spaces.Box, act_space: gym.spaces.Box, history: int) -> gym.spaces.Box:
    """The policy's observation space with its inputs: ``[obs, past obs x history, past commands]``."""
    k = max(history, 1)
    lows = [obs_space.low] * (1 + history) + [act_space.low.astype(obs_space.dtype)] * k
    highs = [obs_space.high] * (1 + history) + [act_space.high.astype(obs_space.dtype)] * k
    return gym.spaces.Box(np.concatenate(lows), np.concatenate(highs), dtype=obs_space.dtype)


def input_columns(inputs: PolicyInputs, obs_dim: int, act_dim: int) -> dict[tuple[str, int], range]:
    """Where each part of the policy's observation sits: ``("obs", lag)`` and ``("act", lag)`` -> columns."""
    columns, at = {("obs", 0): range(0, obs_dim)}, obs_dim
    for lag in range(1, inputs.history + 1):
        columns[("obs", lag)], at = range(at, at + obs_dim), at + obs_dim
    for lag in range(1, (inputs.history or int(inputs.last_action)) + 1):
        columns[("act", lag)], at = range(at, at + act_dim), at + act_dim
    return columns


def column_map(old: PolicyInputs, new: PolicyInputs, obs_dim: int, act_dim: int) -> list[int]:
    """For each column of a policy with ``old`` inputs, its column under ``new`` ones (a curriculum that adds
    inputs: the last action's weights must follow the last action, not land on a past observation)."""
    old_cols, new_cols = input_columns(old, obs_dim, act_dim), input_columns(new, obs_dim, act_dim)
    missing = [part for part in old_cols if part not in new_cols]
    if missing:
        raise ValueError(f"the new inputs ({new.model_dump()}) drop what the policy sees ({old.model_dump()}): "
                         "inputs can only be added")
    where = [0] * (max(c.stop for c in old_cols.values()))
    for part, cols in old_cols.items():
        for i, j in zip(cols, new_cols[part]):
            where[i] = j
    return where


class PolicyInputsWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Append the previous action(s) and observation(s) to the observation.

    Args:
        env: any env with Box observation and action spaces.
        last_action: append the previous command (zeros at the start of an episode).
        history: append the ``history`` previous observations and commands.

    Example:
        >>> import gymnasium as gym, numpy as np
        >>> env = PolicyInputsWrapper(gym.make("InvertedPendulum-v5"), last_action=True)
        >>> env.observation_space.shape
        (5,)
        >>> _ = env.reset(seed=0)
        >>> obs, *_ = env.step(np.array([0.5], dtype=np.float32))
        >>> float(obs[-1])
        0.5
    """

    def __init__(self, env: gym.Env, last_action: bool = False, history: int = 0):
        gym.utils.RecordConstructorArgs.__init__(self, last_action=last_action, history=history)
        gym.Wrapper.__init__(self, env)
        obs_space, act_space = env.observation_space, env.action_space
        if not (isinstance(obs_space, gym.spaces.Box) and isinstance(act_space, gym.spaces.Box)):
            raise TypeError("policy inputs (last_action, history) need Box observation and action spaces")
        self.history = history
        self.last_action = last_action or history > 0
        k = max(history, 1)
        self._obs_hist: deque = deque(maxlen=history) if history else deque()
        self._act_hist: deque = deque(maxlen=k)
        self._zero_action = np.zeros(act_space.shape, dtype=obs_space.dtype)
        self.observation_space = inputs_space(obs_space, act_space, history)
        self._current: np.ndarray | None = None

    def _compose(self, obs: np.ndarray) -> np.ndarray:
        parts = [obs, *self._obs_hist, *self._act_hist]
        return np.concatenate(parts).astype(self.observation_space.dtype, copy=False)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        k = max(self.history, 1)
        self._act_hist.clear()
        self._act_hist.extend([self._zero_action] * k)
        self._obs_hist.clear()
        self._obs_hist.extend([np.array(obs)] * self.history)
        self._current = np.array(obs)
        return self._compose(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        # Newest first: a_{t-1} right after the observations, the way the module docstring lays it out.
        # A copy: a caller that refills one action buffer in place must not rewrite the remembered past.
        self._act_hist.appendleft(np.array(action, dtype=self._zero_action.dtype).reshape(self._zero_action.shape))
        if self.history:
            self._obs_hist.appendleft(self._current)
        self._current = np.array(obs)
        return self._compose(obs), reward, terminated, truncated, info


def with_inputs(env: gym.Env, inputs: PolicyInputs | None) -> gym.Env:
    """``env`` as the policy sees it (unchanged for a policy without inputs)."""
    if inputs is None or not inputs.active:
        return env
    return PolicyInputsWrapper(env, last_action=inputs.last_action, history=inputs.history)


class WithInputs:
    """A picklable env thunk: ``env_fn()`` as the policy sees it (SubprocVecEnv and study workers pickle it)."""

    def __init__(self, env_fn, inputs: PolicyInputs | None):
        self.env_fn, self.inputs = env_fn, inputs

    def __call__(self) -> gym.Env:
        return with_inputs(self.env_fn(), self.inputs)


def compose_episode(observations: np.ndarray, actions: np.ndarray, inputs: PolicyInputs | None) -> np.ndarray:
    """A recorded episode's observations as the policy saw them (what :class:`PolicyInputsWrapper` built live).

    ``observations`` has one row more than ``actions`` (the reset observation first).
    """
    observations = np.asarray(observations)
    if inputs is None or not inputs.active:
        return observations
    history = inputs.history
    k = max(history, 1)
    obs_hist = deque([observations[0]] * history, maxlen=history or None)
    act_hist = deque([np.zeros(actions.shape[1], dtype=observations.dtype)] * k, maxlen=k)
    rows = [np.concatenate([observations[0], *obs_hist, *act_hist])]
    for t, action in enumerate(actions):
        act_hist.appendleft(np.asarray(action, dtype=observations.dtype))
        if history:
            obs_hist.appendleft(observations[t])
        rows.append(np.concatenate([observations[t + 1], *obs_hist, *act_hist]))
    return np.stack(rows)
