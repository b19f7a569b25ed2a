"""The sentence-polarity reader on the real files of the shared data, and its errors."""

import re

import pytest

from g2lstm.data import sentiment
from g2lstm.data.sentiment import MOVIES, OUT_OF_DOMAIN, load_sentiment, read_rated, sentiment_path, split_examples, tokenize

needs_data = pytest.mark.skipif(not sentiment_path(MOVIES).is_file(), reason="shared sentiment data not present")


@needs_data
def test_movie_file_counts_and_balance():
    rated = read_rated(sentiment_path(MOVIES))
    assert len(rated.examples) + rated.zero_rated == 10_605
    assert rated.zero_rated == 37
    positive = sum(e.label for e in rated.examples)
    assert positive == 5242 and len(rated.examples) - positive == 5326
    assert rated.examples[0].id == "1" and rated.examples[0].text.startswith("The Rock is destined")
    assert all(not e.text.endswith("\r") for e in rated.examples)


@needs_data
def test_out_of_domain_files():
    sizes = {name: len(read_rated(sentiment_path(name)).examples) for name in OUT_OF_DOMAIN}
    assert sizes == {"tweets": 4196, "amazonReviewSnippets": 3610, "nytEditorialSnippets": 4946}


@needs_data
def test_split_is_deterministic_disjoint_and_balanced():
    splits = load_sentiment(out_of_domain=["tweets"])
    again = load_sentiment()
    assert {k: len(v) for k, v in splits.items()} == {"train": 8454, "valid": 1057, "test": 1057, "tweets": 4196}
    for name in ("train", "valid", "test"):
        assert [e.id for e in splits[name]] == [e.id for e in again[name]]
        share = sum(e.label for e in splits[name]) / len(splits[name])
        assert 0.45 < share < 0.52, (name, share)
    ids = [set(e.id for e in splits[name]) for name in ("train", "valid", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == 10_605 - 37
    other_seed = split_examples(read_rated(sentiment_path(MOVIES)).examples, seed=1)
    assert [e.id for e in other_seed["test"]] != [e.id for e in splits["test"]]


def test_tokenize():
    assert tokenize("It's ''Conan'', don't!") == ["it's", "'", "'", "conan", "'", "'", ",", "don't", "!"]


@pytest.mark.parametrize("content, expected", [
    ("", "found none"),
    ("1\t0.5\tfine\r\n2 -1.0 no tabs\r\n", "line 2: expected id<TAB>rating<TAB>sentence"),
    ("1\tgood\tnot a number\r\n", "line 1: expected a number as the rating (2nd field), found 'good'"),
    ("1\t0.5\t\r\n", "line 1: expected a sentence"),
])
def test_bad_input_names_file_line_and_expectation(tmp_path, content, expected):
    path = tmp_path / "bad_GroundTruth.txt"
    path.write_bytes(content.encode())
    with pytest.raises(ValueError, match=re.escape(expected)) as error:
        read_rated(path)
    assert str(path) in str(error.value)


def test_missing_file_and_unknown_set(tmp_path):
    with pytest.raises(FileNotFoundError, match="id<TAB>rating<TAB>sentence"):
        read_rated(tmp_path / "nothing.txt")
    with pytest.raises(ValueError, match="unknown sentiment set 'imdb'"):
        sentiment.sentiment_path("imdb")
