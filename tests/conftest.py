"""Fixtures shared by the test modules: the tiny corpora and configs the trainers' tests run on,
and what a test needs to check a figure by what it draws.

``pytest -m "not slow"`` leaves out the tests marked ``slow`` (end-to-end runs of the trainers and
the reports) for the inner loop; CI runs everything.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import imread  # noqa: E402

# German-English pairs of the MT trainer tests: repeated 4 times to train, halves to validate and test.
MT_PAIRS = [
    ("ein mann fährt fahrrad .", "a man rides a bike ."),
    ("zwei hunde spielen im schnee .", "two dogs play in the snow ."),
    ("eine frau liest ein buch .", "a woman reads a book ."),
    ("kinder spielen im park .", "children play in the park ."),
    ("ein hund läuft .", "a dog runs ."),
    ("zwei frauen lesen .", "two women read ."),
]


# ----------------------------------------------------------------------------- language model
@pytest.fixture(scope="session")
def lm_corpus(tmp_path_factory) -> Path:
    """Real text (the first verses of the World English Bible) as plain train/valid/test files.

    Shared by the whole session: no test writes into it."""
    from g2lstm.data import bible

    directory = tmp_path_factory.mktemp("lm_corpus")
    lines = [text for *_, text in bible.verses("4")[:360]]
    for name, chunk in (("train.txt", lines[:260]), ("valid.txt", lines[260:310]), ("test.txt", lines[310:])):
        (directory / name).write_text("\n".join(chunk) + "\n", encoding="utf-8")
    return directory


LM_OVERRIDES = ["data=text", "data.vocab_size=300", "model.cell=g2lstm", "model.emsize=8", "model.nhid=12",
                "train.batch_size=4", "train.eval_batch_size=4", "train.bptt=12", "train.max_minutes=null",
                "train.log_every=5", "train.checkpoint_every=7", "eval.test_batch_size=4", "eval.cache.window=20",
                "threads=1"]


@pytest.fixture(scope="session")
def lm_overrides(lm_corpus) -> list[str]:
    """The overrides of a tiny AWD-LSTM (emsize 8, nhid 12, vocabulary 300) on ``lm_corpus``."""
    return [LM_OVERRIDES[0], f"data.path={lm_corpus}", *LM_OVERRIDES[1:]]


@pytest.fixture(scope="session")
def tiny_lm_config(lm_overrides):
    """``tiny_lm_config(*overrides)``: the composed LM config of the tiny model, with ``overrides`` last."""
    from g2lstm.lm.train import lm_config

    return lambda *overrides: lm_config([*lm_overrides, *overrides])


# ----------------------------------------------------------------------------- translation
@pytest.fixture(scope="session")
def mt_pairs() -> list[tuple[str, str]]:
    return list(MT_PAIRS)


def write_mt_corpus(folder: Path) -> Path:
    """The six pairs as an ``iwslt14``-style folder: ``{train,valid,test}.{de,en}``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, pairs in (("train", MT_PAIRS * 4), ("valid", MT_PAIRS[:3]), ("test", MT_PAIRS[3:])):
        (folder / f"{split}.de").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
        (folder / f"{split}.en").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return folder


@pytest.fixture
def mt_corpus(tmp_path) -> Path:
    """A fresh copy per test: some tests damage their corpus on purpose."""
    return write_mt_corpus(tmp_path / "mt_corpus")


@pytest.fixture(scope="session")
def mt_corpus_writer():
    """``mt_corpus_writer(folder)`` writes the pairs into ``folder`` (for module-scoped fixtures)."""
    return write_mt_corpus


MT_OVERRIDES = ["data=iwslt14", "data.tokenizer.vocab_size=60", "model.embed_dim=16", "model.hidden_dim=16",
                "model.dropout=0.1", "train.max_tokens=60", "train.warmup_steps=3", "train.log_every=2", "eval.beam=2"]


@pytest.fixture
def tiny_mt_config(mt_corpus):
    """``tiny_mt_config(*overrides)``: the composed MT config of a tiny model on ``mt_corpus``."""
    from g2lstm.mt.train import mt_config

    return lambda *overrides: mt_config([MT_OVERRIDES[0], f"data.path={mt_corpus}", *MT_OVERRIDES[1:], *overrides])


# ----------------------------------------------------------------------------- gates
@pytest.fixture(scope="session")
def traced_gates():
    """``traced_gates(model, batches, forward)``: the input, forget and output gate values of every
    layer direction at the real steps of ``forward(model, batch)`` over ``batches``, as
    :func:`g2lstm.trace.record` records them (evaluation mode): ``{layer key: {gate: 1-D tensor}}``.
    Tests recompute the gate statistics that the package reports from these."""
    import torch

    from g2lstm import trace

    def traced(model, batches, forward):
        values: dict[str, dict[str, list]] = {}
        model.eval()
        with torch.no_grad():
            for batch in batches:
                with trace.record(model) as recorded:
                    forward(model, batch)
                for layer in recorded:
                    for gate in ("input", "forget", "output"):
                        values.setdefault(layer.key, {}).setdefault(gate, []).append(layer.gate(gate)[layer.mask])
        return {key: {gate: torch.cat(parts) for gate, parts in per_gate.items()} for key, per_gate in values.items()}

    return traced


# ----------------------------------------------------------------------------- figures
class Figures:
    """The matplotlib figures saved while a test runs, by file, and checks of what they draw."""

    def __init__(self):
        self.saved: dict[Path, tuple[Figure, float]] = {}  # the last figure saved to each file

    def __getitem__(self, path: str | Path) -> Figure:
        return self.saved[Path(path).resolve()][0]

    @staticmethod
    def pixels(path: str | Path) -> np.ndarray:
        """``(height, width, 3)`` RGB values in [0, 1] of a PNG file."""
        image = imread(str(path))
        assert image.ndim == 3 and image.shape[2] in (3, 4), f"{path}: not an RGB(A) image, shape {image.shape}"
        return image[..., :3].astype(np.float64)

    @staticmethod
    def share_of(pixels: np.ndarray, colour, tolerance: float = 2.5 / 255) -> float:
        """The share of pixels of ``colour`` (any matplotlib colour), each channel within ``tolerance``."""
        return float((np.abs(pixels - np.array(to_rgb(colour))) <= tolerance).all(-1).mean())

    def check_png(self, path: str | Path, colours=(), min_share: float = 1e-4, drawn_share: float = 0.02) -> np.ndarray:
        """Check that ``path`` shows a drawing, and return its pixels.

        - its size in pixels is its figure's size at the dpi it was saved with (when this test saved it);
        - it is not blank: at least ``drawn_share`` of the pixels are not the white background and
          there are more than a few colours;
        - every colour of ``colours`` (the colours that carry meaning: a series, a gate, a sign)
          covers at least ``min_share`` of the pixels.
        """
        pixels = self.pixels(path)
        name = Path(path).name
        if Path(path).resolve() in self.saved:
            figure, dpi = self.saved[Path(path).resolve()]
            width, height = figure.get_size_inches() * dpi  # matplotlib cuts the fraction of a pixel
            assert abs(pixels.shape[0] - height) < 1 and abs(pixels.shape[1] - width) < 1, \
                f"{name}: {pixels.shape[:2]} pixels, the figure {height:.1f} x {width:.1f}"
        drawn = 1.0 - self.share_of(pixels, "white", tolerance=1 / 255)
        assert drawn >= drawn_share, f"{name}: only {drawn:.4f} of the pixels are not white"
        distinct = len(np.unique((pixels * 255).round().astype(np.uint8).reshape(-1, 3), axis=0))
        assert distinct > 8, f"{name}: only {distinct} colours"
        for colour in colours:
            share = self.share_of(pixels, colour)
            assert share >= min_share, f"{name}: colour {colour} covers {share:.6f} of the pixels, < {min_share}"
        return pixels

    # What the package's plots must draw (g2lstm.diagnostics), checked against the data behind them.
    def check_saturation(self, path: str | Path, records: list[dict], saved_as: str | Path | None = None,
                         gates=("input", "forget", "output")) -> None:
        """``plot_saturation`` of ``records`` (a run's ``gates`` lines of metrics.jsonl): a panel per
        layer; per gate, in colour ``C{n}``, a solid line through the shares > 0.9 and a dashed one
        through the shares < 0.1 at the recorded steps; the PNG shows every gate's colour.
        ``saved_as``: the file the figure was saved to, when ``path`` is a copy of it."""
        figure = self[saved_as or path]
        layers = list(records[0]["layers"])
        assert [ax.get_title() for ax in figure.axes] == layers
        steps = [r["step"] for r in records]
        for ax, key in zip(figure.axes, layers):
            lines = ax.get_lines()
            assert len(lines) == 2 * len(gates)
            for n, gate in enumerate(gates):
                for line, side, style in ((lines[2 * n], 1, "-"), (lines[2 * n + 1], 0, "--")):
                    assert list(line.get_xdata()) == steps
                    assert list(line.get_ydata()) == [r["layers"][key][gate][side] for r in records], (key, gate)
                    assert to_rgb(line.get_color()) == to_rgb(f"C{n}") and line.get_linestyle() == style
        self.check_png(path, colours=[f"C{n}" for n in range(len(gates))])

    def check_histograms(self, path: str | Path, stats: dict, gates=("input", "forget")) -> None:
        """``plot_histograms`` of ``stats`` (``{label: GateStats}``): a panel per (layer, gate), in it
        one bar series per model holding that layer, its heights the model's histogram of the gate,
        each series in its own colour, all of them on the PNG."""
        from g2lstm.diagnostics import BINS, RECORDED_GATES

        figure = self[path]
        keys = list(next(iter(stats.values())).counts)
        assert len(figure.axes) == len(keys) * len(gates)
        colours: dict[str, tuple] = {}  # label -> the colour of its bars, the same in every panel
        for ax, (key, gate) in zip(figure.axes, [(k, g) for k in keys for g in gates]):
            assert ax.get_title() == f"{key} {gate} gate"
            series = {container.get_label(): container for container in ax.containers}
            assert list(series) == [label for label, s in stats.items() if key in s.counts]
            for label, container in series.items():
                heights = [bar.get_height() for bar in container.patches]
                assert len(heights) == BINS
                want = stats[label].histogram(key)[RECORDED_GATES.index(gate)].tolist()
                np.testing.assert_allclose(heights, want, atol=1e-12, err_msg=f"{label} {key} {gate}")
                (colour,) = {to_rgb(bar.get_facecolor()) for bar in container.patches}  # one colour a series
                assert colours.setdefault(label, colour) == colour, f"{label} changes colour in {key} {gate}"
        assert len(set(colours.values())) == len(colours)  # one colour per model
        self.check_png(path, colours=list(colours.values()))

    def check_heatmap(self, path: str | Path, rows, labels: list[str], tokens: list[str]) -> None:
        """``plot_heatmap``: one image row per (model, gate) holding ``rows``, a column per token,
        coloured by viridis from 0 to 1; each cell's colour is on the PNG."""
        figure = self[path]
        ax = figure.axes[0]
        image = ax.get_images()[0]
        rows = np.asarray(rows, dtype=np.float64)
        np.testing.assert_allclose(np.asarray(image.get_array(), dtype=np.float64), rows, atol=1e-6)
        assert image.get_clim() == (0, 1) and image.get_cmap().name == "viridis"
        assert [t.get_text() for t in ax.get_yticklabels()] == labels
        assert [t.get_text() for t in ax.get_xticklabels()] == tokens
        pixels = self.check_png(path)
        for value in rows.ravel():
            colour = image.get_cmap()(float(value))[:3]
            assert self.share_of(pixels, colour, tolerance=3 / 255) > 0, f"no cell of colour {colour} ({value:.3f})"


    def check_task_figures(self, out_dir: Path) -> None:
        """The figures of :func:`g2lstm.paper.plot_task` against the files written beside them: the
        gate histograms of every model of ``results.json`` (``gates_<model>.json``), and for each test
        sentence and layer the heatmap of every model's per-token averages (``gate_averages_<model>.json``)."""
        from g2lstm.diagnostics import GateStats
        from g2lstm.report import MODEL_NAMES

        kinds = list(json.loads((out_dir / "results.json").read_text())["models"])
        names = {kind: MODEL_NAMES.get(kind, kind) for kind in kinds}
        self.check_histograms(out_dir / "histograms.png",
                              {names[k]: GateStats.from_json(out_dir / f"gates_{k}.json") for k in kinds})
        averages = {kind: json.loads((out_dir / f"gate_averages_{kind}.json").read_text()) for kind in kinds}
        for n, first in enumerate(averages[kinds[0]]):
            assert first["layers"]
            for layer in first["layers"]:
                tokens = first["tokens"] if first["labels"] is None else \
                    first["labels"]["encoder" if layer.startswith("encoder") else "decoder"]
                rows = [[step[g] for step in averages[k][n]["layers"][layer]] for k in kinds for g in (0, 1)]
                labels = [f"{names[k]} {gate}" for k in kinds for gate in ("input", "forget")]
                self.check_heatmap(out_dir / f"heatmap_{n}_{layer.replace('/', '_')}.png", rows, labels, tokens)


@pytest.fixture
def figures(monkeypatch) -> Figures:
    """Records every figure saved during the test (``Figure.savefig``), by the file's name, so that a
    test can compare what a figure draws (its lines, bars, images) with the data behind it."""
    recorded = Figures()
    save = Figure.savefig

    def savefig(figure, fname, *args, **kwargs):
        if isinstance(fname, (str, Path)):
            dpi = kwargs.get("dpi") or matplotlib.rcParams["savefig.dpi"]
            recorded.saved[Path(fname).resolve()] = (figure, figure.dpi if dpi == "figure" else float(dpi))
        return save(figure, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return recorded
