"""The language-modelling task for the tools: a trained AWD-LSTM, its vocabulary and test data."""

from __future__ import annotations

from typing import Sequence

import torch
from omegaconf import OmegaConf

from g2lstm.data.lm import Corpus, Vocab, tokenize
from g2lstm.lm.evaluate import gate_data, perplexity
from g2lstm.lm.model import AWDLSTM
from g2lstm.protocol import Batch
from g2lstm.tasks import TaskModel, text_list

PRETOKENIZED = ("ptb", "wikitext")  # sources whose text is split on whitespace, not tokenized
IGNORE = -100  # target of padding steps (cross_entropy's ignore_index)


class LanguageModelTask(TaskModel):
    """Texts are sentences; a batch runs each from ``<eos>`` (as in the training stream), so step
    ``t`` reads token ``t`` and predicts token ``t + 1``."""

    task, higher_is_better = "lm", False

    def __init__(self, model: AWDLSTM, vocab: Vocab, config: dict, path: str, device):
        super().__init__(model, config, path, device)
        self.vocab = vocab
        self._corpus: Corpus | None = None

    @classmethod
    def from_checkpoint(cls, state: dict, path: str, device) -> "LanguageModelTask":
        vocab = Vocab(state["vocab"])
        model = AWDLSTM(len(vocab), **state["config"]["model"])
        model.load_state_dict(state["model"])
        return cls(model, vocab, state["config"], path, device)

    def words(self, text: str) -> list[str]:
        data = self.config["data"]
        if data.get("source") in PRETOKENIZED:
            return text.split()
        return tokenize(text, data.get("lowercase", True))

    def encode(self, texts: Sequence[str]) -> Batch:
        """``words`` (T, N) = ``<eos>`` + each sentence, padded with ``<eos>``; targets the next
        words then ``<eos>``, padding ``-100``; ``lengths`` (N,)."""
        rows = [self.vocab.encode([self.words(t)]).tolist() for t in text_list(texts, "encode()")]  # words + <eos>
        steps = max(len(r) for r in rows)
        words = torch.full((steps, len(rows)), self.vocab.eos_id, dtype=torch.long)
        targets = torch.full((steps, len(rows)), IGNORE, dtype=torch.long)
        for n, row in enumerate(rows):
            words[1:len(row), n] = torch.tensor(row[:-1])
            targets[:len(row), n] = torch.tensor(row)
        tokens = [self.vocab.decode([self.vocab.eos_id] + row[:-1]) for row in rows]
        lengths = torch.tensor([len(r) for r in rows])
        return Batch({"words": words, "lengths": lengths}, {"tokens": tokens}, targets).to(self.device)

    # ----------------------------------------------------------------------- the run's data
    @property
    def corpus(self) -> Corpus:
        """The run's corpus, read as it was for training, with the checkpoint's vocabulary."""
        if self._corpus is None:
            from g2lstm.lm.train import load_data

            self._corpus = load_data(OmegaConf.create(self.config["data"]), vocab=self.vocab)
        return self._corpus

    @torch.no_grad()  # perplexity() keeps every chunk's log-probabilities: with grad, their graphs too
    def evaluate(self, model=None, test_tokens: int | None = None, batch_size: int = 10, bptt: int = 70) -> float:
        """Test perplexity on the first ``test_tokens`` test tokens (all when None)."""
        test = self.corpus.test[:test_tokens] if test_tokens else self.corpus.test
        return perplexity(model or self.model, test, batch_size, bptt)["ppl"]

    def gate_batches(self, tokens: int = 20000, batch_size: int = 10, bptt: int = 70):
        """The first ``tokens`` test tokens in ``bptt`` chunks, the state carried across chunks."""
        return gate_data(self.corpus.test, tokens, batch_size, bptt, self.device)

    def labelled_sentences(self, count: int):
        ids, eos = self.corpus.test.tolist(), self.vocab.eos_id
        start = 0
        for _ in range(count):
            stop = ids.index(eos, start) + 1
            words = torch.tensor(ids[start:stop], device=self.device).unsqueeze(1)
            tokens = self.vocab.decode(ids[start:stop])
            start = stop
            yield tokens, words, (lambda m, w: m(w, m.init_hidden(1))), None  # every layer, these tokens
