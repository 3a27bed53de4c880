"""SB3 wiring: vec envs, normalisation, callbacks, checkpoints, resume and TensorBoard.

``pretrain`` reads top to bottom as config -> envs -> model -> learn.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor, VecNormalize

from sim2real.evaluation import evaluate
from sim2real.make import make_sim_env, make_target_env
from sim2real.progress import Progress
from sim2real.spec import TaskSpec, load_spec

ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "td3": TD3}
ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "elu": torch.nn.ELU, "gelu": torch.nn.GELU}
OFF_POLICY = {"sac", "td3"}


# ---------------------------------------------------------------- configuration


def policy_kwargs_from_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """Turn the YAML policy kwargs into SB3's (activation names -> torch modules)."""
    kwargs = dict(raw)
    if "activation_fn" in kwargs and isinstance(kwargs["activation_fn"], str):
        kwargs["activation_fn"] = ACTIVATIONS[kwargs["activation_fn"]]
    return kwargs


def algo_kwargs(spec: TaskSpec, algo: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec's tuned hyperparameters for ``algo`` (only when it is the spec's algorithm) plus overrides."""
    kwargs: dict[str, Any] = {}
    if algo == spec.pretrain.algo:
        kwargs.update(spec.pretrain.hyperparams)
        kwargs["policy_kwargs"] = dict(spec.pretrain.policy_kwargs)
    kwargs.update(overrides or {})
    if "policy_kwargs" in kwargs:
        kwargs["policy_kwargs"] = policy_kwargs_from_spec(kwargs["policy_kwargs"])
    return kwargs


def set_threads(n: int | None) -> None:
    """One torch thread per process is fastest for small MLPs on few cores (see scripts/bench_pretrain.py)."""
    if n:
        torch.set_num_threads(n)


def versions() -> dict[str, str]:
    import gymnasium
    import mujoco
    import stable_baselines3

    import sim2real

    return {
        "python": platform.python_version(),
        "sim2real": sim2real.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "gymnasium": gymnasium.__version__,
        "mujoco": mujoco.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5,
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_run_info(run_dir: Path, config: dict[str, Any]) -> None:
    """Every run folder explains itself: config, command line, versions, git commit."""
    info = {
        "config": config,
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "versions": versions(),
        "git_commit": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2, default=str))


# ---------------------------------------------------------------- environments


def make_vec_env(env_fn: Callable[[], gym.Env], n_envs: int, seed: int, subproc: bool = False) -> VecEnv:
    """``n_envs`` copies of ``env_fn``, each seeded ``seed + i``, with episode statistics."""
    cls = SubprocVecEnv if subproc and n_envs > 1 else DummyVecEnv
    venv = cls([env_fn] * n_envs)
    venv.seed(seed)
    return VecMonitor(venv)


class EnvFactory:
    """A picklable env thunk (SubprocVecEnv needs one)."""

    def __init__(self, fn: Callable[..., gym.Env], *args: Any, **kwargs: Any):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self) -> gym.Env:
        return self.fn(*self.args, **self.kwargs)


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(model: BaseAlgorithm, directory: Path, name: str = "model") -> None:
    """Model, normalisation statistics and (off-policy) replay buffer, each written atomically.

    A crash mid-write leaves the previous files intact: each is written to a
    temporary name and moved into place.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.tmp.zip"
    model.save(tmp)
    os.replace(tmp, directory / f"{name}.zip")
    venv = model.get_env()
    if isinstance(venv, VecNormalize):
        pkl, npz = norm_paths(directory, name)
        tmp = directory / f".{name}_vecnormalize.tmp.pkl"
        venv.save(str(tmp))
        os.replace(tmp, pkl)
        # The same statistics as plain arrays: loadable without unpickling anything.
        tmp = directory / f".{name}_obs_rms.tmp.npz"
        with tmp.open("wb") as f:
            save_norm_arrays(f, venv)
        os.replace(tmp, npz)
    if hasattr(model, "replay_buffer") and model.replay_buffer is not None:
        tmp = directory / f".{name}_replay_buffer.tmp.pkl"
        model.save_replay_buffer(tmp)
        os.replace(tmp, directory / f"{name}_replay_buffer.pkl")


def norm_paths(directory: Path, name: str) -> tuple[Path, Path]:
    """Where the normalisation statistics of checkpoint ``name`` live (``model`` -> ``vecnormalize.pkl``)."""
    prefix = "" if name == "model" else f"{name}_"
    return directory / f"{prefix}vecnormalize.pkl", directory / f"{prefix}obs_rms.npz"


def save_norm_arrays(f, venv: VecNormalize) -> None:
    """VecNormalize's statistics as plain arrays (``np.savez``)."""
    np.savez(
        f,
        mean=venv.obs_rms.mean, var=venv.obs_rms.var, count=venv.obs_rms.count,
        ret_mean=venv.ret_rms.mean, ret_var=venv.ret_rms.var, ret_count=venv.ret_rms.count,
        clip_obs=venv.clip_obs, clip_reward=venv.clip_reward, epsilon=venv.epsilon,
        norm_reward=venv.norm_reward,
    )


@dataclass
class NormStats:
    """Normalisation statistics of a pretrained policy, read from arrays (nothing unpickled)."""

    obs_rms: Any
    ret_rms: Any
    clip_obs: float
    clip_reward: float
    norm_reward: bool

    def apply(self, venv: VecNormalize) -> VecNormalize:
        venv.obs_rms, venv.ret_rms = self.obs_rms.copy(), self.ret_rms.copy()
        venv.clip_obs, venv.clip_reward = self.clip_obs, self.clip_reward
        return venv


def load_norm_stats(path: Path) -> NormStats:
    """Read an ``obs_rms.npz`` written by :func:`save_norm_arrays` (``allow_pickle=False``)."""
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    with np.load(path, allow_pickle=False) as z:
        obs = RunningMeanStd(shape=z["mean"].shape)
        obs.mean, obs.var, obs.count = z["mean"].copy(), z["var"].copy(), float(z["count"])
        ret = RunningMeanStd(shape=())
        ret.mean, ret.var, ret.count = z["ret_mean"].copy(), z["ret_var"].copy(), float(z["ret_count"])
        return NormStats(obs, ret, float(z["clip_obs"]), float(z["clip_reward"]), bool(z["norm_reward"]))


class CheckpointCallback(BaseCallback):
    """Checkpoint every ``every`` steps into ``run_dir/checkpoints`` (atomically, keeping the last ``keep``)."""

    def __init__(self, run_dir: Path, every: int, keep: int = 2):
        super().__init__()
        self.dir = run_dir / "checkpoints"
        self.every = every
        self.keep = keep
        self._next = None

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            save_checkpoint(self.model, self.dir, f"step_{self.num_timesteps:09d}")
            self._next += self.every
            self._prune()
        return True

    def _prune(self) -> None:
        zips = sorted(self.dir.glob("step_*.zip"))
        for old in zips[: -self.keep]:
            stem = old.stem
            for f in self.dir.glob(f"{stem}*"):
                f.unlink()


def latest_checkpoint(run_dir: Path) -> Path | None:
    zips = sorted((run_dir / "checkpoints").glob("step_*.zip"))
    return zips[-1] if zips else None


# ---------------------------------------------------------------- callbacks


class EvalCallback(BaseCallback):
    """Evaluate on named worlds every ``every`` steps, with the training normalisation frozen.

    Logs ``eval/<world>/mean_return`` (x = steps) and appends to ``evaluations.csv``.
    With worlds ``nominal`` and a target, also logs ``eval/sim_to_real_gap``.
    """

    def __init__(self, run_dir: Path, worlds: dict[str, Callable[[], gym.Env]], every: int, episodes: int, seed: int = 0, keep_best: bool = False):
        super().__init__()
        self.csv = run_dir / "evaluations.csv"
        self.worlds = worlds
        self.every = every
        self.episodes = episodes
        self.seed = seed
        self._next = 0
        self.last: dict[str, float] = {}
        self.best = -float("inf")
        self.keep_best = keep_best
        best = run_dir / "best.json"
        if keep_best and best.exists():
            # A resumed run: only a policy that beats the best so far may replace best.zip.
            self.best = json.loads(best.read_text()).get(next(iter(worlds)), self.best)

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every) * self.every
        if self.num_timesteps == 0:
            self.run_eval()  # step 0: the starting point of every curve
            self._next = self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self.run_eval()
            self._next += self.every
        return True

    def _on_training_end(self) -> None:
        if self.last.get("step") != self.num_timesteps:
            self.run_eval()

    def run_eval(self) -> None:
        venv = self.model.get_env()
        obs_rms = venv.obs_rms if isinstance(venv, VecNormalize) else None
        row: dict[str, float] = {"step": self.num_timesteps}
        for world, env_fn in self.worlds.items():
            res = evaluate(self.model, env_fn, self.episodes, obs_rms=obs_rms, seed=self.seed)
            row[world] = res.mean
            self.logger.record(f"eval/{world}/mean_return", res.mean)
            self.logger.record(f"eval/{world}/std_return", res.std)
        worlds = list(self.worlds)
        if "nominal" in worlds and len(worlds) > 1:
            other = [w for w in worlds if w != "nominal"][0]
            self.logger.record("eval/sim_to_real_gap", row["nominal"] - row[other])
        self.logger.dump(self.num_timesteps)
        new = not self.csv.exists()
        with self.csv.open("a") as f:
            if new:
                f.write(",".join(row) + "\n")
            f.write(",".join(f"{v:.6g}" for v in row.values()) + "\n")
        self.last = row
        first = next(iter(self.worlds))
        # Step 0 is the starting point, not a trained policy (with --init-from it is another run's).
        if self.keep_best and self.num_timesteps > 0 and row[first] >= self.best:  # ties: the later policy
            # PPO on locomotion can collapse late; keep the best policy by the first world's return.
            self.best = row[first]
            save_checkpoint(self.model, self.csv.parent, "best")
            atomic_write_text(self.csv.parent / "best.json", json.dumps(row))


class RandomizationLogger(BaseCallback):
    """Log the mean of each sampled physics parameter over the episodes that ended (``randomization/*``)."""

    def __init__(self):
        super().__init__()
        self._sums: dict[str, float] = {}
        self._count = 0

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"]):
            if done and "randomization" in info:
                for k, v in info["randomization"].items():
                    self._sums[k] = self._sums.get(k, 0.0) + v
                self._count += 1
        return True

    def _on_rollout_end(self) -> None:
        if self._count:
            for k, v in self._sums.items():
                self.logger.record(f"randomization/{k}", v / self._count)
            self._sums, self._count = {}, 0


class ProgressCallback(BaseCallback):
    """Steps, steps/s, ETA and the latest evaluation on a progress line."""

    def __init__(self, total: int, label: str, eval_cb: EvalCallback | None = None):
        super().__init__()
        self.total = total
        self.label = label
        self.eval_cb = eval_cb
        self.bar: Progress | None = None

    def _on_training_start(self) -> None:
        self.bar = Progress(self.total, self.label, start=self.num_timesteps)

    def _on_step(self) -> bool:
        if self.num_timesteps % 256 < self.training_env.num_envs:
            last = self.eval_cb.last if self.eval_cb else {}
            extra = "  ".join(f"{k} {v:.0f}" for k, v in last.items() if k != "step")
            self.bar.update(self.num_timesteps, extra)
        return True

    def _on_training_end(self) -> None:
        self.bar.close(self.num_timesteps)


# ---------------------------------------------------------------- pretraining


@dataclass
class PretrainConfig:
    task: str
    algo: str | None = None
    steps: int | None = None
    seed: int = 0
    randomize: bool = True
    n_envs: int | None = None
    subproc: bool = False
    threads: int | None = 1
    eval_world: str | None = None  # default: "real", else the first shifted world
    eval_every: int | None = None
    eval_episodes: int = 5
    checkpoint_every: int = 50_000
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # start from a pretrained policy's weights and statistics (a curriculum)


def _init_from(model: BaseAlgorithm, venv: VecEnv, path: str) -> None:
    """Load another run's weights (weights only) and normalisation statistics into a fresh model."""
    from sim2real.transfer import load_pretrained

    pre = load_pretrained(path)
    try:
        model.policy.load_state_dict(pre.state_dict)
    except RuntimeError as exc:
        raise ValueError(f"--init-from {path}: its network does not match this run's: {exc}") from None
    if isinstance(venv, VecNormalize) and pre.norm is not None:
        pre.norm.apply(venv)
    print(f"initialised from {pre.path}")


def default_pretrain_dir(cfg: PretrainConfig, algo: str) -> Path:
    kind = "dr" if cfg.randomize else "nominal"
    return Path("runs") / "pretrain" / f"{cfg.task}-{kind}-{algo}-s{cfg.seed}"


def pretrain(cfg: PretrainConfig, out: str | Path | None = None, resume: bool = False) -> Path:
    """Pretrain a policy in the task's (randomised) sim world; returns the run folder.

    The folder holds ``model.zip`` (an ordinary SB3 model), ``vecnormalize.pkl``,
    ``run.json``, ``evaluations.csv``, TensorBoard events under ``tb/`` and
    checkpoints under ``checkpoints/``. With ``resume``, a killed run continues
    from its latest checkpoint to the same total step count.
    """
    spec = load_spec(cfg.task)
    if cfg.eval_episodes < 1:
        raise ValueError(f"--eval-episodes {cfg.eval_episodes}: must be at least 1")
    algo = cfg.algo or spec.pretrain.algo
    total = cfg.steps or spec.pretrain.total_steps
    n_envs = cfg.n_envs or (spec.pretrain.n_envs if algo == spec.pretrain.algo else 1)
    run_dir = Path(out) if out else default_pretrain_dir(cfg, algo)
    if (run_dir / "model.zip").exists() and not resume:
        raise FileExistsError(f"{run_dir} already holds a finished run; use --resume or another --out")
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if not resume and (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").iterdir()):
        raise FileExistsError(f"{run_dir} holds checkpoints of an unfinished run; use --resume or another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    set_random_seed(cfg.seed)

    config = {**asdict(cfg), "algo": algo, "steps": total, "n_envs": n_envs, "spec": spec.model_dump()}
    if checkpoint is None:
        write_run_info(run_dir, config)

    # ---- environments
    venv = make_vec_env(EnvFactory(make_sim_env, cfg.task, randomize=cfg.randomize), n_envs, cfg.seed, cfg.subproc)
    kwargs = algo_kwargs(spec, algo, cfg.overrides)
    if spec.pretrain.normalize:
        gamma = kwargs.get("gamma", 0.99)
        saved = norm_paths(checkpoint.parent, checkpoint.stem)[0] if checkpoint is not None else None
        if saved is not None and saved.exists():
            venv = VecNormalize.load(str(saved), venv)
        else:
            venv = VecNormalize(venv, gamma=gamma)

    # ---- model
    cls = ALGOS[algo]
    if checkpoint is not None:
        model = cls.load(checkpoint, env=venv, device="cpu", tensorboard_log=str(run_dir / "tb"))
        buffer = checkpoint.with_name(checkpoint.stem + "_replay_buffer.pkl")
        if algo in OFF_POLICY and buffer.exists():
            model.load_replay_buffer(buffer)
        print(f"resuming {run_dir} from {checkpoint.name} at step {model.num_timesteps:,}")
    else:
        model = cls("MlpPolicy", venv, seed=cfg.seed, device="cpu", tensorboard_log=str(run_dir / "tb"), **kwargs)
        if cfg.init_from:
            _init_from(model, venv, cfg.init_from)

    # ---- callbacks and learning
    eval_every = cfg.eval_every or max(total // 50, 1000)
    eval_world = cfg.eval_world or ("real" if "real" in spec.targets else next(iter(set(spec.targets) - {"nominal"}), "nominal"))
    spec.target(eval_world)  # a clear error for an unknown world, before any training
    worlds = {
        "nominal": EnvFactory(make_target_env, cfg.task, "nominal"),
        eval_world: EnvFactory(make_target_env, cfg.task, eval_world),
    }
    eval_cb = EvalCallback(run_dir, worlds, eval_every, cfg.eval_episodes, seed=10_000 + cfg.seed, keep_best=True)
    callbacks = [
        eval_cb,
        CheckpointCallback(run_dir, cfg.checkpoint_every),
        RandomizationLogger(),
        ProgressCallback(total, f"pretrain {cfg.task} ({'DR' if cfg.randomize else 'nominal'})", eval_cb),
    ]
    remaining = total - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=CallbackList(callbacks), tb_log_name="pretrain", reset_num_timesteps=checkpoint is None)
    save_checkpoint(model, run_dir, "model")
    venv.close()
    return run_dir
