"""Where in the randomisation ranges a policy loses its return.

Every evaluation in the randomised sim logs each episode's draws beside its return
(``evaluations_episodes.jsonl``). Ranked against the returns, they say which parameters the policy is sensitive
to: a strong negative correlation with torso mass, say, means heavy bodies are where it falls. That is what to
look at before widening a range, weighting the sampling, or asking why a target world is hard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sensitivity:
    param: str
    low: float  # the lowest and highest draw among the episodes
    high: float
    rho: float  # Spearman rank correlation of the draw with the episode return (nan for a constant draw)
    thirds: tuple[float, float, float]  # mean return of the episodes with the lowest, middle and highest draws


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, tied values sharing their mean rank (integer draws such as delays tie)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = average_ranks(x), average_ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def episodes_with_draws(evaluations: list[dict], world: str) -> tuple[int, int]:
    """(episodes, distinct worlds among them): a run seeds its evaluations alike, so pooled ones repeat worlds."""
    draws = [d for e in evaluations for d in (e.get("draws") or {}).get(world) or []]
    return len(draws), len({tuple(sorted(d.items())) for d in draws})


def noise_level(distinct_worlds: int) -> float:
    """Rank correlations below this are within two standard errors of none (about 1/sqrt(n - 1) each)."""
    return 2.0 / np.sqrt(max(distinct_worlds - 1, 1))


def sensitivities(evaluations: list[dict], world: str = "sim") -> list[Sensitivity]:
    """Each randomised parameter's relation to the return, over the episodes of ``evaluations`` in ``world``.

    Sorted by the strength of the correlation, strongest first.
    """
    returns, draws = [], []
    for e in evaluations:
        episode_draws = (e.get("draws") or {}).get(world)
        if not episode_draws:
            continue
        returns += e["returns"][world]
        draws += episode_draws
    if len(draws) < 3:
        raise ValueError(f"fewer than 3 episodes in {world!r} with their draws logged (only a randomised world, "
                         f"one that reports info['randomization'] at reset, has draws)")
    y = np.asarray(returns, dtype=float)
    out = []
    # Evaluations pooled across a change of the spec may draw different parameters: those all of them drew.
    params = [p for p in draws[0] if all(p in d for d in draws)]
    for param in params:
        x = np.asarray([d[param] for d in draws], dtype=float)
        order = np.argsort(x, kind="mergesort")
        parts = np.array_split(order, 3)
        thirds = tuple(float(y[p].mean()) for p in parts)
        out.append(Sensitivity(param, float(x.min()), float(x.max()), spearman(x, y), thirds))
    return sorted(out, key=lambda s: -abs(s.rho) if np.isfinite(s.rho) else 0.0)
