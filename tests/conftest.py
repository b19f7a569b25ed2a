"""Fixtures shared by the test modules: the tiny corpora and configs the trainers' tests run on,
and what a test needs to check a figure by what it draws.

``pytest -m "not slow"`` leaves out the tests marked ``slow`` (end-to-end runs of the trainers and
the reports) for the inner loop; CI runs everything.
"""

from __future__ import annotations

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


# ----------------------------------------------------------------------------- figures
class Figures:
    """The matplotlib figures saved while a test runs, by file name, and checks of their PNG files."""

    def __init__(self):
        self.saved: dict[str, tuple[Figure, float]] = {}

    def __getitem__(self, name: str) -> Figure:
        return self.saved[name][0]

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
        if name in self.saved:
            figure, dpi = self.saved[name]
            width, height = np.round(figure.get_size_inches() * dpi).astype(int)
            assert pixels.shape[:2] == (height, width), f"{name}: {pixels.shape[:2]} pixels, figure {(height, width)}"
        drawn = 1.0 - self.share_of(pixels, "white", tolerance=1 / 255)
        assert drawn >= drawn_share, f"{name}: only {drawn:.4f} of the pixels are not white"
        distinct = len(np.unique((pixels * 255).round().astype(np.uint8).reshape(-1, 3), axis=0))
        assert distinct > 8, f"{name}: only {distinct} colours"
        for colour in colours:
            share = self.share_of(pixels, colour)
            assert share >= min_share, f"{name}: colour {colour} covers {share:.6f} of the pixels, < {min_share}"
        return pixels


@pytest.fixture
def figures(monkeypatch) -> Figures:
    """Records every figure saved during the test (``Figure.savefig``), by the file's name, so that a
    test can compare what a figure draws (its lines, bars, images) with the data behind it."""
    recorded = Figures()
    save = Figure.savefig

    def savefig(figure, fname, *args, **kwargs):
        if isinstance(fname, (str, Path)):
            dpi = kwargs.get("dpi") or matplotlib.rcParams["savefig.dpi"]
            recorded.saved[Path(fname).name] = (figure, figure.dpi if dpi == "figure" else float(dpi))
        return save(figure, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return recorded
