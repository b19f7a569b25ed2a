#!/usr/bin/env bash
# The runs behind results/classify and results/translit, one after another, each on one thread at
# nice 10 (two of these queues ran side by side on the 2 shared cores).
# Usage: bash results/run_tasks.sh classify|translit EXPERIMENT "SEEDS" ["CELLS"]
#   e.g. bash results/run_tasks.sh classify rt_small "1 2 3"; bash results/run_tasks.sh translit nt_cpu "1 2"
set -euo pipefail
cd "$(dirname "$0")/.."
task=$1 experiment=$2 seeds=$3 cells=${4:-lstm sharpened g2lstm}
entry=$([ "$task" = classify ] && echo train_classifier.py || echo train_translit.py)
for seed in $seeds; do for cell in $cells; do
  nice -n 10 python experiments/$entry experiment=$experiment model.cell=$cell seed=$seed \
    hydra.run.dir=runs/$task/${experiment}_${cell}_s${seed}
done; done
