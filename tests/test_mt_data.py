"""Parallel corpus readers, filters, sentencepiece and token-count batching for translation."""

import gzip
import io

import pytest
import torch

from g2lstm.data import data_root
from g2lstm.data.mt import (
    bible_corpus,
    filter_pairs,
    folder_corpus,
    iwslt_raw_corpus,
    load_corpus,
    multi30k,
    read_lines,
    read_parallel,
)
from g2lstm.mt.batching import token_batches, training_batch
from g2lstm.mt.tokenizer import BOS, EOS, PAD, Tokenizers, train_tokenizers


def write(path, lines, gz=False):
    text = "".join(line + "\n" for line in lines)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def test_read_lines_plain_and_gzip_give_the_same_lines(tmp_path):
    lines = ["Ein Hund läuft.", "", "Zwei Männer."]
    write(tmp_path / "a.de", lines)
    write(tmp_path / "a.de.gz", lines, gz=True)
    assert read_lines(tmp_path / "a.de") == lines
    assert read_lines(tmp_path / "a.de.gz") == lines
    with pytest.raises(FileNotFoundError, match="plain or .gz"):
        read_lines(tmp_path / "missing.de")


def test_read_parallel_rejects_different_line_counts(tmp_path):
    write(tmp_path / "x.de", ["a", "b"])
    write(tmp_path / "x.en", ["a"])
    with pytest.raises(ValueError, match="has 2.*has 1"):
        read_parallel(tmp_path / "x.de", tmp_path / "x.en")


def test_folder_corpus_finds_iwslt_style_splits(tmp_path):
    write(tmp_path / "train.de", ["hallo welt", "guten tag"])
    write(tmp_path / "train.en", ["hello world", "good day"])
    write(tmp_path / "valid.de.gz", ["danke"], gz=True)
    write(tmp_path / "valid.en.gz", ["thanks"], gz=True)
    write(tmp_path / "test.de", ["nur deutsch"])  # no test.en: not a split
    corpus = folder_corpus(tmp_path, "de", "en")
    assert corpus == {"train": [("hallo welt", "hello world"), ("guten tag", "good day")], "valid": [("danke", "thanks")]}
    with pytest.raises(FileNotFoundError, match="test.de and test.en"):
        folder_corpus(tmp_path, "de", "en", ["test"])
    assert load_corpus("folder", "de", "en", tmp_path, splits=["valid"]) == {"valid": [("danke", "thanks")]}


def test_iwslt_raw_release_format(tmp_path):
    write(tmp_path / "train.tags.de-en.de", ["<url>http://x</url>", "<talkid>1</talkid>", "Hallo Welt .", "Gut ."])
    write(tmp_path / "train.tags.de-en.en", ["<url>http://x</url>", "<talkid>1</talkid>", "Hello world .", "Good ."])
    for lang, segs in (("de", ["Erster Satz .", "Zweiter ."]), ("en", ["First sentence .", "Second ."])):
        xml = ['<?xml version="1.0" encoding="UTF-8"?>', "<mteval>", f'<srcset setid="x" srclang="{lang}">', '<doc docid="1">']
        xml += [f'<seg id="{i + 1}"> {s} </seg>' for i, s in enumerate(segs)] + ["</doc>", "</srcset>", "</mteval>"]
        write(tmp_path / f"IWSLT14.TED.tst2010.de-en.{lang}.xml", xml)
    corpus = iwslt_raw_corpus(tmp_path)
    assert corpus["train"] == [("Hallo Welt .", "Hello world ."), ("Gut .", "Good .")]
    assert corpus["tst2010"] == [("Erster Satz .", "First sentence ."), ("Zweiter .", "Second .")]


@pytest.mark.skipif(not (data_root() / "multi30k").is_dir(), reason="shared Multi30k data not present")
def test_multi30k_splits_have_the_published_sizes():
    corpus = multi30k("de", "en")
    assert {k: len(v) for k, v in corpus.items()} == {"train": 29000, "val": 1014, "test_2016_flickr": 1000}
    assert corpus["train"][0][1].startswith("Two young, White males")
    with pytest.raises(ValueError, match="Multi30k languages"):
        multi30k("de", "xx")


def test_bible_pairs_are_split_by_book():
    from g2lstm.data.bible import parallel_verses

    corpus = bible_corpus("e", "4", val_books=(8,), test_books=(43,))
    rows = parallel_verses("e", "4")
    by_pair = {(s.strip(), t.strip()): b for b, _, _, s, t in rows}
    assert len(corpus["val"]) == sum(b == 8 for b, *_ in rows) > 0
    assert len(corpus["test"]) == sum(b == 43 for b, *_ in rows) > 0
    assert all(by_pair[p] == 8 for p in corpus["val"])
    assert all(by_pair[p] == 43 for p in corpus["test"])
    assert not any(by_pair[p] in (8, 43) for p in corpus["train"])
    with pytest.raises(ValueError, match="both val and test"):
        bible_corpus(val_books=(8,), test_books=(8,))


def test_filter_pairs_by_length_and_ratio():
    pairs = [("a b c", "x y z"), ("", "x"), ("a " * 10, "x"), ("a b", "x y z w"), ("a " * 90, "x " * 90)]
    assert filter_pairs(pairs, min_len=1, max_len=80, max_ratio=2.0) == [("a b c", "x y z"), ("a b", "x y z w")]
    assert filter_pairs(pairs, min_len=1, max_len=None, max_ratio=None) == [pairs[0], pairs[2], pairs[3], pairs[4]]


CORPUS = [
    ("ein mann fährt fahrrad .", "a man rides a bike ."),
    ("zwei hunde spielen im schnee .", "two dogs play in the snow ."),
    ("eine frau liest ein buch .", "a woman reads a book ."),
    ("kinder spielen im park .", "children play in the park ."),
] * 10


def test_tokenizers_survive_a_weights_only_checkpoint_and_keep_special_ids():
    for joint in (True, False):
        toks = train_tokenizers(CORPUS, joint=joint, vocab_size=60, model_type="bpe")
        assert toks.joint is joint
        buf = io.BytesIO()
        torch.save({"tokenizers": toks.state()}, buf)
        buf.seek(0)
        loaded = Tokenizers.from_state(torch.load(buf, weights_only=True)["tokenizers"])
        assert loaded.joint is joint
        for text in ("ein mann liest .", "a dog plays in the park ."):
            tok = loaded.src if text.startswith("ein") else loaded.tgt
            ids = tok.encode([text])[0]
            assert ids == (toks.src if text.startswith("ein") else toks.tgt).encode([text])[0]
            assert min(ids) > EOS  # specials never come out of encode
            assert tok.decode([[BOS] + ids + [EOS, PAD]]) == [text]
    uni = train_tokenizers(CORPUS, joint=True, vocab_size=50, model_type="unigram")
    assert uni.src.sp.get_piece_size() <= 50
    with pytest.raises(ValueError, match="model_type"):
        train_tokenizers(CORPUS, model_type="wordpiece")


def test_token_batches_respect_the_budget_and_cover_every_example_once():
    src = [3, 9, 4, 20, 7, 7, 1, 12, 5, 30]
    tgt = [4, 8, 4, 18, 9, 6, 2, 11, 5, 2]
    batches = token_batches(src, tgt, max_tokens=30, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(10))
    for b in batches:
        longest = max(max(src[i], tgt[i]) for i in b)
        assert len(b) == 1 or longest * len(b) <= 30
    assert token_batches(src, tgt, 30, seed=0) == batches
    assert any(token_batches(src, tgt, 30, seed=s) != batches for s in range(1, 5))
    assert [len(b) for b in token_batches(src, tgt, 1000, max_sentences=3)] == [3, 3, 3, 1]


def test_training_batch_shifts_the_target():
    b = training_batch([[5, 6], []], [[7], [8, 9]])
    assert b["src"].tolist() == [[5, 6, EOS], [EOS, PAD, PAD]]
    assert b["src_lengths"].tolist() == [3, 1]
    assert b["tgt_in"].tolist() == [[BOS, 7, PAD], [BOS, 8, 9]]
    assert b["tgt_out"].tolist() == [[7, EOS, PAD], [8, 9, EOS]]
