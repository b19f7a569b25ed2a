"""Train a Latin -> Cyrillic transliterator: python experiments/train_translit.py model.cell=g2lstm

One output folder per run (runs/translit/<time>_<cell>_s<seed>/ with config.yaml, last.pt, best.pt,
metrics.jsonl, results.json); rerunning with the same hydra.run.dir resumes from last.pt.

A thin wrapper of g2lstm.cli.train_translit (installed as g2lstm-train-translit).
"""

from g2lstm.cli import train_translit

if __name__ == "__main__":
    train_translit()
