"""Policies trained outside sim2real: a plain Stable-Baselines3 ``.zip`` or an RL Zoo run folder.

Given the task it was trained on (``--task``), such a model becomes a :class:`Pretrained` like any run of
ours, still without executing anything from the files:

- the weights come from the zip's ``policy.pth`` (``torch.load(weights_only=True)``), the architecture from
  the zip's ``data`` JSON (``policy_kwargs``: ``net_arch`` and the activation's name), the algorithm from the
  weights' names (PPO's ``action_net``, SAC's ``actor.mu`` + ``critic.qf*``, TD3's ``actor.mu`` + ``actor_target``);
- ``vecnormalize.pkl`` beside it (the RL Zoo keeps it in ``<env id>/``) is read by an unpickler that builds
  nothing but numpy arrays and plain records: any other object in the file is refused.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sim2real.learning.artifacts import NormStats

ACTIVATIONS = {name: getattr(torch.nn, name) for name in ("Tanh", "ReLU", "ELU", "LeakyReLU", "SiLU", "GELU", "Sigmoid")}


class ForeignPolicyError(ValueError):
    """A file that is not a plain SB3 model (or its normalisation) sim2real can read."""


def find_model(path: Path) -> tuple[Path, Path | None]:
    """The model zip and its ``vecnormalize.pkl`` (or None) for a zip or an RL Zoo run folder."""
    if path.is_dir():
        zips = sorted(p for p in path.glob("*.zip") if p.stem != "best_model") or sorted(path.glob("*.zip"))
        if not zips:
            raise ForeignPolicyError(f"{path}: no model .zip (an RL Zoo run folder holds <env id>.zip)")
        model_zip = zips[0]
    else:
        model_zip = path
    candidates = [model_zip.parent / "vecnormalize.pkl", model_zip.parent / model_zip.stem / "vecnormalize.pkl"]
    return model_zip, next((c for c in candidates if c.exists()), None)


def _layers(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """Hidden sizes of an MLP ``prefix.0``, ``prefix.2``, ... from its weight shapes."""
    sizes, i = [], 0
    while f"{prefix}.{i}.weight" in state:
        sizes.append(int(state[f"{prefix}.{i}.weight"].shape[0]))
        i += 2
    return sizes


def read_sb3_zip(model_zip: Path) -> tuple[str, dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """``(algo, policy_kwargs, state_dict, data)`` of a plain SB3 model zip, nothing unpickled."""
    try:
        with zipfile.ZipFile(model_zip) as zf:
            data = json.loads(zf.read("data"))
            with zf.open("policy.pth") as f:
                state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, RuntimeError, OSError) as exc:
        raise ForeignPolicyError(f"{model_zip}: not an SB3 model zip (data + policy.pth): {exc}") from None
    if "action_net.weight" in state:
        algo, pi, vf = "ppo", _layers(state, "mlp_extractor.policy_net"), _layers(state, "mlp_extractor.value_net")
        net_arch: Any = {"pi": pi, "vf": vf}
    elif "actor.mu.weight" in state:
        algo = "td3" if "actor_target.mu.weight" in state else "sac"
        net_arch = {"pi": _layers(state, "actor.latent_pi"), "qf": _layers(state, "critic.qf0")[:-1]}  # last: Q
    else:
        raise ForeignPolicyError(f"{model_zip}: weights of an algorithm sim2real does not carry (PPO, SAC, TD3 with "
                                 f"MlpPolicy); first keys: {', '.join(list(state)[:4])}")
    raw = data.get("policy_kwargs") or {}
    kwargs: dict[str, Any] = {"net_arch": net_arch}
    act = str(raw.get("activation_fn", ""))
    if act:
        name = act.rsplit(".", 1)[-1].rstrip("'>")
        if name not in ACTIVATIONS:
            raise ForeignPolicyError(f"{model_zip}: activation {act!r} not supported; allowed: {', '.join(ACTIVATIONS)}")
        kwargs["activation_fn"] = ACTIVATIONS[name]
    elif algo == "ppo":
        kwargs["activation_fn"] = torch.nn.Tanh  # SB3's default for on-policy MlpPolicy
    for key in ("log_std_init", "ortho_init", "squash_output", "share_features_extractor"):
        if key in raw and isinstance(raw[key], (int, float, bool)):
            kwargs[key] = raw[key]
    return algo, kwargs, state, data


class _Record:
    """Stands in for every object a ``vecnormalize.pkl`` holds (VecNormalize, RunningMeanStd, spaces)."""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {})

    def __reduce__(self):  # pragma: no cover - never pickled again
        raise TypeError("not picklable")


_ARRAYS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
           ("numpy._core.multiarray", "scalar")}
_RECORDS = ("stable_baselines3.common.vec_env.vec_normalize", "stable_baselines3.common.running_mean_std",
            "gymnasium.spaces", "gym.spaces")


class _NormUnpickler(pickle.Unpickler):
    """Builds numpy arrays and records of attributes; refuses every other global (no code runs)."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ARRAYS:
            return getattr(__import__(module, fromlist=[name]), name)
        if module.startswith(_RECORDS):
            return _Record
        if module.startswith("numpy.random"):
            return lambda *args, **kwargs: _Record()  # a space's random generator: not needed, not built
        raise pickle.UnpicklingError(f"refusing to build {module}.{name}")


def read_vecnormalize(path: Path) -> NormStats:
    """Normalisation statistics from an SB3 ``vecnormalize.pkl`` without running anything from it."""
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    try:
        with path.open("rb") as f:
            vn = _NormUnpickler(f).load()
        obs_src, ret_src = vn.obs_rms, vn.ret_rms
        obs = RunningMeanStd(shape=np.shape(obs_src.mean))
        obs.mean, obs.var, obs.count = np.asarray(obs_src.mean, float), np.asarray(obs_src.var, float), float(obs_src.count)
        ret = RunningMeanStd(shape=())
        ret.mean, ret.var, ret.count = np.asarray(ret_src.mean, float), np.asarray(ret_src.var, float), float(ret_src.count)
        if not getattr(vn, "norm_obs", True):
            raise ForeignPolicyError(f"{path}: norm_obs is off; sim2real applies normalisation to observations")
        return NormStats(obs, ret, float(vn.clip_obs), float(vn.clip_reward), bool(vn.norm_reward))
    except (pickle.UnpicklingError, AttributeError, EOFError, TypeError, ValueError) as exc:
        if isinstance(exc, ForeignPolicyError):
            raise
        raise ForeignPolicyError(f"{path}: not an SB3 VecNormalize file sim2real can read safely ({exc})") from None
