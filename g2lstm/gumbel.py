"""The Gumbel-sigmoid estimator of a Bernoulli gate (Li et al. 2018, eq. 6)."""

from __future__ import annotations

import torch

from .noise import logistic


def _check_tau_p(tau: float, p: float) -> None:
    if not tau > 0:
        raise ValueError(f"tau must be a positive temperature, got {tau}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")


def gumbel_sigmoid(
    logits: torch.Tensor,
    tau: float = 1.0,
    p: float = 1.0,
    hard: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Sample the relaxed gate ``sigmoid((a + B * (log U - log(1 - U))) / tau)`` elementwise.

    ``U ~ Uniform(0, 1)`` and ``B ~ Bernoulli(p)`` are drawn independently for every element.
    As ``tau -> 0`` with ``p = 1`` the result is a Bernoulli sample with probability
    ``sigmoid(a)``; with ``p < 1`` only a share ``p`` of the elements is perturbed, the rest is
    ``sigmoid(a / tau)``.

    Args:
        logits: the gate pre-activations ``a``, any floating dtype (float16, bfloat16, float32,
            float64). The noise is drawn and the sigmoid taken in float32 (float64 for float64)
            and the result cast back, so it is finite for every ``U``.
        tau: the temperature, ``> 0``.
        p: the probability that an element is perturbed by noise.
        hard: return ``a + noise >= 0`` as 0/1 values in the forward pass with the gradient of
            the soft sample (straight-through), as ``torch.nn.functional.gumbel_softmax`` does.
        generator: the generator for ``U`` and ``B``; torch's default one when ``None``.

    Returns:
        A tensor of the shape and dtype of ``logits`` with values in ``[0, 1]``.
    """
    if not torch.is_floating_point(logits):
        raise TypeError(f"gumbel_sigmoid expects floating-point logits, got dtype {logits.dtype}")
    _check_tau_p(tau, p)
    compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    kwargs = dict(device=logits.device, generator=generator)
    # U on the 2**23 cell centres of (0, 1): exact in float32, never 0 or 1, so the noise is finite.
    u = (torch.randint(0, 2**23, logits.shape, **kwargs).to(compute_dtype) + 0.5) / 2**23
    noise = logistic(u)
    if p < 1.0:
        noise = noise * (torch.rand(logits.shape, dtype=compute_dtype, **kwargs) < p)
    soft = torch.sigmoid((logits.to(compute_dtype) + noise) / tau)
    if hard:
        soft = (soft >= 0.5).to(compute_dtype) - soft.detach() + soft
    return soft.to(logits.dtype)
