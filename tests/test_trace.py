"""g2lstm.trace: traces equal the module's outputs and a hand-written LSTM recurrence."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from g2lstm import G2LSTM, kernels, trace
from g2lstm.noise import NoiseKey, draw_seed, gate_noise

I, H = 4, 5


def sigmoid_gate(a, k, t, stream):
    return a.sigmoid()


def manual_direction(x, lengths, weights, h0, c0, reverse, gate):
    """One direction by hand: per-step h, c, i, f, g, o (T, N, .) and the output; padding steps
    carry the state and record zero gates. ``gate(a, k, t)`` is gate k's value at step t."""
    w_ih, w_hh, b_ih, b_hh, w_hr = weights
    steps = x.shape[0]
    h, c = h0, c0
    rec = {name: [None] * steps for name in "hcifgo"}
    out = [None] * steps
    for t in reversed(range(steps)) if reverse else range(steps):
        a = x[t] @ w_ih.t() + h @ w_hh.t()
        if b_ih is not None:
            a = a + b_ih + b_hh
        a_i, a_f, a_g, a_o = a.chunk(4, -1)
        i, f, g, o = gate(a_i, 0, t), gate(a_f, 1, t), a_g.tanh(), gate(a_o, 3, t)
        c_new = f * c + i * g
        h_new = o * c_new.tanh()
        if w_hr is not None:
            h_new = h_new @ w_hr.t()
        real = (t < lengths).unsqueeze(1)
        h, c = torch.where(real, h_new, h), torch.where(real, c_new, c)
        out[t] = h_new * real
        for name, value in zip("hcifgo", (h, c, i * real, f * real, g * real, o * real)):
            rec[name][t] = value
    return {name: torch.stack(v) for name, v in rec.items()}, torch.stack(out)


def manual_lstm(lstm, x, lengths=None, hx=None, gate=sigmoid_gate):
    """Every layer direction of ``lstm`` (eval, time-major padded x) by hand: {(layer, d): steps};
    ``gate(a, k, t, stream)`` is gate k's value at step t of layer direction ``stream``."""
    directions = 2 if lstm.bidirectional else 1
    steps, batch = x.shape[:2]
    lengths = torch.full((batch,), steps) if lengths is None else lengths
    if hx is None:
        hx = (x.new_zeros(lstm.num_layers * directions, batch, lstm.proj_size or H),
              x.new_zeros(lstm.num_layers * directions, batch, H))
    result, layer_input = {}, x
    for layer in range(lstm.num_layers):
        outputs = []
        for d in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            weights = [getattr(lstm, name + suffix, None)
                       for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")]
            k = layer * directions + d
            stream_gate = lambda a, gate_index, t, k=k: gate(a, gate_index, t, k)  # noqa: E731
            result[layer, d], out = manual_direction(layer_input, lengths, weights, hx[0][k], hx[1][k], d == 1,
                                                     stream_gate)
            outputs.append(out)
        layer_input = torch.cat(outputs, -1)
    return result


def assert_trace_equals(recorded, expected, name="", atol=1e-5):
    assert {(t.layer, t.direction) for t in recorded.by_name(name)} == set(expected)
    for (layer, d), steps in expected.items():
        t = recorded.layer(name, layer, d)
        for field, value in steps.items():
            torch.testing.assert_close(getattr(t, field), value, atol=atol, rtol=1e-4, msg=f"{t.key} {field}")


LAYOUTS = {
    "2-layer-bidirectional-packed": dict(num_layers=2, bidirectional=True),
    "2-layer-proj-batch_first": dict(num_layers=2, proj_size=3, batch_first=True),
    "bidirectional-proj-unbatched": dict(bidirectional=True, proj_size=2),
}


@pytest.mark.parametrize("kind", ["nn.LSTM", "G2LSTM"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_trace_equals_module_and_hand_written_recurrence(layout, kind):
    torch.manual_seed(0)
    lstm = nn.LSTM(I, H, **LAYOUTS[layout]).eval()
    module = lstm if kind == "nn.LSTM" else G2LSTM.from_lstm(lstm)
    directions = 2 if lstm.bidirectional else 1
    x = torch.randn(6, 3, I)  # time-major, 3 sequences
    lengths, hx = None, None
    if layout.endswith("packed"):
        lengths = torch.tensor([4, 6, 2])  # unsorted
        call_input = pack_padded_sequence(x, lengths, enforce_sorted=False)
    elif layout.endswith("unbatched"):
        x = x[:, :1]
        call_input = x[:, 0]
    else:
        hx = (torch.randn(2 * directions, 3, lstm.proj_size or H), torch.randn(2 * directions, 3, H))
        call_input = x.transpose(0, 1)
    with torch.no_grad():
        expected_output = module(call_input, hx)
        with trace.record(module) as recorded:
            output = module(call_input, hx)
        steps = manual_lstm(lstm, x, lengths, hx)
    assert torch.equal(output[0].data, expected_output[0].data)  # grad=False: the module's own result
    assert len(recorded) == lstm.num_layers * directions
    assert_trace_equals(recorded, steps)
    top = recorded.layer("", lstm.num_layers - 1, 0)
    mask = top.mask
    assert mask.shape == x.shape[:2] and mask.sum(0).tolist() == (lengths if lengths is not None else torch.full((x.shape[1],), 6)).tolist()
    assert not top.f[~mask].any()  # gates are 0 at padding
    out = pad_packed_sequence(output[0])[0] if lengths is not None else output[0]
    out = out.transpose(0, 1) if lstm.batch_first else out.reshape(6, -1, out.shape[-1])
    torch.testing.assert_close(top.h[mask], out[..., : top.h.shape[-1]][mask], atol=1e-5, rtol=1e-4)
    assert top.key == f"lstm/l{lstm.num_layers - 1}"
    assert set(top.gates) == {"input", "forget", "cell", "output"} and top.gate("cell") is top.g


@pytest.mark.parametrize("gates, eval_gates", [("sharpened", "soft"), ("gumbel", "hard")])
def test_g2_gates_in_evaluation(gates, eval_gates):
    torch.manual_seed(1)
    lstm = nn.LSTM(I, H, num_layers=2)
    g2 = G2LSTM.from_lstm(lstm, gates=gates, tau=0.5, eval_gates=eval_gates).eval()
    x = torch.randn(7, 2, I)
    with torch.no_grad(), trace.record(g2) as recorded:
        g2(x)

    def gate(a, k, t, stream):
        if k == 3:
            return a.sigmoid()
        return (a >= 0).float() if eval_gates == "hard" else (a / 0.5).sigmoid()

    with torch.no_grad():
        assert_trace_equals(recorded, manual_lstm(g2, x, gate=gate))
    if eval_gates == "hard":
        for t in recorded:
            assert set(torch.cat([t.i, t.f]).unique().tolist()) == {0.0, 1.0}


def test_gumbel_training_trace_has_the_module_noise():
    """In training the trace draws the module's own noise: it equals a hand-written recurrence
    with the noise of g2lstm.noise for the module's seed, and the module's result is unchanged."""
    torch.manual_seed(2)
    g2 = G2LSTM(I, H, num_layers=2, bidirectional=True, tau=0.7, noise_p=0.5, impl="reference").train()
    x = torch.randn(6, 3, I)
    torch.manual_seed(10)
    expected = g2(x)[0]
    torch.manual_seed(10)
    seed = draw_seed()
    torch.manual_seed(10)
    with trace.record(g2) as recorded:
        output = g2(x)[0]
    assert torch.equal(output, expected)
    noise = [gate_noise(NoiseKey(seed, stream, 0.5, "step"), 6, 3, 2, H) for stream in range(4)]

    def gate(a, k, t, stream):
        return ((a + noise[stream][t, :, k]) / 0.7).sigmoid() if k in (0, 1) else a.sigmoid()

    with torch.no_grad():
        assert_trace_equals(recorded, manual_lstm(g2, x, gate=gate))
    g2.eval()
    with torch.no_grad(), trace.record(g2) as evaluation:
        g2(x)
    assert not torch.allclose(evaluation.layers[0].f, recorded.layers[0].f)  # the noise was on


@pytest.mark.parametrize("impl", sorted(kernels.IMPLEMENTATIONS) + ["auto"])
@pytest.mark.parametrize("options", [dict(), dict(dropout=0.4, weight_drop=0.3)], ids=["plain", "dropouts"])
def test_every_impl_in_training_is_traced_exactly(impl, options):
    """Noise, weight drop and dropout are replayed from the module's random state; the module's
    result is bit-for-bit its untraced result; the trace's top layer is its output."""
    torch.manual_seed(3)
    g2 = G2LSTM(I, H, num_layers=2, impl=impl, noise_p=0.5, **options).train()
    x = torch.randn(5, 2, I)
    torch.manual_seed(11)
    expected, (h_n, _) = g2(x)
    torch.manual_seed(11)
    with trace.record(g2) as recorded:
        output, _ = g2(x)
    after = torch.rand(3)
    torch.manual_seed(11)
    g2(x)
    assert torch.equal(output, expected)
    assert torch.equal(after, torch.rand(3))  # the trace leaves the random state where the module did
    top = recorded.layer("", 1)
    torch.testing.assert_close(top.h, output.detach(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(top.h[-1], h_n[1].detach(), atol=1e-5, rtol=1e-4)


def test_nn_lstm_training_dropout_on_packed_input_is_replayed():
    torch.manual_seed(4)
    lstm = nn.LSTM(I, H, num_layers=3, dropout=0.5, bidirectional=True).train()
    packed = pack_padded_sequence(torch.randn(5, 3, I), torch.tensor([2, 5, 3]), enforce_sorted=False)
    with trace.record(lstm) as recorded:
        output = pad_packed_sequence(lstm(packed)[0])[0]
    top = recorded.layer("", 2)
    torch.testing.assert_close(top.h[top.mask], output[..., :H][top.mask].detach(), atol=1e-5, rtol=1e-4)


def test_mt_decoder_with_input_feeding_is_joined_along_time():
    from g2lstm.mt.model import ModelConfig, Seq2Seq

    torch.manual_seed(5)
    cfg = ModelConfig(cell="g2lstm", embed_dim=6, hidden_dim=8,
                      encoder_layers=2, decoder_layers=2, input_feeding=True, noise_p=0.5)
    model = Seq2Seq(cfg, src_vocab=11, tgt_vocab=13).train()
    src = torch.tensor([[4, 5, 6, 7], [8, 9, 0, 0]])  # PAD = 0
    src_lengths = torch.tensor([4, 2])
    tgt_in = torch.randint(3, 13, (2, 6))
    torch.manual_seed(12)
    expected = model(src, src_lengths, tgt_in)
    torch.manual_seed(12)
    with trace.record(model) as recorded:
        logits = model(src, src_lengths, tgt_in)
    assert torch.equal(logits, expected)  # dropout outside the LSTMs draws what it drew untraced
    assert {t.key for t in recorded} == {"encoder.rnn/l0", "encoder.rnn/l0_reverse", "encoder.rnn/l1",
                                         "encoder.rnn/l1_reverse", "decoder.rnn/l0", "decoder.rnn/l1"}
    assert recorded.layer("encoder.rnn", 1, 1).mask.sum(0).tolist() == [4, 2]
    for layer in range(2):
        t = recorded.layer("decoder.rnn", layer)
        assert t.h.shape == (6, 2, 8) and t.mask.all()
        # the joined calls are one recurrence: each step's cell follows from the previous one
        torch.testing.assert_close(t.c[1:], t.f[1:] * t.c[:-1] + t.i[1:] * t.g[1:], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(t.h, t.o * t.c.tanh(), atol=1e-6, rtol=1e-5)


def test_gradients_flow_through_the_trace():
    torch.manual_seed(6)
    lstm = nn.LSTM(I, H, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, I, requires_grad=True)
    with trace.record(lstm, grad=True) as recorded:
        lstm(x)
    recorded.layers[0].f.sum().backward()
    by_trace = x.grad.clone(), lstm.weight_hh_l0.grad.clone()
    x.grad, lstm.weight_hh_l0.grad = None, None
    manual_lstm(lstm, x)[0, 0]["f"].sum().backward()
    assert by_trace[0].abs().sum() > 0 and by_trace[1].abs().sum() > 0
    torch.testing.assert_close(by_trace[0], x.grad)
    torch.testing.assert_close(by_trace[1], lstm.weight_hh_l0.grad)
    assert lstm.weight_hh_l1.grad is None or not lstm.weight_hh_l1.grad.any()  # layer 1 does not feed layer 0

    with trace.record(lstm) as detached:
        lstm(x)
    assert not any(getattr(t, f).requires_grad for t in detached for f in "hcifgo")


def test_errors():
    lstm = nn.LSTM(I, H)
    with pytest.raises(ValueError, match="batch of 3 after a batch of 2"):
        with torch.no_grad(), trace.record(lstm):
            lstm(torch.randn(4, 2, I))
            lstm(torch.randn(4, 3, I))
    with pytest.raises(ValueError, match="nn.LSTM or G2LSTM"):
        with trace.record(nn.Linear(2, 2)):
            pass

    class Custom(nn.LSTM):
        pass

    with pytest.raises(TypeError, match="Custom"):
        with trace.record(Custom(I, H)):
            pass
    recorded = trace.Trace()
    with pytest.raises(KeyError, match="no trace of module 'rnn'"):
        recorded.layer("rnn")
    assert not lstm._forward_hooks and not lstm._forward_pre_hooks


def test_a_replay_that_draws_other_random_numbers_is_an_error(monkeypatch):
    run_layers = trace.run_layers

    def drawing_one_more(*args):
        torch.rand(1)
        return run_layers(*args)

    monkeypatch.setattr(trace, "run_layers", drawing_one_more)
    lstm = nn.LSTM(I, H)
    with pytest.raises(RuntimeError, match="trace of 'rnn': the replay drew random numbers differently"):
        with trace.record(nn.ModuleDict({"rnn": lstm})):
            lstm(torch.randn(3, 2, I))
