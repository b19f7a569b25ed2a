"""Attention encoder-decoder (Luong et al. 2015 style) whose every recurrent layer is a G2LSTM.

Encoder: embedding -> bidirectional multi-layer G2LSTM over packed sequences.
Decoder: embedding (concatenated with the previous attentional state when ``input_feeding``) ->
multi-layer G2LSTM -> attention over the encoder states -> ``tanh(W_c [context; h])`` (the
attentional state, of embedding size) -> output projection tied to the decoder embedding.

``cell`` switches every recurrent layer at once: ``lstm`` (plain sigmoid gates), ``sharpened``
(``sigmoid(a / tau)`` input and forget gates) or ``g2lstm`` (Gumbel-sigmoid gates in training).
With input feeding the decoder runs one token at a time (the G2LSTM over length-1 sequences, which
draws fresh gate noise on every call); without it, teacher forcing runs the whole target at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .. import config, shard
from ..protocol import CELLS, Batch, check_g2_options, lstm_layers, recurrent_layer as g2_layer
from .tokenizer import PAD

ATTENTIONS = ("dot", "general", "bahdanau")


@dataclass
class ModelConfig:
    """The schema of ``g2lstm/conf/mt/model`` and the architecture of :class:`Seq2Seq` (the vocabulary
    sizes come from the tokenizers: ``Seq2Seq(config, src_vocab, tgt_vocab)``)."""

    cell: str = "lstm"  # lstm | sharpened | g2lstm, for every recurrent layer
    embed_dim: int = 256
    hidden_dim: int = 256  # decoder hidden size; each encoder direction gets hidden_dim // 2
    encoder_layers: int = 1
    decoder_layers: int = 1
    attention: str = "general"  # dot | general (Luong) | bahdanau (additive score)
    input_feeding: bool = True
    dropout: float = 0.3  # on embeddings, between layers and on the attentional state
    tie_embeddings: bool = True  # decoder embedding = output projection
    share_embeddings: bool = False  # encoder embedding = decoder embedding (needs a joint vocab)
    tau: float = 0.9  # G2 / sharpened temperature (paper: 0.9)
    noise_p: float = 0.2  # probability that a gate gets Gumbel noise (paper: 0.2)
    g2_options: dict[str, Any] = field(default_factory=dict)  # further G2LSTM keywords (noise_mode, ...)

    def __post_init__(self):
        config.one_of(self, "cell", CELLS)
        config.positive(self, "embed_dim", "hidden_dim", "encoder_layers", "decoder_layers", "tau")
        config.require(self, "hidden_dim", lambda v: v % 2 == 0, "an even size (split over two encoder directions)")
        config.one_of(self, "attention", ATTENTIONS)
        config.dropout(self, "dropout")
        config.probability(self, "noise_p")
        check_g2_options(self)


config.store(ModelConfig, "seq2seq_schema", group="model")


def recurrent_layer(cfg: ModelConfig, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool) -> nn.LSTM:
    """The one place recurrent layers are built, so ``cfg.cell`` switches all of them."""
    return g2_layer(
        cfg.cell, input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
        dropout=cfg.dropout if num_layers > 1 else 0.0, batch_first=True,
        tau=cfg.tau, noise_p=cfg.noise_p, **cfg.g2_options,
    )


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        self.embedding = embedding
        self.dropout = shard.Dropout(cfg.dropout)  # batch first: rows are dimension 0
        self.rnn = recurrent_layer(cfg, cfg.embed_dim, cfg.hidden_dim // 2, cfg.encoder_layers, bidirectional=True)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, embedded: torch.Tensor | None = None):
        """src (B, S) padded with PAD, lengths >= 1 -> memory (B, S, H) and the top layer's final
        (h, c), each (B, H) with the two directions concatenated. ``embedded`` replaces
        ``embedding(src)``."""
        x = self.dropout(self.embedding(src) if embedded is None else embedded)
        packed = pack_padded_sequence(x, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, c) = self.rnn(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        # h: (layers * 2, B, H/2); the last two rows are the top layer's forward and backward states
        return memory, (torch.cat([h[-2], h[-1]], dim=-1), torch.cat([c[-2], c[-1]], dim=-1))


class Attention(nn.Module):
    """Scores of a decoder state against every encoder state, masked at padding."""

    def __init__(self, kind: str, dim: int):
        super().__init__()
        self.kind = kind
        if kind == "general":
            self.w = nn.Linear(dim, dim, bias=False)
        elif kind == "bahdanau":
            self.w_query = nn.Linear(dim, dim, bias=False)
            self.w_key = nn.Linear(dim, dim, bias=True)
            self.v = nn.Linear(dim, 1, bias=False)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """query (B, T, H), memory (B, S, H), mask (B, S) true at real tokens -> context (B, T, H)."""
        if self.kind == "bahdanau":
            keys = self.w_key(memory)  # (B, S, H)
            scores = self.v(torch.tanh(self.w_query(query).unsqueeze(2) + keys.unsqueeze(1))).squeeze(-1)
        else:
            q = self.w(query) if self.kind == "general" else query
            scores = torch.bmm(q, memory.transpose(1, 2))  # (B, T, S)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        return torch.bmm(torch.softmax(scores, dim=-1), memory)


@dataclass
class DecoderState:
    """What the decoder carries from one step to the next; every tensor has batch first or second."""

    h: torch.Tensor  # (layers, B, H)
    c: torch.Tensor  # (layers, B, H)
    feed: torch.Tensor  # (B, E): previous attentional state (zeros at the start)
    memory: torch.Tensor  # (B, S, H)
    mask: torch.Tensor  # (B, S)

    def select(self, index: torch.Tensor) -> "DecoderState":
        """Reorder / repeat the batch rows (beam search)."""
        return DecoderState(self.h[:, index], self.c[:, index], self.feed[index], self.memory[index], self.mask[index])


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig, embedding: nn.Embedding, tgt_vocab: int):
        super().__init__()
        self.cfg = cfg
        self.embedding = embedding
        self.dropout = shard.Dropout(cfg.dropout)  # batch first: rows are dimension 0
        rnn_input = cfg.embed_dim * (2 if cfg.input_feeding else 1)
        self.rnn = recurrent_layer(cfg, rnn_input, cfg.hidden_dim, cfg.decoder_layers, bidirectional=False)
        self.bridge = nn.Linear(cfg.hidden_dim, cfg.hidden_dim)  # encoder's final h -> initial h
        self.attention = Attention(cfg.attention, cfg.hidden_dim)
        self.combine = nn.Linear(2 * cfg.hidden_dim, cfg.embed_dim, bias=False)
        self.output = nn.Linear(cfg.embed_dim, tgt_vocab)
        if cfg.tie_embeddings:
            self.output.weight = self.embedding.weight

    def init_state(self, memory, mask, final) -> DecoderState:
        h_enc, c_enc = final
        h0, c0 = torch.tanh(self.bridge(h_enc)), c_enc
        layers = self.cfg.decoder_layers
        h = h0.unsqueeze(0).expand(layers, -1, -1).contiguous()
        c = c0.unsqueeze(0).expand(layers, -1, -1).contiguous()
        feed = memory.new_zeros(memory.size(0), self.cfg.embed_dim)
        return DecoderState(h, c, feed, memory, mask)

    def _attend(self, rnn_out: torch.Tensor, state: DecoderState) -> torch.Tensor:
        context = self.attention(rnn_out, state.memory, state.mask)
        return self.dropout(torch.tanh(self.combine(torch.cat([context, rnn_out], dim=-1))))

    def forward(self, tgt_in: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """Teacher forcing: tgt_in (B, T) -> logits (B, T, V) and the state after the last token."""
        attentional, state = self.features(tgt_in, state)
        return self.output(attentional), state

    def features(self, tgt_in: torch.Tensor, state: DecoderState, embedded: torch.Tensor | None = None):
        """Teacher forcing up to the output layer: the attentional states (B, T, E) and the state
        after the last token. ``embedded`` replaces ``embedding(tgt_in)``."""
        emb = self.dropout(self.embedding(tgt_in) if embedded is None else embedded)
        if not self.cfg.input_feeding:
            out, (h, c) = self.rnn(emb, (state.h, state.c))
            attentional = self._attend(out, state)
            return attentional, DecoderState(h, c, attentional[:, -1], state.memory, state.mask)
        steps = []
        for t in range(tgt_in.size(1)):
            attentional, state = self._step_embedded(emb[:, t], state)
            steps.append(attentional)
        return torch.stack(steps, dim=1), state

    def _step_embedded(self, emb_t: torch.Tensor, state: DecoderState):
        x = torch.cat([emb_t, state.feed], dim=-1) if self.cfg.input_feeding else emb_t
        out, (h, c) = self.rnn(x.unsqueeze(1), (state.h, state.c))  # fresh gate noise every call
        attentional = self._attend(out, state).squeeze(1)
        return attentional, DecoderState(h, c, attentional, state.memory, state.mask)

    def step(self, tokens: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """One decoding step: tokens (B,) -> log-probabilities (B, V) and the next state."""
        attentional, state = self._step_embedded(self.dropout(self.embedding(tokens)), state)
        return torch.log_softmax(self.output(attentional).float(), dim=-1), state


class Seq2Seq(nn.Module):
    # PyTorch's default initialization (embeddings N(0, 1), LSTM U(+-1/sqrt(H))): on a 20-pair
    # overfitting check it trained in 100 steps where Luong's uniform(-0.1, 0.1) needed 500.
    def __init__(self, cfg: ModelConfig, src_vocab: int, tgt_vocab: int):
        super().__init__()
        if cfg.share_embeddings and src_vocab != tgt_vocab:
            raise ValueError(f"model.share_embeddings needs a joint vocabulary; the source has {src_vocab} "
                             f"pieces, the target {tgt_vocab} (data.tokenizer.joint=true makes one)")
        self.cfg, self.src_vocab, self.tgt_vocab = cfg, src_vocab, tgt_vocab
        tgt_embedding = nn.Embedding(tgt_vocab, cfg.embed_dim, padding_idx=PAD)
        src_embedding = tgt_embedding if cfg.share_embeddings else nn.Embedding(src_vocab, cfg.embed_dim, padding_idx=PAD)
        self.encoder = Encoder(cfg, src_embedding)
        self.decoder = Decoder(cfg, tgt_embedding, tgt_vocab)

    @classmethod
    def from_config_dict(cls, config: dict) -> "Seq2Seq":
        """The model (untrained) that :meth:`config_dict` describes, e.g. a checkpoint's."""
        config = dict(config)
        src_vocab, tgt_vocab = config.pop("src_vocab"), config.pop("tgt_vocab")
        return cls(ModelConfig(**config), src_vocab, tgt_vocab)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor, embedded: torch.Tensor | None = None) -> DecoderState:
        memory, final = self.encoder(src, src_lengths, embedded)
        mask = src != PAD
        return self.decoder.init_state(memory, mask, final)

    def forward(self, src, src_lengths, tgt_in) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for target inputs ``tgt_in`` (BOS + target)."""
        logits, _ = self.decoder(tgt_in, self.encode(src, src_lengths))
        return logits

    # -------------------------------------------------------------- seams (g2lstm.protocol)
    def embed(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"source": (B, S, E), "target": (B, T, E)}`` for ``src`` and ``tgt_in`` (before dropout)."""
        return {"source": self.encoder.embedding(batch.inputs["src"]),
                "target": self.decoder.embedding(batch.inputs["tgt_in"])}

    def extract_features(self, batch: Batch, embedded: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Teacher-forced attentional states (B, T, E) from the source and target-prefix embeddings."""
        embedded = self.embed(batch) if embedded is None else embedded
        state = self.encode(batch.inputs["src"], batch.inputs["src_lengths"], embedded["source"])
        return self.decoder.features(batch.inputs["tgt_in"], state, embedded["target"])[0]

    def output_layer(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder.output(features)

    def recurrent_layers(self) -> dict[str, nn.LSTM]:
        return lstm_layers(self)

    def config_dict(self) -> dict:
        """The architecture with the vocabulary sizes (stored in checkpoints as ``model_config``)."""
        return {"src_vocab": self.src_vocab, "tgt_vocab": self.tgt_vocab, **asdict(self.cfg)}
