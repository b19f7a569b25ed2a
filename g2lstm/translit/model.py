"""The transliteration model: one output symbol per input character.

    char embedding -> dropout -> bidirectional G2LSTM -> dropout -> dense -> softmax over output symbols

It is :class:`g2lstm.classify.model.RNNClassifier` with pooling ``none`` (a tagger), so the two
tasks share one implementation of the model protocol; features are the per-character states
``(N, T, 2H)`` and logits ``(N, T, C)``.
"""

from __future__ import annotations

from .. import config
from ..classify.model import ClassifierConfig, RecurrentModelConfig, RNNClassifier

# the schema of g2lstm/conf/translit/model: the recurrent part; pooling and directions are fixed here
config.store(RecurrentModelConfig, "transliterator_schema", group="model")


def transliterator_config(input_symbols: int, output_symbols: int, **options) -> ClassifierConfig:
    """A :class:`ClassifierConfig` for transliteration (``options``: the ``model`` section of
    ``g2lstm/conf/translit``); the pooling is ``none`` and the layer bidirectional, always."""
    for fixed in ("pooling", "bidirectional", "vocab_size", "num_classes"):
        if fixed in options:
            raise ValueError(f"the transliteration model sets {fixed} itself; remove model.{fixed}")
    return ClassifierConfig(vocab_size=input_symbols, num_classes=output_symbols, pooling="none",
                            bidirectional=True, **options)


class Transliterator(RNNClassifier):
    def __init__(self, cfg: ClassifierConfig):
        if cfg.pooling != "none" or not cfg.bidirectional:
            raise ValueError(f"a Transliterator tags every character with a bidirectional layer: expected "
                             f"pooling='none', bidirectional=True, got {cfg.pooling!r}, {cfg.bidirectional}")
        super().__init__(cfg)
