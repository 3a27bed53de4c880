"""Physics randomisation on the fields of a live ``mujoco.MjModel``.

Values are written into the model in place (no XML recompilation); the nominal
arrays are cached once when the wrapper is built and can be restored exactly.
What each field is (its elements, its array, its column, its sign) is the table in
:mod:`sim2real.fields`; this module only does the writing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from sim2real.fields import ELEMENT_PLURAL, FIELDS
from sim2real.spec import ParamRange, PhysicsShift, Pushes, SpecError

_OBJ = {
    "body": mujoco.mjtObj.mjOBJ_BODY,
    "geom": mujoco.mjtObj.mjOBJ_GEOM,
    "joint": mujoco.mjtObj.mjOBJ_JOINT,
    "actuator": mujoco.mjtObj.mjOBJ_ACTUATOR,
}
_AXES = ["x", "y", "z"]


def element_names(model: mujoco.MjModel, field: str) -> list[str]:
    """Names a spec may use for ``field`` on ``model`` (index order)."""
    element = FIELDS[field].element
    if element == "axis":
        return list(_AXES)
    obj = _OBJ[element]
    count = {"body": model.nbody, "geom": model.ngeom, "joint": model.njnt, "actuator": model.nu}[element]
    names = []
    for i in range(count):
        name = mujoco.mj_id2name(model, obj, i)
        if name is None and element == "actuator":
            # Gymnasium's Hopper and Walker2d leave motors unnamed: call them by their joint.
            name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, int(model.actuator_trnid[i, 0]))
        names.append(name or f"#{i}")
    return names


def _element_indices(model: mujoco.MjModel, field: str, names: list[str] | str) -> list[int]:
    """Element indices (bodies, geoms, joints, actuators or axes) for ``names``."""
    valid = element_names(model, field)
    if names == "all":
        # The world body (index 0) has no mass to scale; skip it.
        return list(range(1 if FIELDS[field].skip_world else 0, len(valid)))
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise SpecError(f"{field}: unknown name(s) {unknown}; valid {ELEMENT_PLURAL[FIELDS[field].element]}: "
                        f"{', '.join(valid)}")
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


def _model_array(model: mujoco.MjModel, path: str) -> np.ndarray:
    """``"opt.gravity"`` -> ``model.opt.gravity`` (a view into the model's memory)."""
    obj = model
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


class PhysicsModel:
    """The nominal physics of one live model, and the means to write shifted values into it.

    Built once per env; ``nominal`` holds copies of every array that may change,
    so :meth:`restore` puts the model back bit-for-bit.
    """

    def __init__(self, model: mujoco.MjModel):
        self.model = model
        # Views into the model's memory, fetched once: each ``model.<field>`` access builds a new
        # numpy view through pybind11, which costs more than the write itself on the reset path.
        # Keyed by spec field (body_com's array is body_ipos); body_inertia follows body_mass.
        self.arrays = {name: _model_array(model, info.array) for name, info in FIELDS.items()}
        self.arrays["body_inertia"] = model.body_inertia
        self.nominal = {name: array.copy() for name, array in self.arrays.items()}

    def restore(self) -> None:
        for name, array in self.arrays.items():
            array[:] = self.nominal[name]

    def resolve(self, field: str, names: list[str] | str) -> tuple[list[str], list[Any]]:
        """Element names and the array slots they write for ``field``."""
        m = self.model
        idx = _element_indices(m, field, names)
        all_names = element_names(m, field)
        labels = [all_names[i] for i in idx]
        info = FIELDS[field]
        if info.per_dof:
            slots: list[Any] = _dof_indices(m, idx)
        elif info.column is not None:
            slots = [(i, info.column) for i in idx]
        else:
            slots = list(idx)
        return labels, slots

    def write(self, field: str, slot: Any, op: str, value: float | np.ndarray) -> None:
        """Set one element of ``field`` to its nominal value shifted by ``value`` (scale or add), checked."""
        index = np.atleast_1d(np.asarray(slot if not isinstance(slot, tuple) else slot[0]))
        shape = (index.size, 3) if FIELDS[field].offset_only else (index.size,)
        values = np.broadcast_to(np.asarray(value, dtype=float), shape)
        new = self.write_many(field, index, op, values)
        if new is not None:
            _check_value(field, new, slot)

    def write_many(self, field: str, index: np.ndarray, op: str, values: np.ndarray) -> np.ndarray | None:
        """Vectorised write of many elements (the per-reset hot path; validity is checked at build time).

        ``index`` holds bodies, geoms, dofs, actuators or axes; returns the new values (not for body_com).
        """
        a, nom, info = self.arrays, self.nominal, FIELDS[field]
        if info.offset_only:
            a[field][index] = nom[field][index] + values
            return None
        column = info.column  # e.g. only column 0: sliding friction, gear ratio
        base = nom[field][index, column] if column is not None else nom[field][index]
        new = base * values if op == "scale" else base + values
        if column is not None:
            a[field][index, column] = new
        else:
            a[field][index] = new
        if field == "body_mass":
            # Keep the body's shape: inertia scales with mass, I0 * s (scale) or I0 / m0 * v + I0 (add): the
            # batched world's write plan in the same floating-point operations, so both paths agree to the bit.
            inertia = nom["body_inertia"][index]
            if op == "scale":
                a["body_inertia"][index] = np.where(base[:, None] > 0, inertia * values[:, None], inertia)
            else:
                per_kg = np.divide(inertia, base[:, None], out=np.zeros_like(inertia), where=base[:, None] > 0)
                a["body_inertia"][index] = per_kg * values[:, None] + inertia
        return new


def _check_value(field: str, new: Any, slot: Any) -> None:
    arr, sign = np.atleast_1d(new), FIELDS[field].sign
    if sign == "positive" and np.any(arr <= 0):
        raise SpecError(f"{field}: the shift makes element {slot} non-positive ({arr.tolist()}); keep it > 0")
    if sign == "non_negative" and np.any(arr < 0):
        raise SpecError(f"{field}: the shift makes element {slot} negative ({arr.tolist()}); keep it >= 0")


def _sample_normal(rng: np.random.Generator, p: ParamRange, size: int | tuple[int, ...]) -> np.ndarray:
    centre = 0.5 * (p.low + p.high)
    std = p.std if p.std is not None else (p.high - p.low) / 4
    return np.clip(rng.normal(centre, std, size), p.low, p.high)


# Each randomised number lands in the model as scalar writes ``array[pos] = a * draw + b``: scale is
# (a, b) = (nominal, 0), add is (1, nominal), and a body's inertia follows its mass with the same form.
# A reset is then one generator call plus a short Python loop; with a handful of numbers per model
# that is several times cheaper than a numpy fancy-indexing call per entry.
_Write = tuple[str, int, float, float, int]  # array (a PhysicsModel.arrays key), flat position, a, b, index of the draw


def _affine_writes(physics: PhysicsModel, field: str, op: str, flat: list[int], draw_of: list[int]) -> list[_Write]:
    """The scalar writes that put an entry's draws into the model.

    ``draw_of[i]`` is the index of element ``flat[i]``'s draw (of its x draw for ``body_com``; y, z follow).
    """
    nominal = physics.nominal
    writes: list[_Write] = []

    def add(name: str, pos: int, a: float, b: float, d: int) -> None:
        writes.append((name, pos, a, b, d))

    for idx, d in zip(flat, draw_of):
        info = FIELDS[field]
        if info.offset_only:  # three draws per body, one per axis, added to the offset
            for axis in range(3):
                add(field, 3 * idx + axis, 1.0, float(nominal[field][idx, axis]), d + axis)
            continue
        array = nominal[field]
        columns = array.shape[1] if array.ndim == 2 else 1
        pos = idx * columns + (info.column or 0)  # e.g. column 0: sliding friction, gear ratio
        base = float(array.reshape(-1)[pos])
        add(field, pos, *((base, 0.0) if op == "scale" else (1.0, base)), d)
        if field == "body_mass":  # inertia scales with mass, I = I0 * m / m0 (a massless body's stays I0)
            for k in range(3):
                inertia = float(nominal["body_inertia"][idx, k])
                if base <= 0:
                    a, b = 0.0, inertia
                else:
                    a, b = (inertia, 0.0) if op == "scale" else (inertia / base, inertia)
                add("body_inertia", 3 * idx + k, a, b, d)
    return writes


class PhysicsSampler:
    """Samples and writes a set of randomised parameters (``ParamRange``) into a model.

    Everything that does not change between resets is worked out once here: the
    scalar writes, the ``info`` keys, and the affine map that turns one block of
    uniform draws into every entry's values (one generator call per reset; clipped
    normal entries draw their own).
    """

    def __init__(self, physics: PhysicsModel, params: list[ParamRange]):
        self.physics = physics
        self.plan: list[_Write] = []  # every scalar write, by array name (the batched world writes per simulation)
        self._keys: list[tuple[str, int]] = []  # info key -> index of its draw
        self._normal: list[tuple[ParamRange, int, int]] = []  # (param, first draw, count)
        lows, spans, logs = [], [], []
        for i, p in enumerate(params):
            try:
                labels, slots = physics.resolve(p.field, p.names)
            except SpecError as exc:
                raise SpecError(f"randomization.params[{i}].{exc}") from None
            start = len(lows)
            com = FIELDS[p.field].offset_only
            per_label = 3 if com else 1
            n = (1 if p.shared else len(labels)) * per_label
            label_draw = [0 if p.shared else j for j in range(len(labels))]  # in units of per_label draws
            # Dof fields: a joint may own several dofs, all sharing the joint's draw.
            flat, draw_of = [], []
            for slot, d in zip(slots, label_draw):
                elements = slot if isinstance(slot, list) else [slot[0] if isinstance(slot, tuple) else slot]
                flat += elements
                draw_of += [d] * len(elements)

            def offset(d: int, start: int = start, per_label: int = per_label) -> int:
                return start + per_label * d

            self.plan += _affine_writes(physics, p.field, p.op, flat, [offset(d) for d in draw_of])
            for label, d in zip(labels, label_draw):
                if com:
                    self._keys += [(f"{p.field}/{label}/{axis}", offset(d) + k) for k, axis in enumerate(_AXES)]
                else:
                    self._keys.append((f"{p.field}/{label}", offset(d)))
            if p.distribution == "normal":
                self._normal.append((p, start, n))
                lo, hi, log = 0.0, 0.0, False  # placeholders, overwritten by the normal draws
            elif p.distribution == "loguniform":
                lo, hi, log = np.log(p.low), np.log(p.high), True
            else:
                lo, hi, log = p.low, p.high, False
            lows += [lo] * n
            spans += [hi - lo] * n
            logs += [log] * n
            # Fail at build time, not mid-training, if the range's edge is invalid for this model
            # (every write is affine in the draw, so the edges bound every value in between).
            for value in (p.low, p.high):
                for slot in slots:
                    try:
                        physics.write(p.field, slot, p.op, value)
                    except SpecError as exc:
                        raise SpecError(f"randomization.params[{i}].{exc}") from None
        self._low, self._span = np.array(lows, dtype=float), np.array(spans, dtype=float)
        self._log = np.array(logs, dtype=bool)
        self._any_log = bool(self._log.any())
        # The hot path's form: a flat view of the array instead of its name.
        self._writes = [(physics.arrays[name].reshape(-1), pos, a, b, d) for name, pos, a, b, d in self.plan]
        physics.restore()

    @property
    def size(self) -> int:
        """How many numbers one draw of every entry takes (the width of :meth:`draw_rows`)."""
        return int(self._low.size)

    @property
    def keys(self) -> list[tuple[str, int]]:
        """``(info key, index of its draw)`` for every reported value (``body_mass/torso``, ...)."""
        return list(self._keys)

    def draw_rows(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` rows of draws at once, ``(n, draws)``: the batched world's per-simulation values."""
        block = self._low + self._span * rng.random((n, self._low.size))
        if self._any_log:
            block[:, self._log] = np.exp(block[:, self._log])
        for p, start, count in self._normal:
            block[:, start:start + count] = _sample_normal(rng, p, (n, count))
        return block

    def sample_and_apply(self, rng: np.random.Generator) -> dict[str, float]:
        """Draw new values and write them (each computed from the nominal values); return them by ``field/name``.

        No restore first: every write overwrites its element from the cached nominal value, and
        elements outside every entry are never touched.
        """
        block = self._low + self._span * rng.random(self._low.size)
        if self._any_log:
            block[self._log] = np.exp(block[self._log])
        for p, start, n in self._normal:
            block[start:start + n] = _sample_normal(rng, p, n)
        draws = block.tolist()
        for array, pos, a, b, d in self._writes:
            array[pos] = a * draws[d] + b
        return {key: draws[d] for key, d in self._keys}


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
        info["randomization"] = dict(self.current)  # a copy: Gymnasium's API forbids infos that share objects
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
        # The shift is written once, here; a step needs nothing from this wrapper, so it goes straight
        # to the inner env (a Python wrapper layer is a measurable share of a 20 us MuJoCo step).
        self.step = env.step

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
        self._xfrc = env.unwrapped.data.xfrc_applied  # a view, fetched once (``unwrapped`` walks the wrapper chain)
        self.pushes = pushes
        self._countdown = 0
        self._remaining = 0
        self._force = 0.0

    def _next_interval(self) -> int:
        lo, hi = self.pushes.interval_steps
        return int(self.np_random.integers(lo, hi + 1))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._xfrc[self.body] = 0.0
        self._countdown = self._next_interval()
        self._remaining = 0
        return obs, info

    def step(self, action):
        # xfrc_applied is written only when a push starts or ends, not every step.
        if self._remaining == 0:
            self._countdown -= 1
            if self._countdown <= 0:
                lo, hi = self.pushes.force
                self._force = float(self.np_random.uniform(lo, hi)) * float(self.np_random.choice([-1.0, 1.0]))
                self._remaining = self.pushes.duration_steps
                self._countdown = self._next_interval()
                self._xfrc[self.body, 0] = self._force
        force = self._force if self._remaining > 0 else 0.0
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._remaining > 0:
            self._remaining -= 1
            if self._remaining == 0:
                self._xfrc[self.body, 0] = 0.0
        info["push_force"] = force
        return obs, reward, terminated, truncated, info
