"""Does warming up the critic before the actor moves help PPO fine-tuning? Measured, side by side.

Usage: python scripts/critic_warmup.py POLICY --target real [--warmup 5] [--seeds 3] [--budget small]

Runs `finetune` with and without ``--critic-warmup`` on the same seeds and budget and
prints final returns and the probability that warm-up improves the final return.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sim2real.metrics import probability_of_improvement  # noqa: E402
from sim2real.report import read_curve  # noqa: E402
from sim2real.transfer.run import TransferConfig, transfer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("policy")
    p.add_argument("--target", default="real")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", default="small")
    p.add_argument("--out", default="runs/critic_warmup")
    args = p.parse_args()
    finals: dict[int, list[float]] = {0: [], args.warmup: []}
    for warmup in finals:
        for seed in range(args.seeds):
            out = Path(args.out) / f"warmup{warmup}" / f"s{seed}"
            if not (out / "result.json").exists():
                transfer(TransferConfig(policy=args.policy, target=args.target, strategy="finetune", budget=args.budget,
                                        seed=seed, critic_warmup=warmup), out=out, quiet=True)
            finals[warmup].append(read_curve(out).final())
    p_imp, lo, hi = probability_of_improvement(finals[args.warmup], finals[0])
    result = {"target": args.target, "budget": args.budget, "final_returns": {str(k): v for k, v in finals.items()},
              "p_warmup_better": [p_imp, lo, hi]}
    print(json.dumps(result, indent=2))
    print(f"finetune final return: no warm-up {np.mean(finals[0]):.1f}, {args.warmup} warm-up updates "
          f"{np.mean(finals[args.warmup]):.1f}; P(warm-up better) = {p_imp:.2f} [{lo:.2f}, {hi:.2f}]")


if __name__ == "__main__":
    main()
