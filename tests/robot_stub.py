"""Stand-ins for a user's real-robot env factories, for the plug-in tests (``module:Factory``)."""

import gymnasium as gym
import numpy as np

BUILT: list = []  # every env this factory made: a real robot exists once, so tests count them


class OneRobot(gym.Wrapper):
    """InvertedPendulum that behaves like hardware: one instance at a time, every command counted."""

    live = 0
    steps = 0

    def __init__(self, max_episode_steps: int = 100):
        if OneRobot.live:
            raise RuntimeError("the robot is already in use by another env instance")
        OneRobot.live += 1
        super().__init__(gym.make("InvertedPendulum-v5", max_episode_steps=max_episode_steps))

    def step(self, action):
        OneRobot.steps += 1
        return super().step(action)

    def close(self):
        if self.env is not None and OneRobot.live:
            OneRobot.live -= 1
        super().close()


def make_env(max_episode_steps: int = 100) -> gym.Env:
    env = OneRobot(max_episode_steps)
    BUILT.append(env)
    return env


class Endless(gym.Env):
    """A robot env without an episode limit (most hardware envs): it never truncates by itself."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float64)
    action_space = gym.spaces.Box(-3.0, 3.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4), {}

    def step(self, action):
        return np.zeros(4), 1.0, False, False, {}


class Glitchy(gym.Wrapper):
    """InvertedPendulum whose sensor returns NaN on step ``nan_at`` of every episode."""

    def __init__(self, nan_at: int = 5):
        super().__init__(gym.make("InvertedPendulum-v5", max_episode_steps=100))
        self.nan_at, self.t, self.applied = nan_at, 0, []

    def reset(self, **kwargs):
        self.t = 0
        return super().reset(**kwargs)

    def step(self, action):
        self.applied.append(np.array(action))
        obs, r, term, trunc, info = super().step(action)
        self.t += 1
        if self.t == self.nan_at:
            obs = np.full_like(obs, np.nan)
        return obs, r, term, trunc, info


class Flaky(OneRobot):
    """A robot whose driver raises on every ``fail_every``-th step (a dropped serial frame)."""

    def __init__(self, fail_every: int = 30, max_episode_steps: int = 100):
        super().__init__(max_episode_steps)
        self.fail_every, self.calls = fail_every, 0

    def step(self, action):
        self.calls += 1
        if self.calls % self.fail_every == 0:
            raise OSError("serial frame lost")
        return super().step(action)
