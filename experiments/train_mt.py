"""Train a translation model: python experiments/train_mt.py experiment=multi30k_cpu model.cell=g2lstm

One output folder per run (runs/mt/<time>_<cell>/ with last.pt, best.pt, metrics.jsonl,
test.hyp, results.json); rerunning with the same hydra.run.dir resumes from last.pt.

A thin wrapper of g2lstm.cli.train_mt (installed as g2lstm-train-mt).
"""

from g2lstm.cli import train_mt

if __name__ == "__main__":
    train_mt()
