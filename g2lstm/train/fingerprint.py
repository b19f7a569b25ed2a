"""Fingerprints of a run's data: per split, how many items and a hash of their contents, and the
same of the vocabulary. A run records its fingerprint in every checkpoint; resume compares the
data, ``train.init_from`` the vocabulary, and each names what changed (a config that names the
same files says nothing about what is in them)."""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

import torch


def _update(digest, item: Any) -> None:
    if isinstance(item, torch.Tensor):
        digest.update(str(item.dtype).encode())
        digest.update(item.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(item, str):
        digest.update(item.encode("utf-8"))
    elif isinstance(item, (list, tuple)):
        digest.update(b"[")
        for part in item:
            _update(digest, part)
            digest.update(b"\x1f")  # a separator: ("ab", "c") and ("a", "bc") differ
        digest.update(b"]")
    else:
        digest.update(repr(item).encode("utf-8"))


def describe(items: Iterable[Any] | torch.Tensor) -> dict[str, Any]:
    """``{'items': count, 'sha256': first 16 hex digits}`` of a split (a token tensor, or a list of
    texts, pairs, examples as tuples of strings)."""
    items = items if isinstance(items, torch.Tensor) else list(items)
    digest = hashlib.sha256()
    _update(digest, items)
    return {"items": int(items.numel() if isinstance(items, torch.Tensor) else len(items)),
            "sha256": digest.hexdigest()[:16]}


def fingerprint(splits: dict[str, Any], vocabulary: Any) -> dict[str, Any]:
    """The fingerprint of a run's data: each split and the vocabulary (anything :func:`describe`
    reads: a token list, or the state of the tokenizers)."""
    return {"splits": {name: describe(items) for name, items in splits.items()}, "vocabulary": describe(vocabulary)}


def changes(saved: dict[str, Any], current: dict[str, Any], what: tuple[str, ...] = ("splits", "vocabulary")) -> list[str]:
    """One line per split (and the vocabulary) whose fingerprint differs."""
    lines = []
    if "splits" in what:
        for name in sorted(set(saved["splits"]) | set(current["splits"])):
            lines += _differs(f"the {name} split", saved["splits"].get(name), current["splits"].get(name))
    if "vocabulary" in what:
        lines += _differs("the vocabulary", saved["vocabulary"], current["vocabulary"])
    return lines


def _differs(name: str, saved: dict | None, current: dict | None) -> list[str]:
    if saved == current:
        return []
    def show(d):
        return "absent" if d is None else f"{d['items']:,} items (sha256 {d['sha256']})"
    return [f"{name}: {show(saved)} in the checkpoint, {show(current)} now"]
