"""The texts of an explorer page: a file's lines or a split of the run's own data, with what the
metrics need (a classifier's gold labels, a transliterator's gold output symbols)."""

from __future__ import annotations

from typing import Sequence


def read_text_file(task: str, path: str, count: int) -> list:
    """The first ``count`` non-empty lines of ``path`` (MT: ``source<TAB>target`` or sources alone)."""
    lines = [line.rstrip("\n") for line in open(path, encoding="utf-8") if line.strip()]
    texts = [tuple(line.split("\t", 1)) if task == "mt" and "\t" in line else line for line in lines]
    if not texts:
        raise ValueError(f"texts={path} has no non-empty line")
    return texts[:count]


def split_texts(loaded, split: str, count: int) -> tuple[list, Sequence | None]:
    """``(texts, references)``: the first ``count`` texts of the run's ``split`` (``train``,
    ``valid``, ``test``); references are the gold labels (classifier) or output symbols
    (transliterator), None for LM and MT (their texts carry their targets)."""
    if loaded.task == "lm":
        ids = getattr(loaded.corpus, split, None)
        if ids is None:
            raise ValueError(f"split must be one of train, valid, test; got {split!r}")
        ids, eos = ids.tolist(), loaded.vocab.eos_id
        texts, start = [], 0
        while len(texts) < count and start < len(ids):
            stop = ids.index(eos, start) + 1 if eos in ids[start:] else len(ids)
            words = loaded.vocab.decode(ids[start:stop])
            texts.append(" ".join(w for w in words if w != "<eos>"))
            start = stop
        return [t for t in texts if t], None
    data = loaded.data
    if split not in data:
        raise ValueError(f"split must be one of {sorted(data)}; got {split!r}")
    items = list(data[split][:count])
    if loaded.task == "mt":
        return items, None
    if loaded.task == "classify":
        return [e.text for e in items], [e.label for e in items]
    if loaded.task == "translit":
        return [p.latin for p in items], [p.target for p in items]
    raise ValueError(f"task {loaded.task!r} has no default texts: pass texts=<file>")
