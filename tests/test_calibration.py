"""Calibration: known parameters and delays come back from recorded data; bad data get clear errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from sim2real.calibration.fit import CalibrationProblem, CalibrationResult, parse_param, recording_from_episodes
from sim2real.calibration.outputs import calibrated_spec
from sim2real.calibration.run import calibrate
from sim2real.robot.log import read_log
from sim2real.robot.record import RecordConfig, record
from sim2real.spec import SpecError, load_spec, load_spec_file
from sim2real.worlds.make import make_sim_env

if not hasattr(pytest.importorskip("mujoco.sysid"), "optimize"):
    pytest.skip("needs MuJoCo's sysid extras: pip install 'sim2real[sysid]'", allow_module_level=True)


def _clean_pendulum(tmp_path: Path, mass: float, gear: float, delay: int) -> Path:
    """The pendulum spec with a noise-free world of known physics and delay (the truth the fit must find)."""
    raw = yaml.safe_load(Path(load_spec("inverted_pendulum").path).read_text())
    raw["targets"]["known"] = {"physics": [{"field": "body_mass", "names": ["pole"], "op": "scale", "value": mass},
                                           {"field": "actuator_gear", "names": "all", "op": "scale", "value": gear}],
                               "effects": {"action_delay": delay}}
    path = tmp_path / "pendulum.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def known_recording(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cal")
    spec_path = _clean_pendulum(tmp, mass=1.5, gear=0.5, delay=2)
    out = record(RecordConfig(task=str(spec_path), target="known", excitation="random", episodes=25,
                              amplitude=0.5, hold_steps=3), tmp / "rec")
    return spec_path, out


def test_recovers_known_parameters_and_delay(known_recording, tmp_path):
    spec_path, data = known_recording
    spec = load_spec_file(spec_path)
    result = calibrate(spec, data, tmp_path / "cal")
    assert result.delay == 2 and result.truth["delay"] == 2
    assert result.values["body_mass/pole"] == pytest.approx(1.5, rel=0.05)
    assert result.values["actuator_gear/all"] == pytest.approx(0.5, rel=0.05)
    assert result.rms_after < 0.2 * result.rms_before
    assert sorted(result.delay_costs) == [0, 1, 2, 3]
    # The calibrated spec loads, holds the fit as a world and centres the randomisation on it.
    calibrated = load_spec_file(tmp_path / "cal" / "calibrated.yaml")
    world = calibrated.targets["calibrated"]
    assert world.effects.action_delay == 2
    masses = [p for p in calibrated.randomization.params if p.field == "body_mass" and p.names == ["pole"]]
    assert masses[-1].low < result.values["body_mass/pole"] < masses[-1].high
    assert calibrated.randomization.effects.action_delay == 2
    report = (tmp_path / "cal" / "report.md").read_text()
    assert "body_mass/pole" in report and (tmp_path / "cal" / "trajectory.png").stat().st_size > 1000
    assert json.loads((tmp_path / "cal" / "calibration.json").read_text())["delay"] == 2
    # Never overwritten.
    with pytest.raises(FileExistsError):
        calibrate(spec, data, tmp_path / "cal")


def test_data_from_a_target_with_another_reward_calibrate_a_sim_that_trains_for_it(tmp_path):
    """heavy_torso_slow asks for hopping at 1 m/s: the calibrated world and the calibrated sim keep that reward."""
    spec = load_spec("hopper")
    # A spec whose sim mixes in nominal episodes: those would be the uncalibrated model, so they go.
    raw = yaml.safe_load(Path(spec.path).read_text())
    raw["randomization"]["sampling"] = {"nominal": 0.25}
    raw["randomization"]["task_variant"] = "backwards"  # a spec whose sim already trains another reward
    (tmp_path / "hopper.yaml").write_text(yaml.safe_dump(raw))
    spec = load_spec_file(tmp_path / "hopper.yaml")
    labels = ["body_mass/torso", "geom_friction/all"]
    result = CalibrationResult(task="hopper", labels=labels, values={"body_mass/torso": 1.19, "geom_friction/all": 0.86},
                               intervals=dict.fromkeys(labels, 0.01), delay=0, delay_costs={0: 1.0}, rms_before=1.0,
                               rms_after=0.1, n_windows=1, window=20, steps=100, world="heavy_torso_slow")
    path = tmp_path / "calibrated.yaml"
    path.write_text(yaml.safe_dump(calibrated_spec(spec, result), sort_keys=False))
    calibrated = load_spec_file(path)
    assert calibrated.targets["calibrated"].task_variant == "slow" and calibrated.randomization.task_variant == "slow"
    assert calibrated.randomization.sampling is None
    env = make_sim_env(calibrated)
    env.reset(seed=0)
    *_, info = env.step(env.action_space.sample())
    assert "reward_original" in info  # the target-speed rewrite is in the chain
    # Data from a world with the task's own reward calibrate a sim with the task's own reward.
    result.world = "real"
    assert "task_variant" not in calibrated_spec(spec, result)["randomization"]


def test_a_given_delay_is_used(known_recording, tmp_path):
    spec_path, data = known_recording
    result = calibrate(load_spec_file(spec_path), data, tmp_path / "cal", delay=2)
    assert list(result.delay_costs) == [2]
    assert result.values["actuator_gear/all"] == pytest.approx(0.5, rel=0.05)


def test_bad_inputs_are_clear_errors(known_recording, tmp_path):
    spec_path, data = known_recording
    spec = load_spec_file(spec_path)
    with pytest.raises(SpecError, match="no body_mass element 'wheel'.*allowed: .*pole"):
        calibrate(spec, data, tmp_path / "a", params=["body_mass/wheel"])
    with pytest.raises(SpecError, match="unknown field 'mass'"):
        calibrate(spec, data, tmp_path / "b", params=["mass/pole"])
    with pytest.raises(SpecError, match="too little data"):
        calibrate(spec, data, tmp_path / "c", window=50)
    with pytest.raises(SpecError, match="--obs-bias and --episode-offsets.*choose one"):
        calibrate(spec, data, tmp_path / "e", obs_bias=True, offsets=True)
    # Data from another task: the hopper has 11-dim observations and 3 actions, the pendulum 4 and 1.
    with pytest.raises(SpecError, match="another task"):
        recording_from_episodes(read_log(data), load_spec("hopper"), source="x")
    # NaN in the data names the episode and step.
    lines = (data / "transitions.jsonl").read_text().splitlines()
    rec = json.loads(lines[3])
    rec["obs"][0] = float("nan")
    lines[3] = json.dumps(rec)
    bad = tmp_path / "nan"
    bad.mkdir()
    (bad / "transitions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SpecError, match=r"episode \d+, step \d+: observation holds NaN"):
        calibrate(spec, bad, tmp_path / "d")


def test_residual_is_vectorised(known_recording):
    """mujoco.minimize finite-differences by passing several points at once: columns must equal single calls."""
    spec_path, data = known_recording
    spec = load_spec_file(spec_path)
    import gymnasium as gym
    model = gym.make(spec.env_id).unwrapped.model
    problem = CalibrationProblem(spec, recording_from_episodes(read_log(data), spec),
                                 [parse_param("body_mass/pole", model), parse_param("actuator_gear/all", model)])
    try:
        x = np.array([[1.0, 1.2], [0.5, 0.7]])
        both = problem.residual(x, 1)
        assert both.shape[1] == 2
        np.testing.assert_allclose(both[:, 1], problem.residual(x[:, 1], 1), atol=1e-12)
    finally:
        problem.close()


def test_windows_never_start_from_a_clipped_velocity():
    """Hopper reports qvel clipped at +-10: a window started there would replay the wrong motion."""
    from sim2real.calibration.fit import Recording

    spec = load_spec("hopper")
    rng = np.random.default_rng(0)
    obs = rng.normal(0.0, 1.0, (101, 11))
    obs[:, 0] += 1.25  # a plausible height
    clipped = [0, 7, 8, 9, 40, 41]
    obs[clipped, 10] = 10.0 + rng.normal(0.0, 0.01, len(clipped))  # the foot at the clip, plus sensor noise
    import gymnasium as gym
    model = gym.make(spec.env_id).unwrapped.model
    problem = CalibrationProblem(spec, Recording([obs], [np.zeros((100, 3))]), [parse_param("body_mass/torso", model)],
                                 window=10, max_delay=0, min_windows=False)
    try:
        starts = problem._starts
        assert np.all(np.abs(starts[:, 5:]) < 9.9)
        # Windows shift to the next known state instead of being dropped (9 windows, not 8).
        assert problem.n_windows == 9
    finally:
        problem.close()


def test_start_smoothing_averages_out_position_noise_but_not_the_motion():
    """Positions carried along the velocities: noise drops by about sqrt(2K+1), a curving path is followed."""
    from sim2real.calibration.fit import Recording

    base = load_spec("hopper")
    spec = base.model_copy(update={"calibration": base.calibration.model_copy(update={"start_smoothing": 4})})
    import gymnasium as gym
    model = gym.make(spec.env_id).unwrapped.model
    dt = model.opt.timestep * 4  # Hopper's control step
    t = np.arange(300) * dt
    rng = np.random.default_rng(0)
    # A drifting, fast-curving path: a plain mean of neighbours (no integration), or a wrong sign, is far off on it.
    truth = np.stack([1.25 + 1.0 * t + 0.1 * np.sin(20 * t + i) for i in range(5)], axis=1)  # z, angle, three joints
    speed = np.stack([1.0 + 2.0 * np.cos(20 * t + i) for i in range(5)], axis=1)
    obs = np.concatenate([truth + rng.normal(0, 0.01, truth.shape), np.zeros((300, 1)),  # x velocity: not needed
                          speed + rng.normal(0, 0.01, speed.shape)], axis=1)
    obs[150, 6] = 10.0  # one clipped velocity of the first entry: integrating across it would carry samples wrongly
    problem = CalibrationProblem(spec, Recording([obs], [np.zeros((299, 3))]), [parse_param("body_mass/torso", model)],
                                 window=10, max_delay=0, min_windows=False)
    try:
        carried = problem._carried_positions(obs)
        error, raw = carried - truth, obs[:, :5] - truth
        assert error.std() < 0.45 * raw.std()  # 9 samples: ~1/3 of the noise (measured 0.33; no integration 0.74)
        assert abs(error.mean()) < 0.003
        assert np.abs(error[146:155, 0]).max() < 0.02  # around the clipped sample (integrated across it: 0.03)
    finally:
        problem.close()


@pytest.mark.slow
def test_calibrate_strategy_counts_recording_against_the_budget(tmp_path):
    from sim2real.learning.pretrain import PretrainConfig, pretrain
    from sim2real.transfer.run import TransferConfig, transfer

    from .conftest import DATA, TINY

    # A delay is only identifiable from commands that vary: this tiny policy's do (the shared fixture's,
    # pretrained on the batched stepper, happens to command ~0, and then every delay fits alike).
    policy = pretrain(PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), steps=256, eval_every=128, eval_episodes=1,
                                     checkpoint_every=128, overrides=TINY, stepper="gym"), out=tmp_path / "policy")
    cfg = TransferConfig(policy=str(policy), target="heavy", strategy="calibrate", budget=1500,
                         calibrate_episodes=8, calibrate_sim_steps=256, eval_episodes=1, eval_every=500,
                         overrides={"n_steps": 128, "batch_size": 64})
    run = transfer(cfg, tmp_path / "run", quiet=True)
    result = json.loads((run / "result.json").read_text())
    recorded = result["target_steps"]["recording"]
    logged = sum(e.steps for e in read_log(run / "calibration") if e.phase == "record")
    assert recorded == logged > 0
    assert recorded + result["target_steps"]["training"] >= 1500
    assert (run / "calibration" / "calibrated.yaml").exists() and (run / "calibration" / "sim" / "model.zip").exists()
    # The log holds commands, never the world's delayed action: the fit sees (and finds) the delay.
    assert all(e.applied is None for e in read_log(run / "calibration"))
    assert json.loads((run / "calibration" / "calibration.json").read_text())["delay"] == 1
    rows = (run / "evaluations.csv").read_text().splitlines()[1:]
    recorded_return = np.mean([e.rewards.sum() for e in read_log(run / "calibration")])
    # Step 0: the pretrained policy as the recording measured it; then the adapted policy before any fine-tuning.
    assert rows[0].split(",") == ["0", f"{recorded_return:.6g}"]
    assert int(rows[1].split(",")[0]) == recorded
    # A study report links the calibration with what it fitted.
    import shutil

    from sim2real.report import calibration_lines
    study = tmp_path / "study"
    shutil.copytree(run, study / "runs" / "heavy" / "calibrate" / "s0")
    lines = calibration_lines(study)
    assert "runs/heavy/calibrate/s0/calibration/report.html" in lines[2] and "delay 1 (truth 1)" in lines[2]


def test_obs_bias_recovers_a_constant_sensor_offset(known_recording, tmp_path):
    """A constant offset on the pole-angle sensor, added to the log: --obs-bias fits it and explains more."""
    import shutil

    spec_path, data = known_recording
    biased = tmp_path / "biased"
    shutil.copytree(data, biased)
    offset = np.array([0.0, -0.015, 0.0, 0.0])
    lines = []
    for line in (data / "transitions.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "obs" in row:
            row["obs"] = (np.array(row["obs"]) + offset).tolist()
        lines.append(json.dumps(row))
    (biased / "transitions.jsonl").write_text("\n".join(lines) + "\n")
    spec = load_spec_file(spec_path)
    plain = calibrate(spec, biased, tmp_path / "plain", delay=2, offsets=False)
    fitted = calibrate(spec, biased, tmp_path / "bias", delay=2, obs_bias=True, offsets=False)
    assert fitted.values["obs_bias/1"] == pytest.approx(-0.015, abs=0.003)
    assert fitted.rms_after < plain.rms_after
    assert fitted.values["actuator_gear/all"] == pytest.approx(0.5, rel=0.05)


def _shifted_log(data: Path, out: Path, offsets: np.ndarray) -> Path:
    """A copy of a recording with episode i's observations shifted by ``offsets[i]`` (a sensor re-zeroed per session)."""
    import shutil

    shutil.copytree(data, out)
    episodes = sorted({json.loads(line)["episode"] for line in (data / "transitions.jsonl").read_text().splitlines()
                       if "obs" in json.loads(line)})
    index = {e: i for i, e in enumerate(episodes)}
    lines = []
    for line in (data / "transitions.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "obs" in row:
            row["obs"] = (np.array(row["obs"]) + offsets[index[row["episode"]]]).tolist()
        lines.append(json.dumps(row))
    (out / "transitions.jsonl").write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.slow
def test_episode_offsets_are_found_and_removed(known_recording, tmp_path):
    """Each episode's pole-angle sensor off by its own constant: the fit finds each offset and, without them in
    the data, the physics again; ignoring them bends the physics."""
    spec_path, data = known_recording
    spec = load_spec_file(spec_path)
    n = len({e.episode for e in read_log(data)})
    offsets = np.zeros((n, 4))
    offsets[:, 1] = np.random.default_rng(0).normal(0.0, 0.03, n)
    shifted = _shifted_log(data, tmp_path / "shifted", offsets)
    ignored = calibrate(spec, shifted, tmp_path / "ignored", delay=2, offsets=False)
    fitted = calibrate(spec, shifted, tmp_path / "fitted", delay=2, offsets=True)
    found = np.array(fitted.offsets)
    assert found.shape == (n, 2)  # the position entries: cart and pole
    used = np.abs(found[:, 1]) > 0  # episodes shorter than one window have nothing to fit
    assert used.sum() >= n // 2
    # Short episodes (a few windows each) give each offset only a few windows of evidence: close, not exact.
    assert np.corrcoef(found[used, 1], offsets[used, 1])[0, 1] > 0.95
    assert np.abs(found[used, 1] - offsets[used, 1]).mean() < 0.005
    assert fitted.rms_after < 0.5 * ignored.rms_after

    def error(r):
        return max(abs(r.values["body_mass/pole"] / 1.5 - 1), abs(r.values["actuator_gear/all"] / 0.5 - 1))

    # Measured: pole mass 25% light ignoring the offsets, 8% light with them (two rounds).
    assert error(fitted) < 0.1 and error(fitted) < 0.5 * error(ignored)
    assert json.loads((tmp_path / "fitted" / "calibration.json").read_text())["offsets"] == fitted.offsets
