"""kill -9 at random moments of pretraining (PPO, SAC), transfer and a study; resume each; compare with a run
that was never interrupted.

Usage:
    python scripts/kill_campaign.py                   # 20 kills, 5 of each kind
    python scripts/kill_campaign.py --kills 8 --out runs/kill_campaign

For each kind one reference run goes uninterrupted. Each trial starts the same command in a fresh folder, sends
SIGKILL at a random moment between 5% and 90% of the reference's run time after the run folder appears (a trial
whose run ended first is drawn again), checks that no process of the run survived the kill, then resumes (`--resume`; a study: the same
command again) and compares with the reference:
  total      the planned number of steps was reached (pretrain: the final manifest; transfer: training steps;
             study: every run finished)
  curve      evaluation steps appear once each, in order
  identical  the final policy weights equal the reference's bit for bit (pretraining on the batched world)
  leftovers  no temp files and no process of the run left behind
Writes kill_campaign.json and kill_campaign.md into --out.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
POLICY = str(ROOT / "policies" / "inverted_pendulum-dr")

KINDS = {
    "pretrain PPO": ["pretrain", "inverted_pendulum", "--steps", "6144", "--n-envs", "4", "--set", "n_steps=128",
                     "--set", "batch_size=64", "--checkpoint-every", "512", "--eval-every", "1024",
                     "--eval-episodes", "1", "--seed", "0"],
    "pretrain SAC": ["pretrain", "inverted_pendulum", "--algo", "sac", "--steps", "1600", "--n-envs", "2", "--set",
                     "learning_starts=200", "--set", "batch_size=64", "--set", "policy_kwargs={net_arch: [32, 32]}",
                     "--checkpoint-every", "200", "--eval-every", "400", "--eval-episodes", "1", "--seed", "0"],
    "transfer": ["transfer", POLICY, "--target", "real", "--strategy", "finetune", "--budget", "3072", "--eval-every",
                 "1024", "--eval-episodes", "2", "--seed", "0"],
    "study": ["study", "inverted_pendulum", "--strategies", "zero-shot", "finetune", "--seeds", "2", "--budget",
              "2048", "--eval-every", "1024", "--eval-episodes", "2", "--no-robustness", "--workers", "2"],
}


def command(kind: str, out: Path, resume: bool) -> list[str]:
    args = [sys.executable, "-m", "sim2real", *KINDS[kind], "--out", str(out)]
    return args + (["--resume"] if resume and kind != "study" else [])


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def survivors(out: Path) -> list[int]:
    """Processes whose command line names this run's folder (a study's workers included)."""
    found = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found if int(p) != os.getpid()]


def weights(model_zip: Path) -> dict:
    import torch

    with zipfile.ZipFile(model_zip) as z:
        return torch.load(io.BytesIO(z.read("policy.pth")), weights_only=True, map_location="cpu")


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)


def curve_steps(csv: Path) -> list[int]:
    return [int(float(line.split(",")[0])) for line in csv.read_text().split()[1:]]


def check(kind: str, out: Path, ref: Path) -> dict:
    """What the resumed run reached, against the reference."""
    result: dict = {}
    if kind.startswith("pretrain"):
        planned = int(KINDS[kind][KINDS[kind].index("--steps") + 1])
        manifest = json.loads((out / "model.manifest.json").read_text())
        result["total"] = manifest["num_timesteps"] >= planned
        steps = curve_steps(out / "evaluations.csv")
        result["curve"] = steps == sorted(set(steps))
        result["identical"] = same_weights(out / "model.zip", ref / "model.zip")
    elif kind == "transfer":
        done = json.loads((out / "result.json").read_text())
        planned = json.loads((ref / "result.json").read_text())
        result["total"] = done["target_steps"]["training"] == planned["target_steps"]["training"]
        steps = curve_steps(out / "evaluations.csv")
        result["curve"] = steps == sorted(set(steps)) and steps == curve_steps(ref / "evaluations.csv")
        result["identical"] = same_weights(out / "model.zip", ref / "model.zip")
    else:
        finished = sorted(p.parent.relative_to(out) for p in (out / "runs").glob("*/*/s*/result.json"))
        expected = sorted(p.parent.relative_to(ref) for p in (ref / "runs").glob("*/*/s*/result.json"))
        result["total"] = finished == expected and (out / "metrics.json").exists()
        result["curve"] = all(
            (lambda s: s == sorted(set(s)))(curve_steps(p)) for p in (out / "runs").glob("*/*/s*/evaluations.csv"))
        result["identical"] = None  # a study's runs: see the transfer rows
    result["leftovers"] = not [p for p in out.rglob("*") if ".tmp" in p.name]  # .tmp, .x.tmp.zip, ...
    return result


def timed_run(args: list[str]) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.monotonic() - t0


def trial(kind: str, out: Path, ref: Path, durations: dict, rng: np.random.Generator) -> dict:
    for attempt in range(5):
        duration = durations[kind]
        if out.exists():
            shutil.rmtree(out)
        started = time.monotonic()
        proc = subprocess.Popen(command(kind, out, False), env=env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # The kill lands once the run has begun (its run.json / study.json written: imports take seconds).
        marker = out / ("study.json" if kind == "study" else "run.json")
        while not marker.exists() and proc.poll() is None and time.monotonic() - started < 120:
            time.sleep(0.02)
        began = time.monotonic() - started
        delay = float(rng.uniform(0.05, 0.9) * max(duration - began, 1.0))
        try:
            proc.wait(timeout=delay)
            # It finished before the kill (the machine got faster than when the reference ran): its own run time
            # is the duration the next draws use.
            durations[kind] = time.monotonic() - started
            continue
        except subprocess.TimeoutExpired:
            pass
        delay += began
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(1.0)  # a study's workers see their parent die (PR_SET_PDEATHSIG) and go
        if kind == "study":  # how far it had got: runs finished before the kill
            at_kill = f"{len(list(out.glob('runs/*/*/s*/result.json')))} runs done"
        else:  # the newest checkpoint the resume can start from (none: it starts again from step 0)
            steps = [int(p.name.split("_")[1].split(".")[0]) for p in out.glob("checkpoints/step_*.manifest.json")]
            at_kill = f"checkpoint {max(steps):,}" if steps else "no checkpoint yet"
        orphans = survivors(out)
        for pid in orphans:
            os.kill(pid, signal.SIGKILL)
        finished = (out / ("model.manifest.json" if kind.startswith("pretrain") else "result.json")).exists()
        if finished and kind != "study":  # the kill landed after the run had written its end: nothing to resume
            at_kill, resume_s = "already finished", 0.0
        else:
            resume_s = timed_run(command(kind, out, True))
        return {"kind": kind, "killed_at_s": round(delay, 2), "at_kill": at_kill, "attempts": attempt + 1,
                "orphans": len(orphans),
                "resume_s": round(resume_s, 1), **check(kind, out, ref)}
    return {"kind": kind, "killed_at_s": None, "attempts": 5, "note": "finished before every kill"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="trials in all, spread evenly over the four kinds")
    parser.add_argument("--out", default="runs/kill_campaign", help="folder for the runs and the results")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    rng = np.random.default_rng(args.seed)
    refs, durations = {}, {}
    for kind in KINDS:
        refs[kind] = out / "reference" / kind.replace(" ", "_")
        if refs[kind].exists():
            shutil.rmtree(refs[kind])
        durations[kind] = timed_run(command(kind, refs[kind], False))
        print(f"reference {kind}: {durations[kind]:.1f} s", flush=True)
    results = []
    kinds = list(KINDS)
    for i in range(args.kills):
        kind = kinds[i % len(kinds)]
        r = trial(kind, out / "trials" / f"{i:02d}_{kind.replace(' ', '_')}", refs[kind], durations, rng)
        results.append(r)
        print(json.dumps(r), flush=True)
    ok = [r for r in results if r.get("killed_at_s") is not None]
    summary = {
        "kills": len(ok),
        "resumed_to_the_total": sum(bool(r["total"]) for r in ok),
        "curves_clean": sum(bool(r["curve"]) for r in ok),
        "no_leftovers": sum(bool(r["leftovers"]) and not r["orphans"] for r in ok),
        "bit_identical": {k: f"{sum(bool(r['identical']) for r in ok if r['kind'] == k)}/"
                             f"{sum(r['kind'] == k for r in ok)}" for k in kinds if k != "study"},
    }
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "reference_seconds": {k: round(v, 1) for k, v in durations.items()}}
    (out / "kill_campaign.json").write_text(json.dumps({**meta, "summary": summary, "trials": results}, indent=2))
    lines = [f"# kill -9 campaign: {summary['kills']} kills", "",
             f"{meta['date']}, {meta['machine']}, `python scripts/kill_campaign.py --kills {args.kills}`. "
             f"Resumed to the planned total: **{summary['resumed_to_the_total']}/{summary['kills']}**; curves "
             f"without repeated or backward steps: {summary['curves_clean']}/{summary['kills']}; no temp file or "
             f"process left: {summary['no_leftovers']}/{summary['kills']}; final weights bit-identical to the "
             f"uninterrupted run: " + ", ".join(f"{k} {v}" for k, v in summary["bit_identical"].items()) + ".", "",
             "| # | kind | killed after | left behind | orphans killed by the script | resume took | total | curve "
             "| identical | leftovers none |", "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(results):
        if r.get("killed_at_s") is None:
            lines.append(f"| {i} | {r['kind']} | (finished before every kill) | | | | | | | |")
            continue
        lines.append(f"| {i} | {r['kind']} | {r['killed_at_s']} s | {r['at_kill']} | {r['orphans']} | {r['resume_s']} s | "
                     f"{r['total']} | {r['curve']} | {'—' if r['identical'] is None else r['identical']} | "
                     f"{r['leftovers']} |")
    (out / "kill_campaign.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:3]))


if __name__ == "__main__":
    main()
