"""The feature ``phi`` of one layer of a model: its hidden states as a function of one side's
embeddings, what per-word information (:mod:`g2lstm.interpret.word_information`) explains. Used by
the report's section and by the explorer's page."""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from .. import trace
from .attribution import repeat_batch, time_major
from .states import LayerStates


def _module_output(module, output, steps: int) -> torch.Tensor | None:
    """A recurrent module's output ``(N, T, directions * H)``, or None when it is not one tensor
    for the whole sequence (several calls, projections)."""
    if len(output) != 1 or module.proj_size:
        return None
    out = output[0][0]
    if isinstance(out, PackedSequence):
        out = pad_packed_sequence(out, batch_first=module.batch_first, total_length=steps)[0]
    return out if module.batch_first else out.transpose(0, 1)


def layer_phi(model, batch, side: str, states: LayerStates):
    """``phi(x)``: the hidden states ``(B', T, H)`` of the layer of ``states`` when ``side``'s embeddings are
    ``x`` (batch-first, ``B'`` a multiple of the batch) and the other sides are the batch's own.

    The last layer of a module is read from the module's output (its fused kernel, fast); an inner
    layer of a multi-layer module from a trace with gradients (the reference loop, slower)."""
    is_time_major = time_major(model)
    with torch.no_grad():
        embedded = model.embed(batch)
    size = embedded[side].shape[1 if is_time_major else 0]
    axis = 1 if is_time_major else 0
    module = dict(model.named_modules())[states.name]
    width = module.hidden_size

    def phi(x):
        times = x.shape[0] // size
        inputs = {s: torch.cat([e] * times, dim=axis) for s, e in embedded.items()}
        inputs[side] = x.transpose(0, 1) if is_time_major else x
        repeated = repeat_batch(batch, times, is_time_major)
        if states.layer == module.num_layers - 1:
            outputs = []
            handle = module.register_forward_hook(lambda m, args, out: outputs.append(out))
            try:
                model.extract_features(repeated, inputs)
            finally:
                handle.remove()
            h = _module_output(module, outputs, x.shape[1])
            if h is not None:
                return h[..., states.direction * width:(states.direction + 1) * width]
        with trace.record(model, grad=True) as recorded:
            model.extract_features(repeated, inputs)
        return recorded.layer(states.name, states.layer, states.direction).h.transpose(0, 1)

    first = embedded[side].transpose(0, 1) if is_time_major else embedded[side]
    return phi, first.detach()
