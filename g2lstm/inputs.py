"""One layout for an LSTM's inputs: padded, time-major, batched, with explicit initial states.

``nn.LSTM`` accepts padded or packed, batch-first or time-major, batched or unbatched input and an
optional ``(h_0, c_0)``. :func:`normalize` turns any of these into a :class:`SequenceBatch`, on
which the layer loop (:func:`g2lstm.rnn.run_layers`) runs, and :meth:`SequenceBatch.restore`
gives the loop's result back in the form the module returns. ``G2LSTM`` and :mod:`g2lstm.trace`
both use it. It reshapes only: the module checks its arguments before calling it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .reference import step_mask


@dataclass
class SequenceBatch:
    """An LSTM call's arguments in the loop's layout, and what is needed to undo it."""

    x: torch.Tensor  # (T, N, I), rows in the caller's order
    hx: tuple[torch.Tensor, torch.Tensor]  # (layers * directions, N, H_out), (..., N, H)
    lengths: torch.Tensor | None  # (N,) int64 on the CPU for packed input; None: every row is T long
    input: torch.Tensor | PackedSequence  # the caller's input, with a batch dimension
    batch_first: bool
    batched: bool

    @property
    def packed(self) -> PackedSequence | None:
        return self.input if isinstance(self.input, PackedSequence) else None

    @property
    def mask(self) -> torch.Tensor:
        """``(T, N)`` bool: True at the real (non-padding) steps."""
        steps, batch = self.x.shape[:2]
        mask = step_mask(self.lengths, steps, self.x.device)
        return torch.ones(steps, batch, dtype=torch.bool, device=self.x.device) if mask is None else mask

    def packed_data(self, padded: torch.Tensor) -> torch.Tensor:
        """The ``.data`` of packed input's layout for a padded time-major ``(T, N, F)`` tensor."""
        packed = self.packed
        lengths = self.lengths
        if packed.sorted_indices is not None:
            padded = padded.index_select(1, packed.sorted_indices)
            lengths = lengths.index_select(0, packed.sorted_indices.cpu())
        return pack_padded_sequence(padded, lengths, enforce_sorted=True).data

    def padded(self, data: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`packed_data`: ``(T, N, F)`` with zeros at padding."""
        packed = self.packed
        sequence = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        return pad_packed_sequence(sequence, total_length=self.x.shape[0])[0]

    def restore(self, output: torch.Tensor, h_n: torch.Tensor, c_n: torch.Tensor):
        """``(output, (h_n, c_n))`` in the module's form from the loop's ``(T, N, F)`` output."""
        packed = self.packed
        if packed is not None:
            data = self.packed_data(output)
            return PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices), (h_n, c_n)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not self.batched:
            return output.squeeze(0 if self.batch_first else 1), (h_n.squeeze(1), c_n.squeeze(1))
        return output, (h_n, c_n)


def normalize(lstm: nn.LSTM, input: torch.Tensor | PackedSequence, hx=None) -> SequenceBatch:
    """``lstm(input, hx)``'s arguments as a :class:`SequenceBatch` (missing states are zeros)."""
    lengths = None
    batched = True
    if isinstance(input, PackedSequence):
        x, lengths = pad_packed_sequence(input)  # (T, N, I), rows in the caller's order
    else:
        batched = input.dim() == 3
        if not batched:
            input = input.unsqueeze(0 if lstm.batch_first else 1)
        x = input.transpose(0, 1) if lstm.batch_first else input
    if hx is None:
        states = lstm.num_layers * (2 if lstm.bidirectional else 1)
        hx = (
            x.new_zeros(states, x.shape[1], lstm.proj_size or lstm.hidden_size),
            x.new_zeros(states, x.shape[1], lstm.hidden_size),
        )
    elif not batched:
        hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
    return SequenceBatch(x, tuple(hx), lengths, input, lstm.batch_first, batched)
