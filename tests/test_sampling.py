"""randomization.sampling: nominal episodes are the nominal world, replays come from the worst episodes."""

import numpy as np
import pytest
import yaml

from sim2real.learning.pretrain import PretrainConfig, pretrain
from sim2real.spec import Motor, Pushes, Sampling, SpecError, load_spec, load_spec_file
from sim2real.worlds.batched import BatchedWorld
from sim2real.worlds.make import make_target_env
from sim2real.worlds.sampling import NOMINAL, REPLAY, UNIFORM

from .test_batched import _lockstep, _sync


def _with_sampling(task: str, **settings):
    spec = load_spec(task)
    r = spec.randomization.model_copy(update={"sampling": Sampling(**settings)})
    return spec.model_copy(update={"randomization": r})


def _run(world: BatchedWorld, steps: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        _, _, terminated, truncated = world.step(rng.uniform(-1, 1, (world.n, world.action_space.shape[0])))
        done = np.flatnonzero(terminated | truncated)
        if len(done):
            world.reset(done)


@pytest.mark.parametrize("task", ["hopper", "walker2d"])
def test_a_nominal_episode_is_the_nominal_world_step_for_step(task):
    """Every physics value, effect and push of the randomised world switched off: the Gymnasium nominal env."""
    spec = _with_sampling(task, nominal=1.0)
    # Effects that are fixed, not drawn, and pushes every step or two: a nominal episode has none of them either.
    fx = spec.randomization.effects.model_copy(update={"action_delay": 1, "action_noise_std": 0.05,
                                                       "motor": Motor(strength=0.8, saturation=(0.8, 1.0))})
    pushes = Pushes(body="torso", force=(10.0, 20.0), duration_steps=2, interval_steps=(1, 2))
    spec = spec.model_copy(update={"randomization": spec.randomization.model_copy(update={"effects": fx,
                                                                                          "pushes": pushes})})
    world = BatchedWorld(spec, 3, seed=0)
    world.reset()
    assert all(r["sampling/nominal"] == 1.0 for r in world.randomization)
    assert all(v == 1.0 for r in world.randomization for k, v in r.items() if k.split("/")[0] in
               ("body_mass", "geom_friction", "dof_damping", "actuator_gear", "effects/motor_strength"))
    envs = [make_target_env(task, "nominal") for _ in range(3)]
    _sync(world, envs)
    _lockstep(world, envs, 300)  # through episode ends: the next episodes are nominal again
    assert not world.push_force.any()


def test_fixed_effects_come_back_after_a_nominal_episode():
    spec = _with_sampling("hopper", nominal=0.5)
    fx = spec.randomization.effects.model_copy(update={"action_delay": 1, "motor": Motor(strength=0.8)})
    spec = spec.model_copy(update={"randomization": spec.randomization.model_copy(update={"effects": fx})})
    world = BatchedWorld(spec, 16, seed=0)

    def effects_follow_the_episode_kinds():
        nominal = world.sampling.mode == NOMINAL
        delay, strength = world.effects.params["action_delay"].values, world.effects.params["motor_strength"].values
        assert np.all(delay[nominal] == 0) and np.all(delay[~nominal] == 1)
        assert np.all(strength[nominal] == 1.0) and np.all(strength[~nominal] == 0.8)
        return nominal

    for _ in range(5):
        world.reset()
        nominal = effects_follow_the_episode_kinds()
        assert nominal.any() and (~nominal).any()
    rng = np.random.default_rng(1)
    for _ in range(200):  # partial resets, as an auto-resetting vector env makes them: one or a few at a time
        world.reset(np.sort(rng.choice(16, size=rng.integers(1, 4), replace=False)))
        effects_follow_the_episode_kinds()


def test_episode_kinds_come_in_their_shares_and_replays_come_from_the_worst_episodes():
    world = BatchedWorld(_with_sampling("hopper", nominal=0.3, hard=0.4, quantile=0.25, memory=40, warmup=20),
                         16, seed=0)
    world.reset()
    kinds = []
    rng = np.random.default_rng(1)
    for _ in range(4000):
        _, _, terminated, truncated = world.step(rng.uniform(-1, 1, (16, 3)))
        done = np.flatnonzero(terminated | truncated)
        if not len(done):
            continue
        s = world.sampling
        world.reset(done)  # remembers the ended episodes, then chooses from that memory
        size = s.remembered
        worst = np.sort(s.memory_returns[:size])[:max(1, int(0.25 * size))]
        memory = s.memory_physics[:size]
        for i in done:
            kinds.append(int(s.mode[i]))
            if s.mode[i] == REPLAY:
                # the replayed draws are one remembered episode's, and it was among the worst quarter
                match = np.flatnonzero(np.all(memory == world.draws[i], axis=1))
                assert len(match) and s.memory_returns[match].min() <= worst[-1]
            elif s.mode[i] == NOMINAL:
                assert np.allclose(world.draws[i], 1.0)
    kinds = np.array(kinds)
    assert len(kinds) > 1000
    assert abs(np.mean(kinds == NOMINAL) - 0.3) < 0.05
    assert abs(np.mean(kinds == REPLAY) - 0.4) < 0.06  # a little under: nothing is replayed in the warmup
    assert abs(np.mean(kinds == UNIFORM) - 0.3) < 0.06
    assert world.sampling.remembered == 40  # the ring keeps the last `memory`


def test_memory_holds_each_ended_episodes_draws_with_its_return():
    world = BatchedWorld(_with_sampling("hopper", nominal=0.5, memory=500, warmup=1), 8, seed=0)
    world.reset()
    returns, ended = np.zeros(8), []
    rng = np.random.default_rng(2)
    for _ in range(300):
        _, reward, terminated, truncated = world.step(rng.uniform(-1, 1, (8, 3)))
        returns += reward
        done = np.flatnonzero(terminated | truncated)
        ended += [(world.draws[i].copy(), returns[i], world.sampling.mode[i]) for i in done]
        returns[done] = 0.0
        if len(done):
            world.reset(done)
    kept = [(d, r) for d, r, mode in ended if mode != NOMINAL]  # nominal episodes are not remembered
    assert len(kept) == world.sampling.remembered > 10
    np.testing.assert_array_equal(world.sampling.memory_physics[:len(kept)], np.array([d for d, _ in kept]))
    np.testing.assert_allclose(world.sampling.memory_returns[:len(kept)], [r for _, r in kept])


def test_a_restored_world_continues_exactly():
    spec = _with_sampling("hopper", nominal=0.3, hard=0.4, memory=30, warmup=10)
    # Fixed effects too: a nominal episode saved in the checkpoint holds them at their neutral values.
    fx = spec.randomization.effects.model_copy(update={"action_delay": 1, "motor": Motor(strength=0.8)})
    spec = spec.model_copy(update={"randomization": spec.randomization.model_copy(update={"effects": fx})})
    a = BatchedWorld(spec, 4, seed=0)
    a.reset()
    _run(a, 1500)
    arrays, meta = a.state_dict()
    b = BatchedWorld(spec, 4, seed=99)  # a world that has run already, not a fresh one
    b.reset()
    _run(b, 300, seed=3)
    b.load_state_dict(arrays, meta)
    _run(a, 1500, seed=5)
    _run(b, 1500, seed=5)
    np.testing.assert_array_equal(a.draws, b.draws)
    np.testing.assert_array_equal(a.sampling.memory_returns, b.sampling.memory_returns)
    np.testing.assert_array_equal(a.qpos, b.qpos)
    for name, q in a.effects.params.items():
        np.testing.assert_array_equal(q.values, b.effects.params[name].values, err_msg=name)


def test_bad_sampling_settings_are_spec_errors(tmp_path):
    raw = yaml.safe_load(open(load_spec("hopper").path).read())
    for sampling, message in [({"nominal": 0.7, "hard": 0.5}, r"nominal \(0.7\) \+ hard \(0.5\) is above 1"),
                              ({"nominal": 1.5}, "sampling.nominal: Input should be less than or equal to 1"),
                              ({"warmup": 50, "memory": 10}, r"warmup \(50\) must be <= memory \(10\)")]:
        raw["randomization"]["sampling"] = sampling
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(SpecError, match=message) as err:
            load_spec_file(path)
        assert str(path) in str(err.value)
    raw["randomization"].update(sampling={"nominal": 0.2}, when="once")
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="it needs when: reset"):
        load_spec_file(path)


def test_pretraining_batches_a_sampled_spec_and_refuses_the_gymnasium_stepper(tmp_path):
    from sim2real.learning.pretrain import resolve_stepper

    raw = yaml.safe_load(open(load_spec("inverted_pendulum").path).read())
    raw["randomization"]["sampling"] = {"nominal": 0.2}
    path = tmp_path / "pendulum.yaml"
    path.write_text(yaml.safe_dump(raw))
    spec = load_spec_file(path)
    # One env (SAC's default) goes on the batch when the spec samples; without randomisation nothing is sampled.
    assert resolve_stepper(PretrainConfig(task=str(path)), spec, 1) == "batch"
    assert resolve_stepper(PretrainConfig(task=str(path), randomize=False), spec, 1) == "gym"
    with pytest.raises(ValueError, match="randomization.sampling is computed by the batched world only"):
        pretrain(PretrainConfig(task=str(path), steps=1000, n_envs=2, stepper="gym", threads=1), tmp_path / "run")


def test_a_checkpoint_from_before_the_sampling_block_is_a_clear_error():
    spec = load_spec("hopper")
    plain = spec.model_copy(update={"randomization": spec.randomization.model_copy(update={"sampling": None})})
    old = BatchedWorld(plain, 2, seed=0)
    old.reset()
    arrays, meta = old.state_dict()
    with pytest.raises(ValueError, match="no state for sampling/mode.*randomization.sampling"):
        BatchedWorld(_with_sampling("hopper", nominal=0.2), 2, seed=0).load_state_dict(arrays, meta)
