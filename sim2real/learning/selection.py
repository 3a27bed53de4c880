"""Which checkpoint of a run is "the" policy: a selection rule applied to its evaluations.

A pretraining run evaluates its policy every so often on named worlds and logs every episode's return
(``evaluations_episodes.jsonl``). ``best.zip`` is chosen while the run goes, by the rule given to ``pretrain``
(``--select-on``, ``--select-stat``, ``--select-floor``). :func:`pick` applies a rule to the log afterwards, so
another rule, fixed before looking at the target, can be applied to a finished run: with ``--keep-evaluated``
every evaluated policy is still there (``evaluated/step_<N>.zip``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EPISODES_LOG = "evaluations_episodes.jsonl"  # one line per evaluation: each episode's return, length (and draws), per world

# How an evaluation's episode returns rank a checkpoint. The median counts an episode in which the policy falls
# at once (a hard corner of the ranges) as one bad episode, not by how far it pulls the mean down.
SELECT_STATS: dict[str, Callable[[list[float]], float]] = {
    "mean": lambda returns: float(np.mean(returns)),
    "median": lambda returns: float(np.median(returns)),
}


@dataclass(frozen=True)
class Rule:
    """Best ``stat`` of ``world``'s episode returns among evaluations whose ``floor_world`` mean is >= ``floor``.

    Ties go to the later evaluation; step 0 (the starting point, not a trained policy) is never picked.
    """

    world: str = "sim"
    stat: str = "mean"
    floor_world: str = "nominal"
    floor: float | None = None

    def __post_init__(self):
        if self.stat not in SELECT_STATS:
            raise ValueError(f"stat {self.stat!r}: allowed: {', '.join(SELECT_STATS)}")

    def value(self, evaluation: dict) -> float:
        return SELECT_STATS[self.stat](evaluation["returns"][self.world])

    def admits(self, evaluation: dict) -> bool:
        if evaluation["step"] <= 0:
            return False
        return self.floor is None or float(np.mean(evaluation["returns"][self.floor_world])) >= self.floor


def read_episode_log(run_dir: str | Path) -> list[dict]:
    """A run's evaluations in step order (``{"step", "returns": {world: [...]}, "lengths": {...}}``)."""
    path = Path(run_dir) / EPISODES_LOG
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; a pretrain run logs every evaluation's episodes there (runs made "
                                f"before that log existed have only evaluations.csv, the means)")
    by_step: dict[int, dict] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {n}: not JSON ({exc.msg}); a run killed mid-write leaves at most "
                             f"its last line broken: delete that line") from None
        if not isinstance(entry, dict) or not {"step", "returns"} <= set(entry):
            raise ValueError(f"{path}, line {n}: an evaluation record needs 'step' and 'returns'")
        by_step[entry["step"]] = entry  # a resumed run moves re-measured steps aside; the last one counts
    return [by_step[s] for s in sorted(by_step)]


def pick(log: list[dict], rule: Rule) -> dict | None:
    """The evaluation ``rule`` selects (None if none clears the floor)."""
    worlds = set(log[0]["returns"]) if log else set()
    for needed in {rule.world, *([rule.floor_world] if rule.floor is not None else [])}:
        if log and needed not in worlds:
            raise ValueError(f"world {needed!r} was not evaluated in this run; evaluated: {', '.join(sorted(worlds))}")
    best = None
    for evaluation in log:
        if rule.admits(evaluation) and (best is None or rule.value(evaluation) >= rule.value(best)):
            best = evaluation
    return best
