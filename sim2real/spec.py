"""Task specs: the YAML schema under ``envs/``, loading, and errors that speak the user's language.

A spec is data: the Gymnasium id, the tuned pretraining hyperparameters, the
randomisation ranges, the named target worlds and the default target budgets.
Everything is validated on load; a bad value raises :class:`SpecError` naming the
file, the field, the value and what would be accepted.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENVS_DIR = Path(__file__).resolve().parent.parent / "envs"

PhysicsField = Literal[
    "body_mass",
    "body_com",
    "geom_friction",
    "dof_damping",
    "dof_armature",
    "dof_frictionloss",
    "actuator_gear",
    "gravity",
]
# Fields whose value must stay strictly positive after a scale or an offset.
POSITIVE_FIELDS = {"body_mass", "geom_friction", "actuator_gear"}
# Fields whose value may be zero but never negative.
NON_NEGATIVE_FIELDS = {"dof_damping", "dof_armature", "dof_frictionloss"}


class SpecError(ValueError):
    """A task spec (or a name used against it) is invalid; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamRange(_Strict):
    """One randomised physical parameter.

    ``op: scale`` multiplies the nominal value, ``op: add`` adds to it. ``names``
    are bodies, geoms, joints or actuators of the MuJoCo model (``all`` for every
    one of them; ``x``/``y``/``z`` for gravity). Each named element gets its own
    sample unless ``shared`` is true.
    """

    field: PhysicsField
    names: list[str] | Literal["all"] = "all"
    op: Literal["scale", "add"] = "scale"
    low: float
    high: float
    distribution: Literal["uniform", "loguniform", "normal"] = "uniform"
    std: float | None = Field(default=None, gt=0, description="normal only; default (high-low)/4")
    shared: bool = False

    @model_validator(mode="after")
    def _check(self) -> ParamRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got low={self.low}")
        _check_op(self.field, self.op, self.low)
        return self


class PhysicsShift(_Strict):
    """One fixed physical change of a target world (``value`` scales or is added)."""

    field: PhysicsField
    names: list[str] | Literal["all"] = "all"
    op: Literal["scale", "add"] = "scale"
    value: float

    @model_validator(mode="after")
    def _check(self) -> PhysicsShift:
        _check_op(self.field, self.op, self.value)
        return self


def _check_op(field: str, op: str, value: float) -> None:
    if field == "body_com" and op != "add":
        raise ValueError("body_com is an offset in metres: use op 'add'")
    if op == "scale" and field in POSITIVE_FIELDS and value <= 0:
        raise ValueError(f"a scale of {value} would make {field} non-positive; use a scale > 0")
    if op == "scale" and field in NON_NEGATIVE_FIELDS and value < 0:
        raise ValueError(f"a scale of {value} would make {field} negative; use a scale >= 0")


class Pushes(_Strict):
    """Random external pushes on a body: a force for a few steps at random intervals."""

    body: str
    force: tuple[float, float] = Field(description="force magnitude range in newtons (low, high)")
    duration_steps: int = Field(default=5, ge=1)
    interval_steps: tuple[int, int] = Field(description="steps between pushes (low, high)")

    @model_validator(mode="after")
    def _check(self) -> Pushes:
        if self.force[0] > self.force[1] or self.force[0] < 0:
            raise ValueError(f"force must be 0 <= low <= high, got {list(self.force)}")
        if self.interval_steps[0] > self.interval_steps[1] or self.interval_steps[0] < 1:
            raise ValueError(f"interval_steps must be 1 <= low <= high, got {list(self.interval_steps)}")
        return self


class Randomization(_Strict):
    """How the sim world is randomised during pretraining."""

    when: Literal["reset", "once", "interval"] = "reset"
    interval_episodes: int = Field(default=10, ge=1, description="resample every N episodes (when: interval)")
    params: list[ParamRange] = []
    pushes: Pushes | None = None


class ObservationNoise(_Strict):
    std: float = Field(default=0.0, ge=0)
    bias_std: float = Field(default=0.0, ge=0, description="per-episode constant offset")


class SensorFaults(_Strict):
    drop_prob: float = Field(default=0.0, ge=0, le=1, description="per step and sensor: reads 0")
    stuck_prob: float = Field(default=0.0, ge=0, le=1, description="per episode and sensor: holds its first value")


class Motor(_Strict):
    saturation: float = Field(default=1.0, gt=0, le=1, description="fraction of the action bound the motor reaches")
    dead_zone: float = Field(default=0.0, ge=0, lt=1, description="fraction of the action bound below which nothing moves")


class Effects(_Strict):
    """What a real world adds beyond physics (each one wrapper, composed in one order)."""

    obs_noise: ObservationNoise | None = None
    action_noise_std: float = Field(default=0.0, ge=0)
    action_delay: int | tuple[int, int] = Field(default=0, description="steps, fixed or a (low, high) range per episode")
    obs_delay: int = Field(default=0, ge=0)
    sensors: SensorFaults | None = None
    motor: Motor | None = None

    @field_validator("action_delay")
    @classmethod
    def _delay(cls, v: int | tuple[int, int]) -> int | tuple[int, int]:
        lo, hi = (v, v) if isinstance(v, int) else v
        if lo < 0 or lo > hi:
            raise ValueError(f"action_delay must be >= 0 with low <= high, got {v}")
        return v


class TaskVariant(_Strict):
    """A change of reward or goal that keeps the observation and action spaces."""

    kind: Literal["backwards", "target_speed"]
    target_speed: float | None = Field(default=None, description="m/s, for kind target_speed")

    @model_validator(mode="after")
    def _check(self) -> TaskVariant:
        if self.kind == "target_speed" and self.target_speed is None:
            raise ValueError("kind 'target_speed' needs a target_speed (m/s)")
        return self


class TargetWorld(_Strict):
    """A fixed, seeded shift of the sim that stands in for the real robot."""

    description: str = ""
    physics: list[PhysicsShift] = []
    effects: Effects = Effects()
    pushes: Pushes | None = None
    task_variant: str | None = Field(default=None, description="name of an entry under task_variants")


class Pretraining(_Strict):
    """Algorithm and tuned hyperparameters (RL Zoo values, written out for -v5)."""

    algo: Literal["ppo", "sac", "td3"]
    total_steps: int = Field(gt=0)
    n_envs: int = Field(default=1, ge=1)
    normalize: bool = False
    hyperparams: dict[str, Any] = {}
    policy_kwargs: dict[str, Any] = {}
    source: str = Field(default="", description="where the hyperparameters come from")


class Budgets(_Strict):
    small: int = Field(gt=0)
    large: int = Field(gt=0)
    eval_interval: int = Field(gt=0, description="target steps between evaluations")
    eval_episodes: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Budgets:
        if self.small > self.large:
            raise ValueError(f"small ({self.small}) must be <= large ({self.large})")
        return self


class Transfer(_Strict):
    """Hyperparameters used on the target (overrides on top of pretraining's)."""

    hyperparams: dict[str, Any] = {}


class Robustness(_Strict):
    """The physical parameter a study sweeps for its robustness plot (EPOpt's Hopper torso mass)."""

    param: str = Field(description="FIELD/NAME, e.g. body_mass/torso")
    range: tuple[float, float]
    points: int = Field(default=7, ge=2)

    @model_validator(mode="after")
    def _check(self) -> Robustness:
        if not 0 < self.range[0] <= self.range[1]:
            raise ValueError(f"range must be 0 < low <= high (scales of the nominal value), got {list(self.range)}")
        return self


class TaskSpec(_Strict):
    name: str
    env_id: str
    max_episode_steps: int = Field(gt=0)
    env_kwargs: dict[str, Any] = {}
    pretrain: Pretraining
    transfer: Transfer = Transfer()
    randomization: Randomization = Randomization()
    task_variants: dict[str, TaskVariant] = {}
    targets: dict[str, TargetWorld]
    budgets: Budgets
    solved_return: float | None = Field(default=None, description="return in the nominal sim that counts as competent")
    robustness: Robustness | None = None
    path: str = ""

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if "nominal" not in self.targets:
            raise ValueError("targets must include 'nominal' (the unshifted world)")
        for name, target in self.targets.items():
            if target.task_variant is not None and target.task_variant not in self.task_variants:
                allowed = sorted(self.task_variants) or ["(none defined)"]
                raise ValueError(
                    f"targets.{name}.task_variant: unknown variant {target.task_variant!r}; "
                    f"allowed: {', '.join(allowed)}"
                )
        return self

    def target(self, world: str) -> TargetWorld:
        """The target world called ``world``; a :class:`SpecError` lists the valid names otherwise."""
        if world not in self.targets:
            raise SpecError(
                f"{self.path}: targets: unknown target world {world!r}; allowed: {', '.join(self.targets)}"
            )
        return self.targets[world]

    def budget(self, budget: str | int) -> int:
        """Target steps for ``small``, ``large`` or an explicit number."""
        if isinstance(budget, int) or str(budget).isdigit():
            return int(budget)
        if budget in ("small", "large"):
            return getattr(self.budgets, budget)
        raise SpecError(f"budget: {budget!r} is not 'small', 'large' or a number of steps")


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid task spec"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        if e["type"] == "literal_error":
            msg = f"must be one of {e['ctx']['expected']}"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def available_tasks(envs_dir: Path = ENVS_DIR) -> list[str]:
    return sorted(p.stem for p in envs_dir.glob("*.yaml"))


def load_spec_file(path: str | Path) -> TaskSpec:
    """Load and validate one spec file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: malformed YAML: {exc}") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a task spec is a mapping of fields, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    try:
        return TaskSpec(**raw, path=str(path))
    except ValidationError as exc:
        raise SpecError(_format_validation_error(path, exc)) from None


@cache
def load_spec(task: str) -> TaskSpec:
    """Load a task by name (``hopper``) from ``envs/``, or from a path to a YAML file."""
    if task.endswith((".yaml", ".yml")) or "/" in task:
        return load_spec_file(task)
    key = task.lower()
    path = ENVS_DIR / f"{key}.yaml"
    if not path.exists():
        raise SpecError(
            f"unknown task {task!r}; allowed: {', '.join(available_tasks())} (spec files in {ENVS_DIR})"
        )
    return load_spec_file(path)
