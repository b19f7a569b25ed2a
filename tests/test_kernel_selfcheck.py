"""impl='auto' on CUDA runs the Triton kernels only after their first-use self-check passed.

No GPU here: the check is made to believe it is on CUDA by running its body on the CPU (Triton's
interpreter, root conftest.py) while select_impl asks for 'cuda:0'; the kernel under check is the
real one, or the real entry point replaced by one that raises or gives wrong numbers.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from g2lstm import kernels
from g2lstm.kernels import selfcheck

pytestmark = pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")

CUDA = torch.device("cuda", 0)


@pytest.fixture
def on_fake_cuda(monkeypatch):
    """A fresh verdict cache, and the check's tensors on the CPU whatever device it is asked
    about; returns the list of (device, dtype) the check ran for."""
    monkeypatch.setattr(selfcheck, "_verdicts", {})
    ran = []
    real = selfcheck.run_check

    def run_on_cpu(device, dtype, direction):
        ran.append((str(device), dtype))
        return real(torch.device("cpu"), dtype, direction)

    monkeypatch.setattr(selfcheck, "run_check", run_on_cpu)
    return ran


def _triton_lstm():
    from g2lstm.kernels import triton_lstm

    return triton_lstm


def _select_twice(device=CUDA, dtype=torch.float32):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = [kernels.select_impl("auto", device, dtype) for _ in range(2)]
    return chosen, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_a_passing_check_selects_triton_once_checked(on_fake_cuda):
    chosen, warned = _select_twice()
    assert chosen == ["triton", "triton"]
    assert warned == []
    assert on_fake_cuda == [("cuda:0", torch.float32)]  # checked once, then remembered


def test_a_kernel_that_raises_warns_once_and_falls_back_to_bptt(on_fake_cuda, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("PTX .version 8.7 does not support .target sm_100\nmore detail")

    monkeypatch.setattr(_triton_lstm(), "lstm_direction", broken)
    chosen, warned = _select_twice()
    assert chosen == ["bptt", "bptt"]
    assert len(warned) == 1
    message = str(warned[0].message)
    assert "self-check on cuda:0 in torch.float32" in message
    assert "raised RuntimeError: PTX .version 8.7 does not support .target sm_100" in message
    assert "impl='auto' runs impl='bptt'" in message
    assert on_fake_cuda == [("cuda:0", torch.float32)]


def test_wrong_outputs_fail_the_check(on_fake_cuda, monkeypatch):
    """A kernel that drops the gate noise: right shapes, plausible values, wrong outputs."""
    triton_lstm = _triton_lstm()
    real = triton_lstm.lstm_direction

    def noiseless(x_proj, h0, c0, w_hh, w_hr, spec, training, noise=None, *rest, **kwargs):
        return real(x_proj, h0, c0, w_hh, w_hr, spec, training, None, *rest, **kwargs)

    monkeypatch.setattr(triton_lstm, "lstm_direction", noiseless)
    chosen, warned = _select_twice()
    assert chosen == ["bptt", "bptt"]
    assert len(warned) == 1
    assert "3 noisy gates, lengths, projection: out differs from the reference by" in str(warned[0].message)


class _HalfTheGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 0.5


def test_wrong_gradients_fail_the_check(on_fake_cuda, monkeypatch):
    """Right outputs, a backward that gets one gradient wrong."""
    triton_lstm = _triton_lstm()
    real = triton_lstm.lstm_direction
    monkeypatch.setattr(triton_lstm, "lstm_direction",
                        lambda x_proj, *args, **kwargs: real(_HalfTheGradient.apply(x_proj), *args, **kwargs))
    chosen, warned = _select_twice()
    assert chosen == ["bptt", "bptt"]
    assert len(warned) == 1
    assert "d_x_proj differs from the reference" in str(warned[0].message)


def test_nan_fails_the_check(on_fake_cuda, monkeypatch):
    triton_lstm = _triton_lstm()
    real = triton_lstm.lstm_direction

    def nan_state(*args, **kwargs):
        out, h, c = real(*args, **kwargs)
        return out, h, c * float("nan")

    monkeypatch.setattr(triton_lstm, "lstm_direction", nan_state)
    _, warned = _select_twice()
    assert len(warned) == 1 and "c differs from the reference by nan" in str(warned[0].message)


def test_the_verdict_is_per_device_and_dtype(on_fake_cuda, monkeypatch):
    """A kernel broken in bfloat16 only: float32 keeps Triton, bfloat16 falls back, and another
    device is checked on its own."""
    triton_lstm = _triton_lstm()
    real = triton_lstm.lstm_direction

    def broken_in_bf16(x_proj, *args, **kwargs):
        if x_proj.dtype == torch.bfloat16:
            raise RuntimeError("no bf16 here")
        return real(x_proj, *args, **kwargs)

    monkeypatch.setattr(triton_lstm, "lstm_direction", broken_in_bf16)
    assert _select_twice(CUDA, torch.float32) == (["triton", "triton"], [])
    chosen, warned = _select_twice(CUDA, torch.bfloat16)
    assert chosen == ["bptt", "bptt"] and len(warned) == 1
    assert "cuda:0 in torch.bfloat16" in str(warned[0].message)
    assert _select_twice(torch.device("cuda", 1), torch.float32) == (["triton", "triton"], [])
    assert on_fake_cuda == [("cuda:0", torch.float32), ("cuda:0", torch.bfloat16), ("cuda:1", torch.float32)]


def test_a_named_triton_runs_without_the_check(on_fake_cuda, monkeypatch):
    monkeypatch.setattr(_triton_lstm(), "lstm_direction", lambda *a, **k: 1 / 0)
    assert _select_twice()[0] == ["bptt", "bptt"]
    assert kernels.select_impl("triton", CUDA, torch.float32) == "triton"  # the user asked for it
    assert on_fake_cuda == [("cuda:0", torch.float32)]


def test_inputs_the_kernel_does_not_run_are_not_checked(on_fake_cuda):
    assert kernels.select_impl("auto", CUDA, torch.float64) == "reference"
    assert kernels.select_impl("auto", CUDA, torch.float32, record=True) == "reference"
    assert on_fake_cuda == []


def test_the_check_runs_with_gradients_whatever_the_callers_mode(on_fake_cuda, monkeypatch):
    """select_impl is called from forward, often under no_grad or inference_mode (evaluation).
    ('bptt' stands in for the Triton kernels here and below: the same check, 5x faster.)"""
    monkeypatch.setitem(kernels.IMPLEMENTATIONS, "triton", kernels.IMPLEMENTATIONS["bptt"])
    with torch.inference_mode():
        assert _select_twice() == (["triton", "triton"], [])


def test_the_check_does_not_touch_torch_random_state(on_fake_cuda, monkeypatch):
    monkeypatch.setitem(kernels.IMPLEMENTATIONS, "triton", kernels.IMPLEMENTATIONS["bptt"])
    torch.manual_seed(5)
    before = torch.get_rng_state()
    kernels.select_impl("auto", CUDA, torch.float32)
    assert torch.equal(torch.get_rng_state(), before)


def test_autocast_checks_the_autocast_dtype():
    """Under autocast the kernels get x_proj in the autocast dtype: that is the dtype checked."""
    assert kernels.kernel_dtype("cpu", torch.float32) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernels.kernel_dtype("cpu", torch.float32) == torch.bfloat16
        assert kernels.kernel_dtype("cpu", torch.float64) == torch.float64  # autocast leaves float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("impl", ["triton", "bptt"])
def test_the_real_kernels_and_the_fallback_pass_the_check(impl, dtype):
    assert selfcheck.run_check(torch.device("cpu"), dtype, kernels.IMPLEMENTATIONS[impl]) is None


def test_the_check_draws_the_noise_on():
    """The check is only worth it if the noise is in it: every case trains with a noise key and
    at least one stochastic gate, and the reference's outputs move when the noise is removed."""
    for spec, noise, *_ in selfcheck.CASES.values():
        assert noise is not None and spec.stochastic and spec.gates == "gumbel"
    from g2lstm import reference

    spec, noise, with_lengths, reverse, proj = next(iter(selfcheck.CASES.values()))
    tensors, weights, lengths = selfcheck._inputs(torch.float32, proj, with_lengths, "cpu")
    noisy = selfcheck._run(reference.lstm_direction, tensors, weights, spec, noise, lengths, reverse)
    plain = selfcheck._run(reference.lstm_direction, tensors, weights, spec, None, lengths, reverse)
    assert (noisy["out"] - plain["out"]).abs().max() > 0.1


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 5e-3), (torch.bfloat16, 4e-2)])
def test_the_fallback_runs_under_autocast(dtype, tol):
    """On CUDA under autocast a failed check sends the layer to 'bptt' (CPU autocast stands in):
    close to the reference on the inputs rounded to the autocast dtype."""
    from g2lstm import G2LSTM

    torch.manual_seed(0)
    fallback = G2LSTM(6, 8, impl="bptt", proj_size=4, noise_p=0.5)
    slow = G2LSTM(6, 8, impl="reference", proj_size=4, noise_p=0.5)
    slow.load_state_dict(fallback.state_dict())
    x = torch.randn(3, 2, 6)

    def step(module, inputs):
        torch.manual_seed(5)  # the same gate noise for both
        out, (h, c) = module(inputs)
        (out.float().square().sum() + h.float().sum() + c.float().sin().sum()).backward()
        return [out.float()] + [p.grad for p in module.parameters()]

    with torch.autocast("cpu", dtype=dtype):
        got = step(fallback, x)
    for value, want in zip(got, step(slow, x.to(dtype).float())):
        torch.testing.assert_close(value, want, atol=tol * max(1.0, want.abs().max().item()), rtol=tol)
