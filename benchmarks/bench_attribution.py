"""Integrated Gradients of an LM the size of the Brown CPU runs over many sentences: time and gap.

Builds an untrained ``AWDLSTM`` with ``conf/lm/experiment/brown_cpu.yaml``'s sizes (the cost of
IG does not depend on the weights' values) and a vocabulary of ``--vocab`` words, and attributes
the next-word logit of the last word of ``--sentences`` random sentences of 10-30 words with
:func:`g2lstm.interpret.token_attributions` (50 Gauss-Legendre steps), printing sentences per
second and the largest completeness gap.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_attribution.py --threads 1 --sentences 1000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from g2lstm.data.lm import Vocab  # noqa: E402
from g2lstm.interpret import token_attributions  # noqa: E402
from g2lstm.lm.model import AWDLSTM  # noqa: E402
from g2lstm.lm.task import LanguageModelTask  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--vocab", type=int, default=16000)
    parser.add_argument("--cell", default="g2lstm")
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    words = [f"w{k}" for k in range(args.vocab - 2)]
    vocab = Vocab(["<eos>", "<unk>"] + words)
    model = AWDLSTM(len(vocab), emsize=128, nhid=256, nlayers=2, cell=args.cell)
    loaded = LanguageModelTask(model, vocab, {"data": {"source": "ptb"}}, "untrained", "cpu")
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=rng.integers(10, 31))) for _ in range(args.sentences)]
    loadavg_start = os.getloadavg()  # the machine's other load, which the timing depends on
    start = time.perf_counter()
    results = token_attributions(loaded, texts, position=-2, n_steps=args.n_steps, batch_size=args.batch_size,
                                 progress=True)
    seconds = time.perf_counter() - start
    summary = {"sentences": args.sentences, "seconds": seconds, "sentences_per_s": args.sentences / seconds,
               "abs_delta_max": max(abs(r.delta) for r in results), "threads": torch.get_num_threads(),
               "cell": args.cell, "n_steps": args.n_steps, "vocab": args.vocab,
               "loadavg_start": loadavg_start, "loadavg_end": os.getloadavg()}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
