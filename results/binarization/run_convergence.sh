#!/usr/bin/env bash
# Issue 23's convergence study, as queues of runs that resume by their folder: run it again after an
# interruption and every finished run is left as it is, every unfinished one goes on from last.pt.
# Usage: bash results/binarization/run_convergence.sh translit "SEEDS"   (two queues: one per seed)
set -uo pipefail
cd "$(dirname "$0")/../.."
task=$1 seeds=$2
runs=runs/converge/$task
for seed in $seeds; do (
  case $task in
    translit)
      for args in "model.cell=lstm" "model.cell=sharpened" "model.cell=g2lstm" "recipe=binary"; do
        name=$(echo "$args" | tr -c 'a-z0-9\n' '_')
        nice -n 10 python experiments/train_translit.py experiment=converge_translit $args seed=$seed \
          hydra.run.dir=$runs/${name}_s$seed
      done ;;
    *) echo "unknown task $task (translit)"; exit 2 ;;
  esac
) & done
wait
