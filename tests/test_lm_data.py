"""Language-modelling corpora: exact file formats, splits, vocabulary, batching."""

import pytest
import torch

from g2lstm.data import data_root
from g2lstm.data.lm import (EOS, UNK, Vocab, batchify, load_corpus, read_bible, read_brown, read_text_file,
                            read_token_file, split_by_word_count, tokenize)


def test_vocab_orders_by_frequency_and_caps_size_with_specials():
    sentences = [["b", "a", "b"], ["c", "b", "a"], ["d"]]
    vocab = Vocab.build(sentences)
    assert vocab.tokens == [EOS, UNK, "b", "a", "c", "d"]  # ties alphabetical
    assert Vocab.build(sentences, max_size=4).tokens == [EOS, UNK, "b", "a"]
    assert Vocab.build(sentences, min_count=2).tokens == [EOS, UNK, "b", "a"]
    ids = Vocab.build(sentences, max_size=4).encode([["b", "zzz"], ["a"]])
    assert ids.tolist() == [2, 1, 0, 3, 0]  # unknown -> <unk>, <eos> after each sentence


def test_vocab_round_trips_as_a_list_of_strings_and_rejects_bad_lists():
    vocab = Vocab.build([["x", "y", "y"]])
    assert Vocab(list(vocab.tokens)) == vocab
    with pytest.raises(ValueError, match="must contain '<unk>'"):
        Vocab([EOS, "x"])
    with pytest.raises(ValueError, match="unique"):
        Vocab([EOS, UNK, "x", "x"])


def test_ptb_format(tmp_path):
    # Mikolov's files: a leading space, lowercase tokens, <unk> and N already in place.
    (tmp_path / "ptb.train.txt").write_text(" aer banknote berlitz <unk> \n the n stock fell \n")
    (tmp_path / "ptb.valid.txt").write_text(" the stock <unk> \n")
    (tmp_path / "ptb.test.txt").write_text(" berlitz fell unseenword \n")
    corpus = load_corpus("ptb", str(tmp_path))
    assert corpus.train.numel() == 4 + 1 + 4 + 1
    assert corpus.vocab.decode(corpus.test) == ["berlitz", "fell", UNK, EOS]
    assert corpus.vocab.decode(corpus.valid) == ["the", "stock", UNK, EOS]


def test_wikitext_format_keeps_blank_lines_and_headings_as_eos(tmp_path):
    text = " \n = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 : <unk> Chronicles \n"
    for split in ("train", "valid", "test"):
        (tmp_path / f"wiki.{split}.tokens").write_text(text, encoding="utf-8")
    sentences = read_token_file(tmp_path / "wiki.train.tokens")
    assert sentences == [[], ["=", "Valkyria", "Chronicles", "III", "="], [], ["Senjō", "no", "Valkyria", "3", ":", "<unk>", "Chronicles"]]
    corpus = load_corpus("wikitext", str(tmp_path))
    assert corpus.train.numel() == 5 + 7 + 4  # every line, blank ones too, ends with <eos>
    assert corpus.vocab.decode(corpus.train[:1]) == [EOS]


def test_missing_split_files_are_named(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" a b \n")
    with pytest.raises(FileNotFoundError, match=r"missing \['ptb.valid.txt', 'ptb.test.txt'\]"):
        load_corpus("ptb", str(tmp_path))
    with pytest.raises(ValueError, match="unknown language-modelling source 'ptbx'"):
        load_corpus("ptbx", str(tmp_path))


def test_plain_text_tokenizes_words_and_punctuation(tmp_path):
    assert tokenize("God`s Spirit, hovering!") == ["god's", "spirit", ",", "hovering", "!"]
    path = tmp_path / "t.txt"
    path.write_text("Hello, World.\n\n  \nSecond line\n", encoding="utf-8")
    assert read_text_file(path) == [["hello", ",", "world", "."], ["second", "line"]]
    assert read_text_file(path, lowercase=False)[0][0] == "Hello"


def test_brown_format_on_a_written_directory(tmp_path):
    (tmp_path / "ca01").write_text("\n\n\tThe/at Fulton/np-tl jury/nn said/vbd ./.\n\n\n\t1/2/cd of/in it/pps ./.\n")
    (tmp_path / "cb01").write_text("\n\tA/at second/od file/nn ./.\n")
    (tmp_path / "README").write_text("not a corpus file\n")
    assert read_brown(tmp_path) == [["the", "fulton", "jury", "said", "."], ["1/2", "of", "it", "."],
                                    ["a", "second", "file", "."]]
    (tmp_path / "cc01").write_text("\tbroken token\n")
    with pytest.raises(ValueError, match="expected word/TAG tokens"):
        read_brown(tmp_path)


def test_split_by_word_count_cuts_at_sentence_boundaries():
    sentences = [["w"] * n for n in (3, 3, 3, 3, 3)]
    train, valid, test = split_by_word_count(sentences, [5, 4])
    assert [len(train), len(valid), len(test)] == [2, 2, 1]  # 6 words (>= 5), then 6 (>= 4), rest


@pytest.mark.skipif(not (data_root() / "brown").is_dir(), reason="Brown corpus not in the shared data folder")
def test_real_brown_follows_bengio_split():
    sentences = read_brown()
    assert sum(map(len, sentences)) == 1_161_192
    assert sentences[0][:6] == ["the", "fulton", "county", "grand", "jury", "said"]
    corpus = load_corpus("brown", vocab_size=10_000)
    longest = max(map(len, sentences)) + 1
    eos = corpus.vocab.eos_id
    train_words = int((corpus.train != eos).sum())
    valid_words = int((corpus.valid != eos).sum())
    assert 800_000 <= train_words < 800_000 + longest
    assert 200_000 <= valid_words < 200_000 + longest
    assert train_words + valid_words + int((corpus.test != eos).sum()) == 1_161_192
    assert len(corpus.vocab) == 10_000
    assert all(t == t.lower() for t in corpus.vocab.tokens)


def test_bible_split_by_book_is_disjoint_and_checked():
    train, valid, test = read_bible("4", valid_books=[65], test_books=[66])
    assert valid[0][:4] == ["jude", ",", "a", "servant"]  # Jude 1:1
    assert len(valid) == 25 and len(test) == 404  # verses of Jude and Revelation
    assert len(train) == 31102 - 25 - 404
    with pytest.raises(ValueError, match=r"one split only; \[1\] are listed in two"):
        read_bible("4", valid_books=[1], test_books=[1])
    with pytest.raises(ValueError, match=r"one split only; \[66\]"):
        read_bible("4", valid_books=[65], test_books=[66], train_books=[64, 66])
    with pytest.raises(ValueError, match="1..66"):
        read_bible("4", valid_books=[67], test_books=[])
    with pytest.raises(ValueError, match=r"1..66; got \[0\]"):
        read_bible("4", valid_books=[], test_books=[], train_books=[0])


def test_bible_train_books_limit_the_training_split_only():
    train, valid, test = read_bible("4", valid_books=[65], test_books=[66], train_books=[63, 64])
    assert len(train) == 13 + 14  # the verses of 2 and 3 John (3 John has 14 in the WEB)
    assert train[0][:3] == ["the", "elder", ","]  # 2 John 1:1
    assert len(valid) == 25 and len(test) == 404  # as without train_books


def test_batchify_makes_contiguous_columns():
    data = batchify(torch.arange(11), 3)
    assert data.shape == (3, 3)
    assert data[:, 0].tolist() == [0, 1, 2] and data[:, 2].tolist() == [6, 7, 8]
    with pytest.raises(ValueError, match="too few for batch size 8"):
        batchify(torch.arange(10), 8)
