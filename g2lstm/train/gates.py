"""What a trainer does with the G2 gates while it trains: anneal the G2 options step by step
(``train.schedules``) and watch how binary the gates are (``train.saturation_every``). Helpers the
trainer calls; the run lifecycle knows nothing of models."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config.run import check_schedules
from ..protocol import lstm_layers
from .metrics import MetricsLog


def schedule_value(schedule: dict, start: float, step: int) -> float:
    """The scheduled value at ``step``: linear or exponential from ``start`` to ``schedule['end']``."""
    progress = min(step / schedule["steps"], 1.0)
    end = schedule["end"]
    if schedule["shape"] == "exponential":
        return start * (end / start) ** progress
    return start + (end - start) * progress


class GateSchedules:
    """``train.schedules``: each scheduled G2 option (``tau``, ``noise_p``) goes from the model
    config's value at step 0 to its ``end`` at its ``steps``, held after."""

    def __init__(self, train_cfg: dict, model_cfg: dict):
        scheduled = {k: v for k, v in (train_cfg.get("schedules") or {}).items() if v is not None}
        self.schedules = check_schedules(scheduled, model_cfg)
        self.start = {option: model_cfg[option] for option in self.schedules}

    def apply(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        """Set the scheduled options of every recurrent layer of ``model`` to their values at
        ``step``; returns them (empty when nothing is scheduled)."""
        values = {option: schedule_value(s, self.start[option], step) for option, s in self.schedules.items()}
        if values:
            for layer in lstm_layers(model).values():
                for option, value in values.items():
                    setattr(layer, option, value)
        return values


class GateWatch:
    """Every ``train.saturation_every`` steps (step 0 included): the share of gate values < 0.1
    and > 0.9 per layer over ``batches`` (a fixed validation subset, in evaluation mode, drawing no
    random numbers), logged as an ``event: "gates"`` line of ``metrics.jsonl``; at the end, the
    plot of those lines (``saturation.png``). Off (``every`` null) and on ranks other than 0."""

    def __init__(self, every: int | None, batches, forward=None, enabled: bool = True):
        self.every, self.batches, self.forward, self.enabled = every, batches, forward, enabled

    def __call__(self, model: torch.nn.Module, step: int, metrics: MetricsLog) -> dict[str, float] | None:
        """Measure and log the gates if due at ``step``; returns the pooled input / forget shares
        outside (0.1, 0.9) for the progress bar, or None."""
        if not self.enabled or not self.every or step % self.every:
            return None
        from ..diagnostics import collect_gate_stats, pooled_saturation, saturation_record

        stats = collect_gate_stats(model, self.batches, self.forward)
        pooled = pooled_saturation(stats.summary())
        metrics.write(event="gates", step=step, layers=saturation_record(stats), pooled=pooled)
        metrics.histograms(step, stats)
        return {f"{gate[0]}_bin": round(pooled[f"{gate}_share_below_0.1"] + pooled[f"{gate}_share_above_0.9"], 3)
                for gate in ("input", "forget")}

    def plot(self, metrics: MetricsLog, path: Path, title: str) -> None:
        """Draw the logged saturation over training to ``path`` (nothing if no line was logged)."""
        watched = [r for r in metrics.read() if r.get("event") == "gates"]
        if self.enabled and watched:
            from ..diagnostics import plot_saturation

            plot_saturation(watched, path, title=title)
