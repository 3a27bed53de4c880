"""The table of randomisable MjModel fields: the one place that knows what each field is.

A new randomisable field is one :class:`FieldInfo` row here (plus, if it needs new arithmetic,
its case in ``worlds.physics``). Specs validate against it, the physics writer resolves names and
array slots from it, and ``sim2real envs`` describes fields from it. No MuJoCo import: the spec
layer reads it too.

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
from typing import Literal


@dataclass(frozen=True)
class FieldInfo:
    name: str
    element: Literal["body", "geom", "joint", "actuator", "axis"]  # what its ``names`` refer to
    array: str  # the MjModel array it writes ("opt.gravity" for gravity)
    column: int | None = None  # only this column of a 2-D array (sliding friction, gear ratio)
    per_dof: bool = False  # indexed by dof: a joint writes each of its dofs
    sign: Literal["positive", "non_negative", "any"] = "any"  # what must hold after a shift
    offset_only: bool = False  # body_com: three offsets in metres, op "add" only
    skip_world: bool = False  # "all" leaves out body 0 (the world has no mass)
    what: str = ""


FIELDS: dict[str, FieldInfo] = {f.name: f for f in (
    FieldInfo("body_mass", "body", "body_mass", sign="positive", skip_world=True,
              what="mass, with the inertia scaled by the same factor"),
    FieldInfo("body_com", "body", "body_ipos", offset_only=True, skip_world=True,
              what="centre-of-mass offset in metres (op: add, all axes)"),
    FieldInfo("geom_friction", "geom", "geom_friction", column=0, sign="positive", what="sliding friction"),
    FieldInfo("dof_damping", "joint", "dof_damping", per_dof=True, sign="non_negative", what="joint damping"),
    FieldInfo("dof_armature", "joint", "dof_armature", per_dof=True, sign="non_negative",
              what="armature (rotor inertia)"),
    FieldInfo("dof_frictionloss", "joint", "dof_frictionloss", per_dof=True, sign="non_negative",
              what="dry friction"),
    FieldInfo("actuator_gear", "actuator", "actuator_gear", column=0, sign="positive", what="motor strength (gear)"),
    FieldInfo("gravity", "axis", "opt.gravity", what="the gravity vector's components"),
)}
FIELD_NAMES = tuple(FIELDS)
ELEMENT_PLURAL = {"body": "bodies", "geom": "geoms", "joint": "joints", "actuator": "actuators", "axis": "axes"}


# A scale or offset past this is a typo (1e300, a missing decimal point), not a world: MuJoCo would take it and
# the run would fail later, or silently simulate nonsense.
MAX_SHIFT = 1e3


def check_shift(field: str, op: str, value: float) -> None:
    """A scale or offset that is invalid for ``field`` whatever the model (raises ``ValueError``)."""
    info = FIELDS[field]
    if abs(value) > MAX_SHIFT:
        raise ValueError(f"{field}: {op} {value:g} is outside [-{MAX_SHIFT:g}, {MAX_SHIFT:g}] (a typo?)")
    if info.offset_only and op != "add":
        raise ValueError(f"{field} is an offset in metres: use op 'add'")
    if op == "scale" and info.sign == "positive" and value <= 0:
        raise ValueError(f"a scale of {value} would make {field} non-positive; use a scale > 0")
    if op == "scale" and info.sign == "non_negative" and value < 0:
        raise ValueError(f"a scale of {value} would make {field} negative; use a scale >= 0")
