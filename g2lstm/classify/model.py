"""Sentence classifier (and per-token tagger) whose recurrent layers are a G2LSTM.

    embedding -> dropout -> (bi)G2LSTM over packed sequences -> pooling -> dropout -> linear

Pooling turns the per-token states into one vector per sentence: ``last`` (the final state of
each direction: the forward one after the last token, the backward one after the first), ``mean``
or ``max`` over the real tokens; ``none`` keeps one vector per token, which makes the model a
tagger (the transliteration model, :mod:`g2lstm.translit.model`).

``cell`` switches the recurrent layers: ``lstm`` (plain sigmoid gates), ``sharpened``
(``sigmoid(a / tau)`` input and forget gates) or ``g2lstm`` (Gumbel-sigmoid gates in training).

The model protocol (:mod:`g2lstm.protocol`): ``embed(batch)`` -> ``{"tokens": (N, T, E)}`` through
the ``nn.Embedding`` module (hooks fire; dropout follows in ``extract_features``),
``extract_features(batch, embedded)`` -> pooled features ``(N, D)`` (``(N, T, D)`` for ``none``),
``output_layer(features)`` -> logits, ``recurrent_layers()`` -> ``{"rnn": G2LSTM}``. A batch's
``inputs`` hold ``tokens`` ``(N, T)`` padded with :data:`PAD_ID` and ``lengths`` ``(N,)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .. import config, shard
from ..protocol import CELLS, Batch, check_g2_options, recurrent_layer

POOLINGS = ("last", "mean", "max", "none")
PAD_ID = 0  # padding id of the inputs (g2lstm.data.symbols.SymbolTable's <pad>)


@dataclass(kw_only=True)
class RecurrentModelConfig:
    """The recurrent part of the model: the schema of ``g2lstm/conf/translit/model`` (the
    transliterator fixes the rest) and the base of :class:`ClassifierModelConfig`."""

    cell: str = "lstm"  # lstm | sharpened | g2lstm
    embed_dim: int = 128
    hidden_dim: int = 128  # per direction
    num_layers: int = 1
    dropout: float = 0.5  # on embeddings, between layers and on the features
    tau: float = 0.9  # G2 / sharpened temperature (paper: 0.9)
    noise_p: float = 0.2  # probability that a gate gets Gumbel noise (paper: 0.2)
    g2_options: dict[str, Any] = field(default_factory=dict)  # further G2LSTM keywords (noise_mode, ...)

    def __post_init__(self):
        config.one_of(self, "cell", CELLS)
        config.positive(self, "embed_dim", "hidden_dim", "num_layers", "tau")
        config.dropout(self, "dropout")
        config.probability(self, "noise_p")
        check_g2_options(self)


@dataclass(kw_only=True)
class ClassifierModelConfig(RecurrentModelConfig):
    """The schema of ``g2lstm/conf/classify/model``: the architecture (sizes come from the data)."""

    tagger: ClassVar[bool] = False  # may pooling be 'none' (one output per token)? The classify schema: no
    bidirectional: bool = True
    pooling: str = "max"  # last | mean | max | none (one output per token)

    def __post_init__(self):
        super().__post_init__()
        config.one_of(self, "pooling", POOLINGS)
        # a sentence classifier needs one vector per sentence: 'none' gives one per token (the transliterator's)
        config.require(self, "pooling", lambda v: self.tagger or v != "none",
                       f"a sentence pooling among {[p for p in POOLINGS if p != 'none']} ('none', one output per "
                       "token, is the transliterator's)")


@dataclass
class ClassifierConfig(ClassifierModelConfig):
    """The architecture with the sizes the data give: ``ClassifierConfig(vocab_size, num_classes,
    **model_config)`` (stored in checkpoints as ``model_config``)."""

    tagger: ClassVar[bool] = True  # the architecture of the classifier and of the transliterator
    vocab_size: int
    num_classes: int

    def __post_init__(self):
        super().__post_init__()
        config.positive(self, "vocab_size", "num_classes")


config.store(ClassifierModelConfig, "classifier_schema", group="model")


class RNNClassifier(nn.Module):
    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=PAD_ID)
        self.dropout = shard.Dropout(cfg.dropout)  # batch first: rows are dimension 0
        self.rnn = recurrent_layer(
            cfg.cell, cfg.embed_dim, cfg.hidden_dim, num_layers=cfg.num_layers, bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0, batch_first=True,
            tau=cfg.tau, noise_p=cfg.noise_p, **cfg.g2_options,
        )
        self.output = nn.Linear(cfg.hidden_dim * (2 if cfg.bidirectional else 1), cfg.num_classes)

    # --- the model protocol (g2lstm.protocol)

    def embed(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"tokens": (N, T, E)}``, before dropout (applied in :meth:`extract_features`)."""
        return {"tokens": self.embedding(batch.inputs["tokens"])}

    def extract_features(self, batch: Batch, embedded: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        embedded = self.embed(batch) if embedded is None else embedded
        return self._features(self.dropout(embedded["tokens"]), batch.inputs["lengths"])

    def output_layer(self, features: torch.Tensor) -> torch.Tensor:
        return self.output(self.dropout(features))

    def recurrent_layers(self) -> dict[str, nn.LSTM]:
        return {"rnn": self.rnn}

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens (N, T) padded with PAD_ID, lengths (N,) >= 1 -> logits (N, C), or (N, T, C) with
        pooling ``none``."""
        return self.output_layer(self.extract_features(Batch({"tokens": tokens, "lengths": lengths})))

    def _features(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, _) = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=embedded.size(1))
        pooling = self.cfg.pooling
        if pooling == "none":
            return states
        if pooling == "last":  # h: (layers * directions, N, H); the top layer's rows are last
            directions = 2 if self.cfg.bidirectional else 1
            return torch.cat(list(h[-directions:]), dim=-1)
        real = (torch.arange(embedded.size(1), device=lengths.device) < lengths.unsqueeze(1)).unsqueeze(-1)
        if pooling == "mean":
            return (states * real).sum(1) / lengths.unsqueeze(1).to(states.dtype)
        return states.masked_fill(~real, float("-inf")).amax(1)

    def config_dict(self) -> dict:
        return asdict(self.cfg)
