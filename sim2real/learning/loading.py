"""Loading a pretrained policy from its run folder: weights only, arrays and JSON, never a pickle.

The network, its hyperparameters and its observation inputs come from the run's own spec snapshot
(``run.json``), so editing ``net_arch`` or the inputs in a task spec never breaks an older policy.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from sim2real.learning.algos import OFF_POLICY, algo_kwargs
from sim2real.learning.artifacts import CheckpointFiles, NormStats, load_norm_stats
from sim2real.learning.groups import GROUPED
from sim2real.spec import PolicyInputs, Pretraining, TaskSpec, load_spec
from sim2real.worlds.inputs import WithInputs
from sim2real.worlds.make import EnvFactory, make_target_env


class PolicyError(ValueError):
    """A POLICY path is not a loadable sim2real policy; the message says which file and why."""


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
    overrides: dict[str, Any] | None = None  # pretraining's --set values (the network may be among them)
    inputs: PolicyInputs | None = None
    spec: TaskSpec | None = None

    @property
    def obs_rms(self):
        return self.norm.obs_rms if self.norm else None


def policy_files(path: str | Path) -> tuple[Path, Path, Path]:
    """Where a POLICY's files live: (run folder with run.json, model .zip, normalisation .npz).

    POLICY is a pretrain run folder, a zoo entry under ``policies/``, or a model ``.zip`` inside one
    (``best.zip``, ``checkpoints/step_*.zip``, ``evaluated/step_*.zip``).
    """
    path = Path(path)
    if path.is_dir():
        run_dir, model_zip = path, path / "model.zip"
    else:
        model_zip = path
        run_dir = path.parent.parent if path.parent.name in ("checkpoints", "evaluated") else path.parent
    return run_dir, model_zip, CheckpointFiles.of(model_zip).obs_rms


def load_foreign(path: str | Path, task: str) -> Pretrained:
    """A plain SB3 model zip or RL Zoo run folder trained on ``task`` (see :mod:`sim2real.learning.foreign`)."""
    import gymnasium as gym

    from sim2real.learning.foreign import find_model, read_sb3_zip, read_vecnormalize

    spec = load_spec(task)
    model_zip, pkl = find_model(Path(path))
    algo, policy_kwargs, state_dict, data = read_sb3_zip(model_zip)
    env = gym.make(spec.env_id, **spec.env_kwargs)
    want = tuple(env.observation_space.shape)
    env.close()
    got = tuple((data.get("observation_space") or {}).get("_shape") or want)
    if got != want:
        raise PolicyError(f"{model_zip}: trained on observations of shape {got}; task {spec.name!r} ({spec.env_id}) "
                          f"gives {want}: the wrong --task?")
    kwargs = algo_kwargs(spec, algo, {})
    kwargs.pop("policy_kwargs", None)
    if isinstance(data.get("gamma"), (int, float)):
        kwargs["gamma"] = float(data["gamma"])  # the discount its value function learned
    spec = spec.model_copy(update={"observation": PolicyInputs()})  # a plain model sees the plain observation
    return Pretrained(path=model_zip, task=spec.name, algo=algo, overrides={}, policy_kwargs=policy_kwargs,
                      hyperparams=kwargs, state_dict=state_dict, norm=read_vecnormalize(pkl) if pkl else None,
                      inputs=spec.observation, spec=spec)


def load_pretrained(path: str | Path, task: str | None = None) -> Pretrained:
    """Read a pretrain run folder (or a model ``.zip`` inside one, or a zoo entry under ``policies/``).

    The folder's ``run.json`` says which task, algorithm and architecture; the
    weights come from the zip's ``policy.pth`` via ``torch.load(weights_only=True)``
    and the normalisation statistics from ``obs_rms.npz``: nothing is unpickled.
    Without a ``run.json``, ``task`` makes it a plain SB3 model or RL Zoo run folder (:func:`load_foreign`).
    """
    run_dir, model_zip, npz = policy_files(path)
    if task is not None and not (run_dir / "run.json").exists():
        return load_foreign(path, task)
    if not model_zip.exists():
        raise FileNotFoundError(f"{model_zip}: no such model (POLICY is a pretrain or transfer run folder, a zoo "
                                "entry under policies/, or a model .zip inside one; with --task TASK also a plain "
                                "SB3 model .zip or an RL Zoo run folder)")
    info_path = run_dir / "run.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{info_path}: missing; a POLICY is a sim2real pretrain run folder or zoo entry, or, "
                                "with --task TASK, a plain SB3 model .zip or an RL Zoo run folder")
    try:
        config = json.loads(info_path.read_text())["config"]
        task, algo = config["task"], config["algo"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PolicyError(f"{info_path}: not a sim2real run.json ({exc!r}); it needs config.task and config.algo") from None
    if algo not in OFF_POLICY | {"ppo"}:
        raise PolicyError(f"{info_path}: config.algo {algo!r} is not one of ppo, sac, td3")
    spec = policy_spec(config, info_path)
    try:
        with zipfile.ZipFile(model_zip) as zf, zf.open("policy.pth") as f:
            state_dict = torch.load(f, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, KeyError, RuntimeError, EOFError, OSError) as exc:
        raise PolicyError(f"{model_zip}: not a readable SB3 model zip with policy.pth ({exc})") from None
    norm = None
    if npz.exists():
        norm = load_norm_stats(npz)
    elif spec.pretrain.normalize and algo == spec.pretrain.algo:
        raise FileNotFoundError(f"{npz}: missing; the policy was trained on normalised observations")
    # A transfer run records its policy's pretraining overrides apart from its own target overrides.
    overrides = config.get("pretrain_overrides", config.get("overrides")) or {}
    kwargs = algo_kwargs(spec, algo, overrides)
    policy_kwargs = kwargs.pop("policy_kwargs", {})
    return Pretrained(
        path=model_zip, task=task, algo=algo, overrides=overrides, policy_kwargs=policy_kwargs, hyperparams=kwargs,
        state_dict=state_dict, norm=norm, randomize=config.get("randomize", True), inputs=spec.observation,
        spec=spec,
    )


def policy_spec(config: dict, info_path: Path) -> TaskSpec:
    """The spec the policy was trained with (its run.json snapshot), not today's file of the same name.

    Editing ``net_arch`` or the inputs in ``envs/<task>.yaml`` must not break older policies. Runs
    written before snapshots existed fall back to today's spec.
    """
    snapshot = config.get("spec")
    if not snapshot:
        return load_spec(config["task"])
    today = load_spec(config["task"])
    try:
        # Targets and budgets are today's (a study compares on today's worlds); the network, its
        # hyperparameters and its inputs are the policy's own.
        return today.model_copy(update={
            "pretrain": Pretraining(**snapshot["pretrain"]),
            "observation": PolicyInputs(**snapshot.get("observation", {})),
        })
    except (ValidationError, KeyError, TypeError) as exc:
        raise PolicyError(f"{info_path}: config.spec is not a sim2real task spec snapshot: {exc}") from None


def policy_model(pre: Pretrained, venv, seed: int = 0, hyperparams: dict[str, Any] | None = None, fresh: bool = False):
    """An SB3 model (with per-group learning rates) of the pretrained architecture on ``venv``.

    ``hyperparams`` default to the policy's own; ``fresh`` keeps the new random weights (scratch).
    """
    kwargs = dict(pre.hyperparams if hyperparams is None else hyperparams)
    model = GROUPED[pre.algo]("MlpPolicy", venv, seed=seed, device="cpu", policy_kwargs=dict(pre.policy_kwargs), **kwargs)
    if not fresh:
        try:
            model.policy.load_state_dict(pre.state_dict)
        except RuntimeError as exc:
            raise PolicyError(f"{pre.path}: its weights do not fit the network its run.json describes "
                              f"({str(exc).splitlines()[-1].strip()})") from None
    return model


def load_for_evaluation(path: str | Path, task: str | None = None):
    """A pretrained policy as a ready SB3 model: ``(pretrained, spec, model)`` (weights only, nothing unpickled)."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    pre = load_pretrained(path, task)
    home = DummyVecEnv([WithInputs(EnvFactory(make_target_env, pre.spec.path, "nominal"), pre.inputs)])
    return pre, pre.spec, policy_model(pre, home)
