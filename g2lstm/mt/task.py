"""The translation task for the tools: a trained Seq2Seq, its tokenizers and test pairs."""

from __future__ import annotations

from typing import Sequence

import torch

from g2lstm.mt.batching import source_batch, training_batch
from g2lstm.mt.evaluate import bleu_of
from g2lstm.mt.model import Seq2Seq
from g2lstm.mt.tokenizer import Tokenizers
from g2lstm.protocol import Batch
from g2lstm.tasks import TaskModel, text_list


class TranslationTask(TaskModel):
    """Texts are ``(source, target)`` pairs (teacher forcing) or source strings alone (then the
    batch has no target side)."""

    task, higher_is_better = "mt", True

    def __init__(self, model: Seq2Seq, tokenizers: Tokenizers, config: dict, path: str, device):
        super().__init__(model, config, path, device)
        self.tokenizers = tokenizers
        self._data: dict | None = None

    @classmethod
    def from_checkpoint(cls, state: dict, path: str, device) -> "TranslationTask":
        model = Seq2Seq.from_config_dict(state["model_config"])
        model.load_state_dict(state["model"])
        return cls(model, Tokenizers.from_state(state["tokenizers"]), state["config"], path, device)

    def encode(self, texts: Sequence) -> Batch:
        """``src`` (B, S) + EOS, ``src_lengths``; with targets also ``tgt_in`` (BOS + y) and
        targets ``tgt_out`` (y + EOS, padding 0)."""
        pairs = [t if isinstance(t, (tuple, list)) else (t, None) for t in text_list(texts, "encode()")]
        src_ids = self.tokenizers.src.encode([s for s, _ in pairs])
        pieces = self.tokenizers.src.sp.id_to_piece
        if any(t is None for _, t in pairs):
            if not all(t is None for _, t in pairs):
                raise ValueError("encode() takes either all (source, target) pairs or all source strings")
            src, src_lengths = source_batch(src_ids)
            tokens = {"source": [[pieces(i) for i in s.tolist()[:n]] for s, n in zip(src, src_lengths.tolist())]}
            return Batch({"src": src, "src_lengths": src_lengths}, tokens).to(self.device)
        tgt_ids = self.tokenizers.tgt.encode([t for _, t in pairs])
        b = training_batch(src_ids, tgt_ids)
        tgt_pieces = self.tokenizers.tgt.sp.id_to_piece
        tokens = {
            "source": [[pieces(i) for i in s.tolist()[:n]] for s, n in zip(b["src"], b["src_lengths"].tolist())],
            "target": [[tgt_pieces(i) for i in t.tolist()[:len(ids) + 1]] for t, ids in zip(b["tgt_in"], tgt_ids)],
        }
        inputs = {k: b[k] for k in ("src", "src_lengths", "tgt_in")}
        return Batch(inputs, tokens, b["tgt_out"]).to(self.device)

    # ----------------------------------------------------------------------- the run's data
    @property
    def data(self) -> dict[str, list[tuple[str, str]]]:
        """The run's ``train`` / ``valid`` / ``test`` pairs, read as they were for training."""
        if self._data is None:
            from g2lstm.mt.train import build_data

            self._data = build_data(self.config)
        return self._data

    @torch.no_grad()
    def evaluate(self, model=None, beam: int = 5, max_tokens: int = 4000) -> float:
        """sacreBLEU on the test split."""
        return bleu_of(model or self.model, self.tokenizers, self.data["test"], beam=beam, max_tokens=max_tokens)["bleu"]

    def _inputs(self, pairs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = self.encode(pairs).inputs
        return b["src"], b["src_lengths"], b["tgt_in"]

    def gate_batches(self, sentences: int = 300, batch_size: int = 50):
        """The first ``sentences`` test pairs, teacher forced, ``batch_size`` pairs a batch."""
        pairs = self.data["test"][:sentences]
        return [self._inputs(pairs[i:i + batch_size]) for i in range(0, len(pairs), batch_size)], None

    def labelled_sentences(self, count: int):
        for pair in self.data["test"][:count]:
            batch = self.encode([pair])
            inputs = tuple(batch.inputs[k] for k in ("src", "src_lengths", "tgt_in"))
            src_tokens = batch.tokens["source"][0]
            yield src_tokens, inputs, None, {"encoder": src_tokens, "decoder": batch.tokens["target"][0]}
