"""The C++ kernel as a torch.library custom op: schema, fake kernel and autograd checked by
torch.library.opcheck; torch.compile (eager, aot_eager, inductor) trains through it; vmap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from g2lstm import G2LSTM
from g2lstm.kernels import cpu


@pytest.fixture(scope="module", autouse=True)
def _extension():
    assert cpu.load_extension(), cpu.build_error()


def test_opcheck():
    """Schema, fake kernel (shapes, dtypes), autograd registration and the gradients."""
    gen = torch.Generator().manual_seed(0)
    steps, batch, hidden, h_out = 3, 2, 4, 3

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    args = (rand(steps, batch, 4 * hidden), rand(batch, h_out), rand(batch, hidden), rand(4 * hidden, h_out),
            rand(h_out, hidden), torch.tensor([3, 1]), True, "gumbel", 0.7, [0, 1], "soft", "hard", True,
            12345, 1, 0.5, "step", 1, 4, True)  # straight-through noisy gates; rows [1, 3) of a batch of 4
    # AOT dispatch is left to the torch.compile tests below (opcheck's costs 7 s more here)
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(cpu.cpu_direction, args, test_utils=checks)
    out, h, c, gates, cs, hs = cpu.cpu_direction(*args)
    backward_args = (torch.ones_like(out), torch.ones_like(h), torch.ones_like(c), gates.detach(), cs.detach(),
                     hs.detach(), args[3].detach(), args[4].detach(), args[5], True, [5, 5, 0], 0.7, True)
    torch.library.opcheck(cpu.cpu_direction_backward, backward_args, test_utils=checks)
    torch.library.opcheck(cpu.cpu_project, (rand(steps, batch, 5), rand(4 * hidden, 5), rand(4 * hidden)),
                          test_utils=checks)
    torch.library.opcheck(cpu.cpu_mm, (rand(6, 5).t(), rand(6, 4)), test_utils=("test_schema", "test_faketensor"))


def _train_steps(model, x, steps=2):
    grads = []
    for step in range(steps):
        model.zero_grad()
        torch.manual_seed(step)  # the same gate noise in eager and compiled runs
        out, (h, c) = model(x)
        (out.square().mean() + h.sum() + c.sum()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    return grads


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["eager", "aot_eager", "inductor"])
def test_torch_compile_trains_the_default_model(backend):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = G2LSTM(4, 8, 2).train()  # the defaults: gumbel gates, noise on, impl='auto' (C++)
    eager = G2LSTM(4, 8, 2).train()
    eager.load_state_dict(model.state_dict())
    x = torch.randn(5, 3, 4)
    compiled = torch.compile(model, backend=backend)
    for got, want in zip(_train_steps(compiled, x), _train_steps(eager, x)):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


@pytest.mark.parametrize("impl", ["auto", "bptt", "reference"])
def test_vmap_over_the_backward(impl):
    """autograd.grad(is_grads_batched=True) runs the backward under vmap."""
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5, 2)
    g2 = G2LSTM.from_lstm(lstm, noise_p=0.0, impl=impl)
    grads = []
    for module in (lstm, g2):
        x = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(3)).requires_grad_()
        out, _ = module(x)
        v = torch.randn(6, *out.shape, generator=torch.Generator().manual_seed(4))
        grads.append(torch.autograd.grad(out, x, v, is_grads_batched=True)[0])
    torch.testing.assert_close(grads[1], grads[0])


def test_torch_func_transforms_over_the_forward():
    """vmap and grad of torch.func over the module: 'auto' runs the reference inside them."""
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5)
    g2 = G2LSTM.from_lstm(lstm, noise_p=0.0)
    xs = torch.randn(3, 4, 2, 3)
    got = torch.func.vmap(lambda x: g2(x)[0])(xs)
    torch.testing.assert_close(got, torch.stack([lstm(x)[0] for x in xs]))
    x = xs[0].clone().requires_grad_()
    lstm(x)[0].sum().backward()
    torch.testing.assert_close(torch.func.grad(lambda x: g2(x)[0].sum())(xs[0]), x.grad)
    forced = G2LSTM.from_lstm(lstm, noise_p=0.0, impl="cpu")
    with pytest.raises(ValueError, match="impl='cpu' cannot run inside a torch.func transform"):
        torch.func.vmap(lambda x: forced(x)[0])(xs)
