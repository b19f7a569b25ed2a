#!/usr/bin/env bash
# Issue 23's convergence study, as queues of runs that resume by their folder: run it again after an
# interruption and every finished run is left as it is, every unfinished one goes on from last.pt.
# Usage: bash results/binarization/run_convergence.sh TASK "SEEDS" [--dry-run]
#   TASK: translit | lm | mt; one queue per seed; --dry-run prints the commands (tests compose them)
# Each line of a queue is "FOLDER ARGS...", most wanted first (the LSTM, its practical finetune, the
# recipe from scratch, the sharpened baseline); finetunes start from a baseline's best.pt of the same
# seed ($from/<folder>/best.pt). The straight-through finetunes (train_gates=hard) train with the
# binary gates they are evaluated with: noise_p=0 rounds sigmoid(a), noise_p=1 samples Bernoulli
# gates (a + logistic noise >= 0), the stochastic binary neuron of Bengio et al. 2013.
# The running queues read this file: replace it (write a copy, then mv), never edit it in place.
set -uo pipefail
cd "$(dirname "$0")/../.."
task=$1 seeds=$2 dry_run=${3:-}
runs=runs/converge/$task
case $task in
  translit)
    entry="experiments/train_translit.py experiment=converge_translit"
    steps_20_epochs=2200 hard=+model.g2_options.eval_gates=hard short=train.max_epochs=20
    train_hard=+model.g2_options.train_gates=hard ;;
  lm)
    entry="experiments/train_lm.py experiment=converge_bible"
    steps_20_epochs=5000 hard=model.eval_gates=hard short=train.epochs=10 train_hard=model.train_gates=hard ;;
  mt)
    entry="experiments/train_mt.py experiment=converge_multi30k"
    steps_20_epochs=4300 hard=+model.g2_options.eval_gates=hard short=train.max_epochs=10
    train_hard=+model.g2_options.train_gates=hard ;;
  *) echo "unknown task $task (translit | lm | mt)"; exit 2 ;;
esac
queue() {  # the runs of one seed, in order
  local seed=$1 from=$runs
  cat <<EOF
model_cell_lstm_s$seed model.cell=lstm
lstm_then_binary_s$seed recipe=binary train.init_from=$from/model_cell_lstm_s$seed/best.pt
recipe_binary_s$seed recipe=binary
model_cell_sharpened_s$seed model.cell=sharpened
model_cell_g2lstm_s$seed model.cell=g2lstm
lstm_then_p0.5_tau0.5_s$seed model.cell=g2lstm model.noise_p=0.5 model.tau=0.5 train.init_from=$from/model_cell_lstm_s$seed/best.pt
lstm_then_straight_through_s$seed model.cell=g2lstm model.noise_p=0.0 model.tau=1.0 $train_hard $hard train.init_from=$from/model_cell_lstm_s$seed/best.pt
lstm_then_stochastic_binary_s$seed model.cell=g2lstm model.noise_p=1.0 model.tau=1.0 $train_hard $hard train.init_from=$from/model_cell_lstm_s$seed/best.pt
g2lstm_then_binary_s$seed recipe=binary train.init_from=$from/model_cell_g2lstm_s$seed/best.pt
binary_then_hard_s$seed recipe=binary $hard $short train.init_from=$from/recipe_binary_s$seed/best.pt
schedule_p1_tau0.5_s$seed model.cell=g2lstm train.schedules.noise_p={end:1.0,steps:$steps_20_epochs,shape:linear} train.schedules.tau={end:0.5,steps:$steps_20_epochs,shape:exponential}
EOF
}
if [[ $dry_run == --dry-run ]]; then
  for seed in $seeds; do queue "$seed" | while read -r name args; do
    echo "python $entry $args seed=$seed threads=1 hydra.run.dir=$runs/$name"; done; done
  exit 0
fi
for seed in $seeds; do (
  queue "$seed" | while read -r name args; do
    source_run=$(grep -o "init_from=[^ ]*" <<<"$args" | sed 's/init_from=//; s|/best.pt||')
    if [[ -n $source_run && ! -f $source_run/results.json ]]; then  # a finetune starts from a finished run only
      echo "skipped $name: $source_run has not finished (no results.json)"; continue
    fi
    # shellcheck disable=SC2086  # args are separate Hydra overrides
    nice -n 10 python $entry $args seed=$seed threads=1 hydra.run.dir=$runs/$name < /dev/null
  done
) & done
wait
