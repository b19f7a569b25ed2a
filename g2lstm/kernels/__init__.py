"""Implementations of one LSTM layer direction, and the choice among them.

Every entry of ``IMPLEMENTATIONS`` has the signature of :func:`g2lstm.reference.lstm_direction`
(with ``noise`` a :class:`g2lstm.noise.NoiseKey` or ``None``) and computes what the reference
computes; the reference defines correctness and every kernel is tested against it.

- ``'reference'``: the pure-PyTorch loop, autograd for the backward.
- ``'bptt'``: a hand-written backward through time with torch pointwise ops (any device).
- ``'cpu'``: forward and backward loops in a C++ extension built at first use (falls back to
  ``'bptt'`` with a warning when no C++ compiler is found).
- ``'triton'``: the per-step pointwise work fused in Triton kernels, noise drawn in the kernel
  (CUDA; on CPU only under ``TRITON_INTERPRET=1``, for tests; otherwise the reference).
``'auto'`` picks ``'triton'`` on CUDA when Triton is installed, ``'cpu'`` on the CPU, and the
reference elsewhere.
"""

from __future__ import annotations

import importlib.util

import torch

from .. import reference
from . import bptt, cpu

IMPLEMENTATIONS = {
    "reference": reference.lstm_direction,
    "bptt": bptt.lstm_direction,
    "cpu": cpu.lstm_direction,
}

HAS_TRITON = importlib.util.find_spec("triton") is not None


def _triton_direction(*args, **kwargs):
    # imported at first use: importing triton costs a second that CPU users need not pay
    from . import triton_lstm

    return triton_lstm.lstm_direction(*args, **kwargs)


if HAS_TRITON:
    IMPLEMENTATIONS["triton"] = _triton_direction


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
