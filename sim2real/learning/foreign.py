"""Policies trained outside sim2real: a plain Stable-Baselines3 ``.zip`` or an RL Zoo run folder.

Given the task it was trained on (``--task``), such a model becomes a :class:`Pretrained` like any run of
ours, still without executing anything from the files:

- the weights come from the zip's ``policy.pth`` (``torch.load(weights_only=True)``), the architecture from
  the zip's ``data`` JSON (``policy_kwargs``: ``net_arch`` and the activation's name), the algorithm from the
  weights' names (PPO's ``action_net``, SAC's ``actor.mu`` layer, TD3's ``actor.mu.0`` MLP);
- ``vecnormalize.pkl`` beside it (the RL Zoo keeps it in ``<env id>/``) is read by an unpickler that builds
  plain records only (numpy is never called by pickle: arrays are rebuilt from their bytes afterwards, plain
  numeric dtypes only): any other object in the file is refused.
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
    elif "actor.mu.weight" in state:  # SAC: hidden layers in latent_pi, mu the output layer
        algo = "sac"
        net_arch = {"pi": _layers(state, "actor.latent_pi"), "qf": _layers(state, "critic.qf0")[:-1]}  # last: Q
    elif "actor.mu.0.weight" in state:  # TD3: mu is the whole actor MLP, its last layer the action
        algo = "td3"
        net_arch = {"pi": _layers(state, "actor.mu")[:-1], "qf": _layers(state, "critic.qf0")[:-1]}
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

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


class _DtypeRecord(_Record):
    """A dtype as the file describes it (``numpy.dtype('f8', False, True)`` + its state); never built here."""


class _ArrayRecord(_Record):
    """An ndarray as the file describes it (``_reconstruct`` + its state: version, shape, dtype, order, bytes)."""


class _ScalarRecord(_Record):
    """A numpy scalar as the file describes it (``scalar(dtype, bytes)``)."""


def _dtype_of(rec) -> np.dtype:
    """A plain numeric dtype from a record, or an error: objects, structs and odd flags are refused."""
    if not isinstance(rec, _DtypeRecord) or not rec.args or not isinstance(rec.args[0], str):
        raise ForeignPolicyError("an array with an unreadable dtype")
    name = rec.args[0]
    state = getattr(rec, "state", None)
    order = state[1] if isinstance(state, tuple) and len(state) > 1 and state[1] in "<>|=" else "="
    if isinstance(state, tuple) and (len(state) != 8 or state[2:5] != (None, None, None) or state[7] != 0):
        raise ForeignPolicyError(f"a dtype {name!r} with a non-plain state {state!r}")
    dtype = np.dtype(name).newbyteorder(order) if order in "<>" else np.dtype(name)
    if dtype.kind not in "fiub":
        raise ForeignPolicyError(f"a dtype {name!r} that is not a plain number")
    return dtype


def _to_array(value) -> np.ndarray:
    """A real float array from an array / scalar record or a plain number (built by numpy, not by pickle)."""
    if isinstance(value, (int, float, bool)):
        return np.asarray(value, dtype=float)
    if isinstance(value, _ScalarRecord) and len(value.args) == 2 and isinstance(value.args[1], bytes):
        dtype = _dtype_of(value.args[0])
        return np.frombuffer(value.args[1], dtype=dtype, count=1).astype(float).reshape(())
    if isinstance(value, _ArrayRecord) and isinstance(getattr(value, "state", None), tuple):
        _, shape, dtype_rec, _, raw = value.state
        dtype = _dtype_of(dtype_rec)
        shape = tuple(int(n) for n in shape)
        if not isinstance(raw, bytes) or len(raw) != dtype.itemsize * int(np.prod(shape)):
            raise ForeignPolicyError("an array whose bytes do not match its shape")
        return np.frombuffer(raw, dtype=dtype).astype(float).reshape(shape)
    raise ForeignPolicyError(f"expected numbers, found {type(value).__name__}")


_RECORDS = ("stable_baselines3.common.vec_env.vec_normalize", "stable_baselines3.common.running_mean_std",
            "gymnasium.spaces", "gym.spaces", "numpy.random")
_NUMPY = {"_reconstruct": _ArrayRecord, "ndarray": _ArrayRecord, "dtype": _DtypeRecord, "scalar": _ScalarRecord}


class _NormUnpickler(pickle.Unpickler):
    """Builds records of attributes only, numpy's arrays included; refuses every other global (no code runs).

    Nothing of numpy is handed to pickle: an array arrives as its shape, a dtype name and bytes, and
    :func:`_to_array` builds it with ``np.frombuffer`` for plain numeric dtypes only.
    """

    def find_class(self, module: str, name: str):
        if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name in _NUMPY:
            return _NUMPY[name]
        if module.startswith(_RECORDS):
            return _Record
        raise pickle.UnpicklingError(f"refusing to build {module}.{name}")


def read_vecnormalize(path: Path) -> NormStats:
    """Normalisation statistics from an SB3 ``vecnormalize.pkl`` without running anything from it."""
    from stable_baselines3.common.running_mean_std import RunningMeanStd

    try:
        with path.open("rb") as f:
            vn = _NormUnpickler(f).load()
        obs_src, ret_src = vn.obs_rms, vn.ret_rms
        mean = _to_array(obs_src.mean)
        obs = RunningMeanStd(shape=mean.shape)
        obs.mean, obs.var, obs.count = mean, _to_array(obs_src.var), float(_to_array(obs_src.count))
        ret = RunningMeanStd(shape=())
        ret.mean, ret.var = _to_array(ret_src.mean), _to_array(ret_src.var)
        ret.count = float(_to_array(ret_src.count))
        if obs.var.shape != obs.mean.shape:
            raise ForeignPolicyError("obs_rms mean and var differ in shape")
        if not getattr(vn, "norm_obs", True):
            raise ForeignPolicyError(f"{path}: norm_obs is off; sim2real applies normalisation to observations")
        return NormStats(obs, ret, float(_to_array(vn.clip_obs)), float(_to_array(vn.clip_reward)),
                         bool(_to_array(vn.norm_reward)))
    except (pickle.UnpicklingError, AttributeError, EOFError, TypeError, ValueError) as exc:
        if isinstance(exc, ForeignPolicyError):
            raise
        raise ForeignPolicyError(f"{path}: not an SB3 VecNormalize file sim2real can read safely ({exc})") from None
