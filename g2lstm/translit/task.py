"""The transliteration task for the tools: a trained transliterator, its symbol tables and data."""

from __future__ import annotations

from typing import Sequence

import torch

from g2lstm.classify.model import ClassifierConfig
from g2lstm.classify.task import SequenceTask
from g2lstm.data.symbols import SymbolTable
from g2lstm.data.translit import PLACEHOLDER, Aligned
from g2lstm.protocol import Batch
from g2lstm.tasks import text_list
from g2lstm.translit.model import Transliterator


class TransliterationTask(SequenceTask):
    """Texts are Latin strings (romanised Russian, lower-cased here as in training); one step per
    character, so ``batch.tokens["tokens"]`` holds the characters."""

    task, higher_is_better = "translit", True

    def __init__(self, model: Transliterator, inputs: SymbolTable, outputs: SymbolTable, config: dict, path: str, device):
        super().__init__(model, config, path, device)
        self.inputs, self.outputs = inputs, outputs
        self._data: dict[str, list[Aligned]] | None = None

    @classmethod
    def from_checkpoint(cls, state: dict, path: str, device) -> "TransliterationTask":
        model = Transliterator(ClassifierConfig(**state["model_config"]))
        model.load_state_dict(state["model"])
        return cls(model, SymbolTable(state["input_symbols"]), SymbolTable(state["output_symbols"]),
                   state["config"], path, device)

    def encode(self, texts: Sequence[str]) -> Batch:
        chars = [list(t.lower()) for t in text_list(texts, "encode()")]
        tokens, lengths = self.inputs.batch(chars)
        return Batch({"tokens": tokens, "lengths": lengths}, {"tokens": chars}).to(self.device)

    @torch.no_grad()
    def transliterate(self, texts: Sequence[str]) -> list[str]:
        """The Cyrillic reading of each Latin text (placeholders dropped)."""
        texts = text_list(texts, "transliterate()")
        batch = self.encode(texts)
        predicted = self.model(batch.inputs["tokens"], batch.inputs["lengths"]).argmax(-1).tolist()
        return ["".join(s for s in self.outputs.decode(row[:len(text)]) if s != PLACEHOLDER)
                for row, text in zip(predicted, texts)]

    # ----------------------------------------------------------------------- the run's data
    @property
    def data(self) -> dict[str, list[Aligned]]:
        """The run's train / valid / test pieces, romanised as they were for training."""
        if self._data is None:
            from g2lstm.translit.train import build_data

            self._data = build_data(self.config)
        return self._data

    def evaluate(self, model=None, split: str = "test", metric: str = "word_accuracy", batch_size: int = 256) -> float:
        """``word_accuracy`` or ``char_accuracy`` in percent on a split of the run's data (default: test)."""
        from g2lstm.translit.train import evaluate

        return 100 * evaluate(model or self.model, self.inputs, self.outputs, self.data[split], batch_size)[metric]

    def test_texts(self) -> list[str]:
        return [p.latin for p in self.data["test"]]
