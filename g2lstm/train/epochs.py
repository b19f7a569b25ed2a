"""The state an epoch-based trainer (translation, classification, transliteration) keeps between
steps and across a resume: where it is in its epochs and how its validations went."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm


@dataclass
class EpochState:
    """Saved in ``last.pt`` as the trainer's state (:meth:`as_dict`), read back by :meth:`restore`.

    ``best`` is the best validation score so far (larger is better), ``bad_evals`` the validations
    since it, ``stopped`` why training stopped early (None while it goes on)."""

    epoch: int = 0
    batch_in_epoch: int = 0
    best: float | None = None
    bad_evals: int = 0
    stopped: str | None = None

    @classmethod
    def restore(cls, saved: dict[str, Any] | None) -> "EpochState":
        """The saved state, or a fresh one. ``stopped`` starts as None: a resumed run goes on, and
        its limits (maybe raised) are checked again."""
        return cls(**{**(saved or {}), "stopped": None})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def is_last_batch(self, epoch_size: int) -> bool:
        return self.batch_in_epoch + 1 == epoch_size

    def count_batch(self, epoch_size: int) -> bool:
        """One more batch trained; True if it ended the epoch."""
        self.batch_in_epoch += 1
        if self.batch_in_epoch == epoch_size:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            return True
        return False

    def observe(self, value: float, patience: int, what: str) -> bool:
        """A validation score (larger is better): True if it is the best so far; after ``patience``
        validations without one, :attr:`stopped` says so (``what`` names the score)."""
        improved = self.best is None or value > self.best
        self.best, self.bad_evals = (value, 0) if improved else (self.best, self.bad_evals + 1)
        if self.bad_evals >= patience:
            self.stopped = f"no better validation {what} in {self.bad_evals} validations"
        return improved

    def why_ended(self, budget: str | None, elapsed_s: float, max_epochs: int) -> str:
        """Why training ended: the early stop, the minute budget or the epoch count."""
        if self.stopped is not None:
            return self.stopped
        return f"budget reached ({elapsed_s / 60:.1f} min)" if budget else f"max_epochs={max_epochs} reached"


def print_record(record: dict[str, Any]) -> None:
    """A validation record on one line, above the progress bar."""
    tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))


def epoch_batches(count: int, batch_size: int, seed: int | None = None) -> list[list[int]]:
    """Index batches over ``count`` examples, in file order or shuffled by ``seed`` (a trainer
    derives it from its seed and the epoch, so that a resumed run sees the same batches)."""
    import torch

    order = torch.arange(count) if seed is None else torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return [order[i:i + batch_size].tolist() for i in range(0, count, batch_size)]
