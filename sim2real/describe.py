"""``sim2real envs``: tables of tasks, their randomised parameters and their target worlds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from rich.table import Table

from sim2real.fields import FIELDS
from sim2real.progress import console as make_console
from sim2real.spec import SpecError, available_tasks, load_spec
from sim2real.worlds.make import sim_env_id, target_env_id
from sim2real.worlds.physics import PhysicsModel

console = make_console()


def list_tasks() -> None:
    table = Table(title="sim2real tasks (envs/*.yaml)")
    for col in ("task", "Gymnasium id", "pretraining", "randomised", "target worlds", "budgets (small/large)"):
        table.add_column(col, overflow="fold")
    for task in available_tasks():
        try:
            s = load_spec(task)
        except SpecError as exc:
            table.add_row(task, "[red]invalid spec[/red]", str(exc).splitlines()[-1], "", "", "")
            continue
        table.add_row(
            task, s.env_id, f"{s.pretrain.algo.upper()} {s.pretrain.total_steps:,} steps",
            str(len(s.randomization.params)), ", ".join(s.targets),
            f"{s.budgets.small:,} / {s.budgets.large:,}",
        )
    console.print(table)
    console.print("Details: [bold]sim2real envs TASK[/bold]")


def _fmt(v) -> str:
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)


def _nominal(physics: PhysicsModel, field: str, slot) -> str:
    if FIELDS[field].offset_only:
        return "offset 0"
    values = np.ravel(physics.nominal[field][slot])
    return ", ".join(_fmt(x) for x in values)


def _shifted(op: str, nominal: str, value: float) -> str:
    try:
        base = float(nominal)
    except ValueError:
        return f"{op} {value:g}"
    return _fmt(base * value if op == "scale" else base + value)


def describe_task(task: str) -> None:
    spec = load_spec(task)
    env = gym.make(spec.env_id, disable_env_checker=True)
    physics = PhysicsModel(env.unwrapped.model)
    console.print(f"[bold]{spec.name}[/bold]  {spec.env_id}, episodes of {spec.max_episode_steps} steps  ({spec.path})")
    console.print(f"sim world: [cyan]{sim_env_id(spec.name)}[/cyan]  resampled at: {spec.randomization.when}")

    t = Table(title="randomised in pretraining")
    for col in ("parameter", "element", "nominal", "op", "range", "distribution", "sampled range"):
        t.add_column(col, overflow="fold")
    for p in spec.randomization.params:
        labels, slots = physics.resolve(p.field, p.names)
        for label, slot in zip(labels, slots):
            nom = _nominal(physics, p.field, slot)
            sampled = f"{_shifted(p.op, nom, p.low)} .. {_shifted(p.op, nom, p.high)}"
            t.add_row(p.field, label, nom, p.op, f"{p.low:g} .. {p.high:g}", p.distribution, sampled)
    if spec.randomization.pushes:
        pu = spec.randomization.pushes
        t.add_row("push", pu.body, "0 N", "force", f"{pu.force[0]:g} .. {pu.force[1]:g} N",
                  f"every {pu.interval_steps[0]}-{pu.interval_steps[1]} steps", f"for {pu.duration_steps} steps")
    fx = spec.randomization.effects
    if fx is not None:
        for name, value in fx.model_dump(exclude_defaults=True).items():
            items = value.items() if isinstance(value, dict) else [("", value)]
            for sub, v in items:
                shown = f"{v[0]:g} .. {v[1]:g}" if isinstance(v, (list, tuple)) else f"{v:g}"
                t.add_row("effect", f"{name}{'.' + sub if sub else ''}", "-", "per episode", shown, "uniform", shown)
    console.print(t)
    if any(p.field == "geom_friction" and not p.shared and len(physics.resolve(p.field, p.names)[0]) > 1
           for p in spec.randomization.params):
        # MuJoCo's contact uses the larger of the two geoms' frictions: independent draws per geom make a
        # contact's scale the max of two draws, so a world that scales every geom down sits in its tail.
        console.print("geom_friction is drawn per geom; a contact takes the larger of its two geoms' frictions, "
                      "so where both geoms are drawn, the contact's scale is the max of two draws and a world that "
                      "makes every geom more slippery lies in the tail of what training sees (shared: true: one "
                      "draw for all)")
    r = spec.randomization
    if r.sampling is not None:
        sa = r.sampling
        console.print(f"episodes (batched sim): {sa.nominal:.0%} nominal world, {sa.hard:.0%} replaying one of the worst "
                      f"{sa.quantile:.0%} of the last {sa.memory:,} (after {sa.warmup:,}), the rest drawn as above")
    if r.task_variant is not None:
        console.print(f"sim world's reward: task variant {r.task_variant!r} ({spec.world_variant('sim').kind})")
    inputs = spec.observation
    console.print("policy inputs: observation"
                  + (f" + last {inputs.history} observations and commands" if inputs.history
                     else " + last command" if inputs.last_action else " only"))

    w = Table(title="target worlds")
    for col in ("world", "Gymnasium id", "physics (nominal -> shifted)", "effects", "task"):
        w.add_column(col, overflow="fold")
    for name, target in spec.targets.items():
        changes = []
        for s in target.physics:
            labels, slots = physics.resolve(s.field, s.names)
            for label, slot in zip(labels, slots):
                nom = _nominal(physics, s.field, slot)
                changes.append(f"{s.field}/{label}: {nom} -> {_shifted(s.op, nom, s.value)}")
        fx = target.effects.model_dump(exclude_defaults=True)
        effects = ", ".join(f"{k}={v}" for k, v in fx.items()) or "-"
        variant = target.task_variant or "same"
        w.add_row(name, target_env_id(spec.name, name), "\n".join(changes) or "-", effects, variant)
    console.print(w)
    env.close()
