"""Physics randomisation: values change within bounds, nominal restored, reproducible from a seed."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from sim2real.spec import ParamRange, PhysicsShift, Pushes
from sim2real.worlds.physics import (
    DomainRandomization,
    FixedPhysicsShift,
    PhysicsModel,
    PhysicsSampler,
    RandomPushes,
    element_names,
)

FIELDS = [
    ("body_mass", "torso", lambda m: m.body_mass[1]),
    ("geom_friction", "foot_geom", lambda m: m.geom_friction[4, 0]),
    ("dof_damping", "leg_joint", lambda m: m.dof_damping[4]),
    ("dof_armature", "leg_joint", lambda m: m.dof_armature[4]),
    ("dof_frictionloss", "leg_joint", lambda m: m.dof_frictionloss[4]),
    ("actuator_gear", "leg_joint", lambda m: m.actuator_gear[1, 0]),
]


def hopper():
    return gym.make("Hopper-v5", disable_env_checker=True)


@pytest.mark.parametrize(("field", "name", "read"), FIELDS)
@pytest.mark.parametrize("distribution", ["uniform", "loguniform", "normal"])
def test_scale_stays_in_bounds_and_restores(field, name, read, distribution):
    env = hopper()
    model = env.unwrapped.model
    physics = PhysicsModel(model)
    nominal = read(model)
    sampler = PhysicsSampler(physics, [ParamRange(field=field, names=[name], low=0.5, high=2.0, distribution=distribution)])
    rng = np.random.default_rng(0)
    values = []
    for _ in range(50):
        drawn = sampler.sample_and_apply(rng)[f"{field}/{name}"]
        assert 0.5 <= drawn <= 2.0
        assert read(model) == pytest.approx(nominal * drawn) if nominal else read(model) == 0
        values.append(drawn)
    assert np.std(values) > 0.05  # it really varies
    physics.restore()
    assert read(model) == nominal


def test_mass_scaling_scales_inertia_too():
    env = hopper()
    model = env.unwrapped.model
    inertia = model.body_inertia[1].copy()
    physics = PhysicsModel(model)
    physics.write("body_mass", 1, "scale", 2.0)
    np.testing.assert_allclose(model.body_inertia[1], 2.0 * inertia)


def test_add_op_gravity_and_com():
    env = hopper()
    model = env.unwrapped.model
    physics = PhysicsModel(model)
    sampler = PhysicsSampler(physics, [
        ParamRange(field="gravity", names=["z"], op="add", low=-1.0, high=1.0),
        ParamRange(field="body_com", names=["torso"], op="add", low=-0.02, high=0.02),
    ])
    drawn = sampler.sample_and_apply(np.random.default_rng(1))
    assert model.opt.gravity[2] == pytest.approx(-9.81 + drawn["gravity/z"])
    offset = model.body_ipos[1] - physics.nominal["body_com"][1]
    np.testing.assert_allclose(offset, [drawn[f"body_com/torso/{a}"] for a in "xyz"])
    assert np.all(np.abs(offset) <= 0.02)


@pytest.mark.parametrize("op", ["scale", "add"])
def test_sampler_fast_path_writes_what_the_checked_path_writes(op):
    # The sampler precomputes scalar writes; they must leave the model exactly as PhysicsModel.write would.
    lo, hi = (0.5, 2.0) if op == "scale" else (0.01, 0.3)
    fields = ["body_mass", "geom_friction", "dof_damping", "dof_armature", "dof_frictionloss", "actuator_gear", "gravity"]
    params = [ParamRange(field=f, names="all", op=op, low=lo, high=hi, distribution=d)
              for f, d in zip(fields, ["uniform", "loguniform", "normal"] * 3)]
    params += [ParamRange(field="body_com", names="all", op="add", low=-0.02, high=0.02),
               ParamRange(field="dof_damping", names=["foot_joint", "leg_joint"], op=op, low=lo, high=hi, shared=True)]
    physics = PhysicsModel(hopper().unwrapped.model)
    sampler = PhysicsSampler(physics, params)
    rng = np.random.default_rng(7)
    for _ in range(3):
        drawn = sampler.sample_and_apply(rng)
        reference = PhysicsModel(hopper().unwrapped.model)
        for p in params:
            labels, slots = reference.resolve(p.field, p.names)
            for label, slot in zip(labels, slots):
                value = ([drawn[f"body_com/{label}/{a}"] for a in "xyz"] if p.field == "body_com"
                         else drawn[f"{p.field}/{label}"])
                reference.write(p.field, slot, p.op, value)
        for name, array in physics.arrays.items():
            np.testing.assert_allclose(array, reference.arrays[name], rtol=1e-12, atol=1e-15, err_msg=name)
    assert drawn["dof_damping/foot_joint"] == drawn["dof_damping/leg_joint"]


def test_all_skips_world_body_and_shared_draws_one_value():
    env = hopper()
    physics = PhysicsModel(env.unwrapped.model)
    sampler = PhysicsSampler(physics, [ParamRange(field="body_mass", names="all", low=0.5, high=2.0, shared=True)])
    drawn = sampler.sample_and_apply(np.random.default_rng(0))
    assert set(drawn) == {"body_mass/torso", "body_mass/thigh", "body_mass/leg", "body_mass/foot"}
    assert len(set(drawn.values())) == 1


def test_unnamed_actuators_are_called_by_their_joint():
    assert element_names(hopper().unwrapped.model, "actuator_gear") == ["thigh_joint", "leg_joint", "foot_joint"]


def test_wrapper_resamples_every_reset_and_reports_in_info():
    env = DomainRandomization(hopper(), [ParamRange(field="body_mass", names=["torso"], low=0.5, high=2.0)])
    _, info1 = env.reset(seed=0)
    _, _, _, _, step_info = env.step(env.action_space.sample())
    _, info2 = env.reset()
    assert info1["randomization"] == step_info["randomization"]
    assert info1["randomization"] != info2["randomization"]
    assert env.unwrapped.model.body_mass[1] == pytest.approx(
        env.physics.nominal["body_mass"][1] * info2["randomization"]["body_mass/torso"])


def test_same_seed_same_sequence_of_worlds():
    def sequence(seed):
        env = DomainRandomization(hopper(), [ParamRange(field="geom_friction", names="all", low=0.5, high=1.5)])
        out = [env.reset(seed=seed)[1]["randomization"]]
        out += [env.reset()[1]["randomization"] for _ in range(4)]
        return out

    assert sequence(3) == sequence(3)
    assert sequence(3) != sequence(4)


@pytest.mark.parametrize(("when", "expected_distinct"), [("once", 1), ("interval", 2), ("reset", 6)])
def test_when_to_resample(when, expected_distinct):
    env = DomainRandomization(hopper(), [ParamRange(field="body_mass", names=["torso"], low=0.5, high=2.0)],
                              when=when, interval_episodes=3)
    draws = [env.reset(seed=0)[1]["randomization"]["body_mass/torso"]]
    draws += [env.reset()[1]["randomization"]["body_mass/torso"] for _ in range(5)]
    assert len(set(draws)) == expected_distinct


def test_fixed_shift_is_exact_and_survives_reset():
    env = FixedPhysicsShift(hopper(), [PhysicsShift(field="actuator_gear", names="all", value=0.5)])
    env.reset(seed=0)
    env.reset()
    np.testing.assert_allclose(env.unwrapped.model.actuator_gear[:, 0], 100.0)


class ForceSeen(gym.Wrapper):
    """Records the torso's external x-force the physics sees at each step."""

    def __init__(self, env):
        super().__init__(env)
        self.seen = []

    def step(self, action):
        self.seen.append(float(self.env.unwrapped.data.xfrc_applied[1, 0]))
        return self.env.step(action)


def test_pushes_apply_force_for_duration_then_clear():
    inner = ForceSeen(hopper())
    env = RandomPushes(inner, Pushes(body="torso", force=(10.0, 20.0), duration_steps=3, interval_steps=(5, 5)))
    env.reset(seed=0)
    forces = [env.step(np.zeros(3))[4]["push_force"] for _ in range(12)]
    assert inner.seen == forces  # the physics gets exactly the reported force, and none between pushes
    # A push starts on every 5th step counted from the end of the previous one and lasts 3 steps.
    pushed_at = [i for i, f in enumerate(forces) if f != 0.0]
    assert pushed_at == [4, 5, 6, 11]
    assert all(10.0 <= abs(forces[i]) <= 20.0 for i in pushed_at)
    assert forces[4] == forces[5] == forces[6]  # one push keeps its force
    env.step(np.zeros(3))
    env.step(np.zeros(3))
    env.step(np.zeros(3))
    assert env.unwrapped.data.xfrc_applied[1, 0] == 0.0  # cleared after the push
