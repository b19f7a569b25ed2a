#!/usr/bin/env bash
# The runs behind results/classify and results/translit: two queues side by side (2 shared cores),
# each run on one thread at nice 10. Usage: bash results/run_tasks.sh classify|translit
set -euo pipefail
cd "$(dirname "$0")/.."
case "$1" in
  classify) for seed in 1 2 3; do for cell in lstm sharpened g2lstm; do
      nice -n 10 python experiments/train_classifier.py experiment=rt_small model.cell=$cell seed=$seed \
        hydra.run.dir=runs/classify/rt_small_${cell}_s${seed}; done; done ;;
  translit) for seed in 1 2; do for cell in lstm sharpened g2lstm; do
      nice -n 10 python experiments/train_translit.py experiment=nt_small model.cell=$cell seed=$seed \
        hydra.run.dir=runs/translit/nt_small_${cell}_s${seed}; done; done ;;
  *) echo "usage: $0 classify|translit" >&2; exit 2 ;;
esac
