"""Export a policy for the robot's computer: one ONNX or TorchScript file, no SB3 needed to run it.

The file holds the whole deterministic action pipeline, so the robot side only keeps the policy's
short memory (last action, history) and calls it once per control tick::

    raw obs ─┬─ concat with past obs and past actions (the policy's inputs, newest first)
             └─► normalise (pretraining's frozen statistics, clipped) ─► actor ─► mean action
                 ─► clip to the action space (PPO) or rescale from [-1, 1] (SAC, TD3) ─► action

Graph inputs: ``obs`` ``[batch, obs_dim]`` and, for a policy with inputs, ``past_actions``
``[batch, k * act_dim]`` (``k`` = max(history, 1)) and ``past_obs`` ``[batch, history * obs_dim]``;
all float32. Output: ``action`` ``[batch, act_dim]``. A JSON file beside it records the spaces,
the inputs, the control rate and the parity measured against SB3's ``predict`` at export time.
``examples/run_onnx_policy.py`` drives an env with numpy and onnxruntime alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sim2real.learning.evaluation import normalizer
from sim2real.learning.loading import load_for_evaluation

FORMATS = ("onnx", "torchscript")
PARITY_TOLERANCE = 1e-5


class ExportError(ValueError):
    """The policy cannot be exported as asked; the message says why."""


class DeployedPolicy(nn.Module):
    """The deterministic action of an SB3 policy, with the observation inputs and normalisation folded in."""

    def __init__(self, model, obs_rms, clip_obs: float, inputs, obs_dim: int, act_space):
        super().__init__()
        policy = model.policy
        self.algo = type(model).__name__.lower()
        self.squashed = bool(getattr(policy, "squash_output", False)) or self.algo in ("sac", "td3")
        if self.algo in ("sac", "td3"):
            self.actor = policy.actor
        else:
            self.features = policy.pi_features_extractor
            self.extractor = policy.mlp_extractor
            self.action_net = policy.action_net
        self.history = inputs.history if inputs is not None else 0
        self.with_actions = bool(inputs is not None and inputs.active)
        full = obs_dim + (self.history * obs_dim if self.history else 0)
        full += (max(self.history, 1) * act_space.shape[0]) if self.with_actions else 0
        mean = np.zeros(full) if obs_rms is None else obs_rms.mean
        std = np.ones(full) if obs_rms is None else np.sqrt(obs_rms.var + 1e-8)
        # Normalisation in float64, as VecNormalize does it in numpy: parity to the last bits that matter.
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float64))
        self.clip_obs = float(clip_obs) if obs_rms is not None else float("inf")
        self.register_buffer("low", torch.as_tensor(act_space.low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(act_space.high, dtype=torch.float32))

    def _actor(self, x: torch.Tensor) -> torch.Tensor:
        if self.algo == "sac":
            latent = self.actor.latent_pi(self.actor.features_extractor(x))
            return torch.tanh(self.actor.mu(latent))
        if self.algo == "td3":
            return self.actor.mu(self.actor.features_extractor(x))
        return self.action_net(self.extractor.forward_actor(self.features(x)))

    def forward(self, obs: torch.Tensor, past_actions: torch.Tensor, past_obs: torch.Tensor) -> torch.Tensor:
        parts = [obs]
        if self.history:
            parts.append(past_obs)
        if self.with_actions:
            parts.append(past_actions)
        x = torch.cat(parts, dim=1).to(torch.float64)
        x = torch.clamp((x - self.mean) / self.std, -self.clip_obs, self.clip_obs).to(torch.float32)
        a = self._actor(x)
        if self.squashed:
            return self.low + 0.5 * (a + 1.0) * (self.high - self.low)
        return torch.minimum(torch.maximum(a, self.low), self.high)


def _example_inputs(obs_dim: int, act_dim: int, history: int, with_actions: bool, n: int, rng) -> list[np.ndarray]:
    k = max(history, 1) if with_actions else 0
    return [rng.normal(size=(n, obs_dim)).astype(np.float32),
            rng.uniform(-1, 1, size=(n, k * act_dim)).astype(np.float32),
            rng.normal(size=(n, history * obs_dim)).astype(np.float32)]


def export_policy(policy: str | Path, fmt: str = "onnx", out: str | Path | None = None, samples: int = 1000,
                  seed: int = 0) -> Path:
    """Write ``policy`` as one ONNX or TorchScript file (+ ``.json``) and check it against SB3's ``predict``.

    Returns the file's path. Raises :class:`ExportError` if the exported policy differs from SB3's
    deterministic action by more than ``PARITY_TOLERANCE`` on ``samples`` random observations.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: allowed: {', '.join(FORMATS)}")
    pre, spec, model = load_for_evaluation(policy)
    env = model.get_env()
    act_space = env.action_space
    obs_dim = int(np.prod(env.observation_space.shape))
    inputs = pre.inputs
    history = inputs.history if inputs is not None else 0
    with_actions = bool(inputs is not None and inputs.active)
    # The policy's observation is the composed one; recover the raw env's size from the inputs' layout.
    act_dim = act_space.shape[0]
    extra = history * act_dim + (act_dim if with_actions and not history else 0)
    raw_obs_dim = (obs_dim - extra) // (history + 1)
    clip_obs = pre.norm.clip_obs if pre.norm is not None else 10.0
    module = DeployedPolicy(model, pre.obs_rms, clip_obs, inputs, raw_obs_dim, act_space).eval()
    path = Path(out) if out else Path(pre.path).parent / f"policy.{'onnx' if fmt == 'onnx' else 'pt'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    example = [torch.as_tensor(a) for a in _example_inputs(raw_obs_dim, act_dim, history, with_actions, 2, rng)]
    tmp = path.with_name(path.name + ".tmp")
    with torch.no_grad(), _quiet_exporter():
        if fmt == "onnx":
            batch = torch.export.Dim("batch")
            torch.onnx.export(module, tuple(example), str(tmp), input_names=["obs", "past_actions", "past_obs"],
                              output_names=["action"], dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes=({0: batch}, {0: batch}, {0: batch}))
        else:
            torch.jit.save(torch.jit.trace(module, tuple(example)), str(tmp))
    run = _loader(fmt, tmp)
    # Parity: the same observations through SB3's own predict (composed, normalised as in evaluation).
    obs, past_a, past_o = _example_inputs(raw_obs_dim, act_dim, history, with_actions, samples, rng)
    composed = np.concatenate([obs] + ([past_o] if history else []) + ([past_a] if with_actions else []), axis=1)
    expected, _ = model.predict(normalizer(pre.obs_rms, clip_obs)(composed), deterministic=True)
    got = run(obs, past_a, past_o)
    parity = float(np.max(np.abs(got - expected)))
    if not parity <= PARITY_TOLERANCE:
        tmp.unlink()
        raise ExportError(f"{path}: the exported policy differs from SB3's predict by {parity:.2e} "
                          f"(allowed {PARITY_TOLERANCE:.0e}); nothing was written")
    t0, calls = time.perf_counter(), 200
    for i in range(calls):
        run(obs[i % samples: i % samples + 1], past_a[i % samples: i % samples + 1], past_o[i % samples: i % samples + 1])
    per_call_ms = (time.perf_counter() - t0) / calls * 1e3
    tmp.replace(path)
    dt = float(getattr(env.envs[0].unwrapped, "dt", 0.0)) if hasattr(env, "envs") else 0.0
    card = {
        "format": fmt, "file": path.name, "policy": str(pre.path), "task": pre.task, "algo": pre.algo,
        "inputs": {"obs": [raw_obs_dim], "past_actions": [max(history, 1) * act_dim if with_actions else 0],
                   "past_obs": [history * raw_obs_dim]},
        "output": {"action": [act_dim]},
        "observation_inputs": {"last_action": with_actions, "history": history},
        "action_low": act_space.low.tolist(), "action_high": act_space.high.tolist(),
        "control_hz": round(1.0 / dt, 6) if dt else None,
        "parity_max_abs_diff": parity, "parity_samples": samples,
        "latency_ms_per_call": round(per_call_ms, 4), "latency_measured_with": "onnxruntime" if fmt == "onnx" else "torch",
    }
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return path


@contextmanager
def _quiet_exporter():
    """torch.onnx logs every stage and warns about torchvision ops a policy never uses: keep the console for results."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _loader(fmt: str, path: Path):
    """A numpy-in, numpy-out function running the exported file."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError("checking an ONNX export needs onnxruntime: pip install 'sim2real[export]'") from None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(obs, past_a, past_o):
            feeds = dict(zip(["obs", "past_actions", "past_obs"], (obs, past_a, past_o)))
            return session.run(["action"], {n: feeds[n] for n in names})[0]
        return run
    module = torch.jit.load(str(path))

    def run(obs, past_a, past_o):
        with torch.no_grad():
            return module(*(torch.as_tensor(a) for a in (obs, past_a, past_o))).numpy()
    return run
