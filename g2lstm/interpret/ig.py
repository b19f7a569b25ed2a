"""Integrated Gradients (Sundararajan, Taly & Yan, ICML 2017) through Captum.

``IG_i(x) = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x')) / dx_i da``. Captum computes the
path integral; this module fixes the contract (one scalar per example, completeness gap returned)
and refuses models whose evaluation gates are step functions, for which the gap does not shrink.
"""

from __future__ import annotations

from typing import Callable

import torch
from captum.attr import IntegratedGradients
from torch import nn


def _scalar_per_example(forward: Callable[..., torch.Tensor]):
    def checked(*inputs: torch.Tensor) -> torch.Tensor:
        out = forward(*inputs)
        size = inputs[0].shape[0]
        if out.shape != (size,):
            raise ValueError(
                f"forward must map a batch of {size} inputs to one scalar per example, "
                f"shape ({size},); got shape {tuple(out.shape)}"
            )
        return out

    return checked


def integrated_gradients(
    forward: Callable[..., torch.Tensor],
    inputs: torch.Tensor | tuple[torch.Tensor, ...],
    baselines: torch.Tensor | float | tuple | None = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated Gradients of ``forward`` at ``inputs`` along the straight path from ``baselines``.

    Args:
        forward: maps a batch of inputs ``(N, ...)`` to one scalar per example ``(N,)``
            (attribute logits, not probabilities); with a tuple of inputs, ``forward(*inputs)``.
        inputs: ``(N, ...)``, or a tuple of such tensors (e.g. source and target embeddings).
        baselines: like the inputs (a tensor or a number per input), or ``None`` for zeros.
        n_steps, method: the quadrature (Captum's names: ``'gausslegendre'``, ``'riemann_trapezoid'``...).
        internal_batch_size: how many path points are evaluated in one call (memory bound).

    Returns:
        ``(attributions, delta)``: attributions of the inputs' shape (a tuple for a tuple) and, per example,
        ``delta = sum(attributions) - (F(x) - F(baseline))`` (completeness gap).
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    _check_baselines(inputs, baselines)
    ig = IntegratedGradients(_scalar_per_example(forward))
    attributions, delta = ig.attribute(
        inputs,
        baselines=baselines,
        n_steps=n_steps,
        method=method,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    return attributions, delta


def _check_baselines(inputs, baselines) -> None:
    """Baselines Captum can pair with the inputs, or a ValueError saying which does not fit (Captum's
    own check is an assertion without the shapes)."""
    if baselines is None:
        return
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    baselines = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(baselines) != len(inputs):
        raise ValueError(f"baselines: expected one per input ({len(inputs)}), got {len(baselines)}")
    for k, (x, base) in enumerate(zip(inputs, baselines)):
        if isinstance(base, (int, float)):
            continue
        if not isinstance(base, torch.Tensor):
            raise ValueError(f"baselines[{k}]: expected a number or a tensor, got {type(base).__name__}")
        if tuple(base.shape) not in (tuple(x.shape), (1, *x.shape[1:])):
            raise ValueError(f"baselines[{k}]: expected a tensor of the input's shape {tuple(x.shape)} (or "
                             f"{(1, *x.shape[1:])}, one baseline for every example), got shape {tuple(base.shape)}")


def require_soft_gates(model: nn.Module) -> None:
    """Raise if a recurrent layer of ``model`` evaluates its stochastic gates as step functions.

    A hard gate ``a >= 0`` has a zero gradient almost everywhere and jumps where ``a = 0``, so
    the path integral misses the jumps and completeness fails however many steps are taken.
    """
    hard = [
        name
        for name, module in model.named_modules()
        if getattr(module, "eval_gates", None) == "hard" and getattr(module, "stochastic_gates", ())
    ]
    if hard:
        raise ValueError(
            f"Integrated Gradients needs differentiable gates, but {hard} evaluate their stochastic "
            "gates as hard steps (eval_gates='hard'), which breaks completeness; set "
            "eval_gates='soft' on these layers (their weights stay the same) to attribute the model"
        )
