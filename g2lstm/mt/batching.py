"""Batches by token count over length-sorted buckets, and padding into tensors."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .tokenizer import BOS, EOS, PAD


def token_batches(
    src_lengths: Sequence[int],
    tgt_lengths: Sequence[int],
    max_tokens: int,
    seed: int | None = None,
    max_sentences: int | None = None,
) -> list[list[int]]:
    """Group example indices into batches whose padded size ``rows * longest`` stays within
    ``max_tokens`` (counted on the longer of source and target).

    Examples are sorted by length so a batch wastes little padding; with a ``seed`` the order of
    equal-length examples and of the batches is shuffled (same seed -> same batches, which makes
    resuming mid-epoch exact). A single example longer than ``max_tokens`` gets a batch of its own.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    lengths = np.maximum(np.asarray(src_lengths), np.asarray(tgt_lengths))
    rng = np.random.default_rng(seed) if seed is not None else None
    order = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    order = order[np.argsort(lengths[order], kind="stable")]
    batches, current, longest = [], [], 0
    for i in order:
        longest_if_added = max(longest, int(lengths[i]))
        too_big = longest_if_added * (len(current) + 1) > max_tokens
        too_many = max_sentences is not None and len(current) >= max_sentences
        if current and (too_big or too_many):
            batches.append(current)
            current, longest_if_added = [], int(lengths[i])
        current.append(int(i))
        longest = longest_if_added
    if current:
        batches.append(current)
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def pad(seqs: Sequence[Sequence[int]], value: int = PAD) -> torch.Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for row, s in enumerate(seqs):
        out[row, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def source_batch(src_ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Source ids + EOS, padded: (B, S) tokens and (B,) lengths (>= 1 even for an empty line)."""
    seqs = [list(s) + [EOS] for s in src_ids]
    return pad(seqs), torch.tensor([len(s) for s in seqs], dtype=torch.long)


def training_batch(src_ids, tgt_ids) -> dict[str, torch.Tensor]:
    """Tensors for teacher forcing: decoder input BOS + y, output y + EOS."""
    src, src_lengths = source_batch(src_ids)
    return {
        "src": src,
        "src_lengths": src_lengths,
        "tgt_in": pad([[BOS] + list(t) for t in tgt_ids]),
        "tgt_out": pad([list(t) + [EOS] for t in tgt_ids]),
    }
