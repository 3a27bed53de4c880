"""Task variants that change the reward or goal ("different task"), keeping the spaces.

They rewrite the forward-progress term that Gymnasium's v5 locomotion envs report
in ``info["reward_forward"]`` (``forward_reward_weight * x_velocity``), so the
control cost and survival bonus stay as the task defines them.
"""

from __future__ import annotations

import gymnasium as gym

from sim2real.spec import TaskVariant


class BackwardsReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Reward moving backwards: the forward term flips sign.

    Example:
        >>> import gymnasium as gym
        >>> env = BackwardsReward(gym.make("Hopper-v5"))
        >>> _ = env.reset(seed=0)
        >>> _, r, *_, info = env.step(env.action_space.sample())
        >>> bool(abs(r - (info["reward_original"] - 2 * info["reward_forward"])) < 1e-9)
        True
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["reward_original"] = reward
        return obs, reward - 2.0 * info["reward_forward"], terminated, truncated, info


class TargetSpeedReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Reward holding a target speed: the forward term becomes ``w * (v* - |v - v*|)``.

    At ``v = v*`` the robot earns what it would earn going ``v*`` forward; faster or
    slower costs the same per m/s.

    Example:
        >>> import gymnasium as gym
        >>> env = TargetSpeedReward(gym.make("Hopper-v5"), target_speed=1.0)
        >>> _ = env.reset(seed=0)
        >>> _, r, *_, info = env.step(env.action_space.sample())
        >>> "reward_original" in info
        True
    """

    def __init__(self, env: gym.Env, target_speed: float):
        gym.utils.RecordConstructorArgs.__init__(self, target_speed=target_speed)
        gym.Wrapper.__init__(self, env)
        self.target_speed = target_speed
        self._weight = getattr(env.unwrapped, "_forward_reward_weight", 1.0)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["reward_original"] = reward
        v = info["x_velocity"]
        speed_term = self._weight * (self.target_speed - abs(v - self.target_speed))
        return obs, reward - info["reward_forward"] + speed_term, terminated, truncated, info


def apply_task_variant(env: gym.Env, variant: TaskVariant) -> gym.Env:
    if variant.kind == "backwards":
        return BackwardsReward(env)
    return TargetSpeedReward(env, target_speed=float(variant.target_speed))
