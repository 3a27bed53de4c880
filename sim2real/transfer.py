"""Carrying a pretrained policy to a target world: zero-shot, scratch, freeze, finetune, reinit-top, full, auto.

============  ===========================================================  ==========================
strategy      what trains                                                  textbook case
============  ===========================================================  ==========================
zero-shot     nothing: the pretrained policy is evaluated on the target    (reference)
scratch       a fresh policy, same algorithm, hyperparameters and budget   (baseline)
freeze        feature layers frozen; head (and the critic) train           1: small data, similar
reinit-top    lowest k layers kept and frozen; everything above re-init    2: small data, different
finetune      all layers; features at lr x lr_scale, head at lr            3: large data, similar
full          all layers at the full rate from the pretrained start        4: large data, different
auto          measures the case, then runs one of the four above           -
============  ===========================================================  ==========================
"""

from __future__ import annotations

import importlib
import json
import warnings
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecNormalize

from sim2real.evaluation import evaluate
from sim2real.make import make_target_env
from sim2real.policy import GROUPED, layer_groups, regroup_optimizers, reinitialize, reset_exploration
from sim2real.spec import TaskSpec, load_spec
from sim2real.training import (
    OFF_POLICY,
    CheckpointCallback,
    EnvFactory,
    EvalCallback,
    NormStats,
    ProgressCallback,
    algo_kwargs,
    atomic_write_text,
    load_norm_stats,
    make_vec_env,
    norm_paths,
    policy_kwargs_from_spec,
    save_checkpoint,
    set_threads,
    write_run_info,
)

STRATEGIES = ("zero-shot", "scratch", "freeze", "finetune", "reinit-top", "full", "auto")
CASE_STRATEGY = {1: "freeze", 2: "reinit-top", 3: "finetune", 4: "full"}


class TransferError(ValueError):
    """The policy and the target do not fit together, or the request is invalid."""


# ---------------------------------------------------------------- the pretrained policy


@dataclass
class Pretrained:
    """A pretrained policy read without unpickling: weights (``weights_only``), arrays and JSON."""

    path: Path
    task: str
    algo: str
    policy_kwargs: dict[str, Any]
    hyperparams: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    norm: NormStats | None
    randomize: bool = True

    @property
    def obs_rms(self):
        return self.norm.obs_rms if self.norm else None


def policy_files(path: str | Path) -> tuple[Path, Path, Path]:
    """Where a POLICY's files live: (run folder with run.json, model .zip, normalisation .npz).

    POLICY is a pretrain run folder, a zoo entry under ``policies/``, or a model ``.zip`` inside one
    (``best.zip``, ``checkpoints/step_*.zip``).
    """
    path = Path(path)
    if path.is_dir():
        run_dir, model_zip = path, path / "model.zip"
    else:
        model_zip = path
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run_dir, model_zip, norm_paths(model_zip.parent, model_zip.stem)[1]


def load_pretrained(path: str | Path) -> Pretrained:
    """Read a pretrain run folder (or a model ``.zip`` inside one, or a zoo entry under ``policies/``).

    The folder's ``run.json`` says which task, algorithm and architecture; the
    weights come from the zip's ``policy.pth`` via ``torch.load(weights_only=True)``
    and the normalisation statistics from ``obs_rms.npz``: nothing is unpickled.
    """
    run_dir, model_zip, npz = policy_files(path)
    if not model_zip.exists():
        raise FileNotFoundError(f"{model_zip}: no such model (POLICY is a pretrain run folder or its model .zip)")
    info_path = run_dir / "run.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{info_path}: missing; a POLICY must be a sim2real pretrain run folder or zoo entry")
    config = json.loads(info_path.read_text())["config"]
    spec = load_spec(config["task"])
    algo = config["algo"]
    with zipfile.ZipFile(model_zip) as zf, zf.open("policy.pth") as f:
        state_dict = torch.load(f, map_location="cpu", weights_only=True)
    norm = None
    if npz.exists():
        norm = load_norm_stats(npz)
    elif spec.pretrain.normalize and algo == spec.pretrain.algo:
        raise FileNotFoundError(f"{npz}: missing; the policy was trained on normalised observations")
    kwargs = algo_kwargs(spec, algo, config.get("overrides"))
    policy_kwargs = kwargs.pop("policy_kwargs", {})
    return Pretrained(
        path=model_zip, task=config["task"], algo=algo, policy_kwargs=policy_kwargs, hyperparams=kwargs,
        state_dict=state_dict, norm=norm, randomize=config.get("randomize", True),
    )


# ---------------------------------------------------------------- the target world


def resolve_target(spec: TaskSpec, target: str, import_module: str | None = None):
    """A picklable env factory for ``target``: a target-world name, a Gymnasium id, or ``module:Factory``."""
    if import_module:
        importlib.import_module(import_module)
    if target in spec.targets:
        return EnvFactory(make_target_env, spec.path, target)
    if ":" in target:
        module, _, attr = target.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise TransferError(f"target {target}: cannot import {attr!r} from {module!r}: {exc}") from None
        return EnvFactory(factory)
    if target in gym.registry:
        return EnvFactory(gym.make, target)
    raise TransferError(
        f"target {target!r}: not a target world of {spec.name} ({', '.join(spec.targets)}), "
        "not a registered Gymnasium id (pass --import MODULE to register yours) and not module:Factory"
    )


def check_spaces(policy_obs: gym.Space, policy_act: gym.Space, env: gym.Env, target: str) -> None:
    """Shapes must match; different bounds only warn."""
    for what, mine, theirs in (
        ("observation", policy_obs, env.observation_space),
        ("action", policy_act, env.action_space),
    ):
        if getattr(mine, "shape", None) != getattr(theirs, "shape", None) or type(mine) is not type(theirs):
            raise TransferError(f"{what} spaces differ: the policy expects {mine}, target {target!r} has {theirs}")
        if isinstance(mine, gym.spaces.Box) and not (
            np.allclose(mine.low, theirs.low) and np.allclose(mine.high, theirs.high)
        ):
            warnings.warn(f"{what} space bounds differ: policy {mine}, target {target!r} {theirs}", stacklevel=2)


# ---------------------------------------------------------------- configuration


@dataclass
class TransferConfig:
    policy: str
    target: str = "real"
    strategy: str = "finetune"
    budget: str | int = "small"
    seed: int = 0
    feature_layers: int = 1
    lr_scale: float = 0.1
    freeze_layers: int = 0
    reinit_head: bool = False
    freeze_critic_features: bool = False
    norm: str = "frozen"  # frozen | adapt
    reset_exploration: float | None = None
    critic_warmup: int = 0
    similarity_threshold: float = 0.25
    eval_every: int | None = None
    eval_episodes: int | None = None
    import_module: str | None = None
    threads: int | None = 1
    overrides: dict[str, Any] | None = None

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise TransferError(f"--strategy {self.strategy!r}: allowed: {', '.join(STRATEGIES)}")
        if self.norm not in ("frozen", "adapt"):
            raise TransferError(f"--norm {self.norm!r}: allowed: frozen, adapt")
        if not 0 < self.lr_scale <= 10:
            raise TransferError(f"--lr-scale {self.lr_scale}: must be in (0, 10]")


def default_transfer_dir(task: str, cfg: TransferConfig) -> Path:
    return Path("runs") / "transfer" / task / cfg.target.replace(":", "_").replace("/", "_") / cfg.strategy / f"s{cfg.seed}"


# ---------------------------------------------------------------- auto: which case is this?


@dataclass
class CaseDecision:
    case: int
    strategy: str
    large_budget: bool
    similar: bool
    budget: int
    zero_shot: float
    sim_return: float
    task_changed: bool
    reason: str


def classify(spec: TaskSpec, budget: int, sim_return: float, zero_shot: float, task_changed: bool,
             similarity_threshold: float = 0.25) -> CaseDecision:
    """Place a target in one of the four cases from measured quantities.

    * budget: large if at least halfway from the spec's small to its large budget;
    * similar: the task's reward is unchanged and the zero-shot return keeps at
      least ``similarity_threshold`` of the sim return (default 25%: the pretrained
      policy still does a recognisable part of the job; below that, the shift is
      large enough that its upper layers are treated as not carrying over).
    """
    threshold_budget = (spec.budgets.small + spec.budgets.large) / 2
    large = budget >= threshold_budget
    ratio = zero_shot / sim_return if sim_return > 0 else 0.0
    similar = (not task_changed) and ratio >= similarity_threshold
    case = {(False, True): 1, (False, False): 2, (True, True): 3, (True, False): 4}[(large, similar)]
    reason = (
        f"budget {budget:,} steps is {'large' if large else 'small'} (threshold {threshold_budget:,.0f}); "
        f"zero-shot return {zero_shot:.1f} is {ratio:.0%} of the sim return {sim_return:.1f}"
        f"{' and the task variant changes the reward' if task_changed else ''}: "
        f"{'similar' if similar else 'different'} task -> case {case} -> {CASE_STRATEGY[case]}"
    )
    return CaseDecision(case, CASE_STRATEGY[case], large, similar, budget, zero_shot, sim_return, task_changed, reason)


# ---------------------------------------------------------------- the run


def build_model(pre: Pretrained, venv, spec: TaskSpec, cfg: TransferConfig, budget: int, fresh: bool):
    """An SB3 model with the pretrained architecture and the target hyperparameters."""
    kwargs = {**pre.hyperparams, **spec.transfer.hyperparams, **(cfg.overrides or {})}
    if pre.algo in OFF_POLICY:
        # A real robot's buffer starts empty; start learning within the budget.
        kwargs["learning_starts"] = min(int(kwargs.get("learning_starts", 100)), max(budget // 10, 1))
    cls = GROUPED[pre.algo]
    model = cls("MlpPolicy", venv, seed=cfg.seed, device="cpu", policy_kwargs=policy_kwargs_from_spec(pre.policy_kwargs), **kwargs)
    if not fresh:
        model.policy.load_state_dict(pre.state_dict)
    return model


def load_for_evaluation(path: str | Path):
    """A pretrained policy as a ready SB3 model: ``(pretrained, spec, model)`` (weights only, nothing unpickled)."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    pre = load_pretrained(path)
    spec = load_spec(pre.task)
    home = DummyVecEnv([EnvFactory(make_target_env, spec.path, "nominal")])
    return pre, spec, build_model(pre, home, spec, TransferConfig(policy=str(path)), 1, fresh=False)


def apply_strategy(model, strategy: str, cfg: TransferConfig) -> str:
    """Set freezing, learning-rate scales and re-initialisation; return a one-line description."""
    if strategy == "scratch":
        return "a fresh policy"
    groups = layer_groups(model, cfg.feature_layers)
    frozen: set[str] = set()
    frozen_params: list = []
    scales: dict[str, float] = {}
    if strategy == "freeze":
        frozen = {"actor_features"} | ({"critic_features"} if cfg.freeze_critic_features else set())
        what = f"actor features (lowest {cfg.feature_layers} layers) frozen, head trains"
        if cfg.reinit_head:
            torch.manual_seed(cfg.seed)
            for layer in groups.actor_output:
                if isinstance(layer, torch.nn.Linear):
                    layer.reset_parameters()  # a new action layer on top of the kept features
            what += "; action layer re-initialised"
    elif strategy == "finetune":
        scales = {"actor_features": cfg.lr_scale, "critic_features": cfg.lr_scale}
        what = f"all layers train; features at lr x {cfg.lr_scale}"
        if cfg.freeze_layers:
            lowest = layer_groups(model, cfg.freeze_layers)
            frozen_params = lowest.params_of("actor_features") + lowest.params_of("critic_features")
            what += f"; lowest {cfg.freeze_layers} layers frozen"
    elif strategy == "reinit-top":
        frozen = {"actor_features", "critic_features"}
        reinitialize(groups, ["actor_head", "critic_head"], seed=cfg.seed)
        what = f"lowest {cfg.feature_layers} layers kept and frozen; everything above re-initialised"
    elif strategy == "full":
        what = "all layers train at the full rate"
    else:
        raise TransferError(f"strategy {strategy!r} has no training recipe")
    regroup_optimizers(model, groups, scales, frozen, frozen_params)
    return what


def transfer(cfg: TransferConfig, out: str | Path | None = None, quiet: bool = False) -> Path:
    """Run one transfer (target, strategy, seed); returns the run folder with ``result.json``."""
    cfg.validate()
    pre = load_pretrained(cfg.policy)
    spec = load_spec(pre.task)
    budget = spec.budget(cfg.budget)
    run_dir = Path(out) if out else default_transfer_dir(pre.task, cfg)
    if (run_dir / "result.json").exists():
        raise FileExistsError(f"{run_dir} already holds a finished run; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    set_random_seed(cfg.seed)
    env_fn = resolve_target(spec, cfg.target, cfg.import_module)
    probe, home = env_fn(), make_target_env(spec.path, "nominal")
    # The policy's spaces are its task's; compare before building anything on the target.
    check_spaces(home.observation_space, home.action_space, probe, cfg.target)
    probe.close()
    home.close()
    task_changed = bool(cfg.target in spec.targets and spec.targets[cfg.target].task_variant)
    eval_episodes = cfg.eval_episodes or spec.budgets.eval_episodes
    eval_every = cfg.eval_every or spec.budgets.eval_interval
    eval_seed = 20_000  # the same evaluation episodes for every strategy and seed

    strategy, decision = cfg.strategy, None
    venv = make_vec_env(env_fn, 1, cfg.seed)
    gamma = pre.hyperparams.get("gamma", 0.99)
    if pre.norm is not None and cfg.strategy != "scratch":
        # Pretraining's statistics, frozen (or adapting with --norm adapt): the features expect them.
        venv = VecNormalize(venv, training=cfg.norm == "adapt", norm_reward=pre.norm.norm_reward, gamma=gamma)
        pre.norm.apply(venv)
    elif pre.norm is not None:
        venv = VecNormalize(venv, gamma=gamma, clip_obs=pre.norm.clip_obs, norm_reward=pre.norm.norm_reward)

    model = build_model(pre, venv, spec, cfg, budget, fresh=cfg.strategy == "scratch")
    write_run_info(run_dir, {**asdict(cfg), "task": pre.task, "algo": pre.algo, "budget_steps": budget,
                             "pretrained": str(pre.path)})

    if strategy in ("zero-shot", "auto"):
        zs = evaluate(model, env_fn, eval_episodes, obs_rms=pre.obs_rms, seed=eval_seed)
        if strategy == "auto":
            sim = evaluate(model, EnvFactory(make_target_env, pre.task, "nominal"), eval_episodes,
                           obs_rms=pre.obs_rms, seed=eval_seed)
            decision = classify(spec, budget, sim.mean, zs.mean, task_changed, cfg.similarity_threshold)
            strategy = decision.strategy
            if not quiet:
                print(f"auto: {decision.reason}")
        else:
            (run_dir / "evaluations.csv").write_text(f"step,target\n0,{zs.mean:.6g}\n")
            return _finish(run_dir, cfg, strategy, budget, {"target": zs.mean}, zs.returns, None, "no training")

    what = apply_strategy(model, strategy, cfg)
    if cfg.reset_exploration is not None:
        reset_exploration(model, cfg.reset_exploration)
    model.critic_warmup_updates = cfg.critic_warmup
    if not quiet:
        print(f"{strategy}: {what}")

    model.set_logger(_tb_logger(run_dir))
    eval_cb = EvalCallback(run_dir, {"target": env_fn}, eval_every, eval_episodes, seed=eval_seed)
    callbacks = [eval_cb, CheckpointCallback(run_dir, max(budget // 4, 1))]
    if not quiet:
        callbacks.append(ProgressCallback(budget, f"{strategy} on {cfg.target} (seed {cfg.seed})", eval_cb))
    model.learn(budget, callback=callbacks, reset_num_timesteps=True)
    save_checkpoint(model, run_dir, "model")
    final = evaluate(model, env_fn, eval_episodes, obs_rms=getattr(model.get_env(), "obs_rms", None), seed=eval_seed)
    venv.close()
    return _finish(run_dir, cfg, strategy, budget, eval_cb.last, final.returns, decision, what)


def _tb_logger(run_dir: Path):
    from stable_baselines3.common.logger import configure

    return configure(str(run_dir / "tb"), ["tensorboard", "csv"])


def _finish(run_dir: Path, cfg: TransferConfig, strategy: str, budget: int, last: dict, final_returns: list[float],
            decision: CaseDecision | None, what: str) -> Path:
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
    }
    atomic_write_text(run_dir / "result.json", json.dumps(result, indent=2))
    return run_dir
