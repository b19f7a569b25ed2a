"""Sentence polarity with human ratings (Hutto & Gilbert, ICWSM 2014), read in place.

The folder ``sentiment/`` of the shared data (``$G2LSTM_DATA`` or ``../shared/data``) holds four
files ``<name>_GroundTruth.txt``, UTF-8 with CRLF line ends, one ``id<TAB>rating<TAB>sentence`` a
line, the rating being the mean of human judgements in ``[-4, 4]``:

- ``movieReviewSnippets``: the Rotten Tomatoes sentence-polarity set (Pang & Lee 2005), 10,605
  sentences; the task's train / valid / test data,
- ``tweets``, ``amazonReviewSnippets``, ``nytEditorialSnippets``: out-of-domain test sets.

The label is the sign of the rating (1 positive, 0 negative); sentences rated exactly 0 have no
polarity and are dropped, and counted (37 of the movie sentences).

The split of the movie sentences is fixed by a seed: the non-zero sentences, in file order, are
shuffled with ``random.Random(seed)`` and cut 80 / 10 / 10 % into train / valid / test
(:func:`split_examples`). With the default seed 0 that is 8,454 / 1,057 / 1,057 sentences.
"""

from __future__ import annotations

import io
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .. import config
from . import data_root, read_text

MOVIES = "movieReviewSnippets"
OUT_OF_DOMAIN = ("tweets", "amazonReviewSnippets", "nytEditorialSnippets")
LABELS = ("negative", "positive")  # class index = LABELS.index(name)
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Example:
    id: str
    rating: float
    text: str

    @property
    def label(self) -> int:
        return int(self.rating > 0)


@dataclass
class RatedSentences:
    """The rated sentences of one file, and how many were dropped for a zero rating."""

    path: Path
    examples: list[Example]
    zero_rated: int


def sentiment_path(name: str = MOVIES, root: str | Path | None = None) -> Path:
    """``<root>/<name>_GroundTruth.txt``; ``root`` defaults to the shared ``sentiment/`` folder."""
    known = (MOVIES, *OUT_OF_DOMAIN)
    if name not in known:
        raise ValueError(f"unknown sentiment set {name!r}; expected one of {known}")
    folder = Path(root) if root is not None else data_root() / "sentiment"
    return folder / f"{name}_GroundTruth.txt"


RATING_RANGE = (-4.0, 4.0)  # the mean of human judgements on the -4..4 scale


def read_rated(path: str | Path) -> RatedSentences:
    """Read one ``id<TAB>rating<TAB>sentence`` file; zero ratings are dropped and counted.

    Every malformed line is an error naming the file, the line number and what was expected: a
    rating must be a finite number in :data:`RATING_RANGE`, and the file must hold sentences of
    both polarities (one-class data would train a constant and score it as perfect).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a rated-sentence file (id<TAB>rating<TAB>sentence) at {path}")
    content = read_text(path, "a UTF-8 file of id<TAB>rating<TAB>sentence lines")
    lines = [line.rstrip("\n") for line in io.StringIO(content, newline=None)]  # CRLF ends; only line ends split
    examples, zero = [], 0
    low, high = RATING_RANGE
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path}, line {number}: expected id<TAB>rating<TAB>sentence (3 tab-separated "
                             f"fields), found {len(parts)} field(s): {line[:60]!r}")
        sample_id, rating_text, text = parts
        try:
            rating = float(rating_text)
        except ValueError:
            raise ValueError(f"{path}, line {number}: expected a number as the rating (2nd field), "
                             f"found {rating_text!r}") from None
        if not math.isfinite(rating) or not low <= rating <= high:
            raise ValueError(f"{path}, line {number}: expected a rating (2nd field) in [{low:g}, {high:g}], "
                             f"found {rating_text!r}")
        if not text.strip():
            raise ValueError(f"{path}, line {number}: expected a sentence in the 3rd field, found nothing")
        if rating == 0:
            zero += 1
            continue
        examples.append(Example(sample_id, rating, text.strip()))
    if not examples:
        raise ValueError(f"{path}: expected lines id<TAB>rating<TAB>sentence with non-zero ratings, found none "
                         f"({len(lines)} line(s), {zero} rated 0)")
    _require_both_classes(examples, str(path))
    return RatedSentences(path, examples, zero)


def _require_both_classes(examples: list[Example], where: str) -> None:
    positive = sum(e.label for e in examples)
    if positive in (0, len(examples)):
        raise ValueError(f"{where}: expected sentences of both polarities (ratings > 0 and < 0), found "
                         f"{positive} positive and {len(examples) - positive} negative")


def split_examples(examples: list[Example], seed: int = SPLIT_SEED,
                   fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> dict[str, list[Example]]:
    """``{'train', 'valid', 'test'}``: a seeded shuffle of ``examples`` cut at the given fractions."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"expected three positive split fractions summing to 1, got {fractions}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_train = round(fractions[0] * len(order))
    n_valid = round(fractions[1] * len(order))
    cuts = {"train": order[:n_train], "valid": order[n_train:n_train + n_valid], "test": order[n_train + n_valid:]}
    return {split: [examples[i] for i in sorted(idx)] for split, idx in cuts.items()}


@dataclass
class SentimentDataConfig:
    """The schema of ``g2lstm/conf/classify/data`` (the arguments of :func:`load_sentiment`)."""

    root: Optional[str] = None  # null: $G2LSTM_DATA/sentiment or ../shared/data/sentiment
    split_seed: int = SPLIT_SEED
    out_of_domain: list[str] = field(default_factory=lambda: list(OUT_OF_DOMAIN))
    min_count: int = 2  # training words seen fewer times become <unk>

    def __post_init__(self):
        config.require(self, "out_of_domain", lambda names: set(names) <= set(OUT_OF_DOMAIN),
                       f"out-of-domain sets among {list(OUT_OF_DOMAIN)}")
        config.positive(self, "min_count")


config.store(SentimentDataConfig, "rotten_tomatoes_schema", group="data")


def load_sentiment(root: str | Path | None = None, seed: int = SPLIT_SEED,
                   out_of_domain: tuple[str, ...] | list[str] = ()) -> dict[str, list[Example]]:
    """The movie-review split (``train``, ``valid``, ``test``) plus each named out-of-domain set
    as a test split of its own (e.g. ``tweets``)."""
    movies = sentiment_path(MOVIES, root)
    splits = split_examples(read_rated(movies).examples, seed)
    for name, examples in splits.items():
        _require_both_classes(examples, f"{movies}, the {name} split of data.split_seed={seed}")
    for name in out_of_domain:
        splits[name] = read_rated(sentiment_path(name, root)).examples
    return splits


_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words (with their clitics: ``it's``, ``don't``) and single punctuation marks.
    Rotten Tomatoes writes quotes as two apostrophes (``''Conan''``), which become two ``'`` tokens."""
    return _TOKEN.findall(text.lower())
