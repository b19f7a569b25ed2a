"""Views over arrays: word clouds per word cluster, memory chips, text coloured by activations.

Each function writes one PNG and needs no model, so that the report can lay the views of two
models side by side and the tests can check every view on planted arrays. (The interactive views
are the explorer page's, :mod:`g2lstm.explore`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_word_clouds(
    words: Sequence[str],
    row_labels: np.ndarray,
    weights: np.ndarray,
    path: str | Path,
    max_words: int = 60,
    title: str | None = None,
) -> Path:
    """One word cloud per word cluster (label >= 0), word size by ``weights`` (e.g. the word's
    total response to its unit cluster); written as one PNG with a panel per cluster."""
    from wordcloud import WordCloud

    row_labels, weights = np.asarray(row_labels), np.asarray(weights, dtype=np.float64)
    if not len(words) == len(row_labels) == len(weights):
        raise ValueError(
            f"words, row_labels and weights must be as long; got {len(words)}, {len(row_labels)}, {len(weights)}"
        )
    clusters = sorted(set(row_labels[row_labels >= 0].tolist()))
    if not clusters:
        raise ValueError("no word is in a cluster (every label is -1)")
    plt = _pyplot()
    columns = min(len(clusters), 4)
    rows = -(-len(clusters) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, cluster in zip(axes.flat, clusters):
        members = np.flatnonzero(row_labels == cluster)
        frequencies = {words[i]: max(float(weights[i]), 1e-9) for i in members}
        cloud = WordCloud(width=320, height=240, background_color="white", max_words=max_words,
                          random_state=0).generate_from_frequencies(frequencies)
        ax.imshow(cloud, interpolation="bilinear")
        ax.set_title(f"word cluster {cluster} ({len(members)} words)", fontsize=9)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def cluster_means(response: np.ndarray, row_labels: np.ndarray) -> np.ndarray:
    """``(units, word clusters)``: each unit's mean response over the words of each cluster."""
    clusters = sorted(set(np.asarray(row_labels)[np.asarray(row_labels) >= 0].tolist()))
    return np.stack([response[row_labels == k].mean(0) for k in clusters], axis=1)


def plot_memory_chips(
    response: np.ndarray,
    row_labels: np.ndarray,
    col_labels: np.ndarray,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """RNNVis's "memory chips": units (grouped by unit cluster, one chip per cluster) x word
    clusters, coloured by the units' mean response to the cluster's words."""
    response, col_labels = np.asarray(response, dtype=np.float64), np.asarray(col_labels)
    if response.shape[1] != len(col_labels) or response.shape[0] != len(row_labels):
        raise ValueError(
            f"response is {response.shape} (words, units) but there are {len(row_labels)} row "
            f"and {len(col_labels)} column labels"
        )
    means = cluster_means(response, np.asarray(row_labels))
    order = np.argsort(col_labels, kind="stable")
    chips = means[order]
    limit = float(np.abs(chips).max()) or 1.0
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(3 + 0.5 * chips.shape[1], 3 + 0.01 * chips.shape[0]))
    image = ax.imshow(chips, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    boundaries = np.flatnonzero(np.diff(col_labels[order])) + 0.5
    for y in boundaries:
        ax.axhline(y, color="black", linewidth=1)
    ax.set_xticks(range(chips.shape[1]))
    ax.set_xlabel("word cluster")
    ax.set_ylabel("units: a chip per unit cluster")
    ax.set_yticks([])
    figure.colorbar(image, ax=ax, label="mean update")
    if title:
        ax.set_title(title, fontsize=9)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


class ColoredText(NamedTuple):
    """One line of a coloured-text view: a label (model, unit) and a value in [-1, 1] per token."""

    label: str
    tokens: Sequence[str]
    values: Sequence[float]


def _check_rows(rows: Sequence[ColoredText]) -> None:
    if not rows:
        raise ValueError("a coloured-text view needs at least one row")
    for row in rows:
        if len(row.tokens) != len(row.values):
            raise ValueError(f"row {row.label!r}: {len(row.tokens)} tokens but {len(row.values)} values")


def _rgb(value: float) -> tuple[int, int, int]:
    """Blue for -1, white for 0, red for +1 (values are clipped to [-1, 1])."""
    v = float(np.clip(value, -1, 1))
    fade = int(round(255 * (1 - abs(v))))
    return (255, fade, fade) if v >= 0 else (fade, fade, 255)


def activation_png(rows: Sequence[ColoredText], path: str | Path, separator: str = " ",
                   width: int = 90, title: str | None = None) -> Path:
    """Text coloured token by token (``separator=''`` for characters), blue for -1, white for 0,
    red for +1: monospace, wrapped at ``width`` characters, one block per row."""
    _check_rows(rows)
    blocks = []
    for row in rows:
        lines, line, column = [], [], 0
        for token, value in zip(row.tokens, row.values):
            piece = token + separator
            if column and column + len(piece) > width:
                lines.append(line)
                line, column = [], 0
            line.append((column, token, value))
            column += len(piece)
        lines.append(line)
        blocks.append((row.label, lines))
    n_lines = sum(1 + len(lines) for _, lines in blocks)
    plt = _pyplot()
    char_width, line_height = 0.6 * 10 / 72, 0.28  # inches: a 10-point monospace glyph is 0.6 em wide
    figure = plt.figure(figsize=(char_width * (width + 4), line_height * (n_lines + 1)))
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width + 4)
    ax.set_ylim(n_lines + 1, 0)
    ax.axis("off")
    y = 0.5
    if title:
        ax.text(0.5, y, title, fontsize=10, weight="bold", va="center")
        y += 1
    for label, lines in blocks:
        ax.text(0.5, y, label, fontsize=9, weight="bold", va="center")
        y += 1
        for line in lines:
            for column, token, value in line:
                ax.text(0.5 + column * 1.0, y, token, family="monospace", fontsize=10, va="center",
                        bbox=dict(boxstyle="square,pad=0.05", linewidth=0,
                                  facecolor=np.array(_rgb(value)) / 255))
            y += 1
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
