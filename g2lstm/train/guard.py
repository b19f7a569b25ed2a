"""The divergence guard: training stops, before the optimizer's step, on a non-finite loss or
gradient norm, or on a loss far above its running average, and says which checkpoints are kept."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .checkpoint import load_checkpoint

GUARD_DECAY = 0.98  # of the exponential running average of the loss (from the first step on)
# A running average below this (in nats) counts as this: a converged model's loss of 0.01 may jump
# to 0.2 on one hard batch, which is noise, not divergence, and a refusal would recur at the same
# step on every resume.
LOSS_FLOOR = 0.1


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite; the last good checkpoint is kept."""


class DivergedError(NonFiniteLossError):
    """Raised, before the optimizer step, when training diverges: a non-finite loss or gradient
    norm, or a loss above ``train.divergence_factor`` times its running average."""


class DivergenceGuard:
    """Checks each step's loss and gradient norm; ``loss_average`` is saved in ``last.pt`` so that
    a resumed run guards as the uninterrupted one would."""

    def __init__(self, factor: float | None, kept: tuple[Path, ...], loss_average: float | None = None):
        self.factor = factor
        self.kept = kept  # the checkpoints a refusal names, with their steps
        self.loss_average = loss_average

    def check_loss(self, loss: float | torch.Tensor, step: int) -> None:
        """Refuse (:class:`DivergedError`) a non-finite loss or one above ``factor`` times the
        running average of the steps before it (at least :data:`LOSS_FLOOR`); otherwise count it
        into the average."""
        value = float(loss)
        if not math.isfinite(value):
            self._diverged(f"the training loss became {value}", step)
        if self.factor and self.loss_average is not None and value > self.factor * max(self.loss_average, LOSS_FLOOR):
            self._diverged(f"the training loss {value:.4g} is more than train.divergence_factor={self.factor} "
                           f"times its running average {self.loss_average:.4g}", step)
        self.loss_average = value if self.loss_average is None else \
            GUARD_DECAY * self.loss_average + (1 - GUARD_DECAY) * value

    def check_grad_norm(self, norm: float | torch.Tensor, step: int) -> None:
        """Refuse (:class:`DivergedError`) a non-finite gradient norm."""
        if not math.isfinite(float(norm)):
            self._diverged(f"the gradient norm became {float(norm)}", step)

    def _diverged(self, what: str, step: int) -> None:
        kept = [f"{p} (step {load_checkpoint(p)['run']['step']})" for p in self.kept if p.exists()]
        raise DivergedError(
            f"{what} at step {step}; the step was not applied and training stops. Kept: "
            + (", ".join(kept) or "no checkpoint yet") + ". Resume from them with a smaller train.lr "
            "(the run folder resumes from last.pt), or start afresh with train.resume=false (the run is kept in "
            "previous-N/ inside its folder).")
