"""What every model of the package offers to the tools that look inside it.

A model (the LM :class:`g2lstm.lm.model.AWDLSTM`, the translator :class:`g2lstm.mt.model.Seq2Seq`,
the models of other tasks) keeps its own ``forward`` and adds fairseq's seams:

- ``embed(batch) -> {side: embeddings}``: the embeddings of each input side, produced by calling
  ``nn.Embedding`` modules, so forward hooks on them fire (attribution libraries rely on it);
- ``extract_features(batch, embedded=None) -> features``: the model run from given embeddings
  (default: ``embed(batch)``) up to the output layer;
- ``output_layer(features) -> logits``;
- ``recurrent_layers() -> {module path: nn.LSTM}``: the layers :mod:`g2lstm.trace` records.

So ``model.output_layer(model.extract_features(batch, model.embed(batch)))`` is the model's output
for ``batch``, and replacing an entry of the embeddings (scaled, interpolated towards a baseline)
is how Integrated Gradients walks from a baseline to the input.

``CELLS`` is the one mapping from a config's ``model.cell`` to :class:`g2lstm.G2LSTM`'s ``gates``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from . import config
from .reference import TRAIN_GATES
from .rnn import G2LSTM

# model.cell -> G2LSTM(gates=...): the paper's baseline, its sharpened-sigmoid baseline, G2-LSTM.
CELLS = {"lstm": "sigmoid", "sharpened": "sharpened", "g2lstm": "gumbel"}
# G2LSTM keywords a task's model.g2_options may set (cell, tau and noise_p are the config's own fields)
G2_OPTIONS = ("stochastic_gates", "noise_mode", "eval_gates", "train_gates", "weight_drop", "impl")


def check_g2_options(cfg) -> None:
    """Refuse, at composition, a ``model.g2_options`` key that G2LSTM would reject only when built."""
    config.require(cfg, "g2_options", lambda o: set(o) <= set(G2_OPTIONS), f"G2LSTM keywords among {list(G2_OPTIONS)}")
    check_train_gates(cfg.cell, cfg.g2_options.get("train_gates", "soft"), "g2_options.train_gates")


def check_train_gates(cell: str, train_gates: str, key: str = "train_gates") -> None:
    """``train_gates`` is 'soft' or 'hard', and 'hard' (straight-through) only for a cell whose gates
    it rounds: the LSTM's plain sigmoids have no training formula to round."""
    if train_gates not in TRAIN_GATES:
        raise config.ConfigValueError(key, train_gates, f"one of {list(TRAIN_GATES)}")
    if train_gates == "hard" and cell == "lstm":
        raise config.ConfigValueError(key, train_gates, "'soft' with model.cell='lstm' (straight-through "
                                      "gates round those of model.cell='g2lstm' or 'sharpened')")


def check_cell(cell: str) -> str:
    """``cell`` itself if it is a known ``model.cell``; a clear error otherwise."""
    if cell not in CELLS:
        raise ValueError(f"model.cell must be one of {sorted(CELLS)}, got {cell!r}")
    return cell


def recurrent_layer(cell: str, input_size: int, hidden_size: int, **options) -> G2LSTM:
    """A :class:`G2LSTM` whose gates are those of ``model.cell`` (options as ``G2LSTM``'s)."""
    return G2LSTM(input_size, hidden_size, gates=CELLS[check_cell(cell)], **options)


@dataclass
class Batch:
    """A batch as the tools see it.

    ``inputs``: the tensors the model's seams read (e.g. LM ``{"words": (T, N)}``, MT ``{"src",
    "src_lengths", "tgt_in"}``); ``tokens``: per input side (the keys of ``embed``), per example,
    the token strings aligned to the steps (padding excluded); ``targets``: what the outputs are
    scored against (next words, target tokens, labels), or None.
    """

    inputs: dict[str, torch.Tensor]
    tokens: dict[str, list[list[str]]] = field(default_factory=dict)
    targets: torch.Tensor | None = None

    def to(self, device) -> "Batch":
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.inputs.items()}
        targets = self.targets.to(device) if self.targets is not None else None
        return Batch(moved, self.tokens, targets)


@runtime_checkable
class InspectableModel(Protocol):
    def embed(self, batch: Batch) -> dict[str, torch.Tensor]: ...

    def extract_features(self, batch: Batch, embedded: dict[str, torch.Tensor] | None = None) -> torch.Tensor: ...

    def output_layer(self, features: torch.Tensor) -> torch.Tensor: ...

    def recurrent_layers(self) -> dict[str, nn.LSTM]: ...


def lstm_layers(model: nn.Module) -> dict[str, nn.LSTM]:
    """Every ``nn.LSTM`` (``G2LSTM`` included) inside ``model``, by module path; an error if none."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, nn.LSTM)}
    if not layers:
        raise ValueError(f"expected a module containing nn.LSTM or G2LSTM layers, got {type(model).__name__} with none")
    return layers
