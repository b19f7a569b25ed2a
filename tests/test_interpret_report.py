"""g2lstm.cli.interpret (experiments/interpret.py, g2lstm-interpret): one report for two models of one task, every
section and view written, the explorer page of the same models and texts linked, and the texts whose attributions
miss the completeness bound listed."""

import json
from pathlib import Path

import numpy as np
import pytest

import g2lstm
from explore_fixtures import lm_pair, lm_texts
from g2lstm.cli import interpret, read_texts
from g2lstm.config import compose_config
from g2lstm.explore import payload_of_page
from g2lstm.interpret.report import write_report
from g2lstm.interpret.sections import token_kind
from g2lstm.interpret.states import collect_states
from g2lstm.lm.train import train as train_lm
from g2lstm.mt.train import train as train_mt
from test_interpret_models import tiny_lm

FAST = ["attribution.n_steps=16", "attribution.views=2", "information.steps=4", "information.max_texts=4",
        "information.views=1", "neurons.permutations=20", "neurons.views=1", "rnnvis.top_k=40",
        "rnnvis.n_clusters=3"]


@pytest.fixture(scope="module")
def lm_runs(tiny_lm_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("interpret_runs")
    for cell in ("lstm", "g2lstm"):
        train_lm(tiny_lm_config("train.max_steps=6", f"model.cell={cell}", "eval.cache.enabled=false"),
                 root / cell)
    return root


def views_of(report: str, out: Path, figures) -> list[str]:
    """The files the report links, each checked: a PNG shows a drawing; the only other file is the
    explorer page, and no other HTML file is written."""
    linked = [part.split(")")[0] for part in report.split("](")[1:]]
    for name in linked:
        if name != "explore.html":
            assert name.endswith(".png"), name
            figures.check_png(out / name)
    assert [p.name for p in out.glob("*.html")] == ["explore.html"]
    return linked


def check_page(out: Path, names: list[str], texts, numbers: dict) -> dict:
    """The explorer page holds the report's models (their checkpoints), its texts and its
    attributions (the same steps, gaps and scores); its header."""
    header, arrays = payload_of_page((out / "explore.html").read_text(encoding="utf-8"))
    assert [m["name"] for m in header["models"]] == names
    assert [m["path"] for m in header["models"]] == [numbers["checkpoints"][n] for n in names]
    assert header["texts"] == [" → ".join(t) if isinstance(t, (tuple, list)) else t for t in texts]
    for model in header["models"]:
        ours = numbers["attribution"]["texts"][model["name"]]
        shown = model["attribution"]
        assert shown["texts"] == len(texts) and shown["tolerance"] == numbers["attribution"]["tolerance"]
        assert shown["steps"] == [t["steps"] for t in ours]
        assert shown["within_bound"] == [t["within_bound"] for t in ours]
        assert shown["position"] == [t["position"] for t in ours]
        assert shown["delta"] == pytest.approx([t["delta"] for t in ours], abs=1e-6)
        for side, scores in shown["scores"].items():
            flat = np.concatenate([t["scores"][side] for t in ours])
            np.testing.assert_allclose(arrays[scores["array"]], flat, rtol=1e-5, atol=1e-7)
    return header


@pytest.mark.slow
def test_report_on_two_lm_models(lm_runs, figures, tmp_path):
    out = tmp_path / "report"
    checkpoints = {"lstm": lm_runs / "lstm" / "last.pt", "g2lstm": lm_runs / "g2lstm" / "last.pt"}
    interpret([f"checkpoints=[{checkpoints['lstm']},{checkpoints['g2lstm']}]", f"out_dir={out}",
               "max_texts=12", "neurons.min_group=5", *FAST])
    report = (out / "report.md").read_text()
    numbers = json.loads((out / "report.json").read_text())
    for heading in ("Integrated Gradients", "Gates per token", "RNNVis", "Neurons that decide", "Per-word information"):
        assert f"## {heading}" in report
    linked = views_of(report, out, figures)
    for kind in ("explore.html", "attributions.png", "neurons.png", "information.png", "gates_rnns_0_l0.png",
                 "clouds_lstm_rnns_1_l0_h.png", "chips_g2lstm_rnns_0_l0_h.png"):
        assert kind in linked
    # the numbers recomputed here from the states of the same 12 test sentences
    loaded = {name: g2lstm.load(path) for name, path in checkpoints.items()}
    texts, references = read_texts(loaded["lstm"], None, 12)
    assert len(texts) == 12 and references is None
    check_page(out, ["lstm", "g2lstm"], texts, numbers)
    states = {name: collect_states(model, texts) for name, model in loaded.items()}
    for name in ("lstm", "g2lstm"):
        summary = numbers["attribution"]["summary"][name]
        assert summary["texts"] == 12 and summary["abs_delta_max"] < 1e-4
        assert summary["outside_bound"] == 0 and numbers["attribution"]["outside_bound"][name] == []
        masses = [np.abs(np.concatenate([text["scores"][side] for side in text["tokens"]]))
                  for text in numbers["attribution"]["texts"][name]]
        assert summary["top1_share_mean"] == pytest.approx(np.mean([m.max() / m.sum() for m in masses]))
        bottom, top = states[name]["rnns.0/l0"], states[name]["rnns.1/l0"]
        kinds = np.array([token_kind(t) for tokens in bottom.tokens for t in tokens])
        assert (kinds == "function").sum() > 10
        forget_per_step = bottom.stacked("f").mean(1)
        assert numbers["gates"][name]["rnns.0/l0"]["f_function"] == pytest.approx(
            forget_per_step[kinds == "function"].mean())
        updates = np.concatenate([np.abs(np.diff(c, axis=0, prepend=0.0)) for c in top.values["c"]])
        assert numbers["rnnvis"][name]["rnns.1/l0"]["c"]["share_updates_below"] == pytest.approx((updates < 0.01).mean())
        best = numbers["neurons"][name]["best_neuron"]
        assert best["internal"] in "ifogch" and best["pairs"] and 0 < best["pairs"][0]["p_value"] <= 1
        entropy = numbers["information"][name]["rnns.0/l0"]["entropy"]
        assert len(entropy) == 4 and all(len(e) == len(t) for e, t in
                                         zip(entropy, numbers["information"][name]["rnns.0/l0"]["tokens"]))
    # the per-token gate figure: each model's mean input and forget gates over the first sentence
    first = states["lstm"]["rnns.0/l0"]
    rows = [states[name]["rnns.0/l0"].values[gate][0].mean(1) for name in ("lstm", "g2lstm") for gate in ("i", "f")]
    figures.check_heatmap(out / "gates_rnns_0_l0.png", rows, ["lstm input", "lstm forget", "g2lstm input",
                                                              "g2lstm forget"], first.tokens[0])


@pytest.mark.slow
def test_report_on_two_mt_models(tiny_mt_config, figures, tmp_path):
    for cell in ("lstm", "g2lstm"):
        train_mt(tiny_mt_config("train.max_epochs=1", f"model.cell={cell}", "eval.beam=1"), tmp_path / cell)
    out = tmp_path / "report"
    interpret([f"checkpoints=[{tmp_path}/lstm/best.pt,{tmp_path}/g2lstm/best.pt]", f"out_dir={out}",
                    "neurons.min_group=1", "attribution.position=1", "rnnvis.enabled=false", *FAST])
    report = (out / "report.md").read_text()
    numbers = json.loads((out / "report.json").read_text())
    assert "explore.html" in views_of(report, out, figures)
    texts, _ = read_texts(g2lstm.load(tmp_path / "lstm" / "best.pt"), None, 200)
    check_page(out, ["lstm", "g2lstm"], texts, numbers)
    first = numbers["attribution"]["texts"]["g2lstm"][0]
    assert set(first["tokens"]) == {"source", "target"} and first["position"] == 1
    assert set(numbers["gates"]["lstm"]) == {"encoder.rnn/l0", "encoder.rnn/l0_reverse", "decoder.rnn/l0"}
    assert set(numbers["information"]["lstm"]) == {"encoder.rnn/l0", "encoder.rnn/l0_reverse"}  # read the source
    assert numbers["neurons"]["lstm"]["best_neuron"]["layer"] == "decoder.rnn/l0"  # has output symbols


def test_report_refuses_models_of_different_names(lm_runs, tmp_path):
    with pytest.raises(ValueError, match="distinct label per checkpoint"):
        interpret([f"checkpoints=[{lm_runs}/lstm/last.pt,{lm_runs}/lstm/last.pt]", f"out_dir={tmp_path}"])


# --------------------------------------------------------------------------- write_report on tiny models
# Only the attribution section and the page: seconds, not a training run.
ATTRIBUTION_ONLY = ["gates.enabled=false", "rnnvis.enabled=false", "neurons.enabled=false",
                    "information.enabled=false", "attribution.views=1"]


@pytest.fixture(scope="module")
def tiny_pair():
    return lm_pair()


def steps_line(report: str, name: str) -> str:
    """The report's line of one model's steps per text and texts outside the bound."""
    return next(line for line in report.splitlines() if line.startswith(f"- **{name}**: "))


def steps_said(name: str, texts: list[dict], n_steps: int) -> str:
    """How that line must start: the texts at ``n_steps``, then per larger count the texts by index."""
    parts = [f"{sum(t['steps'] == n_steps for t in texts)} texts at {n_steps} steps"]
    for count in sorted({t["steps"] for t in texts} - {n_steps}):
        indices = [str(n) for n, t in enumerate(texts) if t["steps"] == count]
        parts.append(f"{count} steps: text{'s' * (len(indices) > 1)} {', '.join(indices)}")
    return f"- **{name}**: " + "; ".join(parts) + ". "


def test_report_links_the_explorer_page_of_its_models_and_texts(tiny_pair, figures, tmp_path):
    cfg = compose_config("interpret", ATTRIBUTION_ONLY + ["attribution.n_steps=8", "attribution.max_steps=16",
                                                          "explore.rnnvis.top_words=20"])
    out = tmp_path / "report"
    write_report(tiny_pair, lm_texts(), out, cfg, "test")
    report = (out / "report.md").read_text()
    numbers = json.loads((out / "report.json").read_text())
    assert "[explore.html](explore.html)" in report and numbers["explore"] == "explore.html"
    assert views_of(report, out, figures) == ["explore.html", "attributions.png"]
    header = check_page(out, ["lstm", "g2"], lm_texts(), numbers)
    assert header["models"][0]["attribution"]["position"][0] == len(lm_texts()[0].split()) - 1  # the report's -2
    # without the page: no file, no link
    cfg = compose_config("interpret", ATTRIBUTION_ONLY + ["attribution.n_steps=8", "explore.enabled=false"])
    write_report(tiny_pair, lm_texts(), tmp_path / "no_page", cfg, "test")
    assert "explore.html" not in (tmp_path / "no_page" / "report.md").read_text()
    assert not list((tmp_path / "no_page").glob("*.html"))


def test_report_lists_the_texts_whose_attributions_miss_the_bound(tiny_pair, tmp_path):
    # a cap of 2 Gauss-Legendre steps: too few for some of g2's texts at a tolerance of 5%
    cfg = compose_config("interpret", ATTRIBUTION_ONLY + ["attribution.n_steps=1", "attribution.max_steps=2",
                                                          "explore.enabled=false"])
    out = tmp_path / "report"
    write_report(tiny_pair, lm_texts(), out, cfg, "test")
    report = (out / "report.md").read_text()
    numbers = json.loads((out / "report.json").read_text())["attribution"]
    assert numbers["tolerance"] == 0.05 and numbers["max_steps"] == 2
    for name in ("lstm", "g2"):
        texts = numbers["texts"][name]
        ratios = [abs(t["delta"]) / abs(t["logit"] - t["baseline_logit"]) for t in texts]
        outside = [n for n, r in enumerate(ratios) if r > 0.05]
        listed = numbers["outside_bound"][name]
        assert [x["text"] for x in listed] == outside and numbers["summary"][name]["outside_bound"] == len(outside)
        assert [x["delta_ratio"] for x in listed] == pytest.approx([ratios[n] for n in outside])
        assert all(x["steps"] == 2 for x in listed)  # refined up to the cap before giving up
        assert all(ratios[n] <= 0.05 for n, t in enumerate(texts) if t["steps"] == 1)  # only misses were refined
        line = steps_line(report, name)
        assert line.startswith(steps_said(name, texts, 1))
        if outside:
            assert f"**{len(outside)} outside the bound** at 2 steps: " in line
            for n in outside:
                assert f"text {n} ({ratios[n]:.3g})" in line
        else:
            assert line.endswith("All within the bound.")
    assert 4 in [x["text"] for x in numbers["outside_bound"]["g2"]]  # |delta| ~ 20% of the change at 2 steps
    assert numbers["outside_bound"]["lstm"] == []


def test_report_says_when_every_text_meets_the_bound(tiny_pair, tmp_path):
    cfg = compose_config("interpret", ATTRIBUTION_ONLY + ["attribution.n_steps=2", "attribution.max_steps=64",
                                                          "explore.enabled=false"])
    out = tmp_path / "report"
    write_report(tiny_pair, lm_texts(), out, cfg, "test")
    report = (out / "report.md").read_text()
    numbers = json.loads((out / "report.json").read_text())["attribution"]
    for name in ("lstm", "g2"):
        texts = numbers["texts"][name]
        assert all(abs(t["delta"]) <= 0.05 * abs(t["logit"] - t["baseline_logit"]) for t in texts)
        assert all(t["within_bound"] for t in texts) and numbers["outside_bound"][name] == []
        assert numbers["summary"][name]["outside_bound"] == 0
        assert numbers["summary"][name]["steps_max"] == max(t["steps"] for t in texts)
        assert steps_line(report, name) == steps_said(name, texts, 2) + "All within the bound."
    # some of g2's texts needed more than 2 steps to get there (the line above says which)
    assert numbers["summary"]["g2"]["steps_max"] > 2


def test_a_page_over_its_budget_names_the_report_key(tiny_pair, tmp_path):
    cfg = compose_config("interpret", ATTRIBUTION_ONLY + ["attribution.n_steps=2", "explore.budget_mb=0.01",
                                                          "explore.tracked=0"])
    with pytest.raises(ValueError, match=r"over explore\.budget_mb=0\.01; lower explore\.tracked, the words of "
                                         r"the responses \(explore\.rnnvis\.top_words\)"):
        write_report(tiny_pair, lm_texts(), tmp_path / "report", cfg, "test")


def test_report_with_the_page_refuses_more_models_than_the_page_shows(tmp_path):
    models = {f"m{k}": tiny_lm("lstm") for k in range(5)}
    with pytest.raises(ValueError, match="explore.enabled=true: the explorer page shows 1 to 4 models"):
        write_report(models, lm_texts(), tmp_path / "report", compose_config("interpret"), "test")
    assert not (tmp_path / "report").exists()  # refused before anything was computed or written
