"""Pretraining in the (randomised) sim world: config -> envs -> model -> learn, with checkpoints and resume."""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize

from sim2real.learning.algos import ALGOS, algo_kwargs, set_threads
from sim2real.learning.artifacts import (
    CheckpointFiles,
    RunLock,
    checkpoint_complete,
    checkpoint_step,
    clean_incomplete,
    latest_checkpoint,
    note_resume,
    remove_final_model,
    restart_seed_for,
    restore_checkpoint,
    save_checkpoint,
    supersede_evaluations,
    write_run_info,
)
from sim2real.learning.callbacks import (
    CheckpointCallback,
    EvalCallback,
    HParamsCallback,
    ProgressCallback,
    RandomizationLogger,
    write_pretrain_layout,
)
from sim2real.learning.envs import BatchedVecEnv, make_vec_env
from sim2real.learning.loading import load_pretrained
from sim2real.learning.selection import SELECT_STATS
from sim2real.options import option
from sim2real.spec import PolicyInputs, load_spec
from sim2real.worlds.batched import BatchedWorld, unsupported_reason
from sim2real.worlds.inputs import WithInputs, column_map, input_columns, plain_obs_dim
from sim2real.worlds.make import EnvFactory, make_sim_env, make_target_env


@dataclass
class PretrainConfig:
    """One pretraining run. Every field with help text is also a ``sim2real pretrain`` flag."""

    task: str = field(metadata={"positional": True, "help": "a task name (sim2real envs lists them) or a spec file"})
    algo: str | None = option(None, "algorithm (default: the spec's)", choices=("ppo", "sac", "td3"))
    steps: int | None = option(None, "environment steps (default: the spec's total_steps)")
    seed: int = option(0, "random seed")
    randomize: bool = option(True, "train on the nominal sim only (the no-randomisation baseline)",
                             flag="--no-randomize", negate=True)
    n_envs: int | None = option(None, "parallel envs (default: the spec's)")
    subproc: bool = option(False, "step the envs in subprocesses (the Gymnasium stepper)")
    stepper: str = option("auto", "how the sim world is stepped: batch (every env in one mujoco.batch call), gym "
                                  "(one Gymnasium env each), auto (batch for 2+ envs where the task has a batched "
                                  "kernel)", choices=("auto", "batch", "gym"))
    sim_threads: int = option(1, "threads of the batch stepper (1 leaves the other core to the learner)")
    threads: int | None = option(1, "torch threads (1 is fastest for small MLPs on few cores)")
    eval_world: str | None = option(None, "target world evaluated during pretraining (default: real, else the "
                                          "spec's first shifted world)")
    select_on: str | None = option(None, "world whose return picks best.zip: sim (the randomised training worlds, "
                                         "seeded alike at every evaluation) or nominal (default: sim for a "
                                         "randomised run, else nominal)", choices=("sim", "nominal"))
    select_floor: float | None = option(None, "best.zip only among evaluations whose nominal return is at least "
                                              "this (the spec's solved_return, say): a DR policy that gave up the "
                                              "nominal world is not the best one", metavar="RETURN")
    select_stat: str = option("mean", "statistic of the selection world's episode returns that picks best.zip: mean, "
                                      "or median (an episode lost at once in a hard corner of the ranges counts "
                                      "as one bad episode, not by how far it pulls the mean down)",
                              choices=tuple(SELECT_STATS))
    keep_evaluated: bool = option(False, "keep every evaluated policy in evaluated/ (weights and statistics, no "
                                         "replay buffer), so a selection rule fixed later can be applied to the run")
    eval_every: int | None = option(None, "steps between evaluations (default: 1/50 of the run)")
    eval_episodes: int = option(5, "episodes per evaluation; more makes the kept best checkpoint less of a lucky draw")
    checkpoint_every: int = option(50_000, "steps between checkpoints")
    overrides: dict[str, Any] = option({}, "hyperparameter overrides (--set KEY=VALUE)", cli=False)
    init_from: str | None = option(None, "start from this policy's weights and statistics (a curriculum: nominal "
                                         "first, then randomised); new inputs start at weight 0", metavar="POLICY")
    inputs: dict[str, Any] = option({}, "overrides of the spec's policy inputs (--inputs history=2)", cli=False)

    def validate(self) -> None:
        if self.select_on not in (None, "sim", "nominal"):
            raise ValueError(f"--select-on {self.select_on!r}: allowed: sim, nominal")
        if self.select_stat not in SELECT_STATS:
            raise ValueError(f"--select-stat {self.select_stat!r}: allowed: {', '.join(SELECT_STATS)}")
        if self.stepper not in ("auto", "batch", "gym"):
            raise ValueError(f"--stepper {self.stepper!r}: allowed: auto, batch, gym")
        for name in ("steps", "n_envs", "eval_every", "checkpoint_every", "eval_episodes", "threads", "sim_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value}: must be at least 1")


def _init_from(model: BaseAlgorithm, venv: VecEnv, path: str, inputs: PolicyInputs) -> None:
    """Load another run's weights (weights only) and normalisation statistics into a fresh model; inputs the
    run adds (its last action, a history) start at weight 0, so it starts by acting as that policy did."""
    pre = load_pretrained(path)
    new_dim = model.observation_space.shape[0]
    act_dim = model.action_space.shape[0]
    obs_dim = plain_obs_dim(inputs, new_dim, act_dim)
    try:
        where = column_map(pre.inputs or PolicyInputs(), inputs, obs_dim, act_dim)
    except ValueError as exc:
        raise ValueError(f"--init-from {path}: {exc}") from None
    state_dict = widen_inputs(pre.state_dict, model.policy.state_dict(), where, new_dim)
    try:
        model.policy.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise ValueError(f"--init-from {path}: its network does not match this run's: {exc}") from None
    if isinstance(venv, VecNormalize) and pre.norm is not None:
        pre.norm.apply(venv)
        if len(where) != new_dim:
            venv.obs_rms = widen_obs_rms(venv.obs_rms, input_columns(inputs, obs_dim, act_dim), where)
    print(f"initialised from {pre.path}" + (f" (inputs widened {len(where)} -> {new_dim}, new ones start at weight 0)"
                                            if len(where) != new_dim else ""))


def widen_inputs(old: dict, new: dict, where: list[int], new_dim: int) -> dict:
    """A state dict for a policy that sees more inputs: each old input's weights moved to its column under the
    new layout (``where``), zero weights for the new inputs.

    A policy trained without inputs thus becomes one with them that computes exactly the same actions at the
    start. A critic of SAC/TD3 sees ``[obs, action]``: its action columns stay last.
    """
    old_dim, out = len(where), {}
    for key, w in old.items():
        target = new.get(key)
        if target is None or target.shape == w.shape or w.ndim != 2 or target.shape[0] != w.shape[0]:
            out[key] = w
            continue
        if target.shape[1] - w.shape[1] != new_dim - old_dim:  # not a layer that reads the observation
            out[key] = w
            continue
        wide = torch.zeros_like(target)
        wide[:, where] = w[:, :old_dim]
        wide[:, new_dim:] = w[:, old_dim:]  # a Q-network's action inputs (none for an actor or a V-network)
        out[key] = wide
    return out


def widen_obs_rms(rms, columns: dict[tuple[str, int], range], where: list[int]):
    """Normalisation statistics for the widened observation: every column the policy already saw keeps its
    statistics; new past observations take the observation's, new past commands the last command's (mean 0,
    variance 1 when there was none)."""
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    new_dim = max(c.stop for c in columns.values())
    wide = RunningMeanStd(shape=(new_dim,))
    wide.mean, wide.var = np.zeros(new_dim), np.ones(new_dim)
    old_mean, old_var = np.zeros(new_dim), np.ones(new_dim)
    old_mean[where], old_var[where] = rms.mean, rms.var
    for (kind, _), cols in columns.items():
        source = columns[(kind, 1)] if kind == "act" else columns[("obs", 0)]
        seen = all(c in where for c in source)
        wide.mean[cols.start:cols.stop] = old_mean[source.start:source.stop] if seen else 0.0
        wide.var[cols.start:cols.stop] = old_var[source.start:source.stop] if seen else 1.0
    wide.mean[where], wide.var[where] = rms.mean, rms.var
    wide.count = rms.count
    return wide


def new_model(cls, venv, cfg: PretrainConfig, run_dir: Path, kwargs: dict[str, Any]) -> BaseAlgorithm:
    """The SB3 model; an unknown or ill-typed hyperparameter (``--set``) is named, not a TypeError from deep in SB3."""
    known = set(inspect.signature(cls.__init__).parameters) - {"self", "policy", "env"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"hyperparameter(s) {unknown} are not {cls.__name__} arguments (from the spec or --set); "
                         f"allowed: {', '.join(sorted(known))}")
    try:
        return cls("MlpPolicy", venv, seed=cfg.seed, device="cpu", tensorboard_log=str(run_dir / "tb"), **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ValueError(f"{cls.__name__} rejected the hyperparameters {kwargs}: {exc}") from None


def default_eval_world(spec) -> str:
    """``real`` if the spec has it, else its first shifted world in spec order (else ``nominal``)."""
    if "real" in spec.targets:
        return "real"
    return next((w for w in spec.targets if w != "nominal"), "nominal")


def default_pretrain_dir(cfg: PretrainConfig, algo: str) -> Path:
    kind = "dr" if cfg.randomize else "nominal"
    # A task given as a spec path is named by its file: an absolute path would otherwise replace runs/pretrain.
    return Path("runs") / "pretrain" / f"{Path(cfg.task).stem}-{kind}-{algo}-s{cfg.seed}"


def pretrain(cfg: PretrainConfig, out: str | Path | None = None, resume: bool = False) -> Path:
    """Pretrain a policy in the task's (randomised) sim world; returns the run folder.

    The folder holds ``model.zip`` (an ordinary SB3 model), ``vecnormalize.pkl``,
    ``run.json``, ``evaluations.csv``, TensorBoard events under ``tb/`` and
    checkpoints under ``checkpoints/``. With ``resume``, a killed run continues
    from its latest checkpoint to the same total step count.
    """
    cfg.validate()
    spec = load_spec(cfg.task)
    if cfg.inputs:
        try:
            observation = PolicyInputs(**{**spec.observation.model_dump(), **cfg.inputs})
        except ValidationError as exc:
            raise ValueError(f"--inputs {cfg.inputs}: {exc.errors()[0]['msg']} (fields: last_action, history)") from None
        spec = spec.model_copy(update={"observation": observation})
    if cfg.eval_episodes < 1:
        raise ValueError(f"--eval-episodes {cfg.eval_episodes}: must be at least 1")
    algo = cfg.algo or spec.pretrain.algo
    total = cfg.steps or spec.pretrain.total_steps
    n_envs = cfg.n_envs or (spec.pretrain.n_envs if algo == spec.pretrain.algo else 1)
    run_dir = Path(out) if out else default_pretrain_dir(cfg, algo)
    if (run_dir / "model.zip").exists() and not resume:
        raise FileExistsError(f"{run_dir} already holds a finished run; use --resume or another --out"
                              if checkpoint_complete(run_dir / "model.zip") else
                              f"{run_dir} holds a model.zip without its manifest (killed while writing it?); "
                              "use --resume to finish the run from its last checkpoint, or another --out")
    if resume and not (run_dir / "run.json").exists():
        raise FileNotFoundError(f"{run_dir}: nothing to resume (no run.json); start the run without --resume")
    if not resume and (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").iterdir()):
        raise FileExistsError(f"{run_dir} holds checkpoints of an unfinished run; use --resume or another --out")
    with RunLock(run_dir):  # first: the clean-up below must never touch the files of a run still writing
        checkpoint = prepare_resume(run_dir) if resume else None
        return _pretrain(cfg, spec, algo, total, n_envs, run_dir, checkpoint, resume)


def prepare_resume(run_dir: Path) -> Path | None:
    """Clear what a kill left half-written and return the checkpoint to resume from (None: from step 0)."""
    final = run_dir / "model.zip"
    checkpoint = latest_checkpoint(run_dir)  # complete ones only: the clean-up below cannot change it
    if final.exists() and (checkpoint_complete(final) or checkpoint is None):
        # A finished run (or a folder with no checkpoint to go back to, such as a zoo entry) is never reopened:
        # --resume would rewrite its model.zip.
        raise FileExistsError(f"{run_dir} is finished (model.zip exists); nothing to resume. "
                              "Use another --out for a new run, or --init-from it to continue training")
    if final.exists():
        # Killed while writing the final model (its manifest never landed): resume from the last checkpoint.
        removed = remove_final_model(run_dir)
        print(f"{run_dir}: the final model was not completely written ({', '.join(sorted(removed))}); "
              "resuming from the last checkpoint")
    if (run_dir / "checkpoints").exists():
        removed = clean_incomplete(run_dir / "checkpoints")
        if removed:
            print(f"removed an incomplete checkpoint a crash left behind: {', '.join(sorted(removed))}")
    if checkpoint is None:
        print(f"{run_dir}: killed before its first checkpoint; starting again from step 0 "
              "(its evaluations so far move to evaluations.superseded.csv)")
    return checkpoint


def resolve_stepper(cfg: PretrainConfig, spec, n_envs: int) -> str:
    """``batch`` or ``gym``: what ``--stepper`` means for this run.

    ``auto`` batches two or more envs where the task has a batched kernel. With one env the two
    steppers run at the same speed (measured: 0.9-1.2x either way), so one env keeps the Gymnasium path,
    unless the spec's ``randomization.sampling`` needs the batch.
    """
    stepper = _stepper(cfg, spec, n_envs)
    check_sampling(cfg, spec, stepper, n_envs)
    return stepper


def _sampled(cfg: PretrainConfig, spec) -> bool:
    return cfg.randomize and spec.randomization.sampling is not None


def check_sampling(cfg: PretrainConfig, spec, stepper: str, n_envs: int) -> None:
    """A spec that chooses each episode's world (``randomization.sampling``) needs the batched stepper."""
    if stepper == "gym" and _sampled(cfg, spec):
        raise ValueError(f"{spec.path}: randomization.sampling is computed by the batched world only; this run would "
                         f"step Gymnasium envs (n_envs {n_envs}, --stepper {cfg.stepper}, --subproc {cfg.subproc}): "
                         "use the batched stepper, or remove the sampling block")


def _stepper(cfg: PretrainConfig, spec, n_envs: int) -> str:
    # One env batched runs as fast as one Gymnasium env; a spec with sampling needs the batch (SAC's one env too).
    one_env_batched = n_envs < 2 and _sampled(cfg, spec)
    if cfg.stepper == "gym" or (cfg.stepper == "auto" and (cfg.subproc or n_envs < 2) and not one_env_batched):
        return "gym"
    if cfg.subproc:
        raise ValueError("--subproc steps Gymnasium envs in subprocesses; it does not combine with --stepper batch")
    reason = unsupported_reason(spec, "sim")
    if reason is None:
        return "batch"
    if cfg.stepper == "batch":
        raise ValueError(f"--stepper batch: {reason}; use --stepper gym")
    return "gym"


def _check_same_selection(cfg: PretrainConfig, run_dir: Path) -> None:
    """A resumed run compares new evaluations with best.json's value: only under the rule that chose it."""
    started = json.loads((run_dir / "run.json").read_text())["config"]
    for name in ("select_on", "select_stat", "select_floor"):
        was, now = started.get(name, "mean" if name == "select_stat" else None), getattr(cfg, name)
        if was != now:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} {now}: {run_dir / 'run.json'} was started with {flag} {was}; resume it with "
                             "the same selection rule (best.zip so far was chosen by it)")


def _pretrain(cfg: PretrainConfig, spec, algo: str, total: int, n_envs: int, run_dir: Path, checkpoint,
              resume: bool) -> Path:
    set_threads(cfg.threads)
    set_random_seed(cfg.seed)

    stepper = resolve_stepper(cfg, spec, n_envs)
    if resume:
        # A resumed run keeps the stepper it started with (runs from before --stepper existed used Gymnasium).
        recorded = json.loads((run_dir / "run.json").read_text())["config"].get("stepper", "gym")
        if cfg.stepper not in ("auto", recorded):
            raise ValueError(f"--stepper {cfg.stepper}: {run_dir} was started with the {recorded} stepper; "
                             "resume it with that one (or leave --stepper at auto)")
        stepper = recorded
        check_sampling(cfg, spec, stepper, n_envs)  # a run started on Gymnasium envs before the spec had sampling
        _check_same_selection(cfg, run_dir)
    config = {**asdict(cfg), "algo": algo, "steps": total, "n_envs": n_envs, "stepper": stepper, "spec": spec.model_dump()}
    if not resume:
        write_run_info(run_dir, config)
    else:
        note_resume(run_dir)
        # Evaluations after the checkpoint will be measured again: move them aside, so each step appears once.
        step = -1 if checkpoint is None else checkpoint_step(checkpoint)
        supersede_evaluations(run_dir / "evaluations.csv", after=step)

    # ---- environments (as the policy sees them: with its inputs)
    inputs = spec.observation
    if stepper == "batch":
        world = BatchedWorld(spec, n_envs, randomize=cfg.randomize, seed=cfg.seed, nthread=cfg.sim_threads, inputs=inputs)
        venv = VecMonitor(BatchedVecEnv(world))
    else:
        sim_world = WithInputs(EnvFactory(make_sim_env, cfg.task, randomize=cfg.randomize), inputs)
        venv = make_vec_env(sim_world, n_envs, cfg.seed, cfg.subproc)
    kwargs = algo_kwargs(spec, algo, cfg.overrides)
    if spec.pretrain.normalize:
        gamma = kwargs.get("gamma", 0.99)
        venv = VecNormalize(venv, gamma=gamma)  # a resumed run gets its statistics from the checkpoint's arrays

    # ---- model
    cls = ALGOS[algo]
    model = new_model(cls, venv, cfg, run_dir, kwargs)
    if checkpoint is not None:
        # Weights, optimiser, step count, statistics and replay buffer, all read without unpickling.
        restore_checkpoint(model, checkpoint)
        exact = CheckpointFiles.of(checkpoint).state.exists()
        print(f"resuming {run_dir} from {checkpoint.name} at step {model.num_timesteps:,}"
              + (" (exactly: random generators and the batched world's state restored)" if exact else
                 " (weights, optimiser, statistics; the Gymnasium envs start new episodes)"))
    elif cfg.init_from:
        _init_from(model, venv, cfg.init_from, inputs)

    # ---- callbacks and learning
    eval_every = cfg.eval_every or max(total // 50, 1000)
    eval_world = cfg.eval_world or default_eval_world(spec)
    spec.target(eval_world)  # a clear error for an unknown world, before any training
    worlds = {
        "nominal": WithInputs(EnvFactory(make_target_env, cfg.task, "nominal"), inputs),
        eval_world: WithInputs(EnvFactory(make_target_env, cfg.task, eval_world), inputs),
    }
    # best.zip is chosen on the first world. A DR policy is chosen on its own training distribution:
    # on the nominal sim alone a policy that leans on latency (or a lucky friction) can look best.
    if (cfg.select_on or ("sim" if cfg.randomize else "nominal")) == "sim":
        worlds = {"sim": WithInputs(EnvFactory(make_sim_env, cfg.task, True), inputs), **worlds}
    eval_cb = EvalCallback(run_dir, worlds, eval_every, cfg.eval_episodes, seed=10_000 + cfg.seed, keep_best=True,
                           best_floor=None if cfg.select_floor is None else ("nominal", cfg.select_floor),
                           select_stat=cfg.select_stat, keep_evaluated=cfg.keep_evaluated)
    callbacks = [
        eval_cb,
        # On Gymnasium envs the episodes restart at each checkpoint (their state lives in their wrappers): a resume
        # is then exact there too. The batched world hands over its state instead.
        CheckpointCallback(run_dir, cfg.checkpoint_every,
                           restart_seed=None if stepper == "batch" else restart_seed_for(cfg.seed)),
        RandomizationLogger(),
        ProgressCallback(total, f"pretrain {cfg.task} ({'DR' if cfg.randomize else 'nominal'})", eval_cb),
    ]
    if checkpoint is None:  # a new run (a resumed one has its hparams already)
        hyper = {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, bool))}  # lr, n_steps, ...
        callbacks.append(HParamsCallback({
            "task": cfg.task, "algo": algo, "seed": cfg.seed, "randomize": cfg.randomize, "n_envs": n_envs,
            "stepper": stepper, "last_action": inputs.last_action, "history": inputs.history,
            "init_from": cfg.init_from or "", **hyper}, f"eval/{next(iter(worlds))}/mean_return"))
    write_pretrain_layout(run_dir)
    remaining = total - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=CallbackList(callbacks), tb_log_name="pretrain", reset_num_timesteps=checkpoint is None)
    save_checkpoint(model, run_dir, "model")
    venv.close()
    return run_dir
