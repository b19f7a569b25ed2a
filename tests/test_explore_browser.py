"""The explorer page in a real browser: Debian's chromium driven by Playwright for Python, the page
loaded from file:// with every other request aborted and counted. Interactions check the values the
page shows against the Python side; screenshots of each view go to runs/explore/screenshots."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from explore_fixtures import ODD_TEXTS, dequantised_tracks, lm_pair, lm_texts, reference_information, tiny_classifier
from g2lstm.explore import build, payload_of_page
from g2lstm.explore.information import entropy
from g2lstm.interpret import rank_neurons
from g2lstm.interpret.states import collect_states

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need Playwright for Python")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip("the browser tests need Debian's chromium (apt-get install chromium)", allow_module_level=True)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]
SHOTS = Path(__file__).resolve().parent.parent / "runs" / "explore" / "screenshots"
KEY = "rnns.0/l0"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


class Opened:
    """A page opened from file://: its console errors and the requests that were not files."""

    def __init__(self, browser, path: Path, hash_: str = ""):
        self.errors, self.outside = [], []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.route("**/*", self._route)
        self.page.goto(path.resolve().as_uri() + hash_)
        self.page.wait_for_selector("body[data-ready]")
        assert self.page.evaluate("document.body.dataset.ready") == "true", self.page.inner_text("#holds")

    def _route(self, route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def shot(self, name: str):
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def close(self):
        assert self.outside == [] and self.errors == []
        self.page.close()


@pytest.fixture(scope="module")
def lm_page(tmp_path_factory):
    models = lm_pair()
    path = tmp_path_factory.mktemp("browser") / "lm.html"
    build(models, lm_texts(), path, attribution_texts=3, tracked=8, progress=False, information_texts=3,
          information_steps=30, information_layers="all")
    header, arrays = payload_of_page(path.read_text(encoding="utf-8"))
    return models, path, header, arrays


def tooltip_value(page) -> float:
    return float(re.search(r"value (-?[0-9.]+)", page.inner_text("#tooltip")).group(1))


def test_hover_shows_the_trace_and_b_minus_a_the_difference(browser, lm_page):
    models, path, header, arrays = lm_page
    opened = Opened(browser, path, "#view=text&text=2&layer=" + KEY + "&diff=true")
    page = opened.page
    states = {name: collect_states(m, lm_texts())[KEY] for name, m in models.items()}
    assert page.evaluate("g2lstm.ui.heatmaps()")[:3] == ["lstm-h", "g2-h", "diff-h"]
    for field in ("h", "f", "c"):
        steps = {name: (lambda s: (s["hi"] - s["lo"]) / s["levels"])(
            next(x for x in m["layers"] if x["key"] == KEY)["tracks"][field]) for name, m in zip(models, header["models"])}
        for t, u in ((0, 0), (3, 5), (8, 11)):
            for name in models:
                centre = page.evaluate(f"g2lstm.ui.cellCenter('{name}-{field}', {t}, {u})")
                page.mouse.move(centre["x"], centre["y"])
                expected = states[name].values[field][2][t, u]
                assert abs(tooltip_value(page) - expected) <= steps[name] / 2 + 5e-5, (name, field, t, u)
            centre = page.evaluate(f"g2lstm.ui.cellCenter('diff-{field}', {t}, {u})")
            page.mouse.move(centre["x"], centre["y"])
            difference = states["g2"].values[field][2][t, u] - states["lstm"].values[field][2][t, u]
            assert abs(tooltip_value(page) - difference) <= steps["lstm"] / 2 + steps["g2"] / 2 + 5e-5
    opened.shot("text")
    timings = page.evaluate("g2lstm.ui.timings()")
    paint = page.evaluate("performance.getEntriesByType('paint').map(e => [e.name, e.startTime])")
    assert timings["firstRender"] < 2000 and dict(paint).get("first-contentful-paint", 0) < 2000
    opened.close()


def test_a_new_step_moves_the_cursors_without_redrawing_the_text_view(browser, lm_page):
    _, path, _, _ = lm_page
    opened = Opened(browser, path, "#view=text&text=2&layer=" + KEY)
    page = opened.page
    canvas = page.locator("canvas[data-heatmap='lstm-h']").element_handle()
    strip_before = page.evaluate("(c) => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.join()", canvas)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("(c) => c.isConnected", canvas)  # the same canvas, updated in place
    assert page.evaluate("(c) => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.join()", canvas) != strip_before
    assert page.locator("#sentence .token.current").get_attribute("data-step") == "2"
    assert "step 2 " in page.inner_text("#step-panel") and "t=2" in page.evaluate("location.hash")
    state = page.evaluate("g2lstm.ui.state()")
    assert state["t"] == 2 and state["unit"] == 0
    page.keyboard.down("Shift")
    page.keyboard.press("ArrowRight")
    page.keyboard.up("Shift")
    assert page.evaluate("g2lstm.ui.state().span") == [2, 3]
    assert page.locator("#sentence .token.span").count() == 2
    opened.close()


def test_per_word_information_shows_what_word_information_learns(browser, lm_page):
    models, path, header, _ = lm_page
    text, t, last = 2, 3, "rnns.1/l0"
    opened = Opened(browser, path, f"#view=text&text={text}&layer={last}")
    page = opened.page
    assert "per-word information (σ per token, Guan et al. 2019) for the first 3, of layers lstm: rnns.0/l0, " \
           "rnns.1/l0" in page.inner_text("#holds")
    page.click(f"#sentence .token[data-step='{t}']")
    references = {(name, key): reference_information(models[name], lm_texts(), 3, key, steps=30, draws=4)[text]
                  for name in models for key in ("rnns.0/l0", "rnns.1/l0")}
    for m, name in enumerate(models):
        for key in ("rnns.0/l0", "rnns.1/l0"):
            spec = header["models"][m]["information"]["layers"][key]["sigma"]
            half = (spec["hi"] - spec["lo"]) / spec["levels"] / 2
            expected = references[name, key]
            returned = np.array(page.evaluate(f"g2lstm.information({m}, '{key}', {text})"))
            assert returned.shape == expected.shape and np.abs(returned - expected).max() <= half + 1e-12, (name, key)
            assert np.ptp(expected) > 100 * half  # tokens apart by far more than the quantisation
            # the step panel: sigma to 4 significant digits, H to 2 decimals, the token's rank by sigma
            shown = page.inner_text(f"#step-details > div:nth-child({m + 1}) [data-information='{key}']")
            sigma, h, rank = re.search(r"σ ([0-9.e-]+), H (-?[0-9.]+) nats; rank ([0-9]+) of", shown).groups()
            assert abs(float(sigma) - expected[t]) <= half + 5e-4 * expected[t], (name, key, shown)
            assert abs(float(h) - entropy(expected[t], 8)) <= 0.005 + 8 * (half + 5e-4 * expected[t]) / expected[t]
            assert int(rank) == 1 + (expected < expected[t]).sum()
            # the strip's tooltip at the token, over the text view's canvas
            box = page.locator(f"canvas[aria-label='{name}: σ {key}']").bounding_box()
            cell = box["width"] / len(expected)
            page.mouse.move(box["x"] + (t + 0.5) * cell, box["y"] + box["height"] / 2)
            hovered = float(page.inner_text("#tooltip").rsplit(": ", 1)[1])
            assert abs(hovered - expected[t]) <= half + 5e-4 * expected[t], (name, key)
        assert page.evaluate(f"g2lstm.information({m}, '{last}', 3)") is None  # past the explained texts
    opened.shot("text_information")
    page.keyboard.press("1")  # the corpus table's column: the spread of H within the text, of the chosen layer
    column = page.locator(".vrow.head span").all_inner_texts().index(f"g2 H spread {last}")
    row = page.locator(f".vrow[data-text='{text}'] span").nth(column).inner_text()
    spread = entropy(references["g2", last], 8).std()
    assert abs(float(row) - spread) <= 5e-4 + 1e-4
    assert page.locator(".vrow[data-text='5'] span").nth(column).inner_text() == "–"
    opened.close()


def reference_match(tracks: list[np.ndarray], tracked: list[int], text: int, start: int, end: int, threshold: float,
                    top: int) -> tuple[list[int], list[tuple[int, int, float]]]:
    """Select and match, written plainly: the units on (>= threshold) through the span, then every window
    of the span's length ranked by the Jaccard similarity of its on-set (ties: text, start)."""
    def on(values, s, e):
        return set(np.nonzero((values[s:e + 1] >= threshold).all(0))[0].tolist())

    selected = on(tracks[tracked.index(text)], start, end)
    length = end - start + 1
    found = []
    for n, values in zip(tracked, tracks):
        for s in range(len(values) - length + 1):
            other = on(values, s, s + length - 1)
            union = len(selected | other)
            found.append((n, s, len(selected & other) / union if union else 0.0))
    found.sort(key=lambda x: (-x[2], x[0], x[1]))
    return sorted(selected), found[:top]


def test_select_and_match_finds_what_the_python_reference_finds(browser, lm_page):
    _, path, header, arrays = lm_page
    opened = Opened(browser, path, f"#view=text&text=2&layer={KEY}")
    page = opened.page
    page.click("#sentence .token[data-step='1']")
    page.click("#sentence .token[data-step='3']", modifiers=["Shift"])
    assert page.evaluate("g2lstm.ui.state().span") == [1, 3]
    page.keyboard.press("4")  # the select-and-match view, by keyboard
    page.fill("#match-threshold", "0.1")
    page.press("#match-threshold", "Enter")
    page.wait_for_selector("#match-results")
    shown = page.evaluate("g2lstm.ui.lastMatch()")
    tracks = dequantised_tracks(header, arrays, 0, KEY, "h")
    units, matches = reference_match(tracks, header["tracked"], 2, 1, 3, 0.1, 30)
    assert shown["units"] == units and units
    assert [(m["text"], m["start"], round(m["score"], 12)) for m in shown["matches"]] == \
        [(n, s, round(score, 12)) for n, s, score in matches]
    assert page.locator("#match-results tr").count() == len(matches) + 1
    opened.shot("match")
    for threshold in (-0.5, 0.3):  # the function the view calls, on other settings
        for field in ("h", "i"):
            result = page.evaluate(f"g2lstm.selectAndMatch({{model: 1, layer: '{KEY}', field: '{field}', text: 0, "
                                   f"start: 2, end: 3, threshold: {threshold}, top: 10}})")
            units, matches = reference_match(dequantised_tracks(header, arrays, 1, KEY, field), header["tracked"], 0, 2, 3,
                                             threshold, 10)
            assert result["units"] == units
            assert [(m["text"], m["start"]) for m in result["matches"]] == [(n, s) for n, s, _ in matches]
    opened.close()


def test_unit_search_by_hellinger_rank_is_rank_neurons_order(browser, lm_page):
    _, path, header, arrays = lm_page
    opened = Opened(browser, path, f"#view=units&layer={KEY}")
    page = opened.page
    page.select_option("#search-by", "hellinger")
    page.fill("#search-query", "the->dog")
    page.click("#unit-search button[type=submit]")
    page.wait_for_selector("#search-results")
    shown = page.evaluate("g2lstm.ui.lastSearch()")
    tracks = dequantised_tracks(header, arrays, 0, KEY, "h")
    inputs = np.array([t for n in header["tracked"] for t in header["tokens"]["tokens"][n]])
    outputs = np.array([o for n in header["tracked"] for o in header["models"][0]["outputs"][n]])
    at = inputs == "the"
    ranking = rank_neurons(np.concatenate(tracks)[at], outputs[at] == "dog", permutations=1)
    assert len({round(s.distance, 9) for s in ranking}) >= 4  # distinct distances: the order is tested
    assert [r["unit"] for r in shown] == [s.unit for s in ranking]
    np.testing.assert_allclose([r["score"] for r in shown], [s.distance for s in ranking], atol=1e-12)
    opened.shot("units")
    page.click("#search-results tr:nth-child(2)")  # the best unit's page
    page.wait_for_selector("#unit-page")
    assert f"unit {ranking[0].unit}" in page.inner_text("#unit-page")
    opened.shot("unit_page")
    for by, query in (("word", "dog"), ("saturation", "f"), ("difference", "")):
        page.select_option("#search-by", by)
        page.fill("#search-query", query)
        page.click("#unit-search button[type=submit]")
        assert page.locator("#search-results tr").count() > 1 and not page.locator("#search-error").count(), by
    difference = page.evaluate("g2lstm.ui.lastSearch()")
    a, b = np.concatenate(tracks), np.concatenate(dequantised_tracks(header, arrays, 1, KEY, "h"))
    mean = np.abs(b - a).mean(0)
    assert [r["unit"] for r in difference] == np.argsort(-mean, kind="stable").tolist()
    opened.close()


def test_every_view_renders_and_the_state_lives_in_the_hash(browser, lm_page):
    _, path, header, _ = lm_page
    opened = Opened(browser, path)
    page = opened.page
    assert page.locator(".vrow[data-text]").count() == len(header["texts"])
    page.click(".vrow.head span:nth-child(4)")  # sort by the first model's perplexity, descending
    values = header["models"][0]["values"]
    first = int(page.locator(".vrow[data-text]").first.get_attribute("data-text"))
    assert values[first] == max(values)
    page.fill("#corpus-filter", "cat")
    assert page.locator(".vrow[data-text]").count() == sum("cat" in t for t in header["texts"])
    opened.shot("corpus")
    page.fill("#corpus-filter", "")
    page.keyboard.press("Escape")
    for key in ("3", "6"):
        page.keyboard.press(key)
        opened.shot({"3": "gates", "6": "clusters"}[key])
    page.locator("[data-cluster]").first.click()
    cluster = page.evaluate("g2lstm.ui.state().cluster")
    page.keyboard.press("2")
    assert cluster is not None and page.locator("#sentence .token.cluster").count() >= 0
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    state = page.evaluate("g2lstm.ui.state()")
    assert state["view"] == "text" and state["t"] == 2 and "t=2" in page.evaluate("location.hash")
    again = Opened(page.context.browser, path, page.evaluate("location.hash"))
    assert again.page.evaluate("g2lstm.ui.state().t") == 2 and again.page.evaluate("g2lstm.ui.state().view") == "text"
    again.close()
    with page.expect_download() as download:
        page.locator(".panel .title button", has_text="PNG").first.click()
    assert download.value.suggested_filename.endswith(".png")
    assert page.evaluate("Object.isFrozen(g2lstm) && Object.isFrozen(g2lstm.header.models[0])")
    opened.close()


def test_unusual_texts_render(browser, tmp_path):
    path = tmp_path / "odd.html"
    build({"lstm": tiny_classifier("lstm", 0), "g2": tiny_classifier("g2lstm", 1)}, ODD_TEXTS, path,
          references=[0, 1, 0, 1], attribution_texts=2, information_texts=3, information_steps=5, progress=False)
    opened = Opened(browser, path)
    page = opened.page
    table = page.inner_text("#corpus-table")
    for text in ODD_TEXTS:
        assert text in table
    opened.shot("odd_corpus")
    page.evaluate("g2lstm.ui.openText(2)")
    assert page.locator("#sentence .token").all_inner_texts()[:5] == ["a", "<", "/", "script", ">"]
    assert "a </script><b>bold</b> test & more" in page.inner_text("#view-text")
    page.evaluate("g2lstm.ui.openText(0)")
    assert "щ" in page.inner_text("#sentence")
    assert page.locator("canvas[aria-label='g2: σ rnn/l0_reverse']").count() == 1  # both directions of a biLSTM
    opened.shot("odd_text")
    assert page.locator("b", has_text="bold").count() == 0  # shown as text, never parsed as HTML
    opened.close()
