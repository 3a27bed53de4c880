"""Feed the CLI malformed inputs, the way a careful user breaks things, and classify what each one gets.

Usage:
    python scripts/bad_inputs.py                      # all cases, 2 at a time
    python scripts/bad_inputs.py --out docs/results/reliability

Each case runs ``python -m sim2real ...`` in a scratch folder and is classified:
  clear      exit status 2, no traceback, and the message names what was wrong (the case's expected words)
  vague      exit status 2 without a traceback, but the message lacks the expected words
  traceback  a Python traceback reached the user
  accepted   exit status 0: the bad input was taken silently (or replaced by a default)
  hangs      still running after 3 minutes
Writes bad_inputs.json and bad_inputs.md (one row per case) into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = (ROOT / "tests" / "data" / "pendulum_norm.yaml").read_text()
POLICY = str(ROOT / "policies" / "inverted_pendulum-dr")
TINY = ["--steps", "64", "--eval-every", "64", "--eval-episodes", "1"]


def spec_with(old: str, new: str) -> str:
    assert old in SPEC, old
    return SPEC.replace(old, new, 1)


MASS = "- {field: body_mass, names: [pole], op: scale, low: 0.7, high: 1.4}"
# name, CLI arguments (SPEC_FILE, POLICY_COPY: files the case gets), files to write, words the error must hold
CASES: list[tuple[str, list[str], dict[str, str], list[str]]] = [
    # --- task specs
    ("unknown task", ["envs", "hoper"], {}, ["hoper", "hopper"]),
    ("spec file missing", ["envs", "nothere.yaml"], {}, ["nothere.yaml"]),
    ("unknown env_id", ["pretrain", "s.yaml", *TINY], {"s.yaml": spec_with("InvertedPendulum-v5", "NoSuchEnv-v9")},
     ["env_id", "NoSuchEnv-v9"]),
    ("unknown spec field", ["envs", "s.yaml"], {"s.yaml": SPEC + "\ncolour: red\n"}, ["colour"]),
    ("duplicate YAML key", ["envs", "s.yaml"], {"s.yaml": SPEC + "\nmax_episode_steps: 50\n"},
     ["max_episode_steps", "duplicate"]),
    ("NaN in a spec range", ["envs", "s.yaml"], {"s.yaml": spec_with("high: 1.4", "high: .nan")}, ["high", "nan"]),
    ("inf in a spec range", ["envs", "s.yaml"], {"s.yaml": spec_with("high: 1.4", "high: .inf")}, ["high", "inf"]),
    ("1e300 in a spec range", ["envs", "s.yaml"], {"s.yaml": spec_with("high: 1.4", "high: 1e300")}, ["1e+300"]),
    ("low > high", ["envs", "s.yaml"], {"s.yaml": spec_with("low: 0.7", "low: 2.0")}, ["low", "high"]),
    ("unknown randomised field", ["envs", "s.yaml"], {"s.yaml": spec_with("field: body_mass", "field: body_colour")},
     ["body_colour"]),
    ("unknown body name", ["pretrain", "s.yaml", *TINY], {"s.yaml": spec_with("names: [pole]", "names: [tail]")},
     ["tail"]),
    ("unknown op", ["envs", "s.yaml"], {"s.yaml": spec_with("op: scale, low", "op: multiply, low")}, ["multiply"]),
    ("negative action delay range", ["envs", "s.yaml"],
     {"s.yaml": spec_with(MASS, MASS + "\n  effects: {action_delay: [-1, 2]}")}, ["action_delay", "-1"]),
    ("dropout probability 1.5", ["envs", "s.yaml"],
     {"s.yaml": spec_with(MASS, MASS + "\n  effects: {sensors: {drop_prob: [0.0, 1.5]}}")}, ["drop_prob", "1.5"]),
    ("unknown hyperparameter", ["pretrain", "s.yaml", *TINY],
     {"s.yaml": spec_with("n_epochs: 2}", "n_epochs: 2, n_epoch: 3}")}, ["n_epoch"]),
    ("unknown activation", ["pretrain", "s.yaml", *TINY],
     {"s.yaml": spec_with("policy_kwargs: {", "policy_kwargs: {activation_fn: swish, ")}, ["swish"]),
    ("negative total_steps", ["envs", "s.yaml"], {"s.yaml": spec_with("total_steps: 256", "total_steps: -5")},
     ["total_steps"]),
    ("spec is not a mapping", ["envs", "s.yaml"], {"s.yaml": "- just\n- a list\n"}, ["s.yaml"]),
    ("spec is not YAML", ["envs", "s.yaml"], {"s.yaml": "env_id: [unclosed\n"}, ["s.yaml"]),
    # --- pretrain flags
    ("pretrain --steps 0", ["pretrain", "s.yaml", "--steps", "0"], {"s.yaml": SPEC}, ["--steps", "0"]),
    ("pretrain --steps -5", ["pretrain", "s.yaml", "--steps", "-5"], {"s.yaml": SPEC}, ["--steps", "-5"]),
    ("pretrain --steps abc", ["pretrain", "s.yaml", "--steps", "abc"], {"s.yaml": SPEC}, ["--steps", "abc"]),
    ("pretrain --n-envs 0", ["pretrain", "s.yaml", "--n-envs", "0", *TINY], {"s.yaml": SPEC}, ["--n-envs", "0"]),
    ("pretrain --eval-every 0", ["pretrain", "s.yaml", "--steps", "64", "--eval-every", "0"], {"s.yaml": SPEC},
     ["--eval-every", "0"]),
    ("pretrain --checkpoint-every 0", ["pretrain", "s.yaml", *TINY, "--checkpoint-every", "0"], {"s.yaml": SPEC},
     ["--checkpoint-every", "0"]),
    ("pretrain --set n_steps=abc", ["pretrain", "s.yaml", *TINY, "--set", "n_steps=abc"], {"s.yaml": SPEC},
     ["n_steps", "abc"]),
    ("pretrain --set foo=1", ["pretrain", "s.yaml", *TINY, "--set", "foo=1"], {"s.yaml": SPEC}, ["foo"]),
    ("pretrain --set without =", ["pretrain", "s.yaml", *TINY, "--set", "n_steps"], {"s.yaml": SPEC},
     ["KEY=VALUE"]),
    ("pretrain --inputs history=-1", ["pretrain", "s.yaml", *TINY, "--inputs", "history=-1"], {"s.yaml": SPEC},
     ["history"]),
    ("pretrain --algo dqn", ["pretrain", "s.yaml", "--algo", "dqn"], {"s.yaml": SPEC}, ["dqn"]),
    ("pretrain --eval-world moon", ["pretrain", "s.yaml", *TINY, "--eval-world", "moon"], {"s.yaml": SPEC},
     ["moon"]),
    ("pretrain --init-from a missing policy", ["pretrain", "s.yaml", *TINY, "--init-from", "nope"],
     {"s.yaml": SPEC}, ["nope"]),
    ("pretrain --resume with nothing to resume", ["pretrain", "s.yaml", *TINY, "--resume", "--out", "r"],
     {"s.yaml": SPEC}, ["r"]),
    ("pretrain --threads 0", ["pretrain", "s.yaml", *TINY, "--threads", "0"], {"s.yaml": SPEC}, ["--threads"]),
    ("pretrain --stepper batch --subproc", ["pretrain", "s.yaml", *TINY, "--stepper", "batch", "--subproc"],
     {"s.yaml": SPEC}, ["--subproc"]),
    # --- policies
    ("transfer a missing policy", ["transfer", "nope", "--target", "real"], {}, ["nope"]),
    ("corrupt model.zip", ["evaluate", "p"], {"p/": "COPY", "p/model.zip": "not a zip at all"}, ["model.zip"]),
    ("truncated model.zip", ["evaluate", "p"], {"p/": "COPY", "p/model.zip": "TRUNCATE"}, ["model.zip"]),
    ("foreign zip (not a model)", ["evaluate", "p"], {"p/": "COPY", "p/model.zip": "FOREIGN"}, ["model.zip"]),
    ("unknown algo in run.json", ["evaluate", "p"], {"p/": "COPY", "p/run.json": "ALGO=dqn"}, ["dqn"]),
    ("run.json is not JSON", ["evaluate", "p"], {"p/": "COPY", "p/run.json": "{not json"}, ["run.json"]),
    ("plain SB3 zip without --task", ["evaluate", "p/model.zip"], {"p/": "COPY", "p/run.json": "DELETE"}, ["--task"]),
    # --- transfer flags
    ("transfer unknown target", ["transfer", POLICY, "--target", "moon"], {}, ["moon"]),
    ("transfer unknown strategy", ["transfer", POLICY, "--target", "real", "--strategy", "finetun"], {},
     ["finetun"]),
    ("transfer --budget huge", ["transfer", POLICY, "--target", "real", "--budget", "huge"], {}, ["huge"]),
    ("transfer --budget 0", ["transfer", POLICY, "--target", "real", "--budget", "0"], {}, ["budget", "0"]),
    ("transfer --budget -10", ["transfer", POLICY, "--target", "real", "--budget", "-10"], {}, ["-10"]),
    ("transfer --lr-scale 0", ["transfer", POLICY, "--target", "real", "--lr-scale", "0"], {}, ["--lr-scale"]),
    ("transfer --feature-layers 9", ["transfer", POLICY, "--target", "real", "--feature-layers", "9"], {},
     ["feature", "9"]),
    ("transfer --norm maybe", ["transfer", POLICY, "--target", "real", "--norm", "maybe"], {}, ["maybe"]),
    ("transfer --eval-every 0", ["transfer", POLICY, "--target", "real", "--eval-every", "0"], {},
     ["--eval-every"]),
    ("transfer --import missing module", ["transfer", POLICY, "--import", "no_such_module_xyz"], {},
     ["no_such_module_xyz"]),
    ("transfer a factory that raises", ["transfer", POLICY, "--target", "badrobot:make"],
     {"badrobot.py": "def make():\n    raise RuntimeError('robot is unplugged')\n"}, ["robot is unplugged"]),
    ("transfer a factory returning a non-env", ["transfer", POLICY, "--target", "badrobot:make"],
     {"badrobot.py": "def make():\n    return 3\n"}, ["not a gymnasium.Env"]),
    ("transfer an env of the wrong shape", ["transfer", POLICY, "--target", "Hopper-v5"], {}, ["Hopper-v5"]),
    ("transfer --target-kwargs without =", ["transfer", POLICY, "--target", "real", "--target-kwargs", "x"], {},
     ["KEY=VALUE"]),
    ("transfer --safety file missing", ["transfer", POLICY, "--target", "real", "--robot", "--safety", "no.yaml"],
     {}, ["no.yaml"]),
    ("transfer --safety unknown field", ["transfer", POLICY, "--target", "real", "--robot", "--safety", "l.yaml"],
     {"l.yaml": "max_speed: 3\n"}, ["max_speed"]),
    ("transfer --resume of a missing run", ["transfer", POLICY, "--target", "real", "--resume", "--out", "x"], {},
     ["x"]),
    # --- study, report, evaluate, robustness
    ("study --seeds 0", ["study", "inverted_pendulum", "--seeds", "0", "--out", "st"], {}, ["--seeds"]),
    ("study unknown strategy", ["study", "inverted_pendulum", "--strategies", "frieze", "--out", "st"], {},
     ["frieze"]),
    ("study unknown target", ["study", "inverted_pendulum", "--targets", "moon", "--out", "st"], {}, ["moon"]),
    ("study --budget abc", ["study", "inverted_pendulum", "--budget", "abc", "--out", "st"], {}, ["abc"]),
    ("study --option unknown", ["study", "inverted_pendulum", "--option", "lr_scal=1", "--out", "st"], {},
     ["lr_scal"]),
    ("study variant a strategy ignores", ["study", "inverted_pendulum", "--strategies", "freeze@lr_scale=0.3",
                                          "--out", "st"], {}, ["lr_scale"]),
    ("study --executor ray without ray", ["study", "inverted_pendulum", "--executor", "ray", "--ray-address",
                                          "ray://nowhere:1", "--out", "st"], {}, ["ray"]),
    ("report of a folder that is no study", ["report", "."], {}, ["study.json"]),
    ("evaluate --episodes 0", ["evaluate", POLICY, "--episodes", "0"], {}, ["--episodes", "0"]),
    ("evaluate unknown world", ["evaluate", POLICY, "--targets", "moon"], {}, ["moon"]),
    ("robustness unknown parameter", ["robustness", POLICY, "--param", "body_mass/tail", "--range", "0.5", "2"], {},
     ["tail"]),
    ("robustness range upside down", ["robustness", POLICY, "--param", "body_mass/pole", "--range", "2", "1"], {},
     ["--range"]),
    # --- robot layer, calibration, export
    ("record --episodes 0", ["record", "--policy", POLICY, "--target", "real", "--episodes", "0", "--out", "rec"],
     {}, ["--episodes"]),
    ("record without a policy or excitation", ["record", "--target", "real", "--out", "rec"], {},
     ["POLICY", "--excitation"]),
    ("calibrate a folder without a log", ["calibrate", "inverted_pendulum", "."], {}, ["transitions"]),
    ("calibrate unknown parameter", ["calibrate", "inverted_pendulum", "log", "--params", "body_mass/tail"],
     {"log/transitions.jsonl": "LOG"}, ["tail"]),
    ("export --format pdf", ["export", POLICY, "--format", "pdf"], {}, ["pdf"]),
    ("robot-server --port 70000", ["robot-server", "inverted_pendulum", "--port", "70000"], {}, ["70000", "65535"]),
    ("log of a folder without a log", ["log", "."], {}, ["transitions"]),
    ("bench steps --n 0", ["bench", "steps", "--n", "0"], {}, ["--n", "0"]),
]


def prepare(case_dir: Path, files: dict[str, str]) -> None:
    import shutil
    import zipfile

    for name, text in files.items():
        path = case_dir / name
        if text == "COPY":
            shutil.copytree(POLICY, path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if text == "TRUNCATE":
            data = (Path(POLICY) / "model.zip").read_bytes()
            path.write_bytes(data[: len(data) // 2])
        elif text == "FOREIGN":
            with zipfile.ZipFile(path, "w") as z:
                z.writestr("hello.txt", "not a model")
        elif text == "DELETE":
            path.unlink()
        elif text.startswith("ALGO="):
            info = json.loads((Path(POLICY) / "run.json").read_text())
            info["config"]["algo"] = text[5:]
            path.write_text(json.dumps(info))
        elif text == "LOG":
            path.write_text(json.dumps({"kind": "reset", "episode": 0, "obs": [0.0, 0.0, 0.0, 0.0]}) + "\n")
        else:
            path.write_text(text)


def run_case(case, scratch: Path) -> dict:
    name, args, files, words = case
    case_dir = scratch / name.replace(" ", "_").replace("/", "_")
    case_dir.mkdir(parents=True)
    prepare(case_dir, files)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "sim2real", *args], cwd=case_dir, capture_output=True,
                              text=True, env=env, timeout=180)
    except subprocess.TimeoutExpired as exc:  # a bad input that hangs (a server listening on the wrong port)
        return {"case": name, "args": args, "exit": None, "outcome": "hangs",
                "message": (exc.stderr or b"").decode()[-200:] if isinstance(exc.stderr, bytes) else "",
                "seconds": 180}
    err = proc.stderr.strip()
    if "Traceback" in err:
        outcome = "traceback"
    elif proc.returncode == 0:
        outcome = "accepted"
    elif proc.returncode == 2 and all(w.lower() in err.lower() for w in words):
        outcome = "clear"
    else:
        outcome = "vague"
    last = (err or proc.stdout.strip()).splitlines()[-1:]  # what the user reads last
    return {"case": name, "args": args, "exit": proc.returncode, "outcome": outcome,
            "message": last[0] if last else "", "seconds": round(time.monotonic() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bad_inputs", help="folder for bad_inputs.json and .md")
    parser.add_argument("--workers", type=int, default=2, help="cases run at once")
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.only or args.only in c[0]]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.workers) as pool:
        results = list(pool.map(lambda c: run_case(c, Path(tmp)), cases))
    counts = {k: sum(r["outcome"] == k for r in results) for k in ("clear", "vague", "traceback", "accepted", "hangs")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(), "counts": counts}
    (out / "bad_inputs.json").write_text(json.dumps({**meta, "results": results}, indent=2))
    lines = [f"# Bad inputs: {len(results)} cases", "",
             f"{meta['date']}, {meta['machine']}, `python scripts/bad_inputs.py`. "
             + ", ".join(f"**{v} {k}**" for k, v in counts.items()), "",
             "| case | command | exit | outcome | what the user reads |", "|---|---|---|---|---|"]
    for r in results:
        cmd = "sim2real " + " ".join(a if len(a) < 40 else "…" + a[-30:] for a in r["args"])
        msg = r["message"].replace("|", "\\|")[:220]
        lines.append(f"| {r['case']} | `{cmd}` | {r['exit']} | {r['outcome']} | {msg} |")
    (out / "bad_inputs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:3]))
    for r in results:
        if r["outcome"] != "clear":
            print(f"  {r['outcome']:9s} {r['case']}: {r['message'][:160]}")


if __name__ == "__main__":
    main()
