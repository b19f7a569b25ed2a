"""The paper's compression table in one command (Li et al. 2018, Table 3, on the data we have).

    nice -n 10 python experiments/paper_table.py [key=value ...]     (config: conf/paper)

For each task in ``tasks`` and each model kind in ``models`` (lstm, sharpened, g2lstm): train it
with the task's own trainer unless a checkpoint is given or already trained in ``runs_dir``,
evaluate it uncompressed and under the task's compressions, collect its gate statistics, and write
``<out_dir>/<task>/`` (see g2lstm/paper.py) and the table over every task, ``table.md`` and
``table.csv``. ``merge=true`` adds models to an existing task folder without re-running the others.
"""

import shlex
import sys
from pathlib import Path

import torch

from g2lstm.config import compose_config
from g2lstm.paper import PaperTask, run_task
from g2lstm.report import write_table

ROOT = Path(__file__).resolve().parents[1]  # out_dir, runs_dir and checkpoints are relative to it


def main(argv: list[str]) -> None:
    cfg = compose_config("paper", argv)
    torch.set_num_threads(int(cfg.threads))
    out_dir = ROOT / cfg.out_dir
    command = ("python experiments/paper_table.py " + " ".join(map(shlex.quote, argv))).strip()
    for key in cfg.tasks:
        task = PaperTask(key, cfg[key], ROOT / cfg.runs_dir, cfg.seed, root=ROOT)
        run_task(task, cfg, list(cfg.models), out_dir / (cfg[key].folder or key), command, merge=cfg.merge)
        print(write_table(out_dir), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
