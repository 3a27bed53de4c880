"""One transfer run (target, strategy, seed): load the policy, build the target, train within the budget, measure.

The run folder holds ``run.json``, ``evaluations.csv``, TensorBoard events under ``tb/``,
checkpoints, ``model.zip`` (an ordinary SB3 model) and ``result.json`` (which marks it finished,
with every target step it used: training and evaluation).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecNormalize

from sim2real.learning.algos import OFF_POLICY, algo_kwargs, set_threads
from sim2real.learning.artifacts import (
    RunLock,
    atomic_write_text,
    checkpoint_step,
    clean_incomplete,
    latest_checkpoint,
    note_resume,
    restart_seed_for,
    restore_checkpoint,
    save_checkpoint,
    supersede_evaluations,
    write_run_info,
)
from sim2real.learning.callbacks import CheckpointCallback, EvalCallback, ProgressCallback
from sim2real.learning.envs import make_vec_env
from sim2real.learning.evaluation import evaluate
from sim2real.learning.groups import reset_exploration
from sim2real.learning.loading import Pretrained, load_pretrained, policy_model
from sim2real.options import option
from sim2real.robot.log import LOG_NAME, read_log, refill_replay_buffer
from sim2real.robot.remote import RobotLinkError
from sim2real.robot.safety import EmergencyStop, SafetyConfig, load_safety
from sim2real.robot.session import RobotSession
from sim2real.spec import TaskSpec
from sim2real.transfer.adapt import RECORD_SEEDS_PER_RUN, calibrate_and_adapt
from sim2real.transfer.cases import SIMILARITY_THRESHOLD, CaseDecision, classify
from sim2real.transfer.strategies import STRATEGIES, apply_strategy
from sim2real.worlds.inputs import WithInputs, with_inputs
from sim2real.worlds.make import EnvFactory, make_target_env
from sim2real.worlds.targets import CheckedFactory, TargetError, check_spaces, resolve_target  # noqa: F401

ROBOT_EVAL_EPISODES = 3


# A bad target and a bad request are the same kind of user error (TargetError names the target).
TransferError = TargetError


@dataclass
class TransferConfig:
    """One transfer run. Every field with help text is also a ``sim2real transfer`` flag."""

    policy: str = field(metadata={"positional": True, "help": "a pretrain or transfer run folder, its model .zip, "
                                                              "or a policies/ zoo entry"})
    target: str = option("real", "a target world of the task, a Gymnasium id (with --import), or module:Factory")
    task: str | None = option(None, "the task a plain SB3 model .zip or RL Zoo run folder was trained on (a sim2real "
                                    "policy knows its own)")
    strategy: str = option("finetune", "how the policy is carried to the target", choices=tuple(STRATEGIES))
    budget: str | int = option("small", "target training steps: small, large (from the spec) or a number", flag="--budget")
    seed: int = option(0, "random seed of the run")
    feature_layers: int = option(1, "how many lowest hidden layers count as 'features'")
    lr_scale: float = option(0.1, "finetune: the features learn at lr x this")
    freeze_layers: int = option(0, "finetune: freeze the k lowest layers")
    reinit_head: bool = option(False, "freeze: re-initialise the action (output) layer")
    freeze_critic_features: bool = option(False, "freeze: freeze the critic's features too")
    norm: str = option("frozen", "observation normalisation on the target: pretraining's statistics frozen, or adapting",
                     choices=("frozen", "adapt"))
    reset_exploration: float | None = option(None, "reset PPO log_std (or SAC log entropy coefficient) to this value",
                                           metavar="LOG_STD")
    critic_warmup: int = option(0, "PPO: updates that train only the critic first")
    similarity_threshold: float = option(SIMILARITY_THRESHOLD, "auto: zero-shot/sim return below this counts as a "
                                       "different task", flag="--similarity")
    eval_every: int | None = option(None, "target steps between evaluations (default: the spec's eval_interval)")
    eval_episodes: int | None = option(None, "episodes per evaluation (default: the spec's)")
    import_module: str | None = option(None, "module to import first (registers your env)", flag="--import")
    threads: int | None = option(1, "torch threads (1 is fastest for small MLPs)")
    robot: bool = option(False, "treat a target world as a robot: one instance, safety layer, transition log "
                                "(always so for a Gymnasium id or module:Factory)")
    safety: str | None = option(None, "YAML file of robot limits, rate and stop (default: the action space's "
                                      "limits, NaN checks, stop file STOP and SIGUSR1)", metavar="FILE")
    no_safety: bool = option(False, "run a robot target without the safety layer")
    max_episode_steps: int | None = option(None, "end a robot target's episodes after N steps (for an env without "
                                                 "a TimeLimit)", metavar="N")
    budget_includes_eval: bool = option(False, "the budget counts every target step, evaluation included "
                                               "(training stops early enough for the final evaluation)")
    calibrate_episodes: int = option(5, "calibrate: target episodes recorded for the fit (they count against the "
                                        "budget)")
    # 300k, not 100k: on hopper `real` (the default study + calibrate, seeds 0-1, one shared recording) the adapted
    # policy started fine-tuning at 500-520 on `real` and ended at 490-550, against a start of 346-437 and a final
    # IQM of 424 after 100k (docs/results/hopper-small-calibrate); sim steps cost ~5 min of one core, no target steps.
    calibrate_sim_steps: int = option(300_000, "calibrate: sim steps in the calibrated randomised sim before "
                                               "fine-tuning on the target")
    overrides: dict[str, Any] | None = option(None, "hyperparameter overrides on the target (--set KEY=VALUE)",
                                            cli=False)
    target_kwargs: dict[str, Any] | None = option(None, "keyword arguments for the target's env factory "
                                                        "(--target-kwargs KEY=VALUE)", cli=False)

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise TransferError(f"--strategy {self.strategy!r}: allowed: {', '.join(STRATEGIES)}")
        if self.norm not in ("frozen", "adapt"):
            raise TransferError(f"--norm {self.norm!r}: allowed: frozen, adapt")
        if not 0 < self.lr_scale <= 10:
            raise TransferError(f"--lr-scale {self.lr_scale}: must be in (0, 10]")
        if not 0 <= self.similarity_threshold <= 1:
            raise TransferError(f"--similarity {self.similarity_threshold}: must be in [0, 1]")
        for name in ("eval_every", "eval_episodes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TransferError(f"--{name.replace('_', '-')} {value}: must be at least 1")
        if isinstance(self.budget, int) and self.budget < 1:
            raise TransferError(f"--budget {self.budget}: must be at least 1 target step")
        if not 1 <= self.calibrate_episodes <= RECORD_SEEDS_PER_RUN or self.calibrate_sim_steps < 0:
            raise TransferError(f"--calibrate-episodes {self.calibrate_episodes} / --calibrate-sim-steps "
                                f"{self.calibrate_sim_steps}: 1 to {RECORD_SEEDS_PER_RUN} episodes (each seed records "
                                "its own block of episode seeds), and 0 (no sim training) or more sim steps")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise TransferError(f"--max-episode-steps {self.max_episode_steps}: must be at least 1")

    def on_robot(self, spec: TaskSpec) -> bool:
        """A plug-in env (Gymnasium id, module:Factory) is a robot; a target world is one when asked (--robot)."""
        return self.robot or self.target not in spec.targets


def default_transfer_dir(task: str, cfg: TransferConfig) -> Path:
    return Path("runs") / "transfer" / Path(task).stem / cfg.target.replace(":", "_").replace("/", "_") / cfg.strategy / f"s{cfg.seed}"


def build_model(pre: Pretrained, venv, spec: TaskSpec, cfg: TransferConfig, budget: int, fresh: bool):
    """An SB3 model with the pretrained architecture and the target hyperparameters."""
    own = pre.hyperparams
    if fresh:
        # Scratch is the task's own recipe on the target, in the policy's architecture: a pretraining run's --set
        # values tuned that run (a lower learning rate to continue a trained policy, say), not a fresh start.
        own = {k: v for k, v in algo_kwargs(spec, pre.algo, {}).items() if k != "policy_kwargs"}
    kwargs = {**own, **spec.transfer.hyperparams, **(cfg.overrides or {})}
    if pre.algo in OFF_POLICY:
        # A real robot's buffer starts empty; start learning within the budget.
        kwargs["learning_starts"] = min(int(kwargs.get("learning_starts", 100)), max(budget // 10, 1))
    return policy_model(pre, venv, seed=cfg.seed, hyperparams=kwargs, fresh=fresh)


def transfer(cfg: TransferConfig, out: str | Path | None = None, quiet: bool = False,
             stop: Callable[[], bool] | None = None, reset_hook: Callable[[], None] | None = None,
             resume: bool = False) -> Path:
    """Run one transfer (target, strategy, seed); returns the run folder with ``result.json``.

    A target world of the task is built twice at most: one env trains (inside SB3's VecEnv) and one
    evaluates, episode after episode. A robot (a plug-in env, or any target with ``robot=True``) is
    built once: a :class:`~sim2real.robot.session.RobotSession` shares that instance between training
    and evaluation, checks every step (safety layer) and appends it to ``transitions.jsonl``.
    Either way every step on the target is counted in ``result.json["target_steps"]``.

    Args:
        stop: an emergency-stop callable for a robot (True: stop now); ``reset_hook``: run before each
            robot reset (see :class:`~sim2real.robot.safety.SafetyLayer`).
        resume: continue a killed or stopped run in ``out`` from its newest complete checkpoint
            (the same settings required); evaluations after that checkpoint move to
            ``evaluations.superseded.csv``, the transition log is appended to.
    """
    cfg.validate()
    pre = load_pretrained(cfg.policy, cfg.task)
    spec = pre.spec
    budget = spec.budget(cfg.budget)
    run_dir = Path(out) if out else default_transfer_dir(pre.task, cfg)
    if (run_dir / "result.json").exists():
        raise FileExistsError(f"{run_dir} already holds a finished run; choose another --out")
    if not resume and (run_dir / "run.json").exists():
        raise FileExistsError(f"{run_dir} holds an unfinished run; continue it with --resume, or choose another --out")
    # A resume locks before anything in the folder is touched; a new run once its checks have passed.
    locks = [RunLock(run_dir)] if resume else []
    try:
        checkpoint = _resume_point(run_dir, cfg) if resume else None
        return _transfer(cfg, pre, spec, budget, run_dir, checkpoint, quiet, stop, reset_hook, locks)
    finally:
        for lock in locks:
            lock.release()


def _transfer(cfg: TransferConfig, pre: Pretrained, spec: TaskSpec, budget: int, run_dir: Path,
              checkpoint: Path | None, quiet: bool, stop, reset_hook, locks: list[RunLock]) -> Path:
    """Build the target (once for a robot), then run."""
    on_robot = cfg.on_robot(spec)
    safety = None if cfg.no_safety or not on_robot else (load_safety(cfg.safety) if cfg.safety else SafetyConfig())
    if safety is not None and safety.stop_file and (run_dir / safety.stop_file).exists():
        # A stop file left from an emergency stop would stop the run again at its first step.
        raise FileExistsError(f"{run_dir / safety.stop_file} exists (an emergency stop); remove it to run")
    raw_target = resolve_target(spec, cfg.target, cfg.import_module, cfg.target_kwargs)
    target_env = raw_target()
    home = make_target_env(spec.path, "nominal")
    # The policy's spaces are its task's; compare before building anything more on the target.
    try:
        check_spaces(home.observation_space, home.action_space, target_env, cfg.target)
        if not locks:  # a new run: the folder and its lock appear only now, after the checks
            locks.append(RunLock(run_dir))
    except (TransferError, FileExistsError):
        target_env.close()
        raise
    finally:
        home.close()
    set_threads(cfg.threads)
    set_random_seed(cfg.seed)
    session = None
    if on_robot:
        try:
            session = RobotSession(target_env, run_dir, safety, cfg.max_episode_steps, stop=stop,
                                   reset_hook=reset_hook, name=cfg.target)
        except Exception:
            target_env.close()
            raise
        # Training and evaluation share the one instance (a VecEnv over a borrowed handle; never a subprocess).
        env_fn = lambda: with_inputs(session.borrow(), pre.inputs)  # noqa: E731
        eval_env = with_inputs(session.borrow(), pre.inputs)
        phase = session.phase
    else:
        env_fn = WithInputs(raw_target, pre.inputs)  # the target as the policy sees it
        eval_env = with_inputs(target_env, pre.inputs)
        phase = None
    try:
        return _run(cfg, pre, spec, budget, run_dir, env_fn, eval_env, session, phase, quiet, checkpoint,
                    target_factory=raw_target)
    finally:
        eval_env.close()
        if session is not None:
            session.close()


# Settings a resumed run must share with the run it continues.
RESUME_KEYS = ("policy", "target", "strategy", "budget", "seed", "feature_layers", "lr_scale", "freeze_layers",
               "reinit_head", "freeze_critic_features", "norm", "reset_exploration", "critic_warmup", "overrides",
               "robot", "safety", "no_safety", "max_episode_steps", "budget_includes_eval",
               "calibrate_episodes", "calibrate_sim_steps")


def _resume_point(run_dir: Path, cfg: TransferConfig) -> Path | None:
    """The checkpoint a resumed run continues from (None: it starts again at step 0, keeping what was logged)."""
    info = run_dir / "run.json"
    if not info.exists():
        raise FileNotFoundError(f"{run_dir}: nothing to resume (no run.json); start the run without --resume")
    recorded = json.loads(info.read_text())["config"]
    mine = asdict(cfg)
    changed = [f"{k}: {recorded.get(k)!r} then, {mine[k]!r} now" for k in RESUME_KEYS if recorded.get(k) != mine[k]]
    if changed:
        raise FileExistsError(f"{run_dir} was started with other settings ({'; '.join(changed)}); resume with the "
                              "same ones, or choose another --out")
    if (run_dir / "checkpoints").exists():
        clean_incomplete(run_dir / "checkpoints")
    checkpoint = latest_checkpoint(run_dir)
    step = 0 if checkpoint is None else checkpoint_step(checkpoint)
    # Without a checkpoint the run starts again at step 0 and measures step 0 again: every row goes aside.
    supersede_evaluations(run_dir / "evaluations.csv", after=step if checkpoint is not None else -1)
    return checkpoint


def _run(cfg: TransferConfig, pre: Pretrained, spec: TaskSpec, budget: int, run_dir: Path, env_fn, eval_env,
         session: RobotSession | None, phase, quiet: bool, checkpoint: Path | None = None,
         target_factory=None) -> Path:
    started = time.monotonic()
    on_robot = session is not None
    task_changed = bool(cfg.target in spec.targets and spec.targets[cfg.target].task_variant)
    # A robot's evaluations cost wall-clock time and wear: fewer episodes, about four evaluations a run.
    eval_episodes = cfg.eval_episodes or (min(spec.budgets.eval_episodes, ROBOT_EVAL_EPISODES) if on_robot
                                          else spec.budgets.eval_episodes)
    eval_every = cfg.eval_every or (max(spec.budgets.eval_interval, budget // 4) if on_robot
                                    else spec.budgets.eval_interval)
    eval_seed = 20_000  # the same evaluation episodes for every strategy and seed

    def measuring():  # a target step taken to measure, not to train
        return phase("eval") if phase else nullcontext()

    strategy, decision, eval_steps = cfg.strategy, None, 0
    resumed = (run_dir / "run.json").exists()
    if resumed:  # auto's decision was measured and recorded already
        recorded = json.loads((run_dir / "run.json").read_text())["config"]
        strategy = recorded.get("ran_strategy", strategy)
        decision = CaseDecision(**recorded["decision"]) if recorded.get("decision") else None
    # Models that only act (auto's measurement, zero-shot) sit on the nominal sim, not on another target instance.
    home_venv = make_vec_env(WithInputs(EnvFactory(make_target_env, spec.path, "nominal"), pre.inputs), 1, cfg.seed)
    if strategy == "auto" and decision is None:
        model = policy_model(pre, home_venv)
        with measuring():
            zs = evaluate(model, eval_env, eval_episodes, obs_rms=pre.obs_rms, seed=eval_seed)
        sim = evaluate(model, WithInputs(EnvFactory(make_target_env, spec.path, "nominal"), pre.inputs),
                       eval_episodes, obs_rms=pre.obs_rms, seed=eval_seed)  # the sim: not a target step
        eval_steps += zs.steps
        decision = classify(spec, budget, sim.mean, zs.mean, task_changed, cfg.similarity_threshold)
        strategy = decision.strategy
        if not quiet:
            print(f"auto: {decision.reason}")
    if resumed:
        note_resume(run_dir)
    else:
        write_run_info(run_dir, {**asdict(cfg), "task": pre.task, "algo": pre.algo, "budget_steps": budget,
                                 "pretrained": str(pre.path), "spec": spec.model_dump(),
                                 "pretrain_overrides": pre.overrides, "on_robot": on_robot,
                                 "eval_every": eval_every, "eval_episodes": eval_episodes, "ran_strategy": strategy,
                                 "decision": asdict(decision) if decision else None})

    if not STRATEGIES[strategy].trains:
        model = policy_model(pre, home_venv)
        with measuring():
            zs = evaluate(model, eval_env, eval_episodes, obs_rms=pre.obs_rms, seed=eval_seed)
        home_venv.close()
        (run_dir / "evaluations.csv").write_text(f"step,target\n0,{zs.mean:.6g}\n")
        # A flat line over the budget, so the zero-shot baseline overlays the learning curves in TensorBoard.
        logger = _tb_logger(run_dir, cfg, strategy)
        for step in (0, budget):
            for tag in ("eval/target/mean_return", "eval/mean_reward"):
                logger.record(tag, zs.mean)
            logger.dump(step)
        logger.close()
        return _finish(run_dir, cfg, strategy, budget, zs.returns, None, "no training",
                       {"training": 0, "evaluation": eval_steps + zs.steps}, started, session)

    recorded = 0
    if strategy == "calibrate":  # record, fit the sim, continue there; then fine-tune what comes out
        pre, recorded, recorded_return = calibrate_and_adapt(cfg, pre, spec, run_dir, target_factory, session,
                                                             home_venv, quiet)
        if recorded >= budget:
            raise TransferError(f"calibrate: recording took {recorded:,} target steps, the whole budget of "
                                f"{budget:,}; lower --calibrate-episodes or raise --budget")
        csv = run_dir / "evaluations.csv"
        if not csv.exists() or not any(row.startswith("0,") for row in csv.read_text().splitlines()[1:]):
            # Step 0 is the pretrained policy on the target, measured by the recorded episodes themselves:
            # until the recording is done nothing better exists, and the curve's area must count those steps.
            atomic_write_text(csv, f"step,target\n0,{recorded_return:.6g}\n")  # a resume may have left the header
    home_venv.close()
    venv = make_vec_env(env_fn, 1, cfg.seed)
    gamma = pre.hyperparams.get("gamma", 0.99)
    fresh = STRATEGIES[strategy].fresh
    if pre.norm is not None and not fresh:
        # Pretraining's statistics, frozen (or adapting with --norm adapt): the features expect them.
        venv = VecNormalize(venv, training=cfg.norm == "adapt", norm_reward=pre.norm.norm_reward, gamma=gamma)
        pre.norm.apply(venv)
    elif pre.norm is not None:
        venv = VecNormalize(venv, gamma=gamma, clip_obs=pre.norm.clip_obs, norm_reward=pre.norm.norm_reward)
    model = build_model(pre, venv, spec, cfg, budget, fresh=fresh)

    what = apply_strategy(model, strategy, cfg)
    if cfg.reset_exploration is not None:
        reset_exploration(model, cfg.reset_exploration)
    model.critic_warmup_updates = cfg.critic_warmup
    if recorded and checkpoint is None:
        model.num_timesteps = recorded  # the curve starts where recording left the budget; learn() stops at it
    if checkpoint is not None:
        # Same build, same strategy (layer groups, frozen layers), then the checkpoint's weights and optimiser.
        done = restore_checkpoint(model, checkpoint)
        if not quiet:
            print(f"resuming {run_dir} from {checkpoint.name} at step {done:,}")
    if resumed and on_robot and pre.algo in OFF_POLICY:
        # Every transition the robot produced, the ones after the checkpoint included, goes back into the buffer.
        refilled = refill_replay_buffer(model, read_log(run_dir), pre.inputs)
        note_resume(run_dir, replay_refilled=refilled)
        if not quiet:
            print(f"replay buffer refilled with {refilled:,} logged transitions")
    if not quiet:
        print(f"{strategy}: {what}")

    model.set_logger(_tb_logger(run_dir, cfg, strategy))
    eval_cb = EvalCallback(run_dir, {"target": eval_env}, eval_every, eval_episodes, seed=eval_seed,
                           shares_training_env=on_robot, phase=phase, start_step=recorded)
    # Off a robot the episodes restart at each checkpoint, so a resumed run goes on exactly as this one (a robot
    # is not reset for it: its run resumes with the same weights, new episodes).
    callbacks = [eval_cb, CheckpointCallback(run_dir, max(budget // 4, 1),
                                             restart_seed=None if on_robot else restart_seed_for(cfg.seed))]
    if on_robot:
        callbacks.append(RobotGuard(session, budget if cfg.budget_includes_eval else None, eval_cb))
    if not quiet:
        status = (lambda: f"robot {session.stats()['robot_steps']['total']:,} steps") if on_robot else None
        callbacks.append(ProgressCallback(budget, f"{strategy} on {cfg.target} (seed {cfg.seed})", eval_cb, status))
    stopped = None
    try:
        model.learn(budget - model.num_timesteps, callback=callbacks,
                    reset_num_timesteps=checkpoint is None and not recorded)
    except (EmergencyStop, RobotLinkError) as exc:  # a stop seen at a reset, or a robot that cannot be reached
        stopped = exc
    if session is not None and (stopped or session.stop_reason):
        save_checkpoint(model, run_dir / "checkpoints", f"step_{model.num_timesteps:09d}")
        venv.close()
        why = session.stop_reason or str(stopped)
        cls = RobotLinkError if isinstance(stopped, RobotLinkError) else EmergencyStop
        raise cls(f"{why}; {model.num_timesteps:,} training steps done, every transition is in "
                  f"{run_dir / LOG_NAME}, the policy so far in {run_dir / 'checkpoints'}")
    save_checkpoint(model, run_dir, "model")
    venv.close()
    # The callback's last evaluation is of the final policy: the result reuses it instead of spending
    # another evaluation's worth of target steps on the same episodes.
    steps = {"training": int(model.num_timesteps) - recorded, "evaluation": eval_steps + eval_cb.steps["target"]}
    if recorded:
        steps["recording"] = recorded
    return _finish(run_dir, cfg, strategy, budget, eval_cb.last_returns["target"], decision, what, steps, started,
                   session)


class RobotGuard(BaseCallback):
    """Stop training on an emergency stop, or when the budget (evaluation included) is about to run out."""

    def __init__(self, session: RobotSession, total_budget: int | None, eval_cb: EvalCallback):
        super().__init__()
        self.session, self.total_budget, self.eval_cb = session, total_budget, eval_cb

    def _on_step(self) -> bool:
        if self.session.stop_reason:
            return False
        if self.total_budget is None:
            return True
        # Keep room for the final evaluation, estimated by the most expensive one so far.
        reserve = max(self.eval_cb.eval_costs, default=0)
        return self.session.stats()["robot_steps"]["total"] + reserve < self.total_budget


def _tb_logger(run_dir: Path, cfg: TransferConfig, strategy: str):
    """SB3's logger into ``tb/``, with the run's settings as TensorBoard hparams (filter and compare runs by them)."""
    from stable_baselines3.common.logger import HParam, configure

    logger = configure(str(run_dir / "tb"), ["tensorboard", "csv"])
    hparams = {"strategy": strategy, "target": cfg.target, "seed": cfg.seed, "lr_scale": cfg.lr_scale,
               "feature_layers": cfg.feature_layers, "norm": cfg.norm, "budget": str(cfg.budget)}
    logger.record("hparams", HParam(hparams, {"eval/target/mean_return": 0.0}), exclude=("stdout", "log", "csv"))
    return logger


def _finish(run_dir: Path, cfg: TransferConfig, strategy: str, budget: int, final_returns: list[float],
            decision: CaseDecision | None, what: str, target_steps: dict[str, int], started: float,
            session: RobotSession | None = None) -> Path:
    result = {
        "strategy": cfg.strategy,
        "ran_strategy": strategy,
        "target": cfg.target,
        "seed": cfg.seed,
        "budget": budget,
        "final_returns": final_returns,
        "final_mean": float(np.mean(final_returns)),
        "description": what,
        "decision": asdict(decision) if decision else None,
        # Every interaction with the target world: on a robot, its time and wear.
        "target_steps": {**target_steps, "total": sum(target_steps.values())},
        # Wall-clock of the attempt that finished the run (a resumed run's earlier attempts are not in it).
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    if session is not None:
        # The robot's own count (every step that reached it, safe actions included) and its time.
        result["robot"] = session.stats()
    atomic_write_text(run_dir / "result.json", json.dumps(result, indent=2))
    return run_dir
