"""Record episodes on a target: a policy, or a scripted excitation when no policy is trusted yet.

``sim2real record`` runs on a robot session (one instance, the safety layer, every step counted)
and writes ``transitions.jsonl`` (see :mod:`sim2real.robot.log`): the data a calibration fits, or a
first look at a robot before any learning touches it. Excitations stay inside the action limits:

- ``random``: uniform commands, each held for a few steps (a steady input a body can respond to);
- ``chirp``: a sine per actuator whose frequency sweeps from 0.5 Hz to a quarter of the control rate,
  phase-shifted between actuators.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from sim2real.learning.artifacts import RunLock, atomic_write_text, write_run_info
from sim2real.learning.evaluation import evaluate
from sim2real.learning.loading import load_for_evaluation
from sim2real.options import option
from sim2real.robot.safety import SafetyConfig, load_safety
from sim2real.robot.session import RobotSession
from sim2real.spec import SpecError, load_spec
from sim2real.worlds.inputs import with_inputs
from sim2real.worlds.make import make_target_env
from sim2real.worlds.targets import check_spaces, resolve_target

EXCITATIONS = ("random", "chirp")


@dataclass
class RecordConfig:
    """One recording. Every field with help text is also a ``sim2real record`` flag."""

    target: str = option("real", "a target world of the task, a Gymnasium id, or module:Factory")
    policy: str | None = option(None, "the policy that acts (a run folder, zoo entry or model .zip)")
    excitation: str | None = option(None, "scripted commands instead of a policy", choices=EXCITATIONS)
    task: str | None = option(None, "the task (needed with --excitation; a policy knows its own)")
    episodes: int = option(10, "episodes to record")
    seed: int = option(0, "episode i starts from seed SEED + i")
    hold_steps: int = option(5, "random excitation: steps each command is held")
    amplitude: float = option(0.5, "excitation amplitude, as a fraction of the action range")
    safety: str | None = option(None, "YAML file of robot limits (see docs/robot.md)", metavar="FILE")
    max_episode_steps: int | None = option(None, "end episodes after N steps (an env without a TimeLimit)",
                                           metavar="N")

    def validate(self) -> None:
        if (self.policy is None) == (self.excitation is None):
            raise SpecError("record: give a POLICY or --excitation random|chirp (exactly one)")
        if self.excitation is not None and self.excitation not in EXCITATIONS:
            raise SpecError(f"--excitation {self.excitation!r}: allowed: {', '.join(EXCITATIONS)}")
        if self.excitation is not None and self.task is None:
            raise SpecError("record --excitation needs --task TASK (which robot's spaces and worlds)")
        for name in ("episodes", "hold_steps"):
            if getattr(self, name) < 1:
                raise SpecError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if not 0 < self.amplitude <= 1:
            raise SpecError(f"--amplitude {self.amplitude}: must be in (0, 1]")


class Excitation:
    """A scripted 'policy' for :func:`evaluate`: ``predict(obs)`` returns the next command of the script."""

    def __init__(self, kind: str, space: gym.spaces.Box, dt: float, amplitude: float, hold: int, seed: int):
        self.kind, self.space, self.dt, self.hold = kind, space, dt or 0.01, hold
        self.mid = (space.high + space.low) / 2
        self.half = amplitude * (space.high - space.low) / 2
        self.rng = np.random.default_rng(seed)
        self.t, self.current = 0, self.mid.copy()

    def reset(self) -> None:
        self.t = 0

    def predict(self, obs, deterministic: bool = True):
        if self.kind == "random":
            if self.t % self.hold == 0:
                self.current = self.mid + self.half * self.rng.uniform(-1, 1, size=self.mid.shape)
            action = self.current
        else:  # chirp: instantaneous frequency from f0 to f1 over 10 s, then again
            f0, f1, span = 0.5, 0.25 / self.dt, 10.0
            time = (self.t * self.dt) % span
            phase = 2 * math.pi * (f0 * time + (f1 - f0) * time**2 / (2 * span))
            shifts = np.arange(self.mid.size) * 2 * math.pi / max(self.mid.size, 1)
            action = self.mid + self.half * np.sin(phase + shifts)
        self.t += 1
        return action.astype(self.space.dtype), None


class _ResetScript(gym.Wrapper):
    """Restart the excitation's clock at every episode."""

    def __init__(self, env: gym.Env, script: Excitation):
        super().__init__(env)
        self.script = script

    def reset(self, **kwargs):
        self.script.reset()
        return self.env.reset(**kwargs)


def record(cfg: RecordConfig, out: str | Path, import_module: str | None = None,
           target_kwargs: dict | None = None) -> Path:
    """Record ``cfg.episodes`` episodes on the target into ``out`` (``transitions.jsonl``, ``record.json``)."""
    cfg.validate()
    out = Path(out)
    if (out / "record.json").exists() or (out / "transitions.jsonl").exists():
        raise FileExistsError(f"{out} already holds a recording; choose another --out (nothing is overwritten)")
    pre = model = None
    if cfg.policy is not None:
        pre, spec, model = load_for_evaluation(cfg.policy, cfg.task)
    else:
        spec = load_spec(cfg.task)
    target_env = resolve_target(spec, cfg.target, import_module, target_kwargs)()
    home = make_target_env(spec.path, "nominal")
    try:
        check_spaces(home.observation_space, home.action_space, target_env, cfg.target)
    except Exception:
        target_env.close()
        raise
    finally:
        home.close()
    safety = load_safety(cfg.safety) if cfg.safety else SafetyConfig()
    with RunLock(out):
        write_run_info(out, {**asdict(cfg), "task": spec.name, "target_kwargs": target_kwargs or {}})
        session = RobotSession(target_env, out, safety, cfg.max_episode_steps, name=cfg.target)
        try:
            if model is not None:
                env = with_inputs(session.borrow(), pre.inputs)
                actor, obs_rms = model, pre.obs_rms
            else:
                safe = session.safety
                box = gym.spaces.Box(safe.low.astype(np.float32), safe.high.astype(np.float32))
                actor = Excitation(cfg.excitation, box, float(getattr(target_env.unwrapped, "dt", 0.0)),
                                   cfg.amplitude, cfg.hold_steps, cfg.seed)
                env, obs_rms = _ResetScript(session.borrow(), actor), None
            with session.phase("record"):
                result = evaluate(actor, env, cfg.episodes, obs_rms=obs_rms, seed=cfg.seed,
                                  max_steps=cfg.max_episode_steps)
            summary = {"episodes": cfg.episodes, "returns": result.returns, "lengths": result.lengths,
                       **session.stats()}
        finally:
            session.close()
        atomic_write_text(out / "record.json", json.dumps(summary, indent=2))
    return out

