"""Per-word information (Guan et al. 2019) of the page's texts: per layer direction, the noise scale
``sigma`` each token can take while the layer's hidden states stay as they are.

The feature ``phi`` of a layer is built as the report's (:func:`g2lstm.interpret.phi.layer_phi`):
the layer's hidden states when the embeddings of the layer's side are ``x`` and the other sides
keep their own. ``sigma_f``, the per-unit spread of ``phi`` over sentences, comes from every text
of the page (the per-text means of ``h`` that the build gathers anyway: no extra pass), not from the
few texts explained: a better estimate, and the weight each unit gets in the loss does not depend
on which texts are explained.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from ..interpret.phi import layer_phi
from ..interpret.states import LayerStates
from ..interpret.word_information import word_information

LAYER_CHOICES = ("last", "all")


def explained_layers(layers: Mapping[str, Mapping], which: str) -> list[str]:
    """The layer keys to explain: ``'all'`` of them, or per side the ``'last'`` layer (every
    direction of it): the states the side's tokens reach last, before the output or the decoder.

    ``layers``: key -> ``{"name", "layer", "direction", "side"}``, in the model's order."""
    if which not in LAYER_CHOICES:
        raise ValueError(f"information layers must be one of {list(LAYER_CHOICES)}; got {which!r}")
    if which == "all":
        return list(layers)
    module = {}
    for info in layers.values():  # the trace's order: the module a side runs last comes last
        module[info["side"]] = info["name"]
    top = {side: max(info["layer"] for info in layers.values() if info["name"] == name) for side, name in module.items()}
    return [key for key, info in layers.items()
            if info["name"] == module[info["side"]] and info["layer"] == top[info["side"]]]


def feature_spread(mean_h: Sequence[np.ndarray]) -> np.ndarray:
    """``sigma_f`` from the per-text means of ``h`` over steps: their per-unit standard deviation over
    texts, as :func:`g2lstm.interpret.word_information.feature_scale` computes it from one batch."""
    if len(mean_h) < 2:
        raise ValueError(f"sigma_f is the hidden states' spread over texts, which needs at least 2; got {len(mean_h)}")
    return np.stack(mean_h).std(0)


def _phi_of(loaded, texts: Sequence, info: Mapping, key: str):
    batch = loaded.encode(list(texts))
    side = info["side"]
    states = LayerStates(key, info["name"], info["layer"], info["direction"], side)
    phi, x = layer_phi(loaded.model, batch, side, states)
    lengths = torch.tensor([len(t) for t in batch.tokens[side]])
    mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).to(x.device)
    return phi, x, mask, lengths


def layer_information(loaded, texts: Sequence, info: Mapping, key: str, sigma_f: np.ndarray, batch_size: int = 16,
                      lam: float = 0.1, scale: float = 0.5, steps: int = 200, draws: int = 4,
                      seed: int = 0) -> tuple[list[np.ndarray], int]:
    """Per text, ``sigma`` of each of its tokens on the layer's side for the layer direction ``key``
    (``info``: its ``name``, ``layer``, ``direction``, ``side``), by :func:`word_information` run on
    ``batch_size`` texts at a time with the given ``sigma_f`` (:func:`feature_spread`); and ``K``,
    the embeddings' width (the entropy's dimension)."""
    loaded.model.eval()
    sigmas, dim = [], 0
    # cuDNN refuses an RNN's backward in evaluation mode; the gradient here is with respect to the noise
    with torch.backends.cudnn.flags(enabled=False):
        for start in range(0, len(texts), batch_size):
            phi, x, mask, lengths = _phi_of(loaded, texts[start:start + batch_size], info, key)
            result = word_information(phi, x, sigma_f, mask, lam=lam, scale=scale, steps=steps, draws=draws,
                                      seed=seed)
            sigma = result.sigma.detach().cpu().double().numpy()
            sigmas += [sigma[n, :length] for n, length in enumerate(lengths.tolist())]
            dim = int(x.shape[-1])
    return sigmas, dim


def entropy(sigma: np.ndarray, dim: int) -> np.ndarray:
    """``H_i = K/2 log(2 pi e) + K log sigma_i`` (nats) of a word's noisy copy, ``K`` = ``dim``."""
    return dim / 2 * np.log(2 * np.pi * np.e) + dim * np.log(sigma)
