"""One subprocess smoke test per CLI verb, plus user errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = str(ROOT / "tests" / "data" / "pendulum_norm.yaml")


def run(*args, cwd=None, check=True):
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "sim2real", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_envs_lists_tasks():
    out = run("envs").stdout
    for task in ("hopper", "walker2d", "half_cheetah", "inverted_pendulum"):
        assert task in out


def test_piped_tables_never_cut_the_names_a_user_types():
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # piped, as `sim2real envs | cat`
    for args in (["envs"], ["envs", "inverted_pendulum"]):
        out = subprocess.run([sys.executable, "-m", "sim2real", *args], capture_output=True, text=True, env=env,
                             timeout=300).stdout
        assert "…" not in out
    assert "sim2real/InvertedPendulum-real-v0" in out


def test_envs_task_shows_parameters_and_worlds():
    out = run("envs", "hopper").stdout
    assert "body_mass" in out and "torso" in out and "3.665" in out
    assert "very_heavy_torso" in out and "3.665 -> 6.231" in out
    # MuJoCo takes the larger of two geoms' frictions: per-geom draws bias the contact's; the table says so.
    assert "max of two draws" in " ".join(out.split())


def test_envs_task_says_how_episodes_are_chosen_and_what_the_sim_rewards(tmp_path):
    import yaml

    raw = yaml.safe_load((ROOT / "sim2real" / "envs" / "hopper.yaml").read_text())
    raw["randomization"].update(sampling={"nominal": 0.25, "hard": 0.35}, task_variant="slow")
    (tmp_path / "hopper.yaml").write_text(yaml.safe_dump(raw))
    out = run("envs", str(tmp_path / "hopper.yaml")).stdout
    assert "25% nominal world, 35% replaying one of the worst 20% of the last 2,000" in out
    assert "sim world's reward: task variant 'slow' (target_speed)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["envs", "hoper"], "unknown task 'hoper'"),
        (["pretrain", "hopper", "--eval-world", "moon", "--steps", "10"], "unknown target world 'moon'"),
        (["transfer", "/nonexistent"], "no such model"),
        (["pretrain", "hopper", "--set", "oops"], "expected KEY=VALUE"),
        (["pretrain", "hopper", "--eval-episodes", "0"], "--eval-episodes 0: must be at least 1"),
        (["evaluate", "policies/hopper-dr", "--episodes", "0"], "--episodes 0: must be at least 1"),
        (["pretrain", SPEC, "--steps", "64", "--set", "foo=1"], "hyperparameter(s) ['foo'] are not PPO arguments"),
        (["pretrain", SPEC, "--steps", "0"], "--steps 0: must be at least 1"),
        (["pretrain", SPEC, "--checkpoint-every", "0"], "--checkpoint-every 0: must be at least 1"),
        (["pretrain", SPEC, "--stepper", "batch", "--subproc"], "does not combine with --stepper batch"),
        (["bench", "learn", "--summarise", "--out", "nothing_here"], "no log to summarise"),
        (["bench", "steps", "--n", "0"], "--n 0: must be at least 1"),
        (["robot-server", "inverted_pendulum", "--port", "70000"], "--port 70000: a TCP port is 1..65535"),
        (["bench", "learn", "--steps", "0"], "--steps 0: must be at least 1"),
        (["transfer", str(ROOT / "policies" / "inverted_pendulum-dr"), "--import", "no_such_module_xyz"],
         "--import no_such_module_xyz: No module named 'no_such_module_xyz'"),
        (["transfer", str(ROOT / "policies" / "inverted_pendulum-dr"), "--target", "badrobot:make"],
         "target badrobot:make: the factory raised RuntimeError: robot is unplugged"),
        (["transfer", str(ROOT / "policies" / "inverted_pendulum-dr"), "--target", "badrobot:not_an_env"],
         "target badrobot:not_an_env: the factory returned int, not a gymnasium.Env"),
    ],
)
def test_user_errors_have_no_traceback(args, message, tmp_path):
    (tmp_path / "badrobot.py").write_text("def make():\n    raise RuntimeError('robot is unplugged')\n\n"
                                          "def not_an_env():\n    return 3\n")
    proc = run(*args, check=False, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_bench_steps_writes_its_table(tmp_path):
    proc = run("bench", "steps", "--tasks", "inverted_pendulum", "--n", "2", "--repeats", "1", "--steps", "64",
               "--out", str(tmp_path))
    assert "| inverted_pendulum | batched x2, 1 thread (DR + effects) |" in proc.stdout
    assert (tmp_path / "bench_steps.json").exists() and (tmp_path / "bench_steps.md").exists()


def test_pretrain_then_transfer(tmp_path):
    tiny = ["--set", "n_steps=64", "--set", "batch_size=32", "--set", "n_epochs=1"]
    run("pretrain", SPEC, "--steps", "128", "--eval-every", "128", "--out", str(tmp_path / "pre"), *tiny)
    assert (tmp_path / "pre" / "model.zip").exists() and (tmp_path / "pre" / "obs_rms.npz").exists()
    proc = run("pretrain", SPEC, "--steps", "128", "--out", str(tmp_path / "pre"), check=False)
    assert proc.returncode == 2 and "already holds a finished run" in proc.stderr
    before = (tmp_path / "pre" / "model.zip").read_bytes()
    proc = run("pretrain", SPEC, "--steps", "128", "--out", str(tmp_path / "pre"), "--resume", check=False)
    assert proc.returncode == 2 and "is finished (model.zip exists); nothing to resume" in proc.stderr
    assert (tmp_path / "pre" / "model.zip").read_bytes() == before
    out = run("transfer", str(tmp_path / "pre"), "--target", "heavy", "--strategy", "freeze", "--steps", "64",
              "--eval-every", "64", "--eval-episodes", "1", "--out", str(tmp_path / "tr")).stdout
    assert "mean return" in out
    assert json.loads((tmp_path / "tr" / "result.json").read_text())["strategy"] == "freeze"


def test_evaluate_reports_return_length_and_distance(tmp_path):
    # The shipped Hopper policy hops forward: metres, not centimetres; the pendulum has no x-velocity.
    out = run("evaluate", str(ROOT / "policies" / "hopper-dr"), "--targets", "nominal", "--episodes", "1",
              "--json", str(tmp_path / "hopper.json"))
    assert "distance forward" in out.stdout
    hopper = json.loads((tmp_path / "hopper.json").read_text())["worlds"]["nominal"]
    assert 0 < hopper["lengths"][0] <= 1000 and hopper["distances"][0] > 3.0  # metres; it may fall before 1,000
    run("evaluate", str(ROOT / "policies" / "inverted_pendulum-dr"), "--targets", "nominal", "real",
        "--episodes", "2", "--json", str(tmp_path / "ip.json"))
    ip = json.loads((tmp_path / "ip.json").read_text())["worlds"]
    assert set(ip) == {"nominal", "real"} and ip["real"]["distances"] is None and len(ip["real"]["returns"]) == 2


def test_every_argument_of_every_command_has_help():
    import argparse

    from sim2real.cli import build_parser

    parser = build_parser(None)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {a.dest}" for name, p in sub.choices.items() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not missing, f"arguments without help: {missing}"


def test_progress_redraws_within_an_80_column_terminal(monkeypatch):
    """A redrawn line wider than the terminal wraps, and each redraw then stacks a new row."""
    import io

    from sim2real.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("COLUMNS", "80")
    term = Terminal()
    p = Progress(2_000_000, "pretrain hopper (DR)", stream=term)
    for done in (10_000, 20_000):
        p._last_print = 0.0
        p.update(done, "sim 1167  nominal 1778  real 1027  heavy_torso 1500")
    draws = [d for d in term.getvalue().split("\r\033[K") if d]
    assert len(draws) == 2 and all(len(d) < 80 for d in draws) and draws[0].startswith("pretrain hopper (DR): 10,000")
