"""Building the worlds: ``make_sim_env`` (randomised sim), ``make_target_env`` (shifted world), registration.

Wrapper order, innermost first (the order the action travels backwards, the
observation forwards)::

    Gymnasium MuJoCo env (with its TimeLimit)
    -> physics: DomainRandomization (sim) or FixedPhysicsShift (target)
    -> RandomPushes                      external forces on a body
    -> task variant                      reward rewrite ("different task", targets only)
    -> effects, in worlds.effects.EFFECT_ORDER (motor, action noise, sensor faults,
       observation noise, observation delay, action delay): fixed on a target,
       drawn per episode in the sim world
    -> [the policy's inputs: last action / history -- added by the policy, not the world]

Observation normalisation is not here: it lives at the VecEnv (``VecNormalize``).
Every randomised sim world is registered as ``sim2real/<Task>-DR-v0``, every
target world as ``sim2real/<Task>-<world>-v0`` (``-nominal-v0`` is the plain sim).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym

from sim2real.spec import SpecError, TaskSpec, available_tasks, load_spec
from sim2real.worlds.effects import apply_effects
from sim2real.worlds.physics import DomainRandomization, FixedPhysicsShift, RandomPushes
from sim2real.worlds.variants import apply_task_variant

NAMESPACE = "sim2real"


def _spec(task: str | TaskSpec) -> TaskSpec:
    return task if isinstance(task, TaskSpec) else load_spec(task)


def _base_env(spec: TaskSpec, render_mode: str | None = None, **env_kwargs: Any) -> gym.Env:
    kwargs = {**spec.env_kwargs, **env_kwargs}
    try:
        # Build the env without Gymnasium's checker wrappers: the outer gym.make (if any) adds its own.
        return gym.make(
            spec.env_id,
            max_episode_steps=spec.max_episode_steps,
            render_mode=render_mode,
            disable_env_checker=True,
            **kwargs,
        )
    except gym.error.Error as exc:
        raise SpecError(f"{spec.path}: env_id {spec.env_id!r}: {exc}") from None
    except TypeError as exc:  # an env_kwargs key the env does not take
        raise SpecError(f"{spec.path}: env_kwargs {kwargs}: {exc}") from None


def _with_context(spec: TaskSpec, where: str, exc: SpecError) -> SpecError:
    return SpecError(f"{spec.path}: {where}{exc}")


def make_sim_env(
    task: str | TaskSpec,
    randomize: bool = True,
    render_mode: str | None = None,
    **env_kwargs: Any,
) -> gym.Env:
    """The task's sim world: the nominal MuJoCo env plus the spec's randomisation.

    Args:
        task: a task name (``"hopper"``), a spec path, or a loaded :class:`TaskSpec`.
        randomize: ``False`` gives the nominal sim (the no-randomisation baseline).
        render_mode: passed to Gymnasium.

    Example:
        >>> env = make_sim_env("inverted_pendulum")
        >>> _, info = env.reset(seed=1)
        >>> sorted(info["randomization"])[:2]
        ['actuator_gear/slide', 'body_mass/cart']
    """
    spec = _spec(task)
    env = _base_env(spec, render_mode, **env_kwargs)
    variant = spec.world_variant("sim")
    if variant is not None:  # the sim world's task, randomised or not (a calibrated target's reward)
        env = apply_task_variant(env, variant)
    if not randomize:
        return env
    r = spec.randomization
    try:
        env = DomainRandomization(env, list(r.params), when=r.when, interval_episodes=r.interval_episodes)
        if r.pushes is not None:
            env = RandomPushes(env, r.pushes)
    except SpecError as exc:
        raise _with_context(spec, "", exc) from None
    return apply_effects(env, r.effects) if r.effects is not None else env


def make_target_env(task: str | TaskSpec, world: str = "real", render_mode: str | None = None, **env_kwargs: Any) -> gym.Env:
    """A target world of the task: a fixed physics shift, optional pushes, a task variant and real-world effects.

    The shift is deterministic; the effects' noise comes from the env's generator,
    so ``reset(seed=s)`` reproduces an episode exactly.

    Example:
        >>> env = make_target_env("inverted_pendulum", "real")
        >>> _, info = env.reset(seed=0)
        >>> info["physics_shift"]["body_mass/pole"]
        1.6
    """
    spec = _spec(task)
    target = spec.target(world)
    env = _base_env(spec, render_mode, **env_kwargs)
    try:
        env = FixedPhysicsShift(env, list(target.physics))
        if target.pushes is not None:
            env = RandomPushes(env, target.pushes)
    except SpecError as exc:
        raise _with_context(spec, f"targets.{world}.", exc) from None
    variant = spec.world_variant(world)
    if variant is not None:
        env = apply_task_variant(env, variant)
    return apply_effects(env, target.effects)


def camel(task: str) -> str:
    """``half_cheetah`` -> ``HalfCheetah`` (the Gymnasium id style)."""
    return "".join(part.capitalize() for part in task.split("_"))


def sim_env_id(task: str) -> str:
    return f"{NAMESPACE}/{camel(task)}-DR-v0"


def target_env_id(task: str, world: str) -> str:
    return f"{NAMESPACE}/{camel(task)}-{world}-v0"


# MuJoCo warnings that say nothing to a sim2real user: Gymnasium's half_cheetah.xml sets the compiler attribute
# `settotalmass`, which MuJoCo 4 deprecates, printed (and written to MUJOCO_LOG.TXT in the working directory)
# every time the env is built, in every process.
KNOWN_MUJOCO_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)


def route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings through Python's ``warnings`` (filterable, no MUJOCO_LOG.TXT), dropping the known
    ones above. A handler the user installed first is left alone."""
    import warnings

    import mujoco

    if mujoco.get_mju_user_warning() is not None:
        return

    def handler(message: str) -> None:
        if not message.startswith(KNOWN_MUJOCO_WARNINGS):
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    mujoco.set_mju_user_warning(handler)


def register_envs() -> None:
    """Register every task's sim worlds and target worlds as Gymnasium ids (idempotent)."""
    for task in available_tasks():
        try:
            spec = load_spec(task)
        except SpecError:
            continue  # a broken spec must not break `import sim2real`; `sim2real envs` reports it
        ids = {sim_env_id(task): ("sim2real.worlds.make:make_sim_env", {"task": task})}
        for world in spec.targets:
            ids[target_env_id(task, world)] = ("sim2real.worlds.make:make_target_env", {"task": task, "world": world})
        for env_id, (entry_point, kwargs) in ids.items():
            if env_id not in gym.registry:
                # TimeLimit is already inside (from the base env), so none is added here.
                gym.register(env_id, entry_point=entry_point, kwargs=kwargs)


class EnvFactory:
    """A picklable env thunk (SubprocVecEnv needs one)."""

    def __init__(self, fn: Callable[..., gym.Env], *args: Any, **kwargs: Any):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self) -> gym.Env:
        return self.fn(*self.args, **self.kwargs)
