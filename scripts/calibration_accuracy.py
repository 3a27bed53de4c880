"""How close does a calibration get to the truth? Every task's `real` world, from its DR policy's recordings.

For each task: record ``--episodes`` episodes of ``policies/<task>-dr`` on the task's ``real`` world
(``sim2real record``), calibrate the spec's ``calibration.params`` and the action delay from them
(``sim2real calibrate``), and compare with the truth the spec defines. The truth is never read by the fit:
the calibration sees the log only, and the spec's target is read afterwards to score it.

Usage:
    python scripts/calibration_accuracy.py                      # all four tasks, 10 episodes each
    python scripts/calibration_accuracy.py --tasks hopper --episodes 5 --out runs/calib-acc
    python scripts/calibration_accuracy.py --summarise --out docs/results/calibration   # rebuild a table

Writes ``accuracy.json`` and ``accuracy.md`` (fitted vs truth, error, 95% interval and whether it covers the
truth, delay, residuals, seconds) into ``--out`` (default ``runs/calibration-accuracy``; the committed
``docs/results/calibration`` is such a folder without the recordings). A folder that already holds a task's
recording or calibration is refused by ``record`` / ``calibrate`` (nothing is overwritten): use a new ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim2real.pages import md_table  # noqa: E402

TASKS = ("hopper", "walker2d", "half_cheetah", "inverted_pendulum")
GOAL = 0.10  # the bar: fitted scales within 10% of the truth


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def measure(task: str, episodes: int, seed: int, out: Path, extra: list[str]) -> dict:
    data = out / f"{task}-real"
    if not (data / "transitions.jsonl").exists():
        run([sys.executable, "-m", "sim2real", "record", "--policy", str(ROOT / "policies" / f"{task}-dr"),
             "--target", "real", "--episodes", str(episodes), "--seed", str(seed), "--out", str(data)])
    began = time.perf_counter()
    run([sys.executable, "-m", "sim2real", "calibrate", task, str(data), "--quiet", *extra])
    wall = time.perf_counter() - began
    result = json.loads((data / "calibration" / "calibration.json").read_text())
    result["wall_s"] = wall
    return result


def rows_of(result: dict) -> list[dict]:
    """One row per fitted scale that has a truth, plus the delay."""
    rows = []
    truth = result.get("truth", {})
    for label, value in result["values"].items():
        if label not in truth:
            continue
        t, half = truth[label], result["intervals"][label]
        rows.append({"task": result["task"], "parameter": label, "fitted": value, "truth": t,
                     "error": value / t - 1.0, "interval": half, "covers": abs(value - t) <= half})
    rows.append({"task": result["task"], "parameter": "action delay (steps)", "fitted": result["delay"],
                 "truth": truth.get("delay"), "error": None, "interval": None,
                 "covers": None if truth.get("delay") is None else result["delay"] == truth["delay"]})
    return rows


def table(results: list[dict]) -> str:
    body = [["task", "parameter", "fitted", "truth", "error", "95% interval", "covers truth", "within 10%"]]
    for r in (row for res in results for row in rows_of(res)):
        if r["error"] is None:
            exact = "exact" if r["covers"] else "wrong"
            truth = "-" if r["truth"] is None else str(int(r["truth"]))
            exact = "-" if r["covers"] is None else exact
            body.append([r["task"], r["parameter"], str(r["fitted"]), truth, exact, "-", "-", "-"])
            continue
        body.append([r["task"], r["parameter"], f"{r['fitted']:.3f}", f"{r['truth']:.3g}", f"{r['error']:+.1%}",
                     f"±{r['interval']:.2g}", "yes" if r["covers"] else "no",
                     "✓" if abs(r["error"]) <= GOAL else "✗"])
    runs = [["task", "recorded steps", "windows", "residual RMS (nominal -> fit)", "fit time", "command wall"]]
    for res in results:
        runs.append([res["task"], f"{res['steps']:,}", str(res["n_windows"]),
                     f"{res['rms_before']:.3f} -> {res['rms_after']:.3f}", f"{res['seconds']:.0f} s",
                     f"{res.get('wall_s', 0):.0f} s"])
    return md_table(body) + "\n\n" + md_table(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "calibration-accuracy"))
    ap.add_argument("--summarise", action="store_true", help="run nothing; rebuild the table from --out")
    ap.add_argument("extra", nargs="*", help="more sim2real calibrate flags, after --")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.summarise:
        results = [json.loads(p.read_text()) for t in args.tasks
                   if (p := out / f"{t}-real" / "calibration" / "calibration.json").exists()]
        earlier = out / "accuracy.json"  # the command's wall time is only there
        walls = {r["task"]: r.get("wall_s") for r in json.loads(earlier.read_text())} if earlier.exists() else {}
        results = [{**r, "wall_s": walls.get(r["task"]) or 0.0} for r in results]
    else:
        results = [measure(t, args.episodes, args.seed, out, args.extra) for t in args.tasks]
    import mujoco

    when = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    header = (("Tables rebuilt " if args.summarise else "Measured ") + f"{when} on {platform.machine()}, "
              f"Python {platform.python_version()}, mujoco {mujoco.__version__}: {args.episodes} episodes of each "
              "task's DR policy on its `real` world (`sim2real record`), then `sim2real calibrate` with the spec's "
              "parameters and delays 0-3. Intervals are `mujoco.sysid`'s 95% half-widths. The recordings "
              "(transitions.jsonl) are not committed: the script records them again, deterministically.\n\n")
    (out / "accuracy.json").write_text(json.dumps(results, indent=1))
    (out / "accuracy.md").write_text(header + table(results) + "\n")
    print(header + table(results))


if __name__ == "__main__":
    main()
