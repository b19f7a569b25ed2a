"""The CPU fast path: the time loops of forward and backward in a small C++ extension.

``cpu_lstm.cpp`` is compiled with the system C++ compiler at first use (about 15-30 s) into a
cache folder (``$G2LSTM_EXT_DIR``, default ``~/.cache/g2lstm``) keyed by a hash of the source, the
flags, the torch version and the CPU model, so later processes load it at once. It needs only ``c++`` (no ninja).
When no compiler is found or the build fails, a warning says why once, and the layer runs the
hand-written BPTT of :mod:`g2lstm.kernels.bptt` instead (same results, slower).
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
from torch.autograd.function import once_differentiable
from torch.utils import cpp_extension

from .. import reference
from ..noise import NOISE_MODES, stream_key
from . import bptt
from .common import check_direction_args, gate_plan

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


def _compile(target: Path) -> None:
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
             "-c", str(SOURCE), "-o", str(obj)],
            [compiler, "-shared", "-fopenmp", str(obj), "-o", str(lib), f"-L{torch_lib}",
             "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{torch_lib}"],
        ]
        for command in commands:
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"compiling {SOURCE.name} failed:\n{done.stderr[-2000:]}")
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


class CPULSTMFunction(torch.autograd.Function):
    """One direction of one layer; forward and backward loops run in the C++ extension."""

    @staticmethod
    def forward(ctx, x_proj, h0, c0, w_hh, w_hr, lengths, reverse, plan, noise):
        # without a gradient to compute, keep one step of gate values instead of all T
        save = any(ctx.needs_input_grad[:5])
        out, h_n, c_n, gates, cs, hs = torch.ops.g2lstm_cpu.forward(
            x_proj, h0, c0, w_hh, w_hr, lengths, reverse, list(plan.kinds), list(plan.slots),
            plan.tau, noise["keys"], noise["p"], noise["mode"], noise["gates"], save,
        )
        if save:
            ctx.save_for_backward(gates, cs, hs, w_hh, w_hr, lengths)
        ctx.reverse, ctx.plan = reverse, plan
        return out, h_n, c_n

    @staticmethod
    @once_differentiable  # a hand-written backward: no double backward through it
    def backward(ctx, grad_out, grad_h, grad_c):
        gates, cs, hs, w_hh, w_hr, lengths = ctx.saved_tensors
        grad_out = torch.zeros_like(hs[1:]) if grad_out is None else grad_out
        grad_h = torch.zeros_like(hs[0]) if grad_h is None else grad_h
        grad_c = torch.zeros_like(cs[0]) if grad_c is None else grad_c
        dx, dh0, dc0, dw_hh, dw_hr = torch.ops.g2lstm_cpu.backward(
            grad_out, grad_h, grad_c, gates, cs, hs, w_hh, w_hr, lengths, ctx.reverse,
            list(ctx.plan.kinds), ctx.plan.tau,
        )
        return dx, dh0, dc0, dw_hh, (dw_hr if w_hr is not None else None), None, None, None, None


def lstm_direction(x_proj, h0, c0, w_hh, w_hr, spec, training, noise=None, lengths=None,
                   reverse=False, record=False):
    """:func:`g2lstm.reference.lstm_direction` on the CPU through the C++ extension.

    float32 and float64 only; other dtypes, CPU autocast and ``record`` go to the
    reference, and a missing compiler to the Python BPTT.
    """
    if (record or x_proj.device.type != "cpu"
            or x_proj.dtype not in (torch.float32, torch.float64)
            or torch.is_autocast_enabled("cpu")):
        return reference.lstm_direction(x_proj, h0, c0, w_hh, w_hr, spec, training, noise,
                                        lengths, reverse, record)
    if not load_extension():
        return bptt.lstm_direction(x_proj, h0, c0, w_hh, w_hr, spec, training, noise, lengths, reverse)
    check_direction_args(x_proj, h0, c0, w_hh, w_hr, lengths)
    dtype = x_proj.dtype
    h0, c0, w_hh = h0.to(dtype), c0.to(dtype), w_hh.to(dtype)
    w_hr = None if w_hr is None else w_hr.to(dtype)
    has_noise = noise is not None and bool(spec.stochastic)
    plan = gate_plan(spec, training, has_noise)
    noise_args = dict(keys=[], p=1.0, mode=0, gates=len(spec.stochastic))
    if plan.noisy:  # the kernel draws the noise of g2lstm.noise itself, from the two stream keys
        noise_args.update(
            keys=[stream_key(noise.seed, noise.stream, 0), stream_key(noise.seed, noise.stream, 1)],
            p=noise.p, mode=NOISE_MODES.index(noise.mode),
        )
    if lengths is not None:
        lengths = lengths.to(device="cpu", dtype=torch.int64)
    return CPULSTMFunction.apply(x_proj, h0, c0, w_hh, w_hr, lengths, reverse, plan, noise_args)

