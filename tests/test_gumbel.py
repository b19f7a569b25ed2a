"""The Gumbel-sigmoid estimator and the counter-based gate noise: their law, range and seeding."""

import math

import pytest
import torch

from g2lstm import G2LSTM, gumbel_sigmoid
from g2lstm.noise import NoiseKey, counter_uniform, gate_noise, logistic, stream_key

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _sigma_bound(p, n, sigmas=5.0):
    return sigmas * math.sqrt(p * (1 - p) / n) + 1e-3


@pytest.mark.parametrize("logit", [-2.0, -0.5, 0.0, 1.0, 3.0])
def test_zero_temperature_with_p_one_is_bernoulli_of_sigmoid(logit):
    n = 200_000
    gen = torch.Generator().manual_seed(0)
    sample = gumbel_sigmoid(torch.full((n,), logit), tau=1e-4, p=1.0, generator=gen)
    # Nearly every sample is at 0 or 1 ...
    assert ((sample < 1e-3) | (sample > 1 - 1e-3)).float().mean() > 0.999
    # ... and the share of ones is sigmoid(a).
    prob = torch.sigmoid(torch.tensor(logit)).item()
    assert abs((sample > 0.5).float().mean().item() - prob) < _sigma_bound(prob, n)


@pytest.mark.parametrize("p", [0.0, 0.2, 0.7, 1.0])
def test_fraction_of_perturbed_entries_is_p(p):
    n = 100_000
    logits = torch.randn(n)
    gen = torch.Generator().manual_seed(1)
    sample = gumbel_sigmoid(logits, tau=0.8, p=p, generator=gen)
    perturbed = (sample != torch.sigmoid(logits / 0.8)).float().mean().item()
    assert abs(perturbed - p) < _sigma_bound(p, n)


def test_logistic_noise_has_the_logistic_law():
    u = counter_uniform(12345, torch.arange(400_000))
    assert 0 < u.min() and u.max() < 1
    # The ends of the uniform grid (23-bit integers 0 and 2**23 - 1) give finite noise.
    grid_ends = (torch.tensor([0.0, 2.0**23 - 1]) + 0.5) / 2**23
    assert torch.isfinite(logistic(grid_ends)).all()
    assert abs(u.mean().item() - 0.5) < 0.003
    noise = logistic(u)
    # The logistic distribution has mean 0, variance pi^2 / 3, CDF sigmoid.
    assert abs(noise.mean().item()) < 0.02
    assert abs(noise.var().item() - math.pi**2 / 3) < 0.05
    for x in (-2.0, 0.5, 3.0):
        assert abs((noise <= x).float().mean().item() - torch.sigmoid(torch.tensor(x)).item()) < 0.005


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_layer_noise_perturbs_a_share_p_of_gate_elements(p):
    noise = gate_noise(NoiseKey(seed=7, stream=3, p=p), steps=50, batch=40, num_gates=2, hidden=50)
    n = noise.numel()
    assert abs((noise != 0).float().mean().item() - p) < _sigma_bound(p, n)


def test_noise_modes_share_what_they_promise_across_steps():
    seq = gate_noise(NoiseKey(1, 0, 0.5, "sequence"), steps=6, batch=3, num_gates=2, hidden=4)
    assert seq.shape == (1, 3, 2, 4)  # one draw, broadcast over time
    mask = gate_noise(NoiseKey(1, 0, 0.5, "sequence_mask"), steps=6, batch=3, num_gates=2, hidden=40)
    perturbed = mask != 0
    assert torch.equal(perturbed, perturbed[:1].expand_as(perturbed))  # B fixed over time
    assert not torch.equal(mask[0][perturbed[0]], mask[1][perturbed[1]])  # U fresh every step
    step = gate_noise(NoiseKey(1, 0, 0.5, "step"), steps=6, batch=3, num_gates=2, hidden=40)
    assert not torch.equal(step[0] != 0, step[1] != 0)


def test_noise_index_is_t_n_g_h_in_row_major_order():
    # the layout every kernel reproduces: element (t, n, g, j) has index ((t N + n) G + g) H + j
    key = NoiseKey(9, 2, 1.0)
    want = logistic(counter_uniform(stream_key(9, 2, 0), torch.arange(3 * 4 * 2 * 5).view(3, 4, 2, 5)))
    assert torch.equal(gate_noise(key, 3, 4, 2, 5), want)


@pytest.mark.parametrize("mode", ["step", "sequence", "sequence_mask"])
def test_a_shard_draws_its_rows_of_the_global_batch_noise(mode):
    whole = gate_noise(NoiseKey(4, 1, 0.5, mode), 5, 6, 2, 8)
    shard = gate_noise(NoiseKey(4, 1, 0.5, mode, row_offset=2, global_batch=6), 5, 3, 2, 8)
    assert torch.equal(shard, whole[:, 2:5])
    assert not torch.equal(gate_noise(NoiseKey(4, 1, 0.5, mode), 5, 3, 2, 8), whole[:, 2:5])  # keyed locally


def test_a_shard_outside_its_global_batch_is_refused():
    with pytest.raises(ValueError, match="does not fit in global_batch=4"):
        gate_noise(NoiseKey(4, 1, 0.5, row_offset=2, global_batch=4), 5, 3, 2, 8)
    with pytest.raises(ValueError, match="needs a global_batch"):
        NoiseKey(4, 1, 0.5, row_offset=2)


def test_streams_and_seeds_give_different_noise():
    base = gate_noise(NoiseKey(1, 0, 1.0), 3, 2, 2, 8)
    assert torch.equal(base, gate_noise(NoiseKey(1, 0, 1.0), 3, 2, 2, 8))
    assert not torch.equal(base, gate_noise(NoiseKey(2, 0, 1.0), 3, 2, 2, 8))
    assert not torch.equal(base, gate_noise(NoiseKey(1, 1, 1.0), 3, 2, 2, 8))
    assert not torch.equal(base, gate_noise(NoiseKey(1 << 40, 0, 1.0), 3, 2, 2, 8))  # high seed bits count


@pytest.mark.parametrize("dtype", DTYPES)
def test_gumbel_sigmoid_is_finite_in_every_dtype(dtype):
    gen = torch.Generator().manual_seed(0)
    logits = torch.cat([torch.randn(100_000) * 10, torch.tensor([-1e4, 1e4, 0.0])]).to(dtype)
    for tau in (1e-3, 1.0):
        out = gumbel_sigmoid(logits, tau=tau, p=1.0, generator=gen)
        assert out.dtype == dtype
        assert torch.isfinite(out).all()
        assert (out >= 0).all() and (out <= 1).all()
    # The extreme uniforms the estimator can draw give finite noise.
    extremes = torch.tensor([0.5 / 2**23, 1 - 0.5 / 2**23])
    assert torch.isfinite(logistic(extremes)).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_noise_is_finite_in_every_dtype(dtype):
    noise = gate_noise(NoiseKey(3, 0, 1.0), 20, 20, 2, 64, dtype=dtype)
    assert noise.dtype == dtype and torch.isfinite(noise).all()


def test_gumbel_sigmoid_seeding_and_hard_straight_through():
    logits = torch.randn(1000, requires_grad=True)
    a = gumbel_sigmoid(logits, generator=torch.Generator().manual_seed(5))
    b = gumbel_sigmoid(logits, generator=torch.Generator().manual_seed(5))
    c = gumbel_sigmoid(logits, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    hard = gumbel_sigmoid(logits, tau=0.5, hard=True, generator=torch.Generator().manual_seed(5))
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    hard.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # gradient of the soft sample


def test_gumbel_sigmoid_rejects_bad_arguments():
    with pytest.raises(ValueError, match="tau must be a positive temperature, got 0"):
        gumbel_sigmoid(torch.zeros(3), tau=0)
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\], got 1.5"):
        gumbel_sigmoid(torch.zeros(3), p=1.5)
    with pytest.raises(TypeError, match="floating-point logits, got dtype torch.int64"):
        gumbel_sigmoid(torch.zeros(3, dtype=torch.long))


def test_layer_same_seed_same_output_other_seed_other_output():
    layer = G2LSTM(4, 6, 2, noise_p=0.5, tau=0.5, impl="reference").train()
    x = torch.randn(5, 3, 4)
    torch.manual_seed(10)
    first = layer(x)[0]
    torch.manual_seed(10)
    again = layer(x)[0]
    torch.manual_seed(11)
    other = layer(x)[0]
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    # Without noise (evaluation) the seed does not matter.
    layer.eval()
    torch.manual_seed(10)
    e1 = layer(x)[0]
    torch.manual_seed(11)
    assert torch.equal(e1, layer(x)[0])


def test_layer_low_temperature_gates_are_nearly_binary():
    """With p = 1 and a small tau, recorded G2 gates sit at 0 or 1 in training."""
    from g2lstm.reference import GateSpec, lstm_direction

    torch.manual_seed(0)
    x_proj = torch.randn(30, 16, 4 * 8)
    h0, c0 = torch.zeros(16, 8), torch.zeros(16, 8)
    w_hh = torch.randn(4 * 8, 8) * 0.3
    spec = GateSpec(gates="gumbel", tau=0.01)
    *_, steps = lstm_direction(x_proj, h0, c0, w_hh, None, spec, True, NoiseKey(1, 0, 1.0), record=True)
    input_forget = torch.stack([steps.i, steps.f])
    assert ((input_forget < 0.01) | (input_forget > 0.99)).float().mean() > 0.97
    assert ((steps.o > 0.1) & (steps.o < 0.9)).float().mean() > 0.3  # the output gate stays soft
    *_, hard = lstm_direction(x_proj, h0, c0, w_hh, None, GateSpec(eval_gates="hard"), False, record=True)
    assert set(torch.stack([hard.i, hard.f]).unique().tolist()) == {0.0, 1.0}
