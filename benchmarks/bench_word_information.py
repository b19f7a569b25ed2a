"""Per-word information (Guan et al. 2019): a batch of sentences against one sentence at a time.

``g2lstm.interpret.word_information`` optimises every sentence of a batch in one call of ``phi``
with ``--draws`` noise samples per step and a decaying learning rate. The comparison is a
re-implementation, for this benchmark only, of the authors' loop (``utils_nlp/interpreter``):
one sentence at a time, one noise draw per step, Adam at lr 0.01 for ``--anchor-steps`` steps,
the step with the lowest loss kept. Both explain the same ``phi`` (every hidden state of an
embedding + LSTM layer, seeded weights) on the same sentences with the same ``sigma_f``; the
script prints sentences per second of each and their ratio, and how alike the results are: the
Spearman correlation of the words' sigmas per sentence, and how often the most-kept word is the
same, between each method and a reference (the batched method run long with many draws,
``--reference-steps``, ``--reference-draws``), and between two seeds of each method.

    python benchmarks/bench_word_information.py --threads 1 --json benchmarks/results_word_information.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from g2lstm.interpret import feature_scale, word_information  # noqa: E402


def anchor_loop(phi, sentences, sigma_f, lam, scale, steps, seed):
    """The authors' procedure, one sentence at a time (for comparison only)."""
    sigmas = []
    for n, x in enumerate(sentences):
        generator = torch.Generator().manual_seed(seed * 100003 + n)
        logit = torch.randn(x.shape[0], 1, generator=generator).requires_grad_()
        optimizer = torch.optim.Adam([logit], lr=0.01)
        target = phi(x[None])[0].detach()
        best_loss, best = None, None
        for _ in range(steps):
            ratio = torch.sigmoid(logit)
            noisy = x + ratio * torch.randn(x.shape, generator=generator) * scale
            loss = ((phi(noisy[None])[0] - target) ** 2 / sigma_f**2).mean() - lam * torch.log(ratio).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if best_loss is None or loss.item() < best_loss:
                best_loss, best = loss.item(), logit.detach().clone()
        sigmas.append(scale * torch.sigmoid(best[:, 0]))
    return sigmas


def agreement(a: list[torch.Tensor], b: list[torch.Tensor]) -> dict:
    rho = [spearmanr(x.numpy(), y.numpy()).statistic for x, y in zip(a, b)]
    same_top = [int(x.argmin() == y.argmin()) for x, y in zip(a, b)]
    return {"spearman_mean": float(np.mean(rho)), "spearman_min": float(np.min(rho)),
            "same_most_kept_word": float(np.mean(same_top))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=64, help="sentences of the batched run")
    parser.add_argument("--anchor-sentences", type=int, default=4, help="of them, run by the loop")
    parser.add_argument("--min-length", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=24)
    parser.add_argument("--embedding", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--anchor-steps", type=int, default=5000, help="the authors' default")
    parser.add_argument("--reference-steps", type=int, default=1000)
    parser.add_argument("--reference-draws", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    loadavg_start = os.getloadavg()  # the machine's other load, which the timing depends on
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    embedding = nn.Embedding(1000, args.embedding)
    rnn = nn.LSTM(args.embedding, args.hidden, batch_first=True).requires_grad_(False)
    embedding.requires_grad_(False)

    def phi(x):  # every hidden state of the layer: (B, n, H)
        return rnn(x)[0]

    lengths = torch.randint(args.min_length, args.max_length + 1, (args.sentences,))
    sentences = [embedding(torch.randint(0, 1000, (int(n),))) for n in lengths]
    batch = nn.utils.rnn.pad_sequence(sentences, batch_first=True)
    mask = torch.arange(batch.shape[1])[None] < lengths[:, None]
    sigma_f = feature_scale(phi(batch), mask)

    start = time.perf_counter()
    batched = word_information(phi, batch, sigma_f, mask=mask, lam=args.lam, scale=args.scale,
                               steps=args.steps, draws=args.draws)
    batched_seconds = time.perf_counter() - start
    batched_sigmas = [batched.sigma[b, : lengths[b]] for b in range(args.sentences)]
    k = args.anchor_sentences
    subset = sentences[:k]

    def batched_on_subset(steps, draws, seed):
        result = word_information(phi, batch[:k], sigma_f, mask=mask[:k], lam=args.lam, scale=args.scale,
                                  steps=steps, draws=draws, seed=seed)
        return [result.sigma[b, : lengths[b]] for b in range(k)]

    again_sigmas = batched_on_subset(args.steps, args.draws, seed=1)
    reference = batched_on_subset(args.reference_steps, args.reference_draws, seed=2)
    start = time.perf_counter()
    loop = anchor_loop(phi, subset, sigma_f, args.lam, args.scale, args.anchor_steps, seed=0)
    loop_seconds = time.perf_counter() - start
    loop_again = anchor_loop(phi, subset, sigma_f, args.lam, args.scale, args.anchor_steps, seed=1)

    result = {
        "args": {key: str(value) for key, value in vars(args).items()},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "batched_sentences_per_s": args.sentences / batched_seconds,
        "loop_sentences_per_s": k / loop_seconds,
        "batched_seconds": batched_seconds,
        "loop_seconds": loop_seconds,
        "batched_vs_reference": agreement(batched_sigmas[:k], reference),
        "loop_vs_reference": agreement(loop, reference),
        "batched_vs_loop": agreement(batched_sigmas[:k], loop),
        "batched_vs_batched_other_seed": agreement(batched_sigmas[:k], again_sigmas),
        "loop_vs_loop_other_seed": agreement(loop, loop_again),
    }
    result["speedup"] = result["batched_sentences_per_s"] / result["loop_sentences_per_s"]
    result["loadavg_start"], result["loadavg_end"] = loadavg_start, os.getloadavg()
    print(json.dumps({key: value for key, value in result.items() if key != "args"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
