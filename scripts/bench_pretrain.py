"""Pretraining steps/s: sim2real's settings against plain SB3 with identical hyperparameters, side by side.

Usage: python scripts/bench_pretrain.py [--task hopper] [--steps 20480] [--rounds 3]

* plain SB3: ``PPO("MlpPolicy", DummyVecEnv([one env]))``, torch's default thread count.
* sim2real: one torch thread per process and the rollout split over ``--n-envs`` envs
  stepped in subprocesses, with ``n_steps`` divided so every update sees the same
  number of samples and makes the same number of gradient steps (no work is skipped).

Both run on the task's randomised sim world with the hyperparameters of the shipped
policy's pretraining run (policies/<task>-dr/run.json) or, without one, the spec's.
Each variant runs in a fresh subprocess; rounds alternate the order.

``--compare effects`` instead measures what effect randomisation costs: the spec's sim world
with physics randomisation only (and no policy inputs) against physics + effects randomisation
with the spec's policy inputs (last action / history), both 1 torch thread, 1 env.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, sys, time, torch
sys.path.insert(0, {root!r})
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize
from sim2real.learning.algos import algo_kwargs
from sim2real.spec import PolicyInputs, load_spec
from sim2real.worlds.inputs import WithInputs
from sim2real.worlds.make import EnvFactory, make_sim_env

def main():
    cfg = json.loads(sys.argv[1])
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    spec = load_spec(cfg["task"])
    inputs = spec.observation
    if not cfg.get("effects", True):
        spec = spec.model_copy(update={{"randomization": spec.randomization.model_copy(update={{"effects": None}})}})
        inputs = PolicyInputs()
    kwargs = algo_kwargs(spec, "ppo", cfg["overrides"])
    n_envs = cfg["n_envs"]
    kwargs["n_steps"] = kwargs.get("n_steps", 2048) * cfg["base_envs"] // n_envs
    fn = WithInputs(EnvFactory(make_sim_env, spec), inputs)
    venv = (SubprocVecEnv if n_envs > 1 else DummyVecEnv)([fn] * n_envs)
    if spec.pretrain.normalize:
        venv = VecNormalize(venv, gamma=kwargs.get("gamma", 0.99))
    model = PPO("MlpPolicy", venv, device="cpu", seed=0, **kwargs)
    model.learn(kwargs["n_steps"] * n_envs)  # warm-up: imports, first allocations
    t0 = time.perf_counter()
    model.learn(cfg["steps"], reset_num_timesteps=False)
    print(json.dumps({{"steps_per_s": cfg["steps"] / (time.perf_counter() - t0), "threads": torch.get_num_threads()}}))

if __name__ == "__main__":
    main()
"""


def run_variant(cfg: dict) -> float:
    out = subprocess.run([sys.executable, "-c", WORKER.format(root=str(ROOT)), json.dumps(cfg)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["steps_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="hopper")
    p.add_argument("--steps", type=int, default=20_480)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n-envs", type=int, default=2)
    p.add_argument("--compare", choices=["sb3", "effects"], default="sb3",
                   help="sb3: against plain SB3; effects: physics-only against physics + effects randomisation")
    args = p.parse_args()
    run_json = ROOT / "policies" / f"{args.task}-dr" / "run.json"
    base = {"task": args.task, "steps": args.steps, "overrides": {}, "base_envs": 1}
    if run_json.exists():
        config = json.loads(run_json.read_text())["config"]
        base["overrides"] = config.get("overrides") or {}
        base["base_envs"] = config.get("n_envs", 1)
    variants = {
        "plain SB3 (1 env, default threads)": {**base, "threads": 0, "n_envs": base["base_envs"]},
        "sim2real default (1 thread, 1 env)": {**base, "threads": 1, "n_envs": base["base_envs"]},
        f"sim2real --subproc (1 thread, {args.n_envs} subprocess envs)": {**base, "threads": 1, "n_envs": args.n_envs},
    }
    if args.compare == "effects":
        variants = {
            "physics randomisation only, no policy inputs": {**base, "threads": 1, "n_envs": 1, "effects": False},
            "physics + effects randomisation, the spec's inputs": {**base, "threads": 1, "n_envs": 1, "effects": True},
        }
    results: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name in (list(variants) if r % 2 == 0 else list(reversed(variants))):
            results[name].append(run_variant(variants[name]))
            print(f"round {r + 1}: {name}: {results[name][-1]:,.0f} steps/s", file=sys.stderr, flush=True)
    names = list(variants)
    plain = statistics.median(results[names[0]])
    print(f"| variant | steps/s (median of {args.rounds}) | ratio to the first |\n|---|---|---|")
    for name in names:
        med = statistics.median(results[name])
        print(f"| {name} | {med:,.0f} | {med / plain:.2f}x |")


if __name__ == "__main__":
    main()
