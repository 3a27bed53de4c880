"""Build the pretrained policy zoo under policies/: pretrain (or reuse a finished run), export, write model cards.

Usage:
    python scripts/make_zoo.py hopper                 # DR and nominal, spec's steps, seed 0
    python scripts/make_zoo.py hopper --export-only   # export runs/pretrain/... that already exist
    python scripts/make_zoo.py hopper --remeasure     # measure the shipped entries again (e.g. a new target world)

Each entry ``policies/<task>-<dr|nominal>/`` holds:
  model.zip     an ordinary SB3 model (the best evaluation checkpoint of the run)
  obs_rms.npz   normalisation statistics as plain arrays (loaded without unpickling)
  run.json      the pretraining config (task, algorithm, hyperparameters, command, versions, commit)
  card.json     measured returns (nominal sim and zero-shot on every target world) -- read by the tests
  README.md     the model card, for people
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim2real.learning.artifacts import CheckpointFiles, save_norm_arrays  # noqa: E402
from sim2real.learning.evaluation import evaluate  # noqa: E402
from sim2real.learning.loading import load_for_evaluation, load_pretrained  # noqa: E402
from sim2real.spec import load_spec  # noqa: E402
from sim2real.worlds.inputs import WithInputs  # noqa: E402
from sim2real.worlds.make import EnvFactory, make_target_env  # noqa: E402

EVAL_EPISODES = 10
EVAL_SEED = 123_456


def pretrain_command(task: str, randomize: bool, steps: int | None, seed: int) -> list[str]:
    # Pick the best checkpoint with as many episodes as the card measures: with 5, a lucky
    # evaluation of a policy that sometimes falls wins (Walker2d: 3,256 in training, 2,643 on the card).
    cmd = ["sim2real", "pretrain", task, "--seed", str(seed), "--eval-episodes", str(EVAL_EPISODES)]
    if not randomize:
        cmd.append("--no-randomize")
    if steps:
        cmd += ["--steps", str(steps)]
    return cmd


def export(run_dir: Path, dest: Path, checkpoint: str = "best", why: str | None = None) -> Path:
    """Copy a pretrain run's chosen checkpoint into a zoo entry (model.zip + obs_rms.npz + run.json)."""
    model_zip = run_dir / f"{checkpoint}.zip"
    if not model_zip.exists():
        model_zip = run_dir / "model.zip"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_zip, dest / "model.zip")
    shutil.copy(run_dir / "run.json", dest / "run.json")
    pkl = CheckpointFiles.of(model_zip).vecnormalize
    if pkl.exists():
        # Our own run's pickle (trusted) becomes plain arrays for everyone else.
        pre = load_pretrained(model_zip)  # its inputs shape the normalised observation
        venv = VecNormalize.load(str(pkl), DummyVecEnv([WithInputs(EnvFactory(make_target_env, pre.spec.path,
                                                                              "nominal"), pre.inputs)]))
        with (dest / "obs_rms.npz").open("wb") as f:
            save_norm_arrays(f, venv)
    write_vecnormalize(dest)
    meta = {"source_run": str(run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir),
            "checkpoint": str(model_zip.relative_to(run_dir))}
    best = run_dir / "best.json"
    if model_zip.stem == "best" and best.exists():
        meta["selected_at"] = json.loads(best.read_text())
    elif model_zip.stem.startswith("step_"):
        meta["selected_at"] = {"step": int(model_zip.stem.split("_")[1])}
    if why:
        meta["why"] = why
    (dest / "export.json").write_text(json.dumps(meta, indent=2))
    return dest


def write_vecnormalize(entry: Path) -> None:
    """SB3's own ``vecnormalize.pkl`` beside the model, built from the entry's arrays, for plain-SB3 users.

    sim2real itself never reads it (it reads obs_rms.npz); ``VecNormalize.load`` does.
    """
    if not (entry / "obs_rms.npz").exists():
        return
    pre = load_pretrained(entry)
    venv = DummyVecEnv([WithInputs(EnvFactory(make_target_env, pre.spec.path, "nominal"), pre.inputs)])
    norm = VecNormalize(venv, training=False, norm_reward=pre.norm.norm_reward)
    pre.norm.apply(norm)
    norm.save(str(entry / "vecnormalize.pkl"))
    venv.close()


def usage(entry: Path, spec, card: dict) -> str:
    """The card's recipe: the policy in plain SB3 (VecNormalize.load + evaluate_policy), and on a robot."""
    name = entry.name
    inputs = card["policy_inputs"]
    wrap = (f"PolicyInputsWrapper(gym.make(\"{spec.env_id}\"), last_action={bool(inputs.get('last_action'))}, "
            f"history={inputs.get('history', 0)})" if inputs.get("last_action") or inputs.get("history")
            else f"gym.make(\"{spec.env_id}\")")
    imports = ("from sim2real.worlds.inputs import PolicyInputsWrapper  # the policy also sees its last command\n"
               if "PolicyInputsWrapper" in wrap else "")
    norm = (f"env = VecNormalize.load(\"policies/{name}/vecnormalize.pkl\", env)\n"
            "env.training, env.norm_reward = False, False  # frozen statistics, raw rewards\n"
            if (entry / "vecnormalize.pkl").exists() else "")
    return f"""
## Use it

With plain Stable-Baselines3 (`model.zip` is an ordinary SB3 model{', `vecnormalize.pkl` its normalisation' if norm else ''}):

```python
import gymnasium as gym
from stable_baselines3 import {card['algo'].upper()}
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
{imports}
env = DummyVecEnv([lambda: {wrap}])
{norm}model = {card['algo'].upper()}.load("policies/{name}/model.zip", device="cpu")
print(evaluate_policy(model, env, n_eval_episodes=10))  # about the nominal row above
```

With sim2real: `sim2real evaluate policies/{name}`, `sim2real transfer policies/{name} --target real`, and on a robot's
computer `sim2real export policies/{name} --format onnx` (see docs/robot.md).
"""


def measure(entry: Path, episodes: int = EVAL_EPISODES) -> dict:
    """Return in the nominal sim and zero-shot return on every target world."""
    pre, spec, model = load_for_evaluation(entry)
    out = {}
    for world in spec.targets:
        env_fn = WithInputs(EnvFactory(make_target_env, spec.path, world), pre.inputs)
        res = evaluate(model, env_fn, episodes, obs_rms=pre.obs_rms, seed=EVAL_SEED)
        out[world] = {"mean": res.mean, "std": res.std, "episodes": episodes}
    return out


def write_card(entry: Path, task: str, randomize: bool, returns: dict, measured: str | None = None) -> None:
    run = json.loads((entry / "run.json").read_text())
    exp = json.loads((entry / "export.json").read_text())
    spec = load_spec(task)
    card = {
        "task": task,
        "env_id": spec.env_id,
        "randomized": randomize,
        "algo": run["config"]["algo"],
        "steps_trained": exp.get("selected_at", {}).get("step", run["config"]["steps"]),
        "steps_planned": run["config"]["steps"],
        "seed": run["config"]["seed"],
        "command": run["command"],
        "versions": run["versions"],
        "git_commit": run["git_commit"],
        "eval_episodes": EVAL_EPISODES,
        "eval_seed": EVAL_SEED,
        "returns": returns,
        "nominal_return": returns["nominal"]["mean"],
        "solved_return": spec.solved_return,
        "init_from": run["config"].get("init_from"),
        "policy_inputs": run["config"].get("spec", {}).get("observation", {"last_action": False, "history": 0}),
        "effects_randomized": bool(randomize and run["config"].get("spec", {}).get("randomization", {}).get("effects")),
        "measured": measured or time.strftime("%Y-%m-%d"),
    }
    (entry / "card.json").write_text(json.dumps(card, indent=2))
    commit = card["git_commit"].removesuffix("-dirty")[:7]
    at_commit = f"commit `{commit}`" + (" (with uncommitted changes)" if card["git_commit"].endswith("-dirty") else "")
    # A later zoo entry may replace the policy a curriculum started from; git keeps it at this commit.
    init_line = (f"\n- Started from `{card['init_from']}` as of commit `{commit}` (a curriculum: that policy "
                 "first, then these steps under randomisation)") if card["init_from"] else ""
    kind = "dr" if randomize else "nominal"
    export_cmd = f"python scripts/make_zoo.py {task} --export-only --only {kind} --run {exp['source_run']}"
    if exp["checkpoint"] != "best.zip":
        export_cmd += f" --checkpoint {exp['checkpoint'].removesuffix('.zip')}"
    # best.zip is picked on the world best.json names first: the randomised sim for a DR run, else the nominal sim.
    best = ROOT / exp["source_run"] / "best.json"
    record = json.loads(best.read_text()) if best.exists() else {}
    # best.json names its rule; older ones list the worlds with the selection world first.
    picked_on = record.get("selection", {}).get("world") or next((k for k in record if k != "step"), "nominal")
    where = "the randomised training worlds" if picked_on == "sim" else f"the {picked_on} sim"
    floor = run["config"].get("select_floor")
    among = f" among those whose nominal return cleared {floor:,.0f} (--select-floor)" if floor is not None else ""
    stat = "the highest median episode return" if run["config"].get("select_stat") == "median" else "the best evaluation"
    why = (f"{stat} on {where} during training{among}; PPO can degrade late" if exp["checkpoint"] == "best.zip"
           else exp.get("why", "chosen by hand"))
    # PPO ends on a whole rollout (n_envs x n_steps), so the last evaluation can sit past the planned total.
    overrun = " (the last rollout ran past the plan)" if card["steps_trained"] > card["steps_planned"] else ""
    rows = "\n".join(f"| {w} | {r['mean']:.1f} | {r['std']:.1f} |" for w, r in returns.items())
    bar = spec.solved_return
    verdict = ("meets" if returns["nominal"]["mean"] >= bar else "falls short of") if bar else "has no"
    (entry / "README.md").write_text(f"""# {task} — {'domain-randomised' if randomize else 'nominal-sim'} {card['algo'].upper()} policy

- Gymnasium id: `{spec.env_id}`; spec: `sim2real/envs/{task}.yaml`
- Trained with: `{card['command']}` (seed {card['seed']})
- Policy inputs: {_inputs_text(card['policy_inputs'])}; randomised in training: {'physics and effects (latency, noise, motors, sensors)' if card['effects_randomized'] else 'physics only' if randomize else 'nothing (the nominal sim)'}
- Checkpoint: {exp['checkpoint']} at {card['steps_trained']:,} of {card['steps_planned']:,} planned steps{overrun}
  ({why}){init_line}
- Versions: {', '.join(f'{k} {v}' for k, v in card['versions'].items() if k != 'platform')}; commit `{card['git_commit']}`

## Measured returns ({EVAL_EPISODES} episodes, deterministic actions, seed {EVAL_SEED})

| world | mean return | std |
|---|---|---|
{rows}

The nominal-sim return {verdict} the bar of {bar} (`solved_return` in `sim2real/envs/{task}.yaml`).
Reproduce: at {at_commit}, `{card['command']}`, then `{export_cmd}` (exports and measures).
{exp.get('note', '')}{usage(entry, spec, card)}""")


def _inputs_text(inputs: dict) -> str:
    if inputs.get("history"):
        return f"the observation, the last {inputs['history']} observations and commands"
    return "the observation and the last command" if inputs.get("last_action") else "the observation only"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tasks", nargs="+")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export-only", action="store_true", help="export existing runs, do not train")
    p.add_argument("--only", choices=["dr", "nominal"], default=None)
    p.add_argument("--run", default=None, help="with --export-only and --only: export this run folder")
    p.add_argument("--checkpoint", default="best",
                   help="with --export-only: which checkpoint to export: best, model, or checkpoints/step_000150000")
    p.add_argument("--why", default=None, help="with --checkpoint: the reason, written into the model card")
    p.add_argument("--rewrite-cards", action="store_true",
                   help="rewrite existing entries' model cards from their measured card.json (no training, no measuring)")
    p.add_argument("--remeasure", action="store_true",
                   help="measure existing entries again on every target world (e.g. after adding one) and rewrite their cards")
    p.add_argument("--dr-from-nominal", action="store_true",
                   help="a curriculum: train nominal first, then start the DR run from its best checkpoint")
    args = p.parse_args()
    for task in args.tasks:
        for randomize in (False, True):
            kind = "dr" if randomize else "nominal"
            if args.only and args.only != kind:
                continue
            entry = ROOT / "policies" / f"{task}-{kind}"
            if args.remeasure:
                write_card(entry, task, randomize, measure(entry))
                continue
            if args.rewrite_cards:
                write_vecnormalize(entry)
                old = json.loads((entry / "card.json").read_text())
                write_card(entry, task, randomize, old["returns"], measured=old.get("measured"))
                continue
            run_dir = ROOT / "runs" / "pretrain" / f"{task}-{kind}-{load_spec(task).pretrain.algo}-s{args.seed}"
            if args.run:
                run_dir = Path(args.run).resolve()
            if not args.export_only:
                cmd = pretrain_command(task, randomize, args.steps, args.seed)
                if randomize and args.dr_from_nominal:
                    nominal = run_dir.with_name(run_dir.name.replace("-dr-", "-nominal-"))
                    cmd += ["--init-from", str((nominal / "best.zip").relative_to(ROOT))]
                if (run_dir / "model.zip").exists():
                    print(f"{run_dir} is finished; exporting it")
                else:
                    out = str(run_dir.relative_to(ROOT))
                    subprocess.run(cmd + (["--resume"] if run_dir.exists() else []) + ["--out", out], check=True, cwd=ROOT)
            entry = export(run_dir, entry, args.checkpoint, args.why)
            returns = measure(entry)
            write_card(entry, task, randomize, returns)
            print(f"{entry}: " + ", ".join(f"{w} {r['mean']:.0f}" for w, r in returns.items()))


if __name__ == "__main__":
    main()
