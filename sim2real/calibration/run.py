"""``sim2real calibrate``: read a recording, fit, write the calibrated spec and the report."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym

from sim2real.calibration.fit import CalibrationProblem, CalibrationResult, fit, parse_param, recording_from_episodes
from sim2real.calibration.outputs import truth_of, write_calibration
from sim2real.robot.log import read_log
from sim2real.spec import SpecError, TaskSpec


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
              log=None) -> CalibrationResult:
    """Fit ``spec``'s simulator to the transition log in ``data``; write everything into ``out``.

    Args:
        params: ``FIELD/NAME`` scales to fit (default: the spec's ``calibration.params``).
        delay: a known action delay (default: try 0..``max_delay`` and keep the best).
        phase: only episodes of this phase (e.g. ``record``), for a log with training in it too.
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
    problem = CalibrationProblem(spec, recording, chosen, window=window, max_delay=max_delay, obs_bias=obs_bias)
    try:
        result = fit(problem, [delay] if delay is not None else list(range(max_delay + 1)), max_iters=max_iters,
                     log=log)
        world = world or recorded_world(data)
        if world is not None:
            result.truth = truth_of(spec, world, result.labels)
        write_calibration(out, spec, problem, result, source=str(data))
    finally:
        problem.close()
    return result
