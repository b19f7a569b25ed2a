"""The first-use self-check of the Triton kernels, before ``impl='auto'`` lets them run.

The first time ``impl='auto'`` would choose the Triton kernels for a (device, dtype), they run a
tiny forward and backward (gate noise on, lengths, a projection, both directions) and are compared
with the pure-PyTorch reference, output by output and gradient by gradient, as
``tests/test_kernels.py`` compares them. If that raises (a kernel that does not compile or
launch) or gives other numbers, one ``RuntimeWarning`` names the device, the dtype and what
failed, and ``'auto'`` runs ``'bptt'`` there instead for the rest of the process. The verdict is
kept per (device, dtype). ``impl='triton'`` skips the check: it runs what the user asked for.
"""

from __future__ import annotations

import warnings

import torch

from .. import reference
from ..noise import NoiseKey
from ..reference import GateSpec

STEPS, BATCH, HIDDEN, PROJ = 4, 3, 350, 5  # N H = 1050 elements: two program blocks of 1024

# name -> (spec, noise, with lengths, reverse, with projection); every case trains with noise on
CASES = {
    "3 noisy gates, lengths, projection": (
        GateSpec("gumbel", 0.7, (0, 1, 3)), NoiseKey(2**33 + 12345, 1, 0.5, "step"), True, False, True),
    "default gates, sequence_mask noise, reverse": (
        GateSpec(), NoiseKey(77, 2, 0.3, "sequence_mask"), False, True, False),
}

# allowed difference, relative to max(1, largest reference value), per kernel dtype: float32
# computes as the reference does (the in-kernel log differs by ulps); float16 and bfloat16 round
# the GEMMs, the saved gates and the hidden states (the tolerances of tests/test_kernels.py)
TOLERANCES = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}
TF32_TOLERANCE = 5e-3  # float32 GEMMs in TF32 (torch.set_float32_matmul_precision('high'))

_verdicts: dict[tuple[str, torch.dtype], str | None] = {}


def _inputs(dtype: torch.dtype, proj: bool, lengths: bool, device) -> tuple[dict, list, torch.Tensor | None]:
    """The direction's inputs (``x_proj`` in ``dtype``, the rest float32, as under autocast), the
    weights of the loss on (out, h, c), and lengths; on ``device``, from a fixed generator."""
    gen = torch.Generator().manual_seed(0)
    h_out = PROJ if proj else HIDDEN

    def rand(*shape, scale=1.0, to=torch.float32):
        # values that dtype represents exactly: the kernel's casts of the float32 inputs lose nothing
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype).to(to).to(device)

    tensors = dict(x_proj=rand(STEPS, BATCH, 4 * HIDDEN, to=dtype), h0=rand(BATCH, h_out), c0=rand(BATCH, HIDDEN),
                   w_hh=rand(4 * HIDDEN, h_out, scale=0.1), w_hr=rand(h_out, HIDDEN, scale=0.1) if proj else None)
    weights = [rand(STEPS, BATCH, h_out), rand(BATCH, h_out), rand(BATCH, HIDDEN)]
    lengths_tensor = torch.tensor([STEPS, 1, 3]) if lengths else None
    return tensors, weights, lengths_tensor


def _run(direction, tensors, weights, spec, noise, lengths, reverse) -> dict:
    """Outputs, final states and the gradients of a loss on all three, of one training direction."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in tensors.items() if v is not None}
    out, h, c = direction(leaves["x_proj"], leaves["h0"], leaves["c0"], leaves["w_hh"], leaves.get("w_hr"),
                          spec, True, noise, lengths, reverse)
    loss = sum((y.to(w.dtype) * w).sum() for y, w in zip((out, h, c), weights))
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return dict(out=out, h=h, c=c, **{f"d_{k}": g for k, g in zip(leaves, grads)})


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def run_check(device, dtype: torch.dtype, direction) -> str | None:
    """Compare ``direction`` (an implementation of :func:`g2lstm.reference.lstm_direction`) on
    ``device`` with ``x_proj`` in ``dtype`` against the reference (float64, on the CPU) over
    :data:`CASES`: ``None`` when every output and gradient matches, else what failed."""
    device = torch.device(device)
    tolerance = TOLERANCES[dtype]
    if dtype == torch.float32 and device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        tolerance = TF32_TOLERANCE
    for case, (spec, noise, with_lengths, reverse, proj) in CASES.items():
        tensors, weights, lengths = _inputs(dtype, proj, with_lengths, device)
        as64 = {k: None if v is None else v.detach().cpu().double() for k, v in tensors.items()}
        want = _run(reference.lstm_direction, as64, [w.cpu().double() for w in weights], spec, noise, lengths,
                    reverse)
        try:
            got = _run(direction, tensors, weights, spec, noise, lengths, reverse)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # an error of an asynchronous launch surfaces here
        except Exception as error:  # whatever it is, 'auto' must not choose this kernel
            return f"{case}: running it raised {_first_line(error)}"
        for name, expected in want.items():
            value = got[name].detach().cpu().double()
            if value.shape != expected.shape:
                return f"{case}: {name} has shape {tuple(value.shape)}, the reference {tuple(expected.shape)}"
            error = (value - expected).abs().max().item()
            allowed = tolerance * max(1.0, expected.abs().max().item())
            if not error <= allowed:  # NaN fails too
                return f"{case}: {name} differs from the reference by {error:.3g} (allowed {allowed:.3g})"
    return None


def triton_failure(device, dtype: torch.dtype, direction) -> str | None:
    """Why the Triton kernels (``direction``) failed their self-check on ``device`` in ``dtype``,
    or ``None`` when they passed. Checked at the first call per (device, dtype), then remembered;
    a failure warns once."""
    device = torch.device(device)
    key = (str(device), dtype)
    if key not in _verdicts:
        # eagerly, whatever the caller's mode: no graph capture, gradients on, no autocast
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
            failure = torch.compiler.disable(run_check)(device, dtype, direction)
        _verdicts[key] = failure
        if failure is not None:
            warnings.warn(
                f"g2lstm: the Triton LSTM kernels failed their self-check on {key[0]} in {dtype} ({failure}); "
                f"impl='auto' runs impl='bptt' there instead (same results, slower). impl='triton' still "
                f"runs the Triton kernels.", RuntimeWarning, stacklevel=2)
    return _verdicts[key]
