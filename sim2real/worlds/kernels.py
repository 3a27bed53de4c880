"""Gymnasium's v5 MuJoCo tasks as array math over many simulations at once.

A kernel is what one Gymnasium env does around ``mj_step`` (its observation, reward,
termination and reset noise), written for ``(n, ...)`` arrays of ``qpos``/``qvel``. Its
constants are read from a built Gymnasium env, so a spec's ``env_kwargs`` (a
``ctrl_cost_weight``, a ``healthy_z_range``) mean the same in both worlds. The
arithmetic follows Gymnasium's line by line (float32 control cost included) so the
batched world matches the Gymnasium env to rounding: ``tests/test_batched.py`` checks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from sim2real.spec import TaskVariant
from sim2real.worlds.effects import fast_clip


@dataclass
class Step:
    """What a kernel computes after the physics: everything an env's ``step`` returns but the info."""

    obs: np.ndarray        # (n, obs_dim), float64
    reward: np.ndarray     # (n,), float64
    terminated: np.ndarray  # (n,), bool


class Kernel:
    """The common part: frame skip, reset noise, the sizes."""

    def __init__(self, env: gym.Env):
        u = env.unwrapped
        self.frame_skip = int(u.frame_skip)
        self.dt = float(u.dt)
        self.init_qpos = np.array(u.init_qpos, dtype=float)
        self.init_qvel = np.array(u.init_qvel, dtype=float)
        self.noise = float(u._reset_noise_scale)

    def reset_state(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Initial ``qpos``, ``qvel`` for ``n`` episodes (Gymnasium's noise: uniform on both)."""
        qpos = self.init_qpos + rng.uniform(-self.noise, self.noise, (n, self.init_qpos.size))
        qvel = self.init_qvel + rng.uniform(-self.noise, self.noise, (n, self.init_qvel.size))
        return qpos, qvel

    def observe(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def step(self, x_before: np.ndarray, qpos: np.ndarray, qvel: np.ndarray, action: np.ndarray) -> Step:
        raise NotImplementedError


class Locomotion(Kernel):
    """Hopper, Walker2d and HalfCheetah: run forward, pay for control, (Hopper, Walker2d) stay upright."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        u = env.unwrapped
        self.exclude_x = bool(u._exclude_current_positions_from_observation)
        self.clip_qvel = type(u).__name__ in ("HopperEnv", "Walker2dEnv")  # both clip velocities to +-10
        self.forward_weight = float(u._forward_reward_weight)
        self.ctrl_weight = float(u._ctrl_cost_weight)
        self.normal_qvel_noise = type(u).__name__ == "HalfCheetahEnv"  # its qvel noise is Gaussian
        self.healthy = type(u).__name__ in ("HopperEnv", "Walker2dEnv")
        self.variant: TaskVariant | None = None  # a task variant's reward (set by the batched world)
        if self.healthy:
            self.healthy_reward = float(u._healthy_reward)
            self.terminate_unhealthy = bool(u._terminate_when_unhealthy)
            self.z_range = tuple(u._healthy_z_range)
            self.angle_range = tuple(u._healthy_angle_range)
            # Hopper also bounds every entry of the state past (x, z); Walker2d does not.
            self.state_range = tuple(u._healthy_state_range) if hasattr(u, "_healthy_state_range") else None

    def reset_state(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.normal_qvel_noise:
            return super().reset_state(rng, n)
        qpos = self.init_qpos + rng.uniform(-self.noise, self.noise, (n, self.init_qpos.size))
        qvel = self.init_qvel + self.noise * rng.standard_normal((n, self.init_qvel.size))
        return qpos, qvel

    def observe(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        position = qpos[:, 1:] if self.exclude_x else qpos
        velocity = fast_clip(qvel, -10.0, 10.0) if self.clip_qvel else qvel
        return np.concatenate((position, velocity), axis=1)

    def is_healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        z, angle = qpos[:, 1], qpos[:, 2]
        (zmin, zmax), (amin, amax) = self.z_range, self.angle_range
        ok = (zmin < z) & (z < zmax) & (amin < angle) & (angle < amax)
        if self.state_range is not None:
            smin, smax = self.state_range
            state = np.concatenate((qpos[:, 2:], qvel), axis=1)
            ok &= np.all((smin < state) & (state < smax), axis=1)
        return ok

    def step(self, x_before, qpos, qvel, action) -> Step:
        x_velocity = (qpos[:, 0] - x_before) / self.dt
        forward = self.forward_weight * x_velocity
        # Gymnasium computes the cost in the action's dtype (float32 for SB3's actions); so does this.
        ctrl_cost = self.ctrl_weight * np.square(action).sum(axis=1, dtype=action.dtype)
        if self.healthy:
            healthy = self.is_healthy(qpos, qvel)
            reward = (forward + healthy * self.healthy_reward) - ctrl_cost
            terminated = ~healthy if self.terminate_unhealthy else np.zeros_like(healthy)
        else:
            reward = forward - ctrl_cost
            terminated = np.zeros(len(qpos), dtype=bool)
        if self.variant is not None:  # as sim2real.worlds.variants rewrites the Gymnasium env's reward
            if self.variant.kind == "backwards":
                reward = reward - 2.0 * forward
            else:
                v_star = float(self.variant.target_speed)
                reward = reward - forward + self.forward_weight * (v_star - np.abs(x_velocity - v_star))
        return Step(self.observe(qpos, qvel), reward, terminated)


class InvertedPendulum(Kernel):
    """Keep the pole up: reward 1 per step, the episode ends past 0.2 rad."""

    def observe(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        return np.concatenate((qpos, qvel), axis=1)

    def step(self, x_before, qpos, qvel, action) -> Step:
        obs = self.observe(qpos, qvel)
        terminated = ~np.all(np.isfinite(obs), axis=1) | (np.abs(obs[:, 1]) > 0.2)
        return Step(obs, (~terminated).astype(float), terminated)


KERNELS = {
    "HopperEnv": Locomotion,
    "Walker2dEnv": Locomotion,
    "HalfCheetahEnv": Locomotion,
    "InvertedPendulumEnv": InvertedPendulum,
}


def kernel_for(env: gym.Env) -> Kernel | None:
    """The kernel of a built Gymnasium env, or ``None`` if its task has none.

    Only the v5 envs: v4's classes have the same names but other rewards (v4 pays the healthy
    reward on the step that ends an episode) and other attributes.
    """
    u = env.unwrapped
    cls = KERNELS.get(type(u).__name__) if type(u).__module__.endswith("_v5") else None
    return cls(env) if cls is not None else None
