"""A stand-in for a user's real-robot env factory, for the plug-in test (``module:Factory``)."""

import gymnasium as gym

BUILT: list = []  # every env this factory made: a real robot exists once, so tests count them


def make_env() -> gym.Env:
    env = gym.make("InvertedPendulum-v5", max_episode_steps=100)
    BUILT.append(env)
    return env
