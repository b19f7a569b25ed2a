"""Per-word information in a hidden state (Guan et al., ICML 2019), many sentences at once.

For a sentence with embeddings ``x`` (n x K) and a feature ``f = phi(x)``, learn one noise scale
per word so that ``x~ = x + sigma * eps`` keeps the feature while the noise is as large as
possible::

    L(sigma) = E_eps mean((phi(x~) - f)^2 / sigma_f^2) - lam * mean_i log sigma_i

(means over the feature's elements and the sentence's words, as in the authors' code, so that a
linear ``phi = sum_i w_i x_i`` has ``sigma_i = sigma_f sqrt(lam / 2n) / |w_i|``). The entropy of
word i's noisy copy, ``H_i = K/2 log(2 pi e) + K log sigma_i``, is small when the feature kept
the word. Unlike the reference code (one sentence, one noise draw per step, the single best step
kept), the expectation is estimated with ``draws`` samples per step, every sentence of a batch
is optimised in one call of ``phi``, and the learning rate decays to zero so the result settles.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from tqdm.auto import tqdm


class WordInformation(NamedTuple):
    """``sigma`` and ``entropy`` (nats) per word, ``(n,)`` or ``(B, n)``; NaN at masked words."""

    sigma: torch.Tensor
    entropy: torch.Tensor


def _position_mask(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The word mask broadcast to ``features``: features ``(B, n, ...)`` are masked per position."""
    shape = [1] * features.dim()
    shape[0] = features.shape[0]
    if features.dim() >= 3 and features.shape[1] == mask.shape[1]:
        shape[1] = mask.shape[1]
        return mask.reshape(shape).to(features.dtype)
    return torch.ones(shape, dtype=features.dtype, device=features.device)


def feature_scale(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-unit standard deviation of ``phi`` over sentences: ``sigma_f`` of the loss.

    ``features`` are ``phi`` of ``B >= 2`` sampled sentences; a position axis (``(B, n, ...)``)
    is first averaged over each sentence's words, as the authors do for variable-length axes.
    """
    if features.shape[0] < 2:
        raise ValueError(
            "sigma_f is estimated as the spread of phi over sentences, which needs a batch of at "
            f"least 2 sentences; got {features.shape[0]}: pass sigma_f, or more sentences"
        )
    if features.dim() >= 3 and features.shape[1] == mask.shape[1]:
        weights = _position_mask(features, mask)
        per_sentence = (features * weights).sum(1) / weights.sum(1)
    else:
        per_sentence = features
    return per_sentence.std(0, unbiased=False)


def word_information(
    phi: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigma_f: torch.Tensor | float | None = None,
    mask: torch.Tensor | None = None,
    lam: float = 0.1,
    scale: float = 0.5,
    steps: int = 300,
    draws: int = 8,
    lr: float = 0.1,
    seed: int = 0,
    progress: bool = False,
) -> WordInformation:
    """Learn each word's noise scale ``sigma_i`` and entropy ``H_i`` for the feature ``phi``.

    Args:
        phi: maps embeddings ``(B, n, K)`` to features ``(B, ...)``; features ``(B, n, ...)``
            (one per position) are compared only at unmasked positions. Called with
            ``draws * B`` sentences at once.
        x: embeddings of one sentence ``(n, K)`` or of a batch ``(B, n, K)``.
        sigma_f: the feature's per-unit spread over sentences, broadcastable to ``phi``'s
            output without its batch axis (and position axis), or ``None`` to estimate it from
            the batch (:func:`feature_scale`, needs ``B >= 2``). Units with ``sigma_f = 0``
            (constant, e.g. saturated) carry no information and are left out of the loss.
        mask: ``(B, n)`` booleans, true at real words (default: all).
        lam: the weight of the entropy term (larger: more noise everywhere).
        scale: the largest noise scale; ``sigma_i = scale * sigmoid(r_i)``.
        steps, draws, lr: Adam steps, noise samples per step, initial learning rate (decays to
            zero on a cosine).
        seed: seeds the noise.
        progress: show a progress bar over the steps.
    """
    single = x.dim() == 2
    if single:
        x = x.unsqueeze(0)
    if x.dim() != 3:
        raise ValueError(f"x must be embeddings (n, K) or a batch (B, n, K); got shape {tuple(x.shape)}")
    batch, length, dim = x.shape
    if mask is None:
        mask = torch.ones(batch, length, dtype=torch.bool, device=x.device)
    mask = mask.to(device=x.device, dtype=torch.bool)
    if mask.shape != (batch, length):
        raise ValueError(f"mask must have shape {(batch, length)} like x's first two axes; got {tuple(mask.shape)}")
    if not mask.any(1).all():
        raise ValueError("every sentence needs at least one unmasked word")
    if steps < 1 or draws < 1:
        raise ValueError(f"steps and draws must be >= 1; got steps={steps}, draws={draws}")
    x = x.detach()

    with torch.no_grad():
        target = phi(x)
    if target.shape[0] != batch:
        raise ValueError(f"phi must keep the batch axis: {batch} sentences in, output shape {tuple(target.shape)}")
    if sigma_f is None:
        sigma_f = feature_scale(target, mask)
    sigma_f = torch.as_tensor(sigma_f, dtype=target.dtype, device=target.device)
    informative = sigma_f > 0
    # Weight 1/sigma_f^2 per element; constant units get weight 0 rather than a division by zero.
    inverse_variance = torch.where(informative, sigma_f.clamp_min(torch.finfo(sigma_f.dtype).tiny) ** -2, 0.0)
    element_weight = _position_mask(target, mask) * inverse_variance.expand(target.shape[1:])
    counted = (element_weight > 0).to(target.dtype).flatten(1).sum(1)
    if (counted == 0).any():
        raise ValueError("phi is constant (sigma_f = 0) in every unit for some sentence: nothing to explain")

    generator = torch.Generator(device=x.device).manual_seed(seed)
    logit = torch.zeros(batch, length, dtype=x.dtype, device=x.device, requires_grad=True)
    # beta2 = 0.9: the loss's gradient shrinks by orders of magnitude as sigma falls; a long
    # memory of the first steps' large gradients would stall the approach.
    optimizer = torch.optim.Adam([logit], lr=lr, betas=(0.9, 0.9))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
    words = mask.to(x.dtype)
    for _ in tqdm(range(steps), desc="word information", disable=not progress, leave=False):
        sigma = scale * torch.sigmoid(logit) * words
        noise = torch.randn((draws, batch, length, dim), generator=generator, dtype=x.dtype, device=x.device)
        noisy = (x + sigma[..., None] * noise).reshape(draws * batch, length, dim)
        error = (phi(noisy).reshape(draws, *target.shape) - target) ** 2
        mse = (error * element_weight).mean(0).flatten(1).sum(1) / counted
        log_sigma = (torch.nn.functional.logsigmoid(logit) * words).sum(1) / words.sum(1)
        loss = (mse - lam * log_sigma).sum()
        (logit.grad,) = torch.autograd.grad(loss, logit)
        optimizer.step()
        schedule.step()

    with torch.no_grad():
        sigma = torch.where(mask, scale * torch.sigmoid(logit), torch.nan)
        entropy = dim / 2 * math.log(2 * math.pi * math.e) + dim * torch.log(sigma)
    if single:
        sigma, entropy = sigma[0], entropy[0]
    return WordInformation(sigma, entropy)
