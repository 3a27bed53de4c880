"""The four cases: place a target by budget and similarity, measured, and name the textbook strategy."""

from __future__ import annotations

from dataclasses import dataclass

from sim2real.spec import TaskSpec
from sim2real.transfer.strategies import CASE_STRATEGY

# Zero-shot return / nominal-sim return below this counts as a different task: the pretrained policy
# no longer does a recognisable part of the job, so its upper layers are treated as not carrying over.
# The one place this default lives; configs, the CLI and the report read it from here.
SIMILARITY_THRESHOLD = 0.25


@dataclass
class CaseDecision:
    case: int
    strategy: str
    large_budget: bool
    similar: bool
    budget: int
    zero_shot: float
    sim_return: float
    task_changed: bool
    reason: str


def classify(spec: TaskSpec, budget: int, sim_return: float, zero_shot: float, task_changed: bool,
             similarity_threshold: float = SIMILARITY_THRESHOLD) -> CaseDecision:
    """Place a target in one of the four cases from measured quantities.

    * budget: large if at least halfway from the spec's small to its large budget;
    * similar: the task's reward is unchanged and the zero-shot return keeps at
      least ``similarity_threshold`` of the sim return (default 25%: the pretrained
      policy still does a recognisable part of the job; below that, the shift is
      large enough that its upper layers are treated as not carrying over).
    """
    threshold_budget = (spec.budgets.small + spec.budgets.large) / 2
    large = budget >= threshold_budget
    ratio = zero_shot / sim_return if sim_return > 0 else 0.0
    similar = (not task_changed) and ratio >= similarity_threshold
    case = {(False, True): 1, (False, False): 2, (True, True): 3, (True, False): 4}[(large, similar)]
    reason = (
        f"budget {budget:,} steps is {'large' if large else 'small'} (threshold {threshold_budget:,.0f}); "
        f"zero-shot return {zero_shot:.1f} is {ratio:.0%} of the sim return {sim_return:.1f}"
        f"{' and the task variant changes the reward' if task_changed else ''}: "
        f"{'similar' if similar else 'different'} task -> case {case} -> {CASE_STRATEGY[case]}"
    )
    return CaseDecision(case, CASE_STRATEGY[case], large, similar, budget, zero_shot, sim_return, task_changed, reason)
