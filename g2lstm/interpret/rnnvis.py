"""RNNVis (Ming et al., IEEE VAST 2017): expected response of hidden units to words, co-clusters.

The update of a state ``s`` (a layer's ``c`` or ``h``) at step t is ``D_t = s_t - s_{t-1}``, with
``D_1 = s_1``. The expected response of unit j to word w is the mean of ``D_t[j]`` over the
steps whose input is w. Words and units then form a bipartite graph, co-clustered with spectral
co-clustering (Dhillon 2001).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.cluster import SpectralCoclustering


def expected_response(
    sequences_of_states: Sequence[np.ndarray],
    sequences_of_token_ids: Sequence[Sequence[int]],
    top_k: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean state update per word.

    Args:
        sequences_of_states: per sequence, the states ``(T, units)`` after each step.
        sequences_of_token_ids: per sequence, the ``T`` input token ids.
        top_k: keep the ``top_k`` most frequent words (ties: smaller id first); ``None``: all.

    Returns:
        ``(word_ids, response)``: word ids ``(W,)`` by decreasing frequency, and the
        words x units matrix ``(W, units)`` of mean updates.
    """
    if len(sequences_of_states) != len(sequences_of_token_ids):
        raise ValueError(
            f"{len(sequences_of_states)} sequences of states but {len(sequences_of_token_ids)} of token ids"
        )
    if not sequences_of_states:
        raise ValueError("expected_response needs at least one sequence")
    updates, ids = [], []
    for n, (states, tokens) in enumerate(zip(sequences_of_states, sequences_of_token_ids)):
        states = np.asarray(states, dtype=np.float64)
        tokens = np.asarray(tokens, dtype=np.int64)
        if states.ndim != 2 or states.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"sequence {n}: states must be (T, units) with T = {tokens.shape[0]} tokens; "
                f"got shape {states.shape}"
            )
        updates.append(np.diff(states, axis=0, prepend=0.0))
        ids.append(tokens)
    updates, ids = np.concatenate(updates), np.concatenate(ids)
    words, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    sums = np.zeros((len(words), updates.shape[1]))
    np.add.at(sums, inverse, updates)
    order = np.lexsort((words, -counts))[:top_k]
    return words[order], sums[order] / counts[order, None]


_MODES = {"positive": lambda m: np.clip(m, 0, None), "negative": lambda m: np.clip(-m, 0, None), "absolute": np.abs}
CO_CLUSTER_MODES = tuple(_MODES)  # which part of the response matrix co_cluster partitions


def co_cluster(
    matrix: np.ndarray, n_clusters: int, mode: str = "positive", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Spectral co-clustering of a words x units response matrix.

    Args:
        matrix: ``(words, units)`` edge weights, e.g. from :func:`expected_response`.
        n_clusters: the number of co-clusters.
        mode: which part of the graph: ``'positive'`` (``max(r, 0)``), ``'negative'``
            (``max(-r, 0)``) or ``'absolute'`` (``|r|``).
        seed: the k-means seed.

    Returns:
        ``(row_labels, column_labels)``; rows and columns whose weights are all zero in the
        chosen part have no edges (the method divides by their degree) and get label -1.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be 2-D (words, units); got shape {matrix.shape}")
    weights = _MODES[mode](matrix)
    rows, cols = weights.any(1), weights.any(0)
    if min(rows.sum(), cols.sum()) < 2 or not 1 <= n_clusters <= min(rows.sum(), cols.sum()):
        raise ValueError(
            f"co-clustering needs at least 2 non-zero rows and columns and n_clusters between 1 and "
            f"their numbers; the {mode} part has {rows.sum()} rows and {cols.sum()} columns, "
            f"n_clusters is {n_clusters}"
        )
    model = SpectralCoclustering(n_clusters=n_clusters, random_state=seed)
    model.fit(weights[rows][:, cols])
    row_labels = np.full(matrix.shape[0], -1, dtype=np.int64)
    col_labels = np.full(matrix.shape[1], -1, dtype=np.int64)
    row_labels[rows], col_labels[cols] = model.row_labels_, model.column_labels_
    return row_labels, col_labels
