"""g2lstm.cli.interpret (experiments/interpret.py, g2lstm-interpret): one report for two models of one task, every section and view written."""

import json
from pathlib import Path

import numpy as np
import pytest

import g2lstm
from g2lstm.cli import interpret, read_texts
from g2lstm.interpret.sections import token_kind
from g2lstm.interpret.states import collect_states
from g2lstm.lm.train import train as train_lm
from g2lstm.mt.train import train as train_mt

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
    """The files the report links, each checked: a PNG shows a drawing, a page colours its tokens."""
    linked = [part.split(")")[0] for part in report.split("](")[1:]]
    for name in linked:
        if name.endswith(".png"):
            figures.check_png(out / name)
        else:
            assert (out / name).read_text(encoding="utf-8").count("<span title=") > 10, name
    return linked


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
    for kind in ("attributions.png", "attributions.html", "neurons.png", "neurons.html", "information.png",
                 "information.html", "gates_rnns_0_l0.png", "clouds_lstm_rnns_1_l0_h.png",
                 "chips_g2lstm_rnns_0_l0_h.png"):
        assert kind in linked
    # the numbers recomputed here from the states of the same 12 test sentences
    loaded = {name: g2lstm.load(path) for name, path in checkpoints.items()}
    texts = read_texts(loaded["lstm"], None, 12)
    states = {name: collect_states(model, texts) for name, model in loaded.items()}
    for name in ("lstm", "g2lstm"):
        summary = numbers["attribution"]["summary"][name]
        assert summary["texts"] == 12 and summary["abs_delta_max"] < 1e-4
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
    views_of(report, out, figures)
    first = numbers["attribution"]["texts"]["g2lstm"][0]
    assert set(first["tokens"]) == {"source", "target"} and first["position"] == 1
    assert set(numbers["gates"]["lstm"]) == {"encoder.rnn/l0", "encoder.rnn/l0_reverse", "decoder.rnn/l0"}
    assert set(numbers["information"]["lstm"]) == {"encoder.rnn/l0", "encoder.rnn/l0_reverse"}  # read the source
    assert numbers["neurons"]["lstm"]["best_neuron"]["layer"] == "decoder.rnn/l0"  # has output symbols


def test_report_refuses_models_of_different_names(lm_runs, tmp_path):
    with pytest.raises(ValueError, match="distinct label per checkpoint"):
        interpret([f"checkpoints=[{lm_runs}/lstm/last.pt,{lm_runs}/lstm/last.pt]", f"out_dir={tmp_path}"])
