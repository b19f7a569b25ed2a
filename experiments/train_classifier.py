"""Train a sentence-polarity classifier: python experiments/train_classifier.py model.cell=g2lstm

One output folder per run (runs/classify/<time>_<cell>_s<seed>/ with config.yaml, last.pt, best.pt,
metrics.jsonl, results.json); rerunning with the same hydra.run.dir resumes from last.pt.

A thin wrapper of g2lstm.cli.train_classifier (installed as g2lstm-train-classifier).
"""

from g2lstm.cli import train_classifier

if __name__ == "__main__":
    train_classifier()
