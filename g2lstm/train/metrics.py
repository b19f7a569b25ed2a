"""The metrics log of a run: ``metrics.jsonl``, one JSON object per line, appended and flushed at
once so that a kill loses nothing; mirrored to TensorBoard events when the run writes them
(:mod:`g2lstm.train.tensorboard`)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any


def exp_or_inf(loss: float) -> float:
    """``exp(loss)`` (a perplexity), ``inf`` where it overflows a float instead of raising."""
    return math.exp(loss) if loss < 709.0 else math.inf


class MetricsLog:
    """Append-only JSON-lines log: one dict per line, flushed at once so a kill loses nothing.
    With ``tensorboard`` (a :class:`~g2lstm.train.tensorboard.TensorBoardLog`), every line is
    mirrored there too."""

    def __init__(self, path: str | os.PathLike, tensorboard=None):
        self.path = Path(path)  # (its folder is made by the first write, not here: reading writes nothing)
        self.tensorboard = tensorboard

    def write(self, **record: Any) -> None:
        record.setdefault("time", time.time())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.record(record)

    def histograms(self, step: int, stats) -> None:
        """The gate histograms of a saturation probe (a :class:`g2lstm.diagnostics.GateStats`):
        TensorBoard only (``metrics.jsonl`` keeps the shares)."""
        if self.tensorboard is not None:
            self.tensorboard.gate_histograms(step, stats)

    def close(self, cfg: dict, result: dict[str, Any]) -> None:
        """The end of the run: its config and final result to TensorBoard's hparams view."""
        if self.tensorboard is not None:
            self.tensorboard.final(cfg, result)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate(self, step: int) -> None:
        """Drop the lines of steps after ``step`` (a resumed run replays them), atomically."""
        records = self.read()
        kept = [r for r in records if r.get("step", 0) <= step and r.get("event") != "final"]
        if len(kept) == len(records):
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)


class NoMetrics(MetricsLog):
    """The metrics log of a rank other than 0: writes nothing, reads nothing."""

    def write(self, **record: Any) -> None:
        pass

    def histograms(self, step: int, stats) -> None:
        pass

    def close(self, cfg: dict, result: dict[str, Any]) -> None:
        pass

    def read(self) -> list[dict[str, Any]]:
        return []

    def truncate(self, step: int) -> None:
        pass
