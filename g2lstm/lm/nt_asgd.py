"""AWD-LSTM's training schedule (Merity et al. 2018) as a small object with explicit state: SGD
until the non-monotone trigger fires, then averaged SGD (NT-ASGD) to the end of ``train.epochs``
(or, with ``train.patience``, until that many ASGD epochs brought no validation loss better by
more than ``train.min_delta``: convergence), then an optional finetune stage that restarts from the best weights with a fresh
ASGD.

The object decides; the trainer acts on what it returns (a new optimizer, the best weights).
Its state is saved in ``last.pt`` as the trainer's state (:meth:`NTASGD.as_dict`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


def nt_trigger(history: list[float], val_loss: float, nonmono: int) -> bool:
    """Non-monotone trigger: valid loss is worse than the best of all but the last ``nonmono`` epochs."""
    if nonmono < 1:
        raise ValueError(f"train.nonmono must be >= 1; got {nonmono}")
    return len(history) > nonmono and val_loss > min(history[:-nonmono])


# What the trainer must do after an epoch (NTASGD.end_epoch, NTASGD.extend)
SWITCH_TO_ASGD = "switch_to_asgd"  # a fresh ASGD over the current weights
START_FINETUNE = "start_finetune"  # the best weights, with a fresh ASGD


@dataclass
class NTASGD:
    """Where training is: ``stage`` ('train', 'finetune' or 'done'; ``done_stage`` is the stage
    that ended, where a raised budget goes on), the ``epoch`` of that stage (from 1), the
    ``position`` in the epoch's token stream, the validation losses of the stage (``history``),
    the best one (``best_val``), the optimizer in use (``optimizer_kind``: 'sgd' or 'asgd'), the
    epochs since the stage's best or since the switch to ASGD (``stale``) and why the last stage
    ended (``ended_by``: 'epochs', 'patience', 'nonmono' or 'stop')."""

    stage: str = "train"
    epoch: int = 1
    position: int = 0
    history: list[float] = field(default_factory=list)
    best_val: float = math.inf
    optimizer_kind: str = "sgd"
    done_stage: str | None = None
    stale: int = 0
    ended_by: str | None = None

    @classmethod
    def restore(cls, saved: dict[str, Any] | None, saved_train_cfg: dict | None = None) -> "NTASGD":
        """The saved state, or a fresh one. (Checkpoints from before ``done_stage`` was recorded
        say which stage ended through their config's ``finetune_epochs``.)"""
        if saved is None:
            return cls()
        state = cls(**saved)
        if state.stage == "done" and state.done_stage is None:
            state.done_stage = "finetune" if (saved_train_cfg or {}).get("finetune_epochs") else "train"
        return state

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def done(self) -> bool:
        return self.stage == "done"

    def improved(self, val_loss: float) -> bool:
        """Record an epoch's validation loss as the best if it is; True if so (save ``best.pt``)."""
        if val_loss < self.best_val:
            self.best_val = val_loss
            return True
        return False

    def end_epoch(self, val_loss: float, epochs: int, finetune_epochs: int, nonmono: int, asgd: bool,
                  patience: int | None = None, min_delta: float = 0.0) -> str | None:
        """Count the epoch that ended with ``val_loss`` and move the schedule on; returns what the
        trainer must do (:data:`SWITCH_TO_ASGD`, :data:`START_FINETUNE`) or None. ``patience``: end
        the training stage after that many epochs on the final optimizer (ASGD, or SGD without it)
        that did not lower the stage's best validation loss by more than ``min_delta``."""
        triggered = nt_trigger(self.history, val_loss, nonmono)
        better = not self.history or val_loss < min(self.history) - min_delta
        self.history.append(val_loss)
        self.epoch += 1
        self.position = 0
        self.stale = 0 if better else self.stale + 1
        if self.stage == "train":
            on_final_optimizer = self.optimizer_kind == "asgd" or not asgd
            stalled = patience is not None and on_final_optimizer and self.stale >= patience
            if self.epoch > epochs or stalled:
                if finetune_epochs > 0:
                    self._start_finetune()
                    return START_FINETUNE
                self._end("patience" if stalled else "epochs")
            if triggered and self.optimizer_kind == "sgd" and asgd:
                self.optimizer_kind, self.stale = "asgd", 0  # the averaged iterates get their own patience
                return SWITCH_TO_ASGD
        elif self.stage == "finetune" and (triggered or self.epoch > finetune_epochs):
            self._end("nonmono" if triggered else "epochs")
        return None

    def stop(self) -> None:
        """End training now (the minute budget)."""
        self._end("stop")

    def extend(self, epochs: int, finetune_epochs: int) -> str | None:
        """A finished run resumed with a raised ``train.epochs`` or ``train.finetune_epochs`` goes on
        where it ended; returns :data:`START_FINETUNE` when that means starting the finetune. A
        training stage that converged (ended by ``train.patience``) is not taken on by more epochs."""
        if self.done_stage == "train" and self.epoch <= epochs and self.ended_by != "patience":
            self.stage = "train"
        elif self.done_stage == "train" and finetune_epochs > 0:
            self._start_finetune()
            return START_FINETUNE
        elif self.done_stage == "finetune" and self.epoch <= finetune_epochs:
            self.stage = "finetune"
        return None

    def _start_finetune(self) -> None:
        self.stage, self.epoch, self.position, self.stale = "finetune", 1, 0, 0
        self.history, self.optimizer_kind = [self.best_val], "asgd"

    def _end(self, reason: str) -> None:
        self.done_stage, self.stage, self.ended_by = self.stage, "done", reason
