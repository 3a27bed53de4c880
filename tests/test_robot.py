"""A plugged-in robot: one instance, every step counted and logged, a safety layer, a way to stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import tests.robot_stub as stub
from sim2real.robot.log import LOG_NAME, TransitionLog, read_log, transitions
from sim2real.robot.safety import EmergencyStop, SafetyConfig, SafetyLayer, load_safety
from sim2real.robot.session import RobotSession
from sim2real.spec import SpecError
from sim2real.transfer.run import TransferConfig, transfer

ROOT = Path(__file__).resolve().parents[1]
DATA_SPEC = ROOT / "tests" / "data" / "pendulum_norm.yaml"


@pytest.fixture(autouse=True)
def _fresh_robot():
    stub.OneRobot.live, stub.OneRobot.steps = 0, 0
    yield
    assert stub.OneRobot.live == 0, "a run left the robot's env open"


def test_a_plug_in_finetune_runs_on_one_instance_and_counts_every_step(tiny_pretrained, tmp_path):
    cfg = TransferConfig(policy=str(tiny_pretrained), target="tests.robot_stub:OneRobot", strategy="finetune",
                         budget=256, eval_every=128, eval_episodes=2)
    run = transfer(cfg, out=tmp_path / "robot", quiet=True)  # a second instance would raise in OneRobot
    result = json.loads((run / "result.json").read_text())
    steps, robot = result["target_steps"], result["robot"]
    assert steps["training"] == 256 == robot["robot_steps"]["train"]
    assert steps["evaluation"] == robot["robot_steps"]["eval"] > 0
    # Every command the robot received is accounted for: training plus the stated evaluation, nothing else.
    assert stub.OneRobot.steps == steps["total"] == robot["robot_steps"]["total"]
    episodes = read_log(run)
    assert sum(e.steps for e in episodes) == stub.OneRobot.steps
    assert {e.phase for e in episodes} == {"train", "eval"}
    assert sum(e.steps for e in episodes if e.phase == "eval") == steps["evaluation"]
    # Evaluations are at rollout boundaries: the curve has each point once.
    rows = (run / "evaluations.csv").read_text().split()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [0, 128, 256]


def test_zero_shot_on_a_robot_logs_its_evaluation(tiny_pretrained, tmp_path):
    cfg = TransferConfig(policy=str(tiny_pretrained), target="tests.robot_stub:OneRobot", strategy="zero-shot",
                         eval_episodes=2)
    run = transfer(cfg, out=tmp_path / "zs", quiet=True)
    result = json.loads((run / "result.json").read_text())
    assert result["target_steps"]["training"] == 0
    assert result["robot"]["robot_steps"]["eval"] == stub.OneRobot.steps == result["target_steps"]["evaluation"]
    assert [e.phase for e in read_log(run)] == ["eval", "eval"]


def test_budget_can_include_evaluation(tiny_pretrained, tmp_path):
    cfg = TransferConfig(policy=str(tiny_pretrained), target="tests.robot_stub:OneRobot", strategy="finetune",
                         budget=1000, eval_every=128, eval_episodes=1, budget_includes_eval=True,
                         target_kwargs={"max_episode_steps": 20})
    run = transfer(cfg, out=tmp_path / "capped", quiet=True)
    result = json.loads((run / "result.json").read_text())
    # Evaluation episodes last at most 20 steps here, so the reserve kept for the final one is enough.
    assert result["robot"]["robot_steps"]["total"] <= 1000
    assert result["target_steps"]["training"] < 1000


def test_target_kwargs_reach_the_factory(tiny_pretrained, tmp_path):
    cfg = TransferConfig(policy=str(tiny_pretrained), target="tests.robot_stub:OneRobot", strategy="zero-shot",
                         eval_episodes=1, target_kwargs={"max_episode_steps": 7})
    run = transfer(cfg, out=tmp_path / "kw", quiet=True)
    assert json.loads((run / "result.json").read_text())["robot"]["robot_steps"]["eval"] <= 7


def test_an_env_without_an_episode_limit_is_a_clear_error(tiny_pretrained, tmp_path):
    cfg = TransferConfig(policy=str(tiny_pretrained), target="tests.robot_stub:Endless", strategy="zero-shot",
                         eval_episodes=1)
    with pytest.raises(SpecError, match="never ends an episode.*--max-episode-steps"):
        transfer(cfg, out=tmp_path / "endless", quiet=True)
    cfg.max_episode_steps = 30
    run = transfer(cfg, out=tmp_path / "limited", quiet=True)
    assert json.loads((run / "result.json").read_text())["robot"]["robot_steps"]["eval"] == 30


def test_log_survives_a_cut_line_and_a_reopen(tmp_path):
    path = tmp_path / LOG_NAME
    env = TransitionLog(gym.make("InvertedPendulum-v5", max_episode_steps=5), path)
    env.reset(seed=0)
    for _ in range(5):
        env.step(np.array([0.1], dtype=np.float32))
    env.reset(seed=1)
    env.step(np.array([0.2], dtype=np.float32))
    env._file.flush()
    with path.open("a") as f:
        f.write('{"kind": "step", "episode": 1, "t": 1, "ob')  # a kill in the middle of a line
    env._file.close()
    env = TransitionLog(gym.make("InvertedPendulum-v5", max_episode_steps=5), path)  # a resumed run
    assert env.episode == 2
    env.reset(seed=2)
    env.step(np.array([0.3], dtype=np.float32))
    env.close()
    episodes = read_log(path)
    assert [e.episode for e in episodes] == [0, 1, 2]
    assert [e.steps for e in episodes] == [5, 1, 1]
    assert [e.complete for e in episodes] == [True, False, True]
    assert episodes[0].observations.shape == (6, 4) and episodes[0].reason == "truncated"
    np.testing.assert_array_equal(episodes[2].actions, [[np.float32(0.3)]])
    flat = transitions(episodes)
    assert flat["obs"].shape == (7, 4) and np.array_equal(flat["obs"][1:5], flat["next_obs"][:4])


def test_safety_clips_limits_change_and_ends_on_a_nan_observation(tmp_path):
    robot = stub.Glitchy(nan_at=5)
    env = SafetyLayer(robot, SafetyConfig(action_high=0.5, max_action_change=0.2, stop_signal=None), tmp_path)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([2.0], dtype=np.float32))
    assert info["applied_action"][0] == pytest.approx(0.2)  # change limited from 0 to 0.2
    for expected in (0.4, 0.5, 0.5):
        _, _, term, trunc, info = env.step(np.array([2.0], dtype=np.float32))
        assert info["applied_action"][0] == pytest.approx(expected)  # then clipped at action_high
    obs, _, term, trunc, info = env.step(np.array([0.5], dtype=np.float32))
    assert trunc and not term and info["stop_reason"] == "non-finite observation or reward"
    assert np.all(np.isfinite(obs))
    # The safe action ("hold": the last applied action) was sent once after the bad reading.
    assert len(robot.applied) == 6 and robot.applied[-1][0] == pytest.approx(0.5)
    assert env.counts["non-finite observation or reward"] == 1 and env.counts["action_limited"] == 4


def test_observation_bounds_and_zero_safe_action(tmp_path):
    robot = stub.Glitchy(nan_at=10_000)
    env = SafetyLayer(robot, SafetyConfig(obs_low=-0.01, obs_high=0.01, on_violation="zero", stop_signal=None),
                      tmp_path)
    env.reset(seed=0)
    for _ in range(100):
        obs, _, _, trunc, info = env.step(np.array([3.0], dtype=np.float32))
        if trunc:
            break
    assert info["stop_reason"] == "observation outside its declared bounds"
    assert robot.applied[-1][0] == 0.0


def test_stop_file_stops_a_robot_run_and_keeps_everything(tiny_pretrained, tmp_path):
    calls = {"n": 0}

    def button() -> bool:  # a hardware stop pressed after 150 steps
        calls["n"] += 1
        return calls["n"] > 150

    cfg = TransferConfig(policy=str(tiny_pretrained), target="tests.robot_stub:OneRobot", strategy="finetune",
                         budget=512, eval_every=10_000, eval_episodes=1)
    with pytest.raises(EmergencyStop, match="stop callable"):
        transfer(cfg, out=tmp_path / "stopped", quiet=True, stop=button)
    run = tmp_path / "stopped"
    assert not (run / "result.json").exists()  # not finished
    assert list((run / "checkpoints").glob("step_*.zip"))  # the policy so far is kept
    assert sum(e.steps for e in read_log(run)) == stub.OneRobot.steps  # every step that reached the robot


def test_a_stopped_robot_run_resumes_to_the_same_total(tiny_pretrained, tmp_path, no_unpickling):
    calls = {"n": 0}

    def button() -> bool:
        calls["n"] += 1
        return calls["n"] > 300

    cfg = TransferConfig(policy=str(tiny_pretrained), target="tests.robot_stub:OneRobot", strategy="finetune",
                         budget=512, eval_every=128, eval_episodes=1)
    run = tmp_path / "resumed"
    with pytest.raises(EmergencyStop):
        transfer(cfg, out=run, quiet=True, stop=button)
    with pytest.raises(FileExistsError, match="--resume"):
        transfer(cfg, out=run, quiet=True)  # never restarted over an unfinished run by accident
    before = stub.OneRobot.steps
    run = transfer(cfg, out=run, quiet=True, resume=True)  # weights and optimiser read without unpickling
    result = json.loads((run / "result.json").read_text())
    assert result["target_steps"]["training"] == 512
    steps = [int(r.split(",")[0]) for r in (run / "evaluations.csv").read_text().split()[1:]]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 512  # no duplicate curve points
    # The robot's count includes the steps before the stop; the log holds every one of them.
    assert sum(e.steps for e in read_log(run)) == stub.OneRobot.steps == result["robot"]["robot_steps"]["total"]
    assert stub.OneRobot.steps > before
    assert len(json.loads((run / "run.json").read_text())["resumed"]) == 1


def test_stop_signal_is_an_emergency_stop(tmp_path):
    env = SafetyLayer(gym.make("InvertedPendulum-v5", max_episode_steps=50), SafetyConfig(), tmp_path)
    env.reset(seed=0)
    os.kill(os.getpid(), signal.SIGUSR1)
    _, _, _, trunc, info = env.step(np.array([0.0], dtype=np.float32))
    assert trunc and "signal SIGUSR1" in info["stop_reason"]
    with pytest.raises(EmergencyStop):
        env.reset()
    env.close()  # restores the previous handler
    assert signal.getsignal(signal.SIGUSR1) is not env._on_signal


def test_control_rate_is_kept_by_wall_clock(tmp_path):
    env = SafetyLayer(gym.make("InvertedPendulum-v5", max_episode_steps=50),
                      SafetyConfig(control_hz=200, stop_signal=None), tmp_path)
    env.reset(seed=0)
    t0 = time.monotonic()
    for _ in range(20):
        env.step(np.array([0.0], dtype=np.float32))
    assert time.monotonic() - t0 >= 19 / 200  # 20 ticks are at least 19 periods apart


def test_bad_safety_file_names_file_field_and_value(tmp_path):
    bad = tmp_path / "limits.yaml"
    bad.write_text("on_violation: explode\nmax_action_change: -1\n")
    with pytest.raises(SpecError) as err:
        load_safety(bad)
    text = str(err.value)
    assert str(bad) in text and "on_violation" in text and "explode" in text and "max_action_change" in text


def test_session_counts_safe_actions_as_robot_steps(tmp_path):
    session = RobotSession(stub.Glitchy(nan_at=3), tmp_path, SafetyConfig(stop_signal=None))
    session.env.reset(seed=0)
    for _ in range(3):
        session.env.step(np.array([0.0], dtype=np.float32))
    stats = session.stats()
    session.close()
    assert stats["robot_steps"]["total"] == 4  # three policy steps and one safe action
    assert stats["interventions"]["non-finite observation or reward"] == 1
    assert read_log(tmp_path)[0].reason == "non-finite observation or reward"


@pytest.mark.slow
def test_kill_9_at_ten_moments_loses_nothing_and_resume_reaches_the_same_total(tiny_pretrained, tmp_path):
    """kill -9 of the trainer at 10 random moments of one plug-in transfer, resuming after each.

    Every step the robot took is in the log (but the one in flight), and the last resume ends with
    the full budget of training steps and a curve without repeated steps.
    """
    rng = np.random.default_rng(0)
    run, count = tmp_path / "run", tmp_path / "count"

    def launch(resume: bool) -> subprocess.Popen:
        code = (f"import tests.robot_stub as s\n"
                f"class Counted(s.OneRobot):\n"
                f"    def step(self, a):\n"
                f"        out = super().step(a)\n"
                f"        with open({str(count)!r}, 'a') as f: f.write('.')\n"
                f"        return out\n"
                f"s.Counted = Counted\n"
                f"from sim2real.transfer.run import TransferConfig, transfer\n"
                f"transfer(TransferConfig(policy={str(tiny_pretrained)!r}, target='tests.robot_stub:Counted', "
                f"budget=20000, eval_every=2000, eval_episodes=1), out={str(run)!r}, quiet=True, resume={resume})\n")
        return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True)

    kills = 0
    for delay in rng.uniform(0.2, 3.0, size=10):
        steps_before = len(count.read_text()) if count.exists() else 0
        proc = launch(resume=run.exists())
        deadline = time.monotonic() + 120
        while (len(count.read_text()) if count.exists() else 0) == steps_before and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)  # start-up takes a few seconds; the kill lands once the robot moves
        time.sleep(delay)
        if proc.poll() is not None:  # finished before this kill
            assert proc.returncode == 0, proc.stderr.read()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        robot_steps = len(count.read_text())
        logged = sum(e.steps for e in read_log(run))
        assert robot_steps - kills <= logged <= robot_steps  # each kill may cut off the one step in flight
    assert kills >= 5
    if not (run / "result.json").exists():
        proc = launch(resume=True)
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    result = json.loads((run / "result.json").read_text())
    uninterrupted = -(-20000 // 64) * 64  # PPO stops at the end of a 64-step rollout, killed or not: 20,032
    assert result["target_steps"]["training"] == uninterrupted
    steps = [int(r.split(",")[0]) for r in (run / "evaluations.csv").read_text().split()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == uninterrupted
    # At most the step in flight at each kill is missing from the log.
    assert len(count.read_text()) - kills <= sum(e.steps for e in read_log(run)) <= len(count.read_text())


def test_log_exports_to_minari_and_the_cli_summarises_it(tiny_pretrained, tmp_path):
    minari = pytest.importorskip("minari")
    pytest.importorskip("h5py")
    cfg = TransferConfig(policy=str(tiny_pretrained), target="tests.robot_stub:OneRobot", strategy="finetune",
                         budget=128, eval_every=64, eval_episodes=1)
    run = transfer(cfg, out=tmp_path / "run", quiet=True)
    proc = subprocess.run([sys.executable, "-m", "sim2real", "log", str(run), "--minari", "sim2real/test-v0",
                           "--minari-dir", str(tmp_path / "datasets")], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "eval" in proc.stdout and "Minari dataset sim2real/test-v0" in proc.stdout
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path / "datasets")
    try:
        dataset = minari.load_dataset("sim2real/test-v0")
    finally:
        os.environ.pop("MINARI_DATASETS_PATH")
    logged = [e for e in read_log(run) if e.steps]
    assert dataset.total_steps == sum(e.steps for e in logged)
    first = next(dataset.iterate_episodes())
    np.testing.assert_allclose(first.observations, logged[0].observations.astype(np.float32))


def test_a_resumed_off_policy_robot_run_refills_its_buffer_from_the_log(tmp_path):
    from sim2real.learning.pretrain import PretrainConfig, pretrain
    from tests.conftest import DATA

    sac = pretrain(PretrainConfig(task=str(DATA / "pendulum_norm.yaml"), algo="sac", steps=64, eval_every=64,
                                  eval_episodes=1, checkpoint_every=64,
                                  overrides={"learning_starts": 32, "batch_size": 16,
                                             "policy_kwargs": {"net_arch": [16, 16]}}, inputs={"last_action": True}),
                   out=tmp_path / "sac")
    calls = {"n": 0}

    def button() -> bool:
        calls["n"] += 1
        return calls["n"] > 120

    cfg = TransferConfig(policy=str(sac), target="tests.robot_stub:OneRobot", strategy="finetune", budget=200,
                         eval_every=1000, eval_episodes=1)
    run = tmp_path / "run"
    with pytest.raises(EmergencyStop):
        transfer(cfg, out=run, quiet=True, stop=button)
    logged_train = sum(e.steps for e in read_log(run) if e.phase == "train")
    transfer(cfg, out=run, quiet=True, resume=True)
    resumed = json.loads((run / "run.json").read_text())["resumed"]
    # Everything the robot did in training before the stop, the steps after the last checkpoint included.
    assert resumed[0]["replay_refilled"] == logged_train > 0


def test_a_run_in_use_is_refused(tiny_pretrained, tmp_path):
    from sim2real.learning.artifacts import RunLock

    cfg = TransferConfig(policy=str(tiny_pretrained), target="tests.robot_stub:OneRobot", strategy="zero-shot",
                         eval_episodes=1)
    with RunLock(tmp_path / "busy"):  # another trainer holds the folder
        with pytest.raises(FileExistsError, match="is in use by pid"):
            transfer(cfg, out=tmp_path / "busy", quiet=True)
    transfer(cfg, out=tmp_path / "busy", quiet=True)  # released: the run goes ahead


def test_a_target_that_raises_ends_episodes_and_stops_cleanly_after_max_faults(tiny_pretrained, tmp_path):
    limits = tmp_path / "limits.yaml"
    limits.write_text("max_faults: 3\nstop_signal: null\n")
    cfg = TransferConfig(policy=str(tiny_pretrained), target="tests.robot_stub:Flaky", strategy="finetune",
                         budget=64, eval_every=1000, eval_episodes=1, safety=str(limits))
    run = transfer(cfg, out=tmp_path / "ok", quiet=True)  # fewer than 4 faults: the run finishes
    result = json.loads((run / "result.json").read_text())
    faults = result["robot"]["interventions"].get("step raised", 0)
    assert 1 <= faults <= 3
    reasons = [r for e in read_log(run) for r in [e.reason or ""]]
    assert sum(r.startswith("step raised OSError: serial frame lost") for r in reasons) == faults
    cfg.budget = 2000
    with pytest.raises(EmergencyStop, match="raised 4 times"):
        transfer(cfg, out=tmp_path / "stops", quiet=True)
    assert list((tmp_path / "stops" / "checkpoints").glob("step_*.zip"))


def test_reset_hook_runs_before_each_reset_once_the_robot_has_moved(tmp_path):
    homed = []
    env = SafetyLayer(gym.make("InvertedPendulum-v5", max_episode_steps=5), SafetyConfig(stop_signal=None), tmp_path,
                      reset_hook=lambda: homed.append(True))
    env.reset(seed=0)
    assert len(homed) == 1  # the robot's pose before the first reset is unknown: home it
    env.reset(seed=1)
    assert len(homed) == 1  # nothing moved since: no second homing (or a second prompt to the operator)
    env.step(np.zeros(1, np.float32))
    env.reset(seed=2)
    assert len(homed) == 2


@pytest.mark.parametrize("excitation", ["random", "chirp"])
def test_record_an_excitation_within_the_limits(tmp_path, excitation):
    from sim2real.robot.record import RecordConfig, record

    limits = tmp_path / "limits.yaml"
    limits.write_text("action_high: 0.5\naction_low: -0.5\nstop_signal: null\n")
    cfg = RecordConfig(task=str(DATA_SPEC), target="tests.robot_stub:OneRobot", excitation=excitation, episodes=2,
                       safety=str(limits))
    out = record(cfg, tmp_path / "rec", target_kwargs={"max_episode_steps": 30})
    episodes = read_log(out)
    assert [e.phase for e in episodes] == ["record", "record"] and all(e.complete for e in episodes)
    actions = np.concatenate([e.actions for e in episodes])
    assert np.all(np.abs(actions) <= 0.5 + 1e-6) and actions.std() > 0.05  # inside the limits, and moving
    summary = json.loads((out / "record.json").read_text())
    assert summary["robot_steps"]["record"] == sum(e.steps for e in episodes) == stub.OneRobot.steps
    with pytest.raises(FileExistsError):
        record(cfg, tmp_path / "rec", target_kwargs={"max_episode_steps": 30})  # a recording is never overwritten


def test_record_with_a_policy_and_clear_errors(tiny_pretrained, tmp_path):
    from sim2real.robot.record import RecordConfig, record

    out = record(RecordConfig(policy=str(tiny_pretrained), target="heavy", episodes=2), tmp_path / "rec")
    assert len(read_log(out)) == 2
    with pytest.raises(SpecError, match="exactly one"):
        record(RecordConfig(target="heavy", episodes=2), tmp_path / "none")
    with pytest.raises(SpecError, match="needs --task"):
        record(RecordConfig(excitation="chirp"), tmp_path / "notask")


def test_target_kwargs_take_several_pairs_after_one_flag():
    from sim2real.cli import build_parser, parse_overrides

    args = build_parser("transfer").parse_args(["transfer", "policies/hopper-dr", "--target", "sim2real.robot.remote:RemoteRobotEnv",
                                                "--target-kwargs", "address=tcp://127.0.0.1:5555", "token=s3cret",
                                                "--target-kwargs", "timeout_ms=500"])
    assert parse_overrides(args.target_kwargs) == {"address": "tcp://127.0.0.1:5555", "token": "s3cret",
                                                   "timeout_ms": 500}


def test_a_stop_file_left_behind_is_a_clear_error_not_an_instant_stop(tiny_pretrained, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "STOP").write_text("")
    cfg = TransferConfig(policy=str(tiny_pretrained), target="tests.robot_stub:OneRobot", strategy="zero-shot",
                         eval_episodes=1)
    with pytest.raises(FileExistsError, match="STOP exists .* remove it"):
        transfer(cfg, out=tmp_path / "run", quiet=True)
    assert stub.OneRobot.steps == 0
