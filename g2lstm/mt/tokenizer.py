"""Sentencepiece subword models, trained in memory on the training split and kept as proto bytes.

The serialized model travels inside the checkpoint (plain ``bytes`` load with
``torch.load(weights_only=True)``), so a checkpoint alone is enough to translate.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import sentencepiece as spm

from .. import config

PAD, UNK, BOS, EOS = 0, 1, 2, 3
MODEL_TYPES = ("bpe", "unigram", "char", "word")
SPECIALS = 4  # pad, unk, bos, eos
# sentencepiece's smallest vocabularies: bpe and unigram keep every character (and the word
# boundary '▁') as a piece, so they need the specials, '▁' and one character at least (more on
# real data: see train_tokenizer); char and word need one piece besides the specials
MIN_VOCAB = {"bpe": SPECIALS + 2, "unigram": SPECIALS + 2, "char": SPECIALS + 1, "word": SPECIALS + 1}
MIN_COVERAGE = 0.98  # sentencepiece refuses a smaller character_coverage


@dataclass
class TokenizerConfig:
    """``data.tokenizer`` in ``g2lstm/conf/mt``: the arguments of :func:`train_tokenizers`."""

    joint: bool = True
    vocab_size: int = 8000
    model_type: str = "bpe"
    character_coverage: float = 1.0

    def __post_init__(self):
        config.one_of(self, "model_type", MODEL_TYPES)
        least = MIN_VOCAB[self.model_type]
        config.require(self, "vocab_size", lambda v: v >= least,
                       f"a vocabulary size >= {least} for model_type={self.model_type} (4 special pieces and "
                       + ("the word boundary and a character; in practice 4 + the characters of the training split)"
                          if self.model_type in ("bpe", "unigram") else "a piece)"))
        config.require(self, "character_coverage", lambda v: MIN_COVERAGE <= v <= 1,
                       f"a share in [{MIN_COVERAGE}, 1] (sentencepiece's range)")


class Tokenizer:
    """A sentencepiece model with fixed special ids: pad 0, unk 1, bos 2, eos 3."""

    def __init__(self, proto: bytes):
        self.proto = bytes(proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.proto)
        if (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id()) != (PAD, UNK, BOS, EOS):
            raise ValueError("sentencepiece model must use pad=0, unk=1, bos=2, eos=3 (train it with train_tokenizer)")

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts), out_type=int)

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return [self.sp.decode([i for i in seq if i not in (PAD, BOS, EOS)]) for seq in ids]


def train_tokenizer(
    sentences: Iterable[str],
    vocab_size: int = 8000,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
    seed_sentences: int = 2_000_000,
) -> Tokenizer:
    """Train a sentencepiece model on ``sentences`` (the training split only).

    ``vocab_size`` is an upper bound (``hard_vocab_limit=False``) so tiny corpora in tests still work.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    sentences = [s for s in sentences if s.strip()]
    if not sentences:
        raise ValueError("cannot train a tokenizer on an empty training split")
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=buffer,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
            hard_vocab_limit=False,
            input_sentence_size=seed_sentences,
            shuffle_input_sentence=True,
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as error:  # the one limit that depends on the data: every character is a piece
        needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(error))
        if needed is None:
            raise
        raise ValueError(f"data.tokenizer.vocab_size={vocab_size} is too small for this training split: a "
                         f"{model_type} model of it needs at least {needed.group(1)} pieces ({SPECIALS} special "
                         f"pieces and its {int(needed.group(1)) - SPECIALS} characters, the word boundary '▁' "
                         f"among them); expected data.tokenizer.vocab_size >= {needed.group(1)}") from None
    return Tokenizer(buffer.getvalue())


@dataclass
class Tokenizers:
    """Source and target tokenizers; with a joint model both are the same object."""

    src: Tokenizer
    tgt: Tokenizer

    @property
    def joint(self) -> bool:
        return self.src is self.tgt

    def state(self) -> dict:
        """A ``weights_only``-loadable description: proto bytes of one (joint) or two models."""
        if self.joint:
            return {"joint": True, "src": self.src.proto}
        return {"joint": False, "src": self.src.proto, "tgt": self.tgt.proto}

    @classmethod
    def from_state(cls, state: dict) -> "Tokenizers":
        src = Tokenizer(state["src"])
        return cls(src, src if state["joint"] else Tokenizer(state["tgt"]))


def train_tokenizers(
    pairs: Sequence[tuple[str, str]],
    joint: bool = True,
    vocab_size: int = 8000,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
) -> Tokenizers:
    """Train a joint model on both sides of ``pairs``, or one model per language."""
    if joint:
        tok = train_tokenizer([s for p in pairs for s in p], vocab_size, model_type, character_coverage)
        return Tokenizers(tok, tok)
    return Tokenizers(
        train_tokenizer([s for s, _ in pairs], vocab_size, model_type, character_coverage),
        train_tokenizer([t for _, t in pairs], vocab_size, model_type, character_coverage),
    )
