"""g2lstm.interpret.views: every view file is written, non-empty, and shows what it was given."""

import numpy as np
import pytest

from g2lstm.interpret import (
    ColoredText, activation_html, activation_png, cluster_means, plot_memory_chips, plot_word_clouds,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def planted():
    rng = np.random.default_rng(0)
    row_labels = np.array([0] * 6 + [1] * 6 + [-1])
    col_labels = np.array([0] * 4 + [1] * 3 + [-1])
    response = rng.normal(0, 0.1, size=(13, 8))
    response[:6, :4] += 1.0
    response[6:12, 4:7] += 1.0
    return [f"word{i}" for i in range(13)], response, row_labels, col_labels


def test_word_clouds_and_memory_chips_are_written(tmp_path):
    words, response, row_labels, col_labels = planted()
    clouds = plot_word_clouds(words, row_labels, np.abs(response).sum(1), tmp_path / "clouds.png", title="m")
    chips = plot_memory_chips(response, row_labels, col_labels, tmp_path / "chips.png", title="m")
    for path in (clouds, chips):
        assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 1000
    means = cluster_means(response, row_labels)
    assert means.shape == (8, 2)
    assert means[:4, 0].min() > 0.8 and means[4:7, 1].min() > 0.8 and np.abs(means[:4, 1]).max() < 0.2


def test_views_check_their_inputs(tmp_path):
    words, response, row_labels, col_labels = planted()
    with pytest.raises(ValueError, match="as long"):
        plot_word_clouds(words[:-1], row_labels, response.sum(1), tmp_path / "x.png")
    with pytest.raises(ValueError, match="every label is -1"):
        plot_word_clouds(words, -np.ones(13, dtype=int), response.sum(1), tmp_path / "x.png")
    with pytest.raises(ValueError, match="column labels"):
        plot_memory_chips(response, row_labels, col_labels[:-1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="2 tokens but 1 values"):
        activation_html([ColoredText("u", ["a", "b"], [0.5])], tmp_path / "x.html")


def test_activation_views_color_each_token(tmp_path):
    rows = [ColoredText("lstm unit 3", list("a<b"), [1.0, 0.0, -1.0]),
            ColoredText("g2lstm unit 5", list("xyz"), [0.5, -0.5, 2.0])]
    page = activation_html(rows, tmp_path / "units.html", separator="").read_text()
    assert "&lt;" in page and "<b>lstm unit 3</b>" in page
    assert "background:rgb(255, 0, 0)'>a<" in page  # +1: red
    assert "background:rgb(255, 255, 255)'>&lt;<" in page  # 0: white
    assert "background:rgb(0, 0, 255)'>b<" in page  # -1: blue
    assert "background:rgb(255, 0, 0)'>z<" in page  # clipped to +1
    image = activation_png(rows * 20, tmp_path / "units.png", separator="", width=10, title="t")
    assert image.read_bytes().startswith(PNG_MAGIC) and image.stat().st_size > 1000
