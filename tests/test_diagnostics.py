"""g2lstm.diagnostics: gate statistics over traces, histograms, saturation, heatmaps, plots."""

import json

import pytest
import torch
from torch import nn

from g2lstm import rnn, trace
from g2lstm.diagnostics import GateStats, collect_gate_stats, plot_heatmap, plot_histograms, token_gate_averages


class Tagger(nn.Module):
    def __init__(self, **lstm_options):
        super().__init__()
        self.embed = nn.Embedding(13, 5)
        self.rnn = nn.LSTM(5, 7, **lstm_options)
        self.out = nn.Linear(7 * (2 if lstm_options.get("bidirectional") else 1), 13)

    def forward(self, tokens):
        y, _ = self.rnn(self.embed(tokens))
        return self.out(y)


def manual_gates(lstm, x):
    """Input, forget and output gates of a 1-layer unidirectional LSTM, computed step by step."""
    hidden = lstm.hidden_size
    h = x.new_zeros(x.shape[1], hidden)
    c = x.new_zeros(x.shape[1], hidden)
    gates = []
    for t in range(x.shape[0]):
        a = x[t] @ lstm.weight_ih_l0.t() + lstm.bias_ih_l0 + h @ lstm.weight_hh_l0.t() + lstm.bias_hh_l0
        i, f, g, o = a.chunk(4, -1)
        i, f, o = i.sigmoid(), f.sigmoid(), o.sigmoid()
        c = f * c + i * g.tanh()
        h = o * c.tanh()
        gates.append(torch.stack([i, f, o], 1))
    return torch.stack(gates)


def test_collection_leaves_results_and_modes_unchanged():
    torch.manual_seed(0)
    model = Tagger(num_layers=2, bidirectional=True, dropout=0.5)
    model.train()
    batches = [torch.randint(0, 13, (6, 2)) for _ in range(3)]
    model.eval()
    with torch.no_grad():
        before = [model(b) for b in batches]
    model.train()
    stats = collect_gate_stats(model, batches)
    assert model.training and model.rnn.training  # modes restored
    model.eval()
    with torch.no_grad():
        after = [model(b) for b in batches]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert set(stats.counts) == {"rnn/l0", "rnn/l0_reverse", "rnn/l1", "rnn/l1_reverse"}
    assert stats.total["rnn/l1"] == 3 * 6 * 2 * 7  # batches x steps x batch x hidden
    assert not model.rnn._forward_hooks and not model.rnn._forward_pre_hooks  # hooks removed


def test_histograms_sum_to_one_and_match_brute_force():
    torch.manual_seed(2)
    model = Tagger()
    with torch.no_grad():
        model.rnn.bias_hh_l0[7:14] += 3.0  # push the forget gate towards 1
    batches = [torch.randint(0, 13, (9, 4)) for _ in range(2)]
    stats = collect_gate_stats(model, batches)
    hist = stats.histogram("rnn/l0")
    assert torch.allclose(hist.sum(1), torch.ones(3, dtype=torch.float64))

    with torch.no_grad():
        values = torch.cat([manual_gates(model.rnn, model.embed(b)) for b in batches])  # (T, N, 3, H)
    values = values.permute(2, 0, 1, 3).reshape(3, -1).double()
    for g in range(3):
        brute = torch.histc(values[g], bins=10, min=0, max=1) / values.shape[1]
        assert torch.allclose(hist[g], brute, atol=1e-12)
    summary = stats.summary()["rnn/l0"]
    assert summary["forget"]["share_above_0.9"] == pytest.approx((values[1] > 0.9).double().mean().item())
    assert summary["input"]["share_below_0.1"] == pytest.approx((values[0] < 0.1).double().mean().item())
    assert summary["forget"]["mean"] == pytest.approx(values[1].mean().item())
    assert summary["forget"]["share_above_0.9"] > summary["input"]["share_above_0.9"]


def test_saturated_gates_land_in_the_end_bins():
    lstm = nn.LSTM(3, 4)
    with torch.no_grad():
        lstm.weight_ih_l0.zero_()
        lstm.weight_hh_l0.zero_()
        lstm.bias_hh_l0.zero_()
        lstm.bias_ih_l0.copy_(torch.tensor([-30.0] * 4 + [30.0] * 4 + [0.0] * 4 + [0.0] * 4))
    stats = collect_gate_stats(nn.Sequential(lstm), [torch.randn(4, 2, 3)], forward=lambda m, b: m[0](b))
    hist = stats.histogram("0/l0")
    assert hist[0, 0] == 1.0 and hist[1, 9] == 1.0 and hist[2, 5] == 1.0  # sigmoid(0) = 0.5
    s = stats.summary()["0/l0"]
    assert s["input"]["share_below_0.1"] == 1.0 and s["forget"]["share_above_0.9"] == 1.0
    assert s["output"]["share_below_0.1"] == 0.0 and s["output"]["share_above_0.9"] == 0.0


def test_trace_mismatch_is_reported(monkeypatch):
    from g2lstm.reference import GateSpec
    model = Tagger()
    # the trace then computes hard gates while the nn.LSTM itself computes sigmoids
    monkeypatch.setattr(rnn, "gate_spec_of", lambda lstm: GateSpec(gates="sigmoid", eval_gates="hard"))
    with pytest.raises(RuntimeError, match="does not reproduce"):
        collect_gate_stats(model, [torch.randint(0, 13, (4, 1))])


def test_no_lstm_is_a_clear_error():
    with pytest.raises(ValueError, match="nn.LSTM"):
        collect_gate_stats(nn.Linear(2, 2), [torch.randn(1, 2)])


def test_token_averages_heatmap_and_json(figures, tmp_path):
    torch.manual_seed(3)
    model = Tagger(num_layers=2)
    sentence = torch.randint(0, 13, (6, 1))
    averages = token_gate_averages(model, sentence)
    assert set(averages) == {"rnn/l0", "rnn/l1"}
    with torch.no_grad(), trace.record(model) as recorded:
        model(sentence)
    top = recorded.layer("rnn", 1)
    assert torch.allclose(averages["rnn/l1"], torch.stack([top.i, top.f, top.o], dim=1)[:, :, 0].mean(-1))
    with pytest.raises(ValueError, match="batch of one"):
        token_gate_averages(model, torch.randint(0, 13, (6, 2)))

    tokens = [f"w{t}" for t in sentence[:, 0].tolist()]
    plot_heatmap(tokens, {"a": averages, "b": averages}, tmp_path / "heat.png", layer="rnn/l0")
    input_row, forget_row = averages["rnn/l0"][:, 0].tolist(), averages["rnn/l0"][:, 1].tolist()
    figures.check_heatmap(tmp_path / "heat.png", [input_row, forget_row] * 2,
                          ["a input", "a forget", "b input", "b forget"], tokens)
    stats = collect_gate_stats(model, [sentence])
    plot_histograms({"a": stats, "b": stats}, tmp_path / "hist.png")
    figures.check_histograms(tmp_path / "hist.png", {"a": stats, "b": stats})
    stats.to_json(tmp_path / "gates.json")
    data = json.loads((tmp_path / "gates.json").read_text())
    assert data["bin_edges"][0] == 0.0 and data["bin_edges"][-1] == 1.0
    assert sum(data["layers"]["rnn/l1"]["forget"]["histogram"]) == pytest.approx(1.0)


def test_g2lstm_gates_replayed_with_its_own_spec():
    from g2lstm import G2LSTM

    torch.manual_seed(4)
    x = torch.randn(6, 2, 4)
    plain = nn.LSTM(4, 5, num_layers=2)
    sharpened = G2LSTM.from_lstm(plain, gates="sharpened", tau=0.25)
    hard = G2LSTM.from_lstm(plain, gates="gumbel", eval_gates="hard")
    wrap = lambda m: nn.ModuleDict({"rnn": m})  # noqa: E731
    run = lambda m, b: m["rnn"](b)  # noqa: E731
    s_plain = collect_gate_stats(wrap(plain), [x], forward=run)
    s_sharp = collect_gate_stats(wrap(sharpened), [x], forward=run)
    s_hard = collect_gate_stats(wrap(hard), [x], forward=run)
    for key in ("rnn/l0", "rnn/l1"):
        h = s_hard.histogram(key)
        assert h[0, 0] + h[0, 9] == 1.0 and h[1, 0] + h[1, 9] == 1.0  # binary input and forget gates
        saturated = lambda s: s.summary()[key]["forget"]["share_below_0.1"] + s.summary()[key]["forget"]["share_above_0.9"]  # noqa: E731
        assert saturated(s_sharp) > saturated(s_plain)  # a temperature of 1/4 sharpens the gates


def test_gate_stats_json_round_trip(tmp_path):
    torch.manual_seed(5)
    model = Tagger(num_layers=2, bidirectional=True)
    stats = collect_gate_stats(model, [torch.randint(0, 13, (6, 3)) for _ in range(2)])
    stats.to_json(tmp_path / "gates.json")
    back = GateStats.from_json(tmp_path / "gates.json")
    assert set(back.counts) == set(stats.counts)
    for key in stats.counts:
        assert torch.equal(back.counts[key], stats.counts[key])
        assert torch.equal(back.below[key], stats.below[key]) and torch.equal(back.above[key], stats.above[key])
        assert torch.allclose(back.sums[key], stats.sums[key])
        assert back.total[key] == stats.total[key]
    for key, per_gate in stats.summary().items():
        for gate, values in per_gate.items():
            assert back.summary()[key][gate]["histogram"] == pytest.approx(values["histogram"])
            assert back.summary()[key][gate]["mean"] == pytest.approx(values["mean"])
    (tmp_path / "other.json").write_text(json.dumps({"layers": {}}))
    with pytest.raises(ValueError, match="expected a GateStats.to_json file"):
        GateStats.from_json(tmp_path / "other.json")


def test_distinct_colours_stay_distinct_past_twenty_series():
    from g2lstm.diagnostics import distinct_colours

    colours = [tuple(c) for c in distinct_colours(22)]
    assert len(set(colours)) == 22  # tab20 alone repeats its last colour from the 21st series
