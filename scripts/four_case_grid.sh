#!/usr/bin/env bash
# The four-case grid on Hopper: small and large target budgets x a similar ('real') and a
# different ('real_backwards') task, every strategy, 3 seeds. About two hours on 2 cores.
# Results land in docs/results/hopper-grid-{small,large}/ (metrics.json, report.md, report.html).
set -euo pipefail
cd "$(dirname "$0")/.."
for budget in small large; do
  sim2real study hopper --targets real real_backwards \
    --strategies zero-shot freeze reinit-top finetune full scratch \
    --seeds 3 --budget "$budget" --out "runs/study/hopper-grid-$budget"
  mkdir -p "docs/results/hopper-grid-$budget"
  cp runs/study/hopper-grid-$budget/{metrics.json,report.md,report.html,study.json,pretrained.json,*.png} \
     "docs/results/hopper-grid-$budget/"
done
