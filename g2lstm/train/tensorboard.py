"""TensorBoard events next to ``metrics.jsonl`` (optional extra ``tensorboard``), written through
``torch.utils.tensorboard``: every numeric field of every metrics line as a scalar, the gate
histograms of the saturation probe, and the run's hyperparameters with its final metrics, so that
``tensorboard --logdir runs/`` compares the runs of a sweep.

The events go to ``<run>/tensorboard/``. The writer opens on the first event, so a run that writes
nothing (a finished or stopped run started again) leaves its folder as it was; a resumed run
hides the replayed steps' events (``purge_step``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

# fields of a metrics line that are positions or bookkeeping, not measurements
NOT_SCALARS = ("step", "time", "epoch", "improved", "sentences", "characters", "words", "count")


def available() -> bool:
    """The ``tensorboard`` package (which ``torch.utils.tensorboard`` needs) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def enabled(setting: bool | None) -> bool:
    """``train.tensorboard``: true (required: a clear error if the extra is missing), false, or
    null (write events when the extra is installed)."""
    if setting and not available():
        raise ValueError("train.tensorboard=true needs the tensorboard package: pip install 'g2lstm[tensorboard]' "
                         "(or set train.tensorboard=null to write events only where it is installed)")
    return available() if setting is None else bool(setting)


def flat_hparams(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config as TensorBoard hyperparameters: dotted keys; lists and None as strings."""
    flat = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hparams(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class TensorBoardLog:
    """The TensorBoard mirror of one run's metrics log (:class:`g2lstm.train.MetricsLog`)."""

    def __init__(self, run_dir: Path, resumed_at: int | None):
        self.dir = Path(run_dir) / "tensorboard"
        self.resumed_at = resumed_at
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.dir), purge_step=self.resumed_at)
        return self._writer

    def record(self, record: dict[str, Any]) -> None:
        """A metrics line: each numeric field as the scalar ``<split or event>/<field>`` at its step;
        a gate probe's histograms; a final line's hyperparameters and metrics."""
        kind = record.get("split") or record.get("event")
        if kind in ("final", "gates"):  # the hparams (final); the histograms (gate_histograms)
            return
        step = record.get("step")
        for key, value in record.items():
            if key not in NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{kind}/{key}", value, step)
        self.writer.flush()

    def gate_histograms(self, step: int, stats) -> None:
        """The saturation probe's 10-bin histogram of each gate of each layer (a
        :class:`g2lstm.diagnostics.GateStats`), as ``gates/<layer>/<gate>`` at ``step``; min and max
        are the edges of the outermost non-empty bins."""
        for layer, counts in stats.counts.items():
            for g, gate in enumerate(("input", "forget", "output")):
                bins = counts[g].tolist()
                nonzero = [i for i, c in enumerate(bins) if c]
                width = 1.0 / len(bins)
                self.writer.add_histogram_raw(
                    f"gates/{layer}/{gate}", min=nonzero[0] * width, max=(nonzero[-1] + 1) * width,
                    num=sum(bins), sum=float(stats.sums[layer][g]), sum_squares=float(stats.squares[layer][g]),
                    bucket_limits=[(i + 1) * width for i in range(len(bins))], bucket_counts=bins,
                    global_step=step)
        self.writer.flush()

    def final(self, cfg: dict, result: dict[str, Any]) -> None:
        """The run's hyperparameters (the flattened config) with its final numeric results."""
        metrics = {f"final/{k}": v for k, v in flat_hparams(result).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.writer.add_hparams(flat_hparams(cfg), metrics, run_name="hparams")
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
