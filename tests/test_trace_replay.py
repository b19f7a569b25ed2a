"""g2lstm.trace's fast replay: without gradients on the CPU each call is replayed with the C++ op,
whose saved gates and states are the record; it must equal the reference's record, and the check
against the module's outputs must still catch a replay that differs."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from g2lstm import G2LSTM, trace
from g2lstm.kernels import cpu
from g2lstm.reference import lstm_direction

I, H = 4, 5


def reference_impl(grad, x):
    return lambda *args: lstm_direction(*args, record=True)


CASES = {
    "eval-packed-bidirectional-hx": dict(layers=dict(num_layers=2, bidirectional=True), packed=True, hx=True),
    "eval-proj-batch_first": dict(layers=dict(num_layers=2, proj_size=3, batch_first=True)),
    "eval-hard-gates-packed-reverse": dict(layers=dict(bidirectional=True), packed=True,
                                           options=dict(eval_gates="hard")),
    "eval-sharpened": dict(layers=dict(num_layers=2), options=dict(gates="sharpened", tau=0.5)),
    "train-noise-dropouts-packed": dict(layers=dict(num_layers=2, bidirectional=True, dropout=0.4), packed=True,
                                        train=True, options=dict(noise_p=0.5, tau=0.7, weight_drop=0.3)),
    "train-sequence-noise-proj": dict(layers=dict(num_layers=2, proj_size=3), train=True,
                                      options=dict(noise_p=1.0, noise_mode="sequence_mask", stochastic_gates=(
                                          "input", "forget", "output"))),
}


def traced(module, call_input, hx, seed):
    torch.manual_seed(seed)
    with torch.no_grad(), trace.record(module) as recorded:
        output = module(call_input, hx)
    return recorded, output


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_replay_by_the_cpu_op_equals_the_reference_record(name, dtype, monkeypatch):
    assert cpu.load_extension()
    case = CASES[name]
    torch.manual_seed(0)
    module = G2LSTM(I, H, **case["layers"], **case.get("options", {}), dtype=dtype).train(case.get("train", False))
    directions = 2 if module.bidirectional else 1
    x = torch.randn(6, 3, I, dtype=dtype)
    call_input = pack_padded_sequence(x, torch.tensor([4, 6, 2]), enforce_sorted=False) if case.get("packed") \
        else (x.transpose(0, 1) if module.batch_first else x)
    hx = None
    if case.get("hx"):
        hx = (torch.randn(module.num_layers * directions, 3, module.proj_size or H, dtype=dtype),
              torch.randn(module.num_layers * directions, 3, H, dtype=dtype))

    calls = []
    by_op = trace._recorded_by_cpu_op
    monkeypatch.setattr(trace, "_recorded_by_cpu_op", lambda *args: calls.append(1) or by_op(*args))
    fast, fast_output = traced(module, call_input, hx, seed=7)
    assert len(calls) == module.num_layers * directions  # every layer direction was replayed by the op
    monkeypatch.setattr(trace, "_recording_impl", reference_impl)
    slow, slow_output = traced(module, call_input, hx, seed=7)

    assert torch.equal(fast_output[0].data, slow_output[0].data)  # the module's own result either way
    assert [t.key for t in fast] == [t.key for t in slow] and len(fast) == module.num_layers * directions
    atol = 1e-5 if dtype == torch.float32 else 1e-7  # the op draws its noise in float32
    for a, b in zip(fast, slow):
        assert torch.equal(a.mask, b.mask)
        for field in "hcifgo":
            torch.testing.assert_close(getattr(a, field), getattr(b, field), atol=atol, rtol=1e-5,
                                       msg=f"{a.key} {field}")
        assert not a.i[~a.mask].any() and not a.o[~a.mask].any()  # gates are 0 at padding
    if case.get("options", {}).get("eval_gates") == "hard":
        assert set(torch.cat([fast.layers[0].i, fast.layers[0].f]).unique().tolist()) == {0.0, 1.0}


def test_calls_of_one_module_are_joined_on_the_fast_path():
    torch.manual_seed(1)
    lstm = nn.LSTM(I, H, num_layers=2).eval()
    x = torch.randn(7, 2, I)
    with torch.no_grad():
        with trace.record(lstm) as whole:
            lstm(x)
        with trace.record(lstm) as parts:
            _, state = lstm(x[:3])
            lstm(x[3:], state)
    for a, b in zip(whole, parts):
        assert b.h.shape == (7, 2, H)
        for field in "hcifgo":
            torch.testing.assert_close(getattr(a, field), getattr(b, field), atol=1e-6, rtol=1e-5)


def test_which_replay_runs():
    assert cpu.load_extension()
    x = torch.randn(2, 2, I)
    assert trace._recording_impl(False, x) is trace._recorded_by_cpu_op
    assert trace._recording_impl(False, x.double()) is trace._recorded_by_cpu_op
    for grad, tensor in ((True, x), (False, x.bfloat16())):  # gradients, or a dtype the op does not run
        impl = trace._recording_impl(grad, tensor)
        assert impl is not trace._recorded_by_cpu_op and impl.func is lstm_direction and impl.keywords == {
            "record": True}


@pytest.mark.parametrize("what, index", [("output", 0), ("h_n", 1), ("c_n", 2)])
def test_a_module_output_the_replay_does_not_reproduce_is_an_error(what, index):
    """The check is live on the fast path: a hook registered before the trace's changes the output
    that the trace compares with, by more than the tolerance, in one element."""
    lstm = nn.LSTM(I, H, num_layers=2).eval()

    def nudged(module, args, output):
        out, (h_n, c_n) = output
        tensors = [out.clone(), h_n.clone(), c_n.clone()]
        tensors[index].view(-1)[-1] += 1e-3
        return tensors[0], (tensors[1], tensors[2])

    lstm.register_forward_hook(nudged)
    with pytest.raises(RuntimeError, match=f"trace of 'rnn' does not reproduce its {what} "
                                           r"\(max diff 0.001\)"):
        with torch.no_grad(), trace.record(nn.ModuleDict({"rnn": lstm})):
            lstm(torch.randn(3, 2, I))


def test_the_fast_closeness_check_agrees_with_allclose():
    torch.manual_seed(2)
    base = torch.randn(50, 40)
    inf, nan = float("inf"), float("nan")
    cases = [base + 1e-6, base + 2e-4, base * (1 + 5e-5), base * (1 + 3e-4), base.clone()]
    with_inf = base.clone()
    with_inf[0, 0] = inf
    cases.append(with_inf)
    with_nan = base.clone()
    with_nan[3, 3] = nan
    cases.append(with_nan)
    for mine in cases:
        for theirs in (base, with_inf, with_nan):
            assert trace._close(mine, theirs, atol=1e-4, rtol=1e-4) == torch.allclose(mine, theirs, atol=1e-4,
                                                                                        rtol=1e-4)
    assert trace._close(with_inf, with_inf, atol=1e-4, rtol=1e-4)  # equal infinities pass, as in allclose
    assert trace._close(base[:0], base[:0], atol=1e-4, rtol=1e-4)
