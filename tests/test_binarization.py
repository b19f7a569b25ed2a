"""The binarization study's summary (g2lstm.binarization) on a tiny trained LM."""

import json

import pytest
import torch

import g2lstm
from g2lstm import binarization, trace
from g2lstm.lm.train import train as train_lm


def test_target_needs_input_and_forget_binary_in_every_layer():
    good = {"l0": {"input": 0.6, "forget": 0.5, "output": 0.0}, "l1": {"input": 0.9, "forget": 0.7, "output": 0.1}}
    assert binarization.meets_target(good)
    assert not binarization.meets_target(dict(good, l1={"input": 0.9, "forget": 0.49, "output": 1.0}))


def test_summary_of_a_finished_run(tiny_lm_config, tmp_path):
    run_dir = tmp_path / "g2_run"
    train_lm(tiny_lm_config("train.epochs=1", "eval.cache.enabled=false", "train.saturation_every=5",
                         "train.schedules.tau={end: 0.5, steps: 10, shape: linear}"), run_dir)
    summary = binarization.main([str(tmp_path / "out"), str(run_dir), "--evaluate", "batch_size=4", "bptt=12",
                                 "--gates", "tokens=200", "batch_size=4", "bptt=12"])
    entry = summary["lm/g2_run"]
    result = json.loads((run_dir / "results.json").read_text())
    assert entry["quality"] == pytest.approx(result["test_ppl"], rel=1e-6)  # the task's own test metric
    assert entry["schedules"] == {"tau": {"end": 0.5, "steps": 10, "shape": "linear"}}
    assert set(entry["binary_share"]) == {"rnns.0/l0", "rnns.1/l0"}
    # the shares recomputed from the gates as g2lstm.trace records them on the same test batches
    loaded = g2lstm.load(run_dir / "best.pt")
    batches, forward = loaded.gate_batches(tokens=200, batch_size=4, bptt=12)
    values = {}
    with torch.no_grad():
        for batch in batches:
            with trace.record(loaded.model.eval()) as recorded:
                forward(loaded.model, batch)
            for layer in recorded:
                for gate in ("input", "forget", "output"):
                    values.setdefault(layer.key, {}).setdefault(gate, []).append(layer.gate(gate)[layer.mask])
    for key, per_gate in values.items():
        for gate, parts in per_gate.items():
            gate_values = torch.cat(parts)
            share = ((gate_values < 0.1) | (gate_values > 0.9)).double().mean().item()
            assert entry["binary_share"][key][gate] == pytest.approx(share, abs=1e-9), (key, gate)
    target = all(entry["binary_share"][key][gate] >= 0.5 for key in values for gate in ("input", "forget"))
    assert entry["meets_target"] is target
    assert set(entry["compression"]) == {"round_clip", "round_relative", "svd"}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["lm/g2_run"]["quality"] == entry["quality"]
    table = (tmp_path / "out" / "lm.md").read_text()
    assert "| g2lstm tau=1 p=0.2, tau->0.5 (linear) | 1 |" in table
    for name in ("lm_histograms.png", "saturation_lm_g2_run.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
