"""The binarization study's summary (g2lstm.binarization) on a tiny trained LM."""

import json

import pytest
import torch
from torch import nn

import g2lstm
from g2lstm import binarization, diagnostics, runtime
from g2lstm.diagnostics import BINS, GateStats
from g2lstm.lm.train import train as train_lm


def test_target_needs_input_and_forget_binary_in_every_layer():
    good = {"l0": {"input": 0.6, "forget": 0.5, "output": 0.0}, "l1": {"input": 0.9, "forget": 0.7, "output": 0.1}}
    assert binarization.meets_target(good)
    assert not binarization.meets_target(dict(good, l1={"input": 0.9, "forget": 0.49, "output": 1.0}))


def test_binary_shares_count_the_values_near_0_and_near_1():
    """Gates planted by their biases: input near 0, forget near 1, output near 1/2."""
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4)
    with torch.no_grad():
        lstm.weight_ih_l0.mul_(0.01), lstm.weight_hh_l0.mul_(0.01), lstm.bias_hh_l0.zero_()
        lstm.bias_ih_l0.copy_(torch.tensor([-20.0] * 4 + [20.0] * 4 + [0.0] * 8))  # i, f, g, o
    stats = diagnostics.collect_gate_stats(nn.ModuleDict({"rnn": lstm}), [torch.randn(5, 2, 3)],
                                           forward=lambda model, x: model["rnn"](x))
    shares = binarization.binary_shares(stats)
    assert shares == {"rnn/l0": {"input": 1.0, "forget": 1.0, "output": 0.0}}
    assert binarization.meets_target(shares)


@pytest.mark.slow
def test_summary_of_a_finished_run(tiny_lm_config, traced_gates, figures, tmp_path):
    run_dir = tmp_path / "g2_run"
    train_lm(tiny_lm_config("train.epochs=1", "eval.cache.enabled=false", "train.saturation_every=5",
                         "train.schedules.tau={end: 0.5, steps: 10, shape: linear}"), run_dir)
    summary = binarization.main([str(tmp_path / "out"), str(run_dir), "--evaluate", "batch_size=4", "bptt=12",
                                 "--gates", "tokens=200", "batch_size=4", "bptt=12",
                                 "--export-dir", str(tmp_path / "exports"), "--rows", str(tmp_path / "rows.json")])
    entry = summary["lm/g2_run"]
    result = json.loads((run_dir / "results.json").read_text())
    assert entry["quality"] == pytest.approx(result["test_ppl"], rel=1e-6)  # the task's own test metric
    assert entry["schedules"] == {"tau": {"end": 0.5, "steps": 10, "shape": "linear"}}
    assert (entry["eval_gates"], entry["train_gates"]) == ("soft", "soft")
    assert set(entry["binary_share"]) == {"rnns.0/l0", "rnns.1/l0"}
    # the shares recomputed from the gates as g2lstm.trace records them on the same test batches
    loaded = g2lstm.load(run_dir / "best.pt")
    values = traced_gates(loaded.model, *loaded.gate_batches(tokens=200, batch_size=4, bptt=12))
    assert set(values) == set(entry["binary_share"])
    for key, per_gate in values.items():
        for gate, gate_values in per_gate.items():
            share = ((gate_values < 0.1) | (gate_values > 0.9)).double().mean().item()
            assert entry["binary_share"][key][gate] == pytest.approx(share, abs=1e-9), (key, gate)
    target = all(entry["binary_share"][key][gate] >= 0.5 for key in values for gate in ("input", "forget"))
    assert entry["meets_target"] is target
    assert set(entry["compression"]) == {"round_clip", "round_relative", "quantize4", "svd", "hard_gates"}
    hard = binarization.hard_gated(loaded.model)
    assert {layer.eval_gates for layer in hard.recurrent_layers().values()} == {"hard"}
    assert {layer.eval_gates for layer in loaded.model.recurrent_layers().values()} == {"soft"}  # a copy
    assert entry["compression"]["hard_gates"]["value"] == pytest.approx(loaded.evaluate(hard, batch_size=4, bptt=12))
    # the packed schemes were scored from their files, whose sizes the rows report
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert len(rows) == 1 and rows[0]["run"] == "g2_run" and rows[0]["task"] == "lm"
    row = rows[0]
    assert row["converged"] is False  # ended by train.epochs, not by a convergence test
    assert row["quality"] == entry["quality"] and row["quality_name"] == "test perplexity" and not row["higher_is_better"]
    assert row["binary"] == {k: {g: v[g] for g in ("input", "forget")} for k, v in entry["binary_share"].items()}
    assert row["compression"] == {k: v["change"] for k, v in entry["compression"].items()}
    exported = tmp_path / "exports" / "lm" / "g2_run"
    assert row["bytes"] == {name: (exported / f"{name}.pt").stat().st_size
                            for name in ("float32", "round_clip", "round_relative", "quantize4")}
    blocks = entry["compression"]["quantize4"]["bytes"]  # a tiny model's file is mostly pickle overhead
    assert blocks["blocks_packed"] < blocks["blocks_float32"] / 4
    packed = g2lstm.load(exported / "quantize4.pt")
    assert entry["compression"]["quantize4"]["value"] == pytest.approx(packed.evaluate(batch_size=4, bptt=12))
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["lm/g2_run"]["quality"] == entry["quality"]
    table = (tmp_path / "out" / "lm.md").read_text()
    assert "| g2lstm tau=1 p=0.2, tau->0.5 (linear) | 1 |" in table

    # the histograms drawn are those of the gate statistics written beside them, and of the traced gates
    stats = {"g2lstm tau=1 p=0.2, tau->0.5 (linear) s1": GateStats.from_json(tmp_path / "out" / "gates_lm_g2_run.json")}
    figures.check_histograms(tmp_path / "out" / "lm_histograms.png", stats)
    for key, per_gate in values.items():
        for g, gate in enumerate(("input", "forget")):
            counts = torch.histc(per_gate[gate].double(), bins=BINS, min=0, max=1)
            torch.testing.assert_close(stats[next(iter(stats))].histogram(key)[g].double(), counts / counts.sum())
    # the run's saturation curves, copied
    records = [r for r in runtime.MetricsLog(run_dir / "metrics.jsonl").read() if r.get("event") == "gates"]
    assert (tmp_path / "out" / "saturation_lm_g2_run.png").read_bytes() == (run_dir / "saturation.png").read_bytes()
    figures.check_saturation(tmp_path / "out" / "saturation_lm_g2_run.png", records, saved_as=run_dir / "saturation.png")


def test_a_configuration_label_names_straight_through_and_hard_gates_and_the_source():
    entry = {"cell": "g2lstm", "tau": 1.0, "noise_p": 0.0, "schedules": {}, "train_gates": "hard",
             "eval_gates": "hard", "init_from": "runs/converge/lm/model_cell_lstm_s2/best.pt", "seed": 2}
    assert binarization._label(entry) == ("g2lstm tau=1 p=0, straight-through in training, hard gates in "
                                          "evaluation, from model_cell_lstm")
    assert binarization._label({**entry, "train_gates": "soft", "eval_gates": "soft", "init_from": None}) == \
        "g2lstm tau=1 p=0"


def test_converged_is_the_run_s_own_stopping_test():
    assert binarization.converged("lm", {"ended_by": "patience"})
    assert binarization.converged("lm", {"ended_by": "nonmono"})  # the finetune stage's trigger
    assert not binarization.converged("lm", {"ended_by": "epochs"})
    assert binarization.converged("translit", {"stopped": "no better validation word_accuracy in 8 validations"})
    assert binarization.converged("mt", {"stopped": "no improvement in 4 validations"})
    assert not binarization.converged("mt", {"stopped": "max_epochs=10 reached"})
    assert not binarization.converged("classify", {"stopped": "budget reached (3.0 min)"})
