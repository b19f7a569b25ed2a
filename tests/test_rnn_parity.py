"""G2LSTM / G2LSTMCell against torch.nn.LSTM / nn.LSTMCell with the same weights.

In evaluation, and in training with ``gates='sigmoid'``, a G2-LSTM is an ordinary LSTM: outputs,
final states and every gradient must match torch's to float32 tolerance. ``impl='reference'``
forces the pure-PyTorch loop, so these tests check the reference itself, not torch's kernel.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from g2lstm import G2LSTM, G2LSTMCell

ATOL = 1e-5
I, H = 5, 7

CONFIGS = {
    "1-layer": dict(),
    "3-layer": dict(num_layers=3),
    "bidirectional": dict(num_layers=2, bidirectional=True),
    "batch_first": dict(num_layers=2, batch_first=True),
    "proj_size": dict(num_layers=2, proj_size=3),
    "proj-bidirectional-batch_first": dict(bidirectional=True, proj_size=4, batch_first=True),
    "no-bias": dict(bias=False, num_layers=2),
}


def _pair(config, seed=0, **g2_options):
    torch.manual_seed(seed)
    lstm = nn.LSTM(I, H, **config)
    g2 = G2LSTM.from_lstm(lstm, impl="reference", **g2_options)
    return lstm, g2


def _states(lstm, batch, unbatched=False):
    d = 2 if lstm.bidirectional else 1
    h_out = lstm.proj_size or lstm.hidden_size
    shape = (lstm.num_layers * d,) if unbatched else (lstm.num_layers * d, batch)
    return torch.randn(*shape, h_out), torch.randn(*shape, lstm.hidden_size)


def _run(module, x, hx):
    """Output, states and the gradients of a loss touching all of them."""
    module.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    hx = tuple(t.detach().clone().requires_grad_(True) for t in hx) if hx is not None else None
    out, (h, c) = module(x, hx)
    out_data = out.data if isinstance(out, PackedSequence) else out
    torch.manual_seed(123)  # the same loss weights for both modules
    loss = (out_data * torch.randn_like(out_data)).sum() + (h * torch.randn_like(h)).sum() + (c.sin()).sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    grads["input"] = x.grad.clone() if not isinstance(x, PackedSequence) else None
    if hx is not None:
        grads["h0"], grads["c0"] = hx[0].grad.clone(), hx[1].grad.clone()
    return out_data, h, c, grads


def _assert_same(result_a, result_b):
    out_a, h_a, c_a, grads_a = result_a
    out_b, h_b, c_b, grads_b = result_b
    torch.testing.assert_close(out_a, out_b, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(h_a, h_b, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(c_a, c_b, atol=ATOL, rtol=1e-4)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        if grads_a[name] is not None:
            torch.testing.assert_close(grads_a[name], grads_b[name], atol=ATOL, rtol=1e-4, msg=name)


@pytest.mark.parametrize("mode", ["eval", "train-sigmoid", "train-gumbel-noiseless"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("with_hx", [False, True])
def test_matches_nn_lstm(name, mode, with_hx):
    config = CONFIGS[name]
    options = {"eval": {}, "train-sigmoid": {"gates": "sigmoid"},
               "train-gumbel-noiseless": {"gates": "gumbel", "noise_p": 0.0, "tau": 1.0}}[mode]
    lstm, g2 = _pair(config, **options)
    training = mode != "eval"
    lstm.train(training)
    g2.train(training)
    x = torch.randn(4, 3, I) if config.get("batch_first") else torch.randn(6, 3, I)
    if config.get("batch_first"):
        x = torch.randn(3, 6, I)
    hx = _states(lstm, 3) if with_hx else None
    _assert_same(_run(lstm, x, hx), _run(g2, x, hx))


@pytest.mark.parametrize("name", ["1-layer", "bidirectional", "proj-bidirectional-batch_first"])
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_sequence_matches_nn_lstm(name, enforce_sorted):
    config = dict(CONFIGS[name])
    lstm, g2 = _pair(config, gates="sigmoid")
    lstm.train()
    g2.train()
    lengths = torch.tensor([6, 6, 5, 3, 1]) if enforce_sorted else torch.tensor([3, 6, 1, 5, 6])
    padded = torch.randn(5, 6, I)  # batch-first padded
    if not config.get("batch_first"):
        padded = padded.transpose(0, 1)
    hx = _states(lstm, 5)
    results = []
    for module in (lstm, g2):
        module.zero_grad()
        data = padded.detach().clone().requires_grad_(True)
        packed = pack_padded_sequence(data, lengths, batch_first=bool(config.get("batch_first")),
                                      enforce_sorted=enforce_sorted)
        states = tuple(t.detach().clone().requires_grad_(True) for t in hx)
        out, (h, c) = module(packed, states)
        assert isinstance(out, PackedSequence)
        assert torch.equal(out.batch_sizes, packed.batch_sizes)
        if not enforce_sorted:
            assert torch.equal(out.sorted_indices, packed.sorted_indices)
        torch.manual_seed(7)
        loss = (out.data * torch.randn_like(out.data)).sum() + (h * torch.randn_like(h)).sum() + c.sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters()}
        grads.update(input=data.grad.clone(), h0=states[0].grad.clone(), c0=states[1].grad.clone())
        results.append((out.data, h, c, grads))
    _assert_same(*results)


@pytest.mark.parametrize("name", ["1-layer", "bidirectional", "proj_size", "batch_first"])
@pytest.mark.parametrize("with_hx", [False, True])
def test_unbatched_input_matches_nn_lstm(name, with_hx):
    config = CONFIGS[name]
    lstm, g2 = _pair(config, gates="sigmoid")
    x = torch.randn(6, I)
    hx = _states(lstm, None, unbatched=True) if with_hx else None
    result_lstm, result_g2 = _run(lstm, x, hx), _run(g2, x, hx)
    assert result_lstm[0].shape == result_g2[0].shape == (6, (2 if lstm.bidirectional else 1) * (lstm.proj_size or H))
    _assert_same(result_lstm, result_g2)


@pytest.mark.parametrize("impl", ["reference", "cpu", "bptt"])
def test_eval_mode_gumbel_is_plain_lstm_for_every_impl(impl):
    """Soft evaluation ignores tau and the noise. A named impl runs G2's loop (impl='auto' would hand
    this ordinary LSTM to nn.LSTM.forward: test_torch_spec.py checks that hand-over)."""
    torch.manual_seed(1)
    lstm = nn.LSTM(I, H, 2, bidirectional=True).eval()
    g2 = G2LSTM.from_lstm(lstm, impl=impl, noise_p=1.0, tau=0.3).eval()
    x = torch.randn(5, 2, I)
    _assert_same(_run(lstm, x, None), _run(g2, x, None))


def test_sharpened_equals_lstm_with_scaled_gate_rows():
    """sigmoid(a / tau) on input and forget gates == an LSTM with those rows (and biases) / tau."""
    tau = 0.4
    lstm, g2 = _pair(dict(num_layers=2), gates="sharpened", tau=tau)
    scaled = nn.LSTM(I, H, 2)
    state = lstm.state_dict()
    for key, value in state.items():
        value = value.clone()
        value[: 2 * H] /= tau  # rows of the input and forget blocks
        state[key] = value
    scaled.load_state_dict(state)
    for training in (True, False):
        g2.train(training)
        scaled.train(training)
        x = torch.randn(5, 3, I)
        result_scaled = _run(scaled, x, None)
        for name, grad in result_scaled[3].items():
            if name.startswith(("weight", "bias")):
                grad[: 2 * H] /= tau  # chain rule through the division by tau
        _assert_same(result_scaled, _run(g2, x, None))


@pytest.mark.parametrize("impl", ["auto", "reference"])
def test_weight_drop_is_one_dropconnect_mask_per_forward(impl):
    p = 0.5
    lstm, g2 = _pair(dict(num_layers=2), gates="sigmoid", weight_drop=p)
    g2.impl = impl
    g2.train()
    x = torch.randn(5, 3, I)
    torch.manual_seed(42)
    out_g2, (h_g2, _) = g2(x)
    # The same masks, drawn in the same order (layer by layer), applied to an nn.LSTM by hand.
    torch.manual_seed(42)
    state = lstm.state_dict()
    for layer in range(2):
        key = f"weight_hh_l{layer}"
        state[key] = F.dropout(state[key], p, training=True)
    dropped = nn.LSTM(I, H, 2)
    dropped.load_state_dict(state)
    out_ref, (h_ref, _) = dropped(x)
    torch.testing.assert_close(out_g2, out_ref, atol=ATOL, rtol=1e-4)
    # The mask is one per forward: the parameters themselves are untouched.
    assert torch.equal(g2.weight_hh_l0, lstm.weight_hh_l0)
    # At evaluation no weight is dropped.
    g2.eval()
    lstm.eval()
    torch.testing.assert_close(g2(x)[0], lstm(x)[0], atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_training_dropout_draws_the_masks_of_torch(packed):
    """Inter-layer dropout uses nn.LSTM's masks for a seed (packed input: in the packed layout),
    and weight drop with dropout draws the same numbers on the fused and the reference path."""
    lstm, g2 = _pair(dict(num_layers=3, bidirectional=True, dropout=0.5), gates="sigmoid")
    lstm.train(), g2.train()
    x = torch.randn(5, 3, I)
    if packed:
        x = pack_padded_sequence(x, torch.tensor([5, 2, 4]), enforce_sorted=False)
    data = lambda out: out.data if packed else out  # noqa: E731
    torch.manual_seed(7)
    expected = data(lstm(x)[0])
    torch.manual_seed(7)
    torch.testing.assert_close(data(g2(x)[0]), expected, atol=ATOL, rtol=1e-4)
    fused = G2LSTM.from_lstm(lstm, gates="sigmoid", weight_drop=0.3)
    reference = G2LSTM.from_lstm(lstm, gates="sigmoid", weight_drop=0.3, impl="reference")
    torch.manual_seed(8)
    expected = data(fused(x)[0])
    torch.manual_seed(8)
    torch.testing.assert_close(data(reference(x)[0]), expected, atol=ATOL, rtol=1e-4)


def test_state_dict_round_trips_with_nn_lstm():
    config = dict(num_layers=2, bidirectional=True, proj_size=3)
    torch.manual_seed(0)
    lstm = nn.LSTM(I, H, **config)
    g2 = G2LSTM(I, H, **config)
    assert list(g2.state_dict()) == list(lstm.state_dict())
    assert all(a.shape == b.shape for a, b in zip(g2.state_dict().values(), lstm.state_dict().values()))
    g2.load_state_dict(lstm.state_dict())
    back = nn.LSTM(I, H, **config)
    back.load_state_dict(g2.state_dict())
    for key, value in lstm.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
    assert isinstance(g2, nn.LSTM)
    converted = g2.to_lstm()
    assert type(converted) is nn.LSTM
    assert all(torch.equal(converted.state_dict()[k], v) for k, v in g2.state_dict().items())


def test_from_lstm_keeps_mode_dtype_and_options():
    lstm = nn.LSTM(I, H, dtype=torch.float64).eval()
    g2 = G2LSTM.from_lstm(lstm, tau=0.5, noise_p=0.3, stochastic_gates=("forget",))
    assert not g2.training
    assert g2.weight_ih_l0.dtype == torch.float64
    assert (g2.tau, g2.noise_p, g2.stochastic_gates) == (0.5, 0.3, ("forget",))


@pytest.mark.parametrize("mode", ["eval", "train-noiseless"])
@pytest.mark.parametrize("unbatched", [False, True])
def test_cell_matches_nn_lstm_cell(mode, unbatched):
    """The cell's own step: in evaluation a gumbel cell is torch's, so 'sharpened' with tau=1
    (sigmoid(a), run by G2's step) stands for it."""
    torch.manual_seed(0)
    cell = nn.LSTMCell(I, H)
    g2 = G2LSTMCell.from_lstm_cell(cell, noise_p=0.0, gates="sharpened" if mode == "eval" else "gumbel")
    training = mode != "eval"
    cell.train(training)
    g2.train(training)
    shape = (I,) if unbatched else (4, I)
    x = torch.randn(*shape, requires_grad=True)
    hx = (torch.randn(*shape[:-1], H), torch.randn(*shape[:-1], H))
    results = []
    for module in (cell, g2):
        module.zero_grad()
        h, c = module(x, hx)
        (h.sum() + (c * c).sum()).backward()
        results.append((h, c, {n: p.grad.clone() for n, p in module.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(results[0][1], results[1][1], atol=ATOL, rtol=1e-4)
    for name, grad in results[0][2].items():
        torch.testing.assert_close(grad, results[1][2][name], atol=ATOL, rtol=1e-4)
    assert type(g2.to_lstm_cell()) is nn.LSTMCell


def test_cell_steps_equal_layer_in_noiseless_training():
    """Stepping G2LSTMCell over time computes what a one-layer G2LSTM computes."""
    torch.manual_seed(0)
    layer = G2LSTM(I, H, noise_p=0.0, tau=0.6, impl="reference").train()
    cell = G2LSTMCell(I, H, noise_p=0.0, tau=0.6).train()
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in layer.state_dict().items()})
    x = torch.randn(5, 2, I)
    out, (h_n, c_n) = layer(x)
    h = c = torch.zeros(2, H)
    for t in range(5):
        h, c = cell(x[t], (h, c))
        torch.testing.assert_close(h, out[t])
    torch.testing.assert_close(c, c_n[0])


@pytest.mark.parametrize("impl", ["reference", "cpu"])
@pytest.mark.parametrize("gates, tau", [("gumbel", 0.5), ("sharpened", 0.5), ("sharpened", 1.0), ("sigmoid", 2.0)])
def test_to_lstm_computes_what_the_layer_computes_at_evaluation(gates, tau, impl):
    """The layer runs G2's loop (a named impl); the cell runs its own step for 'sharpened' and torch's
    for the others, where to_lstm_cell must then leave the weights as they are."""
    torch.manual_seed(0)
    g2 = G2LSTM(I, H, 2, proj_size=3, gates=gates, tau=tau, stochastic_gates=("forget", "output"), impl=impl).eval()
    cell = G2LSTMCell(I, H, gates=gates, tau=tau).eval()
    x = torch.randn(5, 3, I)
    torch.testing.assert_close(g2.to_lstm()(x)[0], g2(x)[0], atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(cell.to_lstm_cell()(x[0])[0], cell(x[0])[0], atol=ATOL, rtol=1e-4)


def test_to_lstm_refuses_hard_evaluation_gates():
    with pytest.raises(ValueError, match="eval_gates='hard' computes no torch LSTM at evaluation"):
        G2LSTM(I, H, eval_gates="hard").to_lstm()
