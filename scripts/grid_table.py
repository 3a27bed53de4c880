"""Print the four-case grid as one Markdown table, from the studies' metrics.json files.

Usage: python scripts/grid_table.py docs/results/hopper-grid-small docs/results/hopper-grid-large
(the README's grid table is this script's output)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STRATEGIES = ["freeze", "reinit-top", "finetune", "full", "calibrate", "scratch"]


def cell(m: dict | None) -> str:
    if m is None:
        return "-"
    lo, hi = m["final_return_ci95"]
    return f"{m['final_return_iqm']:,.0f} [{lo:,.0f}, {hi:,.0f}]"


def main() -> None:
    print("| budget | target | case → recommended | zero-shot | " + " | ".join(STRATEGIES) + " | best measured | held? |")
    print("|---|---|---|---|" + "---|" * len(STRATEGIES) + "---|---|")
    for folder in sys.argv[1:]:
        m = json.loads((Path(folder) / "metrics.json").read_text())
        for target, t in m["targets"].items():
            s = t["strategies"]
            case, verdict = t["case"], t["verdict"]
            held = ("not run" if case["recommended"] not in s
                    else "within noise" if verdict.get("agrees") and verdict.get("best_measured") != case["recommended"]
                    else "yes" if verdict.get("agrees") else "no")
            print(f"| {m['budget_steps']:,} | {target} | {case['case']} → {case['recommended']} | "
                  f"{t['zero_shot_return']:,.0f} | " + " | ".join(cell(s.get(k)) for k in STRATEGIES) +
                  f" | {verdict.get('best_measured', '-')} | {held} |")


if __name__ == "__main__":
    main()
