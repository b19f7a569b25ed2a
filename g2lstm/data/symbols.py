"""The symbol table of the classification and transliteration models (words or characters).

Id 0 is padding and id 1 stands for every symbol not in the table, so a padded id tensor never
holds a real symbol at 0. Stored in checkpoints as its plain list of strings (``symbols``).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

PAD, UNK = "<pad>", "<unk>"


class SymbolTable:
    def __init__(self, symbols: Sequence[str]):
        symbols = list(symbols)
        if symbols[:2] != [PAD, UNK]:
            raise ValueError(f"a symbol table starts with {PAD!r}, {UNK!r}; got {symbols[:2]}")
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols must be unique; duplicated: {sorted(s for s, n in Counter(symbols).items() if n > 1)[:5]}")
        self.symbols = symbols
        self.index = {s: i for i, s in enumerate(symbols)}

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]], min_count: int = 1) -> "SymbolTable":
        """The symbols seen at least ``min_count`` times, by falling frequency (ties in code order)."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1; got {min_count}")
        counts = Counter(s for seq in sequences for s in seq)
        kept = sorted((s for s, n in counts.items() if n >= min_count and s not in (PAD, UNK)), key=lambda s: (-counts[s], s))
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self.symbols)

    def ids(self, sequence: Sequence[str]) -> list[int]:
        return [self.index.get(s, 1) for s in sequence]

    def batch(self, sequences: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids (N, T) padded with 0, lengths (N,))``; every sequence needs at least one symbol."""
        empty = [i for i, seq in enumerate(sequences) if len(seq) == 0]
        if empty:
            raise ValueError(f"sequences must not be empty; sequence(s) {empty[:5]} are")
        ids = pad_sequence([torch.tensor(self.ids(seq), dtype=torch.long) for seq in sequences], batch_first=True)
        return ids, torch.tensor([len(seq) for seq in sequences], dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.symbols[int(i)] for i in ids]
