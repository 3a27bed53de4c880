"""Real-world effects: each wrapper does its one transformation, reproducibly."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from sim2real.worlds.effects import (
    ActionDelay,
    ActionNoise,
    MotorLimits,
    ObservationDelay,
    ObservationNoise,
    SensorFaults,
)


class Recorder(gym.Wrapper):
    """Records the actions that reach the simulator."""

    def __init__(self, env):
        super().__init__(env)
        self.actions = []

    def step(self, action):
        self.actions.append(np.array(action, dtype=float))
        return self.env.step(action)


def pendulum():
    return gym.make("InvertedPendulum-v5", disable_env_checker=True)


def test_action_delay_delays_by_exactly_k_steps():
    for k in (1, 3):
        rec = Recorder(pendulum())
        env = ActionDelay(rec, delay=k)
        env.reset(seed=0)
        sent = [np.array([0.1 * (i + 1)], dtype=np.float32) for i in range(6)]
        for a in sent:
            env.step(a)
        got = [float(a[0]) for a in rec.actions]
        assert got[:k] == [0.0] * k
        np.testing.assert_allclose(got[k:], [float(a[0]) for a in sent[: 6 - k]], rtol=1e-6)


def test_delays_keep_their_own_copies_of_reused_buffers():
    # A robot driver or a control loop may refill one array in place every step.
    rec = Recorder(pendulum())
    env = ActionDelay(rec, delay=1)
    env.reset(seed=0)
    buf = np.zeros(1, dtype=np.float32)
    for v in (0.1, 0.2, 0.3):
        buf[0] = v
        env.step(buf)
    np.testing.assert_allclose([float(a[0]) for a in rec.actions], [0.0, 0.1, 0.2], rtol=1e-6)

    class SameBuffer(gym.Wrapper):
        def reset(self, **kw):
            obs, info = self.env.reset(**kw)
            self.buf = obs.copy()
            return self.buf, info

        def step(self, action):
            obs, *rest = self.env.step(action)
            self.buf[:] = obs
            return self.buf, *rest

    env = ObservationDelay(SameBuffer(pendulum()), delay=1)
    first, _ = env.reset(seed=0)
    first = first.copy()
    np.testing.assert_array_equal(env.step(np.zeros(1, dtype=np.float32))[0], first)


def test_random_action_delay_is_drawn_per_episode_within_range():
    env = ActionDelay(pendulum(), delay=(0, 3))
    ks = {env.reset(seed=s)[1]["action_delay"] for s in range(30)}
    assert ks <= {0, 1, 2, 3} and len(ks) > 1


def test_observation_delay():
    env = ObservationDelay(pendulum(), delay=2)
    plain = pendulum()
    o0, _ = env.reset(seed=1)
    p0, _ = plain.reset(seed=1)
    delayed = [env.step(np.array([0.5], dtype=np.float32))[0] for _ in range(4)]
    true = [plain.step(np.array([0.5], dtype=np.float32))[0] for _ in range(4)]
    np.testing.assert_allclose(delayed[0], o0)
    np.testing.assert_allclose(delayed[1], o0)
    np.testing.assert_allclose(delayed[2], true[0])
    np.testing.assert_allclose(delayed[3], true[1])


def test_observation_bias_is_constant_within_an_episode_and_reproducible():
    env = ObservationNoise(pendulum(), std=0.0, bias_std=0.5)
    plain = pendulum()
    o, _ = env.reset(seed=4)
    p, _ = plain.reset(seed=4)
    bias = o - p
    assert np.abs(bias).sum() > 0
    for _ in range(3):
        a = np.array([0.2], dtype=np.float32)
        np.testing.assert_allclose(env.step(a)[0] - plain.step(a)[0], bias, atol=1e-5)
    again = ObservationNoise(pendulum(), std=0.0, bias_std=0.5)
    again.reset(seed=4)
    np.testing.assert_allclose(again.bias, env.bias)


def test_observation_noise_has_the_requested_std():
    env = ObservationNoise(pendulum(), std=0.1)
    env.reset(seed=0)
    obs = np.zeros(4, dtype=np.float64)
    samples = np.array([env.observation(obs) for _ in range(2000)])
    assert abs(samples.std() - 0.1) < 0.01


def test_action_noise_stays_in_bounds():
    env = ActionNoise(pendulum(), std=1.0)
    env.reset(seed=0)
    outs = np.array([env.action(np.array([2.9], dtype=np.float32)) for _ in range(200)])
    assert np.all(np.abs(outs) <= 3.0) and outs.std() > 0.1


def test_action_noise_scale_is_in_units_of_the_bound_and_keeps_the_dtype():
    env = ActionNoise(pendulum(), std=0.1)  # bound 3 -> noise std 0.3
    env.reset(seed=0)
    outs = np.array([env.action(np.array([0.0], dtype=np.float32)) for _ in range(4000)])
    assert outs.dtype == np.float32
    assert abs(outs.std() - 0.3) < 0.02 and abs(outs.mean()) < 0.03


def test_sensor_faults_stuck_and_dropped():
    env = SensorFaults(pendulum(), stuck_prob=1.0)
    first, _ = env.reset(seed=0)
    for _ in range(3):
        np.testing.assert_array_equal(env.step(np.array([1.0], dtype=np.float32))[0], first)
    env = SensorFaults(pendulum(), drop_prob=0.5)
    env.reset(seed=0)
    zeros = np.mean([np.mean(env.step(np.array([0.0], dtype=np.float32))[0] == 0) for _ in range(200)])
    assert 0.35 < zeros < 0.65
    # Some stuck, some live: the stuck ones keep their first value, the others move.
    env = SensorFaults(pendulum(), stuck_prob=0.5)
    for seed in range(20):
        first, info = env.reset(seed=seed)
        if 0 < len(info["stuck_sensors"]) < 4:
            break
    stuck = np.zeros(4, dtype=bool)
    stuck[info["stuck_sensors"]] = True
    later = [env.step(np.array([1.0], dtype=np.float32))[0] for _ in range(5)][-1]
    np.testing.assert_array_equal(later[stuck], first[stuck])
    assert np.all(later[~stuck] != first[~stuck])


def test_motor_saturation_and_dead_zone():
    rec = Recorder(pendulum())
    env = MotorLimits(rec, saturation=0.5, dead_zone=0.1)
    env.reset(seed=0)
    for a in (3.0, -3.0, 0.2, 0.5):
        env.step(np.array([a], dtype=np.float32))
    np.testing.assert_allclose([float(a[0]) for a in rec.actions], [1.5, -1.5, 0.0, 0.5])


# ---------------------------------------------------------------- effect randomisation (per-episode ranges)

RANGES = {"action_delay": (0, 3), "obs_delay": (0, 2), "obs_noise": {"std": (0.0, 0.05), "bias_std": (0.0, 0.1)},
          "action_noise_std": (0.0, 0.2), "motor": {"strength": (0.6, 1.2), "saturation": (0.5, 1.0),
                                                    "dead_zone": (0.0, 0.1)},
          "sensors": {"drop_prob": (0.0, 0.3), "stuck_prob": (0.0, 0.2)}}
BOUNDS = {"effects/action_delay": (0, 3), "effects/obs_delay": (0, 2), "effects/obs_noise_std": (0, 0.05),
          "effects/obs_noise_bias_std": (0, 0.1), "effects/action_noise_std": (0, 0.2),
          "effects/motor_strength": (0.6, 1.2), "effects/motor_saturation": (0.5, 1.0),
          "effects/motor_dead_zone": (0, 0.1), "effects/sensor_drop_prob": (0, 0.3),
          "effects/sensor_stuck_prob": (0, 0.2)}


def randomized_effects():
    from sim2real.spec import Effects
    from sim2real.worlds.effects import apply_effects

    return apply_effects(pendulum(), Effects(**RANGES))


def test_every_effect_is_drawn_per_episode_within_its_range_and_shows_in_info():
    env = randomized_effects()
    seen: dict[str, set] = {}
    for episode in range(30):
        _, info = env.reset(seed=episode)
        drawn = {k: v for k, v in info["randomization"].items() if k.startswith("effects/")}
        assert set(drawn) == set(BOUNDS)
        for key, value in drawn.items():
            lo, hi = BOUNDS[key]
            assert lo <= value <= hi, (key, value)
            seen.setdefault(key, set()).add(value)
        _, _, _, _, step_info = env.step(env.action_space.sample())
        assert {k: step_info["randomization"][k] for k in drawn} == drawn  # and in every step's info
    assert all(len(values) > 1 for values in seen.values())  # actually resampled, not fixed
    assert seen["effects/action_delay"] == {0, 1, 2, 3}  # integer delays cover both ends


def test_effect_draws_are_reproducible_from_the_seed():
    a, b = randomized_effects(), randomized_effects()
    for seed in (3, 11):
        obs_a, info_a = a.reset(seed=seed)
        obs_b, info_b = b.reset(seed=seed)
        assert info_a["randomization"] == info_b["randomization"]
        for _ in range(20):
            act = np.array([0.3], dtype=np.float32)
            assert np.array_equal(a.step(act)[0], b.step(act)[0])


def test_drawn_latency_and_motor_strength_are_what_the_motor_gets():
    from sim2real.spec import Effects
    from sim2real.worlds.effects import apply_effects

    rec = Recorder(pendulum())
    env = apply_effects(rec, Effects(action_delay=(0, 2), motor={"strength": (0.5, 0.9)}))
    for seed in range(6):
        rec.actions.clear()
        _, info = env.reset(seed=seed)
        k, strength = info["randomization"]["effects/action_delay"], info["randomization"]["effects/motor_strength"]
        for _ in range(k + 1):
            env.step(np.array([1.0], dtype=np.float32))
        got = [float(a[0]) for a in rec.actions]
        assert got[:k] == [0.0] * k
        assert got[k] == pytest.approx(strength, rel=1e-6)


@pytest.mark.parametrize(("effects", "message"), [
    ({"action_delay": (3, 1)}, "low (3) must be <= high (1)"),
    ({"action_delay": -1}, "action_delay: -1 is outside"),
    ({"obs_delay": (-1, 2)}, "obs_delay: -1 is outside"),
    ({"sensors": {"drop_prob": (0.0, 1.5)}}, "drop_prob: 1.5 is outside"),
    ({"obs_noise": {"std": float("nan")}}, "obs_noise.std: Input should be a finite number (got nan)"),
    ({"motor": {"saturation": (0.0, 1.0)}}, "saturation: 0.0 is outside (0.0"),
])
def test_bad_effect_ranges_are_clear_spec_errors(tmp_path, effects, message):
    import yaml

    from sim2real.spec import SpecError, load_spec_file
    from tests.conftest import DATA

    raw = yaml.safe_load((DATA / "pendulum_norm.yaml").read_text())
    raw["randomization"]["effects"] = {k: list(v) if isinstance(v, tuple) else v for k, v in effects.items()}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    assert str(path) in str(err.value) and "randomization.effects" in str(err.value)
    assert message in str(err.value)
