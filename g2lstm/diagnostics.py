"""Gate diagnostics: how close to 0 or 1 the gates of a trained model sit, as in the paper.

Statistics and plots over :mod:`g2lstm.trace`: the model runs unchanged in evaluation mode under
:func:`g2lstm.trace.record`, which checks that its recorded gates are the ones that produced the
model's results.

- :func:`collect_gate_stats` histograms (10 bins of width 0.1), saturation shares (< 0.1, > 0.9)
  and means of the input, forget and output gates per layer over a data set;
- :func:`token_gate_averages` per-token gate averages over hidden units for chosen sentences;
- :func:`plot_histograms`, :func:`plot_heatmap` PNG plots; :meth:`GateStats.to_json` JSON.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from . import trace
from .reference import GATE_NAMES, SIGMOID_GATES

RECORDED_GATES = tuple(GATE_NAMES[k] for k in SIGMOID_GATES)  # the gates GateStats keeps, in order
BINS = 10  # width 0.1 on [0, 1], as the paper's histograms
LOW, HIGH = 0.1, 0.9


def _default_forward(model, batch):
    return model(*batch) if isinstance(batch, (tuple, list)) else model(batch)


@dataclass
class GateStats:
    """Gate statistics per layer: keys ``"{module}/l{layer}[_reverse]"``; per gate a normalised
    10-bin histogram, the shares below 0.1 and above 0.9, the mean and the count of values."""

    counts: dict[str, torch.Tensor] = field(default_factory=dict)  # (3, BINS) int64
    below: dict[str, torch.Tensor] = field(default_factory=dict)  # (3,) int64
    above: dict[str, torch.Tensor] = field(default_factory=dict)  # (3,) int64
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # (3,) float64
    squares: dict[str, torch.Tensor] = field(default_factory=dict)  # (3,) float64: sums of squares
    total: dict[str, int] = field(default_factory=dict)  # values per gate

    def add(self, key: str, gates: torch.Tensor, mask: torch.Tensor) -> None:
        values = gates[mask].double()  # (tokens, 3, H)
        values = values.permute(1, 0, 2).reshape(3, -1)
        bins = (values * BINS).floor().clamp(0, BINS - 1).long()
        counts = torch.zeros(3, BINS, dtype=torch.int64)
        counts.scatter_add_(1, bins.cpu(), torch.ones_like(bins, dtype=torch.int64).cpu())
        if key not in self.counts:
            self.counts[key] = torch.zeros(3, BINS, dtype=torch.int64)
            self.below[key] = torch.zeros(3, dtype=torch.int64)
            self.above[key] = torch.zeros(3, dtype=torch.int64)
            self.sums[key] = torch.zeros(3, dtype=torch.float64)
            self.squares[key] = torch.zeros(3, dtype=torch.float64)
            self.total[key] = 0
        self.counts[key] += counts
        self.below[key] += (values < LOW).sum(1).cpu()
        self.above[key] += (values > HIGH).sum(1).cpu()
        self.sums[key] += values.sum(1).cpu()
        self.squares[key] += values.pow(2).sum(1).cpu()
        self.total[key] += values.shape[1]

    def histogram(self, key: str) -> torch.Tensor:
        """``(3, 10)`` shares of values in ``[0, .1), ..., [.9, 1]`` for input, forget, output."""
        return self.counts[key].double() / self.total[key]

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        result = {}
        for key in self.counts:
            n = self.total[key]
            hist = self.histogram(key)
            result[key] = {
                gate: {
                    "histogram": hist[g].tolist(),
                    "share_below_0.1": self.below[key][g].item() / n,
                    "share_above_0.9": self.above[key][g].item() / n,
                    "mean": self.sums[key][g].item() / n,
                    "mean_square": self.squares[key][g].item() / n,
                    "count": n,
                }
                for g, gate in enumerate(RECORDED_GATES)
            }
        return result

    def to_json(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        bin_edges = [round(b / BINS, 1) for b in range(BINS + 1)]
        path.write_text(json.dumps({"bin_edges": bin_edges, "layers": self.summary()}, indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> "GateStats":
        """The statistics written by :meth:`to_json` (counts recovered from shares x count)."""
        data = json.loads(Path(path).read_text())
        if data.get("bin_edges") != [round(b / BINS, 1) for b in range(BINS + 1)] or "layers" not in data:
            raise ValueError(f"{path}: expected a GateStats.to_json file with {BINS} bins, "
                             f"got keys {sorted(data)} and bin_edges {data.get('bin_edges')}")
        stats = cls()
        for key, per_gate in data["layers"].items():
            gates = [per_gate[g] for g in RECORDED_GATES]
            n = gates[0]["count"]
            stats.counts[key] = torch.tensor([[round(h * n) for h in g["histogram"]] for g in gates])
            stats.below[key] = torch.tensor([round(g["share_below_0.1"] * n) for g in gates])
            stats.above[key] = torch.tensor([round(g["share_above_0.9"] * n) for g in gates])
            stats.sums[key] = torch.tensor([g["mean"] * n for g in gates], dtype=torch.float64)
            # (files written before mean_square was recorded: the squares of values at the mean)
            stats.squares[key] = torch.tensor([g.get("mean_square", g["mean"] ** 2) * n for g in gates],
                                              dtype=torch.float64)
            stats.total[key] = n
        return stats


@contextmanager
def _evaluation(model: nn.Module) -> Iterator[None]:
    """Evaluation mode inside, the model's own modes restored after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.train(mode)


def _traced(model: nn.Module, batch, forward: Callable | None, atol: float) -> trace.Trace:
    """The trace of ``forward(model, batch)`` (default ``model(batch)`` / ``model(*batch)``)."""
    with trace.record(model, atol=atol) as recorded:
        (forward or _default_forward)(model, batch)
    return recorded


def _recorded_gates(layer: trace.LayerTrace) -> torch.Tensor:
    """``(T, N, 3, H)``: the gates of :data:`RECORDED_GATES`."""
    return torch.stack([layer.gate(name) for name in RECORDED_GATES], dim=2)


@torch.no_grad()
def collect_gate_stats(model: nn.Module, batches: Iterable, forward: Callable | None = None,
                       atol: float = 1e-4) -> GateStats:
    """Run ``forward(model, batch)`` (default ``model(batch)`` / ``model(*batch)``) over
    ``batches`` in evaluation mode and gather the statistics of every LSTM layer's gates."""
    stats = GateStats()
    with _evaluation(model):
        for batch in batches:
            for layer in _traced(model, batch, forward, atol):
                stats.add(layer.key, _recorded_gates(layer), layer.mask)
    if not stats.counts:
        raise ValueError("no LSTM layer ran: the data set was empty or forward() skipped the LSTMs")
    return stats


@torch.no_grad()
def token_gate_averages(model: nn.Module, batch, forward: Callable | None = None,
                        atol: float = 1e-4) -> dict[str, torch.Tensor]:
    """For one sentence (a batch of one), each layer's gates averaged over hidden units per token.

    Returns ``{layer key: (T, 3) tensor}`` over the real steps; for a layer called several times
    (a decoder stepping one token at a time) the calls are joined along time.
    """
    averages = {}
    with _evaluation(model):
        recorded = _traced(model, batch, forward, atol)
    for layer in recorded:
        if layer.mask.shape[1] != 1:
            raise ValueError(f"token_gate_averages expects a batch of one sentence, got {layer.mask.shape[1]}")
        averages[layer.key] = _recorded_gates(layer)[layer.mask[:, 0], 0].mean(-1)  # (T, 3)
    return averages


def pooled_saturation(summary: dict) -> dict[str, float]:
    """Shares of gate values < 0.1 and > 0.9 per gate, pooled over all layers of a
    :meth:`GateStats.summary`: ``{"input_share_below_0.1": ..., "input_share_above_0.9": ...}``."""
    result = {}
    for gate in RECORDED_GATES:
        n = sum(layer[gate]["count"] for layer in summary.values())
        for side in ("share_below_0.1", "share_above_0.9"):
            result[f"{gate}_{side}"] = sum(layer[gate][side] * layer[gate]["count"] for layer in summary.values()) / n
    return result


def saturation_record(stats: GateStats) -> dict[str, dict[str, list[float]]]:
    """Per layer, per gate, ``[share < 0.1, share > 0.9]``: what training logs as it goes."""
    return {key: {gate: [round(v["share_below_0.1"], 5), round(v["share_above_0.9"], 5)]
                  for gate, v in per_gate.items()}
            for key, per_gate in stats.summary().items()}


def plot_saturation(records: list[dict], path: str | Path, gates=("input", "forget", "output"),
                    title: str = "") -> None:
    """Saturation curves of one run from its ``metrics.jsonl`` lines with ``event == "gates"``:
    one panel per layer, per gate the share of values < 0.1 (dashed) and > 0.9 (solid) over steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        raise ValueError("no gate saturation records to plot (train.saturation_every was off?)")
    layers = list(records[0]["layers"])
    fig, axes = plt.subplots(1, len(layers), figsize=(4.0 * len(layers), 3.0), squeeze=False)
    steps = [r["step"] for r in records]
    for ax, key in zip(axes[0], layers):
        for n, gate in enumerate(gates):
            color = f"C{n}"
            ax.plot(steps, [r["layers"][key][gate][1] for r in records], color=color, label=f"{gate} > 0.9")
            ax.plot(steps, [r["layers"][key][gate][0] for r in records], color=color, linestyle="--",
                    label=f"{gate} < 0.1")
        ax.set_ylim(0, 1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("share of gate values")
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def distinct_colours(count: int) -> list:
    """``count`` matplotlib colours, all different up to 60: tab20, then tab20b and tab20c (a
    colormap called past its last colour repeats that colour, so tab20 alone gives the 21st
    series the 20th's colour)."""
    import matplotlib.pyplot as plt

    palette = [cmap(k) for cmap in (plt.cm.tab20, plt.cm.tab20b, plt.cm.tab20c) for k in range(20)]
    return [palette[m % len(palette)] for m in range(count)]


def plot_histograms(stats: dict[str, GateStats], path: str | Path, gates=("input", "forget"),
                    layers: Iterable[str] | None = None, title: str = "") -> None:
    """One panel per (layer, gate), one bar series per model in ``stats`` (``{label: GateStats}``),
    the legend below the panels, each model in a colour of its own (:func:`distinct_colours`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(layers) if layers is not None else list(next(iter(stats.values())).counts)
    legend_rows = (len(stats) + 1) // 2
    legend_height = 0.22 * legend_rows + 0.3  # inches
    legend_width = 2 * 0.055 * max(map(len, stats)) + 0.6  # two columns of 7-point labels
    fig, axes = plt.subplots(len(keys), len(gates), figsize=(max(3.6 * len(gates), legend_width), 2.4 * len(keys) + legend_height),
                             squeeze=False)
    centers = torch.arange(BINS) / BINS + 0.05
    width = 0.09 / len(stats)
    colours = [f"C{m}" for m in range(len(stats))] if len(stats) <= 10 else distinct_colours(len(stats))
    for r, key in enumerate(keys):
        for c, gate in enumerate(gates):
            ax = axes[r][c]
            g = RECORDED_GATES.index(gate)
            for m, (label, s) in enumerate(stats.items()):
                if key in s.counts:
                    offset = (m - (len(stats) - 1) / 2) * width
                    ax.bar((centers + offset).tolist(), s.histogram(key)[g].tolist(), width=width, label=label,
                           color=colours[m])
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_title(f"{key} {gate} gate", fontsize=9)
            if r == len(keys) - 1:
                ax.set_xlabel("gate value")
            if c == 0:
                ax.set_ylabel("share")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2 if len(stats) > 1 else 1, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, legend_height / fig.get_figheight(), 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_heatmap(tokens: list[str], averages: dict[str, dict[str, torch.Tensor]], path: str | Path,
                 layer: str, gates=("input", "forget"), title: str = "") -> None:
    """Per-token average gate values of one layer for several models (``{label: averages}``),
    one heatmap row per (model, gate), one column per token; colour scale 0 to 1."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, labels = [], []
    for label, per_layer in averages.items():
        values = per_layer[layer]
        if values.shape[0] != len(tokens):
            raise ValueError(f"{label}: {values.shape[0]} gate steps in {layer} but {len(tokens)} tokens")
        for gate in gates:
            rows.append(values[:, RECORDED_GATES.index(gate)].tolist())
            labels.append(f"{label} {gate}")
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(tokens) + 2), 0.45 * len(rows) + 1.2))
    image = ax.imshow(rows, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(tokens)), tokens, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.03)
    ax.set_title(title or f"average gate value per token, {layer}", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
