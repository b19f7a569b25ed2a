"""The CPU fast path: the time loops of forward and backward in a small C++ extension.

``cpu_lstm.cpp`` is compiled with the system C++ compiler at first use (about 15-30 s) into a
cache folder (``$G2LSTM_EXT_DIR``, default ``~/.cache/g2lstm``) keyed by a hash of the source, the
flags, the torch version and the CPU model, so later processes load it at once. It needs only ``c++`` (no ninja).
When no compiler is found or the build fails, a warning says why once, and
:func:`g2lstm.kernels.select_impl` runs the hand-written BPTT of :mod:`g2lstm.kernels.bptt`
instead (same results, slower).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from functools import partial
from typing import Optional

from torch import Tensor
from torch.nn import functional as F
from torch.utils import cpp_extension

from .. import reference
from ..noise import NOISE_MODES, NoiseKey, stream_key
from ..reference import GateSpec
from .common import check_direction_args, differentiable_grads, gate_plan

SOURCE = Path(__file__).with_name("cpu_lstm.cpp")
# -march=native: the library is built on the machine that runs it (the CPU model is in the hash).
COMPILE_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp",
                 "-fPIC", "-std=c++17"]

_state: dict = {"loaded": None, "error": None}


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next((line for line in lines if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor()


def _library_path() -> Path:
    digest = hashlib.sha256()
    digest.update(SOURCE.read_bytes())
    digest.update(" ".join(COMPILE_FLAGS + [torch.__version__, sys.version, _cpu_model()]).encode())
    root = Path(os.environ.get("G2LSTM_EXT_DIR", Path.home() / ".cache" / "g2lstm"))
    return root / f"g2lstm_cpu_{digest.hexdigest()[:16]}.so"


def _compile(target: Path, source: Path = SOURCE) -> None:
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler found (looked for {compiler!r}; set CXX to choose one)")
    torch_lib = Path(torch.__file__).parent / "lib"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        obj, lib = Path(tmp) / "cpu_lstm.o", Path(tmp) / target.name
        commands = [
            [compiler, *COMPILE_FLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *includes,
             "-c", str(source), "-o", str(obj)],
            [compiler, "-shared", "-fopenmp", str(obj), "-o", str(lib), f"-L{torch_lib}",
             "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{torch_lib}"],
        ]
        for command in commands:
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"compiling {source.name} failed:\n{done.stderr[-2000:]}")
        os.replace(lib, target)  # atomic: a concurrent process sees no half-written library


def load_extension() -> bool:
    """Build (once) and load the C++ extension; False, with a warning the first time, if it can't."""
    if _state["loaded"] is None:
        try:
            path = _library_path()
            if not path.exists():
                _compile(path)
            torch.ops.load_library(str(path))
            _state["loaded"] = True
        except Exception as error:  # no compiler, no headers, a failed build: run the Python BPTT
            _state["loaded"], _state["error"] = False, error
            warnings.warn(
                f"g2lstm: the C++ CPU kernel is not available ({error}); using the slower Python "
                "BPTT instead. Install a C++ compiler (g++) to get the fast CPU path.",
                RuntimeWarning,
                stacklevel=3,
            )
    return _state["loaded"]


def build_error() -> str:
    """Why the extension is not loaded (after :func:`load_extension` returned False)."""
    return str(_state["error"])


DTYPES = (torch.float32, torch.float64)


# The C++ loops as one custom op per direction (forward) and its backward, registered with
# torch.library: fake kernels let torch.compile trace a training step through them, and
# register_autograd / register_vmap give autograd and vmap their rules. The op's arguments are the
# gate spec and the noise key in primitive form, so that the double backward can rebuild them.
@torch.library.custom_op("g2lstm::cpu_direction", mutates_args=())
def cpu_direction(
    x_proj: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Optional[Tensor],
    lengths: Optional[Tensor], reverse: bool, gates: str, tau: float, stochastic: list[int],
    eval_gates: str, train_gates: str, training: bool, seed: Optional[int], stream: int, noise_p: float,
    noise_mode: str, noise_row_offset: int, noise_global_batch: Optional[int], save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(output, h_T, c_T, gates, cs, hs)``; the last three are saved for the backward
    (``gates`` holds one step only when ``save`` is False)."""
    if not load_extension():
        raise RuntimeError(f"g2lstm::cpu_direction needs the C++ extension: {build_error()}")
    spec, noise = _spec_and_noise(gates, tau, stochastic, eval_gates, train_gates, seed, stream, noise_p,
                                  noise_mode, noise_row_offset, noise_global_batch)
    plan = gate_plan(spec, training, noise is not None and bool(spec.stochastic))
    batch = x_proj.shape[1]
    keys, p, mode, (row_offset, global_batch) = [], 1.0, 0, (0, batch)
    if plan.noisy:  # the kernel draws the noise of g2lstm.noise itself, from the two stream keys
        keys = [stream_key(noise.seed, noise.stream, 0), stream_key(noise.seed, noise.stream, 1)]
        p, mode = noise.p, NOISE_MODES.index(noise.mode)
        row_offset, global_batch = noise.rows(batch)
    return tuple(torch.ops.g2lstm_cpu.forward(
        x_proj, h0, c0, w_hh, w_hr, lengths, reverse, list(plan.kinds), list(plan.slots), plan.tau,
        keys, p, mode, len(spec.stochastic), row_offset, global_batch, save,
    ))


@cpu_direction.register_fake
def _cpu_direction_fake(x_proj, h0, c0, w_hh, w_hr, lengths, reverse, gates, tau, stochastic,
                        eval_gates, train_gates, training, seed, stream, noise_p, noise_mode, noise_row_offset,
                        noise_global_batch, save):
    steps, batch, four_h = x_proj.shape
    h_out, hidden = h0.shape[-1], four_h // 4
    new = x_proj.new_empty
    return (new(steps, batch, h_out), new(batch, h_out), new(batch, hidden),
            new(steps if save else 1, batch, four_h), new(steps + 1, batch, hidden),
            new(steps + 1, batch, h_out))


@torch.library.custom_op("g2lstm::cpu_direction_backward", mutates_args=())
def cpu_direction_backward(
    grad_out: Tensor, grad_h: Tensor, grad_c: Tensor, gates: Tensor, cs: Tensor, hs: Tensor,
    w_hh: Tensor, w_hr: Optional[Tensor], lengths: Optional[Tensor], reverse: bool,
    kinds: list[int], tau: float, need_dh0: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(d x_proj, d h0, d c0, d w_hh, d w_hr)``; ``d w_hr`` is empty without a projection, and
    ``d h0`` zeros unless ``need_dh0`` (its last GEMM is then skipped)."""
    return tuple(torch.ops.g2lstm_cpu.backward(grad_out, grad_h, grad_c, gates, cs, hs, w_hh, w_hr,
                                               lengths, reverse, kinds, tau, need_dh0))


@cpu_direction_backward.register_fake
def _cpu_direction_backward_fake(grad_out, grad_h, grad_c, gates, cs, hs, w_hh, w_hr, lengths,
                                 reverse, kinds, tau, need_dh0):
    return (torch.empty_like(gates), torch.empty_like(hs[0]), torch.empty_like(cs[0]),
            torch.empty_like(w_hh), torch.empty_like(w_hr) if w_hr is not None else gates.new_empty(0))


@torch.library.custom_op("g2lstm::cpu_project", mutates_args=())
def cpu_project(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``F.linear(x, weight, bias)`` for a (T, N, I) ``x``, written into one of the extension's
    cached buffers: a fresh (T, N, 4H) tensor from torch's allocator would fault in every page
    again at every step (glibc maps allocations over 32 MiB anew each time)."""
    if not load_extension():
        raise RuntimeError(f"g2lstm::cpu_project needs the C++ extension: {build_error()}")
    return torch.ops.g2lstm_cpu.project(x, weight, bias)


@cpu_project.register_fake
def _cpu_project_fake(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _project_setup_context(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


@torch.library.custom_op("g2lstm::cpu_mm", mutates_args=())
def cpu_mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for the large products of a backward: the extension's own float32 GEMM where
    ``a`` is row-major, else C's columns cut into one single-threaded BLAS call per thread (at
    these shapes both ran faster on 2 threads than one MKL call; docs/kernels.md)."""
    return torch.ops.g2lstm_cpu.large_mm(a, b)


@cpu_mm.register_fake
def _cpu_mm_fake(a, b):
    return a.new_empty(a.shape[0], b.shape[1])


def _project_backward(ctx, grad):
    # dx = g W through the extension's GEMM; dW = (x^T g)^T, the layout MKL runs fastest at these
    # shapes (as the C++ dW_hh). With create_graph=True torch.mm, so that the gradient is itself
    # differentiable.
    x, weight = ctx.saved_tensors
    mm = torch.mm if torch.is_grad_enabled() else cpu_mm
    grad_2d = grad.reshape(-1, grad.shape[-1])
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:
        grad_x = mm(grad_2d, weight).view(x.shape)
    if ctx.needs_input_grad[1]:
        grad_w = mm(x.reshape(-1, x.shape[-1]).t(), grad_2d).t().contiguous()
    grad_b = grad.sum((0, 1)) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return grad_x, grad_w, grad_b


cpu_project.register_autograd(_project_backward, setup_context=_project_setup_context)


# glibc maps allocations from 32 MiB up anew each time; smaller ones reuse its heap.
_FRESH_MAP_BYTES = 32 << 20


def input_projection(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """The input projection of a layer direction that :func:`lstm_direction` runs next:
    :func:`cpu_project` where its output is large enough for glibc to map it anew at every step,
    else ``F.linear`` (which also has no custom-op overhead, ~0.1 ms a step)."""
    if (x.dim() != 3 or x.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype)
            or x.numel() // max(x.shape[-1], 1) * weight.shape[0] * x.element_size() < _FRESH_MAP_BYTES):
        return F.linear(x, weight, bias)  # also F.linear's own errors for inputs it refuses
    return cpu_project(x, weight, bias)


def _spec_and_noise(gates, tau, stochastic, eval_gates, train_gates, seed, stream, noise_p, noise_mode,
                    row_offset, global_batch):
    spec = GateSpec(gates, tau, tuple(stochastic), eval_gates, train_gates)
    noise = None if seed is None else NoiseKey(seed, stream, noise_p, noise_mode, row_offset, global_batch)
    return spec, noise


# cpu_direction's 20 arguments: gradients for the first five (x_proj, h0, c0, w_hh, w_hr), None
# for lengths and the options
_NO_GRADS = (None,) * 15


def _setup_context(ctx, inputs, output):
    x_proj, h0, c0, w_hh, w_hr, lengths, reverse, gates, tau, stochastic, eval_gates, train_gates, \
        training, seed, stream, noise_p, noise_mode, row_offset, global_batch, _ = inputs
    ctx.save_for_backward(x_proj, h0, c0, w_hh, w_hr, lengths, *output[3:])
    # gates, cs and hs are saved state, never used downstream: without this autograd would fill a
    # zero gradient for each (three full passes over (T, N, 4H) and (T + 1, N, H) per backward)
    ctx.set_materialize_grads(False)
    ctx.reverse, ctx.training = reverse, training
    ctx.spec, ctx.noise = _spec_and_noise(gates, tau, stochastic, eval_gates, train_gates, seed, stream,
                                          noise_p, noise_mode, row_offset, global_batch)


def _backward(ctx, grad_out, grad_h, grad_c, *_):
    x_proj, h0, c0, w_hh, w_hr, lengths, gates, cs, hs = ctx.saved_tensors
    inputs = (x_proj, h0, c0, w_hh, w_hr)
    if torch.is_grad_enabled():  # create_graph=True: the gradients must be differentiable
        recompute = partial(reference.lstm_direction, spec=ctx.spec, training=ctx.training,
                            noise=ctx.noise, lengths=lengths, reverse=ctx.reverse)
        return (*differentiable_grads(recompute, inputs, (grad_out, grad_h, grad_c)), *_NO_GRADS)
    grad_out = torch.zeros_like(hs[1:]) if grad_out is None else grad_out
    grad_h = torch.zeros_like(hs[0]) if grad_h is None else grad_h
    grad_c = torch.zeros_like(cs[0]) if grad_c is None else grad_c
    plan = gate_plan(ctx.spec, ctx.training, ctx.noise is not None and bool(ctx.spec.stochastic))
    dx, dh0, dc0, dw_hh, dw_hr = cpu_direction_backward(
        grad_out, grad_h, grad_c, gates, cs, hs, w_hh, w_hr, lengths, ctx.reverse,
        list(plan.kinds), plan.tau, ctx.needs_input_grad[1])
    dh0 = dh0 if ctx.needs_input_grad[1] else None
    return (dx, dh0, dc0, dw_hh, dw_hr if w_hr is not None else None, *_NO_GRADS)


cpu_direction.register_autograd(_backward, setup_context=_setup_context)


def _vmap_by_loop(op, outputs: int):
    """A vmap rule that runs ``op`` once per batch element and stacks the results: correct for
    any in_dims, as fast as a Python loop (the kernels have no batch dimension of their own)."""

    def rule(info, in_dims, *args):
        results = []
        for b in range(info.batch_size):
            sliced = [a.select(d, b) if isinstance(a, Tensor) and d is not None else a
                      for a, d in zip(args, in_dims)]
            results.append(op(*sliced))
        stacked = tuple(torch.stack([r[k] for r in results]) for k in range(outputs))
        return stacked, (0,) * outputs

    return rule


torch.library.register_vmap(cpu_direction, _vmap_by_loop(cpu_direction, 6))
torch.library.register_vmap(cpu_direction_backward, _vmap_by_loop(cpu_direction_backward, 5))


def lstm_direction(x_proj, h0, c0, w_hh, w_hr, spec, training, noise=None, lengths=None,
                   reverse=False, record=False):
    """:func:`g2lstm.reference.lstm_direction` on the CPU through the C++ extension.

    float32 and float64 CPU tensors without autocast; anything else raises ``ValueError``
    (:func:`g2lstm.kernels.select_impl` sends such inputs to another implementation).
    """
    from . import unsupported  # the package imports this module

    reason = unsupported("cpu", x_proj.device, x_proj.dtype, record)
    if reason is not None:
        raise ValueError(f"the C++ CPU kernel cannot run {reason}")
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x_proj, h0, c0, w_hh, w_hr))
    out, h_n, c_n, *_ = run_op(x_proj, h0, c0, w_hh, w_hr, spec, training, noise, lengths, reverse, save)
    return out, h_n, c_n


def run_op(x_proj, h0, c0, w_hh, w_hr, spec, training, noise, lengths, reverse, save):
    """The C++ op on one layer direction, its arguments checked and laid out as it takes them;
    returns all it returns: ``(out, h_n, c_n, gates, cs, hs)``, the last three kept only with
    ``save`` (for the backward, or as :mod:`g2lstm.trace`'s record)."""
    check_direction_args(x_proj, h0, c0, w_hh, w_hr, lengths)
    dtype = x_proj.dtype
    h0, c0, w_hh = h0.to(dtype), c0.to(dtype), w_hh.to(dtype)
    w_hr = None if w_hr is None else w_hr.to(dtype)
    if lengths is not None:
        lengths = lengths.to(device="cpu", dtype=torch.int64)
    seed, stream, p, mode, row_offset, global_batch = (None, 0, 1.0, "step", 0, None) if noise is None else (
        noise.seed, noise.stream, noise.p, noise.mode, noise.row_offset, noise.global_batch)
    return cpu_direction(x_proj, h0, c0, w_hh, w_hr, lengths, reverse, spec.gates, spec.tau, list(spec.stochastic),
                         spec.eval_gates, spec.train_gates, training, seed, stream, p, mode, row_offset, global_batch, save)
