"""Neurons that decide: Hellinger distance between a neuron's activation histograms in two groups.

For an input symbol a and an output symbol b (YerevaNN, "Interpreting neurons in an LSTM
network", 2017), group A holds a neuron's activations at the steps with input a and output b,
group B those with input a and another output; ``H(p, q) = sqrt(1 - sum_k sqrt(p_k q_k))``.
Fine bins make two samples of one distribution look far apart (1000 bins: H ~ 0.8 at 300
samples), so the default bin count follows the smaller sample's size, and every distance comes
with a label-permutation p-value.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import sparse


def bin_count(n_a: int, n_b: int, bins: int | str = "auto") -> int:
    """Bins for two samples of sizes ``n_a``, ``n_b``: ``'auto'`` is Rice's rule, ``2 m^(1/3)``, on
    the smaller sample ``m``, which keeps the same-distribution distance near 0.1 at m = 300."""
    if bins == "auto":
        return max(2, int(round(2 * min(n_a, n_b) ** (1 / 3))))
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool) and bins >= 1:
        return int(bins)
    raise ValueError(f"bins must be 'auto' or a positive int, got {bins!r}")


def _bin_indices(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin index of each value, per column, between the column's min and max."""
    low, high = values.min(0), values.max(0)
    width = np.where(high > low, high - low, 1.0)
    return np.clip(((values - low) / width * n_bins).astype(np.int64), 0, n_bins - 1)


def _distance(counts_a: np.ndarray, counts_b: np.ndarray) -> np.ndarray:
    p = counts_a / counts_a.sum(-1, keepdims=True)
    q = counts_b / counts_b.sum(-1, keepdims=True)
    return np.sqrt(np.clip(1 - np.sqrt(p * q).sum(-1), 0, 1))


def hellinger(a: np.ndarray, b: np.ndarray, bins: int | str = "auto") -> float:
    """Hellinger distance in [0, 1] between the histograms of samples ``a`` and ``b`` on shared
    equal-width bins over their pooled range (``bins``: ``'auto'`` or a count, see :func:`bin_count`)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError(f"hellinger needs two non-empty samples; got sizes {a.size} and {b.size}")
    for name, sample in (("a", a), ("b", b)):
        _require_finite(sample, f"hellinger's sample {name}")
    n_bins = bin_count(a.size, b.size, bins)
    index = _bin_indices(np.concatenate([a, b])[:, None], n_bins)[:, 0]
    counts_a = np.bincount(index[: a.size], minlength=n_bins)
    counts_b = np.bincount(index[a.size :], minlength=n_bins)
    return float(_distance(counts_a, counts_b))


def _require_finite(sample: np.ndarray, what: str) -> None:
    """A NaN or inf would stretch (or void) the shared bins and give a distance of 0, calling the
    unit indifferent: an error naming what holds them instead (raised, not a NaN distance, because
    :func:`rank_neurons` sorts and tests the distances, where a NaN would pass unnoticed)."""
    bad = ~np.isfinite(sample)
    if bad.any():
        raise ValueError(f"{what} holds {int(np.isnan(sample).sum())} NaN and {int(np.isinf(sample).sum())} infinite "
                         f"value(s) of {sample.size} (the first at index {int(np.argmax(bad))}); expected finite values")


class NeuronScore(NamedTuple):
    unit: int
    distance: float
    p_value: float


def rank_neurons(
    activations: np.ndarray,
    in_group: np.ndarray,
    bins: int | str = "auto",
    permutations: int = 200,
    seed: int = 0,
) -> list[NeuronScore]:
    """Rank neurons by the Hellinger distance between their activations in and out of a group.

    Args:
        activations: ``(samples, units)``, e.g. every step with input symbol a.
        in_group: ``(samples,)`` booleans, e.g. "the output at this step is b".
        bins: as :func:`hellinger`; the bins of a unit are fixed by the pooled sample, so the
            permutations below reuse them.
        permutations: label permutations for the null distribution of each unit's distance.
        seed: seeds the permutations.

    Returns:
        every unit as ``NeuronScore(unit, distance, p_value)``, by decreasing distance; the
        p-value is ``(1 + #{null >= observed}) / (1 + permutations)``.
    """
    activations = np.asarray(activations, dtype=np.float64)
    in_group = np.asarray(in_group)
    if activations.ndim != 2 or in_group.shape != activations.shape[:1] or in_group.dtype != bool:
        raise ValueError(
            "activations must be (samples, units) and in_group (samples,) booleans; got shapes "
            f"{activations.shape} and {in_group.shape} ({in_group.dtype})"
        )
    bad_units = np.flatnonzero(~np.isfinite(activations).all(0))
    if bad_units.size:
        unit = int(bad_units[0])
        more = f" (and {bad_units.size - 1} more units)" if bad_units.size > 1 else ""
        _require_finite(activations[:, unit], f"rank_neurons' activations of unit {unit}{more}")
    n_a = int(in_group.sum())
    n_samples, n_units = activations.shape
    if n_a == 0 or n_a == n_samples:
        raise ValueError(f"both groups need samples; {n_a} of {n_samples} are in the group")
    n_bins = bin_count(n_a, n_samples - n_a, bins)
    index = _bin_indices(activations, n_bins) + np.arange(n_units) * n_bins
    # One-hot (samples, units * bins): group counts of every unit are one product with the labels.
    one_hot = sparse.csr_matrix(
        (np.ones(index.size), index.ravel(), np.arange(0, index.size + 1, n_units)),
        shape=(n_samples, n_units * n_bins),
    )
    totals = np.asarray(one_hot.sum(0)).reshape(n_units, n_bins)
    rng = np.random.default_rng(seed)
    labels = np.stack([in_group] + [rng.permutation(in_group) for _ in range(permutations)])
    counts_a = (one_hot.T @ labels.T.astype(np.float64)).T.reshape(-1, n_units, n_bins)
    distances = _distance(counts_a, totals - counts_a)
    observed, null = distances[0], distances[1:]
    p_values = (1 + (null >= observed - 1e-12).sum(0)) / (1 + permutations)
    order = np.argsort(-observed, kind="stable")
    return [NeuronScore(int(u), float(observed[u]), float(p_values[u])) for u in order]
