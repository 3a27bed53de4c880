"""A stand-in for a user's real-robot env factory, for the plug-in test (``module:Factory``)."""

import gymnasium as gym


def make_env() -> gym.Env:
    return gym.make("InvertedPendulum-v5", max_episode_steps=100)
