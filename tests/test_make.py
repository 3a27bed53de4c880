"""The worlds users build: check_env on every task x world, registration, reproducibility."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env

import sim2real
from sim2real.spec import available_tasks, load_spec
from sim2real.worlds.make import sim_env_id, target_env_id

WORLDS = [(task, world) for task in available_tasks() for world in load_spec(task).targets]


@pytest.mark.parametrize("task", available_tasks())
def test_sim_world_passes_both_env_checkers(task):
    env = sim2real.make_sim_env(task)
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)


@pytest.mark.parametrize(("task", "world"), WORLDS)
def test_target_world_passes_both_env_checkers(task, world):
    env = sim2real.make_target_env(task, world)
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)


@pytest.mark.parametrize(("task", "world"), WORLDS)
def test_every_world_is_a_registered_gymnasium_id(task, world):
    env = gym.make(target_env_id(task, world))
    env.reset(seed=0)
    assert gym.make(sim_env_id(task)).reset(seed=0)[1]["randomization"]


def test_sb3_make_vec_env_works_on_registered_ids():
    venv = make_vec_env(sim_env_id("inverted_pendulum"), n_envs=2, seed=0)
    venv.reset()
    venv.step(np.zeros((2, 1), dtype=np.float32))


def rollout(env, seed, steps=30):
    obs, info = env.reset(seed=seed)
    out = [obs]
    env.action_space.seed(seed)
    for _ in range(steps):
        obs, r, term, trunc, _ = env.step(env.action_space.sample())
        out.append(np.append(obs, r))
        if term or trunc:
            out.append(env.reset()[0])
    return np.concatenate([np.ravel(x) for x in out]), info


def test_same_seed_same_target_world_and_same_effects():
    a, info_a = rollout(sim2real.make_target_env("hopper", "real"), seed=7)
    b, info_b = rollout(sim2real.make_target_env("hopper", "real"), seed=7)
    c, _ = rollout(sim2real.make_target_env("hopper", "real"), seed=8)
    np.testing.assert_array_equal(a, b)
    assert info_a["physics_shift"] == info_b["physics_shift"]
    assert not np.array_equal(a[:50], c[:50])


def test_target_world_really_differs_from_nominal():
    real = sim2real.make_target_env("hopper", "real")
    nominal = sim2real.make_target_env("hopper", "nominal")
    real.reset(seed=0)
    nominal.reset(seed=0)
    assert real.unwrapped.model.body_mass[1] == pytest.approx(1.4 * nominal.unwrapped.model.body_mass[1])


def test_backwards_variant_rewards_moving_backwards():
    env = sim2real.make_target_env("hopper", "real_backwards")
    env.reset(seed=0)
    _, r, _, _, info = env.step(np.zeros(3, dtype=np.float32))
    assert r == pytest.approx(info["reward_original"] - 2 * info["reward_forward"])


def test_target_speed_reward_follows_its_formula():
    import gymnasium as gym

    from sim2real.worlds.variants import TargetSpeedReward

    env = TargetSpeedReward(gym.make("Hopper-v5"), target_speed=1.0)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(30):
        _, r, terminated, _, info = env.step(rng.uniform(-1, 1, 3).astype(np.float32))
        w, v = env.unwrapped._forward_reward_weight, info["x_velocity"]
        expected = info["reward_original"] - info["reward_forward"] + w * (1.0 - abs(v - 1.0))
        assert r == pytest.approx(expected, abs=1e-12)
        assert info["reward_forward"] == pytest.approx(w * v, abs=1e-12)
        if terminated:
            break


def test_pretraining_evaluation_world_is_the_first_shifted_world_in_spec_order():
    from sim2real.learning.pretrain import default_eval_world

    spec = load_spec("hopper")
    assert default_eval_world(spec) == "real"
    targets = {k: v for k, v in spec.targets.items() if k != "real"}
    for order in (list(targets), list(reversed(targets))):
        shuffled = spec.model_copy(update={"targets": {k: targets[k] for k in order}})
        assert default_eval_world(shuffled) == next(k for k in order if k != "nominal")


def test_mujocos_known_deprecation_is_kept_out_of_user_output_and_others_become_python_warnings(tmp_path, monkeypatch):
    """Gymnasium's half_cheetah.xml uses `settotalmass`: MuJoCo 4 printed a deprecation (and wrote MUJOCO_LOG.TXT)
    in every process. It is dropped; any other MuJoCo warning reaches the user as a Python warning."""
    import warnings

    import gymnasium as gym
    import mujoco

    import sim2real  # noqa: F401  (installs the handler)

    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym.make("HalfCheetah-v5").close()
        model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><body><freejoint/><geom size="1"/></body>'
                                               '</worldbody></mujoco>')
        data = mujoco.MjData(model)
        data.qpos[0] = float("nan")
        mujoco.mj_step(model, data)
    messages = [str(w.message) for w in caught]
    assert not any("settotalmass" in m for m in messages)
    assert any(m.startswith("MuJoCo: Nan, Inf or huge value in QPOS") for m in messages)
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
