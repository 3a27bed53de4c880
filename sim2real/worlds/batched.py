"""A world as ``n`` simulations stepped together on MuJoCo's batch stepper (``mujoco.batch``).

The Gymnasium path runs one Python env per simulation: a ~30 us physics step wrapped in
tens of microseconds of Python. Here one ``Batch.step`` call advances every simulation in
C, and everything around it (physics randomisation, effects, pushes, observation, reward,
termination, reset, the policy's inputs) is array math over the simulations:

- physics randomisation writes each simulation's own model fields (``Batch.expand``), from
  the same spec ranges and the same affine writes as :class:`~sim2real.worlds.physics.PhysicsSampler`;
- effects, pushes and policy inputs follow the Gymnasium wrappers' order and arithmetic
  (:mod:`sim2real.worlds.batched_effects`);
- observation, reward and termination are the task's kernel (:mod:`sim2real.worlds.kernels`).

With the same model, state and actions the result is the Gymnasium env's to rounding
(``tests/test_batched.py``). The random streams differ: one generator serves the batch.

:class:`BatchedWorld` is the array core (no auto-reset); :class:`BatchedVectorEnv` is a
Gymnasium vector env over it (same-step auto-reset); the SB3 ``VecEnv`` that pretraining uses is
:class:`sim2real.learning.envs.BatchedVecEnv` (this layer loads no torch).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from mujoco.batch import Batch

from sim2real.fields import FIELDS
from sim2real.spec import PolicyInputs, SpecError, TaskSpec
from sim2real.worlds.batched_effects import BatchedEffects
from sim2real.worlds.inputs import inputs_space
from sim2real.worlds.kernels import Locomotion, kernel_for
from sim2real.worlds.make import _base_env, _spec
from sim2real.worlds.physics import PhysicsModel, PhysicsSampler, apply_shift, element_names
from sim2real.worlds.sampling import NOMINAL, REPLAY, EpisodeSampling

# The MjData fields that make up each simulation's state row (mjSTATE_INTEGRATION): saved in a checkpoint.
_STATE_FIELDS = ("time", "qpos", "qvel", "act", "history", "qacc_warmstart", "ctrl", "qfrc_applied", "xfrc_applied",
                 "eq_active", "mocap_pos", "mocap_quat", "userdata", "plugin_state", "plastic")

# PhysicsModel.arrays key -> the MjModel field Batch.expand takes.
_MODEL_FIELD = {**{name: info.array for name, info in FIELDS.items()}, "body_inertia": "body_inertia"}


class BatchUnsupported(ValueError):
    """The world has something the batched path does not compute; use the Gymnasium path."""


def unsupported_reason(task: str | TaskSpec, world: str = "sim", env: gym.Env | None = None) -> str | None:
    """Why ``world`` of ``task`` cannot run batched, or ``None`` if it can (``env``: the task's env, if built)."""
    spec = _spec(task)
    own = env is None
    env = _base_env(spec) if own else env
    try:
        kernel = kernel_for(env)
        if kernel is None:
            return f"{spec.env_id} has no batched kernel (supported: Hopper, Walker2d, HalfCheetah, InvertedPendulum v5)"
    finally:
        if own:
            env.close()
    if spec.world_variant(world) is not None and not isinstance(kernel, Locomotion):
        return f"{world!r} rewrites the reward (a task variant), which only the locomotion kernels compute"
    return None


class _Pushes:
    """:class:`~sim2real.worlds.physics.RandomPushes` for every simulation: same schedule, same draws' ranges."""

    def __init__(self, pushes, body: int, n: int, xfrc: np.ndarray):
        self.pushes, self.body, self.xfrc = pushes, body, xfrc
        self.countdown = np.zeros(n, dtype=int)
        self.remaining = np.zeros(n, dtype=int)
        self.force = np.zeros(n)

    def _interval(self, rng: np.random.Generator, size: int) -> np.ndarray:
        lo, hi = self.pushes.interval_steps
        return rng.integers(lo, hi + 1, size=size)

    def reset(self, rng: np.random.Generator, ids: np.ndarray) -> None:
        self.xfrc[ids, self.body] = 0.0
        self.countdown[ids] = self._interval(rng, len(ids))
        self.remaining[ids] = 0

    def before_step(self, rng: np.random.Generator) -> np.ndarray:
        """Start the pushes that are due; return each simulation's force during this step."""
        idle = self.remaining == 0
        self.countdown[idle] -= 1
        start = idle & (self.countdown <= 0)
        if start.any():
            k = int(start.sum())
            lo, hi = self.pushes.force
            self.force[start] = rng.uniform(lo, hi, k) * rng.choice([-1.0, 1.0], k)
            self.remaining[start] = self.pushes.duration_steps
            self.countdown[start] = self._interval(rng, k)
            self.xfrc[start, self.body, 0] = self.force[start]
        return np.where(self.remaining > 0, self.force, 0.0)

    def after_step(self) -> None:
        active = self.remaining > 0
        self.remaining[active] -= 1
        ended = active & (self.remaining == 0)
        if ended.any():
            self.xfrc[ended, self.body, 0] = 0.0


class _Inputs:
    """:class:`~sim2real.worlds.inputs.PolicyInputsWrapper` for every simulation: ``[obs, past obs, past commands]``."""

    def __init__(self, inputs: PolicyInputs, n: int, obs_dim: int, act_dim: int):
        self.history = inputs.history
        k = max(self.history, 1)
        self.past_obs = np.zeros((n, self.history, obs_dim))
        self.past_actions = np.zeros((n, k, act_dim))
        self.current = np.zeros((n, obs_dim))

    def reset(self, ids: np.ndarray, obs: np.ndarray) -> np.ndarray:
        self.past_actions[ids] = 0.0
        self.past_obs[ids] = obs[:, None, :]
        self.current[ids] = obs
        return self.compose(obs, ids)

    def step(self, action: np.ndarray, obs: np.ndarray) -> np.ndarray:
        # Newest first, as the Gymnasium wrapper lays them out.
        self.past_actions[:, 1:] = self.past_actions[:, :-1]
        self.past_actions[:, 0] = action
        if self.history:
            self.past_obs[:, 1:] = self.past_obs[:, :-1]
            self.past_obs[:, 0] = self.current
        self.current = obs.copy()
        return self.compose(obs, slice(None))

    def compose(self, obs: np.ndarray, ids) -> np.ndarray:
        n = len(obs)
        return np.concatenate((obs, self.past_obs[ids].reshape(n, -1), self.past_actions[ids].reshape(n, -1)), axis=1)


# Per-owner arrays that change while the world runs (besides the physics and the model fields).
_RUNNING = {
    "world": ("episodes", "t", "draws", "push_force"),
    "effects": ("limit", "dead", "strength", "actions", "seen", "t", "bias", "stuck", "stuck_values"),
    "pushes": ("countdown", "remaining", "force"),
    "inputs": ("past_obs", "past_actions", "current"),
    "sampling": EpisodeSampling.ARRAYS,
}


class BatchedWorld:
    """``n`` simulations of one world of a task: the randomised sim (``"sim"``) or a target world.

    Args:
        task: a task name, spec path or loaded spec.
        n: number of simulations.
        world: ``"sim"`` (the spec's randomisation, effects and pushes; ``randomize=False`` gives
            the nominal sim) or a target world's name (its fixed shift, effects and pushes).
        seed: seeds the one generator behind every draw (reset states, physics, effects, pushes).
        nthread: threads of the batch stepper (1: the caller's thread only).
        inputs: the policy's inputs (last action, history), appended to every observation.

    Example:
        >>> import numpy as np
        >>> world = BatchedWorld("hopper", n=4, seed=0, inputs=PolicyInputs(last_action=True))
        >>> obs = world.reset()
        >>> obs.shape  # 11 observations + the last command (3)
        (4, 14)
        >>> obs, reward, terminated, truncated = world.step(np.zeros((4, 3), dtype=np.float32))
        >>> sorted(world.randomization[0])[:2]
        ['actuator_gear/foot_joint', 'actuator_gear/leg_joint']
    """

    def __init__(self, task: str | TaskSpec, n: int, world: str = "sim", randomize: bool = True,
                 seed: int | None = None, nthread: int = 1, inputs: PolicyInputs | None = None):
        spec = _spec(task)
        if n < 1:
            raise ValueError(f"n={n}: a batched world needs at least one simulation")
        env = _base_env(spec)
        reason = unsupported_reason(spec, world, env)
        if reason:
            env.close()
            raise BatchUnsupported(reason)
        self.spec, self.n, self.world = spec, n, world
        self.kernel = kernel_for(env)
        if isinstance(self.kernel, Locomotion):
            self.kernel.variant = spec.world_variant(world)
        model = env.unwrapped.model
        self.max_steps = spec.max_episode_steps
        self.action_space = env.action_space
        obs_space = env.observation_space
        env.close()

        physics = PhysicsModel(model)
        params: list = []
        sampling = None
        if world == "sim":
            r = spec.randomization
            params = list(r.params) if randomize else []
            pushes = r.pushes if randomize else None
            effects = r.effects if randomize else None
            sampling = r.sampling if randomize else None
            self.when, self.interval = r.when, r.interval_episodes
        else:
            target = spec.target(world)
            try:
                apply_shift(physics, list(target.physics))  # into the shared model: every simulation
            except SpecError as exc:
                raise SpecError(f"{spec.path}: targets.{world}.{exc}") from None
            pushes, effects = target.pushes, target.effects
            self.when, self.interval = "reset", 1
        try:
            self.sampler = PhysicsSampler(physics, params) if params else None
        except SpecError as exc:
            raise SpecError(f"{spec.path}: {exc}") from None

        self.batch = Batch(model, n, nthread=nthread)
        self.qpos, self.qvel = self.batch.bind("qpos"), self.batch.bind("qvel")
        self.ctrl = self.batch.bind("ctrl")
        self._writes = self._plan_writes() if self.sampler else []
        self.draws = np.zeros((n, self.sampler.size if self.sampler else 0))
        self.pushes = None
        if pushes is not None:
            bodies = element_names(model, "body_mass")
            if pushes.body not in bodies:
                raise SpecError(f"{spec.path}: pushes.body: unknown body {pushes.body!r}; valid bodies: {', '.join(bodies)}")
            self.pushes = _Pushes(pushes, bodies.index(pushes.body), n, self.batch.bind("xfrc_applied"))
        act_low, act_high = self.action_space.low, self.action_space.high
        self.effects = BatchedEffects(effects, n, obs_space.shape[0], act_low, act_high, self.action_space.dtype)
        self.inputs = _Inputs(inputs, n, obs_space.shape[0], act_low.size) if inputs is not None and inputs.active else None
        self.sampling = None
        if sampling is not None:
            self.sampling = EpisodeSampling(sampling, n, self.draws.shape[1], len(self.effects.ranged))
            self._nominal_draws = self._draws_of_the_nominal_model()

        self.observation_space = (inputs_space(obs_space, self.action_space, self.inputs.history) if self.inputs
                                  else obs_space)
        self.rng = np.random.default_rng(seed)
        self._reseeded = True
        self.episodes = np.zeros(n, dtype=int)  # per simulation, for ``when: once / interval``
        self.t = np.zeros(n, dtype=int)
        self.randomization: list[dict[str, float]] = [{} for _ in range(n)]
        self.push_force = np.zeros(n)

    def _plan_writes(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """The sampler's scalar writes grouped by model field: one fancy-indexed write per field per reset."""
        by_field: dict[str, list] = {}
        for name, pos, a, b, d in self.sampler.plan:
            by_field.setdefault(name, []).append((pos, a, b, d))
        out = []
        for name, rows in by_field.items():
            live = self.batch.expand(_MODEL_FIELD[name])  # (n, ...) per-simulation values, live
            flat = live.reshape(self.n, -1)
            if not np.shares_memory(flat, live):
                raise RuntimeError(f"mujoco.batch: {name} is not contiguous; cannot write it in place")
            pos, a, b, d = (np.array(c) for c in zip(*rows))
            out.append((flat, pos, a, b, d))
        return out

    def _draws_of_the_nominal_model(self) -> np.ndarray:
        """The draw row whose writes give the model's own values (scale 1, offset 0, the nominal value set)."""
        row = np.ones(self.draws.shape[1])
        for flat, pos, a, b, d in self._writes:
            given = a != 0  # a zero value scaled by any draw stays zero: any draw will do there
            row[d[given]] = (flat[0, pos[given]] - b[given]) / a[given]
        return row

    def seed(self, seed: int | None) -> None:
        """A new random stream (``None``: from the OS); the next reset draws new physics everywhere,
        whatever ``when`` says, as a Gymnasium world does on ``reset(seed=...)``."""
        self.rng = np.random.default_rng(seed)
        self._reseeded = True

    # ---- episodes
    def reset(self, ids: np.ndarray | None = None) -> np.ndarray:
        """Start new episodes in simulations ``ids`` (all by default); return their first observations."""
        ids = np.arange(self.n) if ids is None else np.asarray(ids)
        if ids.dtype == bool:
            raise TypeError("reset(ids): give simulation indices (np.flatnonzero(mask)), not a boolean mask")
        ids = ids.astype(int)
        rng = self.rng
        modes = slots = None
        if self.sampling is not None:  # (when: reset, so every id is due below)
            self.sampling.remember(ids, self.t[ids] > 0, self.draws[ids], self.effects.values(ids))
            modes, slots = self.sampling.choose(rng, ids)
        if self.sampler is not None:
            due = ids if self.when == "reset" or self._reseeded else ids[
                (self.episodes[ids] == 0) | ((self.when == "interval") & (self.episodes[ids] % self.interval == 0))]
            if len(due):
                rows = self.sampler.draw_rows(rng, len(due))
                if modes is not None:
                    rows[modes == NOMINAL] = self._nominal_draws
                    rows[modes == REPLAY] = self.sampling.memory_physics[slots]
                self.draws[due] = rows
                for flat, pos, a, b, d in self._writes:
                    flat[due[:, None], pos] = a * rows[:, d] + b
        self._reseeded = False
        self.episodes[ids] += 1
        self.batch.reset(ids, stage=0)  # mjSTAGE_NONE: the state is written next, then forward
        qpos, qvel = self.kernel.reset_state(rng, len(ids))
        self.qpos[ids], self.qvel[ids] = qpos, qvel
        self.batch.forward(ids)
        if self.pushes is not None:
            self.pushes.reset(rng, ids)
            if modes is not None:  # the nominal world is never pushed
                self.pushes.countdown[ids[modes == NOMINAL]] = self.max_steps + 1
        self.t[ids] = 0
        fixed = neutral = None
        if modes is not None:
            fixed = np.full((len(ids), len(self.effects.ranged)), np.nan)
            fixed[modes == REPLAY] = self.sampling.memory_effects[slots]
            neutral = modes == NOMINAL
        seen = self.effects.reset(rng, ids, self.kernel.observe(qpos, qvel), fixed, neutral)
        keys = self.sampler.keys if self.sampler else []
        shares = self.sampling.shares(ids) if self.sampling is not None else None
        for row, i in enumerate(ids):
            info = {key: float(self.draws[i, d]) for key, d in keys}
            info.update(self.effects.sampled(i))
            if shares is not None:
                info.update(shares[row])
            self.randomization[i] = info
        return self.inputs.reset(ids, seen) if self.inputs else seen

    # ---- checkpoints: everything a resumed run needs to continue exactly where this one stopped
    def _running(self):
        """``(key, owner, attribute)`` of every array that changes while the world runs (see ``_RUNNING``)."""
        owners = {"world": self, "effects": self.effects, "pushes": self.pushes, "inputs": self.inputs,
                  "sampling": self.sampling}
        return [(f"{name}/{attr}", owner, attr) for name, owner in owners.items() if owner is not None
                for attr in _RUNNING[name]]

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays (physics, per-simulation model fields, effects, pushes, inputs, counters) and JSON-able
        facts (the generator's state, the episodes' reported draws): no pickling needed to save or load."""
        arrays = {f"state/{k}": self.batch.bind(k).copy() for k in _STATE_FIELDS if self.batch.bind(k).size}
        for k, (flat, *_rest) in enumerate(self._writes):
            arrays[f"model/{k}"] = flat.copy()
        for key, owner, attr in self._running():
            arrays[key] = np.array(getattr(owner, attr))
        for name, q in self.effects.params.items():
            arrays[f"effects/param/{name}"] = q.values.copy()
        meta = {"rng": self.rng.bit_generator.state, "randomization": [dict(r) for r in self.randomization],
                "reseeded": self._reseeded,
                "any_stuck": self.effects.any_stuck}
        return arrays, meta

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Put the world back in the state :meth:`state_dict` captured (same spec, n and inputs)."""
        missing = [key for key, _owner, _attr in self._running() if key not in arrays]
        if missing:
            block = "randomization.sampling" if any(k.startswith("sampling/") for k in missing) else "the world"
            raise ValueError(f"{self.spec.path}: the checkpoint holds no state for {', '.join(missing[:3])}: it was "
                             f"saved by a world without what {block} now adds (the spec changed since the run "
                             "started); resume with the spec it started with, or start a new run")
        for k in _STATE_FIELDS:
            if f"state/{k}" in arrays:
                self.batch.bind(k)[:] = arrays[f"state/{k}"]
        for k, (flat, *_rest) in enumerate(self._writes):
            flat[:] = arrays[f"model/{k}"]
        for key, owner, attr in self._running():
            getattr(owner, attr)[...] = arrays[key]  # in place: views stay views
        for name, q in self.effects.params.items():
            q.values[:] = arrays[f"effects/param/{name}"]
        self.rng.bit_generator.state = meta["rng"]
        self.randomization = [dict(r) for r in meta["randomization"]]
        self._reseeded = bool(meta["reseeded"])
        self.effects.any_stuck = bool(meta["any_stuck"])
        # Derived fields (contacts, positions) of the restored states, as the next step expects them.
        self.batch.forward()

    def set_state(self, ids, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Put simulations ``ids`` in the given state (as Gymnasium's ``set_state``: then ``mj_forward``)."""
        ids = np.atleast_1d(np.asarray(ids, dtype=int))
        self.qpos[ids], self.qvel[ids] = qpos, qvel
        self.batch.forward(ids)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Advance every simulation one control step: ``obs, reward, terminated, truncated`` (no auto-reset)."""
        action = np.asarray(action, dtype=self.action_space.dtype).reshape(self.n, -1)
        rng = self.rng
        motor = self.effects.to_motor(rng, action)
        if self.pushes is not None:
            self.push_force = self.pushes.before_step(rng)
        x_before = self.qpos[:, 0].copy()
        self.ctrl[:] = motor
        self.batch.step(nstep=self.kernel.frame_skip)
        if self.pushes is not None:
            self.pushes.after_step()
        out = self.kernel.step(x_before, self.qpos, self.qvel, motor)
        if self.sampling is not None:
            self.sampling.returns += out.reward
        self.t += 1
        truncated = self.t >= self.max_steps
        seen = self.effects.observe(rng, out.obs)
        if self.inputs:
            seen = self.inputs.step(action, seen)
        return seen, out.reward, out.terminated, truncated


class BatchedVectorEnv(gym.vector.VectorEnv):
    """A Gymnasium vector env over a :class:`BatchedWorld`, auto-resetting in the same step.

    A finished episode's last observation and info are in ``infos["final_obs"]`` /
    ``infos["final_info"]`` (masked by ``infos["_final_obs"]``), as Gymnasium's ``SyncVectorEnv``
    does in ``AutoresetMode.SAME_STEP``.

    Example:
        >>> import numpy as np
        >>> envs = BatchedVectorEnv(BatchedWorld("inverted_pendulum", n=2))
        >>> obs, infos = envs.reset(seed=0)
        >>> obs.shape, envs.single_action_space.shape
        ((2, 4), (1,))
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(self, world: BatchedWorld):
        self.world = world
        self.num_envs = world.n
        self.single_observation_space = world.observation_space
        self.single_action_space = world.action_space
        self.observation_space = gym.vector.utils.batch_space(world.observation_space, world.n)
        self.action_space = gym.vector.utils.batch_space(world.action_space, world.n)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.world.seed(seed)
        obs = self.world.reset()
        return obs, self._infos()

    def _infos(self, ids=None) -> dict[str, Any]:
        """Gymnasium's vector infos (per-env arrays with ``_key`` masks) of the episodes' draws."""
        infos: dict[str, Any] = {}
        for i in range(self.num_envs) if ids is None else ids:
            infos = self._add_info(infos, {"randomization": dict(self.world.randomization[i])}, i)
        return infos

    def step(self, actions):
        obs, reward, terminated, truncated = self.world.step(actions)
        done = terminated | truncated
        if not done.any():
            return obs, reward, terminated, truncated, self._infos()
        ids = np.flatnonzero(done)
        final = np.empty(self.num_envs, dtype=object)
        for i in ids:
            final[i] = obs[i].copy()
        final_info = self._infos(ids)  # the finished episodes' draws, before the reset draws new ones
        obs = obs.copy()
        obs[ids] = self.world.reset(ids)
        infos = self._infos()
        infos.update({"final_obs": final, "_final_obs": done.copy(), "final_info": final_info, "_final_info": done.copy()})
        return obs, reward, terminated, truncated, infos
