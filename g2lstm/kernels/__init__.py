"""Implementations of one LSTM layer direction, and the choice among them.

Every entry of ``IMPLEMENTATIONS`` has the signature of :func:`g2lstm.reference.lstm_direction`
(with ``noise`` a :class:`g2lstm.noise.NoiseKey` or ``None``) and computes what the reference
computes; the reference defines correctness and every kernel is tested against it.
"""

from __future__ import annotations

import torch

from .. import reference

IMPLEMENTATIONS = {
    "reference": reference.lstm_direction,
}


def select_impl(impl: str, device: torch.device) -> str:
    """The implementation to run: ``impl`` itself unless it is ``'auto'``."""
    if impl == "auto":
        return "reference"
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be 'auto' or one of {sorted(IMPLEMENTATIONS)}, got {impl!r}")
    return impl
