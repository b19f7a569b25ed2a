"""Perplexity of a language model on a split, with and without the continuous cache pointer.

The cache pointer (Grave et al. 2017, as used by AWD-LSTM's pointer.py) mixes the model's softmax
with a distribution over the words that followed the last ``window`` hidden states:
``p(w) = (1 - lambdah) p_model(w) + lambdah * sum_i softmax_i(theta * h_t . h_i) [x_{i+1} = w]``.
It needs no training; theta and lambdah are chosen on the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from g2lstm import config
from g2lstm.data.lm import batchify
from g2lstm.train.metrics import exp_or_inf


@dataclass
class CacheConfig:
    """The cache pointer's window and the grids theta and lambdah are picked from on valid."""

    enabled: bool = True
    window: int = 500
    thetas: list[float] = field(default_factory=lambda: [0.5, 1.0])
    lambdahs: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])

    def __post_init__(self):
        config.positive(self, "window")
        config.all_of(self, "thetas", lambda v: v > 0, "values > 0")
        config.all_of(self, "lambdahs", lambda v: 0 <= v <= 1, "probabilities in [0, 1]")


@dataclass
class LMEvalConfig:
    """The schema of ``g2lstm/conf/lm/eval``: the final evaluation of ``best.pt``."""

    test_batch_size: int = 10
    cache: CacheConfig = field(default_factory=CacheConfig)

    def __post_init__(self):
        config.positive(self, "test_batch_size")


config.store(LMEvalConfig, "cache_pointer_schema", group="eval")


@dataclass
class SplitOutputs:
    """What one evaluation pass keeps for the cache pointer; all (T, N, ...) time-major."""

    hidden: torch.Tensor  # last layer's output h_t (T, N, D)
    target_logprob: torch.Tensor  # log p_model(x_{t+1}) (T, N)
    targets: torch.Tensor  # x_{t+1} (T, N)


@torch.no_grad()
def run_split(model, ids: torch.Tensor, batch_size: int, bptt: int, keep_hidden: bool = False) -> SplitOutputs:
    """One pass of ``model`` (set to eval mode here) over a flat id tensor, carrying the state."""
    model.eval()
    device = next(model.parameters()).device
    data = batchify(ids, batch_size).to(device)
    hidden = model.init_hidden(batch_size)
    outputs, logprobs, targets = [], [], []
    for i in range(0, data.size(0) - 1, bptt):
        seq_len = min(bptt, data.size(0) - 1 - i)
        inputs, target = data[i:i + seq_len], data[i + 1:i + 1 + seq_len]
        logits, hidden, raw_outputs, _ = model(inputs, hidden)
        logprobs.append(F.log_softmax(logits.float(), dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1).cpu())
        targets.append(target.cpu())
        if keep_hidden:
            outputs.append(raw_outputs[-1].float().cpu())
    hidden_states = torch.cat(outputs) if keep_hidden else torch.empty(0)
    return SplitOutputs(hidden_states, torch.cat(logprobs), torch.cat(targets))


def gate_data(ids: torch.Tensor, tokens: int, batch_size: int, bptt: int, device) -> tuple[list, object]:
    """``(chunks, forward)`` over the first ``tokens`` of ``ids`` for
    :func:`g2lstm.diagnostics.collect_gate_stats`: ``bptt``-long chunks of ``batch_size`` columns,
    the state carried from chunk to chunk as in evaluation."""
    data = batchify(ids[: tokens + 1], batch_size).to(device)
    chunks = [data[i:i + bptt] for i in range(0, data.size(0) - 1, bptt)]
    hidden: list = [None]

    def forward(model, words):
        if hidden[0] is None or words is chunks[0]:
            hidden[0] = model.init_hidden(batch_size)
        _, hidden[0], _, _ = model(words, hidden[0])

    return chunks, forward


def perplexity(model, ids: torch.Tensor, batch_size: int = 10, bptt: int = 70) -> dict:
    """``{'loss': mean cross-entropy in nats, 'ppl': exp(loss), 'tokens': count}`` on ``ids``."""
    out = run_split(model, ids, batch_size, bptt)
    loss = -out.target_logprob.double().mean().item()
    return {"loss": loss, "ppl": exp_or_inf(loss), "tokens": out.targets.numel()}


def cache_pointer_loss(out: SplitOutputs, theta: float, lambdah: float, window: int, chunk: int = 256) -> float:
    """Mean cross-entropy of the model mixed with the cache pointer over the last ``window`` steps.

    Step t attends over steps t-window .. t-1 of its own batch column; the first step of a column,
    with no history, uses the model alone.
    """
    if window < 1:
        raise ValueError(f"cache window must be >= 1; got {window}")
    if not 0.0 <= lambdah <= 1.0:
        raise ValueError(f"cache lambdah must be in [0, 1]; got {lambdah}")
    steps = out.targets.size(0)
    total = 0.0
    for start in range(0, steps, chunk):
        stop = min(start + chunk, steps)
        lo = max(0, start - window)
        keys = out.hidden[lo:stop]  # (K, N, D): history and the chunk itself
        key_targets = out.targets[lo:stop]  # (K, N)
        query = out.hidden[start:stop]  # (Q, N, D)
        scores = theta * torch.einsum("qnd,knd->nqk", query, keys)
        q_pos = torch.arange(start, stop).unsqueeze(1)  # absolute step of each query
        k_pos = torch.arange(lo, stop).unsqueeze(0)
        visible = (k_pos < q_pos) & (k_pos >= q_pos - window)  # (Q, K)
        scores = scores.masked_fill(~visible, float("-inf"))
        has_history = visible.any(dim=1)  # (Q,)
        attention = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows without history -> 0
        hits = (key_targets.t().unsqueeze(1) == out.targets[start:stop].t().unsqueeze(2))  # (N, Q, K)
        p_cache = (attention * hits).sum(-1).t()  # (Q, N)
        p_model = out.target_logprob[start:stop].double().exp()
        weight = lambdah * has_history.double().unsqueeze(1)
        p = (1 - weight) * p_model + weight * p_cache.double()
        total += -torch.log(p).sum().item()
    return total / out.targets.numel()


def evaluate(model, valid_ids: torch.Tensor, test_ids: torch.Tensor, batch_size: int, bptt: int,
             cache: dict | None = None) -> dict:
    """Valid and test perplexity; with ``cache`` (window, thetas, lambdahs) also with the cache
    pointer, theta and lambdah picked on valid from the grids. One model pass per split."""
    keep = cache is not None
    valid = run_split(model, valid_ids, batch_size, bptt, keep_hidden=keep)
    test = run_split(model, test_ids, batch_size, bptt, keep_hidden=keep)
    result = {"valid_ppl": exp_or_inf(-valid.target_logprob.double().mean().item()),
              "test_ppl": exp_or_inf(-test.target_logprob.double().mean().item()), "cache": None}
    if cache is not None:
        window = cache["window"]
        best = min((cache_pointer_loss(valid, theta, lambdah, window), theta, lambdah)
                   for theta in cache["thetas"] for lambdah in cache["lambdahs"])
        valid_loss, theta, lambdah = best
        test_loss = cache_pointer_loss(test, theta, lambdah, window)
        result["cache"] = {"valid_ppl": exp_or_inf(valid_loss), "test_ppl": exp_or_inf(test_loss),
                           "theta": theta, "lambdah": lambdah, "window": window}
    return result
