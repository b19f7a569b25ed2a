"""Greedy decoding, batched beam search and ``translate`` for lists of sentences."""

from __future__ import annotations

import warnings
from typing import Sequence

import torch

from .batching import source_batch, token_batches
from .model import Seq2Seq
from ..tasks import text_list
from .tokenizer import BOS, EOS, Tokenizers


def max_target_lengths(src_lengths: torch.Tensor, max_len_a: float, max_len_b: int, max_len: int) -> torch.Tensor:
    """Longest allowed output (tokens incl. EOS) per sentence: ``a * source_length + b``, capped."""
    limit = torch.ceil(src_lengths.float() * max_len_a).long() + max_len_b
    return limit.clamp(min=1, max=max_len)


@torch.no_grad()
def greedy_decode(model: Seq2Seq, src, src_lengths, max_len_a=2.0, max_len_b=10, max_len=256) -> list[list[int]]:
    """Arg-max decoding; returns token ids without BOS/EOS, one list per sentence."""
    limits = max_target_lengths(src_lengths, max_len_a, max_len_b, max_len).tolist()
    state = model.encode(src, src_lengths)
    batch = src.size(0)
    tokens = torch.full((batch,), BOS, dtype=torch.long, device=src.device)
    out: list[list[int]] = [[] for _ in range(batch)]
    finished = [False] * batch
    for t in range(max(limits)):
        logp, state = model.decoder.step(tokens, state)
        tokens = logp.argmax(-1)
        for b, tok in enumerate(tokens.tolist()):
            if finished[b]:
                continue
            if tok == EOS or t + 1 >= limits[b]:  # the last allowed step can only be EOS
                finished[b] = True
            else:
                out[b].append(tok)
        if all(finished):
            break
    return out


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    beam: int = 5,
    length_penalty: float = 1.0,
    max_len_a: float = 2.0,
    max_len_b: int = 10,
    max_len: int = 256,
) -> list[list[int]]:
    """Batched beam search. Hypotheses are ranked by ``log p(y|x) / len(y)**length_penalty``
    (len counts EOS); each sentence stops once it has ``beam`` finished hypotheses, and every live
    hypothesis is forced to end at its length limit ``ceil(max_len_a * |x|) + max_len_b``."""
    if beam == 1:
        return greedy_decode(model, src, src_lengths, max_len_a, max_len_b, max_len)
    batch, device = src.size(0), src.device
    limits = max_target_lengths(src_lengths, max_len_a, max_len_b, max_len).to(device)
    state = model.encode(src, src_lengths).select(torch.arange(batch, device=device).repeat_interleave(beam))
    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical; keep one so the first step does not duplicate
    tokens = torch.full((batch * beam,), BOS, dtype=torch.long, device=device)
    history = torch.empty((batch * beam, 0), dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    vocab = None
    for t in range(int(limits.max())):
        logp, state = model.decoder.step(tokens, state)
        vocab = logp.size(-1)
        logp = logp.view(batch, beam, vocab)
        at_limit = (t + 1) >= limits  # (B,): only EOS is allowed now
        if at_limit.any():
            forced = torch.full_like(logp[at_limit], float("-inf"))
            forced[..., EOS] = logp[at_limit][..., EOS]
            logp[at_limit] = forced
        candidates = (scores.unsqueeze(-1) + logp).view(batch, beam * vocab)
        top_scores, top_index = candidates.topk(2 * beam, dim=-1)  # enough to keep `beam` non-EOS
        top_beam, top_token = top_index // vocab, top_index % vocab
        is_eos = (top_token == EOS) & torch.isfinite(top_scores)
        is_eos[:, beam:] = False  # an EOS only counts when it ranks among the best `beam`
        for b, rank in is_eos.nonzero().tolist():
            if done[b]:
                continue
            row = b * beam + int(top_beam[b, rank])
            hyp = history[row].tolist()
            finished[b].append((float(top_scores[b, rank]) / (len(hyp) + 1) ** length_penalty, hyp))
        for b in range(batch):
            if not done[b] and len(finished[b]) >= beam:
                done[b] = True
        done |= at_limit  # every hypothesis that could still end has ended
        if bool(done.all()):
            break
        live_scores = top_scores.masked_fill(top_token == EOS, float("-inf"))
        scores, pick = live_scores.topk(beam, dim=-1)
        rows = (torch.arange(batch, device=device).unsqueeze(1) * beam + top_beam.gather(1, pick)).view(-1)
        tokens = top_token.gather(1, pick).view(-1)
        history = torch.cat([history[rows], tokens.unsqueeze(1)], dim=1)
        state = state.select(rows)
    return [max(f, key=lambda x: x[0])[1] if f else [] for f in finished]


@torch.no_grad()
def translate(
    model: Seq2Seq,
    tokenizers: Tokenizers,
    sentences: Sequence[str],
    beam: int = 5,
    length_penalty: float = 1.0,
    max_len_a: float = 2.0,
    max_len_b: int = 10,
    max_len: int = 256,
    max_src_tokens: int = 250,
    max_tokens: int = 4000,
) -> list[str]:
    """Translate raw sentences (detokenized text in, detokenized text out), in input order.

    Empty (or whitespace-only) lines give empty translations without touching the model; source
    lines longer than ``max_src_tokens`` subwords are cut to that length with a warning.
    """
    sentences = text_list(sentences, "translate()")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    src_ids = tokenizers.src.encode(sentences)
    too_long = sum(len(s) > max_src_tokens for s in src_ids)
    if too_long:
        warnings.warn(f"{too_long} source line(s) longer than {max_src_tokens} subwords were truncated")
        src_ids = [s[:max_src_tokens] for s in src_ids]
    outputs: list[list[int]] = [[] for _ in sentences]
    todo = [i for i, s in enumerate(src_ids) if s]
    lengths = [len(src_ids[i]) + 1 for i in todo]
    # the decoder memory per row grows with beam size, so the token budget is shared by the beams
    for batch in token_batches(lengths, lengths, max(max_tokens // max(beam, 1), max_src_tokens + 1)):
        index = [todo[i] for i in batch]
        src, src_lengths = source_batch([src_ids[i] for i in index])
        hyps = beam_search(
            model, src.to(device), src_lengths.to(device), beam, length_penalty, max_len_a, max_len_b, max_len
        )
        for i, hyp in zip(index, hyps):
            outputs[i] = hyp
    model.train(was_training)
    return tokenizers.tgt.decode(outputs)
