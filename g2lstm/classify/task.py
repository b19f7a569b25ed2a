"""The sentence-classification task for the tools: a trained classifier, its word table and data."""

from __future__ import annotations

from typing import Sequence

import torch

from g2lstm.classify.model import ClassifierConfig, RNNClassifier
from g2lstm.data.sentiment import Example, LABELS, tokenize
from g2lstm.data.symbols import SymbolTable
from g2lstm.protocol import Batch
from g2lstm.tasks import TaskModel, text_list


class SequenceTask(TaskModel):
    """What the classification and transliteration tasks share: the model's inputs are ``tokens``
    (N, T) and ``lengths`` (N,), so the gate statistics run ``model(tokens, lengths)`` on test texts."""

    def test_texts(self) -> list[str]:
        raise NotImplementedError

    def gate_batches(self, sentences: int = 300, batch_size: int = 50):
        """The first ``sentences`` test texts, ``batch_size`` a batch, as ``(tokens, lengths)``."""
        texts = self.test_texts()[:sentences]
        batches = [self.encode(texts[i:i + batch_size]).inputs for i in range(0, len(texts), batch_size)]
        return [(b["tokens"], b["lengths"]) for b in batches], None

    def labelled_sentences(self, count: int):
        for text in self.test_texts()[:count]:
            batch = self.encode([text])
            yield batch.tokens["tokens"][0], (batch.inputs["tokens"], batch.inputs["lengths"]), None, None


class ClassificationTask(SequenceTask):
    """Texts are sentences; ``encode`` gives ``tokens`` (N, T) and ``lengths`` (N,), and
    ``batch.tokens["tokens"]`` the words (as written, also those the table maps to ``<unk>``)."""

    task, higher_is_better = "classify", True
    labels = LABELS  # class index -> name

    def __init__(self, model: RNNClassifier, table: SymbolTable, config: dict, path: str, device):
        super().__init__(model, config, path, device)
        self.table = table
        self._data: dict[str, list[Example]] | None = None

    @classmethod
    def from_checkpoint(cls, state: dict, path: str, device) -> "ClassificationTask":
        model = RNNClassifier(ClassifierConfig(**state["model_config"]))
        model.load_state_dict(state["model"])
        return cls(model, SymbolTable(state["symbols"]), state["config"], path, device)

    def encode(self, texts: Sequence[str], labels: Sequence[int] | None = None) -> Batch:
        words = [tokenize(t) for t in text_list(texts, "encode()")]
        tokens, lengths = self.table.batch(words)
        targets = torch.tensor(list(labels)) if labels is not None else None
        return Batch({"tokens": tokens, "lengths": lengths}, {"tokens": words}, targets).to(self.device)

    @torch.no_grad()
    def predict(self, texts: Sequence[str]) -> list[str]:
        """The label name of each sentence."""
        batch = self.encode(text_list(texts, "predict()"))
        logits = self.model(batch.inputs["tokens"], batch.inputs["lengths"])
        return [self.labels[i] for i in logits.argmax(-1).tolist()]

    # ----------------------------------------------------------------------- the run's data
    @property
    def data(self) -> dict[str, list[Example]]:
        """The run's splits (train / valid / test and out-of-domain sets), read as for training."""
        if self._data is None:
            from g2lstm.classify.train import build_data

            self._data = build_data(self.config)
        return self._data

    def evaluate(self, model=None, split: str = "test", metric: str = "accuracy", batch_size: int = 256) -> float:
        """``accuracy`` or ``macro_f1`` in percent on a split of the run's data (default: test)."""
        from g2lstm.classify.train import evaluate

        if split not in self.data:
            raise KeyError(f"split {split!r} is not in this run's data; it has {sorted(self.data)}")
        return 100 * evaluate(model or self.model, self.table, self.data[split], batch_size)[metric]

    def test_texts(self) -> list[str]:
        return [e.text for e in self.data["test"]]
