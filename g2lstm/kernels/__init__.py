"""Implementations of one LSTM layer direction, and the one place that chooses among them.

Every entry of ``IMPLEMENTATIONS`` has the signature of :func:`g2lstm.reference.lstm_direction`
(with ``noise`` a :class:`g2lstm.noise.NoiseKey` or ``None``) and computes what the reference
computes; the reference defines correctness and every kernel is tested against it.

- ``'reference'``: the pure-PyTorch loop, autograd for the backward. Runs everything.
- ``'bptt'``: a hand-written backward through time with torch pointwise ops (any device, dtype).
- ``'cpu'``: forward and backward loops in a C++ extension built at first use, registered as the
  custom op ``g2lstm::cpu_direction`` (CPU, float32/float64, no autocast).
- ``'triton'``: the per-step pointwise work fused in Triton kernels, noise drawn in the kernel
  (CUDA, float32 and float16/bfloat16 autocast; on CPU only under ``TRITON_INTERPRET=1``).
  ``'auto'`` chooses it only after its first-use self-check passed (:mod:`.selfcheck`).

:func:`select_impl` alone decides which one runs: a kernel given inputs it does not handle raises
instead of falling back. Double backward (``create_graph=True``) works on every implementation:
the fused backwards then differentiate the reference instead (:func:`common.differentiable_grads`).
Inside ``torch.func`` transforms (``grad``, ``vmap``, ``jacrev`` over the forward) ``'auto'``
runs the reference; ``vmap`` over the backward of the C++ op (``is_grads_batched=True``) runs it
once per batch element.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from .. import reference
from . import bptt, cpu, selfcheck

IMPLEMENTATIONS = {
    "reference": reference.lstm_direction,
    "bptt": bptt.lstm_direction,
    "cpu": cpu.lstm_direction,
}

HAS_TRITON = importlib.util.find_spec("triton") is not None
# the dtypes of x_proj the Triton kernels run: float32, and the autocast dtypes (the rest float32)
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _triton_direction(*args, **kwargs):
    # imported at first use: importing triton costs a second that CPU users need not pay
    from . import triton_lstm

    return triton_lstm.lstm_direction(*args, **kwargs)


if HAS_TRITON:
    IMPLEMENTATIONS["triton"] = _triton_direction


def input_projection(impl: str):
    """The function computing a layer direction's ``x_proj = F.linear(x, w_ih, bias)`` for ``impl``:
    ``F.linear``, or for ``'cpu'`` the same product in one of the C++ extension's cached buffers."""
    return cpu.input_projection if impl == "cpu" else torch.nn.functional.linear


def triton_interpreted() -> bool:
    """Whether Triton kernels run in Triton's CPU interpreter (tests without a GPU)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unsupported(impl: str, device, dtype: torch.dtype, record: bool = False) -> str | None:
    """Why ``impl`` cannot run inputs on ``device`` in ``dtype`` (under the current autocast
    state), or ``None`` when it can."""
    device = torch.device(device)
    if impl == "reference":
        return None
    if record:
        return "record=True (only the reference records states and gates)"
    if torch._C._functorch.peek_interpreter_stack() is not None:
        # torch.func.grad / vmap / jacrev over the forward: autograd Functions and custom ops
        # with hand-written backwards do not compose with them (vmap over the backward does)
        return "inside a torch.func transform (only the reference supports them)"
    if impl == "cpu":
        if device.type != "cpu":
            return f"tensors on {device.type} (it runs on the CPU)"
        if dtype not in cpu.DTYPES:
            return f"{dtype} (it runs float32 and float64)"
        if torch.is_autocast_enabled("cpu"):
            return "CPU autocast (it runs float32 and float64 without autocast)"
        if not cpu.load_extension():
            return f"without its C++ extension ({cpu.build_error()})"
    if impl == "triton":
        if not (device.type == "cuda" or (device.type == "cpu" and triton_interpreted())):
            return f"tensors on {device.type} (it runs on CUDA, or on the CPU under TRITON_INTERPRET=1)"
        if dtype not in TRITON_DTYPES:
            return f"{dtype} (it runs float32, and float16/bfloat16 under autocast)"
    return None


def kernel_dtype(device, dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel computes inputs of ``dtype`` in: the autocast dtype under autocast
    (float64 is not autocast), else ``dtype``."""
    device_type = torch.device(device).type
    if torch.is_autocast_enabled(device_type) and dtype in TRITON_DTYPES:
        return torch.get_autocast_dtype(device_type)
    return dtype


def select_impl(impl: str, device, dtype: torch.dtype = torch.float32, record: bool = False) -> str:
    """The implementation that runs a layer direction with these inputs.

    ``'auto'``: ``'triton'`` on CUDA when Triton is installed and its kernels passed their first-use
    self-check on this device in this dtype (:mod:`g2lstm.kernels.selfcheck`; ``'bptt'``, after a
    warning, when they failed), ``'cpu'`` on the CPU (``'bptt'``, after a warning, when the C++
    extension cannot be built), else the reference, for every input the chosen kernel does not
    handle (other dtypes, CPU autocast, ``record``). A named implementation runs as asked, or
    raises ``ValueError`` saying why it cannot.
    """
    if impl != "auto" and impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be 'auto' or one of {sorted(IMPLEMENTATIONS)}, got {impl!r}")
    if impl != "auto":
        reason = unsupported(impl, device, dtype, record)
        if reason is not None:
            raise ValueError(f"impl={impl!r} cannot run {reason}; use impl='auto' to choose for you")
        return impl
    device_type = torch.device(device).type
    if device_type == "cuda" and HAS_TRITON and unsupported("triton", device, dtype, record) is None:
        if selfcheck.triton_failure(device, kernel_dtype(device, dtype), IMPLEMENTATIONS["triton"]) is None:
            return "triton"
        return "bptt"  # the self-check warned why
    if device_type == "cpu" and unsupported("cpu", device, dtype, record) is None:
        return "cpu"
    if (device_type == "cpu" and dtype in cpu.DTYPES and not torch.is_autocast_enabled("cpu")
            and not cpu.load_extension() and unsupported("bptt", device, dtype, record) is None):
        return "bptt"  # the C++ extension could not be built (load_extension warned why)
    return "reference"
