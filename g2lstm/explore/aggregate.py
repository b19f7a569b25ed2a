"""Aggregates over every text, accumulated batch by batch (the full per-step states of every text
would not fit in memory or in the page): per unit gate saturation, gate histograms, per-text
saturation, the expected response of units to words (RNNVis) and its co-clusters."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..interpret.rnnvis import co_cluster

SATURATION_GATES = ("i", "f", "o")  # the gates of the Karpathy et al. saturation plot
HISTOGRAM_FIELDS = ("i", "f", "g", "o")
HISTOGRAM_BINS = 50
HISTOGRAM_RANGE = {"i": (0.0, 1.0), "f": (0.0, 1.0), "o": (0.0, 1.0), "g": (-1.0, 1.0)}


@dataclass
class LayerAggregate:
    """One layer direction of one model over every text."""

    below: dict[str, np.ndarray] = field(default_factory=dict)  # gate -> per unit count < 0.1
    above: dict[str, np.ndarray] = field(default_factory=dict)  # gate -> per unit count > 0.9
    steps: int = 0
    histograms: dict[str, np.ndarray] = field(default_factory=dict)
    response_sums: dict[str, np.ndarray] = field(default_factory=dict)  # state -> (words seen, units)
    word_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def add(self, values: dict[str, np.ndarray], word_ids: np.ndarray, states: tuple[str, ...]) -> None:
        """One text's steps: ``values[field]`` is ``(steps, units)``; ``word_ids`` the ids of the
        input tokens (in the model's shared word index)."""
        for gate in SATURATION_GATES:
            v = values[gate]
            self.below[gate] = self.below.get(gate, 0) + (v < 0.1).sum(0)
            self.above[gate] = self.above.get(gate, 0) + (v > 0.9).sum(0)
        for name in HISTOGRAM_FIELDS:
            counts, _ = np.histogram(values[name], bins=HISTOGRAM_BINS, range=HISTOGRAM_RANGE[name])
            self.histograms[name] = self.histograms.get(name, 0) + counts
        self.steps += len(word_ids)
        size = int(word_ids.max()) + 1 if len(word_ids) else 0
        if size > len(self.word_counts):
            self.word_counts = np.pad(self.word_counts, (0, size - len(self.word_counts)))
        np.add.at(self.word_counts, word_ids, 1)
        for state in states:
            update = np.diff(values[state].astype(np.float64), axis=0, prepend=0.0)  # D_t = s_t - s_{t-1}
            sums = self.response_sums.get(state, np.zeros((0, update.shape[1])))
            if size > len(sums):
                sums = np.pad(sums, ((0, size - len(sums)), (0, 0)))
            np.add.at(sums, word_ids, update)
            self.response_sums[state] = sums

    def saturation(self) -> dict[str, dict[str, list[float]]]:
        """Per gate, per unit, the shares of steps below 0.1 and above 0.9."""
        return {gate: {"below": (self.below[gate] / self.steps).tolist(), "above": (self.above[gate] / self.steps).tolist()}
                for gate in SATURATION_GATES}

    def response(self, state: str, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(word ids, words x units mean update)`` of the ``top_k`` most frequent words, as
        :func:`g2lstm.interpret.expected_response` orders them (count, then smaller id)."""
        ids = np.nonzero(self.word_counts)[0]
        order = ids[np.lexsort((ids, -self.word_counts[ids]))][:top_k]
        return order, self.response_sums[state][order] / self.word_counts[order, None]


def co_clusters(response: np.ndarray, wanted: int, mode: str = "positive", seed: int = 0) -> tuple[list[int], list[int]]:
    """Word and unit cluster labels of a response matrix (fewer clusters when the graph has too few
    non-zero rows or columns; all -1 when it has fewer than 2)."""
    part = {"positive": response > 0, "negative": response < 0, "absolute": response != 0}[mode]
    clusters = min(wanted, int(part.any(1).sum()), int(part.any(0).sum()))
    if clusters < 2:
        return [-1] * response.shape[0], [-1] * response.shape[1]
    rows, cols = co_cluster(response, clusters, mode=mode, seed=seed)
    return rows.tolist(), cols.tolist()
