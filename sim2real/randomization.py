"""Physics randomisation on the fields of a live ``mujoco.MjModel``.

Values are written into the model in place (no XML recompilation); the nominal
arrays are cached once when the wrapper is built and can be restored exactly.

Supported fields and what their ``names`` refer to:

==================  ==========  ======================================================
field               names       what changes
==================  ==========  ======================================================
body_mass           bodies      mass, with the inertia scaled by the same factor
body_com            bodies      centre-of-mass offset in metres (``op: add``, all axes)
geom_friction       geoms       sliding friction (column 0)
dof_damping         joints      joint damping of every dof of the joint
dof_armature        joints      armature (rotor inertia)
dof_frictionloss    joints      dry friction
actuator_gear       actuators   motor strength (gear, column 0); an unnamed actuator
                                is called by the joint it drives
gravity             x, y, z     the gravity vector's components
==================  ==========  ======================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from sim2real.spec import NON_NEGATIVE_FIELDS, POSITIVE_FIELDS, ParamRange, PhysicsShift, Pushes, SpecError

_OBJ = {
    "body_mass": mujoco.mjtObj.mjOBJ_BODY,
    "body_com": mujoco.mjtObj.mjOBJ_BODY,
    "geom_friction": mujoco.mjtObj.mjOBJ_GEOM,
    "dof_damping": mujoco.mjtObj.mjOBJ_JOINT,
    "dof_armature": mujoco.mjtObj.mjOBJ_JOINT,
    "dof_frictionloss": mujoco.mjtObj.mjOBJ_JOINT,
    "actuator_gear": mujoco.mjtObj.mjOBJ_ACTUATOR,
}
_AXES = ["x", "y", "z"]
_KIND = {
    mujoco.mjtObj.mjOBJ_BODY: "bodies",
    mujoco.mjtObj.mjOBJ_GEOM: "geoms",
    mujoco.mjtObj.mjOBJ_JOINT: "joints",
    mujoco.mjtObj.mjOBJ_ACTUATOR: "actuators",
}


def element_names(model: mujoco.MjModel, field: str) -> list[str]:
    """Names a spec may use for ``field`` on ``model`` (index order)."""
    if field == "gravity":
        return list(_AXES)
    obj = _OBJ[field]
    count = {
        mujoco.mjtObj.mjOBJ_BODY: model.nbody,
        mujoco.mjtObj.mjOBJ_GEOM: model.ngeom,
        mujoco.mjtObj.mjOBJ_JOINT: model.njnt,
        mujoco.mjtObj.mjOBJ_ACTUATOR: model.nu,
    }[obj]
    names = []
    for i in range(count):
        name = mujoco.mj_id2name(model, obj, i)
        if name is None and obj == mujoco.mjtObj.mjOBJ_ACTUATOR:
            # Gymnasium's Hopper and Walker2d leave motors unnamed: call them by their joint.
            name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, int(model.actuator_trnid[i, 0]))
        names.append(name or f"#{i}")
    return names


def _element_indices(model: mujoco.MjModel, field: str, names: list[str] | str) -> list[int]:
    """Element indices (bodies, geoms, joints, actuators or axes) for ``names``."""
    valid = element_names(model, field)
    if names == "all":
        # The world body (index 0) has no mass to scale; skip it.
        if field in ("body_mass", "body_com"):
            return list(range(1, len(valid)))
        return list(range(len(valid)))
    unknown = [n for n in names if n not in valid]
    if unknown:
        kind = "axes" if field == "gravity" else _KIND[_OBJ[field]]
        raise SpecError(f"{field}: unknown name(s) {unknown}; valid {kind}: {', '.join(valid)}")
    return [valid.index(n) for n in names]


def _dof_indices(model: mujoco.MjModel, joint_ids: list[int]) -> list[list[int]]:
    """Each joint's dof indices (a hinge has one, a free joint six)."""
    out = []
    for j in joint_ids:
        start = int(model.jnt_dofadr[j])
        end = int(model.jnt_dofadr[j + 1]) if j + 1 < model.njnt else model.nv
        out.append(list(range(start, end)))
    return out


@dataclass
class _Target:
    """Where one spec entry writes: an array view, the element slices, and their nominal values."""

    field: str
    names: list[str]
    slots: list[Any]  # per element: an index into ``array`` (int, tuple or list)
    array: np.ndarray


class PhysicsModel:
    """The nominal physics of one live model, and the means to write shifted values into it.

    Built once per env; ``nominal`` holds copies of every array that may change,
    so :meth:`restore` puts the model back bit-for-bit.
    """

    def __init__(self, model: mujoco.MjModel):
        self.model = model
        self.nominal = {
            "body_mass": model.body_mass.copy(),
            "body_inertia": model.body_inertia.copy(),
            "body_ipos": model.body_ipos.copy(),
            "geom_friction": model.geom_friction.copy(),
            "dof_damping": model.dof_damping.copy(),
            "dof_armature": model.dof_armature.copy(),
            "dof_frictionloss": model.dof_frictionloss.copy(),
            "actuator_gear": model.actuator_gear.copy(),
            "gravity": model.opt.gravity.copy(),
        }

    def restore(self) -> None:
        m = self.model
        m.body_mass[:] = self.nominal["body_mass"]
        m.body_inertia[:] = self.nominal["body_inertia"]
        m.body_ipos[:] = self.nominal["body_ipos"]
        m.geom_friction[:] = self.nominal["geom_friction"]
        m.dof_damping[:] = self.nominal["dof_damping"]
        m.dof_armature[:] = self.nominal["dof_armature"]
        m.dof_frictionloss[:] = self.nominal["dof_frictionloss"]
        m.actuator_gear[:] = self.nominal["actuator_gear"]
        m.opt.gravity[:] = self.nominal["gravity"]

    def resolve(self, field: str, names: list[str] | str) -> tuple[list[str], list[Any]]:
        """Element names and the array slots they write for ``field``."""
        m = self.model
        idx = _element_indices(m, field, names)
        all_names = element_names(m, field)
        labels = [all_names[i] for i in idx]
        if field in ("dof_damping", "dof_armature", "dof_frictionloss"):
            slots: list[Any] = _dof_indices(m, idx)
        elif field in ("geom_friction", "actuator_gear"):
            slots = [(i, 0) for i in idx]
        else:
            slots = list(idx)
        return labels, slots

    def write(self, field: str, slot: Any, op: str, value: float | np.ndarray) -> None:
        """Set one element of ``field`` to its nominal value shifted by ``value`` (scale or add), checked."""
        index = np.atleast_1d(np.asarray(slot if not isinstance(slot, tuple) else slot[0]))
        values = np.broadcast_to(np.asarray(value, dtype=float), (index.size, 3) if field == "body_com" else (index.size,))
        new = self.write_many(field, index, op, values)
        if new is not None:
            _check_value(field, new, slot)

    def write_many(self, field: str, index: np.ndarray, op: str, values: np.ndarray) -> np.ndarray | None:
        """Vectorised write of many elements (the per-reset hot path; validity is checked at build time).

        ``index`` holds bodies, geoms, dofs, actuators or axes; returns the new values (not for body_com).
        """
        m, nom = self.model, self.nominal
        if field == "body_com":
            m.body_ipos[index] = nom["body_ipos"][index] + values
            return None
        if field == "gravity":
            base = nom["gravity"][index]
            m.opt.gravity[index] = base * values if op == "scale" else base + values
            return m.opt.gravity[index]
        if field in ("geom_friction", "actuator_gear"):
            base = nom[field][index, 0]
            new = base * values if op == "scale" else base + values
            getattr(m, field)[index, 0] = new
            return new
        base = nom[field][index]
        new = base * values if op == "scale" else base + values
        getattr(m, field)[index] = new
        if field == "body_mass":
            # Keep the body's shape: inertia scales with mass.
            ratio = np.divide(new, base, out=np.ones_like(new), where=base > 0)
            m.body_inertia[index] = nom["body_inertia"][index] * ratio[:, None]
        return new


def _check_value(field: str, new: Any, slot: Any) -> None:
    arr = np.atleast_1d(new)
    if field in POSITIVE_FIELDS and np.any(arr <= 0):
        raise SpecError(f"{field}: the shift makes element {slot} non-positive ({arr.tolist()}); keep it > 0")
    if field in NON_NEGATIVE_FIELDS and np.any(arr < 0):
        raise SpecError(f"{field}: the shift makes element {slot} negative ({arr.tolist()}); keep it >= 0")


def _sample(rng: np.random.Generator, p: ParamRange, size: int | tuple[int, ...]) -> np.ndarray:
    if p.distribution == "uniform":
        return rng.uniform(p.low, p.high, size)
    if p.distribution == "loguniform":
        return np.exp(rng.uniform(np.log(p.low), np.log(p.high), size))
    centre = 0.5 * (p.low + p.high)
    std = p.std if p.std is not None else (p.high - p.low) / 4
    return np.clip(rng.normal(centre, std, size), p.low, p.high)


class PhysicsSampler:
    """Samples and writes a set of randomised parameters (``ParamRange``) into a model.

    Indices are resolved once; each resample is one vectorised write per entry.
    """

    def __init__(self, physics: PhysicsModel, params: list[ParamRange]):
        self.physics = physics
        self.entries = []
        for i, p in enumerate(params):
            try:
                labels, slots = physics.resolve(p.field, p.names)
            except SpecError as exc:
                raise SpecError(f"randomization.params[{i}].{exc}") from None
            # Dof fields: a joint may own several dofs, all sharing the joint's draw.
            counts = np.array([len(s) if isinstance(s, list) else 1 for s in slots])
            flat = np.array([x for s in slots for x in (s if isinstance(s, list) else [s[0] if isinstance(s, tuple) else s])])
            self.entries.append((p, labels, counts, flat))
            # Fail at build time, not mid-training, if the range's edge is invalid for this model.
            for value in (p.low, p.high):
                for slot in slots:
                    try:
                        physics.write(p.field, slot, p.op, value)
                    except SpecError as exc:
                        raise SpecError(f"randomization.params[{i}].{exc}") from None
        physics.restore()

    def sample_and_apply(self, rng: np.random.Generator) -> dict[str, float]:
        """Draw new values and write them (each computed from the nominal arrays); return them by ``field/name``.

        No restore first: every entry overwrites all its elements from the cached nominal values, and
        elements outside every entry are never touched.
        """
        drawn: dict[str, float] = {}
        for p, labels, counts, flat in self.entries:
            com = p.field == "body_com"
            n = 1 if p.shared else len(labels)
            values = _sample(rng, p, (n, 3) if com else n)
            if p.shared:
                values = np.repeat(values, len(labels), axis=0)
            self.physics.write_many(p.field, flat, p.op, np.repeat(values, counts, axis=0))
            if com:
                for label, v in zip(labels, values.tolist()):
                    for axis, c in zip(_AXES, v):
                        drawn[f"{p.field}/{label}/{axis}"] = c
            else:
                drawn.update(zip((f"{p.field}/{label}" for label in labels), values.tolist()))
        return drawn


def apply_shift(physics: PhysicsModel, shifts: list[PhysicsShift]) -> dict[str, float]:
    """Write fixed target-world shifts (on top of the nominal model); return them by ``field/name``."""
    physics.restore()
    applied: dict[str, float] = {}
    for i, s in enumerate(shifts):
        try:
            labels, slots = physics.resolve(s.field, s.names)
            for label, slot in zip(labels, slots):
                physics.write(s.field, slot, s.op, s.value)
                applied[f"{s.field}/{label}"] = s.value
        except SpecError as exc:
            raise SpecError(f"physics[{i}].{exc}") from None
    return applied


class DomainRandomization(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Resample the physics of a MuJoCo env, in place, at reset.

    The sampled values of the current episode are in ``info["randomization"]`` at
    reset and at every step, keyed ``field/name`` (e.g. ``body_mass/torso``).

    Args:
        env: a Gymnasium MuJoCo env (``env.unwrapped.model`` is a ``mujoco.MjModel``).
        params: the ranges to sample from.
        when: ``reset`` (every episode), ``once`` (first reset only) or ``interval``.
        interval_episodes: with ``when="interval"``, resample every this many episodes.

    Example:
        >>> import gymnasium as gym
        >>> from sim2real.spec import ParamRange
        >>> env = DomainRandomization(gym.make("InvertedPendulum-v5"),
        ...     [ParamRange(field="body_mass", names=["pole"], low=0.5, high=2.0)])
        >>> _, info = env.reset(seed=0)
        >>> 0.5 <= info["randomization"]["body_mass/pole"] <= 2.0
        True
    """

    def __init__(self, env: gym.Env, params: list[ParamRange], when: str = "reset", interval_episodes: int = 10):
        gym.utils.RecordConstructorArgs.__init__(self, params=params, when=when, interval_episodes=interval_episodes)
        gym.Wrapper.__init__(self, env)
        self.physics = PhysicsModel(env.unwrapped.model)
        self.sampler = PhysicsSampler(self.physics, params)
        self.when = when
        self.interval_episodes = interval_episodes
        self._episodes = 0
        self.current: dict[str, float] = {}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        due = (
            not self.current
            or self.when == "reset"
            or (self.when == "interval" and self._episodes % self.interval_episodes == 0)
        )
        if due or seed is not None:
            # Physics changes take effect from the next mj_step; the initial state
            # (qpos, qvel) does not depend on them, so the observation stays valid.
            self.current = self.sampler.sample_and_apply(self.np_random)
        self._episodes += 1
        info["randomization"] = dict(self.current)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["randomization"] = dict(self.current)
        return obs, reward, terminated, truncated, info


class FixedPhysicsShift(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Apply a fixed, deterministic physics shift once (a target world's dynamics).

    Example:
        >>> import gymnasium as gym
        >>> from sim2real.spec import PhysicsShift
        >>> env = FixedPhysicsShift(gym.make("InvertedPendulum-v5"),
        ...     [PhysicsShift(field="body_mass", names=["pole"], value=2.0)])
        >>> round(float(env.unwrapped.model.body_mass[2] / env.physics.nominal["body_mass"][2]), 3)
        2.0
    """

    def __init__(self, env: gym.Env, shifts: list[PhysicsShift]):
        gym.utils.RecordConstructorArgs.__init__(self, shifts=shifts)
        gym.Wrapper.__init__(self, env)
        self.physics = PhysicsModel(env.unwrapped.model)
        self.applied = apply_shift(self.physics, shifts)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        info["physics_shift"] = dict(self.applied)
        return obs, info


class RandomPushes(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Push a body with a random horizontal force for a few steps, at random intervals.

    The force goes into ``data.xfrc_applied`` and is cleared when the push ends.
    ``info["push_force"]`` is the force (N) applied during the step.

    Example:
        >>> import gymnasium as gym
        >>> from sim2real.spec import Pushes
        >>> env = RandomPushes(gym.make("InvertedPendulum-v5"),
        ...     Pushes(body="pole", force=(5.0, 5.0), duration_steps=2, interval_steps=(1, 1)))
        >>> _ = env.reset(seed=0)
        >>> abs(env.step(env.action_space.sample())[4]["push_force"])
        5.0
    """

    def __init__(self, env: gym.Env, pushes: Pushes):
        gym.utils.RecordConstructorArgs.__init__(self, pushes=pushes)
        gym.Wrapper.__init__(self, env)
        model = env.unwrapped.model
        valid = element_names(model, "body_mass")
        if pushes.body not in valid:
            raise SpecError(f"pushes.body: unknown body {pushes.body!r}; valid bodies: {', '.join(valid)}")
        self.body = valid.index(pushes.body)
        self.pushes = pushes
        self._countdown = 0
        self._remaining = 0
        self._force = 0.0

    def _next_interval(self) -> int:
        lo, hi = self.pushes.interval_steps
        return int(self.np_random.integers(lo, hi + 1))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.env.unwrapped.data.xfrc_applied[self.body] = 0.0
        self._countdown = self._next_interval()
        self._remaining = 0
        return obs, info

    def step(self, action):
        data = self.env.unwrapped.data
        if self._remaining == 0:
            self._countdown -= 1
            if self._countdown <= 0:
                lo, hi = self.pushes.force
                self._force = float(self.np_random.uniform(lo, hi)) * float(self.np_random.choice([-1.0, 1.0]))
                self._remaining = self.pushes.duration_steps
                self._countdown = self._next_interval()
        force = self._force if self._remaining > 0 else 0.0
        data.xfrc_applied[self.body, 0] = force
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._remaining > 0:
            self._remaining -= 1
        if self._remaining == 0:
            data.xfrc_applied[self.body, 0] = 0.0
        info["push_force"] = force
        return obs, reward, terminated, truncated, info
