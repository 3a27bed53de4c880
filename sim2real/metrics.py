"""Transfer metrics (Taylor & Stone 2009) and interval estimates across seeds (rliable, Agarwal et al. 2021).

All curves are evaluations on the target world with x = target environment steps.

* zero-shot return: the pretrained policy on the target, no target training.
* jumpstart: transfer return at step 0 minus scratch return at step 0.
* asymptotic gain: final return (mean of the last ``k`` evaluations), transfer minus scratch.
* area ratio: (area under the transfer curve - area under the scratch curve) / area under the scratch curve.
* time to threshold: target steps until the curve first reaches the threshold
  (default 90% of scratch's final return); speed-up = scratch's time / transfer's time.
* across seeds: interquartile mean (IQM) with 95% stratified-bootstrap intervals, and the
  probability that a run of the strategy beats a run of scratch (Mann-Whitney statistic).
* sim-to-real gap: return in the nominal sim minus the zero-shot return on the target.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Time to threshold: target steps until a curve reaches this fraction of scratch's final return.
# The one place this default lives; configs, the CLI and the report read it from here.
THRESHOLD_FRACTION = 0.9

FINAL_K = 3  # evaluations averaged for the "final" return


@dataclass
class Curve:
    """One run's evaluation curve on the target."""

    steps: np.ndarray
    returns: np.ndarray

    def __post_init__(self):
        self.steps = np.asarray(self.steps, dtype=float)
        self.returns = np.asarray(self.returns, dtype=float)
        if self.steps.shape != self.returns.shape or self.steps.size == 0:
            raise ValueError("a curve needs as many steps as returns, and at least one point")

    @property
    def start(self) -> float:
        return float(self.returns[0])

    def final(self, k: int = FINAL_K) -> float:
        return float(np.mean(self.returns[-k:]))


def area_under_curve(curve: Curve, until: float | None = None) -> float:
    """Trapezoidal area under the curve, from step 0 to ``until`` (default: its last step).

    A curve that stops early (zero-shot: one point) is held flat at its last value.
    """
    until = float(curve.steps[-1]) if until is None else until
    x, y = curve.steps, curve.returns
    if x[-1] < until:
        x, y = np.append(x, until), np.append(y, y[-1])
    keep = x <= until
    x, y = x[keep], y[keep]
    if x.size == 1:
        return float(y[0] * until)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def area_ratio(transfer: Curve, scratch: Curve) -> float:
    """(A_transfer - A_scratch) / |A_scratch| over the same step range; nan when scratch's area is 0."""
    until = max(float(transfer.steps[-1]), float(scratch.steps[-1]))
    a_t, a_s = area_under_curve(transfer, until), area_under_curve(scratch, until)
    return (a_t - a_s) / abs(a_s) if a_s != 0 else math.nan


def time_to_threshold(curve: Curve, threshold: float) -> float | None:
    """First step at which the curve reaches ``threshold``; None if it never does."""
    hit = np.flatnonzero(curve.returns >= threshold)
    return float(curve.steps[hit[0]]) if hit.size else None


def speedup(t_transfer: float | None, t_scratch: float | None) -> float | None:
    """scratch / transfer time to threshold; inf when transfer starts there; None when either never gets there."""
    if t_transfer is None or t_scratch is None:
        return None
    if t_transfer == 0:
        return math.inf if t_scratch > 0 else 1.0
    return t_scratch / t_transfer


def mean_curve(curves: list[Curve]) -> Curve:
    """Average curves evaluated at the same steps (runs of one strategy); shorter curves are truncated."""
    n = min(c.steps.size for c in curves)
    return Curve(curves[0].steps[:n], np.mean([c.returns[:n] for c in curves], axis=0))


# ---------------------------------------------------------------- across seeds (rliable)


@contextmanager
def _quiet_rliable():
    """rliable hands arch a RandomState, which arch (7.x) answers with a FutureWarning per call; the seeded
    results are what we want, the warning is noise in the user's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"arch\.")
        yield


def _iqm(scores: np.ndarray) -> float:
    """rliable's ``aggregate_iqm`` (scipy's ``trim_mean`` at 25%) with the same operations, without scipy's
    per-call argument handling: the bootstrap calls it thousands of times."""
    a = np.ravel(scores)
    cut = int(0.25 * a.size)
    return float(np.mean(np.partition(a, (cut, a.size - cut - 1))[cut:a.size - cut]))


def _prob_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """rliable's ``probability_of_improvement`` (Mann-Whitney U / (m n), averaged over tasks) as one
    comparison of every pair: the same number, a hundred times faster than ``scipy.stats.mannwhitneyu``."""
    wins = (x[:, None, :] > y[None, :, :]).sum(axis=(0, 1)) + 0.5 * (x[:, None, :] == y[None, :, :]).sum(axis=(0, 1))
    return float(np.mean(wins / (x.shape[0] * y.shape[0])))


def score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """rliable's ``score_distributions`` (the fraction of runs above each tau) in one comparison instead of
    ``np.vectorize`` over taus: for ``create_performance_profile(custom_profile_func=...)``."""
    return (np.ravel(scores)[:, None] > np.asarray(taus)[None, :]).mean(axis=0)


# Bootstrap estimates already computed for a study, keyed by their inputs: rebuilding a report whose runs did not
# change reuses them instead of importing rliable (and arch) and resampling again. Set by `bootstrap_cache`.
_CACHE: dict | None = None


@contextmanager
def bootstrap_cache(path: Path):
    """Read the cache file, let the estimates inside the block use it, write it back with what they added."""
    global _CACHE
    try:
        _CACHE = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        _CACHE = {}  # a damaged cache is only lost time: recompute
    before = len(_CACHE)
    try:
        yield
        if len(_CACHE) != before:
            from sim2real.files import atomic_write_text

            atomic_write_text(path, json.dumps(_CACHE))
    finally:
        _CACHE = None


def _key(kind: str, inputs: list) -> str:
    return kind + ":" + hashlib.sha256(json.dumps([repr(x) for x in inputs]).encode()).hexdigest()


def cached(kind: str, inputs: list, compute):
    """``compute()``, or its earlier answer for exactly these inputs (floats compared bit for bit)."""
    if _CACHE is None:
        return compute()
    key = _key(kind, inputs)
    if key not in _CACHE:
        _CACHE[key] = compute()
    return _CACHE[key]


def seen_before(kind: str, inputs: list) -> bool:
    """True when an earlier report recorded exactly these ``inputs`` under ``kind`` (a figure drawn from the
    same numbers need not be drawn again); records them for the next one."""
    if _CACHE is None:
        return False
    key = _key(kind, inputs)
    seen = key in _CACHE
    _CACHE[key] = True
    return seen


def iqm_interval(scores: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Interquartile mean of ``scores`` (one per run) with a 95% stratified-bootstrap interval."""
    scores = np.asarray(scores, dtype=float)
    return tuple(cached("iqm", [scores.tolist(), reps, seed], lambda: _iqm_interval(scores, reps, seed)))


def _iqm_interval(scores: np.ndarray, reps: int, seed: int) -> tuple[float, float, float]:
    from rliable import library as rly

    scores = np.asarray(scores, dtype=float).reshape(-1, 1)
    with _quiet_rliable():
        point, interval = rly.get_interval_estimates(
            {"x": scores}, lambda s: np.array([_iqm(s)]), reps=reps,
            random_state=np.random.RandomState(seed),
        )
    return float(point["x"][0]), float(interval["x"][0, 0]), float(interval["x"][1, 0])


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """P(a run of X beats a run of Y), with a 95% stratified-bootstrap interval."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return tuple(cached("p_improve", [x.tolist(), y.tolist(), reps, seed],
                        lambda: _probability_of_improvement(x, y, reps, seed)))


def _probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int, seed: int) -> tuple[float, float, float]:
    from rliable import library as rly

    xs = np.asarray(x, dtype=float).reshape(-1, 1)
    ys = np.asarray(y, dtype=float).reshape(-1, 1)
    with _quiet_rliable():
        point, interval = rly.get_interval_estimates(
            {"p": [xs, ys]}, lambda a, b: np.array([_prob_improvement(a, b)]), reps=reps,
            random_state=np.random.RandomState(seed),
        )
    return float(point["p"][0]), float(interval["p"][0, 0]), float(interval["p"][1, 0])


# ---------------------------------------------------------------- one target x strategy against scratch


def strategy_metrics(
    curves: list[Curve],
    scratch: list[Curve] | None,
    threshold_fraction: float = THRESHOLD_FRACTION,
    threshold: float | None = None,
) -> dict:
    """Every metric of one strategy's runs (one curve per seed) against scratch's runs."""
    finals = np.array([c.final() for c in curves])
    iqm, lo, hi = iqm_interval(finals)
    out: dict = {
        "seeds": len(curves),
        "start_return": float(np.mean([c.start for c in curves])),
        "final_return_mean": float(finals.mean()),
        "final_return_iqm": iqm,
        "final_return_ci95": [lo, hi],
        "final_returns": finals.tolist(),
        "auc": float(np.mean([area_under_curve(c) for c in curves])),
    }
    if not scratch:
        return out
    s_mean, t_mean = mean_curve(scratch), mean_curve(curves)
    thr = threshold if threshold is not None else threshold_fraction * s_mean.final()
    s_finals = np.array([c.final() for c in scratch])
    t_ttt, s_ttt = time_to_threshold(t_mean, thr), time_to_threshold(s_mean, thr)
    p, p_lo, p_hi = probability_of_improvement(finals, s_finals)
    out.update(
        jumpstart=t_mean.start - s_mean.start,
        asymptotic_gain=t_mean.final() - s_mean.final(),
        area_ratio=area_ratio(t_mean, s_mean),
        threshold=thr,
        time_to_threshold=t_ttt,
        scratch_time_to_threshold=s_ttt,
        speedup=speedup(t_ttt, s_ttt),
        prob_improvement=p,
        prob_improvement_ci95=[p_lo, p_hi],
    )
    return out
