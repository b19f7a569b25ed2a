"""Data-parallel shards: which rows of the global batch this process computes.

With data parallelism every process (rank) runs the model on its own rows of one global batch. For
the result not to depend on how many processes share the batch, every random number a row gets
must be the one it gets in a single process running the whole batch:

- the Gumbel gate noise is keyed by the row's GLOBAL index and the GLOBAL batch size
  (:class:`g2lstm.noise.NoiseKey`'s ``row_offset`` and ``global_batch``);
- a per-row dropout mask is drawn for the whole global batch, from the same generator state on
  every rank, and each rank keeps its own rows (:func:`dropout`), so every rank consumes torch's
  generator identically and the gate-noise seeds drawn from it agree too.

A trainer says which rows it holds with the explicit seam :func:`batch_shard`; outside it (every
existing use) a batch is the whole batch, and nothing changes::

    with g2lstm.shard.batch_shard(offset=rank * rows, rows=rows, global_rows=world * rows):
        loss = model(local_batch) ...
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


@dataclass(frozen=True)
class BatchShard:
    """Rows ``[offset, offset + rows)`` of a global batch of ``global_rows`` rows; ``lengths``: the
    global batch's sequence lengths, needed by a layer with inter-layer dropout over packed input."""

    offset: int
    rows: int
    global_rows: int
    lengths: tuple[int, ...] | None = None

    def __post_init__(self):
        if not (0 <= self.offset and 0 < self.rows and self.offset + self.rows <= self.global_rows):
            raise ValueError(f"a batch shard needs 0 <= offset and 0 < rows with offset + rows <= global_rows; "
                             f"got offset={self.offset}, rows={self.rows}, global_rows={self.global_rows}")
        if self.lengths is not None and len(self.lengths) != self.global_rows:
            raise ValueError(f"batch_shard lengths must give the {self.global_rows} global rows' lengths, "
                             f"got {len(self.lengths)}")

    def check(self, batch: int, what: str) -> None:
        """A clear error when ``what`` runs a batch of another size than this shard's rows."""
        if batch != self.rows:
            raise ValueError(f"{what} ran a batch of {batch} rows inside batch_shard(rows={self.rows}); "
                             "the shard must describe the batch the model runs")


_CURRENT: contextvars.ContextVar[BatchShard | None] = contextvars.ContextVar("g2lstm_batch_shard", default=None)


def current() -> BatchShard | None:
    """The shard set by the innermost :func:`batch_shard`, or None (the batch is the whole batch)."""
    return _CURRENT.get()


def splitting() -> BatchShard | None:
    """The current shard when it is a strict part of its global batch, else None: a shard that is
    the whole batch (one process) draws what torch draws, through torch's own functions."""
    shard = _CURRENT.get()
    return shard if shard is not None and shard.rows != shard.global_rows else None


@contextlib.contextmanager
def batch_shard(offset: int, rows: int, global_rows: int, lengths=None):
    """Inside, models compute rows ``[offset, offset + rows)`` of a batch of ``global_rows`` rows:
    gate noise and per-row dropout masks are those of these rows in the global batch. ``lengths``
    (the global batch's sequence lengths) lets a multi-layer ``G2LSTM`` over packed input draw
    its inter-layer dropout in the packed layout of the global batch, as one process does."""
    lengths = None if lengths is None else tuple(int(n) for n in lengths)
    token = _CURRENT.set(BatchShard(int(offset), int(rows), int(global_rows), lengths))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def dropout_mask(like: torch.Tensor, shape: tuple[int, ...], batch_dim: int, p: float) -> torch.Tensor:
    """A dropout mask of ``shape`` (values 0 and ``1 / (1 - p)``) with ``like``'s dtype and device,
    whose rows along ``batch_dim`` are the current shard's rows of the global batch's mask."""
    shard = current()
    if shard is not None:
        shard.check(shape[batch_dim], "a dropout mask")
    if splitting() is None:
        return like.new_empty(shape).bernoulli_(1 - p).div_(1 - p)
    global_shape = list(shape)
    global_shape[batch_dim] = shard.global_rows
    mask = like.new_empty(global_shape).bernoulli_(1 - p).div_(1 - p)
    return mask.narrow(batch_dim, shard.offset, shard.rows)


def dropout(x: torch.Tensor, p: float, training: bool = True, batch_dim: int = 0) -> torch.Tensor:
    """``F.dropout(x, p, training)`` (the same numbers outside a shard), with the mask drawn for the
    global batch inside :func:`batch_shard` (``batch_dim``: the dimension of the batch rows)."""
    if splitting() is None or not training or p == 0:
        return F.dropout(x, p, training)
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if p == 1:
        return x * 0
    return x * dropout_mask(x, tuple(x.shape), batch_dim, p)


def packed_dropout(padded: torch.Tensor, lengths: torch.Tensor, p: float, enforce_sorted: bool) -> torch.Tensor:
    """Dropout of a time-major ``(T, N, F)`` tensor whose real steps are a packed sequence's
    (``lengths``, packed with ``enforce_sorted``), inside a shard that splits its batch: the mask
    ``F.dropout`` draws on the CPU on the packed data of the GLOBAL batch (from the shard's
    ``lengths``), cut to this shard's rows."""
    shard = splitting()
    if shard.lengths is None:
        raise ValueError("inter-layer dropout over packed input inside batch_shard needs the global batch's "
                         "lengths: batch_shard(offset, rows, global_rows, lengths=...)")
    global_lengths = torch.tensor(shard.lengths, dtype=torch.int64)
    if not torch.equal(global_lengths[shard.offset:shard.offset + shard.rows], lengths.cpu()):
        raise ValueError(f"the packed input's lengths {lengths.tolist()} are not rows [{shard.offset}, "
                         f"{shard.offset + shard.rows}) of the shard's lengths {list(shard.lengths)}")
    steps = int(global_lengths.max())
    layout = pack_padded_sequence(torch.zeros(steps, shard.global_rows, 1, device=padded.device), global_lengths,
                                  enforce_sorted=enforce_sorted)
    mask = padded.new_empty(layout.data.shape[0], padded.shape[-1]).bernoulli_(1 - p).div_(1 - p)
    mask = PackedSequence(mask, layout.batch_sizes, layout.sorted_indices, layout.unsorted_indices)
    mask = pad_packed_sequence(mask, total_length=steps)[0]
    return padded * mask[:padded.shape[0], shard.offset:shard.offset + shard.rows]


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose mask follows :func:`batch_shard` (see :func:`dropout`)."""

    def __init__(self, p: float = 0.5, batch_dim: int = 0):
        super().__init__(p)
        self.batch_dim = batch_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.batch_dim)
