"""Every layer's per-step states and gates over a set of texts, aligned to the tokens.

:func:`collect_states` runs a model of any task on texts under :func:`g2lstm.trace.record` and
keeps, per layer direction, the real steps of each text: ``h``, ``c`` and the gates ``i, f, g, o``,
the input tokens the steps read and, where the steps are the output steps, the output symbols
(the targets: next word, target token, output character).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import trace
from ..protocol import Batch
from .attribution import target_string, time_major

FIELDS = ("h", "c", "i", "f", "g", "o")


@dataclass
class LayerStates:
    """One direction of one layer over the texts: ``values[field][n]`` is ``(steps_n, units)``."""

    key: str  # the trace's layer key, e.g. "rnns.0/l0", "encoder.rnn/l0_reverse"
    name: str  # the module's path
    layer: int
    direction: int
    side: str  # the input side whose tokens the steps read
    tokens: list[list[str]] = field(default_factory=list)
    outputs: list[list[str]] | None = None  # the output symbol of each step, where known
    values: dict[str, list[np.ndarray]] = field(default_factory=lambda: {f: [] for f in FIELDS})

    def stacked(self, name: str) -> np.ndarray:
        """``(all steps, units)``: ``name`` over every text's steps, in order."""
        return np.concatenate(self.values[name])


def _aligned_side(layer: trace.LayerTrace, batch: Batch, sides: list[str]) -> str:
    """The input side whose tokens the layer's steps read: its padded length is the trace's number
    of steps; ties go to the side whose lengths equal the trace's mask, then by module name (a
    decoder reads the last side)."""
    steps = layer.mask.shape[0]
    lengths = {s: [len(t) for t in batch.tokens[s]] for s in sides}
    candidates = [s for s in sides if max(lengths[s]) == steps]
    if not candidates:
        raise ValueError(
            f"layer {layer.key} runs {steps} steps, but no input side has that many tokens: "
            f"{ {s: max(v) for s, v in lengths.items()} }"
        )
    by_mask = [s for s in candidates if lengths[s] == layer.mask.sum(0).tolist()]
    if len(by_mask) == 1:
        return by_mask[0]
    if len(candidates) > 1 and "decoder" in layer.name:
        return candidates[-1]
    return candidates[0]


def _output_symbols(loaded, batch: Batch, is_time_major: bool) -> list[list[str]] | None:
    """Per example, the target of each step of the last side (None without per-step targets)."""
    if batch.targets is None or batch.targets.dim() != 2:
        return None
    targets = batch.targets.t() if is_time_major else batch.targets
    last = list(batch.tokens)[-1]
    return [[target_string(loaded, int(t)) for t in targets[n, : len(tokens)].tolist()]
            for n, tokens in enumerate(batch.tokens[last])]


def collect_states(loaded, texts: Sequence, batch_size: int = 16, progress: bool = False) -> dict[str, LayerStates]:
    """States and gates of every recurrent layer direction of ``loaded.model`` on ``texts`` (in
    evaluation mode), by layer key."""
    model = loaded.model.eval()
    is_time_major = time_major(model)
    layers: dict[str, LayerStates] = {}
    bar = tqdm(total=len(texts), desc="states", disable=not progress, leave=False)
    for start in range(0, len(texts), batch_size):
        batch = loaded.encode(list(texts[start:start + batch_size]))
        with torch.no_grad(), trace.record(model) as recorded:
            model.output_layer(model.extract_features(batch))
        sides = list(batch.tokens)
        outputs = _output_symbols(loaded, batch, is_time_major)
        for layer in recorded:
            side = _aligned_side(layer, batch, sides)
            states = layers.setdefault(
                layer.key, LayerStates(layer.key, layer.name, layer.layer, layer.direction, side))
            if states.side != side:
                raise ValueError(f"layer {layer.key} read side {side!r} in one batch and {states.side!r} in another")
            if side == sides[-1] and outputs is not None:
                states.outputs = (states.outputs or []) + outputs
            for n, tokens in enumerate(batch.tokens[side]):
                states.tokens.append(tokens)
                for name in FIELDS:
                    states.values[name].append(getattr(layer, name)[: len(tokens), n].float().cpu().numpy())
        bar.update(len(batch.tokens[sides[0]]))
    bar.close()
    return layers
