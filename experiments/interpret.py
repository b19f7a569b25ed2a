"""The interpretability report on trained models of one task, side by side.

    nice -n 10 python experiments/interpret.py checkpoints=[A/best.pt,B/best.pt] [key=value ...]

(config: conf/interpret). Loads every checkpoint with ``g2lstm.load``, reads the texts (a file,
or the first ``max_texts`` of the run's test split) and writes ``out_dir/report.md`` and
``out_dir/report.json`` with :func:`g2lstm.interpret.report.write_report`.
"""

import shlex
import sys
from pathlib import Path

import torch

import g2lstm
from g2lstm.config import compose_config
from g2lstm.interpret.report import write_report

ROOT = Path(__file__).resolve().parents[1]


def read_texts(loaded, path: str | None, count: int) -> list:
    """``count`` texts: lines of ``path`` (MT: ``source<TAB>target``) or the run's test split."""
    if path is not None:
        lines = [line.rstrip("\n") for line in open(ROOT / path, encoding="utf-8") if line.strip()]
        texts = [tuple(line.split("\t", 1)) if loaded.task == "mt" and "\t" in line else line for line in lines]
        return texts[:count]
    if loaded.task == "lm":
        return [" ".join(tokens[:-1]) for tokens, *_ in loaded.labelled_sentences(count)]
    if loaded.task == "mt":
        return list(loaded.data["test"][:count])
    raise ValueError(f"task {loaded.task!r} has no default texts here: pass texts=<file>")


def main(argv: list[str]) -> None:
    cfg = compose_config("interpret", argv)
    if not cfg.checkpoints:
        raise ValueError("checkpoints is empty: pass checkpoints=[path/best.pt,...]")
    torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(int(cfg.seed))
    loaded = [g2lstm.load(ROOT / path) for path in cfg.checkpoints]
    names = list(cfg.names) if cfg.names else [m.config["model"]["cell"] for m in loaded]
    if len(names) != len(loaded) or len(set(names)) != len(names):
        raise ValueError(f"names must give a distinct label per checkpoint; got {names} for {len(loaded)} checkpoints")
    texts = read_texts(loaded[0], cfg.texts, int(cfg.max_texts))
    command = ("python experiments/interpret.py " + " ".join(map(shlex.quote, argv))).strip()
    report = write_report(dict(zip(names, loaded)), texts, ROOT / cfg.out_dir, cfg, command)
    print(f"wrote {report}")


if __name__ == "__main__":
    main(sys.argv[1:])
