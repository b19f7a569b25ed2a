"""Tasks and the one loader: ``g2lstm.load(path)`` for a checkpoint of any task.

A checkpoint says which task wrote it (``"task"``: ``lm``, ``mt``, ...). :func:`load` returns that
task's :class:`TaskModel`: the model in evaluation mode with what it needs to read text (its
vocabulary or tokenizers) and the run's config; it encodes texts into a
:class:`~g2lstm.protocol.Batch` whose tokens are aligned to the model's steps, and it knows how the
task scores a model on the run's own test data, so that tools (compression tables, diagnostics,
interpretability) work on every task the same way::

    loaded = g2lstm.load("runs/mt/<run>/best.pt")
    batch = loaded.encode([("ein hund läuft .", "a dog runs .")])
    logits = loaded.model.output_layer(loaded.model.extract_features(batch))
"""

from __future__ import annotations

import importlib
import os
from typing import Any, ClassVar, Iterator, Sequence

import torch
from torch import nn

from .train.checkpoint import checkpoint_task, load_checkpoint
from .protocol import Batch

# task name -> "module:name" of its TaskModel and of its trainer ``train(cfg, run_dir) -> result``,
# imported on first use (a task's modules load its own dependencies).
TASKS = {
    "lm": "g2lstm.lm.task:LanguageModelTask",
    "mt": "g2lstm.mt.task:TranslationTask",
    "classify": "g2lstm.classify.task:ClassificationTask",
    "translit": "g2lstm.translit.task:TransliterationTask",
}
TRAINERS = {
    "lm": "g2lstm.lm.train:train",
    "mt": "g2lstm.mt.train:train",
    "classify": "g2lstm.classify.train:train",
    "translit": "g2lstm.translit.train:train",
}


class TaskModel:
    """A trained model of one task, ready to be looked at. Subclasses set ``task`` and implement
    the methods below; ``state`` is the checkpoint (see :class:`g2lstm.train.Run`)."""

    task: ClassVar[str]
    higher_is_better: ClassVar[bool]  # of :meth:`evaluate`'s value

    def __init__(self, model: nn.Module, config: dict[str, Any], path: str, device: str | torch.device):
        self.model = model.to(device).eval()
        self.config = config
        self.path = path
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, state: dict, path: str, device) -> "TaskModel":
        raise NotImplementedError

    def encode(self, texts: Sequence) -> Batch:
        """A batch of ``texts`` (the task's kind of input) on the model's device."""
        raise NotImplementedError

    def tokens(self, batch: Batch) -> dict[str, list[list[str]]]:
        """Per input side, per example, the token strings aligned to the model's steps."""
        return batch.tokens

    def evaluate(self, model: nn.Module | None = None, **options) -> float:
        """The task's test metric of ``model`` (default: this one) on the run's test split."""
        raise NotImplementedError

    def gate_batches(self, **options) -> tuple[list, Any]:
        """``(batches, forward)`` over test data for :func:`g2lstm.diagnostics.collect_gate_stats`."""
        raise NotImplementedError

    def labelled_sentences(self, count: int) -> Iterator[tuple[list[str], Any, Any, dict | None]]:
        """The first ``count`` test sentences as ``(tokens, batch, forward, per-side tokens)`` for
        :func:`g2lstm.diagnostics.token_gate_averages` heatmaps."""
        raise NotImplementedError


def text_list(texts: Sequence, method: str) -> list:
    """``texts`` as a list; a bare string is a ``TypeError`` (iterated, it would be one text per
    character)."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{method} takes a list of texts, got a {type(texts).__name__} ({texts[:40]!r}); "
                        "pass [text] for one text")
    return list(texts)


def _import(registry: dict[str, str], task: str):
    if task not in registry:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(registry)}")
    module, name = registry[task].split(":")
    return getattr(importlib.import_module(module), name)


def task_class(task: str) -> type[TaskModel]:
    """The :class:`TaskModel` subclass of ``task``."""
    return _import(TASKS, task)


def trainer(task: str):
    """The trainer of ``task``: ``train(cfg, run_dir) -> result`` (``cfg`` from ``g2lstm/conf/<task>``)."""
    return _import(TRAINERS, task)


def load(path: str | os.PathLike, device: str | torch.device = "cpu", task: str | None = None) -> TaskModel:
    """The trained model of a ``best.pt`` / ``last.pt`` of any task (or of ``task``, checked), or
    of a compressed export of one (:func:`g2lstm.compress.export`)."""
    from .compress import exported_checkpoint, is_export

    state = load_checkpoint(path, map_location=device)
    if is_export(state):
        state = exported_checkpoint(state, path)
    return from_checkpoint_state(state, path, device, task)


def from_checkpoint_state(state: dict, path: str | os.PathLike, device: str | torch.device = "cpu",
                          task: str | None = None) -> TaskModel:
    """The :class:`TaskModel` of a checkpoint dict read from ``path``."""
    found = checkpoint_task(state, path)
    if task is not None and found != task:
        raise ValueError(f"{path} is a checkpoint of task {found!r}, expected a {task!r} checkpoint")
    return task_class(found).from_checkpoint(state, str(path), device)
