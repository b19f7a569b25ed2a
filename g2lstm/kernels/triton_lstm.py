"""GPU path: the per-step pointwise work of forward and backward fused in Triton kernels.

The loop is :class:`g2lstm.kernels.bptt.BPTTFunction` (haste / cuDNN shape): one GEMM for the
input projections of all steps (done by the caller), per step the recurrent GEMM
(``torch.addmm``) and one fused kernel that draws the Gumbel noise in registers from the
counter-based hash of :mod:`g2lstm.noise`, computes the gates, the cell and hidden update and
saves the gate values; the backward mirrors it with one kernel per step, and the weight gradients
are one large GEMM each after the loop. No atomics, so results are bit-identical run to run.

float32, and float16 / bfloat16 under autocast: GEMMs, saved gates and hidden states in the
autocast dtype, the cell state and all pointwise math in float32.

Tested on the CPU under ``TRITON_INTERPRET=1`` (see the root ``conftest.py``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..noise import NOISE_MODES, NoiseKey, stream_key
from ..reference import GateSpec
from . import TRITON_DTYPES as DTYPES
from . import unsupported
from .bptt import run_bptt
from .common import (HARD, PLAIN, STRAIGHT, GatePlan, check_direction_args, gate_plan,
                     launched_gate_plans)

BLOCK = 1024


@triton.jit
def _mix32(x):
    # the bijective finaliser of g2lstm.noise, in wrap-around uint32 arithmetic
    x = x ^ (x >> 16)
    x = x * tl.full(x.shape, 0x7FEB352D, tl.uint32)
    x = x ^ (x >> 15)
    x = x * tl.full(x.shape, 0x846CA68B, tl.uint32)
    return x ^ (x >> 16)


@triton.jit
def _uniform(key, index):
    bits = _mix32(index ^ key)
    return ((bits >> 9).to(tl.float32) + 0.5) * (1.0 / 8388608.0)


@triton.jit
def _sigmoid(x):
    return tl.sigmoid(x.to(tl.float32))


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x.to(tl.float32)) - 1.0


@triton.jit
def _gate(a, row, j, N, H, G, noise_t, mask_t, key_u, key_b, p, tau,
          KIND: tl.constexpr, SLOT: tl.constexpr):
    """The saved value of one sigmoid gate; the formulas of g2lstm.kernels.common (a straight-through
    gate saves its soft value). ``row`` and ``N``: the global row and batch size of the noise index."""
    if KIND == 3:  # HARD
        v = tl.where(a >= 0.0, 1.0, 0.0)
    elif KIND == 2 or KIND == 5:  # (STRAIGHT_)NOISY: B * (log U - log(1 - U)) drawn here, index ((t N + n) G + g) H + j
        index = (((noise_t * N + row) * G + SLOT) * H + j).to(tl.uint32)
        u = _uniform(key_u, index)
        noise = tl.log(u) - tl.log(1.0 - u)
        mask_index = (((mask_t * N + row) * G + SLOT) * H + j).to(tl.uint32)
        keep = _uniform(key_b, mask_index) < p
        v = _sigmoid((a + tl.where(keep, noise, 0.0)) / tau)
    elif KIND == 1 or KIND == 4:  # (STRAIGHT_)SCALED
        v = _sigmoid(a / tau)
    else:
        v = _sigmoid(a)
    return v


@triton.jit
def _step_value(v, SAVED_TY: tl.constexpr, ROUND: tl.constexpr):
    """The value a gate takes in the step: ``v``, or a straight-through gate's soft value rounded,
    as saved (in ``SAVED_TY``), so that the backward, which rounds the saved value, rounds alike."""
    if ROUND:
        v = tl.where(v.to(SAVED_TY).to(tl.float32) >= 0.5, 1.0, 0.0)
    return v


# Not specialised: the step (one compiled kernel for every step) and the keys (a key equal to 1
# would otherwise become a constexpr, which has no .to()). The keys arrive as int32 bit patterns
# (_int32_bits): as Python ints from 2**31 up they would be i64, a second compiled kernel that a
# run meets at random, since the seed changes every forward.
@triton.jit(do_not_specialize=["noise_t", "mask_t", "key_u_in", "key_b_in"])
def _forward_step_kernel(gates_ptr, c_prev_ptr, c_new_ptr, r_ptr, N, H, G, noise_t, mask_t,
                         row_offset, noise_rows, key_u_in, key_b_in, p, tau,
                         KIND_I: tl.constexpr, KIND_F: tl.constexpr, KIND_O: tl.constexpr,
                         SLOT_I: tl.constexpr, SLOT_F: tl.constexpr, SLOT_O: tl.constexpr,
                         BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    valid = offs < N * H
    n = offs // H
    j = offs % H
    key_u = key_u_in.to(tl.uint32, bitcast=True)
    key_b = key_b_in.to(tl.uint32, bitcast=True)
    g_off = n * 4 * H + j
    a_i = tl.load(gates_ptr + g_off, mask=valid, other=0.0).to(tl.float32)
    a_f = tl.load(gates_ptr + g_off + H, mask=valid, other=0.0).to(tl.float32)
    a_g = tl.load(gates_ptr + g_off + 2 * H, mask=valid, other=0.0).to(tl.float32)
    a_o = tl.load(gates_ptr + g_off + 3 * H, mask=valid, other=0.0).to(tl.float32)
    c_prev = tl.load(c_prev_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    row = n + row_offset  # the global row: data-parallel shards draw the whole batch's noise
    i = _gate(a_i, row, j, noise_rows, H, G, noise_t, mask_t, key_u, key_b, p, tau, KIND_I, SLOT_I)
    f = _gate(a_f, row, j, noise_rows, H, G, noise_t, mask_t, key_u, key_b, p, tau, KIND_F, SLOT_F)
    o = _gate(a_o, row, j, noise_rows, H, G, noise_t, mask_t, key_u, key_b, p, tau, KIND_O, SLOT_O)
    g = _tanh(a_g)
    out_ty = gates_ptr.dtype.element_ty
    c = _step_value(f, out_ty, KIND_F >= 4) * c_prev + _step_value(i, out_ty, KIND_I >= 4) * g
    r = _step_value(o, out_ty, KIND_O >= 4) * _tanh(c)
    tl.store(gates_ptr + g_off, i.to(out_ty), mask=valid)
    tl.store(gates_ptr + g_off + H, f.to(out_ty), mask=valid)
    tl.store(gates_ptr + g_off + 2 * H, g.to(out_ty), mask=valid)
    tl.store(gates_ptr + g_off + 3 * H, o.to(out_ty), mask=valid)
    tl.store(c_new_ptr + offs, c.to(c_new_ptr.dtype.element_ty), mask=valid)
    tl.store(r_ptr + offs, r.to(r_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _backward_step_kernel(gates_ptr, c_prev_ptr, c_new_ptr, dr_ptr, dc_ptr, da_ptr, r_ptr,
                          active_ptr, N, H, scale_i, scale_f, scale_o, round_i, round_f, round_o,
                          HAS_R: tl.constexpr, HAS_ACTIVE: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    valid = offs < N * H
    n = offs // H
    j = offs % H
    g_off = n * 4 * H + j
    i = tl.load(gates_ptr + g_off, mask=valid, other=0.0).to(tl.float32)
    f = tl.load(gates_ptr + g_off + H, mask=valid, other=0.0).to(tl.float32)
    g = tl.load(gates_ptr + g_off + 2 * H, mask=valid, other=0.0).to(tl.float32)
    o = tl.load(gates_ptr + g_off + 3 * H, mask=valid, other=0.0).to(tl.float32)
    c_prev = tl.load(c_prev_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    c_new = tl.load(c_new_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    dr = tl.load(dr_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    dc = tl.load(dc_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    # a straight-through gate (round_* = 1.0, a runtime flag: no more compiled variants) steps with
    # its saved soft value rounded and takes its slope from the soft value
    i_step = tl.where(round_i != 0.0, tl.where(i >= 0.5, 1.0, 0.0), i)
    f_step = tl.where(round_f != 0.0, tl.where(f >= 0.5, 1.0, 0.0), f)
    o_step = tl.where(round_o != 0.0, tl.where(o >= 0.5, 1.0, 0.0), o)
    tc = _tanh(c_new)
    dc_total = dc + dr * o_step * (1.0 - tc * tc)
    d_i = dc_total * g * (i * (1.0 - i) * scale_i)
    d_f = dc_total * c_prev * (f * (1.0 - f) * scale_f)
    d_g = dc_total * i_step * (1.0 - g * g)
    d_o = dr * tc * (o * (1.0 - o) * scale_o)
    dc_prev = dc_total * f_step
    r = o_step * tc
    if HAS_ACTIVE:  # rows past their end: no gradient to the gates, dc passes through
        active = tl.load(active_ptr + n, mask=valid, other=0) != 0
        d_i = tl.where(active, d_i, 0.0)
        d_f = tl.where(active, d_f, 0.0)
        d_g = tl.where(active, d_g, 0.0)
        d_o = tl.where(active, d_o, 0.0)
        dc_prev = tl.where(active, dc_prev, dc)
        r = tl.where(active, r, 0.0)
    out_ty = da_ptr.dtype.element_ty
    tl.store(da_ptr + g_off, d_i.to(out_ty), mask=valid)
    tl.store(da_ptr + g_off + H, d_f.to(out_ty), mask=valid)
    tl.store(da_ptr + g_off + 2 * H, d_g.to(out_ty), mask=valid)
    tl.store(da_ptr + g_off + 3 * H, d_o.to(out_ty), mask=valid)
    tl.store(dc_ptr + offs, dc_prev.to(dc_ptr.dtype.element_ty), mask=valid)
    if HAS_R:
        tl.store(r_ptr + offs, r.to(r_ptr.dtype.element_ty), mask=valid)


def _slope_scale(kind: int, tau: float) -> float:
    return 0.0 if kind == HARD else (1.0 if kind == PLAIN else 1.0 / tau)


def _int32_bits(key: int) -> int:
    """A 32-bit key as the int32 with the same bits: Triton then types it i32 whatever its value."""
    return key - (1 << 32) if key >= 1 << 31 else key


def forward_constexprs(plan: GatePlan, block: int = BLOCK) -> dict:
    """The constexpr arguments of ``_forward_step_kernel`` for a gate plan: one compiled kernel each."""
    kinds, slots = plan.kinds, plan.slots
    return dict(KIND_I=kinds[0], KIND_F=kinds[1], KIND_O=kinds[2], SLOT_I=slots[0], SLOT_F=slots[1],
                SLOT_O=slots[2], BLOCK_SIZE=block)


def backward_constexprs(has_r: bool, has_active: bool, block: int = BLOCK) -> dict:
    """The constexpr arguments of ``_backward_step_kernel``: whether it writes ``r`` (a projection)
    and reads a mask of active rows (lengths)."""
    return dict(HAS_R=has_r, HAS_ACTIVE=has_active, BLOCK_SIZE=block)


class TritonPointwise:
    """The two fused step kernels, with the gate plan and noise keys of one layer direction.

    Everything that does not change from step to step is worked out once here: the Python time
    spent per launch adds up over T steps. ``forward_args``/``backward_args`` are the launches'
    arguments, which :func:`launch_variants` reuses to list every compiled variant.
    """

    def __init__(self, plan: GatePlan, noise, num_gates: int, batch: int, block: int = BLOCK):
        self.plan, self.block, self.num_gates = plan, block, num_gates
        key_u = key_b = mode = 0
        p = 2.0  # p >= 1: every element perturbed (u_B < 1 < 2 always)
        self.noise_rows = (0, batch)  # row offset and global batch size of the noise index
        if plan.noisy:
            key_u = _int32_bits(stream_key(noise.seed, noise.stream, 0))
            key_b = _int32_bits(stream_key(noise.seed, noise.stream, 1))
            p, mode = (float(noise.p) if noise.p < 1.0 else 2.0), NOISE_MODES.index(noise.mode)
            self.noise_rows = noise.rows(batch)
        self.mode = mode
        self.forward_scalars = (key_u, key_b, p, plan.tau)
        self.forward_constants = forward_constexprs(plan, block)
        self.slope_scales = tuple(_slope_scale(kind, plan.tau) for kind in plan.kinds)
        # floats: Triton would specialise an int argument equal to 1 (one more compiled kernel)
        self.rounded = tuple(float(kind in STRAIGHT) for kind in plan.kinds)

    def forward_args(self, gates, c_prev, c_new, r_out, t) -> tuple:
        batch, hidden = c_prev.shape
        noise_t = 0 if self.mode == 1 else t  # 'sequence': one draw for all steps
        mask_t = t if self.mode == 0 else 0  # 'sequence_mask': the mask of step 0
        return (gates, c_prev, c_new, r_out, batch, hidden, self.num_gates, noise_t, mask_t,
                *self.noise_rows, *self.forward_scalars)

    def backward_args(self, gates, c_prev, c_new, dr, dc, da, r_out, active) -> tuple:
        batch, hidden = c_prev.shape
        return (gates, c_prev, c_new, dr.contiguous(), dc, da,
                r_out if r_out is not None else dc,
                active.view(torch.uint8) if active is not None else dc,
                batch, hidden, *self.slope_scales, *self.rounded)

    def forward_step(self, gates, c_prev, c_new, r_out, t):
        grid = (triton.cdiv(c_prev.numel(), self.block),)
        _forward_step_kernel[grid](*self.forward_args(gates, c_prev, c_new, r_out, t), **self.forward_constants)

    def backward_step(self, gates, c_prev, c_new, dr, dc, da, r_out, active):
        grid = (triton.cdiv(c_prev.numel(), self.block),)
        _backward_step_kernel[grid](*self.backward_args(gates, c_prev, c_new, dr, dc, da, r_out, active),
                                    **backward_constexprs(r_out is not None, active is not None, self.block))


@dataclass(frozen=True)
class KernelLaunch:
    """One compiled variant of a step kernel: the kernel, example arguments of a launch (their
    types and values are what Triton specialises on) and its constexprs."""

    name: str
    kernel: object
    args: tuple
    constexprs: dict


def launch_variants(batch: int = 1, hidden: int = 16) -> list[KernelLaunch]:
    """Every variant of the step kernels the package launches: each dtype of :data:`DTYPES`, each
    gate plan (:func:`g2lstm.kernels.common.launched_gate_plans`) of the forward, each
    ``(HAS_R, HAS_ACTIVE)`` of the backward, with the arguments ``forward_args``/``backward_args``
    build from tensors of the dtypes ``run_bptt`` allocates (``x_proj``'s dtype for gates, hidden
    states and their gradients, float32 for the cell state). Compiled ahead of time by
    :mod:`g2lstm.kernels.triton_aot`.
    """
    noise = NoiseKey(2**33 + 5, 1, 0.5)  # keys from 2**31 up: the int32 bit patterns are negative
    backward = TritonPointwise(gate_plan(GateSpec(), True, True), noise, 2, batch)  # any plan: floats only
    launches = []
    for dtype in DTYPES:
        name = str(dtype).removeprefix("torch.")
        x = torch.zeros(batch, 4 * hidden, dtype=dtype)  # gates, and their gradients
        h = torch.zeros(batch, hidden, dtype=dtype)  # hidden states (r), and their gradients
        c = torch.zeros(batch, hidden)  # the cell state is float32 in every dtype
        for plan in launched_gate_plans():
            num_gates = max(1, sum(kind != PLAIN for kind in plan.kinds))  # len(spec.stochastic)
            pointwise = TritonPointwise(plan, noise if plan.noisy else None, num_gates, batch)
            # plain, scaled, noisy, hard, straight-through scaled / noisy; gates i f o
            kinds = "".join("PSNHsn"[kind] for kind in plan.kinds)
            slots = "".join(map(str, plan.slots))
            launches.append(KernelLaunch(f"forward-{name}-{kinds}-slots{slots}", _forward_step_kernel,
                                         pointwise.forward_args(x, c, c.clone(), h, 0), pointwise.forward_constants))
        for has_r in (False, True):
            for has_active in (False, True):
                active = torch.ones(batch, dtype=torch.bool) if has_active else None
                args = backward.backward_args(x, c, c.clone(), h, c.clone(), x.clone(),
                                              h.clone() if has_r else None, active)
                launches.append(KernelLaunch(f"backward-{name}-r{int(has_r)}-active{int(has_active)}",
                                             _backward_step_kernel, args, backward_constexprs(has_r, has_active)))
    return launches


def lstm_direction(x_proj, h0, c0, w_hh, w_hr, spec, training, noise=None, lengths=None,
                   reverse=False, record=False, block: int = BLOCK):
    """:func:`g2lstm.reference.lstm_direction` with the fused Triton step kernels.

    CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``) in float32/float16/bfloat16;
    anything else raises ``ValueError`` (:func:`g2lstm.kernels.select_impl` sends such inputs to
    another implementation).
    """
    reason = unsupported("triton", x_proj.device, x_proj.dtype, record)
    if reason is not None:
        raise ValueError(f"the Triton kernels cannot run {reason}")
    check_direction_args(x_proj, h0, c0, w_hh, w_hr, lengths)
    plan = gate_plan(spec, training, noise is not None and bool(spec.stochastic))
    pointwise = TritonPointwise(plan, noise, len(spec.stochastic), x_proj.shape[1], block)
    if lengths is not None:
        lengths = lengths.to(x_proj.device)
    # The step GEMMs run in x_proj's dtype (the autocast dtype if any): autocast itself is off
    # inside, so that out= GEMMs keep the buffers' dtypes. Triton launches on the current CUDA
    # device, which need not be the tensors' one.
    on_device = torch.cuda.device(x_proj.device) if x_proj.device.type == "cuda" else contextlib.nullcontext()
    with on_device, torch.autocast(x_proj.device.type, enabled=False):
        return run_bptt(x_proj.contiguous(), h0, c0, w_hh, w_hr, lengths, reverse, pointwise,
                        torch.float32, spec, training, noise)
