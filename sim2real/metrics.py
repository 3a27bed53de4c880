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

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

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


def iqm_interval(scores: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Interquartile mean of ``scores`` (one per run) with a 95% stratified-bootstrap interval."""
    from rliable import library as rly
    from rliable import metrics

    scores = np.asarray(scores, dtype=float).reshape(-1, 1)
    with _quiet_rliable():
        point, interval = rly.get_interval_estimates(
            {"x": scores}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=reps,
            random_state=np.random.RandomState(seed),
        )
    return float(point["x"][0]), float(interval["x"][0, 0]), float(interval["x"][1, 0])


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """P(a run of X beats a run of Y), with a 95% stratified-bootstrap interval."""
    from rliable import library as rly
    from rliable import metrics

    xs = np.asarray(x, dtype=float).reshape(-1, 1)
    ys = np.asarray(y, dtype=float).reshape(-1, 1)
    with _quiet_rliable():
        point, interval = rly.get_interval_estimates(
            {"p": [xs, ys]}, lambda a, b: np.array([metrics.probability_of_improvement(a, b)]), reps=reps,
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
