"""A robot session: one instance of the target, every step on it counted, checked and logged.

A robot exists once. :class:`RobotSession` builds the target env exactly once per run and hands
the *same* instance to training and to evaluation (which then run one after the other, never side
by side). Around the user's env it stacks, innermost first::

    user env -> StepCounter (robot steps and robot time) -> SafetyLayer -> TransitionLog

so every step that reaches the robot is counted (safe actions included), every policy step is
checked, and every transition is on disk before the trainer sees it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import gymnasium as gym

from sim2real.robot.log import LOG_NAME, TransitionLog, read_log
from sim2real.robot.safety import SafetyConfig, SafetyLayer
from sim2real.spec import SpecError

PHASES = ("train", "eval")


class StepCounter(gym.Wrapper):
    """Count every step and reset that reaches the env, and the wall-clock time they took, per phase."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.phase = "train"
        self.steps: Counter = Counter()
        self.resets: Counter = Counter()
        self.seconds: Counter = Counter()

    def reset(self, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.env.reset(**kwargs)
        finally:
            self.resets[self.phase] += 1
            self.seconds[self.phase] += time.perf_counter() - t0

    def step(self, action):
        t0 = time.perf_counter()
        try:
            return self.env.step(action)
        finally:
            self.steps[self.phase] += 1
            self.seconds[self.phase] += time.perf_counter() - t0


class _Borrowed(gym.Wrapper):
    """The session's env lent to a VecEnv or an evaluator: closing it is the session's job, not theirs."""

    def close(self) -> None:
        pass


def episode_limit(env: gym.Env) -> int | None:
    """After how many steps ``env`` ends an episode by itself: a TimeLimit in its stack, or a remote robot's word."""
    e = env
    while True:
        if isinstance(e, gym.wrappers.TimeLimit):
            return e._max_episode_steps
        if not isinstance(e, gym.Wrapper):
            return getattr(e, "max_episode_steps", None)
        e = e.env


class RobotSession:
    """The one instance of a target env, shared by training and evaluation.

    Args:
        env: the target env, built once by the caller.
        run_dir: the run folder (the transition log and a relative stop file live there).
        safety: declared limits; ``None`` turns the safety layer off.
        max_episode_steps: wrap an env that never truncates in a TimeLimit of this many steps.
        stop, reset_hook: see :class:`SafetyLayer`.
        name: how errors refer to the target.
    """

    def __init__(self, env: gym.Env, run_dir: str | Path, safety: SafetyConfig | None = None,
                 max_episode_steps: int | None = None, stop: Callable[[], bool] | None = None,
                 reset_hook: Callable[[], None] | None = None, name: str = "target", log: bool = True):
        self.run_dir = Path(run_dir)
        if max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, max_episode_steps)
        elif episode_limit(env) is None:
            env.close()
            raise SpecError(f"target {name}: the env never ends an episode by itself (no TimeLimit in it), so an "
                            "evaluation could run forever; pass --max-episode-steps N, or return "
                            "gymnasium.wrappers.TimeLimit(env, N) from your factory")
        self.counter = StepCounter(env)
        env = self.counter
        self.safety = SafetyLayer(env, safety, run_dir, stop=stop, reset_hook=reset_hook, where=f"target {name}") \
            if safety is not None else None
        env = self.safety or env
        resumed = (self.run_dir / LOG_NAME).exists()
        self.log = TransitionLog(env, self.run_dir / LOG_NAME) if log else None
        if resumed and log:
            # A resumed run: what the robot did before the kill counts too (its policy steps, from the log).
            for episode in read_log(self.run_dir):
                self.counter.steps[episode.phase] += episode.steps
                self.counter.resets[episode.phase] += 1
        self.env: gym.Env = self.log or env
        self._closed = False

    def borrow(self) -> gym.Env:
        """The shared instance, for a VecEnv or an evaluator (their ``close`` leaves it open)."""
        return _Borrowed(self.env)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count and log what happens inside as ``name`` ("train" or "eval")."""
        old = self.counter.phase
        self.counter.phase = name
        if self.log is not None:
            self.log.phase = name
        try:
            yield
        finally:
            self.counter.phase = old
            if self.log is not None:
                self.log.phase = old

    @property
    def stop_reason(self) -> str | None:
        return self.safety.stop_requested() if self.safety is not None else None

    def stats(self) -> dict:
        """Robot steps, resets and seconds per phase, and the safety layer's interventions."""
        c = self.counter
        phases = list(PHASES) + sorted(set(c.steps) - set(PHASES))  # train, eval, and any other (record)
        return {
            "robot_steps": {**{p: int(c.steps[p]) for p in phases}, "total": int(sum(c.steps.values()))},
            "robot_resets": {**{p: int(c.resets[p]) for p in phases}, "total": int(sum(c.resets.values()))},
            "robot_seconds": {**{p: round(c.seconds[p], 3) for p in phases}, "total": round(sum(c.seconds.values()), 3)},
            "interventions": dict(self.safety.counts) if self.safety is not None else {},
        }

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.env.close()
