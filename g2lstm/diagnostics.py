"""Gate diagnostics: how close to 0 or 1 the gates of a trained model sit, as in the paper.

The model runs unchanged; forward hooks only record what each LSTM layer (``nn.LSTM`` or
``G2LSTM``) receives. Each call is then replayed layer by layer with the reference
(:func:`g2lstm.reference.lstm_direction` with ``record_gates=True``) in evaluation mode, and the
replay is checked against the layer's own output, so the recorded gates are the ones that
produced the model's results.

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
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from .reference import GateSpec, lstm_direction

RECORDED_GATES = ("input", "forget", "output")  # the order of lstm_direction's recorded gates
BINS = 10  # width 0.1 on [0, 1], as the paper's histograms
LOW, HIGH = 0.1, 0.9


def gate_spec_of(lstm: nn.LSTM) -> GateSpec:
    """How ``lstm`` computes its gates: a ``G2LSTM``'s own spec, else a plain LSTM's."""
    spec = getattr(lstm, "gate_spec", None)
    if isinstance(spec, GateSpec):
        return spec
    if type(lstm) is not nn.LSTM:
        raise TypeError(f"cannot tell how {type(lstm).__name__} computes its gates (no `gate_spec`)")
    return GateSpec(gates="sigmoid", stochastic=())


def _layer_weights(lstm: nn.LSTM, layer: int, reverse: bool):
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    get = lambda name: getattr(lstm, name + suffix, None)  # noqa: E731
    return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"), get("weight_hr")


@torch.no_grad()
def replay_lstm(lstm: nn.LSTM, input, hx=None):
    """Recompute ``lstm(input, hx)`` in evaluation mode with the reference, recording the gates.

    Returns ``(output, (h_n, c_n), gates, mask)``: output and states as the module returns them
    (output padded ``(T, N, D*H_out)`` time-major when ``input`` is packed), ``gates`` a list over
    layers of lists over directions of ``(T, N, 3, H)`` tensors, and ``mask`` ``(T, N)`` of the
    steps that are real tokens (not padding).
    """
    spec = gate_spec_of(lstm)
    lengths = None
    if isinstance(input, PackedSequence):
        x, lengths = pad_packed_sequence(input)
    else:
        x = input.transpose(0, 1) if lstm.batch_first and input.dim() == 3 else input
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(1)
    steps, batch = x.shape[:2]
    directions = 2 if lstm.bidirectional else 1
    h_out = lstm.proj_size or lstm.hidden_size
    if hx is None:
        h0 = x.new_zeros(lstm.num_layers * directions, batch, h_out)
        c0 = x.new_zeros(lstm.num_layers * directions, batch, lstm.hidden_size)
    else:
        h0, c0 = (s.unsqueeze(1) for s in hx) if unbatched else hx
    mask = torch.ones(steps, batch, dtype=torch.bool, device=x.device)
    if lengths is not None:
        mask = torch.arange(steps).unsqueeze(1) < lengths.unsqueeze(0)
        mask = mask.to(x.device)

    gates, h_n, c_n = [], [], []
    layer_input = x
    for layer in range(lstm.num_layers):
        outputs, layer_gates = [], []
        for d in range(directions):
            w_ih, w_hh, b_ih, b_hh, w_hr = _layer_weights(lstm, layer, reverse=d == 1)
            x_proj = layer_input @ w_ih.t()
            if b_ih is not None:
                x_proj = x_proj + b_ih + b_hh
            k = layer * directions + d
            out, h, c, g = lstm_direction(
                x_proj, h0[k], c0[k], w_hh, w_hr, spec, training=False, noise=None,
                lengths=lengths, reverse=d == 1, record_gates=True,
            )
            outputs.append(out)
            layer_gates.append(g)
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outputs, dim=-1)  # no inter-layer dropout in evaluation
        gates.append(layer_gates)
    output, h_n, c_n = layer_input, torch.stack(h_n), torch.stack(c_n)
    if unbatched:
        output, h_n, c_n = output.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
    elif lstm.batch_first and lengths is None:
        output = output.transpose(0, 1)
    return output, (h_n, c_n), gates, mask


def _module_output(output):
    out, (h_n, c_n) = output
    if isinstance(out, PackedSequence):
        out = pad_packed_sequence(out)[0]
    return out, h_n, c_n


@contextmanager
def _recording(model: nn.Module, on_call: Callable[[str, nn.LSTM, Any, Any, Any], None]):
    """Call ``on_call(name, lstm, input, hx, output)`` after every LSTM layer's forward; evaluation
    mode inside, the model's own modes restored after."""
    modes = {m: m.training for m in model.modules()}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.LSTM):
            def hook(m, args, kwargs, output, name=name):
                input = args[0] if args else kwargs["input"]
                hx = args[1] if len(args) > 1 else kwargs.get("hx")
                on_call(name, m, input, hx, output)
            handles.append(module.register_forward_hook(hook, with_kwargs=True))
    if not handles:
        raise ValueError(f"expected a module containing nn.LSTM or G2LSTM layers, got {type(model).__name__} with none")
    model.eval()
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.train(mode)


def _checked_replay(name, lstm, input, hx, output, atol):
    out, (h_n, c_n), gates, mask = replay_lstm(lstm, input, hx)
    expected = _module_output(output)
    for what, mine, theirs in zip(("output", "h_n", "c_n"), (out, h_n, c_n), expected):
        if not torch.allclose(mine, theirs, atol=atol, rtol=1e-4):
            diff = (mine - theirs).abs().max().item()
            raise RuntimeError(
                f"gate replay of layer '{name}' does not reproduce its {what} (max diff {diff:.3g}); "
                "the recorded gates would not be the model's"
            )
    return gates, mask


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
            self.total[key] = 0
        self.counts[key] += counts
        self.below[key] += (values < LOW).sum(1).cpu()
        self.above[key] += (values > HIGH).sum(1).cpu()
        self.sums[key] += values.sum(1).cpu()
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
            stats.total[key] = n
        return stats


def _layer_keys(name: str, gates: list[list[torch.Tensor]]):
    for layer, per_direction in enumerate(gates):
        for d, g in enumerate(per_direction):
            yield f"{name or 'lstm'}/l{layer}" + ("_reverse" if d else ""), g


@torch.no_grad()
def collect_gate_stats(model: nn.Module, batches: Iterable, forward: Callable | None = None,
                       atol: float = 1e-4) -> GateStats:
    """Run ``forward(model, batch)`` (default ``model(batch)`` / ``model(*batch)``) over
    ``batches`` in evaluation mode and gather the statistics of every LSTM layer's gates."""
    forward = forward or _default_forward
    stats = GateStats()

    def on_call(name, lstm, input, hx, output):
        gates, mask = _checked_replay(name, lstm, input, hx, output, atol)
        for key, g in _layer_keys(name, gates):
            stats.add(key, g, mask)

    with _recording(model, on_call):
        for batch in batches:
            forward(model, batch)
    if not stats.counts:
        raise ValueError("no LSTM layer ran: the data set was empty or forward() skipped the LSTMs")
    return stats


@torch.no_grad()
def token_gate_averages(model: nn.Module, batch, forward: Callable | None = None,
                        atol: float = 1e-4) -> dict[str, torch.Tensor]:
    """For one sentence (a batch of one), each layer's gates averaged over hidden units per token.

    Returns ``{layer key: (calls x T, 3) tensor}``: for a layer called several times (a decoder
    stepping one token at a time) the calls are concatenated along time.
    """
    forward = forward or _default_forward
    averages: dict[str, list[torch.Tensor]] = {}

    def on_call(name, lstm, input, hx, output):
        gates, mask = _checked_replay(name, lstm, input, hx, output, atol)
        for key, g in _layer_keys(name, gates):
            if g.shape[1] != 1:
                raise ValueError(f"token_gate_averages expects a batch of one sentence, got {g.shape[1]}")
            averages.setdefault(key, []).append(g[mask[:, 0], 0].mean(-1))  # (T, 3)

    with _recording(model, on_call):
        forward(model, batch)
    return {key: torch.cat(parts) for key, parts in averages.items()}


def plot_histograms(stats: dict[str, GateStats], path: str | Path, gates=("input", "forget"),
                    layers: Iterable[str] | None = None, title: str = "") -> None:
    """One panel per (layer, gate), one bar series per model in ``stats`` (``{label: GateStats}``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(layers) if layers is not None else list(next(iter(stats.values())).counts)
    fig, axes = plt.subplots(len(keys), len(gates), figsize=(3.2 * len(gates), 2.4 * len(keys)),
                             squeeze=False)
    centers = torch.arange(BINS) / BINS + 0.05
    width = 0.09 / len(stats)
    for r, key in enumerate(keys):
        for c, gate in enumerate(gates):
            ax = axes[r][c]
            g = RECORDED_GATES.index(gate)
            for m, (label, s) in enumerate(stats.items()):
                if key in s.counts:
                    offset = (m - (len(stats) - 1) / 2) * width
                    ax.bar((centers + offset).tolist(), s.histogram(key)[g].tolist(), width=width, label=label)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_title(f"{key} {gate} gate", fontsize=9)
            if r == len(keys) - 1:
                ax.set_xlabel("gate value")
            if c == 0:
                ax.set_ylabel("share")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
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
