"""Task specs: the YAML schema under ``envs/``, loading, and errors that speak the user's language.

A spec is data: the Gymnasium id, the tuned pretraining hyperparameters, the
randomisation ranges, the named target worlds and the default target budgets.
Everything is validated on load; a bad value raises :class:`SpecError` naming the
file, the field, the value and what would be accepted.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sim2real.fields import FIELD_NAMES, check_shift

ENVS_DIR = Path(__file__).resolve().parent / "envs"

PhysicsField = Literal[FIELD_NAMES]  # the rows of sim2real.fields.FIELDS


class SpecError(ValueError):
    """A task spec (or a name used against it) is invalid; the message says where and why."""


class StrictModel(BaseModel):
    # NaN and inf are never a physical value, a range or a budget.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice is an error instead of the last one silently winning."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class ParamRange(StrictModel):
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
        check_shift(self.field, self.op, self.low)
        check_shift(self.field, self.op, self.high)
        return self


class PhysicsShift(StrictModel):
    """One fixed physical change of a target world (``value`` scales or is added)."""

    field: PhysicsField
    names: list[str] | Literal["all"] = "all"
    op: Literal["scale", "add"] = "scale"
    value: float

    @model_validator(mode="after")
    def _check(self) -> PhysicsShift:
        check_shift(self.field, self.op, self.value)
        return self


class Pushes(StrictModel):
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


class Sampling(StrictModel):
    """How the batched sim chooses each training episode's world (see :mod:`sim2real.worlds.sampling`)."""

    nominal: float = Field(default=0.0, ge=0.0, le=1.0, description=(
        "share of episodes in the nominal world (no shift, no effects, no pushes): keeps the policy competent there"))
    hard: float = Field(default=0.0, ge=0.0, le=1.0, description=(
        "share of episodes replaying the draws of one of the worst `quantile` of the last `memory` episodes (EPOpt)"))
    quantile: float = Field(default=0.2, gt=0.0, le=1.0, description="the hard set: this fraction of remembered episodes")
    memory: int = Field(default=2000, ge=1, description="episodes remembered (the most recent)")
    warmup: int = Field(default=200, ge=1, description="episodes remembered before the first replay")

    @model_validator(mode="after")
    def _check(self) -> Sampling:
        if self.nominal + self.hard > 1.0:
            raise ValueError(f"nominal ({self.nominal}) + hard ({self.hard}) is above 1: they are shares of episodes")
        if self.warmup > self.memory:
            raise ValueError(f"warmup ({self.warmup}) must be <= memory ({self.memory})")
        return self


class Randomization(StrictModel):
    """How the sim world is randomised during pretraining."""

    when: Literal["reset", "once", "interval"] = "reset"
    interval_episodes: int = Field(default=10, ge=1, description="resample every N episodes (when: interval)")
    params: list[ParamRange] = []
    pushes: Pushes | None = None
    effects: Effects | None = Field(default=None, description="effect ranges drawn per episode (latency, noise, motors)")
    task_variant: str | None = Field(default=None, description=(
        "the reward the sim world trains for: an entry under task_variants (default: the task's own); "
        "a calibration of a target with a task variant sets it, so the calibrated sim trains the target's task"))
    sampling: Sampling | None = Field(default=None, description=(
        "mix nominal and replayed hard episodes into the uniform draws (training on the batched stepper only)"))

    @model_validator(mode="after")
    def _check(self) -> Randomization:
        if self.sampling is not None and self.when != "reset":
            raise ValueError(f"sampling chooses a world at every reset; it needs when: reset (got when: {self.when})")
        return self


def _check_range(name: str, value, lo: float, hi: float | None = None, hi_open: bool = False,
                 lo_open: bool = False) -> None:
    """A fixed value or a ``(low, high)`` pair, every number inside the allowed interval."""
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    if isinstance(value, (tuple, list)) and values[0] > values[1]:
        raise ValueError(f"{name}: low ({values[0]}) must be <= high ({values[1]})")
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"{name}: {v} is not a finite number")
        if v < lo or (lo_open and v == lo) or (hi is not None and (v > hi or (hi_open and v == hi))):
            left, right = ("(" if lo_open else "["), (")" if hi_open else "]")
            raise ValueError(f"{name}: {v} is outside {left}{lo}, {'inf' if hi is None else hi}{right}")


# A fixed value (target worlds) or a [low, high] range drawn once per episode (the sim world's
# effect randomisation). The same models serve both, so an effect means one thing everywhere.
Range = float | tuple[float, float]
IntRange = int | tuple[int, int]


class ObservationNoise(StrictModel):
    std: Range = Field(default=0.0, description="Gaussian noise std per step, in observation units")
    bias_std: Range = Field(default=0.0, description="std of a constant offset drawn per episode")

    @model_validator(mode="after")
    def _check(self) -> ObservationNoise:
        _check_range("std", self.std, 0.0)
        _check_range("bias_std", self.bias_std, 0.0)
        return self


class SensorFaults(StrictModel):
    drop_prob: Range = Field(default=0.0, description="per step and sensor: reads 0")
    stuck_prob: Range = Field(default=0.0, description="per episode and sensor: holds its first value")

    @model_validator(mode="after")
    def _check(self) -> SensorFaults:
        _check_range("drop_prob", self.drop_prob, 0.0, 1.0)
        _check_range("stuck_prob", self.stuck_prob, 0.0, 1.0)
        return self


class Motor(StrictModel):
    strength: Range = Field(default=1.0, description="scale on every command (0.8: the motor gives 80%)")
    saturation: Range = Field(default=1.0, description="fraction of the action bound the motor reaches")
    dead_zone: Range = Field(default=0.0, description="fraction of the action bound below which nothing moves")

    @model_validator(mode="after")
    def _check(self) -> Motor:
        _check_range("strength", self.strength, 0.0, 2.0, lo_open=True)
        _check_range("saturation", self.saturation, 0.0, 1.0, lo_open=True)
        _check_range("dead_zone", self.dead_zone, 0.0, 1.0, hi_open=True)
        return self


class Effects(StrictModel):
    """What a real world adds beyond physics (each one wrapper, composed in one order: worlds.effects.EFFECT_ORDER)."""

    obs_noise: ObservationNoise | None = None
    action_noise_std: Range = Field(default=0.0, description="in units of the action bound")
    action_delay: IntRange = Field(default=0, description="steps between the policy's command and the motor")
    obs_delay: IntRange = Field(default=0, description="steps between the sensor and the policy")
    sensors: SensorFaults | None = None
    motor: Motor | None = None

    @model_validator(mode="after")
    def _check(self) -> Effects:
        _check_range("action_noise_std", self.action_noise_std, 0.0)
        _check_range("action_delay", self.action_delay, 0, 50)
        _check_range("obs_delay", self.obs_delay, 0, 50)
        return self


class PolicyInputs(StrictModel):
    """What the policy sees besides the observation: part of the policy, recorded in its run folder.

    ``last_action`` appends the previous command (so latency becomes observable);
    ``history: k`` appends the k previous observations and commands (dynamics become observable).
    """

    last_action: bool = False
    history: int = Field(default=0, ge=0, le=16)

    @property
    def active(self) -> bool:
        return self.last_action or self.history > 0


class TaskVariant(StrictModel):
    """A change of reward or goal that keeps the observation and action spaces."""

    kind: Literal["backwards", "target_speed"]
    target_speed: float | None = Field(default=None, description="m/s, for kind target_speed")

    @model_validator(mode="after")
    def _check(self) -> TaskVariant:
        if self.kind == "target_speed" and self.target_speed is None:
            raise ValueError("kind 'target_speed' needs a target_speed (m/s)")
        return self


class TargetWorld(StrictModel):
    """A fixed, seeded shift of the sim that stands in for the real robot."""

    description: str = ""
    physics: list[PhysicsShift] = []
    effects: Effects = Effects()
    pushes: Pushes | None = None
    task_variant: str | None = Field(default=None, description="name of an entry under task_variants")


class Pretraining(StrictModel):
    """Algorithm and tuned hyperparameters (RL Zoo values, written out for -v5)."""

    algo: Literal["ppo", "sac", "td3"]
    total_steps: int = Field(gt=0)
    n_envs: int = Field(default=1, ge=1)
    normalize: bool = False
    hyperparams: dict[str, Any] = {}
    policy_kwargs: dict[str, Any] = {}
    source: str = Field(default="", description="where the hyperparameters come from")


class Budgets(StrictModel):
    small: int = Field(gt=0)
    large: int = Field(gt=0)
    eval_interval: int = Field(gt=0, description="target steps between evaluations")
    eval_episodes: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Budgets:
        if self.small > self.large:
            raise ValueError(f"small ({self.small}) must be <= large ({self.large})")
        return self


class Transfer(StrictModel):
    """Hyperparameters used on the target (overrides on top of pretraining's)."""

    hyperparams: dict[str, Any] = {}


class Robustness(StrictModel):
    """The physical parameter a study sweeps for its robustness plot (EPOpt's Hopper torso mass)."""

    param: str = Field(description="FIELD/NAME, e.g. body_mass/torso")
    range: tuple[float, float]
    points: int = Field(default=7, ge=2)

    @model_validator(mode="after")
    def _check(self) -> Robustness:
        if not 0 < self.range[0] <= self.range[1]:
            raise ValueError(f"range must be 0 < low <= high (scales of the nominal value), got {list(self.range)}")
        return self


class Calibration(StrictModel):
    """How a calibration (``sim2real calibrate``) reads the simulator state from an observation.

    A robot reports observations, not simulator internals: the state a recorded window starts from
    is rebuilt from the observation, ``[qpos[qpos_skip:], qvel]`` for the MuJoCo tasks (the skipped
    x position changes nothing in the dynamics), with the skipped entries at 0.
    """

    qpos_skip: int = Field(default=0, ge=0, description="leading qpos entries the observation leaves out")
    qvel_clip: float | None = Field(default=None, gt=0, description="the env clips observed velocities at this bound")
    params: list[str] = Field(default_factory=list, description="what `calibrate` fits by default: FIELD/NAME|all")
    window: int = Field(default=20, ge=1, le=200, description="control steps per shooting window (see calibrate)")
    episode_offsets: bool = Field(default=True, description="also fit each episode's offset of the position sensors")
    start_smoothing: int = Field(default=0, ge=0, le=50, description=(
        "window start positions: 0 = the mean of the 3 recorded samples around the start (the sample itself at an "
        "episode's first step); K > 0 = the mean of up to 2K+1 samples, each carried to the start by integrating its "
        "own recorded velocity (K=1 is not the same as 0)"))


class TaskSpec(StrictModel):
    name: str
    env_id: str
    max_episode_steps: int = Field(gt=0)
    env_kwargs: dict[str, Any] = {}
    pretrain: Pretraining
    transfer: Transfer = Transfer()
    randomization: Randomization = Randomization()
    observation: PolicyInputs = PolicyInputs()
    task_variants: dict[str, TaskVariant] = {}
    targets: dict[str, TargetWorld]
    budgets: Budgets
    solved_return: float | None = Field(default=None, description="return in the nominal sim that counts as competent")
    robustness: Robustness | None = None
    calibration: Calibration | None = None
    path: str = ""

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if "nominal" not in self.targets:
            raise ValueError("targets must include 'nominal' (the unshifted world)")
        named = {f"targets.{name}": target.task_variant for name, target in self.targets.items()}
        for where, variant in {**named, "randomization": self.randomization.task_variant}.items():
            if variant is not None and variant not in self.task_variants:
                allowed = sorted(self.task_variants) or ["(none defined)"]
                raise ValueError(f"{where}.task_variant: unknown variant {variant!r}; allowed: {', '.join(allowed)}")
        return self

    def world_variant(self, world: str) -> TaskVariant | None:
        """The reward change of ``world`` (``"sim"``: the randomised sim world), or ``None`` for the task's own."""
        name = self.randomization.task_variant if world == "sim" else self.target(world).task_variant
        return None if name is None else self.task_variants[name]

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


def _is_type_name(part) -> bool:
    return isinstance(part, str) and (part in ("float", "int", "str", "bool") or part.startswith(("tuple[", "list[")))


def format_validation_error(path: Path, err: ValidationError, what: str = "task spec") -> str:
    """A pydantic error as lines of ``field: what is wrong (got value)`` under the file's name."""
    lines = [f"{path}: invalid {what}"]
    seen: set[str] = set()
    for e in err.errors():
        # A union field (a value or a [low, high] range) reports once per member type: keep the first.
        parts = [str(p) for p in e["loc"] if not _is_type_name(p)]
        loc = ".".join(parts) or "(top level)"
        if loc in seen:
            continue
        seen.add(loc)
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        if e["type"] == "literal_error":
            msg = f"must be one of {e['ctx']['expected']}"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def available_tasks(envs_dir: Path = ENVS_DIR) -> list[str]:
    return sorted(p.stem for p in envs_dir.glob("*.yaml"))


def _resolve_xml(raw: dict, path: Path) -> None:
    """``env_kwargs.xml_file`` relative to the spec file (so a spec and its MJCF travel together, e.g. in a wheel)."""
    kwargs = raw.get("env_kwargs")
    if not isinstance(kwargs, dict) or not isinstance(kwargs.get("xml_file"), str):
        return
    xml = Path(kwargs["xml_file"])
    if not xml.is_absolute():
        xml = (path.parent / xml).resolve()
    if not xml.exists():
        raise SpecError(f"{path}: env_kwargs.xml_file: {kwargs['xml_file']!r} does not exist "
                        f"(looked for {xml}; a relative path is relative to the spec file)")
    raw["env_kwargs"] = {**kwargs, "xml_file": str(xml)}


def read_yaml_mapping(path: str | Path, what: str = "task spec") -> dict:
    """A YAML file that must hold a mapping (duplicate keys are an error), or a SpecError naming the file."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: malformed YAML: {exc}") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a {what} is a mapping of fields, got {type(raw).__name__}")
    return raw


def load_spec_file(path: str | Path) -> TaskSpec:
    """Load and validate one spec file."""
    path = Path(path)
    raw = read_yaml_mapping(path)
    raw.setdefault("name", path.stem)
    _resolve_xml(raw, path)
    try:
        return TaskSpec(**raw, path=str(path))
    except ValidationError as exc:
        raise SpecError(format_validation_error(path, exc)) from None


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
