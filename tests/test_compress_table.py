"""The paper's compression table (g2lstm.paper, g2lstm.report) on a tiny stand-in task (no training)."""

import csv
import json

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from g2lstm import G2LSTM, diagnostics
from g2lstm.paper import run_task
from g2lstm.report import compressed_size, relative_size, write_table


class Tagger(nn.Module):
    def __init__(self, gates):
        super().__init__()
        self.embed = nn.Embedding(9, 4)
        self.rnn = G2LSTM(4, 6, num_layers=2, gates=gates, tau=0.5)
        self.out = nn.Linear(6, 9)

    def forward(self, tokens):
        return self.out(self.rnn(self.embed(tokens))[0])


class ToyTask:
    """Next-token cross-entropy of a random tagger on random data (lower is better)."""

    key, higher_is_better = "toy", False

    def __init__(self):
        self.cfg = OmegaConf.create({
            "name": "Toy", "metric": "loss", "gates": ["input", "forget"],
            "compression": {"round": {"method": "round", "precision": 0.2},
                            "round_clip": {"method": "round_clip", "precision": 0.2, "clip": 0.4},
                            "svd": {"method": "svd", "rank": 3}, "svd_small": {"method": "svd", "rank": 1}},
            "diagnostics": {"heatmap_sentences": 1},
        })
        generator = torch.Generator().manual_seed(0)
        self.data = torch.randint(0, 9, (8, 3), generator=generator)

    def model(self, kind):
        torch.manual_seed(len(kind))
        model = Tagger({"lstm": "sigmoid", "sharpened": "sharpened", "g2lstm": "gumbel"}[kind])
        with torch.no_grad():
            for p in model.rnn.parameters():
                p.mul_(3.0)
        return model.eval(), f"toy/{kind}.pt"

    def evaluate(self, model):
        with torch.no_grad():
            logits = model(self.data[:-1])
            return nn.functional.cross_entropy(logits.flatten(0, 1), self.data[1:].flatten()).item()

    def gate_stats(self, model):
        return diagnostics.collect_gate_stats(model, [self.data])

    def sentences(self, count):
        for n in range(count):
            yield [f"t{i}" for i in self.data[:, n].tolist()], self.data[:, n:n + 1], None, None


def test_run_task_and_table(figures, tmp_path):
    task = ToyTask()
    results = run_task(task, OmegaConf.create({"int8": True}), ["lstm", "sharpened", "g2lstm"],
                                   tmp_path / "toy", command="python experiments/paper_table.py toy")
    assert json.loads((tmp_path / "toy" / "results.json").read_text()) == json.loads(json.dumps(results))
    figures.check_task_figures(tmp_path / "toy")  # histograms.png, heatmap_0_rnn_l0.png, heatmap_0_rnn_l1.png

    for kind in ("lstm", "sharpened", "g2lstm"):
        rows = results["models"][kind]["rows"]
        assert [r["method"] for r in rows] == ["original", "round", "round_clip", "svd", "svd_small", "int8"]
        model, _ = task.model(kind)
        assert rows[0]["value"] == pytest.approx(task.evaluate(model))
        for r in rows:
            assert r["change"] == pytest.approx(r["value"] - rows[0]["value"])
        # Pooled saturation agrees with the per-layer gate histograms written alongside.
        layers = json.loads((tmp_path / "toy" / f"gates_{kind}.json").read_text())["layers"]
        below = sum(l["forget"]["share_below_0.1"] * l["forget"]["count"] for l in layers.values())
        total = sum(l["forget"]["count"] for l in layers.values())
        assert results["models"][kind]["saturation"]["forget_share_below_0.1"] == pytest.approx(below / total)

        # Round and round & clip were measured as exported files (the others have no packed form);
        # the files themselves were not kept.
        for r in rows:
            assert ("bytes" in r) == (r["method"] in ("round", "round_clip"))
        b = rows[1]["bytes"]
        assert b["file"] > 0 and b["ratio"] == b["file"] / b["float32"] and b["blocks_packed"] < b["blocks_float32"]
        assert b["blocks_float32"] == 4 * 2 * 6 * (4 + 6 + 6 + 6)  # (input, forget) x 6 rows x (W_ih, W_hh) of 2 layers
    assert sorted(p.name for p in (tmp_path / "toy").iterdir() if p.suffix == ".pt" or p.name.startswith(".")) == []

    text = write_table(tmp_path)
    assert (tmp_path / "table.md").read_text() == text
    assert "| Model | Original | Round (r=0.2) | Round & clip (r=0.2, c=0.4) | SVD (rank 3) | SVD+ (rank 1) |" in text
    b = results["models"]["lstm"]["rows"][2]["bytes"]
    assert (f"Round & clip: {results['models']['lstm']['rows'][2]['report']['distinct_values']} distinct values"
            in text)
    assert (f"file {b['file'] / 1e6:.2f} MB = x{b['ratio']:.3f} of the float32 export (gate blocks "
            f"x{b['blocks_packed'] / b['blocks_float32']:.3f})") in text
    g2_rows = {r["method"]: r for r in results["models"]["g2lstm"]["rows"]}
    expected = (f"| G2-LSTM | {g2_rows['original']['value']:.2f} | {g2_rows['round']['value']:.2f} "
                f"({g2_rows['round']['change']:+.2f}) |")
    assert expected in text
    with open(tmp_path / "table.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 * 6
    row = next(r for r in table if r["model"] == "sharpened" and r["method"] == "round_clip")
    sharp = {r["method"]: r for r in results["models"]["sharpened"]["rows"]}
    assert float(row["value"]) == pytest.approx(sharp["round_clip"]["value"])
    assert int(row["bits_per_weight"]) == sharp["round_clip"]["report"]["bits_per_weight"]
    assert int(row["file_bytes"]) == sharp["round_clip"]["bytes"]["file"]
    assert int(row["float32_file_bytes"]) == sharp["round_clip"]["bytes"]["float32"]
    assert next(r for r in table if r["method"] == "svd")["file_bytes"] == ""


@pytest.mark.slow
def test_merge_adds_a_model_and_keeps_the_others(figures, tmp_path):
    task = ToyTask()
    task.cfg.compression["round_relative"] = {"method": "round_relative", "precision": 1.0, "clip": 2.0}
    cfg = OmegaConf.create({"int8": False})
    first = run_task(task, cfg, ["g2lstm", "lstm"], tmp_path / "toy", command="cmd one")
    assert list(first["models"]) == ["lstm", "g2lstm"]  # the paper's order whatever the run order
    # A model merged in later under a config with one more compression: the others show "–" there.
    task.cfg.compression["quantize_4bit"] = {"method": "quantize", "bits": 4}
    later = run_task(task, cfg, ["sharpened"], tmp_path / "toy", command="cmd two", merge=True)
    assert list(later["models"]) == ["lstm", "sharpened", "g2lstm"]
    assert later["models"]["lstm"] == first["models"]["lstm"]  # kept, not re-evaluated
    assert later["models"]["sharpened"]["command"] == "cmd two"
    # Without merge a rerun starts over.
    alone = run_task(task, cfg, ["sharpened"], tmp_path / "other", command="cmd three")
    assert list(alone["models"]) == ["sharpened"]

    # Gate-weight magnitudes per model, with the share the task's fixed grid (r=0.2) zeroes.
    model, _ = task.model("g2lstm")
    w = torch.cat([model.rnn.weight_ih_l0[:6].flatten(), model.rnn.weight_hh_l0[:6].flatten(),
                   model.rnn.weight_ih_l1[:6].flatten(), model.rnn.weight_hh_l1[:6].flatten()]).double()
    stats = later["models"]["g2lstm"]["gate_weights"]["input"]
    assert stats["mean_abs"] == pytest.approx(w.abs().mean().item())
    assert stats["share_rounded_to_zero"] == pytest.approx((w.abs() < 0.1).double().mean().item())

    text = write_table(tmp_path)
    assert "Made by `cmd one` (LSTM, G2-LSTM); `cmd two` (Sharpened sigmoid)." in text
    assert "Relative round & clip (extra) (r=1.0σ, c=2.0σ) | 4-bit codes (extra) |" in text
    sharp = {r["method"]: r for r in later["models"]["sharpened"]["rows"]}
    assert f"({sharp['round_relative']['change']:+.2f}) | {sharp['quantize_4bit']['value']:.2f} (" in text
    lstm_line = next(line for line in text.splitlines() if line.startswith("| LSTM |"))
    assert lstm_line.endswith(" | – |")
    assert f"| G2-LSTM | {stats['mean_abs']:.3f} | {stats['std']:.3f} |" in text
    figures.check_task_figures(tmp_path / "toy")  # the merged models' histograms and heatmaps, all three
    with pytest.raises(ValueError, match="holds task 'toy'"):
        other = ToyTask()
        other.key = "lm"
        run_task(other, cfg, ["lstm"], tmp_path / "toy", command="x", merge=True)


def test_relative_rounding_size_counts_levels_per_block(tmp_path):
    report = {"relative": True, "precision": 1.0, "clip": 2.0, "distinct_values": 33, "entropy_bits_per_weight": 3.7}
    assert relative_size(report).startswith("at most 5 levels per block (3 bits/weight)")
    assert relative_size(dict(report, precision=0.5)).startswith("at most 9 levels per block (4 bits/weight)")


def test_compressed_size_of_quantized_blocks_and_of_a_measured_file():
    row = {"report": {"method": "quantize", "bits": 4, "scale_bits_per_weight": 0.25}}
    assert compressed_size(row) == "4 bits/weight and one scale per row (0.25 bits/weight)"
    row["bytes"] = {"file": 6_687_637, "float32": 7_708_485, "ratio": 6_687_637 / 7_708_485, "blocks_packed": 153_600,
                    "blocks_float32": 1_179_648}
    assert compressed_size(row).endswith(", file 6.69 MB = x0.868 of the float32 export (gate blocks x0.130)")
