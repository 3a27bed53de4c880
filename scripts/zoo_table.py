"""Print the policy zoo as a Markdown table, from the measured model cards (policies/*/card.json).

Usage: python scripts/zoo_table.py     (the README's zoo table is this script's output)
"""

from __future__ import annotations

import json
from pathlib import Path

ZOO = Path(__file__).resolve().parent.parent / "policies"


def _start(card: dict, entry: str) -> str:
    """Where a curriculum started: a nominal run, another zoo entry, or this entry's previous version."""
    init = card.get("init_from")
    if not init:
        return ""
    parts = Path(init).parts
    if parts[0] != "policies":
        return " (from the nominal run)" if "nominal" in init else f" (from `{init}`)"
    return " (from the previous entry)" if parts[1] == entry else f" (from `{parts[1]}`)"


def main() -> None:
    paths = sorted(ZOO.glob("*/card.json"))
    cards = [{**json.loads(p.read_text()), "entry": p.parent.name} for p in paths]
    print("| policy | steps | nominal sim | bar (80% of zoo) | " + "zero-shot on the target worlds |")
    print("|---|---|---|---|---|")
    for c in cards:
        kind = "DR" if c["randomized"] else "nominal"
        bar = c.get("solved_return")
        verdict = "" if not bar else (" ✓" if c["nominal_return"] >= bar else " ✗")
        targets = ", ".join(f"{w} {r['mean']:,.0f}" for w, r in c["returns"].items() if w != "nominal")
        steps = f"{c['steps_trained']:,}" + _start(c, c["entry"])
        name = f"{c['task']} {kind}"
        if c["entry"] != f"{c['task']}-{'dr' if c['randomized'] else 'nominal'}":
            name += f" (`{c['entry']}`)"  # a second entry of the same kind: say which folder
        print(f"| {name} | {steps} | {c['nominal_return']:,.0f}{verdict} | "
              f"{f'{bar:,.0f}' if bar else '-'} | {targets} |")


if __name__ == "__main__":
    main()
