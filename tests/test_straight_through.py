"""Straight-through gates (``train_gates='hard'``): binary in the forward pass, the soft gate's
gradient in the backward; what the option means for the module, and where it is refused.

The kernels are checked against the reference in tests/test_kernels.py (the ``straight-through``
cases); here the reference itself is checked against the formula, written out for one step.
"""

from __future__ import annotations

import pickle

import pytest
import torch

import g2lstm.trace
from g2lstm import G2LSTM, G2LSTMCell, reference
from g2lstm.config import ConfigValueError
from g2lstm.lm.model import LMModelConfig
from g2lstm.mt.model import ModelConfig as MTModelConfig
from g2lstm.reference import GateSpec


def test_one_step_is_binary_forward_and_soft_backward():
    """c' = f c + i g with i, f = (sigmoid(a / tau) >= 1/2); d c' / d a_f = c s_f (1 - s_f) / tau."""
    torch.manual_seed(0)
    batch, hidden, tau = 3, 5, 0.5
    a = torch.randn(batch, 4 * hidden, dtype=torch.float64, requires_grad=True)
    c = torch.randn(batch, hidden, dtype=torch.float64)
    spec = GateSpec("gumbel", tau, (0, 1), "soft", "hard")
    h_new, c_new, (i, f, g, o) = reference.cell_step(a, c, spec, training=True)

    a_i, a_f, a_g, a_o = a.detach().chunk(4, dim=-1)
    s_i, s_f = torch.sigmoid(a_i / tau), torch.sigmoid(a_f / tau)
    assert set(i.unique().tolist()) <= {0.0, 1.0} and set(f.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(i, (a_i >= 0).double()) and torch.equal(f, (a_f >= 0).double())
    torch.testing.assert_close(c_new, (a_f >= 0) * c + (a_i >= 0) * torch.tanh(a_g), rtol=0, atol=0)
    assert torch.equal(o, torch.sigmoid(a_o))  # not stochastic: soft

    weight = torch.randn(batch, hidden, dtype=torch.float64)
    (grad,) = torch.autograd.grad((c_new * weight).sum(), a)
    d_i, d_f, d_g, d_o = grad.chunk(4, dim=-1)
    torch.testing.assert_close(d_f, weight * c * s_f * (1 - s_f) / tau)
    torch.testing.assert_close(d_i, weight * torch.tanh(a_g) * s_i * (1 - s_i) / tau)
    # the cell candidate sees the binary input gate: no gradient where the gate is shut
    torch.testing.assert_close(d_g, weight * (a_i >= 0) * (1 - torch.tanh(a_g) ** 2))
    assert torch.equal(d_o, torch.zeros_like(d_o))
    assert (d_f != 0).all() and (d_i != 0).all()  # unlike hard gates, every gate gets a gradient


@pytest.mark.parametrize("impl", ["reference", "cpu", "bptt"])
def test_training_runs_the_binary_gates_that_hard_evaluation_runs(impl):
    """Without noise (noise_p=0) and with tau=1, a straight-through layer in training computes what
    the same layer computes at evaluation with eval_gates='hard': training and inference agree."""
    torch.manual_seed(1)
    layer = G2LSTM(4, 6, num_layers=2, noise_p=0.0, train_gates="hard", eval_gates="hard", impl=impl,
                   dtype=torch.float64)
    x = torch.randn(7, 3, 4, dtype=torch.float64)
    trained, (h_t, c_t) = layer.train()(x)
    evaluated, (h_e, c_e) = layer.eval()(x)
    torch.testing.assert_close(trained, evaluated, rtol=0, atol=1e-12)
    torch.testing.assert_close(c_t, c_e, rtol=0, atol=1e-12)
    layer.train()
    trained.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_soft_training_differs_and_evaluation_is_unchanged():
    """The option changes training only: soft evaluation is the LSTM's, as for any G2LSTM."""
    torch.manual_seed(2)
    soft = G2LSTM(4, 6, noise_p=0.0, tau=0.5)
    hard = G2LSTM(4, 6, noise_p=0.0, tau=0.5, train_gates="hard")
    hard.load_state_dict(soft.state_dict())
    x = torch.randn(5, 2, 4)
    assert not torch.allclose(soft.train()(x)[0], hard.train()(x)[0])
    torch.testing.assert_close(soft.eval()(x)[0], hard.eval()(x)[0])
    torch.testing.assert_close(hard.eval()(x)[0], hard.to_lstm().eval()(x)[0])


def test_cell_matches_layer():
    torch.manual_seed(3)
    layer = G2LSTM(4, 6, noise_p=0.0, train_gates="hard", tau=0.7, gates="sharpened").train()
    cell = G2LSTMCell(4, 6, noise_p=0.0, train_gates="hard", tau=0.7, gates="sharpened").train()
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in layer.state_dict().items()})
    x = torch.randn(5, 2, 4)
    h = c = torch.zeros(2, 6)
    outputs = []
    for x_t in x:
        h, c = cell(x_t, (h, c))
        outputs.append(h)
    torch.testing.assert_close(torch.stack(outputs), layer(x)[0])


def test_option_is_shown_checked_and_survives_pickling():
    layer = G2LSTM(3, 4, train_gates="hard")
    assert "train_gates='hard'" in repr(layer)
    assert "train_gates" not in repr(G2LSTM(3, 4))
    assert pickle.loads(pickle.dumps(layer)).gate_spec.train_gates == "hard"
    with pytest.raises(ValueError, match=r"train_gates must be one of \('soft', 'hard'\), got 'binary'"):
        G2LSTM(3, 4, train_gates="binary")
    with pytest.raises(ValueError, match="train_gates='hard' rounds the gates of gates='gumbel' or 'sharpened'"):
        G2LSTM(3, 4, gates="sigmoid", train_gates="hard")


def test_module_pickled_before_the_option_loads_with_soft_training_gates():
    layer = G2LSTM(3, 4)
    state = layer.__getstate__()
    del state["train_gates"]
    restored = G2LSTM.__new__(G2LSTM)
    restored.__setstate__(state)
    assert restored.gate_spec.train_gates == "soft"


def test_configs_refuse_straight_through_lstm_cells():
    with pytest.raises(ConfigValueError, match=r"train_gates='hard': expected 'soft' with model.cell='lstm'"):
        LMModelConfig(cell="lstm", train_gates="hard")
    LMModelConfig(cell="sharpened", train_gates="hard")  # accepted
    with pytest.raises(ConfigValueError, match=r"g2_options.train_gates='hard': expected 'soft' with model.cell='lstm'"):
        MTModelConfig(cell="lstm", g2_options={"train_gates": "hard"})
    with pytest.raises(ConfigValueError, match=r"g2_options.train_gates='maybe': expected one of \['soft', 'hard'\]"):
        MTModelConfig(cell="g2lstm", g2_options={"train_gates": "maybe"})


@pytest.mark.parametrize("grad", [False, True])  # the C++ op's saved gates, the reference's record
def test_a_trace_in_training_records_the_binary_gates(grad):
    torch.manual_seed(4)
    layer = G2LSTM(4, 6, noise_p=0.5, tau=0.5, train_gates="hard").train()
    x = torch.randn(5, 2, 4)
    with g2lstm.trace.record(layer, grad=grad) as recorded:
        layer(x)
    t = recorded.layer("", layer=0, direction=0)
    for gate in (t.i, t.f):
        assert set(gate.unique().tolist()) == {0.0, 1.0}
    assert not set(t.o.unique().tolist()) <= {0.0, 1.0}


def test_with_noise_on_every_element_the_gate_is_a_bernoulli_sample_of_sigmoid_a():
    """p = 1: the rounded gate is (a + L >= 0) with logistic L, i.e. Bernoulli(sigmoid(a)), at any tau."""
    from g2lstm.noise import NoiseKey, gate_noise

    samples, hidden = 4000, 4
    a = torch.tensor([-2.0, 0.3, 1.5, 3.0], dtype=torch.float64).repeat(samples, 4)  # (N, 4H)
    noise = gate_noise(NoiseKey(21, 0, 1.0), 1, samples, 2, hidden, "cpu", torch.float64)[0]
    spec = GateSpec("gumbel", 0.3, (0, 1), "soft", "hard")
    _, _, (i, f, _, _) = reference.cell_step(a, torch.zeros(samples, hidden, dtype=torch.float64), spec, True, noise)
    p = torch.sigmoid(a[0, :hidden])
    bound = 4 * torch.sqrt(p * (1 - p) / samples)
    for gate in (i, f):
        assert set(gate.unique().tolist()) == {0.0, 1.0}
        assert ((gate.mean(0) - p).abs() < bound).all(), (gate.mean(0), p)
