"""What a run folder holds: run.json, checkpoints (model, normalisation statistics, replay buffer), written atomically.

Every run folder explains itself (resolved config, command line, versions, git commit), and
normalisation statistics are stored as plain arrays beside SB3's pickle so that reading a run
folder never needs to unpickle anything.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import mujoco
import numpy as np
import stable_baselines3
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from sim2real.files import atomic_write_text  # noqa: F401  (re-exported: run folders are written through it)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sim2real")
    except PackageNotFoundError:
        return "unknown (not installed)"


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "sim2real": _version(),
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


class RunLock:
    """Hold ``run_dir/.lock`` while a run writes there: a second process on the same folder is refused.

    ``flock`` is released by the kernel when the holder dies, so a killed run never leaves a stale lock.
    """

    def __init__(self, run_dir: Path):
        import fcntl

        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self._file = (run_dir / ".lock").open("a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise FileExistsError(f"{run_dir} is in use by {holder}; wait for it, or choose another --out") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {platform.node()}")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            # A finished run (result.json or model.zip) is refused by every command: its lock file can go.
            if any((self.run_dir / name).exists() for name in ("result.json", "model.zip")):
                (self.run_dir / ".lock").unlink(missing_ok=True)
            self._file.close()  # closing drops the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def supersede_evaluations(csv: Path, after: int) -> None:
    """Rows past the resume step will be measured again: move them aside (kept, not deleted), so no step repeats.

    The same for the per-episode log beside it (``evaluations_episodes.jsonl``, one JSON line per evaluation).
    """
    from sim2real.learning.selection import EPISODES_LOG

    _supersede_jsonl(csv.with_name(EPISODES_LOG), after)
    if not csv.exists():
        return
    lines = csv.read_text().splitlines()
    if len(lines) < 2:
        return
    keep = [lines[0]] + [row for row in lines[1:] if float(row.split(",")[0]) <= after]
    gone = [row for row in lines[1:] if float(row.split(",")[0]) > after]
    if gone:
        old = csv.with_name("evaluations.superseded.csv")
        with old.open("a") as f:
            if old.stat().st_size == 0:
                f.write(lines[0] + "\n")
            f.write("\n".join(gone) + "\n")
        atomic_write_text(csv, "\n".join(keep) + "\n")


def _supersede_jsonl(path: Path, after: int) -> None:
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    keep, gone = [], []
    for n, line in enumerate(lines, 1):
        try:
            step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            if n < len(lines):
                raise ValueError(f"{path}, line {n}: not an evaluation record; only a kill can break a line, "
                                 "and only the last one") from None
            gone.append(line)  # the kill's torn last line: set aside with the rest
            continue
        (keep if step <= after else gone).append(line)
    if gone:
        with path.with_name(path.stem + ".superseded.jsonl").open("a") as f:
            f.write("\n".join(gone) + "\n")
        atomic_write_text(path, "".join(line + "\n" for line in keep))


def note_resume(run_dir: Path, **facts: Any) -> None:
    """Record this resume (command, time, ``facts``) in run.json's ``resumed`` list; the original record stays.

    Called again in the same resume (more facts), it completes that entry rather than adding one.
    """
    path = run_dir / "run.json"
    info = json.loads(path.read_text())
    entries = info.setdefault("resumed", [])
    if facts and entries and entries[-1].get("pid") == os.getpid():
        entries[-1].update(facts)
    else:
        entries.append({"command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]), "pid": os.getpid(),
                        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": git_commit(), **facts})
    atomic_write_text(path, json.dumps(info, indent=2, default=str))


@dataclass(frozen=True)
class CheckpointFiles:
    """Where every file of checkpoint ``name`` in ``directory`` lives: one list for saving, restoring and removing.

    The final model (``name="model"``) keeps the unprefixed ``vecnormalize.pkl`` / ``obs_rms.npz`` that
    loaders and the zoo expect; ``step_*`` checkpoints prefix them with their own name.
    """

    directory: Path
    name: str

    @classmethod
    def of(cls, model_zip: Path) -> CheckpointFiles:
        """The files of the checkpoint whose model is ``model_zip`` (``.../step_N.zip``, ``.../model.zip``)."""
        return cls(model_zip.parent, model_zip.stem)

    def _own(self, suffix: str) -> Path:
        return self.directory / f"{self.name}{suffix}"

    @property
    def model(self) -> Path:
        return self._own(".zip")

    @property
    def manifest(self) -> Path:
        return self._own(".manifest.json")

    @property
    def vecnormalize(self) -> Path:
        return norm_paths(self.directory, self.name)[0]

    @property
    def obs_rms(self) -> Path:
        return norm_paths(self.directory, self.name)[1]

    @property
    def replay_buffer(self) -> Path:
        return self._own("_replay_buffer.npz")

    @property
    def state(self) -> Path:
        return self._own("_state.npz")

    @property
    def state_facts(self) -> Path:
        return self._own("_state.json")

    def data_files(self) -> list[Path]:
        """Every file but the manifest, in the order they are written."""
        return [self.model, self.vecnormalize, self.obs_rms, self.replay_buffer, self.state, self.state_facts]

    def temporary(self, final: Path) -> Path:
        """The hidden name a file is written under before it is moved into place (``.model.tmp.model.zip``):
        it keeps the real suffix (SB3's ``save`` adds ``.zip`` to a name without it) and matches ``.*.tmp*``."""
        return self.directory / f".{self.name}.tmp.{final.name}"


def save_checkpoint(model: BaseAlgorithm, directory: Path, name: str = "model", resumable: bool = False,
                    restart_seed: int | None = None, replay_buffer: bool = True) -> None:
    """Model, normalisation statistics and (off-policy) replay buffer: one checkpoint, complete or absent.

    ``replay_buffer=False`` leaves an off-policy model's buffer out (a policy kept to be evaluated, not resumed).
    With ``resumable``, also the training state a bit-identical resume needs (:func:`capture_training_state`):
    the batched world hands over its state; Gymnasium envs keep theirs inside their wrappers, so with
    ``restart_seed`` the run restarts its episodes from that seed right after the checkpoint
    (:func:`restart_episodes`), and a resumed run does the same.

    Each file is written to a temporary name and moved into place; a manifest naming every file
    and its size is written last. A crash before the manifest leaves an incomplete checkpoint that
    :func:`latest_checkpoint` never resumes from (and :func:`clean_incomplete` removes).
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = CheckpointFiles(directory, name)
    written: list[Path] = []

    def write(final: Path, save) -> None:  # to a temporary name, then moved into place
        tmp = files.temporary(final)
        save(tmp)
        os.replace(tmp, final)
        written.append(final)

    def to_file(writer):
        def save(tmp: Path) -> None:
            with tmp.open("wb") as f:
                writer(f)
        return save

    files.manifest.unlink(missing_ok=True)  # overwriting a checkpoint: it is incomplete until the new manifest lands
    write(files.model, model.save)
    venv = model.get_env()
    if isinstance(venv, VecNormalize):
        write(files.vecnormalize, lambda tmp: venv.save(str(tmp)))
        # The same statistics as plain arrays: loadable without unpickling anything.
        write(files.obs_rms, to_file(lambda f: save_norm_arrays(f, venv)))
    if replay_buffer and getattr(model, "replay_buffer", None) is not None:
        # The buffer as plain arrays (SB3's save_replay_buffer pickles it): resumable without unpickling.
        write(files.replay_buffer, to_file(lambda f: save_replay_arrays(f, model.replay_buffer)))
    state = capture_training_state(model, restart_seed) if resumable else None
    if state is not None:
        arrays, facts = state
        write(files.state, to_file(lambda f: np.savez(f, **arrays)))
        write(files.state_facts, lambda tmp: tmp.write_text(json.dumps(facts)))
    atomic_write_text(files.manifest, json.dumps({
        "num_timesteps": int(model.num_timesteps),
        "files": {f.name: f.stat().st_size for f in written},
    }, indent=2))


def checkpoint_step(model_zip: Path) -> int:
    """The step a complete checkpoint was saved at (from its manifest)."""
    return int(json.loads(CheckpointFiles.of(model_zip).manifest.read_text())["num_timesteps"])


def checkpoint_complete(model_zip: Path) -> bool:
    """A checkpoint is complete when its manifest exists and every file it names has the recorded size."""
    manifest = CheckpointFiles.of(model_zip).manifest
    if not manifest.exists():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
    except (json.JSONDecodeError, KeyError):
        return False
    return all((model_zip.parent / n).exists() and (model_zip.parent / n).stat().st_size == size
               for n, size in files.items())


def clean_incomplete(directory: Path) -> list[str]:
    """Remove temp files and incomplete checkpoints a crash left in ``directory``; returns what went."""
    removed = []
    for tmp in directory.glob(".*.tmp*"):
        tmp.unlink()
        removed.append(tmp.name)
    for model_zip in directory.glob("step_*.zip"):
        if not checkpoint_complete(model_zip):
            removed += remove_checkpoint(model_zip)
    return removed


def remove_checkpoint(model_zip: Path) -> list[str]:
    """Delete one checkpoint's files, its manifest first (so a crash midway leaves it incomplete, not corrupt).

    By its name's glob, not :class:`CheckpointFiles`: it also clears files of older checkpoint formats (only
    ``step_*`` checkpoints come here; in a run folder the same glob would be too broad, hence
    :func:`remove_final_model`)."""
    CheckpointFiles.of(model_zip).manifest.unlink(missing_ok=True)
    removed = []
    for f in model_zip.parent.glob(f"{model_zip.stem}*"):
        f.unlink()
        removed.append(f.name)
    return removed


def remove_final_model(run_dir: Path) -> list[str]:
    """Delete a half-written final model (what ``save_checkpoint(model, run_dir, "model")`` writes), and only it."""
    files = CheckpointFiles(run_dir, "model")
    files.manifest.unlink(missing_ok=True)
    removed = []
    for f in [*files.data_files(), *run_dir.glob(".model*.tmp*")]:
        if f.is_file():
            f.unlink()
            removed.append(f.name)
    return removed


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


REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def save_replay_arrays(f, buffer) -> None:
    """An SB3 ReplayBuffer's contents as plain arrays (``np.savez``), up to where it is filled."""
    n = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {k: getattr(buffer, k)[:n] for k in REPLAY_ARRAYS if getattr(buffer, k, None) is not None}
    np.savez(f, pos=buffer.pos, full=buffer.full, **arrays)


def load_replay_arrays(path: Path, buffer) -> None:
    """Fill ``buffer`` (same size and spaces) from :func:`save_replay_arrays`'s file (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as z:
        for k in REPLAY_ARRAYS:
            if k in z.files and getattr(buffer, k, None) is not None:
                n = len(z[k])
                getattr(buffer, k)[:n] = z[k]
        buffer.pos, buffer.full = int(z["pos"]), bool(z["full"])


def restore_checkpoint(model: BaseAlgorithm, model_zip: Path) -> int:
    """Load a checkpoint into a model built the same way: weights, optimiser state, step count, normalisation.

    Everything is read with ``torch.load(weights_only=True)`` or from arrays; nothing is unpickled
    (SB3's ``load`` would unpickle the zip's ``data``). Returns the checkpoint's step.
    """
    import zipfile

    model.set_parameters(str(model_zip), exact_match=True, device="cpu")  # policy + optimisers, weights only
    with zipfile.ZipFile(model_zip) as zf:
        if "pytorch_variables.pth" in zf.namelist():
            with zf.open("pytorch_variables.pth") as f:
                variables = torch.load(f, map_location="cpu", weights_only=True)
            for name, value in (variables or {}).items():  # SAC's entropy coefficient
                if value is not None and hasattr(model, name):
                    getattr(model, name).data.copy_(value.data)
    files = CheckpointFiles.of(model_zip)
    model.num_timesteps = checkpoint_step(model_zip)
    venv = model.get_env()
    if isinstance(venv, VecNormalize) and files.obs_rms.exists():
        load_norm_stats(files.obs_rms).apply(venv)
    if getattr(model, "replay_buffer", None) is not None and files.replay_buffer.exists():
        load_replay_arrays(files.replay_buffer, model.replay_buffer)
    if files.state.exists():
        with np.load(files.state, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        apply_training_state(model, arrays, json.loads(files.state_facts.read_text()))
    return model.num_timesteps


def _env_chain(venv) -> list:
    """``venv`` and every VecEnv it wraps, outermost first."""
    chain = []
    while venv is not None:
        chain.append(venv)
        venv = getattr(venv, "venv", None)
    return chain


RESTART_SEED = 500_000_000  # where the episodes after a checkpoint take their seeds (far from reset and eval seeds)


def restart_seed_for(seed: int) -> int:
    """The restart seeds of a run of ``seed`` (each checkpoint adds its step): apart for every run seed."""
    return RESTART_SEED + 1_000_003 * seed


def restart_episodes(model: BaseAlgorithm, seed: int) -> None:
    """End the episodes in progress and start new ones from ``seed``: what a Gymnasium env's state is at a
    checkpoint, without reading its wrappers (delay lines, noise blocks, time limits). The uninterrupted run
    and a resumed one both do it at the checkpoint, so both go on alike. For PPO a checkpoint falls between
    rollouts, whose last values already bootstrap the cut episodes, as a time limit would."""
    venv = model.get_env()
    venv.seed(seed)
    model._last_obs = venv.reset()
    model._last_episode_starts = np.ones((venv.num_envs,), dtype=bool)
    if isinstance(venv, VecNormalize):
        model._last_original_obs = venv.get_original_obs()


def capture_training_state(model: BaseAlgorithm, restart_seed: int | None = None
                           ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """What continues a run exactly, beyond weights, optimiser, statistics and replay buffer: every
    random generator (torch, numpy's global one, Python's, the action space's), the algorithm's counters,
    the normaliser's running returns, and the env's state: the batched world's own, or for Gymnasium envs
    the seed their episodes restart from (``restart_seed``, see :func:`restart_episodes`).

    ``None`` when neither is possible. Arrays and JSON facts, so nothing is pickled.
    """
    import random

    from sim2real.learning.envs import BatchedVecEnv

    chain = _env_chain(model.get_env())
    batched = next((v for v in chain if isinstance(v, BatchedVecEnv)), None)
    if (batched is None and restart_seed is None) or isinstance(model._last_obs, dict):
        return None
    arrays: dict[str, np.ndarray] = {}
    facts: dict[str, Any] = {}
    if batched is not None:
        world_arrays, facts["world"] = batched.world.state_dict()
        arrays = {f"world/{k}": v for k, v in world_arrays.items()}
    else:
        facts["restart_seed"] = int(restart_seed)
    numpy_rng = np.random.get_state()
    facts.update({
        "n_updates": int(getattr(model, "_n_updates", 0)),
        "episode_num": int(model._episode_num),
        "ep_info_buffer": [{k: float(v) for k, v in e.items()} for e in (model.ep_info_buffer or [])],
        "numpy_rng": [numpy_rng[0], int(numpy_rng[2]), int(numpy_rng[3]), float(numpy_rng[4])],
        "python_rng": random.getstate(),
        "action_space_rng": model.action_space.np_random.bit_generator.state,
    })
    arrays["rng/numpy_keys"] = numpy_rng[1]
    arrays["rng/torch"] = torch.get_rng_state().numpy()
    for name in ("_last_obs", "_last_original_obs", "_last_episode_starts"):
        value = getattr(model, name, None)
        if value is not None:
            arrays[f"algo/{name}"] = np.asarray(value)
    for v in chain:
        if isinstance(v, VecNormalize):
            arrays["norm/returns"] = np.asarray(v.returns)
            for name in ("old_obs", "old_reward"):
                if getattr(v, name, None) is not None:
                    arrays[f"norm/{name}"] = np.asarray(getattr(v, name))
        if hasattr(v, "episode_returns") and hasattr(v, "episode_lengths"):  # VecMonitor's running episodes
            arrays["monitor/episode_returns"] = np.asarray(v.episode_returns)
            arrays["monitor/episode_lengths"] = np.asarray(v.episode_lengths)
    return arrays, facts


def apply_training_state(model: BaseAlgorithm, arrays: dict[str, np.ndarray], facts: dict[str, Any]) -> None:
    """The inverse of :func:`capture_training_state`, on a model and env built the same way."""
    import random
    from collections import deque

    from sim2real.learning.envs import BatchedVecEnv

    chain = _env_chain(model.get_env())
    batched = next((v for v in chain if isinstance(v, BatchedVecEnv)), None)
    if ("world" in facts) != (batched is not None):
        raise ValueError("this checkpoint was taken on the other stepper (batched / Gymnasium) than this run's")
    if batched is not None:
        batched.world.load_state_dict({k[len("world/"):]: v for k, v in arrays.items() if k.startswith("world/")},
                                      facts["world"])
    kind, pos, has_gauss, gauss = facts["numpy_rng"]
    np.random.set_state((kind, arrays["rng/numpy_keys"], pos, has_gauss, gauss))
    torch.set_rng_state(torch.from_numpy(arrays["rng/torch"].copy()))
    version, internal, gauss_next = facts["python_rng"]
    random.setstate((version, tuple(internal), gauss_next))
    model.action_space.np_random.bit_generator.state = facts["action_space_rng"]
    for name in ("_last_obs", "_last_original_obs", "_last_episode_starts"):
        if f"algo/{name}" in arrays:
            setattr(model, name, arrays[f"algo/{name}"].copy())
    if hasattr(model, "_n_updates"):
        model._n_updates = facts["n_updates"]
    model._episode_num = facts["episode_num"]
    model.ep_info_buffer = deque(facts["ep_info_buffer"], maxlen=model._stats_window_size)
    model.ep_success_buffer = deque(maxlen=model._stats_window_size)
    for v in chain:
        if isinstance(v, VecNormalize):
            v.returns = arrays["norm/returns"].copy()
            for name in ("old_obs", "old_reward"):
                if f"norm/{name}" in arrays:
                    setattr(v, name, arrays[f"norm/{name}"].copy())
        if hasattr(v, "episode_returns") and "monitor/episode_returns" in arrays:
            v.episode_returns = arrays["monitor/episode_returns"].copy()
            v.episode_lengths = arrays["monitor/episode_lengths"].copy()
    if "restart_seed" in facts:  # a Gymnasium env: its episodes restart as the uninterrupted run's did
        restart_episodes(model, facts["restart_seed"])


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest *complete* checkpoint (see :func:`save_checkpoint`), or None."""
    zips = sorted((run_dir / "checkpoints").glob("step_*.zip"), reverse=True)
    return next((z for z in zips if checkpoint_complete(z)), None)
