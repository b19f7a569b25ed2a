"""Token attributions of a trained model of any task by Integrated Gradients.

The path runs in embedding space: from zero embeddings (the baseline) to the embeddings of the
input (``model.embed``), through the model's seams (``extract_features``, ``output_layer``), so one
code path serves every task. The attributed scalar is a logit: the class logit (classifier), the
logit of the next word (LM), of a target token under teacher forcing (MT, attributed to source
and target-prefix tokens) or of an output symbol (transliteration), at one output step. A token's
score is the sum of its embedding dimensions' attributions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..protocol import Batch
from .ig import integrated_gradients, require_soft_gates


@dataclass
class TokenAttribution:
    """Attributions of one example: per input side, its tokens and their scores (which sum to
    ``logit - baseline_logit - delta``), the attributed output step and target id."""

    tokens: dict[str, list[str]]
    scores: dict[str, np.ndarray]
    position: int | None  # the output step (None for a classifier)
    target_id: int
    logit: float  # F(x)
    baseline_logit: float  # F(zero embeddings)
    delta: float  # sum of the scores - (F(x) - F(baseline))


def time_major(model: torch.nn.Module) -> bool:
    """Whether the model's tensors are (T, N, ...): its recurrent layers are not batch-first."""
    return not next(iter(model.recurrent_layers().values())).batch_first


def repeat_batch(batch: Batch, times: int, is_time_major: bool) -> Batch:
    """``batch`` with every example repeated ``times`` times (whole batch after whole batch, the
    order of Captum's path points); the batch axis of a 2-D or larger input is 1 in a time-major
    model, else 0."""
    def repeat(value):
        if not isinstance(value, torch.Tensor):
            return value
        axis = 1 if is_time_major and value.dim() >= 2 else 0
        return torch.cat([value] * times, dim=axis)

    return Batch({k: repeat(v) for k, v in batch.inputs.items()}, batch.tokens, batch.targets)


def _output_steps(batch: Batch, side: str, position: int) -> list[int]:
    steps = []
    for n, tokens in enumerate(batch.tokens[side]):
        step = position if position >= 0 else len(tokens) + position
        if not 0 <= step < len(tokens):
            raise ValueError(f"position {position} is outside example {n}'s {len(tokens)} output steps")
        steps.append(step)
    return steps


def _at_steps(features: torch.Tensor, rows: torch.Tensor, steps: torch.Tensor | None,
              is_time_major: bool) -> torch.Tensor:
    """Each row's features at its step ``(rows, F)``; a classifier's features ``(N, F)`` have none.
    Only these go through the output layer: one logit row per example, not one per step."""
    if steps is None:
        return features[rows]
    return features[steps, rows] if is_time_major else features[rows, steps]


def token_attributions(
    loaded,
    texts: Sequence,
    position: int = -1,
    n_steps: int = 50,
    batch_size: int = 16,
    internal_batch_size: int | None = None,
    progress: bool = False,
) -> list[TokenAttribution]:
    """Integrated Gradients of one logit per text, attributed to every input token.

    Args:
        loaded: a :class:`g2lstm.tasks.TaskModel` (``g2lstm.load``) whose model has soft gates.
        texts: what ``loaded.encode`` takes.
        position: the output step whose logit is attributed, counted on the last input side
            (LM and transliteration: the tokens; MT: the target prefix), from the end when
            negative (-1: the last step). Ignored for a classifier (one logit per text).
        n_steps: quadrature points of the path (Gauss-Legendre).
        batch_size: texts encoded and attributed together.
        internal_batch_size: path points evaluated in one call (``None``: all ``n_steps`` x batch).
        progress: show a progress bar over the texts.

    The target is the example's gold target at that step when the batch has targets, else the
    model's highest logit there.
    """
    model = loaded.model
    require_soft_gates(model)
    model.eval()
    is_time_major = time_major(model)
    results: list[TokenAttribution] = []
    bar = tqdm(total=len(texts), desc="integrated gradients", disable=not progress, leave=False)
    for start in range(0, len(texts), batch_size):
        batch = loaded.encode(list(texts[start:start + batch_size]))
        results += _attribute_batch(model, batch, position, n_steps, internal_batch_size, is_time_major)
        bar.update(len(texts[start:start + batch_size]))
    bar.close()
    return results


def _attribute_batch(model, batch: Batch, position, n_steps, internal_batch_size, is_time_major):
    with torch.no_grad():
        embedded = model.embed(batch)
        features = model.extract_features(batch, embedded)
    sides = list(embedded)
    size = len(batch.tokens[sides[0]])
    rows = torch.arange(size, device=features.device)
    if features.dim() == 2:  # a classifier: one feature vector per text
        steps, step_list = None, [None] * size
        gold = batch.targets
    else:
        step_list = _output_steps(batch, sides[-1], position)
        steps = torch.tensor(step_list, device=features.device)
        gold = None
        if batch.targets is not None:
            gold = batch.targets[steps, rows] if is_time_major else batch.targets[rows, steps]
    if gold is None:
        with torch.no_grad():
            gold = model.output_layer(_at_steps(features, rows, steps, is_time_major)).argmax(-1)
    targets = gold.to(features.device)

    def to_model(side_inputs):
        return {s: e.transpose(0, 1) if is_time_major else e for s, e in zip(sides, side_inputs)}

    def forward(*side_inputs):
        times = side_inputs[0].shape[0] // size
        repeated = repeat_batch(batch, times, is_time_major)
        all_rows = torch.arange(size * times, device=targets.device)
        picked = _at_steps(model.extract_features(repeated, to_model(side_inputs)), all_rows,
                           None if steps is None else steps.repeat(times), is_time_major)
        return model.output_layer(picked)[all_rows, targets.repeat(times)]

    inputs = tuple(e.transpose(0, 1) if is_time_major else e for e in embedded.values())
    # cuDNN has no RNN backward in evaluation mode; the native kernels do.
    with torch.backends.cudnn.flags(enabled=False):
        attributions, delta = integrated_gradients(
            forward, inputs, n_steps=n_steps, internal_batch_size=internal_batch_size
        )
        with torch.no_grad():
            at_input = forward(*inputs)
            at_baseline = forward(*(torch.zeros_like(e) for e in inputs))
    per_token = [a.sum(-1).detach().cpu().numpy() for a in attributions]
    return [
        TokenAttribution(
            tokens={s: batch.tokens[s][n] for s in sides},
            scores={s: per_token[k][n, : len(batch.tokens[s][n])] for k, s in enumerate(sides)},
            position=step_list[n],
            target_id=int(targets[n]),
            logit=float(at_input[n]),
            baseline_logit=float(at_baseline[n]),
            delta=float(delta[n]),
        )
        for n in range(size)
    ]


def target_string(loaded, target_id: int) -> str:
    """The token (or class) whose logit was attributed, as text."""
    if hasattr(loaded, "vocab"):
        return loaded.vocab.decode([target_id])[0]
    if hasattr(loaded, "tokenizers"):
        return loaded.tokenizers.tgt.sp.id_to_piece(target_id)
    return str(target_id)


def converged_attributions(
    loaded,
    texts: Sequence,
    position: int = -1,
    n_steps: int = 50,
    max_steps: int = 800,
    tolerance: float = 0.05,
    batch_size: int = 16,
    internal_batch_size: int | None = None,
    progress: bool = False,
) -> tuple[list[TokenAttribution], list[int]]:
    """:func:`token_attributions` whose quadrature is refined per text until the completeness gap
    is small: a text whose ``|delta| > tolerance * |F(x) - F(baseline)|`` is attributed again with
    twice the steps, up to ``max_steps``.

    Returns:
        ``(attributions, steps)``: per text the last attribution and the number of steps it used;
        a text still outside the bound at ``max_steps`` keeps that result (:func:`within_bound`
        says which).
    """
    if max_steps < n_steps:
        raise ValueError(f"max_steps ({max_steps}) must be >= n_steps ({n_steps})")
    results = token_attributions(loaded, texts, position, n_steps, batch_size, internal_batch_size, progress)
    steps = [n_steps] * len(texts)
    current = n_steps
    while current < max_steps:
        missing = [n for n, a in enumerate(results) if not within_bound(a, tolerance)]
        if not missing:
            break
        current = min(2 * current, max_steps)
        again = token_attributions(loaded, [texts[n] for n in missing], position, current, batch_size,
                                   internal_batch_size, progress)
        for n, a in zip(missing, again):
            results[n], steps[n] = a, current
    return results, steps


def within_bound(a: TokenAttribution, tolerance: float = 0.05) -> bool:
    """Whether ``|delta| <= tolerance * |F(x) - F(baseline)|`` (IG's completeness, relative)."""
    return abs(a.delta) <= tolerance * abs(a.logit - a.baseline_logit)


def delta_ratio(a: TokenAttribution) -> float:
    """``|delta| / |F(x) - F(baseline)|``, the relative completeness gap that :func:`within_bound`
    holds against ``tolerance``: 0 when both are 0, ``inf`` when only the logit did not move."""
    change = abs(a.logit - a.baseline_logit)
    if change == 0:
        return 0.0 if a.delta == 0 else math.inf
    return abs(a.delta) / change
