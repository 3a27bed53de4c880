"""A robot env module to copy: what sim2real needs from your robot, with a simulated body so it runs today.

    cd examples
    sim2real transfer ../policies/hopper-dr --target my_robot:make_robot --safety robot_limits.yaml \
        --target-kwargs port=/dev/ttyUSB0 --budget 5000 --out ../runs/robot/hopper-try1

(the current directory is importable; from the repository root, --target examples.my_robot:make_robot works
too). Replace the three marked calls with your robot's driver; keep the rest.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class MyRobot(gym.Env):
    """Hopper-shaped robot: 11 observations, 3 torque commands in [-1, 1], 125 Hz.

    What the env must do:
    - observation_space / action_space: the *same shapes* as the sim task's (``gym.make("Hopper-v5")``
      has them), observations in the same order and units (positions in m and rad, velocities in
      m/s and rad/s, the sim's joint order). A different order is the most common silent failure.
    - reset(): bring the robot to its start pose (or wait for a person: ``human_reset: true`` in the
      safety file) and return the first observation.
    - step(action): send the command, wait for the next reading, return (obs, reward, terminated,
      truncated, info). The reward is the task's: compute it from your sensors as the sim does.
    - end episodes: wrap it in a TimeLimit (below) or pass --max-episode-steps.
    Rate, limits, NaN checks, emergency stop and logging are sim2real's job (--safety), not yours.
    """

    metadata = {"render_modes": []}

    def __init__(self, port: str = "/dev/ttyUSB0"):
        self.port = port
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (11,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        # (1) connect to the hardware here, e.g. self.link = MyDriver(port). The stand-in: a simulated body.
        from sim2real.worlds.make import make_target_env

        self._body = make_target_env("hopper", "real")

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self._body.reset(seed=seed)  # (2) move home / wait for the operator, read the sensors
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self._body.step(action)  # (3) command, then read
        return obs, reward, terminated, False, info

    def close(self):
        self._body.close()  # disconnect (motors off)


def make_robot(port: str = "/dev/ttyUSB0") -> gym.Env:
    """The factory sim2real calls (once per run): the robot with an episode limit."""
    return gym.wrappers.TimeLimit(MyRobot(port), max_episode_steps=1000)
