"""Issue #11, one more measured attempt: a recurrent policy (sb3-contrib's RecurrentPPO, an LSTM) for hopper.

Every DR policy in the zoo is a feed-forward MLP that sees the last command at most. A memory lets a policy
infer the latency, the motors and the mass it is in from what happened so far (Peng et al. 2018 trained an
LSTM for exactly this). This script trains one in the hopper spec's randomised sim (physics, effects, the
nominal/hard episode sampling, the last action as input; 16 batched envs) and evaluates it every
``--eval-every`` steps in the randomised sim, the nominal sim, heavy_torso and real, with the LSTM's state
carried through each episode. It is an experiment, not a zoo entry: the transfer strategies (freeze, a new
head, fine-tune) are written for the MLP policies.

    pip install sb3-contrib==2.9.2
    OMP_NUM_THREADS=1 python scripts/recurrent_attempt.py --out runs/recurrent-hopper --steps 1000000

Writes ``evaluations.csv`` (one row per evaluation and world), ``run.json`` and a checkpoint (model + the
normalisation statistics) at every evaluation; ``--resume`` continues from the last one (not bit-identically:
the world restarts its episodes). ``--evaluate STEP`` measures that checkpoint as the zoo cards do (Gymnasium
worlds, one episode after another, reset seeds ``--eval-seed + i``) and writes ``eval_STEP_SEED.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

from sim2real.learning.envs import BatchedVecEnv
from sim2real.spec import load_spec
from sim2real.worlds.batched import BatchedWorld

WORLDS = ("sim", "nominal", "heavy_torso", "real")


def evaluate(model, norm: VecNormalize, spec, world: str, episodes: int, seed: int) -> np.ndarray:
    """Deterministic returns of ``episodes`` episodes, one per simulation, the LSTM state carried along."""
    if world in ("sim", "nominal"):
        w = BatchedWorld(spec, episodes, randomize=world == "sim", seed=seed, inputs=spec.observation)
    else:
        w = BatchedWorld(spec, episodes, world=world, seed=seed, inputs=spec.observation)
    w.sampling = None  # the randomised sim is measured on uniform draws, as the pipeline's evaluations
    obs = w.reset()
    done = np.zeros(episodes, dtype=bool)
    returns = np.zeros(episodes)
    state, start = None, np.ones(episodes, dtype=bool)
    while not done.all():
        action, state = model.predict(norm.normalize_obs(obs), state=state, episode_start=start, deterministic=True)
        obs, reward, terminated, truncated = w.step(action)
        returns += np.where(done, 0.0, reward)
        done |= terminated | truncated
        start = np.zeros(episodes, dtype=bool)
    return returns


def evaluate_like_a_card(model, norm: VecNormalize, spec, world: str, episodes: int, seed: int) -> list[float]:
    """Returns on the Gymnasium world, episode ``i`` reset with ``seed + i`` (the zoo cards' protocol)."""
    from sim2real.worlds.inputs import with_inputs
    from sim2real.worlds.make import make_sim_env, make_target_env

    raw = make_sim_env(spec, randomize=False) if world == "nominal" else make_target_env(spec, world)
    env = with_inputs(raw, spec.observation)
    returns = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            state, start, total, done = None, np.ones(1, dtype=bool), 0.0, False
            while not done:
                action, state = model.predict(norm.normalize_obs(obs[None]), state=state, episode_start=start,
                                              deterministic=True)
                obs, reward, terminated, truncated, _ = env.step(action[0])
                total += float(reward)
                done = terminated or truncated
                start = np.zeros(1, dtype=bool)
            returns.append(total)
    finally:
        env.close()
    return returns


class Evaluations(BaseCallback):
    def __init__(self, out: Path, every: int, episodes: int, spec, norm: VecNormalize):
        super().__init__()
        self.out, self.every, self.episodes, self.spec, self.norm = out, every, episodes, spec, norm
        self.next = None
        self.began = time.perf_counter()

    def _on_training_start(self) -> None:
        self.next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.num_timesteps < self.next:
            return True
        self.next += self.every
        step = self.num_timesteps
        ckpt = self.out / "checkpoints"
        ckpt.mkdir(exist_ok=True)
        self.model.save(ckpt / f"step_{step:09d}.zip")
        self.norm.save(str(ckpt / f"step_{step:09d}_vecnormalize.pkl"))
        rows = []
        for world in WORLDS:
            r = evaluate(self.model, self.norm, self.spec, world, self.episodes, seed=123456)
            rows.append({"step": step, "world": world, "mean": round(float(r.mean()), 1),
                         "std": round(float(r.std()), 1), "episodes": len(r),
                         "wall_s": round(time.perf_counter() - self.began, 1)})
        path = self.out / "evaluations.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)
        print(f"{step:>9,}  " + "  ".join(f"{r['world']} {r['mean']:,.0f}" for r in rows), flush=True)
        return True


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--n-steps", type=int, default=128, help="steps per env per rollout")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lstm", type=int, default=64, help="LSTM hidden size (actor and critic each)")
    parser.add_argument("--eval-every", type=int, default=100_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--evaluate", type=int, default=None, metavar="STEP",
                        help="run nothing; measure checkpoint STEP on the Gymnasium worlds (--eval-episodes, --eval-seed)")
    parser.add_argument("--eval-seed", type=int, default=777)
    args = parser.parse_args(argv)
    from sb3_contrib import RecurrentPPO

    torch.set_num_threads(1)
    spec = load_spec("hopper")
    if args.evaluate is not None:
        zip_ = args.out / "checkpoints" / f"step_{args.evaluate:09d}.zip"
        model = RecurrentPPO.load(zip_, device="cpu")
        norm = VecNormalize.load(str(zip_.with_name(f"{zip_.stem}_vecnormalize.pkl")),
                                 BatchedVecEnv(BatchedWorld(spec, 1, inputs=spec.observation)))
        out = {}
        for world in ("nominal", "heavy_torso", "very_heavy_torso", "real"):
            r = evaluate_like_a_card(model, norm, spec, world, args.eval_episodes, args.eval_seed)
            out[world] = {"mean": float(np.mean(r)), "std": float(np.std(r)), "returns": r}
            print(f"{world}: {np.mean(r):,.0f} (std {np.std(r):,.0f}, {len(r)} episodes)", flush=True)
        (args.out / f"eval_{args.evaluate}_{args.eval_seed}.json").write_text(json.dumps(
            {"checkpoint": zip_.name, "episodes": args.eval_episodes, "reset_seeds_from": args.eval_seed, **out},
            indent=1))
        return
    hp = dict(spec.pretrain.hyperparams)
    world = BatchedWorld(spec, args.n_envs, randomize=True, seed=args.seed, inputs=spec.observation)
    venv = VecNormalize(VecMonitor(BatchedVecEnv(world)), gamma=hp.get("gamma", 0.99))
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoints = sorted((args.out / "checkpoints").glob("step_*[0-9].zip"))
    if args.resume and checkpoints:
        last = checkpoints[-1]
        venv = VecNormalize.load(str(last.with_name(f"{last.stem}_vecnormalize.pkl")), venv.venv)
        model = RecurrentPPO.load(last, env=venv, device="cpu")
        print(f"resuming from {last.name} at step {model.num_timesteps:,}")
    elif (args.out / "run.json").exists():
        sys.exit(f"{args.out} holds a run; --resume it or choose another --out")
    else:
        kwargs = {k: v for k, v in hp.items() if k not in ("n_steps", "batch_size")}
        model = RecurrentPPO(
            "MlpLstmPolicy", venv, n_steps=args.n_steps, batch_size=args.batch_size, seed=args.seed, device="cpu",
            tensorboard_log=str(args.out / "tb"),
            policy_kwargs={"lstm_hidden_size": args.lstm, "net_arch": {"pi": [64], "vf": [64]},
                           "activation_fn": torch.nn.Tanh},
            **kwargs)
        (args.out / "run.json").write_text(json.dumps({
            "command": "python " + " ".join(sys.argv), "args": {k: str(v) for k, v in vars(args).items()},
            "hyperparams": {**kwargs, "n_steps": args.n_steps, "batch_size": args.batch_size},
            "spec_randomization": spec.randomization.model_dump(), "inputs": spec.observation.model_dump()},
            indent=1))
    callback = Evaluations(args.out, args.eval_every, args.eval_episodes, spec, venv)
    model.learn(args.steps - model.num_timesteps, callback=callback, reset_num_timesteps=False, progress_bar=False)


if __name__ == "__main__":
    main()
