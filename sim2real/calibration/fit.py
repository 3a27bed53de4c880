"""Fit the simulator to recorded target data: physics scales, the action delay and an observation bias.

The data are what a robot gives, observations and the commands that reached it (``transitions.jsonl``);
nothing of the target's simulator is read. A calibration is a least-squares problem solved by MuJoCo's
own system-identification toolbox (``mujoco.sysid.optimize`` on ``mujoco.minimize``'s box-constrained
Levenberg-Marquardt, confidence intervals from ``mujoco.sysid.calculate_intervals``), with the rollouts
done by ``mujoco.rollout`` on a thread pool:

- **multiple shooting**: each episode is cut into windows of a few control steps; every window starts
  from the recorded observation (the state rebuilt through the spec's ``calibration`` mapping) and
  replays the recorded commands, so a hopping, contact-rich robot never drifts far from its data;
- **residual**: predicted minus recorded observations over each window, every observation dimension
  divided by its spread in the data (metres and radians per second weigh alike);
- **delay**: an integer number of control steps, so each candidate (0..max) gets its own continuous fit
  and the one with the least residual wins (its cost is reported beside the others).

The parameters are scales on the nominal model (1.0 = the spec's model), written through the same
:class:`~sim2real.worlds.physics.PhysicsModel` the randomised and target worlds use.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import time
from dataclasses import dataclass, field

import gymnasium as gym
import mujoco
import mujoco.rollout
import numpy as np

from sim2real.fields import FIELDS
from sim2real.spec import SpecError, TaskSpec
from sim2real.worlds.physics import PhysicsModel, element_names

# Scales a fit may reach: wide enough for any plausible robot, narrow enough that the model stays valid.
SCALE_BOUNDS = (0.2, 5.0)
MIN_WINDOWS_PER_PARAM = 5
# A velocity within 1% of the observation's clip may have been clipped (noise moves it off the bound). Relative, so
# for Hopper/Walker2d's clip of 10 the margin is 0.1, ten times `real`'s sensor noise; a small clip needs a wider one.
CLIP_MARGIN = 0.99
XTOL = 1e-5  # relative step at which a fit stops
MU_FACTOR = 10.0  # mujoco.minimize raises its regulariser by this per failed step (default 1.26: ~60 rollouts to go from 1e-6 to 1)
# Effects a fit can see in commands and motion: a motor that saturates below the action bound (what the policy
# commands beyond it never arrives). Start, low, high: it starts just inside 1, where a clip still has a slope.
EFFECT_PARAMS = {"motor/saturation": (0.95, 0.2, 1.0)}


@contextlib.contextmanager
def _refit_notes_dropped():
    """Drops sysid's note that a parameter starts at its bound.

    A refit starts where an earlier fit ended, and a value whose truth lies on its bound (a motor that never
    saturates: saturation 1.0) ends there: sysid would repeat the note, as an absl warning, at every refit.
    """
    def keep(record: logging.LogRecord) -> bool:
        return "start at (or essentially at) a box bound" not in record.getMessage()

    absl = logging.getLogger("absl")
    absl.addFilter(keep)
    try:
        yield
    finally:
        absl.removeFilter(keep)


def _sysid():
    try:
        from mujoco import sysid
    except ImportError:  # pragma: no cover - the package always ships; its extras may not
        sysid = None
    if sysid is None or not hasattr(sysid, "optimize"):
        raise ImportError("calibration needs MuJoCo's sysid extras: pip install 'sim2real[sysid]' "
                          "(or pip install 'mujoco[sysid]')")
    return sysid


@dataclass(frozen=True)
class CalibrationParam:
    """One fitted scale: ``field/name`` (one element) or ``field/all`` (every element, one shared scale)."""

    field: str
    names: list[str] | str

    @property
    def label(self) -> str:
        return f"{self.field}/{self.names if isinstance(self.names, str) else self.names[0]}"

    @property
    def is_effect(self) -> bool:
        return self.label in EFFECT_PARAMS


def parse_param(text: str, model: mujoco.MjModel, where: str = "--params") -> CalibrationParam:
    """``body_mass/torso`` -> a parameter, with an error naming what the model allows otherwise."""
    if text in EFFECT_PARAMS:
        return CalibrationParam("motor", "saturation")
    fieldname, sep, name = str(text).partition("/")
    if not sep or not name:
        raise SpecError(f"{where}: {text!r} is not FIELD/NAME (e.g. body_mass/torso or actuator_gear/all)")
    if fieldname not in FIELDS or FIELDS[fieldname].offset_only:
        allowed = sorted(k for k, v in FIELDS.items() if not v.offset_only) + list(EFFECT_PARAMS)
        raise SpecError(f"{where}: {text!r}: unknown field {fieldname!r}; allowed: {', '.join(allowed)}")
    if name == "all":
        return CalibrationParam(fieldname, "all")
    valid = element_names(model, fieldname)
    if name not in valid:
        raise SpecError(f"{where}: {text!r}: the model has no {fieldname} element {name!r}; "
                        f"allowed: {', '.join(valid)} or all")
    return CalibrationParam(fieldname, [name])


def _window_starts(known: np.ndarray, steps: int, w: int) -> list[int]:
    """Back-to-back windows of ``w`` steps over an episode, each moved on to the next step whose state is known."""
    out, t0 = [], 0
    while t0 + w <= steps:
        if known[t0]:
            out.append(t0)
            t0 += w
        else:
            t0 += 1
    return out


@dataclass
class Recording:
    """Recorded episodes as arrays: ``observations[i]`` has one row more than ``actions[i]``."""

    observations: list[np.ndarray]
    actions: list[np.ndarray]

    @property
    def steps(self) -> int:
        return int(sum(len(a) for a in self.actions))

    def episode(self, i: int) -> Recording:
        return Recording([self.observations[i]], [self.actions[i]])

    def minus(self, offsets: np.ndarray) -> Recording:
        """The episodes with a constant per-episode offset (``(episodes, k)``, the first k entries) removed."""
        obs = []
        for o, b in zip(self.observations, offsets):
            o = o.copy()
            o[:, :len(b)] -= b
            obs.append(o)
        return Recording(obs, self.actions)


def recording_from_episodes(episodes, spec: TaskSpec, source: str = "the data") -> Recording:
    """Check logged episodes against the task (dimensions, NaN) and keep what a fit needs.

    The applied command (after the safety layer) is what reached the robot, so it is used when logged.
    """
    env = gym.make(spec.env_id, **spec.env_kwargs)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    obs, acts = [], []
    for e in episodes:
        if e.steps == 0:
            continue
        o = np.asarray(e.observations, dtype=np.float64)
        a = np.asarray(e.applied if e.applied is not None else e.actions, dtype=np.float64)
        if o.shape[1] != obs_dim or a.shape[1] != act_dim:
            raise SpecError(f"{source}: episode {e.episode} has {o.shape[1]}-dim observations and {a.shape[1]}-dim "
                            f"actions; task {spec.name!r} ({spec.env_id}) has {obs_dim} and {act_dim}: data from "
                            "another task (or a policy's extra inputs in the log)?")
        for what, arr in (("observation", o), ("action", a)):
            bad = np.argwhere(~np.isfinite(arr))
            if len(bad):
                raise SpecError(f"{source}: episode {e.episode}, step {int(bad[0][0])}: {what} holds NaN or inf; "
                                "a calibration needs finite data (drop that episode, or fix the sensor)")
        obs.append(o)
        acts.append(a)
    return Recording(obs, acts)


class CalibrationProblem:
    """Residuals of the recorded windows for a vector of scales (and observation biases) at one delay.

    Args:
        spec: the task (its model, frame skip and ``calibration`` state mapping).
        recording: the target data.
        params: the fitted scales.
        window: control steps per shooting window.
        max_delay: the largest delay any candidate uses (windows start late enough to have its commands).
        obs_bias: also fit a constant bias per observation dimension.
        threads: rollout threads.
        scale: the spread each observation dimension is divided by (default: the data's own); a part of a
            data set is weighed as the whole was.
        min_windows: refuse data with fewer than ``MIN_WINDOWS_PER_PARAM`` windows per parameter.
    """

    def __init__(self, spec: TaskSpec, recording: Recording, params: list[CalibrationParam], window: int | None = None,
                 max_delay: int = 3, obs_bias: bool = False, threads: int | None = None,
                 scale: np.ndarray | None = None, min_windows: bool = True):
        if spec.calibration is None:
            raise SpecError(f"{spec.path}: calibration: missing; a calibration needs the spec's state mapping "
                            "(calibration: {qpos_skip: ..., qvel_clip: ...})")
        env = gym.make(spec.env_id, **spec.env_kwargs)
        base = env.unwrapped
        self.model = copy.deepcopy(base.model)
        self.frame_skip = int(base.frame_skip)
        env.close()
        window = window or spec.calibration.window
        self.spec, self.params, self.window, self.obs_bias = spec, params, window, obs_bias
        self.skip, self.clip = spec.calibration.qpos_skip, spec.calibration.qvel_clip
        self.smoothing = spec.calibration.start_smoothing
        m = self.model
        self.nq, self.nv, self.nu = m.nq, m.nv, m.nu
        obs_dim = self.nq - self.skip + self.nv
        if recording.observations and recording.observations[0].shape[1] != obs_dim:
            raise SpecError(f"{spec.path}: calibration.qpos_skip {self.skip}: the state mapping gives {obs_dim} "
                            f"observation entries; the data have {recording.observations[0].shape[1]}")
        self.obs_dim = obs_dim
        self.physics = PhysicsModel(self.model)
        self.physics_params = [p for p in params if not p.is_effect]
        self._slots = [self.physics.resolve(p.field, p.names)[1] for p in self.physics_params]
        self._saturation = next((i for i, p in enumerate(params) if p.is_effect), None)
        limited = self.model.actuator_ctrllimited.astype(bool)
        self._ctrl_low = np.where(limited, self.model.actuator_ctrlrange[:, 0], -np.inf)
        self._ctrl_high = np.where(limited, self.model.actuator_ctrlrange[:, 1], np.inf)
        self.recorded_steps = recording.steps
        self._starts, self._targets, self._actions = self._cut(recording, max_delay)
        if min_windows and len(self._starts) < MIN_WINDOWS_PER_PARAM * max(1, len(params)):
            raise SpecError(f"too little data: {recording.steps} steps make {len(self._starts)} windows of "
                            f"{window}; {len(params)} parameters need at least "
                            f"{MIN_WINDOWS_PER_PARAM * max(1, len(params))} (record more episodes, or shorten --window)")
        spread = np.concatenate(recording.observations).std(axis=0)
        self.scale = np.maximum(spread, 1e-3) if scale is None else np.asarray(scale, dtype=np.float64)
        self.max_delay = max_delay
        self._threads = threads or max(1, min(4, os.cpu_count() or 1))
        self._pool = mujoco.rollout.Rollout(nthread=self._threads if self._threads > 1 else 0)
        self._datas = [mujoco.MjData(m) for _ in range(max(1, self._threads))]
        self._unbiased_starts = self._initial_states(self._starts)

    # -- data ---------------------------------------------------------------------------------

    def _cut(self, rec: Recording, max_delay: int):
        """Window starts (recorded observation), the observations to predict and the command history."""
        w, starts, targets, actions = self.window, [], [], []
        k = self.nq - self.skip  # position entries of an observation
        for obs, act in zip(rec.observations, rec.actions):
            # Commands before the episode are zero (a delay line starts empty, as worlds.effects.ActionDelay does).
            padded = np.concatenate([np.zeros((max_delay, self.nu)), act])
            # A clipped velocity is not the state: a window started from it replays the wrong motion, and the fit
            # bends the physics to explain that. Windows start only where every velocity is inside the clip (by a
            # margin for sensor noise); the predicted observations are clipped as the recorded ones were. Measured
            # on Walker2d `real` (40% of its steps have a foot speed at the clip): without this, its friction came
            # out +11% off from noise-free data and +34% from noisy data.
            known = np.all(self._unclipped(obs[:, k:]), axis=1)
            carried = self._carried_positions(obs) if self.smoothing else None
            for t0 in _window_starts(known, len(act), w):
                start = obs[t0].copy()
                if carried is not None:
                    start[:k] = carried[t0]
                elif t0 > 0:
                    # Sensor noise in a start state is an error the fit cannot explain and pushes the parameters
                    # off (a centimetre into the floor is a large contact force). Positions are smooth in time,
                    # so the mean of three samples cuts that noise (std x0.58) at a tiny curvature error;
                    # velocities jump at every impact and are used as recorded. Measured on Hopper `real`
                    # data: torso-mass error 17% -> 8% with 20-step windows.
                    start[:k] = obs[t0 - 1:t0 + 2, :k].mean(axis=0)
                starts.append(start)
                targets.append(obs[t0 + 1:t0 + w + 1])
                actions.append(padded[t0:t0 + max_delay + w])  # a[t0 - max_delay] .. a[t0 + w - 1]
        if not starts:
            return np.zeros((0, self.obs_dim)), np.zeros((0, w, self.obs_dim)), np.zeros((0, max_delay + w, self.nu))
        return np.array(starts), np.array(targets), np.array(actions)

    def _unclipped(self, velocities: np.ndarray) -> np.ndarray:
        """Which recorded velocities are surely inside the observation's clip (``CLIP_MARGIN``), entry by entry."""
        if self.clip is None:
            return np.ones(velocities.shape, dtype=bool)
        return np.abs(velocities) < CLIP_MARGIN * self.clip

    def _carried_positions(self, obs: np.ndarray) -> np.ndarray:
        """Each step's positions as the mean of ``2K+1`` neighbouring samples carried to it along the velocities.

        Sample ``t+j`` moved to ``t``: its position minus its own velocity integrated (trapezoid) from ``t`` to
        ``t+j``. Velocity noise integrated over a few control steps is far smaller than the position noise it
        averages out (Walker2d `real`, 0.01 on both: friction +12.2% with the 3-sample mean, +7.2% with K=4), but
        an impact between samples bends the integral (Hopper: friction -3.9% -> -8.3%), hence per task
        (``calibration.start_smoothing``). Fewer samples count where the window runs past an episode's edge or across
        a clipped velocity of that entry (those are left out, per entry: a foot at the clip keeps its own few).
        """
        k, K = self.nq - self.skip, self.smoothing
        if self.nq != self.nv:
            raise SpecError(f"{self.spec.path}: calibration.start_smoothing needs qpos and qvel of one size "
                            f"(hinge and slide joints); this model has nq {self.nq}, nv {self.nv}")
        dt = self.model.opt.timestep * self.frame_skip
        pos, vel = obs[:, :k], obs[:, k + self.skip:k + self.skip + k]  # each position entry's own velocity
        inside = self._unclipped(vel)
        step = np.vstack([np.zeros((1, k)), (vel[1:] + vel[:-1]) / 2 * dt])  # step[t] ~ pos[t] - pos[t-1]
        travelled = np.cumsum(step, axis=0)
        bad = np.cumsum(np.vstack([np.zeros((1, k), dtype=bool), ~(inside[1:] & inside[:-1])]), axis=0)
        out = pos.copy()
        for t in range(len(obs)):
            js = np.arange(max(0, t - K), min(len(obs), t + K + 1))
            usable = (bad[np.maximum(js, t)] - bad[np.minimum(js, t)]) == 0  # no clipped velocity in between
            weight = usable.astype(float)  # j = t always counts, so no entry is left without a sample
            moved = ((pos[js] - (travelled[js] - travelled[t])) * weight).sum(axis=0)
            out[t] = moved / weight.sum(axis=0)
        return out

    @property
    def n_windows(self) -> int:
        return len(self._starts)

    @property
    def n_params(self) -> int:
        return len(self.params) + (self.obs_dim if self.obs_bias else 0)

    @property
    def targets(self) -> np.ndarray:
        """The recorded observations each window predicts, ``(n_windows, window, obs_dim)``."""
        return self._targets

    def start_vector(self) -> np.ndarray:
        """Where a fit starts: the nominal model (scales 1), a motor just inside its bound, no bias."""
        start = [EFFECT_PARAMS.get(p.label, (1.0,))[0] for p in self.params]
        return np.array(start + ([0.0] * self.obs_dim if self.obs_bias else []), dtype=np.float64)

    def nominal_vector(self) -> np.ndarray:
        """The uncalibrated model: every scale 1, a motor reaching its full range, no bias."""
        return np.array([1.0] * len(self.params) + ([0.0] * self.obs_dim if self.obs_bias else []), dtype=np.float64)

    def labels(self) -> list[str]:
        return [p.label for p in self.params] + ([f"obs_bias/{i}" for i in range(self.obs_dim)] if self.obs_bias else [])

    # -- model --------------------------------------------------------------------------------

    def model_for(self, scales: np.ndarray) -> mujoco.MjModel:
        """A copy of the nominal model with ``scales`` written in."""
        self.physics.restore()
        for p, slots, s in zip(self.physics_params, self._slots, scales):
            for slot in slots:
                self.physics.write(p.field, slot, "scale", float(s))
        return copy.deepcopy(self.model)

    def _initial_states(self, starts: np.ndarray) -> np.ndarray:
        m, d = self.model, self._datas[0]
        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        out = np.empty((len(starts), mujoco.mj_stateSize(m, spec)))
        k = self.nq - self.skip
        for i, o in enumerate(starts):
            mujoco.mj_resetData(m, d)
            d.qpos[self.skip:] = o[:k]
            d.qvel[:] = o[k:]
            mujoco.mj_getState(m, d, out[i], spec)
        return out

    def predict(self, x: np.ndarray, delay: int) -> np.ndarray:
        """Predicted observations of every window, ``(n_columns, n_windows, window, obs_dim)``."""
        x = np.asarray(x, dtype=np.float64).reshape(self.n_params, -1)
        n_scales, n_win, w = len(self.params), self.n_windows, self.window
        cols = x.shape[1]
        a0 = self.max_delay - delay
        ctrl = np.repeat(self._actions[:, a0:a0 + w], self.frame_skip, axis=1)  # one row per physics step
        physics_idx = [i for i, p in enumerate(self.params) if not p.is_effect]
        models, starts, ctrls = [], [], []
        for c in range(cols):
            models += [self.model_for(x[physics_idx, c])] * n_win
            # Without a fitted bias the start states never change: built once, not per call and column.
            starts.append(self._initial_states(self._starts - x[n_scales:, c]) if self.obs_bias
                          else self._unbiased_starts)
            if self._saturation is not None:  # a fraction of each actuator's range, as worlds.effects.MotorLimits
                sat = x[self._saturation, c]
                ctrls.append(np.clip(ctrl, sat * self._ctrl_low, sat * self._ctrl_high))
            else:
                ctrls.append(ctrl)
        self.physics.restore()
        state, _ = self._pool.rollout(models, self._datas, np.concatenate(starts), np.concatenate(ctrls))
        state = state[:, self.frame_skip - 1::self.frame_skip]  # after each control step
        qpos = state[..., 1 + self.skip:1 + self.nq]
        qvel = state[..., 1 + self.nq:1 + self.nq + self.nv]
        if self.clip is not None:
            qvel = np.clip(qvel, -self.clip, self.clip)
        pred = np.concatenate([qpos, qvel], axis=-1).reshape(cols, n_win, w, self.obs_dim)
        if self.obs_bias:
            pred = pred + x[n_scales:].T[:, None, None, :]
        return pred

    def residual(self, x: np.ndarray, delay: int) -> np.ndarray:
        """Scaled prediction errors, ``(m,)`` for one point or ``(m, k)`` for k points (finite differences)."""
        x = np.asarray(x, dtype=np.float64)
        pred = self.predict(x, delay)
        r = ((pred - self._targets[None]) / self.scale).reshape(pred.shape[0], -1).T
        return r[:, 0] if x.ndim == 1 else r

    def close(self) -> None:
        self._pool.close()


@dataclass
class DelayFit:
    delay: int
    x: np.ndarray
    cost: float  # mean squared scaled residual
    jacobian: np.ndarray | None = None


@dataclass
class CalibrationResult:
    """What a calibration found; ``values``/``intervals`` are keyed by parameter label."""

    task: str
    labels: list[str]
    values: dict[str, float]
    intervals: dict[str, float]  # 95% half-widths
    delay: int
    delay_costs: dict[int, float]
    rms_before: float  # the nominal model, no delay
    rms_after: float
    n_windows: int
    window: int
    steps: int
    seconds: float = 0.0
    truth: dict[str, float] = field(default_factory=dict)
    world: str | None = None  # the spec target world the data were recorded on, when known
    # Each episode's fitted offset of the position sensors (removed from the data before the final fit).
    offsets: list[list[float]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {k: (v if not isinstance(v, np.ndarray) else v.tolist()) for k, v in self.__dict__.items()}


def fit(problem: CalibrationProblem, delays: list[int], max_iters: int = 50, scout_iters: int = 3,
        log=None, start: np.ndarray | None = None) -> CalibrationResult:
    """Fit the scales (and biases) at each candidate delay with ``mujoco.sysid``; keep the best delay.

    Every delay gets a short fit (``scout_iters``), which separates them clearly (a wrong delay leaves
    several times the residual); only the best one is fitted to convergence. On 10 Hopper episodes three
    scout iterations chose the same delay and values as eight, with 293 rollouts of the data instead of 763.
    ``start`` (a parameter vector) replaces the prior as the starting point.
    """
    sysid = _sysid()
    began = time.perf_counter()
    params = sysid.ParameterDict()
    for p in problem.params:
        first, low, high = EFFECT_PARAMS.get(p.label, (1.0, *SCALE_BOUNDS))
        params.add(sysid.Parameter(p.label, first, low, high))
    if problem.obs_bias:
        spread = problem.scale
        params.add(sysid.Parameter("obs_bias", np.zeros(problem.obs_dim), -spread, spread))
    if start is not None:
        params.update_from_vector(np.clip(start, *params.get_bounds()))
    before = problem.residual(problem.nominal_vector(), 0)

    def run(start: sysid.ParameterDict, d: int, iters: int) -> DelayFit:
        def residual_fn(x, _params):
            return [problem.residual(x, d)], None, None
        out = io.StringIO()  # the backend prints every iteration; it goes nowhere instead of the terminal
        # xtol: scales settle to 1e-5 relative long before the default 1e-8, and every iteration costs
        # n_params + 1 rollouts of the whole data set.
        with _refit_notes_dropped():
            opt, result = sysid.optimize(start, residual_fn, optimizer="mujoco", verbose=False, max_iters=iters,
                                         output=out, xtol=XTOL, mu_factor=MU_FACTOR)
        x = opt.as_vector()
        r = problem.residual(x, d)
        found = DelayFit(d, x, float(np.mean(r ** 2)), np.asarray(result.jac))
        if log is not None:
            log(f"delay {d} ({iters} iterations): mean squared residual {found.cost:.4g}  " +
                "  ".join(f"{lab} {v:.3f}" for lab, v in zip(problem.labels(), x)))
        return found

    scouts = {d: run(params, d, scout_iters if len(delays) > 1 else max_iters) for d in delays}
    best = min(scouts.values(), key=lambda f: f.cost)
    if len(delays) > 1:
        refined = params.copy()
        refined.update_from_vector(best.x)
        best = run(refined, best.delay, max_iters)
        scouts[best.delay] = best
    fits = list(scouts.values())
    r_best = problem.residual(best.x, best.delay)
    _, half = sysid.calculate_intervals([r_best], best.jacobian)
    labels = problem.labels()
    return CalibrationResult(
        task=problem.spec.name, labels=labels,
        values={lab: float(v) for lab, v in zip(labels, best.x)},
        intervals={lab: float(h) for lab, h in zip(labels, half)},
        delay=best.delay, delay_costs={f.delay: f.cost for f in fits},
        rms_before=float(np.sqrt(np.mean(before ** 2))), rms_after=float(np.sqrt(np.mean(r_best ** 2))),
        n_windows=problem.n_windows, window=problem.window, steps=problem.recorded_steps,
        seconds=time.perf_counter() - began)


def episode_offsets(problem: CalibrationProblem, recording: Recording, scales: np.ndarray, delay: int,
                    max_iters: int = 20) -> np.ndarray:
    """Each episode's constant offset of the position sensors, with the physics held at ``scales``.

    A sensor whose zero moves between sessions (an encoder homed again, an IMU mounted anew) adds the same
    error to every window start of an episode; a centimetre of height puts a foot into the floor. The fit
    cannot explain it and bends the physics instead: on Hopper ``real`` (offsets of std 0.01) the friction
    scale came out at 0.31 for a truth of 0.7 with the offsets alone. One small fit per episode
    (``mujoco.sysid``, only that episode's windows) finds them; velocities are left alone (an offset there
    barely moves a window). Returns ``(episodes, position entries)``.
    """
    sysid = _sysid()
    k = problem.nq - problem.skip
    spread = problem.scale[:k]
    pad = problem.obs_dim - k  # velocity entries: no offset
    out = np.zeros((len(recording.actions), k))
    for i in range(len(recording.actions)):
        part = CalibrationProblem(problem.spec, recording.episode(i), problem.params, window=problem.window,
                                  max_delay=problem.max_delay, obs_bias=True, threads=problem._threads,
                                  scale=problem.scale, min_windows=False)
        if part.n_windows == 0:  # shorter than one window: nothing in it to fit, nothing used from it
            part.close()
            continue

        def residual_fn(x, _params, part=part):
            x = np.asarray(x, dtype=np.float64)
            cols = x.reshape(k, -1)
            full = np.concatenate([np.repeat(scales[:, None], cols.shape[1], 1), cols,
                                   np.zeros((pad, cols.shape[1]))])
            return [part.residual(full if x.ndim > 1 else full[:, 0], delay)], None, None

        try:
            offsets = sysid.ParameterDict()
            offsets.add(sysid.Parameter("offset", np.zeros(k), -spread, spread))
            opt, _ = sysid.optimize(offsets, residual_fn, optimizer="mujoco", verbose=False, max_iters=max_iters,
                                    output=io.StringIO(), xtol=XTOL, mu_factor=MU_FACTOR)
        finally:
            part.close()
        out[i] = opt.as_vector()
    return out
