"""``sim2real calibrate``: read a recording, fit, write the calibrated spec and the report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from sim2real.calibration.fit import (
    CalibrationProblem,
    CalibrationResult,
    episode_offsets,
    fit,
    parse_param,
    recording_from_episodes,
)
from sim2real.calibration.outputs import truth_of, write_calibration
from sim2real.robot.log import read_log
from sim2real.spec import SpecError, TaskSpec

# Rounds of (offsets, physics): on Hopper `real` one round left the torso 6% light, a second 5%; on a pendulum
# with 0.03 rad offsets (tests) the pole mass went 25% -> 12% -> 8% light. Each round costs about a first fit.
OFFSET_ROUNDS = 2


def recorded_world(data: Path) -> str | None:
    """The target world a recording was made on, if its folder says (``run.json`` of record or transfer)."""
    info = (data if data.is_dir() else data.parent) / "run.json"
    if not info.exists():
        return None
    config = json.loads(info.read_text())
    config = config.get("config", config)
    return config.get("target")


def calibrate(spec: TaskSpec, data: str | Path, out: str | Path, params: list[str] | None = None,
              window: int | None = None, max_delay: int = 3, delay: int | None = None, obs_bias: bool = False,
              phase: str | None = None, max_iters: int = 50, world: str | None = None,
              offsets: bool | None = None, log=None) -> CalibrationResult:
    """Fit ``spec``'s simulator to the transition log in ``data``; write everything into ``out``.

    Args:
        params: ``FIELD/NAME`` scales to fit (default: the spec's ``calibration.params``).
        delay: a known action delay (default: try 0..``max_delay`` and keep the best).
        phase: only episodes of this phase (e.g. ``record``), for a log with training in it too.
        offsets: also fit each episode's offset of the position sensors, remove it and fit again
            (default: the spec's ``calibration.episode_offsets``).
        world: the spec world the data come from, when it is one (the report then compares with its truth;
            default: what the recording's ``run.json`` says).
    """
    if spec.calibration is None:
        raise SpecError(f"{spec.path}: calibration: missing; add a calibration block (qpos_skip, qvel_clip, params)")
    data, out = Path(data), Path(out)
    if (out / "calibration.json").exists():
        raise FileExistsError(f"{out} already holds a calibration; choose another --out (nothing is overwritten)")
    names = params or spec.calibration.params
    if not names:
        raise SpecError(f"{spec.path}: calibration.params is empty and no --params given: nothing to fit")
    env = gym.make(spec.env_id, **spec.env_kwargs)
    model = env.unwrapped.model
    chosen = [parse_param(p, model) for p in names]
    env.close()
    if delay is not None and not 0 <= delay <= max_delay:
        raise SpecError(f"--delay {delay}: allowed 0..{max_delay} (--max-delay)")
    episodes = [e for e in read_log(data) if phase is None or e.phase == phase]
    recording = recording_from_episodes(episodes, spec, source=str(data))
    if offsets and obs_bias:
        raise SpecError("--obs-bias and --episode-offsets both fit the position sensors' offsets (one for all "
                        "episodes, one per episode); choose one (--no-episode-offsets keeps --obs-bias as it was)")
    offsets = (spec.calibration.episode_offsets and not obs_bias) if offsets is None else offsets
    began = time.perf_counter()
    problem = CalibrationProblem(spec, recording, chosen, window=window, max_delay=max_delay, obs_bias=obs_bias)
    try:
        result = fit(problem, [delay] if delay is not None else list(range(max_delay + 1)), max_iters=max_iters,
                     log=log)
        if offsets:
            # The delay is chosen on the data as recorded (a wrong one leaves several times the residual either
            # way). Then, twice: each episode's sensor offsets with the physics held at the fit, and the physics
            # again on the data without them (the first offsets are found under physics the offsets bent).
            first, found = result, np.zeros((len(recording.actions), problem.nq - problem.skip))
            for _ in range(OFFSET_ROUNDS):
                scales = np.array([result.values[p.label] for p in chosen])
                found = found + episode_offsets(problem, recording.minus(found), scales, result.delay)
                if log is not None:
                    log("sensor offsets per episode (std over episodes): "
                        + "  ".join(f"{v:.3g}" for v in found.std(axis=0)))
                corrected = CalibrationProblem(spec, recording.minus(found), chosen, window=window,
                                               max_delay=max_delay, obs_bias=obs_bias, scale=problem.scale)
                problem.close()
                problem = corrected
                result = fit(problem, [first.delay], max_iters=max_iters, log=log,
                             start=np.array([result.values[lab] for lab in result.labels]))
            # Before and after on the same data (without the offsets): the drop is the physics', not the offsets'.
            # The delay costs stay those of the data as recorded, where the delay was chosen.
            result.delay_costs = first.delay_costs
            result.rms_before = float(np.sqrt(np.mean(problem.residual(problem.nominal_vector(), 0) ** 2)))
            result.offsets = found.tolist()
        result.seconds = time.perf_counter() - began
        world = world or recorded_world(data)
        if world is not None:
            result.truth = truth_of(spec, world, result.labels)
            result.world = world
        write_calibration(out, spec, problem, result, source=str(data))
    finally:
        problem.close()
    return result
