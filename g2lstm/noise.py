"""Counter-based Gumbel (logistic) noise for the stochastic gates.

The noise of element ``(t, n, g, j)`` (step, batch row, stochastic gate, hidden unit) is a pure
function of a seed, a stream (one per layer and direction) and the element's index, so that a fused
kernel can draw it in registers: its ``U`` and ``B`` match this reference bit for bit on any device
(its own float32 logarithm puts the perturbation within a few ulp of the reference's).

Recipe, all in unsigned 32-bit arithmetic (wrap-around multiplication):

    key   = mix32(seed_lo ^ mix32(seed_hi ^ mix32(stream * 2 + which)))   # which: 0 for U, 1 for B
    bits  = mix32(index ^ key)          # index = ((t * N + n) * G + g) * H + j
    u     = ((bits >> 9) + 0.5) / 2**23  # exact in float32, strictly inside (0, 1): |logit u| < 16.7
    U-noise  = log(u) - log(1 - u);   B = (u_B < p)

``mix32`` is a bijective 32-bit integer finaliser (xor-shift / multiply rounds). ``N`` and ``n``
are the GLOBAL batch size and row: a process that runs rows ``[offset, offset + rows)`` of a larger
batch (data parallelism, :mod:`g2lstm.shard`) sets ``NoiseKey.row_offset`` and
``NoiseKey.global_batch`` and draws exactly the noise those rows get in the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

NOISE_MODES = ("step", "sequence", "sequence_mask")

_MASK32 = 0xFFFFFFFF
_MUL1 = 0x7FEB352D
_MUL2 = 0x846CA68B


@dataclass(frozen=True)
class NoiseKey:
    """Everything that determines the gate noise of one layer and direction in one forward."""

    seed: int  # 64-bit seed drawn from torch's generator once per forward
    stream: int  # layer * num_directions + direction
    p: float  # probability that an element is perturbed (the paper's 0.2)
    mode: str = "step"  # see NOISE_MODES
    row_offset: int = 0  # the global row of the batch's row 0 (data-parallel shards)
    global_batch: int | None = None  # rows of the global batch; None: the batch is the whole batch

    def __post_init__(self):
        if self.mode not in NOISE_MODES:
            raise ValueError(f"noise mode must be one of {NOISE_MODES}, got {self.mode!r}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"noise probability p must be in [0, 1], got {self.p}")
        if self.row_offset < 0 or (self.global_batch is None and self.row_offset):
            raise ValueError(f"row_offset must be >= 0 and needs a global_batch; got row_offset={self.row_offset}, "
                             f"global_batch={self.global_batch}")

    def rows(self, batch: int) -> tuple[int, int]:
        """``(row_offset, global batch size)`` for a batch of ``batch`` rows, checked."""
        total = batch if self.global_batch is None else self.global_batch
        if self.row_offset + batch > total:
            raise ValueError(f"a batch of {batch} rows at row_offset={self.row_offset} does not fit in "
                             f"global_batch={total}")
        return self.row_offset, total


def mix32_int(x: int) -> int:
    """``mix32`` on a Python int (used for the per-stream keys)."""
    x &= _MASK32
    x ^= x >> 16
    x = (x * _MUL1) & _MASK32
    x ^= x >> 15
    x = (x * _MUL2) & _MASK32
    x ^= x >> 16
    return x


def _mul32(x: torch.Tensor, m: int) -> torch.Tensor:
    # (x * m) mod 2**32 in int64 without overflow: split m into 16-bit halves.
    low = x * (m & 0xFFFF)
    high = ((x * (m >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, _MUL1)
    x = x ^ (x >> 15)
    x = _mul32(x, _MUL2)
    return x ^ (x >> 16)


def stream_key(seed: int, stream: int, which: int) -> int:
    """The 32-bit key of one random stream: ``which`` is 0 for the uniforms U, 1 for the mask B."""
    seed_lo, seed_hi = seed & _MASK32, (seed >> 32) & _MASK32
    return mix32_int(seed_lo ^ mix32_int(seed_hi ^ mix32_int(stream * 2 + which)))


def counter_uniform(key: int, index: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1), float32, from 32-bit ``key`` and int64 element indices."""
    bits = _mix32((index & _MASK32) ^ key)
    # 23 bits, so that u and 1 - u are exact in float32 and never round to 0 or 1.
    return ((bits >> 9).to(torch.float32) + 0.5) * (1.0 / 8388608.0)


def logistic(u: torch.Tensor) -> torch.Tensor:
    """``log u - log(1 - u)``: the difference of two Gumbels, i.e. logistic noise."""
    return torch.log(u) - torch.log1p(-u)


def gate_noise(
    key: NoiseKey,
    steps: int,
    batch: int,
    num_gates: int,
    hidden: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The noise ``B * logistic(U)`` of one layer and direction, shape ``(T', N, G, H)``.

    ``T' = steps`` in mode ``'step'`` and ``'sequence_mask'``, ``1`` in mode ``'sequence'``
    (one draw per forward, broadcast over time). In ``'sequence_mask'`` the mask ``B`` is drawn
    once per forward and ``U`` fresh every step, as the official code's ``new_U`` option.
    """
    shape = (1 if key.mode == "sequence" else steps, batch, num_gates, hidden)
    offset, total = key.rows(batch)
    arange = partial(torch.arange, device=device, dtype=torch.int64)
    # ((t * N + n) * G + g) * H + j with the global N and row n
    row = arange(shape[0]).view(-1, 1, 1, 1) * total + offset + arange(batch).view(1, -1, 1, 1)
    index = row * (num_gates * hidden) + arange(num_gates * hidden).view(1, 1, num_gates, hidden)
    noise = logistic(counter_uniform(stream_key(key.seed, key.stream, 0), index))
    if key.p < 1.0:
        # In 'sequence_mask' the mask of every step is the mask of step 0.
        mask_index = index[:1] if key.mode == "sequence_mask" else index
        keep = counter_uniform(stream_key(key.seed, key.stream, 1), mask_index) < key.p
        noise = noise * keep
    return noise.to(dtype)


def draw_seed(generator: torch.Generator | None = None) -> int:
    """A fresh 63-bit seed from torch's (CPU) generator, so ``torch.manual_seed`` fixes the noise."""
    return int(torch.randint(0, 2**63 - 1, (), generator=generator, dtype=torch.int64))
