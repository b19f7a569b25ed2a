"""g2lstm.interpret.views: every view file is written, non-empty, and shows what it was given."""

import numpy as np
import pytest

from g2lstm.interpret import (
    ColoredText, activation_png, cluster_means, plot_memory_chips, plot_word_clouds,
)



def planted():
    rng = np.random.default_rng(0)
    row_labels = np.array([0] * 6 + [1] * 6 + [-1])
    col_labels = np.array([0] * 4 + [1] * 3 + [-1])
    response = rng.normal(0, 0.1, size=(13, 8))
    response[:6, :4] += 1.0
    response[6:12, 4:7] += 1.0
    return [f"word{i}" for i in range(13)], response, row_labels, col_labels


def test_word_clouds_and_memory_chips_show_the_clusters(figures, tmp_path):
    words, response, row_labels, col_labels = planted()
    means = cluster_means(response, row_labels)
    assert means.shape == (8, 2)
    assert means[:4, 0].min() > 0.8 and means[4:7, 1].min() > 0.8 and np.abs(means[:4, 1]).max() < 0.2

    clouds = plot_word_clouds(words, row_labels, np.abs(response).sum(1), tmp_path / "clouds.png", title="m")
    figures.check_png(clouds)
    panels = [ax for ax in figures[clouds].axes if ax.get_images()]  # a cloud per word cluster, words drawn
    assert [ax.get_title() for ax in panels] == ["word cluster 0 (6 words)", "word cluster 1 (6 words)"]
    for ax in panels:
        cloud = np.asarray(ax.get_images()[0].get_array(), dtype=np.float64)
        assert (cloud < 250).any(-1).mean() > 0.01  # not only the white background

    chips = plot_memory_chips(response, row_labels, col_labels, tmp_path / "chips.png", title="m")
    image = figures[chips].axes[0].get_images()[0]
    order = np.argsort(col_labels, kind="stable")  # units by unit cluster: -1, then 0 (4 units), then 1 (3)
    np.testing.assert_allclose(np.asarray(image.get_array()), means[order])
    limit = np.abs(means).max()
    assert image.get_cmap().name == "RdBu_r" and image.get_clim() == (-limit, limit)
    assert [line.get_ydata()[0] for line in figures[chips].axes[0].get_lines()] == [0.5, 4.5]  # chip edges
    # the planted responses show in the darkest red; every chip's colour is on the PNG
    pixels = figures.check_png(chips, colours=[image.get_cmap()(1.0)[:3]])
    for value in means[order].ravel():
        assert figures.share_of(pixels, image.get_cmap()(float(image.norm(value)))[:3], 3 / 255) > 0


def test_views_check_their_inputs(tmp_path):
    words, response, row_labels, col_labels = planted()
    with pytest.raises(ValueError, match="as long"):
        plot_word_clouds(words[:-1], row_labels, response.sum(1), tmp_path / "x.png")
    with pytest.raises(ValueError, match="every label is -1"):
        plot_word_clouds(words, -np.ones(13, dtype=int), response.sum(1), tmp_path / "x.png")
    with pytest.raises(ValueError, match="column labels"):
        plot_memory_chips(response, row_labels, col_labels[:-1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="2 tokens but 1 values"):
        activation_png([ColoredText("u", ["a", "b"], [0.5])], tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one row"):
        activation_png([], tmp_path / "x.png")


def test_activation_view_colors_each_token(figures, tmp_path):
    rows = [ColoredText("lstm unit 3", list("a<b"), [1.0, 0.0, -1.0]),
            ColoredText("g2lstm unit 5", list("xyz"), [0.5, -0.5, 2.0])]
    image = activation_png(rows * 20, tmp_path / "units.png", separator="", width=10, title="t")
    # each token on the colour of its value: +1 red, -1 blue, +-0.5 half as strong, 2 clipped to red
    pixels = figures.check_png(image, colours=["#ff0000", "#0000ff", (1, 128 / 255, 128 / 255), (128 / 255, 128 / 255, 1)])
    assert figures.share_of(pixels, "#ff0000") > 1.5 * figures.share_of(pixels, "#0000ff")  # a, z against b
    # per row a label line and one line of text (3 characters in a width of 10), and the title's line:
    # 40 * 2 + 1 lines of 0.28 inches
    assert figures[image].get_size_inches()[1] == pytest.approx(0.28 * (40 * 2 + 1))
