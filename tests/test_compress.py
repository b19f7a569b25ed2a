"""g2lstm.compress: round & clip, low-rank SVD, per-row quantization and int8 on gate blocks of LSTM layers."""

import math

import pytest
import torch
from torch import nn

from g2lstm.compress import (GATE_NAMES, compress, gate_weight_stats, low_rank, pack_codes, quantize, quantize_int8,
                             round_clip, unpack_codes)


class TinyLM(nn.Module):
    """Embedding, a bidirectional 2-layer LSTM with projection, a second LSTM and a decoder."""

    def __init__(self, lstm_cls=nn.LSTM, **options):
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.rnn = lstm_cls(6, 8, num_layers=2, bidirectional=True, **options)
        self.top = nn.ModuleList([lstm_cls(16, 5, **options)])
        self.decoder = nn.Linear(5, 11)

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        out, _ = self.top[0](out)
        return self.decoder(out)


def make_model(seed=0):
    torch.manual_seed(seed)
    model = TinyLM()
    # Spread the weights beyond the default init so that rounding and clipping both bite.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    return model


def gate_rows(param_name, hidden, gate):
    k = GATE_NAMES.index(gate)
    return slice(k * hidden, (k + 1) * hidden)


def lstm_gate_weights(model):
    for module_name, m in model.named_modules():
        if isinstance(m, nn.LSTM):
            for name, p in m.named_parameters(recurse=False):
                if name.startswith(("weight_ih", "weight_hh")):
                    yield f"{module_name}.{name}", m.hidden_size, p


def test_round_clip_leaves_grid_values_and_everything_else_bit_identical():
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    precision, clip = 0.2, 0.4
    compressed, report = round_clip(model, precision, clip)

    # The argument is untouched.
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])

    grid = torch.arange(-2, 3) * precision  # -0.4, -0.2, 0, 0.2, 0.4 computed as the code would
    targeted = set()
    for name, hidden, p in lstm_gate_weights(compressed):
        for gate in ("input", "forget"):
            rows = gate_rows(name, hidden, gate)
            block = p.detach()[rows]
            on_grid = (block.unsqueeze(-1) - grid).abs().min(-1).values
            assert on_grid.max() <= 1e-6, f"{name} {gate} has off-grid values"
            assert block.abs().max() <= clip + 1e-6
            targeted.add((name, gate))
        for gate in ("cell", "output"):
            rows = gate_rows(name, hidden, gate)
            assert torch.equal(p.detach()[rows], before[name][rows])
    assert len(targeted) == 2 * (8 + 2)  # 2 gates x (2 layers x 2 dirs x (ih, hh) + 1 x (ih, hh))

    # Biases, projections, embedding and decoder are bit-identical.
    for k, v in compressed.state_dict().items():
        if "weight_ih" not in k and "weight_hh" not in k:
            assert torch.equal(v, before[k]), k

    # Report: one entry per targeted block, distinct values counted on the compressed block.
    assert len(report["blocks"]) == len(targeted)
    for entry in report["blocks"]:
        block = compressed.get_submodule(entry["module"]).get_parameter(entry["param"])
        block = block.detach()[gate_rows(entry["param"], block.shape[0] // 4, entry["gate"])]
        assert entry["distinct_values"] == torch.unique(block).numel()
        assert entry["bits_per_weight"] == math.ceil(math.log2(entry["distinct_values"]))
        assert 0 <= entry["entropy_bits_per_weight"] <= entry["bits_per_weight"] + 1e-9
    # Weights scaled by 4 reach every one of the 5 grid points.
    assert report["distinct_values"] == 5 and report["bits_per_weight"] == 3
    # Rounding small negative weights gives 0.0, not -0.0: one bit pattern per grid value.
    zeros = torch.cat([p.detach().flatten() for _, _, p in lstm_gate_weights(compressed)])
    zeros = zeros[zeros == 0]
    assert zeros.numel() > 0 and not torch.signbit(zeros).any()


def test_round_without_clip_keeps_range_and_rounds_to_nearest_multiple():
    model = make_model()
    compressed, report = round_clip(model, 0.5)
    assert report["method"] == "round"
    w = model.rnn.weight_hh_l1_reverse.detach()[:16]
    c = compressed.rnn.weight_hh_l1_reverse.detach()[:16]
    assert (c - w).abs().max() <= 0.25 + 1e-6  # nearest multiple is at most half a step away
    assert torch.allclose(c / 0.5, torch.round(c / 0.5), atol=1e-6)
    assert c.abs().max() > 1.0  # no clipping happened


def test_gate_subset_selects_only_those_blocks():
    model = make_model()
    compressed, report = round_clip(model, 0.3, 0.3, gates=("output",))
    assert {b["gate"] for b in report["blocks"]} == {"output"}
    w, c = model.rnn.weight_ih_l0.detach(), compressed.rnn.weight_ih_l0.detach()
    assert torch.equal(w[:24], c[:24])
    assert not torch.equal(w[24:], c[24:])
    assert set(torch.unique(c[24:]).tolist()) <= {-0.30000001192092896, 0.0, 0.30000001192092896}


def test_svd_gives_best_rank_k_blocks():
    model = make_model()
    rank = 2
    compressed, report = low_rank(model, rank)
    originals = {n: q.detach() for n, _, q in lstm_gate_weights(model)}
    for name, hidden, p in lstm_gate_weights(compressed):
        original = originals[name]
        for gate in GATE_NAMES:
            rows = gate_rows(name, hidden, gate)
            block, orig = p.detach()[rows].double(), original[rows].double()
            if gate in ("input", "forget"):
                assert torch.linalg.matrix_rank(block, atol=1e-5) <= rank
                # Eckart-Young: the error of the best rank-k approximation is the tail of the spectrum.
                s = torch.linalg.svdvals(orig)
                best_error = s[rank:].pow(2).sum().sqrt()
                assert torch.allclose(torch.linalg.norm(block - orig), best_error, rtol=1e-4, atol=1e-5)
                u, sv, vh = torch.linalg.svd(orig, full_matrices=False)
                truncated = (u[:, :rank] * sv[:rank]) @ vh[:rank]
                assert torch.allclose(block, truncated, atol=1e-5)
            else:
                assert torch.equal(p.detach()[rows], original[rows])
    for k, v in compressed.state_dict().items():
        if "weight_ih" not in k and "weight_hh" not in k:
            assert torch.equal(v, model.state_dict()[k])


def test_svd_report_counts_parameters():
    model = make_model()
    _, report = low_rank(model, 3)
    # rnn layer 0 W_ih input block: 8 x 6, rank 3 -> 3*(8+6)=42 > 48? no: 42 < 48, stored as factors.
    first = report["blocks"][0]
    assert (first["param"], first["gate"], first["shape"]) == ("weight_ih_l0", "input", [8, 6])
    assert first["params_dense"] == 48 and first["params_low_rank"] == 42 and first["params_stored"] == 42
    dense = sum(b["params_dense"] for b in report["blocks"])
    assert report["params_targeted_dense"] == dense
    assert report["model_params"] == sum(p.numel() for p in model.parameters())
    saved = dense - report["params_targeted_compressed"]
    assert report["model_params_compressed"] == report["model_params"] - saved
    assert 0 < report["model_size_ratio"] < 1


def test_rank_at_least_block_size_changes_nothing_beyond_rounding_error():
    model = make_model()
    compressed, report = low_rank(model, 100)
    for (n, _, a), (_, _, b) in zip(lstm_gate_weights(model), lstm_gate_weights(compressed)):
        assert torch.allclose(a, b, atol=1e-5), n
    assert report["model_size_ratio"] == 1.0


def test_projection_weights_untouched():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6, proj_size=3, num_layers=2)
    compressed, report = round_clip(lstm, 0.1, 0.2, gates=GATE_NAMES)
    assert len(report["blocks"]) == 4 * 4  # 2 layers x (ih, hh) x 4 gates
    assert report["blocks"][1]["shape"] == [6, 4]
    assert [b["shape"] for b in report["blocks"] if b["param"] == "weight_hh_l1"][0] == [6, 3]
    for k in ("weight_hr_l0", "weight_hr_l1", "bias_ih_l1", "bias_hh_l0"):
        assert torch.equal(getattr(compressed, k), getattr(lstm, k))
    assert compressed.weight_hh_l1.abs().max() <= 0.2 + 1e-7


def test_int8_output_close_and_smaller():
    model = make_model().eval()
    quantized, report = quantize_int8(model)
    tokens = torch.randint(0, 11, (7, 3))
    with torch.no_grad():
        ref, out = model(tokens), quantized(tokens)
    assert report["layers"] == 2
    assert report["size_ratio"] < 0.5
    assert not torch.equal(ref, out)  # it really was quantized
    assert (ref - out).abs().max() < 0.1 * ref.abs().max()


def test_int8_on_a_bare_lstm():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6)
    quantized, report = quantize_int8(lstm)
    assert isinstance(quantized, torch.ao.nn.quantized.dynamic.LSTM)
    x = torch.randn(5, 2, 4)
    assert torch.allclose(quantized(x)[0], lstm(x)[0], atol=0.02)


def test_dispatch_and_bad_input():
    model = make_model()
    a, _ = compress(model, "round", precision=0.2)
    b, _ = round_clip(model, 0.2)
    assert torch.equal(a.rnn.weight_ih_l0, b.rnn.weight_ih_l0)
    with pytest.raises(ValueError, match="gates must be"):
        round_clip(model, 0.2, gates=("input", "update"))
    with pytest.raises(ValueError, match="precision must be"):
        round_clip(model, 0.0)
    with pytest.raises(ValueError, match="clip must be"):
        round_clip(model, 0.2, clip=-1)
    with pytest.raises(ValueError, match="rank must be"):
        low_rank(model, 0)
    with pytest.raises(ValueError, match="containing nn.LSTM"):
        round_clip(nn.Linear(3, 3), 0.2)
    with pytest.raises(ValueError, match="method must be"):
        compress(model, "prune")


def test_compressed_g2lstm_in_eval_equals_compressed_lstm():
    from g2lstm import G2LSTM
    from g2lstm.compress import to_plain_lstm

    torch.manual_seed(0)
    g2_model = TinyLM(G2LSTM, gates="gumbel", noise_p=0.2)
    lstm_model = TinyLM()
    lstm_model.load_state_dict(g2_model.state_dict())
    g2_model.eval(), lstm_model.eval()
    tokens = torch.randint(0, 11, (9, 2))
    for method, options in [("round", dict(precision=0.2)), ("round_clip", dict(precision=0.2, clip=0.4)),
                            ("svd", dict(rank=2)), ("round_clip", dict(precision=0.1, clip=0.1, gates=GATE_NAMES))]:
        g2_small, g2_report = compress(g2_model, method, **options)
        lstm_small, lstm_report = compress(lstm_model, method, **options)
        assert isinstance(g2_small.rnn, G2LSTM) and g2_report == lstm_report
        with torch.no_grad():
            ref = lstm_small(tokens)
            assert torch.equal(g2_small(tokens), ref), method
            g2_small.rnn.impl = g2_small.top[0].impl = "reference"  # the G2 loop, not torch's kernel
            assert torch.allclose(g2_small(tokens), ref, atol=1e-5), method
            assert torch.equal(to_plain_lstm(g2_small)(tokens), ref)
            assert not torch.allclose(ref, lstm_model(tokens), atol=1e-3)  # compression did something


def test_sharpened_g2lstm_becomes_the_lstm_it_is_at_inference():
    from g2lstm import G2LSTM
    from g2lstm.compress import to_plain_lstm

    torch.manual_seed(0)
    layer = G2LSTM(4, 6, num_layers=2, gates="sharpened", tau=0.5).eval()
    x = torch.randn(5, 3, 4)
    plain = to_plain_lstm(layer)
    assert type(plain) is nn.LSTM
    with torch.no_grad():
        assert torch.allclose(plain(x)[0], layer(x)[0], atol=1e-6)
        quantized, _ = quantize_int8(layer)
        assert torch.allclose(quantized(x)[0], layer(x)[0], atol=0.05)
    with pytest.raises(ValueError, match="hard"):
        to_plain_lstm(G2LSTM(4, 6, eval_gates="hard"))


def test_evaluate_under_compression_rows():
    model = make_model().eval()
    tokens = torch.randint(0, 11, (6, 2))
    with torch.no_grad():
        reference = model(tokens)

    def error(m):  # distance of the outputs from the uncompressed ones
        with torch.no_grad():
            return (m(tokens) - reference).abs().mean().item()

    from g2lstm.compress import evaluate_under_compression
    rows = evaluate_under_compression(model, error, {
        "round": {"method": "round", "precision": 0.2},
        "coarse": {"method": "round_clip", "precision": 1.0, "clip": 1.0},
        "svd": {"method": "svd", "rank": 1},
    }, int8=True)
    assert [r["method"] for r in rows] == ["original", "round", "coarse", "svd", "int8"]
    assert rows[0]["value"] == 0.0
    assert 0 < rows[1]["value"] < rows[2]["value"]  # a coarser grid moves the outputs further
    assert all(r["change"] == r["value"] for r in rows)
    assert rows[2]["report"]["distinct_values"] == 3 and rows[3]["report"]["rank"] == 1
    assert rows[4]["report"]["method"] == "int8_dynamic"
    with pytest.raises(ValueError, match="needs a 'method'"):
        evaluate_under_compression(model, error, {"x": {"precision": 0.2}})


def test_gate_weight_stats_match_the_pooled_blocks():
    model = make_model()
    stats = gate_weight_stats(model, ("input", "forget"), precision=0.5)
    assert set(stats) == {"input", "forget"}
    for gate in ("input", "forget"):
        w = torch.cat([p[gate_rows(name, hidden, gate)].flatten() for name, hidden, p in lstm_gate_weights(model)]).double()
        assert stats[gate]["weights"] == w.numel()
        assert stats[gate]["mean_abs"] == pytest.approx(w.abs().mean().item())
        assert stats[gate]["std"] == pytest.approx(w.std().item())
        assert stats[gate]["max_abs"] == pytest.approx(w.abs().max().item())
        # The share it calls "rounded to zero" is exactly what round() sets to 0.
        rounded, _ = round_clip(model, precision=0.5, gates=(gate,))
        zeros = torch.cat([p[gate_rows(name, hidden, gate)].flatten() == 0
                           for name, hidden, p in lstm_gate_weights(rounded)]).double().mean().item()
        assert stats[gate]["share_rounded_to_zero"] == pytest.approx(zeros)
    assert "share_rounded_to_zero" not in gate_weight_stats(model)["input"]
    with pytest.raises(ValueError, match="precision must be a positive"):
        gate_weight_stats(model, precision=0)


def test_relative_rounding_follows_each_blocks_scale():
    model = make_model()
    small, report = compress(model, "round_relative", precision=1.0, clip=2.0, gates=["input", "forget"])
    assert report["relative"] and report["method"] == "round_clip"
    originals = {name: p for name, _, p in lstm_gate_weights(model)}
    for name, hidden, p in lstm_gate_weights(small):
        for gate in ("input", "forget"):
            rows = gate_rows(name, hidden, gate)
            std = originals[name][rows].double().std().item()
            block = p[rows].double()
            levels = torch.round(block / std)  # every value is a whole number of block stds in [-2, 2]
            assert torch.allclose(block, levels * std, atol=1e-5)
            assert levels.abs().max() <= 2 and len(torch.unique(levels)) <= 5
            expected = (torch.round(originals[name][rows].double() / std)).clamp(-2, 2)
            assert torch.equal(levels, expected)
        assert torch.equal(p[gate_rows(name, hidden, "cell")], originals[name][gate_rows(name, hidden, "cell")])
    # Scaling the weights scales the relative grid with them: the same levels, so the same distinct count.
    scaled = make_model()
    with torch.no_grad():
        for _, _, p in lstm_gate_weights(scaled):
            p.mul_(10.0)
    _, report_scaled = round_clip(scaled, precision=1.0, clip=2.0, relative=True)
    assert [b["distinct_values"] for b in report_scaled["blocks"]] == [b["distinct_values"] for b in report["blocks"]]
    _, absolute = round_clip(scaled, precision=1.0, clip=2.0)
    assert not absolute["relative"]


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantize_gives_per_row_codes_times_a_scale(bits):
    model = make_model()
    with torch.no_grad():
        model.rnn.weight_hh_l0[3].zero_()  # an all-zero row (input gate) stays zero, not NaN
    compressed, report = quantize(model, bits)
    q = 2 ** (bits - 1) - 1
    originals = {name: p.detach() for name, _, p in lstm_gate_weights(model)}
    for name, hidden, p in lstm_gate_weights(compressed):
        for gate in GATE_NAMES:
            rows = gate_rows(name, hidden, gate)
            block, original = p.detach()[rows], originals[name][rows]
            if gate not in ("input", "forget"):
                assert torch.equal(block, original)
                continue
            scale = original.abs().amax(1, keepdim=True) / q
            levels = block / torch.where(scale > 0, scale, 1)
            # whole codes in [-q, q], the largest |w| of each row at +-q, each weight within half a step
            assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.abs().max() <= q + 1e-4
            assert torch.allclose(block.abs().amax(1), original.abs().amax(1), rtol=1e-6)
            assert ((block - original).abs() <= scale / 2 + 1e-6).all()
    assert torch.equal(compressed.rnn.weight_hh_l0[3], torch.zeros(8))
    assert report["bits_per_weight"] == bits and report["method"] == "quantize"
    assert report["weights"] == sum(math.prod(b["shape"]) for b in report["blocks"]) == 2 * 8 * (6 + 8 + 16 + 8) * 2 + 2 * 5 * (16 + 5)
    assert report["max_error"] == max(b["max_error"] for b in report["blocks"]) > 0
    for k, v in compressed.state_dict().items():
        if "weight_ih" not in k and "weight_hh" not in k:
            assert torch.equal(v, model.state_dict()[k])
    # Fewer bits, coarser codes: the error grows.
    if bits < 8:
        assert report["max_error"] > quantize(model, 8)[1]["max_error"]


def test_quantize_dispatch_and_bad_bits():
    model = make_model()
    a, _ = compress(model, "quantize", bits=4, gates=["forget"])
    b, _ = quantize(model, 4, gates=("forget",))
    assert torch.equal(a.top[0].weight_ih_l0, b.top[0].weight_ih_l0)
    assert torch.equal(a.top[0].weight_ih_l0[:5], model.top[0].weight_ih_l0[:5])  # the input gate untouched
    for bits in (1, 9, 4.0, "4", True):
        with pytest.raises(ValueError, match=f"bits must be an int from 2 to 8, got {bits!r}"):
            quantize(model, bits)


def test_pack_codes_bit_layout_and_round_trip():
    # codes 1, 2, 3 of 2 bits, least significant bit first: stream 1,0 0,1 1,1 -> byte 0b00111001
    assert pack_codes(torch.tensor([1, 2, 3]), 2).tolist() == [0b00111001]
    assert pack_codes(torch.tensor([5, 0, 7]), 3).tolist() == [0b11000101, 0b1]  # 101 000 111, 9 bits in 2 bytes
    generator = torch.Generator().manual_seed(0)
    for bits in range(1, 9):
        for count in (1, 7, 8, 1001):
            codes = torch.randint(0, 2 ** bits, (count,), generator=generator)
            packed = pack_codes(codes, bits)
            assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(count * bits / 8)
            assert torch.equal(unpack_codes(packed, bits, count), codes)
    assert pack_codes(torch.zeros(10, dtype=torch.long), 0).numel() == 0  # one value: no codes at all
    assert torch.equal(unpack_codes(torch.empty(0, dtype=torch.uint8), 0, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="2 bytes hold 5 codes of 3 bits, expected 6"):
        unpack_codes(torch.zeros(2, dtype=torch.uint8), 3, 6)
