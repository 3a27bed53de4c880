"""A tiny study end to end: metrics.json, report.md, report.html with images; resume semantics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim2real.study import StudyConfig, run_study
from tests.conftest import DATA

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def tiny_study(tiny_pretrained, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    cfg = StudyConfig(task=str(DATA / "pendulum_norm.yaml"), policy=str(tiny_pretrained), targets=["heavy"], strategies=["finetune", "scratch"], seeds=2,
                      budget=256, workers=2, eval_every=128, eval_episodes=1)
    run_study(cfg, out=out, quiet=True)
    return cfg, out


def test_study_writes_metrics_and_reports(tiny_study):
    _, out = tiny_study
    metrics = json.loads((out / "metrics.json").read_text())
    finetune = metrics["targets"]["heavy"]["strategies"]["finetune"]
    assert finetune["seeds"] == 2 and "area_ratio" in finetune and "prob_improvement" in finetune
    lo, hi = finetune["final_return_ci95"]
    assert lo <= finetune["final_return_iqm"] <= hi
    assert metrics["targets"]["heavy"]["case"]["case"] in (1, 2, 3, 4)
    md = (out / "report.md").read_text()
    assert "## Metrics" in md and "curves_heavy.png" in md and "Reproducibility" in md
    # What the target is and how runs were evaluated, from the spec the runs recorded.
    assert "- **heavy**:" in md and "body_mass (pole) x3" in md and "1 step(s) of action latency" in md
    assert "every 128 target steps: 1 episodes with deterministic actions" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2
    assert (out / "curves_heavy.png").stat().st_size > 1000
    # rliable's performance profile and probability-of-improvement figure, linked in the report.
    assert "rliable_heavy.png" in md and (out / "rliable_heavy.png").stat().st_size > 1000
    # The runs behind the numbers: counts, wall-clock, settings; and every evaluation as a tidy CSV.
    assert "| heavy | finetune | 2 | 0 |" in md and "lr_scale 0.1" in md and " min |" in md
    tidy = (out / "curves.csv").read_text().splitlines()
    assert tidy[0] == "target,strategy,seed,step,return"
    assert {tuple(r.split(",")[:3]) for r in tidy[1:]} == {("heavy", s, str(seed)) for s in ("finetune", "scratch")
                                                          for seed in (0, 1)}


def test_rerun_skips_finished_runs(tiny_study):
    cfg, out = tiny_study
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/*/s*/result.json")}
    assert len(stamps) == 4
    run_study(cfg, out=out, quiet=True)
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/*/s*/result.json")} == stamps


def test_killed_run_resumes_and_failed_run_is_set_aside_and_redone(tiny_study):
    cfg, out = tiny_study
    killed = out / "runs" / "heavy" / "finetune" / "s1"
    # What a kill mid-run leaves: checkpoints and a curve, no model.zip, no result.json.
    (killed / "result.json").unlink()
    (killed / "model.zip").unlink()
    failed = out / "runs" / "heavy" / "scratch" / "s1"
    (failed / "result.json").unlink()
    (failed / "error.txt").write_text("Traceback: the target raised")
    run_study(cfg, out=out, quiet=True)
    assert (killed / "result.json").exists()
    assert len(json.loads((killed / "run.json").read_text())["resumed"]) == 1  # continued, not redone
    steps = [int(r.split(",")[0]) for r in (killed / "evaluations.csv").read_text().split()[1:]]
    assert steps == sorted(set(steps))
    assert (failed / "result.json").exists() and not (failed / "error.txt").exists()
    kept = list((out / "_incomplete").glob("*/error.txt"))
    assert len(kept) == 1 and "the target raised" in kept[0].read_text()


def test_report_rebuilds_from_run_folders(tiny_study):
    from sim2real.report import build_report

    _, out = tiny_study
    (out / "report.md").unlink()
    build_report(out)
    assert (out / "report.md").exists()


def test_a_failing_run_is_recorded_not_raised(tmp_path):
    from sim2real.study import _run_one
    from sim2real.transfer.run import TransferConfig

    cfg = TransferConfig(policy="/nonexistent", target="heavy", budget=64, eval_every=64, eval_episodes=1)
    status = _run_one("/nonexistent", str(tmp_path / "r"), cfg)
    assert status["ok"] is False and "no such model" in status["error"]
    assert "Traceback" in (tmp_path / "r" / "error.txt").read_text()


@pytest.mark.slow
def test_study_on_ray_lands_runs_in_the_study_folder(tiny_pretrained, tmp_path):
    # A local Ray stands in for a cluster: the policy travels through the object store and each run
    # comes back as files, so nothing here relies on the workers sharing the driver's disk.
    pytest.importorskip("ray")
    cfg = StudyConfig(task=str(DATA / "pendulum_norm.yaml"), policy=str(tiny_pretrained), targets=["heavy"],
                      strategies=["zero-shot", "finetune"], seeds=1, budget=256, workers=2, eval_every=128,
                      eval_episodes=1, robustness=False, executor="ray")
    out = run_study(cfg, out=tmp_path / "ray", quiet=True)
    for strategy in ("zero-shot", "finetune"):
        run = out / "runs" / "heavy" / strategy / "s0"
        assert (run / "result.json").exists()
        assert json.loads((run / "run.json").read_text())["config"]["policy"] == str(tiny_pretrained)
    assert (run / "evaluations.csv").read_text().count("\n") >= 3  # steps 0, 128, 256
    metrics = json.loads((out / "metrics.json").read_text())
    assert "finetune" in json.dumps(metrics)
    assert not list((out / "runs" / "heavy").rglob(".*"))  # no half-unpacked leftovers


def test_unknown_executor_is_a_clear_error(tiny_pretrained, tmp_path):
    cfg = StudyConfig(task=str(DATA / "pendulum_norm.yaml"), policy=str(tiny_pretrained), targets=["heavy"],
                      strategies=["finetune"], seeds=1, budget=64, executor="slurm", robustness=False)
    with pytest.raises(ValueError, match="unknown executor 'slurm'; allowed: local, ray"):
        run_study(cfg, out=tmp_path / "x", quiet=True)


def test_a_study_passes_its_similarity_threshold_to_its_runs(tiny_pretrained, tmp_path):
    cfg = StudyConfig(task=str(DATA / "pendulum_norm.yaml"), policy=str(tiny_pretrained), targets=["heavy"],
                      strategies=["zero-shot", "auto"], seeds=1, budget=64, workers=1, eval_every=64,
                      eval_episodes=1, robustness=False, similarity_threshold=1.0)
    out = run_study(cfg, out=tmp_path / "sim", quiet=True)
    run = out / "runs" / "heavy" / "auto" / "s0"
    assert json.loads((run / "run.json").read_text())["config"]["similarity_threshold"] == 1.0
    decision = json.loads((run / "result.json").read_text())["decision"]
    metrics = json.loads((out / "metrics.json").read_text())
    # The run and the report classify with the same threshold, so they agree.
    assert decision["case"] == metrics["targets"]["heavy"]["case"]["case"] == 2


def test_report_keeps_the_threshold_the_study_recorded(tiny_study):
    from sim2real.report import build_report

    _, out = tiny_study
    study = json.loads((out / "study.json").read_text())
    study["config"]["threshold_fraction"] = 0.5
    (out / "study.json").write_text(json.dumps(study))
    build_report(out)
    assert json.loads((out / "metrics.json").read_text())["threshold_fraction"] == 0.5


def test_transfer_options_reach_every_run_and_bad_ones_fail_before_anything_is_written(tiny_pretrained, tmp_path):
    base = dict(task=str(DATA / "pendulum_norm.yaml"), policy=str(tiny_pretrained), targets=["heavy"],
                strategies=["finetune"], seeds=1, budget=64, workers=1, eval_every=64, eval_episodes=1,
                robustness=False)
    with pytest.raises(ValueError, match="transfer option 'lr_scal'"):
        run_study(StudyConfig(**base, transfer_options={"lr_scal": 0.3}), out=tmp_path / "bad", quiet=True)
    assert not (tmp_path / "bad").exists()
    out = run_study(StudyConfig(**base, transfer_options={"lr_scale": 0.3}), out=tmp_path / "ok", quiet=True)
    run = out / "runs" / "heavy" / "finetune" / "s0"
    assert json.loads((run / "run.json").read_text())["config"]["lr_scale"] == 0.3


@pytest.mark.parametrize("name", ["hopper-small", "hopper-grid-small"])
def test_sim2real_report_reproduces_a_committed_study(name, tmp_path):
    """The README quotes docs/results/<study>: rebuilding its report from its run folders gives the same numbers."""
    import shutil

    from sim2real.report import build_report

    committed = Path(__file__).resolve().parent.parent / "docs" / "results" / name
    assert (committed / "runs").exists(), f"{committed} keeps no run folders (the README says report rebuilds it)"
    copy = shutil.copytree(committed, tmp_path / name)
    (copy / "metrics.json").unlink()
    build_report(copy)
    before = json.loads((committed / "metrics.json").read_text())
    after = json.loads((copy / "metrics.json").read_text())
    for target, entry in before["targets"].items():
        for strategy, m in entry["strategies"].items():
            got = after["targets"][target]["strategies"][strategy]
            assert got["final_returns"] == m["final_returns"]
            assert got["final_return_iqm"] == pytest.approx(m["final_return_iqm"])
        assert after["targets"][target].get("case") == entry.get("case")
    html = (copy / "report.html").read_text()
    assert "**" not in html and "<strong>" in html  # rendered by Python-Markdown, not a hand-written converter
    assert html.count("<table>") == 2 and html.count("data:image/png;base64,") >= 2  # metrics and runs


def test_a_rerun_with_other_settings_is_refused_and_writes_nothing(tiny_study):
    cfg, out = tiny_study
    before = (out / "study.json").read_text()
    changed = StudyConfig(**{**cfg.__dict__, "budget": cfg.budget * 2})
    with pytest.raises(ValueError, match="budget_steps: recorded 256, now 512"):
        run_study(changed, out=out, quiet=True)
    assert (out / "study.json").read_text() == before


def test_workers_die_with_their_study():
    import os
    import signal
    import subprocess
    import sys
    import time

    # A parent that starts a worker through the study's executor, prints the worker's pid, then is killed -9.
    code = ("import os, time; from sim2real.executors import LocalExecutor; ex = LocalExecutor(1); "
            "print(ex._pool.submit(os.getpid).result(), flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(50):
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    pytest.fail(f"worker {worker} outlived its killed study")


def test_failed_runs_make_the_study_fail_after_the_report(tiny_pretrained, tmp_path):
    from sim2real.study import StudyRunsFailed

    # Every run fails inside its worker (the safety file does not exist); the study still writes its report.
    cfg = StudyConfig(task=str(DATA / "pendulum_norm.yaml"), policy=str(tiny_pretrained), targets=["heavy"],
                      strategies=["zero-shot", "finetune"], seeds=1, budget=64, workers=1, eval_every=64,
                      eval_episodes=1, robustness=False,
                      transfer_options={"robot": True, "safety": str(tmp_path / "missing.yaml")})
    with pytest.raises(StudyRunsFailed, match="2 of 2 runs failed"):
        run_study(cfg, out=tmp_path / "s", quiet=True)
    assert (tmp_path / "s" / "report.md").exists()
    assert "run(s) failed" in (tmp_path / "s" / "report.md").read_text()
    assert "missing.yaml" in (tmp_path / "s" / "runs" / "heavy" / "finetune" / "s0" / "error.txt").read_text()


def _small(tiny_pretrained, **kw):
    return dict(task=str(DATA / "pendulum_norm.yaml"), policy=str(tiny_pretrained), targets=["heavy"], seeds=1,
                budget=64, workers=1, eval_every=64, eval_episodes=1, robustness=False, **kw)


def test_a_strategy_variant_runs_beside_its_strategy_with_its_own_settings(tiny_pretrained, tmp_path):
    """`--strategies finetune finetune@lr_scale=0.3` compares two learning-rate scales in one study."""
    out = run_study(StudyConfig(**_small(tiny_pretrained, strategies=["finetune", "finetune@lr_scale=0.3,norm=adapt",
                                                                      "scratch"])), out=tmp_path / "s", quiet=True)
    runs = out / "runs" / "heavy"
    plain = json.loads((runs / "finetune" / "s0" / "run.json").read_text())["config"]
    variant = json.loads((runs / "finetune@lr_scale=0.3,norm=adapt" / "s0" / "run.json").read_text())["config"]
    assert (plain["lr_scale"], plain["norm"]) == (0.1, "frozen")
    assert (variant["strategy"], variant["lr_scale"], variant["norm"]) == ("finetune", 0.3, "adapt")
    strategies = json.loads((out / "metrics.json").read_text())["targets"]["heavy"]["strategies"]
    assert list(strategies) == ["finetune", "finetune@lr_scale=0.3,norm=adapt", "scratch"]
    assert "prob_improvement" in strategies["finetune@lr_scale=0.3,norm=adapt"]  # measured against scratch
    assert "| heavy | finetune@lr_scale=0.3,norm=adapt | 1 | 0 |" in (out / "report.md").read_text()


@pytest.mark.parametrize("label, message", [
    ("freeze@lr_scale=0.3", "freeze does not read lr_scale"),
    ("finetune@lr_scal=0.3", "transfer option 'lr_scal'"),
    ("finetune@lr_scale", "a variant is NAME@KEY=VALUE"),
    ("finetun@lr_scale=0.3", "unknown strategy 'finetun'"),
    ("finetune@lr_scale=-1", r"finetune@lr_scale=-1: --lr-scale -1: must be in \(0, 10\]"),
])
def test_a_bad_strategy_variant_is_refused_before_anything_is_written(tiny_pretrained, tmp_path, label, message):
    with pytest.raises(ValueError, match=message):
        run_study(StudyConfig(**_small(tiny_pretrained, strategies=["finetune", label])), out=tmp_path / "s",
                  quiet=True)
    assert not (tmp_path / "s").exists()


def test_a_study_on_a_plug_in_env_runs_one_at_a_time(tiny_pretrained, tmp_path):
    """A user's env (here a Gymnasium id) is a study target like a world; being a robot, its runs go one by one."""
    cfg = _small(tiny_pretrained, strategies=["zero-shot", "finetune"])
    cfg["targets"] = ["InvertedPendulum-v5"]
    with pytest.raises(ValueError, match="one run at a time; pass --workers 1"):
        run_study(StudyConfig(**{**cfg, "workers": 2}), out=tmp_path / "two", quiet=True)
    with pytest.raises(ValueError, match="not a target world .* not a registered Gymnasium id"):
        run_study(StudyConfig(**{**cfg, "targets": ["NoSuchRobot-v0"]}), out=tmp_path / "none", quiet=True)
    out = run_study(StudyConfig(**cfg), out=tmp_path / "s", quiet=True)
    result = json.loads((out / "runs" / "InvertedPendulum-v5" / "finetune" / "s0" / "result.json").read_text())
    assert result["robot"]["robot_steps"]["train"] >= 64
    assert set(json.loads((out / "metrics.json").read_text())["targets"]["InvertedPendulum-v5"]["strategies"]) == {
        "zero-shot", "finetune"}
    assert "- **InvertedPendulum-v5**: a plug-in env" in (out / "report.md").read_text()
