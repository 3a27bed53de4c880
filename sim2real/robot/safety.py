"""The safety layer between a learning policy and a robot: limits, checks, a steady rate, a way to stop.

:class:`SafetyLayer` wraps the robot's env (inside the transition log, so the log records both the
commanded and the applied action). Per step it

1. stops if an emergency stop was raised (a callable, a signal, or a stop file appearing);
2. clips the action to the declared limits and limits its change from the last applied action;
3. waits for the next tick of the control rate (and counts the ticks it was already late for);
4. steps the robot, then checks the observation for NaN/inf and against the declared bounds.

A failed check (or a stop) sends the safe action once ("hold": the last applied action, or "zero")
and ends the episode (``truncated``), with the reason in ``info["stop_reason"]``. Every
intervention is counted in :attr:`SafetyLayer.counts` and reported in ``info["safety"]``.

Limits come from a YAML file (``--safety FILE``) validated like a task spec::

    action_low: [-0.5, -0.5, -0.5]     # or one number for every joint; default: the action space
    action_high: 0.5
    max_action_change: 0.2             # per step, per joint (default: no limit)
    obs_low: null                      # per entry or one number; default: only NaN/inf are checked
    obs_high: null
    on_violation: hold                 # or zero
    control_hz: 50                     # default: no rate keeping (a simulator runs as fast as it can)
    stop_file: STOP                    # relative to the run folder; create it to stop the run
    stop_signal: SIGUSR1               # kill -USR1 <pid> stops the run; null: no signal handler
    human_reset: false                 # true: wait for Enter before every reset (a person resets the robot)
    max_faults: 10                     # errors raised by the env's step (each ends its episode) before the run stops
"""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
from pydantic import Field, ValidationError

from sim2real.spec import SpecError, StrictModel, format_validation_error, read_yaml_mapping


class EmergencyStop(RuntimeError):
    """The run was stopped on purpose (stop file, signal or callable); what was collected is on disk."""


class RobotFault(EmergencyStop):
    """The robot's env failed in a way the run cannot continue from (its reset raised, or too many faults)."""


class SafetyConfig(StrictModel):
    """Declared limits of a robot (see the module docstring for the YAML form)."""

    action_low: float | list[float] | None = None
    action_high: float | list[float] | None = None
    max_action_change: float | None = Field(default=None, gt=0)
    obs_low: float | list[float] | None = None
    obs_high: float | list[float] | None = None
    on_violation: Literal["hold", "zero"] = "hold"
    control_hz: float | None = Field(default=None, gt=0)
    stop_file: str | None = "STOP"
    stop_signal: Literal["SIGUSR1", "SIGUSR2", "SIGTERM"] | None = "SIGUSR1"
    human_reset: bool = False
    max_faults: int = Field(default=10, ge=0)  # errors raised by the env's step before the run stops


def load_safety(path: str | Path) -> SafetyConfig:
    """A safety file, validated; errors name the file, the field and the value."""
    raw = read_yaml_mapping(path, what="safety file")
    try:
        return SafetyConfig(**raw)
    except ValidationError as exc:
        raise SpecError(format_validation_error(Path(path), exc, what="safety file")) from None


def _bound(value, default: np.ndarray, name: str, where: str) -> np.ndarray:
    if value is None:
        return default.astype(np.float64)
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), default.shape) if np.ndim(value) == 0 else \
        np.asarray(value, dtype=np.float64)
    if arr.shape != default.shape:
        raise SpecError(f"{where}: {name} has {arr.size} entries, the env's space has {default.size}")
    return arr


class SafetyLayer(gym.Wrapper):
    """Enforce :class:`SafetyConfig` on ``env`` (see the module docstring).

    Args:
        env: the robot's env (Box action space).
        config: the declared limits.
        run_dir: where a relative ``stop_file`` lives.
        stop: an extra emergency-stop callable (returns True to stop), e.g. a hardware button.
        reset_hook: called before every reset with the robot idle (the policy is not running),
            e.g. to move the robot home; with ``human_reset`` a prompt waits for Enter instead.
    """

    def __init__(self, env: gym.Env, config: SafetyConfig | None = None, run_dir: str | Path = ".",
                 stop: Callable[[], bool] | None = None, reset_hook: Callable[[], None] | None = None,
                 where: str = "safety"):
        super().__init__(env)
        self.config = config = config or SafetyConfig()
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise SpecError(f"{where}: the safety layer needs a Box action space, the env has {space}")
        self.low = np.maximum(_bound(config.action_low, space.low, "action_low", where), space.low)
        self.high = np.minimum(_bound(config.action_high, space.high, "action_high", where), space.high)
        if np.any(self.low > self.high):
            raise SpecError(f"{where}: action_low exceeds action_high (or lies outside the action space {space})")
        obs_space = env.observation_space
        shape = getattr(obs_space, "shape", None)
        self.obs_low = None if config.obs_low is None else _bound(config.obs_low, np.zeros(shape), "obs_low", where)
        self.obs_high = None if config.obs_high is None else _bound(config.obs_high, np.zeros(shape), "obs_high", where)
        self.stop_file = None if config.stop_file is None else Path(run_dir) / config.stop_file
        self._stop_callable = stop
        self._reset_hook = reset_hook
        self._signalled = False
        self._old_handler = None
        if config.stop_signal is not None:
            try:
                sig = getattr(signal, config.stop_signal)
                self._old_handler = signal.signal(sig, self._on_signal)
                self._signal = sig
            except ValueError:  # not the main thread: the stop file and the callable still work
                self._old_handler = None
        self.period = None if config.control_hz is None else 1.0 / config.control_hz
        self._next_tick: float | None = None
        self._last_applied = np.zeros(space.shape, dtype=np.float64)
        self.counts: Counter = Counter()
        self.stop_reason: str | None = None
        self._last_obs = None
        self._moved = True  # the robot's state before the first reset is unknown

    def _on_signal(self, signum, frame) -> None:
        self._signalled = True

    def stop_requested(self) -> str | None:
        """Why the run must stop now, or None."""
        if self.stop_reason:
            return self.stop_reason
        if self._signalled:
            self.stop_reason = f"emergency stop: signal {self.config.stop_signal}"
        elif self.stop_file is not None and self.stop_file.exists():
            self.stop_reason = f"emergency stop: {self.stop_file} exists"
        elif self._stop_callable is not None and self._stop_callable():
            self.stop_reason = "emergency stop: the stop callable returned True"
        return self.stop_reason

    def safe_action(self) -> np.ndarray:
        if self.config.on_violation == "zero":
            return np.clip(np.zeros_like(self.low), self.low, self.high)
        return self._last_applied.copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if self.stop_requested():
            raise EmergencyStop(self.stop_reason)
        if not self._moved:
            pass  # nothing ran since the last reset: the robot still stands where that reset left it
        elif self._reset_hook is not None:
            self._reset_hook()
        elif self.config.human_reset:
            self.counts["human_resets"] += 1
            print("\nReset the robot to its start pose, then press Enter (the policy is not running) ...",
                  file=sys.stderr, flush=True)
            sys.stdin.readline()
        try:
            obs, info = self.env.reset(seed=seed, options=options)
        except (EmergencyStop, ConnectionError):
            raise  # a stop, or a link that already retried and gave up: the trainer stops cleanly with it
        except Exception as exc:  # noqa: BLE001 - the robot's own error, with where it happened
            raise RobotFault(f"the robot's reset raised {type(exc).__name__}: {exc}") from exc
        self._last_applied = np.clip(np.zeros_like(self.low), self.low, self.high)
        self._next_tick = None
        self._last_obs = obs
        self._moved = False
        return obs, info

    def _wait_for_tick(self) -> None:
        if self.period is None:
            return
        now = time.monotonic()
        if self._next_tick is None:
            self._next_tick = now
        elif now > self._next_tick + 0.1 * self.period:
            self.counts["rate_overruns"] += 1  # late by more than a tenth of a period
            self._next_tick = now
        else:
            time.sleep(max(0.0, self._next_tick - now))
        self._next_tick += self.period

    def _end(self, reason: str, obs, reward, info):
        """Send the safe action once and end the episode with ``reason``."""
        self.counts[reason.split(":")[0]] += 1
        try:
            self.env.step(self.safe_action())
        except Exception:  # noqa: BLE001 - the link may be what failed; the episode ends either way
            self.counts["safe_action_failed"] += 1
        info = {**info, "stop_reason": reason, "safety": dict(self.counts)}
        return obs, reward, False, True, info

    def step(self, action):
        raw = np.asarray(action, dtype=np.float64).reshape(self.low.shape)
        if self.stop_requested():  # the episode ends where it stands: the last observation again, no reward
            return self._end(self.stop_reason, self._last_obs, 0.0, {"applied_action": self.safe_action()})
        if np.all(np.isfinite(raw)):
            applied = np.clip(raw, self.low, self.high)
        else:
            self.counts["nonfinite_action"] += 1
            applied = self.safe_action()
        if self.config.max_action_change is not None:
            d = self.config.max_action_change
            applied = np.clip(applied, self._last_applied - d, self._last_applied + d)
        if not np.array_equal(applied, raw):
            self.counts["action_limited"] += 1
        self._wait_for_tick()
        self._moved = True
        try:
            obs, reward, terminated, truncated, info = self.env.step(applied.astype(self.action_space.dtype))
        except Exception as exc:  # noqa: BLE001 - the robot's own error: the episode ends, the run goes on
            self.counts["step raised"] += 1
            if self.counts["step raised"] > self.config.max_faults:
                self.stop_reason = f"the robot's step raised {self.counts['step raised']} times (max_faults " \
                                   f"{self.config.max_faults}); last: {type(exc).__name__}: {exc}"
            info = {"stop_reason": f"step raised {type(exc).__name__}: {exc}", "applied_action": applied,
                    "safety": dict(self.counts)}
            return self._last_obs, 0.0, False, True, info
        self._last_applied = applied
        self._last_obs = obs
        info = {**info, "applied_action": applied}
        obs_arr = np.asarray(obs, dtype=np.float64)
        if not np.all(np.isfinite(obs_arr)) or not np.isfinite(reward):
            return self._end("non-finite observation or reward", np.nan_to_num(obs_arr).astype(obs.dtype),
                             float(np.nan_to_num(reward)), info)
        if (self.obs_low is not None and np.any(obs_arr < self.obs_low)) or \
                (self.obs_high is not None and np.any(obs_arr > self.obs_high)):
            return self._end("observation outside its declared bounds", obs, reward, info)
        if terminated or truncated:
            info["safety"] = dict(self.counts)
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        if self._old_handler is not None:
            signal.signal(self._signal, self._old_handler)
            self._old_handler = None
        super().close()
