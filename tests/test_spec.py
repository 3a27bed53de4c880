"""Spec loading and the errors a user sees for each kind of bad input."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sim2real import make_sim_env, make_target_env
from sim2real.spec import SpecError, available_tasks, load_spec, load_spec_file
from tests.conftest import DATA

REQUIRED_TASKS = {"inverted_pendulum", "hopper", "half_cheetah", "walker2d"}

GOOD = """
env_id: InvertedPendulum-v5
max_episode_steps: 100
pretrain: {algo: ppo, total_steps: 1000}
randomization:
  params:
    - {field: body_mass, names: [pole], op: scale, low: 0.5, high: 1.5}
targets:
  nominal: {}
  real:
    physics: [{field: body_mass, names: [pole], op: scale, value: 2.0}]
budgets: {small: 100, large: 1000, eval_interval: 50}
"""


def write(tmp_path, text, name="task.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_specs_load_and_cover_the_required_tasks():
    assert REQUIRED_TASKS <= set(available_tasks())
    for task in available_tasks():
        spec = load_spec(task)
        assert {"nominal", "real"} <= set(spec.targets)
        assert spec.budgets.small < spec.budgets.large


@pytest.mark.parametrize("task", ["hopper", "half_cheetah", "walker2d"])
def test_locomotion_tasks_have_inside_outside_and_different_task_worlds(task):
    spec = load_spec(task)
    assert any(t.task_variant for t in spec.targets.values()), "needs a different-task target world"
    assert len([t for t in spec.targets.values() if t.physics and not t.effects.model_dump(exclude_defaults=True)]) >= 2


def test_good_spec_loads(tmp_path):
    spec = load_spec_file(write(tmp_path, GOOD))
    assert spec.name == "task"
    assert spec.target("real").physics[0].value == 2.0


def test_unknown_task_lists_valid_names():
    with pytest.raises(SpecError, match=r"unknown task 'hoper'.*allowed: .*hopper"):
        load_spec("hoper")


def test_malformed_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "env_id: [unclosed\n")
    with pytest.raises(SpecError, match=rf"{path}: malformed YAML"):
        load_spec_file(path)


def test_min_greater_than_max_names_field_and_values(tmp_path):
    path = write(tmp_path, GOOD.replace("low: 0.5, high: 1.5", "low: 1.5, high: 0.5"))
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    msg = str(err.value)
    assert str(path) in msg and "randomization.params.0" in msg and "low (1.5) must be <= high (0.5)" in msg


@pytest.mark.parametrize("field", ["body_mass", "geom_friction", "actuator_gear"])
def test_non_positive_scale_is_rejected(tmp_path, field):
    path = write(tmp_path, GOOD.replace("field: body_mass, names: [pole], op: scale, low: 0.5", f"field: {field}, names: all, op: scale, low: -0.5"))
    with pytest.raises(SpecError, match=rf"would make {field} non-positive"):
        load_spec_file(path)


def test_additive_shift_that_makes_mass_negative_is_rejected_at_build(tmp_path):
    path = write(tmp_path, GOOD.replace("op: scale, low: 0.5, high: 1.5", "op: add, low: -100, high: 1"))
    with pytest.raises(SpecError, match=r"body_mass: the shift makes element .* non-positive"):
        make_sim_env(str(path))


def test_unknown_body_lists_valid_bodies(tmp_path):
    path = write(tmp_path, GOOD.replace("names: [pole], op: scale, low", "names: [pol], op: scale, low"))
    with pytest.raises(SpecError) as err:
        make_sim_env(str(path))
    msg = str(err.value)
    assert str(path) in msg and "unknown name(s) ['pol']" in msg and "valid bodies: world, cart, pole" in msg


@pytest.mark.parametrize(
    ("field", "bad", "valid"),
    [("geom_friction", "floor", "rail, cart, cpole"), ("dof_damping", "knee", "slider, hinge"), ("actuator_gear", "motor", "slide")],
)
def test_unknown_geom_joint_actuator_list_valid_names(tmp_path, field, bad, valid):
    path = write(tmp_path, GOOD.replace("field: body_mass, names: [pole]", f"field: {field}, names: [{bad}]"))
    with pytest.raises(SpecError, match=rf"unknown name\(s\) \['{bad}'\]; valid .*: {valid}"):
        make_sim_env(str(path))


def test_unknown_target_world_lists_worlds(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(SpecError, match=r"unknown target world 'moon'; allowed: nominal, real"):
        make_target_env(str(path), "moon")


def test_unknown_field_and_bad_choice_are_reported(tmp_path):
    path = write(tmp_path, GOOD.replace("field: body_mass", "field: body_mas").replace("max_episode_steps", "max_episode_step"))
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    msg = str(err.value)
    assert "randomization.params.0.field: must be one of" in msg and "'body_mas'" in msg
    assert "max_episode_step: Extra inputs are not permitted" in msg


def test_unknown_task_variant_is_reported(tmp_path):
    path = write(tmp_path, GOOD.replace("  real:\n", "  real:\n    task_variant: fly\n"))
    with pytest.raises(SpecError, match=r"task_variant: unknown variant 'fly'"):
        load_spec_file(path)
    path = write(tmp_path, GOOD.replace("randomization:\n", "randomization:\n  task_variant: fly\n"))
    with pytest.raises(SpecError, match=r"randomization.task_variant: unknown variant 'fly'; allowed: \(none defined\)"):
        load_spec_file(path)


def test_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec_file(tmp_path / "absent.yaml")


def test_xml_file_resolves_relative_to_the_spec_file(tmp_path):
    import shutil

    import gymnasium as gym
    import yaml

    src = Path(gym.envs.mujoco.__file__).parent / "assets" / "inverted_pendulum.xml"
    (tmp_path / "models").mkdir()
    shutil.copy(src, tmp_path / "models" / "my_pendulum.xml")
    raw = yaml.safe_load((DATA / "pendulum_norm.yaml").read_text())
    raw["env_kwargs"] = {"xml_file": "models/my_pendulum.xml"}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(raw))
    spec = load_spec_file(tmp_path / "mine.yaml")
    assert spec.env_kwargs["xml_file"] == str(tmp_path / "models" / "my_pendulum.xml")
    env = make_target_env(spec, "heavy")
    env.reset(seed=0)
    raw["env_kwargs"] = {"xml_file": "models/missing.xml"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="xml_file: 'models/missing.xml' does not exist"):
        load_spec_file(tmp_path / "bad.yaml")


def test_unknown_env_id_is_a_spec_error(tmp_path):
    import yaml

    raw = yaml.safe_load((DATA / "pendulum_norm.yaml").read_text())
    raw["env_id"] = "InvertedPendulum-v99"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=r"bad.yaml: env_id 'InvertedPendulum-v99'"):
        make_sim_env(load_spec_file(tmp_path / "bad.yaml"))


def test_an_older_policy_loads_after_its_spec_changes_net_arch(tmp_path, monkeypatch):
    from sim2real.learning import loading
    from sim2real.learning.loading import load_for_evaluation
    from sim2real.learning.pretrain import PretrainConfig, pretrain

    # The network comes from the spec file (16x16), not from --set overrides.
    run = pretrain(PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), steps=64, eval_every=64, eval_episodes=1,
                                  checkpoint_every=64), out=tmp_path / "old")

    real_load = loading.load_spec

    def edited(task):  # today's spec file says 64x64; the policy was trained at 16x16
        spec = real_load(task)
        bigger = spec.pretrain.model_copy(update={"policy_kwargs": {"net_arch": {"pi": [64, 64], "vf": [64, 64]}}})
        return spec.model_copy(update={"pretrain": bigger})

    monkeypatch.setattr(loading, "load_spec", edited)
    pre, _, model = load_for_evaluation(run)
    assert model.policy.mlp_extractor.policy_net[0].out_features == 16


@pytest.mark.parametrize("old, new, message", [
    ("high: 1.5", "high: 1e300", r"body_mass: scale 1e\+300 is outside \[-1000, 1000\]"),
    ("value: 2.0", "value: 5e4", r"body_mass: scale 50000 is outside \[-1000, 1000\]"),
])
def test_absurd_physics_values_are_refused(tmp_path, old, new, message):
    """1e300 is finite and positive, and MuJoCo would take it: a typo must not become a world."""
    with pytest.raises(SpecError, match=message):
        load_spec_file(write(tmp_path, GOOD.replace(old, new)))


def test_an_unreachable_ray_cluster_is_a_clear_error(monkeypatch):
    ray = pytest.importorskip("ray")
    from sim2real.executors import RayExecutor

    def unreachable(*args, **kwargs):
        raise ConnectionError("ray client connection timeout")

    monkeypatch.setattr(ray, "init", unreachable)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(ValueError, match=r"--ray-address ray://nowhere:1: cannot reach a Ray cluster there"):
        RayExecutor(2, "ray://nowhere:1")
