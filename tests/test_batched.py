"""The batched world (mujoco.batch) against the Gymnasium worlds it stands in for."""

import numpy as np
import pytest
from stable_baselines3 import PPO

from sim2real.learning.envs import BatchedVecEnv
from sim2real.spec import Effects, Motor, PhysicsShift, PolicyInputs, Pushes, TargetWorld, TaskVariant, load_spec
from sim2real.worlds.batched import BatchedVectorEnv, BatchedWorld, BatchUnsupported, unsupported_reason
from sim2real.worlds.batched_effects import BatchedEffects
from sim2real.worlds.inputs import with_inputs
from sim2real.worlds.make import make_sim_env, make_target_env
from sim2real.worlds.physics import FixedPhysicsShift

TASKS = ["hopper", "walker2d", "half_cheetah", "inverted_pendulum"]


def _lockstep(world: BatchedWorld, envs: list, steps: int, seed: int = 1) -> None:
    """Step the batch and one Gymnasium env per simulation with the same actions; compare everything.

    Each env is put in its simulation's state first and again after each episode ends (the
    simulation alone is reset, which checks the partial reset too).
    """
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        action = rng.uniform(-1, 1, (world.n, world.action_space.shape[0])).astype(np.float32)
        obs, reward, terminated, truncated = world.step(action)
        for i, env in enumerate(envs):
            g_obs, g_reward, g_terminated, g_truncated, _ = env.step(action[i])
            np.testing.assert_allclose(obs[i], g_obs, rtol=0, atol=1e-9)
            assert abs(reward[i] - g_reward) <= 1e-9
            assert bool(terminated[i]) == g_terminated and bool(truncated[i]) == g_truncated
            if g_terminated or g_truncated:
                world.reset([i])
                env.reset()
                env.unwrapped.set_state(world.qpos[i].copy(), world.qvel[i].copy())


def _sync(world: BatchedWorld, envs: list) -> None:
    for i, env in enumerate(envs):
        env.reset(seed=i)
        env.unwrapped.set_state(world.qpos[i].copy(), world.qvel[i].copy())


@pytest.mark.parametrize("task", TASKS)
def test_nominal_batch_matches_gymnasium_step_for_step(task):
    world = BatchedWorld(task, 3, world="nominal", seed=0)
    world.reset()
    envs = [make_target_env(task, "nominal") for _ in range(3)]
    _sync(world, envs)
    _lockstep(world, envs, 150)


@pytest.mark.parametrize("task", TASKS)
def test_randomised_physics_matches_the_same_values_written_by_the_gymnasium_path(task):
    """Each simulation's reported draws, written into a Gymnasium env as a fixed shift, give its trajectory."""
    spec = load_spec(task)
    # Drawn once: a simulation reset after its episode keeps its physics, as the fixed-shift env does.
    physics_only = spec.randomization.model_copy(update={"effects": None, "pushes": None, "sampling": None, "when": "once"})
    spec = spec.model_copy(update={"randomization": physics_only})
    world = BatchedWorld(spec, 3, seed=4)
    world.reset()
    assert len({tuple(sorted(r.items())) for r in world.randomization}) == 3  # three different draws
    envs = []
    for i in range(3):
        drawn, shifts = world.randomization[i], []
        env = make_target_env(task, "nominal")
        for p in spec.randomization.params:
            labels = sorted({k.split("/")[1] for k in drawn if k.startswith(p.field + "/")})
            if p.field == "body_com":  # three offsets per body: written directly (a shift has one value)
                for label in labels:
                    env.unwrapped.model.body(label).ipos += [drawn[f"body_com/{label}/{axis}"] for axis in "xyz"]
                continue
            shifts += [PhysicsShift(field=p.field, names=[label], op=p.op, value=drawn[f"{p.field}/{label}"])
                       for label in labels]
        envs.append(FixedPhysicsShift(env, shifts))
    _sync(world, envs)
    _lockstep(world, envs, 150)


def test_fixed_effects_and_inputs_match_the_gymnasium_wrappers():
    """Delays, motor limits and the policy's history: the same arithmetic as the wrapper chain."""
    spec = load_spec("hopper")
    fx = Effects(action_delay=2, obs_delay=1, motor=Motor(strength=0.9, saturation=0.8, dead_zone=0.05))
    target = TargetWorld(physics=[PhysicsShift(field="body_mass", names=["torso"], value=1.3)], effects=fx)
    spec = spec.model_copy(update={"targets": {**spec.targets, "fx": target}})
    inputs = PolicyInputs(history=2)
    world = BatchedWorld(spec, 2, world="fx", seed=0, inputs=inputs)
    first = world.reset()
    envs = [with_inputs(make_target_env(spec, "fx"), inputs) for _ in range(2)]
    # Same states from the first step on; each side's delay line and history start from its own reset
    # observation, so observations are compared once those have left (after three steps).
    _sync(world, envs)
    rng = np.random.default_rng(2)
    compared = 0
    alive = np.ones(2, dtype=bool)
    for t in range(300):
        action = rng.uniform(-1, 1, (2, 3)).astype(np.float32)
        obs, reward, terminated, truncated = world.step(action)
        for i, env in enumerate(envs):
            if not alive[i]:
                continue
            g_obs, g_reward, g_terminated, _, _ = env.step(action[i])
            assert abs(reward[i] - g_reward) <= 1e-9
            assert bool(terminated[i]) == g_terminated
            if t >= 3:  # past the observation delay and the history's reset rows
                np.testing.assert_allclose(obs[i], g_obs, rtol=0, atol=1e-9)
                compared += 1
            alive[i] = not g_terminated
        if not alive.any():
            break
    assert compared >= 20
    assert first.shape == (2, world.observation_space.shape[0]) == (2, 11 * 3 + 3 * 2)


def test_effect_draws_are_per_simulation_inside_their_ranges_and_reported_like_the_gymnasium_world():
    world = BatchedWorld("hopper", 64, seed=0)
    world.reset()
    gym_keys = set(make_sim_env("hopper").reset(seed=0)[1]["randomization"])
    # ... and, the spec having a sampling block, each episode's kind (the Gymnasium world draws every episode).
    assert set(world.randomization[0]) == gym_keys | {"sampling/nominal", "sampling/replay"}
    delays = [r["effects/action_delay"] for r in world.randomization]
    assert set(delays) == {0, 1, 2}
    saturation = np.array([r["effects/motor_saturation"] for r in world.randomization])
    assert saturation.min() >= 0.8 and saturation.max() <= 1.0 and saturation.std() > 0.02
    torso = np.array([r["body_mass/torso"] for r in world.randomization])
    assert torso.min() >= 0.75 and torso.max() <= 1.5
    # The written model follows the report: simulation i's torso mass is nominal x its draw.
    nominal = make_target_env("hopper", "nominal").unwrapped.model.body("torso").mass[0]
    np.testing.assert_allclose(world.batch.body("torso").mass[:, 0], nominal * torso, rtol=1e-12)


def test_observation_noise_and_bias_have_the_spec_std():
    fx = BatchedEffects(Effects(obs_noise={"std": 0.1, "bias_std": 0.0}), 200, 5, -np.ones(2), np.ones(2), np.float32)
    rng = np.random.default_rng(0)
    fx.reset(rng, np.arange(200), np.zeros((200, 5)))
    seen = np.stack([fx.observe(rng, np.zeros((200, 5))) for _ in range(20)])
    assert abs(seen.std() - 0.1) < 0.005 and abs(seen.mean()) < 0.005
    fx = BatchedEffects(Effects(obs_noise={"std": 0.0, "bias_std": 0.2}), 500, 3, -np.ones(2), np.ones(2), np.float32)
    first = fx.reset(rng, np.arange(500), np.zeros((500, 3)))
    np.testing.assert_array_equal(fx.observe(rng, np.zeros((500, 3))), first)  # a constant offset per episode
    assert abs(first.std() - 0.2) < 0.02


def test_pushes_push_the_torso_with_forces_in_range():
    spec = load_spec("walker2d")
    pushes = Pushes(body="torso", force=(10.0, 20.0), duration_steps=2, interval_steps=(3, 5))
    # Every episode drawn from the ranges (no nominal episodes, which are never pushed).
    only_pushes = spec.randomization.model_copy(update={"pushes": pushes, "sampling": None})
    spec = spec.model_copy(update={"randomization": only_pushes})
    world = BatchedWorld(spec, 4, seed=0)
    world.reset()
    forces = []
    for _ in range(30):
        world.step(np.zeros((4, 6), dtype=np.float32))
        forces.append(world.push_force.copy())
    forces = np.abs(np.array(forces))
    pushing = forces > 0
    assert pushing.mean() > 0.2 and np.all((forces[pushing] >= 10) & (forces[pushing] <= 20))


def test_vec_env_auto_resets_with_sb3_infos_and_is_reproducible():
    spec = load_spec("inverted_pendulum").model_copy(update={"max_episode_steps": 7})
    venv = BatchedVecEnv(BatchedWorld(spec, 3))
    venv.seed(5)
    obs = venv.reset()
    assert "randomization" in venv.reset_infos[0]
    endings = []
    for _ in range(8):
        obs, reward, done, infos = venv.step(np.zeros((3, 1), dtype=np.float32))
        assert reward.dtype == np.float32 and obs.shape == (3, 4)
        endings += [info for info in infos if "terminal_observation" in info]
    assert len(endings) == 3 and all(info["TimeLimit.truncated"] for info in endings)
    again = BatchedVecEnv(BatchedWorld(spec, 3))
    again.seed(5)
    np.testing.assert_array_equal(again.reset(), BatchedVecEnv(BatchedWorld(spec, 3, seed=5)).reset())


def test_gymnasium_vector_env_resets_in_the_same_step():
    spec = load_spec("inverted_pendulum")
    # Without sensor effects, so the first observation of a new episode is the reset state itself.
    spec = spec.model_copy(update={"max_episode_steps": 5,
                                   "randomization": spec.randomization.model_copy(update={"effects": None})})
    envs = BatchedVectorEnv(BatchedWorld(spec, 2))
    obs, infos = envs.reset(seed=0)
    assert envs.observation_space.shape == obs.shape == (2, 4) and infos["_randomization"].all()
    assert infos["randomization"]["body_mass/pole"].shape == (2,)  # Gymnasium's layout: per-env arrays
    for _ in range(5):
        obs, reward, terminated, truncated, infos = envs.step(np.zeros((2, 1), dtype=np.float32))
    assert truncated.all() and infos["_final_obs"].all() and infos["final_obs"][0].shape == (4,)
    assert infos["final_info"]["_randomization"].all()
    assert np.abs(obs).max() <= 0.01  # the new episodes' first observations (reset noise 0.01)


def test_sb3_trains_on_the_batched_world():
    venv = BatchedVecEnv(BatchedWorld("inverted_pendulum", 4, seed=0, inputs=PolicyInputs(last_action=True)))
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(256)
    assert model.num_timesteps == 256


@pytest.mark.parametrize("variant", ["backwards", "slow"])
def test_task_variant_rewards_match_the_gymnasium_wrappers(variant):
    """A target's reward rewrite (hopping backwards, at 1 m/s), and the same rewrite of the sim world."""
    spec = load_spec("hopper")
    targets = {**spec.targets, "other_task": TargetWorld(task_variant=variant)}
    spec = spec.model_copy(update={"targets": targets})
    world = BatchedWorld(spec, 3, world="other_task", seed=0)
    world.reset()
    envs = [make_target_env(spec, "other_task") for _ in range(3)]
    _sync(world, envs)
    _lockstep(world, envs, 150)

    physics_free = spec.randomization.model_copy(update={"task_variant": variant})
    sim = spec.model_copy(update={"randomization": physics_free})
    world = BatchedWorld(sim, 3, randomize=False, seed=0)
    world.reset()
    envs = [make_sim_env(sim, randomize=False) for _ in range(3)]
    _sync(world, envs)
    _lockstep(world, envs, 150)


def test_worlds_the_batch_does_not_compute_are_named():
    spec = load_spec("inverted_pendulum")
    spec = spec.model_copy(update={"task_variants": {"backwards": TaskVariant(kind="backwards")},
                                   "randomization": spec.randomization.model_copy(update={"task_variant": "backwards"})})
    assert "task variant" in unsupported_reason(spec, "sim")
    with pytest.raises(BatchUnsupported, match="task variant"):
        BatchedWorld(spec, 2)
    assert unsupported_reason("hopper", "real") is None
    assert unsupported_reason("hopper", "real_backwards") is None


def test_pretraining_batches_two_or_more_envs_and_says_so(tiny_pretrained):
    import json

    from sim2real.learning.pretrain import PretrainConfig, resolve_stepper

    assert json.loads((tiny_pretrained / "run.json").read_text())["config"]["stepper"] == "batch"  # 2 envs
    spec = load_spec("hopper")
    spec = spec.model_copy(update={"randomization": spec.randomization.model_copy(update={"sampling": None})})
    assert resolve_stepper(PretrainConfig("hopper"), spec, 1) == "gym"  # one env: the steppers run alike
    assert resolve_stepper(PretrainConfig("hopper", stepper="batch"), spec, 1) == "batch"
    assert resolve_stepper(PretrainConfig("hopper", subproc=True), spec, 8) == "gym"
    with pytest.raises(ValueError, match="does not combine"):
        resolve_stepper(PretrainConfig("hopper", subproc=True, stepper="batch"), spec, 8)
    ant = spec.model_copy(update={"env_id": "Ant-v5", "randomization": spec.randomization.model_copy(update={"params": []})})
    with pytest.raises(ValueError, match="no batched kernel"):
        resolve_stepper(PretrainConfig("hopper", stepper="batch"), ant, 8)
    assert resolve_stepper(PretrainConfig("hopper"), ant, 8) == "gym"


def test_when_once_keeps_physics_until_reseeded_and_masks_are_refused():
    spec = load_spec("inverted_pendulum")
    # Physics only: effects are drawn per episode whatever `when` says, and sampling needs when: reset.
    spec = spec.model_copy(update={"randomization": spec.randomization.model_copy(
        update={"when": "once", "sampling": None, "effects": None})})
    world = BatchedWorld(spec, 2, seed=0)
    world.reset()
    first = [dict(r) for r in world.randomization]
    world.reset([0])
    assert world.randomization[0] == first[0]  # drawn once
    world.seed(1)
    world.reset()
    assert world.randomization[0] != first[0]  # a new seed draws anew, as reset(seed=...) does in Gymnasium
    with pytest.raises(TypeError, match="boolean mask"):
        world.reset(np.array([True, False]))
