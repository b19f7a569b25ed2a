"""What each model made of each text: per-token loss where the task scores steps, the text's metric,
and the output symbol of each step of the last input side (for the Hellinger search of the page).

The metric of a text, by task: ``ppl`` (LM: exp of the mean next-word loss), ``bleu`` (MT: sentence
BLEU of the greedy translation against the text's target; without one, the teacher-forced ``loss``),
``correct`` (classifier, with a gold label; without one, ``p``: the predicted class's probability),
``word_acc`` (transliterator, with the gold Cyrillic: the share of space-separated words whose every
character is right; without it, ``p``: the mean probability of the predicted characters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..interpret.attribution import target_string, time_major

METRICS = {"lm": "ppl", "mt": "bleu", "classify": "correct", "translit": "word_acc"}
HIGHER_IS_BETTER = {"ppl": False, "bleu": True, "correct": True, "word_acc": True, "p": True, "loss": False}


@dataclass
class Outcomes:
    """One model on the texts: ``metric`` (its name) and ``values`` (one per text, NaN where
    unknown); ``token_loss[n]``: per step of the last side (None where the task has no per-step
    target); ``outputs[n]``: the output symbol of each step of the last side (gold where known,
    else predicted; None for a classifier); ``predictions[n]``: the model's answer as text."""

    metric: str
    values: list[float] = field(default_factory=list)
    token_loss: list[np.ndarray | None] = field(default_factory=list)
    outputs: list[list[str] | None] = field(default_factory=list)
    predictions: list[str] = field(default_factory=list)


def _per_step(logits: torch.Tensor, is_time_major: bool) -> torch.Tensor:
    """``(N, T, V)`` log-probabilities whatever the model's layout."""
    logits = logits.transpose(0, 1) if is_time_major else logits
    return torch.log_softmax(logits.float(), -1)


def outcomes(loaded, texts: Sequence, references: Sequence | None = None, batch_size: int = 16) -> Outcomes:
    """The :class:`Outcomes` of ``loaded`` (a ``g2lstm.load`` result) on ``texts``; ``references``:
    per text, the gold label index (classifier) or the gold output symbols (transliterator)."""
    task = loaded.task
    if references is not None and len(references) != len(texts):
        raise ValueError(f"references must give one entry per text: {len(references)} for {len(texts)} texts")
    model = loaded.model.eval()
    is_time_major = time_major(model)
    result = Outcomes(METRICS[task])
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        refs = None if references is None else list(references[start:start + batch_size])
        batch = loaded.encode(chunk)
        with torch.no_grad():
            logits = model.output_layer(model.extract_features(batch))
        if task == "classify":
            _classify(loaded, logits, refs, result)
            continue
        last = list(batch.tokens)[-1]
        log_p = _per_step(logits, is_time_major)
        for n, tokens in enumerate(batch.tokens[last]):
            steps = log_p[n, : len(tokens)]
            predicted = steps.argmax(-1)
            if task == "translit":
                _translit(loaded, chunk[n], steps, predicted, None if refs is None else refs[n], result)
                continue
            result.predictions.append(" ".join(target_string(loaded, int(t)) for t in predicted.tolist()))
            if batch.targets is None:  # MT sources alone: no teacher-forced loss
                result.token_loss.append(None)
                result.outputs.append([target_string(loaded, int(t)) for t in predicted.tolist()])
                result.values.append(float("nan"))
                continue
            targets = batch.targets.t() if is_time_major else batch.targets
            gold = targets[n, : len(tokens)]
            loss = -steps.gather(1, gold[:, None])[:, 0]
            result.token_loss.append(loss.numpy())
            result.outputs.append([target_string(loaded, int(t)) for t in gold.tolist()])
            mean = float(loss.mean())
            result.values.append(float(np.exp(mean)) if task == "lm" else mean)
    if task == "mt":
        _sentence_bleu(loaded, texts, result)
    return result


def _classify(loaded, logits, refs, result: Outcomes) -> None:
    p = torch.softmax(logits.float(), -1)
    for n, row in enumerate(p):
        label = int(row.argmax())
        result.predictions.append(loaded.labels[label] if hasattr(loaded, "labels") else str(label))
        result.token_loss.append(None)
        result.outputs.append(None)
        if refs is None:
            result.metric = "p"
            result.values.append(float(row[label]))
        else:
            result.values.append(float(label == int(refs[n])))


def _translit(loaded, text: str, steps, predicted, gold_symbols, result: Outcomes) -> None:
    from ..data.translit import PLACEHOLDER, Aligned, words

    symbols = loaded.outputs.decode(predicted.tolist())
    result.predictions.append("".join(s for s in symbols if s != PLACEHOLDER))
    if gold_symbols is None:
        result.metric = "p"
        result.token_loss.append(None)
        result.outputs.append(symbols)
        result.values.append(float(steps.max(-1).values.exp().mean()))
        return
    gold = torch.tensor(loaded.outputs.ids(gold_symbols))
    result.token_loss.append((-steps.gather(1, gold[:, None])[:, 0]).numpy())
    result.outputs.append(list(gold_symbols))
    right = (predicted == gold).tolist()
    spans = words(Aligned(text.lower(), tuple(gold_symbols)))  # as the trainer counts words
    result.values.append(float(np.mean([all(right[a:b]) for a, b in spans])) if spans else float("nan"))


def _sentence_bleu(loaded, texts, result: Outcomes) -> None:
    """Greedy translations and, where the text has a target, its sentence BLEU (sacreBLEU)."""
    import sacrebleu

    from ..mt.decode import translate

    sources = [t[0] if isinstance(t, (tuple, list)) else t for t in texts]
    hypotheses = translate(loaded.model, loaded.tokenizers, sources, beam=1)
    result.predictions = hypotheses
    if all(isinstance(t, (tuple, list)) and len(t) > 1 for t in texts):
        result.values = [sacrebleu.sentence_bleu(h, [t[1]]).score for h, t in zip(hypotheses, texts)]
    else:
        result.metric = "loss"
