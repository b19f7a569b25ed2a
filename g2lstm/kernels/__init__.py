"""Implementations of one LSTM layer direction, and the choice among them.

Every entry of ``IMPLEMENTATIONS`` has the signature of :func:`g2lstm.reference.lstm_direction`
(with ``noise`` a :class:`g2lstm.noise.NoiseKey` or ``None``) and computes what the reference
computes; the reference defines correctness and every kernel is tested against it.

- ``'reference'``: the pure-PyTorch loop, autograd for the backward.
- ``'bptt'``: a hand-written backward through time with torch pointwise ops (any device).
- ``'cpu'``: forward and backward loops in a C++ extension built at first use (falls back to
  ``'bptt'`` with a warning when no C++ compiler is found).
``'auto'`` picks ``'cpu'`` on the CPU and the reference elsewhere.
"""

from __future__ import annotations

import torch

from .. import reference
from . import bptt, cpu

IMPLEMENTATIONS = {
    "reference": reference.lstm_direction,
    "bptt": bptt.lstm_direction,
    "cpu": cpu.lstm_direction,
}

HAS_TRITON = False  # the Triton kernels are not registered yet


def select_impl(impl: str, device: torch.device) -> str:
    """The implementation to run: ``impl`` itself unless it is ``'auto'``."""
    if impl == "auto":
        device = torch.device(device)
        if device.type == "cuda" and HAS_TRITON:
            return "triton"
        if device.type == "cpu":
            return "cpu"
        return "reference"
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be 'auto' or one of {sorted(IMPLEMENTATIONS)}, got {impl!r}")
    return impl
