"""The fused implementations of g2lstm.kernels against the reference loop.

Every implementation must give the reference's outputs, final states and every gradient, for
every gate option, noise mode, lengths, direction and projection; its in-kernel noise must be the
noise of g2lstm.noise. Triton kernels run in Triton's interpreter on the CPU (root conftest.py),
so shapes are tiny: the interpreter's cost grows with the number of launches.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from g2lstm import G2LSTM, kernels, reference
from g2lstm.kernels import cpu
from g2lstm.kernels.common import gate_plan
from g2lstm.noise import NoiseKey, counter_uniform, gate_noise, stream_key
from g2lstm.reference import GateSpec

FUSED = ["cpu", "bptt"] + (["triton"] if kernels.HAS_TRITON else [])
STEPS, BATCH, HIDDEN, PROJ = 4, 3, 8, 5

# name -> (spec, training, noise, with lengths, reverse, with projection)
CASES = {
    "gumbel-step": (GateSpec(), True, NoiseKey(7, 1, 0.2, "step"), False, False, False),
    "gumbel-3gates-tau-sequence-rev-proj": (
        GateSpec("gumbel", 0.5, (0, 1, 3)), True, NoiseKey(2**40 + 3, 2, 1.0, "sequence"), False, True, True),
    "gumbel-f-o-sequence_mask-lengths-rev": (
        GateSpec("gumbel", 0.7, (1, 3)), True, NoiseKey(11, 0, 0.5, "sequence_mask"), True, True, False),
    "gumbel-noiseless-lengths-proj": (GateSpec("gumbel", 0.6), True, None, True, False, True),
    "gumbel-eval-soft": (GateSpec(), False, None, True, True, True),
    "eval-hard": (GateSpec("gumbel", 1.0, (0, 1, 3), "hard"), False, None, True, False, False),
    "hard-spec-in-training": (GateSpec("gumbel", 2.0, (0,), "hard"), True, NoiseKey(5, 3, 0.3), False, False, True),
    "sharpened": (GateSpec("sharpened", 0.7), True, None, True, False, False),
    "sharpened-eval-output-gate": (GateSpec("sharpened", 0.4, (3,)), False, None, False, True, False),
    "sigmoid": (GateSpec("sigmoid"), True, None, False, False, True),
    # straight-through (train_gates='hard'): binary gates in the step, the soft gates' slopes
    "straight-through-step-lengths-proj": (
        GateSpec("gumbel", 0.5, (0, 1), "hard", "hard"), True, NoiseKey(13, 1, 0.5, "step"), True, False, True),
    "straight-through-3gates-noiseless-rev": (GateSpec("gumbel", 0.7, (0, 1, 3), "soft", "hard"), True, None,
                                              False, True, False),
    "straight-through-f-o-sequence": (
        GateSpec("gumbel", 0.8, (1, 3), "soft", "hard"), True, NoiseKey(17, 0, 1.0, "sequence"), False, False, True),
    "straight-through-sharpened-forget": (GateSpec("sharpened", 0.6, (1,), "soft", "hard"), True, None,
                                          True, True, False),
    "straight-through-spec-in-eval": (GateSpec("gumbel", 0.5, (0, 1), "soft", "hard"), False, None,
                                      False, False, False),
}


def _inputs(dtype, proj: bool, lengths: bool, seed=0, batch=BATCH, hidden=HIDDEN):
    gen = torch.Generator().manual_seed(seed)
    h_out = PROJ if proj else hidden

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    tensors = dict(
        x_proj=rand(STEPS, batch, 4 * hidden), h0=rand(batch, h_out), c0=rand(batch, hidden),
        w_hh=rand(4 * hidden, h_out, scale=0.5), w_hr=rand(h_out, hidden, scale=0.5) if proj else None,
    )
    weights = [rand(STEPS, batch, h_out), rand(batch, h_out), rand(batch, hidden)]
    lengths_tensor = torch.tensor([STEPS, 1, 3] * batch)[:batch] if lengths else None
    return tensors, weights, lengths_tensor


def _run(fn, tensors, weights, spec, training, noise, lengths, reverse):
    """Outputs, states and the gradients of a loss touching all three outputs."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in tensors.items() if v is not None}
    out, h, c = fn(leaves["x_proj"], leaves["h0"], leaves["c0"], leaves["w_hh"], leaves.get("w_hr"),
                   spec, training, noise, lengths, reverse)
    loss = sum((y * w.to(y.dtype)).sum() for y, w in zip((out, h, c), weights))
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return dict(out=out, h=h, c=c, **{f"d_{k}": g for k, g in zip(leaves, grads)})


def _assert_match(got: dict, want: dict, rel: float):
    assert got.keys() == want.keys()
    for name in want:
        scale = max(1.0, want[name].abs().max().item())
        torch.testing.assert_close(got[name].to(want[name].dtype), want[name], atol=rel * scale, rtol=rel,
                                   msg=lambda m, name=name: f"{name}: {m}")


def _impl_dtype(impl):
    # cpu and bptt are exact to float64 rounding; triton computes in float32
    return torch.float32 if impl == "triton" else torch.float64


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("impl", FUSED)
def test_direction_matches_reference(impl, case):
    spec, training, noise, with_lengths, reverse, proj = CASES[case]
    dtype = _impl_dtype(impl)
    tensors, weights, lengths = _inputs(dtype, proj, with_lengths)
    args = (spec, training, noise, lengths, reverse)
    want = _run(reference.lstm_direction, tensors, weights, *args)
    got = _run(kernels.IMPLEMENTATIONS[impl], tensors, weights, *args)
    for name in ("out", "h", "c"):
        assert got[name].dtype == want[name].dtype, name
    _assert_match(got, want, _tolerance(impl, noise))


def _tolerance(impl, noise) -> float:
    """The relative tolerance of a kernel against the reference, and why it is not 0.

    The noise's bits are the reference's in every kernel: the uniforms U and the mask B (tested bit for
    bit below). What differs is rounding: 'bptt' draws the noise through the reference's own
    gate_noise and differs only in the order of float64 operations (its hand-written backward, fused
    additions): 1e-16 measured, 1e-10 allowed. 'cpu' computes log U - log(1 - U) in float32 with its
    own vectorised log, a float32 ulp or two from torch's, which the recurrence carries into the
    float64 results (1.1e-7 measured): 1e-6 with the noise on, float64 rounding without it.
    'triton' computes in float32: 2e-5."""
    if impl == "triton":
        return 2e-5
    return 1e-6 if impl == "cpu" and noise is not None else 1e-10


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", ["gumbel-step", "gumbel-f-o-sequence_mask-lengths-rev",
                                  "gumbel-noiseless-lengths-proj"])
def test_cpu_step_shared_by_threads_matches_reference(case, threads):
    """A step big enough to share (N 4H >= 16k values) is cut into one chunk of hidden units per
    thread, each chunk doing its GEMM columns and pointwise part; the backward sums the chunks'
    shares of dh. Chunk edges fall inside gate blocks (H = 520, 2 or 3 threads)."""
    spec, training, noise, with_lengths, reverse, proj = CASES[case]
    tensors, weights, lengths = _inputs(torch.float64, proj, with_lengths, batch=8, hidden=520)
    args = (spec, training, noise, lengths, reverse)
    want = _run(reference.lstm_direction, tensors, weights, *args)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = _run(kernels.IMPLEMENTATIONS["cpu"], tensors, weights, *args)
    finally:
        torch.set_num_threads(before)
    _assert_match(got, want, _tolerance("cpu", noise))


@pytest.mark.parametrize("batch,hidden,proj,threads", [
    (7, 13, False, 1),    # rows 6 + 1, 4H = 52 columns: 3 panels of 16 + 4
    (1, 8, True, 1),      # one row, a projection (K = 5)
    (8, 520, False, 2),   # 2 chunks: edges inside gate blocks, each chunk's own panels
    (9, 520, True, 3),    # 3 chunks with a projection
    (13, 650, False, 1),  # the backward's K = 4H = 2600 cut into 2 blocks
])
def test_cpu_float32_matches_float64_reference(batch, hidden, proj, threads):
    """float32 runs the per-step products through the packed-weight micro-kernel (float64 through
    BLAS, as the other tests do): same results as the float64 reference of the same inputs, to
    float32 rounding, at row, column and K tails, chunk edges and projections."""
    spec, training, noise = CASES["gumbel-step"][:3]
    tensors, weights, _ = _inputs(torch.float32, proj, lengths=False, batch=batch, hidden=hidden)
    as64 = {k: None if v is None else v.double() for k, v in tensors.items()}
    want = _run(reference.lstm_direction, as64, weights, spec, training, noise, None, False)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = _run(kernels.IMPLEMENTATIONS["cpu"], tensors, weights, spec, training, noise, None, False)
    finally:
        torch.set_num_threads(before)
    assert got["out"].dtype == torch.float32
    _assert_match(got, want, 1e-4)


@pytest.mark.parametrize("used", ["out", "h", "c"])
def test_cpu_gradients_of_a_loss_on_one_output(used):
    """The C++ op's autograd gets no gradient (None, not zeros) for the outputs a loss leaves out,
    and for its saved state; the gradients must still be the reference's."""
    spec, training, noise = CASES["gumbel-step"][:3]
    tensors, weights, _ = _inputs(torch.float64, proj=False, lengths=False)
    weight = dict(zip(("out", "h", "c"), weights))[used]
    results = []
    for fn in (reference.lstm_direction, kernels.IMPLEMENTATIONS["cpu"]):
        leaves = {k: v.clone().requires_grad_(True) for k, v in tensors.items() if v is not None}
        out, h, c = fn(leaves["x_proj"], leaves["h0"], leaves["c0"], leaves["w_hh"], None, spec,
                       training, noise)
        loss = (dict(out=out, h=h, c=c)[used] * weight).sum()
        results.append(dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())))))
    want, got = results
    _assert_match(got, want, _tolerance("cpu", noise))


@pytest.mark.parametrize("impl", FUSED)
def test_forward_without_grad_matches_reference(impl):
    # without gradients the kernels keep one step of gate values instead of all of them
    spec, training, noise, _, reverse, _ = CASES["gumbel-f-o-sequence_mask-lengths-rev"]
    tensors, _, lengths = _inputs(_impl_dtype(impl), True, True)
    args = (tensors["x_proj"], tensors["h0"], tensors["c0"], tensors["w_hh"], tensors["w_hr"],
            spec, training, noise, lengths, reverse)
    with torch.no_grad():
        got = kernels.IMPLEMENTATIONS[impl](*args)
        want = reference.lstm_direction(*args)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("impl", FUSED)
def test_padded_outputs_are_zero_and_states_stop_at_length(impl):
    spec, training, noise = GateSpec(), True, NoiseKey(3, 0, 0.2)
    tensors, weights, lengths = _inputs(_impl_dtype(impl), False, True)
    got = _run(kernels.IMPLEMENTATIONS[impl], tensors, weights, spec, training, noise, lengths, False)
    assert torch.all(got["out"][1:, 1] == 0) and torch.all(got["out"][3:, 2] == 0)
    torch.testing.assert_close(got["h"][1], got["out"][0, 1])  # row 1 has length 1
    torch.testing.assert_close(got["h"][2], got["out"][2, 2])  # row 2 has length 3


def _zero_step_gates(impl, key, spec, steps, batch, hidden):
    """Gate values of a step whose pre-activations are all zero: sigmoid(noise / tau)."""
    x = torch.zeros(steps, batch, 4 * hidden)
    h0, c0 = torch.zeros(batch, hidden), torch.zeros(batch, hidden)
    plan = gate_plan(spec, True, True)
    if impl == "cpu":
        assert cpu.load_extension()
        keys = [stream_key(key.seed, key.stream, 0), stream_key(key.seed, key.stream, 1)]
        gates = torch.ops.g2lstm_cpu.forward(
            x, h0, c0, torch.zeros(4 * hidden, hidden), None, None, False, list(plan.kinds),
            list(plan.slots), plan.tau, keys, key.p, ["step", "sequence", "sequence_mask"].index(key.mode),
            len(spec.stochastic), *key.rows(batch), True)[3]
    else:
        from g2lstm.kernels.triton_lstm import TritonPointwise

        pointwise = TritonPointwise(plan, key, len(spec.stochastic), batch)
        gates = x.clone()
        for t in range(steps):
            pointwise.forward_step(gates[t], c0, torch.empty_like(c0), torch.empty_like(c0), t)
    return gates


def _assert_gates_show_the_noise(gates, noise, hidden: int, tau: float) -> None:
    """Gates of zero pre-activations, sigmoid(noise / tau) in the first two blocks, against the
    reference's noise (T, N, 2, H): which elements are perturbed (the mask B) and the sign of each
    perturbation (U above or below 1/2) bit for bit; the values to 4 float32 ulp, since the kernels
    take their own log of U (C++: a vectorised polynomial, Triton: tl.log), a float32 ulp or two from
    torch's (2 ulp measured)."""
    for slot in (0, 1):
        value = gates[:, :, slot * hidden:(slot + 1) * hidden]
        assert torch.equal(value != 0.5, noise[:, :, slot] != 0)
        assert torch.equal(value > 0.5, noise[:, :, slot] > 0)
        want = torch.sigmoid(noise[:, :, slot] / tau)
        ulp = torch.nextafter(want, torch.tensor(float("inf"))) - want
        assert torch.all((value - want).abs() <= 4 * ulp), (value - want).abs().max()


@pytest.mark.parametrize("mode", ["step", "sequence", "sequence_mask"])
@pytest.mark.parametrize("impl", [i for i in FUSED if i != "bptt"])
def test_in_kernel_noise_is_the_reference_noise(impl, mode):
    steps, batch, hidden, p, tau = 3, 4, 64, 0.3, 1.0
    spec = GateSpec("gumbel", tau, (0, 1))
    key = NoiseKey(2**33 + 12345, 5, p, mode)
    gates = _zero_step_gates(impl, key, spec, steps, batch, hidden)
    noise = gate_noise(key, steps, batch, 2, hidden).expand(steps, -1, -1, -1)
    _assert_gates_show_the_noise(gates, noise, hidden, tau)
    # the law: a share p of the elements perturbed, and the pattern of each mode over time
    perturbed = gates[:, :, : 2 * hidden] != 0.5
    share = perturbed.float().mean().item()
    assert abs(share - p) < 0.06, share
    if mode == "sequence":
        assert torch.equal(gates[0], gates[1]) and torch.equal(gates[1], gates[2])
    elif mode == "sequence_mask":
        assert torch.equal(perturbed[0], perturbed[2]) and not torch.equal(gates[0], gates[2])
    else:
        assert not torch.equal(perturbed[0], perturbed[1])


if kernels.HAS_TRITON:
    import triton
    import triton.language as tl

    from g2lstm.kernels.triton_lstm import _uniform

    @triton.jit
    def uniforms(out_ptr, key, start, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        tl.store(out_ptr + offs, _uniform(key.to(tl.uint32), (start + offs).to(tl.uint32)), mask=offs < n)


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
def test_triton_uniforms_are_bit_identical_to_the_hash():
    for key in (stream_key(1, 0, 0), stream_key(2**40 + 7, 3, 1)):
        start = 2**31 - 20  # crosses the int32 boundary
        out = torch.empty(64)
        uniforms[(1,)](out, key, start, 64, BLOCK=64)
        assert torch.equal(out, counter_uniform(key, torch.arange(start, start + 64)))


@pytest.mark.parametrize("impl", [i for i in FUSED if i != "bptt"])
def test_in_kernel_noise_of_a_shard_is_the_global_batch_noise(impl):
    # rows [2, 4) of a batch of 5: the noise those rows get in the whole batch
    key = NoiseKey(2**33 + 7, 1, 0.5, "sequence_mask", row_offset=2, global_batch=5)
    gates = _zero_step_gates(impl, key, GateSpec(), 3, 2, 16)
    whole_key = NoiseKey(2**33 + 7, 1, 0.5, "sequence_mask")
    # bit for bit the gates the kernel computes for those rows in the whole batch
    assert torch.equal(gates, _zero_step_gates(impl, whole_key, GateSpec(), 3, 5, 16)[:, 2:4])
    _assert_gates_show_the_noise(gates, gate_noise(whole_key, 3, 5, 2, 16)[:, 2:4], 16, 1.0)


@pytest.mark.parametrize("impl", ["reference"] + FUSED)
def test_a_shard_computes_the_global_batch_rows(impl):
    # batch of 2B with offset 0 == its rows [B, 2B) run alone with row_offset=B, global_batch=2B
    spec, half = GateSpec("gumbel", 0.8, (0, 1, 3)), 2
    gen = torch.Generator().manual_seed(3)
    dtype = _impl_dtype(impl)
    x_proj = torch.randn(STEPS, 2 * half, 4 * HIDDEN, generator=gen).to(dtype)
    h0, c0 = torch.randn(2 * half, HIDDEN, generator=gen).to(dtype), torch.randn(2 * half, HIDDEN, generator=gen).to(dtype)
    w_hh = (torch.randn(4 * HIDDEN, HIDDEN, generator=gen) * 0.5).to(dtype)
    run = kernels.IMPLEMENTATIONS[impl]
    whole = run(x_proj, h0, c0, w_hh, None, spec, True, NoiseKey(5, 2, 0.2), None, True)
    shard_key = NoiseKey(5, 2, 0.2, row_offset=half, global_batch=2 * half)
    rows = slice(half, 2 * half)
    part = run(x_proj[:, rows], h0[rows], c0[rows], w_hh, None, spec, True, shard_key, None, True)
    torch.testing.assert_close(part[0], whole[0][:, rows], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(part[2], whole[2][rows], atol=1e-6, rtol=1e-6)
    # negative control: keyed by the local rows, the shard draws other noise
    local = run(x_proj[:, rows], h0[rows], c0[rows], w_hh, None, spec, True, NoiseKey(5, 2, 0.2), None, True)
    assert (local[0] - whole[0][:, rows]).abs().max() > 1e-3


@pytest.mark.parametrize("impl", [i for i in FUSED if i != "bptt"])
def test_same_seed_is_bit_identical(impl):
    tensors, weights, lengths = _inputs(torch.float32, True, True)
    args = (GateSpec(), True, NoiseKey(99, 0, 0.2), lengths, True)
    first = _run(kernels.IMPLEMENTATIONS[impl], tensors, weights, *args)
    second = _run(kernels.IMPLEMENTATIONS[impl], tensors, weights, *args)
    for name in first:
        assert torch.equal(first[name], second[name]), name


MODULE_CONFIGS = {
    "bidirectional-proj-2layers": dict(num_layers=2, bidirectional=True, proj_size=3),
    "batch_first-weight_drop-3gates": dict(batch_first=True, weight_drop=0.3,
                                           stochastic_gates=("input", "forget", "output"), tau=0.5),
    "sequence_mask-dropout": dict(num_layers=2, dropout=0.2, noise_mode="sequence_mask", noise_p=0.5),
    "no-bias-sequence-p1-hx": dict(bias=False, noise_mode="sequence", noise_p=1.0, tau=0.3),
}


def _module_step(module, x, seed, with_hx=False):
    module.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    hx = None
    if with_hx:
        layers = module.num_layers * (2 if module.bidirectional else 1)
        gen = torch.Generator().manual_seed(seed)
        hx = tuple(torch.randn(layers, x.shape[1], size, generator=gen).requires_grad_(True)
                   for size in (module.proj_size or module.hidden_size, module.hidden_size))
    torch.manual_seed(seed)  # the same noise seed, dropout and DropConnect masks for both
    out, (h, c) = module(x, hx)
    data = out.data if hasattr(out, "batch_sizes") else out
    (data.square().sum() + h.sum() + c.sin().sum()).backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    if with_hx:
        grads.update(d_h0=hx[0].grad, d_c0=hx[1].grad)
    return dict(out=data, h=h, c=c, d_x=x.grad, **grads)


@pytest.mark.parametrize("config", sorted(MODULE_CONFIGS))
@pytest.mark.parametrize("impl", ["auto"] + (["triton"] if kernels.HAS_TRITON else []))
def test_g2lstm_module_matches_reference(impl, config):
    options = MODULE_CONFIGS[config]
    torch.manual_seed(0)
    fast = G2LSTM(4, HIDDEN, impl=impl, **options)
    slow = G2LSTM(4, HIDDEN, impl="reference", **options)
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(3, 2, 4)
    with_hx = config.endswith("-hx")
    _assert_match(_module_step(fast, x, 1, with_hx), _module_step(slow, x, 1, with_hx), 2e-5)


@pytest.mark.parametrize("config", sorted(MODULE_CONFIGS))
def test_g2lstm_module_through_the_cached_input_projection_matches_reference(monkeypatch, config):
    """The C++ path takes its input projections through g2lstm::cpu_project from 32 MiB up;
    with the threshold at 0 every projection of these small modules goes through it."""
    monkeypatch.setattr(cpu, "_FRESH_MAP_BYTES", 0)
    calls = []
    monkeypatch.setattr(cpu, "cpu_project", lambda *a, _op=cpu.cpu_project: calls.append(1) or _op(*a))
    options = MODULE_CONFIGS[config]
    torch.manual_seed(0)
    fast = G2LSTM(4, HIDDEN, impl="cpu", **options)
    slow = G2LSTM(4, HIDDEN, impl="reference", **options)
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(3, 2, 4)
    with_hx = config.endswith("-hx")
    got = _module_step(fast, x, 1, with_hx)
    assert len(calls) == fast.num_layers * (2 if fast.bidirectional else 1)
    _assert_match(got, _module_step(slow, x, 1, with_hx), 2e-5)


def test_g2lstm_packed_sequence_auto_matches_reference():
    torch.manual_seed(0)
    fast = G2LSTM(4, HIDDEN, bidirectional=True, noise_p=0.5)
    slow = G2LSTM(4, HIDDEN, bidirectional=True, noise_p=0.5, impl="reference")
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(4, 3, 4)
    packed = pack_padded_sequence(x, torch.tensor([2, 4, 1]), enforce_sorted=False)

    def step(module):
        module.zero_grad()
        torch.manual_seed(3)
        out, (h, c) = module(packed)
        (out.data.square().sum() + h.sum() + c.sum()).backward()
        return dict(out=out.data, h=h, c=c, **{n: p.grad.clone() for n, p in module.named_parameters()})

    _assert_match(step(fast), step(slow), 2e-5)


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 5e-3), (torch.bfloat16, 4e-2)])
def test_triton_under_autocast_is_close_to_float32(dtype, tol):
    torch.manual_seed(0)
    fast = G2LSTM(6, HIDDEN, impl="triton", proj_size=4)
    slow = G2LSTM(6, HIDDEN, impl="reference", proj_size=4)
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(3, 2, 6)
    with torch.autocast("cpu", dtype=dtype):
        got = _module_step(fast, x, 5)
    want = _module_step(slow, x.to(dtype).float(), 5)
    assert got["out"].dtype == torch.float32
    _assert_match(got, want, tol)


def test_selection():
    """select_impl alone chooses: 'auto' picks a kernel that runs the inputs, a named one runs or
    raises, and no kernel falls back by itself."""
    cpu_device = torch.device("cpu")
    assert kernels.select_impl("auto", cpu_device, torch.float32) == "cpu"
    assert kernels.select_impl("auto", cpu_device, torch.float64) == "cpu"
    assert kernels.select_impl("auto", cpu_device, torch.bfloat16) == "reference"
    assert kernels.select_impl("auto", cpu_device, torch.float32, record=True) == "reference"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernels.select_impl("auto", cpu_device, torch.float32) == "reference"
        with pytest.raises(ValueError, match="impl='cpu' cannot run CPU autocast"):
            kernels.select_impl("cpu", cpu_device, torch.float32)
    assert kernels.select_impl("reference", cpu_device, torch.float16) == "reference"
    assert kernels.select_impl("bptt", cpu_device, torch.float16) == "bptt"
    with pytest.raises(ValueError, match=r"impl='cpu' cannot run torch.float16 \(it runs float32 and float64\)"):
        kernels.select_impl("cpu", cpu_device, torch.float16)
    with pytest.raises(ValueError, match=r"impl='bptt' cannot run record=True"):
        kernels.select_impl("bptt", cpu_device, torch.float32, record=True)
    with pytest.raises(ValueError, match="the C\\+\\+ CPU kernel cannot run torch.float16"):
        cpu.lstm_direction(torch.zeros(2, 1, 8, dtype=torch.float16), torch.zeros(1, 2), torch.zeros(1, 2),
                           torch.zeros(8, 2), None, GateSpec(), True)
    if kernels.HAS_TRITON:  # 'triton' after its self-check (tests/test_kernel_selfcheck.py)
        assert kernels.select_impl("auto", torch.device("cuda"), torch.float64) == "reference"
    with pytest.raises(ValueError, match="impl must be"):
        kernels.select_impl("cudnn", cpu_device)


def test_bad_shapes_are_reported():
    tensors, _, _ = _inputs(torch.float32, False, False)
    with pytest.raises(ValueError, match=r"w_hh must have shape \(32, 8\)"):
        cpu.lstm_direction(tensors["x_proj"], tensors["h0"], tensors["c0"], tensors["w_hh"][:, :4],
                           None, GateSpec(), True)


def test_no_compiler_falls_back_to_python_bptt(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler found"):
        cpu._compile(tmp_path / "lib.so")
    monkeypatch.setitem(cpu._state, "loaded", None)
    monkeypatch.setattr(cpu, "_library_path", lambda: tmp_path / "missing.so")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cpu.load_extension() is False
    assert any("Python BPTT" in str(w.message) for w in caught)
    assert kernels.select_impl("auto", torch.device("cpu"), torch.float64) == "bptt"
    with pytest.raises(ValueError, match="impl='cpu' cannot run without its C\\+\\+ extension"):
        kernels.select_impl("cpu", torch.device("cpu"), torch.float64)
    torch.manual_seed(0)
    fast = G2LSTM(4, HIDDEN, 2, proj_size=3, noise_p=0.5, dtype=torch.float64).train()
    slow = G2LSTM(4, HIDDEN, 2, proj_size=3, noise_p=0.5, dtype=torch.float64, impl="reference").train()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(STEPS, BATCH, 4, dtype=torch.float64)
    torch.manual_seed(1)
    got = fast(x)[0]
    torch.manual_seed(1)
    torch.testing.assert_close(got, slow(x)[0])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_cpu_float32_input_projection_and_its_backward_are_linear(bias, threads):
    """float32 runs the projection's dx = g W through the extension's packed GEMM: F.linear's
    values and gradients over row blocks (T N = 201 rows: 96 + 96 + 9), one panel of 7 of 16
    columns (I = 7) and K = 4H = 52."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(67, 3, 7, generator=gen, requires_grad=True)
    w = torch.randn(52, 7, generator=gen, requires_grad=True)
    b = torch.randn(52, generator=gen, requires_grad=True) if bias else None
    grad = torch.randn(67, 3, 52, generator=gen)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = cpu.cpu_project(x, w, b)
        got_grads = torch.autograd.grad(got, [t for t in (x, w, b) if t is not None], grad)
    finally:
        torch.set_num_threads(before)
    want = torch.nn.functional.linear(x, w, b)
    want_grads = torch.autograd.grad(want, [t for t in (x, w, b) if t is not None], grad)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, r in zip(got_grads, want_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bias", [True, False])
def test_cpu_input_projection_is_linear_with_its_gradients(bias):
    """The input projection written into the extension's cached buffers: F.linear's values,
    gradients and gradients of gradients."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, generator=gen, dtype=torch.float64, requires_grad=True) if bias else None
    inputs = (x, w, b) if bias else (x, w)
    project = (lambda *a: cpu.cpu_project(a[0], a[1], a[2] if bias else None))
    torch.testing.assert_close(project(*inputs), torch.nn.functional.linear(x, w, b), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(project, inputs)
    assert torch.autograd.gradgradcheck(project, inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_cpu_large_mm_is_mm_for_every_layout(dtype, threads):
    """The large products of the backward (float32 with a row-major `a`: the extension's packed
    GEMM, C's rows in blocks of 96 among threads; otherwise C's columns cut among threads):
    torch.mm's values for row-major, transposed and strided operands, with row, column and K
    tails (100 = 96 + 4 rows, 37 columns, K = 2500 cut in two), a product large enough to cut by
    columns and one too small, and empty ones."""
    assert cpu.load_extension()
    gen = torch.Generator().manual_seed(0)

    def operand(rows, cols, layout):
        if layout == "transposed":
            return torch.randn(cols, rows, generator=gen, dtype=dtype).t()
        if layout == "strided":  # neither layout: copied first
            return torch.randn(rows, 2 * cols, generator=gen, dtype=dtype)[:, ::2]
        return torch.randn(rows, cols, generator=gen, dtype=dtype)

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for m, k, n in [(64, 2048, 2056), (100, 2500, 37), (7, 5, 3), (0, 4, 3), (4, 0, 3)]:
            for layout_a in ("row-major", "transposed", "strided"):
                for layout_b in ("row-major", "transposed"):
                    a, b = operand(m, k, layout_a), operand(k, n, layout_b)
                    result = cpu.cpu_mm(a, b)
                    assert result.shape == (m, n) and result.is_contiguous()
                    torch.testing.assert_close(result, a @ b, rtol=1e-4 if dtype == torch.float32 else 1e-12,
                                               atol=1e-3 if dtype == torch.float32 else 1e-10)
    finally:
        torch.set_num_threads(previous)
    with pytest.raises(RuntimeError, match="expected \\(m, k\\) and \\(k, n\\)"):
        cpu.cpu_mm(torch.ones(2, 3), torch.ones(2, 3))


def test_cpu_large_buffers_are_reused_across_calls():
    """A training step asks for the same large buffers every time: the second call gets the
    block the first call's tensors handed back last (already mapped), and the same results."""
    steps, batch, hidden = 20, 16, 256  # the saved gates: 1.25 MiB, over the cache's 1 MiB floor
    assert cpu.load_extension()
    gen = torch.Generator().manual_seed(0)
    x_proj = torch.randn(steps, batch, 4 * hidden, generator=gen)
    h0, c0 = torch.zeros(batch, hidden), torch.zeros(batch, hidden)
    w_hh = torch.randn(4 * hidden, hidden, generator=gen) * 0.1

    def forward():
        return torch.ops.g2lstm_cpu.forward(x_proj, h0, c0, w_hh, None, None, False, [2, 2, 0], [0, 1, 0],
                                            1.0, [1, 2], 0.2, 0, 2, 0, batch, True)

    first = forward()
    pointer, values = first[3].data_ptr(), first[3].clone()
    del first
    second = forward()
    assert second[3].data_ptr() == pointer
    assert torch.equal(second[3], values)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("h0_grad", [False, True])
def test_cpu_zero_initial_state_matches_reference(h0_grad, reverse, threads):
    """A zero h0 (the default state) skips its GEMMs (h0 W_hh^T, its rows of dW_hh) and, when h0
    needs no gradient, the last step's share of dh: the results must not change."""
    spec, training, noise = CASES["gumbel-step"][:3]
    tensors, weights, _ = _inputs(torch.float64, proj=False, lengths=False, batch=8, hidden=520)
    tensors["h0"] = torch.zeros_like(tensors["h0"])
    results = []
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for fn in (reference.lstm_direction, kernels.IMPLEMENTATIONS["cpu"]):
            leaves = {k: v.clone().requires_grad_(k != "h0" or h0_grad) for k, v in tensors.items() if v is not None}
            out, h, c = fn(leaves["x_proj"], leaves["h0"], leaves["c0"], leaves["w_hh"], None, spec, training,
                           noise, None, reverse)
            loss = sum((y * w).sum() for y, w in zip((out, h, c), weights))
            wanted = [v for v in leaves.values() if v.requires_grad]
            results.append(dict(out=out, h=h, c=c, **dict(zip([k for k, v in leaves.items() if v.requires_grad],
                                                               torch.autograd.grad(loss, wanted)))))
    finally:
        torch.set_num_threads(before)
    want, got = results
    _assert_match(got, want, _tolerance("cpu", noise))
