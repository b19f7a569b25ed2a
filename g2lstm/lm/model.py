"""The AWD-LSTM language model (Merity et al. 2018) with a switch between LSTM kinds.

Every recurrent layer is a one-layer ``g2lstm.G2LSTM``; ``cell`` picks its gates:
``lstm`` (plain sigmoid), ``sharpened`` (sigmoid(a / tau) on the input and forget gates) or
``g2lstm`` (Gumbel-sigmoid input and forget gates in training). Weight drop on ``W_hh`` is the
layer's own ``weight_drop`` option, so it works the same way for the three kinds and needs no
parameter re-registration hack.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from g2lstm import config, shard
from g2lstm.noise import NOISE_MODES
from g2lstm.reference import EVAL_GATES
from g2lstm.protocol import CELLS, Batch, check_cell, check_train_gates, lstm_layers, recurrent_layer


@dataclass
class LMModelConfig:
    """The schema of ``g2lstm/conf/lm/model``: the keyword arguments of :class:`AWDLSTM` (defaults: the
    paper's PTB sizes)."""

    cell: str = "g2lstm"
    emsize: int = 400
    nhid: int = 1150
    nlayers: int = 3
    tau: float = 1.0
    noise_p: float = 0.2
    noise_mode: str = "step"
    eval_gates: str = "soft"
    train_gates: str = "soft"  # hard: straight-through binary gates in training (G2LSTM's train_gates)
    dropout: float = 0.4
    dropouth: float = 0.3
    dropouti: float = 0.65
    dropoute: float = 0.1
    wdrop: float = 0.5
    tie_weights: bool = True

    def __post_init__(self):
        config.one_of(self, "cell", CELLS)
        config.positive(self, "emsize", "nhid", "nlayers", "tau")
        config.probability(self, "noise_p")
        config.one_of(self, "noise_mode", NOISE_MODES)
        config.one_of(self, "eval_gates", EVAL_GATES)
        check_train_gates(self.cell, self.train_gates)
        config.dropout(self, "dropout", "dropouth", "dropouti", "dropoute", "wdrop")


config.store(LMModelConfig, "awd_lstm_schema", group="model")


class LockedDropout(nn.Module):
    """Variational dropout: one mask per sequence, shared over time. Input is (T, N, F); in a
    data-parallel shard the mask is this shard's rows of the global batch's (:mod:`g2lstm.shard`)."""

    def forward(self, x: torch.Tensor, p: float) -> torch.Tensor:
        if not self.training or p == 0:
            return x
        return x * shard.dropout_mask(x, (1, x.size(1), x.size(2)), 1, p)


def embedding_dropout(embed: nn.Embedding, words: torch.Tensor, p: float) -> torch.Tensor:
    """Drop whole word types (rows of the embedding matrix) with probability ``p``, in training.

    As AWD-LSTM, the words are embedded with the row-masked matrix; the module itself is called
    with it (``torch.func.functional_call``), so its forward hooks fire.
    """
    if embed.training and p > 0:
        weight = embed.weight
        mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)
        return torch.func.functional_call(embed, {"weight": weight * mask}, (words,))
    return embed(words)


class AWDLSTM(nn.Module):
    """Embedding -> stacked recurrent layers -> (tied) softmax decoder.

    Dropouts, named as in AWD-LSTM: ``dropoute`` on word types of the embedding, ``dropouti`` on
    the embedded input, ``dropouth`` between recurrent layers, ``dropout`` on the last layer's
    output; ``wdrop`` is DropConnect on the hidden-to-hidden weights.
    """

    def __init__(self, vocab_size: int, emsize: int = 400, nhid: int = 1150, nlayers: int = 3,
                 cell: str = "g2lstm", tau: float = 1.0, noise_p: float = 0.2, noise_mode: str = "step",
                 eval_gates: str = "soft", train_gates: str = "soft", dropout: float = 0.4, dropouth: float = 0.3, dropouti: float = 0.65, dropoute: float = 0.1,
                 wdrop: float = 0.5, tie_weights: bool = True):
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers must be >= 1; got {nlayers}")
        self.cell = check_cell(cell)
        self.dropout, self.dropouth, self.dropouti, self.dropoute = dropout, dropouth, dropouti, dropoute
        self.encoder = nn.Embedding(vocab_size, emsize)
        self.lockdrop = LockedDropout()
        # With tied weights the last layer outputs emsize features so the decoder can share the
        # embedding matrix.
        sizes = [emsize] + [nhid] * (nlayers - 1) + [emsize if tie_weights else nhid]
        self.rnns = nn.ModuleList(
            recurrent_layer(cell, sizes[k], sizes[k + 1], tau=tau, noise_p=noise_p,
                            noise_mode=noise_mode, eval_gates=eval_gates, train_gates=train_gates,
                            weight_drop=wdrop)
            for k in range(nlayers)
        )
        self.decoder = nn.Linear(sizes[-1], vocab_size)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if self.decoder.weight is not self.encoder.weight:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def init_hidden(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        weight = self.encoder.weight
        return [(weight.new_zeros(1, batch_size, r.hidden_size), weight.new_zeros(1, batch_size, r.hidden_size))
                for r in self.rnns]

    def forward(self, words: torch.Tensor, hidden: list[tuple[torch.Tensor, torch.Tensor]]):
        """``words`` (T, N) -> logits (T, N, V), new hidden, and per-layer outputs for AR/TAR.

        Returns ``(logits, hidden, raw_outputs, dropped_outputs)``: the last layer's entry of
        ``raw_outputs`` is what the cache pointer attends over; ``dropped_outputs[-1]`` is what AR
        penalises and ``raw_outputs[-1]`` what TAR penalises, as in AWD-LSTM.
        """
        embedded = embedding_dropout(self.encoder, words, self.dropoute)
        features, new_hidden, raw_outputs, dropped_outputs = self._recurrent(embedded, hidden)
        return self.output_layer(features), new_hidden, raw_outputs, dropped_outputs

    def _recurrent(self, embedded: torch.Tensor, hidden):
        x = self.lockdrop(embedded, self.dropouti)
        new_hidden, raw_outputs, dropped_outputs = [], [], []
        for k, rnn in enumerate(self.rnns):
            x, state = rnn(x, hidden[k])
            new_hidden.append(state)
            raw_outputs.append(x)
            x = self.lockdrop(x, self.dropout if k == len(self.rnns) - 1 else self.dropouth)
            dropped_outputs.append(x)
        return x, new_hidden, raw_outputs, dropped_outputs

    # -------------------------------------------------------------- seams (g2lstm.protocol)
    def embed(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"tokens": (T, N, E)}`` for ``batch.inputs["words"]`` (T, N)."""
        return {"tokens": embedding_dropout(self.encoder, batch.inputs["words"], self.dropoute)}

    def extract_features(self, batch: Batch, embedded: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The last layer's (dropped) output (T, N, E), from zero initial states."""
        embedded = self.embed(batch) if embedded is None else embedded
        tokens = embedded["tokens"]
        return self._recurrent(tokens, self.init_hidden(tokens.size(1)))[0]

    def output_layer(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(features)

    def recurrent_layers(self) -> dict[str, nn.LSTM]:
        return lstm_layers(self)


def detach_hidden(hidden):
    """Cut the graph between BPTT segments (the hidden values carry over)."""
    return [(h.detach(), c.detach()) for h, c in hidden]
