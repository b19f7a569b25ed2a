"""g2lstm.cli.interpret (experiments/interpret.py, g2lstm-interpret): one report for two models of one task, every section and view written."""

import json
from pathlib import Path

import pytest

from g2lstm.lm.train import train as train_lm
from g2lstm.mt.train import train as train_mt

from g2lstm.cli import interpret

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


def views_of(report: str, out: Path) -> list[str]:
    """The files the report links, each checked to exist and be non-empty."""
    linked = [part.split(")")[0] for part in report.split("](")[1:]]
    for name in linked:
        assert (out / name).stat().st_size > 500, name
    return linked


@pytest.mark.slow
def test_report_on_two_lm_models(lm_runs, tmp_path):
    out = tmp_path / "report"
    interpret([f"checkpoints=[{lm_runs}/lstm/last.pt,{lm_runs}/g2lstm/last.pt]", f"out_dir={out}",
                    "max_texts=12", "neurons.min_group=5", *FAST])
    report = (out / "report.md").read_text()
    numbers = json.loads((out / "report.json").read_text())
    for heading in ("Integrated Gradients", "Gates per token", "RNNVis", "Neurons that decide", "Per-word information"):
        assert f"## {heading}" in report
    linked = views_of(report, out)
    for kind in ("attributions.png", "attributions.html", "neurons.png", "neurons.html", "information.png",
                 "information.html", "gates_rnns_0_l0.png", "clouds_lstm_rnns_1_l0_h.png",
                 "chips_g2lstm_rnns_0_l0_h.png"):
        assert kind in linked
    for name in ("lstm", "g2lstm"):
        summary = numbers["attribution"]["summary"][name]
        assert summary["texts"] == 12 and summary["abs_delta_max"] < 1e-4
        assert 0 < summary["top1_share_mean"] <= 1
        assert 0 <= numbers["gates"][name]["rnns.0/l0"]["f_function"] <= 1
        assert 0 <= numbers["rnnvis"][name]["rnns.1/l0"]["c"]["share_updates_below"] <= 1
        best = numbers["neurons"][name]["best_neuron"]
        assert best["internal"] in "ifogch" and best["pairs"] and 0 < best["pairs"][0]["p_value"] <= 1
        entropy = numbers["information"][name]["rnns.0/l0"]["entropy"]
        assert len(entropy) == 4 and all(len(e) == len(t) for e, t in
                                         zip(entropy, numbers["information"][name]["rnns.0/l0"]["tokens"]))


@pytest.mark.slow
def test_report_on_two_mt_models(tiny_mt_config, tmp_path):
    for cell in ("lstm", "g2lstm"):
        train_mt(tiny_mt_config("train.max_epochs=1", f"model.cell={cell}", "eval.beam=1"), tmp_path / cell)
    out = tmp_path / "report"
    interpret([f"checkpoints=[{tmp_path}/lstm/best.pt,{tmp_path}/g2lstm/best.pt]", f"out_dir={out}",
                    "neurons.min_group=1", "attribution.position=1", "rnnvis.enabled=false", *FAST])
    report = (out / "report.md").read_text()
    numbers = json.loads((out / "report.json").read_text())
    views_of(report, out)
    first = numbers["attribution"]["texts"]["g2lstm"][0]
    assert set(first["tokens"]) == {"source", "target"} and first["position"] == 1
    assert set(numbers["gates"]["lstm"]) == {"encoder.rnn/l0", "encoder.rnn/l0_reverse", "decoder.rnn/l0"}
    assert set(numbers["information"]["lstm"]) == {"encoder.rnn/l0", "encoder.rnn/l0_reverse"}  # read the source
    assert numbers["neurons"]["lstm"]["best_neuron"]["layer"] == "decoder.rnn/l0"  # has output symbols


def test_report_refuses_models_of_different_names(lm_runs, tmp_path):
    with pytest.raises(ValueError, match="distinct label per checkpoint"):
        interpret([f"checkpoints=[{lm_runs}/lstm/last.pt,{lm_runs}/lstm/last.pt]", f"out_dir={tmp_path}"])
