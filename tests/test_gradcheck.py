"""Gradients of the G2 path in training, with the Gumbel noise on, checked by finite differences."""

import pytest
import torch
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence

from g2lstm import G2LSTM, G2LSTMCell

CASES = {
    "2-layer bidirectional, step noise": dict(num_layers=2, bidirectional=True),
    "projection, sequence-mask noise, 3 stochastic gates": dict(
        proj_size=2, noise_mode="sequence_mask", stochastic_gates=("input", "forget", "output")),
    "sharpened, weight drop": dict(gates="sharpened", weight_drop=0.3),
    "packed, sequence noise": dict(bidirectional=True, noise_mode="sequence", packed=True),
}


SLOW_CASES = {"2-layer bidirectional, step noise", "packed, sequence noise"}  # 15 s and 6 s on 2 cores


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_CASES else name
                                  for name in sorted(CASES)])
def test_gradcheck_in_training_with_noise(name):
    options = dict(CASES[name])
    packed = options.pop("packed", False)
    torch.manual_seed(0)
    layer = G2LSTM(3, 3, dtype=torch.float64, noise_p=0.5, tau=0.7, impl="reference", **options).train()
    names = [n for n, _ in layer.named_parameters()]
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    d = 2 if layer.bidirectional else 1
    h_out = layer.proj_size or layer.hidden_size
    h0 = torch.randn(layer.num_layers * d, 2, h_out, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(layer.num_layers * d, 2, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])

    def f(x, h0, c0, *params, seed=1):
        torch.manual_seed(seed)  # the same noise (and weight-drop mask) at every evaluation
        inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
        out, (h, c) = functional_call(layer, dict(zip(names, params)), (inp, (h0, c0)))
        return (out.data if packed else out), h, c

    params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    # The noise is really on: two seeds give two different outputs.
    assert not torch.allclose(f(x, h0, c0, *params)[0], f(x, h0, c0, *params, seed=2)[0])
    assert torch.autograd.gradcheck(f, (x, h0, c0) + params, eps=1e-6, atol=1e-5)


def test_cell_gradcheck_with_noise():
    torch.manual_seed(0)
    cell = G2LSTMCell(3, 4, dtype=torch.float64, noise_p=1.0, tau=0.5).train()
    names = [n for n, _ in cell.named_parameters()]
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    hx = (torch.randn(2, 4, dtype=torch.float64, requires_grad=True),
          torch.randn(2, 4, dtype=torch.float64, requires_grad=True))

    def f(x, h, c, *params):
        torch.manual_seed(1)
        return functional_call(cell, dict(zip(names, params)), (x, (h, c)))

    params = tuple(p.detach().clone().requires_grad_(True) for p in cell.parameters())
    assert torch.autograd.gradcheck(f, (x,) + hx + params, eps=1e-6, atol=1e-5)
